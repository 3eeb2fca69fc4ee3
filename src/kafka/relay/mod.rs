//! The relay: listeners, sessions, the interception chain they run, broker
//! addresses, upstream connections.

pub mod addresses;
pub mod chain;
pub mod fetch_stream;
pub mod listeners;
pub mod outstanding;
pub mod proxy;
pub mod session;
pub mod upstream;
