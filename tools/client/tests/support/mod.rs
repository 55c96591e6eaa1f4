//! A minimal node for the client's tests: a server-side quiche connection that answers HELLO
//! with WELCOME, SUBSCRIBE with OK (ERROR for `denied.**`), PUBLISH with OK and a DELIVER
//! echo, PING with PONG, CALL with REPLY (`echo`) or CALL_ERROR, GOODBYE with a close.
//! Credentials as the real node judges them: a HELLO with an Ed25519 public key gets a
//! CHALLENGE ([`CHALLENGE_NONCE`]) and its AUTH is verified against that key (AUTH_FAILED when
//! it does not verify, AUTH_REQUIRED when another frame comes first); in realm `closed` a
//! HELLO without credential is refused with
//! AUTH_REQUIRED, and in realm `refused` any credential with AUTH_FAILED.
//!
//! Two ways to run it: [`Pipe`] moves datagrams between a `ClientSession` and the node in
//! memory until both are quiet (no sockets, no sleeps); [`UdpNode`] serves one connection on
//! a loopback socket in a thread, for the blocking client.
#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use boring::asn1::Asn1Time;
use boring::bn::BigNum;
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::ssl::{SslContextBuilder, SslMethod};
use boring::x509::extension::SubjectAlternativeName;
use boring::x509::{X509NameBuilder, X509};
use bytes::{Bytes, BytesMut};
use fovea_client::codec::frame::{self, limit_keys, Frame};
use fovea_client::codec::{decode_frame, ErrorCode, Limits, Pattern};
use fovea_client::{ClientConfig, ClientSession, Event};
use smallvec::smallvec;

/// The node's id in WELCOME.
pub const NODE_ID: [u8; 32] = [0x22; 32];
/// The node's advertised max_payload.
pub const MAX_PAYLOAD: u64 = 1 << 20;
/// The nonce of the test node's CHALLENGE.
pub const CHALLENGE_NONCE: [u8; 32] = [0x5c; 32];

/// A self-signed ECDSA P-256 certificate for `localhost`, and its key.
pub struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Identity {
    pub fn generate() -> Identity {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "localhost").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
        let san =
            SubjectAlternativeName::new().dns("localhost").build(&b.x509v3_context(None, None));
        b.append_extension(&san.unwrap()).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        Identity { cert: b.build(), key }
    }

    /// Writes the certificate as PEM to a fresh file and returns its path.
    pub fn write_cert_pem(&self) -> std::path::PathBuf {
        let mut r = [0u8; 8];
        boring::rand::rand_bytes(&mut r).unwrap();
        let path = std::env::temp_dir().join(format!(
            "fovea-client-test-{}-{:016x}.pem",
            std::process::id(),
            u64::from_le_bytes(r)
        ));
        std::fs::write(&path, self.cert.to_pem().unwrap()).unwrap();
        path
    }

    /// A server configuration with this identity; `stream_window` is the node's receive window
    /// per stream (small values make the client's writes partial).
    pub fn server_config(&self, stream_window: u64) -> quiche::Config {
        let mut ssl = SslContextBuilder::new(SslMethod::tls()).unwrap();
        ssl.set_certificate(&self.cert).unwrap();
        ssl.set_private_key(&self.key).unwrap();
        let mut c =
            quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, ssl).unwrap();
        c.set_application_protos(&[b"fovea/1"]).unwrap();
        c.set_max_idle_timeout(30_000);
        c.set_initial_max_data(stream_window * 2);
        c.set_initial_max_stream_data_bidi_remote(stream_window);
        c.set_initial_max_stream_data_uni(stream_window);
        c.set_initial_max_streams_bidi(1);
        c.set_initial_max_streams_uni(1);
        c
    }
}

/// The server side of one connection, speaking just enough Fovea.
pub struct TestNode {
    pub conn: quiche::Connection,
    /// Bytes of client streams 0 and 2 not yet decoded.
    rx: [BytesMut; 2],
    /// Bytes for node streams 0 and 3 not yet accepted by quiche.
    out: [BytesMut; 2],
    /// Every frame decoded, with its stream id, in order.
    pub received: Vec<(u64, Frame)>,
    /// A frame other than HELLO/PING arrived before HELLO on some stream.
    pub frame_before_hello: bool,
    /// Answer frames (off: the test writes raw bytes itself).
    pub answer: bool,
    hello_seen: bool,
    /// A CHALLENGE is out: the HELLO's public key and peer id.
    challenged: Option<(Bytes, [u8; 32])>,
    subs: Vec<(u64, Pattern)>,
}

impl TestNode {
    pub fn accept(config: &mut quiche::Config, local: SocketAddr, peer: SocketAddr) -> TestNode {
        let mut scid = [0u8; 16];
        boring::rand::rand_bytes(&mut scid).unwrap();
        let scid = quiche::ConnectionId::from_ref(&scid);
        let conn = quiche::accept(&scid, None, local, peer, config).unwrap();
        TestNode {
            conn,
            rx: [BytesMut::new(), BytesMut::new()],
            out: [BytesMut::new(), BytesMut::new()],
            received: Vec::new(),
            frame_before_hello: false,
            answer: true,
            hello_seen: false,
            challenged: None,
            subs: Vec::new(),
        }
    }

    /// Queues raw bytes on node stream 0 (`data` false) or 3 (`data` true).
    pub fn send_raw(&mut self, data: bool, bytes: &[u8]) {
        self.out[usize::from(data)].extend_from_slice(bytes);
        self.write();
    }

    /// Queues a frame on node stream 0 or 3.
    pub fn send(&mut self, data: bool, frame: &Frame) {
        frame.encode(&mut self.out[usize::from(data)]);
        self.write();
    }

    /// Feeds one datagram and reacts to every whole frame.
    pub fn recv(&mut self, buf: &mut [u8], from: SocketAddr, to: SocketAddr) {
        let _ = self.conn.recv(buf, quiche::RecvInfo { from, to });
        self.read();
        self.write();
    }

    fn read(&mut self) {
        for (slot, id) in [(0usize, 0u64), (1, 2)] {
            let mut tmp = [0u8; 65536];
            while let Ok((n, _)) = self.conn.stream_recv(id, &mut tmp) {
                self.rx[slot].extend_from_slice(&tmp[..n]);
            }
            while let Ok(Some(frame)) = decode_frame(&mut self.rx[slot], &Limits::default()) {
                self.on_frame(id, frame);
            }
        }
    }

    fn on_frame(&mut self, stream: u64, frame: Frame) {
        match &frame {
            Frame::Hello(_) => self.hello_seen = true,
            Frame::Ping(_) | Frame::Pong(_) => {}
            _ if !self.hello_seen => self.frame_before_hello = true,
            _ => {}
        }
        self.received.push((stream, frame.clone()));
        if !self.answer {
            return;
        }
        if self.challenged.is_some() && !matches!(frame, Frame::Auth(_) | Frame::Ping(_)) {
            // As the node: between CHALLENGE and AUTH nothing else is taken (PROTOCOL §6.3).
            let _ = self.conn.close(true, ErrorCode::AuthRequired as u64, b"AUTH must follow");
            return;
        }
        match frame {
            Frame::Hello(h) if h.realm.as_str() == "closed" && h.cred_kind == 0 => {
                let _ = self.conn.close(true, ErrorCode::AuthRequired as u64, b"needs one");
            }
            Frame::Hello(h) if h.realm.as_str() == "refused" && h.cred_kind != 0 => {
                let _ = self.conn.close(true, ErrorCode::AuthFailed as u64, b"credential refused");
            }
            Frame::Hello(h) if h.cred_kind == 2 => {
                self.challenged = Some((h.credential, h.peer_id));
                let nonce = Bytes::copy_from_slice(&CHALLENGE_NONCE);
                self.send(false, &Frame::Challenge(frame::Challenge { nonce }));
            }
            Frame::Auth(a) => {
                let Some((key, peer_id)) = self.challenged.take() else {
                    let _ = self.conn.close(true, ErrorCode::HelloRequired as u64, b"no CHALLENGE");
                    return;
                };
                let msg = [b"fovea-auth-v1".as_slice(), &CHALLENGE_NONCE, &peer_id].concat();
                let public =
                    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
                if public.verify(&msg, &a.signature).is_err() {
                    let _ = self.conn.close(true, ErrorCode::AuthFailed as u64, b"bad signature");
                    return;
                }
                self.welcome();
            }
            Frame::Hello(_) => self.welcome(),
            Frame::Subscribe(s) => {
                let answer = if s.pattern.as_str() == "denied.**" {
                    Frame::Error(frame::Error {
                        request_id: s.request_id,
                        code: ErrorCode::PermissionDenied as u64,
                        message: Bytes::from_static(b"not for you"),
                    })
                } else {
                    self.subs.push((s.sub_id, s.pattern));
                    Frame::Ok(frame::Ok { request_id: s.request_id })
                };
                self.send(false, &answer);
            }
            Frame::Unsubscribe(u) => {
                self.subs.retain(|(id, _)| *id != u.sub_id);
                self.send(false, &Frame::Ok(frame::Ok { request_id: u.request_id }));
            }
            Frame::Publish(p) => {
                if p.topic.as_str() == "close.me" {
                    let _ = self.conn.close(true, ErrorCode::ShuttingDown as u64, b"draining");
                    return;
                }
                if p.request_id != 0 {
                    self.send(false, &Frame::Ok(frame::Ok { request_id: p.request_id }));
                }
                let mut sub_ids: smallvec::SmallVec<[u64; 4]> = self
                    .subs
                    .iter()
                    .filter(|(_, pat)| pat.matches(&p.topic))
                    .map(|s| s.0)
                    .collect();
                if sub_ids.is_empty() {
                    // Echo anyway, so the session tests need no SUBSCRIBE.
                    sub_ids = smallvec![1];
                }
                let deliver = Frame::Deliver(frame::Deliver {
                    sub_ids,
                    message_id: p.message_id,
                    topic: p.topic,
                    payload: p.payload,
                });
                self.send(true, &deliver);
            }
            Frame::Ping(p) => {
                let pong = Frame::Pong(frame::Pong {
                    ping_id: p.ping_id,
                    sent_at_us: p.sent_at_us,
                    received_at_us: 7,
                });
                self.send(false, &pong);
            }
            Frame::Call(c) => {
                let answer = if c.procedure.as_str() == "echo" {
                    Frame::Reply(frame::Reply { id: c.call_id, payload: c.payload })
                } else {
                    Frame::CallError(frame::CallError {
                        id: c.call_id,
                        code: ErrorCode::NoProvider as u64,
                        message: Bytes::from_static(b"no provider"),
                    })
                };
                self.send(true, &answer);
            }
            Frame::Goodbye(_) => {
                let _ = self.conn.close(true, ErrorCode::NoError as u64, b"");
            }
            _ => {}
        }
        let _ = stream;
    }

    fn welcome(&mut self) {
        let welcome = Frame::Welcome(frame::Welcome {
            version: 1,
            node_id: NODE_ID,
            observed: self
                .conn
                .path_stats()
                .next()
                .map_or("127.0.0.1:1".parse().unwrap(), |p| p.peer_addr),
            limits: vec![
                (limit_keys::MAX_PAYLOAD, MAX_PAYLOAD),
                (limit_keys::MAX_FRAME_LEN, MAX_PAYLOAD + 16384),
            ],
        });
        self.send(false, &welcome);
    }

    fn write(&mut self) {
        if !self.conn.is_established() {
            return;
        }
        for (slot, id) in [(0usize, 0u64), (1, 3)] {
            while !self.out[slot].is_empty() {
                match self.conn.stream_send(id, &self.out[slot], false) {
                    Ok(n) if n > 0 => {
                        let _ = self.out[slot].split_to(n);
                    }
                    _ => break,
                }
            }
        }
    }

    /// Frames received so far, without their stream ids.
    pub fn frames(&self) -> Vec<Frame> {
        self.received.iter().map(|(_, f)| f.clone()).collect()
    }
}

/// A client session and a test node joined in memory.
pub struct Pipe {
    pub client: ClientSession,
    pub node: TestNode,
    pub client_addr: SocketAddr,
    pub node_addr: SocketAddr,
}

impl Pipe {
    pub fn new(config: &ClientConfig, identity: &Identity, stream_window: u64) -> Pipe {
        Pipe::with_server_name(config, identity, stream_window, Some("localhost"))
    }

    pub fn with_server_name(
        config: &ClientConfig,
        identity: &Identity,
        stream_window: u64,
        server_name: Option<&str>,
    ) -> Pipe {
        let client_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let node_addr: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        let client = ClientSession::new(config, server_name, client_addr, node_addr).unwrap();
        let mut server = identity.server_config(stream_window);
        let node = TestNode::accept(&mut server, node_addr, client_addr);
        Pipe { client, node, client_addr, node_addr }
    }

    /// Moves datagrams both ways until neither side has one to send. Panics if that takes
    /// more than `ROUNDS_MAX` rounds or `PACKETS_MAX` packets (a livelock is a bug).
    pub fn drive(&mut self) {
        const ROUNDS_MAX: usize = 100_000;
        const PACKETS_MAX: usize = 1_000_000;
        let mut buf = [0u8; 1500];
        let mut packets = 0;
        for _ in 0..ROUNDS_MAX {
            let mut moved = false;
            while let Some((n, to)) = self.client.poll_transmit(&mut buf) {
                packets += 1;
                assert!(packets < PACKETS_MAX, "the client keeps sending: a livelock");
                assert_eq!(to, self.node_addr);
                self.node.recv(&mut buf[..n], self.client_addr, self.node_addr);
                moved = true;
            }
            loop {
                self.node.write();
                match self.node.conn.send(&mut buf) {
                    Ok((n, info)) => {
                        assert_eq!(info.to, self.client_addr);
                        self.client.handle_datagram(
                            &mut buf[..n],
                            self.node_addr,
                            self.client_addr,
                        );
                        moved = true;
                    }
                    Err(_) => break,
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the pipe did not become quiet within {ROUNDS_MAX} rounds");
    }

    /// Drives, then takes every event the client has.
    pub fn events(&mut self) -> Vec<Event> {
        self.drive();
        let mut events = Vec::new();
        while let Some(e) = self.client.poll_event() {
            events.push(e);
            // Polling may have re-opened flow control; let the node send the rest.
            self.drive();
        }
        events
    }
}

/// A test node serving one connection on a loopback UDP socket, in a thread.
pub struct UdpNode {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<(u64, Frame)>>>,
    thread: Option<JoinHandle<()>>,
}

impl UdpNode {
    pub fn start(identity: &Identity) -> UdpNode {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let mut config = identity.server_config(1 << 20);
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (stop2, received2) = (stop.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            let mut node: Option<TestNode> = None;
            let mut peer = None;
            let mut buf = vec![0u8; 65535];
            loop {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                // Block until a datagram or the connection's next timer; the stop request
                // arrives as a datagram too (see `stop`), so no periodic wake-up is needed.
                let timeout = node.as_ref().and_then(|n| n.conn.timeout());
                socket.set_read_timeout(timeout.map(|t| t.max(Duration::from_millis(1)))).unwrap();
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if node.is_none() && n > 100 {
                            node = Some(TestNode::accept(&mut config, addr, from));
                            peer = Some(from);
                        }
                        if let (Some(node), Some(p)) = (node.as_mut(), peer) {
                            if from == p {
                                node.recv(&mut buf[..n], from, addr);
                            }
                        }
                    }
                    Err(_) => {
                        if let Some(node) = node.as_mut() {
                            node.conn.on_timeout();
                        }
                    }
                }
                if let (Some(node), Some(p)) = (node.as_mut(), peer) {
                    node.write();
                    let mut out = [0u8; 1500];
                    while let Ok((n, _)) = node.conn.send(&mut out) {
                        let _ = socket.send_to(&out[..n], p);
                    }
                    *received2.lock().unwrap() = node.received.clone();
                }
            }
        });
        UdpNode { addr, stop, received, thread: Some(thread) }
    }

    /// Frames the node has received so far.
    pub fn received(&self) -> Vec<(u64, Frame)> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for UdpNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the thread's blocking receive.
        let waker = UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = waker.send_to(b"stop", self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
