//! Topic administration the connector needs (the sink's compacted marker topic) and that tests
//! and tools use: create, grow, describe and delete topics, wait for them to be usable.

use crate::error::KafkaConnectorError;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::{Duration, Instant};

/// An admin client on `bootstrap`.
pub fn admin_client(
    bootstrap: &str,
) -> Result<AdminClient<DefaultClientContext>, KafkaConnectorError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|source| KafkaConnectorError::Client {
            what: "admin client",
            source,
        })
}

/// Creates `topic` with `partitions` partitions and the given topic configs unless it exists,
/// then waits until its metadata shows every partition (creation is asynchronous on the broker).
pub fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), KafkaConnectorError> {
    let admin = admin_client(bootstrap)?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let results = futures_executor::block_on(admin.create_topics([&new], &opts))
        .map_err(|e| KafkaConnectorError::broker(format!("creating topic {topic}"), e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaConnectorError::broker(
                    format!("creating topic {t}"),
                    rdkafka::error::KafkaError::AdminOp(code),
                ));
            }
        }
    }
    wait_for_partitions(bootstrap, topic, timeout).map(|_| ())
}

/// Raises `topic` to `partitions` partitions and waits until its metadata shows them.
pub fn add_partitions(
    bootstrap: &str,
    topic: &str,
    partitions: usize,
    timeout: Duration,
) -> Result<(), KafkaConnectorError> {
    let admin = admin_client(bootstrap)?;
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let new = rdkafka::admin::NewPartitions::new(topic, partitions);
    let results = futures_executor::block_on(admin.create_partitions([&new], &opts))
        .map_err(|e| KafkaConnectorError::broker(format!("adding partitions to {topic}"), e))?;
    for r in results {
        if let Err((t, code)) = r {
            return Err(KafkaConnectorError::broker(
                format!("adding partitions to {t}"),
                rdkafka::error::KafkaError::AdminOp(code),
            ));
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        if wait_for_partitions(bootstrap, topic, timeout)?.len() >= partitions {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KafkaConnectorError::Config(format!(
                "{topic} did not show {partitions} partitions within {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of topic config `name` of `topic` (e.g. `cleanup.policy`); an unknown topic is
/// [`KafkaConnectorError::TopicNotFound`].
pub fn topic_config(
    bootstrap: &str,
    topic: &str,
    name: &str,
    timeout: Duration,
) -> Result<Option<String>, KafkaConnectorError> {
    let admin = admin_client(bootstrap)?;
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let results = futures_executor::block_on(
        admin.describe_configs([&rdkafka::admin::ResourceSpecifier::Topic(topic)], &opts),
    )
    .map_err(|e| KafkaConnectorError::broker(format!("describing topic {topic}"), e))?;
    match results.into_iter().next() {
        None => Ok(None),
        Some(Ok(res)) => Ok(res.get(name).and_then(|e| e.value.clone())),
        Some(Err(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
            Err(KafkaConnectorError::TopicNotFound(topic.to_string()))
        }
        Some(Err(code)) => Err(KafkaConnectorError::broker(
            format!("describing topic {topic}"),
            rdkafka::error::KafkaError::AdminOp(code),
        )),
    }
}

/// Deletes topics, ignoring ones that do not exist.
pub fn delete_topics(bootstrap: &str, topics: &[&str]) -> Result<(), KafkaConnectorError> {
    let admin = admin_client(bootstrap)?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    futures_executor::block_on(admin.delete_topics(topics, &opts))
        .map_err(|e| KafkaConnectorError::broker("deleting topics", e))?;
    Ok(())
}

/// Waits until `topic`'s metadata lists its partitions; returns their ids, sorted.
pub fn wait_for_partitions(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaConnectorError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|source| KafkaConnectorError::Client {
            what: "consumer",
            source,
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        let found = partitions_of(&consumer, topic, Duration::from_secs(5));
        match found {
            Ok(p) if !p.is_empty() => return Ok(p),
            _ if Instant::now() >= deadline => {
                return match found {
                    Err(e) => Err(e),
                    Ok(_) => Err(KafkaConnectorError::TopicNotFound(topic.to_string())),
                };
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The partitions of `topic` from a metadata request, sorted; empty if the topic is unknown.
pub(crate) fn partitions_of<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaConnectorError> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| KafkaConnectorError::broker(format!("metadata of topic {topic}"), e))?;
    let mut out = Vec::new();
    for t in md.topics() {
        if t.name() == topic && t.error().is_none() {
            out.extend(t.partitions().iter().map(|p| p.id()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Drops a Kafka client on a detached thread: librdkafka's destructor can block for minutes
/// after a commit (rust-rdkafka #597/#611), and that must never stall a task or a test.
pub(crate) fn drop_detached<T: Send + 'static>(client: T) {
    // Should no thread be available, the client is dropped in place by the failed spawn.
    let _ = std::thread::Builder::new()
        .name("kafka-client-drop".into())
        .spawn(move || drop(client));
}
