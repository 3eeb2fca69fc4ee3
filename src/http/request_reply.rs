//! Request-reply over HTTP: HTTP request → request record → reply record →
//! HTTP response (the Kafka side is in `crate::rr`).
//!
//! - Sync (default): the caller waits up to the route's timeout for the
//!   reply; none in time → 504 `gateway_timeout`.
//! - Async (`Prefer: respond-async`): 202 at once, with `Location:
//!   /rr/replies/{reply topic}/{correlation id}`. `GET` on it with
//!   `Prefer: wait=N` returns the reply as soon as it is read, or 202 again
//!   after N seconds. Any replica serves it: each reads every reply.
//! - `Idempotency-Key`: the correlation id is derived from the caller, the
//!   request topic and the key, so every replica derives the same one. A
//!   repeat with the same method, path and body gets the same reply (or
//!   waits for it) without a second request record; with a different
//!   request it gets 409 `idempotency_conflict`.
//!
//! The reply topic is positioned before the request is produced (see
//! `listener`), so a reply cannot arrive unseen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::body::BodyReader;
use super::error::ApiError;
use super::middleware::{self, Authenticated, Caller};
use super::Sidecar;
use crate::kafka::client::consumer::StartAt;
use crate::kafka::client::producer::{OutgoingRecord, Producer};
use crate::metrics as m;
use crate::rr::listener::{ListenError, ReplyListener};
use crate::rr::replies::{Known, ReplyBook};
use crate::rr::routes::{RouteTable, RouteTarget, REPLY_TOPIC_HEADER, TOPIC_HEADER};
use crate::rr::trace_context::{TraceContext, TRACEPARENT, TRACESTATE};
use crate::rr::wire::{self, Reply};

/// The request-reply side of the sidecar.
pub struct Gateway {
    pub routes: RouteTable,
    pub book: Arc<ReplyBook>,
    pub listener: Arc<ReplyListener>,
    pub producer: Producer,
    pub max_body: usize,
    /// The longest `Prefer: wait=N` honoured.
    pub max_wait: Duration,
}

/// Where the caller polls an async request.
pub fn location(reply_topic: &str, id: &str) -> String {
    format!("/rr/replies/{reply_topic}/{id}")
}

/// What `Prefer` asks for (RFC 7240): `respond-async` and `wait=N`.
#[derive(Debug, Default, PartialEq)]
pub struct Preferences {
    pub respond_async: bool,
    pub wait: Option<Duration>,
}

pub fn preferences(headers: &HeaderMap) -> Preferences {
    let mut out = Preferences::default();
    for value in headers.get_all("prefer") {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split([',', ';']) {
            let token = token.trim();
            if token.eq_ignore_ascii_case("respond-async") {
                out.respond_async = true;
            } else if let Some((name, n)) = token.split_once('=') {
                if name.trim().eq_ignore_ascii_case("wait") {
                    if let Ok(secs) = n.trim().trim_matches('"').parse::<u64>() {
                        out.wait = Some(Duration::from_secs(secs));
                    }
                }
            }
        }
    }
    out
}

/// The correlation id of an idempotent request: the same on every replica.
fn idempotent_id(caller: &Caller, request_topic: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"kafka-lfs-proxy idempotency\0");
    h.update(caller.0.map(hex::encode).unwrap_or_default().as_bytes());
    h.update([0]);
    h.update(request_topic.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn outcome(route: &str, outcome: &'static str) {
    metrics::counter!(m::RR_REQUESTS_TOTAL, "route" => route.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Any path no API route serves: a request-reply call when a route
/// matches, else 404.
pub async fn call(State(sidecar): State<Arc<Sidecar>>, request: Request) -> Response {
    let Some(gateway) = sidecar.gateway.clone() else {
        return super::error::not_found().await.into_response();
    };
    let (parts, body) = request.into_parts();
    let Some(target) = gateway
        .routes
        .resolve(&parts.method, parts.uri.path(), &parts.headers)
    else {
        return super::error::not_found().await.into_response();
    };
    let who = match middleware::authenticate(&sidecar, &parts.headers) {
        Ok(who) => who,
        Err(e) => return e.into_response(),
    };
    let started = Instant::now();
    let route = target.route.clone();
    let response = match gateway.handle(&sidecar, who, target, parts, body).await {
        Ok(r) => r,
        Err((e, what)) => {
            outcome(&route, what);
            e.into_response()
        }
    };
    metrics::histogram!(m::RR_REQUEST_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

type Failure = (ApiError, &'static str);

impl Gateway {
    async fn handle(
        &self,
        sidecar: &Sidecar,
        who: Authenticated,
        target: RouteTarget,
        parts: http::request::Parts,
        body: Body,
    ) -> Result<Response, Failure> {
        let _in_flight = m::GaugeGuard::increment(m::RR_IN_FLIGHT);
        for topic in [&target.request_topic, &target.reply_topic] {
            super::target::topic(Some(topic), sidecar.config.topic_max_length)
                .map_err(|e| (e, "invalid"))?;
        }
        let too_large = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over {} bytes", self.max_body),
        );
        let body = BodyReader::new(body, sidecar.config.read_idle)
            .collect(self.max_body, too_large)
            .await
            .map_err(|e| (e, "invalid"))?;
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let method = parts.method.as_str().to_owned();
        let prefer = preferences(&parts.headers);
        let idempotency_key = parts
            .headers
            .get("idempotency-key")
            .map(|v| {
                v.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::bad_request("invalid_header", "Idempotency-Key must be visible ASCII")
                })
            })
            .transpose()
            .map_err(|e| (e, "invalid"))?;
        let (id, digest) = match &idempotency_key {
            Some(key) => (
                idempotent_id(&who.caller, &target.request_topic, key),
                Some(wire::request_digest(&method, &path, &body)),
            ),
            None => (uuid::Uuid::now_v7().to_string(), None),
        };
        let mut produce = true;
        if let Some(digest) = &digest {
            match self.book.claim(&id, digest) {
                Known::Unknown => {}
                Known::Pending(Some(d)) | Known::Finished(_, Some(d)) if &d != digest => {
                    return Err((conflict(), "conflict"));
                }
                Known::Finished(reply, None)
                    if reply.request_digest.as_ref().is_some_and(|d| d != digest) =>
                {
                    return Err((conflict(), "conflict"));
                }
                Known::Finished(reply, _) => {
                    outcome(&target.route, "replayed");
                    let mut response = reply_response(&reply, &id);
                    response
                        .headers_mut()
                        .insert("idempotent-replayed", HeaderValue::from_static("true"));
                    return Ok(response);
                }
                Known::Pending(_) => produce = false,
            }
        }
        let deadline = Instant::now() + target.timeout;
        // This hop's span of the caller's trace (or a new trace).
        let trace = TraceContext::from_http(&parts.headers);
        tracing::debug!(trace_id = %trace.parent.trace_id(), correlation_id = %id, route = %target.route, "request-reply call");
        if produce {
            self.listener
                .ensure(&target.reply_topic, StartAt::Latest)
                .await
                .map_err(|e| (listen_failed(e), "error"))?;
            let record = self.request_record(
                sidecar,
                &target,
                &parts,
                &path,
                &id,
                digest,
                who.subject.as_deref(),
                &trace,
                body,
            );
            let policy = super::policy::for_topic(&sidecar.policies, &record.topic);
            if let Err(e) = super::policy::check_record(
                policy.as_ref(),
                record.key.as_deref(),
                &record.headers,
                record.value.as_deref(),
            ) {
                self.book.forget(&id);
                return Err((e, "invalid"));
            }
            let produced = self.producer.produce(&record).await;
            if let Err(error) = produced {
                self.book.forget(&id);
                return Err((super::produce::produce_failed(error), "error"));
            }
        }
        let produced_at = Instant::now();
        let location = location(&target.reply_topic, &id);
        if prefer.respond_async {
            outcome(&target.route, "accepted");
            return Ok(with_trace(accepted(&location, &id), &trace));
        }
        match self
            .book
            .wait(&id, deadline.saturating_duration_since(Instant::now()))
            .await
        {
            Some(reply) => {
                metrics::histogram!(m::RR_KAFKA_ROUND_TRIP_SECONDS, "route" => target.route.clone())
                    .record(produced_at.elapsed().as_secs_f64());
                outcome(&target.route, "reply");
                Ok(with_trace(reply_response(&reply, &id), &trace))
            }
            None => {
                metrics::counter!(m::RR_TIMEOUTS_TOTAL, "route" => target.route.clone())
                    .increment(1);
                Err((
                    ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "gateway_timeout",
                        format!(
                            "no reply on {} within {:?} (correlation id {id})",
                            target.reply_topic, target.timeout
                        ),
                    ),
                    "timeout",
                ))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request_record(
        &self,
        sidecar: &Sidecar,
        target: &RouteTarget,
        parts: &http::request::Parts,
        path: &str,
        id: &str,
        digest: Option<String>,
        subject: Option<&str>,
        trace: &TraceContext,
        body: Bytes,
    ) -> OutgoingRecord {
        // The credential the proxy checked is the proxy's, not the backend's;
        // the trace context is this hop's, not the caller's.
        let mut skip = vec![
            TOPIC_HEADER,
            REPLY_TOPIC_HEADER,
            "idempotency-key",
            wire::SUBJECT_HEADER,
            TRACEPARENT,
            TRACESTATE,
        ];
        if !sidecar.api_keys.is_empty() || sidecar.jwt.is_some() {
            skip.extend(["x-api-key", "authorization"]);
        }
        let mut headers = vec![
            (
                wire::METHOD.to_owned(),
                Bytes::from(parts.method.as_str().to_owned()),
            ),
            (wire::PATH.to_owned(), Bytes::from(path.to_owned())),
            (wire::CORRELATION_ID.to_owned(), Bytes::from(id.to_owned())),
            (
                wire::REPLY_TO.to_owned(),
                Bytes::from(target.reply_topic.clone()),
            ),
            (
                wire::DEADLINE.to_owned(),
                Bytes::from((wire::now_ms() + target.timeout.as_millis() as i64).to_string()),
            ),
        ];
        if let Some(d) = digest {
            headers.push((wire::REQUEST_DIGEST.to_owned(), Bytes::from(d)));
        }
        if let Some(subject) = subject {
            headers.push((wire::IDENTITY.to_owned(), Bytes::from(subject.to_owned())));
        }
        if let Some(key) = parts.headers.get("idempotency-key") {
            headers.push((
                "idempotency-key".to_owned(),
                Bytes::copy_from_slice(key.as_bytes()),
            ));
        }
        headers.extend(trace.headers());
        headers.extend(wire::http_headers_to_record(&parts.headers, &skip));
        OutgoingRecord {
            topic: target.request_topic.clone(),
            partition: None,
            key: target.key.clone().map(Bytes::from),
            value: Some(body),
            headers,
        }
    }
}

/// `GET /rr/replies/{topic}/{id}`: the reply of an async call.
pub async fn reply(
    State(sidecar): State<Arc<Sidecar>>,
    Path((topic, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(gateway) = sidecar.gateway.clone() else {
        return Err(super::error::not_found().await);
    };
    let topic = super::target::topic(Some(&topic), sidecar.config.topic_max_length)?;
    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such correlation id",
        ));
    };
    let id = uuid.to_string();
    let wait = preferences(&headers)
        .wait
        .unwrap_or(Duration::ZERO)
        .min(gateway.max_wait);
    if let Known::Finished(reply, _) = gateway.book.known(&id) {
        return Ok(reply_response(&reply, &id));
    }
    // Made by uuid v7: the request's time. A replica not yet reading this
    // topic starts a little before it; an id older than the replies kept
    // can have no reply here any more.
    let ttl = gateway.book.ttl();
    let made_ms = uuid
        .get_timestamp()
        .map(|t| {
            let (s, n) = t.to_unix();
            s as i64 * 1000 + i64::from(n / 1_000_000)
        })
        .unwrap_or_else(|| wire::now_ms() - ttl.as_millis() as i64);
    if wire::now_ms() - made_ms > ttl.as_millis() as i64 + 60_000 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no reply is kept for this correlation id any more",
        ));
    }
    gateway
        .listener
        .ensure(&topic, StartAt::Timestamp(made_ms - 1_000))
        .await
        .map_err(listen_failed)?;
    match gateway.book.wait(&id, wait).await {
        Some(reply) => Ok(reply_response(&reply, &id)),
        None => Ok(accepted(&location(&topic, &id), &id)),
    }
}

fn conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "this Idempotency-Key was used with a different request",
    )
}

fn listen_failed(error: ListenError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
        "cannot read the reply topic; retry later",
    )
    .with_detail(error)
}

fn accepted(location: &str, id: &str) -> Response {
    let body = serde_json::json!({ "correlation_id": id, "location": location }).to_string();
    let mut response = (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        body,
    )
        .into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert("location", v);
    }
    h.insert(
        "preference-applied",
        HeaderValue::from_static("respond-async"),
    );
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-correlation-id", v);
    }
    response
}

/// The trace context on a response: the worker's when its reply carried
/// one (the processor's span), else this hop's.
fn with_trace(mut response: Response, trace: &TraceContext) -> Response {
    if !response.headers().contains_key(TRACEPARENT) {
        for (name, value) in &trace.http_headers() {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// The caller's response: the worker's status, headers and body.
fn reply_response(reply: &Reply, id: &str) -> Response {
    let mut response = Response::new(Body::from(reply.body.clone()));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = response.headers_mut();
    for (name, value) in &reply.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            h.append(n, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-correlation-id", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_parses_async_and_wait() {
        let mut h = HeaderMap::new();
        h.append("prefer", "respond-async, wait=5".parse().unwrap());
        assert_eq!(
            preferences(&h),
            Preferences {
                respond_async: true,
                wait: Some(Duration::from_secs(5))
            }
        );
        let mut h = HeaderMap::new();
        h.append("prefer", "Wait = 2".parse().unwrap());
        assert_eq!(preferences(&h).wait, Some(Duration::from_secs(2)));
        assert!(!preferences(&h).respond_async);
    }

    #[test]
    fn idempotent_ids_depend_on_caller_topic_and_key() {
        let a = Caller(Some([1; 32]));
        let b = Caller(Some([2; 32]));
        let id = idempotent_id(&a, "t", "k");
        assert_eq!(id, idempotent_id(&a, "t", "k"));
        assert_ne!(id, idempotent_id(&b, "t", "k"));
        assert_ne!(id, idempotent_id(&a, "u", "k"));
        assert_ne!(id, idempotent_id(&a, "t", "k2"));
        assert!(uuid::Uuid::parse_str(&id).is_ok());
    }
}
