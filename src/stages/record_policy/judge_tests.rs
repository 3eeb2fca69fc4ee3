use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;
use crate::policy::{PolicySet, Rule};

const POLICY: &str = r#"
policies:
  - name: p
    topics: [t]
    action: ACTION
    DLQ
    headers: { required: [Security-Label] }
    key: { format: uuid }
"#;

fn policy(dead_letter: bool) -> Policy {
    let yaml = if dead_letter {
        POLICY
            .replace("ACTION", "dead_letter")
            .replace("DLQ", "dead_letter_topic: t.dlq")
    } else {
        POLICY.replace("ACTION", "reject").replace("DLQ", "")
    };
    PolicySet::parse(&yaml, false)
        .unwrap()
        .for_topic("t")
        .unwrap()
        .clone()
}

fn record(offset: i64, good: bool, producer_id: i64) -> Record {
    let mut headers = IndexMap::new();
    if good {
        headers.insert(
            StrBytes::from_static_str("Security-Label"),
            Some(Bytes::from_static(b"S")),
        );
    }
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: if producer_id >= 0 { 0 } else { -1 },
        timestamp_type: TimestampType::Creation,
        offset,
        // As decoded: base sequence (-1 without a producer id) plus delta.
        sequence: if producer_id >= 0 {
            offset as i32
        } else {
            offset as i32 - 1
        },
        timestamp: 1_700_000_000_000 + offset,
        key: None,
        value: Some(Bytes::from(format!("value {offset}"))),
        headers,
    }
}

fn batch(out: &mut BytesMut, records: &[Record], compression: Compression) {
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(out, records.iter(), &options).unwrap();
}

#[test]
fn record_indexes_count_across_batches() {
    let mut out = BytesMut::new();
    batch(
        &mut out,
        &[record(0, true, -1), record(1, false, -1)],
        Compression::None,
    );
    batch(
        &mut out,
        &[record(0, false, -1), record(1, true, -1)],
        Compression::Lz4,
    );
    match judge_partition(&policy(false), &out.freeze(), false) {
        Verdict::Refuse {
            checked,
            error_code,
            message,
            bad,
        } => {
            assert_eq!((checked, error_code), (4, INVALID_RECORD));
            assert_eq!(bad.iter().map(|b| b.index).collect::<Vec<_>>(), [1, 2]);
            assert!(bad.iter().all(|b| b.violation.rule == Rule::HeaderRequired));
            assert!(
                message.starts_with("2 of 4 records break their topic policy; first: record 1: policy p rule header_required: header Security-Label is required"),
                "{message}"
            );
        }
        _ => panic!("refused expected"),
    }
}

#[test]
fn dead_letter_keeps_the_rest_in_order_with_its_codec() {
    let mut out = BytesMut::new();
    let first = [
        record(0, true, -1),
        record(1, false, -1),
        record(2, true, -1),
    ];
    batch(&mut out, &first, Compression::Zstd);
    batch(&mut out, &[record(3, true, -1)], Compression::None);
    let records = out.freeze();
    let second_batch = batches::split_whole(&records).0[1].clone();
    let Verdict::DeadLetter {
        checked,
        topic,
        kept,
        bad,
    } = judge_partition(&policy(true), &records, false)
    else {
        panic!("dead-letter expected")
    };
    assert_eq!(checked, 4);
    assert_eq!(topic, "t.dlq");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].index, 1);
    assert_eq!(bad[0].record.value.as_deref(), Some(&b"value 1"[..]));
    let kept = kept.unwrap();
    let (batches_kept, rest) = batches::split_whole(&kept);
    assert!(rest.is_empty());
    assert_eq!(batches_kept.len(), 2);
    // A batch without a bad record is the same bytes.
    assert_eq!(batches_kept[1], second_batch);
    let set = RecordBatchDecoder::decode(&mut batches_kept[0].clone()).unwrap();
    assert_eq!(set.compression, Compression::Zstd);
    let values: Vec<_> = set
        .records
        .iter()
        .map(|r| r.value.clone().unwrap())
        .collect();
    assert_eq!(values, [&b"value 0"[..], &b"value 2"[..]]);
    let offsets: Vec<_> = set.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 1]);
    assert_eq!(set.records[1].timestamp, 1_700_000_000_002);
}

#[test]
fn a_partition_of_bad_records_only_is_dead_lettered_whole() {
    let mut out = BytesMut::new();
    batch(&mut out, &[record(0, false, -1)], Compression::None);
    let Verdict::DeadLetter { kept, bad, .. } =
        judge_partition(&policy(true), &out.freeze(), false)
    else {
        panic!("dead-letter expected")
    };
    assert!(kept.is_none());
    assert_eq!(bad.len(), 1);
}

#[test]
fn idempotent_batches_are_refused_not_dead_lettered() {
    let mut out = BytesMut::new();
    batch(
        &mut out,
        &[record(0, true, 7), record(1, false, 7)],
        Compression::None,
    );
    let Verdict::Refuse { message, bad, .. } = judge_partition(&policy(true), &out.freeze(), false)
    else {
        panic!("refused expected")
    };
    assert_eq!(bad[0].index, 1);
    assert!(message.contains(IDEMPOTENT_REFUSAL), "{message}");
}

#[test]
fn what_cannot_be_read_is_refused() {
    let mut out = BytesMut::new();
    batch(&mut out, &[record(0, true, -1)], Compression::None);
    let mut corrupt = out.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let trailing = [&out[..], &[0u8; 5][..]].concat();
    for bytes in [corrupt, trailing] {
        let Verdict::Refuse {
            error_code,
            message,
            bad,
            ..
        } = judge_partition(&policy(false), &Bytes::from(bytes), false)
        else {
            panic!("refused expected")
        };
        assert_eq!(error_code, CORRUPT_MESSAGE);
        assert!(bad.is_empty());
        assert!(
            message.starts_with("records cannot be checked"),
            "{message}"
        );
    }
    let mut good = BytesMut::new();
    batch(&mut good, &[record(0, true, -1)], Compression::None);
    assert!(matches!(
        judge_partition(&policy(false), &good.freeze(), false),
        Verdict::Pass { checked: 1 }
    ));
}
