//! The scenarios: each is a per-thread state machine driven by `worker`, built by a `plan`
//! function that splits the run's connections over threads.

pub mod churn;
pub mod connect;
pub mod fanout;
pub mod pingpong;
pub mod rpc;

use std::time::{Duration, Instant};

use crate::clock::Epoch;
use crate::endpoint::Endpoint;
use crate::params::Common;
use crate::worker::Step;

/// Handshakes a thread keeps in flight while it sets up: enough to connect thousands of peers
/// in about a second, few enough that the node does not fall back to Retry (its default
/// threshold is 512 unvalidated handshakes per shard).
pub const SETUP_INFLIGHT: usize = 128;

/// Opens a thread's connections with a bounded number of handshakes in flight.
#[derive(Debug)]
pub struct Opener {
    remaining: usize,
    inflight: usize,
    max: usize,
}

impl Opener {
    /// `n` connections to open, at most `max` handshaking at once.
    pub fn new(n: usize, max: usize) -> Opener {
        Opener { remaining: n, inflight: 0, max: max.max(1) }
    }

    /// Opens as many as the bound allows; `opened` learns each new connection id.
    pub fn open(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        mut opened: impl FnMut(u32),
    ) -> Result<(), String> {
        while self.remaining > 0 && self.inflight < self.max {
            let id = ep.open(now).map_err(|e| format!("cannot open a connection: {e}"))?;
            self.remaining -= 1;
            self.inflight += 1;
            opened(id);
        }
        Ok(())
    }

    /// A handshake ended (session or failure).
    pub fn settled(&mut self) {
        self.inflight = self.inflight.saturating_sub(1);
    }

    /// True when every connection has been opened.
    pub fn all_opened(&self) -> bool {
        self.remaining == 0
    }
}

/// A timed run's phases, in ns since the epoch: warm-up from `start`, measurement from
/// `measure` to `end`, then the drain until `drain_deadline` at the latest.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Start of the measured part.
    pub measure_ns: u64,
    /// End of sending.
    pub end_ns: u64,
    /// Give up waiting for in-flight messages.
    pub drain_deadline: Instant,
}

impl Window {
    /// The window of a run that starts sending at `start_ns` (which is about `now`).
    pub fn new(common: &Common, start_ns: u64, now: Instant) -> Window {
        let measure_ns = start_ns + common.warmup().as_nanos() as u64;
        let end_ns = measure_ns + common.duration().as_nanos() as u64;
        let drain = Duration::from_secs_f64(common.drain_timeout_s);
        Window {
            measure_ns,
            end_ns,
            drain_deadline: now + common.warmup() + common.duration() + drain,
        }
    }

    /// True for a time inside the measured part.
    #[inline]
    pub fn measured(&self, ns: u64) -> bool {
        (self.measure_ns..self.end_ns).contains(&ns)
    }

    /// The step after a sending turn: wait for the next send (`next_send`, ns) or the next
    /// report, whichever is first; `None` once sending is over (time to drain).
    pub fn sending_step(
        &self,
        epoch: &Epoch,
        now_ns: u64,
        next_send: Option<u64>,
        next_report: Instant,
    ) -> Option<Step> {
        match next_send {
            Some(t) => Some(Step::Wait(Some(epoch.at(t).min(next_report)))),
            None if now_ns >= self.end_ns => None,
            None => Some(Step::Wait(Some(epoch.at(self.end_ns).min(next_report)))),
        }
    }
}
