//! The fault model without I/O: given a datagram's direction, length and arrival time, the
//! [`Shaper`] decides whether it is dropped, or when it leaves (and how many times).
//!
//! Each direction has its own seeded RNG, so the decisions for one direction depend only on
//! the seed and the sequence of datagrams in that direction (the proxy receives each direction
//! on its own thread or threads; with one client, each direction's sequence is its arrival
//! order).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::faults::{Direction, Faults, RateLimit};

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The direction is blackholed.
    Blackhole,
    /// Longer than the configured MTU.
    Mtu,
    /// Random loss.
    Loss,
    /// The bandwidth cap's queue is full.
    RateQueue,
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Dropped.
    Drop(DropReason),
    /// Sent at `at` (which may be the arrival time), `copies` times (2 when duplicated; the
    /// copy right after the original).
    Deliver {
        /// When it leaves the proxy.
        at: Instant,
        /// 1, or 2 when duplicated.
        copies: u8,
    },
}

/// The shaper's decisions so far, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShaperCounters {
    /// Datagrams decided on.
    pub received: u64,
    /// Dropped by a blackhole.
    pub dropped_blackhole: u64,
    /// Dropped for exceeding the MTU.
    pub dropped_mtu: u64,
    /// Dropped by random loss.
    pub dropped_loss: u64,
    /// Dropped because the bandwidth cap's queue was full.
    pub dropped_rate: u64,
    /// Delivered with a delay (any of delay, jitter, queueing behind the cap, reordering).
    pub delayed: u64,
    /// Held back by the reorder delay.
    pub reordered: u64,
    /// Sent twice.
    pub duplicated: u64,
}

impl ShaperCounters {
    /// All drops.
    pub fn dropped(&self) -> u64 {
        self.dropped_blackhole + self.dropped_mtu + self.dropped_loss + self.dropped_rate
    }
}

/// A token bucket whose balance may go negative: the debt is the bytes queued behind the cap,
/// and a datagram leaves when the refill has paid off the debt it joined.
#[derive(Debug, Clone)]
struct Bucket {
    limit: RateLimit,
    /// Bytes available now (negative: queued bytes).
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn new(limit: RateLimit) -> Bucket {
        Bucket { limit, tokens: limit.burst as f64, last: None }
    }

    /// The queueing delay of a datagram of `len` bytes arriving at `now`, or `None` when the
    /// queue cannot take it.
    fn admit(&mut self, len: usize, now: Instant) -> Option<Duration> {
        let rate = self.limit.bytes_per_sec as f64;
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(self.limit.burst as f64);
        }
        self.last = Some(now.max(self.last.unwrap_or(now)));
        let after = self.tokens - len as f64;
        if after >= 0.0 {
            self.tokens = after;
            return Some(Duration::ZERO);
        }
        if -after > self.limit.queue as f64 {
            return None;
        }
        self.tokens = after;
        Some(Duration::from_secs_f64(-after / rate))
    }
}

#[derive(Debug)]
struct DirState {
    faults: Faults,
    rng: StdRng,
    bucket: Option<Bucket>,
    counters: ShaperCounters,
}

impl DirState {
    fn new(seed: u64, faults: Faults) -> DirState {
        let bucket = faults.rate.map(Bucket::new);
        DirState { faults, rng: StdRng::seed_from_u64(seed), bucket, counters: Default::default() }
    }

    /// `p` of 0 or 1 decides without a draw, so that turning a fault on or off does not shift
    /// the random sequence of the others.
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.rng.gen::<f64>() < p
        }
    }

    fn decide(&mut self, len: usize, now: Instant) -> Verdict {
        self.counters.received += 1;
        let f = &self.faults;
        if f.blackhole {
            self.counters.dropped_blackhole += 1;
            return Verdict::Drop(DropReason::Blackhole);
        }
        if f.mtu.is_some_and(|m| len > m) {
            self.counters.dropped_mtu += 1;
            return Verdict::Drop(DropReason::Mtu);
        }
        let (loss, reorder, duplicate) = (f.loss, f.reorder, f.duplicate);
        let (base, jitter, reorder_delay) = (f.delay, f.jitter, f.reorder_delay);
        if self.chance(loss) {
            self.counters.dropped_loss += 1;
            return Verdict::Drop(DropReason::Loss);
        }
        let mut delay = match self.bucket.as_mut().map(|b| b.admit(len, now)) {
            None => Duration::ZERO,
            Some(Some(queued)) => queued,
            Some(None) => {
                self.counters.dropped_rate += 1;
                return Verdict::Drop(DropReason::RateQueue);
            }
        };
        delay += if jitter.is_zero() {
            base
        } else {
            // Uniform in [base - jitter, base + jitter], floored at zero.
            let j = jitter.as_secs_f64();
            let d = base.as_secs_f64() + self.rng.gen_range(-j..=j);
            Duration::from_secs_f64(d.max(0.0))
        };
        if self.chance(reorder) {
            delay += reorder_delay;
            self.counters.reordered += 1;
        }
        if !delay.is_zero() {
            self.counters.delayed += 1;
        }
        let copies = if self.chance(duplicate) {
            self.counters.duplicated += 1;
            2
        } else {
            1
        };
        Verdict::Deliver { at: now + delay, copies }
    }
}

/// The fault model of both directions.
#[derive(Debug)]
pub struct Shaper {
    dirs: [DirState; 2],
}

impl Shaper {
    /// A shaper with clean paths; `seed` fixes every random decision.
    pub fn new(seed: u64) -> Shaper {
        Shaper::with_faults(seed, Faults::default(), Faults::default())
    }

    /// A shaper starting with the given faults.
    pub fn with_faults(seed: u64, up: Faults, down: Faults) -> Shaper {
        // Distinct streams per direction from one seed (splitmix-style constant).
        let down_seed = seed ^ 0x9E37_79B9_7F4A_7C15;
        Shaper { dirs: [DirState::new(seed, up), DirState::new(down_seed, down)] }
    }

    /// Replaces the faults of `dir`. A changed bandwidth cap starts with a full bucket; the
    /// random sequence continues.
    pub fn set(&mut self, dir: Direction, faults: Faults) {
        let d = &mut self.dirs[dir.index()];
        if d.faults.rate != faults.rate {
            d.bucket = faults.rate.map(Bucket::new);
        }
        d.faults = faults;
    }

    /// The faults of `dir`.
    pub fn faults(&self, dir: Direction) -> &Faults {
        &self.dirs[dir.index()].faults
    }

    /// Decides the fate of a datagram of `len` bytes arriving at `now` in direction `dir`.
    pub fn decide(&mut self, dir: Direction, len: usize, now: Instant) -> Verdict {
        self.dirs[dir.index()].decide(len, now)
    }

    /// The decisions so far in `dir`.
    pub fn counters(&self, dir: Direction) -> ShaperCounters {
        self.dirs[dir.index()].counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::RateLimit;

    const N: u64 = 20_000;

    fn deliver_at(v: Verdict) -> Option<Instant> {
        match v {
            Verdict::Deliver { at, .. } => Some(at),
            Verdict::Drop(_) => None,
        }
    }

    /// Dropped count for `N` datagrams at loss `p` lies within 5 standard deviations of `N p`
    /// (a false failure is a one-in-millions event, and the seed is fixed anyway).
    #[test]
    fn loss_rate_is_within_statistical_bounds() {
        for (seed, p) in [(1, 0.05), (2, 0.3), (3, 0.5)] {
            let mut s = Shaper::with_faults(seed, Faults::loss(p), Faults::default());
            let now = Instant::now();
            let dropped = (0..N)
                .filter(|_| s.decide(Direction::Up, 1200, now) == Verdict::Drop(DropReason::Loss))
                .count() as f64;
            let mean = N as f64 * p;
            let sd = (N as f64 * p * (1.0 - p)).sqrt();
            assert!((dropped - mean).abs() < 5.0 * sd, "p={p}: {dropped} dropped of {N}");
            // The other direction is clean and untouched.
            assert!(deliver_at(s.decide(Direction::Down, 1200, now)) == Some(now));
            assert_eq!(s.counters(Direction::Up).dropped_loss, dropped as u64);
            assert_eq!(s.counters(Direction::Down).dropped(), 0);
        }
    }

    #[test]
    fn same_seed_same_decisions_other_seed_other_decisions() {
        let run = |seed| {
            let mut s = Shaper::with_faults(seed, Faults::loss(0.5), Faults::default());
            let now = Instant::now();
            (0..256)
                .map(|_| deliver_at(s.decide(Direction::Up, 100, now)).map(|at| at - now))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn delay_and_jitter_stay_within_bounds_and_spread() {
        let faults = Faults {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            ..Faults::default()
        };
        let mut s = Shaper::with_faults(4, faults, Faults::default());
        let now = Instant::now();
        let delays: Vec<Duration> =
            (0..N).map(|_| deliver_at(s.decide(Direction::Up, 1200, now)).unwrap() - now).collect();
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*min >= Duration::from_millis(40), "{min:?}");
        assert!(*max <= Duration::from_millis(60), "{max:?}");
        // Uniform: the extremes are approached and the mean is near the base.
        assert!(*min < Duration::from_millis(41) && *max > Duration::from_millis(59));
        let mean = delays.iter().sum::<Duration>() / N as u32;
        assert!(mean > Duration::from_millis(49) && mean < Duration::from_millis(51), "{mean:?}");
        assert_eq!(s.counters(Direction::Up).delayed, N);
    }

    #[test]
    fn jitter_larger_than_delay_is_floored_at_zero() {
        let faults = Faults { jitter: Duration::from_millis(5), ..Faults::default() };
        let mut s = Shaper::with_faults(5, faults, Faults::default());
        let now = Instant::now();
        let mut zero = 0;
        for _ in 0..1000 {
            let at = deliver_at(s.decide(Direction::Up, 100, now)).unwrap();
            assert!(at >= now && at <= now + Duration::from_millis(5));
            zero += u32::from(at == now);
        }
        // About half the draws are negative and become "at once".
        assert!((400..600).contains(&zero), "{zero}");
    }

    #[test]
    fn reordering_lets_later_datagrams_overtake() {
        let faults =
            Faults { reorder: 0.1, reorder_delay: Duration::from_millis(20), ..Faults::default() };
        let mut s = Shaper::with_faults(6, faults, Faults::default());
        let start = Instant::now();
        // One datagram per millisecond: a held-back one leaves after the next 20 or so.
        let times: Vec<Instant> = (0..2000u64)
            .map(|i| {
                let now = start + Duration::from_millis(i);
                deliver_at(s.decide(Direction::Up, 1200, now)).unwrap()
            })
            .collect();
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by_key(|&i| (times[i], i));
        let overtaken = order.windows(2).filter(|w| w[0] > w[1]).count();
        let held = s.counters(Direction::Up).reordered;
        assert!((140..=260).contains(&held), "{held} held back of 2000");
        assert!(overtaken >= held as usize / 2, "{overtaken} inversions for {held} held back");
        // Nothing is lost or duplicated by reordering.
        assert_eq!(s.counters(Direction::Up).dropped(), 0);
        assert_eq!(s.counters(Direction::Up).duplicated, 0);
    }

    #[test]
    fn duplication_sends_two_copies() {
        let mut all = Shaper::with_faults(
            7,
            Faults { duplicate: 1.0, ..Faults::default() },
            Faults { duplicate: 0.25, ..Faults::default() },
        );
        let now = Instant::now();
        assert_eq!(all.decide(Direction::Up, 10, now), Verdict::Deliver { at: now, copies: 2 });
        let twice = (0..N)
            .filter(|_| {
                matches!(all.decide(Direction::Down, 10, now), Verdict::Deliver { copies: 2, .. })
            })
            .count() as f64;
        let sd = (N as f64 * 0.25 * 0.75).sqrt();
        assert!((twice - N as f64 * 0.25).abs() < 5.0 * sd, "{twice}");
        assert_eq!(all.counters(Direction::Down).duplicated, twice as u64);
    }

    #[test]
    fn bandwidth_cap_paces_then_tail_drops() {
        // 100 kB/s, burst 3000, queue 10 000: 1000-byte datagrams all arriving at once.
        let limit = RateLimit { bytes_per_sec: 100_000, burst: 3_000, queue: 10_000 };
        let faults = Faults { rate: Some(limit), ..Faults::default() };
        let mut s = Shaper::with_faults(8, faults, Faults::default());
        let now = Instant::now();
        let verdicts: Vec<Verdict> = (0..20).map(|_| s.decide(Direction::Up, 1000, now)).collect();
        // Three fit the burst, ten queue (10 ms apart, the serialisation time), the rest drop.
        for (i, v) in verdicts.iter().enumerate() {
            match i {
                0..=2 => assert_eq!(deliver_at(*v), Some(now), "{i}"),
                3..=12 => {
                    let d = deliver_at(*v).unwrap() - now;
                    let want = Duration::from_millis(10 * (i as u64 - 2));
                    assert!(d.abs_diff(want) < Duration::from_micros(10), "{i}: {d:?}");
                }
                _ => assert_eq!(*v, Verdict::Drop(DropReason::RateQueue), "{i}"),
            }
        }
        assert_eq!(s.counters(Direction::Up).dropped_rate, 7);
        // After the queue drains and the bucket refills, a burst passes again.
        let later = now + Duration::from_millis(200);
        assert_eq!(deliver_at(s.decide(Direction::Up, 1000, later)), Some(later));
    }

    #[test]
    fn bandwidth_cap_sustains_its_rate() {
        let limit = RateLimit { bytes_per_sec: 50_000, burst: 1_000, queue: 1_000_000 };
        let mut s = Shaper::with_faults(
            9,
            Faults { rate: Some(limit), ..Faults::default() },
            Faults::default(),
        );
        let start = Instant::now();
        // Offered: 500 datagrams of 1000 bytes in 1 s (500 kB/s, ten times the cap).
        let mut last = start;
        for i in 0..500u64 {
            let now = start + Duration::from_millis(2 * i);
            last = deliver_at(s.decide(Direction::Up, 1000, now)).unwrap().max(last);
        }
        // 500 kB at 50 kB/s: the last leaves after about 10 s (minus the 1000-byte burst).
        let took = (last - start).as_secs_f64();
        assert!((took - 9.98).abs() < 0.05, "{took}");
    }

    #[test]
    fn blackhole_drops_everything_until_lifted() {
        let mut s = Shaper::new(10);
        let now = Instant::now();
        s.set(Direction::Down, Faults { blackhole: true, ..Faults::default() });
        for _ in 0..100 {
            assert_eq!(s.decide(Direction::Down, 100, now), Verdict::Drop(DropReason::Blackhole));
            assert_eq!(deliver_at(s.decide(Direction::Up, 100, now)), Some(now));
        }
        s.set(Direction::Down, Faults::default());
        assert_eq!(deliver_at(s.decide(Direction::Down, 100, now)), Some(now));
        assert_eq!(s.counters(Direction::Down).dropped_blackhole, 100);
        assert_eq!(s.counters(Direction::Down).received, 101);
    }

    #[test]
    fn mtu_drops_only_larger_datagrams() {
        let mut s = Shaper::with_faults(
            11,
            Faults { mtu: Some(1280), ..Faults::default() },
            Faults::default(),
        );
        let now = Instant::now();
        assert_eq!(deliver_at(s.decide(Direction::Up, 1280, now)), Some(now));
        assert_eq!(s.decide(Direction::Up, 1281, now), Verdict::Drop(DropReason::Mtu));
    }
}
