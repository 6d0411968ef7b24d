//! The unit of data flowing through a dataflow: a value with its event-time timestamp.

/// Timestamp value used when a record carries no event time.
pub const NO_TIMESTAMP: i64 = i64::MIN;

/// A value with its event-time timestamp in milliseconds since the epoch
/// ([`NO_TIMESTAMP`] when it has none).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record<T> {
    /// Event time of the record, in milliseconds since the Unix epoch.
    pub ts: i64,
    /// The payload.
    pub value: T,
}

impl<T> Record<T> {
    /// A record with an event-time timestamp.
    pub fn new(ts: i64, value: T) -> Self {
        Self { ts, value }
    }

    /// A record without event time.
    pub fn untimed(value: T) -> Self {
        Self {
            ts: NO_TIMESTAMP,
            value,
        }
    }

    /// The same timestamp with another value: operators keep the event time of their input.
    pub fn with_value<U>(&self, value: U) -> Record<U> {
        Record { ts: self.ts, value }
    }
}
