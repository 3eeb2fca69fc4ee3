//! The proxy's hot paths, each next to the least work it could be compared
//! with:
//! - `frame_peek`: the request-header peek every frame gets;
//! - `ordinary_produce_1000x1KiB`: the "does this Produce hold an LFS
//!   record" check (`rewrite_produce` answering "forward the original
//!   bytes"), against copying the frame once;
//! - `batch_rebuild_1000x1KiB`: decoding and re-encoding a batch with each
//!   codec (what an LFS batch costs besides the upload);
//! - `fetch_response_check_1MiB`: the Fetch v16 response check for
//!   KIP-951 `node_endpoints` (a full structural decode today), against
//!   copying the frame once;
//! - `envelope_encode`: the JSON envelope;
//! - `sha256_64MiB`: the digest every LFS value and upload gets (the CPU's
//!   SHA-NI limit is about 1 GB/s per core).
//!
//! Run: cargo bench --bench hot_paths

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_lfs_proxy::kafka::relay::addresses::{rewrite_response, BrokerAddressMap};
use kafka_lfs_proxy::kafka::wire::batches::encode_v2;
use kafka_lfs_proxy::kafka::wire::frame::{peek_request_header, Frame};
use kafka_lfs_proxy::lfs::checksum::ChecksumAlg;
use kafka_lfs_proxy::lfs::checksum::StreamingDigest;
use kafka_lfs_proxy::lfs::envelope::Envelope;
use kafka_lfs_proxy::lfs::rewrite::rewrite_produce;
use kafka_lfs_proxy::lfs::store::BlobStore;
use kafka_lfs_proxy::lfs::{Lfs, TopicFilter};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn records() -> Vec<Record> {
    (0..1000)
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
        .collect()
}

fn batch(compression: Compression) -> Bytes {
    encode_v2(&records(), compression).unwrap()
}

fn produce_frame(compression: Compression) -> Frame {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("events")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(compression)))])]);
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

/// A Fetch v16 response: one partition carrying the 1000 × 1 KiB batch.
fn fetch_response_frame() -> Frame {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    let response = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_partitions(vec![PartitionData::default()
            .with_partition_index(0)
            .with_high_watermark(1000)
            .with_records(Some(batch(Compression::None)))])]);
    let mut body = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(7)
        .encode(&mut body, ApiKey::Fetch.response_header_version(16))
        .unwrap();
    response.encode(&mut body, 16).unwrap();
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
        content_addressed: false,
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

    let frame = produce_frame(Compression::None);
    let body = frame.body();
    let mut group = c.benchmark_group("frame_peek");
    group.bench_function("produce_request_header", |b| {
        b.iter(|| peek_request_header(&body).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("batch_rebuild_1000x1KiB");
    group.throughput(Throughput::Bytes(1000 * 1024));
    for (name, compression) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let encoded = batch(compression);
        group.bench_function(name, |b| {
            b.iter(|| {
                let set = RecordBatchDecoder::decode(&mut encoded.clone()).unwrap();
                let mut out = BytesMut::with_capacity(encoded.len());
                RecordBatchEncoder::encode(
                    &mut out,
                    set.records.iter(),
                    &RecordEncodeOptions {
                        version: set.version,
                        compression: set.compression,
                    },
                )
                .unwrap();
                out
            })
        });
    }
    group.finish();

    let fetch = fetch_response_frame();
    let map = BrokerAddressMap::new("proxy.internal", 20000);
    let mut group = c.benchmark_group("fetch_response_check_1MiB");
    group.throughput(Throughput::Bytes(fetch.len() as u64));
    group.bench_function("copy_frame", |b| {
        b.iter(|| Bytes::copy_from_slice(fetch.wire()))
    });
    group.bench_function("node_endpoints_check", |b| {
        b.iter(|| {
            let out = rewrite_response(&map, ApiKey::Fetch, 16, fetch.clone()).unwrap();
            assert!(out.brokers.is_empty());
            out
        })
    });
    group.finish();

    let envelope = Envelope {
        kfs_lfs: 1,
        bucket: "media".into(),
        key: "default/events/lfs/2026/11/22/obj-4f1c7a52-9a3e-4d7e-b3c1-0e2a1f6d9b11".into(),
        size: 268_435_456,
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        checksum: None,
        checksum_alg: None,
        content_type: "application/octet-stream".into(),
        created_at: "2026-11-22T07:00:00Z".into(),
        proxy_id: "proxy-0".into(),
    };
    c.bench_function("envelope_encode", |b| b.iter(|| envelope.to_json()));

    let data: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut group = c.benchmark_group("sha256_64MiB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("streaming_digest_1MiB_pieces", |b| {
        b.iter(|| {
            let mut d = StreamingDigest::new(ChecksumAlg::Sha256);
            for piece in data.chunks(1024 * 1024) {
                d.update(piece);
            }
            d.finish()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
