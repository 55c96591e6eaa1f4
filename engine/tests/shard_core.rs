//! Sans-I/O tests of the shard core: a real quiche client and the `Shard` exchange packets
//! through memory, with the test deciding when datagrams arrive and when a loop turn ends. No
//! sockets, no threads, no timers: the scheduling properties (control before data, fairness)
//! are checked exactly, per turn, instead of by timing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use fovea_codec::frame::{self, Frame};
use fovea_codec::{decode_frame, Limits, Topic};
use fovea_engine::cid::ResetKey;
use fovea_engine::config::NodeConfig;
use fovea_engine::metrics::ShardMetrics;
use fovea_engine::shard::{NodeShared, Shard, ShardContext};
use fovea_engine::udp::SendBatch;

const NODE: &str = "127.0.0.1:4433";

/// Counts the bytes this thread has live on the heap: each test drives its shard on its own
/// thread, so a test can measure what the shard keeps without the other tests' noise.
struct CountingAlloc;

thread_local! {
    static LIVE_BYTES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn count(delta: i64) {
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + delta));
}

fn live_bytes() -> i64 {
    LIVE_BYTES.with(|c| c.get())
}

// SAFETY: every call forwards to the system allocator unchanged; the counter only observes.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's layout contract is passed on unchanged.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `p` came from this allocator (hence from System) with `layout`.
        unsafe { std::alloc::System.dealloc(p, layout) };
        count(-(layout.size() as i64));
    }
    unsafe fn realloc(&self, p: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`, with the caller's new size.
        let q = unsafe { std::alloc::System.realloc(p, layout, new) };
        if !q.is_null() {
            count(new as i64 - layout.size() as i64);
        }
        q
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

struct Pipe {
    shard: Shard,
    metrics: Arc<ShardMetrics>,
    now: Instant,
}

struct Peer {
    conn: quiche::Connection,
    addr: SocketAddr,
    rx: [BytesMut; 2],
    frames: Vec<Frame>,
    /// Bytes written by the test but not yet accepted by quiche (congestion/flow control).
    unsent: Vec<(u64, bytes::Bytes)>,
}

fn config() -> NodeConfig {
    let mut c = NodeConfig::default();
    let mut r = [0u8; 8];
    boring::rand::rand_bytes(&mut r).unwrap();
    let tag = u64::from_le_bytes(r);
    c.node.data_dir = std::env::temp_dir().join(format!("fovea-core-{}-{tag}", std::process::id()));
    c.limits.frames_per_turn = 16;
    // These tests never let time pass, so a deferred ACK would never go out: ACK at once
    // (the deferral has its own tests below).
    c.limits.ack_delay_us = 0;
    c
}

impl Pipe {
    fn new(config: &NodeConfig) -> Pipe {
        let identity =
            fovea_engine::identity::load_or_create(&config.node.data_dir, None, None).unwrap();
        let metrics = Arc::new(ShardMetrics::default());
        let ctx = ShardContext {
            index: 0,
            shards: 1,
            limits: config.limits.clone(),
            node_id: identity.node_id,
            reset_key: ResetKey::new(&identity.reset_secret),
            shared: Arc::new(NodeShared::default()),
            metrics: metrics.clone(),
            local_addr: NODE.parse().unwrap(),
            wall_clock: fovea_engine::shard::wall_clock_now(),
        };
        let quic = fovea_engine::quic::server_config(config, &identity).unwrap();
        let now = Instant::now();
        Pipe { shard: Shard::new(ctx, quic, now), metrics, now }
    }

    /// Ends a loop turn of the shard and returns its packets.
    fn turn(&mut self) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut batch = SendBatch::new(false);
        let mut out = Vec::new();
        self.shard.poll_transmit(self.now, &mut batch, &mut |b: &mut SendBatch| {
            out.extend(b.take_packets());
            true
        });
        out.extend(batch.take_packets());
        out
    }

    /// Delivers every packet the peer has to the shard (one receive batch).
    fn peer_to_shard(&mut self, peer: &mut Peer) {
        peer.push_unsent();
        let mut buf = [0u8; 1500];
        loop {
            match peer.conn.send(&mut buf) {
                Ok((n, _)) => self.shard.handle_datagram(self.now, &mut buf[..n], peer.addr),
                Err(quiche::Error::Done) => break,
                Err(e) => panic!("client send: {e}"),
            }
        }
    }

    /// Runs turns until neither side has anything to say.
    fn drive(&mut self, peers: &mut [&mut Peer]) {
        for _ in 0..100_000 {
            let mut moved = false;
            for p in peers.iter_mut() {
                moved |= !p.unsent.is_empty();
                let before = self.metrics.packets_in.load(std::sync::atomic::Ordering::Relaxed);
                self.peer_to_shard(p);
                moved |=
                    self.metrics.packets_in.load(std::sync::atomic::Ordering::Relaxed) != before;
            }
            // Like the driver: a shard with input left over runs another turn.
            moved |= self.shard.has_pending_input();
            let out = self.turn();
            moved |= !out.is_empty();
            self.deliver(out, peers);
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn deliver(&mut self, out: Vec<(Vec<u8>, SocketAddr)>, peers: &mut [&mut Peer]) {
        for (mut pkt, to) in out {
            if let Some(p) = peers.iter_mut().find(|p| p.addr == to) {
                let info = quiche::RecvInfo { from: NODE.parse().unwrap(), to };
                let _ = p.conn.recv(&mut pkt, info);
                p.read();
            }
        }
    }
}

impl Peer {
    fn new(port: u16) -> Peer {
        let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
        c.set_application_protos(&[b"fovea/1"]).unwrap();
        c.verify_peer(false);
        c.set_max_idle_timeout(30_000);
        c.set_initial_max_data(16 << 20);
        c.set_initial_max_stream_data_bidi_local(8 << 20);
        c.set_initial_max_stream_data_uni(8 << 20);
        c.set_initial_max_streams_uni(4);
        let mut scid = [0u8; 16];
        boring::rand::rand_bytes(&mut scid).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let conn = quiche::connect(
            Some("localhost"),
            &quiche::ConnectionId::from_vec(scid.to_vec()),
            addr,
            NODE.parse().unwrap(),
            &mut c,
        )
        .unwrap();
        Peer {
            conn,
            addr,
            rx: [BytesMut::new(), BytesMut::new()],
            frames: Vec::new(),
            unsent: Vec::new(),
        }
    }

    fn write(&mut self, stream: u64, f: &Frame) {
        self.unsent.push((stream, f.to_bytes()));
        self.push_unsent();
    }

    /// Moves queued writes into quiche, in order per stream, as far as it accepts them.
    fn push_unsent(&mut self) {
        let mut blocked: Vec<u64> = Vec::new();
        let mut rest = Vec::new();
        // Session-stream writes go first: the client too keeps control ahead of bulk data.
        let mut queue = std::mem::take(&mut self.unsent);
        queue.sort_by_key(|(stream, _)| *stream != 0);
        for (stream, bytes) in queue {
            if blocked.contains(&stream) {
                rest.push((stream, bytes));
                continue;
            }
            let n = match self.conn.stream_send(stream, &bytes, false) {
                Ok(n) => n,
                Err(quiche::Error::Done) => 0,
                Err(e) => panic!("stream_send: {e}"),
            };
            if n < bytes.len() {
                blocked.push(stream);
                rest.push((stream, bytes.slice(n..)));
            }
            if stream == 0 {
                // A well-behaved client gives its session stream priority (PROTOCOL.md §2).
                let _ = self.conn.stream_priority(0, 0, true);
            }
        }
        self.unsent = rest;
    }

    fn read(&mut self) {
        let ids: Vec<u64> = self.conn.readable().collect();
        let mut tmp = [0u8; 65536];
        for id in ids {
            let slot = if id == 0 { 0 } else { 1 };
            while let Ok((n, _)) = self.conn.stream_recv(id, &mut tmp) {
                self.rx[slot].extend_from_slice(&tmp[..n]);
            }
        }
        for rx in &mut self.rx {
            while let Some(f) = decode_frame(rx, &Limits::default()).unwrap() {
                self.frames.push(f);
            }
        }
    }

    fn take(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.frames)
    }
}

fn hello(peer: &Peer) -> Frame {
    let mut id = [0u8; 32];
    id[..2].copy_from_slice(&peer.addr.port().to_be_bytes());
    Frame::Hello(frame::Hello {
        version: 1,
        peer_id: id,
        flags: 0,
        realm: "default".parse().unwrap(),
        cred_kind: 0,
        credential: Default::default(),
        client_name: Default::default(),
    })
}

fn connected(pipe: &mut Pipe, port: u16) -> Peer {
    let mut p = Peer::new(port);
    pipe.drive(&mut [&mut p]);
    assert!(p.conn.is_established());
    p.write(0, &hello(&p));
    pipe.drive(&mut [&mut p]);
    assert!(p.take().iter().any(|f| matches!(f, Frame::Welcome(_))), "WELCOME");
    p
}

fn publish(topic: &str, i: u32) -> Frame {
    Frame::Publish(frame::Publish {
        request_id: 0,
        message_id: None,
        topic: topic.parse::<Topic>().unwrap(),
        payload: bytes::Bytes::copy_from_slice(&i.to_be_bytes()),
    })
}

#[test]
fn control_frames_overtake_a_publish_backlog_within_one_turn() {
    let config = config();
    let mut pipe = Pipe::new(&config);
    let mut publisher = connected(&mut pipe, 1001);
    let flood = 5_000u64;
    for i in 0..flood as u32 {
        publisher.write(2, &publish("flood", i));
    }
    // Let the flood reach the node's buffers: each turn the node handles only its frame
    // budget, so a backlog builds up there.
    for _ in 0..10_000 {
        if publisher.unsent.is_empty() && publisher.conn.stream_writable(2, 1).unwrap_or(true) {
            break;
        }
        pipe.peer_to_shard(&mut publisher);
        let out = pipe.turn();
        pipe.deliver(out, &mut [&mut publisher]);
    }
    assert!(publisher.unsent.is_empty(), "the whole flood left the client");
    publisher.write(0, &Frame::Ping(frame::Ping { ping_id: 5, sent_at_us: 1 }));
    publisher.write(
        0,
        &Frame::Subscribe(frame::Subscribe {
            request_id: 9,
            sub_id: 1,
            pattern: "x".parse().unwrap(),
        }),
    );
    pipe.peer_to_shard(&mut publisher);
    let out = pipe.turn();
    pipe.deliver(out, &mut [&mut publisher]);
    let frames = publisher.take();
    let handled = pipe.metrics.publishes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        handled < flood / 2,
        "a backlog was waiting at the node ({handled} of {flood} handled)"
    );
    assert!(
        frames.iter().any(|f| matches!(f, Frame::Pong(p) if p.ping_id == 5)),
        "PONG in the next turn"
    );
    assert!(
        frames.iter().any(|f| matches!(f, Frame::Ok(o) if o.request_id == 9)),
        "OK in the next turn"
    );
    // And nothing is lost: the backlog is handled in later turns.
    pipe.drive(&mut [&mut publisher]);
    assert_eq!(pipe.metrics.publishes.load(std::sync::atomic::Ordering::Relaxed), flood);
}

#[test]
fn one_flooding_peer_cannot_take_more_than_its_frame_budget_per_turn() {
    let config = config();
    let budget = config.limits.frames_per_turn as u64;
    let mut pipe = Pipe::new(&config);
    let mut flooder = connected(&mut pipe, 2001);
    let mut quiet = connected(&mut pipe, 2002);
    let mut sub = connected(&mut pipe, 2003);
    sub.write(
        0,
        &Frame::Subscribe(frame::Subscribe {
            request_id: 1,
            sub_id: 1,
            pattern: "quiet".parse().unwrap(),
        }),
    );
    pipe.drive(&mut [&mut sub]);
    for i in 0..1000 {
        flooder.write(2, &publish("flood", i));
    }
    quiet.write(2, &publish("quiet", 1));
    let before = pipe.metrics.publishes.load(std::sync::atomic::Ordering::Relaxed);
    pipe.peer_to_shard(&mut flooder);
    pipe.peer_to_shard(&mut quiet);
    let out = pipe.turn();
    pipe.deliver(out, &mut [&mut flooder, &mut quiet, &mut sub]);
    let handled = pipe.metrics.publishes.load(std::sync::atomic::Ordering::Relaxed) - before;
    // Input processing happens per received datagram and once more per turn, each bounded by
    // the budget; the quiet peer's publish is delivered in the same turn.
    assert!(sub
        .take()
        .iter()
        .any(|f| matches!(f, Frame::Deliver(d) if d.topic.as_str() == "quiet")));
    assert!(handled < 1000, "flooder handled {handled} publishes in one turn (budget {budget})");
    pipe.drive(&mut [&mut flooder, &mut quiet, &mut sub]);
}

/// Found by the `shard_core` fuzz target: a datagram that only carries a connection's DCID
/// (garbage after it, so quiche drops it) from another source address made the node take that
/// address as the peer's and announce it in OBSERVED_ADDR; PUNCH introductions would then point
/// other peers at it. Only a packet quiche authenticates may move the peer's address.
#[test]
fn an_unauthenticated_datagram_does_not_change_the_peer_address() {
    let config = config();
    let mut pipe = Pipe::new(&config);
    let mut peer = connected(&mut pipe, 3001);
    let mut spoofed = vec![0x40];
    spoofed.extend_from_slice(peer.conn.destination_id().as_ref());
    spoofed.extend_from_slice(&[0x33; 40]);
    pipe.shard.handle_datagram(pipe.now, &mut spoofed, "192.0.2.7:9".parse().unwrap());
    peer.write(0, &Frame::Ping(frame::Ping { ping_id: 7, sent_at_us: 0 }));
    pipe.drive(&mut [&mut peer]);
    let frames = peer.take();
    assert!(frames.iter().any(|f| matches!(f, Frame::Pong(p) if p.ping_id == 7)), "PONG");
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::ObservedAddr(_))),
        "OBSERVED_ADDR after a spoofed datagram: {frames:?}"
    );
    assert_eq!(pipe.metrics.observed_addr_changes.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn calls_in_flight_keep_only_their_own_bytes_not_the_receive_buffers_they_arrived_in() {
    // Each CALL arrives in a packet of its own and is read into a fresh receive buffer
    // (16 KiB). Its procedure and arguments stay in the call state until the reply; kept as
    // slices they kept the whole buffer alive, 16 KiB per 64-byte call, and a stall with
    // thousands of calls in flight became hundreds of MiB (docs/BENCHMARKS.md, "RPC").
    const CALLS: usize = 2_000;
    let mut config = config();
    config.limits.max_inflight_calls_per_peer = CALLS;
    let mut pipe = Pipe::new(&config);
    let mut provider = connected(&mut pipe, 3001);
    let mut caller = connected(&mut pipe, 3002);
    provider.write(
        0,
        &Frame::Register(frame::Register { request_id: 7, procedure: "svc.echo".parse().unwrap() }),
    );
    pipe.drive(&mut [&mut provider, &mut caller]);
    assert!(provider.take().iter().any(|f| matches!(f, Frame::Ok(o) if o.request_id == 7)));
    // Warm up (quiche's stream buffers, the call tables) before measuring.
    let call = |id: u64| {
        Frame::Call(frame::Call {
            idempotent: true,
            call_id: id,
            timeout_ms: 60_000,
            procedure: "svc.echo".parse().unwrap(),
            payload: bytes::Bytes::from(vec![id as u8; 64]),
        })
    };
    let mut invoked = 0;
    let mut one_call = |pipe: &mut Pipe, id: u64| {
        caller.write(2, &call(id));
        pipe.drive(&mut [&mut caller, &mut provider]);
        // The provider never answers: every call stays in flight.
        invoked += provider.take().iter().filter(|f| matches!(f, Frame::Invoke(_))).count();
    };
    for id in 0..100 {
        one_call(&mut pipe, id);
    }
    let before = live_bytes();
    for id in 100..CALLS as u64 {
        one_call(&mut pipe, id);
    }
    let grown = live_bytes() - before;
    assert_eq!(invoked, CALLS, "every call reached the provider");
    let per_call = grown / (CALLS as i64 - 100);
    assert!(
        per_call < 2048,
        "{per_call} bytes kept per call in flight (a 64-byte call): receive buffers are pinned"
    );
}

fn packets_acked_by_node(peer: &mut Peer) -> u64 {
    peer.conn.stats().acked_bytes
}

fn counter(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

/// A shard with `ack_delay_us = 1000` and one connected peer, after the session settled (the
/// WELCOME's own ACK may have been deferred): nothing is pending when the test starts.
fn quiet_session_with_deferred_acks(port: u16) -> (Pipe, Peer) {
    let mut config = config();
    config.limits.ack_delay_us = 1_000;
    let mut pipe = Pipe::new(&config);
    let mut peer = connected(&mut pipe, port);
    pipe.now += std::time::Duration::from_millis(2);
    pipe.shard.handle_timeouts(pipe.now);
    let out = pipe.turn();
    pipe.deliver(out, &mut [&mut peer]);
    (pipe, peer)
}

/// A connection that only received waits up to `ack_delay_us` for data to carry its ACK, and
/// the ACK goes alone at that deadline (never later: the shard's next timeout is the deadline).
#[test]
fn an_ack_with_nothing_to_ride_on_waits_ack_delay_and_then_goes_alone() {
    let (mut pipe, mut peer) = quiet_session_with_deferred_acks(1101);
    let deferred_before = counter(&pipe.metrics.acks_deferred);
    let at_deadline_before = counter(&pipe.metrics.acks_at_deadline);
    let acked_before = packets_acked_by_node(&mut peer);

    // A PUBLISH nobody subscribed to, without a request id: the node has nothing to answer.
    peer.write(2, &publish("nobody.listens", 1));
    pipe.peer_to_shard(&mut peer);
    assert!(pipe.turn().is_empty(), "an ACK-only packet was sent at once");
    assert_eq!(counter(&pipe.metrics.acks_deferred), deferred_before + 1, "counted as deferred");

    // Just before the deadline still nothing; at it, the ACK.
    let deadline = pipe.shard.next_timeout().expect("the deferred ACK has a deadline");
    assert!(deadline <= pipe.now + std::time::Duration::from_micros(1_000));
    pipe.now = deadline - std::time::Duration::from_micros(1);
    pipe.shard.handle_timeouts(pipe.now);
    assert!(pipe.turn().is_empty(), "sent before its deadline");
    pipe.now = deadline;
    pipe.shard.handle_timeouts(pipe.now);
    let out = pipe.turn();
    assert_eq!(out.len(), 1, "one packet at the deadline");
    pipe.deliver(out, &mut [&mut peer]);
    assert!(packets_acked_by_node(&mut peer) > acked_before, "and it acknowledges the PUBLISH");
    assert_eq!(counter(&pipe.metrics.acks_at_deadline), at_deadline_before + 1);
}

/// When the node has something to send to the connection in the same turn (here the PONG to
/// its PING), the ACK rides on it: nothing is deferred and nothing waits.
#[test]
fn an_ack_rides_on_the_answer_sent_in_the_same_turn() {
    let (mut pipe, mut peer) = quiet_session_with_deferred_acks(1102);
    let deferred_before = counter(&pipe.metrics.acks_deferred);
    let acked_before = packets_acked_by_node(&mut peer);

    peer.write(0, &Frame::Ping(frame::Ping { ping_id: 7, sent_at_us: 1 }));
    pipe.peer_to_shard(&mut peer);
    let out = pipe.turn();
    assert_eq!(out.len(), 1, "the PONG, in one packet");
    pipe.deliver(out, &mut [&mut peer]);
    assert!(peer.take().iter().any(|f| matches!(f, Frame::Pong(p) if p.ping_id == 7)));
    assert!(packets_acked_by_node(&mut peer) > acked_before, "carrying the ACK of the PING");
    assert_eq!(counter(&pipe.metrics.acks_deferred), deferred_before, "nothing deferred");
}

/// `ack_delay_us = 0` restores quiche's behaviour: every turn that received ACKs at once.
#[test]
fn with_ack_delay_zero_the_ack_goes_out_in_the_same_turn() {
    let config = config();
    assert_eq!(config.limits.ack_delay_us, 0);
    let mut pipe = Pipe::new(&config);
    let mut peer = connected(&mut pipe, 1103);
    let acked_before = packets_acked_by_node(&mut peer);
    peer.write(2, &publish("nobody.listens", 1));
    pipe.peer_to_shard(&mut peer);
    let out = pipe.turn();
    assert_eq!(out.len(), 1, "the ACK, at once");
    pipe.deliver(out, &mut [&mut peer]);
    assert!(packets_acked_by_node(&mut peer) > acked_before);
    assert_eq!(counter(&pipe.metrics.acks_deferred), 0);
}
