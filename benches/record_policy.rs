//! The record policy stage on a 1000 × 1 KiB Produce (Smart Cache events:
//! a UUID key, a Security-Label header, a 1 KiB JSON value with base64
//! content), each record keeping the policy, next to the least work it
//! could be compared with:
//! - `copy_frame`: copying the frame once;
//! - `no_policy_for_topic`: a policy file without a policy for this topic
//!   (the request is decoded to read its topic names, records untouched);
//! - `headers_and_key_only_none`: the example policy without its JSON
//!   value rule (records decoded, headers and key judged);
//! - `smart_cache_policy_{none,lz4}`: the example policy
//!   (examples/policies/smart-cache-documents.yaml) judging every record,
//!   JSON value rule included, uncompressed and lz4.
//!
//! Run: cargo bench --bench record_policy

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_lfs_proxy::kafka::client::cluster::Cluster;
use kafka_lfs_proxy::kafka::client::producer::Producer;
use kafka_lfs_proxy::kafka::relay::chain::{
    ConnectionInfo, Request, RequestAction, Stage, StageState,
};
use kafka_lfs_proxy::kafka::relay::upstream::UpstreamSecurity;
use kafka_lfs_proxy::kafka::wire::batches::encode_v2;
use kafka_lfs_proxy::kafka::wire::frame::{peek_request_header, Frame};
use kafka_lfs_proxy::lfs::TopicFilter;
use kafka_lfs_proxy::policy::{PolicyBook, PolicySet};
use kafka_lfs_proxy::stages::record_policy::RecordPolicy;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, TimestampType};

const EXAMPLE: &str = include_str!("../examples/policies/smart-cache-documents.yaml");

fn events() -> Vec<Record> {
    (0..1000)
        .map(|i| {
            let content: Vec<u8> = (0..700).map(|b| ((b * 31 + i) % 251) as u8).collect();
            let value = format!(
                r#"{{"uri": "https://example.org/ns#{i:064}", "filename": "doc-{i}.txt", "content": "{}"}}"#,
                base64::engine::general_purpose::STANDARD.encode(content)
            );
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i - 1,
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(Bytes::from(uuid::Uuid::new_v4().to_string())),
                value: Some(Bytes::from(value)),
                headers: [
                    (
                        StrBytes::from_static_str("Security-Label"),
                        Some(Bytes::from_static(b"(classification=O)")),
                    ),
                    (
                        StrBytes::from_static_str("Content-Type"),
                        Some(Bytes::from_static(b"text/plain")),
                    ),
                ]
                .into_iter()
                .collect(),
            }
        })
        .collect()
}

fn produce_frame(compression: Compression) -> Frame {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("documents")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(encode_v2(&events(), compression).unwrap()))])]);
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(0)
        .with_request_api_version(9)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bench")))
        .encode(&mut body, ApiKey::Produce.request_header_version(9))
        .unwrap();
    request.encode(&mut body, 9).unwrap();
    Frame::from_body(&body)
}

fn stage(policy_yaml: &str) -> RecordPolicy {
    let security = Arc::new(UpstreamSecurity {
        tls: None,
        sasl: None,
        max_frame_size: 1 << 20,
    });
    // Never called: every record keeps the policy.
    let cluster = Cluster::new(
        security,
        vec!["127.0.0.1:1".into()],
        Duration::from_millis(50),
        Duration::from_millis(50),
        1 << 20,
    );
    RecordPolicy::new(
        Arc::new(PolicyBook::with(
            PolicySet::parse(policy_yaml, false).unwrap(),
        )),
        TopicFilter::default(),
        Arc::new(Producer::new(cluster)),
    )
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = ConnectionInfo::new(1, "127.0.0.1:1".parse().unwrap());
    let other =
        stage(&EXAMPLE.replace(r#"topics: ["documents", "documents.*"]"#, "topics: [other]"));
    let smart_cache = stage(EXAMPLE);
    let without_json = stage(&EXAMPLE[..EXAMPLE.find("    value:").unwrap()]);
    let run = |stage: &RecordPolicy, frame: &Frame| {
        let body = frame.body();
        let request = Request {
            header: peek_request_header(&body).unwrap(),
            frame: frame.clone(),
            owing: Vec::new(),
        };
        let mut state = StageState::default();
        match runtime
            .block_on(stage.on_request(&conn, &mut state, request))
            .unwrap()
        {
            // Every record keeps the policy: the same bytes go on.
            RequestAction::Forward(r) => assert!(r.frame.wire() == frame.wire()),
            _ => panic!("forward expected"),
        }
    };
    let mut group = c.benchmark_group("record_policy_1000x1KiB");
    let frame = produce_frame(Compression::None);
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("copy_frame", |b| {
        b.iter(|| Bytes::copy_from_slice(frame.wire()))
    });
    group.bench_function("no_policy_for_topic", |b| b.iter(|| run(&other, &frame)));
    group.bench_function("headers_and_key_only_none", |b| {
        b.iter(|| run(&without_json, &frame))
    });
    group.bench_function("smart_cache_policy_none", |b| {
        b.iter(|| run(&smart_cache, &frame))
    });
    let lz4 = produce_frame(Compression::Lz4);
    group.throughput(Throughput::Bytes(lz4.len() as u64));
    group.bench_function("smart_cache_policy_lz4", |b| {
        b.iter(|| run(&smart_cache, &lz4))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
