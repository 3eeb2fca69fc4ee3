//! The LFS Produce rewrite on any Produce a client can send, against a real
//! local store. Two shapes of input:
//!
//! * first byte < 0x80: the rest is a Produce frame body as is (seeded
//!   with the captured clients' Produce requests);
//! * first byte >= 0x80: a well-formed Produce is built from the rest (its
//!   codec from the low bits, records carrying `LFS_BLOB` with checksums
//!   and algorithms from the input), and then some of its bytes are
//!   flipped, so every codec's batch parser and rebuild are reached.
//!
//! After each run the store holds only objects of partitions the rewrite
//! says it stored: nothing of a failed partition is left behind.
#![no_main]

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use kafka_lfs_proxy::kafka::wire::batches;
use kafka_lfs_proxy::kafka::wire::frame::{peek_request_header, Frame};
use kafka_lfs_proxy::lfs::checksum::ChecksumAlg;
use kafka_lfs_proxy::lfs::rewrite::rewrite_produce;
use kafka_lfs_proxy::lfs::store::BlobStore;
use kafka_lfs_proxy::lfs::{Lfs, TopicFilter};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, TimestampType};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        dir: tempfile::tempdir().unwrap(),
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    })
}

fn built_produce(data: &[u8]) -> Vec<u8> {
    let compression = match data.first().copied().unwrap_or(0) & 0x07 {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    };
    let version = 3 + (data.get(1).copied().unwrap_or(0) % 10) as i16;
    let rest = data.get(2..).unwrap_or_default();
    // The first half makes records, the second says which bytes to flip.
    let (records_part, flips) = rest.split_at(rest.len() / 2);
    let mut records = Vec::new();
    for (i, chunk) in records_part.chunks(24).enumerate().take(8) {
        let mut record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: if chunk[0] & 1 == 1 { 7 } else { -1 },
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::copy_from_slice(&chunk[..chunk.len().min(3)])),
            value: Some(Bytes::copy_from_slice(chunk)),
            headers: Default::default(),
        };
        if chunk[0] & 2 == 0 {
            let expected: &[u8] = match chunk[0] & 0x0c {
                0 => b"",
                4 => &chunk[1..],
                _ => b"00",
            };
            record.headers.insert(
                StrBytes::from_static_str("LFS_BLOB"),
                Some(Bytes::copy_from_slice(expected)),
            );
        }
        if chunk[0] & 0x30 != 0 {
            let alg: &'static str =
                ["sha256", "md5", "crc32", "nope"][(chunk[0] >> 4) as usize & 3];
            record.headers.insert(
                StrBytes::from_static_str("LFS_BLOB_ALG"),
                Some(Bytes::from_static(alg.as_bytes())),
            );
        }
        records.push(record);
    }
    let Ok(batch) = batches::encode_v2(&records, compression) else {
        return Vec::new();
    };
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("fuzz")))
            .with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.clone())),
                PartitionProduceData::default()
                    .with_index(1)
                    .with_records(Some(batch)),
            ])]);
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut body, ApiKey::Produce.request_header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    let mut body = body.to_vec();
    for pair in flips.chunks(3).take(4) {
        if let [hi, lo, value] = pair {
            let at = (usize::from(*hi) << 8 | usize::from(*lo)) % body.len().max(1);
            if let Some(b) = body.get_mut(at) {
                *b ^= value | 1;
            }
        }
    }
    body
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let body = match data.first() {
        Some(b) if *b >= 0x80 => built_produce(&data[1..]),
        Some(_) => data[1..].to_vec(),
        None => return,
    };
    let frame = Frame::from_body(&body);
    let Ok(header) = peek_request_header(&frame.body()) else {
        return;
    };
    if header.api_key != ApiKey::Produce as i16 {
        return;
    }
    let lfs = Lfs {
        store: BlobStore::local(fixture.dir.path(), 5 * 1024 * 1024).unwrap(),
        namespace: "fuzz".into(),
        proxy_id: "fuzz".into(),
        max_blob_size: 64,
        default_alg: ChecksumAlg::Sha256,
        topics: TopicFilter::default(),
        content_addressed: false,
    };
    fixture.runtime.block_on(async {
        if let Ok(Some(rewritten)) = rewrite_produce(&lfs, &header, &frame).await {
            let stored: usize = rewritten.uploads.iter().map(|u| u.keys.len()).sum();
            let listed = lfs.store.list("fuzz").await.unwrap();
            assert_eq!(
                listed.len(),
                stored,
                "objects of failed partitions left behind"
            );
            for key in rewritten.uploads.iter().flat_map(|u| u.keys.iter()) {
                lfs.store.delete(key).await.unwrap();
            }
        }
        assert!(lfs.store.list("fuzz").await.unwrap().is_empty());
    });
});
