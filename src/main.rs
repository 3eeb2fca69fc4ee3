//! The binary's edge: parse settings, start listeners, wait for shutdown.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kafka_lfs_proxy::config::{Cli, Command, Settings};
use kafka_lfs_proxy::kafka::server::Proxy;
use kafka_lfs_proxy::{http, inspect, metrics};

mod processor;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::InspectCapture(args)) => inspect_capture(&args.dir, &args.forbid),
        Some(Command::Credentials(args)) => credentials(&args),
        Some(Command::Processor(args)) => processor::main(args),
        None => {
            if let Err(error) = cli.settings.validate() {
                eprintln!("kafka-lfs-proxy: {error}");
                return ExitCode::from(2);
            }
            block_on("kafka-lfs-proxy", run(cli.settings))
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    init_logging(&settings.log_level);
    let prometheus = metrics::install();
    let lfs = settings.lfs()?;
    let upstream = std::sync::Arc::new(settings.upstream_security()?);
    let clients = kafka_lfs_proxy::kafka::server::ClientSecurity {
        tls: settings.client_tls()?,
        credentials: match (
            &settings.client_sasl_credentials_file,
            settings.client_sasl_terminates(),
        ) {
            (Some(path), true) => Some(std::sync::Arc::new(
                kafka_lfs_proxy::kafka::credentials::Credentials::load(path)
                    .context("KAFSCALE_LFS_PROXY_CLIENT_SASL_CREDENTIALS_FILE")?,
            )),
            _ => None,
        },
    };
    let tls = if settings.http_tls_enabled {
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
    let proxy = Proxy::new(settings.clone(), Some(lfs), upstream, clients)
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
        advertised_host = %proxy.addresses.advertised_host(),
        broker_port_base = settings.broker_port_base(),
        upstream = ?settings.bootstrap(),
        upstream_tls = settings.backend_tls_enabled,
        client_tls = settings.tls_enabled,
        client_sasl = %settings.client_sasl_mode,
        upstream_sasl = settings.backend_sasl_mechanism.as_deref().unwrap_or("none"),
        "kafka-lfs-proxy listening"
    );
    tokio::spawn(std::sync::Arc::clone(&proxy).health_loop());
    let lfs = proxy.lfs.clone().context("LFS is always configured")?;
    let gateway = kafka_lfs_proxy::rr::gateway_from_settings(&settings, &proxy.upstream)
        .context("KAFSCALE_LFS_PROXY_RR_ROUTES_FILE")?;
    let sidecar = http::Sidecar::new(
        &settings,
        std::sync::Arc::clone(&proxy),
        lfs,
        prometheus,
        gateway,
        settings.http_jwt()?,
    );
    tokio::spawn(std::sync::Arc::clone(&sidecar).storage_health_loop(settings.health_interval()));
    let app = http::router(sidecar);
    let http_server = tokio::spawn(http::serve::serve(
        http_listener,
        app,
        tls,
        proxy.shutdown_signal(),
        settings.shutdown_timeout(),
    ));

    wait_for_signal().await;
    tracing::info!(timeout = ?settings.shutdown_timeout(), "shutting down: draining connections");
    let deadline = tokio::time::Instant::now() + settings.shutdown_timeout();
    proxy.begin_shutdown();
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

/// Runs `work` on a new multi-threaded runtime; errors are printed under
/// `name` and exit 1.
fn block_on(name: &str, work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("{name}: cannot start runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by `level` (EnvFilter syntax).
fn init_logging(level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// SIGTERM or Ctrl-C.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn inspect_capture(dir: &std::path::Path, forbid: &[String]) -> ExitCode {
    let report = match inspect::inspect(dir, forbid) {
        Ok(r) => r,
        Err(error) => {
            eprintln!("cannot read {}: {error}", dir.display());
            return ExitCode::from(2);
        }
    };
    println!(
        "responses decoded: {}",
        report.responses - report.errors.len()
    );
    println!("broker addresses shown to clients: {:?}", report.addresses);
    for e in &report.errors {
        println!("undecodable: {e}");
    }
    for l in &report.leaks {
        println!("LEAK: {l}");
    }
    if report.leaks.is_empty() && report.errors.is_empty() && report.responses > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `credentials`: adds (or removes) a user in a client credentials file.
fn credentials(args: &kafka_lfs_proxy::config::CredentialsArgs) -> ExitCode {
    use kafka_lfs_proxy::kafka::credentials::CredentialsFile;
    use kafka_lfs_proxy::kafka::scram::ScramHash;
    let mut file = match CredentialsFile::read_or_new(&args.file) {
        Ok(f) => f,
        Err(error) => {
            eprintln!("kafka-lfs-proxy: {error}");
            return ExitCode::from(2);
        }
    };
    if args.remove {
        file.users.remove(&args.user);
    } else {
        let mut password = String::new();
        if std::io::stdin().read_line(&mut password).is_err() {
            eprintln!("kafka-lfs-proxy: cannot read the password from standard input");
            return ExitCode::from(2);
        }
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            eprintln!("kafka-lfs-proxy: the password (standard input) is empty");
            return ExitCode::from(2);
        }
        for hash in [ScramHash::Sha256, ScramHash::Sha512] {
            if let Err(error) = file.set(&args.user, hash, password, args.iterations) {
                eprintln!("kafka-lfs-proxy: {error}");
                return ExitCode::from(2);
            }
        }
    }
    match file.write(&args.file) {
        Ok(()) => {
            println!(
                "{} {} in {}",
                if args.remove { "removed" } else { "wrote" },
                args.user,
                args.file.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kafka-lfs-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}
