//! Data between TaskManagers: one TCP connection per channel whose producer and consumer
//! subtasks run in different processes, with credit-based flow control.
//!
//! The consumer's side is an ordinary local channel (see [`crate::channel`]) that a reader
//! thread fills from the socket. The consumer grants the producer one credit per free slot of
//! that queue (minus what is already on the wire); the producer sends an event only against a
//! credit. So a slow consumer stops its producers after at most `capacity` events per channel
//! — nothing piles up in either process or in the socket buffers — and the reader never blocks
//! on a full queue, which keeps it free to read the one thing that needs no credit: a priority
//! barrier of an unaligned checkpoint. That barrier is written to the socket ahead of anything
//! the producer has not sent yet and, on arrival, jumps ahead of the consumer's queue; every
//! event it overtook is either in that queue or behind it on the wire, and the consumer counts
//! them from its queue, as for a local channel.

use super::wire::{read_frame, read_json, write_frame, write_json};
use crate::channel::{Event, Notify, RemoteSender, SendError, Sender, channel_with_take_notify};
use crate::checkpoint::Barrier;
use crate::key::Data;
use crate::record::Record;
use crate::sync::lock;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a producer keeps trying to reach a consumer's TaskManager at deployment.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// Names one channel of one execution attempt; the first frame of every data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelKey {
    /// Execution attempt.
    pub attempt: u64,
    /// Consumer vertex and which of its inputs (`vertex << 16 | input`).
    pub edge: u64,
    /// Producer subtask.
    pub producer: u32,
    /// Consumer subtask.
    pub consumer: u32,
}

/// An event as it crosses the network.
#[derive(Serialize, Deserialize)]
enum Wire<T> {
    Batch(Vec<Record<T>>),
    Watermark(i64),
    Idle,
    End,
    Barrier(Barrier),
    /// An unaligned checkpoint's barrier: sent without credit, overtakes the consumer's queue.
    Priority(Barrier),
}

impl<T> From<Event<T>> for Wire<T> {
    fn from(ev: Event<T>) -> Self {
        match ev {
            Event::Batch(b) => Wire::Batch(b),
            Event::Watermark(w) => Wire::Watermark(w),
            Event::Idle => Wire::Idle,
            Event::End => Wire::End,
            Event::Barrier(b) => Wire::Barrier(b),
        }
    }
}

type Handler = Box<dyn FnOnce(TcpStream) + Send>;

#[derive(Default)]
struct Registry {
    handlers: HashMap<ChannelKey, Handler>,
    /// Connections that arrived before their consumer was deployed here.
    waiting: HashMap<ChannelKey, TcpStream>,
}

/// A TaskManager's data port: accepts the connections of remote producers and hands each to
/// the local channel it feeds.
pub struct DataServer {
    address: SocketAddr,
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for DataServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataServer")
            .field("address", &self.address)
            .finish()
    }
}

impl DataServer {
    /// Binds `address` and starts accepting.
    pub fn bind(address: impl ToSocketAddrs) -> io::Result<Arc<Self>> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let registry = Arc::new(Mutex::new(Registry::default()));
        let reg = registry.clone();
        std::thread::Builder::new()
            .name("data-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let reg = reg.clone();
                    let _ = std::thread::Builder::new()
                        .name("data-handshake".into())
                        .spawn(move || handshake(stream, &reg));
                }
            })?;
        Ok(Arc::new(Self { address, registry }))
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn expect(&self, key: ChannelKey, handler: Handler) {
        let mut reg = lock(&self.registry);
        match reg.waiting.remove(&key) {
            Some(stream) => {
                drop(reg);
                spawn_handler(stream, handler);
            }
            None => {
                reg.handlers.insert(key, handler);
            }
        }
    }

    /// Drops connections and expectations of attempts before `attempt`.
    pub(crate) fn forget_before(&self, attempt: u64) {
        let mut reg = lock(&self.registry);
        reg.handlers.retain(|k, _| k.attempt >= attempt);
        for (_, s) in reg.waiting.extract_if(|k, _| k.attempt < attempt) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn spawn_handler(stream: TcpStream, handler: Handler) {
    let _ = std::thread::Builder::new()
        .name("data-in".into())
        .spawn(move || handler(stream));
}

fn handshake(mut stream: TcpStream, reg: &Mutex<Registry>) {
    let _ = stream.set_read_timeout(Some(CONNECT_DEADLINE));
    let Ok(key) = read_json::<ChannelKey>(&mut stream) else {
        return;
    };
    let _ = stream.set_read_timeout(None);
    let mut g = lock(reg);
    match g.handlers.remove(&key) {
        Some(h) => {
            drop(g);
            spawn_handler(stream, h);
        }
        None => {
            g.waiting.insert(key, stream);
        }
    }
}

/// What the consumer's side reports when its producer vanished mid-stream.
pub(crate) type BrokenFn = Arc<dyn Fn(String) + Send + Sync>;

/// The consuming end of a remote channel: a local receiver fed from the network.
pub(crate) fn inbound<T: Data>(
    server: &DataServer,
    key: ChannelKey,
    capacity: usize,
    consumer: Arc<Notify>,
    cancel: Arc<AtomicBool>,
    broken: BrokenFn,
) -> crate::channel::Receiver<T> {
    let take = Notify::new();
    let (tx, rx) = channel_with_take_notify(capacity, consumer, cancel.clone(), Some(take.clone()));
    let capacity = capacity.max(1) as u64;
    server.expect(
        key,
        Box::new(move |stream| run_inbound(stream, tx, take, capacity, cancel, broken, key)),
    );
    rx
}

fn run_inbound<T: Data>(
    stream: TcpStream,
    tx: Sender<T>,
    take: Arc<Notify>,
    capacity: u64,
    cancel: Arc<AtomicBool>,
    broken: BrokenFn,
    key: ChannelKey,
) {
    let _ = stream.set_nodelay(true);
    let tx = Arc::new(tx);
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // Credits go back on their own thread: the reader is often blocked in `read`.
    if let Ok(mut out) = stream.try_clone() {
        let (tx, received, done, cancel, take) = (
            tx.clone(),
            received.clone(),
            done.clone(),
            cancel.clone(),
            take.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("data-credit".into())
            .spawn(move || {
                let mut granted = 0u64;
                while !done.load(Ordering::Relaxed) && !cancel.load(Ordering::Relaxed) {
                    let seen = take.seq();
                    let on_wire = granted.saturating_sub(received.load(Ordering::Acquire));
                    let queued = tx.queued() as u64;
                    let grant = capacity.saturating_sub(on_wire + queued);
                    if grant > 0 {
                        if out.write_all(&(grant as u32).to_le_bytes()).is_err() {
                            return;
                        }
                        granted += grant;
                    }
                    if tx.receiver_gone() {
                        let _ = out.shutdown(Shutdown::Both);
                        return;
                    }
                    take.wait(seen, Duration::from_millis(20));
                }
            });
        if spawned.is_err() {
            broken(format!(
                "could not start the credit thread of channel {key:?}"
            ));
            return;
        }
    }
    let mut reader = io::BufReader::with_capacity(64 * 1024, stream);
    let mut ended = false;
    loop {
        let frame = match read_frame(&mut reader) {
            Ok(f) => f,
            Err(e) => {
                if !ended && !cancel.load(Ordering::Relaxed) && !tx.receiver_gone() {
                    broken(format!(
                        "the connection from producer subtask {} (attempt {}) broke: {e}",
                        key.producer, key.attempt
                    ));
                }
                break;
            }
        };
        let ev: Wire<T> = match bincode::deserialize(&frame) {
            Ok(ev) => ev,
            Err(e) => {
                broken(format!(
                    "undecodable data from producer subtask {}: {e}",
                    key.producer
                ));
                break;
            }
        };
        let ev = match ev {
            Wire::Priority(b) => {
                tx.send_barrier_priority(b);
                continue;
            }
            Wire::Batch(b) => Event::Batch(b),
            Wire::Watermark(w) => Event::Watermark(w),
            Wire::Idle => Event::Idle,
            Wire::End => {
                ended = true;
                Event::End
            }
            Wire::Barrier(b) => Event::Barrier(b),
        };
        received.fetch_add(1, Ordering::Release);
        if tx.send(ev).is_err() {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = reader.get_ref().shutdown(Shutdown::Both);
}

struct Credits {
    available: u64,
    closed: bool,
}

/// The producing end of a remote channel.
struct NetSender<T> {
    stream: Mutex<TcpStream>,
    credits: Arc<(Mutex<Credits>, Condvar)>,
    cancel: Arc<AtomicBool>,
    _t: PhantomData<fn(T)>,
}

impl<T: Data> NetSender<T> {
    fn write(&self, w: &Wire<T>) -> Result<(), SendError> {
        let bytes = bincode::serialize(w).map_err(|_| SendError::Disconnected)?;
        write_frame(&mut *lock(&self.stream), &bytes).map_err(|_| SendError::Disconnected)
    }
}

impl<T: Data> RemoteSender<T> for NetSender<T> {
    fn send(&self, ev: Event<T>) -> Result<(), SendError> {
        {
            let (m, cv) = &*self.credits;
            let mut c = lock(m);
            while c.available == 0 {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(SendError::Cancelled);
                }
                if c.closed {
                    return Err(SendError::Disconnected);
                }
                c = cv
                    .wait_timeout(c, Duration::from_millis(50))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            c.available -= 1;
        }
        self.write(&Wire::from(ev))
    }

    fn send_barrier_priority(&self, barrier: Barrier) {
        // A broken connection fails the attempt through the consumer's side or the heartbeat.
        let _ = self.write(&Wire::Priority(barrier));
    }
}

impl<T> Drop for NetSender<T> {
    fn drop(&mut self) {
        let _ = lock(&self.stream).shutdown(Shutdown::Write);
    }
}

/// The producing end of a remote channel to the TaskManager at `address`.
pub(crate) fn outbound<T: Data>(
    address: &str,
    key: ChannelKey,
    cancel: Arc<AtomicBool>,
) -> io::Result<Sender<T>> {
    let deadline = Instant::now() + CONNECT_DEADLINE;
    let mut stream = loop {
        match TcpStream::connect(address) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline || cancel.load(Ordering::Relaxed) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot reach TaskManager data port {address}: {e}"),
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream.set_nodelay(true)?;
    write_json(&mut stream, &key)?;
    let credits = Arc::new((
        Mutex::new(Credits {
            available: 0,
            closed: false,
        }),
        Condvar::new(),
    ));
    let mut input = stream.try_clone()?;
    let c2 = credits.clone();
    std::thread::Builder::new()
        .name("data-credit-in".into())
        .spawn(move || {
            let mut buf = [0u8; 4];
            let (m, cv) = &*c2;
            loop {
                let ok = input.read_exact(&mut buf).is_ok();
                let mut c = lock(m);
                if ok {
                    c.available += u64::from(u32::from_le_bytes(buf));
                } else {
                    c.closed = true;
                }
                cv.notify_all();
                if !ok {
                    return;
                }
            }
        })?;
    Ok(Sender::remote(Box::new(NetSender::<T> {
        stream: Mutex::new(stream),
        credits,
        cancel,
        _t: PhantomData,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::SnapshotKind;

    fn key(attempt: u64) -> ChannelKey {
        ChannelKey {
            attempt,
            edge: 1 << 16,
            producer: 0,
            consumer: 1,
        }
    }

    fn barrier(id: u64, unaligned: bool) -> Barrier {
        Barrier {
            id,
            timestamp_ms: 0,
            kind: SnapshotKind::Checkpoint,
            unaligned,
            alignment_timeout: None,
            stop: false,
            overtaken: 0,
        }
    }

    fn pair(
        capacity: usize,
        attempt: u64,
    ) -> (Sender<u64>, crate::channel::Receiver<u64>, Arc<Notify>) {
        let server = DataServer::bind("127.0.0.1:0").unwrap();
        let cancel = Arc::new(AtomicBool::new(false));
        let notify = Notify::new();
        // The producer may connect before the consumer is deployed: the server holds it.
        let addr = server.address().to_string();
        let tx = outbound::<u64>(&addr, key(attempt), cancel.clone()).unwrap();
        let rx = inbound::<u64>(
            &server,
            key(attempt),
            capacity,
            notify.clone(),
            cancel,
            Arc::new(|m| panic!("broken: {m}")),
        );
        (tx, rx, notify)
    }

    fn recv(rx: &crate::channel::Receiver<u64>, n: &Notify) -> Event<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = n.seq();
            if let Some(ev) = rx.try_recv() {
                return ev;
            }
            assert!(Instant::now() < deadline, "nothing received");
            n.wait(seen, Duration::from_millis(50));
        }
    }

    #[test]
    fn events_arrive_in_order_and_a_slow_consumer_stops_the_producer() {
        let (tx, rx, n) = pair(4, 1);
        let sent = Arc::new(AtomicU64::new(0));
        let s2 = sent.clone();
        let producer = std::thread::spawn(move || {
            for i in 0..100u64 {
                tx.send(Event::Batch(vec![Record::new(i as i64, i)]))
                    .unwrap();
                s2.store(i + 1, Ordering::SeqCst);
            }
            tx.send(Event::End).unwrap();
        });
        // Nobody reads: the producer stops after the 4 credits of the consumer's queue.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            sent.load(Ordering::SeqCst),
            4,
            "credit bounds what is in flight"
        );
        assert_eq!(rx.len(), 4);
        for i in 0..100u64 {
            match recv(&rx, &n) {
                Event::Batch(b) => assert_eq!(b[0].value, i),
                other => panic!("{other:?}"),
            }
            assert!(rx.len() <= 4, "the queue never exceeds its capacity");
        }
        assert!(matches!(recv(&rx, &n), Event::End));
        producer.join().unwrap();
    }

    #[test]
    fn priority_barrier_overtakes_what_is_queued() {
        let (tx, rx, n) = pair(8, 2);
        for i in 0..3u64 {
            tx.send(Event::Batch(vec![Record::new(0, i)])).unwrap();
        }
        tx.send(Event::Barrier(barrier(1, false))).unwrap();
        // Wait until the four events are queued at the consumer.
        let deadline = Instant::now() + Duration::from_secs(10);
        while rx.len() < 4 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        tx.send_barrier_priority(barrier(2, true));
        while rx.len() < 5 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        match recv(&rx, &n) {
            Event::Barrier(b) => assert_eq!((b.id, b.overtaken), (2, 4)),
            other => panic!("{other:?}"),
        }
        for i in 0..3u64 {
            assert!(matches!(recv(&rx, &n), Event::Batch(b) if b[0].value == i));
        }
        assert!(matches!(recv(&rx, &n), Event::Barrier(b) if b.id == 1));
    }

    #[test]
    fn a_vanished_producer_is_reported() {
        let server = DataServer::bind("127.0.0.1:0").unwrap();
        let cancel = Arc::new(AtomicBool::new(false));
        let (btx, brx) = std::sync::mpsc::channel();
        let _rx = inbound::<u64>(
            &server,
            key(3),
            4,
            Notify::new(),
            cancel.clone(),
            Arc::new(move |m| {
                let _ = btx.send(m);
            }),
        );
        let tx = outbound::<u64>(&server.address().to_string(), key(3), cancel).unwrap();
        tx.send(Event::Watermark(1)).unwrap();
        drop(tx);
        let msg = brx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(msg.contains("producer subtask 0"), "{msg}");
    }
}
