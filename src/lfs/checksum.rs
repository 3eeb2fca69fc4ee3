//! Checksums a producer may ask for with `LFS_BLOB` / `LFS_BLOB_ALG`.
//! SHA-256 is always computed (it is what the envelope's `sha256` and the
//! download verification use); the requested algorithm is checked on top.

use md5::Md5;
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
}
