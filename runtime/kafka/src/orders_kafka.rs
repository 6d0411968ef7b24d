//! `orders-kafka`: the `orders` seed job on Kafka — orders (JSON) from an input topic, keyed by
//! user, summarised in 10-minute event-time tumbling windows with 5 s of out-of-orderness per
//! partition, summaries (JSON, keyed by user) to an output topic, exactly-once by default.

use crate::sink::{DeliveryGuarantee, KafkaSink};
use crate::source::KafkaSource;
use std::time::Duration;
use weir_core::window::WindowAssigner;
use weir_core::{DataStream, Program, ProgramArgs, ProgramError, StreamEnv, WatermarkStrategy};
use weir_programs::orders::{CountAndTotal, Order, Summarize, UserSummary};

/// Program name.
pub const NAME: &str = "orders-kafka";

/// Settings of the `orders-kafka` dataflow.
#[derive(Debug, Clone, PartialEq)]
pub struct OrdersKafkaConfig {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Topic the orders are read from.
    pub input_topic: String,
    /// Topic the summaries are written to.
    pub output_topic: String,
    /// Consumer group (offsets mirrored for lag tools).
    pub group: String,
    /// Sink guarantee.
    pub guarantee: DeliveryGuarantee,
    /// Stop at the input's end offsets seen at start (tests, backfills).
    pub bounded: bool,
    /// Window size.
    pub window: Duration,
    /// Per-partition watermark delay.
    pub out_of_orderness: Duration,
}

const ARGS: &[(&str, &str)] = &[
    (
        "bootstrap",
        "Kafka bootstrap servers (default 127.0.0.1:9092)",
    ),
    ("input-topic", "topic of JSON orders (default orders)"),
    (
        "output-topic",
        "topic for JSON summaries (default summaries)",
    ),
    (
        "group",
        "consumer group for offset monitoring (default weir-orders-kafka)",
    ),
    (
        "transactional-id-prefix",
        "exactly-once: prefix of transactional ids and of the marker topic, unique per job \
         (default weir-orders-kafka)",
    ),
    (
        "guarantee",
        "exactly-once (default), at-least-once, or upsert (idempotent writes keyed \
         <user>@<window start> into a compacted topic)",
    ),
    (
        "bounded",
        "true: stop at the input's end offsets seen at start, firing the last windows (backfills, \
         tests); default false",
    ),
];

impl OrdersKafkaConfig {
    /// Reads the program arguments.
    pub fn from_args(args: &ProgramArgs) -> Result<Self, ProgramError> {
        let s = |name: &str, default: &str| {
            args.get_str(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let prefix = s("transactional-id-prefix", "weir-orders-kafka");
        let guarantee = match s("guarantee", "exactly-once").as_str() {
            "exactly-once" => DeliveryGuarantee::ExactlyOnce {
                transactional_id_prefix: prefix,
            },
            "at-least-once" => DeliveryGuarantee::AtLeastOnce,
            "upsert" => DeliveryGuarantee::Upsert,
            other => {
                return Err(ProgramError::BadArgument {
                    name: "guarantee".into(),
                    message: format!(
                        "unknown guarantee {other:?}: use exactly-once, at-least-once or upsert"
                    ),
                });
            }
        };
        Ok(Self {
            bootstrap: s("bootstrap", "127.0.0.1:9092"),
            input_topic: s("input-topic", "orders"),
            output_topic: s("output-topic", "summaries"),
            group: s("group", "weir-orders-kafka"),
            guarantee,
            bounded: match s("bounded", "false").as_str() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(ProgramError::BadArgument {
                        name: "bounded".into(),
                        message: format!("{other:?}: use true or false"),
                    });
                }
            },
            window: Duration::from_secs(600),
            out_of_orderness: Duration::from_secs(5),
        })
    }

    /// The order source.
    pub fn source(&self) -> KafkaSource<Order> {
        KafkaSource::json(self.bootstrap.clone(), &[self.input_topic.as_str()])
            .group_id(self.group.clone())
            .bounded(self.bounded)
            .per_partition_watermarks(self.out_of_orderness, Some(Duration::from_secs(30)))
    }

    /// The summary sink, its transaction timeout checked against `env`'s checkpointing.
    pub fn sink(&self, env: &StreamEnv) -> KafkaSink<UserSummary> {
        let sink = KafkaSink::json(self.bootstrap.clone(), self.output_topic.clone())
            .key(summary_key(&self.guarantee))
            .guarantee(self.guarantee.clone());
        match env.config().job.checkpoint {
            Some(c) => sink.checkpoint_config(&c),
            None => sink,
        }
    }
}

/// The record key of a summary: the user (so a user's summaries share a partition, in order),
/// or in upsert mode `<user>@<window start>`, which identifies the result so that compaction
/// keeps exactly one copy of each.
pub fn summary_key(
    guarantee: &DeliveryGuarantee,
) -> impl Fn(&UserSummary) -> Option<Vec<u8>> + Send + Sync + 'static {
    let upsert = *guarantee == DeliveryGuarantee::Upsert;
    move |s: &UserSummary| {
        Some(
            if upsert {
                format!("{}@{}", s.user_id, s.window_start)
            } else {
                s.user_id.to_string()
            }
            .into_bytes(),
        )
    }
}

/// Adds the source and the windowed aggregation to `env` and returns the summaries.
pub fn build_dataflow(env: &StreamEnv, config: &OrdersKafkaConfig) -> DataStream<UserSummary> {
    // Watermarks come from the reader, per partition: a subtask-wide bound would make the
    // interleaving of its partitions' records look like lateness.
    env.source("orders", config.source(), WatermarkStrategy::none())
        .uid("orders-source")
        .key_by(|o: &Order| o.user_id)
        .window(WindowAssigner::tumbling(config.window))
        .aggregate_with(CountAndTotal, Summarize)
        .uid("orders-per-user-window")
}

/// Adds the whole job, sink included, to `env`.
pub fn build_job(env: &StreamEnv, config: &OrdersKafkaConfig) -> Result<(), ProgramError> {
    let sink = config.sink(env);
    sink.validate().map_err(|e| ProgramError::BadArgument {
        name: "transactional-id-prefix".into(),
        message: e.to_string(),
    })?;
    build_dataflow(env, config)
        .sink("summaries", sink)
        .uid("summaries-sink");
    Ok(())
}

fn build(env: &StreamEnv, args: &ProgramArgs) -> Result<(), ProgramError> {
    build_job(env, &OrdersKafkaConfig::from_args(args)?)
}

/// The `orders-kafka` program.
pub fn program() -> Program {
    Program {
        name: NAME,
        description: "orders (JSON) from Kafka per user in 10-minute event-time windows, summaries \
                      to Kafka exactly-once through transactions",
        args: ARGS,
        build,
    }
}
