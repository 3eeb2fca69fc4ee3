//! The proxy: Kafka listeners with their interception chain, the HTTP
//! sidecar, request-reply, health loops, and the drain on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;
use crate::http::request_reply::Gateway;
use crate::http::{self, HttpConfig, Sidecar, SidecarParts};
use crate::kafka::auth::credentials::Credentials;
use crate::kafka::client::producer::Producer;
use crate::kafka::relay::chain::Chain;
use crate::kafka::relay::listeners::BrokerListeners;
use crate::kafka::relay::proxy::{Proxy, RelayConfig};
use crate::kafka::relay::upstream::UpstreamSecurity;
use crate::lfs::rewrite::Lfs;
use crate::metrics;
use crate::rr::listener::ReplyListener;
use crate::rr::replies::ReplyBook;
use crate::rr::routes::{HeaderRoute, RouteError, RouteTable};
use crate::shutdown::ShutdownTrigger;
use crate::stages::{api_versions, broker_addresses, lfs_offload, sasl_gate};

/// The interception chain every Kafka session runs, in order: client SASL,
/// version negotiation, LFS offload, broker addresses. A new stage is one
/// more `.with(...)` line here.
pub fn build_chain(
    client_credentials: Option<Arc<Credentials>>,
    proxy_logs_in: bool,
    lfs: Arc<Lfs>,
    brokers: Arc<BrokerListeners>,
) -> Chain {
    let offer_sasl = client_credentials.is_some();
    Chain::new()
        .with(sasl_gate::SaslGate::new(client_credentials, proxy_logs_in))
        .with(api_versions::ApiVersions::new(offer_sasl))
        .with(lfs_offload::LfsOffload::new(lfs))
        .with(broker_addresses::BrokerAddresses::new(brokers))
}

/// Runs the proxy until SIGTERM, then drains.
pub async fn run_proxy(settings: Settings) -> anyhow::Result<()> {
    super::init_logging(&settings.log_level);
    let prometheus = metrics::install();
    let lfs = Arc::new(settings.lfs()?);
    let upstream = Arc::new(settings.upstream_security()?);
    let client_credentials = match (
        &settings.client_sasl_credentials_file,
        settings.client_sasl_terminates(),
    ) {
        (Some(path), true) => Some(Arc::new(
            Credentials::load(path).context("KAFSCALE_LFS_PROXY_CLIENT_SASL_CREDENTIALS_FILE")?,
        )),
        _ => None,
    };
    let http_tls = if settings.http_tls_enabled {
        let (Some(cert), Some(key)) = (&settings.http_tls_cert_file, &settings.http_tls_key_file)
        else {
            anyhow::bail!("KAFSCALE_LFS_PROXY_HTTP_TLS_CERT_FILE and _KEY_FILE are required");
        };
        let ca = settings.http_tls_client_ca_file.as_deref();
        let require = settings
            .http_tls_require_client_cert
            .unwrap_or(ca.is_some());
        Some(http::serve::tls_acceptor(cert, key, ca, require)?)
    } else {
        None
    };
    if settings.s3_ensure_bucket {
        match lfs.store.ensure_bucket().await {
            Ok(true) => tracing::info!(bucket = %lfs.store.bucket(), "created S3 bucket"),
            Ok(false) => {}
            Err(error) => anyhow::bail!("KAFSCALE_LFS_PROXY_S3_ENSURE_BUCKET: {error}"),
        }
    }
    tracing::info!(
        store = if settings.s3_bucket.is_some() { "s3" } else { "local" },
        bucket = %lfs.store.bucket(),
        namespace = %lfs.namespace,
        "LFS offload enabled"
    );

    let trigger = ShutdownTrigger::new();
    let brokers = BrokerListeners::new(
        settings.addr.ip(),
        &settings.advertised_host(),
        settings.broker_port_base(),
    );
    let chain = build_chain(
        client_credentials,
        upstream.sasl.is_some(),
        Arc::clone(&lfs),
        Arc::clone(&brokers),
    );
    tracing::debug!(stages = ?chain.names(), "interception chain");
    let relay = RelayConfig {
        addr: settings.addr,
        bootstrap: settings.bootstrap(),
        max_frame_size: settings.max_frame_size,
        inflight_bytes: settings.inflight_bytes,
        max_in_flight: settings.max_in_flight,
        connect_timeout: settings.upstream_connect_timeout(),
        health_interval: settings.health_interval(),
        capture_dir: settings.capture_dir.clone(),
    };
    let proxy = Proxy::start(
        relay,
        chain,
        brokers,
        Arc::clone(&upstream),
        settings.client_tls()?,
        trigger.subscribe(),
    )
    .context("KAFSCALE_LFS_PROXY_CAPTURE_DIR")?;

    let kafka_addr = proxy
        .bind_bootstrap()
        .await
        .with_context(|| format!("cannot listen on KAFSCALE_LFS_PROXY_ADDR={}", settings.addr))?;
    let http_listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on KAFSCALE_LFS_PROXY_HTTP_ADDR={}",
                settings.http_addr
            )
        })?;
    tracing::info!(
        kafka = %kafka_addr,
        http = %settings.http_addr,
        http_tls = settings.http_tls_enabled,
        advertised_host = %proxy.brokers.addresses().advertised_host(),
        broker_port_base = settings.broker_port_base(),
        upstream = ?settings.bootstrap(),
        upstream_tls = settings.backend_tls_enabled,
        client_tls = settings.tls_enabled,
        client_sasl = %settings.client_sasl_mode,
        upstream_sasl = settings.backend_sasl_mechanism.as_deref().unwrap_or("none"),
        "kafka-lfs-proxy listening"
    );
    tokio::spawn(Arc::clone(&proxy).health_loop());
    let gateway = gateway(&settings, &upstream).context("KAFSCALE_LFS_PROXY_RR_ROUTES_FILE")?;
    let sidecar = Sidecar::new(
        http_config(&settings),
        SidecarParts {
            lfs,
            producer: Producer::new(settings.own_cluster(&upstream)),
            metrics: prometheus,
            jwt: settings.http_jwt()?,
            gateway,
            upstream_health: Arc::clone(&proxy.upstream_health),
            shutdown: trigger.subscribe(),
        },
    );
    tokio::spawn(Arc::clone(&sidecar).storage_health_loop(settings.health_interval()));
    let app = http::router(sidecar);
    let http_server = tokio::spawn(http::serve::serve(
        http_listener,
        app,
        http_tls,
        trigger.subscribe(),
        settings.shutdown_timeout(),
    ));

    super::wait_for_signal().await;
    tracing::info!(timeout = ?settings.shutdown_timeout(), "shutting down: draining connections");
    let deadline = tokio::time::Instant::now() + settings.shutdown_timeout();
    trigger.begin();
    let left = proxy.drain(settings.shutdown_timeout()).await;
    if left > 0 {
        tracing::warn!(
            sessions = left,
            "shutdown timeout reached; closing remaining connections"
        );
    } else {
        tracing::info!("all connections drained");
    }
    // The HTTP server has been draining since the same signal, to the same deadline.
    let _ = tokio::time::timeout_at(deadline, http_server).await;
    Ok(())
}

fn http_config(settings: &Settings) -> HttpConfig {
    HttpConfig {
        api_keys: settings.http_api_keys(),
        read_idle: Duration::from_secs(settings.http_read_timeout_sec),
        presign_enabled: settings.presign_enabled,
        download_ttl: Duration::from_secs(settings.download_ttl_sec),
        temp_dir: settings
            .download_temp_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir),
        topic_max_length: settings.topic_max_length,
        session_ttl: Duration::from_secs(settings.upload_session_ttl_sec),
        part_size: settings.chunk_size as u64,
        cors_origins: settings.http_cors_origins(),
    }
}

/// The request-reply gateway the settings ask for, with its reply listener
/// started; `None` when no route is configured.
fn gateway(
    settings: &Settings,
    upstream: &Arc<UpstreamSecurity>,
) -> Result<Option<Arc<Gateway>>, RouteError> {
    let default_timeout = Duration::from_secs(settings.rr_timeout_sec);
    let routes = match &settings.rr_routes_file {
        Some(path) => RouteTable::load_routes(path, default_timeout)?,
        None => Vec::new(),
    };
    let header_route = settings.rr_header_route.then(|| HeaderRoute {
        default_request_topic: settings.rr_default_request_topic.clone(),
        default_reply_topic: settings.rr_default_reply_topic.clone(),
    });
    let table = RouteTable::new(routes, header_route, default_timeout);
    if table.is_empty() {
        return Ok(None);
    }
    let mut topics = table.reply_topics();
    topics.extend(
        settings
            .rr_warmup_topics
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
    );
    let book = Arc::new(ReplyBook::new(
        Duration::from_secs(settings.rr_reply_ttl_sec),
        settings.rr_reply_cache_bytes,
    ));
    let listener = ReplyListener::start(
        Arc::new(settings.own_cluster(upstream)),
        Arc::clone(&book),
        topics,
        settings.rr_max_reply_topics,
        (settings.max_frame_size / 4).max(1 << 20),
        Duration::from_millis(settings.rr_fetch_wait_ms),
    );
    Ok(Some(Arc::new(Gateway {
        routes: table,
        book,
        listener,
        producer: Producer::new(settings.own_cluster(upstream)),
        max_body: settings.rr_max_body_bytes,
        max_wait: Duration::from_secs(settings.rr_max_wait_sec),
    })))
}
