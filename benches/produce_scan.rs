//! What the LFS check costs on ordinary traffic: `rewrite_produce` on a
//! Produce request of 1000 × 1 KiB records with no LFS record, which must
//! answer "forward the original bytes". Compared with copying the frame
//! once (the least a proxy that looks at a request could do).
//!
//! Run: cargo bench --bench produce_scan

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_lfs_proxy::kafka::frame::{peek_request_header, Frame};
use kafka_lfs_proxy::lfs::checksum::ChecksumAlg;
use kafka_lfs_proxy::lfs::rewrite::{rewrite_produce, Lfs, TopicFilter};
use kafka_lfs_proxy::lfs::store::BlobStore;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn produce_frame(compression: Compression) -> Frame {
    let records: Vec<Record> = (0..1000)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 1,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(
                (0..1024)
                    .map(|b| ((b * 31 + i) % 251) as u8)
                    .collect::<Vec<u8>>(),
            )),
            headers: [(
                StrBytes::from_static_str("trace-id"),
                Some(Bytes::from_static(b"abc")),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("events")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.freeze()))])]);
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

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lfs = Lfs {
        store: BlobStore::local(dir.path(), 5 * 1024 * 1024).unwrap(),
        namespace: "default".into(),
        proxy_id: "bench".into(),
        max_blob_size: u64::MAX,
        default_alg: ChecksumAlg::Sha256,
        topics: TopicFilter::default(),
    };
    let mut group = c.benchmark_group("ordinary_produce_1000x1KiB");
    for (name, compression) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
        let frame = produce_frame(compression);
        let body = frame.body();
        let header = peek_request_header(&body).unwrap();
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("copy_frame_{name}"), |b| {
            b.iter(|| Bytes::copy_from_slice(frame.wire()))
        });
        group.bench_function(format!("lfs_check_{name}"), |b| {
            b.iter(|| {
                let out = runtime
                    .block_on(rewrite_produce(&lfs, &header, &frame))
                    .unwrap();
                assert!(out.is_none());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
