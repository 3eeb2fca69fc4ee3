//! Broker listeners: upstream node `N` is served on `BROKER_PORT_BASE + N`.
//!
//! A listener is bound when a node is first named (by a client's Metadata,
//! FindCoordinator, ... response, or the proxy's own health check), always
//! before the response that names it is sent on: a client must never be told
//! an address nobody listens on. Bound listeners are queued to the proxy's
//! accept task, because a session that binds one cannot itself spawn the
//! loop that spawns sessions.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};

use super::addresses::{AddressError, BrokerAddressMap, UpstreamBroker};

/// Which upstream broker a client connection is relayed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerTarget {
    /// The bootstrap listener: any reachable bootstrap server.
    Bootstrap,
    /// A broker listener: the upstream node with this id.
    Node(i32),
}

impl ListenerTarget {
    /// Label of `kafka_lfs_proxy_connections_total`.
    pub fn label(self) -> &'static str {
        match self {
            ListenerTarget::Bootstrap => "bootstrap",
            ListenerTarget::Node(_) => "broker",
        }
    }
}

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

/// Listeners waiting for their accept loop.
pub type ListenerQueue = mpsc::UnboundedReceiver<(TcpListener, ListenerTarget)>;

/// The broker address map and the listeners bound for it.
pub struct BrokerListeners {
    addresses: BrokerAddressMap,
    bind_ip: IpAddr,
    bound: Mutex<HashSet<i32>>,
    queue: mpsc::UnboundedSender<(TcpListener, ListenerTarget)>,
    /// Taken once by the proxy's accept task.
    pending: std::sync::Mutex<Option<ListenerQueue>>,
}

impl BrokerListeners {
    /// Broker listeners bind on `bind_ip`; clients are told
    /// `advertised_host : port_base + N`.
    pub fn new(bind_ip: IpAddr, advertised_host: &str, port_base: u16) -> Arc<Self> {
        let (queue, pending) = mpsc::unbounded_channel();
        Arc::new(BrokerListeners {
            addresses: BrokerAddressMap::new(advertised_host, port_base),
            bind_ip,
            bound: Mutex::new(HashSet::new()),
            queue,
            pending: std::sync::Mutex::new(Some(pending)),
        })
    }

    pub fn addresses(&self) -> &BrokerAddressMap {
        &self.addresses
    }

    /// The queue of bound listeners; `None` after the first call.
    pub fn take_queue(&self) -> Option<ListenerQueue> {
        self.pending.lock().ok()?.take()
    }

    /// Hands a listener to the accept task.
    pub fn enqueue(&self, listener: TcpListener, target: ListenerTarget) {
        let _ = self.queue.send((listener, target));
    }

    /// Makes sure node `node_id` is being served on its advertised port.
    pub async fn ensure(&self, node_id: i32) -> Result<(), ListenerError> {
        let mut bound = self.bound.lock().await;
        if bound.contains(&node_id) {
            return Ok(());
        }
        let port = self.addresses.advertised_port(node_id)?;
        let addr = SocketAddr::new(self.bind_ip, port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenerError::Bind {
                node_id,
                addr,
                source,
            })?;
        tracing::info!(node_id, %addr, "serving upstream broker");
        bound.insert(node_id);
        self.enqueue(listener, ListenerTarget::Node(node_id));
        Ok(())
    }

    /// Records where these brokers live and serves each, stopping at the
    /// first that cannot be served.
    pub async fn serve(&self, brokers: &[UpstreamBroker]) -> Result<(), ListenerError> {
        self.addresses.learn(brokers);
        for broker in brokers {
            self.ensure(broker.node_id).await?;
        }
        Ok(())
    }
}
