//! `PUT /lfs/uploads/{id}/parts/{n}`: one part, on whichever replica it
//! reaches.
//!
//! Part `n` continues from part `n - 1`'s record: its offset and the
//! digest state after it. The part is claimed by creating its record
//! (exclusive), then its bytes are stored, then the record is marked
//! stored. A retry with the same bytes, on any replica, finds the claim
//! and stores the same bytes again (a crashed first attempt is finished
//! that way); other bytes are 409.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::super::body::BodyReader;
use super::super::error::ApiError;
use super::super::middleware::Caller;
use super::super::produce::storage_failed;
use super::super::Sidecar;
use super::{json, load, owner_of};
use crate::lfs::checksum::{ChecksumAlg, StreamingDigest};
use crate::lfs::sessions::{PartRecord, SessionDir, SessionRecord};
use crate::lfs::store::MIN_S3_PART_SIZE;
use crate::metrics as m;

/// Etag of a part: the first 128 bits of its SHA-256, in hex.
fn etag(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..16])
}

fn out_of_order(why: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "out_of_order", why)
}

fn part_response(id: &str, number: u32, etag: &str) -> Response {
    json(
        StatusCode::OK,
        serde_json::json!({"upload_id": id, "part_number": number, "etag": etag}),
    )
}

/// `PUT /lfs/uploads/{id}/parts/{n}`
pub async fn put_part(
    State(sidecar): State<Arc<Sidecar>>,
    Extension(caller): Extension<Caller>,
    Path((id, number)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let invalid = |why: String| ApiError::bad_request("invalid_part", why);
    let number: u32 = number
        .parse()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| invalid("part number must be 1 to 10000".into()))?;
    let (dir, session, listing) = load(&sidecar, &id, caller).await?;
    let next = listing.next_part();
    if number > next {
        return Err(out_of_order(format!("part {next} is expected next")));
    }
    let part_size = session.part_size;
    let data = BodyReader::new(body, sidecar.config.read_idle)
        .collect(
            part_size as usize,
            invalid(format!("a part is at most {part_size} bytes")),
        )
        .await?;
    if data.is_empty() {
        return Err(invalid("a part must not be empty".into()));
    }
    let tag = etag(&data);
    let claimed = if listing.parts.contains(&number) {
        dir.part(number).await.map_err(storage_failed)?
    } else {
        let record = next_record(&dir, &session, number, &tag, &data).await?;
        match dir.claim_part(number, &record).await {
            Ok(None) => Some(record),
            Ok(Some(existing)) => Some(existing),
            Err(e) => return Err(storage_failed(e)),
        }
    };
    let Some(mut record) = claimed else {
        // Listed, then gone: the session ended meanwhile.
        return Err(super::not_found());
    };
    if record.etag != tag {
        return Err(out_of_order(format!(
            "part {number} is already stored with other content"
        )));
    }
    if record.stored {
        return Ok(part_response(&id, number, &tag));
    }
    let len = data.len() as u64;
    let s3_etag = sidecar
        .lfs
        .store
        .put_resumable_part(&session.upload, number, record.offset, data)
        .await
        .map_err(storage_failed)?;
    metrics::counter!(m::HTTP_BYTES_TOTAL, "direction" => "up").increment(len);
    record.stored = true;
    record.s3_etag = s3_etag;
    dir.put_part(number, &record)
        .await
        .map_err(storage_failed)?;
    // A session ended while the bytes were on their way (aborted on
    // another replica) must not keep them: a local store would have
    // written its staging file again.
    if let Err(error) = super::ended(&dir, &owner_of(caller)).await {
        let _ = sidecar.lfs.store.abort_resumable(&session.upload).await;
        let _ = dir.clear().await;
        return Err(error);
    }
    Ok(part_response(&id, number, &tag))
}

/// The record of a new part `number`: checked against the declared size
/// and the part rules, with the digest continued from part `number - 1`.
async fn next_record(
    dir: &SessionDir,
    session: &SessionRecord,
    number: u32,
    tag: &str,
    data: &[u8],
) -> Result<PartRecord, ApiError> {
    let invalid = |why: String| ApiError::bad_request("invalid_part", why);
    let alg = ChecksumAlg::parse(&session.checksum_alg).unwrap_or(ChecksumAlg::Sha256);
    let (offset, mut digest) = if number == 1 {
        (0, StreamingDigest::new(alg))
    } else {
        let previous = dir
            .part(number - 1)
            .await
            .map_err(storage_failed)?
            .ok_or_else(|| out_of_order(format!("part {} is expected next", number - 1)))?;
        if !previous.stored {
            return Err(out_of_order(format!(
                "part {} is still being stored; send it again or wait",
                number - 1
            )));
        }
        let digest = StreamingDigest::resume(alg, &previous.digest).ok_or_else(|| {
            storage_failed(format!("part {} has an unreadable record", number - 1))
        })?;
        (previous.offset + previous.size, digest)
    };
    let (size, part_size) = (session.size, session.part_size);
    let after = offset + data.len() as u64;
    if after > size {
        return Err(invalid(format!(
            "parts would exceed the declared size_bytes ({size})"
        )));
    }
    let min_part = (MIN_S3_PART_SIZE as u64).min(part_size);
    if after < size && (data.len() as u64) < min_part {
        return Err(invalid(format!(
            "every part but the last must be at least {min_part} bytes"
        )));
    }
    digest.update(data);
    Ok(PartRecord {
        etag: tag.to_owned(),
        size: data.len() as u64,
        offset,
        digest: digest.save(),
        stored: false,
        s3_etag: None,
    })
}
