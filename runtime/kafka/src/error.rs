//! Errors of the Kafka connector: what failed while configuring, connecting, reading or
//! writing, with the Kafka client's error as the source.

use weir_core::OperatorError;

/// A Kafka connector failure.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConnectorError {
    /// A builder setting is missing or inconsistent.
    #[error("invalid Kafka connector configuration: {0}")]
    Config(String),
    /// The client could not be created (bad client property).
    #[error("could not create the Kafka {what}: {source}")]
    Client {
        /// Which client (consumer, producer, admin client).
        what: &'static str,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A call to the broker failed.
    #[error("Kafka {operation} failed: {source}")]
    Broker {
        /// What was attempted.
        operation: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic does not exist or has no partitions.
    #[error("Kafka topic {0:?} not found: create it first (or check the bootstrap servers)")]
    TopicNotFound(String),
    /// A record could not be deserialized and the bad-record policy is `fail`.
    #[error("bad record in topic {topic} partition {partition} offset {offset}: {message}")]
    BadRecord {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record.
        offset: i64,
        /// Why it could not be read.
        message: String,
    },
    /// A value could not be serialized for the sink.
    #[error("could not serialize a record for topic {topic}: {message}")]
    Serialize {
        /// Target topic.
        topic: String,
        /// The serializer's message.
        message: String,
    },
    /// Checkpointed connector state could not be decoded.
    #[error("corrupt Kafka connector state: {0}")]
    CorruptState(String),
}

impl KafkaConnectorError {
    pub(crate) fn broker(operation: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Broker {
            operation: operation.into(),
            source,
        }
    }
}

/// The whole error chain in one line: the engine keeps only a message, and it must still say
/// which topic, partition or setting was at fault.
fn chain(e: &KafkaConnectorError) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

impl KafkaConnectorError {
    /// As a source failure for the engine.
    pub fn into_source_error(self) -> OperatorError {
        OperatorError::Source(chain(&self))
    }

    /// As a sink failure for the engine.
    pub fn into_sink_error(self) -> OperatorError {
        OperatorError::Sink(std::io::Error::other(chain(&self)))
    }
}
