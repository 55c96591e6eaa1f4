//! A worker thread: one monoio runtime (io_uring, or the legacy epoll driver where io_uring is
//! not available), one `Endpoint`, one scenario share, and the loop that drives them.
//!
//! A loop turn: read the socket (bounded), hand events to the scenario, fire quiche timers, let
//! the scenario do its time-driven work (sends that are due), produce and send every pending
//! packet, then sleep until the socket is readable or the next deadline. Nothing spins.
//!
//! Threads talk to the main thread through `Shared` (atomics: abort, start time, counters for
//! the progress line) and a channel (ready, per-second latency histograms, the final tally).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fovea_codec::Realm;
use hdrhistogram::Histogram;

use crate::clock::{self, Epoch};
use crate::conn::Tls;
use crate::endpoint::{Endpoint, Event};
use crate::stats::Tally;

/// What a thread tells the main thread.
#[derive(Debug)]
pub enum Msg {
    /// Every connection of the thread has its session (and subscriptions): ready to start.
    Ready,
    /// Latencies recorded since the last interval message (for the progress line).
    Interval(Histogram<u64>),
    /// The thread ended: its tally, or why it failed.
    Done(usize, Result<Box<Tally>, String>),
}

/// Per-thread counters the progress line reads (written by one thread only).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counters {
    /// Messages sent (publishes, pings).
    pub sent: AtomicU64,
    /// Messages received (deliveries, pongs).
    pub received: AtomicU64,
    /// Errors so far.
    pub errors: AtomicU64,
    /// Connections with a session.
    pub connected: AtomicU64,
}

/// State shared by the main thread and the workers.
#[derive(Debug)]
pub struct Shared {
    /// The run's time base.
    pub epoch: Epoch,
    /// Set to stop every thread at once (a failure, or a timeout in the main thread).
    pub abort: AtomicBool,
    /// When sending starts, ns since the epoch (0 until every thread is ready).
    pub start_ns: AtomicU64,
    /// `connect --hold`: when held connections are let go, ns since the epoch (0 until then).
    pub release_ns: AtomicU64,
    /// One per thread.
    pub counters: Vec<Counters>,
    /// Messages each publisher sent in total, stored when it has finished.
    pub published: Vec<AtomicU64>,
    /// Publishers that have finished.
    pub publishers_done: AtomicUsize,
    /// Threads that run on io_uring (the rest on the legacy driver).
    pub io_uring_threads: AtomicUsize,
    /// The node's resident memory (KiB) read at the end of `--hold-after` by thread 0, with
    /// every connection still open and idle (0: not read).
    pub node_rss_after_hold_kib: AtomicU64,
    /// Threads whose own traffic is complete in the drain (`rpc`: every call answered), so
    /// their peers on other threads (providers) may leave.
    pub drained_threads: AtomicUsize,
}

impl Shared {
    /// State for `threads` threads and `publishers` publishers.
    pub fn new(epoch: Epoch, threads: usize, publishers: usize) -> Shared {
        Shared {
            epoch,
            abort: AtomicBool::new(false),
            start_ns: AtomicU64::new(0),
            release_ns: AtomicU64::new(0),
            counters: (0..threads).map(|_| Counters::default()).collect(),
            published: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            publishers_done: AtomicUsize::new(0),
            io_uring_threads: AtomicUsize::new(0),
            node_rss_after_hold_kib: AtomicU64::new(0),
            drained_threads: AtomicUsize::new(0),
        }
    }

    /// Sum of one counter over threads.
    pub fn sum(&self, f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
    }
}

/// A thread's handle on the shared state.
pub struct Ctx {
    /// Thread index.
    pub index: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    tx: Sender<Msg>,
    ready_sent: bool,
    drained_sent: bool,
    next_interval: Option<Instant>,
}

/// How often latencies go to the main thread.
const INTERVAL: Duration = Duration::from_secs(1);

impl Ctx {
    /// Tells the main thread this thread is ready (once).
    pub fn ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            let _ = self.tx.send(Msg::Ready);
        }
    }

    /// Says this thread's own traffic is complete (once).
    pub fn drained(&mut self) {
        if !self.drained_sent {
            self.drained_sent = true;
            self.shared.drained_threads.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// True when every thread has said `drained`.
    pub fn all_drained(&self) -> bool {
        self.shared.drained_threads.load(Ordering::Acquire) >= self.shared.counters.len()
    }

    /// When sending starts, once the main thread has said so.
    pub fn start_ns(&self) -> Option<u64> {
        match self.shared.start_ns.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// True when the run is being aborted.
    pub fn aborted(&self) -> bool {
        self.shared.abort.load(Ordering::Relaxed)
    }

    /// Publishes the tally's running counts for the progress line.
    pub fn publish_counts(&self, t: &Tally) {
        let c = &self.shared.counters[self.index];
        c.sent.store(t.sent, Ordering::Relaxed);
        c.received.store(t.received, Ordering::Relaxed);
        c.errors.store(t.errors, Ordering::Relaxed);
        c.connected.store(t.connected, Ordering::Relaxed);
    }

    /// Once per second: adds the latencies recorded since the last call (`interval`) to
    /// `total`, sends them to the main thread for the progress line and empties `interval`.
    /// Returns when it is due next. Recording into one small histogram per delivery and merging
    /// once a second costs less than recording twice.
    pub fn interval(
        &mut self,
        now: Instant,
        interval: &mut Histogram<u64>,
        total: &mut Histogram<u64>,
    ) -> Instant {
        let due = *self.next_interval.get_or_insert(now + INTERVAL);
        if now < due {
            return due;
        }
        self.last_interval(interval, total);
        let next = now + INTERVAL;
        self.next_interval = Some(next);
        next
    }

    /// Hands over what is left in `interval` (see `interval`).
    pub fn last_interval(&mut self, interval: &mut Histogram<u64>, total: &mut Histogram<u64>) {
        if !interval.is_empty() {
            let _ = total.add(&*interval);
            let _ = self.tx.send(Msg::Interval(interval.clone()));
            interval.reset();
        }
    }
}

/// What the scenario wants after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Call again at this time at the latest (or when something arrives).
    Wait(Option<Instant>),
    /// This thread's share is complete.
    Done,
}

/// A scenario's share of the work on one thread. Errors are fatal for the run.
pub trait Scenario {
    /// Opens connections (or prepares to).
    fn start(&mut self, ep: &mut Endpoint, ctx: &mut Ctx, now: Instant) -> Result<(), String>;
    /// Handles one event.
    fn on_event(&mut self, ep: &mut Endpoint, ctx: &mut Ctx, ev: Event) -> Result<(), String>;
    /// Does the work that is due at `now`.
    fn tick(&mut self, ep: &mut Endpoint, ctx: &mut Ctx, now: Instant) -> Result<Step, String>;
    /// Closes what is left and returns the counts.
    fn finish(&mut self, ep: &mut Endpoint, ctx: &mut Ctx) -> Tally;
}

/// Where and how a thread connects.
#[derive(Debug, Clone)]
pub struct Target {
    /// The nodes, in the order connections try them (the first for every new connection).
    pub nodes: Vec<SocketAddr>,
    /// How failed connections are opened again.
    pub reconnect: crate::failover::Reconnect,
    /// Certificate checking.
    pub tls: Tls,
    /// HELLO realm.
    pub realm: Realm,
    /// Use the legacy driver even where io_uring works (tests of the fallback).
    pub force_legacy: bool,
    /// Idle time with every connection open once the scenario is done.
    pub hold_after: Duration,
    /// The node's pid, whose memory is read at the end of that hold.
    pub node_pid: Option<u32>,
    /// Longest wait for data to carry an ACK.
    pub ack_delay: Duration,
}

/// Starts a worker thread running `scenario`.
pub fn spawn<S: Scenario + Send + 'static>(
    index: usize,
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    target: Target,
    scenario: S,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("flood-{index}")).spawn(move || {
        clock::tighten_timer_slack();
        let ctx = Ctx {
            index,
            shared,
            tx: tx.clone(),
            ready_sent: false,
            drained_sent: false,
            next_interval: None,
        };
        let result = run_on_runtime(ctx, target, scenario).map(Box::new);
        let _ = tx.send(Msg::Done(index, result));
    })
}

fn run_on_runtime<S: Scenario>(ctx: Ctx, target: Target, scenario: S) -> Result<Tally, String> {
    if !target.force_legacy {
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(256)
            .enable_timer()
            .build()
        {
            ctx.shared.io_uring_threads.fetch_add(1, Ordering::Relaxed);
            return rt.block_on(drive(ctx, target, scenario));
        }
    }
    // io_uring refused (old kernel, seccomp): the legacy driver needs only epoll.
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(drive(ctx, target, scenario))
}

/// Longest wait for the connections' closes to complete at the end of a run.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Sends the CONNECTION_CLOSEs the scenario asked for and keeps them going (retransmitted on
/// quiche's timers) until every connection has closed, at most `CLOSE_GRACE`. One flush is not
/// enough under load: a close the full socket refused never leaves, and the node then keeps
/// the peer (a provider's registrations, a subscriber's subscriptions) until its idle timeout
/// of 30 s, which a following run against the same node measured as stuck calls (each call
/// routed to the vanished provider waited for PROVIDER_GONE at that timeout).
async fn close_all(ep: &mut Endpoint) {
    let deadline = Instant::now() + CLOSE_GRACE;
    loop {
        let now = Instant::now();
        ep.on_timers(now);
        let _ = ep.flush(now);
        if ep.live() == 0 || now >= deadline {
            break;
        }
        let _ = ep.recv(None);
        let events = ep.take_events();
        ep.restore_events(events);
        let next = ep.next_timer().map_or(deadline, |t| t.min(deadline));
        ep.wait(Some(next), false).await;
    }
}

/// Keeps every connection open and idle for `hold` (`--hold-after`): quiche's timers run and
/// the node's keep-alive PINGs are answered, anything else that arrives is dropped.
async fn hold_idle(ep: &mut Endpoint, ctx: &Ctx, hold: Duration) {
    let until = Instant::now() + hold;
    loop {
        let now = Instant::now();
        if now >= until || ctx.aborted() {
            return;
        }
        let _ = ep.recv(None);
        let mut events = ep.take_events();
        events.clear();
        ep.restore_events(events);
        ep.on_timers(now);
        let _ = ep.flush(now);
        let next = ep.next_timer().map_or(until, |t| t.min(until));
        ep.wait(Some(next), false).await;
    }
}

/// Turns a socket error into the message the user sees.
fn socket_error(e: std::io::Error, node: SocketAddr) -> String {
    if e.raw_os_error() == Some(libc::ECONNREFUSED) {
        format!("connection refused by {node}: nothing listens on that UDP port (is the node running, is --node right?)")
    } else {
        format!("socket error talking to {node}: {e}")
    }
}

async fn drive<S: Scenario>(mut ctx: Ctx, target: Target, mut s: S) -> Result<Tally, String> {
    let node = target.nodes[0];
    let mut ep =
        Endpoint::new(&target.nodes, target.reconnect, &target.tls, target.realm, ctx.shared.epoch)
            .map_err(|e| socket_error(e, node))?;
    ep.ack_delay = target.ack_delay;
    s.start(&mut ep, &mut ctx, Instant::now())?;
    // The scenario's next deadline: reading stops between batches once it has passed, so a
    // burst of arrivals does not make a due send late by more than a batch.
    let mut due: Option<Instant> = None;
    loop {
        if ctx.aborted() {
            return Err("aborted".into());
        }
        let more = ep.recv(due).map_err(|e| socket_error(e, node))?;
        let mut events = ep.take_events();
        for ev in events.drain(..) {
            s.on_event(&mut ep, &mut ctx, ev)?;
        }
        ep.restore_events(events);
        let now = Instant::now();
        ep.on_timers(now);
        let step = s.tick(&mut ep, &mut ctx, now)?;
        ep.flush(now).map_err(|e| socket_error(e, node))?;
        let Step::Wait(next) = step else { break };
        due = next;
        if more || ep.has_events() {
            continue;
        }
        let timer = ep.next_timer();
        let precise = next.is_some() && timer.is_none_or(|t| next.is_some_and(|n| n <= t));
        let next = [next, timer].into_iter().flatten().min();
        ep.wait(next, precise).await;
    }
    if !target.hold_after.is_zero() {
        hold_idle(&mut ep, &ctx, target.hold_after).await;
        if let (0, Some(pid)) = (ctx.index, target.node_pid) {
            let kib = clock::rss_kib(pid).unwrap_or(0);
            ctx.shared.node_rss_after_hold_kib.store(kib, Ordering::Relaxed);
        }
    }
    let mut tally = s.finish(&mut ep, &mut ctx);
    close_all(&mut ep).await;
    tally.stray_datagrams += ep.stray;
    for local in ep.local_addrs() {
        tally.socket_drops += crate::udp::kernel_drops(local).unwrap_or(0);
    }
    Ok(tally)
}
