//! A blocking Fovea client over one QUIC connection: handshake, HELLO/WELCOME, requests with
//! their responses, deliveries. Every wait has a deadline; nothing busy-loops (the socket read
//! timeout follows quiche's next timer).

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fovea_codec::frame::{self, Frame};
use fovea_codec::{decode_frame, ErrorCode, Limits, Realm};

/// How to reach and trust the node.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The node's QUIC address.
    pub(crate) node: SocketAddr,
    /// Realm to join.
    pub(crate) realm: String,
    /// Skip certificate verification (self-signed nodes).
    pub(crate) insecure: bool,
    /// CA file (PEM) to verify the node's certificate against.
    pub(crate) ca: Option<PathBuf>,
    /// Server name for SNI and verification.
    pub(crate) server_name: String,
    /// Peer id (random when `None`).
    pub(crate) peer_id: Option<[u8; 32]>,
    /// Bound on connecting and on each request.
    pub(crate) timeout: Duration,
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// Socket or TLS setup failed.
    #[error("cannot set up the connection: {0}")]
    Setup(String),
    /// No answer from the node within the timeout (nothing listening, or filtered).
    #[error("no answer from {0} within {1:?} (is a node listening there?)")]
    Timeout(SocketAddr, Duration),
    /// The node (or QUIC) closed the connection.
    #[error("connection closed by the node: {name} ({code:#x}) {reason}")]
    Closed {
        /// Error code.
        code: u64,
        /// Its name, when it is a Fovea code.
        name: &'static str,
        /// Reason text.
        reason: String,
    },
    /// The node refused a request.
    #[error("the node refused the request: {name} ({code:#x}) {message}")]
    Refused {
        /// Error code.
        code: u64,
        /// Its name.
        name: &'static str,
        /// Message text.
        message: String,
    },
    /// The node sent something this client cannot decode.
    #[error("protocol error: {0}")]
    Protocol(String),
}

fn code_name(code: u64) -> &'static str {
    ErrorCode::from_u64(code).map_or("UNKNOWN", ErrorCode::name)
}

/// A connected session.
pub(crate) struct Client {
    conn: quiche::Connection,
    socket: UdpSocket,
    local: SocketAddr,
    rx: [BytesMut; 2],
    pending: VecDeque<Frame>,
    next_request: u64,
    timeout: Duration,
    node: SocketAddr,
    /// The node's WELCOME.
    pub(crate) welcome: frame::Welcome,
}

impl Client {
    /// Connects, completes the handshake and HELLO/WELCOME within `options.timeout`.
    pub(crate) fn connect(options: &Options) -> Result<Client, ClientError> {
        let setup = |e: &dyn std::fmt::Display| ClientError::Setup(e.to_string());
        let bind = if options.node.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
        let socket = UdpSocket::bind(bind).map_err(|e| setup(&e))?;
        let local = socket.local_addr().map_err(|e| setup(&e))?;
        let mut config = quiche::Config::new(quiche::PROTOCOL_VERSION).map_err(|e| setup(&e))?;
        config.set_application_protos(&[b"fovea/1"]).map_err(|e| setup(&e))?;
        config.verify_peer(!options.insecure);
        if let Some(ca) = &options.ca {
            let path =
                ca.to_str().ok_or_else(|| ClientError::Setup("CA path is not UTF-8".into()))?;
            config.load_verify_locations_from_file(path).map_err(|e| setup(&e))?;
        }
        config.set_max_idle_timeout(30_000);
        config.set_max_recv_udp_payload_size(1472);
        config.set_max_send_udp_payload_size(1350);
        config.set_initial_max_data(4 << 20);
        config.set_initial_max_stream_data_bidi_local(1 << 20);
        config.set_initial_max_stream_data_uni(1 << 20);
        config.set_initial_max_streams_uni(4);
        let mut scid = [0u8; 16];
        boring::rand::rand_bytes(&mut scid).map_err(|e| setup(&e))?;
        let scid = quiche::ConnectionId::from_vec(scid.to_vec());
        let conn =
            quiche::connect(Some(&options.server_name), &scid, local, options.node, &mut config)
                .map_err(|e| setup(&e))?;
        let mut client = Client {
            conn,
            socket,
            local,
            rx: [BytesMut::new(), BytesMut::new()],
            pending: VecDeque::new(),
            next_request: 0,
            timeout: options.timeout,
            node: options.node,
            welcome: frame::Welcome {
                version: 0,
                node_id: [0; 32],
                observed: options.node,
                limits: Vec::new(),
            },
        };
        let deadline = Instant::now() + options.timeout;
        while !client.conn.is_established() {
            client.check_closed()?;
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout(options.node, options.timeout));
            }
            client.step(deadline)?;
        }
        let peer_id = match options.peer_id {
            Some(id) => id,
            None => {
                let mut id = [0u8; 32];
                boring::rand::rand_bytes(&mut id).map_err(|e| setup(&e))?;
                id
            }
        };
        let realm: Realm = options
            .realm
            .parse()
            .map_err(|e| ClientError::Setup(format!("invalid realm {:?}: {e}", options.realm)))?;
        client.send(&Frame::Hello(frame::Hello {
            version: 1,
            peer_id,
            flags: 0,
            realm,
            cred_kind: 0,
            credential: Bytes::new(),
            client_name: Bytes::from_static(b"fovea-cli"),
        }))?;
        let _ = client.conn.stream_priority(0, 0, true);
        match client.wait_for(|f| matches!(f, Frame::Welcome(_)), deadline)? {
            Frame::Welcome(w) => client.welcome = w,
            _ => unreachable!("matched above"),
        }
        Ok(client)
    }

    /// A fresh request id.
    pub(crate) fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Sends a frame on the session stream.
    pub(crate) fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        let bytes = frame.to_bytes();
        let deadline = Instant::now() + self.timeout;
        let mut off = 0;
        while off < bytes.len() {
            match self.conn.stream_send(0, &bytes[off..], false) {
                Ok(n) => off += n,
                Err(quiche::Error::Done) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            if off < bytes.len() {
                self.check_closed()?;
                if Instant::now() >= deadline {
                    return Err(ClientError::Timeout(self.node, self.timeout));
                }
                self.step(deadline)?;
            }
        }
        self.flush()
    }

    /// Sends a request and waits for its OK (or the ERROR, as `Refused`).
    pub(crate) fn request(&mut self, frame: &Frame, request_id: u64) -> Result<(), ClientError> {
        self.send(frame)?;
        let deadline = Instant::now() + self.timeout;
        let reply = self.wait_for(
            |f| {
                matches!(f, Frame::Ok(o) if o.request_id == request_id)
                    || matches!(f, Frame::Error(e) if e.request_id == request_id)
            },
            deadline,
        )?;
        match reply {
            Frame::Ok(_) => Ok(()),
            Frame::Error(e) => Err(ClientError::Refused {
                code: e.code,
                name: code_name(e.code),
                message: String::from_utf8_lossy(&e.message).into_owned(),
            }),
            _ => unreachable!("matched above"),
        }
    }

    /// Waits for a frame matching `pred` until `deadline`; other frames stay queued.
    pub(crate) fn wait_for(
        &mut self,
        pred: impl Fn(&Frame) -> bool,
        deadline: Instant,
    ) -> Result<Frame, ClientError> {
        loop {
            if let Some(i) = self.pending.iter().position(&pred) {
                return Ok(self.pending.remove(i).expect("index from position"));
            }
            self.check_closed()?;
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout(self.node, self.timeout));
            }
            self.step(deadline)?;
        }
    }

    /// Next frame of any kind, or `None` at the deadline.
    pub(crate) fn next_frame(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Frame>, ClientError> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Ok(Some(f));
            }
            self.check_closed()?;
            let far = Instant::now() + Duration::from_secs(3600);
            let d = deadline.unwrap_or(far);
            if Instant::now() >= d {
                return Ok(None);
            }
            self.step(d)?;
        }
    }

    /// Closes the connection politely.
    pub(crate) fn close(mut self) {
        let _ = self.conn.close(true, ErrorCode::NoError as u64, b"bye");
        let _ = self.flush();
    }

    fn check_closed(&self) -> Result<(), ClientError> {
        if let Some(e) = self.conn.peer_error() {
            return Err(ClientError::Closed {
                code: e.error_code,
                name: if e.is_app { code_name(e.error_code) } else { "TRANSPORT_ERROR" },
                reason: String::from_utf8_lossy(&e.reason).into_owned(),
            });
        }
        if let Some(e) = self.conn.local_error() {
            return Err(ClientError::Closed {
                code: e.error_code,
                name: "LOCAL_ERROR",
                reason: String::from_utf8_lossy(&e.reason).into_owned(),
            });
        }
        if self.conn.is_closed() {
            return Err(ClientError::Timeout(self.node, self.timeout));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        let mut out = [0u8; 1500];
        loop {
            match self.conn.send(&mut out) {
                Ok((n, info)) => {
                    let _ = self.socket.send_to(&out[..n], info.to);
                }
                Err(quiche::Error::Done) => return Ok(()),
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
        }
    }

    /// Flush, wait for one datagram (bounded by quiche's timer and `deadline`), feed it, decode.
    fn step(&mut self, deadline: Instant) -> Result<(), ClientError> {
        self.flush()?;
        let mut wait =
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        if let Some(t) = self.conn.timeout() {
            wait = wait.min(t.max(Duration::from_millis(1)));
        }
        self.socket.set_read_timeout(Some(wait)).map_err(|e| ClientError::Setup(e.to_string()))?;
        let mut buf = [0u8; 65535];
        match self.socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let _ = self.conn.recv(&mut buf[..n], quiche::RecvInfo { from, to: self.local });
            }
            Err(_) => self.conn.on_timeout(),
        }
        let ids: Vec<u64> = self.conn.readable().collect();
        let mut tmp = [0u8; 65536];
        for id in ids {
            let slot = usize::from(id != 0);
            while let Ok((n, _)) = self.conn.stream_recv(id, &mut tmp) {
                self.rx[slot].extend_from_slice(&tmp[..n]);
            }
        }
        let limits = Limits::default();
        for slot in 0..2 {
            loop {
                match decode_frame(&mut self.rx[slot], &limits) {
                    Ok(Some(Frame::Ping(p))) => {
                        // Answer the node's keep-alive PINGs.
                        let pong = Frame::Pong(frame::Pong {
                            ping_id: p.ping_id,
                            sent_at_us: p.sent_at_us,
                            received_at_us: 0,
                        });
                        let _ = self.conn.stream_send(0, &pong.to_bytes(), false);
                    }
                    Ok(Some(f)) => self.pending.push_back(f),
                    Ok(None) => break,
                    Err(e) => return Err(ClientError::Protocol(e.to_string())),
                }
            }
        }
        self.flush()
    }
}
