//! Reconnecting to a list of nodes: which node a failed connection tries next, how long it
//! waits first (exponential backoff with jitter), and when it gives up.
//!
//! The endpoint applies this: a connection that fails before its session (refused, no session
//! within `attempt_timeout`) is opened again on the next node without the scenario noticing; one
//! that loses its session (closed by the node, idle timeout) is reported as `Closed` with
//! `reconnecting` and then comes back with a new WELCOME, for the scenario to set up again. All
//! of a run's connections start on the first node: without federation, peers on different nodes
//! do not see each other's traffic, so spreading them would break the scenarios' promises.

use std::time::Duration;

/// Most attempts a connection gets.
pub const ATTEMPTS_MAX: u32 = 100;

/// How a failed connection is tried again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reconnect {
    /// Attempts after the first failure (0: none, a failure is final).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub base: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
    /// Longest time an attempt may take to get its session before it counts as failed.
    pub attempt_timeout: Duration,
}

impl Reconnect {
    /// No reconnecting: the single-node behaviour.
    pub const NONE: Reconnect = Reconnect {
        attempts: 0,
        base: Duration::from_millis(100),
        max: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(3),
    };

    /// `attempts` retries with the default backoff (100 ms doubling up to 2 s); an attempt that
    /// has no session within `attempt_timeout` fails.
    pub fn with_attempts(attempts: u32, attempt_timeout: Duration) -> Reconnect {
        Reconnect { attempts, attempt_timeout, ..Reconnect::NONE }
    }

    /// True when failures are retried.
    pub fn enabled(&self) -> bool {
        self.attempts > 0
    }

    /// Wait before attempt `attempt` (1 = the first retry): `base · 2^(attempt−1)` capped at
    /// `max`, times a jitter factor in [0.5, 1.5) from `unit` in [0, 1), so connections that
    /// failed together do not all come back in the same instant.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        exp.min(self.max).mul_f64(0.5 + unit.clamp(0.0, 1.0))
    }

    /// Upper bound of the total wait over all attempts (for documentation and timeouts).
    pub fn worst_case(&self) -> Duration {
        (1..=self.attempts)
            .map(|a| self.backoff(a, 1.0) + self.attempt_timeout)
            .fold(Duration::ZERO, |a, b| a.saturating_add(b))
    }
}

/// The node a connection tries after a failure on node `current` of `n`.
pub fn next_node(current: usize, n: usize) -> usize {
    (current + 1) % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let r = Reconnect::with_attempts(8, Duration::from_secs(1));
        let mid = |a| r.backoff(a, 0.5);
        assert_eq!(mid(1), Duration::from_millis(100));
        assert_eq!(mid(2), Duration::from_millis(200));
        assert_eq!(mid(5), Duration::from_millis(1600));
        assert_eq!(mid(6), Duration::from_secs(2), "capped");
        assert_eq!(mid(60), Duration::from_secs(2), "no overflow");
        assert_eq!(r.backoff(1, 0.0), Duration::from_millis(50));
        assert!(r.backoff(1, 0.999) < Duration::from_millis(150));
        assert!(r.worst_case() < Duration::from_secs(8 * 4));
        assert!(!Reconnect::NONE.enabled() && r.enabled());
    }

    #[test]
    fn nodes_are_tried_in_order_and_wrap() {
        assert_eq!(next_node(0, 3), 1);
        assert_eq!(next_node(2, 3), 0);
        assert_eq!(next_node(0, 1), 0);
    }
}
