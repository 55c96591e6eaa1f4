//! `churn`: publishers publish on one topic at a fixed rate while subscribers subscribe,
//! unsubscribe (`--churn-rate` operations per second over all of them, open loop) and close
//! and reopen their connections (`--reconnect-every`).
//!
//! Promise checked (docs/PROTOCOL.md §2.3, §7.1): while a subscription is stably active (its
//! SUBSCRIBE acknowledged with OK, no UNSUBSCRIBE sent, connection open), every message
//! published after the OK and before the UNSUBSCRIBE or close is delivered exactly once, in
//! publisher order. Outside such windows messages may be missing, never duplicated.
//!
//! How it is checked, exactly and without timing guesses:
//! - A publisher stores how many messages it has *started* (`Shared::published`) before
//!   encoding each one. When a subscriber handles the OK it reads that count `c`: every message
//!   numbered `c` or later was encoded after the OK arrived, so it reached the node after the
//!   subscription was active, and is owed.
//! - The window's end needs no clock: per-publisher order means that if the subscription got
//!   message `q`, every owed message before `q` was handled by the node while it was active too.
//!   So a gap between the first owed message and the last one received is a loss, and a window
//!   still active when publishing stops is owed everything up to the last message published.
//! - One connection receives each message at most once and in order, whatever its
//!   subscriptions did (one DELIVER per publish and connection, on one stream): a sequence
//!   number that does not grow on a connection is a duplicate or a reordering.
//! - A subscriber only subscribes again once its UNSUBSCRIBE's OK has come back, so a DELIVER
//!   lists one of its subscriptions only, and the first id it lists names the window.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fovea_codec::frame::{self, Frame};
use fovea_codec::{encode_publish, Pattern, Topic};
use hdrhistogram::Histogram;

use super::{Opener, Window, SETUP_INFLIGHT};
use crate::endpoint::{Endpoint, Event};
use crate::params::{self, Churn, Common};
use crate::payload::Stamp;
use crate::schedule::{Arrivals, Schedule};
use crate::stats::{latency_histogram, record, Tally};
use crate::worker::{Ctx, Scenario, Step};

/// Sends and churn operations per loop turn at most.
const OPS_PER_TURN: usize = 4_096;
/// A publisher whose unsent backlog exceeds this skips scheduled messages (counted).
const BACKLOG_MAX: usize = 64 << 20;
/// How often the drain checks whether every active window has everything it is owed.
const DRAIN_CHECK: Duration = Duration::from_millis(5);

/// What every thread of a run shares.
#[derive(Debug)]
pub struct Plan {
    /// The parameters.
    pub params: Churn,
    /// Common parameters.
    pub common: Common,
    /// The topic.
    pub topic: Topic,
    /// The subscribers' pattern.
    pub pattern: Pattern,
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

/// Where a subscriber's (single) subscription is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    /// None; the next churn operation subscribes.
    Idle,
    /// SUBSCRIBE sent, OK not back.
    Pending(u64),
    /// Acknowledged: the window is open.
    Active(u64),
    /// UNSUBSCRIBE sent, OK not back.
    Leaving(u64),
    /// The connection is being replaced.
    Reconnecting,
}

struct Subscriber {
    conn: u32,
    state: SubState,
    /// Subscription ids are per connection, from 1.
    next_sub_id: u64,
    /// Last sequence number per publisher received on this connection.
    last_seq: Vec<Option<u64>>,
    /// While `Active`: what the window is owed.
    owed: Owed,
    /// When the connection is replaced next, ns since the epoch.
    reconnect_at: Option<u64>,
}

impl Subscriber {
    fn reset_connection(&mut self, conn: u32, publishers: usize) {
        self.conn = conn;
        self.state = SubState::Reconnecting;
        self.next_sub_id = 1;
        self.last_seq = vec![None; publishers];
        self.owed = Owed::default();
    }
}

/// What one active window is owed: per publisher, the next message it must get.
#[derive(Debug, Default)]
struct Owed(Vec<u64>);

impl Owed {
    /// Opens a window: owed from `started[p]` (read when the OK was handled) on, or from after
    /// the last message this connection already got, whichever is later.
    fn open(started: impl Iterator<Item = u64>, last_seq: &[Option<u64>]) -> Owed {
        Owed(started.zip(last_seq).map(|(c, last)| c.max(last.map_or(0, |l| l + 1))).collect())
    }

    /// Message `seq` of publisher `p` arrived in the window: the owed messages before it that
    /// never came (a later one came, so they were handled while the window was open).
    fn on_seq(&mut self, p: usize, seq: u64) -> u64 {
        let owed = &mut self.0[p];
        let missing = seq.saturating_sub(*owed);
        *owed = (*owed).max(seq + 1);
        missing
    }

    /// Once publisher `p` has published `published` messages in all, what a window still open
    /// at the end never got.
    fn missing(&self, p: usize, published: u64) -> u64 {
        published.saturating_sub(self.0[p])
    }

    /// True when the window has every message up to `published` of publisher `p`.
    fn complete(&self, p: usize, published: u64) -> bool {
        self.missing(p, published) == 0
    }
}

/// A connection's per-publisher order: true when `seq` is after the last one it got (else it
/// is a duplicate or a reordering).
fn in_order(last: &mut Option<u64>, seq: u64) -> bool {
    match *last {
        Some(l) if seq <= l => false,
        _ => {
            *last = Some(seq);
            true
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    WaitStart,
    Run,
    Drain,
}

/// One thread's publishers and subscribers.
pub struct ChurnThread {
    plan: Arc<Plan>,
    thread: usize,
    pubs: Vec<Publisher>,
    subs: Vec<Subscriber>,
    roles: Vec<Option<Role>>,
    to_open: Vec<Role>,
    opener: Opener,
    phase: Phase,
    sessions: usize,
    window: Option<Window>,
    churn: Option<Schedule>,
    cursor: usize,
    tally: Tally,
    interval: Histogram<u64>,
    payload: Vec<u8>,
    next_check: Instant,
}

/// Builds the per-thread shares: publisher `p` and subscriber `s` go to thread `p % T` and
/// `s % T`.
pub fn plan(common: &Common, params: &Churn) -> Result<Vec<ChurnThread>, params::UsageError> {
    common.validate()?;
    let (topic, pattern) = params.validate()?;
    let plan = Arc::new(Plan { params: params.clone(), common: common.clone(), topic, pattern });
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
                    state: SubState::Reconnecting,
                    next_sub_id: 1,
                    last_seq: vec![None; params.publishers],
                    owed: Owed::default(),
                    reconnect_at: None,
                })
                .collect();
            let mut to_open: Vec<Role> = (0..pubs.len()).rev().map(Role::Publisher).collect();
            to_open.extend((0..subs.len()).rev().map(Role::Subscriber));
            let n = to_open.len();
            ChurnThread {
                plan: plan.clone(),
                thread: t,
                pubs,
                subs,
                roles: Vec::new(),
                to_open,
                opener: Opener::new(n, SETUP_INFLIGHT),
                phase: Phase::Setup,
                sessions: 0,
                window: None,
                churn: None,
                cursor: 0,
                tally: Tally::default(),
                interval: latency_histogram(),
                payload: vec![0u8; params.payload],
                next_check: Instant::now(),
            }
        })
        .collect())
}

impl ChurnThread {
    fn role(&self, conn: u32) -> Option<Role> {
        self.roles.get(conn as usize).copied().flatten()
    }

    fn set_role(&mut self, conn: u32, role: Option<Role>) {
        if self.roles.len() <= conn as usize {
            self.roles.resize(conn as usize + 1, None);
        }
        self.roles[conn as usize] = role;
    }

    fn open_more(&mut self, ep: &mut Endpoint, now: Instant) -> Result<(), String> {
        let mut opened = Vec::new();
        self.opener.open(ep, now, |id| opened.push(id))?;
        for id in opened {
            let role = self.to_open.pop().expect("one role per connection");
            self.set_role(id, Some(role));
            match role {
                Role::Publisher(i) => self.pubs[i].conn = id,
                Role::Subscriber(i) => self.subs[i].conn = id,
            }
        }
        Ok(())
    }

    fn subscribe(&mut self, ep: &mut Endpoint, s: usize) {
        let sub = &mut self.subs[s];
        let sub_id = sub.next_sub_id;
        sub.next_sub_id += 1;
        sub.state = SubState::Pending(sub_id);
        let f = Frame::Subscribe(frame::Subscribe {
            request_id: 2 * sub_id,
            sub_id,
            pattern: self.plan.pattern.clone(),
        });
        ep.send_session(sub.conn, &f);
    }

    fn unsubscribe(&mut self, ep: &mut Endpoint, s: usize, sub_id: u64) {
        let sub = &mut self.subs[s];
        // The window closes here: what it got so far was checked as it came.
        sub.state = SubState::Leaving(sub_id);
        sub.owed = Owed::default();
        let f = Frame::Unsubscribe(frame::Unsubscribe { request_id: 2 * sub_id + 1, sub_id });
        ep.send_session(sub.conn, &f);
    }

    /// An OK for subscriber `s`: request id `2k` acknowledges SUBSCRIBE `k`, `2k + 1` its
    /// UNSUBSCRIBE.
    fn on_ok(&mut self, ctx: &Ctx, s: usize, request_id: u64) {
        let sub = &mut self.subs[s];
        let sub_id = request_id / 2;
        match (sub.state, request_id % 2) {
            (SubState::Pending(k), 0) if k == sub_id => {
                sub.state = SubState::Active(k);
                self.tally.windows += 1;
                // Owed from here: every message started after this read (module comment).
                let started = ctx.shared.published.iter().map(|c| c.load(Ordering::SeqCst));
                sub.owed = Owed::open(started, &sub.last_seq);
            }
            (SubState::Leaving(k), 1) if k == sub_id => sub.state = SubState::Idle,
            _ => self.tally.unexpected += 1,
        }
    }

    fn on_deliver(&mut self, s: usize, at_ns: u64, sub_id: u64, stamp: Option<Stamp>) {
        let sub = &mut self.subs[s];
        let Some(st) = stamp else {
            self.tally.unexpected += 1;
            return;
        };
        let p = st.publisher as usize;
        if p >= sub.last_seq.len() || sub_id == 0 || sub_id >= sub.next_sub_id {
            // Not our publisher, or a subscription this connection never made.
            self.tally.unexpected += 1;
            return;
        }
        self.tally.received += 1;
        if !in_order(&mut sub.last_seq[p], st.seq) {
            self.tally.duplicates += 1;
        }
        if sub.state == SubState::Active(sub_id) {
            self.tally.window_missing += sub.owed.on_seq(p, st.seq);
        }
        if let Some(w) = self.window {
            if w.measured(at_ns) {
                self.tally.received_measured += 1;
            }
            if w.measured(st.intended_ns) {
                record(&mut self.interval, at_ns.saturating_sub(st.intended_ns));
            }
        }
    }

    fn publish_due(&mut self, ep: &mut Endpoint, ctx: &Ctx, now_ns: u64) -> Option<u64> {
        let w = self.window.expect("running");
        let mut budget = OPS_PER_TURN;
        let mut next: Option<u64> = None;
        for pb in &mut self.pubs {
            let Some(schedule) = pb.schedule.as_mut() else { continue };
            loop {
                let t = schedule.peek();
                if t >= w.end_ns {
                    pb.schedule = None;
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
                        // Counted as started before it exists (module comment).
                        ctx.shared.published[pb.index].store(pb.seq + 1, Ordering::SeqCst);
                        Stamp { publisher: pb.index as u64, seq: pb.seq, intended_ns: t }
                            .write(&mut self.payload);
                        encode_publish(0, None, &self.plan.topic, &self.payload, tx);
                        pb.seq += 1;
                        self.tally.sent += 1;
                        if t >= w.measure_ns {
                            self.tally.sent_measured += 1;
                            record(&mut self.tally.send_lag, now_ns - t);
                        }
                    }
                    _ => self.tally.skipped += 1,
                }
            }
        }
        next
    }

    /// Runs the churn operations that are due: each goes to the next subscriber (round robin)
    /// that is idle (subscribe) or active (unsubscribe); one waiting for an OK is passed over.
    fn churn_due(&mut self, ep: &mut Endpoint, now_ns: u64) -> Option<u64> {
        let end = self.window.expect("running").end_ns;
        let n = self.subs.len();
        for _ in 0..OPS_PER_TURN {
            let schedule = self.churn.as_mut()?;
            let t = schedule.peek();
            if t >= end {
                self.churn = None;
                return None;
            }
            if t > now_ns {
                return Some(t);
            }
            schedule.take();
            let found = (0..n)
                .map(|k| (self.cursor + k) % n)
                .find(|&s| matches!(self.subs[s].state, SubState::Idle | SubState::Active(_)));
            let Some(s) = found else {
                self.tally.churn_skipped += 1;
                continue;
            };
            self.cursor = (s + 1) % n;
            match self.subs[s].state {
                SubState::Idle => {
                    self.subscribe(ep, s);
                    self.tally.subscribes += 1;
                }
                SubState::Active(k) => {
                    self.unsubscribe(ep, s, k);
                    self.tally.unsubscribes += 1;
                }
                _ => unreachable!("chosen above"),
            }
        }
        Some(now_ns)
    }

    /// Replaces the connections that are due; returns the next due time.
    fn reconnect_due(&mut self, ep: &mut Endpoint, now: Instant, now_ns: u64) -> Option<u64> {
        let end = self.window.expect("running").end_ns;
        let every = (self.plan.params.reconnect_every_s * 1e9) as u64;
        let mut next: Option<u64> = None;
        let publishers = self.plan.params.publishers;
        for s in 0..self.subs.len() {
            let Some(due) = self.subs[s].reconnect_at else { continue };
            if due >= end {
                self.subs[s].reconnect_at = None;
                continue;
            }
            if due > now_ns {
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            let old = self.subs[s].conn;
            ep.close(old);
            self.set_role(old, None);
            match ep.open(now) {
                Ok(id) => {
                    self.set_role(id, Some(Role::Subscriber(s)));
                    self.subs[s].reset_connection(id, publishers);
                    self.tally.reconnects += 1;
                }
                Err(e) => self.tally.error(format!("cannot open a connection: {e}")),
            }
            let at = due + every;
            self.subs[s].reconnect_at = Some(at);
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next
    }

    /// True when every active window has every message it is owed (after the publishers end).
    fn drained(&self, ctx: &Ctx) -> bool {
        let shared = &ctx.shared;
        if shared.publishers_done.load(Ordering::Acquire) < self.plan.params.publishers {
            return false;
        }
        self.subs.iter().all(|sub| {
            !matches!(sub.state, SubState::Active(_))
                || (shared.published.iter().enumerate())
                    .all(|(p, n)| sub.owed.complete(p, n.load(Ordering::Acquire)))
        })
    }

    fn start_window(&mut self, start_ns: u64, now: Instant) {
        let c = &self.plan.common;
        let p = &self.plan.params;
        self.window = Some(Window::new(c, start_ns, now));
        let per_publisher = p.rate / p.publishers as f64;
        for pb in &mut self.pubs {
            let phase = pb.index as f64 / p.publishers as f64;
            let seed = c.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ pb.index as u64;
            pb.schedule =
                Some(Schedule::new(start_ns, per_publisher, phase, Arrivals::Uniform, seed));
        }
        if p.churn_rate > 0.0 && !self.subs.is_empty() {
            let rate = p.churn_rate * self.subs.len() as f64 / p.subscribers as f64;
            let phase = self.thread as f64 / c.threads as f64;
            self.churn = Some(Schedule::new(start_ns, rate, phase, Arrivals::Uniform, c.seed));
        }
        if p.reconnect_every_s > 0.0 {
            // Spread over the interval: subscriber k's first reconnect is k/N into it.
            let every = p.reconnect_every_s * 1e9;
            let n = self.subs.len().max(1) as f64;
            for (k, sub) in self.subs.iter_mut().enumerate() {
                sub.reconnect_at = Some(start_ns + (every * (1.0 + k as f64 / n)) as u64);
            }
        }
    }
}

impl Scenario for ChurnThread {
    fn start(&mut self, ep: &mut Endpoint, _ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        self.open_more(ep, now)
    }

    fn on_event(&mut self, ep: &mut Endpoint, ctx: &mut Ctx, ev: Event) -> Result<(), String> {
        match ev {
            Event::Delivery { conn, at_ns, sub, stamp } => match self.role(conn) {
                Some(Role::Subscriber(s)) if self.subs[s].conn == conn => {
                    self.on_deliver(s, at_ns, sub, stamp)
                }
                // The connection being replaced: its last deliveries are allowed, not owed.
                _ => {}
            },
            Event::Frame { conn, frame, .. } => match (self.role(conn), frame) {
                (Some(Role::Subscriber(s)), Frame::Ok(ok)) if self.subs[s].conn == conn => {
                    self.on_ok(ctx, s, ok.request_id)
                }
                (_, Frame::Error(e)) => {
                    let code = fovea_codec::ErrorCode::from_u64(e.code).map_or("?", |c| c.name());
                    let msg = String::from_utf8_lossy(&e.message);
                    let what = format!("the node refused request {}: {code} {msg}", e.request_id);
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
            },
            Event::Invoke { .. } | Event::Reply { .. } => self.tally.unexpected += 1,
            Event::Welcome { conn, .. } => {
                self.tally.connected += 1;
                if self.phase == Phase::Setup {
                    self.opener.settled();
                    self.sessions += 1;
                }
                if let Some(Role::Subscriber(s)) = self.role(conn) {
                    if self.subs[s].conn == conn {
                        self.subscribe(ep, s);
                    }
                }
                if self.phase == Phase::Setup {
                    self.open_more(ep, Instant::now())?;
                }
            }
            Event::Closed { conn, reason, expected, reconnecting } => {
                if reconnecting {
                    // The same connection id comes back with a new session: subscribe anew.
                    if let Some(Role::Subscriber(s)) = self.role(conn) {
                        self.subs[s].reset_connection(conn, self.plan.params.publishers);
                    }
                }
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
                let all_active = self.subs.iter().all(|s| matches!(s.state, SubState::Active(_)));
                if self.opener.all_opened()
                    && self.sessions == self.pubs.len() + self.subs.len()
                    && all_active
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
                None => Step::Wait(Some(now + Duration::from_millis(1))),
            },
            Phase::Run => {
                let w = self.window.expect("running");
                let now_ns = epoch.ns(now);
                let sends = self.publish_due(ep, ctx, now_ns);
                let churn = self.churn_due(ep, now_ns);
                let reconnect = self.reconnect_due(ep, now, now_ns);
                let next = [sends, churn, reconnect].into_iter().flatten().min();
                let report = ctx.interval(now, &mut self.interval, &mut self.tally.latency);
                w.sending_step(&epoch, now_ns, next, report).unwrap_or_else(|| {
                    self.phase = Phase::Drain;
                    Step::Wait(Some(now))
                })
            }
            Phase::Drain => {
                let w = self.window.expect("running");
                let report = ctx.interval(now, &mut self.interval, &mut self.tally.latency);
                if now >= w.drain_deadline {
                    self.tally.drain_timeouts += u64::from(!self.drained(ctx));
                    Step::Done
                } else if now >= self.next_check && self.drained(ctx) {
                    Step::Done
                } else {
                    if now >= self.next_check {
                        self.next_check = now + DRAIN_CHECK;
                    }
                    Step::Wait(Some(self.next_check.min(report)))
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
            if matches!(sub.state, SubState::Active(_)) {
                // Still active when publishing stopped: owed everything to the last message.
                for (p, published) in shared.published.iter().enumerate() {
                    self.tally.window_missing +=
                        sub.owed.missing(p, published.load(Ordering::Acquire));
                }
            }
        }
        ctx.publish_counts(&self.tally);
        std::mem::take(&mut self.tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_inside_the_window_is_missing_and_the_tail_is_owed() {
        // The OK was handled when 10 messages had been started; 7 had arrived already.
        let mut w = Owed::open([10u64].into_iter(), &[Some(7)]);
        assert_eq!(w.on_seq(0, 10), 0);
        assert_eq!(w.on_seq(0, 11), 0);
        assert_eq!(w.on_seq(0, 13), 1, "12 was owed: 13 came after it");
        assert_eq!(w.missing(0, 14), 0);
        assert_eq!(w.missing(0, 20), 6, "a window open at the end is owed 14..20");
        assert!(!w.complete(0, 20) && w.complete(0, 14));
        // Started before the connection got anything: owed from after its last message.
        let w = Owed::open([3u64].into_iter(), &[Some(5)]);
        assert_eq!(w.missing(0, 6), 0);
    }

    #[test]
    fn a_connection_gets_each_message_once_in_order() {
        let mut last = None;
        assert!(in_order(&mut last, 4));
        assert!(in_order(&mut last, 9), "gaps are allowed outside windows");
        assert!(!in_order(&mut last, 9), "duplicate");
        assert!(!in_order(&mut last, 5), "reordered");
        assert_eq!(last, Some(9));
    }
}
