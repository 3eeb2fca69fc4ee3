//! One-way produce (`produce:` routes): the request body becomes one
//! record on the route's topic, and the caller is answered once the
//! broker has acknowledged it with acks=all: `204 No Content` (or `202
//! Accepted`, per route) with `X-Kafka-Partition` and `X-Kafka-Offset`.
//!
//! The key comes from the route's template; record headers from the
//! route's `headers`, then `X-Kafka-Header-<name>` request headers, then
//! `Content-Type` as `content-type`. A `DELETE` without a body is a
//! tombstone. The topic's record policy, the API's authentication and
//! CORS apply as on every route; the body is at most
//! `RR_MAX_BODY_BYTES` (one record).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::body::BodyReader;
use super::error::ApiError;
use super::{middleware, Sidecar};
use crate::kafka::client::producer::OutgoingRecord;
use crate::metrics as m;
use crate::rr::produce_routes::{ProduceRoute, ProduceTarget};

/// The one-way produce routes and their body limit.
pub struct OneWay {
    pub routes: Vec<ProduceRoute>,
    pub max_body: usize,
}

impl OneWay {
    pub async fn handle(
        &self,
        sidecar: &Sidecar,
        target: ProduceTarget,
        method: &Method,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, ApiError> {
        middleware::authenticate(sidecar, headers)?;
        let too_large = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over {} bytes", self.max_body),
        );
        let body = BodyReader::new(body, sidecar.config.read_idle)
            .collect(self.max_body, too_large)
            .await?;
        let record = record(target.clone(), method, headers, body);
        let policy = super::policy::for_topic(&sidecar.policies, &record.topic);
        super::policy::check_record(
            policy.as_ref(),
            record.key.as_deref(),
            &record.headers,
            record.value.as_deref(),
        )?;
        let produced = sidecar
            .producer
            .produce(&record)
            .await
            .map_err(super::produce::produce_failed)?;
        metrics::counter!(m::HTTP_ONE_WAY_RECORDS_TOTAL, "route" => target.route).increment(1);
        let status = StatusCode::from_u16(target.status).unwrap_or(StatusCode::NO_CONTENT);
        let mut response = status.into_response();
        let h = response.headers_mut();
        h.insert("x-kafka-partition", HeaderValue::from(produced.partition));
        h.insert("x-kafka-offset", HeaderValue::from(produced.offset));
        Ok(response)
    }
}

/// The record a request produces.
fn record(
    target: ProduceTarget,
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
) -> OutgoingRecord {
    let mut record_headers: Vec<(String, Bytes)> = target
        .headers
        .into_iter()
        .map(|(n, v)| (n, Bytes::from(v)))
        .collect();
    record_headers.extend(super::target::record_headers(headers));
    if let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE) {
        record_headers.push((
            "content-type".to_owned(),
            Bytes::copy_from_slice(ct.as_bytes()),
        ));
    }
    let tombstone = *method == Method::DELETE && body.is_empty();
    OutgoingRecord {
        topic: target.topic,
        partition: None,
        key: target.key.map(Bytes::from),
        value: (!tombstone).then_some(body),
        headers: record_headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ProduceTarget {
        ProduceTarget {
            route: "/d/{id}".into(),
            topic: "t".into(),
            key: Some("42".into()),
            headers: vec![("source".into(), "http".into())],
            status: 204,
        }
    }

    #[test]
    fn key_headers_and_tombstones() {
        let mut h = HeaderMap::new();
        h.insert("x-kafka-header-trace", "abc".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let r = record(target(), &Method::POST, &h, Bytes::from_static(b"{}"));
        assert_eq!(r.key.as_deref(), Some(&b"42"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"{}"[..]));
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["source", "trace", "content-type"]);
        let r = record(target(), &Method::DELETE, &HeaderMap::new(), Bytes::new());
        assert_eq!(r.value, None, "a DELETE without a body is a tombstone");
        let r = record(target(), &Method::PUT, &HeaderMap::new(), Bytes::new());
        assert_eq!(r.value.as_deref(), Some(&b""[..]));
    }
}
