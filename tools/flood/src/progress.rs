//! The live progress line on stderr, once per second: what was offered and what came back in
//! the last second, latency percentiles of the measurement so far, errors.

use std::io::Write;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::worker::Shared;

/// Formats nanoseconds as µs, or ms above 10 ms.
pub fn fmt_ns(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.0}µs", ns as f64 / 1e3)
    }
}

/// Progress printer (silent when disabled).
pub struct Progress {
    enabled: bool,
    labels: (&'static str, &'static str),
    connections: usize,
    last: Option<(Duration, u64, u64)>,
}

impl Progress {
    /// A printer; `labels` name what is sent and received ("publishes", "deliveries").
    pub fn new(enabled: bool, labels: (&'static str, &'static str), connections: usize) -> Self {
        Progress { enabled, labels, connections, last: None }
    }

    fn print(&self, line: String) {
        if self.enabled {
            let mut e = std::io::stderr().lock();
            let _ = writeln!(e, "{line}");
        }
    }

    /// During setup.
    pub fn connecting(&self, elapsed: Duration, connected: u64) {
        self.print(format!(
            "[{:5.1}s] connecting  {connected}/{} sessions",
            elapsed.as_secs_f64(),
            self.connections
        ));
    }

    /// When a storm has settled.
    pub fn all_connected(&self, elapsed: Duration, connected: u64, hold: Duration) {
        let holding = if hold.is_zero() {
            String::new()
        } else {
            format!("; holding them for {:.0} s", hold.as_secs_f64())
        };
        // Always printed: a memory measurement waits for this line.
        eprintln!(
            "all connections settled after {:.2} s: {connected} of {} connected{holding}",
            elapsed.as_secs_f64(),
            self.connections
        );
    }

    /// One line: rates over the last second, percentiles so far.
    pub fn line(
        &mut self,
        elapsed: Duration,
        phase: &str,
        shared: &Shared,
        latency: &Histogram<u64>,
    ) {
        let sent = shared.sum(|c| &c.sent);
        let received = shared.sum(|c| &c.received);
        let errors = shared.sum(|c| &c.errors);
        let (t0, s0, r0) = self.last.unwrap_or((Duration::ZERO, 0, 0));
        let dt = (elapsed.saturating_sub(t0)).as_secs_f64().max(1e-3);
        self.last = Some((elapsed, sent, received));
        let pct = if latency.is_empty() {
            "p50 -  p99 -".to_string()
        } else {
            format!(
                "p50 {}  p99 {}",
                fmt_ns(latency.value_at_quantile(0.5)),
                fmt_ns(latency.value_at_quantile(0.99))
            )
        };
        self.print(format!(
            "[{:5.1}s] {phase:8} {} {:.0}/s  {} {:.0}/s  {pct}  errors {errors}",
            elapsed.as_secs_f64(),
            self.labels.0,
            sent.saturating_sub(s0) as f64 / dt,
            self.labels.1,
            received.saturating_sub(r0) as f64 / dt,
        ));
    }
}
