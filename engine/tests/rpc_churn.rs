//! Provider churn during a call storm, end to end over real QUIC (issue 6, PROTOCOL.md §7.2):
//! every call is answered exactly once, by a REPLY that belongs to it or by a typed CALL_ERROR.
//!
//! A 2-shard node; three callers (shards 0, 1, 0) keep a bounded window of calls in flight to
//! one procedure, every other call idempotent, deadlines 5 to 7 s. Providers on both shards
//! REPLY to each INVOKE at once. One provider stays registered throughout, and so does at
//! least one churner, so NO_PROVIDER is never a correct answer. The storm runs in phases; at
//! each phase boundary the oldest churner stops answering, the next phase starts, a new
//! provider connects and REGISTERs meanwhile, and the churner leaves abruptly once it holds a
//! few INVOKEs it never answers: with a QUIC CONNECTION_CLOSE and no GOODBYE, without another
//! packet (the node notices at its idle timeout), or with a GOODBYE. Providers answer at once,
//! so DEADLINE_EXCEEDED is never correct either: the only CALL_ERROR allowed is PROVIDER_GONE,
//! for a non-idempotent call; an idempotent call whose provider left must be retried by the
//! node and get another provider's REPLY. The node's counters must agree (one answer per call,
//! no late replies, a retry per held idempotent call at least). Phases and readiness are waited
//! for on a condition variable, channels and frames with deadlines; nothing sleeps.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fovea_codec::frame::{self, Frame};
use fovea_codec::ErrorCode;

const SHARDS: usize = 2;
const REALM: &str = "churn";
const PROCEDURE: &str = "svc.churn";
/// Callers alternate between the shards (0, 1, 0).
const CALLERS: usize = 3;
const CALLS_PER_CALLER: u64 = 600;
/// Calls per caller in each phase of the storm but the last (one phase per churn event).
const PHASE: u64 = CALLS_PER_CALLER / (LEAVES.len() as u64 + 1);
/// Calls one caller keeps in flight.
const WINDOW: usize = 16;
/// INVOKEs a leaving provider collects (and never answers) before it goes.
const HOLD: usize = 6;
/// Longest a leaving provider waits for `HOLD` of them.
const HOLD_WAIT: Duration = Duration::from_secs(2);
/// The node's idle timeout: how long it takes to notice a provider that vanished silently.
const IDLE_TIMEOUT_MS: u64 = 2_000;
/// Slack on top of a call's deadline for its answer to reach the caller.
const MARGIN: Duration = Duration::from_secs(1);
/// How long callers keep reading after their last answer, to see a second one if it came.
const QUIET: Duration = Duration::from_millis(300);
/// Bound on a caller's storm whatever happens.
const STORM_LIMIT: Duration = Duration::from_secs(30);
/// Bound on the wait for the storm to reach the next churn event.
const PROGRESS_WAIT: Duration = Duration::from_secs(15);
/// Bytes of a call's payload: caller, call id, idempotent flag, timeout, then filler.
const PAYLOAD_LEN: usize = 48;
/// The churn events, in order; the leaving providers alternate between the shards, so each
/// kind of leave but the silent one happens on both.
const LEAVES: [Leave; 6] =
    [Leave::Close, Leave::Silent, Leave::Goodbye, Leave::Close, Leave::Close, Leave::Goodbye];

/// (caller index, call id).
type Key = (usize, u64);

fn is_idempotent(caller: usize, id: u64) -> bool {
    (id + caller as u64).is_multiple_of(2)
}

fn timeout_ms(id: u64) -> u64 {
    5_000 + (id % 5) * 500
}

/// The payload of a call: it names the call, so a REPLY that echoes it proves whose it is.
fn call_payload(caller: usize, id: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(PAYLOAD_LEN);
    p.push(caller as u8);
    p.extend_from_slice(&id.to_be_bytes());
    p.push(is_idempotent(caller, id) as u8);
    p.extend_from_slice(&(timeout_ms(id) as u32).to_be_bytes());
    while p.len() < PAYLOAD_LEN {
        p.push((id as u8).wrapping_mul(31).wrapping_add(p.len() as u8));
    }
    p
}

/// The call a payload names, if it is exactly the payload that call was sent with.
fn parse_payload(p: &[u8]) -> Option<Key> {
    if p.len() != PAYLOAD_LEN {
        return None;
    }
    let caller = p[0] as usize;
    let id = u64::from_be_bytes(p[1..9].try_into().unwrap());
    (caller < CALLERS && call_payload(caller, id) == p).then_some((caller, id))
}

/// How a churning provider leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leave {
    /// QUIC CONNECTION_CLOSE, no GOODBYE.
    Close,
    /// Not another packet: the socket is dropped, the node notices at its idle timeout.
    Silent,
    /// GOODBYE, with INVOKEs still unanswered.
    Goodbye,
}

enum Cmd {
    /// Stop answering, hold up to `HOLD` INVOKEs, then leave this way.
    Leave(Leave),
    /// The storm is over: say GOODBYE.
    Stop,
}

#[derive(Debug)]
struct ProviderReport {
    serial: u16,
    shard: usize,
    left: Option<Leave>,
    /// Calls this provider answered with a REPLY.
    served: Vec<Key>,
    /// Calls it received and never answered (it left holding them).
    held: Vec<Key>,
    problems: Vec<String>,
}

struct Provider {
    serial: u16,
    cmd: mpsc::Sender<Cmd>,
    status: mpsc::Receiver<Status>,
    thread: JoinHandle<ProviderReport>,
}

/// What a provider thread tells the test.
#[derive(Debug, PartialEq, Eq)]
enum Status {
    /// The node answered REGISTER with OK (so every shard can choose it), or this.
    Registered(Result<(), String>),
    /// It took `Cmd::Leave` and answers no INVOKE from now on.
    Holding,
}

impl Provider {
    /// Starts a provider on `shard`; it connects and REGISTERs on its own thread.
    fn start(node: SocketAddr, serial: u16, shard: usize, callers: Arc<Vec<[u8; 32]>>) -> Self {
        let (cmd, cmd_rx) = mpsc::channel();
        let (status_tx, status) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("provider-{serial}"))
            .spawn(move || run_provider(node, serial, shard, &callers, &cmd_rx, &status_tx))
            .unwrap();
        Provider { serial, cmd, status, thread }
    }

    /// Waits for the provider's next status, which must be `expected`.
    fn expect(&self, expected: Status) {
        match self.status.recv_timeout(WAIT) {
            Ok(s) if s == expected => {}
            Ok(s) => panic!("provider {}: {s:?}, expected {expected:?}", self.serial),
            Err(e) => panic!("provider {}: no {expected:?} within {WAIT:?}: {e}", self.serial),
        }
    }
}

fn run_provider(
    node: SocketAddr,
    serial: u16,
    shard: usize,
    callers: &[[u8; 32]],
    cmd: &mpsc::Receiver<Cmd>,
    status: &mpsc::Sender<Status>,
) -> ProviderReport {
    let mut report = ProviderReport {
        serial,
        shard,
        left: None,
        served: Vec::new(),
        held: Vec::new(),
        problems: Vec::new(),
    };
    let mut p = TestClient::connect_as(node, REALM, peer_on(shard, SHARDS));
    let r = p.request_id();
    p.send_session(&Frame::Register(frame::Register {
        request_id: r,
        procedure: PROCEDURE.parse().unwrap(),
    }));
    match p.expect_response(r) {
        Frame::Ok(_) => status.send(Status::Registered(Ok(()))).unwrap(),
        other => {
            let _ = status.send(Status::Registered(Err(format!("{other:?}"))));
            return report;
        }
    }
    let mut seen = HashSet::new();
    let mut serving = true;
    let mut leaving: Option<(Leave, Instant)> = None;
    let limit = Instant::now() + 2 * STORM_LIMIT;
    loop {
        p.step(Instant::now() + Duration::from_millis(10));
        take_invokes(&mut p, serving, callers, &mut seen, &mut report);
        match cmd.try_recv() {
            Ok(Cmd::Leave(how)) => {
                serving = false;
                leaving = Some((how, Instant::now()));
                let _ = status.send(Status::Holding);
            }
            Ok(Cmd::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                goodbye(&mut p, callers, &mut seen, &mut report);
                return report;
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if let Some((how, since)) = leaving {
            if report.held.len() >= HOLD || since.elapsed() >= HOLD_WAIT {
                report.left = Some(how);
                match how {
                    Leave::Close => {
                        let _ = p.conn.close(true, 0, b"churn");
                        if p.wait_closed(Duration::from_secs(3)).is_none() {
                            report.problems.push("the connection did not close".into());
                        }
                        take_invokes(&mut p, false, callers, &mut seen, &mut report);
                    }
                    Leave::Silent => drop(p),
                    Leave::Goodbye => goodbye(&mut p, callers, &mut seen, &mut report),
                }
                return report;
            }
        }
        if p.conn.is_closed() || Instant::now() >= limit {
            report.problems.push(format!("provider ended unasked: closed {:?}", p.closed()));
            return report;
        }
    }
}

/// GOODBYE, then waits for the node to close; INVOKEs that arrive meanwhile stay unanswered.
fn goodbye(
    p: &mut TestClient,
    callers: &[[u8; 32]],
    seen: &mut HashSet<Key>,
    report: &mut ProviderReport,
) {
    p.send_session(&Frame::Goodbye(frame::Goodbye { code: 0, reason: Bytes::new() }));
    if p.wait_closed(Duration::from_secs(3)).is_none() {
        report.problems.push("the node did not close after GOODBYE".into());
    }
    take_invokes(p, false, callers, seen, report);
}

/// Takes the INVOKEs received so far: checks each, and REPLYs (tagged with the provider's
/// serial, then the call's payload) or holds it.
fn take_invokes(
    p: &mut TestClient,
    serving: bool,
    callers: &[[u8; 32]],
    seen: &mut HashSet<Key>,
    report: &mut ProviderReport,
) {
    for f in p.drain_pending() {
        let Frame::Invoke(inv) = f else { continue };
        let Some(key) = parse_payload(&inv.payload) else {
            report.problems.push(format!("INVOKE with a payload of no call: {:?}", inv.payload));
            continue;
        };
        if inv.procedure.as_str() != PROCEDURE || inv.caller != callers[key.0] {
            report.problems.push(format!("INVOKE of {key:?} names another procedure or caller"));
        }
        if inv.timeout_ms == 0 || inv.timeout_ms > timeout_ms(key.1) {
            let asked = timeout_ms(key.1);
            report
                .problems
                .push(format!("INVOKE of {key:?}: {} ms left of {asked}", inv.timeout_ms));
        }
        if !seen.insert(key) {
            report.problems.push(format!("{key:?} invoked twice on this provider"));
        }
        if serving {
            let mut reply = report.serial.to_be_bytes().to_vec();
            reply.extend_from_slice(&inv.payload);
            p.send_data(&Frame::Reply(frame::Reply {
                id: inv.invocation_id,
                payload: Bytes::from(reply),
            }));
            report.served.push(key);
        } else {
            report.held.push(key);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Reply(Bytes),
    Error(u64),
}

struct CallRecord {
    sent: Option<Instant>,
    answers: Vec<(Answer, Instant)>,
}

struct CallerReport {
    calls: Vec<CallRecord>,
    /// Answers for call ids this caller never used, and frames no caller should get.
    strays: Vec<String>,
}

/// The storm's phases: callers may send calls up to `allowed` (per caller); the main thread
/// raises it after each churn event and waits on `answered` (first answers, all callers).
struct Progress {
    allowed: AtomicU64,
    answered: Mutex<usize>,
    changed: Condvar,
}

impl Progress {
    fn add(&self, n: usize) {
        if n == 0 {
            return;
        }
        *self.answered.lock().unwrap() += n;
        self.changed.notify_all();
    }

    /// Waits until at least `n` calls are answered; the count reached.
    fn wait_for(&self, n: usize, wait: Duration) -> usize {
        let guard = self.answered.lock().unwrap();
        let (guard, _) = self.changed.wait_timeout_while(guard, wait, |a| *a < n).unwrap();
        *guard
    }
}

fn run_caller(
    node: SocketAddr,
    index: usize,
    peer_id: [u8; 32],
    progress: &Progress,
) -> CallerReport {
    let mut c = TestClient::connect_as(node, REALM, peer_id);
    let mut report = CallerReport {
        calls: (0..CALLS_PER_CALLER)
            .map(|_| CallRecord { sent: None, answers: Vec::new() })
            .collect(),
        strays: Vec::new(),
    };
    let mut next = 1u64;
    let mut outstanding = 0usize;
    let limit = Instant::now() + STORM_LIMIT;
    let mut last_deadline = Instant::now();
    loop {
        let allowed = progress.allowed.load(Ordering::Acquire).min(CALLS_PER_CALLER);
        while next <= allowed && outstanding < WINDOW {
            c.send_data(&Frame::Call(frame::Call {
                idempotent: is_idempotent(index, next),
                call_id: next,
                timeout_ms: timeout_ms(next),
                procedure: PROCEDURE.parse().unwrap(),
                payload: Bytes::from(call_payload(index, next)),
            }));
            let now = Instant::now();
            report.calls[next as usize - 1].sent = Some(now);
            last_deadline = last_deadline.max(now + Duration::from_millis(timeout_ms(next)));
            next += 1;
            outstanding += 1;
        }
        if next > CALLS_PER_CALLER && outstanding == 0 {
            break;
        }
        let now = Instant::now();
        let overdue = next > CALLS_PER_CALLER && now >= last_deadline + MARGIN;
        if overdue || now >= limit || c.conn.is_closed() {
            break;
        }
        c.step(now + Duration::from_millis(10));
        let first = take_answers(&mut c, next, &mut report);
        outstanding -= first;
        progress.add(first);
    }
    let quiet = Instant::now() + QUIET;
    while Instant::now() < quiet && !c.conn.is_closed() {
        c.step(quiet);
        progress.add(take_answers(&mut c, next, &mut report));
    }
    if let Some(closed) = c.closed() {
        report.strays.push(format!("caller {index} connection closed: {closed:?}"));
    }
    report
}

/// Records the answers received so far; returns how many were a call's first.
fn take_answers(c: &mut TestClient, next: u64, report: &mut CallerReport) -> usize {
    let mut first = 0;
    let now = Instant::now();
    for f in c.drain_pending() {
        let (id, answer) = match f {
            Frame::Reply(r) => (r.id, Answer::Reply(r.payload)),
            Frame::CallError(e) => (e.id, Answer::Error(e.code)),
            Frame::Ping(_) | Frame::Pong(_) => continue,
            other => {
                report.strays.push(format!("unexpected frame {other:?}"));
                continue;
            }
        };
        if id == 0 || id >= next {
            report.strays.push(format!("answer for call id {id}, never sent: {answer:?}"));
            continue;
        }
        let rec = &mut report.calls[id as usize - 1];
        if rec.answers.is_empty() {
            first += 1;
        }
        rec.answers.push((answer, now));
    }
    first
}

#[test]
fn provider_churn_during_a_call_storm_answers_every_call_exactly_once() {
    let started = Instant::now();
    let mut config = test_config(SHARDS);
    config.limits.idle_timeout_ms = IDLE_TIMEOUT_MS;
    config.limits.keepalive_ms = 500;
    let node = start_node(config);
    let addr = node.quic_addr;
    let callers: Arc<Vec<[u8; 32]>> =
        Arc::new((0..CALLERS).map(|i| peer_on(i % SHARDS, SHARDS)).collect());
    let mut serial = 0u16;
    let mut new_provider = |shard: usize| {
        serial += 1;
        Provider::start(addr, serial, shard, callers.clone())
    };
    let stable = new_provider(1);
    let mut churners: VecDeque<Provider> = VecDeque::from([new_provider(0), new_provider(1)]);
    for p in churners.iter().chain([&stable]) {
        p.expect(Status::Registered(Ok(())));
    }

    let progress = Arc::new(Progress {
        allowed: AtomicU64::new(PHASE),
        answered: Mutex::new(0),
        changed: Condvar::new(),
    });
    let caller_threads: Vec<JoinHandle<CallerReport>> = (0..CALLERS)
        .map(|i| {
            let (peer, progress) = (callers[i], progress.clone());
            thread::Builder::new()
                .name(format!("caller-{i}"))
                .spawn(move || run_caller(addr, i, peer, &progress))
                .unwrap()
        })
        .collect();

    // One churn event per phase boundary: once the phase's calls are answered, the oldest
    // churner stops answering; the next phase starts, so that it collects INVOKEs while the
    // storm goes on, and leaves holding them; meanwhile a new provider connects and REGISTERs.
    // The stable provider and the other churner stay registered throughout.
    let total = CALLERS * CALLS_PER_CALLER as usize;
    let mut providers: Vec<ProviderReport> = Vec::new();
    let mut events = Vec::new();
    for (i, &how) in LEAVES.iter().enumerate() {
        let phase_end = CALLERS * progress.allowed.load(Ordering::Acquire) as usize;
        let reached = progress.wait_for(phase_end, PROGRESS_WAIT);
        assert!(reached >= phase_end, "churn event {i}: {reached} of {phase_end} calls answered");
        let leaving = churners.pop_front().unwrap();
        leaving.cmd.send(Cmd::Leave(how)).unwrap();
        leaving.expect(Status::Holding);
        let asked = started.elapsed();
        let newcomer = new_provider(i % SHARDS);
        let next = if i + 1 == LEAVES.len() { CALLS_PER_CALLER } else { PHASE * (i as u64 + 2) };
        progress.allowed.store(next, Ordering::Release);
        newcomer.expect(Status::Registered(Ok(())));
        churners.push_back(newcomer);
        let report = leaving.thread.join().expect("provider thread");
        assert_eq!(report.serial, leaving.serial);
        events.push((report.serial, report.shard, how, asked, started.elapsed()));
        providers.push(report);
    }
    let callers_seen: Vec<CallerReport> =
        caller_threads.into_iter().map(|t| t.join().expect("caller thread")).collect();
    for p in churners.into_iter().chain([stable]) {
        p.cmd.send(Cmd::Stop).unwrap();
        providers.push(p.thread.join().expect("provider thread"));
    }

    // What the providers did: who REPLYed to each call, who held it when leaving, who saw it.
    let mut problems: Vec<String> = Vec::new();
    let mut served_by: HashMap<Key, Vec<u16>> = HashMap::new();
    let mut received_by: HashMap<Key, Vec<u16>> = HashMap::new();
    let shard_of: HashMap<u16, usize> = providers.iter().map(|p| (p.serial, p.shard)).collect();
    for p in &providers {
        problems.extend(p.problems.iter().map(|e| format!("provider {}: {e}", p.serial)));
        for &k in &p.served {
            served_by.entry(k).or_default().push(p.serial);
        }
        for &k in p.served.iter().chain(&p.held) {
            received_by.entry(k).or_default().push(p.serial);
        }
    }

    // Every call: exactly one answer, in time, and the right kind.
    let (mut replies, mut provider_gone) = (0u64, 0u64);
    let mut reached_shards: Vec<HashSet<usize>> = vec![HashSet::new(); CALLERS];
    for (c, report) in callers_seen.iter().enumerate() {
        problems.extend(report.strays.iter().map(|s| format!("caller {c}: {s}")));
        for (i, rec) in report.calls.iter().enumerate() {
            let key = (c, i as u64 + 1);
            let idempotent = is_idempotent(key.0, key.1);
            let Some(sent) = rec.sent else {
                problems.push(format!("{key:?} never sent"));
                continue;
            };
            let [(answer, at)] = &rec.answers[..] else {
                problems.push(format!("{key:?}: {} answers {:?}", rec.answers.len(), rec.answers));
                continue;
            };
            let due = Duration::from_millis(timeout_ms(key.1)) + MARGIN;
            if at.duration_since(sent) > due {
                problems.push(format!("{key:?} answered after {:?}", at.duration_since(sent)));
            }
            match answer {
                Answer::Reply(p) => {
                    replies += 1;
                    let from = (p.len() == PAYLOAD_LEN + 2)
                        .then(|| u16::from_be_bytes([p[0], p[1]]))
                        .filter(|_| parse_payload(&p[2..]) == Some(key));
                    match from {
                        Some(s) if served_by.get(&key).is_some_and(|v| v.contains(&s)) => {
                            reached_shards[c].insert(shard_of[&s]);
                        }
                        _ => problems.push(format!("{key:?}: REPLY {p:?} is not this call's")),
                    }
                }
                Answer::Error(code) if *code == ErrorCode::ProviderGone as u64 && !idempotent => {
                    provider_gone += 1;
                }
                Answer::Error(code) => problems.push(format!(
                    "{key:?} (idempotent: {idempotent}): CALL_ERROR {code:#x} ({:?}) sent at {:?}, \
                     after {:?}; received by providers {:?}, served by {:?}",
                    ErrorCode::from_u64(*code).map(|e| e.name()),
                    sent.duration_since(started),
                    at.duration_since(sent),
                    received_by.get(&key),
                    served_by.get(&key),
                )),
            }
            if !idempotent && received_by.get(&key).is_some_and(|v| v.len() > 1) {
                problems.push(format!(
                    "non-idempotent {key:?} ran on providers {:?}",
                    received_by[&key]
                ));
            }
        }
    }

    // The churn happened, on both shards, and left calls behind that had to be failed or
    // retried: a held non-idempotent call gets PROVIDER_GONE, a held idempotent one the REPLY
    // of another provider.
    let answer_of = |k: Key| callers_seen[k.0].calls[k.1 as usize - 1].answers.first();
    let serial_max = providers.iter().map(|p| p.serial).max().unwrap();
    let departed: Vec<&ProviderReport> = providers.iter().filter(|p| p.left.is_some()).collect();
    assert_eq!(departed.len(), LEAVES.len());
    let (mut held_idempotent, mut held_other) = (0u64, 0u64);
    for p in &departed {
        if p.held.is_empty() {
            problems.push(format!("provider {} ({:?}) left holding no INVOKE", p.serial, p.left));
        }
        for &k in &p.held {
            let answer = answer_of(k).map(|(a, _)| a);
            if is_idempotent(k.0, k.1) {
                held_idempotent += 1;
                let ok = matches!(answer, Some(Answer::Reply(r))
                    if r.len() >= 2 && u16::from_be_bytes([r[0], r[1]]) != p.serial);
                if !ok {
                    problems.push(format!(
                        "idempotent {k:?} held by departed provider {}: {answer:?}, not retried",
                        p.serial
                    ));
                }
            } else {
                held_other += 1;
                if answer != Some(&Answer::Error(ErrorCode::ProviderGone as u64)) {
                    problems.push(format!(
                        "non-idempotent {k:?} held by departed provider {}: {answer:?}",
                        p.serial
                    ));
                }
            }
        }
    }
    // Every provider but the last to register was there for a whole phase at least.
    for p in providers.iter().filter(|p| p.serial < serial_max) {
        if p.served.is_empty() {
            problems.push(format!("provider {} (shard {}) served no call", p.serial, p.shard));
        }
    }
    for shard in 0..SHARDS {
        if !departed.iter().any(|p| p.shard == shard) {
            problems.push(format!("no provider left from shard {shard}"));
        }
    }
    for (c, shards) in reached_shards.iter().enumerate() {
        if shards.len() != SHARDS {
            problems.push(format!("caller {c} only got replies from shards {shards:?}"));
        }
    }
    if held_idempotent == 0 || held_other == 0 {
        problems.push(format!("held: {held_idempotent} idempotent, {held_other} not"));
    }

    // The node's counters agree: one answer per call, nothing late, retries happened.
    let m = |name: &str| metric(node.http_addr, name);
    let counters = [
        ("fovea_rpc_calls_total", m("fovea_rpc_calls_total"), total as u64),
        ("fovea_rpc_replies_total", m("fovea_rpc_replies_total"), replies),
        ("fovea_rpc_errors_total", m("fovea_rpc_errors_total"), provider_gone),
        ("fovea_rpc_deadline_exceeded_total", m("fovea_rpc_deadline_exceeded_total"), 0),
        ("fovea_rpc_late_replies_total", m("fovea_rpc_late_replies_total"), 0),
        ("fovea_rpc_calls_in_flight", m("fovea_rpc_calls_in_flight"), 0),
    ];
    for (name, seen, expected) in counters {
        if seen != expected {
            problems.push(format!("{name} = {seen}, expected {expected}"));
        }
    }
    let retries = m("fovea_rpc_retries_total");
    if retries < held_idempotent {
        problems.push(format!("fovea_rpc_retries_total = {retries} < {held_idempotent} held"));
    }
    if provider_gone < held_other {
        problems.push(format!("{provider_gone} PROVIDER_GONE < {held_other} held"));
    }

    let served: Vec<(u16, usize, Option<Leave>, usize, usize)> = providers
        .iter()
        .map(|p| (p.serial, p.shard, p.left, p.served.len(), p.held.len()))
        .collect();
    eprintln!(
        "rpc churn: {total} calls, {replies} replies, {provider_gone} PROVIDER_GONE; held by \
         departed providers: {held_idempotent} idempotent, {held_other} not; {retries} retries; \
         providers (serial, shard, left, served, held): {served:?}; events {events:?}; {:?}",
        started.elapsed()
    );
    assert!(
        problems.is_empty(),
        "{} problems, first ones:\n{}",
        problems.len(),
        problems.iter().take(25).cloned().collect::<Vec<_>>().join("\n")
    );
    node.shutdown();
}
