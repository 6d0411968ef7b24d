//! What the S3 tests share: the server's endpoint (`WEIR_S3_ENDPOINT`), a connectivity check
//! that fails loudly, and uniquely named buckets that are deleted afterwards.
//!
//! Credentials and region come from the standard AWS variables that `.ci/run` exports
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`), so the storage's credential
//! chain is exercised; without them the defaults of `.ci/s3.sh` are used.

#![allow(dead_code)] // each test file uses a different part

use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weir_s3::{S3Settings, S3Storage, StaticCredentials};

/// The server under test; panics when it cannot be reached.
pub fn endpoint() -> String {
    let e = std::env::var("WEIR_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:28333".into());
    let host = e
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let reachable = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "S3 server not reachable at {e}: start it with `bash .ci/s3.sh start` (and \
         `eval \"$(bash .ci/s3.sh env)\"` for its endpoint and credentials)"
    );
    e
}

/// Settings for the server under test.
pub fn settings() -> S3Settings {
    let credentials = match std::env::var("AWS_ACCESS_KEY_ID") {
        Ok(_) => None,
        Err(_) => Some(StaticCredentials {
            access_key_id: "testkey".into(),
            secret_access_key: "testsecret".into(),
            session_token: None,
        }),
    };
    S3Settings {
        endpoint: Some(endpoint()),
        // Set, so that the AWS chain never goes looking for instance metadata.
        region: Some(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into())),
        path_style: Some(true),
        credentials,
        operation_deadline: Duration::from_secs(20),
        ..Default::default()
    }
}

/// A bucket name no other test (or earlier run) uses.
pub fn unique_bucket(base: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "weir-{base}-{:x}-{:x}-{}",
        std::process::id(),
        nanos % 0xffff_ffff,
        N.fetch_add(1, Ordering::SeqCst)
    );
    assert!(name.len() <= 63, "bucket name too long: {name}");
    name
}

/// A bucket created for one test, deleted with everything in it when dropped.
pub struct Bucket {
    pub name: String,
    admin: S3Storage,
}

impl Bucket {
    pub fn new(base: &str) -> Self {
        let name = unique_bucket(base);
        let admin = S3Storage::open(&format!("s3://{name}"), settings()).unwrap();
        admin.create_bucket(&name).unwrap();
        Self { name, admin }
    }

    /// `s3://<bucket>/<path>`.
    pub fn uri(&self, path: &str) -> String {
        format!("s3://{}/{path}", self.name)
    }

    /// A storage rooted at `s3://<bucket>/<path>`.
    pub fn storage(&self, path: &str) -> S3Storage {
        self.storage_with(path, settings())
    }

    /// The same with other settings.
    pub fn storage_with(&self, path: &str, settings: S3Settings) -> S3Storage {
        S3Storage::open(&self.uri(path), settings).unwrap()
    }

    /// Every object of the bucket.
    pub fn objects(&self) -> Vec<String> {
        self.admin
            .list_objects(&format!("s3://{}", self.name))
            .unwrap()
    }

    pub fn admin(&self) -> &S3Storage {
        &self.admin
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        let _ = self.admin.delete_bucket(&self.name);
    }
}

/// A TCP forwarder in front of the server that can make the endpoint die and come back
/// mid-run. Test-only, and the one stand-in these tests use: a real server cannot be taken off
/// the network for one test while the others keep using it. While blocked it closes every open
/// connection and every new one at once, as a dead endpoint looks to a client.
pub struct Proxy {
    pub url: String,
    blocked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    addr: std::net::SocketAddr,
}

impl Proxy {
    /// Forwards to the server under test.
    pub fn new() -> Self {
        let upstream = endpoint();
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (b, s, c) = (blocked.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if b.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                {
                    let mut open = c.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self {
            url: format!("http://{addr}"),
            blocked,
            stop,
            conns,
            addr,
        }
    }

    /// The endpoint dies: open connections are cut, new ones closed at once.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// The endpoint is back.
    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the stop.
        let _ = TcpStream::connect(self.addr);
        self.block();
    }
}
