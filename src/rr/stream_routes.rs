//! SSE stream routes (the `streams:` section of the routes file): a path
//! that streams a topic's records to an `EventSource`.
//!
//! ```yaml
//! streams:
//!   - path: /devices/{device}/events
//!     topic: device-events
//!     key: "{device}"        # only records with this key (optional)
//!     headers:               # only records whose headers have these values
//!       tenant: acme         #   (static or from path parameters)
//!     event: reading         # the SSE event type of a record (default: message)
//!     start: latest          # a stream without Last-Event-ID: latest | earliest
//!     lfs: envelope          # envelope | link | inline (LFS records)
//!     inline_max_bytes: 1048576
//! ```
//!
//! Filters compare bytes: the key as UTF-8 text, header values as sent.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::path_pattern::{PathParams, PathPattern, Template};
use super::routes::check_topic;
use crate::kafka::client::consumer::StartAt;

/// What an LFS envelope becomes in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LfsDelivery {
    /// The envelope JSON, as stored in Kafka.
    #[default]
    Envelope,
    /// The envelope JSON with a `download` object (how to fetch it from
    /// `/lfs/download`).
    Link,
    /// The verified object when it is at most `inline_max_bytes`, else as
    /// `link`.
    Inline,
}

/// Where a stream without `Last-Event-ID` begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StreamStart {
    #[default]
    Latest,
    Earliest,
}

impl StreamStart {
    pub fn start_at(self) -> StartAt {
        match self {
            StreamStart::Latest => StartAt::Latest,
            StreamStart::Earliest => StartAt::Earliest,
        }
    }
}

const DEFAULT_INLINE_MAX: u64 = 1 << 20;
/// Largest `inline_max_bytes`: an inlined object is held in memory and
/// sent as base64 text.
const MAX_INLINE_MAX: u64 = 16 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRouteSpec {
    pub path: String,
    pub topic: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub start: StreamStart,
    #[serde(default)]
    pub lfs: LfsDelivery,
    #[serde(default)]
    pub inline_max_bytes: Option<u64>,
}

/// A compiled stream route.
#[derive(Debug, Clone)]
pub struct StreamRoute {
    pattern: PathPattern,
    pub topic: String,
    key: Option<Template>,
    headers: Vec<(String, Template)>,
    pub event: String,
    pub start: StreamStart,
    pub lfs: LfsDelivery,
    pub inline_max_bytes: u64,
}

/// What a stream request matched: the route and its filters, filled.
#[derive(Debug, Clone)]
pub struct StreamTarget<'a> {
    pub route: &'a StreamRoute,
    pub filter: RecordFilter,
}

/// Which records a stream delivers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RecordFilter {
    pub fn accepts<'h>(
        &self,
        key: Option<&[u8]>,
        mut header: impl FnMut(&str) -> Option<&'h [u8]>,
    ) -> bool {
        if let Some(want) = &self.key {
            if key != Some(want.as_slice()) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, want)| header(name) == Some(want.as_slice()))
    }
}

/// An SSE event type: no line break, not empty.
fn check_event_type(event: &str) -> Result<(), String> {
    if event.is_empty() || event.contains(['\r', '\n']) {
        return Err(format!("event {event:?} must be one non-empty line"));
    }
    Ok(())
}

impl StreamRoute {
    pub fn compile(spec: StreamRouteSpec) -> Result<StreamRoute, String> {
        let pattern = PathPattern::parse(&spec.path)?;
        check_topic(&spec.topic)?;
        let key = spec
            .key
            .as_deref()
            .map(|k| Template::parse(k, &pattern, "key filter"))
            .transpose()?;
        let headers = spec
            .headers
            .iter()
            .map(|(name, value)| {
                let t = Template::parse(value, &pattern, &format!("header filter {name:?}"))?;
                Ok((name.clone(), t))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let event = spec.event.unwrap_or_else(|| "message".to_owned());
        check_event_type(&event)?;
        let inline_max_bytes = spec.inline_max_bytes.unwrap_or(DEFAULT_INLINE_MAX);
        if inline_max_bytes > MAX_INLINE_MAX {
            return Err(format!(
                "inline_max_bytes {inline_max_bytes} is over {MAX_INLINE_MAX}"
            ));
        }
        Ok(StreamRoute {
            pattern,
            topic: spec.topic,
            key,
            headers,
            event,
            start: spec.start,
            lfs: spec.lfs,
            inline_max_bytes,
        })
    }

    /// The path pattern as written; the metrics label.
    pub fn name(&self) -> &str {
        self.pattern.as_str()
    }

    fn filter(&self, params: &PathParams) -> RecordFilter {
        RecordFilter {
            key: self.key.as_ref().map(|t| t.fill(params).into_bytes()),
            headers: self
                .headers
                .iter()
                .map(|(n, t)| (n.clone(), t.fill(params).into_bytes()))
                .collect(),
        }
    }
}

/// The first stream route matching `path`.
pub fn find_stream<'a>(routes: &'a [StreamRoute], path: &str) -> Option<StreamTarget<'a>> {
    routes.iter().find_map(|route| {
        let params = route.pattern.matches(path)?;
        Some(StreamTarget {
            filter: route.filter(&params),
            route,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> StreamRouteSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn filters_are_filled_from_the_path() {
        let route = StreamRoute::compile(spec(
            "path: /d/{device}\ntopic: t\nkey: \"dev-{device}\"\nheaders:\n  tenant: acme\n  device: \"{device}\"\n",
        ))
        .unwrap();
        let routes = [route];
        let target = find_stream(&routes, "/d/7").unwrap();
        assert_eq!(target.filter.key.as_deref(), Some(&b"dev-7"[..]));
        let headers = [("tenant", &b"acme"[..]), ("device", b"7")];
        let lookup = |n: &str| headers.iter().find(|(h, _)| *h == n).map(|(_, v)| *v);
        assert!(target.filter.accepts(Some(b"dev-7"), lookup));
        assert!(!target.filter.accepts(Some(b"dev-8"), lookup));
        assert!(!target.filter.accepts(None, lookup));
        assert!(!target.filter.accepts(Some(b"dev-7"), |_| None));
        assert!(find_stream(&routes, "/d").is_none());
    }

    #[test]
    fn bad_stream_routes_are_refused() {
        let bad = [
            "path: /d/{x}\ntopic: t\nkey: \"{y}\"\n",
            "path: /d\ntopic: \"bad topic\"\n",
            "path: /d\ntopic: t\nevent: \"a\\nb\"\n",
            "path: /d\ntopic: t\ninline_max_bytes: 999999999\n",
        ];
        for yaml in bad {
            assert!(StreamRoute::compile(spec(yaml)).is_err(), "{yaml}");
        }
        assert!(
            serde_yaml_ng::from_str::<StreamRouteSpec>("path: /d\ntopic: t\nlfs: raw\n").is_err()
        );
    }
}
