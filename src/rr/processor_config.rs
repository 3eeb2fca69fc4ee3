//! The processor's topics, in kafka-http-proxy's formats so its
//! configuration moves over unchanged: a YAML (or JSON) file
//!
//! ```yaml
//! topics:
//!   - request_topic: orders-requests
//!     response_topic: orders-responses     # default {request_topic}-responses
//!     backend_url: http://orders:8080
//!     consumer_group: orders-processors    # default processor-{request_topic}
//!     timeout: 30                          # seconds per backend call
//!     max_retries: 3                       # attempts in all
//!     rate_limit: 100                      # requests per second (optional)
//! max_concurrent_requests: 100
//! dead_letter_topic: failed-requests
//! ```
//!
//! or the `KAFKA_TOPICS` string
//! `name:request_topic,response_topic,backend_url[,timeout[,max_retries[,rate_limit]]]`
//! with `;` between topics. A request's `zilla:reply-to` header wins over
//! `response_topic`.

use crate::kafka::wire::topic::{check_topic_name, MAX_TOPIC_NAME_LENGTH};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// One request topic and the backend that answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub request_topic: String,
    pub response_topic: String,
    pub backend_url: String,
    pub consumer_group: String,
    pub timeout: Duration,
    /// Attempts in all (1 = no retry).
    pub max_retries: u32,
    pub rate_limit: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    pub topics: Vec<TopicConfig>,
    pub max_concurrent_requests: usize,
    pub dead_letter_topic: Option<String>,
    /// `kafka.bootstrap_servers` from the file, used when the environment
    /// names no bootstrap servers.
    pub bootstrap_servers: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

#[derive(Deserialize)]
struct TopicSpec {
    request_topic: String,
    #[serde(default)]
    response_topic: Option<String>,
    backend_url: String,
    #[serde(default)]
    consumer_group: Option<String>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    rate_limit: Option<f64>,
}

#[derive(Deserialize)]
struct KafkaSpec {
    #[serde(default)]
    bootstrap_servers: Option<String>,
}

#[derive(Deserialize)]
struct FileSpec {
    #[serde(default)]
    kafka: Option<KafkaSpec>,
    topics: Vec<TopicSpec>,
    #[serde(default)]
    max_concurrent_requests: Option<usize>,
    #[serde(default)]
    dead_letter_topic: Option<String>,
    /// kafka-http-proxy's; accepted so its files load (see README).
    #[serde(default)]
    #[allow(dead_code)]
    health_check_interval: Option<f64>,
    #[serde(default)]
    #[allow(dead_code)]
    management_port: Option<u16>,
}

const DEFAULT_TIMEOUT: f64 = 30.0;
const DEFAULT_RETRIES: u32 = 3;
const DEFAULT_CONCURRENCY: usize = 100;

impl ProcessorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let err = |message: String| ConfigError {
            source_name: name.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let spec: FileSpec = serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?;
        let topics = spec
            .topics
            .into_iter()
            .enumerate()
            .map(|(i, t)| topic(t).map_err(|m| err(format!("topics[{i}]: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let config = ProcessorConfig {
            topics,
            max_concurrent_requests: spec.max_concurrent_requests.unwrap_or(DEFAULT_CONCURRENCY),
            dead_letter_topic: spec.dead_letter_topic.filter(|t| !t.is_empty()),
            bootstrap_servers: spec.kafka.and_then(|k| k.bootstrap_servers),
        };
        config.check().map_err(err)?;
        Ok(config)
    }

    /// kafka-http-proxy's `KAFKA_TOPICS` string.
    pub fn from_topics_string(value: &str) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError {
            source_name: "KAFKA_TOPICS".into(),
            message,
        };
        let mut topics = Vec::new();
        for (i, entry) in value
            .split(';')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (_, fields) = entry
                .split_once(':')
                .ok_or_else(|| err(format!("entry {i} {entry:?}: expected name:fields")))?;
            let f: Vec<&str> = fields.split(',').map(str::trim).collect();
            if f.len() < 3 || f.len() > 6 {
                return Err(err(format!(
                    "entry {i}: expected request_topic,response_topic,backend_url[,timeout[,max_retries[,rate_limit]]]"
                )));
            }
            let number = |k: usize, what: &str| -> Result<Option<f64>, ConfigError> {
                f.get(k)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse::<f64>()
                            .map_err(|_| err(format!("entry {i}: {what} {s:?} is not a number")))
                    })
                    .transpose()
            };
            let spec = TopicSpec {
                request_topic: f[0].to_owned(),
                response_topic: Some(f[1].to_owned()).filter(|s| !s.is_empty()),
                backend_url: f[2].to_owned(),
                consumer_group: None,
                timeout: number(3, "timeout")?,
                max_retries: number(4, "max_retries")?.map(|n| n as u32),
                rate_limit: number(5, "rate_limit")?,
            };
            topics.push(topic(spec).map_err(|m| err(format!("entry {i}: {m}")))?);
        }
        let config = ProcessorConfig {
            topics,
            max_concurrent_requests: DEFAULT_CONCURRENCY,
            dead_letter_topic: None,
            bootstrap_servers: None,
        };
        config.check().map_err(err)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("no topics configured".into());
        }
        if self.max_concurrent_requests == 0 {
            return Err("max_concurrent_requests must be at least 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.topics {
            if !seen.insert(&t.request_topic) {
                return Err(format!("request topic {} is listed twice", t.request_topic));
            }
        }
        Ok(())
    }

    /// The configuration of a request topic.
    pub fn topic(&self, name: &str) -> Option<&TopicConfig> {
        self.topics.iter().find(|t| t.request_topic == name)
    }
}

fn topic(spec: TopicSpec) -> Result<TopicConfig, String> {
    for t in [Some(&spec.request_topic), spec.response_topic.as_ref()]
        .into_iter()
        .flatten()
    {
        check_topic_name(t, MAX_TOPIC_NAME_LENGTH).map_err(|e| format!("topic {t:?}: {e}"))?;
    }
    let url = reqwest::Url::parse(&spec.backend_url)
        .map_err(|e| format!("backend_url {:?}: {e}", spec.backend_url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("backend_url {:?} is not http(s)", spec.backend_url));
    }
    let timeout = spec.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= 3600.0) {
        return Err(format!("timeout {timeout} is not in (0, 3600] seconds"));
    }
    if let Some(r) = spec.rate_limit {
        if !(r.is_finite() && r > 0.0) {
            return Err(format!("rate_limit {r} must be above 0"));
        }
    }
    Ok(TopicConfig {
        response_topic: spec
            .response_topic
            .unwrap_or_else(|| format!("{}-responses", spec.request_topic)),
        consumer_group: spec
            .consumer_group
            .unwrap_or_else(|| format!("processor-{}", spec.request_topic)),
        request_topic: spec.request_topic,
        backend_url: spec.backend_url.trim_end_matches('/').to_owned(),
        timeout: Duration::from_secs_f64(timeout),
        max_retries: spec.max_retries.unwrap_or(DEFAULT_RETRIES).max(1),
        rate_limit: spec.rate_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_http_proxy_file_loads_with_its_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("processor_config.yaml");
        std::fs::write(
            &path,
            "kafka:\n  bootstrap_servers: kafka:9092\ntopics:\n  - request_topic: orders-requests\n    response_topic: orders-responses\n    backend_url: http://orders-backend:8080/\n    consumer_group: orders-processors\n    timeout: 30\n    max_retries: 3\n    rate_limit: 100\n  - request_topic: users-requests\n    backend_url: http://users:8080\nmax_concurrent_requests: 200\nhealth_check_interval: 30\ndead_letter_topic: failed-requests\nmanagement_port: 8081\n",
        )
        .unwrap();
        let c = ProcessorConfig::load(&path).unwrap();
        assert_eq!(c.max_concurrent_requests, 200);
        assert_eq!(c.dead_letter_topic.as_deref(), Some("failed-requests"));
        assert_eq!(c.bootstrap_servers.as_deref(), Some("kafka:9092"));
        assert_eq!(c.topics[0].backend_url, "http://orders-backend:8080");
        assert_eq!(c.topics[0].rate_limit, Some(100.0));
        let users = c.topic("users-requests").unwrap();
        assert_eq!(users.response_topic, "users-requests-responses");
        assert_eq!(users.consumer_group, "processor-users-requests");
        assert_eq!(users.timeout, Duration::from_secs(30));
        assert_eq!(users.max_retries, 3);
    }

    #[test]
    fn kafka_topics_string_parses() {
        let c = ProcessorConfig::from_topics_string(
            "orders:orders-requests,orders-responses,http://orders:8080,30,3;users:users-requests,users-responses,http://users:8080,25,2,50",
        )
        .unwrap();
        assert_eq!(c.topics.len(), 2);
        assert_eq!(c.topics[1].timeout, Duration::from_secs(25));
        assert_eq!(c.topics[1].max_retries, 2);
        assert_eq!(c.topics[1].rate_limit, Some(50.0));
        assert!(ProcessorConfig::from_topics_string("x:a,b").is_err());
        assert!(ProcessorConfig::from_topics_string("x:a,b,ftp://c").is_err());
        assert!(ProcessorConfig::from_topics_string("x:a,b,http://c,abc").is_err());
    }
}
