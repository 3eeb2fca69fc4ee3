//! How a stage is added (README, "Adding a stage"): a stage that counts the
//! records of every Produce, written in this one file and added to the
//! standard chain with one `.with(...)` line, runs in an in-process proxy in
//! front of librdkafka's mock cluster. Every produced record is counted once,
//! and the records still arrive as they were sent.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::future::BoxFuture;
use kafka_lfs_proxy::app;
use kafka_lfs_proxy::config::Cli;
use kafka_lfs_proxy::kafka::relay::chain::{
    ConnectionInfo, Request, RequestAction, Stage, StageError, StageState,
};
use kafka_lfs_proxy::kafka::relay::listeners::BrokerListeners;
use kafka_lfs_proxy::kafka::relay::proxy::{Proxy, RelayConfig};
use kafka_lfs_proxy::kafka::wire::batches::split_whole;
use kafka_lfs_proxy::kafka::wire::frame::RequestHeaderPeek;
use kafka_lfs_proxy::shutdown::ShutdownTrigger;
use kafka_protocol::messages::{ApiKey, ProduceRequest};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::RecordBatchDecoder;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "counted";
const RECORDS: usize = 40;

/// The stage: counts records in Produce requests, changes nothing.
struct RecordCounter(Arc<AtomicUsize>);

impl Stage for RecordCounter {
    fn name(&self) -> &'static str {
        "record_counter"
    }

    fn wants_request(&self, header: &RequestHeaderPeek) -> bool {
        header.api_key == ApiKey::Produce as i16
    }

    fn on_request<'a>(
        &'a self,
        _conn: &'a ConnectionInfo,
        _state: &'a mut StageState,
        request: Request,
    ) -> BoxFuture<'a, Result<RequestAction, StageError>> {
        let body = request.frame.body();
        let offset = request.header.body_offset.unwrap_or(body.len());
        let produce = ProduceRequest::decode(&mut body.slice(offset..), request.header.api_version)
            .map_err(|e| StageError::new(self.name(), e.to_string()));
        let counted = produce.map(|produce| {
            let mut records = 0;
            for topic in &produce.topic_data {
                for partition in &topic.partition_data {
                    let Some(field) = &partition.records else {
                        continue;
                    };
                    for mut batch in split_whole(field).0 {
                        if let Ok(set) = RecordBatchDecoder::decode(&mut batch) {
                            records += set.records.len();
                        }
                    }
                }
            }
            records
        });
        Box::pin(async move {
            self.0.fetch_add(counted?, Ordering::Relaxed);
            Ok(RequestAction::Forward(request))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_added_with_one_line_sees_every_produced_record() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 2, 1).unwrap();
    let base = support::free_port_block(8);
    let addr = format!("127.0.0.1:{base}");
    let storage = tempfile::tempdir().unwrap();
    let settings = Cli::try_parse_from([
        "kafka-lfs-proxy",
        "--bootstrap-servers",
        &cluster.bootstrap_servers(),
        "--addr",
        &addr,
        "--storage-dir",
        storage.path().to_str().unwrap(),
    ])
    .unwrap()
    .settings;
    settings.validate().unwrap();

    let lfs = Arc::new(app::lfs(&settings.storage).unwrap());
    let security = Arc::new(app::upstream_security(&settings.upstream).unwrap());
    let brokers = BrokerListeners::new(
        settings.listener.addr.ip(),
        "127.0.0.1",
        settings.listener.broker_port_base(),
    );
    let counted = Arc::new(AtomicUsize::new(0));
    let chain = app::build_chain(None, false, None, lfs, None, Arc::clone(&brokers))
        .with(RecordCounter(Arc::clone(&counted)));
    assert_eq!(
        chain.names(),
        [
            "sasl_gate",
            "api_versions",
            "lfs_offload",
            "broker_addresses",
            "record_counter"
        ]
    );
    let trigger = ShutdownTrigger::new();
    let relay = RelayConfig {
        addr: settings.listener.addr,
        bootstrap: settings.upstream.bootstrap(),
        max_frame_size: settings.upstream.max_frame_size,
        inflight_bytes: settings.listener.inflight_bytes,
        max_in_flight: settings.listener.max_in_flight,
        connect_timeout: settings.upstream.connect_timeout(),
        health_interval: settings.process.health_interval(),
        capture_dir: None,
    };
    let proxy = Proxy::start(relay, chain, brokers, security, None, trigger.subscribe()).unwrap();
    let bootstrap = proxy.bind_bootstrap().await.unwrap().to_string();
    proxy.refresh_upstream_brokers().await.unwrap();

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("broker.address.family", "v4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..RECORDS {
        let value = format!("record-{i}");
        let record = FutureRecord::<(), _>::to(TOPIC)
            .partition((i % 2) as i32)
            .payload(&value);
        sent.push(producer.send_result(record).unwrap());
    }
    for delivery in sent {
        let delivered = delivery.await.unwrap();
        assert!(delivered.is_ok(), "delivery failed: {delivered:?}");
    }
    assert_eq!(counted.load(Ordering::Relaxed), RECORDS);

    let values = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("broker.address.family", "v4")
            .set("group.id", "chain-stage")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..2 {
            tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut values = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while values.len() < RECORDS && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
        }
        values
    })
    .await
    .unwrap();
    let mut expected: Vec<String> = (0..RECORDS).map(|i| format!("record-{i}")).collect();
    let mut got = values;
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "the stage changed nothing");
    trigger.begin();
    assert_eq!(proxy.drain(Duration::from_secs(5)).await, 0);
}
