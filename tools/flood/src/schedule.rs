//! Open-loop send schedules: when each message *should* leave, fixed before the run starts and
//! independent of how fast the node answers.
//!
//! A closed loop ("send when the last one came back") slows down exactly when the node stalls
//! and so never records the stall (coordinated omission). Here the k-th send time is a function
//! of k alone; a sender that falls behind catches up at once, and every message's latency is
//! measured from its scheduled time, so a stall shows up as latency.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Inter-arrival law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Exactly one interval between sends.
    Uniform,
    /// Exponentially distributed intervals with the same mean (a Poisson process).
    Poisson,
}

/// One sender's schedule: an infinite sequence of intended send times in ns since the epoch.
#[derive(Debug)]
pub struct Schedule {
    next_ns: u64,
    /// Remainder of the uniform interval in 2^-32 ns, so rates that do not divide 1e9 keep their
    /// mean exactly over long runs.
    frac: u64,
    interval_ns: u64,
    interval_frac: u64,
    mean_ns: f64,
    arrivals: Arrivals,
    rng: StdRng,
}

impl Schedule {
    /// A schedule of `rate` sends per second starting at `start_ns`. The first send is at
    /// `start_ns + phase` where `phase` in [0, 1) is a fraction of the interval: senders that
    /// share a total rate are spread over the interval instead of sending in bursts.
    pub fn new(start_ns: u64, rate: f64, phase: f64, arrivals: Arrivals, seed: u64) -> Schedule {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        let mean_ns = 1e9 / rate;
        let fixed = (mean_ns * 4_294_967_296.0) as u128;
        let mut rng = StdRng::seed_from_u64(seed);
        let first = match arrivals {
            Arrivals::Uniform => (mean_ns * phase.clamp(0.0, 1.0)) as u64,
            Arrivals::Poisson => exponential(&mut rng, mean_ns),
        };
        Schedule {
            next_ns: start_ns + first,
            frac: 0,
            interval_ns: (fixed >> 32) as u64,
            interval_frac: (fixed & 0xffff_ffff) as u64,
            mean_ns,
            arrivals,
            rng,
        }
    }

    /// The next intended send time (not consumed).
    #[inline]
    pub fn peek(&self) -> u64 {
        self.next_ns
    }

    /// Consumes the next send time and returns it.
    #[inline]
    pub fn take(&mut self) -> u64 {
        let t = self.next_ns;
        match self.arrivals {
            Arrivals::Uniform => {
                self.frac += self.interval_frac;
                self.next_ns += self.interval_ns + (self.frac >> 32);
                self.frac &= 0xffff_ffff;
            }
            Arrivals::Poisson => self.next_ns += exponential(&mut self.rng, self.mean_ns),
        }
        t
    }
}

fn exponential(rng: &mut StdRng, mean_ns: f64) -> u64 {
    // Inverse transform; 1 - u is in (0, 1], so the log is finite.
    let u: f64 = rng.gen();
    (-(1.0 - u).ln() * mean_ns) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_keeps_the_exact_mean() {
        // 3 per second does not divide 1e9 ns: the fraction must not drift.
        let mut s = Schedule::new(0, 3.0, 0.0, Arrivals::Uniform, 1);
        for _ in 0..3_000 {
            s.take();
        }
        let t = s.peek();
        assert!((999_999_999_000..=1_000_000_001_000).contains(&t), "{t}");
    }

    #[test]
    fn phase_spreads_senders() {
        let s = Schedule::new(1_000, 1000.0, 0.5, Arrivals::Uniform, 1);
        assert_eq!(s.peek(), 1_000 + 500_000);
    }

    #[test]
    fn poisson_is_seeded_and_has_the_mean() {
        let mut a = Schedule::new(0, 10_000.0, 0.0, Arrivals::Poisson, 42);
        let mut b = Schedule::new(0, 10_000.0, 0.0, Arrivals::Poisson, 42);
        for _ in 0..100_000 {
            assert_eq!(a.take(), b.take());
        }
        // 100k sends at 10k/s: about 10 s, within a few percent.
        let t = a.peek() as f64 / 1e9;
        assert!((9.7..10.3).contains(&t), "{t}");
    }
}
