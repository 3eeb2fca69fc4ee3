//! `inspect-capture`: decode captured responses and list every broker
//! address a client was shown.
//!
//! Every response is decoded with `kafka-protocol` (a frame that does not
//! decode is an error). Addresses are found generically in the decoded
//! value's debug form, as each `host` followed by its `port`, so a response
//! type nobody thought of is still checked.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Decodable;

use crate::capture::{parse_name, Direction};

#[derive(Debug, Default)]
pub struct Report {
    pub responses: usize,
    pub addresses: BTreeSet<String>,
    pub leaks: Vec<String>,
    pub errors: Vec<String>,
}

/// Decodes every captured response in `dir`.
pub fn inspect(dir: &Path, forbid: &[String]) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let Some(parsed) = parse_name(&name) else {
            continue;
        };
        // Only what clients were sent; `upstream` files are the broker's.
        if parsed.direction != Direction::Response {
            continue;
        }
        report.responses += 1;
        let body = Bytes::from(std::fs::read(dir.join(&name))?);
        let text = match decode(parsed.api_key, parsed.api_version, body) {
            Ok(text) => text,
            Err(e) => {
                report.errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        for address in addresses_in(&text) {
            if forbid.iter().any(|f| matches(f, &address)) {
                report.leaks.push(format!("{name}: {address}"));
            }
            report.addresses.insert(address);
        }
    }
    Ok(report)
}

fn decode(api_key: i16, version: i16, mut body: Bytes) -> anyhow::Result<String> {
    let api =
        ApiKey::try_from(api_key).map_err(|_| anyhow::anyhow!("unknown api key {api_key}"))?;
    ResponseHeader::decode(&mut body, api.response_header_version(version))?;
    // A broker answers an unsupported ApiVersions request in v0.
    let version = if api == ApiKey::ApiVersions && body.get(..2) == Some(&[0, 35]) {
        0
    } else {
        version
    };
    let response = ResponseKind::decode(api, &mut body, version)?;
    if !body.is_empty() {
        anyhow::bail!("{} bytes left after the response", body.len());
    }
    Ok(format!("{response:?}"))
}

/// `host:port` pairs in a debug string: each `host: "…"` with the first
/// `port: N` after it and before the next `host:`.
pub fn addresses_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("host: ") {
        rest = &rest[i + 6..];
        let host = rest.trim_start_matches('"');
        let host = &host[..host.find('"').unwrap_or(0)];
        let next_host = rest.find("host: ").unwrap_or(rest.len());
        if let Some(p) = rest[..next_host].find("port: ") {
            let digits: String = rest[p + 6..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-')
                .collect();
            out.push(format!("{host}:{digits}"));
        }
    }
    out
}

fn matches(pattern: &str, address: &str) -> bool {
    let (ph, pp) = pattern.rsplit_once(':').unwrap_or((pattern, "*"));
    let (ah, ap) = address.rsplit_once(':').unwrap_or((address, ""));
    (ph == "*" || ph == ah) && (pp == "*" || pp == ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_pairs_and_matches_patterns() {
        let text = r#"Metadata(MetadataResponse { brokers: [MetadataResponseBroker { node_id: BrokerId(1), host: "a", port: 9092, rack: None }, MetadataResponseBroker { node_id: BrokerId(2), host: "b", port: 19002, rack: None }], acls: [Acl { host: "*" }] }"#;
        assert_eq!(addresses_in(text), vec!["a:9092", "b:19002"]);
        assert!(matches("a:9092", "a:9092"));
        assert!(matches("*:9092", "a:9092"));
        assert!(matches("a:*", "a:1"));
        assert!(!matches("a:9092", "b:9092"));
    }
}
