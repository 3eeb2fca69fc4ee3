//! Request-reply over Kafka, the Kafka side: the route table, the record
//! format, the reply listener and book that the HTTP gateway
//! (`crate::http::request_reply`) waits on, and the worker that calls an
//! HTTP backend for each request (the processor, `kafka-lfs-proxy
//! processor`). Nothing here knows HTTP serving.

pub mod cached_routes;
pub mod listener;
pub mod path_pattern;
pub mod processor;
pub mod processor_config;
pub mod produce_routes;
pub mod replies;
pub mod routes;
pub mod stream_routes;
pub mod trace_context;
pub mod wire;
