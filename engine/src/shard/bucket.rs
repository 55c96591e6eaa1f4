//! A token bucket driven by the caller's clock.
//!
//! Hand-written rather than taken from a crate: the shard core never reads the clock (time is
//! an argument, so tests drive it), and the check sits on per-request paths where it must be a
//! few instructions with no allocation or atomics; the rate-limiting crates read their own
//! clocks or keep shared atomic state.

use std::time::Instant;

/// Up to `burst` units at once, refilled at `rate_per_s` units per second.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Available units, scaled by 1,000,000 so sub-unit refills accumulate exactly.
    micro: u128,
    last: Instant,
    rate_per_s: u64,
    burst: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(now: Instant, rate_per_s: u64, burst: u64) -> TokenBucket {
        TokenBucket { micro: u128::from(burst) * 1_000_000, last: now, rate_per_s, burst }
    }

    /// Takes `n` units if available; false (and nothing taken) otherwise. A rate of 0 means
    /// unlimited.
    pub(crate) fn take(&mut self, now: Instant, n: u64) -> bool {
        if self.rate_per_s == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_micros();
        self.last = self.last.max(now);
        let cap = u128::from(self.burst) * 1_000_000;
        self.micro = (self.micro + elapsed * u128::from(self.rate_per_s)).min(cap);
        let want = u128::from(n) * 1_000_000;
        if self.micro >= want {
            self.micro -= want;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 10, 5);
        assert!((0..5).all(|_| b.take(t0, 1)));
        assert!(!b.take(t0, 1), "burst spent");
        assert!(!b.take(t0 + Duration::from_millis(99), 1));
        assert!(b.take(t0 + Duration::from_millis(100), 1), "one unit per 100 ms");
        assert!(!b.take(t0 + Duration::from_millis(100), 1));
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(60);
        assert!(b.take(later, 5));
        assert!(!b.take(later, 1));
        assert!(!b.take(later, 6), "more than the burst never fits");
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 0, 0);
        assert!((0..1000).all(|_| b.take(t0, u64::MAX / 2)));
    }
}
