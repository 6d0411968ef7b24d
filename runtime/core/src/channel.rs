//! Bounded channels between subtasks, and the events they carry.
//!
//! One channel connects one producer subtask to one consumer subtask, so a consumer can tell
//! its inputs apart: watermarks are tracked per channel, and checkpoint barriers will block or
//! overtake per channel. A channel holds at most `capacity` events (record batches), which gives
//! backpressure: a fast producer blocks until its consumer catches up. All channels into one
//! consumer share a [`Notify`], so the consumer sleeps on one condition variable.
//!
//! A channel whose two ends are in different TaskManagers has a [`RemoteSender`] for its
//! producing end (see `cluster::exchange`); the consumer still reads a local queue, which the
//! network feeds, so the task loops cannot tell the difference.

use crate::checkpoint::Barrier;
use crate::record::Record;
use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What travels on a channel.
#[derive(Debug)]
pub enum Event<T> {
    /// A batch of records.
    Batch(Vec<Record<T>>),
    /// No record with a smaller timestamp will follow on this channel.
    Watermark(i64),
    /// The producer is idle: leave this channel out of the watermark until data comes again.
    Idle,
    /// The producer has no more data.
    End,
    /// A checkpoint barrier.
    Barrier(Barrier),
}

/// Wakes a consumer when any of its channels gets an event.
#[derive(Debug, Default)]
pub struct Notify {
    seq: Mutex<u64>,
    cv: Condvar,
}

impl Notify {
    /// A new notifier.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The current sequence number; pass it to [`Notify::wait`].
    pub fn seq(&self) -> u64 {
        *lock(&self.seq)
    }

    /// Wakes the consumer.
    pub fn notify(&self) {
        let mut s = lock(&self.seq);
        *s = s.wrapping_add(1);
        self.cv.notify_one();
    }

    /// Sleeps until something was sent after `seen` was read, or `timeout` passes.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let s = lock(&self.seq);
        if *s == seen {
            let _ = self.cv.wait_timeout(s, timeout);
        }
    }
}

struct Shared<T> {
    queue: Mutex<VecDeque<Event<T>>>,
    not_full: Condvar,
    capacity: usize,
    consumer: Arc<Notify>,
    receiver_gone: AtomicBool,
    /// Woken whenever the consumer takes events: the network reader of a remote channel
    /// returns credits then.
    on_take: Option<Arc<Notify>>,
}

/// The producing end of a channel whose consumer is in another process.
pub trait RemoteSender<T>: Send + Sync {
    /// Sends an event, waiting for credit from the consumer.
    fn send(&self, ev: Event<T>) -> Result<(), SendError>;
    /// Sends a barrier that overtakes the consumer's queued events (needs no credit).
    fn send_barrier_priority(&self, barrier: Barrier);
}

enum SenderKind<T> {
    Local {
        shared: Arc<Shared<T>>,
        cancel: Arc<AtomicBool>,
    },
    Remote(Box<dyn RemoteSender<T>>),
}

/// The producing end of a channel.
pub struct Sender<T> {
    kind: SenderKind<T>,
}

/// The consuming end of a channel.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// Why a send did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The job is being cancelled.
    Cancelled,
    /// The consumer has stopped.
    Disconnected,
}

/// A channel with room for `capacity` events, waking `consumer` on every send; blocked senders
/// give up when `cancel` is set.
pub fn channel<T>(
    capacity: usize,
    consumer: Arc<Notify>,
    cancel: Arc<AtomicBool>,
) -> (Sender<T>, Receiver<T>) {
    channel_with_take_notify(capacity, consumer, cancel, None)
}

/// A channel as [`channel`] that also wakes `on_take` whenever the consumer takes events.
pub fn channel_with_take_notify<T>(
    capacity: usize,
    consumer: Arc<Notify>,
    cancel: Arc<AtomicBool>,
    on_take: Option<Arc<Notify>>,
) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::with_capacity(capacity)),
        not_full: Condvar::new(),
        capacity: capacity.max(1),
        consumer,
        receiver_gone: AtomicBool::new(false),
        on_take,
    });
    (
        Sender {
            kind: SenderKind::Local {
                shared: shared.clone(),
                cancel,
            },
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// The producing end of a channel to another process.
    pub fn remote(r: Box<dyn RemoteSender<T>>) -> Self {
        Self {
            kind: SenderKind::Remote(r),
        }
    }

    /// Appends an event, waiting while the channel is full.
    pub fn send(&self, ev: Event<T>) -> Result<(), SendError> {
        let (shared, cancel) = match &self.kind {
            SenderKind::Local { shared, cancel } => (shared, cancel),
            SenderKind::Remote(r) => return r.send(ev),
        };
        let mut q = lock(&shared.queue);
        while q.len() >= shared.capacity {
            if cancel.load(Ordering::Relaxed) {
                return Err(SendError::Cancelled);
            }
            if shared.receiver_gone.load(Ordering::Relaxed) {
                return Err(SendError::Disconnected);
            }
            q = shared
                .not_full
                .wait_timeout(q, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        q.push_back(ev);
        drop(q);
        shared.consumer.notify();
        Ok(())
    }

    /// Puts a barrier at the head of the queue, ahead of everything waiting and regardless of
    /// capacity, recording how many events it overtook: the way an unaligned checkpoint's
    /// barrier overtakes in-flight data.
    pub fn send_barrier_priority(&self, mut barrier: Barrier) {
        let shared = match &self.kind {
            SenderKind::Local { shared, .. } => shared,
            SenderKind::Remote(r) => return r.send_barrier_priority(barrier),
        };
        let mut q = lock(&shared.queue);
        barrier.overtaken = q.len();
        q.push_front(Event::Barrier(barrier));
        drop(q);
        shared.consumer.notify();
    }

    /// Events queued in a local channel right now (0 for a remote one).
    pub fn queued(&self) -> usize {
        match &self.kind {
            SenderKind::Local { shared, .. } => lock(&shared.queue).len(),
            SenderKind::Remote(_) => 0,
        }
    }

    /// Whether the consumer of a local channel has gone.
    pub fn receiver_gone(&self) -> bool {
        match &self.kind {
            SenderKind::Local { shared, .. } => shared.receiver_gone.load(Ordering::Relaxed),
            SenderKind::Remote(_) => false,
        }
    }
}

impl<T> Receiver<T> {
    /// Takes the next event if there is one.
    pub fn try_recv(&self) -> Option<Event<T>> {
        let mut q = lock(&self.shared.queue);
        let ev = q.pop_front();
        if ev.is_some() {
            drop(q);
            self.shared.not_full.notify_one();
            if let Some(n) = &self.shared.on_take {
                n.notify();
            }
        }
        ev
    }

    /// Events queued right now.
    pub fn len(&self) -> usize {
        lock(&self.shared.queue).len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns everything queued (for persisting in-flight data).
    pub fn drain(&self) -> Vec<Event<T>> {
        let v: Vec<_> = lock(&self.shared.queue).drain(..).collect();
        self.shared.not_full.notify_all();
        if let Some(n) = &self.shared.on_take {
            n.notify();
        }
        v
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Relaxed);
        self.shared.not_full.notify_all();
        if let Some(n) = &self.shared.on_take {
            n.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_with_priority_and_backpressure() {
        let n = Notify::new();
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel::<u32>(2, n.clone(), cancel.clone());
        tx.send(Event::Watermark(1)).unwrap();
        tx.send(Event::Watermark(2)).unwrap();
        tx.send_barrier_priority(crate::checkpoint::Barrier {
            id: 1,
            timestamp_ms: 0,
            kind: crate::checkpoint::SnapshotKind::Checkpoint,
            unaligned: true,
            alignment_timeout: None,
            stop: false,
            overtaken: 0,
        });
        assert!(matches!(rx.try_recv(), Some(Event::Barrier(b)) if b.overtaken == 2));
        assert!(matches!(rx.try_recv(), Some(Event::Watermark(1))));
        // Full again after one more send; a cancelled sender gives up instead of blocking.
        tx.send(Event::Watermark(3)).unwrap();
        cancel.store(true, Ordering::Relaxed);
        assert_eq!(tx.send(Event::End), Err(SendError::Cancelled));
        assert_eq!(rx.drain().len(), 2);
    }

    #[test]
    fn blocked_sender_resumes_when_consumer_reads() {
        let n = Notify::new();
        let (tx, rx) = channel::<u32>(1, n.clone(), Arc::new(AtomicBool::new(false)));
        tx.send(Event::Watermark(1)).unwrap();
        let h = std::thread::spawn(move || tx.send(Event::Watermark(2)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(rx.try_recv(), Some(Event::Watermark(1))));
        h.join().unwrap().unwrap();
        assert!(matches!(rx.try_recv(), Some(Event::Watermark(2))));
    }
}
