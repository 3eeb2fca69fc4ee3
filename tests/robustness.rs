//! Nothing a client or a broker sends can panic the proxy: random, truncated
//! and mutated frames from clients, corrupted and cut responses from
//! upstream. Throughout, an established client keeps being served.

mod support;

use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiVersionsRequest, FindCoordinatorRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rdkafka::mocking::MockCluster;
use support::{correlation_id, encode_request, CorruptingRelay, ProxyProcess, RawClient};

/// Real request frames to mutate: what clients send most.
fn seed_frames() -> Vec<Vec<u8>> {
    let list_offsets = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("fuzz")))
        .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])]);
    let find_coordinator = FindCoordinatorRequest::default()
        .with_coordinator_keys(vec![StrBytes::from_static_str("g")]);
    vec![
        encode_request(18, 3, 1, &ApiVersionsRequest::default()),
        encode_request(3, 12, 2, &MetadataRequest::default().with_topics(None)),
        encode_request(10, 4, 3, &find_coordinator),
        encode_request(2, 5, 4, &list_offsets),
    ]
}

fn assert_still_serving(healthy: &mut RawClient, proxy: &ProxyProcess, id: i32) {
    healthy.send(
        3,
        9,
        id,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    let frame = healthy
        .read_frame()
        .expect("the established client is still served");
    assert_eq!(correlation_id(&frame), id);
    let log = proxy.log();
    assert!(!log.contains("panicked"), "the proxy panicked:\n{log}");
}

#[test]
fn random_truncated_and_mutated_client_frames() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("fuzz", 1, 1).unwrap();
    let proxy = ProxyProcess::start(
        &cluster.bootstrap_servers(),
        None,
        &[("KAFSCALE_LFS_PROXY_LOG_LEVEL", "warn")],
    );
    let mut healthy = RawClient::connect(proxy.port);
    assert_still_serving(&mut healthy, &proxy, 1);

    let seeds = seed_frames();
    let frames = prop_oneof![
        // Anything at all.
        proptest::collection::vec(any::<u8>(), 0..300),
        // A plausible length prefix followed by random bytes.
        (0u32..400, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(len, rest)| {
            let mut v = len.to_be_bytes().to_vec();
            v.extend(rest);
            v
        }),
        // A real request, truncated and with bytes flipped (length kept right).
        (
            0..seeds.len(),
            any::<prop::sample::Index>(),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6)
        )
            .prop_map(move |(which, cut, flips)| {
                let mut v = seeds[which].clone();
                let keep = 4 + cut.index(v.len() - 3);
                v.truncate(keep.min(v.len()));
                let body_len = v.len() - 4;
                for (i, b) in flips {
                    if body_len > 0 {
                        let at = 4 + i.index(body_len);
                        v[at] ^= b;
                    }
                }
                v[..4].copy_from_slice(&(body_len as i32).to_be_bytes());
                v
            }),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let port = proxy.port;
    runner
        .run(&frames, |bytes| {
            let mut c = RawClient::connect(port);
            c.send_raw(&bytes);
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            // Drain whatever comes back until the proxy closes.
            let _ = c.stream.set_read_timeout(Some(Duration::from_secs(3)));
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut c.stream, &mut sink);
            Ok(())
        })
        .unwrap();
    assert_still_serving(&mut healthy, &proxy, 2);
    assert!(proxy.http_get("/livez").0 == 200);
}

#[test]
fn corrupted_and_cut_upstream_responses() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("fuzz", 1, 1).unwrap();
    let healthy_proxy = ProxyProcess::start(&cluster.bootstrap_servers(), None, &[]);
    let broker = cluster.bootstrap_servers();
    let relay = CorruptingRelay::start(broker.clone(), 0x5eed);
    // This proxy's health check goes through the relay too; its broker
    // listeners may be told garbage addresses. None of it may panic.
    let proxy = ProxyProcess::start(
        &format!("127.0.0.1:{}", relay.port),
        None,
        &[("KAFSCALE_LFS_PROXY_LOG_LEVEL", "warn")],
    );
    let seeds = seed_frames();
    let mut answered = 0;
    for round in 0..150 {
        let mut c = RawClient::connect(proxy.port);
        c.stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        c.send_raw(&seeds[round % seeds.len()]);
        if c.read_frame().is_some() {
            answered += 1;
        }
    }
    eprintln!("{answered} of 150 requests answered through the corrupting relay");
    let log = proxy.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("closing client connection"),
        "corruption was detected and handled: {log}"
    );
    assert!(proxy.http_get("/livez").0 == 200);
    let mut other = RawClient::connect(healthy_proxy.port);
    assert_still_serving(&mut other, &healthy_proxy, 9);
}
