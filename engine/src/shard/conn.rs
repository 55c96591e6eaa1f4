//! One peer connection: the quiche connection plus Fovea's stream framing around it.
//!
//! Streams (docs/PROTOCOL.md §2): the client's bidi stream 0 is the session stream (requests in,
//! responses out, urgency 0), its uni stream 2 carries bulk requests in, and the node's uni
//! stream 3 carries deliveries out (urgency 3), so control never queues behind data.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use smallvec::SmallVec;

use fovea_fanout::Recipient;
pub use fovea_fanout::TxQueue;

use crate::quic::QuicConn;

/// Client-initiated bidirectional stream: HELLO and requests in, responses out.
pub const SESSION_STREAM: u64 = 0;
/// Client-initiated unidirectional stream: bulk requests (PUBLISH, CALL, REPLY, SEND).
pub const CLIENT_DATA_STREAM: u64 = 2;
/// Node-initiated unidirectional stream: DELIVER, INVOKE, REPLY, MESSAGE.
pub const NODE_DATA_STREAM: u64 = 3;
/// quiche urgency of the session stream (lower is sent first).
pub(super) const SESSION_URGENCY: u8 = 0;
/// quiche urgency of the node data stream.
pub(super) const DATA_URGENCY: u8 = 3;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// QUIC handshake, then waiting for HELLO.
    AwaitHello,
    /// HELLO seen on a shard that does not own the peer; the connection is on its way.
    Moving,
    /// WELCOME sent: requests are served.
    Active,
    /// Close requested; waiting for quiche to finish.
    Closing,
}

/// Moves as much of `q` as quiche accepts into stream `id`, without copying.
pub(super) fn drain_into(
    q: &mut TxQueue,
    quic: &mut QuicConn,
    id: u64,
) -> Result<(), quiche::Error> {
    while let Some(front) = q.pop_front() {
        let len = front.len();
        // quiche consumes the buffer even when it writes nothing (`Done`), so hand it a
        // refcount clone and keep ours until it is accepted.
        match quic.stream_send_zc(id, front.clone(), false) {
            Ok((written, rest)) => {
                if let Some(rest) = rest {
                    debug_assert_eq!(rest.len(), len - written);
                    q.push_front(rest);
                    return Ok(());
                }
                if written < len {
                    q.push_front(front.slice(written..));
                    return Ok(());
                }
            }
            Err(quiche::Error::Done) => {
                q.push_front(front);
                return Ok(());
            }
            Err(e) => {
                q.push_front(front);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Node-side RTT statistics from the node's own PINGs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RttStats {
    /// Smallest RTT seen, µs.
    pub min_us: u64,
    /// Largest RTT seen, µs.
    pub max_us: u64,
    /// Sum of RTTs, µs (for the average).
    pub sum_us: u64,
    /// PONGs counted.
    pub samples: u64,
    /// When the last PONG arrived.
    pub last_seen: Option<Instant>,
}

/// Per-connection state owned by one shard.
pub struct Conn {
    /// quiche's connection.
    pub quic: QuicConn,
    /// Current peer address (updated when the path changes).
    pub peer_addr: SocketAddr,
    /// Life-cycle phase.
    pub phase: Phase,
    /// Bytes read from the session stream, not yet decoded.
    pub session_rx: BytesMut,
    /// Bytes read from the client data stream, not yet decoded.
    pub data_rx: BytesMut,
    /// Responses waiting for quiche's session stream.
    pub session_tx: TxQueue,
    /// Deliveries and other node data-stream frames, and the fan-out's per-connection state.
    pub out: Recipient,
    /// Peer id from HELLO.
    pub peer_id: [u8; 32],
    /// Realm from HELLO.
    pub realm: Option<fovea_codec::Realm>,
    /// Procedures this peer provides.
    pub registrations: Vec<fovea_codec::Name>,
    /// Invocations sent to this peer and not answered yet, by invocation id.
    pub invocations: ahash::AHashMap<u64, super::rpc::Invocation>,
    /// Subscriptions by the peer's subscription id.
    pub subs: ahash::AHashMap<u64, fovea_codec::Pattern>,
    /// Connection IDs issued for this connection (removed from the shard map on close).
    pub cids: SmallVec<[quiche::ConnectionId<'static>; 4]>,
    /// When the connection was accepted.
    pub accepted_at: Instant,
    /// When the next keep-alive PING is due.
    pub ping_due: Instant,
    /// Outstanding node PING (id, sent at).
    pub ping_outstanding: Option<(u64, Instant)>,
    /// RTT statistics from the node's PINGs.
    pub rtt: RttStats,
    /// Recently seen message ids (duplicate suppression), oldest first.
    pub dedup_order: VecDeque<(u64, Instant)>,
    /// The same ids, for lookup.
    pub dedup_set: ahash::AHashSet<u64>,
    /// True when undecoded input remains after the per-turn frame budget.
    pub input_pending: bool,
    /// Frames this connection may still have handled in the current turn.
    pub frames_left: usize,
    /// Earliest timer entry armed for this connection.
    pub timer_armed: Option<Instant>,
    /// Dirty only because of its own input so far this turn (`ack.rs`).
    pub ack_only: bool,
    /// When its deferred ACK must go out at the latest (`ack.rs`).
    pub ack_due: Option<Instant>,
    /// Close requested by the node: (error code, reason).
    pub close_with: Option<(u64, &'static str)>,
    /// GOODBYE queued (drain): no further deliveries are queued behind it.
    pub goodbye_sent: bool,
    /// FIN sent on the node data stream after GOODBYE.
    pub fin_sent: bool,
    /// The node data stream has been opened (and given its priority).
    pub data_stream_open: bool,
    /// A federation link (HELLO flag bit 0 on a federating node): its federation frames go to
    /// the control thread (`shard/link.rs`).
    pub federation: bool,
    /// NAT assistance and relay metering.
    pub nat: super::nat::NatState,
    /// Credential, permissions, publish rate (`shard/auth.rs`).
    pub sec: super::auth::ConnSec,
    /// After the peer's address changed (an authenticated path move), for the next
    /// `nat::PATH_CHECKS` keep-alive checks: the retransmissions counted on the paths that were
    /// no longer active then, and the checks left.
    pub path_changed: Option<(usize, u8)>,
}

impl Conn {
    /// Wraps a freshly accepted quiche connection.
    pub fn new(
        quic: QuicConn,
        peer_addr: SocketAddr,
        now: Instant,
        keepalive: std::time::Duration,
    ) -> Conn {
        Conn {
            quic,
            peer_addr,
            phase: Phase::AwaitHello,
            session_rx: BytesMut::new(),
            data_rx: BytesMut::new(),
            session_tx: TxQueue::default(),
            out: Recipient::default(),
            peer_id: [0; 32],
            realm: None,
            registrations: Vec::new(),
            invocations: ahash::AHashMap::new(),
            subs: ahash::AHashMap::new(),
            cids: SmallVec::new(),
            accepted_at: now,
            ping_due: now + keepalive,
            ping_outstanding: None,
            rtt: RttStats::default(),
            dedup_order: VecDeque::new(),
            dedup_set: ahash::AHashSet::new(),
            input_pending: false,
            frames_left: usize::MAX,
            timer_armed: None,
            ack_only: false,
            ack_due: None,
            close_with: None,
            goodbye_sent: false,
            fin_sent: false,
            data_stream_open: false,
            federation: false,
            nat: Default::default(),
            sec: Default::default(),
            path_changed: None,
        }
    }

    /// Moves queued frames into quiche's stream buffers, session stream first.
    pub fn push_tx(&mut self) -> Result<(), quiche::Error> {
        drain_into(&mut self.session_tx, &mut self.quic, SESSION_STREAM)?;
        let had_data_stream = self.data_stream_open;
        if !self.out.data_tx.is_empty() {
            self.data_stream_open = true;
        }
        drain_into(&mut self.out.data_tx, &mut self.quic, NODE_DATA_STREAM)?;
        if self.data_stream_open && !had_data_stream {
            // The stream exists once written to; deliveries yield to the session stream.
            let _ = self.quic.stream_priority(NODE_DATA_STREAM, DATA_URGENCY, true);
        }
        Ok(())
    }

    /// Reads available stream data into the frame buffers, at most `cap` bytes buffered per
    /// stream so a peer cannot make the node buffer more than its budget (QUIC flow control
    /// holds the rest back at the sender).
    pub fn read_streams(&mut self, cap: usize) -> Result<(), quiche::Error> {
        for (id, buf) in
            [(SESSION_STREAM, &mut self.session_rx), (CLIENT_DATA_STREAM, &mut self.data_rx)]
        {
            // Most datagrams carry only ACKs: without this check every one of them would
            // allocate (and release) a 16 KiB read buffer per stream.
            if !self.quic.stream_readable(id) {
                continue;
            }
            while buf.len() < cap {
                buf.reserve(16 * 1024);
                match self.quic.stream_recv_buf(id, &mut *buf) {
                    Ok((0, _)) => break,
                    Ok((_, fin)) => {
                        if fin {
                            break;
                        }
                    }
                    Err(quiche::Error::Done) | Err(quiche::Error::InvalidStreamState(_)) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Drops empty read buffers so an idle connection holds no spare capacity.
    pub fn release_idle_buffers(&mut self) {
        for buf in [&mut self.session_rx, &mut self.data_rx] {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
        }
        self.out.data_tx.shrink_when_empty();
    }

    /// During a drain: once GOODBYE and everything before it has left the queue, finish the
    /// data stream; once the peer has acknowledged all of it (quiche collects the stream), close.
    /// Returns true when the connection was closed.
    pub fn drain_step(&mut self, code: u64) -> bool {
        if !self.goodbye_sent || !self.out.data_tx.is_empty() {
            return false;
        }
        if !self.fin_sent {
            if self.quic.stream_send(NODE_DATA_STREAM, b"", true).is_ok() {
                self.fin_sent = true;
            }
            return false;
        }
        if let Err(quiche::Error::InvalidStreamState(_)) =
            self.quic.stream_capacity(NODE_DATA_STREAM)
        {
            let _ = self.quic.close(true, code, b"node is shutting down");
            self.phase = Phase::Closing;
            return true;
        }
        false
    }

    /// Earliest of quiche's timer and the node's own timers for this connection.
    pub fn next_deadline(&self, hello_deadline: Instant) -> Option<Instant> {
        let app = match self.phase {
            Phase::AwaitHello => Some(hello_deadline),
            Phase::Active => Some(self.ping_due),
            Phase::Moving | Phase::Closing => None,
        };
        match (self.quic.timeout_instant(), app) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
