//! The heap state backend: one hash table per named state, owned by one subtask's keyed
//! operator and accessed only from its thread.

use super::{TtlConfig, TtlUpdate};
use crate::checkpoint::{KeyedSnapshotFn, KeyedSnapshotWriter, StateEntry, decode};
use crate::error::OperatorError;
use crate::key::{Key, StateValue, key_group};
use rustc_hash::FxHashMap;
use std::any::Any;
use std::collections::HashMap;

type EntriesFn = KeyedSnapshotFn;

/// The values of one named state for every key of a subtask.
pub struct StateTable<K, V> {
    name: String,
    ttl: Option<TtlConfig>,
    map: FxHashMap<K, (V, i64)>,
}

impl<K: Key, V: StateValue> StateTable<K, V> {
    fn new(name: &str, ttl: Option<TtlConfig>) -> Self {
        Self {
            name: name.to_string(),
            ttl,
            map: FxHashMap::default(),
        }
    }

    /// The state's TTL.
    pub fn ttl(&self) -> Option<TtlConfig> {
        self.ttl
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of keys with a value (expired ones included until they are touched).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The live value of `key`; an expired value is removed and not returned.
    pub fn get(&mut self, key: &K, now: i64) -> Option<&V> {
        let ttl = self.ttl;
        let expired = match (self.map.get_mut(key), ttl) {
            (None, _) => return None,
            (Some(_), None) => false,
            (Some((_, stamp)), Some(ttl)) => {
                if *stamp + ttl.ttl_ms() <= now {
                    true
                } else {
                    if ttl.update == TtlUpdate::OnReadAndWrite {
                        *stamp = now;
                    }
                    false
                }
            }
        };
        if expired {
            self.map.remove(key);
            return None;
        }
        self.map.get(key).map(|(v, _)| v)
    }

    /// The stored value without TTL checks (for states whose elements expire individually).
    pub fn get_mut_raw(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    /// Resets the age of `key`'s value.
    pub fn touch(&mut self, key: &K, now: i64) {
        if let Some((_, s)) = self.map.get_mut(key) {
            *s = now;
        }
    }

    /// Sets `key`'s value.
    pub fn put(&mut self, key: K, value: V, now: i64) {
        self.map.insert(key, (value, now));
    }

    /// Removes `key`'s value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|(v, _)| v)
    }

    /// Drops every expired value (run before snapshots so they are never persisted).
    pub fn purge_expired(&mut self, now: i64) {
        if let Some(ttl) = self.ttl {
            self.map.retain(|_, (_, stamp)| *stamp + ttl.ttl_ms() > now);
        }
    }

    /// Iterates over all entries with their last-update time.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V, i64)> {
        self.map.iter().map(|(k, (v, s))| (k, v, *s))
    }
}

trait ErasedTable: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn name(&self) -> &str;
    fn len(&self) -> usize;
    fn snapshot(&self, now: i64) -> EntriesFn;
}

impl<K: Key, V: StateValue> ErasedTable for StateTable<K, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn snapshot(&self, now: i64) -> EntriesFn {
        // The copy is the synchronous part of the snapshot; serialising it is not.
        let ttl = self.ttl;
        let live: Vec<(K, V, i64)> = self
            .map
            .iter()
            .filter(|(_, (_, stamp))| ttl.is_none_or(|t| stamp + t.ttl_ms() > now))
            .map(|(k, (v, s))| (k.clone(), v.clone(), *s))
            .collect();
        let name = self.name.clone();
        Box::new(move |w: &mut KeyedSnapshotWriter| {
            for (k, v, stamp) in &live {
                w.put(&name, k, &(v, stamp))?;
            }
            Ok(())
        })
    }
}

/// All keyed state of one subtask of one operator, on the heap.
pub struct HeapBackend<K> {
    tables: Vec<Box<dyn ErasedTable>>,
    /// Restored entries of states no handle has asked for yet: typed on first access, and
    /// carried into snapshots untouched until then.
    pending: HashMap<String, Vec<StateEntry>>,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<K: Key> Default for HeapBackend<K> {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            pending: HashMap::new(),
            _k: std::marker::PhantomData,
        }
    }
}

impl<K: Key> HeapBackend<K> {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// The slot of the state `name`, creating it on first use.
    pub fn register<V: StateValue>(
        &mut self,
        name: &str,
        ttl: Option<TtlConfig>,
    ) -> Result<u32, OperatorError> {
        if let Some(i) = self.tables.iter().position(|t| t.name() == name) {
            self.table::<V>(i as u32)?;
            return Ok(i as u32);
        }
        let mut table = StateTable::<K, V>::new(name, ttl);
        for e in self.pending.remove(name).unwrap_or_default() {
            let key: K = decode(name, &e.key)?;
            let (value, stamp): (V, i64) = decode(name, &e.value)?;
            table.map.insert(key, (value, stamp));
        }
        self.tables.push(Box::new(table));
        Ok((self.tables.len() - 1) as u32)
    }

    /// The typed table in `slot`.
    pub fn table<V: StateValue>(
        &mut self,
        slot: u32,
    ) -> Result<&mut StateTable<K, V>, OperatorError> {
        let t = self
            .tables
            .get_mut(slot as usize)
            .ok_or_else(|| OperatorError::State {
                name: format!("#{slot}"),
                message: "no such state slot".into(),
            })?;
        let name = t.name().to_string();
        t.as_any_mut().downcast_mut::<StateTable<K, V>>().ok_or_else(|| OperatorError::State {
            name,
            message: format!(
                "registered with another value type than {}; each state name must keep one type",
                std::any::type_name::<V>()
            ),
        })
    }

    /// Number of keys holding a value, per state.
    pub fn sizes(&self) -> Vec<(String, usize)> {
        self.tables
            .iter()
            .map(|t| (t.name().to_string(), t.len()))
            .collect()
    }

    /// A copy of all state for a checkpoint, serialised by key group when the returned
    /// function runs (off the task thread). Expired values are left out.
    pub fn snapshot(&self, max_parallelism: u32, now: i64) -> KeyedSnapshotFn {
        let parts: Vec<EntriesFn> = self.tables.iter().map(|t| t.snapshot(now)).collect();
        let pending: Vec<StateEntry> = self.pending.values().flatten().cloned().collect();
        Box::new(move |w: &mut KeyedSnapshotWriter| {
            for part in parts {
                part(w)?;
            }
            for e in pending {
                let key: K = decode(&e.state, &e.key)?;
                w.put_entry(key_group(&key, max_parallelism), &e)?;
            }
            Ok(())
        })
    }

    /// Takes restored entries; each state picks its own up when first used.
    pub fn restore(&mut self, entries: Vec<StateEntry>) {
        for e in entries {
            self.pending.entry(e.state.clone()).or_default().push(e);
        }
    }
}
