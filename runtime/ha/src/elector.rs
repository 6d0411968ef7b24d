//! The election loop: observe the Lease, [`decide`], apply, publish the result.
//!
//! The state goes out on a [`tokio::sync::watch`] channel as a [`Leadership`]: `Leading` with
//! the [`Term`] (identity and fencing epoch) after an acquisition, `Following` after a step-down
//! (with the reason, [`Lost`]) or while another holds the Lease, `Stopped` at the end. Whoever
//! acts as leader watches it and stops acting the moment it leaves `Leading`.
//!
//! Every API call is bounded in time: a leader's by what is left of its renew deadline, so a
//! hung request cannot keep it leading past that deadline.

use crate::decide::{Action, ElectionConfig, Role, StepDownReason, WaitReason, decide};
use crate::lease::{self, LeaseError, LeaseLock, Write};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::jiff::Timestamp;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use weir_core::checkpoint::latest::Fencing;

/// One term of leadership: who leads and with which fencing epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The leader's identity.
    pub identity: String,
    /// The fencing epoch: the Lease's `leaseTransitions` written when this term began. Every
    /// later term has a higher one.
    pub epoch: u64,
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub lease: String,
}

impl Term {
    /// The fencing token for the latest-checkpoint pointer
    /// ([`weir_core::checkpoint::latest::advance_latest`]): the Lease's epoch and the leader's
    /// identity, so the pointer refuses a deposed leader's writes once a later leader wrote.
    ///
    /// Use it *instead of* [`weir_core::checkpoint::latest::claim_epoch`], which hands out epochs
    /// of its own: the two must not mix on one pointer. When the Lease may have been deleted
    /// (epochs start over), start the elector with [`LeaderElector::with_epoch_floor`] set to the
    /// pointer's epoch.
    pub fn fencing(&self) -> Fencing {
        Fencing {
            epoch: self.epoch,
            writer: self.identity.clone(),
        }
    }
}

/// A term that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The term's epoch.
    pub epoch: u64,
    /// Why it ended.
    pub reason: StepDownReason,
}

/// Where a candidate stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Not leading.
    Following {
        /// The Lease's holder as last seen (`None`: no Lease, released, or not read yet).
        holder: Option<String>,
        /// The last term of this candidate that ended, if any.
        lost: Option<Lost>,
    },
    /// Leading in this term.
    Leading(Term),
    /// The election ended (shutdown); a term held then was released.
    Stopped,
}

impl Leadership {
    /// The term, while leading.
    pub fn term(&self) -> Option<&Term> {
        match self {
            Leadership::Leading(t) => Some(t),
            _ => None,
        }
    }
}

/// A candidate for the leadership of one Lease.
pub struct LeaderElector {
    lock: LeaseLock,
    identity: String,
    config: ElectionConfig,
    epoch_floor: u64,
}

impl LeaderElector {
    /// A candidate named `identity` for the Lease `namespace/name`. The identity must be unique
    /// among the candidates (see [`default_identity`]).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: impl Into<String>,
        config: ElectionConfig,
    ) -> Result<Self, crate::decide::ConfigError> {
        config.validate()?;
        Ok(Self {
            lock: LeaseLock::new(client, namespace, name),
            identity: identity.into(),
            config,
            epoch_floor: 0,
        })
    }

    /// Every term this candidate starts gets an epoch above `floor`. Pass the highest epoch
    /// already written with the Lease's terms (e.g. the latest-checkpoint pointer's), so that
    /// epochs keep rising when the Lease itself was deleted and starts over.
    pub fn with_epoch_floor(mut self, floor: u64) -> Self {
        self.epoch_floor = floor;
        self
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Runs the election on a task of its own; the handle tells the state and stops it.
    pub fn start(self) -> ElectionHandle {
        let (tx, rx) = watch::channel(Leadership::Following {
            holder: None,
            lost: None,
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(tx, async move {
            // A dropped handle stops the election as well.
            let _ = stop_rx.await;
        }));
        ElectionHandle {
            state: rx,
            stop: Some(stop_tx),
            task,
        }
    }

    /// Runs the election until `shutdown` completes, publishing every change on `state`; then
    /// releases the Lease if it holds it (so a successor need not wait for expiry) and
    /// publishes [`Leadership::Stopped`]. API errors are logged and retried, never returned:
    /// a leader that cannot reach the API server steps down at its renew deadline.
    pub async fn run(self, state: watch::Sender<Leadership>, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut s = Loop {
            elector: &self,
            state: &state,
            role: Role::Candidate,
            current: None,
            seen: None,
            lost: None,
        };
        while s.step(&mut shutdown).await.is_continue() {}
        s.release().await;
        state.send_replace(Leadership::Stopped);
    }
}

/// The loop's state between steps.
struct Loop<'a> {
    elector: &'a LeaderElector,
    state: &'a watch::Sender<Leadership>,
    role: Role,
    /// The Lease as last read or written (`None`: absent or never read).
    current: Option<Lease>,
    /// Its spec and when this process first saw that spec.
    seen: Option<(LeaseSpec, Instant)>,
    /// The last term that ended.
    lost: Option<Lost>,
}

/// The outcome of an awaited call under the shutdown signal and a time budget.
enum Bounded<T> {
    Done(T),
    TimedOut,
    Shutdown,
}

async fn bounded<T>(
    shutdown: &mut (impl Future<Output = ()> + Unpin),
    budget: Duration,
    call: impl Future<Output = T>,
) -> Bounded<T> {
    tokio::select! {
        biased;
        () = &mut *shutdown => Bounded::Shutdown,
        r = tokio::time::timeout(budget, call) => match r {
            Ok(v) => Bounded::Done(v),
            Err(_) => Bounded::TimedOut,
        },
    }
}

/// Whether the loop goes on.
enum Flow {
    Continue,
    Stop,
}

impl Flow {
    fn is_continue(&self) -> bool {
        matches!(self, Flow::Continue)
    }
}

impl Loop<'_> {
    async fn step(&mut self, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> Flow {
        let elector = self.elector;
        let config = elector.config;
        let lock = &elector.lock;

        // Observe. A failed read leaves the last observation in place: a candidate's write on
        // it is conditional, and a leader's renew deadline keeps running.
        match bounded(shutdown, self.call_budget(), lock.get()).await {
            Bounded::Shutdown => return Flow::Stop,
            Bounded::TimedOut => tracing::warn!(lease = lock.name(), "reading the lease timed out"),
            Bounded::Done(Err(e)) => tracing::warn!("{e}"),
            Bounded::Done(Ok(lease)) => self.saw(lease, Instant::now()),
        }
        let observed = self
            .seen
            .as_ref()
            .map(|(spec, at)| lease::observe(spec, *at, &config));
        if let Role::Candidate = self.role {
            self.publish_following(observed.as_ref().and_then(|o| o.holder.clone()));
        }

        // Decide.
        let now = Instant::now();
        let action = decide(
            observed.as_ref(),
            self.role,
            now,
            &self.elector.identity,
            &config,
        );
        tracing::trace!(?action, "lease election");

        // Apply.
        match action {
            Action::Wait { until, reason } => {
                if let WaitReason::HeldBy { holder, .. } = &reason {
                    tracing::debug!(lease = lock.name(), holder, "lease held by another");
                }
                let sleep = until.saturating_duration_since(now);
                match bounded(shutdown, sleep, std::future::pending::<()>()).await {
                    Bounded::Shutdown => Flow::Stop,
                    _ => Flow::Continue,
                }
            }
            Action::Acquire(reason) => {
                let epoch = lease::next_epoch(
                    self.current.as_ref().and_then(|l| l.spec.as_ref()),
                    self.elector.epoch_floor,
                );
                let spec =
                    lease::acquired(&self.elector.identity, epoch, &config, Timestamp::now());
                match self.write(shutdown, spec).await {
                    Written::Yes(sent) => {
                        let term = Term {
                            identity: self.elector.identity.clone(),
                            epoch,
                            namespace: lock.namespace().to_string(),
                            lease: lock.name().to_string(),
                        };
                        tracing::info!(lease = lock.name(), epoch, ?reason, "became leader");
                        self.role = Role::Leader {
                            epoch,
                            last_renewal: sent,
                        };
                        self.state.send_replace(Leadership::Leading(term));
                        Flow::Continue
                    }
                    Written::Lost => Flow::Continue,
                    Written::Failed => self.pause(shutdown).await,
                    Written::Shutdown => Flow::Stop,
                }
            }
            Action::Renew => {
                let Some(spec) = self.seen.as_ref().map(|(spec, _)| spec) else {
                    return Flow::Continue;
                };
                let spec = lease::renewed(spec, &config, Timestamp::now());
                match self.write(shutdown, spec).await {
                    Written::Yes(sent) => {
                        if let Role::Leader { last_renewal, .. } = &mut self.role {
                            *last_renewal = sent;
                        }
                        Flow::Continue
                    }
                    // Read again at once: the decision on what changed is the next step's.
                    Written::Lost => Flow::Continue,
                    Written::Failed => self.pause(shutdown).await,
                    Written::Shutdown => Flow::Stop,
                }
            }
            Action::StepDown(reason) => {
                let Role::Leader { epoch, .. } = self.role else {
                    return Flow::Continue;
                };
                tracing::warn!(lease = lock.name(), epoch, %reason, "lost leadership");
                self.role = Role::Candidate;
                self.lost = Some(Lost { epoch, reason });
                self.publish_following(observed.and_then(|o| o.holder));
                Flow::Continue
            }
        }
    }

    /// Records a read (or our own successful write) of the Lease: its content, and when this
    /// process first saw that content — the start of the holder's validity in our eyes.
    fn saw(&mut self, lease: Option<Lease>, at: Instant) {
        let spec = lease.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        self.seen = match (spec, self.seen.take()) {
            (None, _) => None,
            (Some(spec), Some((old, since))) if old == spec => Some((old, since)),
            (Some(spec), _) => Some((spec, at)),
        };
        self.current = lease;
    }

    /// How long the next call may take: a leader only what is left before its renew deadline.
    fn call_budget(&self) -> Duration {
        let config = &self.elector.config;
        match self.role {
            Role::Candidate => config.renew_deadline,
            Role::Leader { last_renewal, .. } => {
                (last_renewal + config.renew_deadline).saturating_duration_since(Instant::now())
            }
        }
    }

    /// After a failed call: wait a retry period, or for a leader only until its deadline.
    async fn pause(&self, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> Flow {
        let wait = self.elector.config.retry_period.min(match self.role {
            Role::Candidate => Duration::MAX,
            Role::Leader { .. } => self.call_budget(),
        });
        match bounded(shutdown, wait, std::future::pending::<()>()).await {
            Bounded::Shutdown => Flow::Stop,
            _ => Flow::Continue,
        }
    }

    /// Writes `spec` conditionally on the Lease as last read (creating it when there was none).
    async fn write(
        &mut self,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
        spec: LeaseSpec,
    ) -> Written {
        let elector = self.elector;
        let lock = &elector.lock;
        // The leader's clock starts before the request: any observer sees the write later.
        let sent = Instant::now();
        let call = async {
            match &self.current {
                None => lock.create(spec).await,
                Some(l) => lock.replace(l, spec).await,
            }
        };
        let result: Result<Write, LeaseError> =
            match bounded(shutdown, self.call_budget(), call).await {
                Bounded::Shutdown => return Written::Shutdown,
                Bounded::TimedOut => {
                    tracing::warn!(lease = lock.name(), "writing the lease timed out");
                    return Written::Failed;
                }
                Bounded::Done(r) => r,
            };
        match result {
            Ok(Write::Written(l)) => {
                self.saw(Some(*l), sent);
                Written::Yes(sent)
            }
            Ok(Write::Conflict) => {
                tracing::debug!(lease = lock.name(), "lease changed under us");
                Written::Lost
            }
            Err(e) => {
                tracing::warn!("{e}");
                Written::Failed
            }
        }
    }

    fn publish_following(&self, holder: Option<String>) {
        let next = Leadership::Following {
            holder,
            lost: self.lost.clone(),
        };
        self.state.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    }

    /// On shutdown: hand the Lease back if this process holds it, best effort, so the next
    /// candidate need not wait for it to expire.
    async fn release(&mut self) {
        let Role::Leader { epoch, .. } = self.role else {
            return;
        };
        let (Some(current), Some((spec, _))) = (&self.current, &self.seen) else {
            return;
        };
        let elector = self.elector;
        let lock = &elector.lock;
        let released = lease::released(spec, Timestamp::now());
        let budget = self.call_budget().min(self.elector.config.retry_period);
        match tokio::time::timeout(budget, lock.replace(current, released)).await {
            Ok(Ok(Write::Written(_))) => tracing::info!(lease = lock.name(), epoch, "released"),
            Ok(Ok(Write::Conflict)) => {}
            Ok(Err(e)) => tracing::warn!("releasing: {e}"),
            Err(_) => tracing::warn!(lease = lock.name(), "releasing the lease timed out"),
        }
        self.role = Role::Candidate;
    }
}

/// The outcome of a conditional write in the loop.
enum Written {
    /// It went through; the request was sent at this instant.
    Yes(Instant),
    /// Somebody else changed the Lease first.
    Lost,
    /// The call failed or timed out.
    Failed,
    /// Shutdown came first.
    Shutdown,
}

/// A running election (see [`LeaderElector::start`]). Dropping it stops the election like
/// [`ElectionHandle::stop`], without waiting.
pub struct ElectionHandle {
    state: watch::Receiver<Leadership>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ElectionHandle {
    /// A receiver of every change of state.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.state.clone()
    }

    /// The state now.
    pub fn leadership(&self) -> Leadership {
        self.state.borrow().clone()
    }

    /// Waits until this candidate leads; `None` if the election stopped first.
    pub async fn leading(&mut self) -> Option<Term> {
        let s = self
            .state
            .wait_for(|s| matches!(s, Leadership::Leading(_) | Leadership::Stopped))
            .await
            .ok()?;
        s.term().cloned()
    }

    /// Waits until `term` ends; the reason, or `None` if the election stopped first.
    pub async fn lost(&mut self, term: &Term) -> Option<Lost> {
        let s = self.state.wait_for(|s| s.term() != Some(term)).await.ok()?;
        match &*s {
            Leadership::Following { lost: Some(l), .. } if l.epoch == term.epoch => Some(l.clone()),
            _ => None,
        }
    }

    /// Stops the election, releasing the Lease if held, and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Ends the election at once without releasing the Lease, as a crash would: others take
    /// over only when it expires.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// An identity unique to this process: the pod's name (`HOSTNAME` in a pod) and a part unique
/// to the process, so that a restarted process never mistakes its predecessor's term for its
/// own.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "weir".to_string());
    format!("{host}-{}", weir_core::checkpoint::latest::new_writer_id())
}
