//! Record batches as they sit in a records field (Produce request, Fetch
//! response): each v2 batch begins with its base offset (8 bytes) and its
//! length (4 bytes, counting what follows), so batches are found without
//! decoding them.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

/// The whole batches at the front of `records`, and what is left after
/// them: a partial batch (a Fetch cut at its byte limit) or bytes that do
/// not form one.
pub fn split_whole(records: &Bytes) -> (Vec<Bytes>, Bytes) {
    let mut out = Vec::new();
    let mut rest = records.clone();
    while rest.len() >= 12 {
        let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let total = 12usize.saturating_add(len.max(0) as usize);
        if len < 0 || total > rest.len() {
            break;
        }
        out.push(rest.split_to(total));
    }
    (out, rest)
}

/// Bytes of a v2 batch header before its records.
pub const RECORDS_OFFSET: usize = 61;

/// A batch's magic byte (its record format: 2 for v2); -1 when too short.
pub fn magic(batch: &[u8]) -> i8 {
    batch.get(16).map(|m| *m as i8).unwrap_or(-1)
}

/// A v2 batch's attributes (codec in the low three bits, then timestamp
/// type, transactional, control); 0 when too short.
pub fn attributes(batch: &[u8]) -> i16 {
    match batch.get(21..23) {
        Some(a) => i16::from_be_bytes([a[0], a[1]]),
        None => 0,
    }
}

/// Whether a v2 batch holds transaction markers instead of records.
pub fn is_control(batch: &[u8]) -> bool {
    attributes(batch) & 0x20 != 0
}

/// Whether `needle` appears in a v2 batch's records. Uncompressed batches
/// are searched as they are; compressed ones after inflating only the
/// records section (much cheaper than decoding every record). A batch that
/// does not inflate, or names an unknown codec, counts as a mention: the
/// full decoder then judges it.
pub fn records_mention(batch: &Bytes, needle: &[u8]) -> bool {
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    if batch.len() < RECORDS_OFFSET {
        return false;
    }
    let mut records = batch.slice(RECORDS_OFFSET..);
    let search = |buf: &mut Bytes| Ok(memchr::memmem::find(buf, needle).is_some());
    let found = match attributes(batch) & 0x07 {
        0 => return memchr::memmem::find(&records, needle).is_some(),
        1 => Gzip::decompress(&mut records, search),
        2 => Snappy::decompress(&mut records, search),
        3 => Lz4::decompress(&mut records, search),
        4 => Zstd::decompress(&mut records, search),
        _ => Ok(true),
    };
    found.unwrap_or(true)
}

/// One v2 batch holding `records` (offsets as the records carry them),
/// compressed with `compression`.
pub fn encode_v2(records: &[Record], compression: Compression) -> Result<Bytes, anyhow::Error> {
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_length_and_keeps_the_rest() {
        let mut field = Vec::new();
        for body in [&b"abc"[..], b"defgh"] {
            field.extend_from_slice(&0i64.to_be_bytes());
            field.extend_from_slice(&(body.len() as i32).to_be_bytes());
            field.extend_from_slice(body);
        }
        field.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let (whole, rest) = split_whole(&Bytes::from(field));
        assert_eq!(whole.len(), 2);
        assert_eq!(&whole[1][12..], b"defgh");
        assert_eq!(rest.len(), 11);
        let (whole, rest) = split_whole(&Bytes::from_static(&[0xff; 20]));
        assert!(
            whole.is_empty() && rest.len() == 20,
            "a negative length is not a batch"
        );
    }
}
