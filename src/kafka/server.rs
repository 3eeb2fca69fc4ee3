//! The proxy's listeners and shared state.
//!
//! One bootstrap listener on `KAFSCALE_LFS_PROXY_ADDR` relays to any
//! bootstrap server. For every upstream node the proxy learns of, a broker
//! listener on `BROKER_PORT_BASE + node_id` relays to that node. Broker
//! listeners are bound when a node is first named (by a client's Metadata,
//! FindCoordinator, ... response, or the proxy's own health check), always
//! before the response that names them is sent on.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::MetadataRequest;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Mutex};

use super::addresses::{AddressError, BrokerAddressMap, UpstreamBroker};
use super::outstanding::Outstanding;
use super::session::{self, Target};
use super::upstream::{BrokerStream, Connected, UpstreamError, UpstreamSecurity};
use super::{client, frame};
use crate::capture::Capture;
use crate::config::Settings;
use crate::health::Readiness;
use crate::lfs::rewrite::Lfs;
use crate::metrics as m;

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("cannot bind broker listener for node {node_id} on {addr}: {source}")]
    Bind {
        node_id: i32,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// State shared by every listener and session.
pub struct Proxy {
    pub settings: Settings,
    pub addresses: BrokerAddressMap,
    pub capture: Option<Capture>,
    /// The LFS offload applied to Produce requests.
    pub lfs: Option<Arc<Lfs>>,
    /// Request bytes held across all connections.
    pub budget: frame::ByteBudget,
    /// TLS and SASL for every upstream connection.
    pub upstream: Arc<UpstreamSecurity>,
    /// TLS and SASL towards clients.
    pub clients: ClientSecurity,
    broker_listeners: Mutex<HashSet<i32>>,
    /// Bound listeners go to one task that spawns their accept loops; a
    /// session binding a listener cannot spawn the loop that spawns sessions.
    new_listeners: mpsc::UnboundedSender<(TcpListener, Target)>,
    shutdown: watch::Sender<bool>,
    connection_ids: AtomicU64,
    sessions: Outstanding,
    upstream_health: Readiness,
}

/// How client connections are secured.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// TLS on the Kafka listeners.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Users and keys when the proxy terminates client SASL; `None` relays
    /// clients' SASL requests (pass-through).
    pub credentials: Option<Arc<crate::kafka::credentials::Credentials>>,
}

/// Resolves when shutdown has begun.
#[derive(Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    /// Cancel-safe: may be polled in `select!` repeatedly.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

impl Proxy {
    /// Creates the proxy and starts the task that runs its listeners.
    pub fn new(
        settings: Settings,
        lfs: Option<Lfs>,
        upstream: Arc<UpstreamSecurity>,
        clients: ClientSecurity,
    ) -> std::io::Result<Arc<Self>> {
        let capture = settings
            .capture_dir
            .as_deref()
            .map(Capture::new)
            .transpose()?;
        let addresses =
            BrokerAddressMap::new(&settings.advertised_host(), settings.broker_port_base());
        let (new_listeners, mut listeners_rx) = mpsc::unbounded_channel();
        let budget = frame::ByteBudget::new(settings.inflight_bytes);
        let proxy = Arc::new(Proxy {
            budget,
            upstream,
            clients,
            settings,
            addresses,
            capture,
            lfs: lfs.map(Arc::new),
            broker_listeners: Mutex::new(HashSet::new()),
            shutdown: watch::channel(false).0,
            connection_ids: AtomicU64::new(0),
            sessions: Outstanding::default(),
            upstream_health: Readiness::new("upstream", m::UPSTREAM_UP),
            new_listeners,
        });
        let weak = Arc::downgrade(&proxy);
        tokio::spawn(async move {
            while let Some((listener, target)) = listeners_rx.recv().await {
                let Some(proxy) = weak.upgrade() else { return };
                tokio::spawn(proxy.accept_loop(listener, target));
            }
        });
        Ok(proxy)
    }

    pub fn next_connection_id(&self) -> u64 {
        self.connection_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn shutdown_signal(&self) -> ShutdownSignal {
        ShutdownSignal(self.shutdown.subscribe())
    }

    /// Stops accepting and asks every session to stop reading requests.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until every session has finished, or `timeout` passes.
    /// Returns the number of sessions still open.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let _ = tokio::time::timeout(timeout, self.sessions.idle()).await;
        self.sessions.count()
    }

    pub fn is_ready(&self) -> bool {
        self.upstream_health.is_ready()
    }

    /// Binds the bootstrap listener. Broker listeners follow on demand.
    pub async fn bind_bootstrap(self: &Arc<Self>) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(self.settings.addr).await?;
        let local = listener.local_addr()?;
        let _ = self.new_listeners.send((listener, Target::Bootstrap));
        Ok(local)
    }

    /// Makes sure node `node_id` is being served on its advertised port.
    pub async fn ensure_broker_listener(
        self: &Arc<Self>,
        node_id: i32,
    ) -> Result<(), ListenerError> {
        let mut bound = self.broker_listeners.lock().await;
        if bound.contains(&node_id) {
            return Ok(());
        }
        let port = self.addresses.advertised_port(node_id)?;
        let addr = SocketAddr::new(self.settings.addr.ip(), port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenerError::Bind {
                node_id,
                addr,
                source,
            })?;
        tracing::info!(node_id, %addr, "serving upstream broker");
        bound.insert(node_id);
        let _ = self.new_listeners.send((listener, Target::Node(node_id)));
        Ok(())
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, target: Target) {
        let mut shutdown = self.shutdown_signal();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((socket, peer)) => {
                    let listener_label = match target {
                        Target::Bootstrap => "bootstrap",
                        Target::Node(_) => "broker",
                    };
                    metrics::counter!(m::CONNECTIONS_TOTAL, "listener" => listener_label)
                        .increment(1);
                    let guard = SessionGuard::enter(Arc::clone(&self));
                    tokio::spawn(async move {
                        session::run(Arc::clone(&guard.0), socket, peer, target).await;
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
    pub async fn dial(self: &Arc<Self>, target: Target) -> Result<Connected, UpstreamError> {
        let timeout = self.settings.upstream_connect_timeout();
        match target {
            Target::Bootstrap => Ok(self
                .upstream
                .dial_bootstrap_session(&self.settings.bootstrap(), timeout)
                .await?
                .0),
            Target::Node(node_id) => {
                let broker = match self.addresses.upstream(node_id) {
                    Some(b) => b,
                    None => {
                        // A client with cached metadata reached a proxy that
                        // has not seen this node yet (e.g. after a restart).
                        let _ = self.refresh_upstream_brokers().await;
                        self.addresses
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
        let timeout = self.settings.upstream_connect_timeout();
        let work = async {
            let (mut stream, server) = self
                .upstream
                .dial_bootstrap(&self.settings.bootstrap(), timeout)
                .await
                .map_err(|e| e.to_string())?;
            let brokers = query_brokers(&mut stream, self.settings.max_frame_size)
                .await
                .map_err(|e| format!("{server}: {e}"))?;
            Ok::<_, String>(brokers)
        };
        let brokers = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("no Metadata answer within {timeout:?}"))??;
        self.addresses.learn(&brokers);
        for b in &brokers {
            if let Err(error) = self.ensure_broker_listener(b.node_id).await {
                tracing::error!(%error, "cannot serve upstream broker");
            }
        }
        Ok(brokers)
    }

    /// Keeps `/readyz` current and broker listeners bound.
    pub async fn health_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown_signal();
        loop {
            let outcome = self.refresh_upstream_brokers().await.map(drop);
            self.upstream_health.record(outcome);
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.settings.health_interval()) => {}
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
    let metadata = client::round_trip(stream, 1, 1, &request, max_frame_size)
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
