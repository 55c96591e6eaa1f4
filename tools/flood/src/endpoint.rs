//! A worker thread's client side: one connected UDP socket shared by many QUIC connections.
//!
//! Received datagrams are routed by destination connection ID (each connection has its own
//! random 16-byte SCID, looked up in a hash map); everything a connection has to send is
//! produced once per loop turn for the connections that need it (`dirty`) into one batch; quiche
//! timers sit in a heap. The endpoint does the session work common to every scenario: HELLO
//! after the handshake, WELCOME, answering the node's PINGs; other frames go to the scenario as
//! events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fovea_codec::frame::{self, Frame};
use fovea_codec::{decode_frame, Limits, Realm};

use crate::clock::{poll_fd, Epoch};
use crate::conn::{quic_config, Conn, Phase, Tls, SESSION_STREAM};
use crate::udp::{self, RecvBatch, SendBatch, BATCH};

/// Length of our connection IDs.
const CID_LEN: usize = 16;
/// recvmmsg calls per turn before the turn's work and flush run (fairness to the sender side).
const RECV_ROUNDS: usize = 8;
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
        /// When it arrived.
        at: Instant,
    },
    /// A frame other than WELCOME and the node's PINGs.
    Frame {
        /// Connection.
        conn: u32,
        /// When the datagram that completed it was processed, ns since the epoch.
        at_ns: u64,
        /// The frame.
        frame: Frame,
    },
    /// The connection ended (and is gone from the endpoint).
    Closed {
        /// Connection.
        conn: u32,
        /// How it ended.
        reason: String,
        /// We had asked it to close.
        expected: bool,
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

/// One thread's connections and socket.
pub struct Endpoint {
    socket: monoio::net::udp::UdpSocket,
    fd: RawFd,
    node: SocketAddr,
    local: SocketAddr,
    config: quiche::Config,
    conns: Vec<Option<Conn>>,
    by_cid: CidMap,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    dirty: Vec<u32>,
    rx: RecvBatch,
    tx: SendBatch,
    blocked: bool,
    events: Vec<Event>,
    limits: Limits,
    realm: Realm,
    epoch: Epoch,
    scratch: Box<[u8]>,
    live: usize,
    /// Datagrams for no connection of ours (late packets of closed connections).
    pub stray: u64,
}

impl Endpoint {
    /// A socket connected to `node`, registered with the current monoio runtime.
    pub fn new(node: SocketAddr, tls: &Tls, realm: Realm, epoch: Epoch) -> io::Result<Endpoint> {
        let std_socket = udp::connect(node)?;
        let local = std_socket.local_addr()?;
        let fd = std_socket.as_raw_fd();
        let gso = udp::gso_supported(fd);
        let config =
            quic_config(tls).map_err(|e| io::Error::other(format!("QUIC configuration: {e}")))?;
        let socket = monoio::net::udp::UdpSocket::from_std(std_socket)?;
        Ok(Endpoint {
            socket,
            fd,
            node,
            local,
            config,
            conns: Vec::new(),
            by_cid: CidMap::default(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            rx: RecvBatch::new(),
            tx: SendBatch::new(gso),
            blocked: false,
            events: Vec::new(),
            limits: Limits::default(),
            realm,
            epoch,
            scratch: vec![0u8; 64 << 10].into_boxed_slice(),
            live: 0,
            stray: 0,
        })
    }

    /// Our socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections not closed yet.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Starts a new connection; the handshake and HELLO follow by themselves.
    pub fn open(&mut self, now: Instant) -> io::Result<u32> {
        let mut cid = [0u8; CID_LEN];
        boring::rand::rand_bytes(&mut cid).map_err(io::Error::other)?;
        let key = u128::from_ne_bytes(cid);
        let scid = quiche::ConnectionId::from_ref(&cid);
        let quic =
            quiche::connect(Some("localhost"), &scid, self.local, self.node, &mut self.config)
                .map_err(|e| io::Error::other(format!("quiche connect: {e}")))?;
        let id = self.conns.len() as u32;
        self.conns.push(Some(Conn::new(quic, key, now)));
        self.by_cid.insert(key, id);
        self.dirty.push(id);
        self.live += 1;
        Ok(id)
    }

    /// The connection, while it is open.
    pub fn conn(&self, id: u32) -> Option<&Conn> {
        self.conns.get(id as usize)?.as_ref()
    }

    /// Queues a frame on the session stream.
    pub fn send_session(&mut self, id: u32, f: &Frame) {
        if let Some(c) = self.conn_dirty(id) {
            f.encode(&mut c.session_tx);
        }
    }

    /// The pending bytes of the data stream, to append a frame to; marks the connection for
    /// the next flush.
    pub fn data_tx(&mut self, id: u32) -> Option<&mut BytesMut> {
        self.conn_dirty(id).map(|c| &mut c.data_tx)
    }

    /// Closes the connection (NO_ERROR); its `Closed` event says `expected`.
    pub fn close(&mut self, id: u32) {
        if let Some(c) = self.conn_dirty(id) {
            c.closing = true;
            let _ = c.quic.close(true, 0, b"done");
        }
    }

    fn conn_dirty(&mut self, id: u32) -> Option<&mut Conn> {
        let c = self.conns.get_mut(id as usize)?.as_mut()?;
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(id);
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
    /// their streams. `Ok(true)`: stopped at the bound, more may be waiting.
    pub fn recv(&mut self) -> io::Result<bool> {
        for _ in 0..RECV_ROUNDS {
            let n = self.rx.recv(self.fd)?;
            for i in 0..n {
                let Some(d) = self.rx.get(i) else { continue };
                let Some(&id) = dcid(d).and_then(|k| self.by_cid.get(&k)) else {
                    self.stray += 1;
                    continue;
                };
                let Some(c) = self.conns[id as usize].as_mut() else { continue };
                let info = quiche::RecvInfo { from: self.node, to: self.local };
                // A fatal error closes the connection inside quiche; the flush reports it.
                let _ = c.quic.recv(d, info);
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(id);
                }
                if c.phase == Phase::Handshake && c.quic.is_established() {
                    c.phase = Phase::Hello;
                    hello(&self.realm).encode(&mut c.session_tx);
                }
                if c.quic.is_readable() {
                    let at = Instant::now();
                    read_streams(
                        c,
                        id,
                        at,
                        &self.epoch,
                        &self.limits,
                        &mut self.scratch,
                        &mut self.events,
                    );
                }
            }
            if n < BATCH {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Fires the quiche timers that are due.
    pub fn on_timers(&mut self, now: Instant) {
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
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// When the next timer is due (possibly early: stale entries are skipped when they fire).
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Produces every pending packet of the connections that need it and hands them to the
    /// kernel; re-arms their timers; reports closed connections as events.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut i = 0;
        while i < dirty.len() {
            let id = dirty[i];
            i += 1;
            let Some(c) = self.conns[id as usize].as_mut() else { continue };
            c.dirty = false;
            c.push_pending();
            loop {
                if self.tx.is_full() {
                    self.blocked = self.tx.flush(self.fd)?.blocked;
                    if self.blocked {
                        break;
                    }
                }
                let slot = self.tx.slot();
                match c.quic.send(slot) {
                    Ok((n, _)) => self.tx.commit(n),
                    Err(_) => {
                        // Done, or a local error that closed the connection (reported below).
                        self.tx.commit(0);
                        break;
                    }
                }
            }
            if self.blocked {
                // The kernel is full: this and the remaining connections wait for writability.
                c.dirty = true;
                self.dirty.push(id);
                for &rest in &dirty[i..] {
                    self.dirty.push(rest);
                }
                break;
            }
            if c.quic.is_closed() {
                let reason = c.close_reason();
                let expected = c.closing;
                c.phase = Phase::Closed;
                self.by_cid.remove(&c.scid);
                self.conns[id as usize] = None;
                self.live -= 1;
                self.events.push(Event::Closed { conn: id, reason, expected });
                continue;
            }
            if let Some(t) = c.quic.timeout_instant() {
                let t = t.min(now + TIMER_HORIZON);
                if c.timer.is_none_or(|s| t < s) {
                    c.timer = Some(t);
                    self.timers.push(Reverse((t, id)));
                }
            }
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        if !self.tx.is_empty() {
            self.blocked = self.tx.flush(self.fd)?.blocked;
        }
        Ok(())
    }

    /// Waits until the socket is readable (or writable, if a send was refused), or `deadline`
    /// (capped at `WAIT_MAX`). The runtime's timer has millisecond resolution, so it only takes
    /// the wait to within a millisecond of the deadline; a `ppoll` does the rest.
    pub async fn wait(&self, deadline: Option<Instant>) {
        let now = Instant::now();
        let wait = deadline.map_or(WAIT_MAX, |d| d.saturating_duration_since(now)).min(WAIT_MAX);
        if wait.is_zero() {
            return;
        }
        if wait < FINE_WAIT {
            poll_fd(self.fd, self.blocked, wait);
            return;
        }
        let coarse = wait - Duration::from_millis(1);
        if self.blocked {
            monoio::select! {
                _ = self.socket.readable(false) => {},
                _ = self.socket.writable(false) => {},
                _ = monoio::time::sleep(coarse) => {},
            }
        } else {
            monoio::select! {
                _ = self.socket.readable(false) => {},
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

/// Drains the connection's readable streams into its buffers and decodes whole frames.
fn read_streams(
    c: &mut Conn,
    id: u32,
    at: Instant,
    epoch: &Epoch,
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
    let at_ns = epoch.ns(at);
    let mut bad = None;
    for session in [true, false] {
        loop {
            let buf = if session { &mut c.session_rx } else { &mut c.data_rx };
            if buf.is_empty() {
                break;
            }
            match decode_frame(buf, limits) {
                Ok(Some(Frame::Ping(p))) => {
                    // The node's keep-alive: answer at once, like any client.
                    let pong = Frame::Pong(frame::Pong {
                        ping_id: p.ping_id,
                        sent_at_us: p.sent_at_us,
                        received_at_us: at_ns / 1_000,
                    });
                    pong.encode(&mut c.session_tx);
                }
                Ok(Some(Frame::Welcome(_))) => {
                    c.phase = Phase::Session;
                    events.push(Event::Welcome { conn: id, at });
                }
                Ok(Some(frame)) => events.push(Event::Frame { conn: id, at_ns, frame }),
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
}
