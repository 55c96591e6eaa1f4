//! `rpc`: providers REGISTER one procedure and answer every INVOKE with a REPLY of `--payload`
//! bytes that echoes the call's measurement header; callers CALL it at a fixed total rate (open
//! loop: call k is due at a time fixed in advance, whatever the node answered so far) with
//! unique call ids.
//!
//! Promise checked (docs/PROTOCOL.md §7.2): exactly one answer (REPLY or CALL_ERROR) per call,
//! and the REPLY carries the header of the call it answers. Counted exactly: replies,
//! CALL_ERRORs by code, calls with no answer by the end of the drain (timeouts), calls answered
//! twice, answers to ids never sent or carrying another call's header (unexpected), and the
//! INVOKEs each provider received (round robin should spread them evenly).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fovea_codec::frame::{self, Frame};
use fovea_codec::{ErrorCode, Name};
use hdrhistogram::Histogram;

use super::{Opener, Window, SETUP_INFLIGHT};
use crate::endpoint::{Endpoint, Event};
use crate::params::{self, Common, Rpc};
use crate::payload::Stamp;
use crate::schedule::Schedule;
use crate::stats::{latency_histogram, record, Tally};
use crate::wire::{self, Answer};
use crate::worker::{Ctx, Scenario, Step};

/// Calls per loop turn at most (a caller that fell behind catches up without starving the
/// receive side of its thread).
const SENDS_PER_TURN: usize = 4_096;
/// A caller whose unsent backlog (flow control closed) exceeds this skips scheduled calls
/// instead of buffering without bound; skipped calls are counted and take no call id.
const BACKLOG_MAX: usize = 64 << 20;
/// Marks an answered slot in a caller's window of call ids.
const ANSWERED: u64 = u64::MAX;
/// How often a draining thread looks at whether the other threads' callers are done.
const DRAIN_CHECK: Duration = Duration::from_millis(5);
/// Request id of the providers' REGISTER.
const REGISTER_ID: u64 = 1;

/// What every thread of a run shares.
#[derive(Debug)]
pub struct Plan {
    /// The parameters.
    pub params: Rpc,
    /// Common parameters.
    pub common: Common,
    /// The procedure.
    pub procedure: Name,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Provider(usize),
    Caller(usize),
}

struct Provider {
    index: usize,
    conn: u32,
}

/// A caller's calls: ids are handed out in order from 1, so the calls not yet answered are a
/// window `[base, next_id)` of slots holding each call's intended send time (`ANSWERED` once
/// answered). An answer below the window or on an answered slot is a duplicate; one at or
/// above `next_id` answers a call never made.
struct Caller {
    index: usize,
    conn: u32,
    schedule: Option<Schedule>,
    next_id: u64,
    base: u64,
    slots: VecDeque<u64>,
    open: u64,
}

/// How an answer matched a caller's calls.
#[derive(Debug, PartialEq, Eq)]
enum Matched {
    /// A call in flight: its intended send time.
    Call(u64),
    /// Already answered.
    Duplicate,
    /// Never sent.
    Unknown,
}

impl Caller {
    fn new(index: usize) -> Caller {
        Caller {
            index,
            conn: u32::MAX,
            schedule: None,
            next_id: 1,
            base: 1,
            slots: VecDeque::new(),
            open: 0,
        }
    }

    /// Takes a call id for a call intended at `intended_ns`.
    fn call(&mut self, intended_ns: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.slots.push_back(intended_ns);
        self.open += 1;
        id
    }

    /// Accounts for an answer to `id`.
    fn answer(&mut self, id: u64) -> Matched {
        if id == 0 || id >= self.next_id {
            return Matched::Unknown;
        }
        let Some(k) = id.checked_sub(self.base) else { return Matched::Duplicate };
        let slot = &mut self.slots[k as usize];
        if *slot == ANSWERED {
            return Matched::Duplicate;
        }
        let intended = std::mem::replace(slot, ANSWERED);
        self.open -= 1;
        while self.slots.front() == Some(&ANSWERED) {
            self.slots.pop_front();
            self.base += 1;
        }
        Matched::Call(intended)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    WaitStart,
    Run,
    Drain,
}

/// One thread's providers and callers.
pub struct RpcThread {
    plan: Arc<Plan>,
    providers: Vec<Provider>,
    callers: Vec<Caller>,
    roles: Vec<Option<Role>>,
    to_open: Vec<Role>,
    opener: Opener,
    phase: Phase,
    sessions: usize,
    pending_oks: usize,
    window: Option<Window>,
    tally: Tally,
    interval: Histogram<u64>,
    request: Vec<u8>,
    reply: Vec<u8>,
}

/// Builds the per-thread shares: provider `p` and caller `c` go to thread `p % T` and `c % T`.
pub fn plan(common: &Common, params: &Rpc) -> Result<Vec<RpcThread>, params::UsageError> {
    common.validate()?;
    let procedure = params.validate()?;
    let plan = Arc::new(Plan { params: params.clone(), common: common.clone(), procedure });
    let threads = common.threads;
    Ok((0..threads)
        .map(|t| {
            let providers: Vec<Provider> = (t..params.providers)
                .step_by(threads)
                .map(|index| Provider { index, conn: u32::MAX })
                .collect();
            let callers: Vec<Caller> =
                (t..params.callers).step_by(threads).map(Caller::new).collect();
            // Providers first: the callers have nothing to do before every REGISTER is done.
            let mut to_open: Vec<Role> = (0..callers.len()).rev().map(Role::Caller).collect();
            to_open.extend((0..providers.len()).rev().map(Role::Provider));
            let n = to_open.len();
            let tally = Tally { invocations: vec![0; params.providers], ..Tally::default() };
            RpcThread {
                plan: plan.clone(),
                providers,
                callers,
                roles: Vec::new(),
                to_open,
                opener: Opener::new(n, SETUP_INFLIGHT),
                phase: Phase::Setup,
                sessions: 0,
                pending_oks: 0,
                window: None,
                tally,
                interval: latency_histogram(),
                request: vec![0u8; params.payload],
                reply: vec![0u8; params.payload],
            }
        })
        .collect())
}

impl RpcThread {
    fn connections(&self) -> usize {
        self.providers.len() + self.callers.len()
    }

    fn role(&self, conn: u32) -> Option<Role> {
        self.roles.get(conn as usize).copied().flatten()
    }

    fn open_more(&mut self, ep: &mut Endpoint, now: Instant) -> Result<(), String> {
        let (roles, to_open) = (&mut self.roles, &mut self.to_open);
        let (providers, callers) = (&mut self.providers, &mut self.callers);
        self.opener.open(ep, now, |id| {
            let role = to_open.pop().expect("one role per connection");
            if roles.len() <= id as usize {
                roles.resize(id as usize + 1, None);
            }
            roles[id as usize] = Some(role);
            match role {
                Role::Provider(i) => providers[i].conn = id,
                Role::Caller(i) => callers[i].conn = id,
            }
        })
    }

    /// A provider's INVOKE: answer at once with the call's header echoed.
    fn on_invoke(&mut self, ep: &mut Endpoint, p: usize, a: Answer) {
        let provider = &self.providers[p];
        self.tally.invocations[provider.index] += 1;
        match a.stamp {
            Some(s) => s.write(&mut self.reply),
            None => self.reply[..crate::payload::HEADER_LEN].fill(0),
        }
        if let Some(tx) = ep.data_tx(provider.conn) {
            wire::encode_reply(tx, a.id, &self.reply);
        }
    }

    /// A caller's REPLY.
    fn on_reply(&mut self, c: usize, at_ns: u64, a: Answer) {
        let caller = &mut self.callers[c];
        let index = caller.index as u64;
        match caller.answer(a.id) {
            Matched::Call(intended) => {
                let echoed = Stamp { publisher: index, seq: a.id, intended_ns: intended };
                if a.stamp != Some(echoed) {
                    // The node answered this call with another call's reply.
                    self.tally.unexpected += 1;
                }
                self.tally.received += 1;
                if let Some(w) = self.window {
                    if w.measured(at_ns) {
                        self.tally.received_measured += 1;
                    }
                    if w.measured(intended) {
                        record(&mut self.interval, at_ns.saturating_sub(intended));
                    }
                }
            }
            Matched::Duplicate => self.tally.duplicates += 1,
            Matched::Unknown => self.tally.unexpected += 1,
        }
    }

    /// A caller's CALL_ERROR.
    fn on_call_error(&mut self, c: usize, e: &frame::CallError) {
        match self.callers[c].answer(e.id) {
            Matched::Call(_) => {
                *self.tally.call_errors.entry(e.code).or_default() += 1;
                if self.tally.call_errors.len() <= 1 && e.code != ErrorCode::TooManyCalls as u64 {
                    let name = ErrorCode::from_u64(e.code).map_or("application code", |c| c.name());
                    let msg = String::from_utf8_lossy(&e.message);
                    self.tally.error_samples.push(format!("CALL_ERROR {name}: {msg}"));
                }
            }
            Matched::Duplicate => self.tally.duplicates += 1,
            Matched::Unknown => self.tally.unexpected += 1,
        }
    }

    /// Sends the calls that are due; returns the next send time of this thread's callers, or
    /// `None` when all have finished.
    fn call_due(&mut self, ep: &mut Endpoint, now_ns: u64) -> Option<u64> {
        let w = self.window.expect("running");
        let p = &self.plan.params;
        let mut budget = SENDS_PER_TURN;
        let mut next: Option<u64> = None;
        for c in &mut self.callers {
            // Taken out while the caller hands out call ids; put back unless finished.
            let Some(mut schedule) = c.schedule.take() else { continue };
            loop {
                let t = schedule.peek();
                if t >= w.end_ns {
                    break;
                }
                if t > now_ns || budget == 0 {
                    next = Some(next.map_or(t, |n| n.min(t)));
                    c.schedule = Some(schedule);
                    break;
                }
                schedule.take();
                budget -= 1;
                match ep.data_tx(c.conn) {
                    Some(tx) if tx.len() <= BACKLOG_MAX => {
                        let id = c.call(t);
                        Stamp { publisher: c.index as u64, seq: id, intended_ns: t }
                            .write(&mut self.request);
                        let procedure = &self.plan.procedure;
                        wire::encode_call(
                            tx,
                            p.idempotent,
                            id,
                            p.deadline_ms,
                            procedure,
                            &self.request,
                        );
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

    fn start_window(&mut self, start_ns: u64, now: Instant) {
        let c = &self.plan.common;
        self.window = Some(Window::new(c, start_ns, now));
        let total = self.plan.params.callers;
        let per_caller = self.plan.params.rate / total as f64;
        for caller in &mut self.callers {
            let phase = caller.index as f64 / total as f64;
            let seed = c.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ caller.index as u64;
            caller.schedule =
                Some(Schedule::new(start_ns, per_caller, phase, self.plan.params.arrivals, seed));
        }
    }

    fn refused(&mut self, what: String) -> Result<(), String> {
        if self.phase == Phase::Setup {
            return Err(what);
        }
        self.tally.error(what);
        Ok(())
    }
}

impl Scenario for RpcThread {
    fn start(&mut self, ep: &mut Endpoint, _ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        self.open_more(ep, now)
    }

    fn on_event(&mut self, ep: &mut Endpoint, _ctx: &mut Ctx, ev: Event) -> Result<(), String> {
        match ev {
            Event::Invoke { conn, answer, .. } => match self.role(conn) {
                Some(Role::Provider(p)) => self.on_invoke(ep, p, answer),
                _ => self.tally.unexpected += 1,
            },
            Event::Reply { conn, at_ns, answer } => match self.role(conn) {
                Some(Role::Caller(c)) => self.on_reply(c, at_ns, answer),
                _ => self.tally.unexpected += 1,
            },
            Event::Frame { conn, frame, .. } => match (self.role(conn), frame) {
                (Some(Role::Caller(c)), Frame::CallError(e)) => self.on_call_error(c, &e),
                (Some(Role::Provider(_)), Frame::Ok(ok)) if ok.request_id == REGISTER_ID => {
                    self.pending_oks = self.pending_oks.saturating_sub(1)
                }
                (_, Frame::Error(e)) => {
                    let code = ErrorCode::from_u64(e.code).map_or("?", |c| c.name());
                    let msg = String::from_utf8_lossy(&e.message);
                    self.refused(format!(
                        "the node refused request {}: {code} {msg}",
                        e.request_id
                    ))?
                }
                (_, Frame::Goodbye(g)) => {
                    let reason = String::from_utf8_lossy(&g.reason);
                    self.tally.error(format!("the node said GOODBYE: {reason}"));
                }
                _ => {}
            },
            Event::Delivery { .. } => self.tally.unexpected += 1,
            Event::Welcome { conn, .. } => {
                self.opener.settled();
                self.sessions += 1;
                self.tally.connected += 1;
                if let Some(Role::Provider(_)) = self.role(conn) {
                    let f = Frame::Register(frame::Register {
                        request_id: REGISTER_ID,
                        procedure: self.plan.procedure.clone(),
                    });
                    ep.send_session(conn, &f);
                    self.pending_oks += 1;
                }
                if self.phase == Phase::Setup {
                    self.open_more(ep, Instant::now())?;
                }
            }
            Event::Closed { reason, expected, reconnecting, .. } => {
                // A provider that comes back registers again on its new WELCOME; a caller's
                // calls in flight on the lost session end as timeouts.
                let tolerated = expected || (reconnecting && self.phase == Phase::Setup);
                if !tolerated {
                    self.refused(format!("a connection failed: {reason}"))?;
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
                let next_send = self.call_due(ep, now_ns);
                let next_report = ctx.interval(now, &mut self.interval, &mut self.tally.latency);
                w.sending_step(&epoch, now_ns, next_send, next_report).unwrap_or_else(|| {
                    self.phase = Phase::Drain;
                    Step::Wait(Some(now))
                })
            }
            Phase::Drain => {
                let w = self.window.expect("running");
                let next_report = ctx.interval(now, &mut self.interval, &mut self.tally.latency);
                let answered = self.callers.iter().all(|c| c.open == 0);
                if answered {
                    ctx.drained();
                }
                // Providers stay until every thread's callers have their answers: a provider
                // thread that left early would turn other threads' calls into PROVIDER_GONE.
                if now >= w.drain_deadline || ctx.all_drained() {
                    self.tally.drain_timeouts += u64::from(!answered);
                    Step::Done
                } else {
                    Step::Wait(Some((now + DRAIN_CHECK).min(next_report).min(w.drain_deadline)))
                }
            }
        };
        ctx.publish_counts(&self.tally);
        Ok(step)
    }

    fn finish(&mut self, ep: &mut Endpoint, ctx: &mut Ctx) -> Tally {
        ctx.last_interval(&mut self.interval, &mut self.tally.latency);
        ctx.drained();
        for p in &self.providers {
            ep.close(p.conn);
        }
        for c in &self.callers {
            ep.close(c.conn);
            self.tally.lost += c.open;
        }
        self.tally.expected = self.tally.sent;
        ctx.publish_counts(&self.tally);
        std::mem::take(&mut self.tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_calls_exactly() {
        let mut c = Caller::new(0);
        let ids: Vec<u64> = (0..5).map(|k| c.call(1_000 + k)).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(c.answer(3), Matched::Call(1_002), "out of order is fine");
        assert_eq!(c.answer(3), Matched::Duplicate);
        assert_eq!(c.answer(1), Matched::Call(1_000));
        assert_eq!(c.answer(2), Matched::Call(1_001));
        assert_eq!((c.base, c.slots.len(), c.open), (4, 2, 2), "the window moved past 1..=3");
        assert_eq!(c.answer(1), Matched::Duplicate, "below the window");
        assert_eq!(c.answer(6), Matched::Unknown, "never sent");
        assert_eq!(c.answer(0), Matched::Unknown, "ids start at 1");
        assert_eq!(c.answer(5), Matched::Call(1_004));
        assert_eq!(c.answer(4), Matched::Call(1_003));
        assert_eq!((c.open, c.slots.len()), (0, 0));
    }
}
