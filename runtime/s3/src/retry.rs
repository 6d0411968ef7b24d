//! Retrying requests: exponential backoff with jitter, a bounded number of attempts, and an
//! overall deadline per operation, so a checkpoint write against a dead endpoint fails in
//! bounded time (and is then a failed checkpoint) instead of hanging the coordinator.

use crate::error::{Failure, FailureKind};
use std::future::Future;
use std::time::{Duration, Instant};

/// How long and how often to try.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The operation must end by then.
    pub deadline: Instant,
}

/// A request that failed for good.
#[derive(Debug, Clone)]
pub(crate) struct GaveUp {
    pub last: Failure,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// The backoff before retry `n` (1-based): doubling from `initial`, capped at `max`, with up to
/// half of it as jitter so that writers that failed together do not retry together.
fn backoff(p: &Policy, n: u32) -> Duration {
    let base = p
        .initial_backoff
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(p.max_backoff);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = base.mul_f64(f64::from(nanos % 1000) / 2000.0);
    base.saturating_sub(base / 4) + jitter
}

/// Runs `attempt` until it succeeds, fails with an error a retry cannot help, runs out of
/// attempts, or would end past the deadline.
pub(crate) async fn retry<T, F, Fut>(p: &Policy, mut attempt: F) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let started = Instant::now();
    let mut n = 0u32;
    loop {
        n += 1;
        let left = p.deadline.saturating_duration_since(Instant::now());
        let result = match tokio::time::timeout(left, attempt()).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                FailureKind::Unreachable,
                format!("no answer within the operation deadline ({left:.1?} left)"),
            )),
        };
        let failure = match result {
            Ok(v) => return Ok(v),
            Err(f) => f,
        };
        let wait = backoff(p, n);
        if !failure.kind.retryable() || n >= p.max_attempts || Instant::now() + wait >= p.deadline {
            return Err(GaveUp {
                last: failure,
                attempts: n,
                elapsed: started.elapsed(),
            });
        }
        tracing::debug!(
            attempt = n,
            ?wait,
            "S3 request failed, retrying: {}",
            failure.message
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(deadline: Duration) -> Policy {
        Policy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            deadline: Instant::now() + deadline,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy(Duration::from_secs(1));
        for (n, (lo, hi)) in [(1, (7, 13)), (2, (15, 25)), (3, (30, 50)), (6, (30, 50))] {
            let b = backoff(&p, n).as_millis();
            assert!((lo..=hi).contains(&b), "retry {n}: {b} ms");
        }
    }

    #[test]
    fn transient_failures_are_retried_until_success() {
        let mut calls = 0;
        let r = rt().block_on(retry(&policy(Duration::from_secs(5)), || {
            calls += 1;
            let c = calls;
            async move {
                if c < 3 {
                    Err(Failure::new(FailureKind::Transient, "503"))
                } else {
                    Ok(c)
                }
            }
        }));
        assert_eq!(r.unwrap(), 3);
    }

    #[test]
    fn permanent_failures_are_not_retried_and_attempts_are_bounded() {
        let mut calls = 0;
        let r: Result<(), _> = rt().block_on(retry(&policy(Duration::from_secs(5)), || {
            calls += 1;
            async { Err(Failure::new(FailureKind::NoSuchBucket, "NoSuchBucket")) }
        }));
        assert_eq!((r.unwrap_err().attempts, calls), (1, 1));
        let r: Result<(), _> = rt().block_on(retry(&policy(Duration::from_secs(5)), || async {
            Err(Failure::new(FailureKind::Unreachable, "refused"))
        }));
        assert_eq!(r.unwrap_err().attempts, 5);
    }

    #[test]
    fn the_deadline_bounds_the_operation() {
        let started = Instant::now();
        let r: Result<(), _> =
            rt().block_on(retry(&policy(Duration::from_millis(100)), || async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(())
            }));
        let e = r.unwrap_err();
        assert_eq!(e.last.kind, FailureKind::Unreachable);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
