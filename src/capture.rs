//! Optional capture of every frame exchanged with clients.
//!
//! With `--capture-dir` each request as received and each response as sent
//! is written to its own file, named so that a reader can decode it without
//! any other context:
//!
//! `{connection}-{sequence}-{kind}-k{api_key}-v{api_version}.bin`
//!
//! where `kind` is `request` (from the client), `response` (to the client),
//! or `upstream` (a response as the broker sent it, recorded for the APIs
//! the proxy decodes, before any rewrite).
//!
//! The files are the frames' bodies (no length prefix). The e2e tests use
//! them to prove no upstream address reaches a client, and they are how the
//! `protocol-fixtures/` were recorded from real clients.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

#[derive(Debug)]
pub struct Capture {
    dir: PathBuf,
    sequence: AtomicU64,
}

/// Which way a captured frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
    Upstream,
}

impl Capture {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Capture {
            dir: dir.to_owned(),
            sequence: AtomicU64::new(0),
        })
    }

    /// Writes one frame body; failures are logged, never fatal.
    pub fn record(
        &self,
        connection: u64,
        direction: Direction,
        api_key: i16,
        api_version: i16,
        body: &Bytes,
    ) {
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let kind = match direction {
            Direction::Request => "request",
            Direction::Response => "response",
            Direction::Upstream => "upstream",
        };
        let name = format!("{connection:06}-{seq:08}-{kind}-k{api_key}-v{api_version}.bin");
        if let Err(error) = std::fs::write(self.dir.join(&name), body) {
            tracing::warn!(%error, file = %name, "frame capture failed");
        }
    }
}

/// A captured file name, parsed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedName {
    pub connection: u64,
    pub sequence: u64,
    pub direction: Direction,
    pub api_key: i16,
    pub api_version: i16,
}

pub fn parse_name(name: &str) -> Option<CapturedName> {
    let stem = name.strip_suffix(".bin")?;
    let mut parts = stem.split('-');
    let connection = parts.next()?.parse().ok()?;
    let sequence = parts.next()?.parse().ok()?;
    let direction = match parts.next()? {
        "request" => Direction::Request,
        "response" => Direction::Response,
        "upstream" => Direction::Upstream,
        _ => return None,
    };
    let api_key = parts.next()?.strip_prefix('k')?.parse().ok()?;
    let api_version = parts.next()?.strip_prefix('v')?.parse().ok()?;
    Some(CapturedName {
        connection,
        sequence,
        direction,
        api_key,
        api_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = Capture::new(dir.path()).unwrap();
        c.record(3, Direction::Response, 18, 3, &Bytes::from_static(b"x"));
        let name = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        let parsed = parse_name(name.to_str().unwrap()).unwrap();
        assert_eq!(
            parsed,
            CapturedName {
                connection: 3,
                sequence: 0,
                direction: Direction::Response,
                api_key: 18,
                api_version: 3
            }
        );
    }
}
