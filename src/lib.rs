//! kafka-lfs-proxy: a Kafka wire-protocol proxy that moves large record
//! values to object storage (claim-check), with an HTTP sidecar.
//!
//! Dependencies point one way: `app` (wiring) → `http` / `rr` / `lfs` /
//! `stages` → `kafka::client` → `kafka::relay` → `kafka::auth` →
//! `kafka::wire`; `config` is read only by `app`. The README has the map.

pub mod app;
pub mod backoff;
pub mod capture;
pub mod config;
pub mod health;
pub mod http;
pub mod inspect;
pub mod kafka;
pub mod lfs;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod rr;
pub mod shutdown;
pub mod stages;
pub mod tls;
