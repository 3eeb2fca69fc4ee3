//! `S3_ENSURE_BUCKET`: create the bucket at start-up when it is missing.
//!
//! object_store has no bucket calls, so this sends presigned HEAD and PUT
//! (CreateBucket) requests for the bucket itself. Outside `us-east-1`, AWS
//! refuses a CreateBucket without a body naming the region
//! (`IllegalLocationConstraintException`), and refuses one that names
//! `us-east-1`; so the body is sent for every other region only.

use std::time::Duration;

use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::signer::Signer;

use super::store::StoreError;

/// Creates `bucket` unless a HEAD finds it; returns whether it was created.
pub(super) async fn ensure(s3: &AmazonS3, bucket: &str, region: &str) -> Result<bool, StoreError> {
    let client = reqwest::Client::new();
    let bucket_root = Path::from("");
    let ttl = Duration::from_secs(300);
    let sign = |method| {
        let bucket_root = &bucket_root;
        async move {
            s3.signed_url(method, bucket_root, ttl)
                .await
                .map_err(|e| StoreError::Config(format!("cannot sign a bucket request: {e}")))
        }
    };
    let http_err = |e: reqwest::Error| StoreError::Config(format!("bucket request failed: {e}"));
    let head = client
        .head(sign(http::Method::HEAD).await?)
        .send()
        .await
        .map_err(http_err)?;
    if head.status().is_success() {
        return Ok(false);
    }
    let mut put = client.put(sign(http::Method::PUT).await?);
    if let Some(body) = create_bucket_configuration(region) {
        put = put.header("content-type", "application/xml").body(body);
    }
    let put = put.send().await.map_err(http_err)?;
    if put.status().is_success() {
        Ok(true)
    } else {
        let status = put.status();
        let body = put.text().await.unwrap_or_default();
        Err(StoreError::Config(format!(
            "cannot create bucket {bucket} in {region}: HTTP {status}: {}",
            body.chars().take(300).collect::<String>()
        )))
    }
}

/// The CreateBucket body for `region`: none for `us-east-1` (S3's default
/// location, which it refuses to see named), a `LocationConstraint` else.
pub(super) fn create_bucket_configuration(region: &str) -> Option<String> {
    (region != "us-east-1").then(|| {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_constraint_only_outside_us_east_1() {
        assert_eq!(create_bucket_configuration("us-east-1"), None);
        let body = create_bucket_configuration("eu-west-1").unwrap();
        assert!(
            body.contains("<LocationConstraint>eu-west-1</LocationConstraint>"),
            "{body}"
        );
        assert!(body.starts_with(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        ));
    }
}
