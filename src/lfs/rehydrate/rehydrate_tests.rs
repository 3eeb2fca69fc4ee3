//! The Fetch response rewrite against a real local store: what is
//! delivered, what waits for the next fetch, and what fails, per partition.

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, TimestampType};
use uuid::Uuid;

use super::*;
use crate::kafka::wire::batches::encode_v2;

const TOPIC: &str = "t";

struct Fixture {
    _dir: tempfile::TempDir,
    store: BlobStore,
    rehydrator: Rehydrator,
}

fn fixture(budget: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
    let scope = EnvelopeScope {
        bucket: store.bucket().to_owned(),
        namespace: "default".into(),
        max_size: 1 << 30,
    };
    let rehydrator = Rehydrator::new(store.clone(), scope, 1 << 20, budget);
    Fixture {
        _dir: dir,
        store,
        rehydrator,
    }
}

fn record(offset: i64, value: Bytes) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(value),
        headers: Default::default(),
    }
}

/// Stores `original` and returns its envelope.
async fn envelope(f: &Fixture, id: u32, original: &[u8]) -> Bytes {
    let key = format!("default/{TOPIC}/lfs/2026/12/03/obj-{id}");
    f.store
        .put(&key, Bytes::copy_from_slice(original))
        .await
        .unwrap();
    let json = serde_json::json!({
        "kfs_lfs": 1, "bucket": f.store.bucket(), "key": key, "size": original.len(),
        "sha256": crate::lfs::checksum::ChecksumAlg::Sha256.hex_digest(original),
        "content_type": "application/octet-stream", "created_at": "2026-12-03T00:00:00Z",
        "proxy_id": "p"
    });
    Bytes::from(serde_json::to_vec(&json).unwrap())
}

fn batch(offset: i64, value: Bytes) -> Bytes {
    encode_v2(&[record(offset, value)], Compression::Lz4).unwrap()
}

fn response(version: i16, partitions: Vec<(i32, Vec<Bytes>)>, topic_id: Uuid) -> Frame {
    let partitions = partitions
        .into_iter()
        .map(|(index, batches)| {
            PartitionData::default()
                .with_partition_index(index)
                .with_high_watermark(100)
                .with_records(Some(Bytes::from(batches.concat())))
        })
        .collect();
    let topic = FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
        .with_topic_id(topic_id)
        .with_partitions(partitions);
    let fetch = FetchResponse::default().with_responses(vec![topic]);
    let header = ResponseHeader::default().with_correlation_id(5);
    frame::encode_response(
        &header,
        FetchResponse::header_version(version),
        &fetch,
        version,
    )
    .unwrap()
}

fn unlimited() -> FetchLimits {
    FetchLimits::unlimited()
}

/// (error code, the values delivered) per partition.
fn delivered(frame: &Frame, version: i16) -> Vec<(i16, Vec<Bytes>)> {
    let mut body = frame.body();
    ResponseHeader::decode(&mut body, FetchResponse::header_version(version)).unwrap();
    let fetch = FetchResponse::decode(&mut body, version).unwrap();
    fetch.responses[0]
        .partitions
        .iter()
        .map(|p| {
            let (batches, _) = batches::split_whole(p.records.as_ref().unwrap());
            let values = batches
                .into_iter()
                .flat_map(|b| RecordBatchDecoder::decode(&mut b.clone()).unwrap().records)
                .map(|r| r.value.unwrap())
                .collect();
            (p.error_code, values)
        })
        .collect()
}

const CONSUMER: Consumer<'static> = Consumer {
    connection: 1,
    client_id: "test",
};

#[tokio::test]
async fn a_response_without_envelopes_is_the_same_bytes() {
    let f = fixture(1 << 20);
    let frame = response(
        12,
        vec![(0, vec![batch(0, Bytes::from_static(b"{\"a\":1}"))])],
        Uuid::nil(),
    );
    let out = f
        .rehydrator
        .rehydrate(frame.clone(), 12, &unlimited(), &CONSUMER)
        .await
        .unwrap();
    assert_eq!(out.wire().as_ptr(), frame.wire().as_ptr());
}

#[tokio::test]
async fn failures_stay_in_their_partition_and_after_the_records_before_them() {
    let f = fixture(1 << 20);
    let good = envelope(&f, 1, b"original-1").await;
    let tampered = envelope(&f, 2, b"original-2").await;
    f.store
        .put(
            "default/t/lfs/2026/12/03/obj-2",
            Bytes::from_static(b"tampered-2"),
        )
        .await
        .unwrap();
    let frame = response(
        12,
        vec![
            // Partition 0: a good batch, then the tampered one.
            (0, vec![batch(0, good.clone()), batch(1, tampered.clone())]),
            // Partition 1: the tampered one first.
            (
                1,
                vec![batch(0, tampered), batch(1, Bytes::from_static(b"plain"))],
            ),
            (2, vec![batch(0, good)]),
        ],
        Uuid::nil(),
    );
    let out = f
        .rehydrator
        .rehydrate(frame, 12, &unlimited(), &CONSUMER)
        .await
        .unwrap();
    assert_eq!(
        delivered(&out, 12),
        vec![
            (0, vec![Bytes::from_static(b"original-1")]),
            (CORRUPT_MESSAGE, vec![]),
            (0, vec![Bytes::from_static(b"original-1")]),
        ]
    );
}

#[tokio::test]
async fn after_the_first_batch_the_consumers_limits_hold() {
    let f = fixture(1 << 20);
    let mut batches = Vec::new();
    for i in 0..4 {
        batches.push(batch(i, envelope(&f, i as u32, &vec![i as u8; 1000]).await));
    }
    let frame = response(12, vec![(0, batches)], Uuid::nil());
    // 3000 bytes per partition: each batch counts as its envelope batch
    // plus the value (~1250 bytes), so two fit and the third waits.
    let mut limits = unlimited();
    limits.set_partition(TopicRef::Name(TOPIC.into()), 0, 3000);
    let out = f
        .rehydrator
        .rehydrate(frame.clone(), 12, &limits, &CONSUMER)
        .await
        .unwrap();
    let got = &delivered(&out, 12)[0].1;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], Bytes::from(vec![1u8; 1000]));
    // A limit below one batch still delivers the first (KIP-74).
    let mut tiny = unlimited();
    tiny.max_bytes = 10;
    let out = f
        .rehydrator
        .rehydrate(frame, 12, &tiny, &CONSUMER)
        .await
        .unwrap();
    assert_eq!(delivered(&out, 12)[0].1, vec![Bytes::from(vec![0u8; 1000])]);
}

#[tokio::test]
async fn topic_ids_not_yet_learnt_ask_the_client_to_refresh() {
    use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
    use kafka_protocol::messages::MetadataResponse;

    let f = fixture(1 << 20);
    let id = Uuid::from_u128(42);
    let value = envelope(&f, 7, b"by-id").await;
    let frame = response(13, vec![(0, vec![batch(0, value)])], id);
    let out = f
        .rehydrator
        .rehydrate(frame.clone(), 13, &unlimited(), &CONSUMER)
        .await
        .unwrap();
    assert_eq!(delivered(&out, 13), vec![(UNKNOWN_TOPIC_ID, vec![])]);

    let metadata = MetadataResponse::default().with_topics(vec![MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))
        .with_topic_id(id)]);
    f.rehydrator.topic_ids().learn(&metadata);
    let out = f
        .rehydrator
        .rehydrate(frame, 13, &unlimited(), &CONSUMER)
        .await
        .unwrap();
    assert_eq!(
        delivered(&out, 13),
        vec![(0, vec![Bytes::from_static(b"by-id")])]
    );
}

#[tokio::test]
async fn the_budget_is_held_until_the_response_is_dropped() {
    let f = fixture(16384);
    let value = envelope(&f, 9, &[5u8; 3000]).await;
    let frame = response(12, vec![(0, vec![batch(0, value)])], Uuid::nil());
    let out = f
        .rehydrator
        .rehydrate(frame.clone(), 12, &unlimited(), &CONSUMER)
        .await
        .unwrap();
    // Three copies of the value: as read, rebuilt, encoded.
    assert_eq!(f.rehydrator.budget.available_permits(), 16384 - 9000);
    // A second response must wait for room.
    let limits = unlimited();
    let waiting = f
        .rehydrator
        .rehydrate(frame.clone(), 12, &limits, &CONSUMER);
    let timed = tokio::time::timeout(std::time::Duration::from_millis(100), waiting).await;
    assert!(timed.is_err(), "no room until the first response is gone");
    drop(out);
    assert_eq!(f.rehydrator.budget.available_permits(), 16384);
    let again = f
        .rehydrator
        .rehydrate(frame, 12, &unlimited(), &CONSUMER)
        .await;
    assert!(again.is_ok());
}
