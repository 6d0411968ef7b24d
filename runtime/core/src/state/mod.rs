//! Keyed state: the handles user functions hold ([`ValueState`], [`ListState`], [`MapState`]),
//! time-to-live, and the backends that store the values of every key of one subtask — the heap
//! (the default: typed tables) or a serialized key/value store from a leaf crate (RocksDB),
//! chosen when the operator opens from `JobSettings::state_backend`.
//!
//! A handle is a name plus a cached slot number: it is cheap to clone into every subtask and
//! resolves its table on first use, so functions need no registration step. Values live in
//! per-state tables keyed by the record key; with a TTL each value carries the processing time
//! it was last written (or read), and an expired value is never returned.

mod heap;
pub mod kv;

pub use heap::{HeapBackend, StateTable};
pub use kv::{
    KvBackend, KvError, KvScope, KvSnapshot, KvStore, KvStoreFactory, StateBackendContext,
    StateBackendFactory, StateKind,
};

use crate::checkpoint::{KeyedSnapshotFn, NativeState, StateEntry};
use crate::error::OperatorError;
use crate::key::{Key, StateValue, key_group_range};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

/// All keyed state of one subtask of one operator, in the backend the job chose.
pub enum KeyedStateBackend<K> {
    /// Typed tables on the heap.
    Heap(HeapBackend<K>),
    /// A serialized key/value store.
    Kv(KvBackend<K>),
}

impl<K: Key> Default for KeyedStateBackend<K> {
    fn default() -> Self {
        Self::Heap(HeapBackend::new())
    }
}

impl<K: Key> KeyedStateBackend<K> {
    /// An empty heap backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// The backend an operator subtask opens: the job's serialized backend if it has one
    /// (restored from `native` snapshots when given), else the heap.
    pub fn open(
        init: &crate::operator::OperatorInit,
        native: &[NativeState],
    ) -> Result<Self, OperatorError> {
        let Some(ctx) = &init.state_backend else {
            return Ok(Self::new());
        };
        let key_groups = key_group_range(init.subtask, init.max_parallelism, init.parallelism);
        let store = ctx.factory.open(&KvScope {
            job: &ctx.job,
            uid: &init.uid,
            subtask: init.subtask,
            max_parallelism: init.max_parallelism,
            key_groups: key_groups.clone(),
            restore: native,
            storage: ctx.storage.as_ref(),
            metrics: &init.metrics,
        })?;
        Ok(Self::Kv(KvBackend::new(
            store,
            init.max_parallelism,
            key_groups,
            native,
        )))
    }

    /// Number of keys holding a value, per state (heap only; a serialized store does not
    /// count its keys).
    pub fn sizes(&self) -> Vec<(String, usize)> {
        match self {
            Self::Heap(h) => h.sizes(),
            Self::Kv(_) => Vec::new(),
        }
    }

    /// The synchronous part of a snapshot, serialised later off the task thread. Savepoints
    /// are always canonical; checkpoints of a serialized store may be native (incremental).
    pub fn snapshot(
        &mut self,
        ctx: &crate::checkpoint::SnapshotContext,
        now: i64,
    ) -> Result<KeyedSnapshotFn, OperatorError> {
        match self {
            Self::Heap(h) => Ok(h.snapshot(ctx.max_parallelism, now)),
            Self::Kv(kv) => kv.snapshot(ctx.checkpoint_id, ctx.kind.is_savepoint(), now),
        }
    }

    /// Takes restored canonical entries.
    pub fn restore(&mut self, entries: Vec<StateEntry>) -> Result<(), OperatorError> {
        match self {
            Self::Heap(h) => {
                h.restore(entries);
                Ok(())
            }
            Self::Kv(kv) => kv.restore(entries),
        }
    }

    /// Checkpoint `id` completed.
    pub fn checkpoint_complete(&mut self, id: u64) {
        if let Self::Kv(kv) = self {
            kv.checkpoint_complete(id);
        }
    }
}

/// When the age of a value with a TTL is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlUpdate {
    /// On creation and every write (Flink's `OnCreateAndWrite`).
    OnCreateAndWrite,
    /// Also on every read (Flink's `OnReadAndWrite`).
    OnReadAndWrite,
}

/// Time-to-live of state values, in processing time. Expired values are never returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlConfig {
    /// How long a value lives after its last update.
    pub ttl: Duration,
    /// What counts as an update.
    pub update: TtlUpdate,
}

impl TtlConfig {
    /// Values expire `ttl` after they were created or last written.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            update: TtlUpdate::OnCreateAndWrite,
        }
    }

    /// Reads also refresh the age.
    pub fn refresh_on_read(mut self) -> Self {
        self.update = TtlUpdate::OnReadAndWrite;
        self
    }

    pub(crate) fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }
}

/// Gives state handles the backend and the current key.
pub trait StateAccess<K: Key> {
    /// The backend, the current key, and processing time now.
    fn state_parts(&mut self) -> (&mut KeyedStateBackend<K>, &K, i64);
}

const UNRESOLVED: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Handle {
    name: String,
    ttl: Option<TtlConfig>,
    slot: Cell<u32>,
}

impl Handle {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ttl: None,
            slot: Cell::new(UNRESOLVED),
        }
    }

    fn table<'b, K: Key, V: StateValue>(
        &self,
        backend: &'b mut HeapBackend<K>,
    ) -> Result<&'b mut StateTable<K, V>, OperatorError> {
        let mut slot = self.slot.get();
        if slot == UNRESOLVED {
            slot = backend.register::<V>(&self.name, self.ttl)?;
            self.slot.set(slot);
        }
        backend.table::<V>(slot)
    }

    fn kv<K: Key>(&self, backend: &mut KvBackend<K>) -> Result<u32, OperatorError> {
        let mut slot = self.slot.get();
        if slot == UNRESOLVED {
            slot = backend.register(&self.name, StateKind::Value, self.ttl)?;
            self.slot.set(slot);
        }
        Ok(slot)
    }
}

/// A single value per key.
#[derive(Debug, Clone)]
pub struct ValueState<T> {
    h: Handle,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateValue> ValueState<T> {
    /// A value state named `name` (names identify state across restores).
    pub fn new(name: &str) -> Self {
        Self {
            h: Handle::new(name),
            _t: PhantomData,
        }
    }

    /// Gives the values a time-to-live.
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.h.ttl = Some(ttl);
        self
    }

    /// The current key's value, if any (and not expired).
    pub fn get<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Result<Option<T>, OperatorError> {
        match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, now) => {
                Ok(self.h.table::<K, T>(b)?.get(key, now).cloned())
            }
            (KeyedStateBackend::Kv(b), key, now) => {
                let slot = self.h.kv(b)?;
                b.value_get(slot, key, now)
            }
        }
    }

    /// Sets the current key's value.
    pub fn set<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        value: T,
    ) -> Result<(), OperatorError> {
        match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, now) => {
                self.h.table::<K, T>(b)?.put(key.clone(), value, now);
                Ok(())
            }
            (KeyedStateBackend::Kv(b), key, now) => {
                let slot = self.h.kv(b)?;
                b.put_raw(slot, key, &(value, now))
            }
        }
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Result<(), OperatorError> {
        match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, _) => {
                self.h.table::<K, T>(b)?.remove(key);
                Ok(())
            }
            (KeyedStateBackend::Kv(b), key, _) => {
                let slot = self.h.kv(b)?;
                b.clear(slot, key)
            }
        }
    }
}

/// A list of values per key.
#[derive(Debug, Clone)]
pub struct ListState<T> {
    h: Handle,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateValue> ListState<T> {
    /// A list state named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            h: Handle::new(name),
            _t: PhantomData,
        }
    }

    /// Gives each element a time-to-live.
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.h.ttl = Some(ttl);
        self
    }

    /// Appends to the current key's list.
    pub fn add<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        value: T,
    ) -> Result<(), OperatorError> {
        let (b, key, now) = match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, now) => (b, key, now),
            (KeyedStateBackend::Kv(b), key, now) => {
                let slot = self.h.kv(b)?;
                let mut list = b
                    .get_raw::<(Vec<(T, i64)>, i64)>(slot, key)?
                    .map(|(l, _)| l)
                    .unwrap_or_default();
                list.push((value, now));
                return b.put_raw(slot, key, &(list, now));
            }
        };
        let t = self.h.table::<K, Vec<(T, i64)>>(b)?;
        let ttl = t.ttl();
        match t.get_mut_raw(key) {
            Some(list) => list.push((value, now)),
            None => t.put(key.clone(), vec![(value, now)], now),
        }
        if ttl.is_some() {
            t.touch(key, now);
        }
        Ok(())
    }

    /// The current key's live elements, oldest first.
    pub fn get<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Result<Vec<T>, OperatorError> {
        let (b, key, now) = match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, now) => (b, key, now),
            (KeyedStateBackend::Kv(b), key, now) => {
                let slot = self.h.kv(b)?;
                let Some((mut list, stamp)) = b.get_raw::<(Vec<(T, i64)>, i64)>(slot, key)? else {
                    return Ok(Vec::new());
                };
                let before = list.len();
                let ttl = b.ttl(slot);
                Self::live(&mut list, ttl, now);
                if list.is_empty() {
                    b.clear(slot, key)?;
                } else if list.len() != before
                    || ttl.is_some_and(|t| t.update == TtlUpdate::OnReadAndWrite)
                {
                    b.put_raw(slot, key, &(&list, stamp))?;
                }
                return Ok(list.into_iter().map(|(v, _)| v).collect());
            }
        };
        let t = self.h.table::<K, Vec<(T, i64)>>(b)?;
        let ttl = t.ttl();
        let Some(list) = t.get_mut_raw(key) else {
            return Ok(Vec::new());
        };
        Self::live(list, ttl, now);
        let out = list.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>();
        if out.is_empty() {
            t.remove(key);
        }
        Ok(out)
    }

    /// Drops expired elements and refreshes the others where reads count as updates.
    fn live(list: &mut Vec<(T, i64)>, ttl: Option<TtlConfig>, now: i64) {
        if let Some(ttl) = ttl {
            list.retain(|(_, stamp)| stamp + ttl.ttl_ms() > now);
            if ttl.update == TtlUpdate::OnReadAndWrite {
                list.iter_mut().for_each(|(_, s)| *s = now);
            }
        }
    }

    /// Replaces the current key's list.
    pub fn update<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        values: Vec<T>,
    ) -> Result<(), OperatorError> {
        let (_, _, now) = ctx.state_parts();
        let list: Vec<(T, i64)> = values.into_iter().map(|v| (v, now)).collect();
        match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, now) => {
                let t = self.h.table::<K, Vec<(T, i64)>>(b)?;
                if list.is_empty() {
                    t.remove(key);
                } else {
                    t.put(key.clone(), list, now);
                }
                Ok(())
            }
            (KeyedStateBackend::Kv(b), key, now) => {
                let slot = self.h.kv(b)?;
                if list.is_empty() {
                    b.clear(slot, key)
                } else {
                    b.put_raw(slot, key, &(list, now))
                }
            }
        }
    }

    /// Removes the current key's list.
    pub fn clear<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Result<(), OperatorError> {
        match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, _) => {
                self.h.table::<K, Vec<(T, i64)>>(b)?.remove(key);
                Ok(())
            }
            (KeyedStateBackend::Kv(b), key, _) => {
                let slot = self.h.kv(b)?;
                b.clear(slot, key)
            }
        }
    }
}

/// A map per key; with a TTL each entry expires on its own.
#[derive(Debug, Clone)]
pub struct MapState<UK, UV> {
    h: Handle,
    _t: PhantomData<fn() -> (UK, UV)>,
}

type MapEntries<UK, UV> = BTreeMap<UK, (UV, i64)>;

impl<UK: StateValue + Ord, UV: StateValue> MapState<UK, UV> {
    /// A map state named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            h: Handle::new(name),
            _t: PhantomData,
        }
    }

    /// Gives each entry a time-to-live.
    pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
        self.h.ttl = Some(ttl);
        self
    }

    fn live(
        map: &mut MapEntries<UK, UV>,
        ttl: Option<TtlConfig>,
        now: i64,
    ) -> &mut MapEntries<UK, UV> {
        if let Some(ttl) = ttl {
            map.retain(|_, (_, stamp)| *stamp + ttl.ttl_ms() > now);
        }
        map
    }

    fn kv<K: Key>(&self, backend: &mut KvBackend<K>) -> Result<u32, OperatorError> {
        let mut slot = self.h.slot.get();
        if slot == UNRESOLVED {
            slot = backend.register_map::<UK, UV>(&self.h.name, self.h.ttl)?;
            self.h.slot.set(slot);
        }
        Ok(slot)
    }

    /// The value under `k` for the current key.
    pub fn get<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        k: &UK,
    ) -> Result<Option<UV>, OperatorError> {
        let (b, key, now) = match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, now) => (b, key, now),
            (KeyedStateBackend::Kv(b), key, now) => {
                let slot = self.kv(b)?;
                let Some((v, stamp)) = b.sub_get::<UK, (UV, i64)>(slot, key, k)? else {
                    return Ok(None);
                };
                if let Some(ttl) = b.ttl(slot) {
                    if stamp + ttl.ttl_ms() <= now {
                        b.sub_delete(slot, key, k)?;
                        return Ok(None);
                    }
                    if ttl.update == TtlUpdate::OnReadAndWrite {
                        b.sub_put(slot, key, k, &(&v, now))?;
                    }
                }
                return Ok(Some(v));
            }
        };
        let t = self.h.table::<K, MapEntries<UK, UV>>(b)?;
        let ttl = t.ttl();
        let Some(map) = t.get_mut_raw(key) else {
            return Ok(None);
        };
        let Some((v, stamp)) = map.get_mut(k) else {
            return Ok(None);
        };
        if let Some(ttl) = ttl {
            if *stamp + ttl.ttl_ms() <= now {
                map.remove(k);
                return Ok(None);
            }
            if ttl.update == TtlUpdate::OnReadAndWrite {
                *stamp = now;
            }
        }
        Ok(Some(v.clone()))
    }

    /// Sets `k` to `v` for the current key.
    pub fn put<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        k: UK,
        v: UV,
    ) -> Result<(), OperatorError> {
        let (b, key, now) = match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, now) => (b, key, now),
            (KeyedStateBackend::Kv(b), key, now) => {
                let slot = self.kv(b)?;
                return b.sub_put(slot, key, &k, &(v, now));
            }
        };
        let t = self.h.table::<K, MapEntries<UK, UV>>(b)?;
        match t.get_mut_raw(key) {
            Some(map) => {
                map.insert(k, (v, now));
            }
            None => t.put(key.clone(), BTreeMap::from([(k, (v, now))]), now),
        }
        Ok(())
    }

    /// Removes `k` for the current key.
    pub fn remove<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        k: &UK,
    ) -> Result<(), OperatorError> {
        let (b, key) = match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, _) => (b, key),
            (KeyedStateBackend::Kv(b), key, _) => {
                let slot = self.kv(b)?;
                return b.sub_delete(slot, key, k);
            }
        };
        let t = self.h.table::<K, MapEntries<UK, UV>>(b)?;
        if let Some(map) = t.get_mut_raw(key) {
            map.remove(k);
            if map.is_empty() {
                t.remove(key);
            }
        }
        Ok(())
    }

    /// The live entries of the current key, in key order.
    pub fn entries<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
    ) -> Result<Vec<(UK, UV)>, OperatorError> {
        let (b, key, now) = match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, now) => (b, key, now),
            (KeyedStateBackend::Kv(b), key, now) => {
                let slot = self.kv(b)?;
                let ttl = b.ttl(slot);
                // Stored order is the order of encoded user keys, not `UK`'s order.
                let mut map: MapEntries<UK, UV> = b
                    .sub_entries::<UK, (UV, i64)>(slot, key)?
                    .into_iter()
                    .collect();
                let before = map.len();
                Self::live(&mut map, ttl, now);
                if map.len() != before {
                    b.clear(slot, key)?;
                    for (k, e) in &map {
                        b.sub_put(slot, key, k, e)?;
                    }
                }
                return Ok(map.into_iter().map(|(k, (v, _))| (k, v)).collect());
            }
        };
        let t = self.h.table::<K, MapEntries<UK, UV>>(b)?;
        let ttl = t.ttl();
        let Some(map) = t.get_mut_raw(key) else {
            return Ok(Vec::new());
        };
        let map = Self::live(map, ttl, now);
        Ok(map
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect())
    }

    /// Whether `k` has a live value for the current key.
    pub fn contains<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        k: &UK,
    ) -> Result<bool, OperatorError> {
        Ok(self.get(ctx, k)?.is_some())
    }

    /// Removes every entry of the current key.
    pub fn clear<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Result<(), OperatorError> {
        match ctx.state_parts() {
            (KeyedStateBackend::Heap(b), key, _) => {
                self.h.table::<K, MapEntries<UK, UV>>(b)?.remove(key);
                Ok(())
            }
            (KeyedStateBackend::Kv(b), key, _) => {
                let slot = self.kv(b)?;
                b.clear(slot, key)
            }
        }
    }
}
