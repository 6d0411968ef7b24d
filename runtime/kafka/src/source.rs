//! The Kafka source: partitions dealt to subtasks deterministically with `assign` (no consumer
//! group rebalancing, so a checkpointed position always belongs to the same subtask at the
//! same parallelism), offsets per partition as the checkpointed position — at another
//! parallelism every reader takes its partitions' offsets from all old positions —
//! per-partition watermarks, and a policy for records that do not deserialize.

use crate::admin::{drop_detached, partitions_of};
use crate::error::KafkaConnectorError;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_core::record::NO_TIMESTAMP;
use weir_core::{OperatorError, Record, Source, SourceContext, SourcePoll, SourceReader};

/// Where a partition starts when there is no checkpointed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingOffsets {
    /// The oldest retained record.
    Earliest,
    /// After the last record present when the reader starts.
    Latest,
    /// The first record whose timestamp is at or after this time (ms since the epoch).
    Timestamp(i64),
    /// The consumer group's committed offset; earliest where the group has none.
    Committed,
}

/// What to do with a record that does not deserialize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// Fail the job with an error naming topic, partition and offset.
    Fail,
    /// Drop it and count it ([`KafkaSource::skipped_records`]).
    Skip,
    /// Copy it unchanged to this topic (with its origin and the error as headers), count it
    /// ([`KafkaSource::dead_lettered_records`]), and go on.
    DeadLetter(String),
}

type Deserializer<T> = Arc<dyn Fn(Option<&[u8]>) -> Result<T, String> + Send + Sync>;

/// Per-partition watermarks.
#[derive(Debug, Clone, Copy)]
struct PartitionWatermarks {
    out_of_orderness: i64,
    idleness: Option<Duration>,
}

/// Reads Kafka topics. Build it with [`KafkaSource::json`], [`KafkaSource::bytes`] or
/// [`KafkaSource::strings`] and the chained settings; it implements [`Source`].
pub struct KafkaSource<T> {
    bootstrap: String,
    topics: Vec<String>,
    group_id: Option<String>,
    starting: StartingOffsets,
    read_committed: bool,
    bad_records: BadRecordPolicy,
    bounded: bool,
    watermarks: Option<PartitionWatermarks>,
    properties: Vec<(String, String)>,
    max_batch: usize,
    metadata_timeout: Duration,
    discovery: Option<Duration>,
    deserialize: Deserializer<T>,
    skipped: Arc<AtomicU64>,
    dead_lettered: Arc<AtomicU64>,
    discovered: Arc<AtomicU64>,
}

/// The default interval of partition discovery in unbounded mode.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

/// The subtask that reads partition `partition` of `topic`: the topic's partitions are dealt
/// round-robin starting at a subtask derived from the topic name (Flink's rule), so several
/// small topics do not all land on subtask 0. A pure function of its inputs, so a partition
/// found later lands where a restart would put it.
pub fn owner_of(topic: &str, partition: i32, parallelism: u32) -> u32 {
    // Java's String.hashCode, as Flink uses it; stable across runs and builds.
    let hash = topic
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    let parallelism = parallelism.max(1) as i64;
    let start = (hash.wrapping_mul(31) & 0x7FFF_FFFF) as i64 % parallelism;
    ((start + partition as i64) % parallelism) as u32
}

impl<T: DeserializeOwned> KafkaSource<T> {
    /// Values are JSON documents deserialized into `T`.
    pub fn json(bootstrap: impl Into<String>, topics: &[&str]) -> Self {
        Self::with_deserializer(bootstrap, topics, |payload| {
            serde_json::from_slice(payload.unwrap_or_default()).map_err(|e| e.to_string())
        })
    }
}

impl KafkaSource<Vec<u8>> {
    /// Values as raw bytes (an absent value is empty).
    pub fn bytes(bootstrap: impl Into<String>, topics: &[&str]) -> Self {
        Self::with_deserializer(bootstrap, topics, |payload| {
            Ok(payload.unwrap_or_default().to_vec())
        })
    }
}

impl KafkaSource<String> {
    /// Values as UTF-8 strings; invalid UTF-8 is a bad record.
    pub fn strings(bootstrap: impl Into<String>, topics: &[&str]) -> Self {
        Self::with_deserializer(bootstrap, topics, |payload| {
            String::from_utf8(payload.unwrap_or_default().to_vec()).map_err(|e| e.to_string())
        })
    }
}

impl<T> KafkaSource<T> {
    /// Values read by `deserialize` (given the payload; an error makes it a bad record).
    pub fn with_deserializer(
        bootstrap: impl Into<String>,
        topics: &[&str],
        deserialize: impl Fn(Option<&[u8]>) -> Result<T, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            group_id: None,
            starting: StartingOffsets::Earliest,
            read_committed: true,
            bad_records: BadRecordPolicy::Fail,
            bounded: false,
            watermarks: None,
            properties: Vec::new(),
            max_batch: 1_024,
            metadata_timeout: Duration::from_secs(10),
            discovery: Some(DEFAULT_DISCOVERY_INTERVAL),
            deserialize: Arc::new(deserialize),
            skipped: Arc::default(),
            dead_lettered: Arc::default(),
            discovered: Arc::default(),
        }
    }

    /// Consumer group the offsets are committed to (for lag monitoring only: positions come
    /// from checkpoints). Default: `weir-<topics>`.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// Where partitions start without a checkpointed position (default earliest).
    pub fn starting_offsets(mut self, s: StartingOffsets) -> Self {
        self.starting = s;
        self
    }

    /// `isolation.level=read_committed` (the default) or `read_uncommitted`.
    pub fn read_committed(mut self, yes: bool) -> Self {
        self.read_committed = yes;
        self
    }

    /// What to do with records that do not deserialize (default: fail).
    pub fn bad_records(mut self, policy: BadRecordPolicy) -> Self {
        self.bad_records = policy;
        self
    }

    /// Stop at the end offsets seen when each reader starts, so the job finishes (tests,
    /// backfills). Default: unbounded.
    pub fn bounded(mut self, yes: bool) -> Self {
        self.bounded = yes;
        self
    }

    /// Per-partition watermarks: each partition's watermark is its highest timestamp minus
    /// `out_of_orderness` minus 1 ms; a partition without records for `idleness` stops holding
    /// the subtask's watermark back, which is the minimum over the others. Use
    /// `WatermarkStrategy::none()` on `env.source` with this.
    pub fn per_partition_watermarks(
        mut self,
        out_of_orderness: Duration,
        idleness: Option<Duration>,
    ) -> Self {
        self.watermarks = Some(PartitionWatermarks {
            out_of_orderness: out_of_orderness.as_millis() as i64,
            idleness,
        });
        self
    }

    /// Any other consumer property (e.g. `security.protocol`).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Records handed to the engine per poll at most (default 1024).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// How often an unbounded reader looks for partitions added to its topics (default 30 s;
    /// `None` turns discovery off). A partition found later is read from its earliest offset,
    /// so nothing written to it before it was noticed is missed.
    pub fn partition_discovery(mut self, interval: Option<Duration>) -> Self {
        self.discovery = interval;
        self
    }

    /// Partitions found by discovery after the readers started, over all readers.
    pub fn discovered_partitions(&self) -> Arc<AtomicU64> {
        self.discovered.clone()
    }

    /// Records dropped under [`BadRecordPolicy::Skip`], over all readers of this source.
    pub fn skipped_records(&self) -> Arc<AtomicU64> {
        self.skipped.clone()
    }

    /// Records sent to the dead-letter topic, over all readers of this source.
    pub fn dead_lettered_records(&self) -> Arc<AtomicU64> {
        self.dead_lettered.clone()
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        let group = self
            .group_id
            .clone()
            .unwrap_or_else(|| format!("weir-{}", self.topics.join("-")));
        c.set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            // Positions live in checkpoints; the group only mirrors them for lag tools.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set(
                "isolation.level",
                if self.read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            );
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    fn open(&self, ctx: &SourceContext) -> Result<KafkaReader<T>, KafkaConnectorError> {
        if self.topics.is_empty() {
            return Err(KafkaConnectorError::Config(
                "the source has no topics: pass at least one".into(),
            ));
        }
        let consumer: BaseConsumer =
            self.consumer_config()
                .create()
                .map_err(|source| KafkaConnectorError::Client {
                    what: "consumer",
                    source,
                })?;
        let parallelism = ctx.parallelism.max(1);
        let mut keys = Vec::new();
        for topic in &self.topics {
            let parts = partitions_of(&consumer, topic, self.metadata_timeout)?;
            if parts.is_empty() {
                return Err(KafkaConnectorError::TopicNotFound(topic.clone()));
            }
            keys.extend(
                parts
                    .into_iter()
                    .filter(|p| owner_of(topic, *p, parallelism) == ctx.subtask)
                    .map(|p| (topic.clone(), p)),
            );
        }
        keys.sort();
        let now = Instant::now();
        let mut parts = BTreeMap::new();
        let mut by_time = TopicPartitionList::new();
        let mut committed_query = TopicPartitionList::new();
        for (topic, p) in &keys {
            let (low, high) = consumer
                .fetch_watermarks(topic, *p, self.metadata_timeout)
                .map_err(|e| KafkaConnectorError::broker(format!("offsets of {topic}/{p}"), e))?;
            let start = match self.starting {
                StartingOffsets::Latest => high,
                _ => low,
            };
            match self.starting {
                StartingOffsets::Timestamp(ms) => {
                    let _ = by_time.add_partition_offset(topic, *p, Offset::Offset(ms));
                }
                StartingOffsets::Committed => {
                    committed_query.add_partition(topic, *p);
                }
                _ => {}
            }
            parts.insert(
                (topic.clone(), *p),
                PartitionState {
                    next: start,
                    low,
                    stop: self.bounded.then_some(high),
                    max_ts: None,
                    last_active: now,
                    done: false,
                },
            );
        }
        // Concrete offsets are resolved now, so that the position of a checkpoint taken before
        // the first record still says exactly where to resume.
        if by_time.count() > 0 {
            let found = consumer
                .offsets_for_times(by_time, self.metadata_timeout)
                .map_err(|e| KafkaConnectorError::broker("offsets for timestamp", e))?;
            for e in found.elements() {
                if let Some(st) = parts.get_mut(&(e.topic().to_string(), e.partition())) {
                    st.next = match e.offset() {
                        Offset::Offset(o) => o,
                        // No record at or after the time: start at the end.
                        _ => st.stop.unwrap_or(st.next),
                    };
                }
            }
        }
        if committed_query.count() > 0 {
            let found = consumer
                .committed_offsets(committed_query, self.metadata_timeout)
                .map_err(|e| KafkaConnectorError::broker("committed offsets", e))?;
            for e in found.elements() {
                if let (Some(st), Offset::Offset(o)) = (
                    parts.get_mut(&(e.topic().to_string(), e.partition())),
                    e.offset(),
                ) {
                    st.next = o;
                }
            }
        }
        let dead_letter = match &self.bad_records {
            BadRecordPolicy::DeadLetter(topic) => {
                let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
                    .set("bootstrap.servers", &self.bootstrap)
                    .set("enable.idempotence", "true")
                    .create()
                    .map_err(|source| KafkaConnectorError::Client {
                        what: "dead-letter producer",
                        source,
                    })?;
                Some((topic.clone(), producer))
            }
            _ => None,
        };
        let reader = KafkaReader {
            consumer: Some(consumer),
            parts,
            deserialize: self.deserialize.clone(),
            policy: self.bad_records.clone(),
            dead_letter,
            skipped: Counter::new(&self.skipped, ctx, "kafkaRecordsSkipped"),
            dead_lettered: Counter::new(&self.dead_lettered, ctx, "kafkaRecordsDeadLettered"),
            errors: ctx.metrics.counter("numRecordsInErrors"),
            watermarks: self.watermarks,
            max_batch: self.max_batch,
            last_position: Mutex::new(None),
            deferred_error: Mutex::new(None),
            discovery: match (self.bounded, self.discovery) {
                // A bounded reader stops at offsets fixed when it started.
                (true, _) | (_, None) => None,
                (false, Some(every)) => Some(Discovery {
                    topics: self.topics.clone(),
                    subtask: ctx.subtask,
                    parallelism,
                    every,
                    next: now + every,
                    timeout: self.metadata_timeout,
                    found: Counter::new(&self.discovered, ctx, "kafkaPartitionsDiscovered"),
                }),
            },
            assigned: false,
        };
        Ok(reader)
    }
}

impl<T: Send + 'static> Source<T> for KafkaSource<T> {
    fn create_reader(
        &self,
        ctx: &SourceContext,
    ) -> Result<Box<dyn SourceReader<T>>, OperatorError> {
        Ok(Box::new(
            self.open(ctx)
                .map_err(KafkaConnectorError::into_source_error)?,
        ))
    }

    /// Positions are per partition and partitions are dealt by a rule of the parallelism, so
    /// the source rescales: each new reader keeps its partitions' positions from all of them.
    fn redistributes_positions(&self) -> bool {
        true
    }
}

/// A count kept twice: over all readers of the source (the builder's accessors) and per
/// subtask in the job's metrics (`/metrics`).
struct Counter {
    source_wide: Arc<AtomicU64>,
    subtask: Arc<AtomicU64>,
}

impl Counter {
    fn new(source_wide: &Arc<AtomicU64>, ctx: &SourceContext, name: &str) -> Self {
        Self {
            source_wide: source_wide.clone(),
            subtask: ctx.metrics.counter(name),
        }
    }

    fn inc(&self) {
        self.source_wide.fetch_add(1, Ordering::Relaxed);
        self.subtask.fetch_add(1, Ordering::Relaxed);
    }
}

/// Partition discovery of an unbounded reader.
struct Discovery {
    topics: Vec<String>,
    subtask: u32,
    parallelism: u32,
    every: Duration,
    next: Instant,
    timeout: Duration,
    found: Counter,
}

struct PartitionState {
    /// Offset of the next record to hand out.
    next: i64,
    /// Log start offset when the reader started.
    low: i64,
    /// Bounded mode: the end offset to stop at.
    stop: Option<i64>,
    max_ts: Option<i64>,
    last_active: Instant,
    /// Bounded mode: reached `stop`.
    done: bool,
}

type Position = BTreeMap<(String, i32), i64>;

/// What one consumer poll gave, detached from the consumer's borrow.
enum Polled<T> {
    Nothing,
    Eof(i32),
    Message {
        key: (String, i32),
        offset: i64,
        ts: i64,
        /// `None`: not ours or past the end; skipped.
        parsed: Option<Result<T, BadPayload>>,
    },
}

/// A record that did not deserialize: the message, key and payload.
type BadPayload = (String, Option<Vec<u8>>, Option<Vec<u8>>);

struct KafkaReader<T> {
    consumer: Option<BaseConsumer>,
    parts: BTreeMap<(String, i32), PartitionState>,
    deserialize: Deserializer<T>,
    policy: BadRecordPolicy,
    dead_letter: Option<(String, ThreadedProducer<DefaultProducerContext>)>,
    skipped: Counter,
    dead_lettered: Counter,
    /// Records that did not deserialize, whatever the policy (Flink's `numRecordsInErrors`).
    errors: Arc<AtomicU64>,
    watermarks: Option<PartitionWatermarks>,
    max_batch: usize,
    /// The position reported at the last barrier, committed to the group on completion.
    last_position: Mutex<Option<Position>>,
    /// An error found where none can be returned (flushing dead letters at a barrier).
    deferred_error: Mutex<Option<String>>,
    discovery: Option<Discovery>,
    /// Whether the consumer has the current assignment. The first poll assigns, after any
    /// `restore`: librdkafka (up to 2.15, issue #5573) can abort the process when an
    /// assignment is replaced, or the consumer closed, while the previous assignment's
    /// partitions are still stopping, so a reader changes its assignment once.
    assigned: bool,
}

impl<T> KafkaReader<T> {
    fn consumer(&self) -> Result<&BaseConsumer, KafkaConnectorError> {
        self.consumer
            .as_ref()
            .ok_or_else(|| KafkaConnectorError::Config("consumer already closed".into()))
    }

    /// (Re)assigns every partition that is not done at its next offset.
    fn assign(&mut self) -> Result<(), KafkaConnectorError> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), st) in &mut self.parts {
            if let Some(stop) = st.stop
                && st.next >= stop
            {
                st.done = true;
            }
            if !st.done {
                // A position older than the log start (retention deleted it) restarts at the
                // log start; `auto.offset.reset=earliest` covers the same case on the broker.
                let next = st.next.max(st.low);
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(next));
            }
        }
        self.consumer()?
            .assign(&tpl)
            .map_err(|e| KafkaConnectorError::broker("assigning partitions", e))
    }

    /// Adds partitions of this subtask's topics that appeared since the last look, reading
    /// them from their earliest offset.
    fn discover(&mut self) -> Result<(), KafkaConnectorError> {
        let Some(d) = self.discovery.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        if now < d.next {
            return Ok(());
        }
        d.next = now + d.every;
        let consumer = self
            .consumer
            .as_ref()
            .ok_or_else(|| KafkaConnectorError::Config("consumer already closed".into()))?;
        let mut added = TopicPartitionList::new();
        for topic in &d.topics {
            // A failed lookup is retried at the next interval: the partitions being read are
            // unaffected.
            let Ok(parts) = partitions_of(consumer, topic, d.timeout) else {
                continue;
            };
            for p in parts {
                let key = (topic.clone(), p);
                if owner_of(topic, p, d.parallelism) != d.subtask || self.parts.contains_key(&key) {
                    continue;
                }
                let low = consumer
                    .fetch_watermarks(topic, p, d.timeout)
                    .map(|(low, _)| low)
                    .unwrap_or(0);
                let _ = added.add_partition_offset(topic, p, Offset::Offset(low));
                self.parts.insert(
                    key,
                    PartitionState {
                        next: low,
                        low,
                        stop: None,
                        max_ts: None,
                        last_active: now,
                        done: false,
                    },
                );
                d.found.inc();
            }
        }
        if added.count() > 0 {
            consumer
                .incremental_assign(&added)
                .map_err(|e| KafkaConnectorError::broker("assigning new partitions", e))?;
        }
        Ok(())
    }

    /// Continues this reader's partitions from `pos`, which may hold other subtasks'
    /// partitions too (a restore at another parallelism hands every reader all of them); the
    /// next poll assigns at the restored positions.
    fn restore_positions(&mut self, pos: &Position) {
        for (key, st) in &mut self.parts {
            match pos.get(key) {
                Some(next) => st.next = *next,
                // Created after the checkpoint was taken (found by discovery or present only
                // now): everything in it is newer than the checkpoint, so read it all.
                None => st.next = st.low,
            }
        }
        self.assigned = false;
    }

    fn position_map(&self) -> Position {
        self.parts
            .iter()
            .map(|(k, st)| (k.clone(), st.next))
            .collect()
    }

    fn mark_done(&mut self, key: &(String, i32)) {
        if let Some(st) = self.parts.get_mut(key) {
            st.done = true;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&key.0, key.1);
        if let Some(c) = &self.consumer {
            // Stops fetching records that would only be discarded.
            let _ = c.pause(&tpl);
        }
    }

    fn bad_record(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        message: String,
    ) -> Result<(), KafkaConnectorError> {
        match &self.policy {
            BadRecordPolicy::Fail => Err(KafkaConnectorError::BadRecord {
                topic: topic.to_string(),
                partition,
                offset,
                message,
            }),
            BadRecordPolicy::Skip => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.skipped.inc();
                Ok(())
            }
            BadRecordPolicy::DeadLetter(_) => {
                let Some((dlq, producer)) = &self.dead_letter else {
                    return Err(KafkaConnectorError::Config(
                        "dead-letter producer missing".into(),
                    ));
                };
                let origin = format!("{topic}/{partition}/{offset}");
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "weir.origin",
                        value: Some(origin.as_str()),
                    })
                    .insert(Header {
                        key: "weir.error",
                        value: Some(message.as_str()),
                    });
                let mut rec: BaseRecord<'_, Vec<u8>, Vec<u8>> =
                    BaseRecord::to(dlq).headers(headers);
                if let Some(k) = key.as_ref() {
                    rec = rec.key(k);
                }
                if let Some(p) = payload.as_ref() {
                    rec = rec.payload(p);
                }
                loop {
                    match producer.send(rec) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            rec = r;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err((e, _)) => {
                            return Err(KafkaConnectorError::broker(
                                format!("writing to dead-letter topic {dlq}"),
                                e,
                            ));
                        }
                    }
                }
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.dead_lettered.inc();
                Ok(())
            }
        }
    }

    fn poll_records(
        &mut self,
        out: &mut Vec<Record<T>>,
    ) -> Result<SourcePoll, KafkaConnectorError> {
        if let Some(e) = self
            .deferred_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(KafkaConnectorError::Config(e));
        }
        if !self.assigned {
            self.assign()?;
            self.assigned = true;
        }
        self.discover()?;
        if self.parts.values().all(|p| p.done) {
            return Ok(if self.parts.values().all(|p| p.stop.is_some()) {
                SourcePoll::Finished
            } else {
                SourcePoll::Idle
            });
        }
        let mut emitted = 0usize;
        // Only the first poll waits, briefly: the engine must get back to barriers quickly.
        let mut timeout = Duration::from_millis(5);
        while emitted < self.max_batch {
            let polled = {
                let consumer = self.consumer()?;
                match consumer.poll(timeout) {
                    None => Polled::Nothing,
                    Some(Err(KafkaError::PartitionEOF(p))) => Polled::Eof(p),
                    Some(Err(e)) if is_transient(&e) => Polled::Nothing,
                    Some(Err(e)) => return Err(KafkaConnectorError::broker("consuming", e)),
                    Some(Ok(msg)) => {
                        let key = (msg.topic().to_string(), msg.partition());
                        let offset = msg.offset();
                        let skip = self.parts.get(&key).is_none_or(|st| st.done);
                        let parsed = if skip {
                            None
                        } else {
                            Some((self.deserialize)(msg.payload()).map_err(|e| {
                                (
                                    e,
                                    msg.key().map(<[u8]>::to_vec),
                                    msg.payload().map(<[u8]>::to_vec),
                                )
                            }))
                        };
                        Polled::Message {
                            key,
                            offset,
                            ts: msg.timestamp().to_millis().unwrap_or(NO_TIMESTAMP),
                            parsed,
                        }
                    }
                }
            };
            let (key, offset, ts, parsed) = match polled {
                Polled::Nothing => break,
                Polled::Eof(p) => {
                    // A bounded partition at its end: needed where the last offsets are
                    // transaction markers, which are never delivered. The event names only the
                    // partition number, so it decides only when one topic has it.
                    let keys: Vec<_> = self
                        .parts
                        .iter()
                        .filter(|((_, q), st)| *q == p && st.stop.is_some() && !st.done)
                        .map(|(k, _)| k.clone())
                        .collect();
                    let same_number = self.parts.keys().filter(|(_, q)| *q == p).count();
                    if keys.len() == 1 && same_number == 1 {
                        self.mark_done(&keys[0]);
                    }
                    continue;
                }
                Polled::Message {
                    key,
                    offset,
                    ts,
                    parsed: Some(parsed),
                } => (key, offset, ts, parsed),
                Polled::Message { parsed: None, .. } => continue,
            };
            timeout = Duration::ZERO;
            let Some(st) = self.parts.get_mut(&key) else {
                continue;
            };
            if let Some(stop) = st.stop
                && offset >= stop
            {
                self.mark_done(&key);
                continue;
            }
            st.next = offset + 1;
            let reached_stop = st.stop.is_some_and(|s| st.next >= s);
            match parsed {
                Ok(v) => {
                    st.last_active = Instant::now();
                    if ts != NO_TIMESTAMP {
                        st.max_ts = Some(st.max_ts.map_or(ts, |m| m.max(ts)));
                    }
                    out.push(Record::new(ts, v));
                    emitted += 1;
                }
                Err((message, k, p)) => {
                    self.bad_record(&key.0, key.1, offset, k, p, message)?;
                }
            }
            if reached_stop {
                self.mark_done(&key);
            }
        }
        Ok(if emitted > 0 {
            SourcePoll::Emitted
        } else {
            SourcePoll::Idle
        })
    }
}

/// Errors librdkafka recovers from by itself (it reconnects and retries); they only mean that
/// nothing can be read right now.
fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
        )
    )
}

/// A position written by [`SourceReader::position`].
fn decode_position(bytes: &[u8]) -> Result<Position, OperatorError> {
    bincode::deserialize(bytes).map_err(|e| {
        KafkaConnectorError::CorruptState(format!("source position: {e}")).into_source_error()
    })
}

impl<T: Send> SourceReader<T> for KafkaReader<T> {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> Result<SourcePoll, OperatorError> {
        self.poll_records(out)
            .map_err(KafkaConnectorError::into_source_error)
    }

    fn position(&self) -> Vec<u8> {
        // Dead letters of records before the barrier must be durable with the checkpoint.
        if let Some((dlq, p)) = &self.dead_letter
            && let Err(e) = p.flush(Duration::from_secs(30))
        {
            *self
                .deferred_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) =
                Some(format!("flushing dead-letter topic {dlq}: {e}"));
        }
        let pos = self.position_map();
        let bytes = bincode::serialize(&pos).unwrap_or_default();
        *self.last_position.lock().unwrap_or_else(|e| e.into_inner()) = Some(pos);
        bytes
    }

    fn restore(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let pos = decode_position(position)?;
        self.restore_positions(&pos);
        Ok(())
    }

    fn restore_all(&mut self, positions: &[Vec<u8>]) -> Result<(), OperatorError> {
        // Each partition had one owner at the old parallelism, so the maps do not overlap.
        let mut all = Position::new();
        for p in positions {
            for (key, next) in decode_position(p)? {
                if all.insert(key.clone(), next).is_some() {
                    return Err(KafkaConnectorError::CorruptState(format!(
                        "source position: partition {} [{}] has a position in two subtasks",
                        key.0, key.1
                    ))
                    .into_source_error());
                }
            }
        }
        self.restore_positions(&all);
        Ok(())
    }

    fn watermark(&mut self) -> Option<i64> {
        let cfg = self.watermarks?;
        let now = Instant::now();
        let mut min: Option<i64> = None;
        for st in self.parts.values() {
            if st.done {
                continue;
            }
            if let Some(idle) = cfg.idleness
                && now.duration_since(st.last_active) >= idle
            {
                continue;
            }
            // An active partition that has not produced a record yet holds the watermark.
            let wm = st.max_ts? - cfg.out_of_orderness - 1;
            min = Some(min.map_or(wm, |m| m.min(wm)));
        }
        min
    }

    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<(), OperatorError> {
        // The engine asks for the position at the barrier and tells completion afterwards;
        // with one checkpoint in flight (the default) the last position is this checkpoint's.
        let Some(pos) = self
            .last_position
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), next) in pos {
            let _ = tpl.add_partition_offset(&topic, p, Offset::Offset(next));
        }
        if let Some(c) = &self.consumer {
            // Asynchronous: a synchronous commit can stall the consumer's destruction for
            // minutes, and the group's offsets are informational anyway.
            let _ = c.commit(&tpl, CommitMode::Async);
        }
        Ok(())
    }
}

impl<T> Drop for KafkaReader<T> {
    fn drop(&mut self) {
        if let Some(c) = self.consumer.take() {
            drop_detached(c);
        }
        if let Some((_, p)) = self.dead_letter.take() {
            drop_detached(p);
        }
    }
}
