//! The S3 checkpoint storage against a real S3-compatible server (SeaweedFS, started by
//! `.ci/s3.sh`): round trips in one piece and in parts, listing and deleting with pagination,
//! the latest pointer under racing writers and fencing, and the errors a user meets — a
//! missing bucket, refused credentials, an unreachable endpoint.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod test_support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use test_support::{Bucket, settings, unique_bucket};
use weir_core::checkpoint::latest::{LatestPointer, advance_latest, claim_epoch};
use weir_core::checkpoint::storage::{CheckpointStorage, StorageError};
use weir_s3::{MIN_PART_SIZE, S3Settings, S3Storage, StaticCredentials};

/// The error of writing one small file.
fn write_error(storage: &S3Storage) -> String {
    storage
        .write_file(&storage.checkpoint_location(1), "x", b"x")
        .unwrap_err()
        .to_string()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn files_round_trip_small_and_in_parallel_parts() {
    let bucket = Bucket::new("roundtrip");
    let storage = bucket.storage_with(
        "job",
        S3Settings {
            multipart_threshold: MIN_PART_SIZE,
            part_size: MIN_PART_SIZE,
            upload_concurrency: 3,
            ..settings()
        },
    );
    let chk = storage.checkpoint_location(7);
    assert_eq!(chk, bucket.uri("job/chk-7"));

    storage.write_file(&chk, "small.state", b"hello").unwrap();
    assert_eq!(storage.read_file(&chk, "small.state").unwrap(), b"hello");
    assert_eq!(storage.multipart_uploads(), 0);

    // 3 parts: two full, one short.
    let big = pattern(2 * MIN_PART_SIZE + 12_345);
    storage.write_file(&chk, "big.state", &big).unwrap();
    assert_eq!(storage.multipart_uploads(), 1);
    assert!(storage.read_file(&chk, "big.state").unwrap() == big);
    assert!(storage.pending_uploads(&bucket.name).unwrap().is_empty());

    let missing = storage.read_file(&chk, "nope.state").unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(
        missing.to_string().contains("chk-7/nope.state"),
        "{missing}"
    );
}

#[test]
fn completed_checkpoints_are_listed_and_discarded_across_pages() {
    let bucket = Bucket::new("list");
    let storage = bucket.storage("jobs/a");
    for id in 1..=3 {
        let loc = storage.checkpoint_location(id);
        storage.write_file(&loc, "op-0.state", b"x").unwrap();
        storage.write_metadata(&loc, b"{}").unwrap();
    }
    // Incomplete (no _metadata), and things that are not checkpoints.
    storage
        .write_file(&storage.checkpoint_location(4), "op-0.state", b"x")
        .unwrap();
    storage
        .write_file(
            &bucket.uri("jobs/a/savepoints/savepoint-1-1"),
            "_metadata",
            b"{}",
        )
        .unwrap();
    storage
        .write_file(&bucket.uri("jobs/ab/chk-9"), "_metadata", b"{}")
        .unwrap();
    let ids: Vec<u64> = storage
        .list_checkpoints()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [1, 2, 3]);

    // More objects than one list page and one DeleteObjects request take (1000 each).
    let chk2 = storage.checkpoint_location(2);
    for i in 0..1005 {
        storage.write_file(&chk2, &format!("f-{i}"), b"").unwrap();
    }
    assert_eq!(bucket.admin().list_objects(&chk2).unwrap().len(), 1007);
    storage.discard(&chk2).unwrap();
    assert!(bucket.admin().list_objects(&chk2).unwrap().is_empty());
    let ids: Vec<u64> = storage
        .list_checkpoints()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [1, 3]);
    // Discarding what is gone already is fine.
    storage.discard(&chk2).unwrap();
    assert_eq!(
        storage.list_dirs(&bucket.uri("jobs/a")).unwrap(),
        ["chk-1", "chk-3", "chk-4", "savepoints"]
    );
    // Through the trait, as a restore searches the savepoint directory: sub-directories only,
    // and nothing (not an error) where nothing is stored.
    let st: &dyn CheckpointStorage = &storage;
    assert_eq!(
        st.list_directories(&bucket.uri("jobs/a/savepoints"))
            .unwrap(),
        ["savepoint-1-1"]
    );
    assert!(
        st.list_directories(&bucket.uri("jobs/b/savepoints"))
            .unwrap()
            .is_empty()
    );
}

fn pointer(epoch: u64, writer: &str) -> LatestPointer {
    LatestPointer {
        epoch,
        writer: writer.into(),
        checkpoint: None,
    }
}

#[test]
fn racing_writers_on_the_latest_pointer_only_one_wins() {
    let bucket = Bucket::new("race");
    // Each writer has its own client, as two JobManagers would.
    let writers: Vec<Arc<S3Storage>> = (0..3).map(|_| Arc::new(bucket.storage("job"))).collect();
    assert!(writers[0].read_latest().unwrap().is_none());
    let mut expected: Option<String> = None;
    for round in 0..6 {
        let go = Arc::new(Barrier::new(writers.len()));
        let results: Vec<Result<String, StorageError>> = writers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let (w, go, expected) = (w.clone(), go.clone(), expected.clone());
                std::thread::spawn(move || {
                    go.wait();
                    w.write_latest(expected.as_deref(), &pointer(round, &format!("w{i}")))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let wins: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(wins.len(), 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, StorageError::Conflict { .. }), "{e}");
            }
        }
        let read = writers[0].read_latest().unwrap().unwrap();
        assert_eq!(&read.version, wins[0]);
        assert_eq!(read.pointer.epoch, round);
        expected = Some(read.version);
    }
}

#[test]
fn a_writer_with_a_lower_epoch_is_refused() {
    let bucket = Bucket::new("fence");
    let (a, b) = (bucket.storage("job"), bucket.storage("job"));
    let fa = claim_epoch(&a, "a").unwrap();
    advance_latest(&a, &fa, 1, &a.checkpoint_location(1)).unwrap();
    // A second instance of the job takes over.
    let fb = claim_epoch(&b, "b").unwrap();
    assert!(fb.epoch > fa.epoch);
    let err = advance_latest(&a, &fa, 2, &a.checkpoint_location(2)).unwrap_err();
    assert!(
        matches!(err, StorageError::Fenced { writer_epoch, pointer_epoch, .. }
            if writer_epoch == fa.epoch && pointer_epoch == fb.epoch),
        "{err}"
    );
    assert!(err.to_string().contains("deposed"), "{err}");
    advance_latest(&b, &fb, 2, &b.checkpoint_location(2)).unwrap();
    let p = a.read_latest().unwrap().unwrap().pointer;
    assert_eq!(
        (p.epoch, p.writer.as_str(), p.checkpoint_id()),
        (fb.epoch, "b", Some(2))
    );
}

#[test]
fn a_missing_bucket_is_named_with_the_fix() {
    let _endpoint = test_support::endpoint();
    let name = unique_bucket("missing");
    let storage = S3Storage::open(&format!("s3://{name}/ckpt"), settings()).unwrap();
    let err = storage.check().unwrap_err().to_string();
    assert!(
        err.contains(&format!("bucket {name} does not exist")),
        "{err}"
    );
    assert!(
        err.contains(&format!("aws s3 mb s3://{name} --endpoint-url")),
        "{err}"
    );
    // Reads and listings say the same. (Writes would too on S3; SeaweedFS creates a missing
    // bucket on the first PUT instead, so they are not checked here.)
    let err = storage.list_checkpoints().unwrap_err().to_string();
    assert!(
        err.contains(&format!("bucket {name} does not exist")),
        "{err}"
    );
    let err = storage
        .read_file(&storage.checkpoint_location(1), "_metadata")
        .unwrap_err();
    assert!(
        !err.is_not_found(),
        "a missing bucket is no missing file: {err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("bucket {name} does not exist")),
        "{err}"
    );
}

#[test]
fn refused_credentials_say_so() {
    let bucket = Bucket::new("creds");
    let storage = bucket.storage_with(
        "ckpt",
        S3Settings {
            credentials: Some(StaticCredentials {
                access_key_id: "testkey".into(),
                secret_access_key: "not-the-secret".into(),
                session_token: None,
            }),
            ..settings()
        },
    );
    let started = Instant::now();
    let err = write_error(&storage);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");
    // Not retried: a retry cannot fix credentials.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_unreachable_endpoint_is_named_and_bounded_by_the_deadline() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let storage = S3Storage::open(
        "s3://weir-nowhere/ckpt",
        S3Settings {
            endpoint: Some(endpoint.clone()),
            operation_deadline: Duration::from_secs(2),
            ..settings()
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = write_error(&storage);
    let took = started.elapsed();
    assert!(
        err.contains(&format!("cannot reach the S3 endpoint {endpoint}")),
        "{err}"
    );
    assert!(err.contains("attempts"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
