//! The Kafka side: framing, version negotiation, address rewriting, sessions.

pub mod addresses;
pub mod frame;
pub mod server;
pub mod session;
pub mod upstream;
pub mod versions;
