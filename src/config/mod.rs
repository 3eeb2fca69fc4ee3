//! Settings: every one is a command-line flag and a `KAFSCALE_LFS_PROXY_*`
//! environment variable (the flag wins). `--help` lists them with defaults,
//! in groups; each group is a clap `Args` struct that validates itself and
//! hands out typed values. The environment names are a contract (see the
//! README's table): they never change.

mod gc;
mod http;
mod listener;
mod policy;
mod process;
mod rehydrate;
mod rr;
mod storage;
mod streams;
mod tls_files;
mod upstream;
mod values;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use gc::{grace, GcSettings};
pub use http::HttpSettings;
pub use listener::{ClientSaslMode, ListenerSettings};
pub use policy::PolicySettings;
pub use process::{LogFormat, ProcessSettings};
pub use rehydrate::RehydrateSettings;
pub use rr::RrSettings;
pub use storage::StorageSettings;
pub use streams::StreamSettings;
pub use tls_files::{ServerTlsFiles, TlsNames};
pub use upstream::UpstreamSettings;
use values::parse_positive;
pub use values::{trimmed, Secret, SettingError, DEFAULT_MAX_FRAME_SIZE};

#[derive(Debug, Parser)]
#[command(
    name = "kafka-lfs-proxy",
    version,
    about = "Kafka wire-protocol proxy that moves large record values to object storage",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode frames written with --capture-dir and report every broker
    /// address a client was shown (exit 1 if a forbidden one appears).
    InspectCapture(InspectCaptureArgs),
    /// Add or replace a user in a client credentials file (salted SCRAM
    /// keys for SCRAM-SHA-256 and SCRAM-SHA-512; no password is stored).
    /// The password is read from standard input.
    Credentials(CredentialsArgs),
    /// Request-reply worker: read request topics in a consumer group, call
    /// the HTTP backend for each request, produce the reply. Kafka
    /// connection settings (KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS,
    /// _BACKEND_TLS_*, _BACKEND_SASL_*) as for the proxy; the bootstrap
    /// servers may come from the processor file instead.
    Processor(Box<ProcessorArgs>),
    /// Read envelopes, one JSON per line on standard input (e.g. from
    /// `kcat -C -t TOPIC -f '%s\n'`), and write each verified original to
    /// standard output or, with --out-dir, to a file per envelope. Storage
    /// settings as for the proxy. Exit 1 if any line could not be resolved.
    Resolve(Box<ResolveArgs>),
    /// Garbage-collect LFS objects: per topic, the objects under
    /// {namespace}/{topic}/lfs/ that no envelope still in the topic's log
    /// references and that are older than the grace period. A dry run
    /// unless --delete: prints `KEY SIZE` per object it would delete and a
    /// summary per topic. Kafka and storage settings as for the proxy.
    Gc(Box<GcArgs>),
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Collect only this topic (repeatable) [default: every topic with
    /// objects in the store].
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Delete the unreferenced objects (without it, only list them).
    #[arg(long)]
    pub delete: bool,
    /// Objects modified less than this many seconds before the run are
    /// kept even when unreferenced: it must exceed the longest time between
    /// an object's upload and its record's commit (PRODUCE_TIMEOUT_MS and
    /// the client's retries), so an object of a record in flight is never
    /// deleted.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_GC_GRACE_SEC",
        default_value_t = gc::DEFAULT_GRACE_SEC
    )]
    pub grace_sec: u64,
    #[command(flatten)]
    pub storage: StorageSettings,
    #[command(flatten)]
    pub upstream: UpstreamSettings,
    #[command(flatten)]
    pub process: ProcessSettings,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Write each original to DIR/obj-{id} (the object's name) and print
    /// `path size sha256` per line, instead of the bytes to standard output.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Accept only envelopes of this topic [default: any topic of the namespace]
    #[arg(long)]
    pub topic: Option<String>,
    #[command(flatten)]
    pub storage: StorageSettings,
}

/// The processor's own settings, plus the groups it shares with the proxy
/// (upstream Kafka, process). Its bootstrap servers may come from the
/// processor file instead, so they are not required here.
#[derive(Debug, Args)]
#[command(mut_arg("bootstrap_servers", |a| a.required(false)))]
pub struct ProcessorArgs {
    /// Processor file (YAML or JSON; kafka-http-proxy's processor_config.yaml format).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PROCESSOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Topics in kafka-http-proxy's KAFKA_TOPICS format, instead of --config:
    /// `name:request_topic,response_topic,backend_url[,timeout[,max_retries[,rate_limit]]]`, `;` between topics.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_PROCESSOR_TOPICS",
        conflicts_with = "config"
    )]
    pub topics: Option<String>,
    /// Overrides the file's max_concurrent_requests.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PROCESSOR_MAX_CONCURRENT", value_parser = parse_positive::<usize>)]
    pub max_concurrent: Option<usize>,
    /// Overrides the file's dead_letter_topic.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PROCESSOR_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Address of the processor's /livez, /readyz and /metrics.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_PROCESSOR_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub addr: std::net::SocketAddr,
    /// Longest a request Fetch waits at the broker, in milliseconds (see
    /// KAFSCALE_LFS_PROXY_RR_FETCH_WAIT_MS).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PROCESSOR_FETCH_WAIT_MS", default_value_t = 25, value_parser = parse_positive::<u64>)]
    pub fetch_wait_ms: u64,
    /// Consumer-group session timeout, in milliseconds (heartbeats every third of it).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PROCESSOR_SESSION_TIMEOUT_MS", default_value_t = 10_000, value_parser = parse_positive::<u64>)]
    pub session_timeout_ms: u64,
    #[command(flatten)]
    pub upstream: UpstreamSettings,
    #[command(flatten)]
    pub process: ProcessSettings,
}

#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The credentials file (created when missing, written with mode 0600).
    #[arg(long)]
    pub file: PathBuf,
    /// User name.
    #[arg(long)]
    pub user: String,
    /// PBKDF2 iterations (4096 to 1000000).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(4096..=1_000_000))]
    pub iterations: u32,
    /// Remove the user instead.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct InspectCaptureArgs {
    /// Directory written by --capture-dir.
    pub dir: PathBuf,
    /// `host:port` (or `host:*`, or `*:port`) that must not appear in any
    /// response sent to a client. Repeatable.
    #[arg(long = "forbid")]
    pub forbid: Vec<String>,
}

/// The proxy's settings, by group.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub listener: ListenerSettings,
    #[command(flatten)]
    pub upstream: UpstreamSettings,
    #[command(flatten)]
    pub storage: StorageSettings,
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub rr: RrSettings,
    #[command(flatten)]
    pub streams: StreamSettings,
    #[command(flatten)]
    pub gc: GcSettings,
    #[command(flatten)]
    pub rehydrate: RehydrateSettings,
    #[command(flatten)]
    pub policy: PolicySettings,
    #[command(flatten)]
    pub process: ProcessSettings,
}

impl Settings {
    /// Checks what clap cannot, so a bad setting stops start-up by name.
    pub fn validate(&self) -> Result<(), SettingError> {
        self.upstream.validate_servers()?;
        self.listener.validate()?;
        self.storage.validate()?;
        self.http.validate()?;
        self.upstream.validate_security()?;
        self.listener.validate_security()?;
        self.rehydrate.validate(&self.listener)?;
        if self.http.presign_enabled && self.storage.s3_bucket.is_none() {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_PRESIGN_ENABLED",
                reason: "presigned URLs need S3 (KAFSCALE_LFS_PROXY_S3_BUCKET); a local directory cannot sign".into(),
            });
        }
        self.process.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut all = vec!["kafka-lfs-proxy"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        cli.settings.validate().map_err(|e| e.to_string())?;
        Ok(cli.settings)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = parse(&["--bootstrap-servers", "b1:9092, b2:9093"]).unwrap();
        assert_eq!(s.listener.addr.to_string(), "0.0.0.0:9092");
        assert_eq!(s.listener.broker_port_base(), 9093);
        assert_eq!(s.http.http_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.upstream.bootstrap(), vec!["b1:9092", "b2:9093"]);
        assert_eq!(s.upstream.max_frame_size, DEFAULT_MAX_FRAME_SIZE);
        assert!(!s.listener.advertised_host().is_empty());
        let s = parse(&["--bootstrap-servers", "b:1", "--addr", "127.0.0.2:7000"]).unwrap();
        assert_eq!(s.listener.advertised_host(), "127.0.0.2");
        assert_eq!(s.listener.broker_port_base(), 7001);
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let s = parse(&[
            "--bootstrap-servers",
            "b:1",
            "--backend-sasl-mechanism",
            "PLAIN",
            "--backend-sasl-username",
            "u",
            "--backend-sasl-password",
            "hunter2-pw",
            "--s3-secret-key",
            "s3-secret-value",
            "--http-api-key",
            "api-key-value",
        ])
        .unwrap();
        let shown = format!("{s:?}");
        for secret in ["hunter2-pw", "s3-secret-value", "api-key-value"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(s.http.http_api_keys(), vec!["api-key-value"]);
        assert_eq!(
            crate::app::upstream_security(&s.upstream)
                .unwrap()
                .sasl
                .unwrap()
                .password,
            "hunter2-pw"
        );
    }

    #[test]
    fn bad_settings_name_themselves() {
        let e = parse(&["--bootstrap-servers", "nohostport"]).unwrap_err();
        assert!(e.contains("KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS"), "{e}");
        let e = parse(&["--bootstrap-servers", "b:1", "--max-frame-size", "0"]).unwrap_err();
        assert!(e.contains("--max-frame-size"), "{e}");
        let e = parse(&["--bootstrap-servers", "b:1", "--addr", "nope"]).unwrap_err();
        assert!(e.contains("--addr"), "{e}");
        let e = parse(&["--bootstrap-servers", "b:1", "--broker-port-base", "0"]).unwrap_err();
        assert!(e.contains("KAFSCALE_LFS_PROXY_BROKER_PORT_BASE"), "{e}");
        let e = parse(&[]).unwrap_err();
        assert!(e.contains("--bootstrap-servers"), "{e}");
        let e = parse(&["--bootstrap-servers", "b:1", "--s3-bucket", "kafscale-lfs"]).unwrap_err();
        assert!(e.contains("KAFSCALE_LFS_PROXY_S3_BUCKET"), "{e}");
        let e = parse(&["--bootstrap-servers", "b:1", "--checksum-algo", "sha1"]).unwrap_err();
        assert!(e.contains("KAFSCALE_LFS_PROXY_CHECKSUM_ALGO"), "{e}");
    }

    #[test]
    fn rehydrating_listener_ports_must_not_meet_the_first() {
        let base = ["--bootstrap-servers", "b:1", "--addr", "127.0.0.1:9092"];
        let with = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            parse(&args)
        };
        let s = with(&["--rehydrate-addr", "127.0.0.1:19092"]).unwrap();
        assert_eq!(s.rehydrate.broker_port_base(), Some(19093));
        assert!(s.rehydrate.enabled());
        for clash in [
            &["--rehydrate-addr", "127.0.0.1:9092"][..],
            &["--rehydrate-addr", "127.0.0.1:9200"],
            &[
                "--rehydrate-addr",
                "127.0.0.1:19092",
                "--rehydrate-broker-port-base",
                "9100",
            ],
            &["--rehydrate-addr", "127.0.0.1:8900"],
        ] {
            let e = with(clash).unwrap_err();
            assert!(
                e.contains("KAFSCALE_LFS_PROXY_REHYDRATE_ADDR"),
                "{clash:?}: {e}"
            );
        }
        let e = with(&["--rehydrate-principals", "alice"]).unwrap_err();
        assert!(e.contains("KAFSCALE_LFS_PROXY_REHYDRATE_PRINCIPALS"), "{e}");
        let s = with(&["--rehydrate-client-ids", "legacy-, vendor"]).unwrap();
        assert_eq!(s.rehydrate.client_id_prefixes(), ["legacy-", "vendor"]);
        assert!(!with(&[]).unwrap().rehydrate.enabled());
    }

    #[test]
    fn the_processor_needs_no_bootstrap_setting_but_reads_the_kafka_group() {
        let cli = Cli::try_parse_from([
            "kafka-lfs-proxy",
            "processor",
            "--topics",
            "t:req,resp,http://127.0.0.1:1/",
        ])
        .unwrap();
        let Some(Command::Processor(args)) = cli.command else {
            panic!("processor");
        };
        assert!(args.upstream.bootstrap().is_empty());
        let cli = Cli::try_parse_from([
            "kafka-lfs-proxy",
            "processor",
            "--bootstrap-servers",
            "b:1",
            "--max-frame-size",
            "2048",
        ])
        .unwrap();
        let Some(Command::Processor(args)) = cli.command else {
            panic!("processor");
        };
        assert_eq!(args.upstream.bootstrap(), vec!["b:1"]);
        assert_eq!(args.upstream.max_frame_size, 2048);
    }
}
