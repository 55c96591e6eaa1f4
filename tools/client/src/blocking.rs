//! A blocking client: one [`ClientSession`] driven over a connected std `UdpSocket`.
//!
//! Every method that waits has a deadline (the caller's, or now + `request_timeout`). Waiting
//! is a blocking `recv` whose read timeout is the earlier of that deadline and quiche's next
//! timer, so retransmissions and the idle timeout run on time and nothing spins.
//!
//! The socket is connected to the node, so an ICMP "port unreachable" comes back as
//! `ECONNREFUSED` on the next receive and `connect` fails at once with
//! [`ClientError::ConnectionRefused`] instead of waiting out its deadline. The flip side: the
//! client does not follow connection migration or a preferred address (the node uses neither).

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::ControlFlow::{self, Break, Continue};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fovea_codec::frame::{self, Frame, Welcome};
use fovea_codec::{ErrorCode, Id32, Name, Pattern, Topic};

use crate::config::ClientConfig;
use crate::error::{ClientError, Close};
use crate::session::{ClientSession, Event, StreamKind};

/// Bytes queued on the data stream beyond which `publish` without ack waits for QUIC to take
/// them: a fast publisher meets the node's flow control instead of filling memory.
pub const DATA_OUTBOX_HIGH_BYTES: usize = 1 << 20;

/// The node's call timeout when a CALL asks for its default (the node's
/// `rpc_default_timeout_ms`); a caller waits this plus its request timeout.
const NODE_CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Shortest socket read timeout: quiche's timers have millisecond granularity, and a shorter
/// wait would only turn into a spin.
const WAIT_MIN: Duration = Duration::from_millis(1);

/// Largest UDP datagram the socket reads.
const DATAGRAM_MAX: usize = 65_535;

/// How to reach the node.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Identity, trust, transport sizes.
    pub config: ClientConfig,
    /// TLS server name (SNI, and the name the certificate must hold unless verification is
    /// off). The node's self-signed certificate names `localhost` and `fovea.local`.
    pub server_name: Option<String>,
    /// Bound on each request's answer (and on `flush`, `close`).
    pub request_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            config: ClientConfig::default(),
            server_name: Some("localhost".to_owned()),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A connected, welcomed session with a node.
pub struct Client {
    session: ClientSession,
    socket: UdpSocket,
    local: SocketAddr,
    node: SocketAddr,
    recv_buf: Box<[u8]>,
    send_buf: Box<[u8]>,
    /// Frames that arrived while a request waited for its own answer.
    pending: VecDeque<Frame>,
    next_request_id: u64,
    next_ping_id: u64,
    request_timeout: Duration,
    /// Origin of PING's `sent_at_us`.
    epoch: Instant,
    data_stream_used: bool,
    close_returned: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.node)
            .field("local", &self.local)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

fn io_error(context: &'static str) -> impl FnOnce(io::Error) -> ClientError {
    move |source| ClientError::Io { context, source }
}

/// Rounds to milliseconds for messages ("1s", not "999.998213ms").
fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(((d.as_micros() + 500) / 1000) as u64)
}

impl Client {
    /// Connects to `addr`: QUIC and TLS handshake, HELLO, (with a public-key credential)
    /// CHALLENGE and AUTH, WELCOME, all before `deadline`. The node's refusals of the
    /// credential come back as [`ClientError::AuthRequired`] and [`ClientError::AuthFailed`];
    /// a CHALLENGE this client cannot sign (no private key) as [`ClientError::NoSigningKey`].
    pub fn connect(
        addr: SocketAddr,
        options: &ConnectOptions,
        deadline: Instant,
    ) -> Result<Client, ClientError> {
        let started = Instant::now();
        let any: SocketAddr = if addr.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(any).map_err(io_error("binding a UDP socket"))?;
        socket.connect(addr).map_err(|e| socket_error(addr, e))?;
        let local = socket.local_addr().map_err(io_error("reading the local address"))?;
        let session =
            ClientSession::new(&options.config, options.server_name.as_deref(), local, addr)?;
        let mut client = Client {
            session,
            socket,
            local,
            node: addr,
            recv_buf: vec![0; DATAGRAM_MAX].into_boxed_slice(),
            send_buf: vec![0; 1500].into_boxed_slice(),
            pending: VecDeque::new(),
            next_request_id: 0,
            next_ping_id: 0,
            request_timeout: options.request_timeout,
            epoch: started,
            data_stream_used: false,
            close_returned: false,
        };
        loop {
            while let Some(event) = client.session.poll_session_event() {
                match event {
                    Event::Welcome { .. } => return Ok(client),
                    // The session answers CHALLENGE itself when it has the private key.
                    Event::Frame(Frame::Challenge(_)) => {
                        client.session.close(ErrorCode::NoError as u64, "no key to sign CHALLENGE");
                        let _ = client.transmit();
                        return Err(ClientError::NoSigningKey);
                    }
                    Event::Frame(f) => client.stash(f),
                    Event::Closed { .. } => {}
                }
            }
            if let Some(close) = client.session.closed() {
                if close.is_idle_timeout() {
                    // QUIC's idle timer runs during the handshake too: silence is silence.
                    let after = round_ms(started.elapsed());
                    return Err(ClientError::HandshakeTimeout { addr, after });
                }
                return Err(close.clone().into());
            }
            if Instant::now() >= deadline {
                let after = round_ms(deadline.saturating_duration_since(started));
                return Err(ClientError::HandshakeTimeout { addr, after });
            }
            client.turn(deadline)?;
        }
    }

    // ---- requests ----

    /// Subscribes `pattern` as subscription `sub_id` and waits for the node's OK (deliveries
    /// that match are guaranteed from then on, PROTOCOL §2.3).
    pub fn subscribe(&mut self, sub_id: u64, pattern: &str) -> Result<(), ClientError> {
        let pattern: Pattern = pattern.parse().map_err(|source| ClientError::Invalid {
            what: "pattern",
            value: pattern.to_owned(),
            source,
        })?;
        self.request(StreamKind::Session, |request_id| {
            Frame::Subscribe(frame::Subscribe { request_id, sub_id, pattern })
        })
    }

    /// Ends subscription `sub_id` and waits for the node's OK.
    pub fn unsubscribe(&mut self, sub_id: u64) -> Result<(), ClientError> {
        self.request(StreamKind::Session, |request_id| {
            Frame::Unsubscribe(frame::Unsubscribe { request_id, sub_id })
        })
    }

    /// Publishes `payload` to `topic` on the data stream. With `ack`, waits for the node's OK
    /// (or ERROR); without, returns once the frame is queued (waiting only while more than
    /// [`DATA_OUTBOX_HIGH_BYTES`] are queued), and a failure comes back later as an
    /// ERROR frame with request id 0 from [`Self::next_event`].
    pub fn publish(&mut self, topic: &str, payload: &[u8], ack: bool) -> Result<(), ClientError> {
        self.publish_with_id(topic, payload, None, ack)
    }

    /// [`Self::publish`] with a message id for the node's duplicate suppression.
    pub fn publish_with_id(
        &mut self,
        topic: &str,
        payload: &[u8],
        message_id: Option<u64>,
        ack: bool,
    ) -> Result<(), ClientError> {
        let topic: Topic = topic.parse().map_err(|source| ClientError::Invalid {
            what: "topic",
            value: topic.to_owned(),
            source,
        })?;
        let deadline = self.deadline();
        let request_id = if ack { self.next_request_id() } else { 0 };
        self.session.send_publish(request_id, message_id, &topic, payload, StreamKind::Data)?;
        self.data_stream_used = true;
        self.transmit()?;
        if ack {
            return self.wait_answer(request_id, "PUBLISH", deadline);
        }
        while self.session.pending_bytes(StreamKind::Data) > DATA_OUTBOX_HIGH_BYTES {
            self.check_open()?;
            if Instant::now() >= deadline {
                return Err(self.timeout("flow-control credit for the data stream"));
            }
            self.turn(deadline)?;
        }
        Ok(())
    }

    /// Sends a PING and returns the round-trip time to its PONG.
    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        let deadline = self.deadline();
        self.next_ping_id += 1;
        let ping_id = self.next_ping_id;
        let start = Instant::now();
        let sent_at_us = u64::try_from(start.duration_since(self.epoch).as_micros()).unwrap_or(0);
        self.send_frame(&Frame::Ping(frame::Ping { ping_id, sent_at_us }), StreamKind::Session)?;
        self.wait_session(deadline, "PONG", |f| match f {
            Frame::Pong(p) if p.ping_id == ping_id => Break(()),
            f => Continue(f),
        })?;
        Ok(start.elapsed())
    }

    /// Calls `procedure` with `payload` and returns the reply. `timeout_ms` is the call's
    /// deadline at the node (0: the node's default); the client waits that long plus its
    /// request timeout, since the node answers with DEADLINE_EXCEEDED by then.
    pub fn call(
        &mut self,
        procedure: &str,
        payload: &[u8],
        timeout_ms: u64,
        idempotent: bool,
    ) -> Result<Bytes, ClientError> {
        let name: Name = procedure.parse().map_err(|source| ClientError::Invalid {
            what: "procedure name",
            value: procedure.to_owned(),
            source,
        })?;
        let call_timeout = match timeout_ms {
            0 => NODE_CALL_TIMEOUT_DEFAULT,
            ms => Duration::from_millis(ms),
        };
        let deadline = Instant::now() + call_timeout + self.request_timeout;
        let call_id = self.next_request_id();
        let call = Frame::Call(frame::Call {
            idempotent,
            call_id,
            timeout_ms,
            procedure: name,
            payload: Bytes::copy_from_slice(payload),
        });
        self.send_frame(&call, StreamKind::Data)?;
        let allowed = call_timeout + self.request_timeout;
        self.wait_any(deadline, allowed, "REPLY", |f| match f {
            Frame::Reply(r) if r.id == call_id => Break(Ok(r.payload)),
            Frame::CallError(e) if e.id == call_id => Break(Err(ClientError::CallFailed {
                procedure: procedure.to_owned(),
                code: e.code,
                message: String::from_utf8_lossy(&e.message).into_owned(),
            })),
            f => Continue(f),
        })?
    }

    /// Sends the request `make(request_id)` on `stream` and waits for its OK or ERROR. For
    /// frames without a helper (REGISTER, SEND with an ack, ...).
    pub fn request(
        &mut self,
        stream: StreamKind,
        make: impl FnOnce(u64) -> Frame,
    ) -> Result<(), ClientError> {
        let deadline = self.deadline();
        let request_id = self.next_request_id();
        let frame = make(request_id);
        self.send_frame(&frame, stream)?;
        self.wait_answer(request_id, frame_name(&frame), deadline)
    }

    /// Queues any frame on `stream` and sends what QUIC allows now. Nothing waits for an
    /// answer; see [`Self::next_event`].
    pub fn send_frame(&mut self, frame: &Frame, stream: StreamKind) -> Result<(), ClientError> {
        self.session.send_frame(frame, stream)?;
        if stream == StreamKind::Data {
            self.data_stream_used = true;
        }
        self.transmit()
    }

    /// A fresh request id (a counter from 1, shared with calls).
    pub fn next_request_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }

    // ---- events ----

    /// The next frame from the node (DELIVER, REPLY, MESSAGE, an ERROR for a publish without
    /// ack, GOODBYE, ...), or [`Event::Closed`] once when the connection ends, or `None` at
    /// `deadline` or after the close was returned. A socket failure closes the session and
    /// comes back as that `Closed` event.
    pub fn next_event(&mut self, deadline: Instant) -> Option<Event> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(Event::Frame(frame));
            }
            match self.session.poll_event() {
                // The session's own close event is replaced by the one below, which also
                // covers a close already seen while waiting for an answer.
                Some(Event::Closed { .. }) | None => {}
                Some(event) => return Some(event),
            }
            if let Some(close) = self.session.closed() {
                if self.close_returned {
                    return None;
                }
                self.close_returned = true;
                return Some(close.clone().into());
            }
            if Instant::now() >= deadline {
                return None;
            }
            // A socket error closes the session inside turn(); the loop then reports it.
            let _ = self.turn(deadline);
        }
    }

    /// Hands every queued frame to QUIC and sends every packet it has for now. This does not
    /// wait for acknowledgements: use `publish(.., ack = true)` or [`Self::close`] to know the
    /// node has handled the frames.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        let deadline = self.deadline();
        loop {
            self.transmit()?;
            self.check_open()?;
            let queued = self.session.pending_bytes(StreamKind::Session)
                + self.session.pending_bytes(StreamKind::Data);
            if queued == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.timeout("flow-control credit to flush"));
            }
            self.turn(deadline)?;
        }
    }

    /// Ends the session politely: GOODBYE behind everything already sent on the stream last
    /// used for data, then waits for the node to close with NO_ERROR, which it does once it has
    /// handled every frame before the GOODBYE. `Ok` means the node confirmed; on timeout the
    /// client closes the connection itself and returns the timeout.
    pub fn close(mut self) -> Result<(), ClientError> {
        if let Some(close) = self.session.closed() {
            return if close.is_no_error() { Ok(()) } else { Err(close.clone().into()) };
        }
        let deadline = self.deadline();
        let stream = if self.data_stream_used { StreamKind::Data } else { StreamKind::Session };
        let goodbye = Frame::Goodbye(frame::Goodbye {
            code: ErrorCode::NoError as u64,
            reason: Bytes::from_static(b"client exit"),
        });
        self.session.send_frame(&goodbye, stream)?;
        loop {
            if let Some(close) = self.session.closed() {
                return if close.is_no_error() { Ok(()) } else { Err(close.clone().into()) };
            }
            if Instant::now() >= deadline {
                break;
            }
            self.turn(deadline)?;
        }
        let timeout = self.timeout("close after GOODBYE");
        self.session.close(ErrorCode::NoError as u64, "client exit");
        let _ = self.transmit();
        Err(timeout)
    }

    // ---- state ----

    /// The node's WELCOME.
    pub fn welcome(&self) -> &Welcome {
        self.session.welcome().expect("connect returns only after WELCOME")
    }

    /// The peer id this session announced.
    pub fn peer_id(&self) -> &Id32 {
        self.session.peer_id()
    }

    /// The node's address.
    pub fn node_addr(&self) -> SocketAddr {
        self.node
    }

    /// The local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Why the connection ended, once it has.
    pub fn closed(&self) -> Option<&Close> {
        self.session.closed()
    }

    /// The session, for its state and the QUIC connection's statistics.
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    // ---- driving ----

    fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    fn timeout(&self, waiting_for: &'static str) -> ClientError {
        ClientError::Timeout { waiting_for, after: round_ms(self.request_timeout) }
    }

    fn check_open(&self) -> Result<(), ClientError> {
        match self.session.closed() {
            Some(close) => Err(close.clone().into()),
            None => Ok(()),
        }
    }

    /// Keeps a frame that is not the awaited answer for [`Self::next_event`]. OK and PONG can
    /// only answer requests nobody waits for any more (this client waits for each of its
    /// requests), so they are dropped.
    fn stash(&mut self, frame: Frame) {
        if !matches!(frame, Frame::Ok(_) | Frame::Pong(_)) {
            self.pending.push_back(frame);
        }
    }

    fn wait_answer(
        &mut self,
        request_id: u64,
        request: &'static str,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        self.wait_session(deadline, "answer to the request", |f| match f {
            Frame::Ok(ok) if ok.request_id == request_id => Break(Ok(())),
            Frame::Error(e) if e.request_id == request_id => Break(Err(ClientError::Rejected {
                request,
                code: e.code,
                message: String::from_utf8_lossy(&e.message).into_owned(),
            })),
            f => Continue(f),
        })?
    }

    /// Waits for a session-stream frame that `take` accepts (`Break`); the frames it gives
    /// back (`Continue`) are kept for `next_event`. Deliveries stay queued in the session meanwhile.
    fn wait_session<T>(
        &mut self,
        deadline: Instant,
        waiting_for: &'static str,
        mut take: impl FnMut(Frame) -> ControlFlow<T, Frame>,
    ) -> Result<T, ClientError> {
        loop {
            while let Some(event) = self.session.poll_session_event() {
                if let Event::Frame(frame) = event {
                    match take(frame) {
                        Break(answer) => return Ok(answer),
                        Continue(other) => self.stash(other),
                    }
                }
            }
            self.check_open()?;
            if Instant::now() >= deadline {
                return Err(self.timeout(waiting_for));
            }
            self.turn(deadline)?;
        }
    }

    /// Like [`Self::wait_session`] over every stream (REPLY comes on the node's data stream).
    fn wait_any<T>(
        &mut self,
        deadline: Instant,
        allowed: Duration,
        waiting_for: &'static str,
        mut take: impl FnMut(Frame) -> ControlFlow<T, Frame>,
    ) -> Result<T, ClientError> {
        loop {
            while let Some(event) = self.session.poll_event() {
                if let Event::Frame(frame) = event {
                    match take(frame) {
                        Break(answer) => return Ok(answer),
                        Continue(other) => self.stash(other),
                    }
                }
            }
            self.check_open()?;
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout { waiting_for, after: round_ms(allowed) });
            }
            self.turn(deadline)?;
        }
    }

    /// One step: send what is due, wait for one datagram or the next timer (whichever comes
    /// first, bounded by `deadline`), feed it, run expired timers, send again.
    fn turn(&mut self, deadline: Instant) -> Result<(), ClientError> {
        self.transmit()?;
        let timer = self.session.timeout();
        let mut wait = deadline.saturating_duration_since(Instant::now());
        if let Some(t) = timer {
            wait = wait.min(t);
        }
        if !wait.is_zero() {
            self.socket
                .set_read_timeout(Some(wait.max(WAIT_MIN)))
                .map_err(io_error("setting the socket read timeout"))?;
            match self.socket.recv(&mut self.recv_buf) {
                Ok(n) => {
                    self.session.handle_datagram(&mut self.recv_buf[..n], self.node, self.local)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(self.fail_socket(e)),
            }
        }
        if self.session.timeout().is_some_and(|t| t.is_zero()) {
            self.session.on_timeout();
        }
        self.transmit()
    }

    fn transmit(&mut self) -> Result<(), ClientError> {
        while let Some((n, _to)) = self.session.poll_transmit(&mut self.send_buf) {
            if let Err(e) = self.socket.send(&self.send_buf[..n]) {
                if is_fatal(&e) {
                    return Err(self.fail_socket(e));
                }
                // Anything else (ENOBUFS, EMSGSIZE) loses this datagram; QUIC's loss recovery
                // resends its contents.
            }
        }
        Ok(())
    }

    /// Closes the session after a socket error, so every later call reports it too.
    fn fail_socket(&mut self, e: io::Error) -> ClientError {
        let error = socket_error(self.node, e);
        self.session.close(ErrorCode::InternalError as u64, &error.to_string());
        error
    }
}

impl Drop for Client {
    /// A dropped client closes its connection at once, so the node frees the session without
    /// waiting for the idle timeout.
    fn drop(&mut self) {
        if self.session.closed().is_none() {
            self.session.close(ErrorCode::NoError as u64, "client dropped");
            let _ = self.transmit();
        }
    }
}

fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

fn socket_error(addr: SocketAddr, source: io::Error) -> ClientError {
    match source.kind() {
        io::ErrorKind::ConnectionRefused => ClientError::ConnectionRefused { addr },
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            ClientError::Unreachable { addr, source }
        }
        _ => ClientError::Io { context: "UDP socket", source },
    }
}

/// The name of a request frame, for [`ClientError::Rejected`].
fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Subscribe(_) => "SUBSCRIBE",
        Frame::Unsubscribe(_) => "UNSUBSCRIBE",
        Frame::Publish(_) => "PUBLISH",
        Frame::Register(_) => "REGISTER",
        Frame::Unregister(_) => "UNREGISTER",
        Frame::Send(_) => "SEND",
        Frame::PunchRequest(_) => "PUNCH_REQUEST",
        Frame::FindNode(_) => "FIND_NODE",
        Frame::FindValue(_) => "FIND_VALUE",
        Frame::Store(_) => "STORE",
        _ => "request",
    }
}
