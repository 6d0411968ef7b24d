//! The *decide* step of leader election: a pure function from what a candidate observed of the
//! Lease, its own role, the time and its configuration to the one thing it does next.
//!
//! The rules are client-go's and Flink's:
//! - a candidate acquires a Lease that is absent, released (no holder) or expired; it waits
//!   while another holder's Lease is live;
//! - a leader renews every retry period, and steps down when it has not renewed within the
//!   renew deadline, or when the Lease names another holder or another term.
//!
//! Expiry is judged on this process's monotonic clock, from the moment it *observed* the
//! holder's last renewal, never from the `renewTime` written by another machine: clocks of
//! different machines disagree, the passage of time on one machine does not. Because
//! `renew_deadline < lease_duration`, and a leader counts its deadline from the moment it
//! *sent* its last successful renewal (before any observer can have seen it), a leader that
//! cannot renew steps down before any other candidate may acquire.

use std::time::{Duration, Instant};

/// Timing of an election (Flink's `high-availability.kubernetes.leader-election.*` options,
/// client-go's `LeaderElectionConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionConfig {
    /// How long a Lease stays valid after its last renewal as seen by the other candidates; a
    /// candidate may acquire a Lease not renewed for this long.
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal before it steps down.
    /// Shorter than the lease duration, so the leader stops before anybody else may start.
    pub renew_deadline: Duration,
    /// How often a leader renews and a candidate looks at the Lease again.
    pub retry_period: Duration,
}

impl Default for ElectionConfig {
    /// client-go's defaults (15 s, 10 s, 2 s): a crashed leader is replaced within about 17 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// An [`ElectionConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The Lease stores its duration in whole seconds.
    #[error(
        "leaseDuration must be at least 1s (the Lease stores whole seconds), got {0:?}: raise it"
    )]
    LeaseTooShort(Duration),
    /// A leader could still believe it leads after another was allowed to take over.
    #[error(
        "renewDeadline ({renew_deadline:?}) must be shorter than leaseDuration ({lease_duration:?}), or two leaders could overlap: lower renewDeadline or raise leaseDuration"
    )]
    DeadlineNotBelowLease {
        /// The renew deadline.
        renew_deadline: Duration,
        /// The lease duration.
        lease_duration: Duration,
    },
    /// A leader would step down before its first retry.
    #[error(
        "retryPeriod ({retry_period:?}) must be positive and shorter than renewDeadline ({renew_deadline:?}), or a leader steps down before it retries: lower retryPeriod"
    )]
    RetryNotBelowDeadline {
        /// The retry period.
        retry_period: Duration,
        /// The renew deadline.
        renew_deadline: Duration,
    },
}

impl ElectionConfig {
    /// Checks the ordering `0 < retry period < renew deadline < lease duration`, `lease ≥ 1 s`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(ConfigError::LeaseTooShort(self.lease_duration));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(ConfigError::DeadlineNotBelowLease {
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(ConfigError::RetryNotBelowDeadline {
                retry_period: self.retry_period,
                renew_deadline: self.renew_deadline,
            });
        }
        Ok(())
    }

    /// The lease duration as the Lease stores it: whole seconds, rounded up.
    pub fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// The Lease as a candidate last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLease {
    /// Who holds it; `None` when it was released.
    pub holder: Option<String>,
    /// Its fencing epoch (`leaseTransitions`).
    pub epoch: u64,
    /// How long it is valid after a renewal, as its holder wrote it.
    pub lease_duration: Duration,
    /// When this process first saw its current content (holder, renewal, epoch): the start of
    /// the holder's validity as far as this process can tell.
    pub observed_at: Instant,
}

/// What this process is at the moment of deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not leading.
    Candidate,
    /// Leading in the term with `epoch`; the last successful renewal (or the acquisition) was
    /// sent at `last_renewal`.
    Leader {
        /// The term's epoch.
        epoch: u64,
        /// When the last successful write of the Lease was sent.
        last_renewal: Instant,
    },
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write the Lease with this process as holder, in a new term (the epoch goes up).
    Acquire(AcquireReason),
    /// Write the Lease's renewal time, keeping holder and epoch.
    Renew,
    /// Nothing until `until` (or until shutdown).
    Wait {
        /// When to look again.
        until: Instant,
        /// Why.
        reason: WaitReason,
    },
    /// Stop acting as leader at once, then carry on as a candidate.
    StepDown(StepDownReason),
}

/// Why a candidate may acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireReason {
    /// There is no Lease yet.
    Absent,
    /// The Lease has no holder (its last holder released it).
    Released,
    /// The holder has not renewed within the lease duration.
    Expired {
        /// The holder that let it expire.
        holder: String,
    },
    /// The Lease names this identity but this process does not lead: it is the term this
    /// process stepped down from, or an earlier incarnation's (a restarted process with the same
    /// identity). A new term, with a higher epoch, fences that one off.
    OwnPreviousTerm,
}

/// Why there is nothing to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// Another holder's Lease is live.
    HeldBy {
        /// The holder.
        holder: String,
        /// When it expires unless renewed, as far as this process can tell.
        expires: Instant,
    },
    /// Leading; the next renewal is due at `until`.
    NextRenewal,
}

/// Why a leader steps down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepDownReason {
    /// No renewal succeeded within the renew deadline (API server unreachable, process paused).
    #[error(
        "could not renew the lease within the renew deadline ({since_last_renewal:?} since the last renewal)"
    )]
    RenewDeadlineExceeded {
        /// Time since the last successful renewal was sent.
        since_last_renewal: Duration,
    },
    /// Somebody else holds the Lease now, or it was released.
    #[error("the lease is held by {} now", .holder.as_deref().unwrap_or("nobody"))]
    OtherHolder {
        /// The new holder; `None` if released.
        holder: Option<String>,
        /// The Lease's epoch now.
        epoch: u64,
    },
    /// The Lease names this identity in another term (another process with the same identity).
    #[error("the lease is in epoch {epoch} now, not in this leader's")]
    OtherTerm {
        /// The Lease's epoch now.
        epoch: u64,
    },
    /// The Lease was deleted.
    #[error("the lease was deleted")]
    LeaseDeleted,
}

/// The decision. `observed` is the Lease as last read (`None`: it does not exist), `identity`
/// this candidate's identity.
pub fn decide(
    observed: Option<&ObservedLease>,
    role: Role,
    now: Instant,
    identity: &str,
    config: &ElectionConfig,
) -> Action {
    match role {
        Role::Leader {
            epoch,
            last_renewal,
        } => {
            // The deadline comes first: past it, whatever the Lease says was true too long ago.
            let since_last_renewal = now.saturating_duration_since(last_renewal);
            if since_last_renewal >= config.renew_deadline {
                return Action::StepDown(StepDownReason::RenewDeadlineExceeded {
                    since_last_renewal,
                });
            }
            let Some(lease) = observed else {
                return Action::StepDown(StepDownReason::LeaseDeleted);
            };
            if lease.holder.as_deref() != Some(identity) {
                return Action::StepDown(StepDownReason::OtherHolder {
                    holder: lease.holder.clone(),
                    epoch: lease.epoch,
                });
            }
            if lease.epoch != epoch {
                return Action::StepDown(StepDownReason::OtherTerm { epoch: lease.epoch });
            }
            let due = last_renewal + config.retry_period;
            if now >= due {
                Action::Renew
            } else {
                Action::Wait {
                    until: due,
                    reason: WaitReason::NextRenewal,
                }
            }
        }
        Role::Candidate => {
            let Some(lease) = observed else {
                return Action::Acquire(AcquireReason::Absent);
            };
            let holder = match lease.holder.as_deref() {
                None | Some("") => return Action::Acquire(AcquireReason::Released),
                Some(h) if h == identity => {
                    return Action::Acquire(AcquireReason::OwnPreviousTerm);
                }
                Some(h) => h,
            };
            let expires = lease.observed_at + lease.lease_duration;
            if now >= expires {
                return Action::Acquire(AcquireReason::Expired {
                    holder: holder.to_string(),
                });
            }
            Action::Wait {
                // Look again every retry period (a release shows up early), and right at expiry.
                until: expires.min(now + config.retry_period),
                reason: WaitReason::HeldBy {
                    holder: holder.to_string(),
                    expires,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "jm-0";
    const OTHER: &str = "jm-1";

    fn config() -> ElectionConfig {
        ElectionConfig {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn lease(t0: Instant, holder: Option<&str>, epoch: u64, seen_at: u64) -> ObservedLease {
        ObservedLease {
            holder: holder.map(str::to_string),
            epoch,
            lease_duration: s(15),
            observed_at: t0 + s(seen_at),
        }
    }

    /// One row: what is observed, the role, the time (seconds after t0) → the expected action.
    struct Case {
        name: &'static str,
        observed: Option<ObservedLease>,
        role: Role,
        now: u64,
        expect: Action,
    }

    #[test]
    fn decisions() {
        let t0 = Instant::now();
        let leader = |epoch, renewed: u64| Role::Leader {
            epoch,
            last_renewal: t0 + s(renewed),
        };
        let cases = vec![
            // --- candidates
            Case {
                name: "no lease yet: acquire",
                observed: None,
                role: Role::Candidate,
                now: 0,
                expect: Action::Acquire(AcquireReason::Absent),
            },
            Case {
                name: "released lease: acquire at once",
                observed: Some(lease(t0, None, 3, 0)),
                role: Role::Candidate,
                now: 0,
                expect: Action::Acquire(AcquireReason::Released),
            },
            Case {
                name: "empty holder counts as released",
                observed: Some(lease(t0, Some(""), 3, 0)),
                role: Role::Candidate,
                now: 0,
                expect: Action::Acquire(AcquireReason::Released),
            },
            Case {
                name: "live lease of another: wait one retry period",
                observed: Some(lease(t0, Some(OTHER), 3, 0)),
                role: Role::Candidate,
                now: 5,
                expect: Action::Wait {
                    until: t0 + s(7),
                    reason: WaitReason::HeldBy {
                        holder: OTHER.into(),
                        expires: t0 + s(15),
                    },
                },
            },
            Case {
                name: "live lease about to expire: wake at expiry, not later",
                observed: Some(lease(t0, Some(OTHER), 3, 0)),
                role: Role::Candidate,
                now: 14,
                expect: Action::Wait {
                    until: t0 + s(15),
                    reason: WaitReason::HeldBy {
                        holder: OTHER.into(),
                        expires: t0 + s(15),
                    },
                },
            },
            Case {
                name: "lease expires exactly now: acquire",
                observed: Some(lease(t0, Some(OTHER), 3, 0)),
                role: Role::Candidate,
                now: 15,
                expect: Action::Acquire(AcquireReason::Expired {
                    holder: OTHER.into(),
                }),
            },
            Case {
                name: "expiry counts from when this process saw the renewal",
                observed: Some(lease(t0, Some(OTHER), 3, 10)),
                role: Role::Candidate,
                now: 20,
                expect: Action::Wait {
                    until: t0 + s(22),
                    reason: WaitReason::HeldBy {
                        holder: OTHER.into(),
                        expires: t0 + s(25),
                    },
                },
            },
            Case {
                name: "the holder's own lease duration applies",
                observed: Some(ObservedLease {
                    lease_duration: s(4),
                    ..lease(t0, Some(OTHER), 3, 0)
                }),
                role: Role::Candidate,
                now: 4,
                expect: Action::Acquire(AcquireReason::Expired {
                    holder: OTHER.into(),
                }),
            },
            Case {
                name: "lease under my identity that I do not lead: new term",
                observed: Some(lease(t0, Some(ME), 3, 0)),
                role: Role::Candidate,
                now: 1,
                expect: Action::Acquire(AcquireReason::OwnPreviousTerm),
            },
            // --- leaders
            Case {
                name: "leader before the retry period: wait for the next renewal",
                observed: Some(lease(t0, Some(ME), 3, 0)),
                role: leader(3, 0),
                now: 1,
                expect: Action::Wait {
                    until: t0 + s(2),
                    reason: WaitReason::NextRenewal,
                },
            },
            Case {
                name: "leader at the retry period: renew",
                observed: Some(lease(t0, Some(ME), 3, 0)),
                role: leader(3, 0),
                now: 2,
                expect: Action::Renew,
            },
            Case {
                name: "leader whose renewals failed for a while: keep trying",
                observed: Some(lease(t0, Some(ME), 3, 0)),
                role: leader(3, 0),
                now: 9,
                expect: Action::Renew,
            },
            Case {
                name: "leader at the renew deadline: step down",
                observed: Some(lease(t0, Some(ME), 3, 0)),
                role: leader(3, 0),
                now: 10,
                expect: Action::StepDown(StepDownReason::RenewDeadlineExceeded {
                    since_last_renewal: s(10),
                }),
            },
            Case {
                name: "paused leader waking up long after: step down before anything else",
                observed: Some(lease(t0, Some(OTHER), 4, 20)),
                role: leader(3, 0),
                now: 60,
                expect: Action::StepDown(StepDownReason::RenewDeadlineExceeded {
                    since_last_renewal: s(60),
                }),
            },
            Case {
                name: "leader sees another holder: step down",
                observed: Some(lease(t0, Some(OTHER), 4, 1)),
                role: leader(3, 0),
                now: 1,
                expect: Action::StepDown(StepDownReason::OtherHolder {
                    holder: Some(OTHER.into()),
                    epoch: 4,
                }),
            },
            Case {
                name: "leader sees its lease released by someone: step down",
                observed: Some(lease(t0, None, 3, 1)),
                role: leader(3, 0),
                now: 1,
                expect: Action::StepDown(StepDownReason::OtherHolder {
                    holder: None,
                    epoch: 3,
                }),
            },
            Case {
                name: "leader sees its identity in another term: step down",
                observed: Some(lease(t0, Some(ME), 5, 1)),
                role: leader(3, 0),
                now: 1,
                expect: Action::StepDown(StepDownReason::OtherTerm { epoch: 5 }),
            },
            Case {
                name: "leader sees the lease deleted: step down",
                observed: None,
                role: leader(3, 0),
                now: 1,
                expect: Action::StepDown(StepDownReason::LeaseDeleted),
            },
        ];
        let mut failures = Vec::new();
        for c in &cases {
            let got = decide(c.observed.as_ref(), c.role, t0 + s(c.now), ME, &config());
            if got != c.expect {
                failures.push(format!(
                    "{}:\n  expected {:?}\n  got      {:?}",
                    c.name, c.expect, got
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(config().validate(), Ok(()));
        assert_eq!(ElectionConfig::default().validate(), Ok(()));
        let bad = [
            (
                ElectionConfig {
                    lease_duration: Duration::from_millis(500),
                    renew_deadline: Duration::from_millis(400),
                    retry_period: Duration::from_millis(100),
                },
                "at least 1s",
            ),
            (
                ElectionConfig {
                    renew_deadline: s(15),
                    ..config()
                },
                "renewDeadline",
            ),
            (
                ElectionConfig {
                    retry_period: s(10),
                    ..config()
                },
                "retryPeriod",
            ),
            (
                ElectionConfig {
                    retry_period: Duration::ZERO,
                    ..config()
                },
                "retryPeriod",
            ),
        ];
        for (c, needle) in bad {
            let e = c.validate().expect_err("invalid").to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn lease_seconds_round_up() {
        let c = |ms| ElectionConfig {
            lease_duration: Duration::from_millis(ms),
            ..config()
        };
        assert_eq!(c(15_000).lease_duration_seconds(), 15);
        assert_eq!(c(2_500).lease_duration_seconds(), 3);
    }
}
