//! The outline of a Produce request that does not decode: which topics and
//! partitions it names, read as far as the bytes make sense, and where the
//! records of one partition do not match their declared length.
//!
//! Why: a Produce the proxy cannot decode used to be forwarded for the
//! broker to judge, and brokers drop the connection on such a frame; the
//! producer sees a disconnect and retries the same bytes forever. With the
//! outline, the proxy answers every partition it can name with
//! `CORRUPT_MESSAGE` instead, on an open connection.
//!
//! The case found here: librdkafka 2.16 at Produce v9+ writes a records
//! length of zero (null, in the compact encoding) for a record batch of
//! 2^28 bytes or more, then the batch. The walk recognises a null length
//! followed by a record batch (magic 2 at its offset 16) and steps over
//! the batch by the batch's own length, so the partitions after it are
//! named too.
//!
//! Layout (v3–v8; v9+ uses compact strings, arrays and bytes with unsigned
//! varint lengths plus tagged fields): transactional_id, acks (i16),
//! timeout_ms (i32), topics [name, partitions [index (i32), records]].

/// A partition named by the request, and whether its records' declared
/// length disagrees with the bytes that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlinedPartition {
    pub topic: String,
    pub partition: i32,
    pub length_mismatch: bool,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = *self.take(1)?.first()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A length: `None` on a bad encoding; `Some(None)` for null.
    fn length(&mut self, flexible: bool, wide: bool) -> Option<Option<usize>> {
        if flexible {
            let n = self.uvarint()?;
            return Some(n.checked_sub(1).map(|n| n as usize));
        }
        let n = if wide {
            self.i32()?
        } else {
            i32::from(self.i16()?)
        };
        Some((n >= 0).then_some(n as usize))
    }

    fn string(&mut self, flexible: bool) -> Option<Option<String>> {
        match self.length(flexible, false)? {
            None => Some(None),
            Some(n) => Some(Some(String::from_utf8_lossy(self.take(n)?).into_owned())),
        }
    }

    fn skip_tagged_fields(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Some(())
    }

    /// At a record batch: its whole length (12 + batchLength) if the bytes
    /// here are one (magic 2 at offset 16).
    fn batch_here(&self) -> Option<usize> {
        let rest = self.buf.get(self.pos..)?;
        if rest.len() < 61 || rest[16] != 2 {
            return None;
        }
        let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        usize::try_from(len)
            .ok()
            .map(|l| l + 12)
            .filter(|l| *l <= rest.len())
    }
}

/// The partitions of Produce `version` (3–12) body `body`, as far as they
/// can be read.
pub fn outline(body: &[u8], version: i16) -> Vec<OutlinedPartition> {
    let mut found = Vec::new();
    let _ = walk(body, version, &mut found);
    found
}

fn walk(body: &[u8], version: i16, found: &mut Vec<OutlinedPartition>) -> Option<()> {
    let flexible = version >= 9;
    let mut r = Reader { buf: body, pos: 0 };
    r.string(flexible)?; // transactional_id
    r.i16()?; // acks
    r.i32()?; // timeout_ms
    let topics = r.length(flexible, true)?.unwrap_or(0);
    for _ in 0..topics {
        let topic = r.string(flexible)?.unwrap_or_default();
        let partitions = r.length(flexible, true)?.unwrap_or(0);
        for _ in 0..partitions {
            let partition = r.i32()?;
            let at = found.len();
            found.push(OutlinedPartition {
                topic: topic.clone(),
                partition,
                length_mismatch: false,
            });
            match r.length(flexible, true)? {
                Some(n) => {
                    if r.take(n).is_none() {
                        found[at].length_mismatch = true;
                        return None;
                    }
                }
                // Null records followed by a record batch: a length that
                // does not match its bytes. Step over the batch.
                None => {
                    if let Some(batch) = r.batch_here() {
                        found[at].length_mismatch = true;
                        r.take(batch)?;
                    }
                }
            }
            if flexible {
                r.skip_tagged_fields()?;
            }
        }
        if flexible {
            r.skip_tagged_fields()?;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal record batch of `len` bytes in all (magic 2).
    fn batch(len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        b[16] = 2;
        b
    }

    fn v9_request(partitions: &[(i32, Option<u64>, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0u8]; // null transactional id
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out.extend_from_slice(&30_000i32.to_be_bytes());
        out.push(2); // one topic
        out.push(4); // "abc"
        out.extend_from_slice(b"abc");
        out.push(partitions.len() as u8 + 1);
        for (index, length, bytes) in partitions {
            out.extend_from_slice(&index.to_be_bytes());
            out.push(length.map_or(0, |l| l as u8 + 1));
            out.extend_from_slice(bytes);
            out.push(0); // tagged fields
        }
        out.push(0);
        out.push(0);
        out
    }

    #[test]
    fn a_zero_length_before_a_batch_is_found_and_stepped_over() {
        let b = batch(70);
        let body = v9_request(&[(0, None, b.clone()), (1, Some(70), b)]);
        assert_eq!(
            outline(&body, 9),
            vec![
                OutlinedPartition {
                    topic: "abc".into(),
                    partition: 0,
                    length_mismatch: true
                },
                OutlinedPartition {
                    topic: "abc".into(),
                    partition: 1,
                    length_mismatch: false
                },
            ]
        );
    }

    #[test]
    fn a_length_beyond_the_bytes_is_a_mismatch_and_garbage_names_nothing() {
        let body = v9_request(&[(3, Some(100), batch(70))]);
        let got = outline(&body, 9);
        assert_eq!(got.len(), 1);
        assert!(got[0].length_mismatch && got[0].partition == 3);
        assert!(outline(&[0xff, 0xff], 9).is_empty());
        assert!(outline(&[], 3).is_empty());
    }

    #[test]
    fn the_non_flexible_layout_is_read_too() {
        let mut body = (-1i16).to_be_bytes().to_vec(); // null transactional id
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&1000i32.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&2i16.to_be_bytes());
        body.extend_from_slice(b"tp");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&7i32.to_be_bytes());
        body.extend_from_slice(&500i32.to_be_bytes()); // more than there is
        body.extend_from_slice(&batch(61));
        let got = outline(&body, 7);
        assert_eq!(
            got,
            vec![OutlinedPartition {
                topic: "tp".into(),
                partition: 7,
                length_mismatch: true
            }]
        );
    }
}
