//! What the RocksDB tests share: fresh directories, RocksDB factories, a job runner for the
//! `orders` dataflow (windows) with the fault injector and the `expected_summaries` oracle, and
//! a keyed job whose state per key is large (for state far beyond the memory budget).

#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use weir_core::checkpoint::coordinator::FaultInjector;
use weir_core::checkpoint::format::SnapshotMetadata;
use weir_core::checkpoint::storage::{CheckpointStorage, METADATA_FILE, StorageFactory};
use weir_core::error::OperatorError;
use weir_core::record::Record;
use weir_core::source::SourceContext;
use weir_core::state::StateBackendFactory;
use weir_core::{
    CheckpointConfig, EnvConfig, JobHandle, JobSettings, KeyedContext, KeyedProcessFunction,
    RestartStrategy, Source, SourcePoll, SourceReader, StreamEnv, TransactionalCollectSink,
    ValueState, WatermarkStrategy,
};
use weir_programs::orders::{OrdersConfig, UserSummary, build_dataflow};
use weir_rocksdb::{RocksDbConfig, RocksDbFactory};

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "weir-rocks-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A RocksDB factory working in `dir`.
pub fn rocks(
    dir: &Path,
    incremental: bool,
    local_recovery: bool,
    budget: usize,
) -> Arc<RocksDbFactory> {
    let mut c = RocksDbConfig::new(dir);
    c.incremental = incremental;
    c.local_recovery = local_recovery;
    c.memory_budget = budget;
    Arc::new(RocksDbFactory::new(c))
}

/// The orders job a test runs.
pub struct OrdersJob {
    pub config: OrdersConfig,
    pub storage: String,
    pub storage_factory: Option<StorageFactory>,
    pub backend: Option<StateBackendFactory>,
    pub parallelism: u32,
    pub interval: Duration,
    pub num_retained: usize,
    pub fault: Option<FaultInjector>,
    pub restore_from: Option<String>,
    pub sink: TransactionalCollectSink<UserSummary>,
}

impl OrdersJob {
    pub fn new(config: OrdersConfig, storage: impl Into<String>) -> Self {
        Self {
            config,
            storage: storage.into(),
            storage_factory: None,
            backend: None,
            parallelism: 2,
            interval: Duration::from_millis(30),
            num_retained: 1,
            fault: None,
            restore_from: None,
            sink: TransactionalCollectSink::new(),
        }
    }

    pub fn start(&self) -> JobHandle {
        let mut ckpt = CheckpointConfig::new(self.storage.clone()).with_interval(self.interval);
        ckpt.num_retained = self.num_retained;
        let env = StreamEnv::new(EnvConfig {
            name: "orders".into(),
            parallelism: self.parallelism,
            channel_capacity: 2,
            job: JobSettings {
                checkpoint: Some(ckpt),
                restart: Some(RestartStrategy::FixedDelay {
                    attempts: 20,
                    delay: Duration::ZERO,
                }),
                fault: self.fault.clone(),
                restore_from: self.restore_from.clone(),
                storage: self.storage_factory.clone(),
                state_backend: self.backend.clone(),
                ..Default::default()
            },
            ..Default::default()
        });
        build_dataflow(&env, &self.config).sink("txn", self.sink.clone());
        env.start().unwrap()
    }

    /// Runs to the end; the committed results, sorted, and the number of restarts.
    pub fn run(&self) -> (Vec<UserSummary>, u64) {
        let job = self.start();
        job.wait_timeout(Duration::from_secs(180))
            .expect("the job did not finish")
            .unwrap();
        (self.committed(), job.status().num_restarts)
    }

    pub fn committed(&self) -> Vec<UserSummary> {
        let mut out = self.sink.committed();
        out.sort();
        out
    }
}

/// Orders at a rate that keeps a job running through a few checkpoints.
pub fn orders(count: u64, rate: u64, users: u64) -> OrdersConfig {
    OrdersConfig {
        count: Some(count),
        rate: Some(rate),
        users,
        seed: 7,
        ..Default::default()
    }
}

/// The `_metadata` of a snapshot.
pub fn metadata(storage: &dyn CheckpointStorage, location: &str) -> SnapshotMetadata {
    serde_json::from_slice(&storage.read_file(location, METADATA_FILE).unwrap()).unwrap()
}

/// Files in the shared area, the union of what the retained checkpoints reference, and how
/// many checkpoints are retained.
pub fn shared_and_referenced(
    storage: &dyn CheckpointStorage,
) -> (BTreeSet<String>, BTreeSet<String>, usize) {
    let shared = storage.shared_location().unwrap();
    let files: BTreeSet<String> = storage.list_files(&shared).unwrap().into_iter().collect();
    let retained = storage.list_checkpoints().unwrap();
    let referenced = retained
        .iter()
        .flat_map(|(_, loc)| metadata(storage, loc).shared_files())
        .map(|r| r.name)
        .collect();
    (files, referenced, retained.len())
}

/// Waits for checkpoint `n` of a running job to complete, triggering them one by one.
pub fn checkpoint_now(job: &JobHandle) -> String {
    job.trigger_checkpoint()
        .recv_timeout(Duration::from_secs(60))
        .expect("no answer to the checkpoint request")
        .expect("the checkpoint failed")
}

/// Emits `(key, i)` for every key `rounds` times over (key-major within a round), slowly
/// enough for checkpoints to happen; each subtask reads every parallelism-th record and
/// resumes from its position.
#[derive(Clone)]
pub struct Rounds {
    pub keys: u64,
    pub rounds: u64,
    pub per_poll: usize,
}

struct RoundsReader {
    next: u64,
    step: u64,
    end: u64,
    keys: u64,
    per_poll: usize,
}

impl Source<(u64, u64)> for Rounds {
    fn create_reader(
        &self,
        ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<(u64, u64)>>, OperatorError> {
        Ok(Box::new(RoundsReader {
            next: u64::from(ctx.subtask),
            step: u64::from(ctx.parallelism),
            end: self.keys * self.rounds,
            keys: self.keys,
            per_poll: self.per_poll,
        }))
    }
}

impl SourceReader<(u64, u64)> for RoundsReader {
    fn poll(&mut self, out: &mut Vec<Record<(u64, u64)>>) -> Result<SourcePoll, OperatorError> {
        for _ in 0..self.per_poll {
            if self.next >= self.end {
                return Ok(SourcePoll::Finished);
            }
            out.push(Record::new(
                self.next as i64,
                (self.next % self.keys, self.next),
            ));
            self.next += self.step;
        }
        Ok(SourcePoll::Idle)
    }

    fn position(&self) -> Vec<u8> {
        weir_core::source::counter_position(self.next)
    }

    fn restore(&mut self, p: &[u8]) -> Result<(), OperatorError> {
        self.next = weir_core::source::restored_counter("test source", p)?;
        Ok(())
    }
}

/// Keeps a count and `payload` pseudo-random bytes per key (incompressible, so the state's
/// size on disk is what it says); emits `(key, count)` when a key reaches `rounds`.
#[derive(Clone)]
pub struct Fat {
    pub state: ValueState<(u64, Vec<u8>)>,
    pub payload: usize,
    pub rounds: u64,
}

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for Fat {
    fn process_element(
        &mut self,
        v: (u64, u64),
        ctx: &mut KeyedContext<'_, u64, (u64, u64)>,
    ) -> Result<(), OperatorError> {
        let (n, mut bytes) = self.state.get(ctx)?.unwrap_or((0, Vec::new()));
        if bytes.is_empty() {
            let mut x = v.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            bytes = (0..self.payload)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
        }
        let n = n + 1;
        self.state.set(ctx, (n, bytes))?;
        if n == self.rounds {
            ctx.emit((v.0, n))?;
        }
        Ok(())
    }
}

/// Builds the fat-state job: `Rounds` → key by key → `Fat` → `sink`.
pub fn fat_job(
    env: &StreamEnv,
    source: Rounds,
    payload: usize,
    sink: TransactionalCollectSink<(u64, u64)>,
) {
    let rounds = source.rounds;
    // The source keeps parallelism 2 (its positions belong to its subtasks), so the keyed
    // operator after it can be rescaled.
    env.source("rounds", source, WatermarkStrategy::none())
        .uid("rounds")
        .parallelism(2)
        .key_by(|v: &(u64, u64)| v.0)
        .process(Fat {
            state: ValueState::new("fat"),
            payload,
            rounds,
        })
        .uid("fat")
        .sink("txn", sink);
}
