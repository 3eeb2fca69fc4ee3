//! One-way produce routes (the `produce:` section of the routes file): an
//! HTTP request whose body becomes one record, acknowledged by the broker
//! (acks=all) before the caller is answered; nothing waits for a reply.
//!
//! ```yaml
//! produce:
//!   - path: /devices/{device}/commands
//!     methods: [POST, PUT]     # default: POST, PUT, PATCH, DELETE
//!     topic: device-commands
//!     key: "{device}"          # record key template (optional)
//!     headers:                 # record headers, static or from path parameters
//!       source: http
//!     status: 202              # 202 or 204 (default 204)
//! ```
//!
//! Request headers `X-Kafka-Header-<name>` become record headers too, and
//! `Content-Type` becomes the `content-type` header. A `DELETE` without a
//! body produces a tombstone (a null value: a delete on a compacted topic).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::path_pattern::{PathPattern, Template};
use super::routes::{check_topic, parse_methods};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceRouteSpec {
    pub path: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub topic: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub status: Option<u16>,
}

/// A compiled one-way produce route.
#[derive(Debug, Clone)]
pub struct ProduceRoute {
    pattern: PathPattern,
    methods: Vec<http::Method>,
    pub topic: String,
    key: Option<Template>,
    headers: Vec<(String, Template)>,
    /// 202 or 204.
    pub status: u16,
}

/// What a request matched: topic, key and headers filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTarget {
    pub route: String,
    pub topic: String,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub status: u16,
}

impl ProduceRoute {
    pub fn compile(spec: ProduceRouteSpec) -> Result<ProduceRoute, String> {
        let pattern = PathPattern::parse(&spec.path)?;
        check_topic(&spec.topic)?;
        let mut methods = parse_methods(&spec.methods)?;
        if methods.is_empty() {
            methods = vec![
                http::Method::POST,
                http::Method::PUT,
                http::Method::PATCH,
                http::Method::DELETE,
            ];
        }
        if let Some(m) = methods
            .iter()
            .find(|m| matches!(**m, http::Method::GET | http::Method::HEAD))
        {
            return Err(format!("method {m} cannot produce (it has no body)"));
        }
        let key = spec
            .key
            .as_deref()
            .map(|k| Template::parse(k, &pattern, "key template"))
            .transpose()?;
        let headers = spec
            .headers
            .iter()
            .map(|(name, value)| {
                let t = Template::parse(value, &pattern, &format!("header {name:?}"))?;
                Ok((name.clone(), t))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let status = match spec.status {
            None => 204,
            Some(s @ (202 | 204)) => s,
            Some(s) => return Err(format!("status {s}: only 202 or 204")),
        };
        Ok(ProduceRoute {
            pattern,
            methods,
            topic: spec.topic,
            key,
            headers,
            status,
        })
    }
}

/// The first produce route matching the method and path.
pub fn find_produce(
    routes: &[ProduceRoute],
    method: &http::Method,
    path: &str,
) -> Option<ProduceTarget> {
    routes.iter().find_map(|route| {
        if !route.methods.contains(method) {
            return None;
        }
        let params = route.pattern.matches(path)?;
        Some(ProduceTarget {
            route: route.pattern.as_str().to_owned(),
            topic: route.topic.clone(),
            key: route.key.as_ref().map(|t| t.fill(&params)),
            headers: route
                .headers
                .iter()
                .map(|(n, t)| (n.clone(), t.fill(&params)))
                .collect(),
            status: route.status,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> Result<ProduceRoute, String> {
        ProduceRoute::compile(serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn key_and_headers_come_from_the_path() {
        let routes =
            [route("path: /d/{id}/cmd\ntopic: cmds\nkey: \"{id}\"\nheaders:\n  source: http\n  device: \"{id}\"\n").unwrap()];
        let got = find_produce(&routes, &http::Method::PUT, "/d/42/cmd").unwrap();
        assert_eq!(got.topic, "cmds");
        assert_eq!(got.key.as_deref(), Some("42"));
        assert_eq!(
            got.headers,
            vec![
                ("device".to_owned(), "42".to_owned()),
                ("source".to_owned(), "http".to_owned())
            ]
        );
        assert_eq!(got.status, 204);
        assert!(find_produce(&routes, &http::Method::GET, "/d/42/cmd").is_none());
    }

    #[test]
    fn bad_produce_routes_are_refused() {
        assert!(route("path: /d\ntopic: t\nmethods: [GET]\n").is_err());
        assert!(route("path: /d\ntopic: t\nstatus: 200\n").is_err());
        assert!(route("path: /d\ntopic: t\nkey: \"{x}\"\n").is_err());
        let only_post = [route("path: /d\ntopic: t\nmethods: [post]\nstatus: 202\n").unwrap()];
        assert!(find_produce(&only_post, &http::Method::POST, "/d").is_some());
        assert!(find_produce(&only_post, &http::Method::DELETE, "/d").is_none());
    }
}
