//! The host's own scheduling noise, measured before the scenarios run: one thread pinned to
//! each core the harness uses reads the monotonic clock in a tight loop and records every gap
//! between two reads longer than `GAP_MIN`. On an idle machine such gaps are time the thread
//! was not running although it wanted to (the hypervisor, interrupts, kernel threads); a
//! latency tail below them cannot be measured there, so every result carries the figure.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Gaps shorter than this are the loop itself (clock reads, cache misses), not a stall.
const GAP_MIN: Duration = Duration::from_micros(20);
/// Gaps counted separately as long enough to show in a millisecond latency tail.
const GAP_LONG: Duration = Duration::from_micros(500);

/// One core's stalls over the probe.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct CoreStalls {
    /// The core.
    pub core: usize,
    /// Sum of the gaps, ms.
    pub stalled_ms: f64,
    /// Share of the probe the thread did not run.
    pub stalled_share: f64,
    /// Longest gap, µs.
    pub max_us: f64,
    /// Gaps of at least `GAP_LONG`.
    pub over_500us: u64,
}

/// Tallies the `gaps` (each at least `GAP_MIN`) one core saw over `span`.
pub(crate) fn tally(core: usize, gaps: &[Duration], span: Duration) -> CoreStalls {
    let stalled: Duration = gaps.iter().sum();
    CoreStalls {
        core,
        stalled_ms: stalled.as_secs_f64() * 1e3,
        stalled_share: if span.is_zero() {
            0.0
        } else {
            stalled.as_secs_f64() / span.as_secs_f64()
        },
        max_us: gaps.iter().max().map_or(0.0, |g| g.as_secs_f64() * 1e6),
        over_500us: gaps.iter().filter(|&&g| g >= GAP_LONG).count() as u64,
    }
}

/// Spins on each of `cores` at once for `span` and returns their stalls.
pub(crate) fn probe(cores: &[usize], span: Duration) -> Vec<CoreStalls> {
    let threads: Vec<_> = cores
        .iter()
        .map(|&core| {
            std::thread::spawn(move || {
                let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                // Reserved up front so the loop does not allocate while it measures.
                let mut gaps: Vec<Duration> = Vec::with_capacity(1 << 16);
                let start = Instant::now();
                let mut prev = start;
                loop {
                    let now = Instant::now();
                    let gap = now.saturating_duration_since(prev);
                    if gap >= GAP_MIN && gaps.len() < gaps.capacity() {
                        gaps.push(gap);
                    }
                    prev = now;
                    if now.saturating_duration_since(start) >= span {
                        break;
                    }
                }
                tally(core, &gaps, span)
            })
        })
        .collect();
    threads.into_iter().filter_map(|t| t.join().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_add_up_and_the_long_ones_are_counted() {
        let us = Duration::from_micros;
        let s = tally(3, &[us(700), us(30)], Duration::from_millis(10));
        assert_eq!(s.core, 3);
        assert!((s.stalled_ms - 0.73).abs() < 1e-9, "{}", s.stalled_ms);
        assert!((s.max_us - 700.0).abs() < 1e-6);
        assert_eq!(s.over_500us, 1);
        assert!((s.stalled_share - 0.073).abs() < 1e-9);
    }

    #[test]
    fn a_probe_reports_every_core_it_ran_on() {
        let s = probe(&[0], Duration::from_millis(20));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].core, 0);
        assert!(s[0].stalled_share <= 1.0);
    }
}
