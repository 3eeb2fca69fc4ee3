//! Every frame in `protocol-fixtures/` (captured from real clients and a real
//! broker by `scripts/record-fixtures.py`) decodes with `kafka-protocol` and
//! re-encodes to the very same bytes, so a rewrite that decodes and
//! re-encodes a message changes only what it means to change.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Broker frames that are valid but not in canonical form, and why.
const NON_CANONICAL: &[(&str, &str)] = &[
    (
        "tansu-0.6/upstream-ApiVersions-v3.bin",
        "tansu writes default-valued tagged fields",
    ),
    (
        "tansu-0.6/upstream-ApiVersions-v4.bin",
        "tansu writes default-valued tagged fields",
    ),
    (
        "tansu-0.6/upstream-Fetch-v16.bin",
        "tansu writes an empty node_endpoints tagged field",
    ),
    // The proxy forwards Fetch without endpoints as the broker's own bytes.
    (
        "librdkafka-2.16/response-Fetch-v16.bin",
        "tansu's Fetch v16, passed through",
    ),
    (
        "rdkafka-rust-0.39/response-Fetch-v16.bin",
        "tansu's Fetch v16, passed through",
    ),
];

struct Fixture {
    path: PathBuf,
    label: String,
    kind: String,
    api: ApiKey,
    version: i16,
}

fn fixtures() -> Vec<Fixture> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("protocol-fixtures/") {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let mut parts = stem.splitn(3, '-');
            let (kind, api, version) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let api = ApiKey::iter()
                .find(|k| format!("{k:?}") == api)
                .unwrap_or_else(|| panic!("unknown API in {}", path.display()));
            let version = version.trim_start_matches('v').parse().unwrap();
            let label = format!(
                "{}/{}",
                dir.file_name().unwrap().to_str().unwrap(),
                path.file_name().unwrap().to_str().unwrap()
            );
            out.push(Fixture {
                path,
                label,
                kind: kind.to_owned(),
                api,
                version,
            });
        }
    }
    out.sort_by(|a, b| a.label.cmp(&b.label));
    out
}

fn round_trip(f: &Fixture) -> Result<(Bytes, Bytes), String> {
    let original = Bytes::from(std::fs::read(&f.path).unwrap());
    let mut buf = original.clone();
    let mut out = BytesMut::new();
    if f.kind == "request" {
        let hv = f.api.request_header_version(f.version);
        let header = RequestHeader::decode(&mut buf, hv).map_err(|e| e.to_string())?;
        let body = RequestKind::decode(f.api, &mut buf, f.version).map_err(|e| e.to_string())?;
        header.encode(&mut out, hv).map_err(|e| e.to_string())?;
        body.encode(&mut out, f.version)
            .map_err(|e| e.to_string())?;
    } else {
        let hv = f.api.response_header_version(f.version);
        let header = ResponseHeader::decode(&mut buf, hv).map_err(|e| e.to_string())?;
        let body = ResponseKind::decode(f.api, &mut buf, f.version).map_err(|e| e.to_string())?;
        header.encode(&mut out, hv).map_err(|e| e.to_string())?;
        body.encode(&mut out, f.version)
            .map_err(|e| e.to_string())?;
    }
    if !buf.is_empty() {
        return Err(format!("{} bytes left undecoded", buf.len()));
    }
    Ok((original, out.freeze()))
}

#[test]
fn every_fixture_round_trips_to_the_same_bytes() {
    let all = fixtures();
    assert!(all.len() > 50, "fixtures present: {}", all.len());
    let mut failures = Vec::new();
    for f in &all {
        match round_trip(f) {
            Ok((original, again)) => {
                let exempt = NON_CANONICAL.iter().any(|(label, _)| *label == f.label);
                if exempt {
                    // Still decodes; our encoding is the canonical, shorter one.
                    assert!(
                        again.len() < original.len(),
                        "{} is canonical now: drop the exemption",
                        f.label
                    );
                } else if original != again {
                    let at = original
                        .iter()
                        .zip(again.iter())
                        .position(|(a, b)| a != b)
                        .unwrap_or(original.len().min(again.len()));
                    failures.push(format!("{}: re-encoded bytes differ at byte {at} of {} (re-encoded {}): {:02x?} vs {:02x?}", f.label, original.len(), again.len(), &original[at.saturating_sub(4)..(at + 12).min(original.len())], &again[at.saturating_sub(4)..(at + 12).min(again.len())]));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", f.label)),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn fixtures_cover_every_api_the_proxy_decodes() {
    let all = fixtures();
    let has = |kind: &str, api: ApiKey, min_version: i16| {
        all.iter()
            .any(|f| f.kind == kind && f.api == api && f.version >= min_version)
    };
    // Broker responses the proxy rewrites.
    for (api, min) in [
        (ApiKey::ApiVersions, 0),
        (ApiKey::Metadata, 0),
        (ApiKey::FindCoordinator, 0),
        (ApiKey::DescribeCluster, 0),
        (ApiKey::Produce, 10),
        (ApiKey::Fetch, 16),
    ] {
        assert!(
            has("upstream", api, min),
            "no broker fixture for {api:?} v{min}+"
        );
        assert!(
            has("response", api, min),
            "no client-side fixture for {api:?} v{min}+"
        );
    }
    // Requests whose header (and Produce's acks) the proxy reads, from every client.
    for client in [
        "librdkafka-2.16",
        "kafka-python-3.0",
        "aiokafka-0.14",
        "kafkajs-2.2",
        "rdkafka-rust-0.39",
        "kcat-librdkafka-2.0",
    ] {
        for api in [ApiKey::ApiVersions, ApiKey::Metadata, ApiKey::Produce] {
            assert!(
                all.iter()
                    .any(|f| f.label.starts_with(client) && f.kind == "request" && f.api == api),
                "no {api:?} request fixture from {client}"
            );
        }
    }
}

#[test]
fn request_header_peek_agrees_with_the_decoder_on_every_fixture() {
    use kafka_lfs_proxy::kafka::wire::frame::{expects_response, peek_request_header};
    use kafka_protocol::messages::ProduceRequest;
    for f in fixtures().iter().filter(|f| f.kind == "request") {
        let body = std::fs::read(&f.path).unwrap();
        let peek = peek_request_header(&body).unwrap();
        let mut buf = Bytes::from(body.clone());
        let header =
            RequestHeader::decode(&mut buf, f.api.request_header_version(f.version)).unwrap();
        assert_eq!(peek.api_key, header.request_api_key, "{}", f.label);
        assert_eq!(peek.api_version, header.request_api_version, "{}", f.label);
        assert_eq!(peek.correlation_id, header.correlation_id, "{}", f.label);
        assert_eq!(
            peek.client_id.as_deref(),
            header.client_id.as_deref(),
            "{}",
            f.label
        );
        assert_eq!(
            peek.body_offset,
            Some(body.len() - buf.len()),
            "{}",
            f.label
        );
        if f.api == ApiKey::Produce {
            let produce = ProduceRequest::decode(&mut buf, f.version).unwrap();
            assert_eq!(
                expects_response(&peek, &body).unwrap(),
                produce.acks != 0,
                "{}",
                f.label
            );
        }
    }
}
