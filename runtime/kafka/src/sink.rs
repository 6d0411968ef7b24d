//! The Kafka sink: at-least-once (produce as records arrive, wait for every delivery at the
//! barrier) or exactly-once (buffer each checkpoint epoch, commit it in a Kafka transaction
//! once the checkpoint completes, guarded by a marker so no epoch is committed twice). The
//! protocol and its failure cases are described in `docs/exactly-once.md`.

use crate::admin::{drop_detached, ensure_topic, partitions_of};
use crate::error::KafkaConnectorError;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_core::record::NO_TIMESTAMP;
use weir_core::sink::SinkContext;
use weir_core::{CheckpointConfig, OperatorError, Record, Sink, SinkWriter};

/// The broker's default `transaction.max.timeout.ms`: a producer asking for more is refused.
pub const BROKER_MAX_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(900);

/// How long broker round trips (init, commit, flush, marker reads) may take before the task
/// fails and the job restarts.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What the sink guarantees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Every record at least once: duplicates after a restore, never losses.
    AtLeastOnce,
    /// Idempotent writes: at-least-once delivery into a compacted topic with the result's key
    /// as record key, so a record written again after a restore replaces its first copy and
    /// the topic's latest value per key is exact. Needs [`KafkaSink::key`] and a topic with
    /// `cleanup.policy` containing `compact`; no transactions, so readers need not use
    /// `read_committed` and see results without waiting for a checkpoint.
    Upsert,
    /// Every record exactly once for `read_committed` consumers.
    ExactlyOnce {
        /// Prefix of the transactional ids (`{prefix}-{subtask}`) and of the marker topic
        /// (`{prefix}.commits`); unique per job.
        transactional_id_prefix: String,
    },
}

type Serializer<T> = Arc<dyn Fn(&T) -> Result<Vec<u8>, String> + Send + Sync>;
type KeyExtractor<T> = Arc<dyn Fn(&T) -> Option<Vec<u8>> + Send + Sync>;

/// Writes a Kafka topic. Build it with [`KafkaSink::json`], [`KafkaSink::bytes`] or
/// [`KafkaSink::strings`] and the chained settings; it implements [`Sink`].
pub struct KafkaSink<T> {
    bootstrap: String,
    topic: String,
    guarantee: DeliveryGuarantee,
    transaction_timeout: Duration,
    checkpoint: Option<(Duration, Duration)>,
    properties: Vec<(String, String)>,
    serialize: Serializer<T>,
    key: Option<KeyExtractor<T>>,
    event_time_timestamps: bool,
}

impl<T: Serialize> KafkaSink<T> {
    /// Values as JSON documents.
    pub fn json(bootstrap: impl Into<String>, topic: impl Into<String>) -> Self {
        Self::with_serializer(bootstrap, topic, |v: &T| {
            serde_json::to_vec(v).map_err(|e| e.to_string())
        })
    }
}

impl KafkaSink<Vec<u8>> {
    /// Values as raw bytes.
    pub fn bytes(bootstrap: impl Into<String>, topic: impl Into<String>) -> Self {
        Self::with_serializer(bootstrap, topic, |v: &Vec<u8>| Ok(v.clone()))
    }
}

impl KafkaSink<String> {
    /// Values as UTF-8 strings.
    pub fn strings(bootstrap: impl Into<String>, topic: impl Into<String>) -> Self {
        Self::with_serializer(bootstrap, topic, |v: &String| Ok(v.as_bytes().to_vec()))
    }
}

impl<T> KafkaSink<T> {
    /// Values written by `serialize`.
    pub fn with_serializer(
        bootstrap: impl Into<String>,
        topic: impl Into<String>,
        serialize: impl Fn(&T) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            topic: topic.into(),
            guarantee: DeliveryGuarantee::AtLeastOnce,
            transaction_timeout: BROKER_MAX_TRANSACTION_TIMEOUT,
            checkpoint: None,
            properties: Vec::new(),
            serialize: Arc::new(serialize),
            key: None,
            event_time_timestamps: true,
        }
    }

    /// The record key (which also picks the partition); default: no key.
    pub fn key(mut self, f: impl Fn(&T) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(f));
        self
    }

    /// Whether a record's Kafka timestamp is its event time (default) or left to the producer
    /// (the time it is written). Mind the topic's `retention.ms`: the broker deletes segments
    /// by their newest record timestamp, so results of a backfill over data older than the
    /// retention period vanish at its next retention check unless retention is raised or
    /// this is turned off.
    pub fn event_time_timestamps(mut self, yes: bool) -> Self {
        self.event_time_timestamps = yes;
        self
    }

    /// At-least-once (default), upsert or exactly-once.
    pub fn guarantee(mut self, g: DeliveryGuarantee) -> Self {
        self.guarantee = g;
        self
    }

    /// `transaction.timeout.ms` (default and maximum: the broker's 900 s).
    pub fn transaction_timeout(mut self, d: Duration) -> Self {
        self.transaction_timeout = d;
        self
    }

    /// The job's checkpointing, to check the transaction timeout against it.
    pub fn checkpoint_config(mut self, c: &CheckpointConfig) -> Self {
        self.checkpoint = Some((c.interval, c.timeout));
        self
    }

    /// Any other producer property (e.g. `compression.type`).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Checks the settings: an exactly-once sink needs a prefix, and a transaction timeout the
    /// broker accepts that outlives a checkpoint (interval plus timeout), since an epoch's
    /// records wait that long before their transaction.
    pub fn validate(&self) -> Result<(), KafkaConnectorError> {
        if self.topic.trim().is_empty() {
            return Err(KafkaConnectorError::Config("the sink needs a topic".into()));
        }
        if self.guarantee == DeliveryGuarantee::Upsert && self.key.is_none() {
            return Err(KafkaConnectorError::Config(format!(
                "upsert mode needs a record key identifying each result (KafkaSink::key) for \
                 topic {}: without one, compaction cannot replace duplicates",
                self.topic
            )));
        }
        let DeliveryGuarantee::ExactlyOnce {
            transactional_id_prefix,
        } = &self.guarantee
        else {
            return Ok(());
        };
        if transactional_id_prefix.trim().is_empty() {
            return Err(KafkaConnectorError::Config(
                "exactly-once needs a transactional id prefix, unique per job".into(),
            ));
        }
        let t = self.transaction_timeout.as_millis();
        if t > BROKER_MAX_TRANSACTION_TIMEOUT.as_millis() {
            return Err(KafkaConnectorError::Config(format!(
                "transaction.timeout.ms = {t} exceeds the broker's transaction.max.timeout.ms \
                 ({} by default): lower it or raise the broker's limit",
                BROKER_MAX_TRANSACTION_TIMEOUT.as_millis()
            )));
        }
        if let Some((interval, timeout)) = self.checkpoint {
            let needed = (interval + timeout).as_millis();
            if t < needed {
                return Err(KafkaConnectorError::Config(format!(
                    "transaction.timeout.ms = {t} is shorter than the checkpoint interval plus \
                     checkpoint timeout = {needed} ms ({} + {}): raise the transaction timeout \
                     or shorten the checkpoint timeout",
                    interval.as_millis(),
                    timeout.as_millis()
                )));
            }
        }
        Ok(())
    }

    fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Upsert mode writes into a compacted topic only: on a `delete` topic the duplicates of
    /// a restore would stay forever.
    fn check_compacted(&self) -> Result<(), KafkaConnectorError> {
        let policy = crate::admin::topic_config(
            &self.bootstrap,
            &self.topic,
            "cleanup.policy",
            CALL_TIMEOUT,
        )?
        .unwrap_or_else(|| "delete".into());
        if policy.split(',').any(|p| p.trim() == "compact") {
            return Ok(());
        }
        Err(KafkaConnectorError::Config(format!(
            "upsert mode needs a compacted topic, but {} has cleanup.policy={policy}: set \
             cleanup.policy=compact on it (kafka-configs.sh --alter --entity-type topics \
             --entity-name {} --add-config cleanup.policy=compact) or use exactly-once",
            self.topic, self.topic
        )))
    }

    fn open(&self, ctx: &SinkContext) -> Result<KafkaWriter<T>, KafkaConnectorError> {
        self.validate()?;
        if self.guarantee == DeliveryGuarantee::Upsert {
            self.check_compacted()?;
        }
        let mut config = self.producer_config();
        let mut transactional = None;
        if let DeliveryGuarantee::ExactlyOnce {
            transactional_id_prefix,
        } = &self.guarantee
        {
            let marker_topic = format!("{transactional_id_prefix}.commits");
            ensure_topic(
                &self.bootstrap,
                &marker_topic,
                ctx.parallelism.max(1) as i32,
                &[("cleanup.policy", "compact")],
                CALL_TIMEOUT,
            )?;
            config
                .set(
                    "transactional.id",
                    format!("{transactional_id_prefix}-{}", ctx.subtask),
                )
                .set(
                    "transaction.timeout.ms",
                    self.transaction_timeout.as_millis().to_string(),
                );
            let partitions =
                crate::admin::wait_for_partitions(&self.bootstrap, &marker_topic, CALL_TIMEOUT)?;
            transactional = Some((marker_topic, partitions.len().max(1) as i32));
        }
        let producer: ThreadedProducer<DeliveryErrors> = config
            .create_with_context(DeliveryErrors::default())
            .map_err(|source| KafkaConnectorError::Client {
                what: "producer",
                source,
            })?;
        let exactly_once = match transactional {
            Some((marker_topic, marker_partitions)) => {
                // Fences earlier producers with this id and aborts their open transaction.
                producer
                    .init_transactions(CALL_TIMEOUT)
                    .map_err(|e| KafkaConnectorError::broker("initializing transactions", e))?;
                Some(ExactlyOnce {
                    marker_topic,
                    marker_partitions,
                    token: run_token(ctx.subtask),
                    current: Vec::new(),
                    pending: BTreeMap::new(),
                    transactions: ctx.metrics.counter("kafkaTransactionsCommitted"),
                    recommitted: ctx.metrics.counter("kafkaEpochsRecommittedOnRestore"),
                })
            }
            None => None,
        };
        Ok(KafkaWriter {
            bootstrap: self.bootstrap.clone(),
            topic: self.topic.clone(),
            subtask: ctx.subtask,
            producer: Some(producer),
            serialize: self.serialize.clone(),
            key: self.key.clone(),
            event_time_timestamps: self.event_time_timestamps,
            exactly_once,
        })
    }
}

impl<T: Send + 'static> Sink<T> for KafkaSink<T> {
    fn create_writer(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError> {
        Ok(Box::new(
            self.open(ctx)
                .map_err(KafkaConnectorError::into_sink_error)?,
        ))
    }
}

/// Remembers the first failed delivery, reported at the next flush.
#[derive(Default)]
struct DeliveryErrors {
    first: Mutex<Option<String>>,
}

impl ClientContext for DeliveryErrors {}

impl ProducerContext for DeliveryErrors {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let mut g = self.first.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_none() {
                *g = Some(format!("delivery to {} failed: {e}", m.topic()));
            }
        }
    }
}

/// A serialized record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Encoded {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    ts: i64,
}

/// One pre-committed epoch, as stored in the checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct EpochItem {
    /// Identifies the writer (run) that buffered the epoch; markers are per token and origin.
    token: String,
    /// Subtask that buffered the epoch.
    origin: u32,
    /// Checkpoint whose barrier closed the epoch.
    checkpoint: u64,
    records: Vec<Encoded>,
}

/// (token, origin subtask, checkpoint id) of an epoch.
type EpochKey = (String, u32, u64);

struct ExactlyOnce {
    marker_topic: String,
    /// Markers of origin subtask `o` go to partition `o % marker_partitions`, so that only
    /// the transactional id of subtask `o` ever writes there: once this subtask's producer
    /// has fenced its predecessor, no undecided transaction can hide a marker from it.
    marker_partitions: i32,
    token: String,
    /// Records since the last barrier.
    current: Vec<Encoded>,
    /// Closed epochs not yet committed, by (token, origin, checkpoint).
    pending: BTreeMap<EpochKey, Vec<Encoded>>,
    /// Transactions committed (`/metrics`).
    transactions: Arc<AtomicU64>,
    /// Epochs a restore found uncommitted and committed (`/metrics`).
    recommitted: Arc<AtomicU64>,
}

/// Unique per writer instance: a restarted job gets new tokens, so a marker of an earlier run
/// with the same prefix can never vouch for an epoch of this one.
fn run_token(subtask: u32) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}-{subtask}", std::process::id())
}

fn marker_key(token: &str, origin: u32) -> String {
    format!("{token}/{origin}")
}

struct KafkaWriter<T> {
    bootstrap: String,
    topic: String,
    subtask: u32,
    producer: Option<ThreadedProducer<DeliveryErrors>>,
    serialize: Serializer<T>,
    key: Option<KeyExtractor<T>>,
    event_time_timestamps: bool,
    exactly_once: Option<ExactlyOnce>,
}

impl<T> KafkaWriter<T> {
    fn producer(&self) -> Result<&ThreadedProducer<DeliveryErrors>, KafkaConnectorError> {
        self.producer
            .as_ref()
            .ok_or_else(|| KafkaConnectorError::Config("producer already closed".into()))
    }

    fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        ts: i64,
    ) -> Result<(), KafkaConnectorError> {
        self.send_to(topic, None, key, value, ts)
    }

    fn send_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        ts: i64,
    ) -> Result<(), KafkaConnectorError> {
        let producer = self.producer()?;
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if ts != NO_TIMESTAMP {
            rec = rec.timestamp(ts);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => return Ok(()),
                // The local queue is full: the background thread drains it.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    return Err(KafkaConnectorError::broker(
                        format!("producing to {topic}"),
                        e,
                    ));
                }
            }
        }
    }

    /// Waits for every delivery and reports the first failure.
    fn flush_all(&self) -> Result<(), KafkaConnectorError> {
        let producer = self.producer()?;
        // Not `Producer::flush`: on a threaded producer its poll waits 100 ms for events
        // that the producer's own thread consumes, which held every barrier for 100 ms. The
        // queue length counts unsent messages and unserved delivery reports alike, so zero
        // means every delivery has been reported.
        let deadline = Instant::now() + CALL_TIMEOUT;
        while producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(KafkaConnectorError::Config(format!(
                    "flushing to {}: {} records not delivered within {} s",
                    self.topic,
                    producer.in_flight_count(),
                    CALL_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let failed = producer
            .context()
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match failed {
            Some(msg) => Err(KafkaConnectorError::Config(msg)),
            None => Ok(()),
        }
    }

    /// Commits every pending epoch up to `upto` in one transaction, with a marker per
    /// (token, origin) naming the newest epoch committed.
    fn commit_upto(&mut self, upto: u64) -> Result<(), KafkaConnectorError> {
        let Some(eo) = self.exactly_once.as_mut() else {
            return Ok(());
        };
        let keys: Vec<_> = eo
            .pending
            .keys()
            .filter(|(_, _, c)| *c <= upto)
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let epochs: Vec<_> = keys
            .iter()
            .filter_map(|k| eo.pending.remove_entry(k))
            .collect();
        let marker_topic = eo.marker_topic.clone();
        let marker_partitions = eo.marker_partitions;
        let result = self.transact(&marker_topic, marker_partitions, &epochs);
        if result.is_ok()
            && let Some(eo) = self.exactly_once.as_ref()
        {
            eo.transactions.fetch_add(1, Ordering::Relaxed);
        }
        if result.is_err() {
            // Keep them: the failure restarts the job, and the restore commits them.
            if let Some(eo) = self.exactly_once.as_mut() {
                eo.pending.extend(epochs);
            }
        }
        result
    }

    fn transact(
        &self,
        marker_topic: &str,
        marker_partitions: i32,
        epochs: &[(EpochKey, Vec<Encoded>)],
    ) -> Result<(), KafkaConnectorError> {
        let producer = self.producer()?;
        producer
            .begin_transaction()
            .map_err(|e| KafkaConnectorError::broker("beginning a transaction", e))?;
        let mut markers: BTreeMap<(String, u32), u64> = BTreeMap::new();
        let sent = (|| {
            for ((token, origin, checkpoint), records) in epochs {
                for r in records {
                    self.send(&self.topic, r.key.as_deref(), &r.value, r.ts)?;
                }
                let m = markers
                    .entry((marker_key(token, *origin), *origin))
                    .or_default();
                *m = (*m).max(*checkpoint);
            }
            for ((key, origin), checkpoint) in &markers {
                self.send_to(
                    marker_topic,
                    Some((*origin % marker_partitions.max(1) as u32) as i32),
                    Some(key.as_bytes()),
                    checkpoint.to_string().as_bytes(),
                    NO_TIMESTAMP,
                )?;
            }
            producer
                .commit_transaction(CALL_TIMEOUT)
                .map_err(|e| KafkaConnectorError::broker("committing a transaction", e))
        })();
        if sent.is_err() {
            let _ = producer.abort_transaction(CALL_TIMEOUT);
        }
        sent
    }

    /// The newest committed checkpoint per marker key, read `read_committed` from the start
    /// of the marker topic up to its end.
    fn read_markers(
        &self,
        marker_topic: &str,
        partitions: &std::collections::BTreeSet<i32>,
    ) -> Result<HashMap<String, u64>, KafkaConnectorError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("{marker_topic}-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|source| KafkaConnectorError::Client {
                what: "marker consumer",
                source,
            })?;
        let result = (|| {
            let parts: Vec<i32> = partitions_of(&consumer, marker_topic, CALL_TIMEOUT)?
                .into_iter()
                .filter(|p| partitions.contains(p))
                .collect();
            let mut tpl = TopicPartitionList::new();
            for p in &parts {
                let _ = tpl.add_partition_offset(marker_topic, *p, Offset::Beginning);
            }
            consumer
                .assign(&tpl)
                .map_err(|e| KafkaConnectorError::broker("assigning the marker topic", e))?;
            let mut open: std::collections::BTreeSet<i32> = parts.into_iter().collect();
            let mut markers = HashMap::new();
            let deadline = Instant::now() + CALL_TIMEOUT;
            while !open.is_empty() {
                if Instant::now() > deadline {
                    return Err(KafkaConnectorError::Config(format!(
                        "reading marker topic {marker_topic} did not reach its end in {} s",
                        CALL_TIMEOUT.as_secs()
                    )));
                }
                match consumer.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        open.remove(&p);
                    }
                    Some(Err(e)) => {
                        return Err(KafkaConnectorError::broker("reading the marker topic", e));
                    }
                    Some(Ok(m)) => {
                        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                        let value = m
                            .payload()
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        if let (Some(k), Some(v)) = (key, value) {
                            markers.insert(k, v);
                        }
                    }
                }
            }
            Ok(markers)
        })();
        drop_detached(consumer);
        result
    }
}

impl<T: Send> SinkWriter<T> for KafkaWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        let value = (self.serialize)(&rec.value).map_err(|message| {
            KafkaConnectorError::Serialize {
                topic: self.topic.clone(),
                message,
            }
            .into_sink_error()
        })?;
        let key = self.key.as_ref().and_then(|f| f(&rec.value));
        let ts = if self.event_time_timestamps {
            rec.ts
        } else {
            NO_TIMESTAMP
        };
        match self.exactly_once.as_mut() {
            Some(eo) => {
                eo.current.push(Encoded { key, value, ts });
                Ok(())
            }
            None => self
                .send(&self.topic, key.as_deref(), &value, ts)
                .map_err(KafkaConnectorError::into_sink_error),
        }
    }

    fn flush(&mut self) -> Result<(), OperatorError> {
        // Called often by the engine: producing continues in the background, and exactly-once
        // records wait for their checkpoint.
        Ok(())
    }

    fn finish(&mut self) -> Result<(), OperatorError> {
        // The engine's final checkpoint committed everything before the end; what is left
        // here comes from a job without checkpointing and is committed now.
        if let Some(eo) = self.exactly_once.as_mut()
            && !eo.current.is_empty()
        {
            let records = std::mem::take(&mut eo.current);
            eo.pending
                .insert((eo.token.clone(), self.subtask, u64::MAX), records);
        }
        self.commit_upto(u64::MAX)
            .and_then(|()| self.flush_all())
            .map_err(KafkaConnectorError::into_sink_error)
    }

    fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Vec<Vec<u8>>, OperatorError> {
        let Some(eo) = self.exactly_once.as_mut() else {
            self.flush_all()
                .map_err(KafkaConnectorError::into_sink_error)?;
            return Ok(Vec::new());
        };
        if !eo.current.is_empty() {
            let records = std::mem::take(&mut eo.current);
            eo.pending
                .insert((eo.token.clone(), self.subtask, checkpoint_id), records);
        }
        // Every uncommitted epoch goes into the checkpoint, including ones whose own
        // checkpoint failed: they are committed with this one.
        let mut items = Vec::with_capacity(eo.pending.len());
        for ((token, origin, checkpoint), records) in &eo.pending {
            let item = EpochItem {
                token: token.clone(),
                origin: *origin,
                checkpoint: *checkpoint,
                records: records.clone(),
            };
            items.push(bincode::serialize(&item).map_err(|e| {
                KafkaConnectorError::CorruptState(format!("encoding an epoch: {e}"))
                    .into_sink_error()
            })?);
        }
        Ok(items)
    }

    fn commit(&mut self, checkpoint_id: u64) -> Result<(), OperatorError> {
        self.commit_upto(checkpoint_id)
            .map_err(KafkaConnectorError::into_sink_error)
    }

    fn restore(&mut self, state: Vec<Vec<u8>>) -> Result<(), OperatorError> {
        let Some(marker_topic) = self.exactly_once.as_ref().map(|e| e.marker_topic.clone()) else {
            return Ok(());
        };
        if state.is_empty() {
            return Ok(());
        }
        let mut items = Vec::with_capacity(state.len());
        for bytes in state {
            let item: EpochItem = bincode::deserialize(&bytes).map_err(|e| {
                KafkaConnectorError::CorruptState(format!("sink epoch: {e}")).into_sink_error()
            })?;
            items.push(item);
        }
        let marker_partitions = self
            .exactly_once
            .as_ref()
            .map_or(1, |e| e.marker_partitions.max(1));
        let partitions: std::collections::BTreeSet<i32> = items
            .iter()
            .map(|i| (i.origin % marker_partitions as u32) as i32)
            .collect();
        let markers = self
            .read_markers(&marker_topic, &partitions)
            .map_err(KafkaConnectorError::into_sink_error)?;
        if let Some(eo) = self.exactly_once.as_mut() {
            for item in items {
                let done = markers
                    .get(&marker_key(&item.token, item.origin))
                    .is_some_and(|&m| m >= item.checkpoint);
                // The idempotence guard: an epoch whose transaction committed before the
                // failure is not written again.
                if !done {
                    eo.recommitted.fetch_add(1, Ordering::Relaxed);
                    eo.pending
                        .insert((item.token, item.origin, item.checkpoint), item.records);
                }
            }
        }
        self.commit_upto(u64::MAX)
            .map_err(KafkaConnectorError::into_sink_error)
    }
}

impl<T> Drop for KafkaWriter<T> {
    fn drop(&mut self) {
        if let Some(p) = self.producer.take() {
            drop_detached(p);
        }
    }
}
