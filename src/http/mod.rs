//! The HTTP sidecar: health and metrics for now; the LFS HTTP API joins it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::kafka::server::Proxy;

#[derive(Clone)]
struct AppState {
    proxy: Arc<Proxy>,
    metrics: PrometheusHandle,
}

pub fn router(proxy: Arc<Proxy>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { proxy, metrics })
}

/// Live while the process serves HTTP at all.
async fn livez() -> &'static str {
    "ok\n"
}

/// Ready only while the last upstream check got a Metadata answer.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.proxy.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "upstream unreachable\n")
    }
}

async fn render_metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}
