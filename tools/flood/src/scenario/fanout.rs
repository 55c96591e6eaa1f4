//! `fanout`: P publishers publish on their topics at a fixed total rate (open loop); S
//! subscribers subscribe with the run's patterns and account for every delivery.
//!
//! Promise checked: every subscriber receives every message of every publisher whose topic its
//! patterns match, exactly once and in publisher order (one data stream per publisher). Loss,
//! duplicates and reordering are counted per (subscriber, publisher) pair, exactly.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fovea_codec::frame::{self, Frame};
use fovea_codec::{encode_publish, Pattern, Topic};
use hdrhistogram::Histogram;

use super::{Opener, Window, SETUP_INFLIGHT};
use crate::endpoint::{Endpoint, Event};
use crate::params::{self, Common, Fanout};
use crate::payload::Stamp;
use crate::schedule::Schedule;
use crate::stats::{latency_histogram, record, SeqTracker, Tally};
use crate::worker::{Ctx, Scenario, Step};

/// Sends per loop turn at most, so a sender that fell behind catches up without starving the
/// receive side of the same thread.
const SENDS_PER_TURN: usize = 4_096;
/// A publisher whose unsent backlog (flow control closed) exceeds this skips scheduled
/// messages instead of buffering without bound; skipped messages are counted, never sent, and
/// take no sequence number.
const BACKLOG_MAX: usize = 64 << 20;
/// How often the drain checks whether everything has arrived.
const DRAIN_CHECK: Duration = Duration::from_millis(5);

/// What every thread of a fan-out run shares.
#[derive(Debug)]
pub struct Plan {
    /// The parameters.
    pub params: Fanout,
    /// Common parameters.
    pub common: Common,
    /// Publisher `p`'s topic.
    pub topics: Vec<Topic>,
    /// Whether subscribers' patterns match publisher `p`'s topic.
    pub matched: Vec<bool>,
    /// Parsed patterns.
    pub patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Publisher(usize),
    Subscriber(usize),
}

struct Publisher {
    index: usize,
    conn: u32,
    schedule: Option<Schedule>,
    seq: u64,
}

struct Subscriber {
    conn: u32,
    seqs: Vec<SeqTracker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    WaitStart,
    Run,
    Drain,
}

/// One thread's publishers and subscribers.
pub struct FanoutThread {
    plan: Arc<Plan>,
    pubs: Vec<Publisher>,
    subs: Vec<Subscriber>,
    roles: Vec<Option<Role>>,
    to_open: Vec<Role>,
    opener: Opener,
    phase: Phase,
    sessions: usize,
    pending_oks: usize,
    window: Option<Window>,
    tally: Tally,
    interval: Histogram<u64>,
    payload: Vec<u8>,
    next_check: Instant,
    drain_cursor: usize,
}

/// Builds the per-thread shares: publisher `p` and subscriber `s` go to thread `p % T` and
/// `s % T`.
pub fn plan(common: &Common, params: &Fanout) -> Result<Vec<FanoutThread>, params::UsageError> {
    common.validate()?;
    let (topics, matched) = params.validate()?;
    let patterns = params.patterns.iter().map(|p| p.parse().expect("validated")).collect();
    let plan = Arc::new(Plan {
        params: params.clone(),
        common: common.clone(),
        topics,
        matched,
        patterns,
    });
    let threads = common.threads;
    Ok((0..threads)
        .map(|t| {
            let pubs: Vec<Publisher> = (t..params.publishers)
                .step_by(threads)
                .map(|index| Publisher { index, conn: u32::MAX, schedule: None, seq: 0 })
                .collect();
            let subs: Vec<Subscriber> = (t..params.subscribers)
                .step_by(threads)
                .map(|_| Subscriber {
                    conn: u32::MAX,
                    seqs: vec![SeqTracker::default(); params.publishers],
                })
                .collect();
            // Subscribers first: they must be subscribed before anything is published anyway.
            let mut to_open: Vec<Role> = (0..pubs.len()).rev().map(Role::Publisher).collect();
            to_open.extend((0..subs.len()).rev().map(Role::Subscriber));
            let n = to_open.len();
            FanoutThread {
                plan: plan.clone(),
                pubs,
                subs,
                roles: Vec::new(),
                to_open,
                opener: Opener::new(n, SETUP_INFLIGHT),
                phase: Phase::Setup,
                sessions: 0,
                pending_oks: 0,
                window: None,
                tally: Tally::default(),
                interval: latency_histogram(),
                payload: vec![0u8; params.payload],
                next_check: Instant::now(),
                drain_cursor: 0,
            }
        })
        .collect())
}

impl FanoutThread {
    fn connections(&self) -> usize {
        self.pubs.len() + self.subs.len()
    }

    fn on_deliver(&mut self, sub: usize, at_ns: u64, stamp: Option<Stamp>) {
        let Some(st) = stamp else {
            self.tally.unexpected += 1;
            return;
        };
        let p = st.publisher as usize;
        if p >= self.plan.matched.len() || !self.plan.matched[p] {
            self.tally.unexpected += 1;
            return;
        }
        self.tally.received += 1;
        self.subs[sub].seqs[p].on_seq(st.seq);
        if let Some(w) = self.window {
            if w.measured(at_ns) {
                self.tally.received_measured += 1;
            }
            if w.measured(st.intended_ns) {
                record(&mut self.interval, at_ns.saturating_sub(st.intended_ns));
            }
        }
    }

    /// Publishes what is due; returns the next send time of this thread's publishers, or
    /// `None` when all have finished.
    fn publish_due(&mut self, ep: &mut Endpoint, ctx: &Ctx, now_ns: u64) -> Option<u64> {
        let w = self.window.expect("running");
        let mut budget = SENDS_PER_TURN;
        let mut next: Option<u64> = None;
        for pb in &mut self.pubs {
            let Some(schedule) = pb.schedule.as_mut() else { continue };
            loop {
                let t = schedule.peek();
                if t >= w.end_ns {
                    pb.schedule = None;
                    ctx.shared.published[pb.index].store(pb.seq, Ordering::Release);
                    ctx.shared.publishers_done.fetch_add(1, Ordering::AcqRel);
                    break;
                }
                if t > now_ns || budget == 0 {
                    next = Some(next.map_or(t, |n| n.min(t)));
                    break;
                }
                schedule.take();
                budget -= 1;
                match ep.data_tx(pb.conn) {
                    Some(tx) if tx.len() <= BACKLOG_MAX => {
                        Stamp { publisher: pb.index as u64, seq: pb.seq, intended_ns: t }
                            .write(&mut self.payload);
                        encode_publish(0, None, &self.plan.topics[pb.index], &self.payload, tx);
                        pb.seq += 1;
                        self.tally.sent += 1;
                        if t >= w.measure_ns {
                            self.tally.sent_measured += 1;
                            record(&mut self.tally.send_lag, now_ns - t);
                        }
                    }
                    // Backlog full, or the connection is gone (counted as an error already).
                    _ => self.tally.skipped += 1,
                }
            }
        }
        next
    }

    /// True when every subscriber of this thread has every message it is owed.
    fn drained(&mut self, ctx: &Ctx) -> bool {
        let shared = &ctx.shared;
        if shared.publishers_done.load(Ordering::Acquire) < self.plan.params.publishers {
            return false;
        }
        let p_count = self.plan.params.publishers;
        let total = self.subs.len() * p_count;
        while self.drain_cursor < total {
            let (s, p) = (self.drain_cursor / p_count, self.drain_cursor % p_count);
            let published = shared.published[p].load(Ordering::Acquire);
            if self.plan.matched[p] && !self.subs[s].seqs[p].complete(published) {
                return false;
            }
            self.drain_cursor += 1;
        }
        true
    }

    fn start_window(&mut self, start_ns: u64, now: Instant) {
        let c = &self.plan.common;
        self.window = Some(Window::new(c, start_ns, now));
        let total = self.plan.params.publishers;
        let per_publisher = self.plan.params.rate / total as f64;
        for pb in &mut self.pubs {
            let phase = pb.index as f64 / total as f64;
            let seed = c.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ pb.index as u64;
            pb.schedule = Some(Schedule::new(
                start_ns,
                per_publisher,
                phase,
                self.plan.params.arrivals,
                seed,
            ));
        }
    }
}

impl Scenario for FanoutThread {
    fn start(&mut self, ep: &mut Endpoint, _ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        self.open_more(ep, now)
    }

    fn on_event(&mut self, ep: &mut Endpoint, ctx: &mut Ctx, ev: Event) -> Result<(), String> {
        match ev {
            Event::Delivery { conn, at_ns, stamp, .. } => {
                match self.roles.get(conn as usize).copied().flatten() {
                    Some(Role::Subscriber(s)) => self.on_deliver(s, at_ns, stamp),
                    _ => self.tally.unexpected += 1,
                }
            }
            Event::Frame { conn, frame, .. } => {
                let role = self.roles.get(conn as usize).copied().flatten();
                match (role, frame) {
                    (Some(Role::Subscriber(_)), Frame::Ok(_)) => {
                        self.pending_oks = self.pending_oks.saturating_sub(1)
                    }
                    (_, Frame::Error(e)) => {
                        let code =
                            fovea_codec::ErrorCode::from_u64(e.code).map_or("?", |c| c.name());
                        let msg = String::from_utf8_lossy(&e.message);
                        let what =
                            format!("the node refused request {}: {code} {msg}", e.request_id);
                        if self.phase == Phase::Setup {
                            return Err(what);
                        }
                        self.tally.error(what);
                    }
                    (_, Frame::Goodbye(g)) => {
                        let reason = String::from_utf8_lossy(&g.reason);
                        self.tally.error(format!("the node said GOODBYE: {reason}"));
                    }
                    _ => {}
                }
            }
            // Nothing registers here: RPC traffic is not ours.
            Event::Invoke { .. } | Event::Reply { .. } => self.tally.unexpected += 1,
            Event::Welcome { conn, .. } => {
                self.opener.settled();
                self.sessions += 1;
                self.tally.connected += 1;
                if let Some(Some(Role::Subscriber(_))) = self.roles.get(conn as usize) {
                    for (k, pattern) in self.plan.patterns.iter().enumerate() {
                        let f = Frame::Subscribe(frame::Subscribe {
                            request_id: k as u64 + 1,
                            sub_id: k as u64 + 1,
                            pattern: pattern.clone(),
                        });
                        ep.send_session(conn, &f);
                        self.pending_oks += 1;
                    }
                }
                if self.phase == Phase::Setup {
                    self.open_more(ep, Instant::now())?;
                }
            }
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
        let _ = ctx;
        Ok(())
    }

    fn tick(&mut self, ep: &mut Endpoint, ctx: &mut Ctx, now: Instant) -> Result<Step, String> {
        let epoch = ctx.shared.epoch;
        let step = match self.phase {
            Phase::Setup => {
                self.open_more(ep, now)?;
                if self.opener.all_opened()
                    && self.sessions == self.connections()
                    && self.pending_oks == 0
                {
                    ctx.ready();
                    self.phase = Phase::WaitStart;
                }
                Step::Wait(None)
            }
            Phase::WaitStart => match ctx.start_ns() {
                Some(start_ns) => {
                    self.start_window(start_ns, now);
                    self.phase = Phase::Run;
                    Step::Wait(Some(now))
                }
                // The main thread's go is a rare event: a millisecond of latency is fine.
                None => Step::Wait(Some(now + Duration::from_millis(1))),
            },
            Phase::Run => {
                let w = self.window.expect("running");
                let now_ns = epoch.ns(now);
                let next_send = self.publish_due(ep, ctx, now_ns);
                let next_report = ctx.interval(now, &mut self.interval, &mut self.tally.latency);
                w.sending_step(&epoch, now_ns, next_send, next_report).unwrap_or_else(|| {
                    self.phase = Phase::Drain;
                    Step::Wait(Some(now))
                })
            }
            Phase::Drain => {
                let w = self.window.expect("running");
                let next_report = ctx.interval(now, &mut self.interval, &mut self.tally.latency);
                if now >= w.drain_deadline {
                    if !self.drained(ctx) {
                        self.tally.drain_timeouts += 1;
                    }
                    Step::Done
                } else if now >= self.next_check {
                    self.next_check = now + DRAIN_CHECK;
                    if self.drained(ctx) {
                        Step::Done
                    } else {
                        Step::Wait(Some(self.next_check.min(next_report)))
                    }
                } else {
                    Step::Wait(Some(self.next_check.min(next_report)))
                }
            }
        };
        ctx.publish_counts(&self.tally);
        Ok(step)
    }

    fn finish(&mut self, ep: &mut Endpoint, ctx: &mut Ctx) -> Tally {
        ctx.last_interval(&mut self.interval, &mut self.tally.latency);
        let shared = &ctx.shared;
        for pb in &self.pubs {
            ep.close(pb.conn);
        }
        for sub in &self.subs {
            ep.close(sub.conn);
            for (p, seqs) in sub.seqs.iter().enumerate() {
                if !self.plan.matched[p] {
                    continue;
                }
                let published = shared.published[p].load(Ordering::Acquire);
                self.tally.expected += published;
                self.tally.lost += seqs.lost(published);
                self.tally.duplicates += seqs.duplicates;
                self.tally.reordered += seqs.reordered;
            }
        }
        ctx.publish_counts(&self.tally);
        std::mem::take(&mut self.tally)
    }
}

impl FanoutThread {
    fn open_more(&mut self, ep: &mut Endpoint, now: Instant) -> Result<(), String> {
        let roles = &mut self.roles;
        let to_open = &mut self.to_open;
        let pubs = &mut self.pubs;
        let subs = &mut self.subs;
        self.opener.open(ep, now, |id| {
            let role = to_open.pop().expect("one role per connection");
            if roles.len() <= id as usize {
                roles.resize(id as usize + 1, None);
            }
            roles[id as usize] = Some(role);
            match role {
                Role::Publisher(i) => pubs[i].conn = id,
                Role::Subscriber(i) => subs[i].conn = id,
            }
        })
    }
}
