//! Kafka → Kafka throughput on a real broker: JSON orders read from a topic, parsed, passed
//! through an exchange, re-serialized and written to another topic — once with the sink at-least-once and
//! no checkpoints (the ceiling), once at-least-once with checkpoints, once exactly-once
//! (transactions per checkpoint), once in upsert mode — each measured in the same run so the
//! ratios hold on a noisy machine. Every run is bounded (it stops at the input's end) and its
//! output is counted with a `read_committed` consumer.
//!
//! ```text
//! cargo run --release -p weir-kafka --example kafka_bench -- \
//!     [--bootstrap 127.0.0.1:19092] [--records 1000000] [--parallelism 2] [--partitions 4] \
//!     [--interval-ms 1000] [--modes none,at-least-once,exactly-once,upsert]
//! ```
//! Prints one `SUMMARY` line per mode.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_core::{CheckpointConfig, EnvConfig, JobSettings, StreamEnv, WatermarkStrategy};
use weir_kafka::{DeliveryGuarantee, KafkaSink, KafkaSource, admin};
use weir_programs::orders::{Order, OrdersConfig};

struct Args {
    bootstrap: String,
    records: u64,
    parallelism: u32,
    partitions: i32,
    interval_ms: u64,
    modes: Vec<String>,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        bootstrap: std::env::var("WEIR_KAFKA_BOOTSTRAP")
            .unwrap_or_else(|_| "127.0.0.1:19092".into()),
        records: 1_000_000,
        parallelism: 2,
        partitions: 4,
        interval_ms: 1000,
        modes: ["none", "at-least-once", "exactly-once", "upsert"]
            .map(String::from)
            .to_vec(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let [flag, value] = pair else {
            anyhow::bail!("{} needs a value", pair[0]);
        };
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = value.clone(),
            "--records" => a.records = value.parse()?,
            "--parallelism" => a.parallelism = value.parse()?,
            "--partitions" => a.partitions = value.parse()?,
            "--interval-ms" => a.interval_ms = value.parse()?,
            "--modes" => a.modes = value.split(',').map(String::from).collect(),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn unique(base: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("weir-bench-{base}-{nanos:x}")
}

/// Fills a fresh topic with `n` JSON orders keyed by user.
fn fill(a: &Args, topic: &str) -> anyhow::Result<()> {
    // The orders carry 2024 event times: without this the broker's time-based retention
    // would delete them during the run.
    admin::ensure_topic(
        &a.bootstrap,
        topic,
        a.partitions,
        &[("retention.ms", "-1")],
        Duration::from_secs(30),
    )?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()?;
    let source = OrdersConfig {
        users: 100_000,
        ..Default::default()
    }
    .source();
    for seq in 0..a.records {
        let o = source.record(seq, 0).value;
        let key = o.user_id.to_string();
        let value = serde_json::to_vec(&o)?;
        let mut rec: BaseRecord<'_, String, Vec<u8>> = BaseRecord::to(topic)
            .key(&key)
            .payload(&value)
            .timestamp(o.ts);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

/// Records visible to a `read_committed` consumer.
fn count_committed(bootstrap: &str, topic: &str) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "weir-bench-counter")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()?;
    let parts = admin::wait_for_partitions(bootstrap, topic, Duration::from_secs(30))?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut open: std::collections::BTreeSet<i32> = parts.into_iter().collect();
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !open.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => anyhow::bail!("counting {topic}: {e}"),
            Some(Ok(_)) => n += 1,
        }
    }
    std::thread::spawn(move || drop(consumer));
    Ok(n)
}

/// Runs the pass-through job in `mode`; returns (seconds, records a `read_committed` reader sees).
fn run(a: &Args, input: &str, mode: &str) -> anyhow::Result<(f64, u64)> {
    let output = unique("out");
    let compact: &[(&str, &str)] = if mode == "upsert" {
        &[("cleanup.policy", "compact"), ("retention.ms", "-1")]
    } else {
        &[("retention.ms", "-1")]
    };
    admin::ensure_topic(
        &a.bootstrap,
        &output,
        a.partitions,
        compact,
        Duration::from_secs(30),
    )?;
    let dir = std::env::temp_dir().join(unique("ckpt"));
    let checkpoint = (mode != "none").then(|| {
        CheckpointConfig::new(dir.display().to_string())
            .with_interval(Duration::from_millis(a.interval_ms))
    });
    let env = StreamEnv::new(EnvConfig {
        parallelism: a.parallelism,
        job: JobSettings {
            checkpoint: checkpoint.clone(),
            ..Default::default()
        },
        ..Default::default()
    });
    let prefix = unique("txn");
    let guarantee = match mode {
        "exactly-once" => DeliveryGuarantee::ExactlyOnce {
            transactional_id_prefix: prefix.clone(),
        },
        "upsert" => DeliveryGuarantee::Upsert,
        _ => DeliveryGuarantee::AtLeastOnce,
    };
    let mut sink = KafkaSink::json(a.bootstrap.clone(), output.clone())
        .key(|o: &Order| Some(format!("{}@{}", o.user_id, o.order_id).into_bytes()))
        .guarantee(guarantee);
    if let Some(c) = &checkpoint {
        sink = sink.checkpoint_config(c);
    }
    env.source(
        "orders",
        KafkaSource::<Order>::json(a.bootstrap.clone(), &[input])
            .group_id(unique("group"))
            .bounded(true),
        WatermarkStrategy::none(),
    )
    // An exchange between source and sink tasks, as in any job with a shuffle.
    .rebalance()
    .map(|o: Order| o)
    .sink("out", sink);
    let started = Instant::now();
    env.execute()?;
    let secs = started.elapsed().as_secs_f64();
    let written = count_committed(&a.bootstrap, &output)?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut topics = vec![output.as_str()];
    let markers = format!("{prefix}.commits");
    if mode == "exactly-once" {
        topics.push(&markers);
    }
    let _ = admin::delete_topics(&a.bootstrap, &topics);
    Ok((secs, written))
}

fn main() -> anyhow::Result<()> {
    let a = parse()?;
    let input = unique("orders");
    let t = Instant::now();
    fill(&a, &input)?;
    eprintln!(
        "filled {input} with {} orders in {:.1} s",
        a.records,
        t.elapsed().as_secs_f64()
    );
    let mut baseline = None;
    for mode in &a.modes {
        let (secs, written) = run(&a, &input, mode)?;
        let rate = a.records as f64 / secs;
        let base = *baseline.get_or_insert(rate);
        println!(
            "SUMMARY mode={mode} parallelism={} records={} seconds={secs:.2} records_per_s={rate:.0} \
             vs_first={:.2} written={written}",
            a.parallelism,
            a.records,
            rate / base
        );
    }
    let _ = admin::delete_topics(&a.bootstrap, &[input.as_str()]);
    Ok(())
}
