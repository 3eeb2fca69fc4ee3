//! ApiVersions: what the proxy tells clients they may send.
//!
//! A client learns the version range of every API from the ApiVersions
//! response and then never sends anything outside it. The proxy therefore
//! answers with the *intersection* of the upstream broker's ranges and the
//! ranges the proxy itself has reviewed:
//!
//! * keys `kafka-protocol` does not know are dropped, so a client never sends
//!   a request the proxy cannot classify;
//! * keys whose responses carry addresses the proxy cannot serve (the KRaft
//!   quorum RPCs) or that only brokers and controllers send each other are
//!   withheld;
//! * Produce keeps a minimum of 0 whatever the broker says (KAFKA-18659):
//!   librdkafka disables gzip/snappy/lz4 when Produce v0–v2 are missing, and
//!   the proxy forwards those old versions untouched anyway.
//!
//! A client that opens with an ApiVersions version newer than the proxy knows
//! is answered by the proxy itself, the way a broker answers it: a v0 response
//! with UNSUPPORTED_VERSION that lists only ApiVersions' own range, so the
//! client retries with a version both understand.
//!
//! The re-encoded response contains no default-valued tagged fields; tansu's
//! ApiVersions v3 reply carries some, and librdkafka < 2.2 (Debian's kcat)
//! fails to parse them.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Message, VersionRange};

use crate::kafka::wire::frame::Frame;

/// Kafka's UNSUPPORTED_VERSION error code.
pub use super::codes::UNSUPPORTED_VERSION;

/// Why a key is not offered to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// Sent only between brokers and controllers; a client has no business
    /// sending it through a client-facing proxy.
    InterBroker,
    /// Its response names controller (KRaft quorum) endpoints, which the
    /// proxy does not serve, so forwarding it would leak upstream addresses.
    QuorumAddresses,
}

/// The range of versions the proxy handles for a key, or why it is withheld.
///
/// This table is the reviewed surface of the proxy. When `kafka-protocol`
/// gains keys or versions, `tests::crate_versions_are_reviewed` fails until
/// someone has checked the new versions for broker coordinates and updated
/// this function and `crate::kafka::relay::addresses` accordingly.
pub fn proxy_range(key: ApiKey) -> Result<VersionRange, Withheld> {
    use ApiKey::*;
    match key {
        // Requests only brokers and controllers send each other.
        WriteTxnMarkers
        | AlterPartition
        | Envelope
        | BrokerRegistration
        | BrokerHeartbeat
        | UnregisterBroker
        | AllocateProducerIds
        | ControllerRegistration
        | AssignReplicasToDirs
        | InitializeShareGroupState
        | ReadShareGroupState
        | WriteShareGroupState
        | DeleteShareGroupState
        | ReadShareGroupStateSummary => Err(Withheld::InterBroker),
        // KRaft quorum RPCs: every response names controller endpoints.
        Vote | BeginQuorumEpoch | EndQuorumEpoch | FetchSnapshot | AddRaftVoter
        | RemoveRaftVoter | UpdateRaftVoter => Err(Withheld::QuorumAddresses),
        // Produce v13 names topics by id; the LFS rewrite needs names for
        // object keys and the topic filter.
        Produce => Ok(VersionRange { min: 3, max: 12 }),
        // DescribeQuorum v2 added the controllers' listener endpoints; v0–v1
        // carry node ids only.
        DescribeQuorum => Ok(VersionRange { min: 0, max: 1 }),
        other => Ok(other.valid_versions()),
    }
}

/// Whether a request at this key and version is inside what the proxy
/// advertises (before intersecting with upstream).
pub fn is_offered(api_key: i16, version: i16) -> bool {
    let Ok(key) = ApiKey::try_from(api_key) else {
        return false;
    };
    match proxy_range(key) {
        Ok(range) => {
            let min = if key == ApiKey::Produce { 0 } else { range.min };
            version >= min && version <= range.max
        }
        Err(_) => false,
    }
}

/// The highest ApiVersions request version the proxy can answer.
pub fn max_api_versions_version() -> i16 {
    ApiVersionsResponse::VERSIONS.max
}

/// Narrows an upstream ApiVersions response to what the proxy offers.
pub fn intersect(response: &mut ApiVersionsResponse) {
    response.api_keys.retain_mut(|entry| {
        let Ok(key) = ApiKey::try_from(entry.api_key) else {
            return false;
        };
        let Ok(ours) = proxy_range(key) else {
            return false;
        };
        let upstream = VersionRange {
            min: entry.min_version,
            max: entry.max_version,
        };
        let mut both = upstream.intersect(&ours);
        if key == ApiKey::Produce && both.max >= ours.min {
            both.min = 0;
        } else if both.is_empty() {
            return false;
        }
        entry.min_version = both.min;
        entry.max_version = both.max;
        true
    });
}

#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
    #[error("cannot decode ApiVersions response v{version}: {source}")]
    Decode { version: i16, source: anyhow::Error },
    #[error("cannot encode ApiVersions response v{version}: {source}")]
    Encode { version: i16, source: anyhow::Error },
}

/// Rewrites an upstream ApiVersions response frame body (header included).
///
/// The response header of ApiVersions is always v0 (no tagged fields), so a
/// client can read it before it knows what the broker supports. A broker that
/// rejects the request's version answers in v0 whatever was asked; the
/// error code is the first body field in every version, so it is read first
/// to pick the version to decode with.
pub fn rewrite_api_versions_response(
    body: &Bytes,
    request_version: i16,
    offer_sasl: bool,
) -> Result<Frame, VersionsError> {
    let error_code = body
        .get(4..6)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let version = if error_code == UNSUPPORTED_VERSION {
        0
    } else {
        request_version
    };
    let mut buf = body.clone();
    let decoded = ResponseHeader::decode(&mut buf, 0)
        .and_then(|h| Ok((h, ApiVersionsResponse::decode(&mut buf, version)?)));
    let (header, mut response) = match decoded {
        Ok(decoded) => decoded,
        // Some brokers (librdkafka's mock cluster) encode the rejection in
        // the rejected version's format, and not always well. The meaning is
        // plain: that version is not supported; ask the client to step down.
        Err(_) if error_code == UNSUPPORTED_VERSION && request_version > 0 => {
            let correlation_id = crate::kafka::wire::frame::peek_correlation_id(body).unwrap_or(0);
            return Ok(unsupported_version_response(
                correlation_id,
                request_version - 1,
            ));
        }
        Err(source) => return Err(VersionsError::Decode { version, source }),
    };
    intersect(&mut response);
    if offer_sasl {
        offer_local_sasl(&mut response);
    }
    encode_response(header.correlation_id, &response, version)
}

/// When the proxy answers SASL itself, it offers the versions it speaks,
/// whatever the broker's listener has: SaslHandshake v1 (v0 is unframed
/// SASL, refused) and SaslAuthenticate v0–v2.
fn offer_local_sasl(response: &mut ApiVersionsResponse) {
    for (key, min, max) in [
        (ApiKey::SaslHandshake, 1, 1),
        (ApiKey::SaslAuthenticate, 0, 2),
    ] {
        response
            .api_keys
            .retain(|entry| entry.api_key != key as i16);
        response.api_keys.push(
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max),
        );
    }
    response.api_keys.sort_by_key(|entry| entry.api_key);
}

/// The proxy's own UNSUPPORTED_VERSION answer to an ApiVersions request,
/// naming `max_version` as the highest ApiVersions version to retry with.
pub fn unsupported_version_response(correlation_id: i32, max_version: i16) -> Frame {
    let response = ApiVersionsResponse::default()
        .with_error_code(UNSUPPORTED_VERSION)
        .with_api_keys(vec![ApiVersion::default()
            .with_api_key(ApiKey::ApiVersions as i16)
            .with_min_version(ApiVersionsResponse::VERSIONS.min)
            .with_max_version(max_version)]);
    encode_response(correlation_id, &response, 0).expect("a v0 ApiVersions response always encodes")
}

/// An ApiVersions answer at the request's own version carrying only
/// `error_code` (e.g. SASL_AUTHENTICATION_FAILED when the proxy cannot log
/// in upstream), so the client reports that error instead of a bare close.
pub fn error_response(correlation_id: i32, request_version: i16, error_code: i16) -> Frame {
    let version = request_version.clamp(
        ApiVersionsResponse::VERSIONS.min,
        ApiVersionsResponse::VERSIONS.max,
    );
    let response = ApiVersionsResponse::default().with_error_code(error_code);
    encode_response(correlation_id, &response, version)
        .or_else(|_| encode_response(correlation_id, &response, 0))
        .expect("an empty ApiVersions response always encodes")
}

fn encode_response(
    correlation_id: i32,
    response: &ApiVersionsResponse,
    version: i16,
) -> Result<Frame, VersionsError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    crate::kafka::wire::frame::encode_response(&header, 0, response, version)
        .map_err(|source| VersionsError::Encode { version, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    /// `kafka-protocol`'s version ranges as last reviewed (crate 0.18.0).
    /// When this test fails after an upgrade, check each changed key's new
    /// versions for broker coordinates (host, port, node endpoints), update
    /// `proxy_range` and `addresses::rewrite_response`, then this table.
    const REVIEWED: &[(i16, i16, i16)] = &[
        (0, 3, 13),
        (1, 4, 18),
        (2, 1, 10),
        (3, 0, 13),
        (8, 2, 10),
        (9, 1, 10),
        (10, 0, 6),
        (11, 0, 9),
        (12, 0, 4),
        (13, 0, 5),
        (14, 0, 5),
        (15, 0, 6),
        (16, 0, 5),
        (17, 0, 1),
        (18, 0, 4),
        (19, 2, 7),
        (20, 1, 6),
        (21, 0, 2),
        (22, 0, 6),
        (23, 2, 4),
        (24, 0, 5),
        (25, 0, 4),
        (26, 0, 5),
        (27, 1, 1),
        (28, 0, 5),
        (29, 1, 3),
        (30, 1, 3),
        (31, 1, 3),
        (32, 1, 4),
        (33, 0, 2),
        (34, 1, 2),
        (35, 1, 4),
        (36, 0, 2),
        (37, 0, 3),
        (38, 1, 3),
        (39, 1, 2),
        (40, 1, 2),
        (41, 1, 3),
        (42, 0, 2),
        (43, 0, 2),
        (44, 0, 1),
        (45, 0, 1),
        (46, 0, 0),
        (47, 0, 0),
        (48, 0, 1),
        (49, 0, 1),
        (50, 0, 0),
        (51, 0, 0),
        (52, 0, 2),
        (53, 0, 1),
        (54, 0, 1),
        (55, 0, 2),
        (56, 2, 3),
        (57, 0, 2),
        (58, 0, 0),
        (59, 0, 1),
        (60, 0, 2),
        (61, 0, 0),
        (62, 0, 4),
        (63, 0, 1),
        (64, 0, 0),
        (65, 0, 0),
        (66, 0, 2),
        (67, 0, 0),
        (68, 0, 1),
        (69, 0, 1),
        (70, 0, 0),
        (71, 0, 0),
        (72, 0, 0),
        (73, 0, 0),
        (74, 0, 1),
        (75, 0, 0),
        (76, 1, 1),
        (77, 1, 1),
        (78, 1, 1),
        (79, 1, 1),
        (80, 0, 0),
        (81, 0, 0),
        (82, 0, 0),
        (83, 0, 0),
        (84, 0, 0),
        (85, 0, 0),
        (86, 0, 0),
        (87, 0, 0),
        (90, 0, 0),
        (91, 0, 0),
        (92, 0, 0),
    ];

    #[test]
    fn crate_versions_are_reviewed() {
        let current: Vec<(i16, i16, i16)> = ApiKey::iter()
            .map(|k| {
                let r = k.valid_versions();
                (k as i16, r.min, r.max)
            })
            .collect();
        let backlog: Vec<String> = current
            .iter()
            .filter(|c| !REVIEWED.contains(c))
            .map(|(k, min, max)| {
                let name = ApiKey::try_from(*k)
                    .map(|k| format!("{k:?}"))
                    .unwrap_or_default();
                format!("{name} ({k}) v{min}..={max}")
            })
            .collect();
        assert!(
            backlog.is_empty() && current.len() == REVIEWED.len(),
            "kafka-protocol changed its API versions; review these for broker coordinates: {backlog:?}"
        );
    }

    fn upstream(entries: &[(i16, i16, i16)]) -> ApiVersionsResponse {
        ApiVersionsResponse::default().with_api_keys(
            entries
                .iter()
                .map(|&(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(k)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
    }

    fn ranges(r: &ApiVersionsResponse) -> Vec<(i16, i16, i16)> {
        r.api_keys
            .iter()
            .map(|e| (e.api_key, e.min_version, e.max_version))
            .collect()
    }

    #[test]
    fn intersects_drops_unknown_and_withheld_keeps_produce_min_zero() {
        let mut r = upstream(&[
            (0, 3, 99),   // Produce: max capped, min forced to 0
            (1, 0, 20),   // Fetch: min raised to what we decode, max capped
            (18, 0, 4),   // ApiVersions
            (55, 0, 2),   // DescribeQuorum: capped at v1
            (52, 0, 2),   // Vote: withheld
            (1000, 0, 1), // unknown key: dropped
            (3, 20, 30),  // Metadata: no overlap, dropped
        ]);
        intersect(&mut r);
        assert_eq!(
            ranges(&r),
            vec![(0, 0, 12), (1, 4, 18), (18, 0, 4), (55, 0, 1)]
        );
    }

    #[test]
    fn produce_min_is_zero_even_when_broker_says_three() {
        let mut r = upstream(&[(0, 3, 9)]);
        intersect(&mut r);
        assert_eq!(ranges(&r), vec![(0, 0, 9)]);
    }

    #[test]
    fn rewrite_drops_default_tagged_fields() {
        // A v3 response whose tagged field holds its default value, as tansu
        // sends it: finalized_features_epoch (tag 1) = -1.
        let mut body = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(9)
            .encode(&mut body, 0)
            .unwrap();
        upstream(&[(18, 0, 3)]).encode(&mut body, 3).unwrap();
        // Replace the trailing empty tagged-field section with one carrying
        // tag 1 = int64 -1.
        assert_eq!(body.last(), Some(&0));
        body.truncate(body.len() - 1);
        body.extend_from_slice(&[1, 1, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let frame = rewrite_api_versions_response(&body.freeze(), 3, false).unwrap();
        let out = frame.body();
        assert_eq!(
            out.last(),
            Some(&0),
            "no tagged fields in the re-encoded response"
        );
        let mut buf = out.clone();
        let header = ResponseHeader::decode(&mut buf, 0).unwrap();
        assert_eq!(header.correlation_id, 9);
        let decoded = ApiVersionsResponse::decode(&mut buf, 3).unwrap();
        assert_eq!(ranges(&decoded), vec![(18, 0, 3)]);
    }

    #[test]
    fn unsupported_version_answer_is_v0_with_api_versions_range() {
        let frame = unsupported_version_response(42, max_api_versions_version());
        let mut buf = frame.body();
        let header = ResponseHeader::decode(&mut buf, 0).unwrap();
        assert_eq!(header.correlation_id, 42);
        let r = ApiVersionsResponse::decode(&mut buf, 0).unwrap();
        assert_eq!(r.error_code, UNSUPPORTED_VERSION);
        assert_eq!(ranges(&r), vec![(18, 0, 4)]);
    }

    #[test]
    fn upstream_unsupported_version_reply_is_decoded_as_v0() {
        let mut body = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(3)
            .encode(&mut body, 0)
            .unwrap();
        upstream(&[(18, 0, 2), (3, 0, 12)])
            .with_error_code(UNSUPPORTED_VERSION)
            .encode(&mut body, 0)
            .unwrap();
        let frame = rewrite_api_versions_response(&body.freeze(), 4, false).unwrap();
        let mut buf = frame.body();
        ResponseHeader::decode(&mut buf, 0).unwrap();
        let r = ApiVersionsResponse::decode(&mut buf, 0).unwrap();
        assert_eq!(r.error_code, UNSUPPORTED_VERSION);
        assert_eq!(ranges(&r), vec![(18, 0, 2), (3, 0, 12)]);
    }

    #[test]
    fn undecodable_rejection_steps_the_client_down() {
        // librdkafka's mock broker rejecting ApiVersions v4 (captured).
        let body = Bytes::from_static(&[0, 0, 0, 1, 0, 0x23, 1, 0, 0x12, 0, 0, 0, 2, 0, 0, 0, 0]);
        let frame = rewrite_api_versions_response(&body, 4, false).unwrap();
        let mut buf = frame.body();
        assert_eq!(
            ResponseHeader::decode(&mut buf, 0).unwrap().correlation_id,
            1
        );
        let r = ApiVersionsResponse::decode(&mut buf, 0).unwrap();
        assert_eq!(r.error_code, UNSUPPORTED_VERSION);
        assert_eq!(ranges(&r), vec![(18, 0, 3)]);
    }

    #[test]
    fn is_offered_follows_the_table() {
        assert!(is_offered(0, 0));
        assert!(is_offered(0, 12));
        assert!(!is_offered(0, 13));
        assert!(!is_offered(52, 0));
        assert!(!is_offered(55, 2));
        assert!(!is_offered(1000, 0));
    }
}
