//! A worker thread's client side: one connected UDP socket shared by many QUIC connections.
//!
//! Received datagrams are routed by destination connection ID (each connection has its own
//! random 16-byte SCID, looked up in a hash map); everything a connection has to send is
//! produced once per loop turn for the connections that need it (`dirty`) into one batch; quiche
//! timers sit in a heap. The endpoint does the session work common to every scenario: HELLO
//! after the handshake, WELCOME, answering the node's PINGs; other frames go to the scenario as
//! events. With several nodes (`--node A,B`) it holds one connected socket per node and
//! reconnects failed connections to the next one (`failover`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use fovea_codec::frame::{self, types, Frame, FLAG_MESSAGE_ID};
use fovea_codec::{decode_frame, peek_header, varint, DecodeError, Limits, Realm};

use crate::clock::{poll_fd, poll_fds, Epoch, Waker};
use crate::conn::{quic_config, Conn, Phase, Tls, SESSION_STREAM};
use crate::failover::{self, Reconnect};
use crate::payload::Stamp;
use crate::udp::{self, RecvBatch, SendBatch};
use crate::wire::{self, Answer};

/// Length of our connection IDs.
const CID_LEN: usize = 16;
/// Datagrams handled per turn before the turn's work and flush run: bounds how late a due send
/// can be, and how many ACKs one flush produces.
const PACKETS_PER_TURN: usize = 256;
/// Timer entries are never further ahead than this, so entries made stale by later activity
/// leave the heap within this time (quiche's idle timer is 30 s ahead and moves on every packet).
const TIMER_HORIZON: Duration = Duration::from_secs(1);
/// Below this, the runtime's millisecond timer is too coarse: the last stretch of a wait uses a
/// nanosecond `ppoll` on the socket.
const FINE_WAIT: Duration = Duration::from_millis(2);
/// Longest wait, so a thread notices the main thread's requests (abort, start) promptly.
const WAIT_MAX: Duration = Duration::from_millis(100);

/// Something a scenario reacts to.
#[derive(Debug)]
pub enum Event {
    /// WELCOME arrived: the session is open.
    Welcome {
        /// Connection.
        conn: u32,
        /// When it arrived, ns since the epoch.
        at_ns: u64,
    },
    /// A DELIVER (decoded only as far as the payload's measurement header).
    Delivery {
        /// Connection.
        conn: u32,
        /// When the datagram that completed it arrived, ns since the epoch.
        at_ns: u64,
        /// The first subscription id the DELIVER lists.
        sub: u64,
        /// The payload's header; `None` when the payload is too short to carry one.
        stamp: Option<Stamp>,
    },
    /// An INVOKE (read only as far as the invocation id and the payload's header).
    Invoke {
        /// Connection.
        conn: u32,
        /// When the datagram that completed it arrived, ns since the epoch.
        at_ns: u64,
        /// Invocation id and payload header.
        answer: Answer,
    },
    /// A REPLY from the node to a caller (read only as far as the call id and the header).
    Reply {
        /// Connection.
        conn: u32,
        /// When the datagram that completed it arrived, ns since the epoch.
        at_ns: u64,
        /// Call id and payload header.
        answer: Answer,
    },
    /// A frame other than WELCOME, DELIVER, INVOKE, REPLY and the node's PINGs.
    Frame {
        /// Connection.
        conn: u32,
        /// When the datagram that completed it arrived, ns since the epoch.
        at_ns: u64,
        /// The frame.
        frame: Frame,
    },
    /// The connection ended (and is gone from the endpoint, unless `reconnecting`).
    Closed {
        /// Connection.
        conn: u32,
        /// How it ended.
        reason: String,
        /// We had asked it to close.
        expected: bool,
        /// It lost its session and is being opened again (on the next node): a new WELCOME
        /// for the same connection id follows unless the attempts run out.
        reconnecting: bool,
    },
}

/// Connection IDs are random: their low 64 bits are already a good hash.
#[derive(Default)]
struct CidHasher(u64);

impl Hasher for CidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

type CidMap = HashMap<u128, u32, BuildHasherDefault<CidHasher>>;

/// The DCID of a datagram from the node, as our map key.
#[inline]
fn dcid(d: &[u8]) -> Option<u128> {
    let first = *d.first()?;
    let cid = if first & 0x80 != 0 {
        // Long header: flags, version (4), DCID length, DCID.
        if *d.get(5)? as usize != CID_LEN {
            return None;
        }
        d.get(6..6 + CID_LEN)?
    } else {
        d.get(1..1 + CID_LEN)?
    };
    Some(u128::from_ne_bytes(cid.try_into().ok()?))
}

/// A socket connected to one node, and the batch of packets waiting to leave on it.
struct Sock {
    socket: monoio::net::udp::UdpSocket,
    fd: RawFd,
    node: SocketAddr,
    local: SocketAddr,
    tx: SendBatch,
    blocked: bool,
}

impl Sock {
    fn new(node: SocketAddr) -> io::Result<Sock> {
        let std_socket = udp::connect(node)?;
        let local = std_socket.local_addr()?;
        let fd = std_socket.as_raw_fd();
        let gso = udp::gso_supported(fd);
        let socket = monoio::net::udp::UdpSocket::from_std(std_socket)?;
        Ok(Sock { socket, fd, node, local, tx: SendBatch::new(gso), blocked: false })
    }
}

/// One thread's connections and sockets (one per node).
pub struct Endpoint {
    socks: Vec<Sock>,
    /// The socket the receive batch was read from.
    rx_sock: usize,
    policy: Reconnect,
    /// Connections waiting to be opened again: when, and on which node with which attempt.
    reopen: BinaryHeap<Reverse<(Instant, u32)>>,
    reopen_to: HashMap<u32, (usize, u32)>,
    /// Deadlines of connection attempts to get their session: (when, connection, attempt).
    attempt_deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    config: quiche::Config,
    conns: Vec<Option<Conn>>,
    by_cid: CidMap,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Connections with latency-sensitive data queued (publishes, pings): flushed first.
    urgent: Vec<u32>,
    /// Connections with anything else to do (ACKs, timers, handshakes).
    dirty: Vec<u32>,
    /// Deferred ACKs in deadline order (each is `now + ack_delay` when queued).
    acks_due: std::collections::VecDeque<(Instant, u32)>,
    /// Longest a connection that only received waits for data to carry its ACK (quiche itself
    /// ACKs every ack-eliciting packet at the next `send()`; most QUIC stacks delay ACKs, and
    /// ACK-only packets were a third of what the node received at 100,000 calls/s).
    pub ack_delay: Duration,
    rx: RecvBatch,
    events: Vec<Event>,
    limits: Limits,
    realm: Realm,
    epoch: Epoch,
    scratch: Box<[u8]>,
    /// CLOCK_REALTIME minus epoch time, ns: converts kernel receive timestamps.
    realtime_offset: i128,
    waker: Waker,
    live: usize,
    /// Datagrams for no connection of ours (late packets of closed connections).
    pub stray: u64,
}

impl Endpoint {
    /// A socket connected to each of `nodes` (at least one), registered with the current
    /// monoio runtime; failed connections are opened again as `policy` says.
    pub fn new(
        nodes: &[SocketAddr],
        policy: Reconnect,
        tls: &Tls,
        realm: Realm,
        epoch: Epoch,
    ) -> io::Result<Endpoint> {
        let socks = nodes.iter().map(|&n| Sock::new(n)).collect::<io::Result<Vec<_>>>()?;
        if socks.is_empty() {
            return Err(io::Error::other("no node address"));
        }
        let config =
            quic_config(tls).map_err(|e| io::Error::other(format!("QUIC configuration: {e}")))?;
        Ok(Endpoint {
            socks,
            rx_sock: 0,
            policy,
            reopen: BinaryHeap::new(),
            reopen_to: HashMap::new(),
            attempt_deadlines: BinaryHeap::new(),
            config,
            conns: Vec::new(),
            by_cid: CidMap::default(),
            timers: BinaryHeap::new(),
            urgent: Vec::new(),
            dirty: Vec::new(),
            acks_due: std::collections::VecDeque::new(),
            ack_delay: Duration::ZERO,
            rx: RecvBatch::new(),
            events: Vec::new(),
            limits: Limits::default(),
            realm,
            epoch,
            scratch: vec![0u8; 64 << 10].into_boxed_slice(),
            realtime_offset: 0,
            waker: Waker::default(),
            live: 0,
            stray: 0,
        })
    }

    /// Our sockets' addresses (one per node).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.socks.iter().map(|s| s.local).collect()
    }

    /// Connections not closed yet.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Starts a new connection (to the first node); the handshake and HELLO follow by
    /// themselves.
    pub fn open(&mut self, now: Instant) -> io::Result<u32> {
        let id = self.conns.len() as u32;
        self.conns.push(None);
        self.connect(id, 0, 0, now)?;
        Ok(id)
    }

    /// Opens connection `id` on node `node` (its `attempt`-th retry).
    fn connect(&mut self, id: u32, node: usize, attempt: u32, now: Instant) -> io::Result<()> {
        let mut cid = [0u8; CID_LEN];
        boring::rand::rand_bytes(&mut cid).map_err(io::Error::other)?;
        let key = u128::from_ne_bytes(cid);
        let scid = quiche::ConnectionId::from_ref(&cid);
        let sock = &self.socks[node];
        let quic =
            quiche::connect(Some("localhost"), &scid, sock.local, sock.node, &mut self.config)
                .map_err(|e| io::Error::other(format!("quiche connect: {e}")))?;
        let mut c = Conn::new(quic, key, now);
        c.node = node;
        c.attempt = attempt;
        self.conns[id as usize] = Some(c);
        self.by_cid.insert(key, id);
        self.dirty.push(id);
        self.live += 1;
        if self.policy.enabled() {
            let at = now + self.policy.attempt_timeout;
            self.attempt_deadlines.push(Reverse((at, id, attempt)));
        }
        Ok(())
    }

    /// Connection `id` ended (already removed from quiche's view or not): opens it again on the
    /// next node after a backoff if the policy allows and we did not ask for the close;
    /// otherwise reports it closed.
    fn ended(&mut self, id: u32, reason: String, now: Instant) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(Option::take) else { return };
        self.by_cid.remove(&c.scid);
        self.live -= 1;
        let expected = c.closing;
        let had_session = c.phase == Phase::Session;
        // A session reached resets the count: each loss of a session gets every attempt.
        let attempt = if had_session { 1 } else { c.attempt + 1 };
        if !expected && self.policy.enabled() && attempt <= self.policy.attempts {
            let node = failover::next_node(c.node, self.socks.len());
            let at = now + self.policy.backoff(attempt, rand::random::<f64>());
            self.reopen.push(Reverse((at, id)));
            self.reopen_to.insert(id, (node, attempt));
            if had_session {
                self.events.push(Event::Closed { conn: id, reason, expected, reconnecting: true });
            }
            return;
        }
        let reason = if c.attempt > 0 {
            format!("{reason} (after {} attempts on {} node(s))", c.attempt + 1, self.socks.len())
        } else {
            reason
        };
        self.events.push(Event::Closed { conn: id, reason, expected, reconnecting: false });
    }

    /// A socket failed: refused (nothing listens on that node) ends its connections, which the
    /// policy may move to the next node; without reconnecting, or for other errors, the thread
    /// fails as before.
    fn sock_failed(&mut self, sock: usize, e: io::Error, now: Instant) -> io::Result<()> {
        if !(self.policy.enabled() && e.raw_os_error() == Some(libc::ECONNREFUSED)) {
            return Err(e);
        }
        let node = self.socks[sock].node;
        let ids: Vec<u32> = (0..self.conns.len() as u32)
            .filter(|&id| self.conns[id as usize].as_ref().is_some_and(|c| c.node == sock))
            .collect();
        for id in ids {
            self.ended(id, format!("connection refused by {node}"), now);
        }
        Ok(())
    }

    /// The connection, while it is open.
    pub fn conn(&self, id: u32) -> Option<&Conn> {
        self.conns.get(id as usize)?.as_ref()
    }

    /// Queues a frame on the session stream (sent ahead of other connections' ACKs).
    pub fn send_session(&mut self, id: u32, f: &Frame) {
        if let Some(c) = self.conn_urgent(id) {
            f.encode(&mut c.session_tx);
        }
    }

    /// The pending bytes of the data stream, to append a frame to; the connection is flushed
    /// ahead of other connections' ACKs.
    pub fn data_tx(&mut self, id: u32) -> Option<&mut BytesMut> {
        self.conn_urgent(id).map(|c| &mut c.data_tx)
    }

    /// Closes the connection (NO_ERROR); its `Closed` event says `expected`. A connection
    /// waiting to be opened again is dropped without an event.
    pub fn close(&mut self, id: u32) {
        self.reopen_to.remove(&id);
        if let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) {
            c.closing = true;
            let _ = c.quic.close(true, 0, b"done");
            c.ack_only = false;
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn conn_urgent(&mut self, id: u32) -> Option<&mut Conn> {
        let c = self.conns.get_mut(id as usize)?.as_mut()?;
        if !c.urgent {
            c.urgent = true;
            self.urgent.push(id);
        }
        Some(c)
    }

    /// Takes the events gathered so far (hand the vector back with `restore_events`).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Returns an emptied event vector, keeping its capacity.
    pub fn restore_events(&mut self, mut v: Vec<Event>) {
        v.clear();
        if self.events.is_empty() {
            self.events = v;
        }
    }

    /// True when events wait to be taken.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Reads what the socket holds (a bounded amount), feeds it to the connections and decodes
    /// their streams. Stops early, between batches, once `until` has passed (a send is due).
    /// `Ok(true)`: stopped before the socket was empty.
    pub fn recv(&mut self, until: Option<Instant>) -> io::Result<bool> {
        let now = Instant::now();
        self.realtime_offset = udp::realtime_ns() as i128 - self.epoch.ns(now) as i128;
        let mut packets = 0;
        let mut emptied = 0;
        loop {
            if !self.rx.has_pending() {
                let n = match self.rx.recv(self.socks[self.rx_sock].fd) {
                    Ok(n) => n,
                    Err(e) => {
                        self.sock_failed(self.rx_sock, e, now)?;
                        0
                    }
                };
                if n == 0 {
                    // This socket is empty: on to the next, until all are.
                    emptied += 1;
                    if emptied >= self.socks.len() {
                        return Ok(false);
                    }
                    self.rx_sock = (self.rx_sock + 1) % self.socks.len();
                    continue;
                }
            }
            let (from, to) = (self.socks[self.rx_sock].node, self.socks[self.rx_sock].local);
            while let Some(i) = self.rx.next_index() {
                let Some((buf, stamp, segment)) = self.rx.get(i) else { continue };
                let at_ns = match stamp {
                    Some(rt) => (rt as i128 - self.realtime_offset).max(0) as u64,
                    None => self.epoch.ns(Instant::now()),
                };
                // A GRO buffer holds several datagrams (of different connections, even).
                let segment = segment.unwrap_or(buf.len()).max(1);
                for d in buf.chunks_mut(segment) {
                    packets += 1;
                    let Some(&id) = dcid(d).and_then(|k| self.by_cid.get(&k)) else {
                        self.stray += 1;
                        continue;
                    };
                    let Some(c) = self.conns[id as usize].as_mut() else { continue };
                    let info = quiche::RecvInfo { from, to };
                    // A fatal error closes the connection inside quiche; the flush reports it.
                    let _ = c.quic.recv(d, info);
                    if !c.dirty {
                        c.dirty = true;
                        c.ack_only = true;
                        self.dirty.push(id);
                    }
                    if c.phase == Phase::Handshake && c.quic.is_established() {
                        c.phase = Phase::Hello;
                        hello(&self.realm).encode(&mut c.session_tx);
                    }
                    if c.quic.is_readable() {
                        let (limits, scratch) = (&self.limits, &mut self.scratch);
                        read_streams(c, id, at_ns, limits, scratch, &mut self.events);
                    }
                }
                if packets >= PACKETS_PER_TURN || until.is_some_and(|d| Instant::now() >= d) {
                    return Ok(true);
                }
            }
        }
    }

    /// Fires the quiche timers that are due, fails connection attempts that had no session in
    /// time, and opens again the connections whose backoff has passed.
    pub fn on_timers(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.acks_due.front() {
            if at > now {
                break;
            }
            self.acks_due.pop_front();
            let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
                continue;
            };
            if c.ack_due == Some(at) {
                c.ack_only = false;
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(id);
                }
            }
        }
        while let Some(&Reverse((t, id, attempt))) = self.attempt_deadlines.peek() {
            if t > now {
                break;
            }
            self.attempt_deadlines.pop();
            let Some(c) = self.conns.get(id as usize).and_then(Option::as_ref) else { continue };
            if c.attempt == attempt && c.phase != Phase::Session && !c.closing {
                let node = self.socks[c.node].node;
                let secs = self.policy.attempt_timeout.as_secs_f64();
                self.ended(id, format!("no session from {node} within {secs:.1} s"), now);
            }
        }
        while let Some(&Reverse((t, id))) = self.reopen.peek() {
            if t > now {
                break;
            }
            self.reopen.pop();
            if let Some((node, attempt)) = self.reopen_to.remove(&id) {
                if let Err(e) = self.connect(id, node, attempt, now) {
                    let reason = format!("cannot open a connection: {e}");
                    self.events.push(Event::Closed {
                        conn: id,
                        reason,
                        expected: false,
                        reconnecting: false,
                    });
                }
            }
        }
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
                continue;
            };
            if c.timer != Some(t) {
                continue; // superseded by an earlier entry that already fired
            }
            c.timer = None;
            if c.quic.timeout_instant().is_some_and(|d| d <= now) {
                c.quic.on_timeout();
            }
            // A loss-recovery timer may have queued a retransmission: sent now.
            c.ack_only = false;
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// When the next timer is due (possibly early: stale entries are skipped when they fire).
    pub fn next_timer(&self) -> Option<Instant> {
        let quic = self.timers.peek().map(|Reverse((t, _))| *t);
        let reopen = self.reopen.peek().map(|Reverse((t, _))| *t);
        let attempt = self.attempt_deadlines.peek().map(|Reverse((t, ..))| *t);
        let ack = self.acks_due.front().map(|(t, _)| *t);
        [quic, reopen, attempt, ack].into_iter().flatten().min()
    }

    /// Produces every pending packet of the connections that need it (latency-sensitive ones
    /// first) and hands them to the kernel; re-arms their timers; reports closed connections as
    /// events.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        let urgent = std::mem::take(&mut self.urgent);
        let dirty = std::mem::take(&mut self.dirty);
        let mut blocked_at = None;
        for (k, &id) in urgent.iter().chain(dirty.iter()).enumerate() {
            if self.flush_conn(id, now)? {
                blocked_at = Some(k);
                break;
            }
        }
        if let Some(k) = blocked_at {
            // The kernel is full: this connection and the rest wait for writability.
            for &id in urgent.iter().chain(dirty.iter()).skip(k) {
                if let Some(c) = self.conns[id as usize].as_mut() {
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(id);
                    }
                }
            }
        }
        self.urgent = recycle(urgent, std::mem::take(&mut self.urgent));
        self.dirty = recycle(dirty, std::mem::take(&mut self.dirty));
        for k in 0..self.socks.len() {
            let sock = &mut self.socks[k];
            if !sock.tx.is_empty() {
                match sock.tx.flush(sock.fd) {
                    Ok(f) => sock.blocked = f.blocked,
                    Err(e) => self.sock_failed(k, e, now)?,
                }
            }
        }
        Ok(())
    }

    /// Produces one connection's packets; `Ok(true)` when the kernel refused more.
    fn flush_conn(&mut self, id: u32, now: Instant) -> io::Result<bool> {
        let Some(c) = self.conns[id as usize].as_mut() else { return Ok(false) };
        c.dirty = false;
        c.urgent = false;
        let had_output = !c.session_tx.is_empty() || !c.data_tx.is_empty();
        c.push_pending();
        let ack_only = std::mem::take(&mut c.ack_only);
        let deferrable = ack_only
            && !had_output
            && !self.ack_delay.is_zero()
            && c.phase == Phase::Session
            && !c.closing
            && !c.quic.is_draining()
            && !c.quic.is_closed();
        if !deferrable {
            c.ack_due = None;
        } else {
            match c.ack_due {
                Some(at) if at <= now => c.ack_due = None,
                Some(_) => return Ok(false),
                None => {
                    let at = now + self.ack_delay;
                    c.ack_due = Some(at);
                    self.acks_due.push_back((at, id));
                    return Ok(false);
                }
            }
        }
        let k = c.node;
        loop {
            let sock = &mut self.socks[k];
            if sock.tx.is_full() {
                match sock.tx.flush(sock.fd) {
                    Ok(f) => sock.blocked = f.blocked,
                    Err(e) => {
                        self.sock_failed(k, e, now)?;
                        return Ok(false);
                    }
                }
                if self.socks[k].blocked {
                    return Ok(true);
                }
            }
            let sock = &mut self.socks[k];
            match c.quic.send(sock.tx.slot()) {
                Ok((n, _)) => sock.tx.commit(n),
                Err(_) => {
                    // Done, or a local error that closed the connection (reported below).
                    sock.tx.commit(0);
                    break;
                }
            }
        }
        if c.quic.is_closed() {
            let reason = c.close_reason();
            self.ended(id, reason, now);
            return Ok(false);
        }
        if let Some(t) = c.quic.timeout_instant() {
            let t = t.min(now + TIMER_HORIZON);
            if c.timer.is_none_or(|s| t < s) {
                c.timer = Some(t);
                self.timers.push(Reverse((t, id)));
            }
        }
        Ok(false)
    }

    /// Waits until the socket is readable (or writable, if a send was refused), or `deadline`
    /// (capped at `WAIT_MAX`). The runtime's timer has millisecond resolution, so it only takes
    /// the wait to within a millisecond of the deadline; a `ppoll` does the rest, and when the
    /// deadline is a scheduled send (`precise`), a short spin makes it leave on time.
    pub async fn wait(&self, deadline: Option<Instant>, precise: bool) {
        let now = Instant::now();
        let wait = deadline.map_or(WAIT_MAX, |d| d.saturating_duration_since(now)).min(WAIT_MAX);
        if wait.is_zero() {
            return;
        }
        if self.socks.len() > 1 {
            // Several sockets: one nanosecond poll over all of them (the thread has nothing
            // else to run meanwhile); multi-node runs trade the spin for simplicity.
            let fds: Vec<(RawFd, bool)> = self.socks.iter().map(|s| (s.fd, s.blocked)).collect();
            poll_fds(&fds, wait);
            return;
        }
        let sock = &self.socks[0];
        if wait < FINE_WAIT {
            if precise {
                self.waker.wait_until(sock.fd, sock.blocked, now + wait);
            } else {
                poll_fd(sock.fd, sock.blocked, wait);
            }
            return;
        }
        let coarse = wait - Duration::from_millis(1);
        if sock.blocked {
            monoio::select! {
                _ = sock.socket.readable(false) => {},
                _ = sock.socket.writable(false) => {},
                _ = monoio::time::sleep(coarse) => {},
            }
        } else {
            monoio::select! {
                _ = sock.socket.readable(false) => {},
                _ = monoio::time::sleep(coarse) => {},
            }
        }
    }
}

/// A HELLO with a fresh random peer id.
fn hello(realm: &Realm) -> Frame {
    let mut peer_id = [0u8; 32];
    let _ = boring::rand::rand_bytes(&mut peer_id);
    Frame::Hello(frame::Hello {
        version: 1,
        peer_id,
        flags: 0,
        realm: realm.clone(),
        cred_kind: 0,
        credential: Bytes::new(),
        client_name: Bytes::from_static(b"fovea-flood"),
    })
}

/// Keeps the vector's allocation: `used` (emptied) unless entries were queued meanwhile.
fn recycle(mut used: Vec<u32>, fresh: Vec<u32>) -> Vec<u32> {
    if fresh.is_empty() {
        used.clear();
        used
    } else {
        fresh
    }
}

/// A frame as the endpoint decodes it.
enum Decoded {
    Delivery(u64, Option<Stamp>),
    Invoke(Answer),
    Reply(Answer),
    Frame(Frame),
}

/// Reads a DELIVER body just far enough to find the payload's measurement header (sub ids,
/// flags, message id, topic, payload: docs/PROTOCOL.md §6, DELIVER), with the first subscription
/// id listed. `None`: malformed (the full decoder then says why).
fn deliver_stamp(body: &[u8]) -> Option<(u64, Option<Stamp>)> {
    let mut off = 0;
    let next_varint = |off: &mut usize| -> Option<u64> {
        let (v, n) = varint::decode(body.get(*off..)?)?;
        *off += n;
        Some(v)
    };
    let ids = next_varint(&mut off)?;
    let mut first = None;
    for _ in 0..ids {
        let id = next_varint(&mut off)?;
        first.get_or_insert(id);
    }
    let flags = *body.get(off)?;
    off += 1;
    if flags & FLAG_MESSAGE_ID != 0 {
        next_varint(&mut off)?;
    }
    let topic_len = next_varint(&mut off)? as usize;
    off = off.checked_add(topic_len)?;
    let payload_len = next_varint(&mut off)? as usize;
    let payload = body.get(off..off.checked_add(payload_len)?)?;
    Some((first?, Stamp::read(payload)))
}

/// The next whole frame of `buf`. DELIVER, INVOKE and REPLY, the hot paths, are not
/// materialised: their bytes are consumed in place, so the buffer keeps being reused instead of
/// split into shared pieces.
fn next_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Decoded>, DecodeError> {
    let Some(h) = peek_header(buf, limits)? else { return Ok(None) };
    let total = h.header_len + h.body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[h.header_len..total];
    let fast = match h.frame_type {
        types::DELIVER => deliver_stamp(body).map(|(sub, stamp)| Decoded::Delivery(sub, stamp)),
        types::INVOKE => wire::invoke_answer(body).map(Decoded::Invoke),
        types::REPLY => wire::reply_answer(body).map(Decoded::Reply),
        _ => None,
    };
    if let Some(d) = fast {
        buf.advance(total);
        return Ok(Some(d));
    }
    Ok(decode_frame(buf, limits)?.map(Decoded::Frame))
}

/// Drains the connection's readable streams into its buffers and decodes whole frames.
fn read_streams(
    c: &mut Conn,
    id: u32,
    at_ns: u64,
    limits: &Limits,
    scratch: &mut [u8],
    events: &mut Vec<Event>,
) {
    while let Some(sid) = c.quic.stream_readable_next() {
        let buf = if sid == SESSION_STREAM { &mut c.session_rx } else { &mut c.data_rx };
        while let Ok((n, _fin)) = c.quic.stream_recv(sid, scratch) {
            buf.extend_from_slice(&scratch[..n]);
        }
    }
    let mut bad = None;
    for session in [true, false] {
        loop {
            let buf = if session { &mut c.session_rx } else { &mut c.data_rx };
            if buf.is_empty() {
                break;
            }
            match next_frame(buf, limits) {
                Ok(Some(Decoded::Delivery(sub, stamp))) => {
                    events.push(Event::Delivery { conn: id, at_ns, sub, stamp })
                }
                Ok(Some(Decoded::Invoke(answer))) => {
                    events.push(Event::Invoke { conn: id, at_ns, answer })
                }
                Ok(Some(Decoded::Reply(answer))) => {
                    events.push(Event::Reply { conn: id, at_ns, answer })
                }
                Ok(Some(Decoded::Frame(Frame::Ping(p)))) => {
                    // The node's keep-alive: answer at once, like any client.
                    let pong = Frame::Pong(frame::Pong {
                        ping_id: p.ping_id,
                        sent_at_us: p.sent_at_us,
                        received_at_us: at_ns / 1_000,
                    });
                    pong.encode(&mut c.session_tx);
                }
                Ok(Some(Decoded::Frame(Frame::Welcome(_)))) => {
                    c.phase = Phase::Session;
                    events.push(Event::Welcome { conn: id, at_ns });
                }
                Ok(Some(Decoded::Frame(frame))) => {
                    events.push(Event::Frame { conn: id, at_ns, frame })
                }
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
    }
    if let Some(e) = bad {
        // The node sent something we cannot decode: a bug on one side; the run reports it.
        c.session_rx.clear();
        c.data_rx.clear();
        let code = fovea_codec::ErrorCode::FrameMalformed as u64;
        let _ = c.quic.close(true, code, format!("undecodable frame: {e}").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcid_of_short_and_long_headers() {
        let cid: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        let mut short = vec![0x40];
        short.extend_from_slice(&cid);
        short.extend_from_slice(&[0; 20]);
        let mut long = vec![0xc0, 0, 0, 0, 1, 16];
        long.extend_from_slice(&cid);
        long.extend_from_slice(&[8; 20]);
        let want = u128::from_ne_bytes(cid);
        assert_eq!(dcid(&short), Some(want));
        assert_eq!(dcid(&long), Some(want));
        assert_eq!(dcid(&[0x40, 1, 2]), None);
        long[5] = 8;
        assert_eq!(dcid(&long), None, "not one of our CIDs");
    }

    #[test]
    fn deliver_fast_path_agrees_with_the_codec() {
        let stamp = Stamp { publisher: 3, seq: 99, intended_ns: 1_234_567 };
        let mut payload = vec![0u8; 40];
        stamp.write(&mut payload);
        let limits = Limits::default();
        for (ids, message_id) in [(vec![1u64], None), (vec![7, 300, 70_000], Some(1u64 << 40))] {
            let d = Frame::Deliver(frame::Deliver {
                sub_ids: ids.into_iter().collect(),
                message_id,
                topic: "a.b.c".parse().unwrap(),
                payload: Bytes::from(payload.clone()),
            });
            let mut buf = BytesMut::new();
            d.encode(&mut buf);
            d.encode(&mut buf);
            let whole = buf.len();
            // Byte by byte: nothing until a frame is whole, then exactly that frame.
            let mut feed = BytesMut::new();
            let mut got = 0;
            for b in buf.iter() {
                feed.extend_from_slice(&[*b]);
                if let Some(Decoded::Delivery(sub, s)) = next_frame(&mut feed, &limits).unwrap() {
                    assert_eq!(s, Some(stamp));
                    assert!(sub == 1 || sub == 7, "{sub}");
                    got += 1;
                }
            }
            assert_eq!((got, feed.len()), (2, 0), "{whole} bytes");
        }
        // A short payload has no stamp; a truncated body is left to the codec's error.
        let d = Frame::Deliver(frame::Deliver {
            sub_ids: [1u64].into_iter().collect(),
            message_id: None,
            topic: "t".parse().unwrap(),
            payload: Bytes::from_static(b"short"),
        });
        let mut buf = BytesMut::new();
        d.encode(&mut buf);
        assert!(matches!(next_frame(&mut buf, &limits), Ok(Some(Decoded::Delivery(1, None)))));
        assert_eq!(deliver_stamp(&[1, 1, 0, 5, b'a']), None);
    }
}
