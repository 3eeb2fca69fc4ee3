//! The Kafka side, in four layers (each imports only those below it):
//!
//! - [`wire`]: frames, request-header peeks, the versions table, record
//!   batches, one request/response call; no sockets of its own, no policy.
//! - [`auth`]: SASL (client and server side), SCRAM, credentials.
//! - [`relay`]: the listeners, the session (one client connection over one
//!   upstream connection), the broker address map, Fetch streaming,
//!   upstream dialing, and the interception chain the session runs.
//! - [`client`]: the proxy's own Kafka client (cluster, producer, consumer,
//!   consumer group, partitioner) for the HTTP API and request-reply.

pub mod auth;
pub mod client;
pub mod relay;
pub mod wire;
