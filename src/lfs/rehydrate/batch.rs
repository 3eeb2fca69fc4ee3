//! Rebuilding one v2 record batch with some values replaced.
//!
//! The batch keeps everything a consumer or the broker's log relies on: the
//! codec, base offset and each record's offset, timestamps (and the batch's
//! max timestamp, which is every record's time in a LogAppendTime batch),
//! the last offset (a compacted batch may end past its last record), the
//! producer id, epoch and base sequence, the transactional flag, and every
//! header. The CRC is computed anew.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions, RecordSet};

/// Byte offsets in a v2 batch header.
mod at {
    pub const BASE_OFFSET: usize = 0;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const RECORDS: usize = 61;
}

/// The low three attribute bits name the codec; the rest are flags.
const CODEC_BITS: u16 = 0x07;

/// Encodes `set` (decoded from `original`, values replaced) as one batch
/// that keeps `original`'s header fields.
pub fn rebuild(original: &[u8], set: &RecordSet) -> Result<Bytes, anyhow::Error> {
    anyhow::ensure!(original.len() >= at::RECORDS, "batch header is truncated");
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        set.records.iter(),
        &RecordEncodeOptions {
            version: set.version,
            compression: set.compression,
        },
    )?;
    anyhow::ensure!(out.len() >= at::RECORDS, "encoder wrote no batch header");
    let i64_at = |b: &[u8], i: usize| i64::from_be_bytes(b[i..i + 8].try_into().unwrap());
    let i32_at = |b: &[u8], i: usize| i32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    // The batch's last offset, as the broker wrote it.
    let last = i64_at(original, at::BASE_OFFSET)
        .checked_add(i32_at(original, at::LAST_OFFSET_DELTA) as i64)
        .ok_or_else(|| anyhow::anyhow!("batch's last offset overflows"))?;
    let base = i64_at(&out, at::BASE_OFFSET);
    let delta = last
        .checked_sub(base)
        .and_then(|d| i32::try_from(d).ok())
        .ok_or_else(|| anyhow::anyhow!("batch's last offset delta does not fit"))?;
    out[at::LAST_OFFSET_DELTA..at::LAST_OFFSET_DELTA + 4].copy_from_slice(&delta.to_be_bytes());
    out[at::MAX_TIMESTAMP..at::MAX_TIMESTAMP + 8]
        .copy_from_slice(&original[at::MAX_TIMESTAMP..at::MAX_TIMESTAMP + 8]);
    let flags = u16::from_be_bytes([original[at::ATTRIBUTES], original[at::ATTRIBUTES + 1]]);
    let codec = u16::from_be_bytes([out[at::ATTRIBUTES], out[at::ATTRIBUTES + 1]]);
    let attributes = (codec & CODEC_BITS) | (flags & !CODEC_BITS);
    out[at::ATTRIBUTES..at::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[at::ATTRIBUTES..]);
    out[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, TimestampType};

    fn record(offset: i64, value: &'static [u8]) -> Record {
        let mut r = Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 3,
            producer_id: 77,
            producer_epoch: 2,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: 10 + (offset - 100) as i32,
            timestamp: 1_700_000_000_000 + offset,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(value)),
            headers: Default::default(),
        };
        r.headers.insert("h".into(), Some(Bytes::from_static(b"v")));
        r
    }

    #[test]
    fn keeps_the_header_and_changes_only_values() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records = [record(100, b"envelope-1"), record(102, b"plain")];
            let mut original = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut original,
                records.iter(),
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .unwrap();
            // As a compacted log leaves it: the batch ends past its last
            // record (offset 104), with a LogAppendTime max timestamp.
            original[at::LAST_OFFSET_DELTA..at::LAST_OFFSET_DELTA + 4]
                .copy_from_slice(&4i32.to_be_bytes());
            original[at::MAX_TIMESTAMP..at::MAX_TIMESTAMP + 8]
                .copy_from_slice(&42i64.to_be_bytes());
            original[at::ATTRIBUTES + 1] |= 0x08;
            let crc = crc32c::crc32c(&original[at::ATTRIBUTES..]);
            original[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
            let original = original.freeze();

            let mut set = RecordBatchDecoder::decode(&mut original.clone()).unwrap();
            set.records[0].value = Some(Bytes::from(vec![9u8; 5000]));
            let rebuilt = rebuild(&original, &set).unwrap();

            // Header fields equal, except length and CRC.
            assert_eq!(rebuilt[..8], original[..8], "{compression:?}");
            assert_eq!(rebuilt[12..17], original[12..17]);
            assert_eq!(rebuilt[21..61], original[21..61], "{compression:?}");
            assert_eq!(
                u32::from_be_bytes(rebuilt[17..21].try_into().unwrap()),
                crc32c::crc32c(&rebuilt[21..])
            );
            let back = RecordBatchDecoder::decode(&mut rebuilt.clone()).unwrap();
            assert_eq!(back.compression, compression);
            assert_eq!(back.records.len(), 2);
            assert_eq!(back.records[0].value.as_deref(), Some(&vec![9u8; 5000][..]));
            assert_eq!(back.records[1].value.as_deref(), Some(&b"plain"[..]));
            for (got, want) in back.records.iter().zip(&records) {
                assert_eq!(got.offset, want.offset);
                assert_eq!(got.sequence, want.sequence);
                assert_eq!(got.key, want.key);
                assert_eq!(got.headers, want.headers);
                assert_eq!(got.producer_id, 77);
                assert!(got.transactional);
            }
        }
    }
}
