//! Keyed state: the handles user functions hold ([`ValueState`], [`ListState`], [`MapState`]),
//! time-to-live, and the heap backend that stores the values of every key of one subtask.
//!
//! A handle is a name plus a cached slot number: it is cheap to clone into every subtask and
//! resolves its table on first use, so functions need no registration step. Values live in
//! per-state tables keyed by the record key; with a TTL each value carries the processing time
//! it was last written (or read), and an expired value is never returned.

mod heap;

pub use heap::{KeyedStateBackend, StateTable};

use crate::error::OperatorError;
use crate::key::{Key, StateValue};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

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
        backend: &'b mut KeyedStateBackend<K>,
    ) -> Result<&'b mut StateTable<K, V>, OperatorError> {
        let mut slot = self.slot.get();
        if slot == UNRESOLVED {
            slot = backend.register::<V>(&self.name, self.ttl)?;
            self.slot.set(slot);
        }
        backend.table::<V>(slot)
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
        let (b, key, now) = ctx.state_parts();
        Ok(self.h.table::<K, T>(b)?.get(key, now).cloned())
    }

    /// Sets the current key's value.
    pub fn set<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        value: T,
    ) -> Result<(), OperatorError> {
        let (b, key, now) = ctx.state_parts();
        self.h.table::<K, T>(b)?.put(key.clone(), value, now);
        Ok(())
    }

    /// Removes the current key's value.
    pub fn clear<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Result<(), OperatorError> {
        let (b, key, _) = ctx.state_parts();
        self.h.table::<K, T>(b)?.remove(key);
        Ok(())
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
        let (b, key, now) = ctx.state_parts();
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
        let (b, key, now) = ctx.state_parts();
        let t = self.h.table::<K, Vec<(T, i64)>>(b)?;
        let ttl = t.ttl();
        let Some(list) = t.get_mut_raw(key) else {
            return Ok(Vec::new());
        };
        if let Some(ttl) = ttl {
            list.retain(|(_, stamp)| stamp + ttl.ttl_ms() > now);
            if ttl.update == TtlUpdate::OnReadAndWrite {
                list.iter_mut().for_each(|(_, s)| *s = now);
            }
        }
        let out = list.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>();
        if out.is_empty() {
            t.remove(key);
        }
        Ok(out)
    }

    /// Replaces the current key's list.
    pub fn update<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        values: Vec<T>,
    ) -> Result<(), OperatorError> {
        let (b, key, now) = ctx.state_parts();
        let t = self.h.table::<K, Vec<(T, i64)>>(b)?;
        if values.is_empty() {
            t.remove(key);
        } else {
            t.put(
                key.clone(),
                values.into_iter().map(|v| (v, now)).collect(),
                now,
            );
        }
        Ok(())
    }

    /// Removes the current key's list.
    pub fn clear<K: Key>(&self, ctx: &mut impl StateAccess<K>) -> Result<(), OperatorError> {
        let (b, key, _) = ctx.state_parts();
        self.h.table::<K, Vec<(T, i64)>>(b)?.remove(key);
        Ok(())
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

    /// The value under `k` for the current key.
    pub fn get<K: Key>(
        &self,
        ctx: &mut impl StateAccess<K>,
        k: &UK,
    ) -> Result<Option<UV>, OperatorError> {
        let (b, key, now) = ctx.state_parts();
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
        let (b, key, now) = ctx.state_parts();
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
        let (b, key, _) = ctx.state_parts();
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
        let (b, key, now) = ctx.state_parts();
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
        let (b, key, _) = ctx.state_parts();
        self.h.table::<K, MapEntries<UK, UV>>(b)?.remove(key);
        Ok(())
    }
}
