//! rdkafka (Rust) through the proxy: produce records with headers, read them
//! back by assignment, verify. Used by the e2e suite.
//! Usage: rdkafka_roundtrip BOOTSTRAP TOPIC COUNT

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

type Row = (String, Vec<u8>, String);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bootstrap, topic, count) = (&args[1], &args[2], args[3].parse::<usize>().unwrap());
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let mut sent = BTreeSet::new();
    for i in 0..count {
        let key = format!("rk{i}");
        let mut value = vec![0u8, 1, 254, 255];
        value.extend_from_slice(format!("rdkafka-{i}").as_bytes());
        let trace = format!("rdkafka-{i}");
        let headers = OwnedHeaders::new().insert(Header {
            key: "trace-id",
            value: Some(trace.as_bytes()),
        });
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&key)
                    .payload(&value)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
        sent.insert((key, value, trace));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    if producer.in_flight_count() != 0 {
        eprintln!("{} records not delivered", producer.in_flight_count());
        std::process::exit(1);
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "rdkafka-assign")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got: BTreeSet<Row> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(300)) {
            Some(Ok(m)) => {
                let trace = m
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "trace-id")
                            .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                    })
                    .unwrap_or_default();
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                got.insert((key, m.payload().unwrap_or_default().to_vec(), trace));
            }
            Some(Err(e)) => {
                eprintln!("consume error: {e}");
                std::process::exit(1);
            }
            None => {}
        }
    }
    if got != sent {
        eprintln!("mismatch: sent {} got {}", sent.len(), got.len());
        std::process::exit(1);
    }
    println!("verified {}", got.len());
}
