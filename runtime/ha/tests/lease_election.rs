//! Leader election against the real kube-apiserver that `.ci/kube.sh` starts: one leader among
//! candidates, takeover after a crash and after a pause, deposed leaders noticing, epochs rising,
//! stale writes refused, and the epoch fencing the latest-checkpoint pointer.
//!
//! Timings are short (2 s leases) so that takeovers happen within the test's patience; every
//! test has a namespace of its own, so they run in parallel.

#![allow(clippy::unwrap_used)]

use k8s_openapi::api::coordination::v1::Lease;
use std::time::{Duration, Instant};
use weir_core::checkpoint::latest::advance_latest;
use weir_core::checkpoint::storage::{LocalFsStorage, StorageError};
use weir_ha::lease::{LeaseLock, Write};
use weir_ha::{ElectionConfig, ElectionHandle, LeaderElector, Leadership, StepDownReason, Term};
use weir_kube_test::TestNamespace;

const LEASE: &str = "weir-test-leader";

fn fast() -> ElectionConfig {
    ElectionConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(250),
    }
}

/// Generous bound for things that should happen about at once.
const SOON: Duration = Duration::from_secs(10);

fn candidate(ns: &TestNamespace, identity: &str) -> LeaderElector {
    LeaderElector::new(ns.client(), ns.name(), LEASE, identity, fast()).unwrap()
}

async fn lead(h: &mut ElectionHandle) -> Term {
    tokio::time::timeout(SOON, h.leading())
        .await
        .expect("no leadership in time")
        .expect("election stopped")
}

async fn lease(ns: &TestNamespace) -> Lease {
    ns.api::<Lease>().get(LEASE).await.unwrap()
}

fn holder(l: &Lease) -> Option<String> {
    l.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

/// `a` leads, `b` stands by and has seen `a`'s lease (as a standby that was running would have).
async fn leader_and_standby(ns: &TestNamespace) -> (ElectionHandle, Term, ElectionHandle) {
    let mut a = candidate(ns, "a").start();
    let term = lead(&mut a).await;
    let b = candidate(ns, "b").start();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.leadership().term(), None);
    (a, term, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_elect_exactly_one_leader() {
    let ns = TestNamespace::create("ha-two").await;
    let mut a = candidate(&ns, "a").start();
    let mut b = candidate(&ns, "b").start();
    let winner = tokio::select! {
        t = a.leading() => t.unwrap(),
        t = b.leading() => t.unwrap(),
    };
    assert_eq!(winner.epoch, 1, "the first term of a new Lease");
    assert_eq!(
        holder(&lease(&ns).await).as_deref(),
        Some(winner.identity.as_str())
    );

    // Over several lease durations, never two leaders, and the leader stays put (it renews).
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let leaders: Vec<_> = [&a, &b]
            .iter()
            .filter_map(|h| h.leadership().term().cloned())
            .collect();
        assert_eq!(
            leaders,
            vec![winner.clone()],
            "exactly one leader, the same one"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let follower = if winner.identity == "a" { &b } else { &a };
    assert_eq!(
        follower.leadership(),
        Leadership::Following {
            holder: Some(winner.identity.clone()),
            lost: None
        }
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_leader_is_replaced_within_lease_duration_and_retry_period() {
    let ns = TestNamespace::create("ha-crash").await;
    let (a, first, mut b) = leader_and_standby(&ns).await;
    let crashed = Instant::now();
    a.abort(); // no release: the Lease must expire
    let second = lead(&mut b).await;
    let took = crashed.elapsed();
    let bound = fast().lease_duration + fast().retry_period;
    // The lease was renewed at most a retry period before the crash, so expiry comes no later
    // than the bound after it; slack for the requests themselves on a busy machine.
    eprintln!("takeover after a crash: {took:?} (bound {bound:?})");
    assert!(
        took <= bound + Duration::from_millis(750),
        "takeover took {took:?}, bound {bound:?}"
    );
    assert!(
        took >= fast().lease_duration - fast().retry_period,
        "took over before the lease could expire: {took:?}"
    );
    assert!(second.epoch > first.epoch, "{second:?} after {first:?}");
    assert_eq!(lease(&ns).await.spec.unwrap().lease_transitions, Some(2));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_leader_releases_and_the_standby_takes_over_at_once() {
    let ns = TestNamespace::create("ha-release").await;
    let (a, first, mut b) = leader_and_standby(&ns).await;
    let stopped = Instant::now();
    a.stop().await;
    let second = lead(&mut b).await;
    // Released: no waiting for the lease duration.
    eprintln!("takeover after a release: {:?}", stopped.elapsed());
    assert!(
        stopped.elapsed() < fast().lease_duration,
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(second.epoch, first.epoch + 1);
    b.stop().await;
    let l = lease(&ns).await.spec.unwrap();
    assert_eq!((l.holder_identity, l.lease_transitions), (None, Some(2)));
}

/// The leader's whole runtime is frozen (as by SIGSTOP or a long GC pause): it cannot renew,
/// the standby takes over, and when the old leader wakes it steps down at once — its renew
/// deadline has passed — and reports the lost term; its epoch is below its successor's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_is_replaced_and_steps_down_when_it_wakes() {
    let ns = TestNamespace::create("ha-pause").await;
    let elector = candidate(&ns, "a");
    // The old leader runs on a single-threaded runtime of its own, which the test can freeze.
    let (to_test, from_a) = std::sync::mpsc::channel::<tokio::sync::watch::Receiver<Leadership>>();
    let (freeze_tx, freeze_rx) = std::sync::mpsc::channel::<Duration>();
    let a_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let h = elector.start();
            to_test.send(h.subscribe()).unwrap();
            loop {
                // Poll for the freeze order without blocking the runtime...
                match freeze_rx.try_recv() {
                    // ...then block it: no task of this runtime runs meanwhile.
                    Ok(d) => std::thread::sleep(d),
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            h.stop().await;
        });
    });
    let mut a_state = from_a.recv().unwrap();
    let first = tokio::time::timeout(SOON, a_state.wait_for(|s| s.term().is_some()))
        .await
        .unwrap()
        .unwrap()
        .term()
        .cloned()
        .unwrap();
    let mut b = candidate(&ns, "b").start();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Long enough that b surely takes over while a is frozen, even on a busy machine.
    let pause = fast().lease_duration * 2 + fast().retry_period * 4;
    freeze_tx.send(pause).unwrap();
    let second = lead(&mut b).await;
    assert!(second.epoch > first.epoch);
    // While frozen, a still believes it leads: nothing can tell it otherwise. That is why
    // its writes carry the epoch.
    assert_eq!(a_state.borrow().term(), Some(&first));

    let woke = tokio::time::timeout(SOON, a_state.wait_for(|s| s.term().is_none()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    match woke {
        Leadership::Following {
            lost: Some(lost), ..
        } => {
            assert_eq!(lost.epoch, first.epoch);
            assert!(
                matches!(lost.reason, StepDownReason::RenewDeadlineExceeded { .. }),
                "{lost:?}"
            );
        }
        other => panic!("expected a lost term, got {other:?}"),
    }
    // And a stays a follower of b: it did not take the lease back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.leadership().term(), Some(&second));
    assert_eq!(holder(&lease(&ns).await).as_deref(), Some("b"));
    drop(freeze_tx);
    a_thread.join().unwrap();
    b.stop().await;
}

/// Another candidate writes itself into the Lease (as one that saw it expire would): the
/// leader's next observation shows another holder, and it steps down saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposed_leader_notices_the_other_holder() {
    let ns = TestNamespace::create("ha-deposed").await;
    let mut a = candidate(&ns, "a").start();
    let term = lead(&mut a).await;
    let lock = LeaseLock::new(ns.client(), ns.name(), LEASE);
    let usurped = loop {
        // a renews concurrently: retry on conflict, as a real usurper would.
        let current = lock.get().await.unwrap().unwrap();
        let spec = weir_ha::lease::acquired(
            "usurper",
            term.epoch + 1,
            &fast(),
            k8s_openapi::jiff::Timestamp::now(),
        );
        if let Write::Written(l) = lock.replace(&current, spec).await.unwrap() {
            break l;
        }
    };
    assert_eq!(holder(&usurped).as_deref(), Some("usurper"));
    let lost = tokio::time::timeout(SOON, a.lost(&term))
        .await
        .unwrap()
        .expect("a lost term");
    assert_eq!(
        lost.reason,
        StepDownReason::OtherHolder {
            holder: Some("usurper".into()),
            epoch: term.epoch + 1
        }
    );
    assert_eq!(
        a.leadership(),
        Leadership::Following {
            holder: Some("usurper".into()),
            lost: Some(lost)
        }
    );
    a.stop().await;
    // a was not leading when stopped: it did not release the usurper's lease.
    assert_eq!(holder(&lease(&ns).await).as_deref(), Some("usurper"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_a_stale_resource_version_is_rejected() {
    let ns = TestNamespace::create("ha-stale").await;
    let lock = LeaseLock::new(ns.client(), ns.name(), LEASE);
    let now = k8s_openapi::jiff::Timestamp::now;
    let created = match lock
        .create(weir_ha::lease::acquired("a", 1, &fast(), now()))
        .await
    {
        Ok(Write::Written(l)) => *l,
        other => panic!("{other:?}"),
    };
    // A second create loses: the Lease exists.
    assert!(matches!(
        lock.create(weir_ha::lease::acquired("b", 1, &fast(), now()))
            .await,
        Ok(Write::Conflict)
    ));
    // b takes over on the current version...
    let b_spec = weir_ha::lease::acquired("b", 2, &fast(), now());
    assert!(matches!(
        lock.replace(&created, b_spec).await,
        Ok(Write::Written(_))
    ));
    // ...and a's renewal on the version it read is refused.
    let a_renewal = weir_ha::lease::renewed(created.spec.as_ref().unwrap(), &fast(), now());
    assert!(matches!(
        lock.replace(&created, a_renewal).await,
        Ok(Write::Conflict)
    ));
    let l = lock.get().await.unwrap().unwrap().spec.unwrap();
    assert_eq!(
        (l.holder_identity.as_deref(), l.lease_transitions),
        (Some("b"), Some(2))
    );
}

/// The epoch of a term fences the latest-checkpoint pointer: after a takeover the deposed
/// leader's pointer write is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_epochs_fence_the_latest_checkpoint_pointer() {
    let ns = TestNamespace::create("ha-fence").await;
    let dir = std::env::temp_dir().join(format!("weir-ha-fence-{}", ns.name()));
    let storage = LocalFsStorage::new(&dir.display().to_string()).unwrap();

    let (a, old, mut b) = leader_and_standby(&ns).await;
    advance_latest(&storage, &old.fencing(), 1, "chk-1").unwrap();
    a.abort();
    let new = lead(&mut b).await;
    advance_latest(&storage, &new.fencing(), 2, "chk-2").unwrap();

    // The deposed leader, still holding its old term, tries to record a checkpoint.
    match advance_latest(&storage, &old.fencing(), 3, "chk-3-of-the-old-leader") {
        Err(StorageError::Fenced {
            writer_epoch,
            pointer_epoch,
            ..
        }) => assert_eq!((writer_epoch, pointer_epoch), (old.epoch, new.epoch)),
        other => panic!("expected Fenced, got {other:?}"),
    }
    b.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// A Lease created anew (e.g. after the old one was deleted) starts above the floor, so the
/// epochs already in the pointer stay below the new leader's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_lease_starts_above_the_epoch_floor() {
    let ns = TestNamespace::create("ha-floor").await;
    let mut a = candidate(&ns, "a").with_epoch_floor(41).start();
    assert_eq!(lead(&mut a).await.epoch, 42);
    a.stop().await;
}
