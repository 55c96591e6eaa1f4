//! Fuzz target: the sans-I/O shard core (`fovea_engine::shard::Shard`) against real quiche
//! clients in memory, driven by a sequence of actions taken from the input.
//!
//! Each run starts a fresh shard (small limits, so every limit is within reach) and one
//! well-behaved client, the *witness*, through the handshake and HELLO. Then every action
//! (see `Action`) is followed by driving the pipe to quiescence and by the checks:
//!
//! 1. No panic, in the shard or in quiche (debug assertions and overflow checks are on), and
//!    quiescence within `DRIVE_ROUNDS` rounds (no livelock).
//! 2. Gauges agree with the shard and with what the run did: `connections` equals
//!    `connection_count()` and the node-wide count, and is at most the connections attempted
//!    plus the garbage datagrams sent; `peers` equals the node-wide count and is at most
//!    `max_peers` and `connections`, and at least the clients holding a live WELCOMEd session;
//!    `subscriptions` is at most `max_subscriptions_per_peer` per peer other than the witness;
//!    a one-shard node never queues messages for another shard.
//! 3. Every close a client sees from the node carries an application error code of
//!    docs/PROTOCOL.md §8 that closes connections (or the node's own transport INTERNAL_ERROR
//!    for a stream error); every ERROR frame a request-level code; every GOODBYE a known code;
//!    every frame the node sends decodes.
//! 4. The witness gets the PONG to its PING after every action, is never closed, and never sees
//!    frames it did nothing to deserve (DELIVER, INVOKE, MESSAGE, PUNCH, OBSERVED_ADDR: its
//!    address never changes).
//!
//! The expensive parts (the node's certificate, the clients' quiche configuration) are made
//! once per process. Clocks: the shard runs on the injected clock (`Action::Advance`); quiche
//! keeps its own real-time timers, so its loss recovery and idle timeouts rarely fire within a
//! run, while the node's HELLO timeout, keep-alive, rate limits, dedup window and call
//! deadlines do. quiche draws random connection ids and keys, so a reproducer replays the same
//! actions, not the same bytes on the wire.

#![no_main]

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fovea_codec::frame::{self, Frame};
use fovea_codec::{decode_frame, ErrorCode, Limits, Name, Pattern, Topic};
use fovea_engine::cid::ResetKey;
use fovea_engine::config::{NodeConfig, SlowConsumerPolicy};
use fovea_engine::identity::Identity;
use fovea_engine::metrics::ShardMetrics;
use fovea_engine::shard::{NodeShared, Shard, ShardContext};
use fovea_engine::udp::SendBatch;
use libfuzzer_sys::fuzz_target;

const NODE: &str = "127.0.0.1:4433";
/// Fuzzed clients at once (the witness comes on top).
const CLIENTS: usize = 3;
/// Actions per run: enough to reach deep states, few enough to keep runs fast.
const ACTIONS_MAX: usize = 48;
/// Rounds of `drive` before a run counts as a livelock. A run's input is at most a few KiB, so
/// even one frame per round would finish far below this.
const DRIVE_ROUNDS: usize = 4_000;
/// Peer ids the fuzzed clients choose from: few, so REPLACED and SEND/PUNCH targets are hit.
const PEER_IDS: u8 = 4;
const MAX_SUBS: usize = 6;
const MAX_PEERS: usize = 3;

/// Made once per process.
struct Setup {
    identity: Identity,
    data_dir: std::path::PathBuf,
    client_config: Mutex<quiche::Config>,
    /// The witness's peer id: random, so the input cannot name it (it would be replaced or sent
    /// to, which is fine for the node but not for the witness's checks).
    witness_id: [u8; 32],
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let mut tag = [0u8; 8];
        boring::rand::rand_bytes(&mut tag).unwrap();
        let data_dir = std::env::temp_dir().join(format!(
            "fovea-fuzz-shard-core-{}-{:x}",
            std::process::id(),
            u64::from_le_bytes(tag)
        ));
        let identity = fovea_engine::identity::load_or_create(&data_dir, None, None).unwrap();
        let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
        c.set_application_protos(&[b"fovea/1"]).unwrap();
        c.verify_peer(false);
        c.set_max_idle_timeout(30_000);
        // Small windows: a client that stops reading (Action::Mute) fills the node's send
        // budget quickly.
        c.set_initial_max_data(256 << 10);
        c.set_initial_max_stream_data_bidi_local(64 << 10);
        c.set_initial_max_stream_data_uni(64 << 10);
        c.set_initial_max_streams_uni(4);
        let mut witness_id = [0u8; 32];
        boring::rand::rand_bytes(&mut witness_id).unwrap();
        Setup { identity, data_dir, client_config: Mutex::new(c), witness_id }
    })
}

/// The fuzz input as a stream of numbers; reads past the end give zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// Up to `max - 1` bytes, the length first.
    fn blob(&mut self, max: u8) -> Bytes {
        let n = usize::from(self.byte() % max);
        Bytes::copy_from_slice(self.bytes(n))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Mostly small numbers (ids collide, limits are hit), sometimes any varint.
    fn number(&mut self) -> u64 {
        match self.byte() {
            b @ 0..=239 => u64::from(b % 8),
            240..=247 => u64::from(self.byte()) * 100,
            _ => {
                // Varints stop at 2^62 - 1.
                u64::from_le_bytes(pad8(self.bytes(8))) & ((1 << 62) - 1)
            }
        }
    }

    fn peer_id(&mut self) -> [u8; 32] {
        let mut id = [0u8; 32];
        id[0] = self.byte() % PEER_IDS;
        id[31] = 0xf0;
        id
    }

    fn payload(&mut self) -> Bytes {
        // Sizes around the node's max_payload (256) and the odd big one.
        let n = match self.byte() {
            b @ 0..=199 => usize::from(b % 16),
            200..=249 => 250 + usize::from(self.byte() % 12),
            _ => 2_000,
        };
        Bytes::from(vec![0x5a; n])
    }

    fn topic(&mut self) -> Topic {
        const T: [&str; 6] = ["a", "a.b", "b", "a.b.c", "c.d.e.f.g.h", "x"];
        T[usize::from(self.byte()) % T.len()].parse().unwrap()
    }

    fn pattern(&mut self) -> Pattern {
        const P: [&str; 8] = ["a", "a.*", "**", "a.**", "*.b", "b", "**.c", "c.d.e.f.g.h"];
        P[usize::from(self.byte()) % P.len()].parse().unwrap()
    }

    fn name(&mut self) -> Name {
        const N: [&str; 3] = ["echo", "svc.sum", "x"];
        N[usize::from(self.byte()) % N.len()].parse().unwrap()
    }

    /// A well-formed frame a client could send (and a few only a node may send).
    fn frame(&mut self) -> Frame {
        match self.byte() % 24 {
            0 | 1 => Frame::Hello(frame::Hello {
                version: if self.byte() < 240 { 1 } else { self.number() },
                peer_id: self.peer_id(),
                flags: self.byte() & 3,
                realm: if self.byte() & 1 == 0 { "default" } else { "r2" }.parse().unwrap(),
                cred_kind: self.byte() % 3,
                credential: self.blob(40),
                client_name: Bytes::from_static(b"fuzz"),
            }),
            2 | 3 => Frame::Ping(frame::Ping { ping_id: self.number(), sent_at_us: self.number() }),
            4 | 5 | 6 => Frame::Subscribe(frame::Subscribe {
                request_id: self.number(),
                sub_id: self.number(),
                pattern: self.pattern(),
            }),
            7 => Frame::Unsubscribe(frame::Unsubscribe {
                request_id: self.number(),
                sub_id: self.number(),
            }),
            8 | 9 | 10 => Frame::Publish(frame::Publish {
                request_id: self.number(),
                message_id: if self.byte() & 1 == 0 { None } else { Some(self.number()) },
                topic: self.topic(),
                payload: self.payload(),
            }),
            11 => Frame::Register(frame::Register {
                request_id: self.number(),
                procedure: self.name(),
            }),
            12 => Frame::Unregister(frame::Unregister {
                request_id: self.number(),
                procedure: self.name(),
            }),
            13 | 14 => Frame::Call(frame::Call {
                idempotent: self.byte() & 1 == 1,
                call_id: self.number(),
                timeout_ms: self.number(),
                procedure: self.name(),
                payload: self.payload(),
            }),
            15 => Frame::Reply(frame::Reply { id: self.number(), payload: self.payload() }),
            16 => Frame::CallError(frame::CallError {
                id: self.number(),
                code: self.number(),
                message: Bytes::from_static(b"no"),
            }),
            17 => Frame::Send(frame::Send {
                request_id: self.number(),
                target: self.peer_id(),
                payload: self.payload(),
            }),
            18 => Frame::PunchRequest(frame::PunchRequest {
                request_id: self.number(),
                target: self.peer_id(),
            }),
            19 => Frame::Goodbye(frame::Goodbye {
                code: self.number(),
                reason: Bytes::from_static(b"bye"),
            }),
            20 => Frame::Pong(frame::Pong {
                ping_id: self.number(),
                sent_at_us: self.number(),
                received_at_us: self.number(),
            }),
            21 => Frame::Auth(frame::Auth { signature: self.blob(70) }),
            22 => Frame::Store(frame::Store {
                request_id: self.number(),
                key: self.peer_id(),
                ttl_s: self.number(),
                value: self.payload(),
            }),
            _ => match self.byte() % 3 {
                // Node-only frames: PROTOCOL_VIOLATION.
                0 => Frame::Ok(frame::Ok { request_id: self.number() }),
                1 => Frame::Deliver(frame::Deliver {
                    sub_ids: std::iter::once(self.number()).collect(),
                    message_id: None,
                    topic: self.topic(),
                    payload: self.payload(),
                }),
                _ => Frame::Extension { frame_type: 0x80 | self.byte(), body: self.blob(16) },
            },
        }
    }
}

fn pad8(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..b.len()].copy_from_slice(b);
    out
}

/// One quiche client in memory.
struct Client {
    conn: quiche::Connection,
    addr: SocketAddr,
    rx: [BytesMut; 2],
    /// Writes not yet accepted by quiche (flow control), in order per stream.
    unsent: Vec<(u64, Bytes)>,
    /// Dropping everything to and from this client (a vanished peer).
    muted: bool,
    /// Was muted at some point: it may have missed its close (quiche does not repeat a
    /// CONNECTION_CLOSE to a peer that says nothing), so its view of the session is no evidence.
    muted_once: bool,
    welcomed: bool,
    /// The node closed the session (close seen, or GOODBYE/REPLACED announced).
    ended: bool,
    pongs: Vec<u64>,
    /// Its last datagram to the node, for replays.
    last_packet: Option<Vec<u8>>,
    witness: bool,
}

impl Client {
    fn new(port: u16, witness: bool) -> Client {
        let addr: SocketAddr = if witness {
            format!("10.0.0.2:{port}").parse().unwrap()
        } else {
            format!("127.0.0.1:{port}").parse().unwrap()
        };
        let mut scid = [0u8; 16];
        scid[..2].copy_from_slice(&port.to_be_bytes());
        scid[2] = witness as u8;
        let mut config = setup().client_config.lock().unwrap();
        let conn = quiche::connect(
            Some("localhost"),
            &quiche::ConnectionId::from_ref(&scid),
            addr,
            NODE.parse().unwrap(),
            &mut config,
        )
        .unwrap();
        Client {
            conn,
            addr,
            rx: [BytesMut::new(), BytesMut::new()],
            unsent: Vec::new(),
            muted: false,
            muted_once: false,
            welcomed: false,
            ended: false,
            pongs: Vec::new(),
            last_packet: None,
            witness,
        }
    }

    fn write(&mut self, stream: u64, bytes: Bytes) {
        self.unsent.push((stream, bytes));
        self.push_unsent();
    }

    fn push_unsent(&mut self) {
        let mut blocked: Vec<u64> = Vec::new();
        let mut rest = Vec::new();
        for (stream, bytes) in std::mem::take(&mut self.unsent) {
            if blocked.contains(&stream) {
                rest.push((stream, bytes));
                continue;
            }
            let n = match self.conn.stream_send(stream, &bytes, false) {
                Ok(n) => n,
                Err(quiche::Error::Done) => 0,
                // Closed or closing: the bytes go nowhere, as on a real network.
                Err(_) => bytes.len(),
            };
            if n < bytes.len() {
                blocked.push(stream);
                rest.push((stream, bytes.slice(n..)));
            }
        }
        self.unsent = rest;
    }

    /// Reads and checks what the node sent (claim 3, and claim 4 for the witness).
    fn read(&mut self) {
        let ids: Vec<u64> = self.conn.readable().collect();
        let mut tmp = [0u8; 16384];
        for id in ids {
            let slot = usize::from(id != 0);
            while let Ok((n, _)) = self.conn.stream_recv(id, &mut tmp) {
                self.rx[slot].extend_from_slice(&tmp[..n]);
            }
        }
        let mut frames = Vec::new();
        for rx in &mut self.rx {
            loop {
                match decode_frame(rx, &Limits::default()) {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => panic!("the node sent a frame that does not decode: {e}"),
                }
            }
        }
        for f in frames {
            self.check_frame(&f);
        }
    }

    fn check_frame(&mut self, f: &Frame) {
        match f {
            Frame::Welcome(_) => self.welcomed = true,
            Frame::Pong(p) => self.pongs.push(p.ping_id),
            Frame::Error(e) => {
                let code = ErrorCode::from_u64(e.code);
                assert!(
                    code.is_some_and(|c| !c.closes_connection()),
                    "ERROR with code {:#x}, not a request-level code of PROTOCOL.md §8",
                    e.code
                );
            }
            Frame::Goodbye(g) => {
                assert!(ErrorCode::from_u64(g.code).is_some(), "GOODBYE code {:#x}", g.code);
                self.ended = true;
            }
            _ => {}
        }
        if self.witness {
            assert!(
                !matches!(
                    f,
                    Frame::Deliver(_)
                        | Frame::Invoke(_)
                        | Frame::Message(_)
                        | Frame::Punch(_)
                        | Frame::ObservedAddr(_)
                        | Frame::Goodbye(_)
                        | Frame::Error(_)
                ),
                "the witness got {f:?}"
            );
        }
    }

    /// Claim 3 for the close, if the node closed this connection.
    fn check_close(&mut self) {
        let Some(e) = self.conn.peer_error() else { return };
        self.ended = true;
        if e.is_app {
            let code = ErrorCode::from_u64(e.error_code);
            assert!(
                code.is_some_and(|c| c.closes_connection()),
                "the node closed with application code {:#x}, not a closing code of §8",
                e.error_code
            );
        } else {
            assert_eq!(
                e.error_code,
                0x1,
                "the node closed with QUIC transport error {:#x} ({:?})",
                e.error_code,
                String::from_utf8_lossy(&e.reason)
            );
        }
        assert!(!self.witness, "the witness was closed: {e:?}");
    }

    /// Holds a session the node must count as a peer.
    fn live_session(&self) -> bool {
        self.welcomed
            && !self.ended
            && !self.muted_once
            && !self.conn.is_closed()
            && !self.conn.is_draining()
            && self.conn.local_error().is_none()
    }
}

struct Pipe {
    shard: Shard,
    metrics: Arc<ShardMetrics>,
    shared: Arc<NodeShared>,
    now: Instant,
    clients: [Option<Client>; CLIENTS],
    witness: Client,
    next_port: u16,
    /// Connections attempted and garbage datagrams sent: bounds for `connections`.
    attempts: u64,
    garbage: u64,
    witness_pings: u64,
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Fuzzed(usize),
    Witness,
}

impl Pipe {
    fn new(config: &NodeConfig) -> Pipe {
        let s = setup();
        let metrics = Arc::new(ShardMetrics::default());
        let shared = Arc::new(NodeShared::default());
        let ctx = ShardContext {
            index: 0,
            shards: 1,
            limits: config.limits.clone(),
            node_id: s.identity.node_id,
            reset_key: ResetKey::new(&s.identity.reset_secret),
            shared: shared.clone(),
            metrics: metrics.clone(),
            local_addr: NODE.parse().unwrap(),
            wall_clock: fovea_engine::shard::wall_clock_now(),
        };
        let quic = fovea_engine::quic::server_config(config, &s.identity).unwrap();
        let now = Instant::now();
        let shard = Shard::new(ctx, quic, now);
        let witness = Client::new(1, true);
        let mut pipe = Pipe {
            shard,
            metrics,
            shared,
            now,
            clients: [None, None, None],
            witness,
            next_port: 1000,
            attempts: 1,
            garbage: 0,
            witness_pings: 0,
        };
        pipe.drive();
        assert!(pipe.witness.conn.is_established(), "the witness's handshake");
        let hello = hello(s.witness_id);
        pipe.witness.write(0, hello.to_bytes());
        pipe.drive();
        assert!(pipe.witness.welcomed, "the witness got no WELCOME");
        pipe
    }

    fn client(&mut self, which: Which) -> Option<&mut Client> {
        match which {
            Which::Witness => Some(&mut self.witness),
            Which::Fuzzed(i) => self.clients[i].as_mut(),
        }
    }

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

    /// Runs turns until neither side has anything to say (claim 1's livelock bound).
    fn drive(&mut self) {
        for _ in 0..DRIVE_ROUNDS {
            let mut moved = self.shard.has_pending_input();
            let mut buf = [0u8; 1500];
            let now = self.now;
            for client in
                self.clients.iter_mut().flatten().chain(std::iter::once(&mut self.witness))
            {
                if client.muted {
                    continue;
                }
                // Writes that flow control holds back count as movement only once they leave
                // as packets: a node that stopped reading a stream must not look like a livelock.
                client.push_unsent();
                loop {
                    match client.conn.send(&mut buf) {
                        Ok((n, _)) => {
                            moved = true;
                            client.last_packet = Some(buf[..n].to_vec());
                            self.shard.handle_datagram(now, &mut buf[..n], client.addr);
                        }
                        Err(_) => break,
                    }
                }
            }
            let out = self.turn();
            moved |= !out.is_empty();
            self.deliver(out);
            assert_eq!(self.shard.outbox_len(), 0, "a one-shard node queued cross-shard messages");
            if !moved {
                return;
            }
        }
        panic!("no quiescence after {DRIVE_ROUNDS} rounds");
    }

    fn deliver(&mut self, out: Vec<(Vec<u8>, SocketAddr)>) {
        let from: SocketAddr = NODE.parse().unwrap();
        for (mut pkt, to) in out {
            let client = self
                .clients
                .iter_mut()
                .flatten()
                .chain(std::iter::once(&mut self.witness))
                .find(|c| c.addr == to && !c.muted);
            if let Some(c) = client {
                let _ = c.conn.recv(&mut pkt, quiche::RecvInfo { from, to });
                c.read();
            }
        }
    }

    /// Moves the shard's clock forward in steps (so keep-alives run in between, as they would).
    fn advance(&mut self, by: Duration) {
        let step = Duration::from_millis(2_000);
        let mut left = by;
        while !left.is_zero() {
            let d = left.min(step);
            left -= d;
            self.now += d;
            self.shard.handle_timeouts(self.now);
            for c in self.clients.iter_mut().flatten().chain(std::iter::once(&mut self.witness)) {
                c.conn.on_timeout();
            }
            self.drive();
        }
    }

    fn garbage(&mut self, bytes: &[u8], from: SocketAddr) {
        self.garbage += 1;
        let mut buf = bytes.to_vec();
        self.shard.handle_datagram(self.now, &mut buf, from);
    }

    /// The witness's round trip (claim 4).
    fn witness_ping(&mut self) {
        self.witness_pings += 1;
        let id = self.witness_pings;
        let ping = Frame::Ping(frame::Ping { ping_id: id, sent_at_us: 0 });
        self.witness.write(0, ping.to_bytes());
        self.drive();
        assert!(self.witness.pongs.contains(&id), "the witness got no PONG for PING {id}");
        self.witness.pongs.clear();
    }

    /// Claims 2 and 3 after an action.
    fn check(&mut self) {
        if trace() {
            let m = &self.metrics;
            eprintln!(
                "  connections {} peers {} subscriptions {}",
                m.connections.load(Relaxed),
                m.peers.load(Relaxed),
                m.subscriptions.load(Relaxed)
            );
            for (i, c) in self.clients.iter().enumerate() {
                if let Some(c) = c {
                    eprintln!(
                        "  client {i} {}: welcomed {} ended {} muted {} closed {} peer_error {:?}",
                        c.addr,
                        c.welcomed,
                        c.ended,
                        c.muted,
                        c.conn.is_closed(),
                        c.conn.peer_error()
                    );
                }
            }
        }
        for c in self.clients.iter_mut().flatten().chain(std::iter::once(&mut self.witness)) {
            c.check_close();
        }
        let m = &self.metrics;
        let connections = m.connections.load(Relaxed);
        let peers = m.peers.load(Relaxed);
        let subscriptions = m.subscriptions.load(Relaxed);
        assert_eq!(connections, self.shard.connection_count() as u64, "connections gauge");
        assert_eq!(connections, self.shared.connections.load(Relaxed) as u64, "node connections");
        assert!(
            connections <= self.attempts + self.garbage,
            "{connections} connections from {} clients and {} garbage datagrams",
            self.attempts,
            self.garbage
        );
        assert_eq!(peers, self.shared.peers.load(Relaxed) as u64, "node-wide peers");
        assert!(peers <= MAX_PEERS as u64, "{peers} peers, max_peers {MAX_PEERS}");
        assert!(peers <= connections, "{peers} peers on {connections} connections");
        let live = self.clients.iter().flatten().chain(std::iter::once(&self.witness));
        let live = live.filter(|c| c.live_session()).count() as u64;
        assert!(peers >= live, "{peers} peers but {live} clients hold a session");
        assert!(
            subscriptions <= (MAX_SUBS as u64) * peers.saturating_sub(1),
            "{subscriptions} subscriptions on {peers} peers (one is the witness, with none), \
             max {MAX_SUBS} each"
        );
    }

    fn open(&mut self, i: usize, input: &mut Input<'_>) {
        if self.clients[i].as_ref().is_some_and(|c| !c.conn.is_closed()) {
            return;
        }
        self.next_port += 1;
        self.attempts += 1;
        self.clients[i] = Some(Client::new(self.next_port, false));
        self.drive();
        // Mostly say HELLO right away, so the fuzzer spends its bytes on what comes after.
        if input.byte() < 200 {
            let id = input.peer_id();
            if let Some(c) = self.clients[i].as_mut() {
                c.write(0, hello(id).to_bytes());
            }
            self.drive();
        }
    }
}

fn hello(peer_id: [u8; 32]) -> Frame {
    Frame::Hello(frame::Hello {
        version: 1,
        peer_id,
        flags: 0,
        realm: "default".parse().unwrap(),
        cred_kind: 0,
        credential: Bytes::new(),
        client_name: Bytes::from_static(b"fuzz"),
    })
}

fn config(control: u8) -> NodeConfig {
    let mut c = NodeConfig::default();
    c.node.data_dir = setup().data_dir.clone();
    let l = &mut c.limits;
    l.max_peers = MAX_PEERS;
    l.max_subscriptions_per_peer = MAX_SUBS;
    l.max_payload = 256;
    l.max_topic_len = 64;
    l.max_topic_depth = 6;
    l.send_budget_bytes = 4_096;
    l.slow_consumer =
        if control & 1 == 0 { SlowConsumerPolicy::Drop } else { SlowConsumerPolicy::Disconnect };
    // 0: every handshake goes through Retry.
    l.retry_threshold = if control & 2 == 0 { 512 } else { 0 };
    l.frames_per_turn = 8;
    l.dedup_window = 4;
    l.dedup_window_ms = 1_000;
    l.max_registrations_per_peer = 2;
    l.max_inflight_calls_per_peer = 3;
    l.rpc_default_timeout_ms = 1_000;
    l.rpc_max_timeout_ms = 5_000;
    l.relay_bytes_per_s = 1_024;
    l.relay_burst_bytes = 2_048;
    l.punch_rate_per_s = 1;
    l.punch_burst = 2;
    l.conn_window_bytes = 256 << 10;
    l.stream_window_bytes = 128 << 10;
    if control & 4 != 0 {
        l.publish_rate_per_s = 10;
        l.publish_burst = 4;
        l.flood_after_violations = 4;
    }
    l.max_connections_per_ip = 3;
    l.handshakes_per_ip_per_s = 5;
    l.handshake_burst_per_ip = 6;
    c
}

/// What one step of a run does; decoded from one kind byte and the bytes after it.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Well-formed frames on the session stream (0) or the data stream (2).
    Frames,
    /// Raw bytes on a stream: garbage, truncated or oversized frames.
    Raw,
    /// A datagram of garbage, maybe padded to look like an Initial.
    Garbage,
    /// Garbage behind a real connection id (a client's or the witness's), from that client's
    /// address or another one.
    GarbageForCid,
    /// A client's next datagram with one byte flipped.
    Corrupt,
    /// A client's last datagram again, from its address or another one.
    Replay,
    Advance,
    Close,
    Open,
    /// Stop (or resume) delivering to and from a client.
    Mute,
}

fn action(kind: u8) -> Action {
    match kind % 16 {
        0..=4 => Action::Frames,
        5 | 6 => Action::Raw,
        7 => Action::Garbage,
        8 => Action::GarbageForCid,
        9 => Action::Corrupt,
        10 => Action::Replay,
        11 | 12 => Action::Advance,
        13 => Action::Close,
        14 => Action::Open,
        _ => Action::Mute,
    }
}

/// `FOVEA_FUZZ_TRACE=1` when replaying: print each action and the clients' state after it.
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FOVEA_FUZZ_TRACE").is_some())
}

fn run(data: &[u8]) {
    let mut input = Input(data);
    let control = input.byte();
    let config = config(control);
    let mut pipe = Pipe::new(&config);
    pipe.open(0, &mut input);
    for _ in 0..ACTIONS_MAX {
        if input.is_empty() {
            break;
        }
        let kind = input.byte();
        let i = usize::from(kind >> 4) % CLIENTS;
        let stream = if input.byte() & 1 == 0 { 0 } else { 2 };
        if trace() {
            eprintln!("action {:?} client {i} stream {stream}", action(kind));
        }
        match action(kind) {
            Action::Frames => {
                let n = usize::from(input.byte() % 4) + 1;
                let mut bytes = BytesMut::new();
                for _ in 0..n {
                    let frame = input.frame();
                    if trace() {
                        eprintln!("  {frame:?}");
                    }
                    frame.encode(&mut bytes);
                }
                if let Some(c) = pipe.clients[i].as_mut() {
                    c.write(stream, bytes.freeze());
                }
            }
            Action::Raw => {
                let n = usize::from(input.byte());
                let bytes = Bytes::copy_from_slice(input.bytes(n));
                if let Some(c) = pipe.clients[i].as_mut() {
                    c.write(stream, bytes);
                }
            }
            Action::Garbage => {
                let n = usize::from(input.byte()) * 6;
                let mut bytes = input.bytes(n).to_vec();
                if stream == 2 {
                    bytes.resize(1200.max(bytes.len()), 0);
                }
                let port = 40_000 + u16::from(input.byte());
                pipe.garbage(&bytes, format!("127.0.0.1:{port}").parse().unwrap());
            }
            Action::GarbageForCid => {
                let target = if kind & 0x80 == 0 { Which::Fuzzed(i) } else { Which::Witness };
                let n = usize::from(input.byte());
                let tail = input.bytes(n).to_vec();
                let spoofed = input.byte() & 1 == 1;
                if let Some(c) = pipe.client(target) {
                    let mut bytes = vec![0x40];
                    bytes.extend_from_slice(c.conn.destination_id().as_ref());
                    bytes.extend_from_slice(&tail);
                    let from = if spoofed { "127.0.0.9:9".parse().unwrap() } else { c.addr };
                    pipe.garbage(&bytes, from);
                }
            }
            Action::Corrupt => {
                let at = usize::from(input.byte());
                let xor = input.byte() | 1;
                let now = pipe.now;
                if let Some(c) = pipe.clients[i].as_mut() {
                    let mut buf = [0u8; 1500];
                    if let Ok((n, _)) = c.conn.send(&mut buf) {
                        buf[at % n] ^= xor;
                        let addr = c.addr;
                        pipe.garbage += 1;
                        pipe.shard.handle_datagram(now, &mut buf[..n], addr);
                    }
                }
            }
            Action::Replay => {
                let spoofed = input.byte() & 1 == 1;
                let packet = pipe.clients[i].as_ref().and_then(|c| {
                    let from = if spoofed { "127.0.0.8:8".parse().unwrap() } else { c.addr };
                    c.last_packet.clone().map(|p| (p, from))
                });
                if let Some((p, from)) = packet {
                    pipe.garbage(&p, from);
                }
            }
            Action::Advance => {
                const MS: [u64; 8] = [1, 20, 300, 1_100, 4_000, 5_500, 11_000, 61_000];
                pipe.advance(Duration::from_millis(MS[usize::from(input.byte() % 8)]));
            }
            Action::Close => {
                let app = input.byte() & 1 == 0;
                let code = input.number();
                if let Some(c) = pipe.clients[i].as_mut() {
                    let _ = c.conn.close(app, code, b"fuzz");
                }
            }
            Action::Open => pipe.open(i, &mut input),
            Action::Mute => {
                if let Some(c) = pipe.clients[i].as_mut() {
                    c.muted = !c.muted;
                    c.muted_once = true;
                }
            }
        }
        pipe.drive();
        pipe.check();
        pipe.witness_ping();
    }
    pipe.check();
}

fuzz_target!(|data: &[u8]| run(data));
