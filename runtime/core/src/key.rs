//! Trait aliases for what may flow, be a key, or be stored as state; the stable key hash and
//! the key-group arithmetic that decides which subtask owns a key.
//!
//! Keys hash into `max_parallelism` key groups, and contiguous ranges of key groups belong to
//! subtasks. State is therefore redistributable on rescaling without rehashing records, and the
//! hash must be stable across processes and builds: it uses its own hasher, not `std`'s
//! randomly seeded one.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

/// What may flow through a stream: cloneable, sendable between threads, and serializable, so
/// that in-flight records can be persisted by unaligned checkpoints.
pub trait Data: Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Serialize + DeserializeOwned + 'static> Data for T {}

/// What may be stored in keyed state (serializable so it can be checkpointed).
pub trait StateValue: Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Serialize + DeserializeOwned + 'static> StateValue for T {}

/// What may be a key of a keyed stream.
pub trait Key: StateValue + Hash + Eq + Ord + Debug + Sync {}
impl<T: StateValue + Hash + Eq + Ord + Debug + Sync> Key for T {}

/// A deterministic 64-bit hasher (FxHash-style mixing with a murmur3 finaliser).
#[derive(Default, Clone, Copy)]
pub struct StableHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl StableHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for StableHasher {
    #[inline]
    fn finish(&self) -> u64 {
        fmix64(self.hash)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
}

/// MurmurHash3's 64-bit finaliser: spreads FxHash's weak low bits before the modulo.
#[inline]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Stable hash of a key.
#[inline]
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// The key group (`0..max_parallelism`) a key belongs to.
#[inline]
pub fn key_group<K: Hash + ?Sized>(key: &K, max_parallelism: u32) -> u32 {
    (stable_hash(key) % u64::from(max_parallelism.max(1))) as u32
}

/// The subtask (`0..parallelism`) that owns a key group; contiguous ranges, as in Flink.
#[inline]
pub fn subtask_for_key_group(key_group: u32, max_parallelism: u32, parallelism: u32) -> u32 {
    ((u64::from(key_group) * u64::from(parallelism)) / u64::from(max_parallelism.max(1))) as u32
}

/// The key groups owned by a subtask: the inverse of [`subtask_for_key_group`].
pub fn key_group_range(
    subtask: u32,
    max_parallelism: u32,
    parallelism: u32,
) -> std::ops::Range<u32> {
    let start = (u64::from(subtask) * u64::from(max_parallelism)).div_ceil(u64::from(parallelism));
    let end =
        (u64::from(subtask + 1) * u64::from(max_parallelism)).div_ceil(u64::from(parallelism));
    start as u32..end as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        // Pinned values: changing them breaks every savepoint's key-group layout.
        assert_eq!(stable_hash(&42u64), stable_hash(&42u64));
        assert_eq!(
            key_group(&"user-1", 128),
            key_group(&"user-1".to_string(), 128)
        );
        assert_eq!(stable_hash(&0u64), fmix64(0));
    }

    #[test]
    fn key_group_ranges_partition_the_space() {
        for max in [1u32, 7, 128, 1000] {
            for par in 1..=max.min(9) {
                let mut next = 0;
                for s in 0..par {
                    let r = key_group_range(s, max, par);
                    assert_eq!(r.start, next);
                    for kg in r.clone() {
                        assert_eq!(
                            subtask_for_key_group(kg, max, par),
                            s,
                            "max {max} par {par}"
                        );
                    }
                    next = r.end;
                }
                assert_eq!(next, max);
            }
        }
    }

    #[test]
    fn keys_spread_over_groups() {
        let mut counts = [0u32; 16];
        for k in 0u64..16_000 {
            counts[key_group(&k, 16) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800 && c < 1200), "{counts:?}");
    }
}
