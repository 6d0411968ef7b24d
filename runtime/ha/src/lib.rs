//! High availability for Weir: leader election through a Kubernetes `coordination.k8s.io/v1`
//! Lease, with a fencing epoch for the leader's writes.
//!
//! Candidates (the JobManager replicas of one job, the operator's replicas) share one Lease.
//! [`LeaderElector`] runs the election for one candidate and publishes its [`Leadership`]; while
//! leading it holds a [`Term`] whose `epoch` rises with every new term, and which goes with
//! every write of job metadata ([`Term::fencing`] for the latest-checkpoint pointer), so a
//! deposed leader that wakes up cannot overwrite its successor's progress.
//!
//! - [`decide`]: the pure decision (observed Lease, role, time, identity, configuration →
//!   acquire, renew, wait or step down, with the reason), tested with a table of cases;
//! - [`lease`]: reading and conditionally writing the Lease (`resourceVersion` optimistic
//!   concurrency: a conflict means somebody else won);
//! - [`elector`]: the loop that ties them together, with cancellation.
//!
//! See `docs/high-availability.md`.

pub mod decide;
pub mod elector;
pub mod lease;

pub use decide::{ConfigError, ElectionConfig, StepDownReason};
pub use elector::{ElectionHandle, LeaderElector, Leadership, Lost, Term, default_identity};
