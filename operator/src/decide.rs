//! The *decide* step of a reconciliation: from what was observed about one StreamJob to what
//! to do and what its status says. A pure function — no I/O, no clock but the one passed in —
//! tested with tables of cases below.
//!
//! The lifecycle it drives, besides following the job's state:
//! - **first deployment** of the spec, restoring `initialSavepointPath` or whatever checkpoint
//!   storage holds;
//! - **upgrade** when the spec's deployment hash differs from the deployed one, by
//!   `spec.job.upgradeMode`: `savepoint` stops the job with a savepoint (retried, timed out,
//!   falling back to a young enough checkpoint or refusing with a reason), `last-state`
//!   redeploys from the latest checkpoint, `stateless` from nothing;
//! - **suspend** (stop with a savepoint, no pods) and **resume** (from that savepoint);
//! - **rollback** of an upgrade that does not become stable in time, to the last stable spec
//!   from the savepoint taken before the upgrade;
//! - savepoints and checkpoints on request (nonces) and on a schedule;
//! - **deletion** by `spec.deletionPolicy`: a final savepoint, retain, or dispose.

use weir_api::{DeletionPolicy, JobState, LifecycleState, SavepointTriggerType, UpgradeMode};

/// What the spec asks for (the operator's view of `spec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Deployment hash of the spec (see `StreamJobSpec::deployment_view`).
    pub hash: String,
    /// Hash of the whole spec: an operation given up on is tried again once it changes.
    pub full_hash: String,
    /// `spec.job.state` is `running`.
    pub running: bool,
    /// `spec.job.upgradeMode`.
    pub mode: UpgradeMode,
    /// `spec.upgrade.savepointTimeout`, ms.
    pub savepoint_timeout_ms: i64,
    /// `spec.upgrade.savepointAttempts`.
    pub savepoint_attempts: u32,
    /// `spec.upgrade.fallbackMaxCheckpointAge`, ms.
    pub fallback_max_age_ms: Option<i64>,
    /// Rollbacks are on (and possible: checkpointing is configured).
    pub rollback: bool,
    /// `spec.upgrade.rollback.readinessTimeout`, ms.
    pub readiness_timeout_ms: i64,
    /// `spec.job.savepointTriggerNonce`.
    pub savepoint_nonce: Option<i64>,
    /// `spec.job.checkpointTriggerNonce`.
    pub checkpoint_nonce: Option<i64>,
    /// `spec.savepoints.interval`, ms.
    pub savepoint_interval_ms: Option<i64>,
    /// `spec.deletionPolicy`.
    pub deletion: DeletionPolicy,
}

/// What is deployed (from `status.reconciliation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// Its deployment hash.
    pub hash: String,
    /// Whether its pods run.
    pub running: bool,
    /// When it was deployed, ms.
    pub deployed_at_ms: i64,
    /// The hash it upgraded, while it has not been stable.
    pub upgraded_from: Option<String>,
    /// A last stable spec exists (other than this one).
    pub stable_spec: bool,
    /// The savepoint taken before the upgrade.
    pub rollback_savepoint: Option<String>,
    /// The hash of a spec that was rolled back.
    pub rolled_back: Option<String>,
    /// The operation given up on, `<purpose>/<full hash>`.
    pub gave_up_on: Option<String>,
    /// Why, and what to do.
    pub blocked: Option<String>,
    /// Where it restores from.
    pub restore: Restore,
}

/// A savepoint the operator waits for (from `status.pendingSavepoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Why.
    pub purpose: SavepointTriggerType,
    /// When it was asked for, ms.
    pub triggered_ms: i64,
    /// Attempt, from 1.
    pub attempt: u32,
    /// The nonce that asked for it.
    pub nonce: Option<i64>,
}

/// What the JobManager says about the pending savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// No savepoint is pending.
    Nothing,
    /// Still being taken.
    InProgress,
    /// Done.
    Completed {
        /// Where.
        path: String,
    },
    /// Failed (or the JobManager refused or forgot the request).
    Failed(String),
    /// The JobManager did not answer.
    Unreachable,
}

/// What reconciliation observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// The StreamJob is being deleted (has a deletion timestamp).
    pub deleting: bool,
    /// The spec's problems (field, message and fix each), empty when valid.
    pub invalid: Vec<String>,
    /// Owned objects that do not exist (kind/name), empty when all do.
    pub missing: Vec<String>,
    /// JobManager pods that are ready (the leader serves its REST API).
    pub jobmanager_ready: bool,
    /// Pods of the StreamJob exist, terminating ones included.
    pub pods: bool,
    /// The job's state from the JobManager's REST API, when it answered.
    pub job: Option<JobState>,
    /// The deployed run has completed enough checkpoints without a restart to be stable.
    pub stable: bool,
    /// The lifecycle state in the status before this reconciliation.
    pub previous: Option<LifecycleState>,
    /// The spec.
    pub want: Want,
    /// What is deployed; `None` before the first deployment.
    pub deployed: Option<Deployed>,
    /// The savepoint being waited for.
    pub pending: Option<Pending>,
    /// The JobManager's answer about it.
    pub poll: Poll,
    /// When the newest checkpoint the status knows of completed, ms.
    pub latest_checkpoint_ms: Option<i64>,
    /// When the newest savepoint in the history completed, ms.
    pub last_savepoint_ms: Option<i64>,
    /// `status.lastSavepointTriggerNonce`.
    pub handled_savepoint_nonce: Option<i64>,
    /// `status.lastCheckpointTriggerNonce`.
    pub handled_checkpoint_nonce: Option<i64>,
}

/// Where a deployment restores from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// The newest snapshot in checkpoint storage (else `initialSavepointPath`).
    Latest,
    /// This savepoint, unless storage holds a newer snapshot.
    Savepoint(String),
    /// Nothing: snapshots taken before the deployment are ignored.
    Fresh,
}

/// Which spec a new deployment is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// The StreamJob's spec.
    Wanted,
    /// The one deployed now.
    Deployed,
    /// The last stable one (a rollback).
    Stable,
}

/// A new deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Its spec.
    pub spec: Spec,
    /// Pods run.
    pub running: bool,
    /// Where it restores from.
    pub restore: Restore,
    /// The hash it upgrades (kept until stable).
    pub upgraded_from: Option<String>,
    /// The savepoint a rollback of it would restore.
    pub rollback_savepoint: Option<String>,
    /// A hash rolled back by this deployment.
    pub rolled_back: Option<String>,
}

/// A savepoint to ask the JobManager for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Why.
    pub purpose: SavepointTriggerType,
    /// Stop the job once it completes.
    pub stop: bool,
    /// Attempt, from 1.
    pub attempt: u32,
    /// The requesting nonce (manual savepoints).
    pub nonce: Option<i64>,
    /// Why the previous attempt failed.
    pub last_failure: Option<String>,
}

/// What to do with the owned objects and the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Leave the objects alone (an invalid spec is never half-applied).
    Hold,
    /// Apply the deployed objects as they are (creates what is missing, repairs drift).
    Keep,
    /// Make a new deployment.
    Deploy(Plan),
    /// Ask the JobManager for a savepoint.
    Savepoint(Trigger),
    /// Ask the JobManager for a checkpoint (`spec.job.checkpointTriggerNonce`).
    Checkpoint,
    /// Let the deletion proceed: remove the finalizer (owned objects go with the owner);
    /// `dispose` deletes checkpoint storage first.
    Release {
        /// Delete the checkpoints and the operator's savepoints.
        dispose: bool,
    },
}

/// A condition's new value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// `True` or `False`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human message.
    pub message: String,
}

impl Cond {
    fn yes(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: true,
            reason,
            message: message.into(),
        }
    }

    fn no(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// A notable thing to publish as an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Warning rather than Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub step: Step,
    /// The new lifecycle state.
    pub lifecycle: LifecycleState,
    /// `Ready`: the job runs.
    pub ready: Cond,
    /// `Progressing`: a deployment or an operation is under way.
    pub progressing: Cond,
    /// `Degraded`: something needs attention.
    pub degraded: Cond,
    /// The status' error message.
    pub error: Option<String>,
    /// The pending savepoint completed here: record it in the history.
    pub completed: Option<(SavepointTriggerType, String)>,
    /// Forget the pending savepoint.
    pub clear_pending: bool,
    /// Give up on this operation (`status.reconciliation.gaveUpOn`), and why.
    pub give_up: Option<(String, String)>,
    /// Mark these nonces handled.
    pub handled_savepoint_nonce: Option<i64>,
    /// See above.
    pub handled_checkpoint_nonce: Option<i64>,
    /// Events besides the lifecycle transition's.
    pub notices: Vec<Notice>,
}

impl Decision {
    fn new(
        step: Step,
        lifecycle: LifecycleState,
        ready: Cond,
        progressing: Cond,
        degraded: Cond,
    ) -> Self {
        Decision {
            step,
            lifecycle,
            ready,
            progressing,
            degraded,
            error: None,
            completed: None,
            clear_pending: false,
            give_up: None,
            handled_savepoint_nonce: None,
            handled_checkpoint_nonce: None,
            notices: Vec::new(),
        }
    }

    fn notice(mut self, warning: bool, reason: &'static str, message: impl Into<String>) -> Self {
        self.notices.push(Notice {
            warning,
            reason,
            message: message.into(),
        });
        self
    }

    fn with_step(mut self, step: Step) -> Self {
        self.step = step;
        self
    }

    fn failing(mut self, message: impl Into<String>) -> Self {
        self.error = Some(message.into());
        self
    }
}

fn purpose_key(p: SavepointTriggerType) -> &'static str {
    match p {
        SavepointTriggerType::Upgrade => "upgrade",
        SavepointTriggerType::Manual => "manual",
        SavepointTriggerType::Periodic => "periodic",
        SavepointTriggerType::Suspend => "suspend",
        SavepointTriggerType::Delete => "delete",
    }
}

/// The key of an operation for `gaveUpOn`.
pub fn give_up_key(p: SavepointTriggerType, full_hash: &str) -> String {
    format!("{}/{full_hash}", purpose_key(p))
}

fn secs(ms: i64) -> String {
    format!("{}s", ms / 1000)
}

/// Decides one reconciliation of one StreamJob.
pub fn decide(o: &Observed) -> Decision {
    let mut d = decide_unstaged(o);
    // A deployment that must not restore what storage holds from before it (a stateless start,
    // a rollback to an older savepoint) starts only once the old pods are gone: until then
    // they may still complete checkpoints. It is deployed stopped; resuming starts it.
    if let (Step::Deploy(plan), Some(deployed)) = (&mut d.step, &o.deployed)
        && plan.running
        && plan.restore != Restore::Latest
        && deployed.running
        && (o.pods || o.jobmanager_ready)
    {
        plan.running = false;
    }
    d
}

fn decide_unstaged(o: &Observed) -> Decision {
    use LifecycleState as L;
    if o.deleting {
        return deleting(o);
    }
    if !o.invalid.is_empty() {
        let message = format!("invalid spec: {}", o.invalid.join("; "));
        return Decision::new(
            Step::Hold,
            o.previous.unwrap_or(L::Created),
            Cond::no("InvalidSpec", message.clone()),
            Cond::no("InvalidSpec", "nothing is applied until the spec is fixed"),
            Cond::yes("InvalidSpec", message.clone()),
        )
        .failing(message);
    }
    let Some(d) = &o.deployed else {
        return first_deployment(o);
    };
    if o.pending.is_some() {
        return pending(o, d);
    }
    let w = &o.want;
    // Suspend and resume come before upgrades: a suspended job is upgraded when it resumes.
    if !w.running && d.running {
        return suspend(o, d);
    }
    if !d.running {
        if !w.running {
            return suspended(o);
        }
        if o.pods {
            let m = "waiting for the previous pods to stop before starting the new ones";
            return Decision::new(
                Step::Keep,
                L::Deploying,
                Cond::no("Deploying", m),
                Cond::yes("Deploying", m),
                Cond::no("Deploying", m),
            );
        }
        let upgrade = w.hash != d.hash && d.rolled_back.as_deref() != Some(w.hash.as_str());
        let restore = if w.mode == UpgradeMode::Stateless {
            Restore::Fresh
        } else {
            d.restore.clone()
        };
        let plan = Plan {
            spec: Spec::Wanted,
            running: true,
            rollback_savepoint: if upgrade {
                match &restore {
                    Restore::Savepoint(p) => Some(p.clone()),
                    _ => None,
                }
            } else {
                d.rollback_savepoint.clone()
            },
            restore,
            upgraded_from: if upgrade {
                Some(d.hash.clone())
            } else {
                d.upgraded_from.clone()
            },
            rolled_back: d.rolled_back.clone(),
        };
        let spec = if upgrade {
            Spec::Wanted
        } else {
            Spec::Deployed
        };
        let plan = Plan { spec, ..plan };
        let m = "starting the pods, restoring what the deployment names";
        return Decision::new(
            Step::Deploy(plan),
            L::Deploying,
            Cond::no("Resuming", m),
            Cond::yes("Resuming", m),
            Cond::no("Resuming", m),
        )
        .notice(false, "Resuming", m);
    }
    if w.hash != d.hash && d.rolled_back.as_deref() != Some(w.hash.as_str()) {
        let key = give_up_key(SavepointTriggerType::Upgrade, &w.full_hash);
        if d.gave_up_on.as_deref() != Some(key.as_str()) {
            return upgrade(o, d);
        }
        // Given up on: it stays reported until the spec changes.
        let m = d.blocked.clone().unwrap_or_else(|| {
            format!(
                "upgrade to {} blocked; any change to the spec tries again",
                w.hash
            )
        });
        return Decision::new(
            Step::Keep,
            L::Upgrading,
            Cond::no("UpgradeBlocked", m.clone()),
            Cond::no("UpgradeBlocked", m.clone()),
            Cond::yes("UpgradeBlocked", m.clone()),
        )
        .failing(m);
    }
    if let Some(rb) = rollback(o, d) {
        return rb;
    }
    follow(o, d)
}

/// Before anything was deployed: deploy the spec.
fn first_deployment(o: &Observed) -> Decision {
    use LifecycleState as L;
    let w = &o.want;
    let plan = Plan {
        spec: Spec::Wanted,
        running: w.running,
        restore: Restore::Latest,
        upgraded_from: None,
        rollback_savepoint: None,
        rolled_back: None,
    };
    if !w.running {
        return suspended(o).with_step(Step::Deploy(plan));
    }
    let message = if o.missing.is_empty() {
        "deploying".to_string()
    } else {
        format!("creating {}", o.missing.join(", "))
    };
    Decision::new(
        Step::Deploy(plan),
        L::Deploying,
        Cond::no("Deploying", message.clone()),
        Cond::yes("Deploying", message),
        Cond::no("Deploying", "deploying"),
    )
}

fn suspended(_o: &Observed) -> Decision {
    let m = "spec.job.state is suspended: no pods run; set it to running to resume from the \
             savepoint taken when it was suspended";
    Decision::new(
        Step::Keep,
        LifecycleState::Suspended,
        Cond::no("Suspended", m),
        Cond::no("Suspended", m),
        Cond::no("Suspended", m),
    )
}

fn job_runs(o: &Observed) -> bool {
    o.jobmanager_ready && o.job == Some(JobState::Running)
}

fn trigger(purpose: SavepointTriggerType, stop: bool, nonce: Option<i64>) -> Step {
    Step::Savepoint(Trigger {
        purpose,
        stop,
        attempt: 1,
        nonce,
        last_failure: None,
    })
}

fn upgrading(step: Step, reason: &'static str, m: impl Into<String>) -> Decision {
    let m = m.into();
    Decision::new(
        step,
        LifecycleState::Upgrading,
        Cond::no(reason, m.clone()),
        Cond::yes(reason, m.clone()),
        Cond::no(reason, m),
    )
}

/// `job.state` became `suspended` while the pods run.
fn suspend(o: &Observed, d: &Deployed) -> Decision {
    let stop = Plan {
        spec: Spec::Deployed,
        running: false,
        restore: d.restore.clone(),
        upgraded_from: d.upgraded_from.clone(),
        rollback_savepoint: d.rollback_savepoint.clone(),
        rolled_back: d.rolled_back.clone(),
    };
    if o.want.mode == UpgradeMode::Stateless {
        return suspended(o).with_step(Step::Deploy(Plan {
            restore: Restore::Fresh,
            ..stop
        }));
    }
    if job_runs(o) {
        return upgrading(
            trigger(SavepointTriggerType::Suspend, true, None),
            "Suspending",
            "suspending: stopping the job with a savepoint",
        );
    }
    // A job that does not run has nothing to save beyond its latest checkpoint, which a resume
    // restores.
    let m = format!(
        "suspended without a savepoint: the job is {}; resuming restores its latest checkpoint",
        o.job.map_or("unreachable", |s| s.as_str())
    );
    suspended(o)
        .with_step(Step::Deploy(Plan {
            restore: Restore::Latest,
            ..stop
        }))
        .notice(true, "SuspendedWithoutSavepoint", m)
}

/// The spec changed while the pods run: upgrade by `upgradeMode`.
fn upgrade(o: &Observed, d: &Deployed) -> Decision {
    let w = &o.want;
    let plan = |restore: Restore, rollback_savepoint: Option<String>| Plan {
        spec: Spec::Wanted,
        running: true,
        restore,
        upgraded_from: Some(d.hash.clone()),
        rollback_savepoint,
        rolled_back: None,
    };
    match w.mode {
        UpgradeMode::Stateless => {
            let m = format!(
                "upgrading {} → {} (stateless): redeploying without state",
                d.hash, w.hash
            );
            redeploying(plan(Restore::Fresh, None), &m).notice(false, "Upgrading", m)
        }
        UpgradeMode::LastState => {
            let m = format!(
                "upgrading {} → {} (last-state): redeploying from the latest checkpoint",
                d.hash, w.hash
            );
            redeploying(plan(Restore::Latest, None), &m).notice(false, "Upgrading", m)
        }
        UpgradeMode::Savepoint if job_runs(o) => upgrading(
            trigger(SavepointTriggerType::Upgrade, true, None),
            "Upgrading",
            format!(
                "upgrading {} → {} (savepoint): stopping the job with a savepoint",
                d.hash, w.hash
            ),
        )
        .notice(
            false,
            "Upgrading",
            format!(
                "upgrading {} → {}: stopping the job with a savepoint",
                d.hash, w.hash
            ),
        ),
        UpgradeMode::Savepoint => match o.job {
            // Momentary states: the savepoint is taken once the job runs again.
            Some(JobState::Restarting | JobState::Created | JobState::Failing) => upgrading(
                Step::Keep,
                "WaitingToUpgrade",
                format!(
                    "upgrade to {} waits for the job to run to take a savepoint (it is {})",
                    w.hash,
                    o.job.map_or("", |s| s.as_str())
                ),
            ),
            _ => fallback(
                o,
                d,
                format!(
                    "the job cannot take a savepoint: it is {}",
                    o.job.map_or("unreachable", |s| s.as_str())
                ),
            ),
        },
    }
}

fn redeploying(plan: Plan, m: &str) -> Decision {
    Decision::new(
        Step::Deploy(plan),
        LifecycleState::Deploying,
        Cond::no("Upgrading", m),
        Cond::yes("Upgrading", m),
        Cond::no("Upgrading", m),
    )
}

/// A savepoint upgrade that cannot get its savepoint: the latest checkpoint if it is young
/// enough, else stop and say why — never guess.
fn fallback(o: &Observed, d: &Deployed, why: String) -> Decision {
    let w = &o.want;
    let age = o.latest_checkpoint_ms.map(|t| o.now_ms - t);
    match (age, w.fallback_max_age_ms) {
        (Some(age), Some(max)) if age <= max => {
            let m = format!(
                "upgrading {} → {} from the latest checkpoint ({} old, within \
                 spec.upgrade.fallbackMaxCheckpointAge {}): {why}",
                d.hash,
                w.hash,
                secs(age),
                secs(max)
            );
            redeploying(
                Plan {
                    spec: Spec::Wanted,
                    running: true,
                    restore: Restore::Latest,
                    upgraded_from: Some(d.hash.clone()),
                    rollback_savepoint: None,
                    rolled_back: None,
                },
                &m,
            )
            .notice(true, "UpgradeFromCheckpoint", m)
        }
        _ => {
            let checkpoint = match (age, w.fallback_max_age_ms) {
                (None, _) => "no completed checkpoint is known".to_string(),
                (Some(age), Some(max)) => format!(
                    "the latest checkpoint is {} old, older than \
                     spec.upgrade.fallbackMaxCheckpointAge {}",
                    secs(age),
                    secs(max)
                ),
                (Some(age), None) => format!(
                    "the latest checkpoint is {} old and spec.upgrade.fallbackMaxCheckpointAge \
                     is not set",
                    secs(age)
                ),
            };
            let m = format!(
                "upgrade to {} blocked: {why}, and {checkpoint}. The deployed spec {} stays. Fix: \
                 let the job run again, or set spec.upgrade.fallbackMaxCheckpointAge, or use \
                 spec.job.upgradeMode last-state (latest checkpoint at any age) or stateless; \
                 any change to the spec tries again",
                w.hash, d.hash
            );
            let mut dec = Decision::new(
                Step::Keep,
                LifecycleState::Upgrading,
                Cond::no("UpgradeBlocked", m.clone()),
                Cond::no("UpgradeBlocked", m.clone()),
                Cond::yes("UpgradeBlocked", m.clone()),
            )
            .failing(m.clone())
            .notice(true, "UpgradeBlocked", m.clone());
            dec.give_up = Some((give_up_key(SavepointTriggerType::Upgrade, &w.full_hash), m));
            dec
        }
    }
}

/// A savepoint is pending: wait, retry, time out, or act on it.
fn pending(o: &Observed, d: &Deployed) -> Decision {
    use SavepointTriggerType as T;
    let Some(p) = &o.pending else {
        return follow(o, d);
    };
    let w = &o.want;
    let timed_out = o.now_ms - p.triggered_ms > w.savepoint_timeout_ms;
    let failure = match &o.poll {
        Poll::Completed { path } => return completed(o, d, p, path),
        Poll::Failed(why) => Some(why.clone()),
        Poll::InProgress | Poll::Unreachable | Poll::Nothing if timed_out => Some(format!(
            "no savepoint after spec.upgrade.savepointTimeout {}",
            secs(w.savepoint_timeout_ms)
        )),
        Poll::InProgress | Poll::Unreachable | Poll::Nothing => None,
    };
    let Some(failure) = failure else {
        let m = format!(
            "waiting for the {} savepoint (attempt {} of {})",
            purpose_key(p.purpose),
            p.attempt,
            w.savepoint_attempts
        );
        return match p.purpose {
            T::Upgrade => upgrading(Step::Keep, "Upgrading", m),
            T::Suspend => upgrading(Step::Keep, "Suspending", m),
            _ => follow(o, d),
        };
    };
    let m = format!(
        "the {} savepoint failed (attempt {} of {}): {failure}",
        purpose_key(p.purpose),
        p.attempt,
        w.savepoint_attempts
    );
    if p.attempt < w.savepoint_attempts && job_runs(o) {
        let step = Step::Savepoint(Trigger {
            purpose: p.purpose,
            stop: matches!(p.purpose, T::Upgrade | T::Suspend | T::Delete),
            attempt: p.attempt + 1,
            nonce: p.nonce,
            last_failure: Some(failure.clone()),
        });
        let dec = match p.purpose {
            T::Upgrade => upgrading(step, "Upgrading", format!("{m}; trying again")),
            T::Suspend => upgrading(step, "Suspending", format!("{m}; trying again")),
            _ => follow(o, d).with_step(step),
        };
        return dec.notice(true, "SavepointFailed", format!("{m}; trying again"));
    }
    let gave_up = |mut dec: Decision| {
        dec.clear_pending = true;
        dec.notices.insert(
            0,
            Notice {
                warning: true,
                reason: "SavepointFailed",
                message: format!("{m}; giving up"),
            },
        );
        dec
    };
    match p.purpose {
        T::Upgrade => gave_up(fallback(o, d, m.clone())),
        T::Suspend => {
            let mut dec = suspend(
                &Observed {
                    jobmanager_ready: false,
                    ..o.clone()
                },
                d,
            );
            dec.clear_pending = true;
            dec.notices.insert(
                0,
                Notice {
                    warning: true,
                    reason: "SavepointFailed",
                    message: format!("{m}; suspending from the latest checkpoint"),
                },
            );
            dec
        }
        _ => gave_up(follow(o, d)),
    }
}

/// The pending savepoint completed: record it and carry on with what it was for.
fn completed(o: &Observed, d: &Deployed, p: &Pending, path: &str) -> Decision {
    use SavepointTriggerType as T;
    let w = &o.want;
    let mut dec = match p.purpose {
        T::Upgrade => {
            let m = format!(
                "upgrading {} → {}: savepoint {path} taken, redeploying from it",
                d.hash, w.hash
            );
            redeploying(
                Plan {
                    spec: Spec::Wanted,
                    running: true,
                    restore: Restore::Savepoint(path.to_string()),
                    upgraded_from: Some(d.hash.clone()),
                    rollback_savepoint: Some(path.to_string()),
                    rolled_back: None,
                },
                &m,
            )
            .notice(false, "SavepointCompleted", m)
        }
        T::Suspend => suspended(o)
            .with_step(Step::Deploy(Plan {
                spec: Spec::Deployed,
                running: false,
                restore: Restore::Savepoint(path.to_string()),
                upgraded_from: d.upgraded_from.clone(),
                rollback_savepoint: d.rollback_savepoint.clone(),
                rolled_back: d.rolled_back.clone(),
            }))
            .notice(
                false,
                "SavepointCompleted",
                format!("suspended with savepoint {path}"),
            ),
        _ => follow(o, d).notice(
            false,
            "SavepointCompleted",
            format!("{} savepoint {path} taken", purpose_key(p.purpose)),
        ),
    };
    dec.completed = Some((p.purpose, path.to_string()));
    dec.clear_pending = true;
    dec
}

/// An upgraded run that did not become stable in time, or failed: back to the last stable spec.
fn rollback(o: &Observed, d: &Deployed) -> Option<Decision> {
    let w = &o.want;
    let from = d.upgraded_from.as_ref()?;
    if !w.rollback || !d.stable_spec || o.stable {
        return None;
    }
    let failed = o.job == Some(JobState::Failed);
    let late = o.now_ms - d.deployed_at_ms > w.readiness_timeout_ms;
    if !failed && !late {
        return None;
    }
    let why = if failed {
        "the job failed beyond its restart strategy".to_string()
    } else {
        format!(
            "it did not become stable (checkpoints without a restart) within \
             spec.upgrade.rollback.readinessTimeout {}",
            secs(w.readiness_timeout_ms)
        )
    };
    let restore = match &d.rollback_savepoint {
        Some(sp) => Restore::Savepoint(sp.clone()),
        None => Restore::Latest,
    };
    let from_where = match &restore {
        Restore::Savepoint(sp) => format!("from the savepoint taken before the upgrade, {sp}"),
        _ => "from the latest checkpoint".to_string(),
    };
    let m = format!(
        "rolled back the upgrade {from} → {}: {why}; the last stable spec {from} is deployed \
         again {from_where}. The spec {} is not deployed again until it changes",
        d.hash, d.hash
    );
    Some(
        Decision::new(
            Step::Deploy(Plan {
                spec: Spec::Stable,
                running: true,
                restore,
                upgraded_from: None,
                rollback_savepoint: None,
                rolled_back: Some(d.hash.clone()),
            }),
            LifecycleState::RollingBack,
            Cond::no("RollingBack", m.clone()),
            Cond::yes("RollingBack", m.clone()),
            Cond::yes("RolledBack", m.clone()),
        )
        .failing(m.clone())
        .notice(true, "RolledBack", m),
    )
}

/// Nothing to change: follow the job, and take savepoints or checkpoints that are asked for.
fn follow(o: &Observed, d: &Deployed) -> Decision {
    use LifecycleState as L;
    let w = &o.want;
    let mut dec = observe_job(o, d);
    if !job_runs(o) || o.pending.is_some() {
        return dec;
    }
    if w.checkpoint_nonce.is_some() && w.checkpoint_nonce != o.handled_checkpoint_nonce {
        dec.step = Step::Checkpoint;
        dec.handled_checkpoint_nonce = w.checkpoint_nonce;
        return dec;
    }
    if w.savepoint_nonce.is_some() && w.savepoint_nonce != o.handled_savepoint_nonce {
        dec.step = trigger(SavepointTriggerType::Manual, false, w.savepoint_nonce);
        dec.handled_savepoint_nonce = w.savepoint_nonce;
        return dec;
    }
    if let Some(interval) = w.savepoint_interval_ms {
        let since = o
            .last_savepoint_ms
            .unwrap_or(d.deployed_at_ms)
            .max(d.deployed_at_ms);
        if o.now_ms - since >= interval && matches!(dec.lifecycle, L::Running | L::Stable) {
            dec.step = trigger(SavepointTriggerType::Periodic, false, None);
        }
    }
    dec
}

/// The lifecycle from the job's state.
fn observe_job(o: &Observed, d: &Deployed) -> Decision {
    use LifecycleState as L;
    if !o.missing.is_empty() {
        let redeploy = matches!(o.previous, Some(L::Running | L::Stable | L::Failed));
        let message = if redeploy {
            format!(
                "redeploying, restoring from the latest checkpoint: {} missing",
                o.missing.join(", ")
            )
        } else {
            format!("creating {}", o.missing.join(", "))
        };
        return Decision::new(
            Step::Keep,
            L::Deploying,
            Cond::no("Deploying", message.clone()),
            Cond::yes(if redeploy { "Redeploying" } else { "Deploying" }, message),
            if redeploy {
                Cond::yes(
                    "ObjectsMissing",
                    format!("{} disappeared", o.missing.join(", ")),
                )
            } else {
                Cond::no("Deploying", "deploying")
            },
        );
    }
    let rolled_back = d.rolled_back.as_deref() == Some(o.want.hash.as_str());
    let running_state = if rolled_back {
        L::RolledBack
    } else if o.stable || (o.previous == Some(L::Stable) && d.upgraded_from.is_none()) {
        L::Stable
    } else {
        L::Running
    };
    let mut dec = match (o.jobmanager_ready, o.job) {
        (_, Some(JobState::Running)) => Decision::new(
            Step::Keep,
            running_state,
            Cond::yes("Running", "the job is running"),
            Cond::no("Running", "deployed"),
            Cond::no("Running", "the job is running"),
        ),
        (_, Some(JobState::Failed)) => {
            let m = "the job failed beyond its restart strategy; its JobManager restarts it from \
                     the latest checkpoint";
            Decision::new(
                Step::Keep,
                L::Failed,
                Cond::no("JobFailed", m),
                Cond::yes("Recovering", m),
                Cond::yes("JobFailed", m),
            )
            .failing(m)
        }
        (_, Some(JobState::Finished)) => Decision::new(
            Step::Keep,
            L::Running,
            Cond::no("Finished", "the job finished: its input ended"),
            Cond::no("Finished", "the job finished"),
            Cond::no("Finished", "the job finished"),
        ),
        (_, Some(s @ (JobState::Restarting | JobState::Failing))) => Decision::new(
            Step::Keep,
            L::Running,
            Cond::no("Restarting", format!("the job is {}", s.as_str())),
            Cond::yes("Restarting", "the job restarts from its latest checkpoint"),
            Cond::yes("Restarting", format!("the job is {}", s.as_str())),
        ),
        (_, Some(s)) => Decision::new(
            Step::Keep,
            L::Deploying,
            Cond::no("Starting", format!("the job is {}", s.as_str())),
            Cond::yes("Starting", format!("the job is {}", s.as_str())),
            Cond::no("Starting", "starting"),
        ),
        (false, None) => Decision::new(
            Step::Keep,
            L::Deploying,
            Cond::no("WaitingForJobManager", "no JobManager is ready yet"),
            Cond::yes(
                "WaitingForJobManager",
                "waiting for a JobManager to become ready",
            ),
            Cond::no("Deploying", "deploying"),
        ),
        (true, None) => Decision::new(
            Step::Keep,
            o.previous.unwrap_or(L::Deploying),
            Cond::no(
                "JobManagerUnreachable",
                "the JobManager's REST API did not answer",
            ),
            Cond::no("JobManagerUnreachable", "deployed"),
            Cond::yes(
                "JobManagerUnreachable",
                "a JobManager is ready but its REST API did not answer",
            ),
        ),
    };
    if rolled_back && !dec.degraded.status {
        let m = format!(
            "the spec {} was rolled back after a failed upgrade; the last stable spec runs. \
             Change the spec to try again",
            o.want.hash
        );
        dec.degraded = Cond::yes("RolledBack", m.clone());
        dec.error = Some(m);
    }
    dec
}

/// The StreamJob is being deleted: `spec.deletionPolicy`.
fn deleting(o: &Observed) -> Decision {
    use SavepointTriggerType as T;
    let release = |dispose: bool, m: String| {
        Decision::new(
            Step::Release { dispose },
            LifecycleState::Deleting,
            Cond::no("Deleting", m.clone()),
            Cond::yes("Deleting", m.clone()),
            Cond::no("Deleting", m),
        )
    };
    let waiting = |step: Step, m: String| {
        Decision::new(
            step,
            LifecycleState::Deleting,
            Cond::no("Deleting", m.clone()),
            Cond::yes("Deleting", m.clone()),
            Cond::no("Deleting", m),
        )
    };
    let w = &o.want;
    match w.deletion {
        DeletionPolicy::Retain => release(
            false,
            "deleting; checkpoints are kept (deletionPolicy retain)".into(),
        ),
        // The pods go first: a running job would write checkpoints into what is being deleted.
        DeletionPolicy::Dispose => match &o.deployed {
            Some(d) if d.running => waiting(
                Step::Deploy(Plan {
                    spec: Spec::Deployed,
                    running: false,
                    restore: d.restore.clone(),
                    upgraded_from: None,
                    rollback_savepoint: None,
                    rolled_back: None,
                }),
                "deleting: stopping the pods before deleting checkpoints (deletionPolicy \
                 dispose)"
                    .into(),
            ),
            // A terminating JobManager may still complete a checkpoint.
            _ if o.jobmanager_ready || o.pods => waiting(
                Step::Keep,
                "deleting: waiting for the pods to stop before deleting checkpoints".into(),
            ),
            _ => release(
                true,
                "deleting; checkpoints and savepoints are deleted (deletionPolicy dispose)".into(),
            ),
        },
        DeletionPolicy::Savepoint => {
            if let Some(p) = o.pending.as_ref().filter(|p| p.purpose == T::Delete) {
                let timed_out = o.now_ms - p.triggered_ms > w.savepoint_timeout_ms;
                let failed = match &o.poll {
                    Poll::Completed { path } => {
                        let mut dec =
                            release(false, format!("deleted with a final savepoint {path}"))
                                .notice(
                                    false,
                                    "SavepointCompleted",
                                    format!(
                                        "final savepoint {path}: a StreamJob created again with \
                                         the same checkpoint storage resumes from it"
                                    ),
                                );
                        dec.completed = Some((T::Delete, path.clone()));
                        dec.clear_pending = true;
                        return dec;
                    }
                    Poll::Failed(why) => Some(why.clone()),
                    _ if timed_out => Some(format!(
                        "no savepoint after spec.upgrade.savepointTimeout {}",
                        secs(w.savepoint_timeout_ms)
                    )),
                    _ => None,
                };
                return match failed {
                    None => waiting(
                        Step::Keep,
                        "deleting: waiting for the final savepoint".into(),
                    ),
                    Some(why) if p.attempt < w.savepoint_attempts && job_runs(o) => waiting(
                        Step::Savepoint(Trigger {
                            purpose: T::Delete,
                            stop: true,
                            attempt: p.attempt + 1,
                            nonce: None,
                            last_failure: Some(why.clone()),
                        }),
                        format!("deleting: the final savepoint failed ({why}); trying again"),
                    ),
                    Some(why) => release(
                        false,
                        format!("deleting without a final savepoint ({why}); checkpoints are kept"),
                    )
                    .notice(
                        true,
                        "SavepointFailed",
                        format!(
                            "the final savepoint failed ({why}); deleted without it, checkpoints \
                             are kept"
                        ),
                    ),
                };
            }
            let runs = o.deployed.as_ref().is_some_and(|d| d.running);
            if runs && job_runs(o) {
                waiting(
                    trigger(T::Delete, true, None),
                    "deleting: stopping the job with a final savepoint".into(),
                )
            } else {
                release(
                    false,
                    "deleting; no job runs to take a final savepoint, checkpoints are kept".into(),
                )
            }
        }
    }
}

/// The savepoints of `history` (path, completion time; oldest first) to dispose of: those
/// beyond the newest `max_count`, and those older than `max_age_ms` at `now_ms` — except the
/// `protected` ones (what the deployment restores, what a rollback would, the latest, what the
/// current run was restored from), kept whatever their age or number. A time that cannot be
/// read never makes a savepoint old.
pub fn to_dispose(
    history: &[(String, Option<i64>)],
    max_count: usize,
    max_age_ms: Option<i64>,
    protected: &[String],
    now_ms: i64,
) -> Vec<String> {
    let excess = history.len().saturating_sub(max_count);
    history
        .iter()
        .enumerate()
        .filter(|(i, (path, time))| {
            let old = max_age_ms.zip(*time).is_some_and(|(m, t)| now_ms - t > m);
            (*i < excess || old) && !protected.contains(path)
        })
        .map(|(_, (path, _))| path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_by_count_and_age_never_touches_protected_savepoints() {
        let h = |entries: &[(&str, Option<i64>)]| -> Vec<(String, Option<i64>)> {
            entries.iter().map(|(p, t)| (p.to_string(), *t)).collect()
        };
        let three = h(&[("a", Some(1_000)), ("b", Some(2_000)), ("c", Some(3_000))]);
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Vec<(String, Option<i64>)>,
            usize,
            Option<i64>,
            Vec<&str>,
            Vec<&str>,
        )> = vec![
            (
                "within the count, no age limit: nothing",
                three.clone(),
                3,
                None,
                vec![],
                vec![],
            ),
            (
                "one too many: the oldest",
                three.clone(),
                2,
                None,
                vec![],
                vec!["a"],
            ),
            (
                "count 0 keeps the protected latest",
                three.clone(),
                0,
                None,
                vec!["c"],
                vec!["a", "b"],
            ),
            (
                "the oldest is protected: kept, the next goes",
                three.clone(),
                1,
                None,
                vec!["a", "c"],
                vec!["b"],
            ),
            (
                "older than the age at now=4000: a and b",
                three.clone(),
                10,
                Some(1_500),
                vec![],
                vec!["a", "b"],
            ),
            (
                "age exactly reached is not older",
                three.clone(),
                10,
                Some(2_000),
                vec![],
                vec!["a"],
            ),
            (
                "age and count together",
                three.clone(),
                2,
                Some(2_500),
                vec![],
                vec!["a"],
            ),
            (
                "by age, the protected stay",
                three.clone(),
                10,
                Some(0),
                vec!["c"],
                vec!["a", "b"],
            ),
            (
                "an unreadable time is never old",
                h(&[("x", None), ("y", Some(1_000))]),
                10,
                Some(100),
                vec![],
                vec!["y"],
            ),
            ("empty history", vec![], 0, Some(0), vec![], vec![]),
        ];
        for (what, history, max_count, max_age, protected, want) in cases {
            let protected: Vec<String> = protected.into_iter().map(String::from).collect();
            assert_eq!(
                to_dispose(&history, max_count, max_age, &protected, 4_000),
                want,
                "{what}"
            );
        }
    }
    use LifecycleState as L;
    use SavepointTriggerType as T;

    const NOW: i64 = 1_000_000_000;

    fn want() -> Want {
        Want {
            hash: "v1".into(),
            full_hash: "f1".into(),
            running: true,
            mode: UpgradeMode::Savepoint,
            savepoint_timeout_ms: 60_000,
            savepoint_attempts: 2,
            fallback_max_age_ms: None,
            rollback: true,
            readiness_timeout_ms: 120_000,
            savepoint_nonce: None,
            checkpoint_nonce: None,
            savepoint_interval_ms: None,
            deletion: DeletionPolicy::Savepoint,
        }
    }

    fn deployed() -> Deployed {
        Deployed {
            hash: "v1".into(),
            running: true,
            deployed_at_ms: NOW - 600_000,
            upgraded_from: None,
            stable_spec: false,
            rollback_savepoint: None,
            rolled_back: None,
            gave_up_on: None,
            blocked: None,
            restore: Restore::Latest,
        }
    }

    fn base() -> Observed {
        Observed {
            now_ms: NOW,
            deleting: false,
            invalid: Vec::new(),
            missing: Vec::new(),
            jobmanager_ready: true,
            pods: false,
            job: Some(JobState::Running),
            stable: false,
            previous: Some(L::Running),
            want: want(),
            deployed: Some(deployed()),
            pending: None,
            poll: Poll::Nothing,
            latest_checkpoint_ms: Some(NOW - 5_000),
            last_savepoint_ms: None,
            handled_savepoint_nonce: None,
            handled_checkpoint_nonce: None,
        }
    }

    fn upgraded() -> Observed {
        Observed {
            want: Want {
                hash: "v2".into(),
                full_hash: "f2".into(),
                ..want()
            },
            ..base()
        }
    }

    fn pending(purpose: SavepointTriggerType, attempt: u32, poll: Poll) -> Observed {
        Observed {
            pending: Some(Pending {
                purpose,
                triggered_ms: NOW - 1_000,
                attempt,
                nonce: None,
            }),
            poll,
            ..upgraded()
        }
    }

    fn plan(spec: Spec, running: bool, restore: Restore) -> Plan {
        Plan {
            spec,
            running,
            restore,
            upgraded_from: None,
            rollback_savepoint: None,
            rolled_back: None,
        }
    }

    fn savepoint(purpose: SavepointTriggerType, stop: bool, attempt: u32) -> Step {
        Step::Savepoint(Trigger {
            purpose,
            stop,
            attempt,
            nonce: None,
            last_failure: None,
        })
    }

    /// Steps compared without the failure text of retried savepoints.
    fn shape(s: &Step) -> Step {
        match s {
            Step::Savepoint(t) => Step::Savepoint(Trigger {
                last_failure: None,
                ..t.clone()
            }),
            other => other.clone(),
        }
    }

    #[test]
    fn transitions() {
        let missing = || vec!["Deployment/orders-jobmanager".to_string()];
        let sp = |p: &str| Restore::Savepoint(p.to_string());
        let upgrade_plan = |restore: Restore, rollback: Option<&str>| Plan {
            upgraded_from: Some("v1".into()),
            rollback_savepoint: rollback.map(Into::into),
            ..plan(Spec::Wanted, true, restore)
        };
        // (case, observed, step, lifecycle, ready, degraded reason)
        let cases: Vec<(&str, Observed, Step, L, bool, &str)> = vec![
            (
                "new StreamJob: deploy the spec",
                Observed {
                    missing: missing(),
                    previous: None,
                    job: None,
                    jobmanager_ready: false,
                    deployed: None,
                    ..base()
                },
                Step::Deploy(plan(Spec::Wanted, true, Restore::Latest)),
                L::Deploying,
                false,
                "Deploying",
            ),
            (
                "new StreamJob created suspended: objects without pods",
                Observed {
                    deployed: None,
                    want: Want {
                        running: false,
                        ..want()
                    },
                    ..base()
                },
                Step::Deploy(plan(Spec::Wanted, false, Restore::Latest)),
                L::Suspended,
                false,
                "Suspended",
            ),
            (
                "pods not ready yet",
                Observed {
                    job: None,
                    jobmanager_ready: false,
                    previous: Some(L::Deploying),
                    ..base()
                },
                Step::Keep,
                L::Deploying,
                false,
                "Deploying",
            ),
            (
                "job running",
                base(),
                Step::Keep,
                L::Running,
                true,
                "Running",
            ),
            (
                "enough checkpoints without a restart: stable",
                Observed {
                    stable: true,
                    ..base()
                },
                Step::Keep,
                L::Stable,
                true,
                "Running",
            ),
            (
                "objects vanished from a running job: re-applied",
                Observed {
                    missing: missing(),
                    ..base()
                },
                Step::Keep,
                L::Deploying,
                false,
                "ObjectsMissing",
            ),
            (
                "job failed beyond its restart strategy",
                Observed {
                    job: Some(JobState::Failed),
                    ..base()
                },
                Step::Keep,
                L::Failed,
                false,
                "JobFailed",
            ),
            (
                "invalid spec: nothing applied",
                Observed {
                    invalid: vec!["spec.job.parallelism: must be at least 1".into()],
                    previous: None,
                    deployed: None,
                    ..base()
                },
                Step::Hold,
                L::Created,
                false,
                "InvalidSpec",
            ),
            (
                "upgrade, savepoint mode, job running: stop with a savepoint",
                upgraded(),
                savepoint(T::Upgrade, true, 1),
                L::Upgrading,
                false,
                "Upgrading",
            ),
            (
                "upgrade savepoint in progress: wait",
                pending(T::Upgrade, 1, Poll::InProgress),
                Step::Keep,
                L::Upgrading,
                false,
                "Upgrading",
            ),
            (
                "upgrade savepoint completed: deploy the new spec from it",
                pending(
                    T::Upgrade,
                    1,
                    Poll::Completed {
                        path: "s3://b/sp-1".into(),
                    },
                ),
                Step::Deploy(Plan {
                    running: false,
                    ..upgrade_plan(sp("s3://b/sp-1"), Some("s3://b/sp-1"))
                }),
                L::Deploying,
                false,
                "Upgrading",
            ),
            (
                "upgrade savepoint failed, attempts left: try again",
                pending(T::Upgrade, 1, Poll::Failed("declined".into())),
                savepoint(T::Upgrade, true, 2),
                L::Upgrading,
                false,
                "Upgrading",
            ),
            (
                "upgrade savepoint timed out on the last attempt, no fallback: blocked",
                Observed {
                    pending: Some(Pending {
                        purpose: T::Upgrade,
                        triggered_ms: NOW - 61_000,
                        attempt: 2,
                        nonce: None,
                    }),
                    poll: Poll::InProgress,
                    ..upgraded()
                },
                Step::Keep,
                L::Upgrading,
                false,
                "UpgradeBlocked",
            ),
            (
                "upgrade savepoint failed for good, young checkpoint allowed: from the checkpoint",
                Observed {
                    want: Want {
                        hash: "v2".into(),
                        fallback_max_age_ms: Some(60_000),
                        ..want()
                    },
                    ..pending(T::Upgrade, 2, Poll::Failed("declined".into()))
                },
                Step::Deploy(upgrade_plan(Restore::Latest, None)),
                L::Deploying,
                false,
                "Upgrading",
            ),
            (
                "upgrade of a failed job, checkpoint too old: blocked, never guessed",
                Observed {
                    job: Some(JobState::Failed),
                    latest_checkpoint_ms: Some(NOW - 3_600_000),
                    want: Want {
                        hash: "v2".into(),
                        fallback_max_age_ms: Some(60_000),
                        ..want()
                    },
                    ..base()
                },
                Step::Keep,
                L::Upgrading,
                false,
                "UpgradeBlocked",
            ),
            (
                "upgrade of a failed job, young checkpoint: from the checkpoint",
                Observed {
                    job: Some(JobState::Failed),
                    want: Want {
                        hash: "v2".into(),
                        fallback_max_age_ms: Some(60_000),
                        ..want()
                    },
                    ..base()
                },
                Step::Deploy(upgrade_plan(Restore::Latest, None)),
                L::Deploying,
                false,
                "Upgrading",
            ),
            (
                "upgrade given up on: not retried until the spec changes, still reported",
                Observed {
                    deployed: Some(Deployed {
                        gave_up_on: Some(give_up_key(T::Upgrade, "f2")),
                        blocked: Some("blocked: why".into()),
                        ..deployed()
                    }),
                    ..upgraded()
                },
                Step::Keep,
                L::Upgrading,
                false,
                "UpgradeBlocked",
            ),
            (
                "upgrade while restarting: wait for it to run",
                Observed {
                    job: Some(JobState::Restarting),
                    ..upgraded()
                },
                Step::Keep,
                L::Upgrading,
                false,
                "WaitingToUpgrade",
            ),
            (
                "upgrade in last-state mode: redeploy from the latest checkpoint",
                Observed {
                    want: Want {
                        hash: "v2".into(),
                        mode: UpgradeMode::LastState,
                        ..want()
                    },
                    ..base()
                },
                Step::Deploy(upgrade_plan(Restore::Latest, None)),
                L::Deploying,
                false,
                "Upgrading",
            ),
            (
                "upgrade in stateless mode: redeploy without state",
                Observed {
                    job: None,
                    jobmanager_ready: false,
                    want: Want {
                        hash: "v2".into(),
                        mode: UpgradeMode::Stateless,
                        ..want()
                    },
                    ..base()
                },
                Step::Deploy(upgrade_plan(Restore::Fresh, None)),
                L::Deploying,
                false,
                "Upgrading",
            ),
            (
                "suspend a running job: stop with a savepoint",
                Observed {
                    want: Want {
                        running: false,
                        ..want()
                    },
                    ..base()
                },
                savepoint(T::Suspend, true, 1),
                L::Upgrading,
                false,
                "Suspending",
            ),
            (
                "suspend savepoint completed: no pods, restore from it",
                Observed {
                    want: Want {
                        running: false,
                        ..want()
                    },
                    ..pending(
                        T::Suspend,
                        1,
                        Poll::Completed {
                            path: "sp-2".into(),
                        },
                    )
                },
                Step::Deploy(plan(Spec::Deployed, false, sp("sp-2"))),
                L::Suspended,
                false,
                "Suspended",
            ),
            (
                "suspend a failed job: no pods, restore the latest checkpoint",
                Observed {
                    job: Some(JobState::Failed),
                    want: Want {
                        running: false,
                        ..want()
                    },
                    ..base()
                },
                Step::Deploy(plan(Spec::Deployed, false, Restore::Latest)),
                L::Suspended,
                false,
                "Suspended",
            ),
            (
                "stays suspended",
                Observed {
                    job: None,
                    jobmanager_ready: false,
                    want: Want {
                        running: false,
                        ..want()
                    },
                    deployed: Some(Deployed {
                        running: false,
                        ..deployed()
                    }),
                    ..base()
                },
                Step::Keep,
                L::Suspended,
                false,
                "Suspended",
            ),
            (
                "resume: from the suspension's savepoint",
                Observed {
                    job: None,
                    jobmanager_ready: false,
                    deployed: Some(Deployed {
                        running: false,
                        restore: sp("sp-2"),
                        ..deployed()
                    }),
                    ..base()
                },
                Step::Deploy(plan(Spec::Deployed, true, sp("sp-2"))),
                L::Deploying,
                false,
                "Resuming",
            ),
            (
                "resume with a changed spec: an upgrade from the suspension's savepoint",
                Observed {
                    job: None,
                    jobmanager_ready: false,
                    deployed: Some(Deployed {
                        running: false,
                        restore: sp("sp-2"),
                        ..deployed()
                    }),
                    ..upgraded()
                },
                Step::Deploy(upgrade_plan(sp("sp-2"), Some("sp-2"))),
                L::Deploying,
                false,
                "Resuming",
            ),
            (
                "a new deployment waits for the previous pods to be gone",
                Observed {
                    job: None,
                    jobmanager_ready: false,
                    pods: true,
                    deployed: Some(Deployed {
                        running: false,
                        restore: Restore::Fresh,
                        ..deployed()
                    }),
                    ..base()
                },
                Step::Keep,
                L::Deploying,
                false,
                "Deploying",
            ),
            (
                "stateless upgrade, old pods gone: started without state",
                Observed {
                    job: None,
                    jobmanager_ready: false,
                    want: Want {
                        mode: UpgradeMode::Stateless,
                        ..want()
                    },
                    deployed: Some(Deployed {
                        running: false,
                        restore: Restore::Fresh,
                        upgraded_from: Some("v0".into()),
                        ..deployed()
                    }),
                    ..base()
                },
                Step::Deploy(Plan {
                    upgraded_from: Some("v0".into()),
                    ..plan(Spec::Deployed, true, Restore::Fresh)
                }),
                L::Deploying,
                false,
                "Resuming",
            ),
            (
                "upgraded run not stable within the readiness timeout: roll back",
                Observed {
                    job: Some(JobState::Restarting),
                    deployed: Some(Deployed {
                        hash: "v2".into(),
                        deployed_at_ms: NOW - 121_000,
                        upgraded_from: Some("v1".into()),
                        stable_spec: true,
                        rollback_savepoint: Some("sp-1".into()),
                        ..deployed()
                    }),
                    ..upgraded()
                },
                Step::Deploy(Plan {
                    rolled_back: Some("v2".into()),
                    ..plan(Spec::Stable, false, sp("sp-1"))
                }),
                L::RollingBack,
                false,
                "RolledBack",
            ),
            (
                "upgraded run failed: roll back at once",
                Observed {
                    job: Some(JobState::Failed),
                    deployed: Some(Deployed {
                        hash: "v2".into(),
                        deployed_at_ms: NOW - 1_000,
                        upgraded_from: Some("v1".into()),
                        stable_spec: true,
                        rollback_savepoint: Some("sp-1".into()),
                        ..deployed()
                    }),
                    ..upgraded()
                },
                Step::Deploy(Plan {
                    rolled_back: Some("v2".into()),
                    ..plan(Spec::Stable, false, sp("sp-1"))
                }),
                L::RollingBack,
                false,
                "RolledBack",
            ),
            (
                "upgraded run within its readiness timeout: no rollback yet",
                Observed {
                    job: Some(JobState::Restarting),
                    deployed: Some(Deployed {
                        hash: "v2".into(),
                        deployed_at_ms: NOW - 1_000,
                        upgraded_from: Some("v1".into()),
                        stable_spec: true,
                        ..deployed()
                    }),
                    ..upgraded()
                },
                Step::Keep,
                L::Running,
                false,
                "Restarting",
            ),
            (
                "rollback off: an unstable upgrade stays",
                Observed {
                    job: Some(JobState::Restarting),
                    deployed: Some(Deployed {
                        hash: "v2".into(),
                        deployed_at_ms: NOW - 121_000,
                        upgraded_from: Some("v1".into()),
                        stable_spec: true,
                        ..deployed()
                    }),
                    want: Want {
                        hash: "v2".into(),
                        rollback: false,
                        ..want()
                    },
                    ..base()
                },
                Step::Keep,
                L::Running,
                false,
                "Restarting",
            ),
            (
                "rolled back: the bad spec is not deployed again",
                Observed {
                    deployed: Some(Deployed {
                        rolled_back: Some("v2".into()),
                        ..deployed()
                    }),
                    ..upgraded()
                },
                Step::Keep,
                L::RolledBack,
                true,
                "RolledBack",
            ),
            (
                "rolled back, then the spec changes again: upgrade",
                Observed {
                    deployed: Some(Deployed {
                        rolled_back: Some("v2".into()),
                        ..deployed()
                    }),
                    want: Want {
                        hash: "v3".into(),
                        ..want()
                    },
                    ..base()
                },
                savepoint(T::Upgrade, true, 1),
                L::Upgrading,
                false,
                "Upgrading",
            ),
            (
                "savepoint nonce changed: a manual savepoint",
                Observed {
                    want: Want {
                        savepoint_nonce: Some(7),
                        ..want()
                    },
                    ..base()
                },
                Step::Savepoint(Trigger {
                    nonce: Some(7),
                    ..Trigger {
                        purpose: T::Manual,
                        stop: false,
                        attempt: 1,
                        nonce: None,
                        last_failure: None,
                    }
                }),
                L::Running,
                true,
                "Running",
            ),
            (
                "savepoint nonce already handled: nothing",
                Observed {
                    want: Want {
                        savepoint_nonce: Some(7),
                        ..want()
                    },
                    handled_savepoint_nonce: Some(7),
                    ..base()
                },
                Step::Keep,
                L::Running,
                true,
                "Running",
            ),
            (
                "checkpoint nonce changed: a checkpoint",
                Observed {
                    want: Want {
                        checkpoint_nonce: Some(1),
                        ..want()
                    },
                    ..base()
                },
                Step::Checkpoint,
                L::Running,
                true,
                "Running",
            ),
            (
                "periodic savepoint due",
                Observed {
                    want: Want {
                        savepoint_interval_ms: Some(60_000),
                        ..want()
                    },
                    last_savepoint_ms: Some(NOW - 61_000),
                    ..base()
                },
                savepoint(T::Periodic, false, 1),
                L::Running,
                true,
                "Running",
            ),
            (
                "periodic savepoint not due",
                Observed {
                    want: Want {
                        savepoint_interval_ms: Some(60_000),
                        ..want()
                    },
                    last_savepoint_ms: Some(NOW - 1_000),
                    ..base()
                },
                Step::Keep,
                L::Running,
                true,
                "Running",
            ),
            (
                "delete a running job: final savepoint first",
                Observed {
                    deleting: true,
                    ..base()
                },
                savepoint(T::Delete, true, 1),
                L::Deleting,
                false,
                "Deleting",
            ),
            (
                "final savepoint completed: release",
                Observed {
                    deleting: true,
                    ..pending(
                        T::Delete,
                        1,
                        Poll::Completed {
                            path: "sp-9".into(),
                        },
                    )
                },
                Step::Release { dispose: false },
                L::Deleting,
                false,
                "Deleting",
            ),
            (
                "final savepoint failed for good: release anyway, checkpoints kept",
                Observed {
                    deleting: true,
                    ..pending(T::Delete, 2, Poll::Failed("declined".into()))
                },
                Step::Release { dispose: false },
                L::Deleting,
                false,
                "Deleting",
            ),
            (
                "delete with dispose: the pods stop first",
                Observed {
                    deleting: true,
                    want: Want {
                        deletion: DeletionPolicy::Dispose,
                        ..want()
                    },
                    ..base()
                },
                Step::Deploy(plan(Spec::Deployed, false, Restore::Latest)),
                L::Deleting,
                false,
                "Deleting",
            ),
            (
                "delete with dispose, pods stopped: delete the storage",
                Observed {
                    deleting: true,
                    job: None,
                    jobmanager_ready: false,
                    want: Want {
                        deletion: DeletionPolicy::Dispose,
                        ..want()
                    },
                    deployed: Some(Deployed {
                        running: false,
                        ..deployed()
                    }),
                    ..base()
                },
                Step::Release { dispose: true },
                L::Deleting,
                false,
                "Deleting",
            ),
            (
                "delete a job that does not run: release, checkpoints kept",
                Observed {
                    deleting: true,
                    job: None,
                    jobmanager_ready: false,
                    ..base()
                },
                Step::Release { dispose: false },
                L::Deleting,
                false,
                "Deleting",
            ),
        ];
        for (name, observed, step, lifecycle, ready, degraded) in cases {
            let d = decide(&observed);
            assert_eq!(shape(&d.step), step, "{name}");
            assert_eq!(d.lifecycle, lifecycle, "{name}");
            assert_eq!(d.ready.status, ready, "{name}");
            assert_eq!(d.degraded.reason, degraded, "{name}");
        }
    }

    #[test]
    fn a_completed_savepoint_is_recorded_and_the_pending_one_cleared() {
        let d = decide(&pending(
            T::Upgrade,
            1,
            Poll::Completed {
                path: "sp-1".into(),
            },
        ));
        assert_eq!(d.completed, Some((T::Upgrade, "sp-1".to_string())));
        assert!(d.clear_pending);
    }

    #[test]
    fn a_blocked_upgrade_says_why_and_how_to_fix_it() {
        let d = decide(&Observed {
            job: Some(JobState::Failed),
            latest_checkpoint_ms: None,
            ..upgraded()
        });
        let m = d.error.unwrap_or_default();
        assert!(m.contains("FAILED") || m.contains("failed"), "{m}");
        assert!(m.contains("spec.upgrade.fallbackMaxCheckpointAge"), "{m}");
        assert_eq!(
            d.give_up.map(|(k, _)| k),
            Some(give_up_key(T::Upgrade, "f2"))
        );
    }

    #[test]
    fn invalid_spec_message_names_the_field() {
        let d = decide(&Observed {
            invalid: vec!["spec.job.parallelism: must be at least 1 (found 0). Fix: set it".into()],
            ..base()
        });
        assert!(d.degraded.status);
        assert!(d.degraded.message.contains("spec.job.parallelism"));
        assert_eq!(d.error.as_deref(), Some(d.degraded.message.as_str()));
    }
}
