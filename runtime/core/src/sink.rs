//! Sinks: the connector interface that takes records out of a dataflow, the sink operator that
//! drives it, and the sinks every job and test needs (blackhole, collect).

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorInit, Output};
use crate::record::Record;
use std::sync::{Arc, Mutex};

/// Where a sink writer runs.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// This subtask's index.
    pub subtask: u32,
    /// Number of sink subtasks.
    pub parallelism: u32,
}

/// Writes the records of one sink subtask.
pub trait SinkWriter<T>: Send {
    /// Writes (or buffers) one record.
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError>;
    /// Makes buffered writes visible/durable.
    fn flush(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
    /// End of input.
    fn finish(&mut self) -> Result<(), OperatorError> {
        self.flush()
    }
}

/// A connector that consumes records.
pub trait Sink<T>: Send + Sync + 'static {
    /// Creates the writer for one subtask.
    fn create_writer(&self, ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError>;
}

/// Runs a sink writer as the last operator of a chain.
pub struct SinkOperator<T> {
    sink: Arc<dyn Sink<T>>,
    writer: Option<Box<dyn SinkWriter<T>>>,
}

impl<T> SinkOperator<T> {
    /// The operator for one subtask of `sink`.
    pub fn new(sink: Arc<dyn Sink<T>>) -> Self {
        Self { sink, writer: None }
    }

    fn writer(&mut self) -> Result<&mut Box<dyn SinkWriter<T>>, OperatorError> {
        self.writer
            .as_mut()
            .ok_or_else(|| OperatorError::User("sink used before open".into()))
    }
}

impl<T: Send + 'static> Operator<T, ()> for SinkOperator<T> {
    fn open(&mut self, init: &OperatorInit) -> Result<(), OperatorError> {
        let ctx = SinkContext {
            subtask: init.subtask,
            parallelism: init.parallelism,
        };
        self.writer = Some(self.sink.create_writer(&ctx)?);
        Ok(())
    }

    #[inline]
    fn process(&mut self, rec: Record<T>, _out: &mut dyn Output<()>) -> Result<(), OperatorError> {
        self.writer()?.write(rec)
    }

    fn on_watermark(&mut self, _wm: i64, _out: &mut dyn Output<()>) -> Result<(), OperatorError> {
        Ok(())
    }

    fn finish(&mut self, _out: &mut dyn Output<()>) -> Result<(), OperatorError> {
        self.writer()?.finish()
    }

    fn flush(&mut self) -> Result<(), OperatorError> {
        self.writer()?.flush()
    }
}

/// Discards every record (benchmarks, and jobs run for their side effects).
#[derive(Debug, Default, Clone, Copy)]
pub struct BlackholeSink;

struct Blackhole;

impl<T> SinkWriter<T> for Blackhole {
    #[inline]
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        std::hint::black_box(rec);
        Ok(())
    }
}

impl<T: Send + 'static> Sink<T> for BlackholeSink {
    fn create_writer(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError> {
        Ok(Box::new(Blackhole))
    }
}

/// Collects every record into a shared vector, for tests.
#[derive(Debug)]
pub struct CollectSink<T> {
    items: Arc<Mutex<Vec<Record<T>>>>,
}

impl<T> Clone for CollectSink<T> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
        }
    }
}

impl<T> Default for CollectSink<T> {
    fn default() -> Self {
        Self {
            items: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T: Clone> CollectSink<T> {
    /// A new, empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The collected values, in arrival order.
    pub fn values(&self) -> Vec<T> {
        self.records().into_iter().map(|r| r.value).collect()
    }

    /// The collected records with their timestamps.
    pub fn records(&self) -> Vec<Record<T>> {
        self.items
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

struct CollectWriter<T> {
    items: Arc<Mutex<Vec<Record<T>>>>,
    local: Vec<Record<T>>,
}

impl<T: Send> SinkWriter<T> for CollectWriter<T> {
    fn write(&mut self, rec: Record<T>) -> Result<(), OperatorError> {
        self.local.push(rec);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OperatorError> {
        let mut g = self.items.lock().unwrap_or_else(|e| e.into_inner());
        g.append(&mut self.local);
        Ok(())
    }
}

impl<T: Send + 'static> Sink<T> for CollectSink<T> {
    fn create_writer(&self, _ctx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, OperatorError> {
        Ok(Box::new(CollectWriter {
            items: self.items.clone(),
            local: Vec::new(),
        }))
    }
}
