//! What the Kafka tests share: the broker address (`WEIR_KAFKA_BOOTSTRAP`), a connectivity
//! check that fails loudly, uniquely named topics deleted afterwards, and helpers to produce
//! and to read everything committed.

#![allow(dead_code)] // each test file uses a different part

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_kafka::admin;

/// The broker under test; panics when it cannot be reached.
pub fn bootstrap() -> String {
    let b = std::env::var("WEIR_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .unwrap();
    if let Err(e) = consumer.fetch_metadata(None, Duration::from_secs(5)) {
        panic!("Kafka broker not reachable at {b} ({e}): start it with `bash .ci/kafka.sh start`");
    }
    std::thread::spawn(move || drop(consumer));
    b
}

/// Topics created for one test, deleted when dropped.
pub struct Topics {
    pub bootstrap: String,
    names: Vec<String>,
}

impl Topics {
    pub fn new() -> Self {
        Self {
            bootstrap: bootstrap(),
            names: Vec::new(),
        }
    }

    /// A name no other test (or earlier run) uses.
    pub fn unique(&self, base: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!(
            "weir-test-{base}-{}-{nanos:x}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// Creates a uniquely named topic.
    pub fn create(&mut self, base: &str, partitions: i32) -> String {
        self.create_with(base, partitions, &[])
    }

    /// Creates a uniquely named topic with topic configs. Time-based retention is off: the
    /// tests' records carry event times from the past (2024), and the broker's default
    /// retention (7 days, by record timestamp) would delete them at its next check — which
    /// made results vanish in about one run in eight before this.
    pub fn create_with(&mut self, base: &str, partitions: i32, configs: &[(&str, &str)]) -> String {
        let name = self.unique(base);
        let mut configs = configs.to_vec();
        configs.push(("retention.ms", "-1"));
        admin::ensure_topic(
            &self.bootstrap,
            &name,
            partitions,
            &configs,
            Duration::from_secs(30),
        )
        .unwrap();
        self.names.push(name.clone());
        name
    }

    /// Registers a topic something else creates (a marker topic), for deletion.
    pub fn adopt(&mut self, name: String) {
        self.names.push(name);
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let _ = admin::delete_topics(&self.bootstrap, &names);
    }
}

/// `(partition, key, timestamp, value)`; no partition: by key.
pub type ProducedRecord = (Option<i32>, Option<Vec<u8>>, i64, Vec<u8>);

/// Produces `(partition, key, timestamp, value)` records and waits for every delivery.
pub fn produce(bootstrap: &str, topic: &str, records: &[ProducedRecord]) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (partition, key, ts, value) in records {
        let mut r: BaseRecord<'_, Vec<u8>, Vec<u8>> =
            BaseRecord::to(topic).payload(value).timestamp(*ts);
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(part) = partition {
            r = r.partition(*part);
        }
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
    std::thread::spawn(move || drop(p));
}

/// Every record of `topic` visible to a `read_committed` consumer: (partition, key, value).
pub fn read_committed(bootstrap: &str, topic: &str) -> Vec<(i32, Option<Vec<u8>>, Vec<u8>)> {
    read_all(bootstrap, topic, "read_committed")
}

/// Every record of `topic` up to its end, committed or not (for diagnostics).
pub fn read_uncommitted(bootstrap: &str, topic: &str) -> Vec<(i32, Option<Vec<u8>>, Vec<u8>)> {
    read_all(bootstrap, topic, "read_uncommitted")
}

fn read_all(bootstrap: &str, topic: &str, isolation: &str) -> Vec<(i32, Option<Vec<u8>>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "weir-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let parts = admin::wait_for_partitions(bootstrap, topic, Duration::from_secs(30)).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut open: std::collections::BTreeSet<i32> = parts.into_iter().collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic} did not reach its end"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => out.push((
                m.partition(),
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            )),
        }
    }
    std::thread::spawn(move || drop(consumer));
    out
}
