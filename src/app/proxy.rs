//! The proxy: Kafka listeners with their interception chain, the HTTP
//! sidecar, request-reply, health loops, and the drain on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{http_routes, parts};
use crate::config::{ClientSaslMode, HttpSettings, RehydrateSettings, Settings, StorageSettings};
use crate::http::one_way::OneWay;
use crate::http::{HttpConfig, Sidecar, SidecarParts};
use crate::kafka::auth::credentials::Credentials;
use crate::kafka::relay::chain::Chain;
use crate::kafka::relay::listeners::BrokerListeners;
use crate::kafka::relay::proxy::{Proxy, RelayConfig};
use crate::lfs::rehydrate::Rehydrator;
use crate::lfs::Lfs;
use crate::metrics;
use crate::policy::PolicyBook;
use crate::rr::routes::RouteFile;
use crate::shutdown::ShutdownTrigger;
use crate::stages::fetch_rehydration::RehydrateFor;
use crate::stages::{
    api_versions, broker_addresses, fetch_rehydration, lfs_offload, record_policy, sasl_gate,
};

/// The interception chain every Kafka session runs, in order: client SASL,
/// version negotiation, record policies (when a policy file is set: they
/// judge what producers sent, before the offload), LFS offload, Fetch
/// rehydration (for the consumers `rehydrate_for` names), broker
/// addresses. A new stage is one more `.with(...)` line here.
pub fn build_chain(
    client_credentials: Option<Arc<Credentials>>,
    proxy_logs_in: bool,
    policy: Option<record_policy::RecordPolicy>,
    lfs: Arc<Lfs>,
    rehydration: Option<(Arc<Rehydrator>, RehydrateFor)>,
    brokers: Arc<BrokerListeners>,
) -> Chain {
    let offer_sasl = client_credentials.is_some();
    let mut chain = Chain::new()
        .with(sasl_gate::SaslGate::new(client_credentials, proxy_logs_in))
        .with(api_versions::ApiVersions::new(offer_sasl));
    if let Some(policy) = policy {
        chain = chain.with(policy);
    }
    chain = chain.with(lfs_offload::LfsOffload::new(lfs));
    if let Some((rehydrator, rehydrate_for)) = rehydration.filter(|(_, r)| !r.is_empty()) {
        chain = chain.with(fetch_rehydration::FetchRehydration::new(
            rehydrator,
            rehydrate_for,
        ));
    }
    chain.with(broker_addresses::BrokerAddresses::new(brokers))
}

/// The rehydration every listener shares (cache, budget, topic ids).
fn rehydrator(lfs: &Lfs, settings: &RehydrateSettings) -> Arc<Rehydrator> {
    Arc::new(Rehydrator::new(
        lfs.store.clone(),
        lfs.envelope_scope(),
        settings.rehydrate_cache_bytes,
        settings.rehydrate_inflight_bytes,
    ))
}

/// Runs the proxy until SIGTERM, then drains.
pub async fn run_proxy(settings: Settings) -> anyhow::Result<()> {
    let Settings {
        listener,
        upstream,
        storage,
        http,
        rr,
        streams,
        gc,
        rehydrate,
        policy,
        process,
    } = &settings;
    super::init_logging(process);
    match crate::limits::raise_open_files_limit() {
        Ok(files) => tracing::info!(
            before = files.before,
            now = files.now,
            hard = files.hard,
            client_connections = files.client_connections(),
            "open-file limit"
        ),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    let prometheus = metrics::install();
    let lfs = Arc::new(parts::lfs(storage)?);
    let security = Arc::new(parts::upstream_security(upstream)?);
    let client_credentials = match (
        &listener.client_sasl_credentials_file,
        listener.client_sasl_mode(),
    ) {
        (Some(path), ClientSaslMode::Terminate) => Some(Arc::new(
            Credentials::load(path).context("KAFSCALE_LFS_PROXY_CLIENT_SASL_CREDENTIALS_FILE")?,
        )),
        _ => None,
    };
    let http_tls = match http.tls()? {
        Some(files) if streams.http2_enabled => {
            Some(parts::server_tls(&files, &[b"h2", b"http/1.1"])?)
        }
        Some(files) => Some(parts::server_tls(&files, &[b"http/1.1"])?),
        None => None,
    };
    let client_tls = match listener.tls()? {
        Some(files) => Some(parts::server_tls(&files, &[])?),
        None => None,
    };
    if storage.s3_ensure_bucket {
        match lfs.store.ensure_bucket().await {
            Ok(true) => tracing::info!(bucket = %lfs.store.bucket(), "created S3 bucket"),
            Ok(false) => {}
            Err(error) => anyhow::bail!("KAFSCALE_LFS_PROXY_S3_ENSURE_BUCKET: {error}"),
        }
    }
    tracing::info!(
        store = if storage.s3_bucket.is_some() { "s3" } else { "local" },
        bucket = %lfs.store.bucket(),
        namespace = %lfs.namespace,
        "LFS offload enabled"
    );

    let trigger = ShutdownTrigger::new();
    let policies = match &policy.policy_file {
        Some(path) => {
            let book = Arc::new(PolicyBook::load(path.clone())?);
            tracing::info!(file = %path.display(), policies = ?book.current().names(), "record policies loaded");
            tokio::spawn(Arc::clone(&book).watch(policy.reload_interval(), trigger.subscribe()));
            book
        }
        None => Arc::new(PolicyBook::none()),
    };
    let record_policy = policy.policy_file.is_some().then(|| {
        record_policy::RecordPolicy::new(
            Arc::clone(&policies),
            lfs.topics.clone(),
            Arc::new(parts::own_producer(upstream, &security)),
        )
    });
    // Aborts and deletes storage refused are retried; what stopped
    // processes recorded is finished.
    tokio::spawn(Arc::clone(lfs.store.cleanup()).run());
    tokio::spawn(Arc::clone(lfs.store.cleanup()).resume(trigger.subscribe()));
    super::gc::spawn_background(gc, &lfs, upstream, &security, trigger.subscribe());
    let brokers = BrokerListeners::new(
        listener.addr.ip(),
        &listener.advertised_host(),
        listener.broker_port_base(),
    );
    let rehydrator = rehydrator(&lfs, rehydrate);
    let by_client = RehydrateFor {
        everyone: false,
        client_id_prefixes: rehydrate.client_id_prefixes(),
        principals: rehydrate.principals(),
    };
    let chain = build_chain(
        client_credentials.clone(),
        security.sasl.is_some(),
        record_policy.clone(),
        Arc::clone(&lfs),
        Some((Arc::clone(&rehydrator), by_client)),
        Arc::clone(&brokers),
    );
    tracing::debug!(stages = ?chain.names(), "interception chain");
    let relay = RelayConfig {
        addr: listener.addr,
        bootstrap: upstream.bootstrap(),
        max_frame_size: upstream.max_frame_size,
        inflight_bytes: listener.inflight_bytes,
        max_in_flight: listener.max_in_flight,
        connect_timeout: upstream.connect_timeout(),
        health_interval: process.health_interval(),
        capture_dir: listener.capture_dir.clone(),
    };
    // The rehydrating listener: the same proxy on a second address, with
    // broker ports of its own, whose chain rehydrates every consumer.
    let rehydrating = match (rehydrate.rehydrate_addr, rehydrate.broker_port_base()) {
        (Some(addr), Some(port_base)) => {
            let brokers = BrokerListeners::new(addr.ip(), &listener.advertised_host(), port_base);
            let chain = build_chain(
                client_credentials,
                security.sasl.is_some(),
                record_policy,
                Arc::clone(&lfs),
                Some((
                    Arc::clone(&rehydrator),
                    RehydrateFor {
                        everyone: true,
                        ..Default::default()
                    },
                )),
                Arc::clone(&brokers),
            );
            let config = RelayConfig {
                addr,
                capture_dir: None,
                ..relay.clone()
            };
            Some(
                Proxy::start(
                    config,
                    chain,
                    brokers,
                    Arc::clone(&security),
                    client_tls.clone(),
                    trigger.subscribe(),
                )
                .context("rehydrating listener")?,
            )
        }
        _ => None,
    };
    let proxy = Proxy::start(
        relay,
        chain,
        brokers,
        Arc::clone(&security),
        client_tls,
        trigger.subscribe(),
    )
    .context("KAFSCALE_LFS_PROXY_CAPTURE_DIR")?;
    if let Some(rehydrating) = &rehydrating {
        let addr = rehydrating.bind_bootstrap().await.with_context(|| {
            format!(
                "cannot listen on KAFSCALE_LFS_PROXY_REHYDRATE_ADDR={}",
                rehydrating.config.addr
            )
        })?;
        tracing::info!(kafka = %addr, "rehydrating listener: every consumer gets original values");
        tokio::spawn(Arc::clone(rehydrating).health_loop());
    }

    let kafka_addr = proxy
        .bind_bootstrap()
        .await
        .with_context(|| format!("cannot listen on KAFSCALE_LFS_PROXY_ADDR={}", listener.addr))?;
    let http_listener = tokio::net::TcpListener::bind(http.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on KAFSCALE_LFS_PROXY_HTTP_ADDR={}",
                http.http_addr
            )
        })?;
    tracing::info!(
        kafka = %kafka_addr,
        http = %http.http_addr,
        http_tls = http.http_tls_enabled,
        advertised_host = %proxy.brokers.addresses().advertised_host(),
        broker_port_base = listener.broker_port_base(),
        upstream = ?upstream.bootstrap(),
        upstream_tls = upstream.backend_tls_enabled,
        client_tls = listener.tls_enabled,
        client_sasl = %listener.client_sasl_mode,
        upstream_sasl = upstream.backend_sasl_mechanism.as_deref().unwrap_or("none"),
        "kafka-lfs-proxy listening"
    );
    tokio::spawn(Arc::clone(&proxy).health_loop());
    let route_file = match &rr.rr_routes_file {
        Some(path) => RouteFile::load(path, Duration::from_secs(rr.rr_timeout_sec))
            .context("KAFSCALE_LFS_PROXY_RR_ROUTES_FILE")?,
        None => RouteFile::default(),
    };
    let one_way = (!route_file.produce.is_empty()).then_some(OneWay {
        routes: route_file.produce,
        max_body: rr.rr_max_body_bytes,
    });
    let sse = http_routes::stream_routes(route_file.streams, streams, upstream, &security, &lfs);
    let cached = http_routes::cached_reads(
        route_file.cached,
        streams,
        rr,
        upstream,
        &security,
        &trigger,
    );
    let gateway = http_routes::gateway(rr, route_file.routes, upstream, &security);
    let sidecar = Sidecar::new(
        http_config(http, storage),
        SidecarParts {
            lfs: Arc::clone(&lfs),
            producer: parts::own_producer(upstream, &security),
            metrics: prometheus,
            jwt: parts::http_jwt(http)?,
            gateway,
            streams: sse,
            one_way,
            cached,
            policies,
            upstream_health: Arc::clone(&proxy.upstream_health),
            shutdown: trigger.subscribe(),
        },
    );
    tokio::spawn(Arc::clone(&sidecar).storage_health_loop(process.health_interval()));
    let app = crate::http::router(sidecar);
    let http_server = tokio::spawn(crate::http::serve::serve(
        http_listener,
        app,
        crate::http::serve::ServeOptions {
            tls: http_tls,
            http2: streams.http2_enabled,
            drain_timeout: process.shutdown_timeout(),
        },
        trigger.subscribe(),
    ));

    super::wait_for_signal().await;
    let timeout = process.shutdown_timeout();
    tracing::info!(?timeout, "shutting down: draining connections");
    let deadline = tokio::time::Instant::now() + timeout;
    trigger.begin();
    let left = match &rehydrating {
        Some(second) => {
            let (a, b) = tokio::join!(proxy.drain(timeout), second.drain(timeout));
            if b > 0 {
                second.cut_sessions(Duration::from_secs(1)).await;
            }
            a + b
        }
        None => proxy.drain(timeout).await,
    };
    if left > 0 {
        tracing::warn!(
            sessions = left,
            "shutdown timeout reached; closing remaining connections"
        );
        proxy.cut_sessions(Duration::from_secs(1)).await;
    } else {
        tracing::info!("all connections drained");
    }
    // The HTTP server has been draining since the same signal, to the same deadline.
    let _ = tokio::time::timeout_at(deadline, http_server).await;
    // Every upload still open is aborted, every orphan deleted, or recorded.
    let flushed = lfs
        .store
        .cleanup()
        .finish(Duration::from_millis(storage.shutdown_cleanup_ms))
        .await;
    if flushed != Default::default() {
        tracing::info!(
            removed = flushed.removed,
            recorded = flushed.recorded,
            lost = flushed.lost,
            "shutdown cleanup done"
        );
    }
    Ok(())
}

fn http_config(http: &HttpSettings, storage: &StorageSettings) -> HttpConfig {
    HttpConfig {
        api_keys: http.http_api_keys(),
        read_idle: Duration::from_secs(http.http_read_timeout_sec),
        presign_enabled: http.presign_enabled,
        download_ttl: Duration::from_secs(http.download_ttl_sec),
        temp_dir: http
            .download_temp_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir),
        topic_max_length: http.topic_max_length,
        session_ttl: Duration::from_secs(http.upload_session_ttl_sec),
        max_sessions: http.upload_sessions_max,
        part_size: storage.chunk_size as u64,
        cors_origins: http.http_cors_origins(),
    }
}
