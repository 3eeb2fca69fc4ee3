//! Wiring: the one place that builds the running parts from the settings.
//! Each part gets its own small config (`RelayConfig`, `HttpConfig`, ...),
//! never the whole settings. Errors here are the binary's edge (`anyhow`).

mod gc;
mod http_routes;
mod parts;
mod processor;
mod proxy;
mod resolve;

pub use gc::collect_garbage;
pub use parts::{lfs, own_cluster, upstream_security};
pub use processor::{load_processor_config, run_processor};
pub use proxy::{build_chain, run_proxy};
pub use resolve::resolve;

use crate::config::{LogFormat, ProcessSettings};

/// SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Logs to standard error, filtered by the log level (EnvFilter syntax),
/// as text or as one JSON object per line (fields at the top level).
pub fn init_logging(process: &ProcessSettings) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&process.log_level))
        .with_writer(std::io::stderr);
    match process.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).with_ansi(false).init(),
    }
}
