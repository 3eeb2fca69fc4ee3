//! Checksums a producer may ask for with `LFS_BLOB` / `LFS_BLOB_ALG`.
//! SHA-256 is always computed (it is what the envelope's `sha256` and the
//! download verification use); the requested algorithm is checked on top.

use md5::Md5;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlg {
    Sha256,
    Md5,
    Crc32,
}

impl ChecksumAlg {
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "sha256" | "sha-256" => Some(ChecksumAlg::Sha256),
            "md5" => Some(ChecksumAlg::Md5),
            "crc32" => Some(ChecksumAlg::Crc32),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlg::Sha256 => "sha256",
            ChecksumAlg::Md5 => "md5",
            ChecksumAlg::Crc32 => "crc32",
        }
    }

    /// Lowercase hex digest of `data` (CRC-32 as 8 hex digits, big-endian).
    pub fn hex_digest(self, data: &[u8]) -> String {
        match self {
            ChecksumAlg::Sha256 => hex::encode(Sha256::digest(data)),
            ChecksumAlg::Md5 => hex::encode(Md5::digest(data)),
            ChecksumAlg::Crc32 => format!("{:08x}", crc32fast::hash(data)),
        }
    }
}

/// Compares a digest with what the producer sent, ignoring case and spaces.
pub fn matches(expected: &str, actual_hex: &str) -> bool {
    expected.trim().eq_ignore_ascii_case(actual_hex)
}

/// SHA-256 of a value that arrives in pieces, plus the requested
/// algorithm's digest when it is another one.
pub struct StreamingDigest {
    sha256: Sha256,
    other: Option<OtherDigest>,
    alg: ChecksumAlg,
}

enum OtherDigest {
    Md5(Md5),
    Crc32(crc32fast::Hasher),
}

impl StreamingDigest {
    pub fn new(alg: ChecksumAlg) -> Self {
        let other = match alg {
            ChecksumAlg::Sha256 => None,
            ChecksumAlg::Md5 => Some(OtherDigest::Md5(Md5::new())),
            ChecksumAlg::Crc32 => Some(OtherDigest::Crc32(crc32fast::Hasher::new())),
        };
        StreamingDigest {
            sha256: Sha256::new(),
            other,
            alg,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        match &mut self.other {
            None => {}
            Some(OtherDigest::Md5(h)) => h.update(data),
            Some(OtherDigest::Crc32(h)) => h.update(data),
        }
    }

    /// `(sha256, requested)`, lowercase hex; equal when sha256 was requested.
    pub fn finish(self) -> (String, String) {
        let sha256 = hex::encode(self.sha256.finalize());
        let requested = match self.other {
            None => sha256.clone(),
            Some(OtherDigest::Md5(h)) => hex::encode(h.finalize()),
            Some(OtherDigest::Crc32(h)) => format!("{:08x}", h.finalize()),
        };
        (sha256, requested)
    }

    pub fn alg(&self) -> ChecksumAlg {
        self.alg
    }

    /// The digest's state so far, as hex text another process can
    /// [`resume`](Self::resume) from: upload sessions keep it between
    /// parts, which may arrive at different replicas. The digests' own
    /// serialized states (RustCrypto's `SerializableState`; CRC-32 is its
    /// running value), never the bytes hashed.
    pub fn save(&self) -> String {
        let mut state = self.sha256.serialize().to_vec();
        match &self.other {
            None => {}
            Some(OtherDigest::Md5(h)) => state.extend_from_slice(&h.serialize()),
            Some(OtherDigest::Crc32(h)) => {
                state.extend_from_slice(&h.clone().finalize().to_be_bytes())
            }
        }
        hex::encode(state)
    }

    /// A digest continued from [`save`](Self::save)'s text; `None` when the
    /// text is not a saved state of `alg`.
    pub fn resume(alg: ChecksumAlg, saved: &str) -> Option<Self> {
        let bytes = hex::decode(saved).ok()?;
        let sha_len = std::mem::size_of::<SerializedState<Sha256>>();
        let (sha, rest) = bytes.split_at_checked(sha_len)?;
        let sha256 = Sha256::deserialize(&SerializedState::<Sha256>::try_from(sha).ok()?).ok()?;
        let other = match alg {
            ChecksumAlg::Sha256 if rest.is_empty() => None,
            ChecksumAlg::Md5 => Some(OtherDigest::Md5(
                Md5::deserialize(&SerializedState::<Md5>::try_from(rest).ok()?).ok()?,
            )),
            ChecksumAlg::Crc32 => Some(OtherDigest::Crc32(crc32fast::Hasher::new_with_initial(
                u32::from_be_bytes(rest.try_into().ok()?),
            ))),
            ChecksumAlg::Sha256 => return None,
        };
        Some(StreamingDigest { sha256, other, alg })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            ChecksumAlg::Sha256.hex_digest(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            ChecksumAlg::Md5.hex_digest(b"abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(ChecksumAlg::Crc32.hex_digest(b"123456789"), "cbf43926");
        assert!(matches(" CBF43926 ", "cbf43926"));
        assert_eq!(ChecksumAlg::parse("SHA256"), Some(ChecksumAlg::Sha256));
        assert_eq!(ChecksumAlg::parse("none"), None);
    }

    #[test]
    fn streaming_digest_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for alg in [ChecksumAlg::Sha256, ChecksumAlg::Md5, ChecksumAlg::Crc32] {
            let mut d = StreamingDigest::new(alg);
            for piece in data.chunks(977) {
                d.update(piece);
            }
            let (sha256, requested) = d.finish();
            assert_eq!(sha256, ChecksumAlg::Sha256.hex_digest(&data));
            assert_eq!(requested, alg.hex_digest(&data), "{alg:?}");
        }
    }

    #[test]
    fn a_saved_digest_resumes_where_it_stopped() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 253) as u8).collect();
        for alg in [ChecksumAlg::Sha256, ChecksumAlg::Md5, ChecksumAlg::Crc32] {
            // Cut at lengths that are and are not whole blocks.
            let mut saved = StreamingDigest::new(alg).save();
            for piece in data.chunks(64 * 1000 + 17) {
                let mut d = StreamingDigest::resume(alg, &saved).unwrap();
                d.update(piece);
                saved = d.save();
            }
            let (sha256, requested) = StreamingDigest::resume(alg, &saved).unwrap().finish();
            assert_eq!(sha256, ChecksumAlg::Sha256.hex_digest(&data));
            assert_eq!(requested, alg.hex_digest(&data), "{alg:?}");
        }
        let sha = StreamingDigest::new(ChecksumAlg::Sha256).save();
        assert!(
            StreamingDigest::resume(ChecksumAlg::Md5, &sha).is_none(),
            "another algorithm's state"
        );
        assert!(StreamingDigest::resume(ChecksumAlg::Sha256, "zz").is_none());
        assert!(StreamingDigest::resume(ChecksumAlg::Sha256, &sha[..20]).is_none());
    }
}
