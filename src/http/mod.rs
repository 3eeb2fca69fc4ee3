//! The HTTP sidecar: the LFS API (produce, upload sessions, verified
//! download), the routes file's routes (request-reply, SSE streams,
//! one-way produce; see `routed`), its OpenAPI document, health and
//! metrics.
//!
//! Layers, outermost first: request id (and error rendering), CORS (so a
//! browser's preflight is answered before authentication), metrics, then
//! API-key checks on the /lfs/ routes only. `/livez`, `/readyz`,
//! `/metrics` and `/openapi.yaml` need no key.

pub mod body;
pub mod cached;
pub mod download;
pub mod error;
mod idempotency;
pub mod jwt;
pub mod middleware;
pub mod one_way;
pub mod policy;
pub mod produce;
pub mod request_reply;
pub mod routed;
pub mod serve;
pub mod sse;
pub mod target;
pub mod uploads;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::health::Readiness;
use crate::kafka::client::producer::Producer;
use crate::lfs::Lfs;
use crate::metrics as m;
use crate::policy::PolicyBook;
use crate::shutdown::Shutdown;

/// The OpenAPI 3 document of the HTTP API, served at `/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../api/openapi.yaml");

/// What the HTTP API needs from the settings. Not `Debug`: it holds the
/// API keys.
#[derive(Clone)]
pub struct HttpConfig {
    /// Accepted API keys; empty: none required.
    pub api_keys: Vec<String>,
    /// Longest pause while reading a request body.
    pub read_idle: Duration,
    pub presign_enabled: bool,
    /// Longest lifetime of a presigned download URL.
    pub download_ttl: Duration,
    /// Where downloads are held while they are verified.
    pub temp_dir: PathBuf,
    pub topic_max_length: usize,
    /// Lifetime of an upload session.
    pub session_ttl: Duration,
    /// Most upload sessions open at once (each holds a multipart upload:
    /// with the local store, an open file).
    pub max_sessions: usize,
    /// Multipart part size.
    pub part_size: u64,
    pub cors_origins: Vec<String>,
}

/// What the HTTP API serves from, besides its settings.
pub struct SidecarParts {
    pub lfs: Arc<Lfs>,
    pub producer: Producer,
    pub metrics: PrometheusHandle,
    pub jwt: Option<jwt::JwtVerifier>,
    /// Request-reply, when routes are configured.
    pub gateway: Option<Arc<request_reply::Gateway>>,
    /// SSE streams, when stream routes are configured.
    pub streams: Option<Arc<sse::Streams>>,
    /// One-way produce, when produce routes are configured.
    pub one_way: Option<one_way::OneWay>,
    /// Cached reads, when cached routes are configured.
    pub cached: Option<cached::CachedReads>,
    /// Record policies, checked on every record the API produces.
    pub policies: Arc<PolicyBook>,
    /// Whether upstream Kafka answered its last check.
    pub upstream_health: Arc<Readiness>,
    pub shutdown: Shutdown,
}

/// State shared by the HTTP handlers.
pub struct Sidecar {
    pub config: HttpConfig,
    pub lfs: Arc<Lfs>,
    pub producer: Producer,
    pub sessions: uploads::UploadSessions,
    pub metrics: PrometheusHandle,
    /// SHA-256 of every accepted API key (compared in constant time).
    pub api_keys: Vec<[u8; 32]>,
    /// Verifies bearer JWTs, when configured.
    pub jwt: Option<jwt::JwtVerifier>,
    /// Request-reply, when routes are configured.
    pub gateway: Option<Arc<request_reply::Gateway>>,
    pub streams: Option<Arc<sse::Streams>>,
    pub one_way: Option<one_way::OneWay>,
    pub cached: Option<cached::CachedReads>,
    pub policies: Arc<PolicyBook>,
    upstream_health: Arc<Readiness>,
    storage_health: Readiness,
    shutdown: Shutdown,
}

impl Sidecar {
    /// Builds the handlers' state and starts the upload-session reaper.
    pub fn new(config: HttpConfig, parts: SidecarParts) -> Arc<Self> {
        let sidecar = Arc::new(Sidecar {
            api_keys: config
                .api_keys
                .iter()
                .map(|k| middleware::key_digest(k))
                .collect(),
            config,
            sessions: uploads::UploadSessions::default(),
            storage_health: Readiness::new("storage", m::STORAGE_UP),
            lfs: parts.lfs,
            producer: parts.producer,
            metrics: parts.metrics,
            gateway: parts.gateway,
            streams: parts.streams,
            one_way: parts.one_way,
            cached: parts.cached,
            policies: parts.policies,
            jwt: parts.jwt,
            upstream_health: parts.upstream_health,
            shutdown: parts.shutdown,
        });
        let reap_every = sidecar.config.session_ttl.min(Duration::from_secs(30));
        tokio::spawn(uploads::UploadSessions::reap(
            Arc::downgrade(&sidecar),
            reap_every,
        ));
        sidecar
    }

    /// Checks storage every `interval` for `/readyz`.
    pub async fn storage_health_loop(self: Arc<Self>, interval: Duration) {
        let mut shutdown = self.shutdown.clone();
        let probe_key = format!("{}/.kafka-lfs-proxy-readiness-probe", self.lfs.namespace);
        loop {
            // A stalled store must flip readiness too, not hold the check.
            let outcome =
                match tokio::time::timeout(interval, self.lfs.store.probe(&probe_key)).await {
                    Ok(answer) => answer.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("storage did not answer within {interval:?}")),
                };
            self.storage_health.record(outcome);
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// Every API route with its method, as the OpenAPI document must list them.
pub fn api_routes() -> Vec<(&'static str, Method, MethodRouter<Arc<Sidecar>>)> {
    vec![
        ("/lfs/produce", Method::POST, post(produce::produce)),
        ("/lfs/uploads", Method::POST, post(uploads::init)),
        (
            "/lfs/uploads/{id}/parts/{n}",
            Method::PUT,
            put(uploads::put_part),
        ),
        (
            "/lfs/uploads/{id}/complete",
            Method::POST,
            post(uploads::complete),
        ),
        ("/lfs/uploads/{id}", Method::DELETE, delete(uploads::abort)),
        ("/lfs/download", Method::POST, post(download::download)),
        (
            "/rr/replies/{topic}/{id}",
            Method::GET,
            get(request_reply::reply),
        ),
    ]
}

/// Routes that need no API key.
pub fn open_routes() -> Vec<(&'static str, Method, MethodRouter<Arc<Sidecar>>)> {
    vec![
        ("/livez", Method::GET, get(livez)),
        ("/readyz", Method::GET, get(readyz)),
        ("/metrics", Method::GET, get(render_metrics)),
        ("/openapi.yaml", Method::GET, get(openapi)),
    ]
}

pub fn router(sidecar: Arc<Sidecar>) -> Router {
    let mut api = Router::new();
    for (path, _, route) in api_routes() {
        api = api.route(path, route);
    }
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        Arc::clone(&sidecar),
        middleware::require_api_key,
    ));
    let mut app = api;
    for (path, _, route) in open_routes() {
        app = app.route(path, route);
    }
    let mut app = app
        .fallback(routed::dispatch)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(middleware::record_metrics));
    if let Some(cors) = cors_layer(&sidecar.config.cors_origins) {
        app = app.layer(cors);
    }
    app.layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(sidecar)
}

/// CORS for the configured origins; `None` (no cross-origin access at all)
/// when there are none. `*` allows any origin, never with credentials.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    let expose = [
        "x-request-id",
        "x-correlation-id",
        "location",
        "preference-applied",
        "idempotent-replayed",
        "x-kafka-partition",
        "x-kafka-offset",
        "x-kafscale-lfs-checksum",
        "x-kafscale-lfs-content-length",
    ]
    .map(HeaderName::from_static);
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            // Record headers are `X-Kafka-Header-<any name>`: a fixed list
            // cannot name them, so the requested headers are allowed (only
            // for allowed origins).
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(expose)
            .max_age(Duration::from_secs(600)),
    )
}

/// Live while the process serves HTTP at all.
async fn livez() -> &'static str {
    "ok\n"
}

/// Ready only while upstream Kafka and storage both answered their last
/// check and, with request-reply, the reply listener is positioned.
async fn readyz(State(sidecar): State<Arc<Sidecar>>) -> (StatusCode, String) {
    let mut missing = Vec::new();
    if !sidecar.upstream_health.is_ready() {
        missing.push("upstream");
    }
    if !sidecar.storage_health.is_ready() {
        missing.push("storage");
    }
    if sidecar
        .gateway
        .as_ref()
        .is_some_and(|g| !g.listener.is_ready())
    {
        missing.push("reply listener");
    }
    if missing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        let verb = if missing.len() == 1 && missing[0] == "reply listener" {
            "not positioned"
        } else {
            "unreachable"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} {verb}\n", missing.join(" and ")),
        )
    }
}

async fn render_metrics(State(sidecar): State<Arc<Sidecar>>) -> String {
    // Read at scrape time: a leak of tasks shows as a line that only rises.
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    metrics::gauge!(m::TASKS_ALIVE).set(tasks as f64);
    sidecar.metrics.render()
}

async fn openapi() -> impl IntoResponse {
    ([("content-type", "application/yaml")], OPENAPI)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(METHOD, path)` for every operation in the OpenAPI document: paths
    /// are the two-space-indented keys under `paths:`, methods the
    /// four-space-indented keys under a path.
    fn documented() -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        let mut in_paths = false;
        let mut path = None;
        for line in OPENAPI.lines() {
            if !line.starts_with(' ') && !line.trim().is_empty() {
                in_paths = line.trim_end() == "paths:";
                continue;
            }
            if !in_paths {
                continue;
            }
            if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
                path = Some(format!("/{p}"));
            } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
                let methods = ["get", "put", "post", "delete", "patch", "head", "options"];
                if methods.contains(&m) {
                    let p = path.clone().expect("a method under a path");
                    out.insert((m.to_ascii_uppercase(), p));
                }
            }
        }
        out
    }

    #[test]
    fn openapi_document_lists_exactly_the_served_routes() {
        let served: BTreeSet<(String, String)> = api_routes()
            .into_iter()
            .chain(open_routes())
            .map(|(path, method, _)| (method.to_string(), path.to_owned()))
            .collect();
        let documented = documented();
        assert!(documented.len() >= 10, "parser found {documented:?}");
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not documented: {undocumented:?}; documented but not served: {unserved:?}"
        );
    }
}
