//! kafka-lfs-proxy: a Kafka wire-protocol proxy that moves large record
//! values to object storage (claim-check), with an HTTP sidecar.

pub mod capture;
pub mod config;
pub mod health;
pub mod http;
pub mod inspect;
pub mod kafka;
pub mod lfs;
pub mod metrics;
pub mod rr;
pub mod tls;
