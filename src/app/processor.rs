//! The `processor` subcommand: configuration, the management endpoints,
//! signals.

use std::sync::Arc;
use std::time::Duration;

use crate::config::ProcessorArgs;
use crate::metrics;
use crate::rr::processor::{KafkaAccess, Processor};
use crate::rr::processor_config::ProcessorConfig;
use crate::shutdown::ShutdownTrigger;
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

/// The processor file (or topics string) with the flags' overrides
/// applied; the file's bootstrap servers fill in when no setting names any.
/// The Kafka and process settings are checked here, before any work.
pub fn load_processor_config(args: &mut ProcessorArgs) -> anyhow::Result<ProcessorConfig> {
    let mut config = match (&args.config, &args.topics) {
        (Some(path), _) => ProcessorConfig::load(path)?,
        (None, Some(topics)) => ProcessorConfig::from_topics_string(topics)?,
        (None, None) => anyhow::bail!(
            "name the topics with --config (KAFSCALE_LFS_PROXY_PROCESSOR_CONFIG) or --topics (KAFSCALE_LFS_PROXY_PROCESSOR_TOPICS)"
        ),
    };
    if let Some(n) = args.max_concurrent {
        config.max_concurrent_requests = n;
    }
    if let Some(t) = &args.dead_letter_topic {
        config.dead_letter_topic = Some(t.clone()).filter(|t| !t.is_empty());
    }
    if let (true, Some(servers)) = (
        args.upstream.bootstrap().is_empty(),
        &config.bootstrap_servers,
    ) {
        args.upstream.bootstrap_servers = servers.split(',').map(str::to_owned).collect();
    }
    args.upstream.validate_servers()?;
    args.upstream.validate_security()?;
    args.process.validate()?;
    Ok(config)
}

struct Management {
    processor: Arc<Processor>,
    metrics: PrometheusHandle,
}

/// Runs the processor until SIGTERM, then finishes the requests in hand
/// and leaves the groups.
pub async fn run_processor(args: ProcessorArgs, config: ProcessorConfig) -> anyhow::Result<()> {
    let (upstream, process) = (&args.upstream, &args.process);
    super::init_logging(process);
    let prometheus = metrics::install();
    let security = Arc::new(super::parts::upstream_security(upstream)?);
    let access = KafkaAccess {
        upstream: security,
        bootstrap: upstream.bootstrap(),
        connect_timeout: upstream.connect_timeout(),
        request_timeout: upstream.request_timeout(),
        max_frame_size: upstream.max_frame_size,
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        produce_linger: upstream.produce_linger(),
        fetch_wait: Duration::from_millis(args.fetch_wait_ms),
    };
    let topics: Vec<String> = config
        .topics
        .iter()
        .map(|t| t.request_topic.clone())
        .collect();
    let processor = Processor::new(config, access).context("cannot build the HTTP client")?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on KAFSCALE_LFS_PROXY_PROCESSOR_ADDR={}",
                args.addr
            )
        })?;
    tracing::info!(addr = %args.addr, ?topics, upstream = ?upstream.bootstrap(), "kafka-lfs-proxy processor starting");
    let management = Arc::new(Management {
        processor: Arc::clone(&processor),
        metrics: prometheus,
    });
    let app = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(management);
    let trigger = ShutdownTrigger::new();
    let mut server_stop = trigger.subscribe();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_stop.wait().await })
            .await
    });
    let work = tokio::spawn(Arc::clone(&processor).run(trigger.subscribe()));
    super::wait_for_signal().await;
    tracing::info!("shutting down: finishing requests in hand, leaving the groups");
    trigger.begin();
    let _ = tokio::time::timeout(process.shutdown_timeout(), work).await;
    let _ = server.await;
    Ok(())
}

async fn readyz(State(m): State<Arc<Management>>) -> (StatusCode, &'static str) {
    if m.processor.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not in every consumer group yet\n",
        )
    }
}

async fn render_metrics(State(m): State<Arc<Management>>) -> String {
    m.metrics.render()
}
