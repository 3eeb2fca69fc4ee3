//! Record policies on any input. Two shapes:
//!
//! * first byte < 0x80: the rest is a policy file (YAML); loading it must
//!   give a set or an error, never a panic, and a set judges a record;
//! * first byte >= 0x80: the rest builds a partition's records (events
//!   that keep or break the Smart Cache example policy, the codec from the
//!   low bits of the second byte), some bytes then flipped; it is judged
//!   under the reject and the dead-letter variants.
//!
//! Properties: every record of a partition that passes keeps the policy;
//! under dead-letter, the records forwarded decode, all keep the policy,
//! and with the dead-lettered ones account for every record checked.
#![no_main]

use bytes::Bytes;
use kafka_lfs_proxy::kafka::wire::batches;
use kafka_lfs_proxy::lfs::rewrite;
use kafka_lfs_proxy::policy::{Policy, PolicySet, RecordView};
use kafka_lfs_proxy::stages::record_policy::{judge_partition, Verdict};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, TimestampType};
use libfuzzer_sys::fuzz_target;

const EXAMPLE: &str = include_str!("../../examples/policies/smart-cache-documents.yaml");

fn policies() -> (Policy, Policy) {
    let reject = PolicySet::parse(EXAMPLE, false).unwrap();
    let dl = PolicySet::parse(
        &EXAMPLE.replace(
            "action: reject",
            "action: dead_letter\n    dead_letter_topic: dead-letters",
        ),
        false,
    )
    .unwrap();
    (
        reject.for_topic("documents").unwrap().clone(),
        dl.for_topic("documents").unwrap().clone(),
    )
}

fn keeps(policy: &Policy, record: &Record) -> bool {
    policy
        .check(&RecordView {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            value_size: record.value.as_ref().map_or(0, |v| v.len() as u64),
            headers: &record.headers,
            offloaded: rewrite::is_lfs(record),
        })
        .is_ok()
}

fn event(choice: u8, i: usize) -> Record {
    let mut headers = kafka_protocol::indexmap::IndexMap::new();
    if choice & 1 == 0 {
        headers.insert(
            StrBytes::from_static_str("Security-Label"),
            Some(Bytes::from_static(b"S")),
        );
    }
    if choice & 2 != 0 {
        headers.insert(
            StrBytes::from_static_str("Content-Type"),
            Some(Bytes::from_static(b"text/plain")),
        );
    }
    let key = match (choice >> 2) & 3 {
        0 => None,
        1 => Some(Bytes::from_static(b"33002c05-a04e-4915-9bf8-9fdf6e9096e6")),
        2 => Some(Bytes::from_static(b"order-17")),
        _ => Some(Bytes::from(vec![choice; 16])),
    };
    let value = match (choice >> 4) & 3 {
        0 => Some(Bytes::from_static(br#"{"uri":"u","content":"aGk="}"#)),
        1 => Some(Bytes::from_static(br#"{"content":"aGk="}"#)),
        2 => Some(Bytes::from_static(br#"{"uri":"u","content":"!!"}"#)),
        _ => None,
    };
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: if choice & 0x40 != 0 { 3 } else { -1 },
        producer_epoch: if choice & 0x40 != 0 { 0 } else { -1 },
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        sequence: if choice & 0x40 != 0 { i as i32 } else { i as i32 - 1 },
        timestamp: 1_700_000_000_000,
        key,
        value,
        headers,
    }
}

fn built_records(data: &[u8]) -> Vec<u8> {
    let compression = match data.first().copied().unwrap_or(0) & 0x07 {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    };
    let choices = data.get(1..).unwrap_or_default();
    let split = choices.len().min(16);
    let (events, flips) = choices.split_at(split);
    // Idempotence is a property of the whole batch.
    let idempotent = events.first().is_some_and(|c| c & 0x40 != 0);
    let records: Vec<Record> = events
        .iter()
        .enumerate()
        .map(|(i, c)| event((c & !0x40) | if idempotent { 0x40 } else { 0 }, i))
        .collect();
    let mut out = batches::encode_v2(&records, compression)
        .map(|b| b.to_vec())
        .unwrap_or_default();
    for pair in flips.chunks(2) {
        if let [at, xor] = pair {
            if !out.is_empty() {
                let i = *at as usize % out.len();
                out[i] ^= xor;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode < 0x80 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok(set) = PolicySet::parse(text, mode & 1 == 1) {
            for name in set.names() {
                let _ = name.len();
            }
            if let Some(policy) = set.for_topic("t") {
                let _ = keeps(policy, &event(0, 0));
            }
        }
        return;
    }
    let records = Bytes::from(built_records(rest));
    let (reject, dead_letter) = policies();
    let verdicts = [
        judge_partition(&reject, &records, true),
        judge_partition(&dead_letter, &records, true),
    ];
    for verdict in verdicts {
        match verdict {
            Verdict::Pass { .. } => {
                let (whole, _) = batches::split_whole(&records);
                for batch in whole {
                    let set = RecordBatchDecoder::decode(&mut batch.clone()).unwrap();
                    assert!(set.records.iter().all(|r| keeps(&reject, r)));
                }
            }
            Verdict::Refuse { bad, checked, .. } => {
                assert!(bad.iter().all(|b| (b.index as usize) < checked));
                assert!(bad.windows(2).all(|w| w[0].index < w[1].index));
            }
            Verdict::DeadLetter {
                checked, kept, bad, ..
            } => {
                assert!(!bad.is_empty());
                let mut forwarded = 0;
                if let Some(kept) = kept {
                    let (whole, rest) = batches::split_whole(&kept);
                    assert!(rest.is_empty());
                    for batch in whole {
                        let set = RecordBatchDecoder::decode(&mut batch.clone()).unwrap();
                        assert!(set.records.iter().all(|r| keeps(&dead_letter, r)));
                        forwarded += set.records.len();
                    }
                }
                assert_eq!(forwarded + bad.len(), checked);
            }
        }
    }
});
