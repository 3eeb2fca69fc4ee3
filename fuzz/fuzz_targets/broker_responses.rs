//! The rewrites of broker responses: ApiVersions narrowing and the address
//! rewrite of every response that names brokers. The first three bytes pick
//! the API and version, the rest is the response body (header included).
#![no_main]

use bytes::Bytes;
use kafka_lfs_proxy::kafka::relay::addresses::{
    carries_addresses, rewrite_response, BrokerAddressMap,
};
use kafka_lfs_proxy::kafka::wire::frame::Frame;
use kafka_lfs_proxy::kafka::wire::versions::rewrite_api_versions_response;
use kafka_protocol::messages::ApiKey;
use libfuzzer_sys::fuzz_target;

/// The APIs whose responses the proxy decodes.
const APIS: [ApiKey; 8] = [
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::FindCoordinator,
    ApiKey::DescribeCluster,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ShareFetch,
    ApiKey::ShareAcknowledge,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let api = APIS[data[0] as usize % APIS.len()];
    let version = i16::from_be_bytes([data[1], data[2]]).rem_euclid(20);
    let body = Bytes::copy_from_slice(&data[3..]);
    if api == ApiKey::ApiVersions {
        let _ = rewrite_api_versions_response(&body, version, data[1] & 1 == 1);
        return;
    }
    if !carries_addresses(api, version) {
        return;
    }
    let map = BrokerAddressMap::new("proxy.example", 30000);
    if let Ok(rewritten) = rewrite_response(&map, api, version, Frame::from_body(&body)) {
        // Every broker named is now served at the proxy's address.
        for broker in &rewritten.brokers {
            let _ = map.advertised_port(broker.node_id);
        }
    }
});
