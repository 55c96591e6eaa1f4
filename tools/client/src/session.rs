//! The sans-I/O client session: one `quiche::Connection` plus Fovea's framing on its streams.
//!
//! No sockets and no clock of its own (quiche reads the monotonic clock for its timers; this
//! module never does). A driver feeds it datagrams and timer expiries and sends what it emits:
//!
//! - inputs: [`ClientSession::handle_datagram`], [`ClientSession::on_timeout`], and the
//!   application's [`ClientSession::send_frame`] / [`ClientSession::close`];
//! - outputs: [`ClientSession::poll_transmit`] (call until `None` after every input),
//!   [`ClientSession::timeout`] (when to call `on_timeout`), [`ClientSession::poll_event`].
//!
//! Stream layout (docs/PROTOCOL.md §2.2): stream 0 is the session stream (HELLO first, then
//! requests; the node answers WELCOME, OK, ERROR, PING, PONG there), stream 2 the client's data
//! stream (bulk frames, only after WELCOME), stream 3 the node's data stream (DELIVER, REPLY,
//! ...). The session writes HELLO as soon as the handshake completes, answers the node's PINGs
//! itself, answers a CHALLENGE with AUTH when its credential has a private key
//! ([`Credential::Ed25519`](crate::Credential::Ed25519)), holds frames for stream 2 until
//! WELCOME has arrived, and with a public-key credential holds the application's frames for
//! stream 0 until AUTH is queued (the node takes nothing else between HELLO and AUTH).
//!
//! Nothing is dropped on the way out: frames are encoded into a per-stream outbox, and each
//! turn writes as much of it as QUIC flow control accepts. On the way in, the node's data
//! stream is read only while fewer than [`DATA_QUEUE_FRAMES_MAX`] frames (and
//! [`DATA_QUEUE_BYTES_MAX`] bytes) wait for the application, so a slow reader slows the node
//! down through QUIC flow control instead of growing memory.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use fovea_codec::frame::{self, limit_keys, Frame, Welcome};
use fovea_codec::{decode_frame, encode_publish, ErrorCode, Id32, Limits, Topic};

use crate::config::ClientConfig;
use crate::error::{ClientError, Close};
use crate::key::Ed25519Key;

/// Protocol version HELLO asks for.
pub const PROTOCOL_VERSION: u64 = 1;

/// Most frames of the node's data stream decoded but not yet polled.
pub const DATA_QUEUE_FRAMES_MAX: usize = 1024;
/// Most bytes of the node's data stream decoded but not yet polled (a frame in progress may
/// add up to one `max_frame_len` more).
pub const DATA_QUEUE_BYTES_MAX: usize = 4 << 20;
/// Most session-stream events not yet polled; beyond, the session stream is not read either.
pub const SESSION_QUEUE_FRAMES_MAX: usize = 4096;

/// Bytes asked of quiche per `stream_recv`.
const READ_CHUNK: usize = 16 * 1024;
/// Longest reason phrase this side puts in a CONNECTION_CLOSE (it must fit in one packet).
const CLOSE_REASON_MAX: usize = 200;

const SESSION_STREAM: u64 = 0;
const CLIENT_DATA_STREAM: u64 = 2;
const NODE_DATA_STREAM: u64 = 3;

/// Which of the client's streams a frame goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Stream 0: HELLO, requests, PING/PONG, GOODBYE. Scheduled ahead of the data stream.
    Session,
    /// Stream 2: bulk frames (PUBLISH, CALL, REPLY, SEND). Held until WELCOME.
    Data,
}

impl StreamKind {
    /// The QUIC stream id.
    pub const fn stream_id(self) -> u64 {
        match self {
            StreamKind::Session => SESSION_STREAM,
            StreamKind::Data => CLIENT_DATA_STREAM,
        }
    }

    const fn index(self) -> usize {
        match self {
            StreamKind::Session => 0,
            StreamKind::Data => 1,
        }
    }
}

/// What the session has for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The node accepted HELLO; the session is active and the data stream may carry frames.
    Welcome {
        /// The node's id.
        node_id: Id32,
        /// This client's address as the node sees it.
        observed: SocketAddr,
        /// The node's limits, (key, value) pairs (see `fovea_codec::frame::limit_keys`).
        limits: Vec<(u64, u64)>,
    },
    /// A frame from the node (OK, ERROR, PONG, DELIVER, REPLY, GOODBYE, ...). The node's PINGs
    /// are answered by the session and not reported, and so is a CHALLENGE when the
    /// credential has a private key (without one, the CHALLENGE is reported here).
    Frame(Frame),
    /// The connection ended. Reported once, after every frame that arrived before it.
    Closed {
        /// Fovea error code when `is_app`, else QUIC transport code (see [`Close`]).
        error_code: u64,
        /// The reason phrase.
        reason: String,
        /// True when the node closed it.
        by_peer: bool,
        /// Application (Fovea) or transport (QUIC/TLS) code.
        is_app: bool,
    },
}

impl From<Close> for Event {
    fn from(c: Close) -> Event {
        Event::Closed {
            error_code: c.error_code,
            reason: c.reason,
            by_peer: c.by_peer,
            is_app: c.is_app,
        }
    }
}

/// One client connection to a node, without I/O.
pub struct ClientSession {
    conn: quiche::Connection,
    peer_id: Id32,
    limits: Limits,
    /// Encoded frames not yet accepted by quiche, per [`StreamKind`] (HELLO first on stream 0).
    outbox: [BytesMut; 2],
    /// Bytes of the session stream and of the node's data stream not yet decoded.
    rx_session: BytesMut,
    rx_data: BytesMut,
    session_events: VecDeque<Event>,
    data_frames: VecDeque<(Frame, usize)>,
    data_queued_bytes: usize,
    welcome: Option<Welcome>,
    /// The private key that answers CHALLENGE (credential `Ed25519`).
    signer: Option<Ed25519Key>,
    /// AUTH was queued: a second CHALLENGE is a protocol violation.
    auth_sent: bool,
    /// With a public-key credential, session-stream frames queued before AUTH: between HELLO
    /// and AUTH the node takes nothing else (PROTOCOL §6.3). `None` once released.
    before_auth: Option<BytesMut>,
    session_priority_set: bool,
    data_priority_set: bool,
    /// Set when this side closed for a protocol error: nothing more is decoded.
    decode_failed: bool,
    close: Option<Close>,
    close_reported: bool,
    keepalive: Option<Duration>,
    /// When the last datagram was produced (for the keep-alive).
    last_sent: std::time::Instant,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("trace_id", &self.conn.trace_id())
            .field("established", &self.welcome.is_some())
            .field("close", &self.close)
            .finish_non_exhaustive()
    }
}

fn random_bytes(buf: &mut [u8]) -> Result<(), ClientError> {
    boring::rand::rand_bytes(buf).map_err(|e| ClientError::Config(format!("random bytes: {e}")))
}

impl ClientSession {
    /// Starts a session to `peer` from `local`: builds the QUIC configuration from `config`
    /// and begins the handshake (the first packets come out of [`Self::poll_transmit`]).
    /// `server_name` is sent as SNI and checked against the certificate unless verification
    /// is off.
    pub fn new(
        config: &ClientConfig,
        server_name: Option<&str>,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Result<ClientSession, ClientError> {
        let mut quic = config.quic_config()?;
        ClientSession::with_quic_config(config, &mut quic, server_name, local, peer)
    }

    /// Like [`Self::new`] with a prepared quiche configuration (built once by
    /// [`ClientConfig::quic_config`] and shared by many sessions).
    pub fn with_quic_config(
        config: &ClientConfig,
        quic: &mut quiche::Config,
        server_name: Option<&str>,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Result<ClientSession, ClientError> {
        if config.client_name.len() > config.limits.max_string {
            return Err(ClientError::Config(format!(
                "client name is longer than {} bytes",
                config.limits.max_string
            )));
        }
        let mut scid = [0u8; 16];
        random_bytes(&mut scid)?;
        let scid = quiche::ConnectionId::from_ref(&scid);
        let conn = quiche::connect(server_name, &scid, local, peer, quic)
            .map_err(|e| ClientError::Config(format!("cannot start a QUIC connection: {e}")))?;
        let peer_id = match config.peer_id {
            Some(id) => id,
            None => {
                let mut id = [0u8; 32];
                random_bytes(&mut id)?;
                id
            }
        };
        let hello = Frame::Hello(frame::Hello {
            version: PROTOCOL_VERSION,
            peer_id,
            flags: config.hello_flags,
            realm: config.realm.clone(),
            cred_kind: config.credential.kind(),
            credential: config.credential.bytes(),
            client_name: Bytes::copy_from_slice(config.client_name.as_bytes()),
        });
        let mut session_out = BytesMut::with_capacity(hello.encoded_len());
        hello.encode(&mut session_out);
        Ok(ClientSession {
            conn,
            peer_id,
            limits: config.limits,
            outbox: [session_out, BytesMut::new()],
            rx_session: BytesMut::new(),
            rx_data: BytesMut::new(),
            session_events: VecDeque::new(),
            data_frames: VecDeque::new(),
            data_queued_bytes: 0,
            welcome: None,
            signer: config.credential.signing_key().cloned(),
            auth_sent: false,
            before_auth: (config.credential.kind() == 2).then(BytesMut::new),
            session_priority_set: false,
            data_priority_set: false,
            decode_failed: false,
            close: None,
            close_reported: false,
            keepalive: config.keepalive,
            last_sent: std::time::Instant::now(),
        })
    }

    // ---- inputs ----

    /// Feeds one UDP datagram received from `from` on local address `to`. Packets quiche
    /// rejects (garbage, other connections) are dropped; a fatal one closes the session, which
    /// [`Self::poll_event`] then reports.
    pub fn handle_datagram(&mut self, buf: &mut [u8], from: SocketAddr, to: SocketAddr) {
        // Errors are per packet (dropped) or fatal; fatal ones are visible through
        // local_error/is_closed, which update_close reads.
        let _ = self.conn.recv(buf, quiche::RecvInfo { from, to });
        self.read_streams();
        self.write_streams();
        self.update_close();
    }

    /// Runs quiche's timers (loss detection, retransmission, idle timeout). Call when
    /// [`Self::timeout`] has elapsed; calling early is harmless.
    pub fn on_timeout(&mut self) {
        self.conn.on_timeout();
        if let Some(every) = self.keepalive {
            // quiche reads the clock itself for its timers; the keep-alive follows suit.
            if self.conn.is_established() && self.last_sent.elapsed() >= every {
                let _ = self.conn.send_ack_eliciting();
                // Counted as sent even if congestion control holds the PING back, so a broken
                // path does not make the timer fire again at once.
                self.last_sent = std::time::Instant::now();
            }
        }
        self.update_close();
    }

    /// Queues `frame` on `stream`. It is written to QUIC as flow control allows; frames for
    /// the data stream wait for WELCOME, and with a public-key credential frames for the
    /// session stream wait for AUTH (an AUTH given here goes first and releases them). Fails
    /// when the session is closed or the frame is longer than the node's advertised
    /// `max_frame_len`.
    pub fn send_frame(&mut self, frame: &Frame, stream: StreamKind) -> Result<(), ClientError> {
        self.check_open()?;
        if let Some(max) = self.node_limit(limit_keys::MAX_FRAME_LEN) {
            let len = frame.body_len();
            if len as u64 > max {
                return Err(ClientError::FrameTooLarge { len, max });
            }
        }
        if matches!(frame, Frame::Auth(_)) && stream == StreamKind::Session {
            frame.encode(&mut self.outbox[stream.index()]);
            self.release_before_auth();
        } else {
            frame.encode(self.out_buffer(stream));
        }
        self.write_streams();
        Ok(())
    }

    /// Queues a PUBLISH without building a [`Frame`] (the codec's direct encoder; the payload
    /// is copied once, into the outbox). Checks the node's `max_payload` when known.
    pub fn send_publish(
        &mut self,
        request_id: u64,
        message_id: Option<u64>,
        topic: &Topic,
        payload: &[u8],
        stream: StreamKind,
    ) -> Result<(), ClientError> {
        self.check_open()?;
        if let Some(max) = self.node_limit(limit_keys::MAX_PAYLOAD) {
            if payload.len() as u64 > max {
                return Err(ClientError::PayloadTooLarge { len: payload.len(), max });
            }
        }
        encode_publish(request_id, message_id, topic, payload, self.out_buffer(stream));
        self.write_streams();
        Ok(())
    }

    /// Closes the connection with `code` (a Fovea error code; NO_ERROR for a normal exit).
    /// Keep calling [`Self::poll_transmit`] so the CONNECTION_CLOSE is sent.
    pub fn close(&mut self, code: u64, reason: &str) {
        let reason = truncate(reason, CLOSE_REASON_MAX);
        // Err(Done) means it is already closing; nothing to do then.
        let _ = self.conn.close(true, code, reason.as_bytes());
        self.update_close();
    }

    // ---- outputs ----

    /// Writes the next datagram to send into `out` (at least 1350 bytes) and returns its
    /// length and destination, or `None` when there is nothing to send now.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        self.poll_transmit_info(out).map(|(n, info)| (n, info.to))
    }

    /// [`Self::poll_transmit`] with quiche's full send information, including the pacing
    /// release time `at`, for drivers that pace (the blocking client sends at once).
    pub fn poll_transmit_info(&mut self, out: &mut [u8]) -> Option<(usize, quiche::SendInfo)> {
        self.write_streams();
        // Err(Done): nothing to send. Other errors close the connection inside quiche, and
        // update_close picks that up.
        let sent = self.conn.send(out).ok();
        if sent.is_some() {
            self.last_sent = std::time::Instant::now();
        }
        self.update_close();
        sent
    }

    /// Time until [`Self::on_timeout`] is due (quiche's timers or the keep-alive), `None` once
    /// the connection is closed.
    pub fn timeout(&self) -> Option<Duration> {
        let quic = self.conn.timeout()?;
        match self.keepalive {
            Some(every) if self.conn.is_established() => {
                Some(quic.min(every.saturating_sub(self.last_sent.elapsed())))
            }
            _ => Some(quic),
        }
    }

    /// The next event: WELCOME and session-stream frames first, then the node's data stream,
    /// then (once) the close.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(event) = self.poll_session_event() {
            return Some(event);
        }
        if let Some(frame) = self.pop_data_frame() {
            return Some(Event::Frame(frame));
        }
        if self.session_events.is_empty() && self.data_frames.is_empty() && !self.close_reported {
            if let Some(close) = &self.close {
                self.close_reported = true;
                return Some(close.clone().into());
            }
        }
        None
    }

    /// The next event from the session stream only (WELCOME, OK, ERROR, PONG, GOODBYE ...),
    /// leaving the node's data stream queued: a driver waiting for an answer does not have to
    /// take deliveries off the session to find it. Never returns [`Event::Closed`]; see
    /// [`Self::closed`].
    pub fn poll_session_event(&mut self) -> Option<Event> {
        let event = self.session_events.pop_front()?;
        if self.session_events.len() + 1 == SESSION_QUEUE_FRAMES_MAX {
            // Reading had stopped at the bound; resume.
            self.read_streams();
        }
        Some(event)
    }

    fn pop_data_frame(&mut self) -> Option<Frame> {
        let was_full = self.data_queue_full();
        let (frame, size) = self.data_frames.pop_front()?;
        self.data_queued_bytes -= size;
        if was_full && !self.data_queue_full() {
            // Frames may wait in quiche's buffers, held back at the bound; take them now. The
            // window update this causes goes out with the next poll_transmit.
            self.read_streams();
        }
        Some(frame)
    }

    // ---- state ----

    /// The peer id HELLO carries.
    pub fn peer_id(&self) -> &Id32 {
        &self.peer_id
    }

    /// The node's WELCOME, once received.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    /// A limit the node advertised in WELCOME (`fovea_codec::frame::limit_keys`).
    pub fn node_limit(&self, key: u64) -> Option<u64> {
        self.welcome.as_ref().and_then(|w| w.limit(key))
    }

    /// True once the QUIC handshake is complete (HELLO is then on its way).
    pub fn is_handshake_complete(&self) -> bool {
        self.conn.is_established()
    }

    /// True once WELCOME has arrived.
    pub fn is_established(&self) -> bool {
        self.welcome.is_some()
    }

    /// Why the connection ended, as soon as it has (before [`Event::Closed`] is polled).
    pub fn closed(&self) -> Option<&Close> {
        self.close.as_ref()
    }

    /// True when quiche is done with the connection: nothing more to send or time.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Bytes queued for `stream` that QUIC has not accepted yet (flow control or congestion):
    /// the driver's measure of backpressure.
    pub fn pending_bytes(&self, stream: StreamKind) -> usize {
        let held = match (stream, &self.before_auth) {
            (StreamKind::Session, Some(held)) => held.len(),
            _ => 0,
        };
        self.outbox[stream.index()].len() + held
    }

    /// The QUIC connection, for statistics and path information.
    pub fn connection(&self) -> &quiche::Connection {
        &self.conn
    }

    // ---- internals ----

    fn check_open(&self) -> Result<(), ClientError> {
        match &self.close {
            Some(close) => Err(close.clone().into()),
            None => Ok(()),
        }
    }

    /// Where the application's frames for `stream` go: the outbox, or the session-stream
    /// frames held until AUTH.
    fn out_buffer(&mut self, stream: StreamKind) -> &mut BytesMut {
        match (stream, &mut self.before_auth) {
            (StreamKind::Session, Some(held)) => held,
            _ => &mut self.outbox[stream.index()],
        }
    }

    /// AUTH is queued (or WELCOME came): the held session-stream frames follow it.
    fn release_before_auth(&mut self) {
        if let Some(held) = self.before_auth.take() {
            self.outbox[StreamKind::Session.index()].extend_from_slice(&held);
        }
    }

    /// Moves outbox bytes into quiche's stream buffers, as far as flow control allows.
    fn write_streams(&mut self) {
        if self.close.is_some() || !self.conn.is_established() {
            return;
        }
        if !self.session_priority_set {
            // The session stream goes first (PROTOCOL §2.4): answers and PONGs never queue
            // behind bulk publishes.
            let _ = self.conn.stream_priority(SESSION_STREAM, 0, false);
            self.session_priority_set = true;
        }
        self.write_stream(StreamKind::Session);
        // Stream 2 only after WELCOME (PROTOCOL §2.2): frames on it are not ordered with HELLO.
        if self.welcome.is_some() && !self.outbox[StreamKind::Data.index()].is_empty() {
            if !self.data_priority_set {
                let _ = self.conn.stream_priority(CLIENT_DATA_STREAM, 3, true);
                self.data_priority_set = true;
            }
            self.write_stream(StreamKind::Data);
        }
    }

    fn write_stream(&mut self, kind: StreamKind) {
        let id = kind.stream_id();
        let out = &mut self.outbox[kind.index()];
        let mut failure = None;
        while !out.is_empty() {
            // Offer quiche no more than it can take: a `stream_send` beyond the connection's
            // flow-control credit queues a DATA_BLOCKED frame, and calling it on every turn
            // while blocked would send one packet per turn.
            let cap = match self.conn.stream_capacity(id) {
                Ok(cap) => cap,
                // Not created yet: the first write opens it.
                Err(quiche::Error::InvalidStreamState(_)) => out.len(),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            if cap == 0 {
                break;
            }
            let len = cap.min(out.len());
            match self.conn.stream_send(id, &out[..len], false) {
                Ok(0) | Err(quiche::Error::Done) => break,
                Ok(n) => out.advance(n),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            // The node stopped or reset our stream, or refused it (stream limit): the session
            // cannot continue without losing frames.
            let reason = format!("writing stream {}: {e}", kind.stream_id());
            self.fail(ErrorCode::InternalError, &reason);
        }
    }

    fn data_queue_full(&self) -> bool {
        self.data_frames.len() >= DATA_QUEUE_FRAMES_MAX
            || self.data_queued_bytes >= DATA_QUEUE_BYTES_MAX
    }

    fn read_streams(&mut self) {
        self.read_stream(SESSION_STREAM);
        self.read_stream(NODE_DATA_STREAM);
    }

    /// Reads `id` into its buffer and decodes whole frames, until quiche has no more data or
    /// the stream's event queue is at its bound.
    fn read_stream(&mut self, id: u64) {
        loop {
            if self.decode_failed {
                return;
            }
            let full = if id == NODE_DATA_STREAM {
                self.data_queue_full()
            } else {
                self.session_events.len() >= SESSION_QUEUE_FRAMES_MAX
            };
            if full || !self.conn.stream_readable(id) {
                return;
            }
            let rx = if id == SESSION_STREAM { &mut self.rx_session } else { &mut self.rx_data };
            let start = rx.len();
            rx.resize(start + READ_CHUNK, 0);
            match self.conn.stream_recv(id, &mut rx[start..]) {
                Ok((n, _fin)) => rx.truncate(start + n),
                Err(quiche::Error::Done) => {
                    rx.truncate(start);
                    return;
                }
                Err(e) => {
                    rx.truncate(start);
                    // A reset stream loses frames the protocol promises to deliver.
                    self.fail(ErrorCode::InternalError, &format!("reading stream {id}: {e}"));
                    return;
                }
            }
            self.decode(id);
        }
    }

    fn decode(&mut self, id: u64) {
        loop {
            let rx = if id == SESSION_STREAM { &mut self.rx_session } else { &mut self.rx_data };
            let before = rx.len();
            match decode_frame(rx, &self.limits) {
                Ok(Some(frame)) => {
                    let size = before - rx.len();
                    self.on_frame(id, frame, size);
                }
                Ok(None) => return,
                Err(e) => {
                    // The node sent something v1 does not allow: close with the code a node
                    // would use for the same fault.
                    self.fail(e.error_code(), &format!("stream {id}: {e}"));
                    self.decode_failed = true;
                    return;
                }
            }
        }
    }

    fn on_frame(&mut self, id: u64, frame: Frame, size: usize) {
        if id == NODE_DATA_STREAM {
            self.data_queued_bytes += size;
            self.data_frames.push_back((frame, size));
            return;
        }
        match frame {
            Frame::Ping(ping) => {
                // The node's keep-alive: a client MUST answer (PROTOCOL §6.6). This session
                // has no clock, so the PONG's "received at" is 0 (a receiver's clock value is
                // opaque; the node measures RTT with its own `sent_at_us`).
                let pong = Frame::Pong(frame::Pong {
                    ping_id: ping.ping_id,
                    sent_at_us: ping.sent_at_us,
                    received_at_us: 0,
                });
                pong.encode(&mut self.outbox[StreamKind::Session.index()]);
            }
            Frame::Challenge(challenge) if self.welcome.is_none() && self.signer.is_some() => {
                if self.auth_sent {
                    self.fail(ErrorCode::ProtocolViolation, "a second CHALLENGE");
                    self.decode_failed = true;
                    return;
                }
                // PROTOCOL §6.4: Ed25519 over "fovea-auth-v1" ‖ nonce ‖ HELLO's peer id.
                let key = self.signer.as_ref().expect("checked above");
                let signature = key.sign_auth(&challenge.nonce, &self.peer_id);
                let auth =
                    Frame::Auth(frame::Auth { signature: Bytes::copy_from_slice(&signature) });
                auth.encode(&mut self.outbox[StreamKind::Session.index()]);
                self.auth_sent = true;
                self.release_before_auth();
            }
            Frame::Welcome(welcome) if self.welcome.is_none() => {
                self.release_before_auth();
                self.session_events.push_back(Event::Welcome {
                    node_id: welcome.node_id,
                    observed: welcome.observed,
                    limits: welcome.limits.clone(),
                });
                self.welcome = Some(welcome);
            }
            frame => self.session_events.push_back(Event::Frame(frame)),
        }
    }

    fn fail(&mut self, code: ErrorCode, reason: &str) {
        let _ = self.conn.close(true, code as u64, truncate(reason, CLOSE_REASON_MAX).as_bytes());
        self.update_close();
    }

    /// Records why the connection ended, the first time it is known.
    fn update_close(&mut self) {
        if self.close.is_some() {
            return;
        }
        let close = if let Some(e) = self.conn.peer_error() {
            close_from(e, true)
        } else if let Some(e) = self.conn.local_error() {
            close_from(e, false)
        } else if self.conn.is_closed() {
            if self.conn.is_timed_out() {
                // QUIC ends an idle connection silently (RFC 9000 §10.1); PROTOCOL §2.6 names
                // the case IDLE_TIMEOUT.
                Close {
                    error_code: ErrorCode::IdleTimeout as u64,
                    is_app: true,
                    reason: "idle timeout".to_owned(),
                    by_peer: false,
                }
            } else {
                // Closed without a CONNECTION_CLOSE either way: a stateless reset from the node
                // (it lost the connection's state, e.g. after a restart).
                Close {
                    error_code: 0,
                    is_app: false,
                    reason: "ended without a close frame (stateless reset?)".to_owned(),
                    by_peer: true,
                }
            }
        } else {
            return;
        };
        self.close = Some(close);
    }
}

fn close_from(e: &quiche::ConnectionError, by_peer: bool) -> Close {
    Close {
        error_code: e.error_code,
        is_app: e.is_app,
        reason: String::from_utf8_lossy(&e.reason).into_owned(),
        by_peer,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
