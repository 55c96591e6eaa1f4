//! What can go wrong on one direction of a path: the fault settings and their validation.

use std::fmt;
use std::time::Duration;

use crate::error::FaultError;

/// Which way a datagram travels through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → node (datagrams the proxy receives on its listening socket).
    Up,
    /// Node → client (datagrams the proxy receives on a client's upstream socket).
    Down,
}

impl Direction {
    /// Both directions, `Up` first.
    pub const BOTH: [Direction; 2] = [Direction::Up, Direction::Down];

    /// 0 for `Up`, 1 for `Down` (index into per-direction arrays).
    pub fn index(self) -> usize {
        match self {
            Direction::Up => 0,
            Direction::Down => 1,
        }
    }

    /// `"up"` or `"down"`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Extra hold-back of a reordered datagram when none is configured: long enough that the next
/// few datagrams of a busy flow overtake it, short against QUIC's loss detection (which only
/// declares a packet lost after the RTT threshold, 9/8 RTT, or three later packets acked).
pub const DEFAULT_REORDER_DELAY: Duration = Duration::from_millis(20);

/// A bandwidth cap: a token bucket of `burst` bytes refilled at `bytes_per_sec`, in front of a
/// FIFO of at most `queue` bytes (a datagram that finds the FIFO full is dropped, like a router's
/// tail drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate.
    pub bytes_per_sec: u64,
    /// Bytes that may pass at once after an idle period.
    pub burst: u64,
    /// Bytes waiting for tokens beyond which datagrams are dropped.
    pub queue: u64,
}

impl RateLimit {
    /// A cap of `bytes_per_sec` with the default burst (50 ms worth, at least 3 000 bytes: two
    /// full-size datagrams) and queue (250 ms worth, at least 64 KiB).
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec,
            burst: (bytes_per_sec / 20).max(3_000),
            queue: (bytes_per_sec / 4).max(64 << 10),
        }
    }
}

/// The faults applied to one direction. `Faults::default()` is a clean path.
///
/// The order of application to one datagram (documented in the README): blackhole, MTU, loss,
/// bandwidth cap, delay + jitter, reordering, duplication.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Probability (0..=1) that a datagram is dropped.
    pub loss: f64,
    /// Base one-way delay added to every datagram.
    pub delay: Duration,
    /// Each datagram's delay is `delay` plus a uniform draw in `[-jitter, +jitter]`, floored at
    /// zero. Jitter larger than the spacing of datagrams reorders them, as on a real path.
    pub jitter: Duration,
    /// Probability (0..=1) that a datagram is held back by an extra `reorder_delay`, so that
    /// the datagrams after it overtake it.
    pub reorder: f64,
    /// The hold-back of a reordered datagram.
    pub reorder_delay: Duration,
    /// Probability (0..=1) that a datagram is sent twice (the copy right after the original).
    pub duplicate: f64,
    /// Drop everything (a partition) while true.
    pub blackhole: bool,
    /// Bandwidth cap, if any.
    pub rate: Option<RateLimit>,
    /// Datagrams longer than this many bytes (UDP payload) are dropped: a path MTU without
    /// ICMP feedback.
    pub mtu: Option<usize>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_delay: DEFAULT_REORDER_DELAY,
            duplicate: 0.0,
            blackhole: false,
            rate: None,
            mtu: None,
        }
    }
}

impl Faults {
    /// A clean path (no faults).
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Only random loss with probability `p`.
    pub fn loss(p: f64) -> Faults {
        Faults { loss: p, ..Faults::default() }
    }

    /// True when this setting changes nothing: datagrams pass at once, once (`reorder_delay`
    /// does not count while `reorder` is 0).
    pub fn is_clean(&self) -> bool {
        self.loss == 0.0
            && self.delay.is_zero()
            && self.jitter.is_zero()
            && self.reorder == 0.0
            && self.duplicate == 0.0
            && !self.blackhole
            && self.rate.is_none()
            && self.mtu.is_none()
    }

    /// Checks ranges: probabilities in 0..=1, rate, burst and MTU positive.
    pub fn validate(&self) -> Result<(), FaultError> {
        for (name, p) in
            [("loss", self.loss), ("reorder", self.reorder), ("duplicate", self.duplicate)]
        {
            if !(0.0..=1.0).contains(&p) {
                return Err(FaultError::Probability { name, value: p });
            }
        }
        if let Some(r) = &self.rate {
            if r.bytes_per_sec == 0 {
                return Err(FaultError::Invalid { name: "rate", why: "must be positive" });
            }
            if r.burst == 0 {
                return Err(FaultError::Invalid { name: "burst", why: "must be positive" });
            }
        }
        if self.mtu == Some(0) {
            return Err(FaultError::Invalid { name: "mtu", why: "must be positive" });
        }
        Ok(())
    }
}

impl fmt::Display for Faults {
    /// A compact description: `clean`, or `loss=5% delay=20ms±5ms dup=1% ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.blackhole {
            parts.push("blackhole".into());
        }
        if self.loss > 0.0 {
            parts.push(format!("loss={}%", self.loss * 100.0));
        }
        if !self.delay.is_zero() || !self.jitter.is_zero() {
            parts.push(format!("delay={:?}±{:?}", self.delay, self.jitter));
        }
        if self.reorder > 0.0 {
            parts.push(format!("reorder={}%+{:?}", self.reorder * 100.0, self.reorder_delay));
        }
        if self.duplicate > 0.0 {
            parts.push(format!("dup={}%", self.duplicate * 100.0));
        }
        if let Some(r) = &self.rate {
            parts
                .push(format!("rate={}B/s burst={}B queue={}B", r.bytes_per_sec, r.burst, r.queue));
        }
        if let Some(m) = self.mtu {
            parts.push(format!("mtu={m}"));
        }
        if parts.is_empty() {
            f.write_str("clean")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_out_of_range_values() {
        assert!(Faults::default().validate().is_ok());
        assert!(Faults::loss(1.0).validate().is_ok());
        assert!(matches!(
            Faults::loss(1.5).validate(),
            Err(FaultError::Probability { name: "loss", .. })
        ));
        let f = Faults { duplicate: -0.1, ..Faults::default() };
        assert!(matches!(f.validate(), Err(FaultError::Probability { name: "duplicate", .. })));
        let f = Faults {
            rate: Some(RateLimit { bytes_per_sec: 0, burst: 1, queue: 1 }),
            ..Faults::default()
        };
        assert!(f.validate().is_err());
        let f = Faults { mtu: Some(0), ..Faults::default() };
        assert!(f.validate().is_err());
    }

    #[test]
    fn display_names_the_faults() {
        assert_eq!(Faults::default().to_string(), "clean");
        let f = Faults {
            loss: 0.05,
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            blackhole: true,
            ..Faults::default()
        };
        assert_eq!(f.to_string(), "blackhole loss=5% delay=20ms±5ms");
        assert!(Faults::default().is_clean());
        assert!(!f.is_clean());
    }

    #[test]
    fn rate_defaults_scale_with_the_rate() {
        let r = RateLimit::new(1_000_000);
        assert_eq!(r.burst, 50_000);
        assert_eq!(r.queue, 250_000);
        let r = RateLimit::new(1_000);
        assert_eq!((r.burst, r.queue), (3_000, 64 << 10));
    }
}
