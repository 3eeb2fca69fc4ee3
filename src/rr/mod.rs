//! Request-reply over Kafka: HTTP calls become request records, workers
//! answer on reply topics, and the answers go back to the callers (the
//! gateway, in the sidecar); and the worker that calls an HTTP backend for
//! each request (the processor, `kafka-lfs-proxy processor`).

pub mod gateway;
pub mod listener;
pub mod processor;
pub mod processor_config;
pub mod replies;
pub mod routes;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::kafka::producer::Producer;
use crate::kafka::upstream::UpstreamSecurity;
use gateway::Gateway;
use replies::ReplyBook;
use routes::{HeaderRoute, RouteError, RouteTable};

/// The gateway the settings ask for, with its reply listener started;
/// `None` when no route is configured.
pub fn gateway_from_settings(
    settings: &Settings,
    upstream: &Arc<UpstreamSecurity>,
) -> Result<Option<Arc<Gateway>>, RouteError> {
    let default_timeout = Duration::from_secs(settings.rr_timeout_sec);
    let routes = match &settings.rr_routes_file {
        Some(path) => RouteTable::load_routes(path, default_timeout)?,
        None => Vec::new(),
    };
    let header_route = settings.rr_header_route.then(|| HeaderRoute {
        default_request_topic: settings.rr_default_request_topic.clone(),
        default_reply_topic: settings.rr_default_reply_topic.clone(),
    });
    let table = RouteTable::new(routes, header_route, default_timeout);
    if table.is_empty() {
        return Ok(None);
    }
    let mut topics = table.reply_topics();
    topics.extend(
        settings
            .rr_warmup_topics
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
    );
    let book = Arc::new(ReplyBook::new(
        Duration::from_secs(settings.rr_reply_ttl_sec),
        settings.rr_reply_cache_bytes,
    ));
    let cluster = Arc::new(settings.own_cluster(upstream));
    let listener = listener::ReplyListener::start(
        cluster,
        Arc::clone(&book),
        topics,
        settings.rr_max_reply_topics,
        (settings.max_frame_size / 4).max(1 << 20),
        Duration::from_millis(settings.rr_fetch_wait_ms),
    );
    Ok(Some(Arc::new(Gateway {
        routes: table,
        book,
        listener,
        producer: Producer::new(settings.own_cluster(upstream)),
        max_body: settings.rr_max_body_bytes,
        max_wait: Duration::from_secs(settings.rr_max_wait_sec),
    })))
}
