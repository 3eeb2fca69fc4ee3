//! Records as the proxy's own consumer hands them out, decoded from a
//! fetched records field: whole v2 batches only (a Fetch may end in a
//! partial one), control batches skipped, records before the position
//! dropped (a batch may start before it).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

/// A record as read, with where it came from.
#[derive(Debug, Clone)]
pub struct ConsumedRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl ConsumedRecord {
    /// The value of the header `name` (the first one, if repeated).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The header as UTF-8 text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// The records at or after `position` in a fetched records field, and the
/// position after the last whole batch.
pub fn decode_records(
    topic: &Arc<str>,
    partition: i32,
    records: &Bytes,
    position: i64,
) -> (Vec<ConsumedRecord>, i64) {
    let mut out = Vec::new();
    let mut next = position;
    let (whole, _partial) = crate::kafka::wire::batches::split_whole(records);
    for batch in whole {
        // A v2 batch header is 61 bytes; anything shorter is not one.
        if batch.len() < 61 {
            break;
        }
        let base = i64::from_be_bytes(batch[0..8].try_into().unwrap_or_default());
        let last_delta = i32::from_be_bytes(batch[23..27].try_into().unwrap_or_default());
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        let after = base + i64::from(last_delta) + 1;
        let magic = batch[16];
        if magic == 2 && attributes & 0x20 == 0 && after > next {
            match RecordBatchDecoder::decode(&mut batch.clone()) {
                Ok(set) => {
                    for r in set.records {
                        if r.offset < next {
                            continue;
                        }
                        out.push(ConsumedRecord {
                            topic: Arc::clone(topic),
                            partition,
                            offset: r.offset,
                            timestamp: r.timestamp,
                            key: r.key,
                            value: r.value,
                            headers: r
                                .headers
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v))
                                .collect(),
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, %topic, partition, base, "record batch does not decode; skipped");
                }
            }
        }
        next = next.max(after);
    }
    (out, next)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{Compression, Record, TimestampType};

    use super::*;

    fn batch(base: i64, values: &[&str], compression: Compression) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: -1,
                timestamp: 1,
                key: None,
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                headers: IndexMap::new(),
            })
            .collect();
        crate::kafka::wire::batches::encode_v2(&records, compression).unwrap()
    }

    fn values(records: &[ConsumedRecord]) -> Vec<(i64, String)> {
        records
            .iter()
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn reads_whole_batches_and_stops_at_a_partial_one() {
        let mut field = BytesMut::new();
        field.extend_from_slice(&batch(10, &["a", "b"], Compression::None));
        field.extend_from_slice(&batch(12, &["c"], Compression::Gzip));
        let third = batch(13, &["d"], Compression::None);
        field.extend_from_slice(&third[..third.len() - 3]);
        let topic: Arc<str> = Arc::from("t");
        let (records, next) = decode_records(&topic, 0, &field.freeze(), 10);
        assert_eq!(
            values(&records),
            vec![(10, "a".into()), (11, "b".into()), (12, "c".into())]
        );
        assert_eq!(next, 13, "the partial batch is fetched again");
    }

    #[test]
    fn skips_records_before_the_position_in_a_batch() {
        let field = batch(20, &["x", "y", "z"], Compression::Lz4);
        let topic: Arc<str> = Arc::from("t");
        let (records, next) = decode_records(&topic, 3, &field, 22);
        assert_eq!(values(&records), vec![(22, "z".into())]);
        assert_eq!(next, 23);
        let (records, next) = decode_records(&topic, 3, &field, 23);
        assert!(records.is_empty());
        assert_eq!(next, 23);
    }

    #[test]
    fn garbage_moves_nothing() {
        let topic: Arc<str> = Arc::from("t");
        let (records, next) = decode_records(&topic, 0, &Bytes::from_static(&[0xff; 80]), 5);
        assert!(records.is_empty());
        assert_eq!(next, 5);
    }
}
