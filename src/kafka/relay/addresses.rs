//! Broker addresses: clients must only ever learn the proxy's addresses.
//!
//! Upstream node `N` is served at `advertised_host : port_base + N`. The
//! mapping is a pure function of the node id, so every replica of the proxy
//! advertises the same addresses and a client can reconnect to any of them.
//! Node ids are kept as they are; only host and port change, so leader ids,
//! replica lists and `current_leader` fields stay valid without rewriting.
//!
//! Responses that name brokers, and are therefore decoded and rewritten:
//!
//! | API              | versions | field                                   |
//! |------------------|----------|-----------------------------------------|
//! | Metadata         | all      | `brokers[]`                             |
//! | FindCoordinator  | v0–v3    | top-level `node_id`, `host`, `port`     |
//! | FindCoordinator  | v4+      | `coordinators[]`                        |
//! | DescribeCluster  | all      | `brokers[]`                             |
//! | Produce          | v10+     | `node_endpoints[]` (KIP-951)            |
//! | Fetch            | v16+     | `node_endpoints[]` (KIP-951)            |
//! | ShareFetch       | all      | `node_endpoints[]` (KIP-932)            |
//! | ShareAcknowledge | all      | `node_endpoints[]` (KIP-932)            |
//!
//! The KRaft quorum RPCs also name endpoints, of controllers the proxy does
//! not serve; `versions::proxy_range` withholds them instead.
//!
//! Every rewrite also reports the upstream address of each node it saw, so
//! the broker listeners know where node `N` lives and can be bound before
//! the rewritten response reaches the client.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeClusterResponse, FetchResponse, FindCoordinatorResponse,
    MetadataResponse, ProduceResponse, ResponseHeader, ShareAcknowledgeResponse,
    ShareFetchResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::kafka::wire::frame::Frame;

/// An upstream broker as the upstream cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamBroker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

impl UpstreamBroker {
    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("node id {node_id} cannot be served: port base {base} + node id is not a valid port")]
    PortOutOfRange { node_id: i32, base: u16 },
    #[error("cannot decode {api:?} v{version} response: {source}")]
    Decode {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
    #[error("cannot encode {api:?} v{version} response: {source}")]
    Encode {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
}

/// Where each upstream node lives, and where the proxy serves it.
#[derive(Debug)]
pub struct BrokerAddressMap {
    advertised_host: StrBytes,
    port_base: u16,
    upstream: RwLock<HashMap<i32, UpstreamBroker>>,
}

impl BrokerAddressMap {
    pub fn new(advertised_host: &str, port_base: u16) -> Self {
        BrokerAddressMap {
            advertised_host: StrBytes::from_string(advertised_host.to_owned()),
            port_base,
            upstream: RwLock::new(HashMap::new()),
        }
    }

    pub fn advertised_host(&self) -> &str {
        self.advertised_host.as_str()
    }

    /// The port at which the proxy serves upstream node `node_id`.
    pub fn advertised_port(&self, node_id: i32) -> Result<u16, AddressError> {
        let port = self.port_base as i64 + node_id as i64;
        if node_id < 0 || port > u16::MAX as i64 {
            return Err(AddressError::PortOutOfRange {
                node_id,
                base: self.port_base,
            });
        }
        Ok(port as u16)
    }

    /// The node id served at `port`, if `port` is in the broker range.
    pub fn node_for_port(&self, port: u16) -> Option<i32> {
        port.checked_sub(self.port_base).map(i32::from)
    }

    /// The upstream address of a node, when it has been seen.
    pub fn upstream(&self, node_id: i32) -> Option<UpstreamBroker> {
        self.upstream.read().ok()?.get(&node_id).cloned()
    }

    /// Records where upstream nodes live.
    pub fn learn(&self, brokers: &[UpstreamBroker]) {
        if brokers.is_empty() {
            return;
        }
        if let Ok(mut map) = self.upstream.write() {
            for b in brokers {
                if map.get(&b.node_id) != Some(b) {
                    tracing::info!(node_id = b.node_id, upstream = %b.address(), "learned upstream broker");
                    map.insert(b.node_id, b.clone());
                }
            }
        }
    }

    /// Replaces one endpoint with the proxy's, remembering the upstream one.
    fn rewrite_endpoint(
        &self,
        node_id: BrokerId,
        host: &mut StrBytes,
        port: &mut i32,
        seen: &mut Vec<UpstreamBroker>,
    ) -> Result<(), AddressError> {
        let node_id = node_id.0;
        if node_id < 0 {
            return Ok(());
        }
        let advertised = self.advertised_port(node_id)?;
        seen.push(UpstreamBroker {
            node_id,
            host: host.as_str().to_owned(),
            port: *port,
        });
        *host = self.advertised_host.clone();
        *port = advertised as i32;
        Ok(())
    }
}

/// Whether a response to this request must be decoded to rewrite addresses.
pub fn carries_addresses(api: ApiKey, version: i16) -> bool {
    match api {
        ApiKey::Metadata
        | ApiKey::FindCoordinator
        | ApiKey::DescribeCluster
        | ApiKey::ShareFetch
        | ApiKey::ShareAcknowledge => true,
        ApiKey::Produce => version >= 10,
        ApiKey::Fetch => version >= 16,
        _ => false,
    }
}

/// A response after address rewriting.
#[derive(Debug)]
pub struct Rewritten {
    /// The frame to send to the client: the original bytes when nothing
    /// named a broker, a re-encoded frame otherwise.
    pub frame: Frame,
    /// Upstream brokers named in the response.
    pub brokers: Vec<UpstreamBroker>,
}

/// Rewrites broker coordinates in a response body (header included).
pub fn rewrite_response(
    map: &BrokerAddressMap,
    api: ApiKey,
    version: i16,
    original: Frame,
) -> Result<Rewritten, AddressError> {
    let mut seen = Vec::new();
    let body = original.body();
    let header_version = api.response_header_version(version);
    // KIP-951/KIP-932 responses: the same `node_endpoints` list in four types.
    macro_rules! node_endpoints {
        ($response:ty) => {
            transform::<$response>(api, version, header_version, &body, |r| {
                for e in &mut r.node_endpoints {
                    map.rewrite_endpoint(e.node_id, &mut e.host, &mut e.port, &mut seen)?;
                }
                Ok(!r.node_endpoints.is_empty())
            })?
        };
    }
    let encoded = match api {
        ApiKey::Metadata => {
            transform::<MetadataResponse>(api, version, header_version, &body, |r| {
                for b in &mut r.brokers {
                    map.rewrite_endpoint(b.node_id, &mut b.host, &mut b.port, &mut seen)?;
                }
                Ok(true)
            })?
        }
        ApiKey::DescribeCluster => {
            transform::<DescribeClusterResponse>(api, version, header_version, &body, |r| {
                for b in &mut r.brokers {
                    map.rewrite_endpoint(b.broker_id, &mut b.host, &mut b.port, &mut seen)?;
                }
                Ok(true)
            })?
        }
        ApiKey::FindCoordinator => {
            transform::<FindCoordinatorResponse>(api, version, header_version, &body, |r| {
                if version <= 3 {
                    if r.error_code == 0 {
                        map.rewrite_endpoint(r.node_id, &mut r.host, &mut r.port, &mut seen)?;
                    }
                } else {
                    for c in &mut r.coordinators {
                        if c.error_code == 0 {
                            map.rewrite_endpoint(c.node_id, &mut c.host, &mut c.port, &mut seen)?;
                        }
                    }
                }
                Ok(true)
            })?
        }
        ApiKey::Produce => node_endpoints!(ProduceResponse),
        ApiKey::Fetch => node_endpoints!(FetchResponse),
        ApiKey::ShareFetch => node_endpoints!(ShareFetchResponse),
        ApiKey::ShareAcknowledge => node_endpoints!(ShareAcknowledgeResponse),
        _ => None,
    };
    Ok(Rewritten {
        frame: encoded.unwrap_or(original),
        brokers: seen,
    })
}

/// Decodes a response, lets `edit` change it, and re-encodes it when `edit`
/// reports a change. Returns `None` when the original bytes can be kept.
fn transform<T: Decodable + Encodable>(
    api: ApiKey,
    version: i16,
    header_version: i16,
    body: &Bytes,
    edit: impl FnOnce(&mut T) -> Result<bool, AddressError>,
) -> Result<Option<Frame>, AddressError> {
    let mut buf = body.clone();
    let decode_err = |source| AddressError::Decode {
        api,
        version,
        source,
    };
    let header = ResponseHeader::decode(&mut buf, header_version).map_err(decode_err)?;
    let mut response = T::decode(&mut buf, version).map_err(decode_err)?;
    if !edit(&mut response)? {
        return Ok(None);
    }
    let encode_err = |source| AddressError::Encode {
        api,
        version,
        source,
    };
    crate::kafka::wire::frame::encode_response(&header, header_version, &response, version)
        .map(Some)
        .map_err(encode_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;

    fn frame<T: Encodable>(api: ApiKey, version: i16, correlation_id: i32, r: &T) -> Frame {
        let hv = api.response_header_version(version);
        let mut body = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut body, hv)
            .unwrap();
        r.encode(&mut body, version).unwrap();
        Frame::from_body(&body)
    }

    fn decode<T: Decodable>(api: ApiKey, version: i16, f: &Frame) -> (i32, T) {
        let mut buf = f.body();
        let h = ResponseHeader::decode(&mut buf, api.response_header_version(version)).unwrap();
        (h.correlation_id, T::decode(&mut buf, version).unwrap())
    }

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_owned())
    }

    #[test]
    fn metadata_brokers_are_rewritten_for_every_version() {
        let map = BrokerAddressMap::new("proxy.local", 19000);
        for version in 0..=13 {
            let r = MetadataResponse::default().with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(s("kafka-1.internal"))
                    .with_port(9092),
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(111))
                    .with_host(s("10.0.0.7"))
                    .with_port(9093),
            ]);
            let out = rewrite_response(
                &map,
                ApiKey::Metadata,
                version,
                frame(ApiKey::Metadata, version, 5, &r),
            )
            .unwrap();
            let (cid, m): (i32, MetadataResponse) = decode(ApiKey::Metadata, version, &out.frame);
            assert_eq!(cid, 5);
            let got: Vec<_> = m
                .brokers
                .iter()
                .map(|b| (b.node_id.0, b.host.to_string(), b.port))
                .collect();
            assert_eq!(
                got,
                vec![
                    (1, "proxy.local".into(), 19001),
                    (111, "proxy.local".into(), 19111)
                ],
                "v{version}"
            );
            assert_eq!(out.brokers[0].address(), "kafka-1.internal:9092");
            assert_eq!(out.brokers[1].address(), "10.0.0.7:9093");
        }
    }

    #[test]
    fn find_coordinator_both_shapes() {
        let map = BrokerAddressMap::new("p", 20000);
        for version in 0..=3 {
            let r = FindCoordinatorResponse::default()
                .with_node_id(BrokerId(2))
                .with_host(s("up"))
                .with_port(1234);
            let out = rewrite_response(
                &map,
                ApiKey::FindCoordinator,
                version,
                frame(ApiKey::FindCoordinator, version, 1, &r),
            )
            .unwrap();
            let (_, m): (_, FindCoordinatorResponse) =
                decode(ApiKey::FindCoordinator, version, &out.frame);
            assert_eq!((m.node_id.0, m.host.as_str(), m.port), (2, "p", 20002));
        }
        for version in 4..=6 {
            let r = FindCoordinatorResponse::default().with_coordinators(vec![
                Coordinator::default()
                    .with_key(s("g1"))
                    .with_node_id(BrokerId(3))
                    .with_host(s("up"))
                    .with_port(1),
                // Not available: node -1, nothing to rewrite.
                Coordinator::default()
                    .with_key(s("g2"))
                    .with_node_id(BrokerId(-1))
                    .with_host(s(""))
                    .with_port(-1)
                    .with_error_code(crate::kafka::wire::codes::COORDINATOR_NOT_AVAILABLE),
            ]);
            let out = rewrite_response(
                &map,
                ApiKey::FindCoordinator,
                version,
                frame(ApiKey::FindCoordinator, version, 1, &r),
            )
            .unwrap();
            let (_, m): (_, FindCoordinatorResponse) =
                decode(ApiKey::FindCoordinator, version, &out.frame);
            assert_eq!(
                (m.coordinators[0].host.as_str(), m.coordinators[0].port),
                ("p", 20003)
            );
            assert_eq!(
                (m.coordinators[1].host.as_str(), m.coordinators[1].port),
                ("", -1)
            );
        }
    }

    #[test]
    fn fetch_without_node_endpoints_keeps_original_bytes() {
        let map = BrokerAddressMap::new("p", 20000);
        let r = FetchResponse::default();
        let f = frame(ApiKey::Fetch, 16, 8, &r);
        let out = rewrite_response(&map, ApiKey::Fetch, 16, f.clone()).unwrap();
        assert_eq!(out.frame.wire(), f.wire());
        assert!(out.brokers.is_empty());
    }

    #[test]
    fn produce_node_endpoints_rewritten() {
        use kafka_protocol::messages::produce_response::NodeEndpoint;
        let map = BrokerAddressMap::new("p", 20000);
        let r = ProduceResponse::default().with_node_endpoints(vec![NodeEndpoint::default()
            .with_node_id(BrokerId(4))
            .with_host(s("up"))
            .with_port(9)]);
        let out =
            rewrite_response(&map, ApiKey::Produce, 11, frame(ApiKey::Produce, 11, 8, &r)).unwrap();
        let (_, m): (_, ProduceResponse) = decode(ApiKey::Produce, 11, &out.frame);
        assert_eq!(
            (m.node_endpoints[0].host.as_str(), m.node_endpoints[0].port),
            ("p", 20004)
        );
    }

    #[test]
    fn ports_out_of_range_are_refused() {
        let map = BrokerAddressMap::new("p", 65000);
        assert!(map.advertised_port(535).is_ok());
        assert!(map.advertised_port(536).is_err());
        assert!(map.advertised_port(-1).is_err());
        assert_eq!(map.node_for_port(65007), Some(7));
        assert_eq!(map.node_for_port(10), None);
    }

    #[test]
    fn truncated_responses_are_errors_not_panics() {
        let map = BrokerAddressMap::new("p", 20000);
        let r = MetadataResponse::default().with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(s("h"))
            .with_port(1)]);
        let f = frame(ApiKey::Metadata, 12, 1, &r);
        let body = f.body();
        for n in 0..body.len() {
            let cut = Frame::from_body(&body[..n]);
            assert!(
                rewrite_response(&map, ApiKey::Metadata, 12, cut).is_err(),
                "cut at {n}"
            );
        }
    }
}
