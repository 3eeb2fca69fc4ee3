//! The routes file's parts: request-reply gateway, SSE streams, cached
//! reads (each started from the settings; one-way produce needs nothing
//! started).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::parts;
use crate::config::{RrSettings, StreamSettings, UpstreamSettings};
use crate::http::cached::view::TopicView;
use crate::http::cached::CachedReads;
use crate::http::request_reply::Gateway;
use crate::http::sse::delivery::Objects;
use crate::http::sse::{ConnectCluster, StreamSettings as SseSettings, Streams};
use crate::kafka::client::consumer::PartitionConsumer;
use crate::kafka::relay::upstream::UpstreamSecurity;
use crate::lfs::Lfs;
use crate::rr::cached_routes::CachedRoute;
use crate::rr::listener::ReplyListener;
use crate::rr::replies::ReplyBook;
use crate::rr::routes::{HeaderRoute, Route, RouteTable};
use crate::rr::stream_routes::StreamRoute;
use crate::shutdown::ShutdownTrigger;

/// SSE streams of the `streams:` routes; `None` when there are none.
pub fn stream_routes(
    routes: Vec<StreamRoute>,
    settings: &StreamSettings,
    upstream: &UpstreamSettings,
    security: &Arc<UpstreamSecurity>,
    lfs: &Lfs,
) -> Option<Arc<Streams>> {
    if routes.is_empty() {
        return None;
    }
    let (upstream, security) = (upstream.clone(), Arc::clone(security));
    let connect: ConnectCluster = Arc::new(move || parts::own_cluster(&upstream, &security));
    Some(Arc::new(Streams::new(
        routes,
        SseSettings {
            keep_alive: settings.keep_alive(),
            fetch_wait: settings.fetch_wait(),
            partition_max_bytes: settings.sse_partition_max_bytes,
            challenge_before: settings.challenge_before(),
            stall_timeout: settings.stall_timeout(),
            max_per_caller: settings.sse_max_streams_per_caller,
            max_streams: settings.sse_max_streams,
        },
        connect,
        Objects {
            store: lfs.store.clone(),
            scope: lfs.envelope_scope(),
        },
    )))
}

/// The cached reads of the `cached:` routes, a view per topic (each
/// reading from start-up); `None` when there are none.
pub fn cached_reads(
    routes: Vec<CachedRoute>,
    settings: &StreamSettings,
    rr: &RrSettings,
    upstream: &UpstreamSettings,
    security: &Arc<UpstreamSecurity>,
    trigger: &ShutdownTrigger,
) -> Option<CachedReads> {
    if routes.is_empty() {
        return None;
    }
    let mut views = HashMap::new();
    for route in &routes {
        views.entry(route.topic.clone()).or_insert_with(|| {
            let consumer = PartitionConsumer::new(
                Arc::new(parts::own_cluster(upstream, security)),
                settings.fetch_wait(),
                settings.sse_partition_max_bytes,
            );
            TopicView::start(
                route.topic.clone(),
                consumer,
                settings.cached_max_bytes,
                trigger.subscribe(),
            )
        });
    }
    Some(CachedReads {
        routes,
        views,
        max_wait: Duration::from_secs(rr.rr_max_wait_sec),
    })
}

/// The request-reply gateway the settings ask for, with its reply listener
/// started; `None` when no route is configured.
pub fn gateway(
    rr: &RrSettings,
    routes: Vec<Route>,
    upstream: &UpstreamSettings,
    security: &Arc<UpstreamSecurity>,
) -> Option<Arc<Gateway>> {
    let default_timeout = Duration::from_secs(rr.rr_timeout_sec);
    let header_route = rr.rr_header_route.then(|| HeaderRoute {
        default_request_topic: rr.rr_default_request_topic.clone(),
        default_reply_topic: rr.rr_default_reply_topic.clone(),
    });
    let table = RouteTable::new(routes, header_route, default_timeout);
    if table.is_empty() {
        return None;
    }
    let mut topics = table.reply_topics();
    topics.extend(crate::config::trimmed(&rr.rr_warmup_topics));
    let book = Arc::new(ReplyBook::new(
        Duration::from_secs(rr.rr_reply_ttl_sec),
        rr.rr_reply_cache_bytes,
    ));
    let listener = ReplyListener::start(
        Arc::new(parts::own_cluster(upstream, security)),
        Arc::clone(&book),
        topics,
        rr.rr_max_reply_topics,
        (upstream.max_frame_size / 4).max(1 << 20),
        Duration::from_millis(rr.rr_fetch_wait_ms),
    );
    Some(Arc::new(Gateway {
        routes: table,
        book,
        listener,
        producer: parts::own_producer(upstream, security),
        max_body: rr.rr_max_body_bytes,
        max_wait: Duration::from_secs(rr.rr_max_wait_sec),
    }))
}
