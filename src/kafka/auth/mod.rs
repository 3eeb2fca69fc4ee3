//! Authentication: the proxy's SASL login to brokers (PLAIN, SCRAM), the
//! server side for clients when the proxy terminates SASL, and the
//! credentials file.

pub mod credentials;
pub mod sasl;
pub mod sasl_server;
pub mod scram;
