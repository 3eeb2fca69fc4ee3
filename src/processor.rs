//! The `processor` subcommand's edge: configuration, the management
//! endpoints, signals.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use kafka_lfs_proxy::config::{EnvSettings, ProcessorArgs};
use kafka_lfs_proxy::metrics;
use kafka_lfs_proxy::rr::processor::{KafkaAccess, Processor};
use kafka_lfs_proxy::rr::processor_config::ProcessorConfig;
use metrics_exporter_prometheus::PrometheusHandle;

pub fn main(args: ProcessorArgs) -> ExitCode {
    let config = match load(&args) {
        Ok(c) => c,
        Err(error) => {
            eprintln!("kafka-lfs-proxy processor: {error:#}");
            return ExitCode::from(2);
        }
    };
    // Kafka settings from the environment; the file's bootstrap servers
    // when the environment names none.
    let from_env = std::env::var_os("KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS").is_some();
    let mut argv = vec!["kafka-lfs-proxy".to_owned()];
    if let (false, Some(servers)) = (from_env, &config.bootstrap_servers) {
        argv.extend(["--bootstrap-servers".to_owned(), servers.clone()]);
    }
    let settings = match EnvSettings::try_parse_from(argv) {
        Ok(s) => s.settings,
        Err(error) => {
            eprintln!("kafka-lfs-proxy processor: {error}");
            return ExitCode::from(2);
        }
    };
    super::block_on("kafka-lfs-proxy processor", run(args, config, settings))
}

fn load(args: &ProcessorArgs) -> anyhow::Result<ProcessorConfig> {
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
    Ok(config)
}

struct Management {
    processor: Arc<Processor>,
    metrics: PrometheusHandle,
}

async fn run(
    args: ProcessorArgs,
    config: ProcessorConfig,
    settings: kafka_lfs_proxy::config::Settings,
) -> anyhow::Result<()> {
    super::init_logging(&settings.log_level);
    let prometheus = metrics::install();
    settings.validate()?;
    let upstream = Arc::new(settings.upstream_security()?);
    let access = KafkaAccess {
        upstream,
        bootstrap: settings.bootstrap(),
        connect_timeout: settings.upstream_connect_timeout(),
        request_timeout: Duration::from_millis(settings.produce_timeout_ms),
        max_frame_size: settings.max_frame_size,
        session_timeout: Duration::from_millis(args.session_timeout_ms),
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
    tracing::info!(addr = %args.addr, ?topics, upstream = ?settings.bootstrap(), "kafka-lfs-proxy processor starting");
    let management = Arc::new(Management {
        processor: Arc::clone(&processor),
        metrics: prometheus,
    });
    let app = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(management);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut server_stop = stopped.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let work = tokio::spawn(Arc::clone(&processor).run(stopped));
    super::wait_for_signal().await;
    tracing::info!("shutting down: finishing requests in hand, leaving the groups");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(settings.shutdown_timeout(), work).await;
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
