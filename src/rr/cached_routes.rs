//! Cached read routes (the `cached:` section of the routes file): `GET`
//! answers from an in-memory view of a compacted topic, the latest value
//! per key, as Zilla's http-kafka `fetch` with merge does.
//!
//! ```yaml
//! cached:
//!   - path: /devices/{device}/config
//!     topic: device-config     # a compacted topic
//!     key: "{device}"          # one key's latest value; omit: every key's, merged
//! ```

use serde::Deserialize;

use super::path_pattern::{PathPattern, Template};
use super::routes::check_topic;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedRouteSpec {
    pub path: String,
    pub topic: String,
    #[serde(default)]
    pub key: Option<String>,
}

/// A compiled cached read route.
#[derive(Debug, Clone)]
pub struct CachedRoute {
    pattern: PathPattern,
    pub topic: String,
    key: Option<Template>,
}

/// What a request matched: the topic and, for one key, the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedTarget {
    pub route: String,
    pub topic: String,
    /// `None`: every key, merged.
    pub key: Option<Vec<u8>>,
}

impl CachedRoute {
    pub fn compile(spec: CachedRouteSpec) -> Result<CachedRoute, String> {
        let pattern = PathPattern::parse(&spec.path)?;
        check_topic(&spec.topic)?;
        let key = spec
            .key
            .as_deref()
            .map(|k| Template::parse(k, &pattern, "key template"))
            .transpose()?;
        Ok(CachedRoute {
            pattern,
            topic: spec.topic,
            key,
        })
    }
}

/// The first cached route matching a `GET` (or `HEAD`) of `path`.
pub fn find_cached(routes: &[CachedRoute], path: &str) -> Option<CachedTarget> {
    routes.iter().find_map(|route| {
        let params = route.pattern.matches(path)?;
        Some(CachedTarget {
            route: route.pattern.as_str().to_owned(),
            topic: route.topic.clone(),
            key: route.key.as_ref().map(|t| t.fill(&params).into_bytes()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_or_all_keys() {
        let spec = |y: &str| CachedRoute::compile(serde_yaml_ng::from_str(y).unwrap());
        let routes = [
            spec("path: /d/{id}/config\ntopic: cfg\nkey: \"dev-{id}\"\n").unwrap(),
            spec("path: /d\ntopic: cfg\n").unwrap(),
        ];
        let one = find_cached(&routes, "/d/7/config").unwrap();
        assert_eq!(one.key.as_deref(), Some(&b"dev-7"[..]));
        assert_eq!(find_cached(&routes, "/d").unwrap().key, None);
        assert!(find_cached(&routes, "/x").is_none());
        assert!(spec("path: /d/{id}\ntopic: cfg\nkey: \"{other}\"\n").is_err());
    }
}
