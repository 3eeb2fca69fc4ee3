//! The Fetch rehydration on any Fetch response a broker can send, against a
//! real local store holding four objects; the envelopes of one of them
//! declare another SHA-256 (a tampered object). Two shapes of input:
//!
//! * first byte < 0x80: `[version: 2 bytes][response body]` as is (seeded
//!   with the captured Fetch responses);
//! * first byte >= 0x80: a Fetch response is built from the rest (codec
//!   from the low bits, values that are envelopes of the stored objects or
//!   ordinary bytes), then some of its bytes are flipped.
//!
//! Whatever happens, no record the proxy hands out carries the tampered
//! object's bytes, and a value that is not what the broker sent is exactly
//! one of the stored objects.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use kafka_lfs_proxy::kafka::wire::batches;
use kafka_lfs_proxy::kafka::wire::frame::{self, Frame};
use kafka_lfs_proxy::lfs::checksum::ChecksumAlg;
use kafka_lfs_proxy::lfs::rehydrate::{Consumer, FetchLimits, Rehydrator};
use kafka_lfs_proxy::lfs::resolve::EnvelopeScope;
use kafka_lfs_proxy::lfs::store::BlobStore;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, TimestampType};
use libfuzzer_sys::fuzz_target;

const TOPIC: &str = "t";
const TAMPERED: usize = 2;

struct Fixture {
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    rehydrator: Rehydrator,
    objects: Vec<Vec<u8>>,
    envelopes: Vec<Bytes>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let objects: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 100 + 700 * i as usize]).collect();
        let mut envelopes = Vec::new();
        for (i, object) in objects.iter().enumerate() {
            let key = format!("default/{TOPIC}/lfs/2026/12/03/obj-{i}");
            runtime
                .block_on(store.put(&key, Bytes::from(object.clone())))
                .unwrap();
            let sha = if i == TAMPERED {
                "0".repeat(64)
            } else {
                ChecksumAlg::Sha256.hex_digest(object)
            };
            let json = format!(
                r#"{{"kfs_lfs":1,"bucket":"{}","key":"{key}","size":{},"sha256":"{sha}","content_type":"x","created_at":"2026-12-03T00:00:00Z","proxy_id":"p"}}"#,
                store.bucket(),
                object.len()
            );
            envelopes.push(Bytes::from(json));
        }
        let scope = EnvelopeScope {
            bucket: store.bucket().to_owned(),
            namespace: "default".into(),
            max_size: 1 << 20,
        };
        Fixture {
            _dir: dir,
            runtime,
            rehydrator: Rehydrator::new(store, scope, 4096, 1 << 20),
            objects,
            envelopes,
        }
    })
}

fn built_response(f: &Fixture, data: &[u8]) -> (i16, Vec<u8>) {
    let compression = match data.first().copied().unwrap_or(0) & 0x07 {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    };
    let version = 4 + (data.get(1).copied().unwrap_or(0) % 9) as i16;
    let rest = data.get(2..).unwrap_or_default();
    let (records_part, flips) = rest.split_at(rest.len() / 2);
    let mut partitions = Vec::new();
    for (p, chunk) in records_part.chunks(6).enumerate().take(4) {
        let records: Vec<Record> = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: 0,
                key: None,
                value: Some(if b & 0x80 != 0 {
                    f.envelopes[(b & 0x03) as usize].clone()
                } else {
                    Bytes::copy_from_slice(&[*b])
                }),
                headers: Default::default(),
            })
            .collect();
        let records = batches::encode_v2(&records, compression).unwrap();
        partitions.push(
            PartitionData::default()
                .with_partition_index(p as i32)
                .with_records(Some(records)),
        );
    }
    let fetch = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
        .with_partitions(partitions)]);
    let header = ResponseHeader::default().with_correlation_id(1);
    let frame =
        frame::encode_response(&header, FetchResponse::header_version(version), &fetch, version)
            .unwrap();
    let mut body = frame.body().to_vec();
    for pair in flips.chunks(2) {
        if let [at, with] = pair {
            let i = (*at as usize * 7) % body.len();
            body[i] ^= with;
        }
    }
    (version, body)
}

/// Every record value of a response, when it decodes.
fn values(body: &[u8], version: i16) -> Option<Vec<Bytes>> {
    let mut buf = Bytes::copy_from_slice(body);
    ResponseHeader::decode(&mut buf, FetchResponse::header_version(version)).ok()?;
    let fetch = FetchResponse::decode(&mut buf, version).ok()?;
    let mut out = Vec::new();
    for t in &fetch.responses {
        for p in &t.partitions {
            let (whole, _) = batches::split_whole(p.records.as_ref()?);
            for b in whole {
                if let Ok(set) = RecordBatchDecoder::decode(&mut b.clone()) {
                    out.extend(set.records.into_iter().filter_map(|r| r.value));
                }
            }
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let f = fixture();
    let (version, body) = if data[0] >= 0x80 {
        built_response(f, &data[1..])
    } else {
        let version = i16::from_be_bytes([data[0], data[1]]).rem_euclid(19);
        (version, data[2..].to_vec())
    };
    let upstream = Frame::from_body(&body);
    let consumer = Consumer {
        connection: 1,
        client_id: "fuzz",
    };
    let out = f.runtime.block_on(f.rehydrator.rehydrate(
        upstream,
        version,
        &FetchLimits::unlimited(),
        &consumer,
    ));
    let Ok(out) = out else { return };
    let sent = values(&body, version).unwrap_or_default();
    for value in values(&out.body(), version).unwrap_or_default() {
        assert!(value[..] != f.objects[TAMPERED][..], "tampered bytes handed out");
        let from_broker = sent.contains(&value);
        let verified = f.objects.iter().enumerate().any(|(i, o)| i != TAMPERED && o[..] == value[..]);
        assert!(from_broker || verified, "a value neither the broker's nor a verified object");
    }
});
