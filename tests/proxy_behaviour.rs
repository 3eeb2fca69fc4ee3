//! Protocol behaviour of the proxy against librdkafka's mock cluster, checked
//! on the wire with a raw client: pass-through bytes, acks=0 pipelining,
//! ApiVersions downgrade, frame limits, upstream failures, SIGTERM drain.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, ListOffsetsRequest, MetadataRequest, ProduceRequest,
    ResponseHeader, TopicName, VoteRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{Compression, Record, TimestampType};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{correlation_id, metric, ProxyProcess, RawClient, RecordingTap};

fn cluster_with_topic(
    topic: &str,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(topic, 1, 1).unwrap();
    cluster
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

#[test]
fn untouched_request_and_response_pass_byte_for_byte() {
    let cluster = cluster_with_topic("bytes");
    let first_broker = cluster
        .bootstrap_servers()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let tap = RecordingTap::start(first_broker);
    let proxy = ProxyProcess::start(&format!("127.0.0.1:{}", tap.port), None, &[]);

    let mut client = RawClient::connect(proxy.port);
    let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic_name("bytes"))
        .with_partitions(vec![ListOffsetsPartition::default()
            .with_partition_index(0)
            .with_timestamp(-1)])]);
    let sent = client.send(2, 5, 4242, &request);
    let received = client.read_frame().expect("ListOffsets response");
    assert_eq!(correlation_id(&received), 4242);

    // Find the upstream connection that carried it (the health check has its own).
    let connections = tap.connections.lock().unwrap();
    let carried = connections
        .iter()
        .map(|c| c.lock().unwrap().clone())
        .find(|(up, _)| up.windows(sent.len()).any(|w| w == sent.as_slice()))
        .expect("the request reached upstream");
    assert_eq!(
        carried.0, sent,
        "upstream received exactly the client's bytes"
    );
    assert_eq!(
        carried.1, received,
        "the client received exactly upstream's bytes"
    );
}

fn one_record_batch(value: &str) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: Default::default(),
    };
    kafka_lfs_proxy::kafka::wire::batches::encode_v2(
        std::slice::from_ref(&record),
        Compression::None,
    )
    .unwrap()
}

#[test]
fn acks_zero_produce_gets_no_response_and_does_not_stall_the_pipeline() {
    let cluster = cluster_with_topic("acks0");
    let proxy = ProxyProcess::start(&cluster.bootstrap_servers(), None, &[]);
    let mut client = RawClient::connect(proxy.broker_port(1)); // the partition leader
    for (i, version) in [3i16, 7, 9].into_iter().enumerate() {
        let produce = ProduceRequest::default()
            .with_acks(0)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name("acks0"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(one_record_batch(&format!(
                        "fire-and-forget-{version}"
                    ))))])]);
        client.send(0, version, 100 + i as i32, &produce);
    }
    client.send(
        3,
        9,
        200,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    let next = client.read_frame().expect("a response");
    assert_eq!(
        correlation_id(&next),
        200,
        "the first response is Metadata's: acks=0 got none"
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "acks0")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("acks0", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < 3 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            values.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
        }
    }
    assert_eq!(
        values,
        vec![
            "fire-and-forget-3",
            "fire-and-forget-7",
            "fire-and-forget-9"
        ]
    );
}

#[test]
fn too_new_api_versions_is_answered_unsupported_then_lower_version_works() {
    let cluster = cluster_with_topic("av");
    let proxy = ProxyProcess::start(&cluster.bootstrap_servers(), None, &[]);
    let mut client = RawClient::connect(proxy.port);
    client.send_as(18, 3, 99, 1, &ApiVersionsRequest::default());
    let frame = client
        .read_frame()
        .expect("an answer, not a closed connection");
    let mut body = Bytes::from(frame[4..].to_vec());
    assert_eq!(
        ResponseHeader::decode(&mut body, 0).unwrap().correlation_id,
        1
    );
    let r = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(r.error_code, 35);
    let max = r
        .api_keys
        .iter()
        .find(|k| k.api_key == 18)
        .unwrap()
        .max_version;

    // Step down as a client does until the broker behind the proxy agrees.
    let mut version = max;
    let r = loop {
        client.send(
            18,
            version,
            2,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("raw"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        );
        let frame = client.read_frame().expect("ApiVersions answer");
        let mut body = Bytes::from(frame[4..].to_vec());
        ResponseHeader::decode(&mut body, 0).unwrap();
        if body[..2] == [0, 35] {
            let r = ApiVersionsResponse::decode(&mut body, 0).unwrap();
            let next = r
                .api_keys
                .iter()
                .find(|k| k.api_key == 18)
                .unwrap()
                .max_version;
            assert!(next < version, "each rejection names a lower version");
            version = next;
            continue;
        }
        break ApiVersionsResponse::decode(&mut body, version).unwrap();
    };
    assert_eq!(r.error_code, 0);
    let produce = r
        .api_keys
        .iter()
        .find(|k| k.api_key == 0)
        .expect("Produce offered");
    assert_eq!(
        produce.min_version, 0,
        "Produce's minimum stays 0 for librdkafka's codecs"
    );
    assert!(
        r.api_keys.iter().all(|k| k.api_key != 52),
        "Vote is withheld"
    );
}

#[test]
fn oversized_frames_and_tls_close_only_that_connection() {
    let cluster = cluster_with_topic("limits");
    let proxy = ProxyProcess::start(
        &cluster.bootstrap_servers(),
        None,
        &[("KAFSCALE_LFS_PROXY_MAX_FRAME_SIZE", "1048576")],
    );
    let mut healthy = RawClient::connect(proxy.port);

    let mut big = RawClient::connect(proxy.port);
    big.send_raw(&(2 * 1024 * 1024i32).to_be_bytes());
    assert!(
        big.is_closed_within(Duration::from_secs(5)),
        "oversized frame closes the connection"
    );

    let mut tls = RawClient::connect(proxy.port);
    // The start of a TLS ClientHello.
    tls.send_raw(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ]);
    assert!(
        tls.is_closed_within(Duration::from_secs(5)),
        "TLS to a plaintext port closes the connection"
    );

    // A request that is not offered (Vote) closes its connection too.
    let mut vote = RawClient::connect(proxy.port);
    vote.send(52, 0, 1, &VoteRequest::default());
    assert!(vote.is_closed_within(Duration::from_secs(5)));

    // Everyone else is still served.
    healthy.send(
        3,
        9,
        7,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    assert_eq!(correlation_id(&healthy.read_frame().unwrap()), 7);

    std::thread::sleep(Duration::from_millis(200));
    let log = proxy.log();
    assert!(
        log.contains("exceeds the maximum of 1048576 bytes"),
        "{log}"
    );
    assert!(
        log.contains("looks like TLS spoken to a plaintext listener"),
        "{log}"
    );
    assert!(
        log.contains("client_id=raw-test"),
        "the log names the client: {log}"
    );
    let (_, metrics) = proxy.http_get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "kafka_lfs_proxy_frame_rejections_total{reason=\"too_large\"}"
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "kafka_lfs_proxy_frame_rejections_total{reason=\"not_offered\"}"
        ),
        1.0
    );
    assert!(metric(&metrics, "kafka_lfs_proxy_requests_total{api=\"Metadata\"}") >= 1.0);
    assert!(
        metric(
            &metrics,
            "kafka_lfs_proxy_bytes_total{direction=\"upstream_to_client\"}"
        ) > 0.0
    );
    assert!(
        metric(
            &metrics,
            "kafka_lfs_proxy_connections_total{listener=\"bootstrap\"}"
        ) >= 4.0
    );
    assert_eq!(
        metric(&metrics, "kafka_lfs_proxy_connections_open"),
        1.0,
        "only the healthy client is left"
    );
    assert!(!log.contains("panicked"));
}

#[test]
fn unreachable_upstream_closes_clients_promptly_and_is_not_ready() {
    let closed_port = support::free_port_block(1);
    let proxy = ProxyProcess::start(&format!("127.0.0.1:{closed_port}"), None, &[]);
    let started = Instant::now();
    let mut client = RawClient::connect(proxy.port);
    assert!(client.is_closed_within(Duration::from_secs(5)));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed in {:?}",
        started.elapsed()
    );
    assert_eq!(proxy.http_get("/readyz").0, 503);
    assert_eq!(proxy.http_get("/livez").0, 200);
    assert!(proxy.log().contains("upstream unreachable"));
}

#[test]
fn idle_client_is_closed_when_upstream_goes_away_and_readiness_follows() {
    let cluster = cluster_with_topic("down");
    let proxy = ProxyProcess::start(&cluster.bootstrap_servers(), None, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.http_get("/readyz").0 != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(proxy.http_get("/readyz").0, 200);
    let mut client = RawClient::connect(proxy.port);
    client.send(
        3,
        9,
        1,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    assert!(client.read_frame().is_some());

    cluster.broker_down(1).unwrap();
    assert!(
        client.is_closed_within(Duration::from_secs(5)),
        "idle client closed when upstream closed"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.http_get("/readyz").0 != 503 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(proxy.http_get("/readyz").0, 503);
    assert!(proxy.log().contains("upstream connection closed"));
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let cluster = cluster_with_topic("drain");
    let mut proxy = ProxyProcess::start(&cluster.bootstrap_servers(), None, &[]);
    let mut client = RawClient::connect(proxy.port);
    // Every request now takes 1.5 s upstream.
    cluster
        .broker_round_trip_time(1, Duration::from_millis(1500))
        .unwrap();
    client.send(
        3,
        9,
        77,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    std::thread::sleep(Duration::from_millis(200));
    let sent_term = Instant::now();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(proxy.child.id().to_string())
        .status();

    let response = client
        .read_frame()
        .expect("in-flight response delivered during drain");
    assert_eq!(correlation_id(&response), 77);
    let status = proxy.terminate(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        sent_term.elapsed() >= Duration::from_millis(1000),
        "waited for the response"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", proxy.port)).is_err(),
        "no longer accepting"
    );
    let log = proxy.log();
    assert!(log.contains("all connections drained"), "{log}");
}

#[test]
fn pipelined_requests_are_answered_in_order_under_back_pressure() {
    let cluster = cluster_with_topic("pipeline");
    let proxy = ProxyProcess::start(
        &cluster.bootstrap_servers(),
        None,
        &[("KAFSCALE_LFS_PROXY_MAX_IN_FLIGHT", "2")],
    );
    let mut client = RawClient::connect(proxy.broker_port(1));
    cluster
        .broker_round_trip_time(1, Duration::from_millis(50))
        .unwrap();
    let list_offsets = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic_name("pipeline"))
        .with_partitions(vec![ListOffsetsPartition::default()
            .with_partition_index(0)
            .with_timestamp(-1)])]);
    // 24 requests of three APIs, sent back to back before reading anything;
    // every third is an acks=0 Produce that must get no answer.
    let mut expected = Vec::new();
    for i in 0..24 {
        let id = 1000 + i;
        match i % 3 {
            0 => {
                client.send(
                    3,
                    9,
                    id,
                    &MetadataRequest::default().with_topics(Some(vec![])),
                );
                expected.push(id);
            }
            1 => {
                client.send(2, 5, id, &list_offsets);
                expected.push(id);
            }
            _ => {
                let produce = ProduceRequest::default()
                    .with_acks(0)
                    .with_timeout_ms(5000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(topic_name("pipeline"))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(one_record_batch("p")))])]);
                client.send(0, 9, id, &produce);
            }
        }
    }
    let got: Vec<i32> = expected
        .iter()
        .map(|_| correlation_id(&client.read_frame().expect("response")))
        .collect();
    assert_eq!(
        got, expected,
        "responses come back in request order with their ids"
    );
}
