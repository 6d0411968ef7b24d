//! Apache Kafka connector for Weir: a source that reads partitions assigned deterministically
//! to its subtasks, with offsets in checkpoints and per-partition watermarks, and a sink that
//! writes at-least-once or exactly-once through Kafka transactions (see `docs/exactly-once.md`).

pub mod admin;
pub mod error;
pub mod orders_kafka;
pub mod sink;
pub mod source;

pub use error::KafkaConnectorError;
pub use sink::{DeliveryGuarantee, KafkaSink};
pub use source::{BadRecordPolicy, KafkaSource, StartingOffsets};

/// The programs of this crate, to add to a binary's registry.
pub fn programs() -> Vec<weir_core::Program> {
    vec![orders_kafka::program()]
}
