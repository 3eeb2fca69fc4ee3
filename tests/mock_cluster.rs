//! Through the proxy to librdkafka's 3-broker mock cluster: partitions led by
//! different brokers, a leader move, and a broker going down.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::ProxyProcess;

const TOPIC: &str = "mock-topic";
const PARTITIONS: i32 = 6;

async fn produce_round(
    producer: &FutureProducer,
    round: &str,
    expected: &mut BTreeSet<(i32, String)>,
) {
    let mut pending = Vec::new();
    for partition in 0..PARTITIONS {
        for i in 0..5 {
            let value = format!("{round}-{partition}-{i}");
            expected.insert((partition, value.clone()));
            let producer = producer.clone();
            pending.push(tokio::spawn(async move {
                let record = FutureRecord::<(), _>::to(TOPIC)
                    .partition(partition)
                    .payload(&value);
                producer
                    .send(record, Duration::from_secs(60))
                    .await
                    .map_err(|(e, _)| e.to_string())
            }));
        }
    }
    for p in pending {
        let delivered = p.await.unwrap();
        assert!(
            delivered.is_ok(),
            "round {round}: delivery failed: {delivered:?}"
        );
    }
}

fn consume_all(bootstrap: &str, want: usize) -> BTreeSet<(i32, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", "mock-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got = BTreeSet::new();
    let mut count = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count < want && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            count += 1;
            got.insert((
                m.partition(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    assert_eq!(
        count, want,
        "records consumed (duplicates would make this exceed the set)"
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_on_every_broker_leader_move_and_broker_down() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 3).unwrap();
    for p in 0..PARTITIONS {
        cluster.partition_leader(TOPIC, p, Some(p % 3 + 1)).unwrap();
    }
    let upstream = cluster.bootstrap_servers();
    let capture = tempfile::tempdir().unwrap();
    let proxy = ProxyProcess::start(&upstream, Some(capture.path()), &[]);

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", proxy.bootstrap())
        .set("broker.address.family", "v4")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();

    let mut expected = BTreeSet::new();
    produce_round(&producer, "initial", &mut expected).await;
    for node in 1..=3 {
        let port = proxy.port + 1 + node;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "broker {node} must be served at {port}"
        );
    }

    // Leader move: partition 0 goes from broker 1 to broker 2.
    cluster.partition_leader(TOPIC, 0, Some(2)).unwrap();
    produce_round(&producer, "after-move", &mut expected).await;

    // Broker 3 goes down while its partitions still name it leader; the
    // producer keeps retrying until the leaders move to broker 1.
    cluster.broker_down(3).unwrap();
    let mover = {
        let started = std::time::Instant::now();
        async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            started
        }
    };
    let (_, started) = tokio::join!(
        produce_round(&producer, "broker-down", &mut expected),
        async {
            let t = mover.await;
            for p in (0..PARTITIONS).filter(|p| p % 3 == 2) {
                cluster.partition_leader(TOPIC, p, Some(1)).unwrap();
            }
            t
        }
    );
    eprintln!("recovered {:?} after broker 3 went down", started.elapsed());

    let got = consume_all(&proxy.bootstrap(), expected.len());
    assert_eq!(
        got, expected,
        "every produced record is consumed exactly once"
    );

    let forbid: Vec<String> = upstream
        .split(',')
        .map(|a| a.replace("127.0.0.1", "*"))
        .collect();
    let (ok, report) = proxy.inspect_capture(&forbid);
    assert!(ok, "upstream addresses reached a client:\n{report}");
    assert!(report.contains("localhost:"), "{report}");
}

/// A Produce error after the upload makes the idempotent producer retry:
/// the proxy deletes the objects of the rejected attempt, the retry stores
/// the same record under the same key, and each record ends with exactly
/// one object and one envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_produce_errors_leave_one_object_per_lfs_record() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("lfs-retry", 1, 1).unwrap();
    let storage = tempfile::tempdir().unwrap();
    let storage_dir = storage.path().to_str().unwrap().to_owned();
    let proxy = ProxyProcess::start(
        &cluster.bootstrap_servers(),
        None,
        &[("KAFSCALE_LFS_PROXY_STORAGE_DIR", storage_dir.as_str())],
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", proxy.bootstrap())
        .set("broker.address.family", "v4")
        .set("enable.idempotence", "true")
        .set("retry.backoff.ms", "50")
        .create()
        .unwrap();
    // The next Produce requests fail after the proxy has uploaded: twice
    // with a retriable error, once by the broker dropping the connection.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    for i in 0..5 {
        let value = format!("blob-{i}-").repeat(200);
        let headers = OwnedHeaders::new().insert(Header {
            key: "LFS_BLOB",
            value: Some(""),
        });
        let record = FutureRecord::<(), _>::to("lfs-retry")
            .payload(&value)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(e, _)| e)
            .expect("delivered after retries");
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", proxy.bootstrap())
        .set("broker.address.family", "v4")
        .set("group.id", "lfs-retry-check")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("lfs-retry", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut keys = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut records = 0;
    while records < 5 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            records += 1;
            let env: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            keys.insert(env["key"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(records, 5);
    std::thread::sleep(Duration::from_millis(500)); // background deletes
    let mut stored = BTreeSet::new();
    for entry in walk(storage.path()) {
        stored.insert(
            entry
                .strip_prefix(storage.path())
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        stored, keys,
        "exactly one object per envelope, none left from failed attempts"
    );
    let log = proxy.log();
    assert!(
        log.contains("deleting LFS objects whose envelopes did not reach Kafka"),
        "the failed attempts' objects were deleted"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
