//! The window operator: keeps one accumulator per key and window, fires windows when the
//! watermark passes their end, keeps them for the allowed lateness (re-firing on late records),
//! and routes records that are too late to a side output.
//!
//! Window contents live in the operator's own hash maps on the heap, or — when the job has a
//! serialized state backend (RocksDB) — in that store, one entry per (key, window) and one
//! list of sessions per key. Timers stay on the heap either way (as Flink's heap timers do
//! with RocksDB); they follow from the windows, so a restore rebuilds them from the windows.

use super::{AggregateFunction, ProcessWindowFunction, TimeWindow, WindowAssigner, WindowContext};
use crate::checkpoint::{
    KeyedSnapshotWriter, OperatorSnapshot, RestoredState, SnapshotContext, decode,
};
use crate::error::OperatorError;
use crate::key::{Data, Key, StateValue};
use crate::operator::{Operator, Output};
use crate::record::{NO_TIMESTAMP, Record};
use crate::state::{KeyedStateBackend, KvBackend, StateKind};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

/// What a window operator emits: results, and (when asked for) records too late for any window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum WindowOutput<O, T> {
    /// A window result.
    Result(O),
    /// A record that arrived after its windows' allowed lateness.
    Late(T),
}

/// How a window's contents are kept and turned into results.
pub trait WindowContents<K, T>: Clone + Send + 'static {
    /// Per-window state.
    type Acc: StateValue;
    /// Result type.
    type Out: Data;
    /// Fresh state.
    fn create(&self) -> Self::Acc;
    /// Adds a record.
    fn add(&self, acc: &mut Self::Acc, value: T);
    /// Merges `other` into `acc`.
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    /// Evaluates the window.
    fn emit(&mut self, key: &K, ctx: &WindowContext, acc: &Self::Acc, out: &mut Vec<Self::Out>);
}

/// Contents = an incremental aggregate, emitted as its result.
#[derive(Clone)]
pub struct AggContents<A, ACC, R> {
    pub(crate) agg: A,
    pub(crate) _p: PhantomData<fn() -> (ACC, R)>,
}

impl<K, T, A, ACC, R> WindowContents<K, T> for AggContents<A, ACC, R>
where
    A: AggregateFunction<T, ACC, R>,
    ACC: StateValue,
    R: Data,
{
    type Acc = ACC;
    type Out = R;
    fn create(&self) -> ACC {
        self.agg.create_accumulator()
    }
    #[inline]
    fn add(&self, acc: &mut ACC, value: T) {
        self.agg.add(acc, value)
    }
    fn merge(&self, acc: &mut ACC, other: ACC) {
        self.agg.merge(acc, other)
    }
    fn emit(&mut self, _key: &K, _ctx: &WindowContext, acc: &ACC, out: &mut Vec<R>) {
        out.push(self.agg.get_result(acc));
    }
}

type Types3<A, B, C> = PhantomData<fn() -> (A, B, C)>;

/// Contents = an incremental aggregate whose result goes through a process window function.
#[derive(Clone)]
pub struct AggProcessContents<A, P, ACC, R, O> {
    pub(crate) agg: A,
    pub(crate) f: P,
    pub(crate) _p: Types3<ACC, R, O>,
}

impl<K, T, A, P, ACC, R, O> WindowContents<K, T> for AggProcessContents<A, P, ACC, R, O>
where
    A: AggregateFunction<T, ACC, R>,
    P: ProcessWindowFunction<K, R, O>,
    ACC: StateValue,
    R: Data,
    O: Data,
{
    type Acc = ACC;
    type Out = O;
    fn create(&self) -> ACC {
        self.agg.create_accumulator()
    }
    #[inline]
    fn add(&self, acc: &mut ACC, value: T) {
        self.agg.add(acc, value)
    }
    fn merge(&self, acc: &mut ACC, other: ACC) {
        self.agg.merge(acc, other)
    }
    fn emit(&mut self, key: &K, ctx: &WindowContext, acc: &ACC, out: &mut Vec<O>) {
        let r = self.agg.get_result(acc);
        self.f.process(key, ctx, std::slice::from_ref(&r), out);
    }
}

/// Contents = every record, handed to a process window function.
#[derive(Clone)]
pub struct ListContents<P, O> {
    pub(crate) f: P,
    pub(crate) _p: PhantomData<fn() -> O>,
}

impl<K, T, P, O> WindowContents<K, T> for ListContents<P, O>
where
    T: StateValue,
    P: ProcessWindowFunction<K, T, O>,
    O: Data,
{
    type Acc = Vec<T>;
    type Out = O;
    fn create(&self) -> Vec<T> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<T>, value: T) {
        acc.push(value)
    }
    fn merge(&self, acc: &mut Vec<T>, mut other: Vec<T>) {
        acc.append(&mut other)
    }
    fn emit(&mut self, key: &K, ctx: &WindowContext, acc: &Vec<T>, out: &mut Vec<O>) {
        self.f.process(key, ctx, acc, out);
    }
}

/// Runs windows over a keyed stream.
pub struct WindowOperator<K, T, C: WindowContents<K, T>> {
    key_fn: Arc<dyn Fn(&T) -> K + Send + Sync>,
    assigner: WindowAssigner,
    lateness: i64,
    emit_late: bool,
    contents: C,
    /// Non-merging windows: state per (key, window).
    windows: FxHashMap<(K, TimeWindow), C::Acc>,
    /// Session windows: the live windows of each key.
    sessions: FxHashMap<K, Vec<(TimeWindow, C::Acc)>>,
    /// Pending firings and clean-ups, in time order.
    /// Pending firings and clean-ups by time. Fixed windows register once, when created; a
    /// session's timers go stale when it merges and are skipped (and de-duplicated) on firing.
    timers: BTreeMap<i64, Vec<(K, TimeWindow)>>,
    /// The operator's time: the watermark, or processing time for processing-time windows.
    watermark: i64,
    /// Windows follow processing time (assigned at arrival, fired by the clock).
    processing_time: bool,
    clock: Option<Arc<dyn crate::time::Clock>>,
    scratch: Vec<C::Out>,
    late_dropped: u64,
    /// Window contents in a serialized store instead of `windows` and `sessions`.
    kv: Option<KvWindows<K>>,
}

/// Window contents in a serialized store: the store and the slots of its two states.
struct KvWindows<K> {
    kv: KvBackend<K>,
    windows: u32,
    sessions: u32,
}

impl<K: Key, T: Data, C: WindowContents<K, T>> WindowOperator<K, T, C> {
    /// A window operator; `emit_late` routes too-late records to the output as
    /// [`WindowOutput::Late`] instead of dropping them.
    pub fn new(
        key_fn: Arc<dyn Fn(&T) -> K + Send + Sync>,
        assigner: WindowAssigner,
        allowed_lateness_ms: i64,
        emit_late: bool,
        contents: C,
    ) -> Self {
        Self {
            key_fn,
            assigner,
            lateness: allowed_lateness_ms.max(0),
            emit_late,
            contents,
            windows: FxHashMap::default(),
            sessions: FxHashMap::default(),
            timers: BTreeMap::new(),
            watermark: i64::MIN,
            processing_time: false,
            clock: None,
            scratch: Vec::new(),
            late_dropped: 0,
            kv: None,
        }
    }

    /// Makes the windows follow processing time: records are assigned by their arrival time
    /// and windows fire when the clock passes their end (Flink's processing-time windows).
    pub fn on_processing_time_clock(mut self) -> Self {
        self.processing_time = true;
        self
    }

    /// Fires every window whose time has come.
    fn advance(
        &mut self,
        time: i64,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        self.watermark = time;
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > time {
                break;
            }
            let (t, mut due) = entry.remove_entry();
            if self.assigner.is_merging() {
                due.sort_unstable();
                due.dedup();
            }
            for (key, w) in due {
                self.fire_timer(t, key, w, out)?;
            }
        }
        Ok(())
    }

    /// Records dropped for being late (without a side output).
    pub fn late_dropped(&self) -> u64 {
        self.late_dropped
    }

    fn cleanup_time(&self, w: &TimeWindow) -> i64 {
        w.max_timestamp().saturating_add(self.lateness)
    }

    fn is_late(&self, w: &TimeWindow) -> bool {
        self.cleanup_time(w) <= self.watermark
    }

    fn register(&mut self, key: &K, w: TimeWindow) {
        self.timers
            .entry(w.max_timestamp())
            .or_default()
            .push((key.clone(), w));
        if self.lateness > 0 {
            let cleanup = self.cleanup_time(&w);
            self.timers
                .entry(cleanup)
                .or_default()
                .push((key.clone(), w));
        }
    }

    fn emit_window(
        &mut self,
        key: &K,
        w: TimeWindow,
        acc: &C::Acc,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        let ctx = WindowContext {
            window: w,
            current_watermark: self.watermark,
        };
        self.contents.emit(key, &ctx, acc, &mut self.scratch);
        for v in self.scratch.drain(..) {
            out.emit(Record {
                ts: w.max_timestamp(),
                value: WindowOutput::Result(v),
            })?;
        }
        Ok(())
    }

    fn late(
        &mut self,
        rec: Record<T>,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        if self.emit_late {
            out.emit(Record {
                ts: rec.ts,
                value: WindowOutput::Late(rec.value),
            })
        } else {
            self.late_dropped += 1;
            Ok(())
        }
    }

    fn add_to_window(
        &mut self,
        key: &K,
        w: TimeWindow,
        value: T,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        if let Some(kv) = &mut self.kv {
            let stored: Option<C::Acc> = kv.kv.sub_get(kv.windows, key, &w)?;
            let created = stored.is_none();
            let mut acc = stored.unwrap_or_else(|| self.contents.create());
            self.contents.add(&mut acc, value);
            kv.kv.sub_put(kv.windows, key, &w, &acc)?;
            if created {
                self.register(key, w);
            }
            if w.max_timestamp() <= self.watermark {
                self.emit_window(key, w, &acc, out)?;
            }
            return Ok(());
        }
        let k = (key.clone(), w);
        match self.windows.get_mut(&k) {
            Some(acc) => self.contents.add(acc, value),
            None => {
                let mut acc = self.contents.create();
                self.contents.add(&mut acc, value);
                self.windows.insert(k, acc);
                self.register(key, w);
            }
        }
        if w.max_timestamp() <= self.watermark {
            // Late but within the allowed lateness: fire again with the update, as Flink's
            // event-time trigger does.
            let k = (key.clone(), w);
            if let Some(acc) = self.windows.remove(&k) {
                let r = self.emit_window(key, w, &acc, out);
                self.windows.insert(k, acc);
                r?;
            }
        }
        Ok(())
    }

    fn process_fixed(
        &mut self,
        key: K,
        rec: Record<T>,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        if let WindowAssigner::Tumbling { size, offset } = self.assigner {
            let start = super::window_start(rec.ts, offset, size);
            let w = TimeWindow::new(start, start + size);
            if self.is_late(&w) {
                return self.late(rec, out);
            }
            return self.add_to_window(&key, w, rec.value, out);
        }
        let mut live = Vec::new();
        self.assigner.assign(rec.ts, |w| live.push(w));
        live.retain(|w| !self.is_late(w));
        let Some(last) = live.pop() else {
            return self.late(rec, out);
        };
        for w in live {
            self.add_to_window(&key, w, rec.value.clone(), out)?;
        }
        self.add_to_window(&key, last, rec.value, out)
    }

    fn process_session(
        &mut self,
        key: K,
        rec: Record<T>,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        let mut new_w = TimeWindow::new(rec.ts, rec.ts);
        self.assigner.assign(rec.ts, |w| new_w = w);
        if self.is_late(&new_w) {
            return self.late(rec, out);
        }
        let mut list = match &mut self.kv {
            Some(kv) => kv
                .kv
                .get_raw::<Vec<(TimeWindow, C::Acc)>>(kv.sessions, &key)?
                .unwrap_or_default(),
            None => self.sessions.remove(&key).unwrap_or_default(),
        };
        let mut acc = self.contents.create();
        self.contents.add(&mut acc, rec.value);
        let mut merged = new_w;
        let mut keep = Vec::with_capacity(list.len() + 1);
        for (w, a) in list.drain(..) {
            if w.intersects(&merged) {
                merged = merged.cover(&w);
                self.contents.merge(&mut acc, a);
            } else {
                keep.push((w, a));
            }
        }
        // A merge can bridge to windows that did not touch the new record's own window.
        while let Some(pos) = keep.iter().position(|(w, _)| w.intersects(&merged)) {
            let (w, a) = keep.swap_remove(pos);
            merged = merged.cover(&w);
            self.contents.merge(&mut acc, a);
        }
        self.register(&key, merged);
        if merged.max_timestamp() <= self.watermark {
            self.emit_window(&key, merged, &acc, out)?;
        }
        keep.push((merged, acc));
        match &mut self.kv {
            Some(kv) => kv.kv.put_raw(kv.sessions, &key, &keep)?,
            None => {
                self.sessions.insert(key, keep);
            }
        }
        Ok(())
    }

    fn fire_timer(
        &mut self,
        t: i64,
        key: K,
        w: TimeWindow,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        let is_fire = t == w.max_timestamp();
        let is_cleanup = t == self.cleanup_time(&w);
        if self.kv.is_some() {
            return self.fire_timer_kv(is_fire, is_cleanup, key, w, out);
        }
        if self.assigner.is_merging() {
            let Some(list) = self.sessions.get_mut(&key) else {
                return Ok(());
            };
            let Some(pos) = list.iter().position(|(x, _)| *x == w) else {
                return Ok(());
            };
            if is_cleanup {
                let (_, acc) = list.swap_remove(pos);
                if list.is_empty() {
                    self.sessions.remove(&key);
                }
                if is_fire {
                    self.emit_window(&key, w, &acc, out)?;
                }
            } else if is_fire {
                let (_, acc) = list.swap_remove(pos);
                let r = self.emit_window(&key, w, &acc, out);
                if let Some(list) = self.sessions.get_mut(&key) {
                    list.push((w, acc));
                }
                r?;
            }
        } else {
            let k = (key, w);
            if is_cleanup {
                if let Some(acc) = self.windows.remove(&k)
                    && is_fire
                {
                    self.emit_window(&k.0, w, &acc, out)?;
                }
            } else if is_fire && let Some(acc) = self.windows.remove(&k) {
                let r = self.emit_window(&k.0, w, &acc, out);
                self.windows.insert(k, acc);
                r?;
            }
        }
        Ok(())
    }

    /// [`Self::fire_timer`] for contents in a serialized store.
    fn fire_timer_kv(
        &mut self,
        is_fire: bool,
        is_cleanup: bool,
        key: K,
        w: TimeWindow,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        let Some(kv) = &mut self.kv else {
            return Ok(());
        };
        if self.assigner.is_merging() {
            let Some(mut list) = kv
                .kv
                .get_raw::<Vec<(TimeWindow, C::Acc)>>(kv.sessions, &key)?
            else {
                return Ok(());
            };
            let Some(pos) = list.iter().position(|(x, _)| *x == w) else {
                return Ok(());
            };
            if is_cleanup {
                let (_, acc) = list.swap_remove(pos);
                if list.is_empty() {
                    kv.kv.clear(kv.sessions, &key)?;
                } else {
                    kv.kv.put_raw(kv.sessions, &key, &list)?;
                }
                if is_fire {
                    self.emit_window(&key, w, &acc, out)?;
                }
            } else if is_fire {
                let acc = list[pos].1.clone();
                self.emit_window(&key, w, &acc, out)?;
            }
            return Ok(());
        }
        if !is_fire && !is_cleanup {
            return Ok(());
        }
        let Some(acc) = kv.kv.sub_get::<TimeWindow, C::Acc>(kv.windows, &key, &w)? else {
            return Ok(());
        };
        if is_cleanup {
            kv.kv.sub_delete(kv.windows, &key, &w)?;
        }
        if is_fire {
            self.emit_window(&key, w, &acc, out)?;
        }
        Ok(())
    }

    /// Opens the serialized store when the job has one, rebuilding the timers of the windows
    /// a native snapshot restored.
    fn open_store(&mut self, init: &crate::operator::OperatorInit) -> Result<(), OperatorError> {
        let native = init.restored.as_ref().map_or(&[][..], |r| &r.native[..]);
        let KeyedStateBackend::Kv(mut kv) = KeyedStateBackend::<K>::open(init, native)? else {
            return Ok(());
        };
        let windows = kv.register(WINDOWS, StateKind::Multi, None)?;
        let sessions = kv.register(SESSIONS, StateKind::Value, None)?;
        let mut restored: Vec<(K, TimeWindow)> = Vec::new();
        if !native.is_empty() {
            kv.for_each(windows, &mut |k, sub, _| {
                restored.push((decode(WINDOWS, k)?, decode(WINDOWS, sub)?));
                Ok(())
            })?;
            kv.for_each(sessions, &mut |k, _, v| {
                let key: K = decode(SESSIONS, k)?;
                let list: Vec<(TimeWindow, C::Acc)> = decode(SESSIONS, v)?;
                restored.extend(list.into_iter().map(|(w, _)| (key.clone(), w)));
                Ok(())
            })?;
        }
        for (k, w) in restored {
            self.register(&k, w);
        }
        self.kv = Some(KvWindows {
            kv,
            windows,
            sessions,
        });
        Ok(())
    }

    /// Keys × windows currently held (on the heap; a serialized store does not count them).
    pub fn window_count(&self) -> usize {
        self.windows.len() + self.sessions.values().map(Vec::len).sum::<usize>()
    }
}

impl<K: Key, T: Data, C: WindowContents<K, T>> Operator<T, WindowOutput<C::Out, T>>
    for WindowOperator<K, T, C>
{
    fn open(&mut self, init: &crate::operator::OperatorInit) -> Result<(), OperatorError> {
        self.clock = Some(init.clock.clone());
        self.open_store(init)
    }

    #[inline]
    fn process(
        &mut self,
        mut rec: Record<T>,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        if self.processing_time {
            // Assigned by arrival time; the record's own event time is not used.
            rec.ts = self.clock.as_ref().map_or(0, |c| c.now_ms());
        } else if rec.ts == NO_TIMESTAMP {
            return Err(OperatorError::User(
                "a record reached an event-time window without a timestamp: give the source a \
                 WatermarkStrategy with a timestamp assigner (or use a source that sets event time)"
                    .into(),
            ));
        }
        let key = (self.key_fn)(&rec.value);
        if self.assigner.is_merging() {
            self.process_session(key, rec, out)
        } else {
            self.process_fixed(key, rec, out)
        }
    }

    fn on_watermark(
        &mut self,
        wm: i64,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        if self.processing_time || wm <= self.watermark {
            return out.emit_watermark(wm);
        }
        self.advance(wm, out)?;
        out.emit_watermark(wm)
    }

    fn on_processing_time(
        &mut self,
        now: i64,
        out: &mut dyn Output<WindowOutput<C::Out, T>>,
    ) -> Result<(), OperatorError> {
        if self.processing_time && now > self.watermark {
            self.advance(now, out)?;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &SnapshotContext) -> Result<OperatorSnapshot, OperatorError> {
        if let Some(kv) = &mut self.kv {
            let now = self.clock.as_ref().map_or(0, |c| c.now_ms());
            return Ok(OperatorSnapshot {
                keyed: Some(
                    kv.kv
                        .snapshot(ctx.checkpoint_id, ctx.kind.is_savepoint(), now)?,
                ),
                operator: Vec::new(),
            });
        }
        // The copy is the synchronous part; encoding happens on the snapshot writer.
        let windows: Vec<((K, TimeWindow), C::Acc)> = self
            .windows
            .iter()
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        let sessions: SessionsCopy<K, C::Acc> = self
            .sessions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(OperatorSnapshot {
            keyed: Some(Box::new(move |w: &mut KeyedSnapshotWriter| {
                for ((k, win), acc) in &windows {
                    w.put(WINDOWS, k, &(win, acc))?;
                }
                for (k, list) in &sessions {
                    w.put(SESSIONS, k, list)?;
                }
                Ok(())
            })),
            operator: Vec::new(),
        })
    }

    fn restore_state(&mut self, state: RestoredState) -> Result<(), OperatorError> {
        for e in state.keyed {
            let key: K = decode(&e.state, &e.key)?;
            match e.state.as_str() {
                WINDOWS => {
                    let (w, acc): (TimeWindow, C::Acc) = decode(WINDOWS, &e.value)?;
                    self.register(&key, w);
                    match &mut self.kv {
                        Some(kv) => kv.kv.sub_put(kv.windows, &key, &w, &acc)?,
                        None => {
                            self.windows.insert((key, w), acc);
                        }
                    }
                }
                SESSIONS => {
                    let list: Vec<(TimeWindow, C::Acc)> = decode(SESSIONS, &e.value)?;
                    for (w, _) in &list {
                        self.register(&key, *w);
                    }
                    match &mut self.kv {
                        Some(kv) => kv.kv.put_raw(kv.sessions, &key, &list)?,
                        None => {
                            self.sessions.insert(key, list);
                        }
                    }
                }
                other => {
                    return Err(OperatorError::State {
                        name: other.to_string(),
                        message:
                            "not a window operator's state; was this uid given to another operator?"
                                .into(),
                    });
                }
            }
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, id: u64) -> Result<(), OperatorError> {
        if let Some(kv) = &mut self.kv {
            kv.kv.checkpoint_complete(id);
        }
        Ok(())
    }
}

/// A copy of the session windows of every key, taken at a barrier.
type SessionsCopy<K, A> = Vec<(K, Vec<(TimeWindow, A)>)>;

/// State names of the window operator in snapshots.
const WINDOWS: &str = "_window/contents";
const SESSIONS: &str = "_window/sessions";
