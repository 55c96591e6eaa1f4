//! What a run is asked to do, checked before anything connects.
//!
//! The command line (`main.rs`) and the tests build these; every bound the tool promises (counts,
//! durations, rates) is enforced here, once.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use fovea_codec::{Name, Pattern, Realm, Topic};
use serde::Serialize;

use crate::conn::Tls;
use crate::failover::{Reconnect, ATTEMPTS_MAX};
use crate::payload::HEADER_LEN;
use crate::schedule::Arrivals;

/// Attempts a failed connection gets when several nodes are given and `--reconnect-attempts`
/// is not.
pub const DEFAULT_ATTEMPTS: u32 = 5;
/// Most connections one run opens (the node's default `max_peers` is 20,000).
pub const CONNECTIONS_MAX: usize = 50_000;
/// Most worker threads.
pub const THREADS_MAX: usize = 64;
/// Longest measured duration, warm-up, hold or drain.
pub const SECONDS_MAX: f64 = 3_600.0;
/// Largest `--ack-delay-us` (below the 25 ms max_ack_delay the client advertises).
const ACK_DELAY_MAX_US: u64 = 20_000;
/// Highest total send rate.
pub const RATE_MAX: f64 = 10_000_000.0;
/// Most (subscriber, publisher) pairs tracked (each is a small sequence tracker).
pub const PAIRS_MAX: usize = 20_000_000;
/// Largest payload.
pub const PAYLOAD_MAX: usize = 1 << 20;
/// Most patterns per subscriber (the node's per-peer subscription cap is 1,024).
pub const PATTERNS_MAX: usize = 1_024;

/// A parameter problem: the run does not start (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// Resolves `host:port` (a name resolves to its first address).
pub fn resolve(node: &str) -> Result<SocketAddr, UsageError> {
    let mut addrs = node.to_socket_addrs().map_err(|e| {
        UsageError(format!("bad node address {node:?} (want HOST:PORT, e.g. 127.0.0.1:4433): {e}"))
    })?;
    addrs.next().ok_or_else(|| UsageError(format!("node address {node:?} resolves to nothing")))
}

/// Resolves a list of `host:port` addresses (each entry may itself be comma-separated).
pub fn resolve_all(nodes: &[String]) -> Result<Vec<SocketAddr>, UsageError> {
    let list: Vec<SocketAddr> = nodes
        .iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(resolve)
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return usage("give at least one --node address");
    }
    if list.len() > NODES_MAX {
        return usage(format!("at most {NODES_MAX} --node addresses"));
    }
    Ok(list)
}

/// Most node addresses per run.
pub const NODES_MAX: usize = 16;

/// Parameters every scenario has.
#[derive(Debug, Clone, Serialize)]
pub struct Common {
    /// The first node's QUIC address (every connection starts there).
    pub node: SocketAddr,
    /// All node addresses, in the order failed connections move through them.
    pub nodes: Vec<SocketAddr>,
    /// Attempts a failed connection gets (on the next node each time); 0: a failure is final.
    pub reconnect_attempts: u32,
    /// Certificate checking.
    #[serde(skip)]
    pub tls: Tls,
    /// Realm named in HELLO.
    #[serde(serialize_with = "ser_display")]
    pub realm: Realm,
    /// Worker threads (one runtime and one socket each).
    pub threads: usize,
    /// Measured time, after warm-up.
    pub duration_s: f64,
    /// Time before the measurement starts (latencies and rates not counted).
    pub warmup_s: f64,
    /// Seed of the schedules (Poisson arrivals).
    pub seed: u64,
    /// How long connecting may take before the run gives up.
    pub connect_timeout_s: f64,
    /// How long to wait for in-flight messages after sending stops.
    pub drain_timeout_s: f64,
    /// Seconds the connections stay open, idle, once the scenario is done (before they close):
    /// the node's memory per peer after traffic is read then.
    pub hold_after_s: f64,
    /// Longest a connection that only received waits for data to carry its ACK, µs (0: at once).
    pub ack_delay_us: u64,
    /// The node's pid, to read its CPU time over the measured window.
    pub node_pid: Option<u32>,
    /// Print a progress line every second on stderr.
    #[serde(skip)]
    pub progress: bool,
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Common {
    /// Defaults for `node`: one thread, 10 s after 2 s of warm-up, insecure TLS.
    pub fn new(node: SocketAddr) -> Common {
        Common {
            node,
            nodes: vec![node],
            reconnect_attempts: 0,
            tls: Tls { insecure: true, ca: None },
            realm: "default".parse().expect("valid realm"),
            threads: 1,
            duration_s: 10.0,
            warmup_s: 2.0,
            seed: 1,
            connect_timeout_s: 10.0,
            drain_timeout_s: 5.0,
            hold_after_s: 0.0,
            ack_delay_us: 1_000,
            node_pid: None,
            progress: false,
        }
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), UsageError> {
        if !(1..=THREADS_MAX).contains(&self.threads) {
            return usage(format!("--threads must be 1..={THREADS_MAX}"));
        }
        for (name, v) in [
            ("--duration", self.duration_s),
            ("--warmup", self.warmup_s),
            ("--connect-timeout", self.connect_timeout_s),
            ("--drain-timeout", self.drain_timeout_s),
            ("--hold-after", self.hold_after_s),
        ] {
            if !(0.0..=SECONDS_MAX).contains(&v) {
                return usage(format!("{name} must be between 0 and {SECONDS_MAX} seconds"));
            }
        }
        if self.ack_delay_us > ACK_DELAY_MAX_US {
            return usage(format!("--ack-delay-us must be 0..={ACK_DELAY_MAX_US}"));
        }
        if self.connect_timeout_s <= 0.0 {
            return usage("--connect-timeout must be positive");
        }
        if self.nodes.is_empty() || self.nodes.len() > NODES_MAX {
            return usage(format!("give 1..={NODES_MAX} --node addresses"));
        }
        if self.reconnect_attempts > ATTEMPTS_MAX {
            return usage(format!("--reconnect-attempts must be 0..={ATTEMPTS_MAX}"));
        }
        if self.tls.insecure && self.tls.ca.is_some() {
            return usage("--insecure and --ca exclude each other");
        }
        Ok(())
    }

    /// Uses `nodes` (the first is where connections start); several nodes turn reconnecting
    /// on with `DEFAULT_ATTEMPTS` unless `reconnect_attempts` was set.
    pub fn with_nodes(mut self, nodes: Vec<SocketAddr>) -> Common {
        self.node = nodes[0];
        if nodes.len() > 1 && self.reconnect_attempts == 0 {
            self.reconnect_attempts = DEFAULT_ATTEMPTS;
        }
        self.nodes = nodes;
        self
    }

    /// The reconnect policy: an attempt gets half the connect timeout (at most 3 s) to reach
    /// its session, so a silent first node leaves time for the next.
    pub fn reconnect(&self) -> Reconnect {
        let attempt = (self.connect_timeout_s / 2.0).clamp(0.2, 3.0);
        Reconnect::with_attempts(self.reconnect_attempts, Duration::from_secs_f64(attempt))
    }

    /// Measured duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }

    /// Warm-up.
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }
}

/// `fanout`: publishers send to a topic, subscribers receive through patterns.
#[derive(Debug, Clone, Serialize)]
pub struct Fanout {
    /// Publishing connections.
    pub publishers: usize,
    /// Subscribing connections.
    pub subscribers: usize,
    /// Payload bytes per message (≥ 24, the measurement header).
    pub payload: usize,
    /// Total publish rate (messages per second, all publishers together).
    pub rate: f64,
    /// Inter-arrival law.
    #[serde(serialize_with = "ser_debug")]
    pub arrivals: Arrivals,
    /// Topic template; `{p}` is replaced by the publisher's index.
    pub topic: String,
    /// Patterns every subscriber subscribes with.
    pub patterns: Vec<String>,
}

fn ser_debug<S: serde::Serializer, T: std::fmt::Debug>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:?}"))
}

impl Fanout {
    /// The topic publisher `p` publishes on.
    pub fn topic_of(&self, p: usize) -> String {
        self.topic.replace("{p}", &p.to_string())
    }

    /// The default pattern for a topic template: the topic itself, with `{p}` as `*`.
    pub fn default_pattern(topic: &str) -> String {
        topic.replace("{p}", "*")
    }

    /// Checks bounds and syntax; returns each publisher's parsed topic and whether any of the
    /// patterns matches it (which is what subscribers are then owed).
    pub fn validate(&self) -> Result<(Vec<Topic>, Vec<bool>), UsageError> {
        if self.publishers + self.subscribers == 0 {
            return usage("nothing to do: --publishers and --subscribers are both 0");
        }
        if self.publishers + self.subscribers > CONNECTIONS_MAX {
            return usage(format!("at most {CONNECTIONS_MAX} connections per run"));
        }
        if self.publishers.saturating_mul(self.subscribers) > PAIRS_MAX {
            return usage(format!("publishers × subscribers must stay ≤ {PAIRS_MAX}"));
        }
        if !(HEADER_LEN..=PAYLOAD_MAX).contains(&self.payload) {
            return usage(format!(
                "--payload must be {HEADER_LEN}..={PAYLOAD_MAX} bytes (the first {HEADER_LEN} carry publisher, sequence and send time)"
            ));
        }
        if self.publishers > 0 && !(self.rate > 0.0 && self.rate <= RATE_MAX) {
            return usage(format!("--rate must be in (0, {RATE_MAX}] messages per second"));
        }
        if self.patterns.is_empty() || self.patterns.len() > PATTERNS_MAX {
            return usage(format!("give 1..={PATTERNS_MAX} patterns"));
        }
        let patterns = self
            .patterns
            .iter()
            .map(|p| {
                p.parse::<Pattern>().map_err(|e| UsageError(format!("bad --pattern {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut topics = Vec::with_capacity(self.publishers);
        let mut matched = Vec::with_capacity(self.publishers);
        for p in 0..self.publishers {
            let t = self.topic_of(p);
            let topic =
                t.parse::<Topic>().map_err(|e| UsageError(format!("bad --topic {t:?}: {e}")))?;
            matched.push(patterns.iter().any(|pat| pat.matches(&topic)));
            topics.push(topic);
        }
        Ok((topics, matched))
    }
}

/// `pingpong`: round-trip time of PING/PONG on the session stream.
#[derive(Debug, Clone, Serialize)]
pub struct Pingpong {
    /// Connections.
    pub connections: usize,
    /// Total PING rate.
    pub rate: f64,
    /// Inter-arrival law.
    #[serde(serialize_with = "ser_debug")]
    pub arrivals: Arrivals,
}

impl Pingpong {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), UsageError> {
        if !(1..=CONNECTIONS_MAX).contains(&self.connections) {
            return usage(format!("--connections must be 1..={CONNECTIONS_MAX}"));
        }
        if !(self.rate > 0.0 && self.rate <= RATE_MAX) {
            return usage(format!("--rate must be in (0, {RATE_MAX}] pings per second"));
        }
        Ok(())
    }
}

/// `connect`: a connection storm, optionally held open.
#[derive(Debug, Clone, Serialize)]
pub struct Connect {
    /// Connections to open (each: QUIC handshake, HELLO, WELCOME).
    pub connections: usize,
    /// Connections opened per second (0: as fast as `inflight` allows).
    pub rate: f64,
    /// Handshakes in progress at once per thread when `rate` is 0.
    pub inflight: usize,
    /// Seconds to keep every connection open once all are connected.
    pub hold_s: f64,
}

impl Connect {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), UsageError> {
        if !(1..=CONNECTIONS_MAX).contains(&self.connections) {
            return usage(format!("--connections must be 1..={CONNECTIONS_MAX}"));
        }
        if !(0.0..=RATE_MAX).contains(&self.rate) {
            return usage(format!("--rate must be in [0, {RATE_MAX}] connections per second"));
        }
        if !(1..=CONNECTIONS_MAX).contains(&self.inflight) {
            return usage("--inflight must be at least 1");
        }
        if !(0.0..=SECONDS_MAX).contains(&self.hold_s) {
            return usage(format!("--hold must be between 0 and {SECONDS_MAX} seconds"));
        }
        Ok(())
    }
}

/// Longest call deadline the tool sends (the node cuts anything above its `rpc_max_timeout_ms`,
/// 300 s by default).
pub const DEADLINE_MS_MAX: u64 = 300_000;

/// `rpc`: callers CALL a procedure that providers answer, through the node.
#[derive(Debug, Clone, Serialize)]
pub struct Rpc {
    /// Provider connections (each REGISTERs the procedure and echoes every INVOKE).
    pub providers: usize,
    /// Caller connections.
    pub callers: usize,
    /// Procedure name.
    pub procedure: String,
    /// Total call rate (calls per second over all callers, open loop).
    pub rate: f64,
    /// Inter-arrival law.
    #[serde(serialize_with = "ser_debug")]
    pub arrivals: Arrivals,
    /// Request and reply payload bytes (≥ 24, the measurement header).
    pub payload: usize,
    /// `timeout_ms` of each CALL (0: the node's default).
    pub deadline_ms: u64,
    /// CALLs flagged idempotent (the node retries them on another provider if one leaves).
    pub idempotent: bool,
}

impl Rpc {
    /// Checks bounds and syntax; returns the parsed procedure name.
    pub fn validate(&self) -> Result<Name, UsageError> {
        if self.callers == 0 {
            return usage("--callers must be at least 1");
        }
        if self.providers + self.callers > CONNECTIONS_MAX {
            return usage(format!("at most {CONNECTIONS_MAX} connections per run"));
        }
        if !(HEADER_LEN..=PAYLOAD_MAX).contains(&self.payload) {
            return usage(format!(
                "--payload must be {HEADER_LEN}..={PAYLOAD_MAX} bytes (the first {HEADER_LEN} carry caller, call id and send time)"
            ));
        }
        if !(self.rate > 0.0 && self.rate <= RATE_MAX) {
            return usage(format!("--rate must be in (0, {RATE_MAX}] calls per second"));
        }
        if self.deadline_ms > DEADLINE_MS_MAX {
            return usage(format!("--deadline must be 0..={DEADLINE_MS_MAX} ms"));
        }
        self.procedure
            .parse::<Name>()
            .map_err(|e| UsageError(format!("bad --procedure {:?}: {e}", self.procedure)))
    }
}

/// `churn`: subscribers subscribe, unsubscribe and reconnect while publishers publish.
#[derive(Debug, Clone, Serialize)]
pub struct Churn {
    /// Publishing connections.
    pub publishers: usize,
    /// Churning subscriber connections.
    pub subscribers: usize,
    /// Payload bytes (≥ 24).
    pub payload: usize,
    /// Total publish rate.
    pub rate: f64,
    /// Subscribe/unsubscribe operations per second over all subscribers.
    pub churn_rate: f64,
    /// Each subscriber's connection is closed and opened again this often (0: never).
    pub reconnect_every_s: f64,
    /// Topic every publisher publishes on and every subscriber subscribes to.
    pub topic: String,
}

impl Churn {
    /// Checks bounds; returns the topic and the pattern (the topic itself).
    pub fn validate(&self) -> Result<(Topic, Pattern), UsageError> {
        if self.publishers == 0 || self.subscribers == 0 {
            return usage("--publishers and --subscribers must be at least 1");
        }
        if self.publishers + self.subscribers > CONNECTIONS_MAX {
            return usage(format!("at most {CONNECTIONS_MAX} connections per run"));
        }
        if !(HEADER_LEN..=PAYLOAD_MAX).contains(&self.payload) {
            return usage(format!("--payload must be {HEADER_LEN}..={PAYLOAD_MAX} bytes"));
        }
        if !(self.rate > 0.0 && self.rate <= RATE_MAX) {
            return usage(format!("--rate must be in (0, {RATE_MAX}] messages per second"));
        }
        if !(0.0..=RATE_MAX).contains(&self.churn_rate) {
            return usage(format!("--churn-rate must be in [0, {RATE_MAX}] per second"));
        }
        if !(0.0..=SECONDS_MAX).contains(&self.reconnect_every_s) {
            return usage(format!("--reconnect-every must be 0..={SECONDS_MAX} seconds"));
        }
        let topic = self
            .topic
            .parse::<Topic>()
            .map_err(|e| UsageError(format!("bad --topic {:?}: {e}", self.topic)))?;
        let pattern = self
            .topic
            .parse::<Pattern>()
            .map_err(|e| UsageError(format!("bad --topic {:?}: {e}", self.topic)))?;
        Ok((topic, pattern))
    }
}

/// Splits `n` items over `threads`: how many thread `t` gets (the first ones get the remainder).
pub fn share(n: usize, threads: usize, t: usize) -> usize {
    n / threads + usize::from(t < n % threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fanout() -> Fanout {
        Fanout {
            publishers: 3,
            subscribers: 2,
            payload: 64,
            rate: 100.0,
            arrivals: Arrivals::Uniform,
            topic: "bench.{p}.data".into(),
            patterns: vec!["bench.*.data".into()],
        }
    }

    #[test]
    fn topics_and_matches() {
        let f = fanout();
        let (topics, matched) = f.validate().unwrap();
        assert_eq!(topics[2].as_str(), "bench.2.data");
        assert_eq!(matched, vec![true; 3]);
        let mut g = fanout();
        g.patterns = vec!["bench.1.*".into()];
        assert_eq!(g.validate().unwrap().1, vec![false, true, false]);
        assert_eq!(Fanout::default_pattern("a.{p}"), "a.*");
    }

    #[test]
    fn bounds_are_checked() {
        let mut f = fanout();
        f.payload = 23;
        assert!(f.validate().is_err());
        let mut f = fanout();
        f.patterns = vec!["a.#".into()];
        assert!(f.validate().is_err());
        let mut f = fanout();
        f.rate = 0.0;
        assert!(f.validate().is_err());
        assert!(resolve("nonsense").is_err());
        let two = resolve_all(&["127.0.0.1:1,127.0.0.1:2".into(), "127.0.0.1:3".into()]).unwrap();
        assert_eq!(two.iter().map(|a| a.port()).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(resolve_all(&[",".into()]).is_err());
        let c = Common::new(two[0]).with_nodes(two);
        assert_eq!((c.nodes.len(), c.reconnect_attempts), (3, DEFAULT_ATTEMPTS));
        assert!(c.reconnect().enabled() && !Common::new(c.node).reconnect().enabled());
        assert_eq!(resolve("127.0.0.1:9").unwrap().port(), 9);
    }

    #[test]
    fn shares_add_up() {
        for n in [0, 1, 7, 1000] {
            for t in 1..5 {
                assert_eq!((0..t).map(|i| share(n, t, i)).sum::<usize>(), n);
            }
        }
    }
}
