//! Exact delivery accounting per (subscriber, publisher) pair, latency histograms, and the
//! counters a thread hands back at the end of a run.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

/// Longest latency a histogram holds (longer values are clamped to it): 60 s.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// Records `ns` into `h`, clamping out-of-range values instead of dropping them.
#[inline]
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// What one subscriber has seen of one publisher's sequence.
///
/// Exact without storing every sequence number: the protocol delivers one publisher's messages
/// in order, so the state is a frontier (`next`) plus the rare gaps below it, as ranges.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// One past the highest sequence number received.
    next: u64,
    /// Sequence numbers below `next` not received yet, as half-open ranges in ascending order.
    gaps: Vec<(u64, u64)>,
    /// Messages received once.
    pub received: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages received after a later one (filled a gap).
    pub reordered: u64,
}

impl SeqTracker {
    /// Accounts for sequence number `seq`.
    #[inline]
    pub fn on_seq(&mut self, seq: u64) {
        if seq == self.next {
            self.next += 1;
            self.received += 1;
        } else if seq > self.next {
            self.gaps.push((self.next, seq));
            self.next = seq + 1;
            self.received += 1;
        } else {
            self.fill(seq);
        }
    }

    fn fill(&mut self, seq: u64) {
        let Some(i) = self.gaps.iter().position(|&(a, b)| a <= seq && seq < b) else {
            self.duplicates += 1;
            return;
        };
        self.received += 1;
        self.reordered += 1;
        let (a, b) = self.gaps[i];
        match (seq == a, seq + 1 == b) {
            (true, true) => {
                self.gaps.remove(i);
            }
            (true, false) => self.gaps[i].0 = seq + 1,
            (false, true) => self.gaps[i].1 = seq,
            (false, false) => {
                self.gaps[i].1 = seq;
                self.gaps.insert(i + 1, (seq + 1, b));
            }
        }
    }

    /// Messages of the first `published` not received.
    pub fn lost(&self, published: u64) -> u64 {
        let holes: u64 = self.gaps.iter().map(|&(a, b)| b - a).sum();
        holes + published.saturating_sub(self.next)
    }

    /// True once every one of the first `published` messages has arrived.
    #[inline]
    pub fn complete(&self, published: u64) -> bool {
        self.next >= published && self.gaps.is_empty()
    }
}

/// Everything a worker thread counted; threads' tallies add up into the run's.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of measured messages (ns): intended send → receive.
    pub latency: Histogram<u64>,
    /// How late senders actually sent, behind the schedule (ns).
    pub send_lag: Histogram<u64>,
    /// Handshake time (ns): connection start → WELCOME.
    pub connect: Histogram<u64>,
    /// Messages (publishes or pings) sent, over the whole run.
    pub sent: u64,
    /// Of `sent`, those scheduled inside the measured window.
    pub sent_measured: u64,
    /// Messages the schedule called for that were skipped because the sender's backlog was full.
    pub skipped: u64,
    /// Deliveries (or pongs) received, over the whole run.
    pub received: u64,
    /// Of `received`, those received inside the measured window.
    pub received_measured: u64,
    /// Deliveries expected: every publish of every publisher each subscriber's patterns match.
    pub expected: u64,
    /// Expected but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicates: u64,
    /// Received after a later message of the same sender.
    pub reordered: u64,
    /// Received from a sender the subscriber's patterns do not match, or unparseable.
    pub unexpected: u64,
    /// Connections that failed or closed unexpectedly, and protocol errors.
    pub errors: u64,
    /// Connections that completed the session handshake.
    pub connected: u64,
    /// Connections still open when the thread finished (before it closed them).
    pub held: u64,
    /// Threads whose drain ended at the deadline with messages still missing.
    pub drain_timeouts: u64,
    /// Datagrams received for no known connection.
    pub stray_datagrams: u64,
    /// Datagrams the kernel dropped because our socket's receive buffer was full.
    pub socket_drops: u64,
    /// A few error descriptions, for the report.
    pub error_samples: Vec<String>,
    /// RPC: CALL_ERRORs the callers received, by error code.
    pub call_errors: BTreeMap<u64, u64>,
    /// RPC: INVOKEs each provider received over the whole run, by provider index.
    pub invocations: Vec<u64>,
    /// Churn: SUBSCRIBEs sent after the setup.
    pub subscribes: u64,
    /// Churn: UNSUBSCRIBEs sent.
    pub unsubscribes: u64,
    /// Churn: connections closed and opened again by the schedule.
    pub reconnects: u64,
    /// Churn: subscriptions whose active window was checked (acknowledged with OK).
    pub windows: u64,
    /// Churn: messages owed to an active subscription that never came.
    pub window_missing: u64,
    /// Churn: operations due while every subscriber was waiting for an OK (not done).
    pub churn_skipped: u64,
}

/// Error descriptions kept per thread.
const ERROR_SAMPLES_MAX: usize = 5;

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latency: latency_histogram(),
            send_lag: latency_histogram(),
            connect: latency_histogram(),
            sent: 0,
            sent_measured: 0,
            skipped: 0,
            received: 0,
            received_measured: 0,
            expected: 0,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            unexpected: 0,
            errors: 0,
            connected: 0,
            held: 0,
            drain_timeouts: 0,
            stray_datagrams: 0,
            socket_drops: 0,
            error_samples: Vec::new(),
            call_errors: BTreeMap::new(),
            invocations: Vec::new(),
            subscribes: 0,
            unsubscribes: 0,
            reconnects: 0,
            windows: 0,
            window_missing: 0,
            churn_skipped: 0,
        }
    }
}

impl Tally {
    /// Counts an error and keeps its description if there is room.
    pub fn error(&mut self, what: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES_MAX && !self.error_samples.contains(&what) {
            self.error_samples.push(what);
        }
    }

    /// Adds another thread's tally.
    pub fn merge(&mut self, o: &Tally) {
        // The histograms share bounds, so adding cannot fail.
        let _ = self.latency.add(&o.latency);
        let _ = self.send_lag.add(&o.send_lag);
        let _ = self.connect.add(&o.connect);
        self.sent += o.sent;
        self.sent_measured += o.sent_measured;
        self.skipped += o.skipped;
        self.received += o.received;
        self.received_measured += o.received_measured;
        self.expected += o.expected;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.unexpected += o.unexpected;
        self.errors += o.errors;
        self.connected += o.connected;
        self.held += o.held;
        self.drain_timeouts += o.drain_timeouts;
        self.stray_datagrams += o.stray_datagrams;
        self.socket_drops += o.socket_drops;
        for (code, n) in &o.call_errors {
            *self.call_errors.entry(*code).or_default() += n;
        }
        if self.invocations.len() < o.invocations.len() {
            self.invocations.resize(o.invocations.len(), 0);
        }
        for (mine, theirs) in self.invocations.iter_mut().zip(&o.invocations) {
            *mine += theirs;
        }
        self.subscribes += o.subscribes;
        self.unsubscribes += o.unsubscribes;
        self.reconnects += o.reconnects;
        self.windows += o.windows;
        self.window_missing += o.window_missing;
        self.churn_skipped += o.churn_skipped;
        for e in &o.error_samples {
            if self.error_samples.len() < 2 * ERROR_SAMPLES_MAX && !self.error_samples.contains(e) {
                self.error_samples.push(e.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_complete() {
        let mut t = SeqTracker::default();
        for s in 0..100 {
            t.on_seq(s);
        }
        assert!(t.complete(100));
        assert_eq!((t.received, t.lost(100), t.duplicates, t.reordered), (100, 0, 0, 0));
        assert_eq!(t.lost(105), 5, "the unreceived tail is lost");
    }

    #[test]
    fn gaps_duplicates_and_late_arrivals_are_exact() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 5, 6, 3, 3, 1, 9, 2] {
            t.on_seq(s);
        }
        // Received once: 0 1 5 6 3 9 2; duplicates: 3 and 1; reordered: 3 and 2.
        assert_eq!(t.received, 7);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.reordered, 2);
        // Missing of 0..10: 4, 7, 8.
        assert_eq!(t.lost(10), 3);
        assert!(!t.complete(10));
        for s in [4, 7, 8] {
            t.on_seq(s);
        }
        assert!(t.complete(10));
        assert_eq!(t.lost(10), 0);
    }

    #[test]
    fn gap_split_in_the_middle() {
        let mut t = SeqTracker::default();
        t.on_seq(10);
        t.on_seq(5);
        assert_eq!(t.lost(11), 9);
        t.on_seq(5);
        assert_eq!(t.duplicates, 1);
        for s in (0..10).filter(|&s| s != 5) {
            t.on_seq(s);
        }
        assert!(t.complete(11));
    }

    #[test]
    fn tallies_merge() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        record(&mut a.latency, 1_000);
        record(&mut b.latency, 3_000);
        b.lost = 2;
        b.error("x".into());
        a.invocations = vec![1];
        b.invocations = vec![0, 5];
        b.call_errors.insert(0x110, 3);
        a.merge(&b);
        assert_eq!(a.invocations, vec![1, 5]);
        assert_eq!(a.call_errors[&0x110], 3);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.lost, 2);
        assert_eq!(a.errors, 1);
        assert_eq!(a.error_samples, vec!["x".to_string()]);
    }
}
