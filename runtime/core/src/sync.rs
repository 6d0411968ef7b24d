//! Locking shared by the engine's threads.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, also when a panicking thread poisoned it: a panic fails its task, and through it
/// the attempt, so the data behind the lock is still safe to read for those that go on.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
