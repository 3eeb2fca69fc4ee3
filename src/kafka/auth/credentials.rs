//! The client credentials file for SASL termination: per user and SCRAM
//! mechanism, the salt, iteration count, StoredKey and ServerKey (base64),
//! never a password. PLAIN logins are checked against the same keys.
//!
//! ```json
//! {"users": {"alice": {"SCRAM-SHA-256": {"salt": "…", "iterations": 8192,
//!   "stored_key": "…", "server_key": "…"}, "SCRAM-SHA-512": {…}}}}
//! ```
//! `kafka-lfs-proxy credentials add` writes entries.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::kafka::auth::scram::{ScramHash, ScramKeys};

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("{path}: user {user}, {mechanism}: {reason}")]
    Entry {
        path: String,
        user: String,
        mechanism: String,
        reason: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CredentialsFile {
    #[serde(default)]
    pub users: BTreeMap<String, BTreeMap<String, StoredEntry>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEntry {
    pub salt: String,
    pub iterations: u32,
    pub stored_key: String,
    pub server_key: String,
}

/// The decoded keys, by user, then mechanism.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    users: BTreeMap<String, Vec<(ScramHash, ScramKeys)>>,
}

pub fn mechanism_name(hash: ScramHash) -> &'static str {
    match hash {
        ScramHash::Sha256 => "SCRAM-SHA-256",
        ScramHash::Sha512 => "SCRAM-SHA-512",
    }
}

fn hash_of(mechanism: &str) -> Option<ScramHash> {
    match mechanism {
        "SCRAM-SHA-256" => Some(ScramHash::Sha256),
        "SCRAM-SHA-512" => Some(ScramHash::Sha512),
        _ => None,
    }
}

impl CredentialsFile {
    pub fn read(path: &Path) -> Result<Self, CredentialsError> {
        let read_error = |reason: String| CredentialsError::Read {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read_error(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| read_error(e.to_string()))
    }

    /// Reads the file, or starts an empty one when it does not exist.
    pub fn read_or_new(path: &Path) -> Result<Self, CredentialsError> {
        if path.exists() {
            Self::read(path)
        } else {
            Ok(Self::default())
        }
    }

    /// Writes the file (mode 0600), replacing it atomically.
    pub fn write(&self, path: &Path) -> Result<(), CredentialsError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let write_error = |e: std::io::Error| CredentialsError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let temp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(write_error)?;
        let text = serde_json::to_string_pretty(self).expect("credentials serialise");
        file.write_all(text.as_bytes()).map_err(write_error)?;
        file.write_all(b"\n").map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        std::fs::rename(&temp, path).map_err(write_error)
    }

    /// Adds or replaces `user`'s entry for `hash`, with a fresh random salt.
    pub fn set(
        &mut self,
        user: &str,
        hash: ScramHash,
        password: &str,
        iterations: u32,
    ) -> Result<(), String> {
        let mut salt = [0u8; 24];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| "no random numbers".to_string())?;
        let keys = hash
            .keys(password, &salt, iterations)
            .map_err(|e| e.to_string())?;
        self.users.entry(user.to_owned()).or_default().insert(
            mechanism_name(hash).to_owned(),
            StoredEntry {
                salt: B64.encode(&keys.salt),
                iterations,
                stored_key: B64.encode(&keys.stored_key),
                server_key: B64.encode(&keys.server_key),
            },
        );
        Ok(())
    }

    /// Decodes every entry; the first bad one names itself.
    pub fn decode(&self, path: &Path) -> Result<Credentials, CredentialsError> {
        let mut users: BTreeMap<String, Vec<(ScramHash, ScramKeys)>> = BTreeMap::new();
        for (user, entries) in &self.users {
            for (mechanism, entry) in entries {
                let bad = |reason: &str| CredentialsError::Entry {
                    path: path.display().to_string(),
                    user: user.clone(),
                    mechanism: mechanism.clone(),
                    reason: reason.to_owned(),
                };
                let hash =
                    hash_of(mechanism).ok_or_else(|| bad("not SCRAM-SHA-256 or SCRAM-SHA-512"))?;
                let decode = |field: &str, value: &str| {
                    B64.decode(value)
                        .map_err(|_| bad(&format!("{field} is not base64")))
                };
                let keys = ScramKeys {
                    salt: decode("salt", &entry.salt)?,
                    iterations: entry.iterations,
                    stored_key: decode("stored_key", &entry.stored_key)?,
                    server_key: decode("server_key", &entry.server_key)?,
                };
                if keys.iterations < 4096 {
                    return Err(bad("iterations must be at least 4096"));
                }
                users.entry(user.clone()).or_default().push((hash, keys));
            }
        }
        Ok(Credentials { users })
    }
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        CredentialsFile::read(path)?.decode(path)
    }

    pub fn keys(&self, user: &str, hash: ScramHash) -> Option<&ScramKeys> {
        self.users
            .get(user)?
            .iter()
            .find(|(h, _)| *h == hash)
            .map(|(_, k)| k)
    }

    /// Any stored keys for `user` (to check a PLAIN password against).
    pub fn any_keys(&self, user: &str) -> Option<(ScramHash, &ScramKeys)> {
        self.users.get(user)?.first().map(|(h, k)| (*h, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_entries_read_back_and_hold_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let mut file = CredentialsFile::read_or_new(&path).unwrap();
        file.set("alice", ScramHash::Sha256, "wonderland", 4096)
            .unwrap();
        file.set("alice", ScramHash::Sha512, "wonderland", 4096)
            .unwrap();
        file.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("wonderland"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let creds = Credentials::load(&path).unwrap();
        let keys = creds.keys("alice", ScramHash::Sha256).unwrap();
        let again = ScramHash::Sha256
            .keys("wonderland", &keys.salt, keys.iterations)
            .unwrap();
        assert_eq!(&again, keys);
        assert!(creds.keys("bob", ScramHash::Sha256).is_none());
        std::fs::write(&path, r#"{"users":{"x":{"SCRAM-SHA-1":{"salt":"","iterations":4096,"stored_key":"","server_key":""}}}}"#).unwrap();
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("SCRAM-SHA-1"), "{e}");
    }
}
