//! Metric names and the Prometheus recorder.
//!
//! Labels have bounded cardinality: API names come from the fixed list of
//! Kafka API keys, reasons and directions from fixed sets in the code.

use std::sync::OnceLock;

use kafka_protocol::messages::ApiKey;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS_OPEN: &str = "kafka_lfs_proxy_connections_open";
pub const CONNECTIONS_TOTAL: &str = "kafka_lfs_proxy_connections_total";
pub const REQUESTS_TOTAL: &str = "kafka_lfs_proxy_requests_total";
pub const BYTES_TOTAL: &str = "kafka_lfs_proxy_bytes_total";
pub const UPSTREAM_ERRORS_TOTAL: &str = "kafka_lfs_proxy_upstream_errors_total";
pub const FRAME_REJECTIONS_TOTAL: &str = "kafka_lfs_proxy_frame_rejections_total";
pub const UPSTREAM_UP: &str = "kafka_lfs_proxy_upstream_up";
pub const LFS_UPLOADS_TOTAL: &str = "kafka_lfs_proxy_lfs_uploads_total";
pub const LFS_UPLOAD_BYTES_TOTAL: &str = "kafka_lfs_proxy_lfs_upload_bytes_total";
pub const LFS_UPLOAD_SECONDS: &str = "kafka_lfs_proxy_lfs_upload_duration_seconds";
pub const LFS_STORAGE_ERRORS_TOTAL: &str = "kafka_lfs_proxy_lfs_storage_errors_total";
pub const LFS_ORPHANS_DELETED: &str = "kafka_lfs_proxy_lfs_orphans_deleted_total";
pub const LFS_ORPHANS_LEFT: &str = "kafka_lfs_proxy_lfs_orphans_left_total";
pub const HTTP_REQUESTS_TOTAL: &str = "kafka_lfs_proxy_http_requests_total";
pub const HTTP_REQUEST_SECONDS: &str = "kafka_lfs_proxy_http_request_duration_seconds";
pub const HTTP_BYTES_TOTAL: &str = "kafka_lfs_proxy_http_bytes_total";
pub const HTTP_INTEGRITY_FAILURES_TOTAL: &str = "kafka_lfs_proxy_http_integrity_failures_total";
pub const HTTP_UPLOAD_SESSIONS_OPEN: &str = "kafka_lfs_proxy_http_upload_sessions_open";
pub const HTTP_UPLOAD_SESSIONS_EXPIRED: &str = "kafka_lfs_proxy_http_upload_sessions_expired_total";
pub const UPSTREAM_REAUTH_TOTAL: &str = "kafka_lfs_proxy_upstream_reauthentications_total";
pub const STORAGE_UP: &str = "kafka_lfs_proxy_storage_up";

/// Installs the global recorder once; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .expect("the metrics recorder is installed once");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(CONNECTIONS_OPEN, "Client connections currently open");
    metrics::describe_counter!(CONNECTIONS_TOTAL, "Client connections accepted");
    metrics::describe_counter!(REQUESTS_TOTAL, "Kafka requests forwarded, by API");
    metrics::describe_counter!(BYTES_TOTAL, "Bytes relayed, by direction");
    metrics::describe_counter!(UPSTREAM_ERRORS_TOTAL, "Upstream failures, by kind");
    metrics::describe_counter!(FRAME_REJECTIONS_TOTAL, "Frames refused, by reason");
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests, by route template, method and status"
    );
    metrics::describe_histogram!(HTTP_REQUEST_SECONDS, "HTTP request duration, by route");
    metrics::describe_counter!(
        HTTP_BYTES_TOTAL,
        "LFS payload bytes over HTTP: up = uploaded, down = downloaded"
    );
    metrics::describe_counter!(
        HTTP_INTEGRITY_FAILURES_TOTAL,
        "Downloads refused because storage returned other bytes than the envelope names"
    );
    metrics::describe_gauge!(HTTP_UPLOAD_SESSIONS_OPEN, "Upload sessions open");
    metrics::describe_counter!(
        HTTP_UPLOAD_SESSIONS_EXPIRED,
        "Upload sessions expired and aborted"
    );
    metrics::describe_counter!(
        UPSTREAM_REAUTH_TOTAL,
        "SASL re-authentications on relayed upstream connections (KIP-368), by outcome"
    );
    metrics::describe_gauge!(STORAGE_UP, "1 while the last storage check succeeded");
    metrics::describe_gauge!(
        UPSTREAM_UP,
        "1 while the last upstream health check succeeded"
    );
}

/// The API name used as a label (`unknown` for keys the proxy does not know).
pub fn api_label(api_key: i16) -> &'static str {
    static NAMES: OnceLock<Vec<(i16, &'static str)>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        ApiKey::iter()
            .map(|k| (k as i16, &*Box::leak(format!("{k:?}").into_boxed_str())))
            .collect()
    });
    names
        .iter()
        .find(|(k, _)| *k == api_key)
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

pub fn frame_rejected(reason: &'static str) {
    metrics::counter!(FRAME_REJECTIONS_TOTAL, "reason" => reason).increment(1);
}

pub fn upstream_error(kind: &'static str) {
    metrics::counter!(UPSTREAM_ERRORS_TOTAL, "kind" => kind).increment(1);
}
