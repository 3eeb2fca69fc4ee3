//! The Kafka side: framing, version negotiation, address rewriting,
//! sessions, and the proxy's own client calls.

pub mod addresses;
pub mod batches;
pub mod client;
pub mod client_sasl;
pub mod cluster;
pub mod consumer;
pub mod credentials;
pub mod fetch_relay;
pub mod frame;
pub mod group;
pub mod outstanding;
pub mod partitioner;
pub mod producer;
pub mod reauth;
pub mod sasl;
pub mod sasl_server;
pub mod scram;
pub mod server;
pub mod session;
pub mod upstream;
pub mod versions;
