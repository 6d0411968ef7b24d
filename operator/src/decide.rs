//! The *decide* step of a reconciliation: from what was observed about one StreamJob to what
//! to do and what its status says. A pure function — no I/O, no clock but the one passed in —
//! tested with a table of cases below.

use weir_api::{JobState, LifecycleState};

/// What reconciliation observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The StreamJob is being deleted (has a deletion timestamp).
    pub deleting: bool,
    /// The spec's problems (field, message and fix each), empty when valid.
    pub invalid: Vec<String>,
    /// Owned objects that do not exist (kind/name), empty when all do.
    pub missing: Vec<String>,
    /// JobManager pods that are ready (the leader serves its REST API).
    pub jobmanager_ready: bool,
    /// The job's state from the JobManager's REST API, when it answered.
    pub job: Option<JobState>,
    /// The run has completed enough checkpoints without a restart to count as stable.
    pub stable: bool,
    /// `spec.job.state` is `suspended`.
    pub suspended: bool,
    /// The lifecycle state in the status before this reconciliation.
    pub previous: Option<LifecycleState>,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply every owned object (creates what is missing, repairs drift).
    Apply,
    /// Leave the objects alone (an invalid spec is never half-applied).
    Hold,
    /// Let the deletion proceed: remove the finalizer (owned objects go with the owner).
    Release,
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

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do with the owned objects.
    pub action: Action,
    /// The new lifecycle state.
    pub lifecycle: LifecycleState,
    /// `Ready`: the job runs.
    pub ready: Cond,
    /// `Progressing`: a deployment is under way.
    pub progressing: Cond,
    /// `Degraded`: something needs attention.
    pub degraded: Cond,
    /// The status' error message.
    pub error: Option<String>,
}

/// Decides one reconciliation of one StreamJob.
pub fn decide(o: &Observed) -> Decision {
    use LifecycleState as L;
    if o.deleting {
        return Decision {
            action: Action::Release,
            lifecycle: L::Deleting,
            ready: Cond::no("Deleting", "the StreamJob is being deleted"),
            progressing: Cond::yes("Deleting", "the StreamJob is being deleted"),
            degraded: Cond::no("Deleting", "the StreamJob is being deleted"),
            error: None,
        };
    }
    if !o.invalid.is_empty() {
        let message = format!("invalid spec: {}", o.invalid.join("; "));
        return Decision {
            action: Action::Hold,
            lifecycle: o.previous.unwrap_or(L::Created),
            ready: Cond::no("InvalidSpec", message.clone()),
            progressing: Cond::no("InvalidSpec", "nothing is applied until the spec is fixed"),
            degraded: Cond::yes("InvalidSpec", message.clone()),
            error: Some(message),
        };
    }
    if o.suspended {
        let m = "spec.job.state is suspended: no pods run; set it to running to resume from the \
                 latest checkpoint";
        return Decision {
            action: Action::Apply,
            lifecycle: L::Suspended,
            ready: Cond::no("Suspended", m),
            progressing: Cond::no("Suspended", m),
            degraded: Cond::no("Suspended", m),
            error: None,
        };
    }
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
        return Decision {
            action: Action::Apply,
            lifecycle: L::Deploying,
            ready: Cond::no("Deploying", message.clone()),
            progressing: Cond::yes(if redeploy { "Redeploying" } else { "Deploying" }, message),
            degraded: if redeploy {
                Cond::yes(
                    "ObjectsMissing",
                    format!("{} disappeared", o.missing.join(", ")),
                )
            } else {
                Cond::no("Deploying", "deploying")
            },
            error: None,
        };
    }
    let (lifecycle, ready, progressing, degraded, error) = match (o.jobmanager_ready, o.job) {
        (_, Some(JobState::Running)) => (
            if o.stable || o.previous == Some(L::Stable) {
                L::Stable
            } else {
                L::Running
            },
            Cond::yes("Running", "the job is running"),
            Cond::no("Running", "deployed"),
            Cond::no("Running", "the job is running"),
            None,
        ),
        (_, Some(JobState::Failed)) => {
            let m = "the job failed beyond its restart strategy; its JobManager restarts it from \
                     the latest checkpoint";
            (
                L::Failed,
                Cond::no("JobFailed", m),
                Cond::yes("Recovering", m),
                Cond::yes("JobFailed", m),
                Some(m.to_string()),
            )
        }
        (_, Some(JobState::Finished)) => (
            L::Running,
            Cond::no("Finished", "the job finished: its input ended"),
            Cond::no("Finished", "the job finished"),
            Cond::no("Finished", "the job finished"),
            None,
        ),
        (_, Some(s @ (JobState::Restarting | JobState::Failing))) => (
            L::Running,
            Cond::no("Restarting", format!("the job is {}", s.as_str())),
            Cond::yes("Restarting", "the job restarts from its latest checkpoint"),
            Cond::yes("Restarting", format!("the job is {}", s.as_str())),
            None,
        ),
        (_, Some(s)) => (
            L::Deploying,
            Cond::no("Starting", format!("the job is {}", s.as_str())),
            Cond::yes("Starting", format!("the job is {}", s.as_str())),
            Cond::no("Starting", "starting"),
            None,
        ),
        (false, None) => (
            L::Deploying,
            Cond::no("WaitingForJobManager", "no JobManager is ready yet"),
            Cond::yes(
                "WaitingForJobManager",
                "waiting for a JobManager to become ready",
            ),
            Cond::no("Deploying", "deploying"),
            None,
        ),
        (true, None) => (
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
            None,
        ),
    };
    Decision {
        action: Action::Apply,
        lifecycle,
        ready,
        progressing,
        degraded,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleState as L;

    fn base() -> Observed {
        Observed {
            deleting: false,
            invalid: Vec::new(),
            missing: Vec::new(),
            jobmanager_ready: true,
            job: Some(JobState::Running),
            stable: false,
            suspended: false,
            previous: Some(L::Running),
        }
    }

    #[test]
    fn transitions() {
        let missing = || vec!["Deployment/orders-jobmanager".to_string()];
        // (case, observed, action, lifecycle, ready, progressing, degraded reason)
        let cases: Vec<(&str, Observed, Action, L, bool, bool, &str)> = vec![
            (
                "new StreamJob: create everything",
                Observed {
                    missing: missing(),
                    previous: None,
                    job: None,
                    jobmanager_ready: false,
                    ..base()
                },
                Action::Apply,
                L::Deploying,
                false,
                true,
                "Deploying",
            ),
            (
                "created, pods not ready yet",
                Observed {
                    job: None,
                    jobmanager_ready: false,
                    previous: Some(L::Deploying),
                    ..base()
                },
                Action::Apply,
                L::Deploying,
                false,
                true,
                "Deploying",
            ),
            (
                "job running",
                Observed {
                    previous: Some(L::Deploying),
                    ..base()
                },
                Action::Apply,
                L::Running,
                true,
                false,
                "Running",
            ),
            (
                "running with enough checkpoints and no restart: stable",
                Observed {
                    stable: true,
                    ..base()
                },
                Action::Apply,
                L::Stable,
                true,
                false,
                "Running",
            ),
            (
                "stable stays stable while running",
                Observed {
                    previous: Some(L::Stable),
                    ..base()
                },
                Action::Apply,
                L::Stable,
                true,
                false,
                "Running",
            ),
            (
                "objects vanished from a running job: redeploy",
                Observed {
                    missing: missing(),
                    ..base()
                },
                Action::Apply,
                L::Deploying,
                false,
                true,
                "ObjectsMissing",
            ),
            (
                "job failed beyond its restart strategy",
                Observed {
                    job: Some(JobState::Failed),
                    ..base()
                },
                Action::Apply,
                L::Failed,
                false,
                true,
                "JobFailed",
            ),
            (
                "job restarting",
                Observed {
                    job: Some(JobState::Restarting),
                    ..base()
                },
                Action::Apply,
                L::Running,
                false,
                true,
                "Restarting",
            ),
            (
                "ready JobManager not answering",
                Observed {
                    job: None,
                    ..base()
                },
                Action::Apply,
                L::Running,
                false,
                false,
                "JobManagerUnreachable",
            ),
            (
                "invalid spec: nothing applied",
                Observed {
                    invalid: vec!["spec.job.parallelism: must be at least 1".into()],
                    previous: None,
                    ..base()
                },
                Action::Hold,
                L::Created,
                false,
                false,
                "InvalidSpec",
            ),
            (
                "invalid spec wins over missing objects",
                Observed {
                    invalid: vec!["spec.x: bad".into()],
                    missing: missing(),
                    ..base()
                },
                Action::Hold,
                L::Running,
                false,
                false,
                "InvalidSpec",
            ),
            (
                "suspended: objects kept, no pods",
                Observed {
                    suspended: true,
                    ..base()
                },
                Action::Apply,
                L::Suspended,
                false,
                false,
                "Suspended",
            ),
            (
                "resumed: deploying again",
                Observed {
                    job: None,
                    jobmanager_ready: false,
                    previous: Some(L::Suspended),
                    ..base()
                },
                Action::Apply,
                L::Deploying,
                false,
                true,
                "Deploying",
            ),
            (
                "an invalid spec is held even when suspended",
                Observed {
                    suspended: true,
                    invalid: vec!["spec.x: bad".into()],
                    ..base()
                },
                Action::Hold,
                L::Running,
                false,
                false,
                "InvalidSpec",
            ),
            (
                "deletion wins over everything",
                Observed {
                    deleting: true,
                    invalid: vec!["spec.x: bad".into()],
                    ..base()
                },
                Action::Release,
                L::Deleting,
                false,
                true,
                "Deleting",
            ),
        ];
        for (name, observed, action, lifecycle, ready, progressing, degraded) in cases {
            let d = decide(&observed);
            assert_eq!(d.action, action, "{name}");
            assert_eq!(d.lifecycle, lifecycle, "{name}");
            assert_eq!(d.ready.status, ready, "{name}");
            assert_eq!(d.progressing.status, progressing, "{name}");
            assert_eq!(d.degraded.reason, degraded, "{name}");
        }
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
