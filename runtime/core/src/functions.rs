//! Keyed process functions — the lowest-level stateful API — with their context (current key,
//! keyed state, timers, output) and the operator that runs them.

use crate::checkpoint::{
    KeyedSnapshotWriter, OperatorSnapshot, RestoredState, SnapshotContext, decode,
};
use crate::error::OperatorError;
use crate::key::{Data, Key};
use crate::operator::{Operator, OperatorInit, Output};
use crate::record::Record;
use crate::state::{KeyedStateBackend, StateAccess};
use crate::time::Clock;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    /// Fires when the watermark passes the timer.
    EventTime,
    /// Fires when the processing-time clock passes the timer.
    ProcessingTime,
}

/// Timers of one keyed operator subtask, deduplicated per (time, key) as in Flink.
pub struct TimerService<K> {
    event: BTreeSet<(i64, K)>,
    processing: BTreeSet<(i64, K)>,
}

impl<K: Key> Default for TimerService<K> {
    fn default() -> Self {
        Self {
            event: BTreeSet::new(),
            processing: BTreeSet::new(),
        }
    }
}

impl<K: Key> TimerService<K> {
    fn pop_due(set: &mut BTreeSet<(i64, K)>, time: i64) -> Option<(i64, K)> {
        match set.first() {
            Some((t, _)) if *t <= time => set.pop_first(),
            _ => None,
        }
    }

    /// Number of pending timers (event, processing).
    pub fn pending(&self) -> (usize, usize) {
        (self.event.len(), self.processing.len())
    }
}

/// What a keyed process function sees while handling a record or a timer.
pub struct KeyedContext<'a, K, O> {
    key: &'a K,
    timestamp: i64,
    now: i64,
    watermark: i64,
    timer_domain: Option<TimeDomain>,
    state: &'a mut KeyedStateBackend<K>,
    timers: &'a mut TimerService<K>,
    out: &'a mut dyn Output<O>,
}

/// The context of [`KeyedProcessFunction::on_timer`].
pub type OnTimerContext<'a, K, O> = KeyedContext<'a, K, O>;

impl<K: Key, O> KeyedContext<'_, K, O> {
    /// The key of the record or timer being handled.
    pub fn key(&self) -> &K {
        self.key
    }

    /// Event time of the record (or the timer's time).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// Processing time now.
    pub fn current_processing_time(&self) -> i64 {
        self.now
    }

    /// The operator's current watermark.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// In `on_timer`, which clock fired.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.timer_domain
    }

    /// Emits a value with the current timestamp.
    pub fn emit(&mut self, value: O) -> Result<(), OperatorError> {
        self.out.emit(Record {
            ts: self.timestamp,
            value,
        })
    }

    /// Emits a value with an explicit timestamp.
    pub fn emit_at(&mut self, ts: i64, value: O) -> Result<(), OperatorError> {
        self.out.emit(Record { ts, value })
    }

    /// Registers an event-time timer for the current key.
    pub fn register_event_time_timer(&mut self, ts: i64) {
        self.timers.event.insert((ts, self.key.clone()));
    }

    /// Registers a processing-time timer for the current key.
    pub fn register_processing_time_timer(&mut self, ts: i64) {
        self.timers.processing.insert((ts, self.key.clone()));
    }

    /// Deletes an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, ts: i64) {
        self.timers.event.remove(&(ts, self.key.clone()));
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, ts: i64) {
        self.timers.processing.remove(&(ts, self.key.clone()));
    }
}

impl<K: Key, O> StateAccess<K> for KeyedContext<'_, K, O> {
    fn state_parts(&mut self) -> (&mut KeyedStateBackend<K>, &K, i64) {
        (self.state, self.key, self.now)
    }
}

/// A function over a keyed stream with keyed state and timers (Flink's
/// `KeyedProcessFunction`). Each subtask runs its own clone.
pub trait KeyedProcessFunction<K, I, O>: Clone + Send + 'static {
    /// Handles one record of the current key.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<(), OperatorError>;

    /// Handles a timer of the current key.
    fn on_timer(
        &mut self,
        _ts: i64,
        _ctx: &mut OnTimerContext<'_, K, O>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// Runs a [`KeyedProcessFunction`].
pub struct KeyedProcessOperator<K, I, O, F> {
    f: F,
    key_fn: Arc<dyn Fn(&I) -> K + Send + Sync>,
    state: KeyedStateBackend<K>,
    timers: TimerService<K>,
    clock: Option<Arc<dyn Clock>>,
    watermark: i64,
    _o: std::marker::PhantomData<fn() -> O>,
}

impl<K: Key, I, O, F> KeyedProcessOperator<K, I, O, F> {
    /// The operator for one subtask.
    pub fn new(f: F, key_fn: Arc<dyn Fn(&I) -> K + Send + Sync>) -> Self {
        Self {
            f,
            key_fn,
            state: KeyedStateBackend::new(),
            timers: TimerService::default(),
            clock: None,
            watermark: i64::MIN,
            _o: std::marker::PhantomData,
        }
    }

    fn now(&self) -> i64 {
        self.clock.as_ref().map_or(0, |c| c.now_ms())
    }
}

impl<K, I, O, F> KeyedProcessOperator<K, I, O, F>
where
    K: Key,
    I: Data,
    O: Data,
    F: KeyedProcessFunction<K, I, O>,
{
    fn fire(
        &mut self,
        domain: TimeDomain,
        ts: i64,
        key: K,
        out: &mut dyn Output<O>,
    ) -> Result<(), OperatorError> {
        let now = self.now();
        let mut ctx = KeyedContext {
            key: &key,
            timestamp: ts,
            now,
            watermark: self.watermark,
            timer_domain: Some(domain),
            state: &mut self.state,
            timers: &mut self.timers,
            out,
        };
        self.f.on_timer(ts, &mut ctx)
    }
}

impl<K, I, O, F> Operator<I, O> for KeyedProcessOperator<K, I, O, F>
where
    K: Key,
    I: Data,
    O: Data,
    F: KeyedProcessFunction<K, I, O>,
{
    fn open(&mut self, init: &OperatorInit) -> Result<(), OperatorError> {
        self.clock = Some(init.clock.clone());
        let native = init.restored.as_ref().map_or(&[][..], |r| &r.native[..]);
        self.state = KeyedStateBackend::open(init, native)?;
        Ok(())
    }

    fn process(&mut self, rec: Record<I>, out: &mut dyn Output<O>) -> Result<(), OperatorError> {
        let key = (self.key_fn)(&rec.value);
        let now = self.now();
        let mut ctx = KeyedContext {
            key: &key,
            timestamp: rec.ts,
            now,
            watermark: self.watermark,
            timer_domain: None,
            state: &mut self.state,
            timers: &mut self.timers,
            out,
        };
        self.f.process_element(rec.value, &mut ctx)
    }

    fn on_watermark(&mut self, wm: i64, out: &mut dyn Output<O>) -> Result<(), OperatorError> {
        self.watermark = wm;
        while let Some((ts, key)) = TimerService::pop_due(&mut self.timers.event, wm) {
            self.fire(TimeDomain::EventTime, ts, key, out)?;
        }
        out.emit_watermark(wm)
    }

    fn on_processing_time(
        &mut self,
        now: i64,
        out: &mut dyn Output<O>,
    ) -> Result<(), OperatorError> {
        while let Some((ts, key)) = TimerService::pop_due(&mut self.timers.processing, now) {
            self.fire(TimeDomain::ProcessingTime, ts, key, out)?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorSnapshot, OperatorError> {
        let now = self.now();
        let state = self.state.snapshot(ctx, now)?;
        let timers: Vec<(&'static str, i64, K)> = self
            .timers
            .event
            .iter()
            .map(|(t, k)| (EVENT_TIMERS, *t, k.clone()))
            .chain(
                self.timers
                    .processing
                    .iter()
                    .map(|(t, k)| (PROCESSING_TIMERS, *t, k.clone())),
            )
            .collect();
        Ok(OperatorSnapshot {
            keyed: Some(Box::new(move |w: &mut KeyedSnapshotWriter| {
                state(w)?;
                for (name, t, k) in &timers {
                    w.put(name, k, t)?;
                }
                Ok(())
            })),
            operator: Vec::new(),
        })
    }

    fn restore_state(&mut self, state: RestoredState) -> Result<(), OperatorError> {
        let mut rest = Vec::with_capacity(state.keyed.len());
        for e in state.keyed {
            let set = match e.state.as_str() {
                EVENT_TIMERS => &mut self.timers.event,
                PROCESSING_TIMERS => &mut self.timers.processing,
                _ => {
                    rest.push(e);
                    continue;
                }
            };
            let key: K = decode(&e.state, &e.key)?;
            let t: i64 = decode(&e.state, &e.value)?;
            set.insert((t, key));
        }
        self.state.restore(rest)
    }

    fn notify_checkpoint_complete(&mut self, id: u64) -> Result<(), OperatorError> {
        self.state.checkpoint_complete(id);
        Ok(())
    }
}

/// State names under which timers are checkpointed (user states cannot start with `_`).
const EVENT_TIMERS: &str = "_timers/event";
const PROCESSING_TIMERS: &str = "_timers/processing";
