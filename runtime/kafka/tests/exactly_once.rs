//! The seed `ExactlyOnceETLJob` on a real broker: orders produced to a 4-partition topic, keyed
//! by user, 10-minute event-time windows, summaries to a Kafka topic through the exactly-once
//! sink — failed while processing, between barrier and snapshot, during the asynchronous
//! write, after `_metadata` but before completion is notified (checkpoint complete, Kafka
//! transaction not yet committed), during restore, and repeatedly. A `read_committed` consumer
//! must see every expected summary exactly once; at-least-once must lose nothing.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod test_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use test_support::{Topics, produce, read_committed, read_uncommitted};
use weir_core::checkpoint::coordinator::{FaultInjector, FaultPoint, fail_once};
use weir_core::sink::{Sink, SinkContext, SinkWriter};
use weir_core::{
    CheckpointConfig, EnvConfig, JobSettings, RestartStrategy, StreamEnv, WatermarkStrategy,
    source::VecSource,
};
use weir_core::{OperatorError, Record};
use weir_kafka::orders_kafka::{OrdersKafkaConfig, build_dataflow, summary_key};
use weir_kafka::{DeliveryGuarantee, KafkaSink};
use weir_programs::orders::{OrdersConfig, UserSummary, expected_summaries};

const COUNT: u64 = 20_000;

fn orders_config() -> OrdersConfig {
    OrdersConfig {
        count: Some(COUNT),
        rate: None,
        users: 200,
        seed: 7,
        ..Default::default()
    }
}

/// Produces the generated orders, keyed by user, with their event time as Kafka timestamp.
fn orders_topic(topics: &mut Topics) -> String {
    let topic = topics.create("orders", 4);
    let source = orders_config().source();
    let records: Vec<_> = (0..COUNT)
        .map(|seq| {
            let o = source.record(seq, 0).value;
            (
                None,
                Some(o.user_id.to_string().into_bytes()),
                o.ts,
                serde_json::to_vec(&o).unwrap(),
            )
        })
        .collect();
    produce(&topics.bootstrap, &topic, &records);
    topic
}

fn expected() -> Vec<UserSummary> {
    expected_summaries(&orders_config())
}

struct Case {
    what: &'static str,
    fault: Option<FaultInjector>,
    fail_processing: bool,
    /// Checkpoints whose sink epoch held records (filled by [`EpochWatch`] during the run).
    nonempty: Epochs,
}

type Epochs = Arc<Mutex<BTreeSet<u64>>>;

/// Wraps the Kafka sink to note which checkpoints' epochs held records, so that the fault
/// "after metadata, before the Kafka commit" can pick a checkpoint with something to commit:
/// whether an early checkpoint has any depends on timing, the final one always has some.
struct EpochWatch<T> {
    inner: KafkaSink<T>,
    nonempty: Epochs,
}

struct EpochWatchWriter<T> {
    inner: Box<dyn SinkWriter<T>>,
    nonempty: Epochs,
    written: usize,
}

impl<T: Send + 'static> Sink<T> for EpochWatch<T> {
    fn create_writer(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError> {
        Ok(Box::new(EpochWatchWriter {
            inner: self.inner.create_writer(ctx)?,
            nonempty: self.nonempty.clone(),
            written: 0,
        }))
    }
}

impl<T: Send> SinkWriter<T> for EpochWatchWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        self.written += 1;
        self.inner.write(rec)
    }
    fn flush(&mut self) -> Result<(), OperatorError> {
        self.inner.flush()
    }
    fn finish(&mut self) -> Result<(), OperatorError> {
        self.inner.finish()
    }
    fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Vec<Vec<u8>>, OperatorError> {
        if std::mem::take(&mut self.written) > 0 {
            self.nonempty.lock().unwrap().insert(checkpoint_id);
        }
        self.inner.pre_commit(checkpoint_id)
    }
    fn commit(&mut self, checkpoint_id: u64) -> Result<(), OperatorError> {
        self.inner.commit(checkpoint_id)
    }
    fn restore(&mut self, state: Vec<Vec<u8>>) -> Result<(), OperatorError> {
        self.inner.restore(state)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ExactlyOnce,
    AtLeastOnce,
    Upsert,
}

/// Runs the job into a fresh output topic; returns what a `read_committed` consumer sees (in
/// upsert mode: the latest value per key, which is what compaction keeps) and the number of
/// restarts.
fn run(
    topics: &mut Topics,
    input: &str,
    mode: Mode,
    parallelism: u32,
    case: Case,
) -> (Vec<UserSummary>, u64, BTreeMap<String, u64>) {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "weir-kafka-eo-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let output = if mode == Mode::Upsert {
        topics.create_with("summaries", 4, &[("cleanup.policy", "compact")])
    } else {
        topics.create("summaries", 4)
    };
    let prefix = topics.unique("txn");
    let prefix_for_diag = prefix.clone();
    topics.adopt(format!("{prefix}.commits"));
    let ckpt =
        CheckpointConfig::new(dir.display().to_string()).with_interval(Duration::from_millis(50));
    let env = StreamEnv::new(EnvConfig {
        parallelism,
        job: JobSettings {
            checkpoint: Some(ckpt.clone()),
            restart: Some(RestartStrategy::FixedDelay {
                attempts: 20,
                delay: Duration::ZERO,
            }),
            fault: case.fault,
            ..Default::default()
        },
        ..Default::default()
    });
    let guarantee = match mode {
        Mode::ExactlyOnce => DeliveryGuarantee::ExactlyOnce {
            transactional_id_prefix: prefix,
        },
        Mode::AtLeastOnce => DeliveryGuarantee::AtLeastOnce,
        Mode::Upsert => DeliveryGuarantee::Upsert,
    };
    let config = OrdersKafkaConfig {
        bootstrap: topics.bootstrap.clone(),
        input_topic: input.to_string(),
        output_topic: output.clone(),
        group: topics.unique("group"),
        guarantee: guarantee.clone(),
        bounded: true,
        window: Duration::from_secs(600),
        out_of_orderness: Duration::from_secs(5),
    };
    let sink = KafkaSink::json(topics.bootstrap.clone(), output.clone())
        .key(summary_key(&guarantee))
        .guarantee(guarantee)
        .checkpoint_config(&ckpt);
    let failed = Arc::new(AtomicBool::new(!case.fail_processing));
    build_dataflow(&env, &config)
        .map(move |s: UserSummary| {
            if !failed.swap(true, Ordering::SeqCst) {
                panic!("injected failure while processing a window result");
            }
            s
        })
        .sink(
            "summaries",
            EpochWatch {
                inner: sink,
                nonempty: case.nonempty.clone(),
            },
        )
        .uid("summaries-sink");
    let job = env.start().unwrap();
    let Some(outcome) = job.wait_timeout(Duration::from_secs(60)) else {
        let stats = job.checkpoint_stats();
        let vertices: Vec<String> = job
            .metrics()
            .vertices
            .iter()
            .map(|v| {
                format!(
                    "{} in={} out={} wm={:?}",
                    v.name,
                    v.records_in(),
                    v.records_out(),
                    v.watermark()
                )
            })
            .collect();
        panic!(
            "{}: job did not finish: {:?}; checkpoints completed {} failed {} last {:?}; {vertices:?}",
            case.what,
            job.status(),
            stats.completed,
            stats.failed,
            stats.history.last()
        );
    };
    outcome.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let records = read_committed(&topics.bootstrap, &output);
    let mut out: Vec<UserSummary> = if mode == Mode::Upsert {
        let latest: BTreeMap<Option<Vec<u8>>, Vec<u8>> =
            records.into_iter().map(|(_, k, v)| (k, v)).collect();
        latest
            .into_values()
            .map(|v| serde_json::from_slice(&v).unwrap())
            .collect()
    } else {
        records
            .into_iter()
            .map(|(_, _, v)| serde_json::from_slice(&v).unwrap())
            .collect()
    };
    out.sort();
    if mode == Mode::ExactlyOnce
        && (std::env::var_os("WEIR_EO_DIAG").is_some() || out.len() != expected().len())
    {
        let raw = read_uncommitted(&topics.bootstrap, &output);
        let markers: Vec<String> =
            read_uncommitted(&topics.bootstrap, &format!("{prefix_for_diag}.commits"))
                .into_iter()
                .map(|(p, k, v)| {
                    format!(
                        "p{p} {}={}",
                        String::from_utf8_lossy(&k.unwrap_or_default()),
                        String::from_utf8_lossy(&v)
                    )
                })
                .collect();
        let stats = job.checkpoint_stats();
        let history: Vec<String> = stats
            .history
            .iter()
            .map(|r| format!("{}:{:?}@{} {:?}", r.id, r.status, r.trigger_ms, r.failure))
            .collect();
        let vertices: Vec<String> = job
            .metrics()
            .vertices
            .iter()
            .map(|v| format!("{} in={} out={}", v.name, v.records_in(), v.records_out()))
            .collect();
        eprintln!(
            "{}: {} committed, {} uncommitted records; markers {markers:?}; status {:?}; \
             restored {:?}; history {history:?}; {vertices:?}",
            case.what,
            out.len(),
            raw.len(),
            job.status(),
            stats.last_restore,
        );
    }
    let sink_counters = job
        .metrics()
        .vertices
        .iter()
        .find(|v| v.uid == "summaries-sink")
        .map(|v| v.counters())
        .unwrap_or_default();
    (out, job.status().num_restarts, sink_counters)
}

fn once(pick: impl Fn(&FaultPoint) -> bool + Send + Sync + 'static) -> Option<FaultInjector> {
    Some(fail_once(pick))
}

/// The checkpoint faults pick checkpoint 1 onwards: the input is small enough to be read
/// before a second checkpoint, and the final checkpoint (taken once the input has ended)
/// always exists. The crash between checkpoint completion and Kafka commit picks the first
/// checkpoint whose epoch held records, so that it always leaves something to commit.
fn cases() -> Vec<Case> {
    let watched = Epochs::default();
    let seen = watched.clone();
    vec![
        Case {
            what: "no failure",
            fault: None,
            fail_processing: false,
            nonempty: Epochs::default(),
        },
        Case {
            what: "while processing",
            fault: None,
            fail_processing: true,
            nonempty: Epochs::default(),
        },
        Case {
            what: "between barrier and snapshot",
            fault: once(
                |p| matches!(p, FaultPoint::BeforeSnapshot { checkpoint, .. } if *checkpoint >= 1),
            ),
            fail_processing: false,
            nonempty: Epochs::default(),
        },
        Case {
            what: "during the asynchronous write",
            fault: once(|p| matches!(p, FaultPoint::AsyncWrite { checkpoint } if *checkpoint >= 1)),
            fail_processing: false,
            nonempty: Epochs::default(),
        },
        Case {
            what: "after metadata, before the Kafka commit",
            fault: once(move |p| {
                matches!(p, FaultPoint::AfterMetadata { checkpoint }
                    if seen.lock().unwrap().contains(checkpoint))
            }),
            fail_processing: false,
            nonempty: watched,
        },
        Case {
            what: "during restore",
            fault: once(|p| matches!(p, FaultPoint::Restore { attempt: 1, .. })),
            fail_processing: true,
            nonempty: Epochs::default(),
        },
        Case {
            what: "repeatedly",
            fault: {
                let n = AtomicU64::new(0);
                Some(Arc::new(move |p: &FaultPoint| {
                    matches!(p, FaultPoint::AfterMetadata { checkpoint } if checkpoint % 2 == 1)
                        && n.fetch_add(1, Ordering::SeqCst) < 3
                }) as FaultInjector)
            },
            fail_processing: false,
            nonempty: Epochs::default(),
        },
    ]
}

#[test]
fn orders_kafka_exactly_once_under_failures() {
    let mut topics = Topics::new();
    let input = orders_topic(&mut topics);
    let want = expected();
    let only = std::env::var("WEIR_EO_CASE").ok();
    for case in cases() {
        let what = case.what;
        if only.as_deref().is_some_and(|o| o != what) {
            continue;
        }
        let started = std::time::Instant::now();
        let (got, restarts, counters) = run(&mut topics, &input, Mode::ExactlyOnce, 2, case);
        if what == "after metadata, before the Kafka commit" {
            // The hard case really happened: the restore found a completed checkpoint whose
            // epochs had not been committed, and committed them.
            assert!(
                counters.get("kafkaEpochsRecommittedOnRestore").copied() >= Some(1),
                "{what}: {counters:?}"
            );
        }
        assert!(
            counters.get("kafkaTransactionsCommitted").copied() >= Some(1),
            "{what}: {counters:?}"
        );
        if got != want {
            let mut counts: BTreeMap<&UserSummary, i64> = BTreeMap::new();
            for s in &got {
                *counts.entry(s).or_default() += 1;
            }
            for s in &want {
                *counts.entry(s).or_default() -= 1;
            }
            let dup = counts.values().filter(|c| **c > 0).count();
            let lost = counts.values().filter(|c| **c < 0).count();
            panic!(
                "{what}: {} results, expected {} ({dup} duplicated or wrong, {lost} missing)",
                got.len(),
                want.len()
            );
        }
        assert!(
            restarts >= 1 || what == "no failure",
            "{what}: no failure happened"
        );
        eprintln!("{what}: ok, {restarts} restarts, {:?}", started.elapsed());
    }
}

/// The cases the at-least-once and upsert runs replay: one failure while processing, one
/// between checkpoint completion and commit, and several in one run.
fn restart_cases() -> Vec<Case> {
    cases()
        .into_iter()
        .filter(|c| {
            matches!(
                c.what,
                "after metadata, before the Kafka commit" | "while processing" | "repeatedly"
            )
        })
        .collect()
}

#[test]
fn orders_kafka_at_least_once_loses_nothing() {
    let mut topics = Topics::new();
    let input = orders_topic(&mut topics);
    let want = expected();
    for case in restart_cases() {
        let what = case.what;
        let (got, restarts, _) = run(&mut topics, &input, Mode::AtLeastOnce, 2, case);
        let got: std::collections::BTreeSet<_> = got.into_iter().collect();
        for s in &want {
            assert!(got.contains(s), "{what}: lost {s:?}");
        }
        // The checkpoint-triggered faults depend on timing here; the processing one does not.
        assert!(
            restarts >= 1 || what != "while processing",
            "{what}: no failure happened"
        );
    }
}

#[test]
fn orders_kafka_upsert_latest_value_per_key_is_exact() {
    let mut topics = Topics::new();
    let input = orders_topic(&mut topics);
    let want = expected();
    for case in restart_cases() {
        let what = case.what;
        let (got, restarts, _) = run(&mut topics, &input, Mode::Upsert, 2, case);
        assert_eq!(got, want, "{what}: the latest value per key differs");
        assert!(
            restarts >= 1 || what != "while processing",
            "{what}: no failure happened"
        );
    }
}

#[test]
fn upsert_into_a_topic_that_is_not_compacted_is_refused() {
    let mut topics = Topics::new();
    let output = topics.create("not-compacted", 1);
    let env = StreamEnv::new(EnvConfig::default());
    env.source(
        "one",
        VecSource::new([(0, (1u64, 2i64))]),
        WatermarkStrategy::none(),
    )
    .sink(
        "out",
        KafkaSink::json(topics.bootstrap.clone(), output.clone())
            .key(|v: &(u64, i64)| Some(v.0.to_string().into_bytes()))
            .guarantee(DeliveryGuarantee::Upsert),
    );
    let err = env.execute().unwrap_err().to_string();
    assert!(
        err.contains("upsert mode needs a compacted topic")
            && err.contains(&output)
            && err.contains("cleanup.policy=compact"),
        "{err}"
    );
    let missing_key = KafkaSink::<(u64, i64)>::json(topics.bootstrap.clone(), output)
        .guarantee(DeliveryGuarantee::Upsert)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        missing_key.contains("upsert mode needs a record key"),
        "{missing_key}"
    );
}
