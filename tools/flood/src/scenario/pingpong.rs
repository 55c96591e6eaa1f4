//! `pingpong`: round-trip time to the node. N connections, PINGs on the session stream at a
//! fixed total rate (open loop, round-robin over connections); the node answers each with a
//! PONG that echoes the ping id, which is the intended send time in ns.
//!
//! Promise checked: every PING gets exactly one PONG, in order per connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fovea_codec::frame::{self, Frame};
use hdrhistogram::Histogram;

use super::{Opener, Window, SETUP_INFLIGHT};
use crate::endpoint::{Endpoint, Event};
use crate::params::{self, share, Common, Pingpong};
use crate::schedule::Schedule;
use crate::stats::{latency_histogram, record, Tally};
use crate::worker::{Ctx, Scenario, Step};

const SENDS_PER_TURN: usize = 4_096;

struct PingConn {
    conn: u32,
    /// Ping ids (intended send times) sent and not answered, oldest first.
    outstanding: VecDeque<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    WaitStart,
    Run,
    Drain,
}

/// One thread's connections.
pub struct PingpongThread {
    common: Arc<Common>,
    params: Arc<Pingpong>,
    thread: usize,
    conns: Vec<PingConn>,
    by_conn: Vec<Option<usize>>,
    opener: Opener,
    phase: Phase,
    sessions: usize,
    window: Option<Window>,
    schedule: Option<Schedule>,
    next_conn: usize,
    tally: Tally,
    interval: Histogram<u64>,
}

/// Builds the per-thread shares of the connections and of the rate.
pub fn plan(common: &Common, params: &Pingpong) -> Result<Vec<PingpongThread>, params::UsageError> {
    common.validate()?;
    params.validate()?;
    let common = Arc::new(common.clone());
    let p = Arc::new(params.clone());
    Ok((0..common.threads)
        .map(|t| {
            let n = share(params.connections, common.threads, t);
            PingpongThread {
                common: common.clone(),
                params: p.clone(),
                thread: t,
                conns: Vec::with_capacity(n),
                by_conn: Vec::new(),
                opener: Opener::new(n, SETUP_INFLIGHT),
                phase: Phase::Setup,
                sessions: 0,
                window: None,
                schedule: None,
                next_conn: 0,
                tally: Tally::default(),
                interval: latency_histogram(),
            }
        })
        .collect())
}

impl PingpongThread {
    fn open_more(&mut self, ep: &mut Endpoint, now: Instant) -> Result<(), String> {
        let conns = &mut self.conns;
        let by_conn = &mut self.by_conn;
        self.opener.open(ep, now, |id| {
            if by_conn.len() <= id as usize {
                by_conn.resize(id as usize + 1, None);
            }
            by_conn[id as usize] = Some(conns.len());
            conns.push(PingConn { conn: id, outstanding: VecDeque::new() });
        })
    }

    fn on_pong(&mut self, local: usize, at_ns: u64, ping_id: u64) {
        let q = &mut self.conns[local].outstanding;
        if q.front() == Some(&ping_id) {
            q.pop_front();
        } else if let Some(i) = q.iter().position(|&id| id == ping_id) {
            q.remove(i);
            self.tally.reordered += 1;
        } else {
            // Not outstanding: answered twice, or never sent by us.
            self.tally.duplicates += 1;
            return;
        }
        self.tally.received += 1;
        if let Some(w) = self.window {
            if w.measured(at_ns) {
                self.tally.received_measured += 1;
            }
            if w.measured(ping_id) {
                record(&mut self.interval, at_ns.saturating_sub(ping_id));
            }
        }
    }

    fn ping_due(&mut self, ep: &mut Endpoint, now_ns: u64) -> Option<u64> {
        let w = self.window.expect("running");
        let schedule = self.schedule.as_mut()?;
        for _ in 0..SENDS_PER_TURN {
            let t = schedule.peek();
            if t >= w.end_ns {
                self.schedule = None;
                return None;
            }
            if t > now_ns {
                return Some(t);
            }
            schedule.take();
            let n = self.conns.len();
            let c = &mut self.conns[self.next_conn];
            self.next_conn = (self.next_conn + 1) % n;
            if ep.conn(c.conn).is_none() {
                self.tally.skipped += 1;
                continue;
            }
            let ping = Frame::Ping(frame::Ping { ping_id: t, sent_at_us: t / 1_000 });
            ep.send_session(c.conn, &ping);
            c.outstanding.push_back(t);
            self.tally.sent += 1;
            if t >= w.measure_ns {
                self.tally.sent_measured += 1;
                record(&mut self.tally.send_lag, now_ns - t);
            }
        }
        Some(now_ns)
    }
}

impl Scenario for PingpongThread {
    fn start(&mut self, ep: &mut Endpoint, _ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        self.open_more(ep, now)
    }

    fn on_event(&mut self, ep: &mut Endpoint, _ctx: &mut Ctx, ev: Event) -> Result<(), String> {
        match ev {
            Event::Welcome { .. } => {
                self.opener.settled();
                self.sessions += 1;
                self.tally.connected += 1;
                if self.phase == Phase::Setup {
                    self.open_more(ep, Instant::now())?;
                }
            }
            Event::Frame { conn, at_ns, frame: Frame::Pong(p) } => {
                if let Some(Some(local)) = self.by_conn.get(conn as usize).copied() {
                    self.on_pong(local, at_ns, p.ping_id);
                }
            }
            Event::Frame { .. }
            | Event::Delivery { .. }
            | Event::Invoke { .. }
            | Event::Reply { .. } => {}
            Event::Closed { reason, expected, reconnecting, .. } => {
                if !expected {
                    if self.phase != Phase::Setup {
                        self.tally.error(reason);
                    } else if !reconnecting {
                        return Err(format!("a connection failed: {reason}"));
                    }
                }
            }
        }
        Ok(())
    }

    fn tick(&mut self, ep: &mut Endpoint, ctx: &mut Ctx, now: Instant) -> Result<Step, String> {
        let epoch = ctx.shared.epoch;
        let step = match self.phase {
            Phase::Setup => {
                self.open_more(ep, now)?;
                if self.opener.all_opened() && self.sessions == self.conns.len() {
                    ctx.ready();
                    self.phase = Phase::WaitStart;
                }
                Step::Wait(None)
            }
            Phase::WaitStart => match ctx.start_ns() {
                Some(start_ns) => {
                    let w = Window::new(&self.common, start_ns, now);
                    self.window = Some(w);
                    if !self.conns.is_empty() {
                        let rate = self.params.rate * self.conns.len() as f64
                            / self.params.connections as f64;
                        let phase = self.thread as f64 / self.common.threads as f64;
                        let seed = self.common.seed ^ (self.thread as u64) << 32;
                        self.schedule =
                            Some(Schedule::new(start_ns, rate, phase, self.params.arrivals, seed));
                    }
                    self.phase = Phase::Run;
                    Step::Wait(Some(now))
                }
                None => Step::Wait(Some(now + Duration::from_millis(1))),
            },
            Phase::Run => {
                let w = self.window.expect("running");
                let now_ns = epoch.ns(now);
                let next = self.ping_due(ep, now_ns);
                let report = ctx.interval(now, &mut self.interval, &mut self.tally.latency);
                w.sending_step(&epoch, now_ns, next, report).unwrap_or_else(|| {
                    self.phase = Phase::Drain;
                    Step::Wait(Some(now))
                })
            }
            Phase::Drain => {
                let w = self.window.expect("running");
                let report = ctx.interval(now, &mut self.interval, &mut self.tally.latency);
                let answered = self.conns.iter().all(|c| c.outstanding.is_empty());
                if answered || now >= w.drain_deadline {
                    self.tally.drain_timeouts += u64::from(!answered);
                    Step::Done
                } else {
                    Step::Wait(Some(report.min(w.drain_deadline)))
                }
            }
        };
        ctx.publish_counts(&self.tally);
        Ok(step)
    }

    fn finish(&mut self, ep: &mut Endpoint, ctx: &mut Ctx) -> Tally {
        ctx.last_interval(&mut self.interval, &mut self.tally.latency);
        for c in &self.conns {
            ep.close(c.conn);
            self.tally.lost += c.outstanding.len() as u64;
        }
        self.tally.expected = self.tally.sent;
        ctx.publish_counts(&self.tally);
        std::mem::take(&mut self.tally)
    }
}
