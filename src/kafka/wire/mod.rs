//! The Kafka wire format: what can be said about bytes without a socket of
//! one's own or a policy.

pub mod batches;
pub mod call;
pub mod codes;
pub mod frame;
pub mod header;
pub mod produce_answer;
pub mod produce_outline;
pub mod topic;
pub mod versions;
