//! Quick engine-only throughput probe: an unbounded generator → key by user (100 000 keys) →
//! 10 s tumbling event-time window count + sum → blackhole. `weir bench` is the real benchmark;
//! this isolates the engine from connectors. Usage: `cargo run --release -p weir-core --example
//! window_throughput -- <parallelism> <seconds>`.

use std::time::{Duration, Instant};
use weir_core::error::OperatorError;
use weir_core::record::Record;
use weir_core::sink::BlackholeSink;
use weir_core::source::SourceContext;
use weir_core::time::now_ms;
use weir_core::{
    AggregateFunction, EnvConfig, Source, SourcePoll, SourceReader, StreamEnv, WatermarkStrategy,
    WindowAssigner,
};

#[derive(Clone)]
struct Gen;
struct GenReader {
    state: u64,
}

impl Source<(u64, f64)> for Gen {
    fn create_reader(
        &self,
        ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<(u64, f64)>>, OperatorError> {
        Ok(Box::new(GenReader {
            state: 42 + u64::from(ctx.subtask),
        }))
    }
}

impl SourceReader<(u64, f64)> for GenReader {
    fn poll(&mut self, out: &mut Vec<Record<(u64, f64)>>) -> Result<SourcePoll, OperatorError> {
        let now = now_ms();
        for _ in 0..1024 {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let user = (z >> 32) % 100_000;
            let amount = ((z & 0xffff) as f64) / 65.536;
            let ts = now - ((z >> 16) & 0xfff) as i64;
            out.push(Record::new(ts, (user, amount)));
        }
        Ok(SourcePoll::Emitted)
    }
}

#[derive(Clone)]
struct CountSum;
impl AggregateFunction<(u64, f64), (u64, f64), (u64, f64)> for CountSum {
    fn create_accumulator(&self) -> (u64, f64) {
        (0, 0.0)
    }
    fn add(&self, acc: &mut (u64, f64), v: (u64, f64)) {
        acc.0 += 1;
        acc.1 += v.1;
    }
    fn get_result(&self, acc: &(u64, f64)) -> (u64, f64) {
        *acc
    }
    fn merge(&self, acc: &mut (u64, f64), o: (u64, f64)) {
        acc.0 += o.0;
        acc.1 += o.1;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let p: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let env = StreamEnv::new(EnvConfig {
        parallelism: p,
        ..Default::default()
    });
    env.source(
        "gen",
        Gen,
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5)),
    )
    .key_by(|v: &(u64, f64)| v.0)
    .window(WindowAssigner::tumbling(Duration::from_secs(10)))
    .aggregate(CountSum)
    .sink("blackhole", BlackholeSink);
    let job = env.start().expect("start");
    let start = Instant::now();
    let mut last = 0;
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        let n = job.metrics().records_in();
        println!(
            "{:>5.1}s {:>12} rec/s",
            start.elapsed().as_secs_f64(),
            n - last
        );
        last = n;
    }
    job.cancel();
    let _ = job.wait_timeout(Duration::from_secs(5));
}
