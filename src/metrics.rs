//! Metric names and the Prometheus recorder.
//!
//! Labels have bounded cardinality: API names come from the fixed list of
//! Kafka API keys, reasons and directions from fixed sets in the code.

use std::sync::OnceLock;

use kafka_protocol::messages::ApiKey;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS_OPEN: &str = "kafka_lfs_proxy_connections_open";
pub const CONNECTIONS_TOTAL: &str = "kafka_lfs_proxy_connections_total";
pub const REQUESTS_TOTAL: &str = "kafka_lfs_proxy_requests_total";
pub const BYTES_TOTAL: &str = "kafka_lfs_proxy_bytes_total";
pub const UPSTREAM_ERRORS_TOTAL: &str = "kafka_lfs_proxy_upstream_errors_total";
pub const FETCH_STREAMED_TOTAL: &str = "kafka_lfs_proxy_fetch_responses_streamed_total";
pub const FRAME_REJECTIONS_TOTAL: &str = "kafka_lfs_proxy_frame_rejections_total";
pub const UPSTREAM_UP: &str = "kafka_lfs_proxy_upstream_up";
pub const LFS_UPLOADS_TOTAL: &str = "kafka_lfs_proxy_lfs_uploads_total";
pub const LFS_UPLOAD_BYTES_TOTAL: &str = "kafka_lfs_proxy_lfs_upload_bytes_total";
pub const LFS_UPLOAD_SECONDS: &str = "kafka_lfs_proxy_lfs_upload_duration_seconds";
pub const LFS_STORAGE_ERRORS_TOTAL: &str = "kafka_lfs_proxy_lfs_storage_errors_total";
pub const LFS_ORPHANS_DELETED: &str = "kafka_lfs_proxy_lfs_orphans_deleted_total";
pub const LFS_ORPHANS_LEFT: &str = "kafka_lfs_proxy_lfs_orphans_left_total";
/// Aborts and deletes waiting for storage now (the retry queue).
pub const LFS_ORPHANS_PENDING: &str = "kafka_lfs_proxy_lfs_orphans_pending";
/// Leftovers neither removed nor recorded (queue full, ledger unwritable).
pub const LFS_ORPHANS_DROPPED: &str = "kafka_lfs_proxy_lfs_orphans_dropped_total";
/// Leftovers removed later (retry queue or ledger), by outcome.
pub const LFS_CLEANUPS_TOTAL: &str = "kafka_lfs_proxy_lfs_cleanups_total";
/// Tokio tasks alive in the proxy, read at each scrape.
/// Records whose original value a Fetch response carried instead of the envelope.
pub const REHYDRATED_RECORDS_TOTAL: &str = "kafka_lfs_proxy_rehydrated_records_total";
pub const REHYDRATED_BYTES_TOTAL: &str = "kafka_lfs_proxy_rehydrated_bytes_total";
/// Objects that were missing or did not match their envelope, by reason.
pub const REHYDRATE_INTEGRITY_FAILURES_TOTAL: &str =
    "kafka_lfs_proxy_rehydrate_integrity_failures_total";
pub const REHYDRATE_STORAGE_ERRORS_TOTAL: &str = "kafka_lfs_proxy_rehydrate_storage_errors_total";
/// Partitions answered with an error instead of their records, by code.
pub const REHYDRATE_PARTITION_ERRORS_TOTAL: &str =
    "kafka_lfs_proxy_rehydrate_partition_errors_total";
pub const REHYDRATE_CACHE_HITS_TOTAL: &str = "kafka_lfs_proxy_rehydrate_cache_hits_total";
pub const REHYDRATE_CACHE_MISSES_TOTAL: &str = "kafka_lfs_proxy_rehydrate_cache_misses_total";
pub const REHYDRATE_CACHE_BYTES: &str = "kafka_lfs_proxy_rehydrate_cache_bytes";
/// Bytes of rebuilt Fetch responses held now (the rehydration budget in use).
pub const REHYDRATE_BYTES_HELD: &str = "kafka_lfs_proxy_rehydrate_bytes_held";
/// Records judged by a topic policy, by policy and path (kafka, http).
pub const POLICY_RECORDS_CHECKED_TOTAL: &str = "kafka_lfs_proxy_policy_records_checked_total";
/// Records refused by a policy, by policy, rule and path.
pub const POLICY_RECORDS_REJECTED_TOTAL: &str = "kafka_lfs_proxy_policy_records_rejected_total";
/// Records a policy sent to its dead-letter topic, by policy and rule.
pub const POLICY_RECORDS_DEAD_LETTERED_TOTAL: &str =
    "kafka_lfs_proxy_policy_records_dead_lettered_total";
/// Policy file reloads, by outcome (applied, failed).
pub const POLICY_RELOADS_TOTAL: &str = "kafka_lfs_proxy_policy_reloads_total";
pub const TASKS_ALIVE: &str = "kafka_lfs_proxy_tasks_alive";
pub const HTTP_REQUESTS_TOTAL: &str = "kafka_lfs_proxy_http_requests_total";
pub const HTTP_REQUEST_SECONDS: &str = "kafka_lfs_proxy_http_request_duration_seconds";
pub const HTTP_BYTES_TOTAL: &str = "kafka_lfs_proxy_http_bytes_total";
pub const HTTP_INTEGRITY_FAILURES_TOTAL: &str = "kafka_lfs_proxy_http_integrity_failures_total";
pub const HTTP_DOWNLOAD_VERIFIED_REUSED_TOTAL: &str =
    "kafka_lfs_proxy_http_download_verified_reused_total";
pub const HTTP_UPLOAD_SESSIONS_OPEN: &str = "kafka_lfs_proxy_http_upload_sessions_open";
pub const HTTP_UPLOAD_SESSIONS_EXPIRED: &str = "kafka_lfs_proxy_http_upload_sessions_expired_total";
pub const UPSTREAM_REAUTH_TOTAL: &str = "kafka_lfs_proxy_upstream_reauthentications_total";
pub const STORAGE_UP: &str = "kafka_lfs_proxy_storage_up";
pub const RR_REQUESTS_TOTAL: &str = "kafka_lfs_proxy_rr_requests_total";
pub const RR_IN_FLIGHT: &str = "kafka_lfs_proxy_rr_in_flight";
pub const SSE_STREAMS_OPEN: &str = "kafka_lfs_proxy_sse_streams_open";
pub const SSE_STREAMS_ENDED_TOTAL: &str = "kafka_lfs_proxy_sse_streams_ended_total";
pub const SSE_EVENTS_TOTAL: &str = "kafka_lfs_proxy_sse_events_total";
pub const HTTP_ONE_WAY_RECORDS_TOTAL: &str = "kafka_lfs_proxy_http_one_way_records_total";
pub const RR_REQUEST_SECONDS: &str = "kafka_lfs_proxy_rr_request_duration_seconds";
pub const RR_KAFKA_ROUND_TRIP_SECONDS: &str = "kafka_lfs_proxy_rr_kafka_round_trip_seconds";
/// Garbage collection (`gc`): objects listed, referenced by a record,
/// deleted, and the bytes deleted.
pub const GC_OBJECTS_SCANNED_TOTAL: &str = "kafka_lfs_proxy_gc_objects_scanned_total";
pub const GC_OBJECTS_REFERENCED_TOTAL: &str = "kafka_lfs_proxy_gc_objects_referenced_total";
pub const GC_OBJECTS_DELETED_TOTAL: &str = "kafka_lfs_proxy_gc_objects_deleted_total";
pub const GC_BYTES_RECLAIMED_TOTAL: &str = "kafka_lfs_proxy_gc_bytes_reclaimed_total";
/// Produce requests the proxy's own producer sent, and the records in them
/// (their ratio is how well concurrent records share requests).
pub const OWN_PRODUCE_REQUESTS_TOTAL: &str = "kafka_lfs_proxy_own_produce_requests_total";
pub const OWN_PRODUCE_RECORDS_TOTAL: &str = "kafka_lfs_proxy_own_produce_records_total";
pub const RR_TIMEOUTS_TOTAL: &str = "kafka_lfs_proxy_rr_timeouts_total";
pub const RR_REPLIES_READ: &str = "kafka_lfs_proxy_rr_replies_read_total";
pub const RR_REPLIES_HELD: &str = "kafka_lfs_proxy_rr_replies_held";
pub const RR_REPLY_BYTES_HELD: &str = "kafka_lfs_proxy_rr_reply_bytes_held";
pub const RR_LISTENER_READY: &str = "kafka_lfs_proxy_rr_listener_ready";
pub const PROCESSOR_REQUESTS_TOTAL: &str = "kafka_lfs_proxy_processor_requests_total";
pub const PROCESSOR_IN_FLIGHT: &str = "kafka_lfs_proxy_processor_in_flight";
pub const PROCESSOR_SECONDS: &str = "kafka_lfs_proxy_processor_duration_seconds";
pub const PROCESSOR_BACKEND_SECONDS: &str = "kafka_lfs_proxy_processor_backend_duration_seconds";
pub const PROCESSOR_RETRIES_TOTAL: &str = "kafka_lfs_proxy_processor_retries_total";
pub const PROCESSOR_DEAD_LETTERS_TOTAL: &str = "kafka_lfs_proxy_processor_dead_letters_total";
pub const PROCESSOR_EXPIRED_TOTAL: &str = "kafka_lfs_proxy_processor_expired_total";
pub const PROCESSOR_REBALANCES_TOTAL: &str = "kafka_lfs_proxy_processor_rebalances_total";

/// Bucket upper bounds, in seconds, of every `_seconds` histogram: from a
/// millisecond (a relayed request, a cached reply) to two minutes (a
/// multi-GiB upload or a long request-reply wait). Histograms, unlike
/// summaries, can be summed across replicas.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How often the recorder's upkeep runs (drains histogram samples recorded
/// between scrapes, so they never pile up).
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the global recorder once; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("the metrics recorder is installed once");
            describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start the metrics upkeep thread");
            }
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(CONNECTIONS_OPEN, "Client connections currently open");
    metrics::describe_counter!(CONNECTIONS_TOTAL, "Client connections accepted");
    metrics::describe_counter!(REQUESTS_TOTAL, "Kafka requests forwarded, by API");
    metrics::describe_counter!(BYTES_TOTAL, "Bytes relayed, by direction");
    metrics::describe_counter!(UPSTREAM_ERRORS_TOTAL, "Upstream failures, by kind");
    metrics::describe_counter!(
        FETCH_STREAMED_TOTAL,
        "Large Fetch responses passed through as they arrived; hid_node_endpoints=true when KIP-951 node_endpoints were hidden"
    );
    metrics::describe_counter!(FRAME_REJECTIONS_TOTAL, "Frames refused, by reason");
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests, by route template, method and status"
    );
    metrics::describe_histogram!(HTTP_REQUEST_SECONDS, "HTTP request duration, by route");
    metrics::describe_counter!(
        HTTP_BYTES_TOTAL,
        "LFS payload bytes over HTTP: up = uploaded, down = downloaded"
    );
    metrics::describe_counter!(
        HTTP_INTEGRITY_FAILURES_TOTAL,
        "Downloads refused because storage returned other bytes than the envelope names"
    );
    metrics::describe_counter!(
        HTTP_DOWNLOAD_VERIFIED_REUSED_TOTAL,
        "Local-store downloads sent without hashing again: the same unchanged file was verified before"
    );
    metrics::describe_gauge!(HTTP_UPLOAD_SESSIONS_OPEN, "Upload sessions open");
    metrics::describe_counter!(
        HTTP_UPLOAD_SESSIONS_EXPIRED,
        "Upload sessions expired and aborted"
    );
    metrics::describe_counter!(
        UPSTREAM_REAUTH_TOTAL,
        "SASL re-authentications on relayed upstream connections (KIP-368), by outcome"
    );
    metrics::describe_gauge!(STORAGE_UP, "1 while the last storage check succeeded");
    metrics::describe_counter!(
        RR_REQUESTS_TOTAL,
        "Request-reply calls, by route and outcome (reply, timeout, accepted, replayed, conflict, error)"
    );
    metrics::describe_gauge!(RR_IN_FLIGHT, "Request-reply calls waiting for their reply");
    metrics::describe_gauge!(SSE_STREAMS_OPEN, "SSE streams open");
    metrics::describe_counter!(
        SSE_STREAMS_ENDED_TOTAL,
        "SSE streams ended, by route and reason (client_gone, stalled, token_expired, shutdown, kafka_unavailable, storage_unavailable)"
    );
    metrics::describe_counter!(SSE_EVENTS_TOTAL, "Records sent as SSE events, by route");
    metrics::describe_counter!(
        HTTP_ONE_WAY_RECORDS_TOTAL,
        "Records produced by one-way produce routes, by route"
    );
    metrics::describe_counter!(
        GC_OBJECTS_SCANNED_TOTAL,
        "Objects listed by garbage collection"
    );
    metrics::describe_counter!(
        GC_OBJECTS_REFERENCED_TOTAL,
        "Objects garbage collection found referenced by a record"
    );
    metrics::describe_counter!(GC_OBJECTS_DELETED_TOTAL, "Unreferenced objects deleted");
    metrics::describe_counter!(GC_BYTES_RECLAIMED_TOTAL, "Bytes of the objects deleted");
    metrics::describe_counter!(
        OWN_PRODUCE_REQUESTS_TOTAL,
        "Produce requests sent by the proxy's own producer"
    );
    metrics::describe_counter!(
        OWN_PRODUCE_RECORDS_TOTAL,
        "Records sent in the proxy's own Produce requests"
    );
    metrics::describe_histogram!(RR_REQUEST_SECONDS, "Request-reply call duration, by route");
    metrics::describe_histogram!(
        RR_KAFKA_ROUND_TRIP_SECONDS,
        "From producing the request record to reading its reply, by route"
    );
    metrics::describe_counter!(
        RR_TIMEOUTS_TOTAL,
        "Calls answered 504 for want of a reply, by route"
    );
    metrics::describe_counter!(RR_REPLIES_READ, "Records read on reply topics, by outcome");
    metrics::describe_gauge!(
        RR_REPLIES_HELD,
        "Finished replies held for Location and replays"
    );
    metrics::describe_gauge!(RR_REPLY_BYTES_HELD, "Bytes of finished replies held");
    metrics::describe_gauge!(RR_LISTENER_READY, "1 once the reply listener is positioned");
    metrics::describe_counter!(
        PROCESSOR_REQUESTS_TOTAL,
        "Requests the processor handled, by request topic and outcome"
    );
    metrics::describe_gauge!(PROCESSOR_IN_FLIGHT, "Requests the processor is working on");
    metrics::describe_histogram!(
        PROCESSOR_SECONDS,
        "From reading a request to producing its reply"
    );
    metrics::describe_histogram!(
        PROCESSOR_BACKEND_SECONDS,
        "One backend call, by request topic"
    );
    metrics::describe_counter!(
        PROCESSOR_RETRIES_TOTAL,
        "Backend calls retried, by request topic"
    );
    metrics::describe_counter!(
        PROCESSOR_DEAD_LETTERS_TOTAL,
        "Requests written to the dead-letter topic"
    );
    metrics::describe_counter!(
        PROCESSOR_EXPIRED_TOTAL,
        "Requests dropped unsent because their deadline had passed"
    );
    metrics::describe_counter!(PROCESSOR_REBALANCES_TOTAL, "Consumer-group joins, by group");
    metrics::describe_counter!(
        POLICY_RECORDS_CHECKED_TOTAL,
        "Records judged by a topic policy, by policy and path (kafka, http)"
    );
    metrics::describe_counter!(
        POLICY_RECORDS_REJECTED_TOTAL,
        "Records refused by a topic policy, by policy, rule and path"
    );
    metrics::describe_counter!(
        POLICY_RECORDS_DEAD_LETTERED_TOTAL,
        "Records a topic policy sent to its dead-letter topic, by policy and rule"
    );
    metrics::describe_counter!(POLICY_RELOADS_TOTAL, "Policy file reloads, by outcome");
    metrics::describe_gauge!(
        UPSTREAM_UP,
        "1 while the last upstream health check succeeded"
    );
}

/// Adds one to a gauge until dropped (work in flight).
pub struct GaugeGuard(&'static str);

impl GaugeGuard {
    pub fn increment(name: &'static str) -> Self {
        metrics::gauge!(name).increment(1.0);
        GaugeGuard(name)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// The API name used as a label (`unknown` for keys the proxy does not know).
pub fn api_label(api_key: i16) -> &'static str {
    static NAMES: OnceLock<Vec<(i16, &'static str)>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        ApiKey::iter()
            .map(|k| (k as i16, &*Box::leak(format!("{k:?}").into_boxed_str())))
            .collect()
    });
    names
        .iter()
        .find(|(k, _)| *k == api_key)
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

pub fn frame_rejected(reason: &'static str) {
    metrics::counter!(FRAME_REJECTIONS_TOTAL, "reason" => reason).increment(1);
}

pub fn upstream_error(kind: &'static str) {
    metrics::counter!(UPSTREAM_ERRORS_TOTAL, "kind" => kind).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_render_as_histograms_with_buckets() {
        let handle = install();
        metrics::histogram!(LFS_UPLOAD_SECONDS).record(0.003);
        metrics::histogram!(HTTP_REQUEST_SECONDS, "route" => "/livez").record(0.2);
        let text = handle.render();
        assert!(
            text.contains("# TYPE kafka_lfs_proxy_lfs_upload_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("kafka_lfs_proxy_lfs_upload_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("kafka_lfs_proxy_http_request_duration_seconds_bucket{route=\"/livez\",le=\"0.25\"}"), "{text}");
        assert!(!text.contains("quantile="), "{text}");
    }
}
