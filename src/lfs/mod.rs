//! Large-value offload (claim-check): envelope, checksums, storage, rewrite.

pub mod checksum;
pub mod envelope;
pub mod response;
pub mod rewrite;
pub mod store;
