//! The cluster as the proxy's own clients see it: broker addresses learnt
//! from Metadata (and FindCoordinator), and cached connections per broker
//! (one by default; a producer asks for more to keep several requests in
//! flight), each carrying one request at a time.
//!
//! Each user (the HTTP producer, a reply consumer, a group member) owns
//! its own `Cluster`, so a consumer's long-polling Fetch never holds up a
//! producer's Produce on the same broker.
//!
//! - Metadata goes to a bootstrap server, dialled for the call.
//! - Calls to a node reuse its connection; any failure drops it and the
//!   next call dials again. A connection whose SASL session is about to
//!   end (KIP-368) is replaced by a fresh login instead of re-authenticated.
//! - Connections go through `UpstreamSecurity`: the same TLS and SASL
//!   settings as relayed client traffic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::sync::Mutex;

use crate::kafka::relay::upstream::{BrokerStream, UpstreamError, UpstreamSecurity};
use crate::kafka::wire::call::{self, ClientError};

const METADATA_VERSION: i16 = 4;

/// Why a call to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No broker answered in time, or the connection broke; worth retrying.
    #[error("Kafka unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the proxy's own login.
    #[error("Kafka login refused: {0}")]
    Login(String),
}

impl From<UpstreamError> for CallError {
    fn from(error: UpstreamError) -> Self {
        if error.is_auth() {
            CallError::Login(error.to_string())
        } else {
            CallError::Unavailable(error.to_string())
        }
    }
}

/// A cached broker connection.
struct Connection {
    stream: BrokerStream,
    replace_at: Option<Instant>,
}

/// Broker addresses and connections; share behind an `Arc`.
pub struct Cluster {
    upstream: Arc<UpstreamSecurity>,
    bootstrap: Vec<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_frame_size: usize,
    brokers: Mutex<HashMap<i32, String>>,
    connections: Mutex<HashMap<i32, Vec<Slot>>>,
    connections_per_node: usize,
    correlation: AtomicI32,
}

/// A broker connection, dialled on first use and after a failure.
type Slot = Arc<Mutex<Option<Connection>>>;

impl Cluster {
    pub fn new(
        upstream: Arc<UpstreamSecurity>,
        bootstrap: Vec<String>,
        connect_timeout: Duration,
        request_timeout: Duration,
        max_frame_size: usize,
    ) -> Self {
        Cluster {
            upstream,
            bootstrap,
            connect_timeout,
            request_timeout,
            max_frame_size,
            brokers: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            connections_per_node: 1,
            correlation: AtomicI32::new(1),
        }
    }

    /// Keeps up to `n` connections per broker, so up to `n` calls to one
    /// broker run at once (a call takes a free connection, else waits for
    /// one).
    pub fn with_connections_per_node(mut self, n: usize) -> Self {
        self.connections_per_node = n.max(1);
        self
    }

    /// How long a broker may take over one request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Metadata for `topics`, from a bootstrap server; the brokers it lists
    /// become callable by node id. `auto_create` lets the broker create
    /// missing topics, as a normal producer asks.
    pub async fn metadata(
        &self,
        topics: &[&str],
        auto_create: bool,
    ) -> Result<MetadataResponse, CallError> {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(auto_create)
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string((*t).to_owned()))))
                    })
                    .collect(),
            ));
        let (mut stream, server) = self
            .upstream
            .dial_bootstrap(&self.bootstrap, self.connect_timeout)
            .await?;
        let metadata = tokio::time::timeout(
            self.connect_timeout,
            call::round_trip(
                &mut stream,
                self.next_correlation(),
                METADATA_VERSION,
                &request,
                self.max_frame_size,
            ),
        )
        .await
        .map_err(|_| CallError::Unavailable(format!("{server}: no Metadata answer")))?
        .map_err(|e| CallError::Unavailable(format!("{server}: {e}")))?;
        let mut brokers = self.brokers.lock().await;
        for b in &metadata.brokers {
            brokers.insert(b.node_id.0, format!("{}:{}", b.host, b.port));
        }
        Ok(metadata)
    }

    /// Makes `node` callable at `address` (a coordinator found by
    /// FindCoordinator need not be in the last Metadata answer).
    pub async fn learn_broker(&self, node: i32, address: String) {
        self.brokers.lock().await.insert(node, address);
    }

    /// Sends one request to `node` on its cached connection and waits for
    /// the answer up to the request timeout plus `extra_wait` (a Fetch's
    /// long poll, a JoinGroup's rebalance).
    pub async fn call_node<R: Request>(
        &self,
        node: i32,
        version: i16,
        request: &R,
        extra_wait: Duration,
    ) -> Result<R::Response, CallError> {
        let address = self
            .brokers
            .lock()
            .await
            .get(&node)
            .cloned()
            .ok_or_else(|| CallError::Unavailable(format!("node {node} is not known")))?;
        let slots = self
            .connections
            .lock()
            .await
            .entry(node)
            .or_insert_with(|| {
                (0..self.connections_per_node)
                    .map(|_| Arc::new(Mutex::new(None)))
                    .collect()
            })
            .clone();
        let free = slots
            .iter()
            .find_map(|s| Arc::clone(s).try_lock_owned().ok());
        let mut connection = match free {
            Some(guard) => guard,
            None => {
                let pick = self.correlation.load(Ordering::Relaxed) as usize % slots.len();
                Arc::clone(&slots[pick]).lock_owned().await
            }
        };
        let expired = connection
            .as_ref()
            .and_then(|c| c.replace_at)
            .is_some_and(|at| at <= Instant::now());
        if connection.is_none() || expired {
            let connected = self
                .upstream
                .dial_session(&address, self.connect_timeout)
                .await?;
            *connection = Some(Connection {
                stream: connected.stream,
                replace_at: connected
                    .session_lifetime
                    .map(|l| Instant::now() + crate::kafka::auth::sasl::due_after(l)),
            });
        }
        let Some(open) = connection.as_mut() else {
            return Err(CallError::Unavailable(format!("{address}: not connected")));
        };
        let correlation = self.next_correlation();
        let answer = tokio::time::timeout(
            self.request_timeout + extra_wait + Duration::from_secs(5),
            call::round_trip(
                &mut open.stream,
                correlation,
                version,
                request,
                self.max_frame_size,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer",
            )))
        });
        answer.map_err(|e| {
            *connection = None;
            CallError::Unavailable(format!("{address}: {e}"))
        })
    }

    /// Closes every cached connection (after a failure that may have left
    /// a broker's view of them stale, or on shutdown).
    pub async fn disconnect_all(&self) {
        self.connections.lock().await.clear();
    }

    fn next_correlation(&self) -> i32 {
        self.correlation.fetch_add(1, Ordering::Relaxed) & i32::MAX
    }
}
