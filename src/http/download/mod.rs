//! `POST /lfs/download`: Kafka is the authority, storage is untrusted.
//!
//! Stream mode reads the object into a holding area (memory for small
//! objects; for large S3 ones a private spill file, filled by ranged reads
//! while hashed: `spill`; a large local file is hashed where it lies and
//! sent through the same descriptor, or not hashed again when this very
//! file was verified before: `verified_files`), refuses an object whose
//! size is not the declared one, and only when size and SHA-256 both match
//! sends `200` with `Content-Length`. Otherwise the answer is `502 integrity_failure` and no
//! payload byte leaves the proxy. Presign mode (opt-in) hands out a URL
//! with a capped lifetime; the caller then verifies.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;

use super::body::BodyReader;
use super::error::ApiError;
use super::Sidecar;
use crate::lfs::checksum::ChecksumAlg;
use crate::metrics as m;

mod spill;
mod verified_files;

use spill::SpillError;

/// Objects up to this size are verified in memory, larger ones in a spill.
const IN_MEMORY_LIMIT: u64 = 4 * 1024 * 1024;

#[derive(Debug, Deserialize)]
struct DownloadRequest {
    bucket: Option<String>,
    key: Option<String>,
    mode: Option<String>,
    expires_seconds: Option<i64>,
    integrity: Option<Integrity>,
}

#[derive(Debug, Deserialize)]
struct Integrity {
    sha256: Option<String>,
    checksum_alg: Option<String>,
    size: Option<i64>,
}

enum Mode {
    Stream,
    Presign,
}

pub async fn download(
    State(sidecar): State<Arc<Sidecar>>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: DownloadRequest = BodyReader::new(body, sidecar.config.read_idle)
        .json()
        .await?;
    let mode = match request.mode.as_deref().map(str::trim) {
        None | Some("") | Some("stream") => Mode::Stream,
        Some("presign") => Mode::Presign,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_mode",
                format!("mode `{other}` is not stream or presign"),
            ))
        }
    };
    if let Some(bucket) = request.bucket.as_deref().filter(|b| !b.is_empty()) {
        if bucket != sidecar.lfs.store.bucket() {
            return Err(ApiError::bad_request(
                "invalid_bucket",
                "bucket is not the one this proxy serves",
            ));
        }
    }
    let key = object_key(request.key.as_deref(), &sidecar.lfs.namespace)?;
    let integrity = request.integrity.as_ref();
    let sha256 = integrity
        .and_then(|i| i.sha256.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("missing_integrity", "integrity.sha256 is required")
        })?;
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "invalid_integrity",
            "integrity.sha256 must be 64 hex digits",
        ));
    }
    let sha256 = sha256.to_ascii_lowercase();
    if let Some(alg) = integrity.and_then(|i| i.checksum_alg.as_deref()) {
        if ChecksumAlg::parse(alg) != Some(ChecksumAlg::Sha256) {
            return Err(ApiError::bad_request(
                "unsupported_checksum_alg",
                "only sha256 is accepted",
            ));
        }
    }
    let size = integrity.and_then(|i| i.size);
    if size.is_some_and(|s| s < 0) {
        return Err(ApiError::bad_request(
            "invalid_integrity",
            "integrity.size must not be negative",
        ));
    }
    match mode {
        Mode::Presign => presign(&sidecar, &key, &sha256, size, request.expires_seconds).await,
        Mode::Stream => {
            let size = size.ok_or_else(|| {
                ApiError::bad_request(
                    "missing_integrity_size",
                    "stream mode requires integrity.size",
                )
            })? as u64;
            if size > sidecar.lfs.max_blob_size {
                return Err(ApiError::bad_request(
                    "payload_too_large",
                    format!(
                        "integrity.size exceeds KAFSCALE_LFS_PROXY_MAX_BLOB_SIZE ({} bytes)",
                        sidecar.lfs.max_blob_size
                    ),
                ));
            }
            stream_verified(&sidecar, &key, &sha256, size).await
        }
    }
}

/// Accepts only `{namespace}/{topic}/lfs/...` keys made of plain segments.
fn object_key(key: Option<&str>, namespace: &str) -> Result<String, ApiError> {
    let invalid = |why: &str| ApiError::bad_request("invalid_key", why.to_owned());
    let key = key
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| invalid("key is required"))?;
    let segments: Vec<&str> = key.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains('\\'))
        || key.chars().any(char::is_control)
    {
        return Err(invalid("key must be a relative path of plain segments"));
    }
    if segments.len() < 4 || segments[0] != namespace || segments[2] != "lfs" {
        return Err(invalid("key must lie under {namespace}/{topic}/lfs/"));
    }
    Ok(key.to_owned())
}

async fn presign(
    sidecar: &Sidecar,
    key: &str,
    sha256: &str,
    size: Option<i64>,
    expires_seconds: Option<i64>,
) -> Result<Response, ApiError> {
    if !sidecar.config.presign_enabled {
        return Err(ApiError::bad_request(
            "presign_disabled",
            "presigned downloads are not enabled on this proxy",
        ));
    }
    let cap = sidecar.config.download_ttl;
    let ttl = match expires_seconds {
        Some(s) if s > 0 => Duration::from_secs(s as u64).min(cap),
        _ => cap,
    };
    let url = match sidecar.lfs.store.presign_get(key, ttl).await {
        Some(Ok(url)) => url,
        Some(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "s3_presign_failed",
                "could not sign a download URL",
            )
            .with_detail(e))
        }
        None => {
            return Err(ApiError::bad_request(
                "presign_disabled",
                "a local store cannot sign URLs",
            ))
        }
    };
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(ttl.as_secs() as i64);
    let body = serde_json::json!({
        "mode": "presign",
        "url": url,
        "expires_at": crate::lfs::envelope::rfc3339(expires_at),
        "integrity": {"sha256": sha256, "checksum_alg": "sha256", "size": size},
    });
    Ok((
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response())
}

fn temp_failed(e: std::io::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "temp_storage_failed",
        "temporary verification storage is unavailable or full",
    )
    .with_detail(e)
}

fn integrity_failure(key: &str, why: String) -> ApiError {
    metrics::counter!(m::HTTP_INTEGRITY_FAILURES_TOTAL).increment(1);
    tracing::error!(key, reason = %why, "download refused: object does not match its envelope");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "integrity_failure",
        "the stored object does not match the envelope's size and sha256",
    )
    .with_detail(why)
}

async fn stream_verified(
    sidecar: &Sidecar,
    key: &str,
    sha256: &str,
    size: u64,
) -> Result<Response, ApiError> {
    let body = if size <= IN_MEMORY_LIMIT {
        Body::from(fetch_small(sidecar, key, sha256, size).await?)
    } else {
        let store = &sidecar.lfs.store;
        let verified = match store.local_file(key) {
            Some(path) => spill::verify_in_place(path, sha256, size).await,
            None => spill::fetch_verified(store, key, sha256, size, &sidecar.config.temp_dir).await,
        };
        match verified {
            Ok(spill) => spill::body(spill),
            Err(SpillError::Integrity(why)) => return Err(integrity_failure(key, why)),
            Err(SpillError::Store(e)) => return Err(get_failed(e)),
            Err(SpillError::Temp(e)) => return Err(temp_failed(e)),
        }
    };
    metrics::counter!(m::HTTP_BYTES_TOTAL, "direction" => "down").increment(size);
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("content-length", HeaderValue::from(size));
    headers.insert(
        "x-kafscale-lfs-checksum",
        HeaderValue::from_str(&format!("sha256={sha256}")).expect("hex is a header value"),
    );
    headers.insert("x-kafscale-lfs-content-length", HeaderValue::from(size));
    Ok(response)
}

fn get_failed(e: object_store::Error) -> ApiError {
    match e {
        object_store::Error::NotFound { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no object under this key",
        ),
        e => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "s3_get_failed",
            "object storage read failed",
        )
        .with_detail(e),
    }
}

/// A small object, read whole into memory with one GET while hashed.
async fn fetch_small(
    sidecar: &Sidecar,
    key: &str,
    sha256: &str,
    size: u64,
) -> Result<Vec<u8>, ApiError> {
    let mut stream = sidecar.lfs.store.stream(key).await.map_err(get_failed)?;
    let mut held = Vec::with_capacity(size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(get_failed)?;
        if held.len() as u64 + chunk.len() as u64 > size {
            // Dropping the stream stops the read.
            return Err(integrity_failure(
                key,
                format!("storage sent more than the declared {size} bytes"),
            ));
        }
        held.extend_from_slice(&chunk);
    }
    if held.len() as u64 != size {
        return Err(integrity_failure(
            key,
            format!(
                "storage sent {} bytes, the envelope declares {size}",
                held.len()
            ),
        ));
    }
    let actual = ChecksumAlg::Sha256.hex_digest(&held);
    if actual != sha256 {
        return Err(integrity_failure(
            key,
            format!("sha256 is {actual}, the envelope declares {sha256}"),
        ));
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_under_the_namespace_lfs_prefix() {
        assert!(object_key(Some("default/t/lfs/2026/01/02/obj-x"), "default").is_ok());
        for bad in [
            "/default/t/lfs/x",
            "default/t/lfs/../../etc/passwd",
            "default/t/lfs//x",
            "other/t/lfs/2026/x",
            "default/t/blobs/x",
            "default/t/lfs",
            "default\\t/lfs/x/y",
            "default/t/lfs/./x",
        ] {
            assert_eq!(
                object_key(Some(bad), "default").unwrap_err().code,
                "invalid_key",
                "{bad}"
            );
        }
        assert_eq!(object_key(None, "default").unwrap_err().code, "invalid_key");
    }
}
