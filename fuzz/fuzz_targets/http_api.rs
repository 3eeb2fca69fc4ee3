//! The HTTP API's request parsing: JSON bodies, route parameters and
//! headers of the upload-session and download routes, through the real
//! router over a local store. Input: a route selector byte, then path
//! parameter text, header values and body separated by 0xff bytes.
//! Whatever arrives, the answer is a status below 500 with the JSON error
//! body of the API, except where storage itself fails.
//!
//! `/lfs/produce` and `complete` end in a Kafka produce, which needs a
//! broker: the end-to-end suite (schemathesis) covers them.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use kafka_lfs_proxy::health::Readiness;
use kafka_lfs_proxy::http::{router, HttpConfig, Sidecar, SidecarParts};
use kafka_lfs_proxy::kafka::client::cluster::Cluster;
use kafka_lfs_proxy::kafka::client::producer::Producer;
use kafka_lfs_proxy::kafka::relay::upstream::UpstreamSecurity;
use kafka_lfs_proxy::lfs::checksum::ChecksumAlg;
use kafka_lfs_proxy::lfs::store::BlobStore;
use kafka_lfs_proxy::lfs::{Lfs, TopicFilter};
use kafka_lfs_proxy::shutdown::ShutdownTrigger;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    _trigger: ShutdownTrigger,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let trigger = ShutdownTrigger::new();
        let app = runtime.block_on(async {
            let lfs = Arc::new(Lfs {
                store: BlobStore::local(&dir.path().join("store"), 5 * 1024 * 1024).unwrap(),
                namespace: "fuzz".into(),
                proxy_id: "fuzz".into(),
                max_blob_size: 1 << 20,
                default_alg: ChecksumAlg::Sha256,
                topics: TopicFilter::default(),
                content_addressed: false,
            });
            let security = Arc::new(UpstreamSecurity {
                tls: None,
                sasl: None,
                max_frame_size: 1 << 20,
            });
            // Nothing listens there: no fuzzed request may reach Kafka.
            let cluster = Cluster::new(
                security,
                vec!["127.0.0.1:1".into()],
                Duration::from_millis(50),
                Duration::from_millis(50),
                1 << 20,
            );
            let config = HttpConfig {
                api_keys: Vec::new(),
                read_idle: Duration::from_secs(1),
                presign_enabled: false,
                download_ttl: Duration::from_secs(60),
                temp_dir: dir.path().to_owned(),
                topic_max_length: 249,
                session_ttl: Duration::from_secs(60),
                // Bounded as in the product: the fuzzer opens sessions far
                // faster than they expire (unbounded, it ran out of files).
                max_sessions: 1000,
                part_size: 5 * 1024 * 1024,
                cors_origins: vec!["https://app.example".into()],
            };
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let sidecar = Sidecar::new(
                config,
                SidecarParts {
                    lfs,
                    producer: Producer::new(cluster),
                    metrics: recorder.handle(),
                    jwt: None,
                    gateway: None,
                    streams: None,
                    one_way: None,
                    cached: None,
                    policies: Arc::new(kafka_lfs_proxy::policy::PolicyBook::none()),
                    upstream_health: Arc::new(Readiness::new("upstream", "fuzz_upstream_up")),
                    shutdown: trigger.subscribe(),
                },
            );
            router(sidecar)
        });
        Fixture {
            _dir: dir,
            runtime,
            app,
            _trigger: trigger,
        }
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, rest)) = data.split_first() else {
        return;
    };
    let mut fields = rest.splitn(4, |b| *b == 0xff);
    let param = text(fields.next().unwrap_or_default());
    let second = text(fields.next().unwrap_or_default());
    let header = fields.next().unwrap_or_default();
    let body = fields.next().unwrap_or_default().to_vec();
    let param_enc: String = url_escape(&param);
    let (method, path) = match selector % 6 {
        0 => (Method::POST, "/lfs/uploads".to_owned()),
        1 => (
            Method::PUT,
            format!("/lfs/uploads/{param_enc}/parts/{}", url_escape(&second)),
        ),
        2 => (Method::DELETE, format!("/lfs/uploads/{param_enc}")),
        3 => (Method::POST, "/lfs/download".to_owned()),
        4 => (Method::OPTIONS, "/lfs/download".to_owned()),
        _ => (Method::GET, format!("/lfs/{param_enc}")),
    };
    let mut request = Request::builder().method(method).uri(&path);
    if let Ok(value) = axum::http::HeaderValue::from_bytes(header) {
        request = request
            .header("content-type", value.clone())
            .header("origin", value.clone())
            .header("access-control-request-method", value);
    }
    let Ok(request) = request.body(Body::from(body)) else {
        return;
    };
    let fixture = fixture();
    fixture.runtime.block_on(async {
        let response = fixture.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            status.as_u16() < 500 || status.as_u16() == 503,
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    });
});

/// Percent-encodes everything but unreserved characters, so any text makes
/// a valid URI path segment.
fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
