//! State backend benchmark.
//!
//! `window`: the `window-bench` workload (as `checkpoint_bench` in weir-programs) on the heap or
//! on RocksDB: sustained records/s, checkpoint duration and size, peak memory.
//!
//! `updates`: many keys, a fixed share of them updated between checkpoints: the size and
//! duration of full and incremental checkpoints, then the time to restore the last checkpoint
//! from local copies and from checkpoint storage.
//!
//! ```text
//! cargo run --release -p weir-rocksdb --example state_bench -- window \
//!     [--backend heap|rocksdb] [--incremental] [--keys 100000] [--parallelism 1] \
//!     [--seconds 20] [--warmup 5] [--interval-ms 1000] [--budget-mb 256]
//! cargo run --release -p weir-rocksdb --example state_bench -- updates \
//!     [--keys 10000000] [--rounds 5] [--update-permille 10] [--storage URI] [--budget-mb 256]
//! ```
//! `--storage` defaults to a local directory; `s3://bucket/prefix` uses S3 with the AWS
//! environment (`WEIR_S3_ENDPOINT` for a local server). Prints `SUMMARY` lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir_core::checkpoint::coordinator::CheckpointStatus;
use weir_core::checkpoint::format::SnapshotMetadata;
use weir_core::checkpoint::storage::{
    CheckpointStorage, METADATA_FILE, StorageFactory, open_storage,
};
use weir_core::error::OperatorError;
use weir_core::record::Record;
use weir_core::sink::BlackholeSink;
use weir_core::source::SourceContext;
use weir_core::state::StateBackendFactory;
use weir_core::{
    CheckpointConfig, EnvConfig, JobHandle, JobSettings, KeyedContext, KeyedProcessFunction,
    Source, SourcePoll, SourceReader, StreamEnv, ValueState, WatermarkStrategy,
};
use weir_programs::window_bench::{BenchConfig, build_dataflow};
use weir_rocksdb::{RocksDbConfig, RocksDbFactory};
use weir_s3::{S3Settings, S3Storage};

#[derive(Debug)]
struct Args {
    workload: String,
    rocksdb: bool,
    incremental: bool,
    keys: u64,
    parallelism: u32,
    seconds: u64,
    warmup: u64,
    interval_ms: u64,
    budget_mb: usize,
    rounds: u64,
    permille: u64,
    storage: Option<String>,
}

fn parse() -> Args {
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut a = Args {
        workload: v.first().cloned().unwrap_or_else(|| "window".into()),
        rocksdb: false,
        incremental: false,
        keys: 100_000,
        parallelism: 1,
        seconds: 20,
        warmup: 5,
        interval_ms: 1000,
        budget_mb: 256,
        rounds: 5,
        permille: 10,
        storage: None,
    };
    let mut i = 1;
    while i < v.len() {
        let num = |i: usize| {
            v.get(i + 1)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match v[i].as_str() {
            "--backend" => a.rocksdb = v.get(i + 1).is_some_and(|b| b == "rocksdb"),
            "--incremental" => {
                a.incremental = true;
                i += 1;
                continue;
            }
            "--keys" => a.keys = num(i),
            "--parallelism" => a.parallelism = num(i) as u32,
            "--seconds" => a.seconds = num(i),
            "--warmup" => a.warmup = num(i),
            "--interval-ms" => a.interval_ms = num(i),
            "--budget-mb" => a.budget_mb = num(i) as usize,
            "--rounds" => a.rounds = num(i),
            "--update-permille" => a.permille = num(i),
            "--storage" => a.storage = v.get(i + 1).cloned(),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rocks(dir: &std::path::Path, a: &Args, incremental: bool, local: bool) -> Arc<RocksDbFactory> {
    let mut c = RocksDbConfig::new(dir);
    c.memory_budget = a.budget_mb << 20;
    c.incremental = incremental;
    c.local_recovery = local;
    Arc::new(RocksDbFactory::new(c))
}

fn storage_factory() -> StorageFactory {
    Arc::new(|uri: &str| {
        if uri.starts_with("s3://") {
            let settings = S3Settings {
                endpoint: std::env::var("WEIR_S3_ENDPOINT").ok(),
                path_style: Some(true),
                ..Default::default()
            };
            Ok(Arc::new(S3Storage::open(uri, settings)?) as Arc<dyn CheckpointStorage>)
        } else {
            open_storage(uri)
        }
    })
}

fn window(a: &Args) {
    let dir = std::env::temp_dir().join(format!("weir-state-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut job = JobSettings::default();
    if a.interval_ms > 0 {
        let mut c = CheckpointConfig::new(dir.join("ckpt").display().to_string())
            .with_interval(Duration::from_millis(a.interval_ms));
        c.num_retained = 2;
        job.checkpoint = Some(c);
    }
    if a.rocksdb {
        job.state_backend = Some(rocks(&dir.join("local"), a, a.incremental, false));
    }
    let env = StreamEnv::new(EnvConfig {
        parallelism: a.parallelism,
        job,
        ..Default::default()
    });
    let cfg = BenchConfig {
        keys: a.keys,
        ..Default::default()
    };
    build_dataflow(&env, &cfg)
        .sink("blackhole", BlackholeSink)
        .uid("blackhole");
    let handle = env.start().expect("job starts");
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(a.warmup + a.seconds) {
        std::thread::sleep(Duration::from_millis(1000));
        let t = start.elapsed().as_secs_f64();
        if t >= a.warmup as f64 {
            samples.push((t, handle.metrics().records_in() as f64));
        }
    }
    let rate = match (samples.first(), samples.last()) {
        (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => (n1 - n0) / (t1 - t0),
        _ => 0.0,
    };
    let stats = handle.checkpoint_stats();
    handle.cancel();
    let _ = handle.wait_timeout(Duration::from_secs(60));
    let done: Vec<_> = stats
        .history
        .iter()
        .filter(|r| r.status == CheckpointStatus::Completed)
        .collect();
    println!(
        "SUMMARY window backend={} incremental={} p={} keys={} records_per_s={:.0} checkpoints={} ckpt_p50_ms={:.0} ckpt_size_mb={:.1} peak_rss_mb={:.1}",
        if a.rocksdb { "rocksdb" } else { "heap" },
        a.incremental,
        a.parallelism,
        a.keys,
        rate,
        done.len(),
        median(
            done.iter()
                .filter_map(|r| r.duration_ms)
                .map(|d| d as f64)
                .collect()
        ),
        median(done.iter().map(|r| r.size_bytes as f64 / 1e6).collect()),
        peak_rss_mb()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Emits up to `limit` keys: first every key once, then pseudo-random keys.
#[derive(Clone)]
struct Gated {
    keys: u64,
    limit: Arc<AtomicU64>,
}

struct GatedReader {
    keys: u64,
    limit: Arc<AtomicU64>,
    next: u64,
}

impl Source<u64> for Gated {
    fn create_reader(
        &self,
        _ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<u64>>, OperatorError> {
        Ok(Box::new(GatedReader {
            keys: self.keys,
            limit: self.limit.clone(),
            next: 0,
        }))
    }
}

impl SourceReader<u64> for GatedReader {
    fn poll(&mut self, out: &mut Vec<Record<u64>>) -> Result<SourcePoll, OperatorError> {
        let limit = self.limit.load(Ordering::SeqCst);
        for _ in 0..1024 {
            if self.next >= limit {
                break;
            }
            let key = if self.next < self.keys {
                self.next
            } else {
                weir_core::key::fmix64(self.next) % self.keys
            };
            out.push(Record::new(0, key));
            self.next += 1;
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

/// Counts records per key.
#[derive(Clone)]
struct Count(ValueState<u64>);

impl KeyedProcessFunction<u64, u64, u64> for Count {
    fn process_element(
        &mut self,
        _v: u64,
        ctx: &mut KeyedContext<'_, u64, u64>,
    ) -> Result<(), OperatorError> {
        let n = self.0.get(ctx)?.unwrap_or(0);
        self.0.set(ctx, n + 1)
    }
}

fn counting_job(
    storage: &str,
    backend: StateBackendFactory,
    limit: Arc<AtomicU64>,
    keys: u64,
    restore: Option<String>,
) -> JobHandle {
    let mut c = CheckpointConfig::new(storage).with_interval(Duration::from_secs(1_000_000));
    c.num_retained = 2;
    let env = StreamEnv::new(EnvConfig {
        name: "updates".into(),
        parallelism: 1,
        job: JobSettings {
            checkpoint: Some(c),
            state_backend: Some(backend),
            storage: Some(storage_factory()),
            restore_from: restore,
            ..Default::default()
        },
        ..Default::default()
    });
    env.source("gated", Gated { keys, limit }, WatermarkStrategy::none())
        .uid("gated")
        .key_by(|k: &u64| *k)
        .process(Count(ValueState::new("count")))
        .uid("count")
        .sink("blackhole", BlackholeSink);
    env.start().expect("job starts")
}

/// Records the keyed operator has taken in.
fn counted(h: &JobHandle) -> u64 {
    h.metrics()
        .vertices
        .iter()
        .find(|v| v.uid == "count")
        .map_or(0, |v| v.records_in())
}

fn wait_for(h: &JobHandle, n: u64) {
    while counted(h) < n {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn metadata(st: &dyn CheckpointStorage, loc: &str) -> SnapshotMetadata {
    serde_json::from_slice(&st.read_file(loc, METADATA_FILE).expect("metadata"))
        .expect("metadata decodes")
}

fn updates(a: &Args) {
    let dir = std::env::temp_dir().join(format!("weir-state-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let per_round = (a.keys * a.permille / 1000).max(1);
    let mut last_incremental = String::new();
    let mut storage_uri = String::new();
    for incremental in [false, true] {
        storage_uri = a.storage.clone().map_or_else(
            || {
                dir.join(format!("ckpt-{incremental}"))
                    .display()
                    .to_string()
            },
            |s| {
                format!(
                    "{}/{}-{incremental}",
                    s.trim_end_matches('/'),
                    std::process::id()
                )
            },
        );
        let storage = storage_factory()(&storage_uri).expect("storage opens");
        let limit = Arc::new(AtomicU64::new(a.keys));
        let factory = rocks(&dir.join("local"), a, incremental, true);
        let started = Instant::now();
        let h = counting_job(&storage_uri, factory, limit.clone(), a.keys, None);
        wait_for(&h, a.keys);
        let load_s = started.elapsed().as_secs_f64();
        let mut durations = Vec::new();
        let mut written = Vec::new();
        let mut totals = Vec::new();
        let mut previous: std::collections::BTreeSet<String> = Default::default();
        for round in 0..=a.rounds {
            if round > 0 {
                let n = limit.fetch_add(per_round, Ordering::SeqCst) + per_round;
                wait_for(&h, n);
            }
            let t = Instant::now();
            let loc = h
                .trigger_checkpoint()
                .recv()
                .expect("answer")
                .expect("checkpoint completes");
            let took = t.elapsed().as_secs_f64() * 1000.0;
            let meta = metadata(storage.as_ref(), &loc);
            let files: u64 = meta
                .operators
                .iter()
                .flat_map(|o| &o.files)
                .map(|f| f.size)
                .sum();
            let shared = meta.shared_files();
            let new: u64 = shared
                .iter()
                .filter(|r| !previous.contains(&r.name))
                .map(|r| r.size)
                .sum();
            previous = shared.into_iter().map(|r| r.name).collect();
            if round > 0 {
                durations.push(took);
                written.push((files + new) as f64 / 1e6);
                totals.push(meta.size() as f64 / 1e6);
            }
            last_incremental = loc;
        }
        h.cancel();
        let _ = h.wait_timeout(Duration::from_secs(120));
        println!(
            "SUMMARY updates mode={} keys={} updated_per_checkpoint={} load_s={:.1} ckpt_p50_ms={:.0} ckpt_max_ms={:.0} written_p50_mb={:.1} state_mb={:.1} peak_rss_mb={:.1}",
            if incremental { "incremental" } else { "full" },
            a.keys,
            per_round,
            load_s,
            median(durations.clone()),
            durations.iter().copied().fold(0.0, f64::max),
            median(written),
            median(totals),
            peak_rss_mb()
        );
    }
    // Restore the last incremental checkpoint: from checkpoint storage, then from local copies.
    for local in [false, true] {
        let limit = Arc::new(AtomicU64::new(0));
        let factory = rocks(&dir.join("local"), a, true, local);
        let stats = factory.restore_stats();
        let t = Instant::now();
        let h = counting_job(
            &storage_uri,
            factory,
            limit.clone(),
            a.keys,
            Some(last_incremental.clone()),
        );
        // One more record proves the operator restored and runs.
        limit.store(u64::MAX, Ordering::SeqCst);
        wait_for(&h, 1);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        h.cancel();
        let _ = h.wait_timeout(Duration::from_secs(120));
        println!(
            "SUMMARY restore from={} ms={:.0} local_files={} downloaded_files={} downloaded_mb={:.1}",
            if local { "local" } else { "storage" },
            ms,
            stats.local_files.load(Ordering::SeqCst),
            stats.remote_files.load(Ordering::SeqCst),
            stats.remote_bytes.load(Ordering::SeqCst) as f64 / 1e6
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let a = parse();
    match a.workload.as_str() {
        "window" => window(&a),
        "updates" => updates(&a),
        other => {
            eprintln!("unknown workload {other}: use window or updates");
            std::process::exit(2);
        }
    }
}
