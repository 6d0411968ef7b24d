//! The *apply* step of leader election: reading and writing the `coordination.k8s.io/v1` Lease
//! with optimistic concurrency.
//!
//! Every write names the `resourceVersion` it read (a create names none and fails if the Lease
//! exists), so of two candidates writing on the same observation exactly one succeeds; the other
//! gets [`Write::Conflict`]: somebody else won, and it must read again before deciding anything.
//! The Lease content each action writes is built by pure functions ([`acquired`], [`renewed`],
//! [`released`]), tested without a server.

use crate::decide::{ElectionConfig, ObservedLease};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::{Duration, Instant};

/// Reading or writing the Lease failed for a reason other than losing a race.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server refused or could not be reached.
    #[error("{action} lease {namespace}/{name}: {source}")]
    Api {
        /// What was tried.
        action: &'static str,
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// Why it failed.
        source: kube::Error,
    },
}

/// The outcome of a conditional write.
#[derive(Debug, Clone)]
pub enum Write {
    /// It went through; the Lease as stored now.
    Written(Box<Lease>),
    /// The Lease changed since it was read (or was created meanwhile): somebody else won.
    Conflict,
}

/// One Lease in one namespace.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    name: String,
}

impl LeaseLock {
    /// The Lease `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Lease's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Reads the Lease; `None` when it does not exist.
    pub async fn get(&self) -> Result<Option<Lease>, LeaseError> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error("reading", e))
    }

    /// Creates the Lease with `spec`; [`Write::Conflict`] when it exists already.
    pub async fn create(&self, spec: LeaseSpec) -> Result<Write, LeaseError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(l) => Ok(Write::Written(Box::new(l))),
            Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {
                Ok(Write::Conflict)
            }
            Err(e) => Err(self.error("creating", e)),
        }
    }

    /// Replaces the spec of `observed` (the Lease as read, whose `resourceVersion` the write
    /// names) with `spec`; [`Write::Conflict`] when the Lease changed since or is gone.
    pub async fn replace(&self, observed: &Lease, spec: LeaseSpec) -> Result<Write, LeaseError> {
        let lease = Lease {
            metadata: observed.metadata.clone(),
            spec: Some(spec),
        };
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => Ok(Write::Written(Box::new(l))),
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => Ok(Write::Conflict),
            Err(e) => Err(self.error("writing", e)),
        }
    }

    fn error(&self, action: &'static str, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            action,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }
}

/// The fencing epoch a Lease carries: its `leaseTransitions` (absent or negative: 0).
pub fn epoch_of(spec: &LeaseSpec) -> u64 {
    spec.lease_transitions
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(0)
}

/// What the decide step needs of a Lease read at `observed_at`. A Lease without a (positive)
/// duration is judged with this process's own.
pub fn observe(spec: &LeaseSpec, observed_at: Instant, config: &ElectionConfig) -> ObservedLease {
    ObservedLease {
        holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
        epoch: epoch_of(spec),
        lease_duration: spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(config.lease_duration, Duration::from_secs),
        observed_at,
    }
}

/// The epoch of a new term: one more than the current Lease's, and above `floor` (e.g. the
/// epoch already in a checkpoint pointer, when the Lease was deleted and starts over).
pub fn next_epoch(current: Option<&LeaseSpec>, floor: u64) -> u64 {
    current.map_or(0, epoch_of).max(floor) + 1
}

/// The Lease spec that acquires a new term with `epoch` for `identity` at `now`.
///
/// `leaseTransitions` is an `int32` in the API: an epoch beyond it is clamped, which would stop
/// the epoch from rising — two billion terms do not happen.
pub fn acquired(identity: &str, epoch: u64, config: &ElectionConfig, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(config.lease_duration_seconds()),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(i32::try_from(epoch).unwrap_or(i32::MAX)),
        ..LeaseSpec::default()
    }
}

/// The spec of `current` renewed at `now` (holder, epoch and acquire time unchanged).
pub fn renewed(current: &LeaseSpec, config: &ElectionConfig, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(config.lease_duration_seconds()),
        ..current.clone()
    }
}

/// The spec of `current` released at `now`: no holder and a 1 s duration, so the next candidate
/// acquires at once (client-go's release on cancel); the epoch stays, the next term raises it.
pub fn released(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ElectionConfig {
        ElectionConfig {
            lease_duration: Duration::from_millis(2500),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
        }
    }

    #[test]
    fn epochs_rise_and_respect_the_floor() {
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(next_epoch(None, 0), 1);
        assert_eq!(next_epoch(None, 41), 42);
        let a = acquired("a", 7, &config(), now);
        assert_eq!(next_epoch(Some(&a), 0), 8);
        assert_eq!(next_epoch(Some(&a), 20), 21);
        assert_eq!(next_epoch(Some(&LeaseSpec::default()), 0), 1);
        let negative = LeaseSpec {
            lease_transitions: Some(-3),
            ..LeaseSpec::default()
        };
        assert_eq!(epoch_of(&negative), 0);
    }

    #[test]
    fn acquire_renew_release_write_what_the_next_reader_needs() {
        let t1 = Timestamp::from_second(100).unwrap();
        let t2 = Timestamp::from_second(102).unwrap();
        let a = acquired("jm-0", 3, &config(), t1);
        assert_eq!(a.holder_identity.as_deref(), Some("jm-0"));
        assert_eq!(a.lease_transitions, Some(3));
        assert_eq!(a.lease_duration_seconds, Some(3)); // 2.5 s rounded up
        let r = renewed(&a, &config(), t2);
        assert_eq!(r.renew_time, Some(MicroTime(t2)));
        assert_eq!(r.acquire_time, Some(MicroTime(t1)));
        assert_eq!(
            (r.holder_identity.as_deref(), r.lease_transitions),
            (Some("jm-0"), Some(3))
        );
        let x = released(&r, t2);
        assert_eq!(x.holder_identity, None);
        assert_eq!(x.lease_transitions, Some(3));
        assert_eq!(x.lease_duration_seconds, Some(1));

        let at = Instant::now();
        let seen = observe(&a, at, &config());
        assert_eq!(seen.holder.as_deref(), Some("jm-0"));
        assert_eq!(
            (seen.epoch, seen.lease_duration),
            (3, Duration::from_secs(3))
        );
        let empty = observe(
            &LeaseSpec {
                holder_identity: Some(String::new()),
                ..LeaseSpec::default()
            },
            at,
            &config(),
        );
        assert_eq!(empty.holder, None);
        assert_eq!(empty.lease_duration, config().lease_duration);
    }
}
