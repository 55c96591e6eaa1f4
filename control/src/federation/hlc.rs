//! Hybrid logical clock stamps as the wire's `hlc: u64` (ANNOUNCE, SYNC_DIGEST, SYNC_DELTA).
//!
//! Layout: the high 48 bits are milliseconds since the Unix epoch, the low 16 bits a logical
//! counter. Plain `u64` order is then HLC order (ms first, counter second), which is what
//! last-writer-wins compares. 48 bits of ms last until the year 10889; 65 536 stamps per ms per
//! node. When the counter overflows it carries into the ms field: the clock runs at most a
//! few ms ahead under a burst of more than 65 536 changes in one ms, and stays monotonic.
//!
//! Why not `uhlc`: its `HLC` reads physical time through a `fn() -> NTP64` it calls itself (no
//! argument, no closure), so "time is an argument" would need a global; it locks a `Mutex` per
//! stamp; and its `Timestamp` carries a 128-bit id beside the 64-bit time, which does not fit the
//! wire's u64 (the tie-break by origin id is ours to do anyway). The algorithm is ten lines.

use thiserror::Error;

/// Bits of the logical counter.
pub const COUNTER_BITS: u32 = 16;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

/// The physical part of a stamp, ms since the Unix epoch.
#[inline]
pub const fn stamp_ms(stamp: u64) -> u64 {
    stamp >> COUNTER_BITS
}

/// The logical part of a stamp.
#[inline]
pub const fn stamp_counter(stamp: u64) -> u16 {
    (stamp & COUNTER_MASK) as u16
}

/// A stamp from its parts (counter 0 is the first stamp of a ms).
#[inline]
pub const fn stamp(ms: u64, counter: u16) -> u64 {
    (ms << COUNTER_BITS) | counter as u64
}

/// A remote stamp too far ahead of our physical clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "remote hlc {remote_ms} ms is {ahead_ms} ms ahead of the local clock (bound {bound_ms} ms)"
)]
pub struct ClockAhead {
    /// The remote stamp's ms.
    pub remote_ms: u64,
    /// How far ahead of our physical time it is.
    pub ahead_ms: u64,
    /// The configured bound.
    pub bound_ms: u64,
}

/// One node's hybrid logical clock. Physical time is passed in; nothing here reads a clock.
#[derive(Debug, Clone)]
pub struct Hlc {
    last: u64,
    max_offset_ms: u64,
}

impl Hlc {
    /// A clock that rejects remote stamps more than `max_offset_ms` ahead of physical time.
    pub fn new(max_offset_ms: u64) -> Hlc {
        Hlc { last: 0, max_offset_ms }
    }

    /// A new stamp, greater than every stamp this clock produced or observed.
    pub fn now(&mut self, now_ms: u64) -> u64 {
        let physical = stamp(now_ms, 0);
        self.last = if physical > self.last { physical } else { self.last.saturating_add(1) };
        self.last
    }

    /// The newest stamp produced or observed (0 before the first).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Checks a remote stamp against the offset bound without moving the clock.
    pub fn check(&self, remote: u64, now_ms: u64) -> Result<(), ClockAhead> {
        let remote_ms = stamp_ms(remote);
        let bound = now_ms.saturating_add(self.max_offset_ms);
        if remote_ms > bound {
            return Err(ClockAhead {
                remote_ms,
                ahead_ms: remote_ms - now_ms,
                bound_ms: self.max_offset_ms,
            });
        }
        Ok(())
    }

    /// Merges a remote stamp: later [`now`](Self::now) stamps are greater than it. A stamp beyond
    /// the offset bound is refused and leaves the clock alone, so a remote clock that runs ahead
    /// can drag ours at most `max_offset_ms` into the future.
    pub fn observe(&mut self, remote: u64, now_ms: u64) -> Result<(), ClockAhead> {
        self.check(remote, now_ms)?;
        self.last = self.last.max(remote);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_monotonic_when_time_stands_or_steps_back() {
        let mut clock = Hlc::new(500);
        let a = clock.now(1_000);
        let b = clock.now(1_000);
        let c = clock.now(900);
        assert!(a < b && b < c);
        assert_eq!(stamp_ms(c), 1_000);
        assert_eq!(stamp_counter(c), 2);
        let d = clock.now(1_001);
        assert_eq!(d, stamp(1_001, 0));
    }

    #[test]
    fn observed_stamp_is_exceeded_by_the_next_local_one() {
        let mut clock = Hlc::new(500);
        let remote = stamp(1_400, 7);
        clock.observe(remote, 1_000).unwrap();
        assert!(clock.now(1_000) > remote);
    }

    #[test]
    fn stamp_beyond_the_offset_bound_is_refused_and_ignored() {
        let mut clock = Hlc::new(500);
        let before = clock.now(1_000);
        let err = clock.observe(stamp(1_501, 0), 1_000).unwrap_err();
        assert_eq!(err.ahead_ms, 501);
        assert_eq!(clock.last(), before);
        assert!(clock.observe(stamp(1_500, 9), 1_000).is_ok());
    }

    #[test]
    fn counter_overflow_carries_into_ms() {
        let mut clock = Hlc::new(0);
        clock.observe(stamp(10, u16::MAX), 10).unwrap();
        assert_eq!(clock.now(10), stamp(11, 0));
    }

    #[test]
    fn wire_example_splits_into_ms_and_counter() {
        // PROTOCOL.md's example stamp: ms field 0x0199_3a4f, counter 1.
        let s = 0x0000_0199_3a4f_0001;
        assert_eq!(stamp(stamp_ms(s), stamp_counter(s)), s);
        assert_eq!(stamp_counter(s), 1);
    }
}
