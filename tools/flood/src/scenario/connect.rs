//! `connect`: a connection storm. Opens N connections (QUIC handshake, HELLO, WELCOME), at a
//! fixed rate (open loop: connection k is due at a scheduled time and its setup time counts
//! from then) or as fast as a bound on handshakes in flight allows; then, with `--hold`, keeps
//! them all open and idle for that long (memory per peer on the node), and closes them.
//!
//! Promise checked: every connection gets its session.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::endpoint::{Endpoint, Event};
use crate::params::{self, share, Common, Connect};
use crate::schedule::{Arrivals, Schedule};
use crate::stats::{latency_histogram, record, Tally};
use crate::worker::{Ctx, Scenario, Step};

/// Connections opened per loop turn at most.
const OPENS_PER_TURN: usize = 256;
/// How often a holding thread looks at whether the main thread released it.
const HOLD_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WaitStart,
    Storm,
    Hold,
}

/// One thread's share of the storm.
pub struct ConnectThread {
    common: Arc<Common>,
    params: Arc<Connect>,
    thread: usize,
    n: usize,
    opened: usize,
    settled: usize,
    inflight: usize,
    /// Intended start (ns since the epoch) of each connection, by connection id; `None` once
    /// settled.
    intended: Vec<Option<u64>>,
    schedule: Option<Schedule>,
    phase: Phase,
    tally: Tally,
    interval: Histogram<u64>,
}

/// Builds the per-thread shares.
pub fn plan(common: &Common, params: &Connect) -> Result<Vec<ConnectThread>, params::UsageError> {
    common.validate()?;
    params.validate()?;
    let common = Arc::new(common.clone());
    let p = Arc::new(params.clone());
    Ok((0..common.threads)
        .map(|t| ConnectThread {
            common: common.clone(),
            params: p.clone(),
            thread: t,
            n: share(params.connections, common.threads, t),
            opened: 0,
            settled: 0,
            inflight: 0,
            intended: Vec::new(),
            schedule: None,
            phase: Phase::WaitStart,
            tally: Tally::default(),
            interval: latency_histogram(),
        })
        .collect())
}

impl ConnectThread {
    fn open(&mut self, ep: &mut Endpoint, now: Instant, intended_ns: u64) -> Result<(), String> {
        let id = ep.open(now).map_err(|e| format!("cannot open a connection: {e}"))?;
        if self.intended.len() <= id as usize {
            self.intended.resize(id as usize + 1, None);
        }
        self.intended[id as usize] = Some(intended_ns);
        self.opened += 1;
        self.inflight += 1;
        self.tally.sent += 1;
        Ok(())
    }

    /// Opens what is due; returns when the next one is due (`None`: all opened, or waiting for
    /// a handshake to finish).
    fn open_due(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        now_ns: u64,
    ) -> Result<Option<u64>, String> {
        for _ in 0..OPENS_PER_TURN {
            if self.opened == self.n {
                return Ok(None);
            }
            match self.schedule.as_mut() {
                Some(s) => {
                    let t = s.peek();
                    if t > now_ns {
                        return Ok(Some(t));
                    }
                    s.take();
                    self.open(ep, now, t)?;
                    record(&mut self.tally.send_lag, now_ns - t);
                }
                None => {
                    if self.inflight >= self.params.inflight {
                        return Ok(None);
                    }
                    self.open(ep, now, now_ns)?;
                }
            }
        }
        Ok(Some(now_ns))
    }

    fn settle(&mut self, conn: u32) -> Option<u64> {
        let intended = self.intended.get_mut(conn as usize)?.take()?;
        self.settled += 1;
        self.inflight -= 1;
        Some(intended)
    }
}

impl Scenario for ConnectThread {
    fn start(&mut self, _ep: &mut Endpoint, ctx: &mut Ctx, _now: Instant) -> Result<(), String> {
        // Nothing to set up: the storm is the measurement.
        ctx.ready();
        Ok(())
    }

    fn on_event(&mut self, _ep: &mut Endpoint, _ctx: &mut Ctx, ev: Event) -> Result<(), String> {
        match ev {
            Event::Welcome { conn, at_ns } => {
                if let Some(intended) = self.settle(conn) {
                    self.tally.connected += 1;
                    self.tally.received += 1;
                    self.tally.received_measured += 1;
                    record(&mut self.interval, at_ns.saturating_sub(intended));
                }
            }
            Event::Closed { conn, reason, expected, .. } => {
                self.settle(conn);
                if !expected {
                    self.tally.error(reason);
                }
            }
            Event::Frame { .. }
            | Event::Delivery { .. }
            | Event::Invoke { .. }
            | Event::Reply { .. } => {}
        }
        Ok(())
    }

    fn tick(&mut self, ep: &mut Endpoint, ctx: &mut Ctx, now: Instant) -> Result<Step, String> {
        let epoch = ctx.shared.epoch;
        let step = match self.phase {
            Phase::WaitStart => match ctx.start_ns() {
                // The storm is timed from the start signal: do not open anything before it.
                Some(start_ns) if epoch.ns(now) < start_ns => Step::Wait(Some(epoch.at(start_ns))),
                Some(start_ns) => {
                    if self.params.rate > 0.0 && self.n > 0 {
                        let rate =
                            self.params.rate * self.n as f64 / self.params.connections as f64;
                        let phase = self.thread as f64 / self.common.threads as f64;
                        self.schedule = Some(Schedule::new(
                            start_ns,
                            rate,
                            phase,
                            Arrivals::Uniform,
                            self.common.seed,
                        ));
                    }
                    self.phase = Phase::Storm;
                    Step::Wait(Some(now))
                }
                None => Step::Wait(Some(now + Duration::from_millis(1))),
            },
            Phase::Storm => {
                let next = self.open_due(ep, now, epoch.ns(now))?;
                let report = ctx.interval(now, &mut self.interval, &mut self.tally.connect);
                let release = ctx.shared.release_ns.load(Ordering::Acquire);
                if release != 0 && epoch.ns(now) >= release {
                    // The storm took longer than allowed: what has not settled counts as lost.
                    Step::Done
                } else if self.settled == self.n {
                    self.phase = Phase::Hold;
                    Step::Wait(Some(now))
                } else {
                    Step::Wait(Some(next.map_or(report, |t| epoch.at(t).min(report))))
                }
            }
            Phase::Hold => {
                let release = ctx.shared.release_ns.load(Ordering::Acquire);
                if release != 0 && epoch.ns(now) >= release {
                    Step::Done
                } else {
                    Step::Wait(Some(now + HOLD_POLL))
                }
            }
        };
        ctx.publish_counts(&self.tally);
        Ok(step)
    }

    fn finish(&mut self, ep: &mut Endpoint, ctx: &mut Ctx) -> Tally {
        ctx.last_interval(&mut self.interval, &mut self.tally.connect);
        self.tally.held = ep.live() as u64;
        for id in 0..self.intended.len() as u32 {
            ep.close(id);
        }
        self.tally.expected = self.n as u64;
        self.tally.lost = (self.n as u64).saturating_sub(self.tally.connected);
        ctx.publish_counts(&self.tally);
        std::mem::take(&mut self.tally)
    }
}
