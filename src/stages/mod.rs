//! Interception stages: what the proxy does to Kafka traffic, one concern
//! per file. Each implements [`Stage`](crate::kafka::relay::chain::Stage);
//! the chain that runs them is built once, in `app`, from the settings.
//!
//! To add a stage: write `stages/<name>.rs` with a type implementing
//! `Stage` (only the hooks it needs: `wants_request`/`on_request`,
//! `wants_response`/`on_response`), declare it below, and add one
//! `.with(...)` line where `app` builds the chain. The session, the
//! listeners and the other stages do not change.

pub mod api_versions;
pub mod broker_addresses;
pub mod fetch_rehydration;
pub mod lfs_offload;
pub mod record_policy;
pub mod sasl_gate;
