//! Network faults between real peers and a real node (in-process shards on loopback, real
//! QUIC), injected by the proxy: loss with reordering, duplication with reordering, a
//! blackhole longer than the idle timeout, and source-port rebinding mid-stream (rows D1,
//! D2, D3, D5, D6 of the reliability matrix). Each case also runs a peer that is not behind
//! the proxy and checks that it is unaffected.
//!
//! Every peer runs on its own thread and drives its connection continuously (so keep-alives
//! and ACKs flow as they would in a real client); the test thread only reads their reports
//! through channels, each wait with a deadline. Traffic goes only to 127.0.0.1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fovea_client::codec::frame::Frame;
use fovea_client::codec::ErrorCode;
use fovea_client::{Client, ClientError, Close, ConnectOptions, Event, Verify};
use fovea_engine::config::NodeConfig;
use fovea_engine::node::Node;
use fovea_faultproxy::{Direction, Faults, Proxy, ProxyConfig, Script};

/// Bound of any single wait (CI machines are slow and shared).
const WAIT: Duration = Duration::from_secs(20);

/// How long a peer thread blocks in one `next_event` before it looks at its stop flag.
const TURN: Duration = Duration::from_millis(20);

// ---- the node ----

/// A node that shuts down and removes its data directory when dropped.
struct TestNode {
    node: Option<Node>,
    data_dir: std::path::PathBuf,
}

impl std::ops::Deref for TestNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        self.node.as_ref().expect("running until dropped")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn start_node(idle_timeout_ms: u64, keepalive_ms: u64) -> TestNode {
    let mut c = NodeConfig::default();
    c.node.listen = "127.0.0.1:0".parse().unwrap();
    c.node.metrics = "127.0.0.1:0".parse().unwrap();
    // Two shards: connections accepted on one shard move to their owner after HELLO, so
    // the faults also hit connections that changed shard.
    c.node.shards = 2;
    c.node.pin_cores = false;
    c.node.drain_timeout_ms = 1_000;
    c.limits.idle_timeout_ms = idle_timeout_ms;
    c.limits.keepalive_ms = keepalive_ms;
    c.node.data_dir = std::env::temp_dir().join(format!(
        "fovea-faultproxy-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let data_dir = c.node.data_dir.clone();
    TestNode { node: Some(Node::start(c).expect("node starts")), data_dir }
}

/// The value of `name{shard="all"}` in the node's metrics.
fn metric(http: SocketAddr, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let key = format!("{name}{{shard=\"all\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("metric {name} missing"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls `cond` until it holds or `wait` passes, yielding the core between polls (each poll is
/// a real query of the node or the test's peers).
fn wait_until(wait: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
}

fn proxy_to(node: &Node, seed: u64) -> Proxy {
    let mut c = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), node.quic_addr);
    c.seed = seed;
    Proxy::start(c).unwrap()
}

fn options() -> ConnectOptions {
    let mut o = ConnectOptions::default();
    o.config.verify = Verify::Insecure;
    o.request_timeout = Duration::from_secs(10);
    o
}

// ---- peers on their own threads ----

/// What a peer thread reports.
#[derive(Debug)]
enum Report {
    /// Subscribed (first time or after a reconnect).
    Subscribed,
    /// A delivery: `publisher:seq` parsed from the payload.
    Message { publisher: String, seq: u64 },
    /// The connection ended.
    Closed(Close),
}

struct Peer {
    rx: Receiver<Report>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Peer {
    /// Next report, or `None` after `wait`.
    fn next(&self, wait: Duration) -> Option<Report> {
        match self.rx.recv_timeout(wait) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Stops the thread and returns its result (an error string if the peer failed).
    fn finish(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().unwrap();
        // The thread checks its flag every TURN; bound the join anyway.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(t.join());
        });
        match rx.recv_timeout(WAIT) {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("peer thread panicked".into()),
            Err(_) => Err("peer thread did not stop".into()),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn parse(payload: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (publisher, rest) = text.split_once(':')?;
    let seq = rest.split('|').next()?.parse().ok()?;
    Some((publisher.to_owned(), seq))
}

/// Connects with retries until `deadline`; each attempt gets at most `attempt` (a handshake
/// into a blackhole times out). Returns the client and the number of failed attempts.
fn connect_retrying(
    addr: SocketAddr,
    attempt: Duration,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Client, String> {
    let mut last = String::new();
    // Bounded by the deadline and by a count (one attempt per `attempt` at least).
    for _ in 0..1000 {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let until = (Instant::now() + attempt).min(deadline);
        match Client::connect(addr, &options(), until) {
            Ok(c) => return Ok(c),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("no connection to {addr} before the deadline: {last}"))
}

/// A subscriber to `pattern` through `addr`. With `reconnect`, a closed connection is
/// replaced (attempts of 1 s each, for at most `WAIT`) and the subscription renewed.
fn subscriber(addr: SocketAddr, pattern: &'static str, reconnect: bool) -> Peer {
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || run_subscriber(addr, pattern, reconnect, &tx, &flag));
    Peer { rx, stop, thread: Some(thread) }
}

fn run_subscriber(
    addr: SocketAddr,
    pattern: &str,
    reconnect: bool,
    tx: &Sender<Report>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut client =
        Client::connect(addr, &options(), Instant::now() + WAIT).map_err(|e| e.to_string())?;
    client.subscribe(1, pattern).map_err(|e| e.to_string())?;
    let _ = tx.send(Report::Subscribed);
    while !stop.load(Ordering::Relaxed) {
        match client.next_event(Instant::now() + TURN) {
            Some(Event::Frame(Frame::Deliver(d))) => {
                let (publisher, seq) =
                    parse(&d.payload).ok_or_else(|| format!("bad payload {:?}", d.payload))?;
                let _ = tx.send(Report::Message { publisher, seq });
            }
            Some(Event::Closed { .. }) => {
                let close = client.closed().cloned().expect("closed");
                let _ = tx.send(Report::Closed(close));
                if !reconnect {
                    return Ok(());
                }
                client =
                    connect_retrying(addr, Duration::from_secs(1), Instant::now() + WAIT, stop)?;
                client.subscribe(1, pattern).map_err(|e| e.to_string())?;
                let _ = tx.send(Report::Subscribed);
            }
            Some(_) | None => {}
        }
    }
    Ok(())
}

/// A publisher on `topic` through `addr`, payloads `name:seq|padding`.
struct Publisher {
    peer: Peer,
    /// Messages handed to the client so far (the next seq).
    published: Arc<AtomicU64>,
    /// Set once `count` messages are published and the node acknowledged a barrier after
    /// them (the node handled every one of them: one stream, in order).
    done: Arc<AtomicBool>,
}

/// Publishes `count` messages (`None`: until stopped), one every `every` (zero: as fast as
/// flow control allows), then an acknowledged barrier; keeps the connection alive until
/// stopped.
fn publisher(
    addr: SocketAddr,
    name: &'static str,
    topic: &'static str,
    count: Option<u64>,
    every: Duration,
) -> Publisher {
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (flag, p, d) = (stop.clone(), published.clone(), done.clone());
    let thread = std::thread::spawn(move || {
        let mut client =
            Client::connect(addr, &options(), Instant::now() + WAIT).map_err(|e| e.to_string())?;
        let close_err = |e: ClientError| format!("{name}: {e}");
        let pad = "x".repeat(100);
        let mut seq = 0u64;
        while !flag.load(Ordering::Relaxed) {
            if count.is_none_or(|n| seq < n) {
                let payload = format!("{name}:{seq}|{pad}");
                client.publish(topic, payload.as_bytes(), false).map_err(close_err)?;
                seq += 1;
                p.store(seq, Ordering::Relaxed);
                if !every.is_zero() {
                    let _ = client.next_event(Instant::now() + every);
                }
                continue;
            }
            if !d.load(Ordering::Relaxed) {
                // A topic nobody subscribes: its OK says the node handled every publish.
                client.publish("barrier.done", b"", true).map_err(close_err)?;
                d.store(true, Ordering::Relaxed);
            }
            if let Some(Event::Closed { .. }) = client.next_event(Instant::now() + TURN) {
                let close = client.closed().cloned().expect("closed");
                let _ = tx.send(Report::Closed(close));
                return Err(format!("{name}: connection closed"));
            }
        }
        Ok(())
    });
    Publisher { peer: Peer { rx, stop, thread: Some(thread) }, published, done }
}

/// Deliveries per publisher, in arrival order.
#[derive(Debug, Default)]
struct Tally {
    by_publisher: BTreeMap<String, Vec<u64>>,
    closes: Vec<Close>,
    subscribed: u32,
}

impl Tally {
    fn total(&self) -> usize {
        self.by_publisher.values().map(Vec::len).sum()
    }

    fn take(&mut self, r: Report) {
        match r {
            Report::Message { publisher, seq } => {
                self.by_publisher.entry(publisher).or_default().push(seq)
            }
            Report::Closed(c) => self.closes.push(c),
            Report::Subscribed => self.subscribed += 1,
        }
    }

    /// Asserts `publisher`'s messages arrived exactly once each and in order: 0, 1, ..., n-1.
    fn assert_exactly_once_in_order(&self, who: &str, publisher: &str, n: u64) {
        let got = self.by_publisher.get(publisher).map(Vec::as_slice).unwrap_or(&[]);
        if got.len() as u64 == n && got.iter().copied().eq(0..n) {
            return;
        }
        let mut sorted = got.to_vec();
        sorted.sort_unstable();
        let dups = sorted.windows(2).filter(|w| w[0] == w[1]).count();
        let inversions = got.windows(2).filter(|w| w[0] >= w[1]).count();
        panic!(
            "{who}: {publisher} delivered {} of {n} ({dups} duplicates, {inversions} out of \
             order)",
            got.len()
        );
    }
}

/// Collects reports from `peer` until `want` deliveries arrived (or `WAIT`), then for `quiet`
/// more, so that a late duplicate would be seen.
fn collect(peer: &Peer, tally: &mut Tally, want: usize, quiet: Duration) {
    let deadline = Instant::now() + WAIT;
    while tally.total() < want && Instant::now() < deadline {
        if let Some(r) = peer.next(deadline.saturating_duration_since(Instant::now())) {
            tally.take(r);
        }
    }
    let quiet_end = Instant::now() + quiet;
    while let Some(r) = peer.next(quiet_end.saturating_duration_since(Instant::now())) {
        tally.take(r);
    }
}

/// Waits for `peer`'s first `Subscribed`.
fn wait_subscribed(peer: &Peer, tally: &mut Tally) {
    let deadline = Instant::now() + WAIT;
    while tally.subscribed == 0 {
        let r = peer
            .next(deadline.saturating_duration_since(Instant::now()))
            .expect("the subscriber subscribes in time");
        tally.take(r);
    }
}

// ---- the cases ----

/// D1: 5 % loss each way plus 5 % reordering on the paths of one publisher and one
/// subscriber. Reliable streams lose nothing: every message exactly once, per-publisher
/// order kept, for the faulted subscriber and for the direct one.
#[test]
fn loss_and_reordering_lose_nothing_and_keep_order() {
    const N: u64 = 1_000;
    let node = start_node(10_000, 2_000);
    let proxy = proxy_to(&node, 11);
    let faults = Faults {
        loss: 0.05,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(10),
        ..Faults::default()
    };
    proxy.set_both(faults).unwrap();
    let lossy_sub = subscriber(proxy.local_addr(), "load.*", false);
    let direct_sub = subscriber(node.quic_addr, "load.*", false);
    let (mut lossy, mut direct) = (Tally::default(), Tally::default());
    wait_subscribed(&lossy_sub, &mut lossy);
    wait_subscribed(&direct_sub, &mut direct);
    let started = Instant::now();
    let lossy_pub = publisher(proxy.local_addr(), "lossy", "load.a", Some(N), Duration::ZERO);
    let direct_pub = publisher(node.quic_addr, "direct", "load.b", Some(N), Duration::ZERO);
    collect(&lossy_sub, &mut lossy, 2 * N as usize, Duration::from_millis(300));
    collect(&direct_sub, &mut direct, 2 * N as usize, Duration::from_millis(300));
    let took = started.elapsed();
    for (who, t) in [("faulted subscriber", &lossy), ("direct subscriber", &direct)] {
        t.assert_exactly_once_in_order(who, "lossy", N);
        t.assert_exactly_once_in_order(who, "direct", N);
        assert!(t.closes.is_empty(), "{who} closed: {:?}", t.closes);
    }
    assert!(lossy_pub.done.load(Ordering::Relaxed) && direct_pub.done.load(Ordering::Relaxed));
    let c = proxy.counters();
    // The faults did happen, both ways.
    assert!(c.up.dropped_loss > 0 && c.down.dropped_loss > 0, "{c}");
    assert!(c.up.reordered > 0 && c.down.reordered > 0, "{c}");
    eprintln!("D1: {N}+{N} messages through 5 % loss + 5 % reordering in {took:.1?}\n{c}");
    for p in [lossy_pub.peer, direct_pub.peer, lossy_sub, direct_sub] {
        p.finish().unwrap();
    }
}

/// D2 + D3: 25 % duplication, 10 % reordering and 3 ms jitter each way. QUIC discards the
/// duplicate packets; no message is delivered twice, nothing is lost, order is kept; the
/// node's application-level duplicate filter never sees a duplicate.
#[test]
fn duplication_and_reordering_deliver_nothing_twice() {
    const N: u64 = 1_000;
    let node = start_node(10_000, 2_000);
    let proxy = proxy_to(&node, 12);
    let faults = Faults {
        duplicate: 0.25,
        reorder: 0.1,
        reorder_delay: Duration::from_millis(5),
        jitter: Duration::from_millis(3),
        ..Faults::default()
    };
    proxy.set_both(faults).unwrap();
    let dup_sub = subscriber(proxy.local_addr(), "dup.*", false);
    let direct_sub = subscriber(node.quic_addr, "dup.*", false);
    let (mut dup, mut direct) = (Tally::default(), Tally::default());
    wait_subscribed(&dup_sub, &mut dup);
    wait_subscribed(&direct_sub, &mut direct);
    let dup_pub = publisher(proxy.local_addr(), "faulted", "dup.a", Some(N), Duration::ZERO);
    let direct_pub = publisher(node.quic_addr, "direct", "dup.b", Some(N), Duration::ZERO);
    collect(&dup_sub, &mut dup, 2 * N as usize, Duration::from_millis(300));
    collect(&direct_sub, &mut direct, 2 * N as usize, Duration::from_millis(300));
    for (who, t) in [("faulted subscriber", &dup), ("direct subscriber", &direct)] {
        t.assert_exactly_once_in_order(who, "faulted", N);
        t.assert_exactly_once_in_order(who, "direct", N);
        assert!(t.closes.is_empty(), "{who} closed: {:?}", t.closes);
    }
    let c = proxy.counters();
    assert!(c.up.duplicated > 0 && c.down.duplicated > 0, "{c}");
    assert!(c.up.reordered > 0 && c.down.reordered > 0, "{c}");
    // Duplicate datagrams never became duplicate PUBLISH frames.
    assert_eq!(metric(node.http_addr, "fovea_duplicates_dropped_total"), 0);
    for p in [dup_pub.peer, direct_pub.peer, dup_sub, direct_sub] {
        p.finish().unwrap();
    }
}

/// D5: a blackhole (both ways) longer than the idle timeout. Both ends close the silent
/// connection by idle timeout (no CONNECTION_CLOSE: nothing gets through); the node's
/// connection and peer gauges drop; the subscriber reconnects after the blackhole ends,
/// subscribes again, and deliveries resume. A subscriber not behind the proxy receives every
/// message throughout.
#[test]
fn blackhole_beyond_the_idle_timeout_closes_then_the_client_reconnects() {
    const IDLE_MS: u64 = 1_500;
    let node = start_node(IDLE_MS, 400);
    let proxy = proxy_to(&node, 13);
    let faulted_sub = subscriber(proxy.local_addr(), "feed", true);
    let direct_sub = subscriber(node.quic_addr, "feed", false);
    let (mut faulted, mut direct) = (Tally::default(), Tally::default());
    wait_subscribed(&faulted_sub, &mut faulted);
    wait_subscribed(&direct_sub, &mut direct);
    let feed = publisher(node.quic_addr, "feed", "feed", None, Duration::from_millis(5));
    // Deliveries flow to both before the fault.
    collect(&faulted_sub, &mut faulted, 20, Duration::ZERO);
    assert!(faulted.total() >= 20, "no deliveries before the blackhole");
    assert!(wait_until(WAIT, || metric(node.http_addr, "fovea_peers") == 3));

    // 4 s of blackhole: more than twice the idle timeout.
    let script = Script::parse(
        "[[phase]]\nat = \"0s\"\nboth = { blackhole = true }\n[[phase]]\nat = \"4s\"\nclear = true\n",
    )
    .unwrap();
    let holed_at = Instant::now();
    proxy.run_script(script).unwrap();
    let before_hole = faulted.total();

    // The client's idle timer ends its side...
    let deadline = Instant::now() + WAIT;
    while faulted.closes.is_empty() && Instant::now() < deadline {
        if let Some(r) = faulted_sub.next(Duration::from_millis(100)) {
            faulted.take(r);
        }
    }
    let close = faulted.closes.first().expect("the faulted client's connection ends").clone();
    assert!(close.is_idle_timeout(), "{close:?}");
    let closed_after = holed_at.elapsed();
    assert!(closed_after >= Duration::from_millis(IDLE_MS - 200), "{closed_after:?}");
    // ... and the node's drops the connection (only the direct subscriber and the publisher
    // are left) without counting an error close.
    assert!(wait_until(WAIT, || metric(node.http_addr, "fovea_peers") == 2));
    assert_eq!(metric(node.http_addr, "fovea_connections_closed_by_error_total"), 0);
    let node_closed_after = holed_at.elapsed();
    assert!(node_closed_after < Duration::from_secs(4), "{node_closed_after:?}");

    // After the blackhole the subscriber is back and receives what is published then.
    let deadline = Instant::now() + WAIT;
    while faulted.subscribed < 2 && Instant::now() < deadline {
        if let Some(r) = faulted_sub.next(Duration::from_millis(100)) {
            faulted.take(r);
        }
    }
    assert_eq!(faulted.subscribed, 2, "re-subscribed after the blackhole");
    let back_after = holed_at.elapsed();
    assert!(back_after >= Duration::from_secs(4), "reconnected inside the blackhole?");
    let resubscribed_seq = feed.published.load(Ordering::Relaxed);
    let new_ones = |t: &Tally| {
        let feed = &t.by_publisher["feed"][before_hole..];
        feed.iter().copied().filter(|&s| s > resubscribed_seq).collect::<Vec<u64>>()
    };
    let deadline = Instant::now() + WAIT;
    while new_ones(&faulted).len() < 20 && Instant::now() < deadline {
        if let Some(r) = faulted_sub.next(Duration::from_millis(100)) {
            faulted.take(r);
        }
    }
    let after = new_ones(&faulted);
    assert!(after.len() >= 20, "deliveries resumed: {} after re-subscribing", after.len());
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "in order after re-subscribing");
    assert!(wait_until(WAIT, || metric(node.http_addr, "fovea_peers") == 3));

    // The direct subscriber got every message, in order, the whole time.
    feed.peer.stop.store(true, Ordering::Relaxed);
    let last = feed.published.load(Ordering::Relaxed);
    feed.peer.finish().unwrap();
    let published = feed.published.load(Ordering::Relaxed).max(last);
    collect(&direct_sub, &mut direct, published as usize, Duration::from_millis(200));
    direct.assert_exactly_once_in_order("direct subscriber", "feed", published);
    assert!(direct.closes.is_empty(), "{:?}", direct.closes);
    let c = proxy.counters();
    assert!(c.up.dropped_blackhole > 0 && c.down.dropped_blackhole > 0, "{c}");
    eprintln!(
        "D5: client closed after {closed_after:.1?}, node by {node_closed_after:.1?}, \
         re-subscribed after {back_after:.1?}\n{c}"
    );
    faulted_sub.finish().unwrap();
    direct_sub.finish().unwrap();
}

/// D6: after the proxy gives the publisher's and the subscriber's upstream sockets new ports
/// mid-stream (a NAT rebinding; the old ports are gone), quiche on the node follows the new
/// address: everything the rebound publisher sends reaches the node and the other
/// subscribers, exactly once and in order. What was in flight to the rebound subscriber's old
/// port is never sent again (quiche 0.30's per-path loss recovery, docs/OPERATIONS.md), so
/// that subscriber gets an in-order prefix without duplicates and is then closed cleanly with
/// SLOW_CONSUMER at the node's next keep-alive check; the reliability matrix's full
/// expectation is the ignored test below.
#[test]
fn source_port_rebinding_mid_stream_keeps_the_connections_and_the_publisher_path() {
    const N: u64 = 1_000;
    let node = start_node(10_000, 2_000);
    let proxy = proxy_to(&node, 14);
    let moved_sub = subscriber(proxy.local_addr(), "mig.*", false);
    let direct_sub = subscriber(node.quic_addr, "mig.*", false);
    let (mut moved, mut direct) = (Tally::default(), Tally::default());
    wait_subscribed(&moved_sub, &mut moved);
    wait_subscribed(&direct_sub, &mut direct);
    // Paced (about 1 s for N) so that the rebind lands mid-stream.
    let every = Duration::from_millis(1);
    let moved_pub = publisher(proxy.local_addr(), "moved", "mig.a", Some(N), every);
    let direct_pub = publisher(node.quic_addr, "direct", "mig.b", Some(N), every);
    assert!(wait_until(WAIT, || moved_pub.published.load(Ordering::Relaxed) > 0));
    let before = proxy.clients();
    assert_eq!(before.len(), 2, "{before:?}");
    collect(&moved_sub, &mut moved, N as usize / 2, Duration::ZERO);
    assert_eq!(proxy.rebind_all(), 2);
    let rebound_at = moved.total();
    for (b, a) in before.iter().zip(&proxy.clients()) {
        assert_eq!(b.client, a.client);
        assert_ne!(b.upstream_local, a.upstream_local, "the node sees a new address");
    }
    // The rebound publisher's messages all reach the direct subscriber.
    collect(&direct_sub, &mut direct, 2 * N as usize, Duration::from_millis(200));
    direct.assert_exactly_once_in_order("direct subscriber", "moved", N);
    direct.assert_exactly_once_in_order("direct subscriber", "direct", N);
    assert!(wait_until(WAIT, || moved_pub.done.load(Ordering::Relaxed)), "barrier acked");
    // The rebound subscriber: everything, or (deliveries were in flight to its old port) an
    // in-order prefix and then a clean close by the node at its next keep-alive check.
    let deadline = Instant::now() + WAIT;
    while moved.total() < 2 * N as usize && moved.closes.is_empty() && Instant::now() < deadline {
        if let Some(r) = moved_sub.next(Duration::from_millis(100)) {
            moved.take(r);
        }
    }
    for publisher in ["moved", "direct"] {
        let got = moved.by_publisher.get(publisher).cloned().unwrap_or_default();
        assert!(got.iter().copied().eq(0..got.len() as u64), "{publisher}: not an in-order prefix");
    }
    assert!(direct.closes.is_empty(), "{:?}", direct.closes);
    if moved.total() < 2 * N as usize {
        let close = moved.closes.first().expect("a stalled subscriber is closed, not left hanging");
        assert_eq!(close.error_code, ErrorCode::SlowConsumer as u64, "{close:?}");
        assert!(close.by_peer, "closed by the node: {close:?}");
        assert_eq!(metric(node.http_addr, "fovea_path_change_stalls_total"), 1);
        assert!(wait_until(WAIT, || metric(node.http_addr, "fovea_peers") == 3));
    } else {
        assert!(moved.closes.is_empty(), "{:?}", moved.closes);
        assert_eq!(metric(node.http_addr, "fovea_peers"), 4, "every connection is still open");
    }
    let c = proxy.counters();
    eprintln!(
        "D6: rebound subscriber got {} of {} (rebind after {rebound_at})\n{c}",
        moved.total(),
        2 * N
    );
    for p in [moved_pub.peer, direct_pub.peer, moved_sub, direct_sub] {
        p.finish().unwrap();
    }
}

/// D6 as the reliability matrix expects it: two rebinds mid-stream, connections survive
/// and every message arrives exactly once, in order. Fails today (the rebound subscriber
/// stalls after the first rebind; after the second both rebound connections stop and end by
/// idle timeout): `cargo test -p fovea-faultproxy --test node_faults -- --ignored`.
#[test]
#[ignore = "quiche 0.30 never resends what was in flight on a dead path; the node closes such a connection (docs/OPERATIONS.md)"]
fn source_port_rebinding_twice_delivers_everything() {
    const N: u64 = 2_000;
    let node = start_node(10_000, 2_000);
    let proxy = proxy_to(&node, 16);
    let moved_sub = subscriber(proxy.local_addr(), "mig.*", false);
    let mut moved = Tally::default();
    wait_subscribed(&moved_sub, &mut moved);
    let every = Duration::from_millis(1);
    let moved_pub = publisher(proxy.local_addr(), "moved", "mig.a", Some(N), every);
    for fraction in [4, 2] {
        collect(&moved_sub, &mut moved, N as usize / fraction, Duration::ZERO);
        assert_eq!(proxy.rebind_all(), 2);
    }
    collect(&moved_sub, &mut moved, N as usize, Duration::from_millis(300));
    moved.assert_exactly_once_in_order("rebound subscriber", "moved", N);
    assert!(moved.closes.is_empty(), "{:?}", moved.closes);
    moved_pub.peer.finish().unwrap();
    moved_sub.finish().unwrap();
}

/// A fault on one direction only leaves the other direction's counters alone (a check of
/// the proxy against a real node, cheap enough to keep).
#[test]
fn one_way_loss_is_counted_on_that_direction_only() {
    let node = start_node(10_000, 2_000);
    let proxy = proxy_to(&node, 15);
    proxy.set(Direction::Down, Faults::loss(0.1)).unwrap();
    let sub = subscriber(proxy.local_addr(), "one.*", false);
    let mut t = Tally::default();
    wait_subscribed(&sub, &mut t);
    let p = publisher(node.quic_addr, "p", "one.a", Some(200), Duration::ZERO);
    collect(&sub, &mut t, 200, Duration::from_millis(100));
    t.assert_exactly_once_in_order("subscriber", "p", 200);
    let c = proxy.counters();
    assert!(c.down.dropped_loss > 0, "{c}");
    assert_eq!(c.up.dropped(), 0, "{c}");
    p.peer.finish().unwrap();
    sub.finish().unwrap();
}
