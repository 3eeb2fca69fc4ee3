//! Frames that declare more elements than they carry: a decode error,
//! never an allocation from the declared count. kafka-protocol 0.18.0
//! allocates `count × element size` up front, so each of these aborted the
//! process (out of memory) before the patch in `vendor/kafka-protocol`;
//! the first was found by the `produce_rewrite` fuzz target.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_lfs_proxy::kafka::relay::addresses::{rewrite_response, BrokerAddressMap};
use kafka_lfs_proxy::kafka::wire::batches;
use kafka_lfs_proxy::kafka::wire::frame::{peek_request_header, Frame};
use kafka_lfs_proxy::lfs::checksum::ChecksumAlg;
use kafka_lfs_proxy::lfs::rewrite::rewrite_produce;
use kafka_lfs_proxy::lfs::store::BlobStore;
use kafka_lfs_proxy::lfs::{Lfs, TopicFilter};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, TimestampType};

fn lfs(dir: &std::path::Path) -> Lfs {
    Lfs {
        store: BlobStore::local(dir, 5 * 1024 * 1024).unwrap(),
        namespace: "t".into(),
        proxy_id: "t".into(),
        max_blob_size: 1 << 20,
        default_alg: ChecksumAlg::Sha256,
        topics: TopicFilter::default(),
        content_addressed: false,
    }
}

/// Produce v3 request header, client id "c", then `body`.
fn produce_v3(body: &[u8]) -> Frame {
    let mut out = BytesMut::new();
    out.put_i16(ApiKey::Produce as i16);
    out.put_i16(3);
    out.put_i32(7);
    out.put_i16(1);
    out.put_slice(b"c");
    out.put_slice(body);
    Frame::from_body(&out)
}

#[tokio::test]
async fn a_topic_count_beyond_the_frame_is_a_decode_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = BytesMut::new();
    body.put_i16(-1); // transactional id: null
    body.put_i16(1); // acks
    body.put_i32(1000); // timeout
    body.put_i32(i32::MAX); // topic_data: 2^31 - 1 topics, none sent
    let frame = produce_v3(&body);
    let header = peek_request_header(&frame.body()).unwrap();
    let outcome = rewrite_produce(&lfs(dir.path()), &header, &frame).await;
    let error = outcome.expect_err("a malformed Produce is refused, not allocated");
    assert!(error.to_string().contains("Produce v3"), "{error}");
}

#[tokio::test]
async fn the_frame_the_fuzzer_found_is_a_decode_error() {
    let dir = tempfile::tempdir().unwrap();
    // The input the fuzzer saved: its first byte selects raw mode.
    let input = include_bytes!("fixtures/fuzz-produce-rewrite-crash-1.bin");
    let frame = Frame::from_body(&input[1..]);
    let header = peek_request_header(&frame.body()).unwrap();
    assert!(rewrite_produce(&lfs(dir.path()), &header, &frame)
        .await
        .is_err());
}

#[tokio::test]
async fn a_record_header_count_beyond_the_batch_is_left_to_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from_static(b"value")),
        headers: Default::default(),
    };
    record
        .headers
        .insert(StrBytes::from_static_str("LFS_BLOB"), Some(Bytes::new()));
    let batch = batches::encode_v2(&[record], Compression::None).unwrap();
    let mut batch = batch.to_vec();
    // The record's header count (varint 2 = one header) sits right before
    // the header key's length; make it 2^30 (zigzag varint), keeping the
    // batch length consistent is not needed: the decode must fail cleanly.
    let at = batch.windows(9).position(|w| w == b"\x10LFS_BLOB").unwrap() - 1;
    assert_eq!(batch[at], 2, "one header");
    batch.splice(at..=at, [0x80, 0x80, 0x80, 0x80, 0x08]);
    let mut body = BytesMut::new();
    body.put_i16(-1);
    body.put_i16(1);
    body.put_i32(1000);
    body.put_i32(1); // one topic
    body.put_i16(1);
    body.put_slice(b"t");
    body.put_i32(1); // one partition
    body.put_i32(0);
    body.put_i32(batch.len() as i32);
    body.put_slice(&batch);
    let frame = produce_v3(&body);
    let header = peek_request_header(&frame.body()).unwrap();
    // The batch does not decode: forwarded unchanged for the broker to judge.
    let outcome = rewrite_produce(&lfs(dir.path()), &header, &frame)
        .await
        .unwrap();
    assert!(outcome.is_none(), "nothing rewritten");
}

#[test]
fn a_broker_count_beyond_a_metadata_response_is_an_error() {
    let mut body = BytesMut::new();
    body.put_i32(7); // correlation id
    body.put_i32(i32::MAX); // brokers (Metadata v1)
    let map = BrokerAddressMap::new("proxy", 30000);
    let result = rewrite_response(&map, ApiKey::Metadata, 1, Frame::from_body(&body));
    assert!(result.is_err());
}
