//! The main thread's side of a run: start the workers, wait (bounded) until every connection
//! has its session, give the start signal, print a progress line each second, read CPU time at
//! the edges of the measured window, and add up the threads' tallies.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::clock::{self, Epoch};
use crate::params::Common;
use crate::progress::Progress;
use crate::stats::{latency_histogram, Tally};
use crate::worker::{self, Msg, Scenario, Shared, Target};

/// Why a run could not be carried out (exit code 2): the node is unreachable, refuses, or a
/// connection failed before the measurement started.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

/// What the measured window is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// Warm-up then `duration` from the start signal; then the drain.
    Timed,
    /// From the start signal until every connection has settled (connected or failed); then
    /// connections are held open for `hold`. `storm_s` bounds the storm itself.
    UntilConnected {
        /// Keep-open time once all are connected.
        hold: Duration,
        /// Longest storm before held connections are released anyway.
        storm: Duration,
    },
}

/// How a run is carried out.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Common parameters.
    pub common: Common,
    /// Publishers (fan-out), for the shared published counts.
    pub publishers: usize,
    /// Connections over all threads.
    pub connections: usize,
    /// Window kind.
    pub measure: Measure,
    /// Progress line labels: what is sent and what is received.
    pub labels: (&'static str, &'static str),
    /// Force monoio's legacy driver (tests of the fallback).
    pub force_legacy: bool,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// The threads' tallies, added up.
    pub tally: Tally,
    /// The node's resident memory at the end of `--hold-after` (KiB), when it was read.
    pub node_rss_after_hold_kib: Option<u64>,
    /// From start to every connection ready (0 for the storm, which is measured instead).
    pub connect_s: f64,
    /// Length of the measured window.
    pub window_s: f64,
    /// Storm: from the start signal until every connection settled.
    pub all_connected_s: Option<f64>,
    /// From the end of sending until every thread finished.
    pub drain_s: f64,
    /// The node's CPU time over the window (with `--node-pid`).
    pub node_cpu: Option<Duration>,
    /// This process's CPU time over the window.
    pub flood_cpu: Duration,
    /// Of that, time spent spinning until scheduled sends were due (waiting, not working).
    pub flood_spin: Duration,
    /// Time this process's threads waited for a CPU over the window (other load on the host).
    pub flood_runqueue_wait: Option<Duration>,
    /// Time the node's threads waited for a CPU over the window (with `--node-pid`).
    pub node_runqueue_wait: Option<Duration>,
    /// CPU time the rest of the host used over the window: busy time of all CPUs minus this
    /// process and the node (with `--node-pid`; without it the node is part of the rest).
    pub host_other_cpu: Option<Duration>,
    /// Threads that ran on io_uring (the others on the legacy driver).
    pub io_uring_threads: usize,
    /// Threads that failed during the run (their tallies are missing).
    pub thread_failures: Vec<String>,
}

/// Delay between the start signal and the first send: every thread sees the signal (they poll
/// it each millisecond while waiting) before the schedules begin.
const START_DELAY: Duration = Duration::from_millis(20);
/// How often the end of a connection storm is checked.
const STORM_POLL: Duration = Duration::from_millis(5);
/// Beyond the drain timeout, how long threads get to hand back their tallies.
const FINISH_GRACE: Duration = Duration::from_secs(10);

struct CpuSample {
    node: Option<Duration>,
    own: Duration,
    spun: Duration,
    node_wait: Option<Duration>,
    own_wait: Option<Duration>,
    host: Option<Duration>,
}

fn sample(pid: Option<u32>) -> CpuSample {
    CpuSample {
        node: pid.and_then(clock::pid_cpu),
        own: clock::process_cpu(),
        spun: clock::spun(),
        node_wait: pid.and_then(clock::pid_runqueue_wait),
        own_wait: clock::pid_runqueue_wait(std::process::id()),
        host: clock::host_busy(),
    }
}

fn delta(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    a.zip(b).map(|(x, y)| y.saturating_sub(x))
}

/// Runs one scenario, a share per thread.
pub fn execute<S: Scenario + Send + 'static>(
    spec: &Spec,
    shares: Vec<S>,
) -> Result<Outcome, ConnectError> {
    let common = &spec.common;
    let threads = shares.len();
    let epoch = Epoch::now();
    let shared = Arc::new(Shared::new(epoch, threads, spec.publishers));
    let (tx, rx) = mpsc::channel();
    let target = Target {
        nodes: common.nodes.clone(),
        reconnect: common.reconnect(),
        tls: common.tls.clone(),
        realm: common.realm.clone(),
        force_legacy: spec.force_legacy,
        hold_after: Duration::from_secs_f64(common.hold_after_s),
        node_pid: common.node_pid,
        ack_delay: Duration::from_micros(common.ack_delay_us),
    };
    let mut handles = Vec::with_capacity(threads);
    for (i, share) in shares.into_iter().enumerate() {
        let h = worker::spawn(i, shared.clone(), tx.clone(), target.clone(), share)
            .map_err(|e| ConnectError(format!("cannot start a worker thread: {e}")))?;
        handles.push(h);
    }
    drop(tx);
    let stop = |handles: Vec<std::thread::JoinHandle<()>>| {
        shared.abort.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
    };
    let mut progress = Progress::new(common.progress, spec.labels, spec.connections);
    let mut cumulative: Histogram<u64> = latency_histogram();

    // Setup: every connection gets its session (and subscriptions), within the timeout.
    let t0 = Instant::now();
    let connect_deadline = t0 + Duration::from_secs_f64(common.connect_timeout_s);
    let mut ready = 0;
    let mut next_line = t0 + Duration::from_secs(1);
    while ready < threads {
        let now = Instant::now();
        if now >= connect_deadline {
            let connected = shared.sum(|c| &c.connected);
            stop(handles);
            return Err(ConnectError(format!(
                "timed out after {:.1} s: {connected} of {} connections got a session from {} \
                 (no QUIC answer? check that a Fovea node listens on that UDP address)",
                common.connect_timeout_s, spec.connections, common.node
            )));
        }
        match rx.recv_timeout(connect_deadline.min(next_line).saturating_duration_since(now)) {
            Ok(Msg::Ready) => ready += 1,
            Ok(Msg::Done(_, Err(e))) => {
                stop(handles);
                return Err(ConnectError(e));
            }
            Ok(Msg::Done(..)) | Ok(Msg::Interval(_)) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_line {
            progress.connecting(t0.elapsed(), shared.sum(|c| &c.connected));
            next_line += Duration::from_secs(1);
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();

    // Run.
    let start = Instant::now() + START_DELAY;
    shared.start_ns.store(epoch.ns(start), Ordering::Release);
    let (window_start, mut window_end, hard_deadline) = match spec.measure {
        Measure::Timed => {
            let end = start + common.warmup() + common.duration();
            let drain = Duration::from_secs_f64(common.drain_timeout_s);
            let hold = Duration::from_secs_f64(common.hold_after_s);
            (start + common.warmup(), Some(end), end + drain + hold + FINISH_GRACE)
        }
        Measure::UntilConnected { hold, storm } => {
            let after = Duration::from_secs_f64(common.hold_after_s);
            (start, None, start + storm + hold + after + FINISH_GRACE)
        }
    };
    let mut at_start: Option<CpuSample> = None;
    let mut at_end: Option<CpuSample> = None;
    let mut all_connected_s = None;
    let mut window_s = 0.0;
    let mut tally = Tally::default();
    let mut thread_failures = Vec::new();
    let mut done = 0;
    let mut next_line = start + Duration::from_secs(1);
    let mut send_end: Option<Instant> = None;
    while done < threads {
        let now = Instant::now();
        let mut wake = next_line.min(hard_deadline);
        if at_start.is_none() {
            wake = wake.min(window_start);
        }
        if let (None, Some(end)) = (&at_end, window_end) {
            wake = wake.min(end);
        }
        if matches!(spec.measure, Measure::UntilConnected { .. }) && all_connected_s.is_none() {
            // The storm ends when the counters say so: look often.
            wake = wake.min(now + STORM_POLL);
        }
        match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(Msg::Interval(h)) => {
                let _ = cumulative.add(&h);
            }
            Ok(Msg::Done(_, result)) => {
                done += 1;
                match result {
                    Ok(t) => tally.merge(&t),
                    Err(e) if e == "aborted" => {}
                    Err(e) => thread_failures.push(e),
                }
            }
            Ok(Msg::Ready) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if at_start.is_none() && now >= window_start {
            at_start = Some(sample(common.node_pid));
        }
        if let Measure::UntilConnected { hold, storm } = spec.measure {
            let settled = shared.sum(|c| &c.connected) + shared.sum(|c| &c.errors);
            let storm_over = now >= start + storm;
            if all_connected_s.is_none() && (settled >= spec.connections as u64 || storm_over) {
                let s = now.saturating_duration_since(start);
                all_connected_s = Some(s.as_secs_f64());
                window_end = Some(now);
                progress.all_connected(s, shared.sum(|c| &c.connected), hold);
                let release = if storm_over { now } else { now + hold };
                shared.release_ns.store(epoch.ns(release).max(1), Ordering::Release);
            }
        }
        if let (None, Some(end)) = (&at_end, window_end) {
            if now >= end {
                at_end = Some(sample(common.node_pid));
                window_s = end.saturating_duration_since(window_start).as_secs_f64();
                send_end = Some(end);
            }
        }
        if now >= next_line {
            let phase = match (spec.measure, now < window_start, window_end) {
                (Measure::Timed, true, _) => "warm-up",
                (_, _, Some(end)) if now >= end => "drain",
                (Measure::UntilConnected { .. }, ..) => "storm",
                _ => "measure",
            };
            progress.line(now.saturating_duration_since(start), phase, &shared, &cumulative);
            next_line += Duration::from_secs(1);
        }
        if now >= hard_deadline {
            thread_failures.push("threads did not finish in time; the run was aborted".into());
            break;
        }
    }
    let drain_s = send_end.map_or(0.0, |e| e.elapsed().as_secs_f64());
    stop(handles);
    let (node_cpu, flood_cpu, flood_spin, node_runqueue_wait, flood_runqueue_wait, host_busy) =
        match (at_start, at_end) {
            (Some(a), Some(b)) => (
                delta(a.node, b.node),
                b.own.saturating_sub(a.own),
                b.spun.saturating_sub(a.spun),
                delta(a.node_wait, b.node_wait),
                delta(a.own_wait, b.own_wait),
                delta(a.host, b.host),
            ),
            _ => (None, Duration::ZERO, Duration::ZERO, None, None, None),
        };
    let host_other_cpu = host_busy
        .map(|h| h.saturating_sub(flood_cpu).saturating_sub(node_cpu.unwrap_or(Duration::ZERO)));
    Ok(Outcome {
        tally,
        connect_s,
        window_s,
        all_connected_s,
        drain_s,
        node_cpu,
        flood_cpu,
        flood_spin,
        flood_runqueue_wait,
        node_runqueue_wait,
        host_other_cpu,
        io_uring_threads: shared.io_uring_threads.load(Ordering::Relaxed),
        node_rss_after_hold_kib: match shared.node_rss_after_hold_kib.load(Ordering::Relaxed) {
            0 => None,
            kib => Some(kib),
        },
        thread_failures,
    })
}
