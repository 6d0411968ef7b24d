//! RocksDB incremental checkpoints on a real S3-compatible server (`bash .ci/s3.sh start`):
//! a chain of 20 incremental checkpoints with `numRetained: 3` leaves exactly the shared
//! objects the retained checkpoints reference, and a job killed mid-run restores from S3 with
//! exactly-once results, through local recovery and without it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;
#[path = "../../s3/tests/test_support/mod.rs"]
mod test_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{
    OrdersJob, checkpoint_now, metadata, orders, rocks, shared_and_referenced, temp_dir,
};
use test_support::{Bucket, settings};
use weir_core::checkpoint::coordinator::{FaultPoint, fail_once};
use weir_core::checkpoint::storage::{CheckpointStorage, StorageFactory};
use weir_programs::orders::expected_summaries;
use weir_s3::{S3Settings, S3Storage};

fn factory(settings: S3Settings) -> StorageFactory {
    Arc::new(move |uri: &str| {
        Ok(Arc::new(S3Storage::open(uri, settings.clone())?) as Arc<dyn CheckpointStorage>)
    })
}

#[test]
fn twenty_incremental_checkpoints_on_s3_keep_exactly_the_referenced_objects() {
    let bucket = Bucket::new("incr");
    let uri = bucket.uri("jobs/orders");
    let dir = temp_dir("s3-chain");
    let mut job = OrdersJob::new(orders(2_000_000, 20_000, 5_000), uri.clone());
    job.storage_factory = Some(factory(settings()));
    job.interval = Duration::from_secs(3600);
    job.num_retained = 3;
    job.backend = Some(rocks(&dir, true, false, 16 << 20));
    let handle = job.start();
    let storage = bucket.storage("jobs/orders");
    let mut uploaded = BTreeSet::new();
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(60));
        let loc = checkpoint_now(&handle);
        uploaded.extend(
            metadata(&storage, &loc)
                .shared_files()
                .into_iter()
                .map(|r| r.name),
        );
        let (files, referenced, _) = shared_and_referenced(&storage);
        assert_eq!(files, referenced, "after checkpoint {i}");
    }
    assert_eq!(storage.list_checkpoints().unwrap().len(), 3);
    let (files, _, _) = shared_and_referenced(&storage);
    assert!(
        uploaded.len() > files.len(),
        "{} uploaded, {} kept",
        uploaded.len(),
        files.len()
    );
    handle.cancel();
    let _ = handle.wait_timeout(Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn killed_and_restored_from_s3_exactly_once_with_and_without_local_recovery() {
    let bucket = Bucket::new("rocks-eo");
    let config = orders(12_000, 20_000, 300);
    let want = expected_summaries(&config);
    for local_recovery in [false, true] {
        let dir = temp_dir("s3-eo");
        let backend = rocks(&dir, true, local_recovery, 16 << 20);
        let stats = backend.restore_stats();
        let mut job = OrdersJob::new(config.clone(), bucket.uri(&format!("eo-{local_recovery}")));
        job.storage_factory = Some(factory(settings()));
        job.backend = Some(backend);
        job.fault = Some(fail_once(
            |p| matches!(p, FaultPoint::BeforeSnapshot { checkpoint, .. } if *checkpoint >= 3),
        ));
        let (got, restarts) = job.run();
        assert!(restarts >= 1);
        assert_eq!(got, want, "local recovery: {local_recovery}");
        let (local, remote) = (
            stats.local_files.load(Ordering::SeqCst),
            stats.remote_files.load(Ordering::SeqCst),
        );
        if local_recovery {
            assert!(
                local > 0 && remote == 0,
                "{local} local, {remote} downloaded"
            );
        } else {
            assert!(
                remote > 0 && local == 0,
                "{local} local, {remote} downloaded"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
