//! Tests of the Produce rewrite (`rewrite.rs`).
use super::*;
use crate::kafka::wire::frame::peek_request_header;
use crate::lfs::envelope::Envelope;
use crate::lfs::store::BlobStore;
use crate::lfs::TopicFilter;
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::{ApiKey, RequestHeader, TopicName};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::records::{Compression, TimestampType};

fn record(
    offset: i64,
    value: &[u8],
    headers: &[(&'static str, &[u8])],
    producer_id: i64,
    sequence: i32,
) -> Record {
    let mut r = Record {
        transactional: producer_id >= 0,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 3,
        producer_id,
        producer_epoch: if producer_id >= 0 { 2 } else { -1 },
        timestamp_type: TimestampType::Creation,
        offset,
        sequence,
        timestamp: 1_700_000_000_000 + offset * 7,
        key: Some(Bytes::from(format!("key-{offset}"))),
        value: Some(Bytes::copy_from_slice(value)),
        headers: Default::default(),
    };
    for (k, v) in headers {
        r.headers.insert(
            StrBytes::from_static_str(k),
            Some(Bytes::copy_from_slice(v)),
        );
    }
    r
}

fn batch(records: &[Record], compression: Compression) -> Bytes {
    crate::kafka::wire::batches::encode_v2(records, compression).unwrap()
}

fn produce_frame(version: i16, partitions: Vec<(&str, i32, Bytes)>) -> Frame {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for (topic, index, records) in partitions {
        let data = PartitionProduceData::default()
            .with_index(index)
            .with_records(Some(records));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(topics);
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(0)
        .with_request_api_version(version)
        .with_correlation_id(9)
        .with_client_id(Some(StrBytes::from_static_str("test")))
        .encode(&mut body, ApiKey::Produce.request_header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    Frame::from_body(&body)
}

fn lfs(dir: &std::path::Path) -> Lfs {
    Lfs {
        store: BlobStore::local(dir, 5 * 1024 * 1024).unwrap(),
        namespace: "default".into(),
        proxy_id: "proxy-test".into(),
        max_blob_size: 1024 * 1024,
        default_alg: ChecksumAlg::Sha256,
        topics: TopicFilter::default(),
        content_addressed: false,
    }
}

async fn rewrite(lfs: &Lfs, frame: &Frame) -> Option<RewrittenProduce> {
    let body = frame.body();
    let header = peek_request_header(&body).unwrap();
    rewrite_produce(lfs, &header, frame).await.unwrap()
}

fn decode_partitions(frame: &Frame, version: i16) -> Vec<(String, i32, Bytes)> {
    let body = frame.body();
    let header = peek_request_header(&body).unwrap();
    let mut buf = body.slice(header.body_offset.unwrap()..);
    let r = ProduceRequest::decode(&mut buf, version).unwrap();
    let mut out = Vec::new();
    for t in r.topic_data {
        for p in t.partition_data {
            out.push((t.name.0.to_string(), p.index, p.records.unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn plain_requests_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lfs = lfs(dir.path());
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let frame = produce_frame(
            9,
            vec![(
                "t",
                0,
                batch(&[record(0, b"plain", &[("h", b"v")], -1, -1)], compression),
            )],
        );
        assert!(rewrite(&lfs, &frame).await.is_none());
    }
}

#[tokio::test]
async fn every_codec_rebuilds_only_lfs_batches_and_keeps_batch_fields() {
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let lfs = lfs(dir.path());
        let blob = vec![0xabu8; 300_000];
        let plain = batch(
            &[
                record(0, b"ordinary-0", &[], 7, 10),
                record(1, b"ordinary-1", &[], 7, 11),
            ],
            compression,
        );
        let mixed = batch(
            &[
                record(2, b"ordinary-2", &[("keep", b"me")], 7, 12),
                record(
                    3,
                    &blob,
                    &[
                        (LFS_BLOB, b""),
                        ("content-type", b"image/png"),
                        ("keep", b"too"),
                    ],
                    7,
                    13,
                ),
            ],
            compression,
        );
        let mut records = BytesMut::new();
        records.extend_from_slice(&plain);
        records.extend_from_slice(&mixed);
        let frame = produce_frame(9, vec![("t", 4, records.freeze())]);
        let out = rewrite(&lfs, &frame).await.expect("rewritten");
        assert!(out.failed.is_empty());
        let parts = decode_partitions(out.frame.as_ref().unwrap(), 9);
        let rewritten = &parts[0].2;
        assert_eq!(
            &rewritten[..plain.len()],
            &plain[..],
            "{compression:?}: untouched batch keeps its bytes"
        );

        let mut rest = rewritten.slice(plain.len()..);
        let set = RecordBatchDecoder::decode(&mut rest).unwrap();
        assert!(rest.is_empty(), "exactly one batch follows");
        assert_eq!(set.compression, compression);
        assert_eq!(set.records.len(), 2, "no record dropped");
        let (a, b) = (&set.records[0], &set.records[1]);
        assert_eq!((a.offset, b.offset), (2, 3));
        assert_eq!((a.sequence, b.sequence), (12, 13));
        assert_eq!(
            (a.producer_id, a.producer_epoch, a.transactional),
            (7, 2, true)
        );
        assert_eq!(a.partition_leader_epoch, 3);
        assert_eq!(
            (a.timestamp, b.timestamp),
            (1_700_000_000_014, 1_700_000_000_021)
        );
        assert_eq!(a.value.as_deref(), Some(&b"ordinary-2"[..]));

        let env: Envelope = serde_json::from_slice(b.value.as_ref().unwrap()).unwrap();
        assert_eq!(env.size, blob.len() as u64);
        assert_eq!(env.sha256, ChecksumAlg::Sha256.hex_digest(&blob));
        assert_eq!(env.content_type, "image/png");
        assert_eq!(env.proxy_id, "proxy-test");
        assert!(env.key.starts_with("default/t/lfs/"), "{}", env.key);
        assert!(!b.headers.contains_key(&header_name(LFS_BLOB)));
        assert!(b.headers.contains_key(&StrBytes::from_static_str("keep")));
        assert!(b
            .headers
            .contains_key(&StrBytes::from_static_str("content-type")));
        assert_eq!(
            lfs.store.get(&env.key).await.unwrap(),
            Bytes::from(blob.clone())
        );
        assert_eq!(
            out.uploads,
            vec![PartitionUploads {
                topic: "t".into(),
                partition: 4,
                keys: vec![env.key.clone()]
            }]
        );
    }
}

#[tokio::test]
async fn failures_are_per_partition_and_leave_no_object() {
    let dir = tempfile::tempdir().unwrap();
    let lfs = lfs(dir.path());
    let good = batch(
        &[record(0, b"fine", &[(LFS_BLOB, b"")], -1, -1)],
        Compression::None,
    );
    let too_big = batch(
        &[record(
            0,
            &vec![1u8; 2 * 1024 * 1024],
            &[(LFS_BLOB, b"")],
            -1,
            -1,
        )],
        Compression::None,
    );
    let md5_bad = batch(
        &[
            record(0, b"first ok", &[(LFS_BLOB, b"")], -1, -1),
            record(
                1,
                b"payload",
                &[
                    (LFS_BLOB, b"00000000000000000000000000000000"),
                    (LFS_BLOB_ALG, b"md5"),
                ],
                -1,
                -1,
            ),
        ],
        Compression::Lz4,
    );
    let crc_ok = batch(
        &[record(
            0,
            b"123456789",
            &[(LFS_BLOB, b"CBF43926"), (LFS_BLOB_ALG, b"crc32")],
            -1,
            -1,
        )],
        Compression::None,
    );
    let frame = produce_frame(
        7,
        vec![
            ("t", 0, good),
            ("t", 1, too_big),
            ("u", 0, md5_bad),
            ("u", 1, crc_ok),
        ],
    );
    let out = rewrite(&lfs, &frame).await.unwrap();
    let failed: Vec<_> = out
        .failed
        .iter()
        .map(|f| (f.topic.as_str(), f.partition, f.error_code))
        .collect();
    assert_eq!(
        failed,
        vec![("t", 1, MESSAGE_TOO_LARGE), ("u", 0, INVALID_RECORD)]
    );
    assert!(
        out.failed[1].message.contains("checksum mismatch"),
        "{}",
        out.failed[1].message
    );
    let forwarded: Vec<_> = decode_partitions(out.frame.as_ref().unwrap(), 7)
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect();
    assert_eq!(forwarded, vec![("t".to_string(), 0), ("u".to_string(), 1)]);
    // Only the two forwarded partitions' objects exist: the first record
    // of the failed lz4 batch was uploaded, then deleted.
    let stored = lfs.store.list("default").await.unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
    let envelope_of_crc: Vec<String> = out.uploads.iter().flat_map(|u| u.keys.clone()).collect();
    assert_eq!(envelope_of_crc.len(), 2);
}

#[tokio::test]
async fn multipart_values_are_hashed_while_uploading_and_a_mismatch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut lfs = lfs(dir.path());
    // 64 KiB parts: a 1 MiB value is a multipart upload of 16 parts.
    lfs.store = BlobStore::local(dir.path(), 64 * 1024).unwrap();
    let value: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sha = ChecksumAlg::Sha256.hex_digest(&value);
    let wrong = ChecksumAlg::Sha256.hex_digest(b"something else");
    let frame = |checksum: &str| {
        produce_frame(
            9,
            vec![(
                "t",
                0,
                batch(
                    &[record(
                        0,
                        &value,
                        &[(LFS_BLOB, checksum.as_bytes())],
                        -1,
                        -1,
                    )],
                    Compression::None,
                ),
            )],
        )
    };
    let refused = rewrite(&lfs, &frame(&wrong)).await.unwrap();
    assert_eq!(refused.failed.len(), 1);
    assert_eq!(refused.failed[0].error_code, INVALID_RECORD);
    assert!(lfs.store.list("").await.unwrap().is_empty());
    let leftovers: Vec<_> = walk(dir.path());
    assert!(leftovers.is_empty(), "parts left behind: {leftovers:?}");

    let stored = rewrite(&lfs, &frame(&sha)).await.unwrap();
    assert!(stored.failed.is_empty());
    let key = &stored.uploads[0].keys[0];
    assert_eq!(lfs.store.get(key).await.unwrap(), Bytes::from(value));
}

/// Every file under `dir`, staging files included.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn idempotent_retries_reuse_the_object_key() {
    let dir = tempfile::tempdir().unwrap();
    let lfs = lfs(dir.path());
    let frame = produce_frame(
        9,
        vec![(
            "t",
            0,
            batch(
                &[record(0, b"v", &[(LFS_BLOB, b"")], 99, 5)],
                Compression::None,
            ),
        )],
    );
    let first = rewrite(&lfs, &frame).await.unwrap();
    let again = rewrite(&lfs, &frame).await.unwrap();
    assert_eq!(first.uploads, again.uploads);
    assert_eq!(lfs.store.list("default").await.unwrap().len(), 1);
}

#[tokio::test]
async fn topic_filter_confines_offload() {
    let dir = tempfile::tempdir().unwrap();
    let mut lfs = lfs(dir.path());
    lfs.topics = TopicFilter::new(Some(vec!["images".into()]));
    let frame = produce_frame(
        9,
        vec![(
            "other",
            0,
            batch(
                &[record(0, b"v", &[(LFS_BLOB, b"")], -1, -1)],
                Compression::None,
            ),
        )],
    );
    assert!(rewrite(&lfs, &frame).await.is_none());
    let frame = produce_frame(
        9,
        vec![(
            "images",
            0,
            batch(
                &[record(0, b"v", &[(LFS_BLOB, b"")], -1, -1)],
                Compression::None,
            ),
        )],
    );
    assert!(rewrite(&lfs, &frame).await.is_some());
}
