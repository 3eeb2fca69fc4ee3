//! The proxy: its listeners, the state every session shares, and the
//! upstream health check.
//!
//! One bootstrap listener on `KAFSCALE_LFS_PROXY_ADDR` relays to any
//! bootstrap server; [`BrokerListeners`] serve each upstream node on its own
//! port. Every accepted connection becomes a session running the [`Chain`]
//! built at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::MetadataRequest;
use tokio::net::TcpListener;

use super::addresses::UpstreamBroker;
use super::chain::Chain;
use super::listeners::{BrokerListeners, ListenerTarget};
use super::outstanding::Outstanding;
use super::session;
use super::upstream::{BrokerStream, Connected, UpstreamError, UpstreamSecurity};
use crate::capture::Capture;
use crate::health::Readiness;
use crate::kafka::wire::{call, frame};
use crate::metrics as m;
use crate::shutdown::{Shutdown, ShutdownTrigger};

/// What the relay needs from the settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The bootstrap listener's address; broker listeners bind on its IP.
    pub addr: SocketAddr,
    /// Upstream bootstrap servers, `host:port`, in the configured order.
    pub bootstrap: Vec<String>,
    /// Largest frame accepted from a client or broker.
    pub max_frame_size: usize,
    /// Request bytes held at once across all connections.
    pub inflight_bytes: usize,
    /// Requests in flight per connection before reading stops.
    pub max_in_flight: usize,
    pub connect_timeout: Duration,
    /// How often the upstream health check runs.
    pub health_interval: Duration,
    /// Where to write every frame, for debugging and fixtures.
    pub capture_dir: Option<PathBuf>,
}

/// State shared by every listener and session.
pub struct Proxy {
    pub config: RelayConfig,
    pub brokers: Arc<BrokerListeners>,
    pub chain: Chain,
    pub capture: Option<Capture>,
    /// Request bytes held across all connections.
    pub budget: frame::ByteBudget,
    /// TLS and SASL for every upstream connection.
    pub upstream: Arc<UpstreamSecurity>,
    /// TLS on the Kafka listeners.
    pub client_tls: Option<tokio_rustls::TlsAcceptor>,
    /// Whether upstream answered the last health check (`/readyz`).
    pub upstream_health: Arc<Readiness>,
    shutdown: Shutdown,
    /// Cuts the sessions still open when the drain deadline has passed.
    cut: ShutdownTrigger,
    connection_ids: AtomicU64,
    sessions: Outstanding,
}

impl Proxy {
    /// Creates the proxy and starts the task that runs its listeners' accept
    /// loops.
    pub fn start(
        config: RelayConfig,
        chain: Chain,
        brokers: Arc<BrokerListeners>,
        upstream: Arc<UpstreamSecurity>,
        client_tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: Shutdown,
    ) -> std::io::Result<Arc<Self>> {
        let capture = config
            .capture_dir
            .as_deref()
            .map(Capture::new)
            .transpose()?;
        let mut queue = brokers.take_queue().ok_or_else(|| {
            std::io::Error::other("these broker listeners already serve another proxy")
        })?;
        let proxy = Arc::new(Proxy {
            budget: frame::ByteBudget::new(config.inflight_bytes),
            config,
            brokers,
            chain,
            capture,
            upstream,
            client_tls,
            upstream_health: Arc::new(Readiness::new("upstream", m::UPSTREAM_UP)),
            shutdown,
            cut: ShutdownTrigger::new(),
            connection_ids: AtomicU64::new(0),
            sessions: Outstanding::default(),
        });
        let weak = Arc::downgrade(&proxy);
        tokio::spawn(async move {
            while let Some((listener, target)) = queue.recv().await {
                let Some(proxy) = weak.upgrade() else { return };
                tokio::spawn(proxy.accept_loop(listener, target));
            }
        });
        Ok(proxy)
    }

    pub fn next_connection_id(&self) -> u64 {
        self.connection_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Resolves when shutdown begins: sessions stop reading requests.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Waits until every session has finished, or `timeout` passes.
    /// Returns the number of sessions still open.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let _ = tokio::time::timeout(timeout, self.sessions.idle()).await;
        self.sessions.count()
    }

    /// After the drain deadline: drops every session still open, with
    /// what it holds (its uploads are then aborted by the store's cleanup,
    /// its stored objects deleted), and waits up to `timeout` for them.
    pub async fn cut_sessions(&self, timeout: Duration) -> usize {
        self.cut.begin();
        let _ = tokio::time::timeout(timeout, self.sessions.idle()).await;
        self.sessions.count()
    }

    pub fn is_ready(&self) -> bool {
        self.upstream_health.is_ready()
    }

    /// Binds the bootstrap listener. Broker listeners follow on demand.
    pub async fn bind_bootstrap(self: &Arc<Self>) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(self.config.addr).await?;
        let local = listener.local_addr()?;
        self.brokers.enqueue(listener, ListenerTarget::Bootstrap);
        Ok(local)
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, target: ListenerTarget) {
        let mut shutdown = self.shutdown();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((socket, peer)) => {
                    metrics::counter!(m::CONNECTIONS_TOTAL, "listener" => target.label())
                        .increment(1);
                    let guard = SessionGuard::enter(Arc::clone(&self));
                    let mut cut = self.cut.subscribe();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = session::run(Arc::clone(&guard.0), socket, peer, target) => {}
                            _ = cut.wait() => {}
                        }
                        drop(guard);
                    });
                }
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, ?target, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Connects to the upstream broker a listener serves.
    pub async fn dial(
        self: &Arc<Self>,
        target: ListenerTarget,
    ) -> Result<Connected, UpstreamError> {
        let timeout = self.config.connect_timeout;
        match target {
            ListenerTarget::Bootstrap => Ok(self
                .upstream
                .dial_bootstrap_session(&self.config.bootstrap, timeout)
                .await?
                .0),
            ListenerTarget::Node(node_id) => {
                let broker = match self.brokers.addresses().upstream(node_id) {
                    Some(b) => b,
                    None => {
                        // A client with cached metadata reached a proxy that
                        // has not seen this node yet (e.g. after a restart).
                        let _ = self.refresh_upstream_brokers().await;
                        self.brokers
                            .addresses()
                            .upstream(node_id)
                            .ok_or(UpstreamError::UnknownNode(node_id))?
                    }
                };
                self.upstream.dial_session(&broker.address(), timeout).await
            }
        }
    }

    /// Asks a bootstrap server for its brokers (Metadata v1, no topics),
    /// records them and serves each. Also the readiness check.
    pub async fn refresh_upstream_brokers(self: &Arc<Self>) -> Result<Vec<UpstreamBroker>, String> {
        let timeout = self.config.connect_timeout;
        let work = async {
            let (mut stream, server) = self
                .upstream
                .dial_bootstrap(&self.config.bootstrap, timeout)
                .await
                .map_err(|e| e.to_string())?;
            let brokers = query_brokers(&mut stream, self.config.max_frame_size)
                .await
                .map_err(|e| format!("{server}: {e}"))?;
            Ok::<_, String>(brokers)
        };
        let brokers = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("no Metadata answer within {timeout:?}"))??;
        self.brokers.addresses().learn(&brokers);
        for b in &brokers {
            if let Err(error) = self.brokers.ensure(b.node_id).await {
                tracing::error!(%error, "cannot serve upstream broker");
            }
        }
        Ok(brokers)
    }

    /// Keeps `/readyz` current and broker listeners bound.
    pub async fn health_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown();
        loop {
            let outcome = self.refresh_upstream_brokers().await.map(drop);
            self.upstream_health.record(outcome);
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.config.health_interval) => {}
            }
        }
    }
}

/// Counts a session as active for draining and for the connections gauge.
struct SessionGuard(Arc<Proxy>);

impl SessionGuard {
    fn enter(proxy: Arc<Proxy>) -> Self {
        proxy.sessions.add();
        metrics::gauge!(m::CONNECTIONS_OPEN).increment(1.0);
        SessionGuard(proxy)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        metrics::gauge!(m::CONNECTIONS_OPEN).decrement(1.0);
        self.0.sessions.done();
    }
}

/// Sends Metadata v1 with an empty topic list and returns the brokers.
async fn query_brokers(
    stream: &mut BrokerStream,
    max_frame_size: usize,
) -> Result<Vec<UpstreamBroker>, String> {
    let request = MetadataRequest::default().with_topics(Some(vec![]));
    let metadata = call::round_trip(stream, 1, 1, &request, max_frame_size)
        .await
        .map_err(|e| e.to_string())?;
    Ok(metadata
        .brokers
        .iter()
        .map(|b| UpstreamBroker {
            node_id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
        })
        .collect())
}
