//! Restart strategies: after a task failure, whether and when the job restarts from its latest
//! completed checkpoint. The decision is a pure function of the failure history and the time,
//! so it is tested with tables of cases.

use std::collections::VecDeque;
use std::time::Duration;

/// How a job reacts to failures (`spec.restartStrategy`).
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Fail the job on the first failure.
    None,
    /// Restart up to `attempts` times, waiting `delay` each time.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each restart.
        delay: Duration,
    },
    /// Restart without limit, with a delay that grows by `multiplier` up to `max` and resets
    /// after `reset_threshold` without failures.
    ExponentialDelay {
        /// First delay.
        initial: Duration,
        /// Largest delay.
        max: Duration,
        /// Growth factor (≥ 1).
        multiplier: f64,
        /// Failure-free time after which the delay starts over.
        reset_threshold: Duration,
        /// Random spread of each delay, 0..=1.
        jitter: f64,
    },
    /// Restart unless more than `max_failures` failures happened within `interval`.
    FailureRate {
        /// Failures tolerated per interval.
        max_failures: u32,
        /// The interval.
        interval: Duration,
        /// Wait before each restart.
        delay: Duration,
    },
}

/// What to do about a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartDecision {
    /// Restart after the delay.
    Restart(Duration),
    /// Give up; the reason says which limit was hit.
    Fail(String),
}

/// The failure history a strategy needs.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    restarts: u32,
    failures: VecDeque<i64>,
    backoff: Option<Duration>,
    last_failure_ms: Option<i64>,
}

impl RestartTracker {
    /// Records a failure at `now_ms` and decides; `random` in [0, 1) spreads the jitter.
    pub fn on_failure(
        &mut self,
        strategy: &RestartStrategy,
        now_ms: i64,
        random: f64,
    ) -> RestartDecision {
        let previous = self.last_failure_ms.replace(now_ms);
        match strategy {
            RestartStrategy::None => RestartDecision::Fail("the restart strategy is none".into()),
            RestartStrategy::FixedDelay { attempts, delay } => {
                if self.restarts >= *attempts {
                    return RestartDecision::Fail(format!(
                        "fixed-delay restart strategy exhausted its {attempts} attempts"
                    ));
                }
                self.restarts += 1;
                RestartDecision::Restart(*delay)
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_threshold,
                jitter,
            } => {
                let quiet =
                    previous.is_some_and(|p| now_ms - p >= reset_threshold.as_millis() as i64);
                let base = match self.backoff {
                    Some(b) if !quiet => b,
                    _ => *initial,
                };
                self.backoff = Some(base.mul_f64(multiplier.max(1.0)).min(*max));
                self.restarts += 1;
                let spread = 1.0 + jitter.clamp(0.0, 1.0) * (2.0 * random.clamp(0.0, 1.0) - 1.0);
                RestartDecision::Restart(base.mul_f64(spread.max(0.0)).min(*max))
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                let horizon = now_ms - interval.as_millis() as i64;
                self.failures.push_back(now_ms);
                while self.failures.front().is_some_and(|&t| t <= horizon) {
                    self.failures.pop_front();
                }
                if self.failures.len() as u32 > *max_failures {
                    return RestartDecision::Fail(format!(
                        "failure-rate restart strategy: {} failures within {:?} (at most {max_failures} allowed)",
                        self.failures.len(),
                        interval
                    ));
                }
                self.restarts += 1;
                RestartDecision::Restart(*delay)
            }
        }
    }

    /// Restarts granted so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestartDecision::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs failures at the given times and returns the decisions.
    fn run(s: &RestartStrategy, times: &[i64]) -> Vec<RestartDecision> {
        let mut t = RestartTracker::default();
        times.iter().map(|&now| t.on_failure(s, now, 0.5)).collect()
    }

    #[test]
    fn decisions() {
        let fail = |m: &str| Fail(m.to_string());
        let cases: Vec<(RestartStrategy, Vec<i64>, Vec<RestartDecision>)> = vec![
            (
                RestartStrategy::None,
                vec![0],
                vec![fail("the restart strategy is none")],
            ),
            (
                RestartStrategy::FixedDelay {
                    attempts: 2,
                    delay: ms(100),
                },
                vec![0, 10, 20],
                vec![
                    Restart(ms(100)),
                    Restart(ms(100)),
                    fail("fixed-delay restart strategy exhausted its 2 attempts"),
                ],
            ),
            (
                RestartStrategy::ExponentialDelay {
                    initial: ms(100),
                    max: ms(350),
                    multiplier: 2.0,
                    reset_threshold: ms(10_000),
                    jitter: 0.0,
                },
                // Grows 100, 200, 350 (capped), then resets after a quiet period.
                vec![0, 1, 2, 3, 20_000],
                vec![
                    Restart(ms(100)),
                    Restart(ms(200)),
                    Restart(ms(350)),
                    Restart(ms(350)),
                    Restart(ms(100)),
                ],
            ),
            (
                RestartStrategy::FailureRate {
                    max_failures: 2,
                    interval: ms(1_000),
                    delay: ms(10),
                },
                vec![0, 500, 1_600, 1_700, 1_800],
                vec![
                    Restart(ms(10)),
                    Restart(ms(10)),
                    Restart(ms(10)),
                    Restart(ms(10)),
                    fail("failure-rate restart strategy: 3 failures within 1s (at most 2 allowed)"),
                ],
            ),
        ];
        for (s, times, expected) in cases {
            assert_eq!(run(&s, &times), expected, "{s:?}");
        }
    }

    #[test]
    fn jitter_spreads_delays_within_bounds() {
        let s = RestartStrategy::ExponentialDelay {
            initial: ms(1_000),
            max: ms(60_000),
            multiplier: 2.0,
            reset_threshold: ms(3_600_000),
            jitter: 0.1,
        };
        for (r, want) in [(0.0, 900), (0.5, 1_000), (0.999_999, 1_099)] {
            let mut t = RestartTracker::default();
            let Restart(d) = t.on_failure(&s, 0, r) else {
                panic!("no restart")
            };
            assert_eq!(d.as_millis() as u64, want, "random {r}");
        }
    }
}
