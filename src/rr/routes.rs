//! Which HTTP requests become Kafka requests, and on which topics.
//!
//! Routes come from a YAML (or JSON) file:
//!
//! ```yaml
//! routes:
//!   - path: /orders/{id}          # `{name}` matches one segment,
//!     methods: [GET, PUT]         #   `{*name}` the rest of the path
//!     request_topic: orders-requests
//!     reply_topic: orders-responses
//!     timeout: 30                 # seconds the caller waits (default: the global one)
//!     key: "order-{id}"           # record key from path parameters (optional)
//! ```
//!
//! The same file holds SSE streams (`streams:`, see `stream_routes`),
//! one-way produce routes (`produce:`, see `produce_routes`) and cached
//! reads of compacted topics (`cached:`, see `cached_routes`).
//!
//! The first matching route wins. Requests that match none can be routed
//! by headers as kafka-http-proxy does behind nginx: `X-Kafka-Topic` and
//! `X-Kafka-Reply-Topic`, defaulting to `common-requests` and
//! `common-responses`.

use super::cached_routes::{CachedRoute, CachedRouteSpec};
use super::path_pattern::{PathPattern, Template};
use super::produce_routes::{ProduceRoute, ProduceRouteSpec};
use super::stream_routes::{StreamRoute, StreamRouteSpec};
use crate::kafka::wire::topic::{check_topic_name, MAX_TOPIC_NAME_LENGTH};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// One configured route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub path: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub request_topic: String,
    pub reply_topic: String,
    /// Seconds; fractional values allowed.
    #[serde(default)]
    pub timeout: Option<f64>,
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFileSpec {
    #[serde(default)]
    routes: Vec<RouteSpec>,
    #[serde(default)]
    streams: Vec<StreamRouteSpec>,
    #[serde(default)]
    produce: Vec<ProduceRouteSpec>,
    #[serde(default)]
    cached: Vec<CachedRouteSpec>,
}

/// Every route of a routes file, by kind.
#[derive(Debug, Clone, Default)]
pub struct RouteFile {
    /// Request-reply routes.
    pub routes: Vec<Route>,
    /// SSE streams of a topic.
    pub streams: Vec<StreamRoute>,
    /// One-way produce.
    pub produce: Vec<ProduceRoute>,
    /// Cached reads of compacted topics.
    pub cached: Vec<CachedRoute>,
}

impl RouteFile {
    /// Reads a routes file; `timeout` applies where a request-reply route
    /// names none. Errors name the section and index of the bad route.
    pub fn load(path: &Path, default_timeout: Duration) -> Result<RouteFile, RouteError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RouteError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: RouteFileSpec =
            serde_yaml_ng::from_str(&text).map_err(|e| RouteError::Invalid {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        let invalid = |section: &str, i: usize, message: String| RouteError::Invalid {
            path: shown.clone(),
            message: format!("{section}[{i}]: {message}"),
        };
        Ok(RouteFile {
            routes: compile_all(file.routes, |s| Route::compile(s, default_timeout))
                .map_err(|(i, m)| invalid("routes", i, m))?,
            streams: compile_all(file.streams, StreamRoute::compile)
                .map_err(|(i, m)| invalid("streams", i, m))?,
            produce: compile_all(file.produce, ProduceRoute::compile)
                .map_err(|(i, m)| invalid("produce", i, m))?,
            cached: compile_all(file.cached, CachedRoute::compile)
                .map_err(|(i, m)| invalid("cached", i, m))?,
        })
    }
}

fn compile_all<S, R>(
    specs: Vec<S>,
    compile: impl Fn(S) -> Result<R, String>,
) -> Result<Vec<R>, (usize, String)> {
    specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| compile(spec).map_err(|m| (i, m)))
        .collect()
}

/// A route ready to match.
#[derive(Debug, Clone)]
pub struct Route {
    pattern: PathPattern,
    methods: Vec<http::Method>,
    pub request_topic: String,
    pub reply_topic: String,
    pub timeout: Duration,
    key: Option<Template>,
}

/// What a request matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    pub route: String,
    pub request_topic: String,
    pub reply_topic: String,
    pub timeout: Duration,
    pub key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The header route's settings (kafka-http-proxy compatible).
#[derive(Debug, Clone)]
pub struct HeaderRoute {
    pub default_request_topic: String,
    pub default_reply_topic: String,
}

pub const TOPIC_HEADER: &str = "x-kafka-topic";
pub const REPLY_TOPIC_HEADER: &str = "x-kafka-reply-topic";

/// Every route, in order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    header_route: Option<HeaderRoute>,
    default_timeout: Duration,
}

impl RouteTable {
    pub fn new(
        routes: Vec<Route>,
        header_route: Option<HeaderRoute>,
        default_timeout: Duration,
    ) -> Self {
        RouteTable {
            routes,
            header_route,
            default_timeout,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.header_route.is_none()
    }

    /// Every reply topic known before any request (listened from start-up).
    pub fn reply_topics(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.routes.iter().map(|r| r.reply_topic.clone()).collect();
        if let Some(h) = &self.header_route {
            out.insert(h.default_reply_topic.clone());
        }
        out
    }

    /// The route for a request, if any.
    pub fn resolve(
        &self,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Option<RouteTarget> {
        for route in &self.routes {
            if let Some(target) = route.matches(method, path) {
                return Some(target);
            }
        }
        let h = self.header_route.as_ref()?;
        let header = |name: &str, default: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .unwrap_or(default)
                .to_owned()
        };
        Some(RouteTarget {
            route: "header".to_owned(),
            request_topic: header(TOPIC_HEADER, &h.default_request_topic),
            reply_topic: header(REPLY_TOPIC_HEADER, &h.default_reply_topic),
            timeout: self.default_timeout,
            key: None,
        })
    }
}

impl Route {
    pub fn compile(spec: RouteSpec, default_timeout: Duration) -> Result<Route, String> {
        let pattern = PathPattern::parse(&spec.path)?;
        let key = spec
            .key
            .as_deref()
            .map(|k| Template::parse(k, &pattern, "key template"))
            .transpose()?;
        let methods = parse_methods(&spec.methods)?;
        for topic in [&spec.request_topic, &spec.reply_topic] {
            check_topic(topic)?;
        }
        let timeout = match spec.timeout {
            None => default_timeout,
            Some(t) if t.is_finite() && t > 0.0 && t <= 3600.0 => Duration::from_secs_f64(t),
            Some(t) => return Err(format!("timeout {t} is not in (0, 3600] seconds")),
        };
        Ok(Route {
            pattern,
            methods,
            request_topic: spec.request_topic,
            reply_topic: spec.reply_topic,
            timeout,
            key,
        })
    }

    /// The path pattern as written; the metrics label.
    pub fn name(&self) -> &str {
        self.pattern.as_str()
    }

    fn matches(&self, method: &http::Method, path: &str) -> Option<RouteTarget> {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return None;
        }
        let params = self.pattern.matches(path)?;
        Some(RouteTarget {
            route: self.name().to_owned(),
            request_topic: self.request_topic.clone(),
            reply_topic: self.reply_topic.clone(),
            timeout: self.timeout,
            key: self.key.as_ref().map(|t| t.fill(&params)),
        })
    }
}

/// HTTP methods as written in a route (any case).
pub fn parse_methods(methods: &[String]) -> Result<Vec<http::Method>, String> {
    methods
        .iter()
        .map(|m| {
            http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("method {m:?} is not an HTTP method"))
        })
        .collect()
}

/// A topic named in the routes file.
pub fn check_topic(topic: &str) -> Result<(), String> {
    check_topic_name(topic, MAX_TOPIC_NAME_LENGTH)
        .map(|_| ())
        .map_err(|e| format!("topic {topic:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, key: Option<&str>) -> RouteSpec {
        RouteSpec {
            path: path.into(),
            methods: vec![],
            request_topic: "req".into(),
            reply_topic: "rep".into(),
            timeout: None,
            key: key.map(Into::into),
        }
    }

    fn table(routes: Vec<RouteSpec>, header: bool) -> RouteTable {
        RouteTable::new(
            routes
                .into_iter()
                .map(|s| Route::compile(s, Duration::from_secs(30)).unwrap())
                .collect(),
            header.then(|| HeaderRoute {
                default_request_topic: "common-requests".into(),
                default_reply_topic: "common-responses".into(),
            }),
            Duration::from_secs(30),
        )
    }

    #[test]
    fn parameters_fill_the_key_template() {
        let t = table(
            vec![spec("/orders/{id}/items/{*rest}", Some("o-{id}"))],
            false,
        );
        let got = t
            .resolve(
                &http::Method::GET,
                "/orders/4%2F2/items/a/b",
                &http::HeaderMap::new(),
            )
            .unwrap();
        assert_eq!(got.key.as_deref(), Some("o-4/2"));
        assert!(t
            .resolve(&http::Method::GET, "/orders/4", &http::HeaderMap::new())
            .is_none());
        assert!(t
            .resolve(
                &http::Method::GET,
                "/orders//items/x",
                &http::HeaderMap::new()
            )
            .is_none());
    }

    #[test]
    fn methods_restrict_and_first_route_wins() {
        let mut get_only = spec("/a/{x}", None);
        get_only.methods = vec!["get".into()];
        get_only.request_topic = "first".into();
        let t = table(vec![get_only, spec("/a/{y}", None)], false);
        let h = http::HeaderMap::new();
        assert_eq!(
            t.resolve(&http::Method::GET, "/a/1", &h)
                .unwrap()
                .request_topic,
            "first"
        );
        assert_eq!(
            t.resolve(&http::Method::POST, "/a/1", &h)
                .unwrap()
                .request_topic,
            "req"
        );
    }

    #[test]
    fn header_route_uses_kafka_http_proxy_defaults() {
        let t = table(vec![], true);
        let mut h = http::HeaderMap::new();
        let got = t.resolve(&http::Method::POST, "/anything", &h).unwrap();
        assert_eq!(
            (got.request_topic.as_str(), got.reply_topic.as_str()),
            ("common-requests", "common-responses")
        );
        h.insert(TOPIC_HEADER, "orders-requests".parse().unwrap());
        h.insert(REPLY_TOPIC_HEADER, "orders-responses".parse().unwrap());
        let got = t.resolve(&http::Method::POST, "/x", &h).unwrap();
        assert_eq!(got.request_topic, "orders-requests");
        assert_eq!(got.reply_topic, "orders-responses");
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        let d = Duration::from_secs(1);
        assert!(Route::compile(spec("no-slash", None), d).is_err());
        assert!(Route::compile(spec("/a/{*r}/b", None), d).is_err());
        assert!(Route::compile(spec("/a/x{y}", None), d).is_err());
        assert!(Route::compile(spec("/a/{y}", Some("{z}")), d).is_err());
        let mut bad_topic = spec("/a", None);
        bad_topic.request_topic = "bad topic".into();
        assert!(Route::compile(bad_topic, d).is_err());
    }

    #[test]
    fn route_file_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.yaml");
        std::fs::write(
            &path,
            "routes:\n  - path: /orders/{id}\n    methods: [GET]\n    request_topic: o-req\n    reply_topic: o-rep\n    timeout: 2.5\n    key: \"{id}\"\n",
        )
        .unwrap();
        let file = RouteFile::load(&path, Duration::from_secs(30)).unwrap();
        assert_eq!(file.routes[0].timeout, Duration::from_millis(2500));
        std::fs::write(&path, "routes:\n  - path: /x\n    request_topc: a\n").unwrap();
        let err = RouteFile::load(&path, Duration::from_secs(30)).unwrap_err();
        assert!(err.to_string().contains("request_topc"), "{err}");
        std::fs::write(
            &path,
            "streams:\n  - path: /s/{d}\n    topic: t\nproduce:\n  - path: /p\n    topic: t\n  - path: /q\n    topic: \"bad topic\"\n",
        )
        .unwrap();
        let err = RouteFile::load(&path, Duration::from_secs(30)).unwrap_err();
        assert!(err.to_string().contains("produce[1]"), "{err}");
    }
}
