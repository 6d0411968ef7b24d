//! The serialized keyed-state backend: the [`KvStore`] interface a leaf crate implements
//! (RocksDB), the factory a job installs in `JobSettings::state_backend`, the byte layout of
//! stored keys, and [`KvBackend`], which gives state handles and window operators typed access
//! to such a store.
//!
//! Stored keys are `key group (u16, big endian) | name length (u8) | state name | key length
//! (u32, big endian) | bincode key [| bincode user key]`. The key group comes first so that a
//! subtask's key groups are one contiguous range of the store (rescaling scans ranges), and
//! the key is length-prefixed so that the entries of one key — a map state's user keys, a
//! window operator's windows — are exactly those under the key's prefix. Values are bincode,
//! with the TTL stamp last where the state has a TTL, so the canonical snapshot entry of a
//! value or list state is the stored value itself and checkpoints move between backends.

use super::{TtlConfig, TtlUpdate};
use crate::checkpoint::storage::{CheckpointStorage, StorageError};
use crate::checkpoint::{KeyedSnapshotFn, KeyedSnapshotWriter, NativeState, StateEntry, decode};
use crate::error::OperatorError;
use crate::key::{Key, key_group};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

/// A serialized key/value store failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The store itself failed (I/O, corruption, ...).
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What failed, with the fix where there is one.
        message: String,
    },
    /// Reading or writing checkpoint storage failed.
    #[error("checkpoint storage: {0}")]
    Storage(#[from] StorageError),
    /// Encoding or decoding a state value failed.
    #[error(transparent)]
    State(#[from] OperatorError),
}

impl From<KvError> for OperatorError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::State(e) => e,
            e => OperatorError::State {
                name: "backend".into(),
                message: e.to_string(),
            },
        }
    }
}

/// How a state's entries are laid out, which decides how they become canonical entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateKind {
    /// One value per key (value and list states, session windows).
    Value,
    /// One entry per user key; canonically one `BTreeMap<UK, (UV, stamp)>` per key.
    Map,
    /// One entry per sub-key (a window); canonically one entry per sub-key whose value is
    /// `(sub-key, value)`.
    Multi,
}

/// Visits snapshot entries (stored key, stored value) in key order.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), OperatorError> + 'a;

/// Visits the entries of one state as (key, sub-key, value) bytes.
pub type StateVisitor<'a> = dyn FnMut(&[u8], &[u8], &[u8]) -> Result<(), OperatorError> + 'a;

/// Reads every entry of a consistent view of the store, off the task thread.
pub type EntriesFn = Box<dyn FnOnce(&mut EntryVisitor<'_>) -> Result<(), KvError> + Send>;

/// Uploads a native snapshot to checkpoint storage, off the task thread.
pub type NativeFn = Box<dyn FnOnce(&dyn CheckpointStorage) -> Result<NativeState, KvError> + Send>;

/// The synchronous part of a store's snapshot, finished off the task thread.
pub enum KvSnapshot {
    /// All entries, turned into canonical entries (savepoints, full checkpoints).
    Entries(EntriesFn),
    /// The store's own files (incremental checkpoints).
    Native(NativeFn),
}

/// A serialized key/value store holding the keyed state of one operator subtask.
pub trait KvStore: Send {
    /// The value under `key`.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets the value under `key`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError>;
    /// Removes `key`.
    fn delete(&mut self, key: &[u8]) -> Result<(), KvError>;
    /// Visits the entries whose key starts with `prefix`, in key order, while `visit` returns
    /// `true`.
    fn scan(
        &mut self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), KvError>;
    /// Takes the synchronous part of a snapshot for checkpoint `checkpoint_id`: canonical
    /// entries when `canonical` (savepoints, full checkpoints), else the store's own files
    /// where it can.
    fn snapshot(&mut self, checkpoint_id: u64, canonical: bool) -> Result<KvSnapshot, KvError>;
    /// Checkpoint `id` completed: files it uploaded may be referenced by later checkpoints.
    fn checkpoint_complete(&mut self, _id: u64) {}
}

/// Where a store is opened: which subtask of which operator, and what it restores.
pub struct KvScope<'a> {
    /// Job name.
    pub job: &'a str,
    /// Operator uid.
    pub uid: &'a str,
    /// Subtask index.
    pub subtask: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// The key groups this subtask owns.
    pub key_groups: Range<u32>,
    /// Native snapshots to restore from (their key groups overlap `key_groups`).
    pub restore: &'a [NativeState],
    /// The checkpoint storage native snapshots are read from.
    pub storage: Option<&'a Arc<dyn CheckpointStorage>>,
    /// The subtask's counters: a backend reports what its restore did here (they reach
    /// `/metrics` with the operator's other counters).
    pub metrics: &'a crate::metrics::SubtaskMetrics,
}

/// Opens a [`KvStore`] for each keyed operator subtask; installed in
/// `JobSettings::state_backend` by binaries that have a serialized backend.
pub trait KvStoreFactory: Send + Sync + std::fmt::Debug {
    /// The backend's name (`rocksdb`), for messages and snapshots.
    fn name(&self) -> &'static str;
    /// Opens (and restores) the store of one operator subtask.
    fn open(&self, scope: &KvScope<'_>) -> Result<Box<dyn KvStore>, KvError>;
}

/// The keyed state backend a job uses: `None` in `JobSettings` keeps state on the heap.
pub type StateBackendFactory = Arc<dyn KvStoreFactory>;

/// What an operator needs to open its keyed state backend.
#[derive(Clone, Debug)]
pub struct StateBackendContext {
    /// The factory.
    pub factory: StateBackendFactory,
    /// Job name.
    pub job: String,
    /// The job's checkpoint storage (native snapshots are read from it).
    pub storage: Option<Arc<dyn CheckpointStorage>>,
}

/// The longest state name a stored key can carry.
const MAX_NAME: usize = u8::MAX as usize;

/// Appends the stored-key prefix of `(key group, state, key)` to `buf`.
pub fn encode_key_prefix(buf: &mut Vec<u8>, kg: u32, name: &str, key: &[u8]) {
    buf.extend_from_slice(&(kg as u16).to_be_bytes());
    buf.push(name.len() as u8);
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_be_bytes());
    buf.extend_from_slice(key);
}

/// The prefix of every stored key of key group `kg`.
pub fn key_group_prefix(kg: u32) -> [u8; 2] {
    (kg as u16).to_be_bytes()
}

/// A stored key taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct StoredKey<'a> {
    /// Key group.
    pub kg: u32,
    /// State name.
    pub name: &'a str,
    /// The bincode key.
    pub key: &'a [u8],
    /// The bincode user key or window (empty for a value).
    pub sub: &'a [u8],
}

/// Takes a stored key apart; `None` when it is not one.
pub fn decode_stored_key(k: &[u8]) -> Option<StoredKey<'_>> {
    let kg = u16::from_be_bytes(k.get(0..2)?.try_into().ok()?);
    let nlen = *k.get(2)? as usize;
    let name = std::str::from_utf8(k.get(3..3 + nlen)?).ok()?;
    let at = 3 + nlen;
    let klen = u32::from_be_bytes(k.get(at..at + 4)?.try_into().ok()?) as usize;
    let key = k.get(at + 4..at + 4 + klen)?;
    Some(StoredKey {
        kg: u32::from(kg),
        name,
        key,
        sub: &k[at + 4 + klen..],
    })
}

fn encode<T: Serialize + ?Sized>(name: &str, v: &T) -> Result<Vec<u8>, OperatorError> {
    bincode::serialize(v).map_err(|e| OperatorError::State {
        name: name.to_string(),
        message: e.to_string(),
    })
}

/// The TTL stamp at the end of a stored value.
fn stamp_of(v: &[u8]) -> Option<i64> {
    let at = v.len().checked_sub(8)?;
    Some(i64::from_le_bytes(v[at..].try_into().ok()?))
}

#[derive(Debug, Clone)]
struct Registered {
    name: String,
    kind: StateKind,
    ttl: Option<TtlConfig>,
}

/// Keyed state of one operator subtask in a [`KvStore`], with typed access for the state
/// handles and the window operator.
pub struct KvBackend<K> {
    store: Box<dyn KvStore>,
    max_parallelism: u32,
    key_groups: Range<u32>,
    states: Vec<Registered>,
    /// Kinds of states restored from a native snapshot that no handle has asked for yet.
    restored_kinds: BTreeMap<String, StateKind>,
    /// States restored from canonical entries, whose map entries are still one blob per key.
    blobs: BTreeSet<String>,
    buf: Vec<u8>,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<K: Key> KvBackend<K> {
    /// Keyed state in `store` for the key groups `key_groups` of `max_parallelism`.
    pub fn new(
        store: Box<dyn KvStore>,
        max_parallelism: u32,
        key_groups: Range<u32>,
        restored: &[NativeState],
    ) -> Self {
        let restored_kinds = restored
            .iter()
            .flat_map(|n| n.states.iter().cloned())
            .collect();
        Self {
            store,
            max_parallelism,
            key_groups,
            states: Vec::new(),
            restored_kinds,
            blobs: BTreeSet::new(),
            buf: Vec::with_capacity(64),
            _k: std::marker::PhantomData,
        }
    }

    /// The slot of state `name`, registering it on first use.
    pub fn register(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl: Option<TtlConfig>,
    ) -> Result<u32, OperatorError> {
        if let Some(i) = self.states.iter().position(|s| s.name == name) {
            if self.states[i].kind != kind {
                return Err(OperatorError::State {
                    name: name.to_string(),
                    message: "registered as another kind of state; each state name must keep one \
                              kind"
                        .into(),
                });
            }
            return Ok(i as u32);
        }
        if name.len() > MAX_NAME {
            return Err(OperatorError::State {
                name: name.to_string(),
                message: format!("state names are at most {MAX_NAME} bytes long"),
            });
        }
        self.restored_kinds.remove(name);
        self.states.push(Registered {
            name: name.to_string(),
            kind,
            ttl,
        });
        Ok((self.states.len() - 1) as u32)
    }

    /// Registers a map state, splitting restored canonical maps into one entry per user key.
    pub fn register_map<
        UK: Serialize + DeserializeOwned + Ord,
        UV: Serialize + DeserializeOwned,
    >(
        &mut self,
        name: &str,
        ttl: Option<TtlConfig>,
    ) -> Result<u32, OperatorError> {
        let slot = self.register(name, StateKind::Map, ttl)?;
        if self.blobs.remove(name) {
            let mut blobs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for kg in self.key_groups.clone() {
                let mut prefix = key_group_prefix(kg).to_vec();
                prefix.push(name.len() as u8);
                prefix.extend_from_slice(name.as_bytes());
                self.store.scan(&prefix, &mut |k, v| {
                    if decode_stored_key(k).is_some_and(|s| s.sub.is_empty()) {
                        blobs.push((k.to_vec(), v.to_vec()));
                    }
                    true
                })?;
            }
            for (k, v) in blobs {
                type Blob<UK, UV> = (BTreeMap<UK, (UV, i64)>, i64);
                let (map, _): Blob<UK, UV> = decode(name, &v)?;
                for (uk, entry) in &map {
                    let mut key = k.clone();
                    key.extend_from_slice(&encode(name, uk)?);
                    self.store.put(&key, &encode(name, entry)?)?;
                }
                self.store.delete(&k)?;
            }
        }
        Ok(slot)
    }

    /// The TTL of the state in `slot`.
    pub fn ttl(&self, slot: u32) -> Option<TtlConfig> {
        self.states.get(slot as usize).and_then(|s| s.ttl)
    }

    fn key_prefix(&mut self, slot: u32, key: &K) -> Result<(), OperatorError> {
        let name = &self
            .states
            .get(slot as usize)
            .ok_or_else(|| OperatorError::State {
                name: format!("#{slot}"),
                message: "no such state slot".into(),
            })?
            .name;
        self.buf.clear();
        self.buf
            .extend_from_slice(&(key_group(key, self.max_parallelism) as u16).to_be_bytes());
        self.buf.push(name.len() as u8);
        self.buf.extend_from_slice(name.as_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        bincode::serialize_into(&mut self.buf, key).map_err(|e| OperatorError::State {
            name: name.clone(),
            message: e.to_string(),
        })?;
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    fn with_sub<S: Serialize>(&mut self, slot: u32, key: &K, sub: &S) -> Result<(), OperatorError> {
        self.key_prefix(slot, key)?;
        bincode::serialize_into(&mut self.buf, sub).map_err(|e| OperatorError::State {
            name: self.states[slot as usize].name.clone(),
            message: e.to_string(),
        })
    }

    fn name(&self, slot: u32) -> &str {
        self.states.get(slot as usize).map_or("?", |s| &s.name)
    }

    /// The stored value of `key` as stored (with its TTL stamp where it has one).
    pub fn get_raw<S: DeserializeOwned>(
        &mut self,
        slot: u32,
        key: &K,
    ) -> Result<Option<S>, OperatorError> {
        self.key_prefix(slot, key)?;
        match self.store.get(&self.buf)? {
            Some(v) => decode(self.name(slot), &v).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` as `key`'s value.
    pub fn put_raw<S: Serialize>(
        &mut self,
        slot: u32,
        key: &K,
        value: &S,
    ) -> Result<(), OperatorError> {
        let v = encode(self.name(slot), value)?;
        self.key_prefix(slot, key)?;
        self.store.put(&self.buf, &v)?;
        Ok(())
    }

    /// Removes `key`'s value and every entry under it (user keys, windows).
    pub fn clear(&mut self, slot: u32, key: &K) -> Result<(), OperatorError> {
        self.key_prefix(slot, key)?;
        let kind = self.states[slot as usize].kind;
        if kind == StateKind::Value {
            self.store.delete(&self.buf)?;
            return Ok(());
        }
        let mut keys = Vec::new();
        let prefix = self.buf.clone();
        self.store.scan(&prefix, &mut |k, _| {
            keys.push(k.to_vec());
            true
        })?;
        for k in keys {
            self.store.delete(&k)?;
        }
        Ok(())
    }

    /// The live value of a value state with a TTL stamp, expiring or refreshing it.
    pub fn value_get<V: Serialize + DeserializeOwned>(
        &mut self,
        slot: u32,
        key: &K,
        now: i64,
    ) -> Result<Option<V>, OperatorError> {
        let Some((v, stamp)) = self.get_raw::<(V, i64)>(slot, key)? else {
            return Ok(None);
        };
        if let Some(ttl) = self.ttl(slot) {
            if stamp + ttl.ttl_ms() <= now {
                self.clear(slot, key)?;
                return Ok(None);
            }
            if ttl.update == TtlUpdate::OnReadAndWrite {
                self.put_raw(slot, key, &(&v, now))?;
            }
        }
        Ok(Some(v))
    }

    /// The value under sub-key `sub` of `key` (a map entry or a window).
    pub fn sub_get<S: Serialize, V: DeserializeOwned>(
        &mut self,
        slot: u32,
        key: &K,
        sub: &S,
    ) -> Result<Option<V>, OperatorError> {
        self.with_sub(slot, key, sub)?;
        match self.store.get(&self.buf)? {
            Some(v) => decode(self.name(slot), &v).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` under sub-key `sub` of `key`.
    pub fn sub_put<S: Serialize, V: Serialize>(
        &mut self,
        slot: u32,
        key: &K,
        sub: &S,
        value: &V,
    ) -> Result<(), OperatorError> {
        let v = encode(self.name(slot), value)?;
        self.with_sub(slot, key, sub)?;
        self.store.put(&self.buf, &v)?;
        Ok(())
    }

    /// Removes sub-key `sub` of `key`.
    pub fn sub_delete<S: Serialize>(
        &mut self,
        slot: u32,
        key: &K,
        sub: &S,
    ) -> Result<(), OperatorError> {
        self.with_sub(slot, key, sub)?;
        self.store.delete(&self.buf)?;
        Ok(())
    }

    /// Every sub-key of `key` with its value, in stored order.
    pub fn sub_entries<S: DeserializeOwned, V: DeserializeOwned>(
        &mut self,
        slot: u32,
        key: &K,
    ) -> Result<Vec<(S, V)>, OperatorError> {
        self.key_prefix(slot, key)?;
        let prefix = self.buf.clone();
        let mut raw = Vec::new();
        self.store.scan(&prefix, &mut |k, v| {
            if k.len() > prefix.len() {
                raw.push((k[prefix.len()..].to_vec(), v.to_vec()));
            }
            true
        })?;
        let name = self.name(slot);
        raw.iter()
            .map(|(s, v)| Ok((decode(name, s)?, decode(name, v)?)))
            .collect()
    }

    /// Visits every entry of state `slot` in this subtask's key groups as (key, sub-key,
    /// value) bytes; used to rebuild timers after a native restore.
    pub fn for_each(
        &mut self,
        slot: u32,
        visit: &mut StateVisitor<'_>,
    ) -> Result<(), OperatorError> {
        let name = self.name(slot).to_string();
        for kg in self.key_groups.clone() {
            let mut prefix = key_group_prefix(kg).to_vec();
            prefix.push(name.len() as u8);
            prefix.extend_from_slice(name.as_bytes());
            let mut err = None;
            self.store.scan(&prefix, &mut |k, v| {
                let Some(s) = decode_stored_key(k) else {
                    return true;
                };
                if let Err(e) = visit(s.key, s.sub, v) {
                    err = Some(e);
                    return false;
                }
                true
            })?;
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes restored canonical entries: written to the store as they are (the canonical
    /// value of a value or list state is its stored value); map states are split into user
    /// keys when their handle registers.
    pub fn restore(&mut self, entries: Vec<StateEntry>) -> Result<(), OperatorError> {
        for e in entries {
            let key: K = decode(&e.state, &e.key)?;
            let kg = key_group(&key, self.max_parallelism);
            self.buf.clear();
            encode_key_prefix(&mut self.buf, kg, &e.state, &e.key);
            self.store.put(&self.buf, &e.value)?;
            self.blobs.insert(e.state);
        }
        Ok(())
    }

    /// Checkpoint `id` completed.
    pub fn checkpoint_complete(&mut self, id: u64) {
        self.store.checkpoint_complete(id);
    }

    /// The synchronous part of a snapshot; `canonical` for savepoints and full checkpoints.
    pub fn snapshot(
        &mut self,
        checkpoint_id: u64,
        canonical: bool,
        now: i64,
    ) -> Result<KeyedSnapshotFn, OperatorError> {
        let mut kinds: BTreeMap<String, (StateKind, Option<i64>)> = self
            .restored_kinds
            .iter()
            .map(|(n, k)| (n.clone(), (*k, None)))
            .collect();
        for s in &self.states {
            kinds.insert(s.name.clone(), (s.kind, s.ttl.map(|t| t.ttl_ms())));
        }
        match self.store.snapshot(checkpoint_id, canonical)? {
            KvSnapshot::Native(upload) => {
                let states: Vec<(String, StateKind)> =
                    kinds.iter().map(|(n, (k, _))| (n.clone(), *k)).collect();
                Ok(Box::new(move |w: &mut KeyedSnapshotWriter| {
                    let storage = w.storage().cloned().ok_or_else(|| OperatorError::State {
                        name: "snapshot".into(),
                        message: "a native snapshot needs checkpoint storage".into(),
                    })?;
                    let mut native = upload(storage.as_ref())?;
                    native.states = states;
                    w.set_native(native);
                    Ok(())
                }))
            }
            KvSnapshot::Entries(read) => Ok(Box::new(move |w: &mut KeyedSnapshotWriter| {
                let mut canon = Canonicalizer {
                    kinds,
                    now,
                    map: None,
                };
                read(&mut |k, v| canon.entry(w, k, v))?;
                canon.flush_map(w)
            })),
        }
    }
}

/// A map being assembled from its user-key entries: (key group, state, key, count, body,
/// newest stamp).
type MapBlob = (u32, String, Vec<u8>, u64, Vec<u8>, i64);

/// Turns stored entries, in key order, into canonical entries.
struct Canonicalizer {
    kinds: BTreeMap<String, (StateKind, Option<i64>)>,
    now: i64,
    map: Option<MapBlob>,
}

impl Canonicalizer {
    fn expired(&self, ttl: Option<i64>, v: &[u8]) -> bool {
        ttl.is_some_and(|ttl| stamp_of(v).is_some_and(|s| s + ttl <= self.now))
    }

    fn entry(
        &mut self,
        w: &mut KeyedSnapshotWriter,
        k: &[u8],
        v: &[u8],
    ) -> Result<(), OperatorError> {
        let s = decode_stored_key(k).ok_or_else(|| OperatorError::State {
            name: "snapshot".into(),
            message: "the store holds a key that is not a state key".into(),
        })?;
        let (kind, ttl) = self
            .kinds
            .get(s.name)
            .copied()
            .unwrap_or((StateKind::Value, None));
        let same_map = self
            .map
            .as_ref()
            .is_some_and(|(kg, n, key, ..)| *kg == s.kg && n == s.name && key == s.key);
        if !same_map {
            self.flush_map(w)?;
        }
        if s.sub.is_empty() {
            // A value, a list, a session list, or a map still in canonical form.
            if !self.expired(ttl, v) {
                w.put_entry(
                    s.kg,
                    &StateEntry {
                        state: s.name.to_string(),
                        key: s.key.to_vec(),
                        value: v.to_vec(),
                    },
                )?;
            }
            return Ok(());
        }
        match kind {
            StateKind::Multi => {
                let mut value = s.sub.to_vec();
                value.extend_from_slice(v);
                w.put_entry(
                    s.kg,
                    &StateEntry {
                        state: s.name.to_string(),
                        key: s.key.to_vec(),
                        value,
                    },
                )
            }
            StateKind::Map | StateKind::Value => {
                if self.expired(ttl, v) {
                    return Ok(());
                }
                let blob = self.map.get_or_insert_with(|| {
                    (
                        s.kg,
                        s.name.to_string(),
                        s.key.to_vec(),
                        0,
                        Vec::new(),
                        i64::MIN,
                    )
                });
                blob.3 += 1;
                blob.4.extend_from_slice(s.sub);
                blob.4.extend_from_slice(v);
                blob.5 = blob.5.max(stamp_of(v).unwrap_or(0));
                Ok(())
            }
        }
    }

    /// Emits the map being assembled as bincode `(BTreeMap<UK, (UV, i64)>, i64)`: a u64
    /// count, the entries back to back, the newest stamp.
    fn flush_map(&mut self, w: &mut KeyedSnapshotWriter) -> Result<(), OperatorError> {
        let Some((kg, name, key, count, body, stamp)) = self.map.take() else {
            return Ok(());
        };
        let mut value = Vec::with_capacity(body.len() + 16);
        value.extend_from_slice(&count.to_le_bytes());
        value.extend_from_slice(&body);
        value.extend_from_slice(&stamp.to_le_bytes());
        w.put_entry(
            kg,
            &StateEntry {
                state: name,
                key,
                value,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_round_trip_and_sort_by_key_group() {
        let mut a = Vec::new();
        encode_key_prefix(&mut a, 3, "count", &[1, 2]);
        a.extend_from_slice(&[9]);
        let s = decode_stored_key(&a).unwrap();
        assert_eq!(
            s,
            StoredKey {
                kg: 3,
                name: "count",
                key: &[1, 2],
                sub: &[9]
            }
        );
        let mut b = Vec::new();
        encode_key_prefix(&mut b, 256, "a", &[0]);
        assert!(a < b, "key group 3 sorts before key group 256");
    }

    #[test]
    fn map_blob_matches_bincode() {
        let map: BTreeMap<u32, (String, i64)> =
            BTreeMap::from([(1, ("a".to_string(), 5)), (2, ("b".to_string(), 7))]);
        let expected = bincode::serialize(&(&map, 7i64)).unwrap();
        let mut body = Vec::new();
        for (k, v) in &map {
            body.extend(bincode::serialize(k).unwrap());
            body.extend(bincode::serialize(v).unwrap());
        }
        let mut got = 2u64.to_le_bytes().to_vec();
        got.extend(body);
        got.extend(7i64.to_le_bytes());
        assert_eq!(got, expected);
    }
}
