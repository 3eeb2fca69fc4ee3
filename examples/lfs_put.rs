//! The LFS benchmark's load generator (`benches/system.py` runs it): for
//! each value size, the best of N runs of
//!
//! * a plain `object_store` PUT of the value to the bucket (one request, the
//!   baseline: what storing the bytes costs without any proxy), and
//! * a Produce of the same value with an `LFS_BLOB` header through the
//!   proxy's Kafka listener, acks=all, by this crate's own Kafka producer
//!   (Produce v7, no copy of the value beyond the batch it encodes), so the
//!   time is the proxy's and the broker's, not a client's.
//!
//! Prints one JSON object. Usage:
//! `lfs_put ENDPOINT BUCKET ACCESS_KEY SECRET_KEY BOOTSTRAP TOPIC SIZES_MIB RUNS`
//! (SIZES_MIB comma-separated).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_lfs_proxy::kafka::client::cluster::Cluster;
use kafka_lfs_proxy::kafka::client::producer::{OutgoingRecord, Producer};
use kafka_lfs_proxy::kafka::relay::upstream::UpstreamSecurity;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload};

const MIB: usize = 1024 * 1024;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 9 {
        eprintln!(
            "usage: lfs_put ENDPOINT BUCKET ACCESS_KEY SECRET_KEY BOOTSTRAP TOPIC SIZES_MIB RUNS"
        );
        std::process::exit(2);
    }
    let (endpoint, bucket, access, secret) = (&args[1], &args[2], &args[3], &args[4]);
    let (bootstrap, topic) = (&args[5], &args[6]);
    let sizes: Vec<usize> = args[7]
        .split(',')
        .map(|s| s.parse().expect("size"))
        .collect();
    let runs: usize = args[8].parse().expect("runs");

    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(access)
        .with_secret_access_key(secret)
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(Duration::from_secs(600)),
        )
        .build()
        .expect("S3 client");
    let security = Arc::new(UpstreamSecurity {
        tls: None,
        sasl: None,
        max_frame_size: 512 * MIB,
    });
    let cluster = Cluster::new(
        security,
        vec![bootstrap.clone()],
        Duration::from_secs(5),
        Duration::from_secs(600),
        512 * MIB,
    );
    let producer = Producer::new(cluster);

    let mut rows = Vec::new();
    for size in sizes {
        let value = Bytes::from(random_bytes(size * MIB));
        let mut put = Vec::new();
        for run in 0..runs {
            let path = Path::from(format!("bench/plain-{size}-{run}-{}", std::process::id()));
            let started = Instant::now();
            store
                .put(&path, PutPayload::from_bytes(value.clone()))
                .await
                .expect("plain PUT");
            put.push(started.elapsed().as_secs_f64());
            store.delete(&path).await.expect("delete");
        }
        let record = OutgoingRecord {
            topic: topic.clone(),
            partition: Some(0),
            key: None,
            value: Some(value.clone()),
            headers: vec![("LFS_BLOB".into(), Bytes::new())],
        };
        let mut via = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            producer.produce(&record).await.expect("LFS produce");
            via.push(started.elapsed().as_secs_f64());
        }
        let best_put = put.iter().cloned().fold(f64::MAX, f64::min);
        let best_via = via.iter().cloned().fold(f64::MAX, f64::min);
        rows.push(format!(
            "{{\"value_mib\":{size},\"plain_put_s\":{best_put:.4},\"proxy_s\":{best_via:.4}}}"
        ));
    }
    println!("{{\"rows\":[{}]}}", rows.join(","));
}

/// Incompressible bytes (xorshift), so no layer gains by compressing.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
