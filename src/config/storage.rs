//! LFS storage settings: S3 or the local directory, object keys, limits,
//! checksums, which topics are offloaded.

use std::path::PathBuf;

use clap::Args;

use super::values::{parse_positive, Secret, SettingError};
use crate::lfs::checksum::ChecksumAlg;
use crate::lfs::store::MIN_S3_PART_SIZE;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "LFS storage")]
pub struct StorageSettings {
    /// S3 bucket for LFS blobs; when unset, blobs go to STORAGE_DIR.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3 region [default: us-east-1]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_REGION")]
    pub s3_region: Option<String>,

    /// S3 endpoint for non-AWS S3 (MinIO, SeaweedFS, ...).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Path-style S3 addressing [default: true when an endpoint is set]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: Option<bool>,

    /// S3 access key (else the AWS default credential chain).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_ACCESS_KEY", hide_env_values = true)]
    pub s3_access_key: Option<String>,

    /// S3 secret key.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<Secret>,

    /// S3 session token (STS).
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_S3_SESSION_TOKEN",
        hide_env_values = true
    )]
    pub s3_session_token: Option<Secret>,

    /// S3 endpoint written into presigned download URLs, for clients that
    /// reach S3 by another address than the proxy does.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_PUBLIC_ENDPOINT")]
    pub s3_public_endpoint: Option<String>,

    /// Create the S3 bucket at start-up when it does not exist.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_S3_ENSURE_BUCKET",
        default_value_t = false
    )]
    pub s3_ensure_bucket: bool,

    /// Longest one S3 request may take, body included, in milliseconds. An
    /// LFS Produce waiting longer on one part has been given up by its
    /// producer already (Kafka's default request.timeout.ms is 30 s).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_TIMEOUT_MS", default_value_t = 30_000, value_parser = parse_positive::<u64>)]
    pub s3_timeout_ms: u64,

    /// Longest S3 may stay silent while answering (a stalled store), in
    /// milliseconds.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_IDLE_TIMEOUT_MS", default_value_t = 10_000, value_parser = parse_positive::<u64>)]
    pub s3_idle_timeout_ms: u64,

    /// Local directory for LFS blobs when no S3 bucket is set.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_STORAGE_DIR",
        default_value = "./lfs-data"
    )]
    pub storage_dir: PathBuf,

    /// Extra time after the shutdown deadline to abort unfinished uploads and
    /// delete orphaned objects; what storage does not remove in it is recorded
    /// for the next start, in milliseconds.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_SHUTDOWN_CLEANUP_MS",
        default_value_t = 5_000
    )]
    pub shutdown_cleanup_ms: u64,

    /// First segment of every object key.
    #[arg(long, env = "KAFSCALE_S3_NAMESPACE", default_value = "default")]
    pub s3_namespace: String,

    /// Name objects by their SHA-256 (`{namespace}/{topic}/lfs/sha256/obj-{sha256}`):
    /// the same payload produced twice to a topic is stored once. Objects
    /// are then deleted only by the collector (`gc`), never on a failed produce.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_CONTENT_ADDRESSED_KEYS",
        default_value_t = false
    )]
    pub content_addressed_keys: bool,

    /// Largest LFS value, in bytes; a larger one fails its partition with MESSAGE_TOO_LARGE.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_MAX_BLOB_SIZE", default_value_t = 5 * 1024 * 1024 * 1024, value_parser = parse_positive::<u64>)]
    pub max_blob_size: u64,

    /// Multipart upload part size, in bytes (S3 requires at least 5 MiB).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_CHUNK_SIZE", default_value_t = 5 * 1024 * 1024, value_parser = parse_positive::<usize>)]
    pub chunk_size: usize,

    /// Checksum algorithm for LFS_BLOB values when the record has no
    /// LFS_BLOB_ALG header: sha256, md5 or crc32.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_CHECKSUM_ALGO",
        default_value = "sha256"
    )]
    pub checksum_algo: String,

    /// This proxy's id, written into every envelope [default: the hostname]
    #[arg(long = "proxy-id", env = "KAFSCALE_LFS_PROXY_ID")]
    pub proxy_id: Option<String>,

    /// Topics whose LFS_BLOB records are offloaded, comma-separated
    /// [default: every topic]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_TOPICS", value_delimiter = ',')]
    pub lfs_topics: Vec<String>,
}

impl StorageSettings {
    pub fn validate(&self) -> Result<(), SettingError> {
        self.checksum_alg()?;
        // KafScale's example bucket names were registered by a third party
        // (their PR #139); writing blobs there would hand them the data.
        const BLOCKED_BUCKETS: [&str; 4] = [
            "kafscale-lfs",
            "kafscale-lfs-dev",
            "kafscale-lfs-staging",
            "kafscale-example",
        ];
        if let Some(bucket) = self
            .s3_bucket
            .as_deref()
            .filter(|b| BLOCKED_BUCKETS.contains(&b.trim()))
        {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_S3_BUCKET",
                reason: format!("`{bucket}` is a published example name owned by someone else; use your own bucket"),
            });
        }
        if self.s3_bucket.is_some() && self.chunk_size < MIN_S3_PART_SIZE {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_CHUNK_SIZE",
                reason: "S3 multipart parts must be at least 5 MiB (5242880)".into(),
            });
        }
        if self
            .s3_bucket
            .as_deref()
            .is_some_and(|b| b.trim().is_empty())
        {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_S3_BUCKET",
                reason: "is empty".into(),
            });
        }
        Ok(())
    }

    /// The default checksum algorithm for LFS_BLOB values.
    pub fn checksum_alg(&self) -> Result<ChecksumAlg, SettingError> {
        ChecksumAlg::parse(&self.checksum_algo).ok_or_else(|| SettingError {
            name: "KAFSCALE_LFS_PROXY_CHECKSUM_ALGO",
            reason: format!("`{}` is not one of sha256, md5, crc32", self.checksum_algo),
        })
    }

    pub fn proxy_id(&self) -> String {
        self.proxy_id
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
    }

    /// Topics whose records are offloaded; empty: every topic.
    pub fn topics(&self) -> Vec<String> {
        super::values::trimmed(&self.lfs_topics)
    }
}
