//! Test harness: a real node (in-process shards on real loopback sockets, or the `fovea`
//! binary) and a small blocking QUIC client speaking the Fovea protocol through quiche.
//!
//! Every wait has a deadline and returns as soon as its condition holds; nothing sleeps to
//! "let things settle".
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fovea_codec::frame::{self, Frame};
use fovea_codec::{decode_frame, Limits, Pattern, Realm, Topic};
use fovea_engine::config::NodeConfig;
use fovea_engine::node::Node;

/// Generous bound for any single wait in tests (CI machines are slow and shared).
pub const WAIT: Duration = Duration::from_secs(20);

/// A node configuration for tests: loopback, ephemeral ports, its own data dir.
pub fn test_config(shards: usize) -> NodeConfig {
    let mut c = NodeConfig::default();
    c.node.listen = "127.0.0.1:0".parse().unwrap();
    c.node.metrics = "127.0.0.1:0".parse().unwrap();
    c.node.shards = shards;
    c.node.pin_cores = false;
    // Test clients stop reading when a test ends; don't wait long for their acknowledgements.
    c.node.drain_timeout_ms = 1_000;
    let dir =
        std::env::temp_dir().join(format!("fovea-test-{}-{}", std::process::id(), rand_u64()));
    c.node.data_dir = dir;
    c
}

/// Starts an in-process node.
pub fn start_node(config: NodeConfig) -> Node {
    Node::start(config).expect("node starts")
}

/// A random u64 (peer ids, temp dirs).
pub fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    boring::rand::rand_bytes(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// A random peer id.
pub fn random_peer_id() -> [u8; 32] {
    let mut b = [0u8; 32];
    boring::rand::rand_bytes(&mut b).unwrap();
    b
}

/// How a test client ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub code: u64,
    pub by_node: bool,
    pub reason: String,
}

/// A blocking Fovea client for tests.
pub struct TestClient {
    pub conn: quiche::Connection,
    socket: UdpSocket,
    node: SocketAddr,
    local: SocketAddr,
    session_rx: BytesMut,
    data_rx: BytesMut,
    pending: VecDeque<Frame>,
    next_request: u64,
    pub peer_id: [u8; 32],
    pub welcome: Option<frame::Welcome>,
    limits: Limits,
}

fn client_config() -> quiche::Config {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
    c.set_application_protos(&[b"fovea/1"]).unwrap();
    c.verify_peer(false);
    c.set_max_idle_timeout(30_000);
    c.set_max_recv_udp_payload_size(1472);
    c.set_max_send_udp_payload_size(1350);
    // Windows of a typical client: a subscriber that stops reading holds back at most this
    // much in the node's QUIC buffers; the rest is the node's send budget.
    c.set_initial_max_data(1 << 20);
    c.set_initial_max_stream_data_bidi_local(256 << 10);
    c.set_initial_max_stream_data_bidi_remote(256 << 10);
    c.set_initial_max_stream_data_uni(256 << 10);
    c.set_initial_max_streams_bidi(4);
    c.set_initial_max_streams_uni(4);
    c
}

impl TestClient {
    /// Connects and completes the QUIC handshake (no HELLO yet).
    pub fn connect_raw(node: SocketAddr) -> TestClient {
        Self::handshake(node, WAIT).unwrap_or_else(|e| panic!("handshake: {e}"))
    }

    /// Like `connect_raw`, but a refused or failed handshake is an `Err`; a refused handshake
    /// gets no answer, and a few seconds is plenty on loopback.
    pub fn connect_raw_result(node: SocketAddr) -> Result<TestClient, String> {
        Self::handshake(node, Duration::from_secs(3))
    }

    fn handshake(node: SocketAddr, wait: Duration) -> Result<TestClient, String> {
        Self::handshake_opts(node, &ClientOpts { wait, ..ClientOpts::default() })
    }

    /// Connects with a chosen source address, certificate verification and client
    /// certificate; a refused or failed handshake is an `Err` after `opts.wait`.
    pub fn connect_with(node: SocketAddr, opts: &ClientOpts) -> Result<TestClient, String> {
        Self::handshake_opts(node, opts)
    }

    fn handshake_opts(node: SocketAddr, opts: &ClientOpts) -> Result<TestClient, String> {
        let wait = opts.wait;
        let socket = UdpSocket::bind((opts.bind.unwrap_or([127, 0, 0, 1].into()), 0)).unwrap();
        let local = socket.local_addr().unwrap();
        let mut scid = [0u8; 16];
        boring::rand::rand_bytes(&mut scid).unwrap();
        let scid = quiche::ConnectionId::from_vec(scid.to_vec());
        let mut config = client_config();
        if let Some(ca) = &opts.ca {
            config.verify_peer(true);
            config.load_verify_locations_from_file(ca.to_str().unwrap()).unwrap();
        }
        if let Some((cert, key)) = &opts.cert {
            config.load_cert_chain_from_pem_file(cert.to_str().unwrap()).unwrap();
            config.load_priv_key_from_pem_file(key.to_str().unwrap()).unwrap();
        }
        let conn = quiche::connect(Some("localhost"), &scid, local, node, &mut config).unwrap();
        let mut c = TestClient {
            conn,
            socket,
            node,
            local,
            session_rx: BytesMut::new(),
            data_rx: BytesMut::new(),
            pending: VecDeque::new(),
            next_request: 1,
            peer_id: random_peer_id(),
            welcome: None,
            limits: Limits { max_sub_ids: 1 << 16, ..Limits::default() },
        };
        let deadline = Instant::now() + wait;
        while !c.conn.is_established() {
            if c.conn.is_closed() {
                return Err(format!("closed during handshake: {:?}", c.conn.peer_error()));
            }
            if Instant::now() >= deadline {
                return Err("handshake timed out".into());
            }
            c.step(deadline);
        }
        Ok(c)
    }

    /// Connects, sends HELLO in `realm` and waits for WELCOME.
    pub fn connect(node: SocketAddr, realm: &str) -> TestClient {
        Self::connect_as(node, realm, random_peer_id())
    }

    /// Like `connect` with a chosen peer id.
    pub fn connect_as(node: SocketAddr, realm: &str, peer_id: [u8; 32]) -> TestClient {
        let mut c = Self::connect_raw(node);
        c.peer_id = peer_id;
        c.send_session(&hello(peer_id, realm));
        let f = c.expect_frame(|f| matches!(f, Frame::Welcome(_)), WAIT);
        if let Frame::Welcome(w) = f {
            c.welcome = Some(w);
        }
        c
    }

    /// Sends a frame on the session stream.
    pub fn send_session(&mut self, f: &Frame) {
        self.send_raw(0, &f.to_bytes());
    }

    /// Sends a frame on the client data stream.
    pub fn send_data(&mut self, f: &Frame) {
        self.send_raw(2, &f.to_bytes());
    }

    /// Writes raw bytes to a stream (all of them, pumping the connection as needed).
    pub fn send_raw(&mut self, stream: u64, bytes: &[u8]) {
        let deadline = Instant::now() + WAIT;
        let mut off = 0;
        while off < bytes.len() {
            match self.conn.stream_send(stream, &bytes[off..], false) {
                Ok(n) => off += n,
                Err(quiche::Error::Done) => {}
                Err(e) => panic!("stream_send: {e}"),
            }
            self.flush();
            if off < bytes.len() {
                assert!(Instant::now() < deadline, "send blocked too long");
                self.step(deadline);
            }
        }
        self.flush();
    }

    /// A fresh request id.
    pub fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// SUBSCRIBE and wait for OK; panics on ERROR.
    pub fn subscribe(&mut self, sub_id: u64, pattern: &str) {
        let r = self.request_id();
        self.send_session(&Frame::Subscribe(frame::Subscribe {
            request_id: r,
            sub_id,
            pattern: pattern.parse::<Pattern>().unwrap(),
        }));
        match self.expect_response(r) {
            Frame::Ok(_) => {}
            other => panic!("subscribe {pattern}: {other:?}"),
        }
    }

    /// SUBSCRIBE and return the response (OK or ERROR).
    pub fn try_subscribe(&mut self, sub_id: u64, pattern: &str) -> Frame {
        let r = self.request_id();
        self.send_session(&Frame::Subscribe(frame::Subscribe {
            request_id: r,
            sub_id,
            pattern: pattern.parse::<Pattern>().unwrap(),
        }));
        self.expect_response(r)
    }

    /// UNSUBSCRIBE and wait for the response.
    pub fn unsubscribe(&mut self, sub_id: u64) -> Frame {
        let r = self.request_id();
        self.send_session(&Frame::Unsubscribe(frame::Unsubscribe { request_id: r, sub_id }));
        self.expect_response(r)
    }

    /// PUBLISH on the data stream without waiting.
    pub fn publish(&mut self, topic: &str, payload: &[u8]) {
        let mut out = BytesMut::new();
        fovea_codec::encode_publish(0, None, &topic.parse::<Topic>().unwrap(), payload, &mut out);
        self.send_raw(2, &out);
    }

    /// PUBLISH with a request id and message id; waits for OK/ERROR.
    pub fn publish_acked(&mut self, topic: &str, payload: &[u8], message_id: Option<u64>) -> Frame {
        let r = self.request_id();
        let mut out = BytesMut::new();
        fovea_codec::encode_publish(
            r,
            message_id,
            &topic.parse::<Topic>().unwrap(),
            payload,
            &mut out,
        );
        self.send_raw(2, &out);
        self.expect_response(r)
    }

    /// Waits for the OK or ERROR of `request_id`.
    pub fn expect_response(&mut self, request_id: u64) -> Frame {
        self.expect_frame(
            |f| {
                matches!(f, Frame::Ok(o) if o.request_id == request_id)
                    || matches!(f, Frame::Error(e) if e.request_id == request_id)
            },
            WAIT,
        )
    }

    /// Waits for a frame matching `pred`; frames that do not match stay queued.
    pub fn expect_frame(&mut self, pred: impl Fn(&Frame) -> bool, wait: Duration) -> Frame {
        self.try_expect_frame(pred, wait).unwrap_or_else(|| {
            panic!("no matching frame within {wait:?}; closed: {:?}", self.closed())
        })
    }

    /// Like `expect_frame`, `None` on timeout or close.
    pub fn try_expect_frame(
        &mut self,
        pred: impl Fn(&Frame) -> bool,
        wait: Duration,
    ) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = self.pending.iter().position(&pred) {
                return self.pending.remove(i);
            }
            if self.conn.is_closed() || Instant::now() >= deadline {
                return None;
            }
            self.step(deadline);
        }
    }

    /// Next DELIVER.
    pub fn next_deliver(&mut self, wait: Duration) -> Option<frame::Deliver> {
        match self.try_expect_frame(|f| matches!(f, Frame::Deliver(_)), wait)? {
            Frame::Deliver(d) => Some(d),
            _ => unreachable!(),
        }
    }

    /// Frames received so far and not consumed.
    pub fn drain_pending(&mut self) -> Vec<Frame> {
        self.pending.drain(..).collect()
    }

    /// Processes traffic until `deadline` or until nothing more arrives for `quiet`.
    pub fn pump_for(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        while Instant::now() < deadline && !self.conn.is_closed() {
            self.step(deadline);
        }
    }

    /// Waits until the node closes the connection.
    pub fn wait_closed(&mut self, wait: Duration) -> Option<Closed> {
        let deadline = Instant::now() + wait;
        while !self.conn.is_closed() && Instant::now() < deadline {
            self.step(deadline);
        }
        self.closed()
    }

    /// How the connection ended, if it did.
    pub fn closed(&self) -> Option<Closed> {
        if let Some(e) = self.conn.peer_error() {
            return Some(Closed {
                code: e.error_code,
                by_node: true,
                reason: String::from_utf8_lossy(&e.reason).into_owned(),
            });
        }
        if self.conn.is_closed() {
            return Some(Closed { code: u64::MAX, by_node: false, reason: "closed".into() });
        }
        None
    }

    /// Sends everything quiche has.
    pub fn flush(&mut self) {
        let mut out = [0u8; 1500];
        loop {
            match self.conn.send(&mut out) {
                Ok((n, info)) => {
                    let _ = self.socket.send_to(&out[..n], info.to);
                }
                Err(quiche::Error::Done) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
    }

    /// One round: flush, wait for a datagram (bounded by quiche's timer and `deadline`), feed
    /// it, decode frames.
    pub fn step(&mut self, deadline: Instant) {
        self.flush();
        let now = Instant::now();
        let mut wait = deadline.saturating_duration_since(now).max(Duration::from_millis(1));
        if let Some(t) = self.conn.timeout() {
            wait = wait.min(t.max(Duration::from_millis(1)));
        }
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 65535];
        match self.socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let info = quiche::RecvInfo { from, to: self.local };
                let _ = self.conn.recv(&mut buf[..n], info);
                // Drain whatever else is already queued without blocking.
                self.socket.set_nonblocking(true).unwrap();
                while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                    let _ =
                        self.conn.recv(&mut buf[..n], quiche::RecvInfo { from, to: self.local });
                }
                self.socket.set_nonblocking(false).unwrap();
            }
            Err(_) => {
                if self.conn.timeout() == Some(Duration::ZERO) || self.conn.timeout().is_some() {
                    self.conn.on_timeout();
                }
            }
        }
        self.read_streams();
        self.flush();
    }

    fn read_streams(&mut self) {
        let readable: Vec<u64> = self.conn.readable().collect();
        for id in readable {
            let buf = if id == 0 { &mut self.session_rx } else { &mut self.data_rx };
            let mut tmp = [0u8; 65536];
            while let Ok((n, _)) = self.conn.stream_recv(id, &mut tmp) {
                buf.extend_from_slice(&tmp[..n]);
            }
        }
        for buf in [&mut self.session_rx, &mut self.data_rx] {
            loop {
                match decode_frame(buf, &self.limits) {
                    // Like a real client: answer the node's keep-alive PINGs at once.
                    Ok(Some(Frame::Ping(p))) => {
                        let pong = Frame::Pong(frame::Pong {
                            ping_id: p.ping_id,
                            sent_at_us: p.sent_at_us,
                            received_at_us: 0,
                        });
                        let _ = self.conn.stream_send(0, &pong.to_bytes(), false);
                        self.pending.push_back(Frame::Ping(p));
                    }
                    Ok(Some(f)) => self.pending.push_back(f),
                    Ok(None) => break,
                    Err(e) => panic!("client failed to decode a node frame: {e}"),
                }
            }
        }
    }

    /// The node address.
    pub fn node(&self) -> SocketAddr {
        self.node
    }

    /// The address the node sees this client at.
    pub fn source_addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Moves to a new UDP source port without telling quiche, as a NAT rebinding does: the
    /// node sees the connection's packets arrive from a new address.
    pub fn rebind(&mut self) {
        self.socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    }
}

/// How `TestClient::connect_with` connects.
#[derive(Debug, Clone)]
pub struct ClientOpts {
    /// Source IP (default 127.0.0.1; any 127.x.y.z works on Linux loopback).
    pub bind: Option<std::net::IpAddr>,
    /// Verify the node's certificate against this CA file (default: no verification).
    pub ca: Option<std::path::PathBuf>,
    /// Present this client certificate chain and key (PEM files).
    pub cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// How long the handshake may take.
    pub wait: Duration,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts { bind: None, ca: None, cert: None, wait: Duration::from_secs(3) }
    }
}

/// A HELLO frame with a credential (`cred_kind` 1: token, 2: Ed25519 public key).
pub fn hello_with(peer_id: [u8; 32], realm: &str, cred_kind: u8, credential: &[u8]) -> Frame {
    Frame::Hello(frame::Hello {
        version: 1,
        peer_id,
        flags: 0,
        realm: realm.parse::<Realm>().unwrap(),
        cred_kind,
        credential: Bytes::copy_from_slice(credential),
        client_name: Bytes::from_static(b"test"),
    })
}

/// A HELLO frame.
pub fn hello(peer_id: [u8; 32], realm: &str) -> Frame {
    Frame::Hello(frame::Hello {
        version: 1,
        peer_id,
        flags: 0,
        realm: realm.parse::<Realm>().unwrap(),
        cred_kind: 0,
        credential: Bytes::new(),
        client_name: Bytes::from_static(b"test"),
    })
}

/// Reads the node's metrics text.
pub fn metrics_text(http: SocketAddr) -> String {
    http_get(http, "/metrics")
}

/// The whole HTTP/1.0 response (headers and body) of the node's endpoint for `path`.
pub fn http_get(http: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of `name{shard="all"}` in the metrics text.
pub fn metric(http: SocketAddr, name: &str) -> u64 {
    let text = metrics_text(http);
    let key = format!("{name}{{shard=\"all\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("metric {name} missing"))
        .trim()
        .parse()
        .unwrap()
}

/// A peer id that the node's hash assigns to `shard` of `shards`, so a test places peers on the
/// shards it means to rather than where chance puts them.
pub fn peer_on(shard: usize, shards: usize) -> [u8; 32] {
    std::iter::repeat_with(random_peer_id)
        .find(|id| fovea_engine::shard::owner_shard(id, shards) == shard)
        .unwrap()
}

/// Polls `cond` until it holds or `wait` passes (no fixed sleeps: each poll is a real query).
pub fn wait_until(wait: Duration, mut cond: impl FnMut() -> bool) -> bool {
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

/// The QUIC configuration of `TestClient`, for raw quiche connections in tests.
pub fn raw_client_config() -> quiche::Config {
    client_config()
}

/// One connection of a `Swarm`.
pub struct SwarmConn {
    pub conn: quiche::Connection,
    sock: usize,
    rx: BytesMut,
    hello_sent: bool,
    /// WELCOME received.
    pub welcomed: bool,
    /// OK of the SUBSCRIBE (request id 1) received.
    pub subscribed: bool,
    /// DELIVERs received (payloads are dropped).
    pub delivered: usize,
    /// The close code the node sent, if any.
    pub closed_with: Option<u64>,
    data_head: Vec<u8>,
    data_skip: usize,
}

/// Many raw quiche connections on a few UDP sockets, driven from one thread in batches: the
/// cheap way to hold thousands of subscribers in a test. Each connection sends HELLO and one
/// SUBSCRIBE (request id 1, subscription id 1) of `pattern` as soon as it is established.
pub struct Swarm {
    node: SocketAddr,
    sockets: Vec<UdpSocket>,
    pub conns: Vec<SwarmConn>,
    by_scid: std::collections::HashMap<[u8; 16], usize>,
    config: quiche::Config,
    pattern: String,
    /// Whether connections read their streams (a subscriber that never reads: false).
    pub reading: bool,
}

impl Swarm {
    /// A swarm with `sockets` source ports, subscribing its connections to `pattern`.
    pub fn new(node: SocketAddr, sockets: usize, pattern: &str) -> Swarm {
        let sockets = (0..sockets)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        Swarm {
            node,
            sockets,
            conns: Vec::new(),
            by_scid: std::collections::HashMap::new(),
            config: client_config(),
            pattern: pattern.into(),
            reading: true,
        }
    }

    /// Starts `n` more connections (their first flight is sent by the next `drive`).
    pub fn open(&mut self, n: usize) -> std::ops::Range<usize> {
        let start = self.conns.len();
        for i in start..start + n {
            let mut scid = [0u8; 16];
            boring::rand::rand_bytes(&mut scid).unwrap();
            let sock = i % self.sockets.len();
            let local = self.sockets[sock].local_addr().unwrap();
            let cid = quiche::ConnectionId::from_ref(&scid);
            let conn = quiche::connect(Some("localhost"), &cid, local, self.node, &mut self.config)
                .unwrap();
            self.by_scid.insert(scid, i);
            self.conns.push(SwarmConn {
                conn,
                sock,
                rx: BytesMut::new(),
                hello_sent: false,
                welcomed: false,
                subscribed: false,
                delivered: 0,
                closed_with: None,
                data_head: Vec::new(),
                data_skip: 0,
            });
        }
        start..start + n
    }

    fn flush_one(&mut self, i: usize) {
        let mut out = [0u8; 1500];
        let c = &mut self.conns[i];
        while let Ok((n, info)) = c.conn.send(&mut out) {
            let _ = self.sockets[c.sock].send_to(&out[..n], info.to);
        }
    }

    fn service(&mut self, i: usize) {
        let pattern = self.pattern.clone();
        let reading = self.reading;
        let c = &mut self.conns[i];
        if c.conn.is_established() && !c.hello_sent {
            c.hello_sent = true;
            let mut bytes = hello(random_peer_id(), "default").to_bytes().to_vec();
            bytes.extend_from_slice(
                &Frame::Subscribe(frame::Subscribe {
                    request_id: 1,
                    sub_id: 1,
                    pattern: pattern.parse::<Pattern>().unwrap(),
                })
                .to_bytes(),
            );
            let _ = c.conn.stream_send(0, &bytes, false);
        }
        if let Some(e) = c.conn.peer_error() {
            c.closed_with = Some(e.error_code);
        }
        if !reading {
            return;
        }
        let readable: Vec<u64> = c.conn.readable().collect();
        let mut tmp = [0u8; 16384];
        for id in readable {
            while let Ok((n, _)) = c.conn.stream_recv(id, &mut tmp) {
                if id == 0 {
                    c.rx.extend_from_slice(&tmp[..n]);
                } else {
                    // Stream 3: count DELIVER frames by their headers without keeping payloads
                    // (thousands of subscribers would otherwise hold thousands of copies).
                    c.rx_data(&tmp[..n]);
                }
            }
        }
        let limits = Limits::default();
        while let Ok(Some(f)) = decode_frame(&mut c.rx, &limits) {
            match f {
                Frame::Welcome(_) => c.welcomed = true,
                Frame::Ok(o) if o.request_id == 1 => c.subscribed = true,
                Frame::Ping(p) => {
                    let pong = Frame::Pong(frame::Pong {
                        ping_id: p.ping_id,
                        sent_at_us: p.sent_at_us,
                        received_at_us: 0,
                    });
                    let _ = c.conn.stream_send(0, &pong.to_bytes(), false);
                }
                _ => {}
            }
        }
    }

    /// Drives the connections in `range` until `done` holds for each of them or `deadline`
    /// passes; true when it holds. Packets for connections outside the range are still fed.
    pub fn drive(
        &mut self,
        range: std::ops::Range<usize>,
        deadline: Instant,
        done: impl Fn(&SwarmConn) -> bool,
    ) -> bool {
        let mut buf = [0u8; 65535];
        loop {
            for i in range.clone() {
                let c = &mut self.conns[i];
                if c.conn.timeout() == Some(Duration::ZERO) {
                    c.conn.on_timeout();
                }
                self.service(i);
                self.flush_one(i);
            }
            if self.conns[range.clone()].iter().all(&done) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let mut got = 0;
            for s in 0..self.sockets.len() {
                while let Ok((n, from)) = self.sockets[s].recv_from(&mut buf) {
                    got += 1;
                    let Ok(hdr) = quiche::Header::from_slice(&mut buf[..n], 16) else {
                        continue;
                    };
                    let Ok(key) = <[u8; 16]>::try_from(&hdr.dcid[..]) else { continue };
                    let Some(&i) = self.by_scid.get(&key) else { continue };
                    let to = self.sockets[s].local_addr().unwrap();
                    let _ = self.conns[i].conn.recv(&mut buf[..n], quiche::RecvInfo { from, to });
                }
            }
            if got == 0 {
                let mut fds: Vec<libc::pollfd> = self
                    .sockets
                    .iter()
                    .map(|s| libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(s),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: poll(2) on fds this swarm owns, for at most 2 ms.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 2) };
            }
        }
    }
}

impl SwarmConn {
    /// Counts DELIVER frames on the node data stream without keeping their payloads: only the
    /// frame headers are parsed, the bodies skipped.
    fn rx_data(&mut self, mut bytes: &[u8]) {
        // `data_skip`: bytes of a body still to skip; `data_head`: a partial header.
        while !bytes.is_empty() {
            if self.data_skip > 0 {
                let n = self.data_skip.min(bytes.len());
                self.data_skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.data_head.push(bytes[0]);
            bytes = &bytes[1..];
            if self.data_head.len() >= 2 {
                if let Some((len, _)) = fovea_codec::varint::decode(&self.data_head[1..]) {
                    if self.data_head[0] == fovea_codec::frame::types::DELIVER {
                        self.delivered += 1;
                    }
                    self.data_skip = len as usize;
                    self.data_head.clear();
                }
            }
        }
    }
}

/// A `fovea` process and the addresses from its readiness line. Dropping it kills the process
/// (so a failing test leaves no node running) and removes its directory if it owns one.
pub struct NodeProcess {
    pub child: Child,
    pub quic: SocketAddr,
    pub http: SocketAddr,
    pub dir: Option<PathBuf>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts the `fovea` binary with `args` (ephemeral metrics port, not pinned, log level `log`)
/// on `data_dir`, which the caller keeps: a restarted node may reuse it.
pub fn spawn_node_on(args: &[&str], data_dir: &Path, log: &str) -> NodeProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fovea"));
    cmd.args(["--metrics", "127.0.0.1:0", "--no-pin", "--log", log])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args);
    let (child, quic, http) = spawn_until_ready(&mut cmd);
    NodeProcess { quic, http, child, dir: None }
}

/// Starts the `fovea` binary on ephemeral loopback ports (2 shards, not pinned) with `toml` as
/// its config file, in a fresh directory named after `tag`, seeded with `seeds`; returns once
/// the node printed its readiness line (with a deadline).
pub fn spawn_node_process(tag: &str, toml: &str, seeds: &[SocketAddr]) -> NodeProcess {
    let dir =
        std::env::temp_dir().join(format!("fovea-{tag}-{}-{}", std::process::id(), rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("fovea.toml");
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fovea"));
    cmd.args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--shards", "2"])
        .args(["--no-pin", "--log", "warn", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"));
    for s in seeds {
        cmd.arg("--seed").arg(s.to_string());
    }
    let (child, quic, http) = spawn_until_ready(&mut cmd);
    NodeProcess { quic, http, child, dir: Some(dir) }
}

/// Spawns a `fovea` command and waits (with a deadline) for its readiness line, which names
/// the bound QUIC and metrics addresses.
pub fn spawn_until_ready(cmd: &mut Command) -> (Child, SocketAddr, SocketAddr) {
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn fovea");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(WAIT).expect("fovea printed its readiness line");
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {line:?}"))
            .parse()
            .unwrap()
    };
    (child, field("quic="), field("metrics="))
}

/// The value of one unlabelled (or fully labelled) series of a node's /metrics.
pub fn series(http: SocketAddr, series: &str) -> u64 {
    let text = metrics_text(http);
    let key = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
        .trim()
        .parse()
        .unwrap()
}
