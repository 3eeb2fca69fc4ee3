//! What the processor does with each request record: call the HTTP backend
//! (retries with back-off, within the request's deadline), produce the
//! reply, dead-letter what cannot be answered.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Processor;
use crate::backoff::Backoff;
use crate::kafka::client::producer::OutgoingRecord;
use crate::kafka::client::records::ConsumedRecord;
use crate::kafka::wire::topic::{check_topic_name, MAX_TOPIC_NAME_LENGTH};
use crate::metrics as m;
use crate::rr::processor_config::TopicConfig;
use crate::rr::trace_context::{TraceContext, TRACEPARENT, TRACESTATE};
use crate::rr::wire;

impl Processor {
    /// One request, from record to reply.
    pub(super) async fn handle(&self, record: ConsumedRecord) {
        let started = Instant::now();
        let topic = record.topic.to_string();
        let Some(config) = self.config.topic(&topic) else {
            return;
        };
        let _busy = m::GaugeGuard::increment(m::PROCESSOR_IN_FLIGHT);
        let outcome = self.serve(config, &record).await;
        metrics::counter!(m::PROCESSOR_REQUESTS_TOTAL, "topic" => topic.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!(m::PROCESSOR_SECONDS, "topic" => topic)
            .record(started.elapsed().as_secs_f64());
    }

    async fn serve(&self, config: &TopicConfig, record: &ConsumedRecord) -> &'static str {
        let Some(id) = record
            .header_str(wire::CORRELATION_ID)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
        else {
            tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, "request without a correlation id; dead-lettered");
            self.dead_letter(record, "no_correlation_id").await;
            return "invalid";
        };
        let reply_to = record
            .header_str(wire::REPLY_TO)
            .filter(|t| check_topic_name(t, MAX_TOPIC_NAME_LENGTH).is_ok())
            .unwrap_or(&config.response_topic)
            .to_owned();
        let deadline = record
            .header_str(wire::DEADLINE)
            .and_then(|d| d.trim().parse::<i64>().ok());
        if deadline.is_some_and(|d| wire::now_ms() >= d) {
            metrics::counter!(m::PROCESSOR_EXPIRED_TOTAL, "topic" => config.request_topic.clone())
                .increment(1);
            tracing::info!(correlation_id = id, topic = %record.topic, "request past its deadline; dropped unsent");
            return "expired";
        }
        // This hop's span: sent to the backend and on the reply.
        let trace = TraceContext::forward(record.header(TRACEPARENT), record.header(TRACESTATE));
        let outcome = self
            .call_backend(config, record, &id, deadline, &trace)
            .await;
        let (status, headers, body, failure) = match outcome {
            BackendOutcome::Answered {
                status,
                headers,
                body,
            } => {
                let failure = (status >= 500).then_some("backend_status");
                (status, headers, body, failure)
            }
            BackendOutcome::GaveUp {
                status,
                code,
                message,
            } => {
                let body = serde_json::json!({
                    "code": code,
                    "message": message,
                    "request_id": id,
                })
                .to_string();
                (
                    status,
                    vec![
                        (
                            "content-type".to_owned(),
                            Bytes::from_static(b"application/json"),
                        ),
                        (wire::ERROR.to_owned(), Bytes::from_static(code.as_bytes())),
                    ],
                    Bytes::from(body),
                    Some(code),
                )
            }
            BackendOutcome::Expired => {
                metrics::counter!(m::PROCESSOR_EXPIRED_TOTAL, "topic" => config.request_topic.clone())
                    .increment(1);
                self.dead_letter(record, "deadline_passed").await;
                return "expired";
            }
        };
        let mut reply_headers = vec![
            (wire::CORRELATION_ID.to_owned(), Bytes::from(id.clone())),
            (wire::STATUS.to_owned(), Bytes::from(status.to_string())),
        ];
        if let Some(d) = record.header(wire::REQUEST_DIGEST) {
            reply_headers.push((wire::REQUEST_DIGEST.to_owned(), Bytes::copy_from_slice(d)));
        }
        reply_headers.extend(trace.headers());
        reply_headers.extend(
            headers
                .into_iter()
                .filter(|(name, _)| !TraceContext::is_trace_header(name)),
        );
        let reply = OutgoingRecord {
            topic: reply_to.clone(),
            partition: None,
            key: record.key.clone(),
            value: Some(body),
            headers: reply_headers,
        };
        let replied = self.producer.produce(&reply).await;
        if let Err(error) = &replied {
            tracing::error!(%error, correlation_id = id, trace_id = %trace.parent.trace_id(), reply_to, "cannot produce the reply");
        }
        match (failure, replied) {
            (Some(code), _) => {
                self.dead_letter(record, code).await;
                "failed"
            }
            (None, Err(_)) => {
                self.dead_letter(record, "reply_not_produced").await;
                "failed"
            }
            (None, Ok(_)) => "ok",
        }
    }

    async fn call_backend(
        &self,
        config: &TopicConfig,
        record: &ConsumedRecord,
        id: &str,
        deadline: Option<i64>,
        trace: &TraceContext,
    ) -> BackendOutcome {
        let method = record
            .header_str(wire::METHOD)
            .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(reqwest::Method::POST);
        let path = record
            .header_str(wire::PATH)
            .filter(|p| p.starts_with('/'))
            .unwrap_or("/");
        let url = format!("{}{}", config.backend_url, path);
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &record.headers {
            let lower = name.to_ascii_lowercase();
            let Some(value) = value else { continue };
            if !wire::is_end_to_end(&lower)
                || lower == "idempotency-key"
                || lower == wire::SUBJECT_HEADER
                || TraceContext::is_trace_header(&lower)
            {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(lower.as_bytes()),
                reqwest::header::HeaderValue::from_bytes(value),
            ) {
                headers.append(n, v);
            }
        }
        if let Ok(v) = reqwest::header::HeaderValue::from_str(id) {
            headers.insert("x-correlation-id", v);
        }
        for (name, value) in &trace.http_headers() {
            headers.insert(name, value.clone());
        }
        if let Some(subject) = record
            .header(wire::IDENTITY)
            .and_then(|s| reqwest::header::HeaderValue::from_bytes(s).ok())
        {
            headers.insert(wire::SUBJECT_HEADER, subject);
        }
        let body = record.value.clone().unwrap_or_default();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut timeout = config.timeout;
            if let Some(d) = deadline {
                let left = d - wire::now_ms();
                if left <= 0 {
                    return BackendOutcome::Expired;
                }
                timeout = timeout.min(Duration::from_millis(left as u64));
            }
            if let Some(rate) = self.rate.get(&config.request_topic) {
                rate.wait().await;
            }
            let started = Instant::now();
            let result = self
                .http
                .request(method.clone(), &url)
                .headers(headers.clone())
                .body(body.clone())
                .timeout(timeout)
                .send()
                .await;
            let result = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response_headers(response.headers());
                    match read_body(response, self.kafka.max_frame_size).await {
                        Ok(body) => Ok((status, headers, body)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            metrics::histogram!(m::PROCESSOR_BACKEND_SECONDS, "topic" => config.request_topic.clone())
                .record(started.elapsed().as_secs_f64());
            let give_up = attempt >= config.max_retries
                || deadline
                    .is_some_and(|d| wire::now_ms() + backoff.nominal().as_millis() as i64 >= d);
            match result {
                Ok((status, headers, body)) if status < 500 || give_up => {
                    return BackendOutcome::Answered {
                        status,
                        headers,
                        body,
                    }
                }
                Ok((status, ..)) => {
                    tracing::debug!(status, attempt, url, "backend 5xx; retrying");
                }
                Err(error) if give_up => {
                    tracing::warn!(%error, attempt, url, correlation_id = id, "backend call failed; giving up");
                    return if error.is_timeout() {
                        BackendOutcome::GaveUp {
                            status: 504,
                            code: "backend_timeout",
                            message: format!("the backend did not answer within {timeout:?} ({attempt} attempts)"),
                        }
                    } else {
                        BackendOutcome::GaveUp {
                            status: 502,
                            code: "backend_unavailable",
                            message: format!(
                                "the backend could not be reached ({attempt} attempts)"
                            ),
                        }
                    };
                }
                Err(error) => {
                    tracing::debug!(%error, attempt, url, "backend call failed; retrying");
                }
            }
            metrics::counter!(m::PROCESSOR_RETRIES_TOTAL, "topic" => config.request_topic.clone())
                .increment(1);
            tokio::time::sleep(backoff.next_wait()).await;
        }
    }

    async fn dead_letter(&self, record: &ConsumedRecord, reason: &'static str) {
        let Some(topic) = &self.config.dead_letter_topic else {
            return;
        };
        let mut headers: Vec<(String, Bytes)> = record
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.clone(), v.clone()?)))
            .collect();
        headers.extend([
            (
                wire::ERROR.to_owned(),
                Bytes::from_static(reason.as_bytes()),
            ),
            (
                wire::SOURCE_TOPIC.to_owned(),
                Bytes::from(record.topic.to_string()),
            ),
            (
                wire::SOURCE_PARTITION.to_owned(),
                Bytes::from(record.partition.to_string()),
            ),
            (
                wire::SOURCE_OFFSET.to_owned(),
                Bytes::from(record.offset.to_string()),
            ),
        ]);
        let letter = OutgoingRecord {
            topic: topic.clone(),
            partition: None,
            key: record.key.clone(),
            value: record.value.clone(),
            headers,
        };
        match self.producer.produce(&letter).await {
            Ok(_) => {
                metrics::counter!(m::PROCESSOR_DEAD_LETTERS_TOTAL, "reason" => reason).increment(1)
            }
            Err(error) => {
                tracing::error!(%error, topic, reason, source_topic = %record.topic, offset = record.offset, "cannot write the dead letter")
            }
        }
    }
}

enum BackendOutcome {
    Answered {
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
    },
    GaveUp {
        status: u16,
        code: &'static str,
        message: String,
    },
    Expired,
}

fn response_headers(headers: &reqwest::header::HeaderMap) -> Vec<(String, Bytes)> {
    let mut http = http::HeaderMap::new();
    for (n, v) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n.as_str().as_bytes()),
            http::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            http.append(n, v);
        }
    }
    wire::http_headers_to_record(&http, &[])
}

/// The body, up to `limit` bytes (a reply must fit in one record).
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Bytes, reqwest::Error> {
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > limit {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}
