//! The sans-I/O shard core: connections, sessions, subscriptions and fan-out of one shard.
//!
//! Inputs are `handle_*` calls with the current time passed in; outputs are packets written
//! into a `SendBatch` by `poll_transmit`, messages for other shards taken by `take_outbox`, and
//! the next deadline from `next_timeout`. No socket, no thread, no clock read here: the driver
//! (`driver.rs`) owns those, and tests drive this core directly.
//!
//! Method families, in the order the driver calls them each loop turn:
//! `handle_datagram` / `handle_message` / `handle_timeouts` → `poll_transmit` → `take_outbox`
//! → `next_timeout`.

mod ack;
mod auth;
mod bucket;
mod conn;
mod fanout;
mod link;
mod nat;
mod port;
mod retain;
mod rpc;
mod session;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

pub use conn::{Conn, Phase, TxQueue, CLIENT_DATA_STREAM, NODE_DATA_STREAM, SESSION_STREAM};
pub use port::ShardMsg;
pub use rpc::CallOutcome;
pub use session::owner_shard;

use crate::cid::{self, CidKey, ResetKey, CID_LEN};
use crate::config::Limits;
use crate::metrics::ShardMetrics;
use crate::quic::{BytesFactory, QuicConn, SEND_UDP_PAYLOAD};
use crate::token::{RetryTokens, TOKEN_LEN_MAX};
use crate::udp::SendBatch;

/// Counters shared by all shards of a node, touched only when peers come and go.
#[derive(Default)]
pub struct NodeShared {
    /// Connections open on all shards (for `max_peers`).
    pub connections: AtomicUsize,
    /// Peers with an established session on all shards (for `max_peers`).
    pub peers: AtomicUsize,
    /// Set once the node drains: no new connections.
    pub draining: std::sync::atomic::AtomicBool,
}

/// What a shard needs to know about its node.
pub struct ShardContext {
    /// This shard's index.
    pub index: usize,
    /// Number of shards.
    pub shards: usize,
    /// Limits from the configuration.
    pub limits: Limits,
    /// The node's id (sent in WELCOME).
    pub node_id: [u8; 32],
    /// Secret for stateless-reset tokens (survives restarts).
    pub reset_key: ResetKey,
    /// Node-wide counters.
    pub shared: Arc<NodeShared>,
    /// This shard's counters.
    pub metrics: Arc<ShardMetrics>,
    /// The address the shard sockets are bound to (quiche's `to` for every packet).
    pub local_addr: SocketAddr,
    /// A wall-clock reading, (instant, Unix ms at that instant): the shard core reads no clock,
    /// and PUNCH start times are Unix ms.
    pub wall_clock: (Instant, u64),
}

/// The wall-clock anchor for a `ShardContext`, read once by the driver.
pub fn wall_clock_now() -> (Instant, u64) {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (Instant::now(), unix_ms)
}

/// A slab slot: a connection and the generation that tells stale references apart.
struct Slot {
    conn: Option<Box<Conn>>,
    generation: u32,
}

/// True when the node data stream has frames waiting and no flow-control credit left: the peer
/// reads nothing more of it.
fn data_stream_stalled(conn: &mut Conn) -> bool {
    !conn.out.data_tx.is_empty()
        && conn.quic.stream_capacity(NODE_DATA_STREAM).is_ok_and(|c| c == 0)
}

/// Reference to a connection that stays valid only as long as its slot's generation matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnRef {
    slot: u32,
    generation: u32,
}

/// The shard core.
pub struct Shard {
    ctx: ShardContext,
    quic_config: quiche::Config,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_cid: ahash::AHashMap<CidKey, ConnRef>,
    /// CIDs of connections that moved to another shard: where to hand their packets.
    moved: ahash::AHashMap<CidKey, (usize, Instant)>,
    moved_order: std::collections::VecDeque<(Instant, CidKey)>,
    by_peer: ahash::AHashMap<[u8; 32], ConnRef>,
    /// Peers' DHT requests this shard may still pass to the control thread (tokens, refilled
    /// at `link::DHT_REQUESTS_PER_SHARD` per second) and when it was last refilled.
    dht_budget: (f64, Instant),
    dirty: Vec<ConnRef>,
    /// Connections whose input exceeded their frame budget: continued next turn.
    pending_input: Vec<ConnRef>,
    /// Deferred acknowledgements (`ack.rs`), oldest first: every entry is `now + ack_delay`
    /// when it was queued, so the queue is in deadline order.
    acks_due: std::collections::VecDeque<(Instant, ConnRef)>,
    timers: BinaryHeap<Reverse<(Instant, ConnRef)>>,
    /// Immediate stateless packets (version negotiation, Retry, stateless reset).
    immediate: Vec<(Vec<u8>, SocketAddr)>,
    outbox: Vec<Vec<ShardMsg>>,
    tokens: RetryTokens,
    unvalidated: usize,
    epoch_started: Instant,
    fanout: fanout::Fanout,
    scratch: BytesMut,
    draining: Option<Instant>,
    peers: usize,
    rpc: rpc::Rpc,
    /// The control thread's inbox, when the node federates (`link.rs`).
    control: Option<crate::control::ControlLink>,
    /// Time of the input being handled (the injected clock), for paths that need "now" but are
    /// reached from bookkeeping (a reaped provider's calls).
    last_now: Instant,
    /// Credentials, per-address limits, TLS reloads (`auth.rs`).
    sec: auth::ShardSec,
    /// When this shard next reports its top relayers (`nat.rs`).
    relay_report_at: Instant,
}

/// Milliseconds since `start`, for tokens (which only compare times from the same shard).
fn ms_since(start: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(start).as_millis() as u64
}

impl Shard {
    /// A shard with the given context and quiche configuration.
    pub fn new(ctx: ShardContext, quic_config: quiche::Config, now: Instant) -> Shard {
        let shards = ctx.shards;
        Shard {
            ctx,
            quic_config,
            slots: Vec::new(),
            free: Vec::new(),
            by_cid: ahash::AHashMap::new(),
            moved: ahash::AHashMap::new(),
            moved_order: std::collections::VecDeque::new(),
            by_peer: ahash::AHashMap::new(),
            dht_budget: (link::DHT_REQUESTS_PER_SHARD, now),
            dirty: Vec::new(),
            pending_input: Vec::new(),
            acks_due: std::collections::VecDeque::new(),
            timers: BinaryHeap::new(),
            immediate: Vec::new(),
            outbox: (0..shards).map(|_| Vec::new()).collect(),
            tokens: RetryTokens::new(0),
            unvalidated: 0,
            epoch_started: now,
            fanout: fanout::Fanout::new(shards),
            scratch: BytesMut::with_capacity(64 * 1024),
            draining: None,
            peers: 0,
            rpc: rpc::Rpc::default(),
            control: None,
            last_now: now,
            sec: auth::ShardSec::default(),
            relay_report_at: now,
        }
    }

    /// This shard's counters.
    pub fn metrics(&self) -> Arc<ShardMetrics> {
        self.ctx.metrics.clone()
    }

    /// True once `start_drain` ran.
    pub fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    /// This shard's index.
    pub fn index(&self) -> usize {
        self.ctx.index
    }

    /// Open connections on this shard.
    pub fn connection_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True once draining has closed every connection.
    pub fn is_drained(&self) -> bool {
        self.draining.is_some() && self.connection_count() == 0
    }

    fn conn_mut(&mut self, r: ConnRef) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(r.slot as usize)?;
        if slot.generation != r.generation {
            return None;
        }
        slot.conn.as_deref_mut()
    }

    fn insert_conn(&mut self, conn: Box<Conn>) -> ConnRef {
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { conn: None, generation: 0 });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        s.conn = Some(conn);
        ConnRef { slot, generation: s.generation }
    }

    fn mark_dirty(&mut self, r: ConnRef) {
        if let Some(c) = self.conn_mut(r) {
            // Whatever made the connection dirty besides its own input (a response, a timer, a
            // close) is sent this turn.
            c.ack_only = false;
            if !c.out.dirty {
                c.out.dirty = true;
                self.dirty.push(r);
            }
        }
    }

    /// Marks a connection dirty because of its own input: if nothing else is sent to it this
    /// turn, its ACK may wait (`ack.rs`).
    fn mark_dirty_by_input(&mut self, r: ConnRef) {
        if let Some(c) = self.conn_mut(r) {
            if !c.out.dirty {
                c.out.dirty = true;
                c.ack_only = true;
                self.dirty.push(r);
            }
        }
    }

    /// Flushes the connections whose deferred ACK has waited `ack_delay_us`.
    fn acks_due_now(&mut self, now: Instant) {
        while let Some(&(at, r)) = self.acks_due.front() {
            if at > now {
                break;
            }
            self.acks_due.pop_front();
            if self.conn_mut(r).is_some_and(|c| c.ack_due == Some(at)) {
                ShardMetrics::inc(&self.ctx.metrics.acks_at_deadline);
                self.mark_dirty(r);
            }
        }
    }

    /// Handles one datagram received on this shard's socket.
    pub fn handle_datagram(&mut self, now: Instant, buf: &mut [u8], from: SocketAddr) {
        self.last_now = now;
        self.route_datagram(now, buf, from, false);
    }

    /// Routes a datagram; `handed_over` is true when another shard already passed it here, in
    /// which case it is never passed on again (no ping-pong between shards for a CID that
    /// neither holds any more, e.g. one retired while the packet was in flight).
    fn route_datagram(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        from: SocketAddr,
        handed_over: bool,
    ) {
        ShardMetrics::inc(&self.ctx.metrics.packets_in);
        ShardMetrics::add(&self.ctx.metrics.bytes_in, buf.len() as u64);
        // Short headers (every packet after the handshake) carry our fixed-length DCID right
        // after the first byte: read it in place instead of through quiche's allocating parser.
        let short = buf.first().is_some_and(|b| b & 0x80 == 0);
        if short {
            if buf.len() < 1 + CID_LEN {
                ShardMetrics::inc(&self.ctx.metrics.packets_dropped);
                return;
            }
            let key = CidKey::new(&buf[1..1 + CID_LEN]);
            if !self.route_known(now, key, buf, from, handed_over) {
                self.stateless_reset(key, buf.len(), from);
            }
            return;
        }
        let hdr = match quiche::Header::from_slice(buf, CID_LEN) {
            Ok(h) => h,
            Err(_) => {
                ShardMetrics::inc(&self.ctx.metrics.packets_dropped);
                return;
            }
        };
        if self.route_known(now, CidKey::new(&hdr.dcid), buf, from, handed_over) {
            return;
        }
        if hdr.ty != quiche::Type::Initial {
            ShardMetrics::inc(&self.ctx.metrics.packets_dropped);
            return;
        }
        self.accept(now, &hdr, buf, from);
    }

    /// Delivers a datagram to its connection here, hands it to the shard that owns it, or drops
    /// it if it was handed over already. False when the CID is unknown everywhere (the caller
    /// decides between accept, stateless reset and drop).
    fn route_known(
        &mut self,
        now: Instant,
        key: CidKey,
        buf: &mut [u8],
        from: SocketAddr,
        handed_over: bool,
    ) -> bool {
        if let Some(&r) = self.by_cid.get(&key) {
            self.recv_on(now, r, buf, from);
            return true;
        }
        if handed_over {
            ShardMetrics::inc(&self.ctx.metrics.packets_dropped);
            return true;
        }
        if let Some(owner) = self.foreign_owner(&key) {
            self.hand_over_datagram(owner, buf, from);
            return true;
        }
        false
    }

    /// The shard that owns a connection ID we do not hold: another shard's CID, or one of a
    /// connection that moved away after HELLO.
    fn foreign_owner(&self, key: &CidKey) -> Option<usize> {
        match cid::shard_of(key.as_slice(), self.ctx.shards) {
            Some(s) if s != self.ctx.index => Some(s),
            _ => self.moved.get(key).map(|&(s, _)| s),
        }
    }

    fn hand_over_datagram(&mut self, owner: usize, buf: &[u8], from: SocketAddr) {
        ShardMetrics::inc(&self.ctx.metrics.packets_handed_over);
        self.outbox[owner].push(ShardMsg::Datagram { data: buf.to_vec(), from });
    }

    fn stateless_reset(&mut self, dcid: CidKey, received_len: usize, to: SocketAddr) {
        let mut out = vec![0u8; 64];
        match self.ctx.reset_key.stateless_reset(dcid.as_slice(), received_len, &mut out) {
            Some(n) => {
                out.truncate(n);
                ShardMetrics::inc(&self.ctx.metrics.stateless_resets);
                self.immediate.push((out, to));
            }
            None => ShardMetrics::inc(&self.ctx.metrics.packets_dropped),
        }
    }

    fn accept(&mut self, now: Instant, hdr: &quiche::Header<'_>, buf: &mut [u8], from: SocketAddr) {
        let m = self.ctx.metrics.clone();
        if !quiche::version_is_supported(hdr.version) {
            let mut out = vec![0u8; SEND_UDP_PAYLOAD];
            if let Ok(n) = quiche::negotiate_version(&hdr.scid, &hdr.dcid, &mut out) {
                out.truncate(n);
                self.immediate.push((out, from));
            }
            return;
        }
        // Initial packets must be padded to 1200 bytes (RFC 9000 §14.1); anything smaller is
        // garbage or an amplification probe.
        if buf.len() < 1200 {
            ShardMetrics::inc(&m.packets_dropped);
            return;
        }
        let over_capacity = self.ctx.shared.connections.load(Ordering::Relaxed)
            >= self.ctx.limits.max_peers + self.ctx.limits.max_peers / 10 + 16;
        if self.draining.is_some()
            || self.ctx.shared.draining.load(Ordering::Relaxed)
            || over_capacity
        {
            // Refusing statelessly costs nothing; a peer that was let in would only be told
            // SERVER_FULL after a full handshake.
            ShardMetrics::inc(&m.handshakes_refused);
            return;
        }
        let token = hdr.token.as_deref().unwrap_or(&[]);
        let now_ms = ms_since(self.epoch_started, now);
        let mut odcid = None;
        if !token.is_empty() {
            match self.tokens.validate(now_ms, token, &from) {
                Ok(o) => odcid = Some(quiche::ConnectionId::from_vec(o.to_vec())),
                Err(_) => {
                    ShardMetrics::inc(&m.tokens_invalid);
                    return;
                }
            }
        } else if self.unvalidated >= self.ctx.limits.retry_threshold {
            // Too many handshakes from unproven addresses: make this one prove its address.
            let new_scid = cid::new_cid(self.ctx.index);
            let mut tok = [0u8; TOKEN_LEN_MAX];
            let n = self.tokens.issue(now_ms, &hdr.dcid, &from, &mut tok);
            let mut out = vec![0u8; SEND_UDP_PAYLOAD];
            let scid = quiche::ConnectionId::from_ref(&new_scid);
            if let Ok(len) =
                quiche::retry(&hdr.scid, &hdr.dcid, &scid, &tok[..n], hdr.version, &mut out)
            {
                out.truncate(len);
                ShardMetrics::inc(&m.retries_sent);
                self.immediate.push((out, from));
            }
            return;
        }
        if !self.admit_source(now, from.ip()) {
            return;
        }
        self.refresh_tls();
        let scid_bytes = cid::new_cid(self.ctx.index);
        let scid = quiche::ConnectionId::from_vec(scid_bytes.to_vec());
        self.quic_config.set_stateless_reset_token(Some(self.ctx.reset_key.token(&scid_bytes)));
        let quic: Result<QuicConn, _> = match &odcid {
            Some(o) => {
                let retry_cids = quiche::RetryConnectionIds {
                    original_destination_cid: o,
                    retry_source_cid: &hdr.dcid,
                };
                quiche::accept_with_retry::<BytesFactory>(
                    &scid,
                    retry_cids,
                    self.ctx.local_addr,
                    from,
                    &mut self.quic_config,
                )
            }
            None => quiche::accept_with_buf_factory::<BytesFactory>(
                &scid,
                None,
                self.ctx.local_addr,
                from,
                &mut self.quic_config,
            ),
        };
        let quic = match quic {
            Ok(q) => q,
            Err(_) => {
                ShardMetrics::inc(&m.packets_dropped);
                return;
            }
        };
        let keepalive = Duration::from_millis(self.ctx.limits.keepalive_ms);
        let mut conn = Box::new(Conn::new(quic, from, now, keepalive));
        conn.frames_left = self.ctx.limits.frames_per_turn;
        conn.sec.source_ip = Some(from.ip());
        self.source_opened(from.ip());
        conn.cids.push(scid.clone());
        if odcid.is_none() {
            self.unvalidated += 1;
        }
        // The client keeps using its own DCID until it sees ours; route both here.
        let client_dcid = hdr.dcid.clone().into_owned();
        conn.cids.push(client_dcid.clone());
        let r = self.insert_conn(conn);
        self.by_cid.insert(CidKey::new(&scid), r);
        self.by_cid.insert(CidKey::new(&client_dcid), r);
        self.ctx.shared.connections.fetch_add(1, Ordering::Relaxed);
        ShardMetrics::inc(&m.handshakes);
        ShardMetrics::set(&m.connections, self.connection_count() as u64);
        self.recv_on(now, r, buf, from);
    }

    fn recv_on(&mut self, now: Instant, r: ConnRef, buf: &mut [u8], from: SocketAddr) {
        let to = self.ctx.local_addr;
        let Some(conn) = self.conn_mut(r) else { return };
        let was_established = conn.quic.is_established();
        if conn.quic.recv(buf, quiche::RecvInfo { from, to }).is_err() {
            // quiche has queued a CONNECTION_CLOSE where appropriate; flush and reap.
        }
        // Only an authenticated packet moves quiche's active path (RFC 9000 §9); a datagram
        // that merely carries the connection's DCID, from any source address, proves nothing.
        let path_peer = if conn.peer_addr != from {
            conn.quic.path_stats().find(|p| p.active).map(|p| p.peer_addr)
        } else {
            None
        };
        let established = !was_established && conn.quic.is_established();
        if established {
            self.unvalidated = self.unvalidated.saturating_sub(1);
        }
        if let Some(addr) = path_peer {
            self.peer_address_changed(r, addr);
        }
        self.after_input(now, r);
    }

    /// Reads streams, decodes and handles frames within the per-turn budget.
    fn after_input(&mut self, now: Instant, r: ConnRef) {
        self.process_input(now, r);
        self.mark_dirty_by_input(r);
    }

    /// Handles a message from another shard.
    pub fn handle_message(&mut self, now: Instant, msg: ShardMsg) {
        self.last_now = now;
        ShardMetrics::inc(&self.ctx.metrics.cross_shard_in);
        match msg {
            ShardMsg::Datagram { mut data, from } => {
                self.route_datagram(now, &mut data, from, true)
            }
            ShardMsg::Adopt(conn) => self.adopt(now, conn),
            msg @ (ShardMsg::ProviderAdd { .. }
            | ShardMsg::ProviderRemove { .. }
            | ShardMsg::Invoke { .. }
            | ShardMsg::CallResult { .. }
            | ShardMsg::Direct { .. }
            | ShardMsg::DirectResult { .. }) => self.handle_rpc_message(now, msg),
            msg @ (ShardMsg::Punch { .. } | ShardMsg::PunchResult { .. }) => {
                self.handle_nat_message(now, msg)
            }
            msg @ (ShardMsg::RemoteProvider { .. } | ShardMsg::FederatedInvoke { .. }) => {
                self.handle_rpc_message(now, msg)
            }
            ShardMsg::LinkSend { to, frames } => self.link_send(to, frames),
            ShardMsg::DhtAnswer { peer, frame } => self.dht_answer(peer, &frame),
            other => self.handle_fanout_message(now, other),
        }
    }

    /// Handles expired timers: quiche's loss and idle timers, HELLO deadlines, keep-alive PINGs.
    pub fn handle_timeouts(&mut self, now: Instant) {
        self.last_now = now;
        self.expire_calls(now);
        self.expire_invocations(now);
        self.report_relayers(now);
        let auth_metrics = self.ctx.metrics.clone();
        while let Some(&Reverse((at, r))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let hello_timeout = Duration::from_millis(self.ctx.limits.hello_timeout_ms);
            let keepalive = Duration::from_millis(self.ctx.limits.keepalive_ms);
            let Some(conn) = self.conn_mut(r) else { continue };
            if conn.timer_armed == Some(at) {
                conn.timer_armed = None;
            }
            if conn.quic.timeout_instant().is_some_and(|t| t <= now) {
                conn.quic.on_timeout();
            }
            // A pending CHALLENGE has its own deadline (AUTH_REQUIRED).
            let auth_pending =
                conn.phase == Phase::AwaitHello && auth::expire_auth(conn, now, &auth_metrics);
            match conn.phase {
                Phase::AwaitHello if auth_pending => {}
                Phase::AwaitHello if now >= conn.accepted_at + hello_timeout => {
                    let code = fovea_codec::ErrorCode::HelloRequired as u64;
                    let _ = conn.quic.close(true, code, b"no HELLO within hello_timeout_ms");
                }
                Phase::Active if now >= conn.ping_due => {
                    conn.ping_due = now + keepalive;
                    let mut stalled = false;
                    if let Some((before, left)) = conn.path_changed.take() {
                        stalled = nat::old_path_retransmissions(conn) > before
                            || data_stream_stalled(conn);
                        if !stalled && left > 1 {
                            conn.path_changed = Some((before, left - 1));
                        }
                    }
                    if stalled {
                        // quiche 0.30 never declares lost what was in flight on the old path
                        // (per-path recovery), so that stream data is never sent again and the
                        // stream cannot move: close cleanly instead of holding a dead stream.
                        let code = fovea_codec::ErrorCode::SlowConsumer as u64;
                        let _ =
                            conn.quic.close(true, code, b"data stream stalled after a path change");
                        conn.phase = Phase::Closing;
                        ShardMetrics::inc(&self.ctx.metrics.path_change_stalls);
                    } else {
                        self.send_node_ping(now, r);
                    }
                }
                _ => {}
            }
            self.mark_dirty(r);
        }
        self.expire_moved(now);
    }

    fn expire_moved(&mut self, now: Instant) {
        while let Some((at, _)) = self.moved_order.front() {
            if *at > now {
                break;
            }
            let (_, cid) = self.moved_order.pop_front().expect("front exists");
            self.moved.remove(&cid);
        }
    }

    /// Earliest deadline the driver must wake up for.
    pub fn next_timeout(&self) -> Option<Instant> {
        let conn = self.timers.peek().map(|Reverse((at, _))| *at);
        let ack = self.acks_due.front().map(|(at, _)| *at);
        [conn, ack, self.rpc.next_deadline()].into_iter().flatten().min()
    }

    /// Produces packets of every connection with pending work into `batch`; `flush` is called
    /// whenever the batch fills and returns false when the socket cannot take more now.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        batch: &mut SendBatch,
        flush: &mut dyn FnMut(&mut SendBatch) -> bool,
    ) {
        self.last_now = now;
        for (pkt, to) in self.immediate.drain(..) {
            let slot = batch.reserve(pkt.len());
            slot.copy_from_slice(&pkt);
            batch.commit(pkt.len(), pkt.len(), to);
            if batch.is_full() {
                // Stateless packets are few; when the socket is full they wait in the batch.
                flush(batch);
            }
        }
        self.fanout_flush_pending(now);
        // Input left over from earlier turns goes first, with the budget this turn gives it.
        for r in std::mem::take(&mut self.pending_input) {
            let Some(conn) = self.conn_mut(r) else { continue };
            conn.input_pending = false;
            self.process_input(now, r);
            self.mark_dirty_by_input(r);
        }
        self.acks_due_now(now);
        let frames_per_turn = self.ctx.limits.frames_per_turn;
        let hello_timeout = Duration::from_millis(self.ctx.limits.hello_timeout_ms);
        let ack_delay = Duration::from_micros(self.ctx.limits.ack_delay_us);
        let mut i = 0;
        let mut blocked = false;
        let metrics = self.ctx.metrics.clone();
        while i < self.dirty.len() {
            let r = self.dirty[i];
            i += 1;
            let Some(conn) = self.conn_mut(r) else { continue };
            // The turn ends for this connection: its next turn gets a fresh frame budget.
            conn.frames_left = frames_per_turn;
            if let Some((code, reason)) = conn.close_with.take() {
                let _ = conn.quic.close(true, code, reason.as_bytes());
                conn.phase = Phase::Closing;
            }
            let had_output = !conn.session_tx.is_empty() || !conn.out.data_tx.is_empty();
            if let Err(e) = conn.push_tx() {
                let _ = conn.quic.close(false, 0x1, format!("{e}").as_bytes());
            }
            conn.drain_step(fovea_codec::ErrorCode::ShuttingDown as u64);
            let plan = ack::plan(conn, had_output, now, ack_delay);
            conn.ack_only = false;
            if let ack::AckPlan::Queue(at) = plan {
                self.acks_due.push_back((at, r));
                ShardMetrics::inc(&metrics.acks_deferred);
            }
            let Some(conn) = self.conn_mut(r) else { continue };
            if plan == ack::AckPlan::SendNow {
                loop {
                    if batch.is_full() && !flush(batch) {
                        blocked = true;
                        break;
                    }
                    let out = batch.reserve(SEND_UDP_PAYLOAD);
                    match conn.quic.send(out) {
                        Ok((n, info)) => {
                            batch.commit(SEND_UDP_PAYLOAD, n, info.to);
                            ShardMetrics::inc(&metrics.packets_out);
                        }
                        Err(_) => {
                            batch.cancel(SEND_UDP_PAYLOAD);
                            break;
                        }
                    }
                }
            }
            if blocked {
                i -= 1;
                break;
            }
            conn.out.dirty = false;
            // CIDs the peer retired (e.g. the accepting shard's, after a move) stop routing.
            let mut retired: smallvec::SmallVec<[CidKey; 4]> = smallvec::SmallVec::new();
            while let Some(old) = conn.quic.retired_scid_next() {
                conn.cids.retain(|c| c.as_ref() != old.as_ref());
                retired.push(CidKey::new(&old));
            }
            let closed = conn.quic.is_closed();
            for key in retired {
                if self.by_cid.get(&key) == Some(&r) {
                    self.by_cid.remove(&key);
                }
            }
            if closed {
                self.reap(r);
                continue;
            }
            let Some(conn) = self.conn_mut(r) else { continue };
            let hello_deadline = conn.sec.deadline().unwrap_or(conn.accepted_at + hello_timeout);
            if let Some(at) = conn.next_deadline(hello_deadline) {
                if conn.timer_armed.is_none_or(|armed| at < armed) {
                    conn.timer_armed = Some(at);
                    self.timers.push(Reverse((at, r)));
                }
            }
        }
        self.dirty.drain(..i);
    }

    /// True when some connection has input waiting for its next turn: the driver must run
    /// another turn even if no packet arrives.
    pub fn has_pending_input(&self) -> bool {
        !self.pending_input.is_empty()
    }

    /// Messages for other shards gathered this turn, by destination.
    pub fn take_outbox(&mut self) -> impl Iterator<Item = (usize, Vec<ShardMsg>)> + '_ {
        let metrics = self.ctx.metrics.clone();
        self.outbox.iter_mut().enumerate().filter(|(_, v)| !v.is_empty()).map(move |(i, v)| {
            ShardMetrics::add(&metrics.cross_shard_out, v.len() as u64);
            (i, std::mem::take(v))
        })
    }

    /// Returns a batch the destination inbox refused; it goes out first next turn.
    pub fn requeue_outbox(&mut self, dest: usize, mut batch: Vec<ShardMsg>) {
        batch.append(&mut self.outbox[dest]);
        self.outbox[dest] = batch;
    }

    /// Messages waiting for other shards (the driver stops reading publishers above a limit).
    pub fn outbox_len(&self) -> usize {
        self.outbox.iter().map(Vec::len).sum()
    }

    fn reap(&mut self, r: ConnRef) {
        let Some(slot) = self.slots.get_mut(r.slot as usize) else { return };
        if slot.generation != r.generation {
            return;
        }
        let Some(mut conn) = slot.conn.take() else { return };
        self.free.push(r.slot);
        self.source_closed(conn.sec.source_ip);
        for c in &conn.cids {
            let key = CidKey::new(c);
            if self.by_cid.get(&key) == Some(&r) {
                self.by_cid.remove(&key);
            }
        }
        if conn.phase == Phase::Active || conn.phase == Phase::Closing {
            // A replaced connection no longer owns its peer id: the newer one keeps the
            // session's calls.
            let owns_peer = self.by_peer.get(&conn.peer_id) == Some(&r);
            if owns_peer {
                self.by_peer.remove(&conn.peer_id);
                if conn.federation {
                    self.link_down(conn.peer_id);
                }
                self.peers -= 1;
                self.ctx.shared.peers.fetch_sub(1, Ordering::Relaxed);
            }
            self.fanout_remove_conn(r, &conn);
            let peer = conn.peer_id;
            let invocations = std::mem::take(&mut conn.invocations);
            let (realm, registrations) = (conn.realm.as_ref(), &conn.registrations);
            self.rpc_remove_conn(r, peer, realm, registrations, invocations, owns_peer);
        }
        if conn.phase == Phase::AwaitHello && !conn.quic.is_established() {
            self.unvalidated = self.unvalidated.saturating_sub(1);
        }
        if let Some(e) = conn.quic.local_error() {
            if e.is_app && e.error_code != 0 {
                ShardMetrics::inc(&self.ctx.metrics.closes_by_error);
            }
        }
        self.ctx.shared.connections.fetch_sub(1, Ordering::Relaxed);
        ShardMetrics::set(&self.ctx.metrics.connections, self.connection_count() as u64);
        ShardMetrics::set(&self.ctx.metrics.peers, self.peers as u64);
    }

    /// Sends a connection that said HELLO to the shard that owns its peer id.
    fn hand_over(&mut self, now: Instant, r: ConnRef, owner: usize) {
        let Some(slot) = self.slots.get_mut(r.slot as usize) else { return };
        let Some(mut conn) = slot.conn.take() else { return };
        self.free.push(r.slot);
        self.source_closed(conn.sec.source_ip);
        conn.phase = Phase::Moving;
        conn.out.dirty = false;
        conn.timer_armed = None;
        let expiry = now + Duration::from_millis(self.ctx.limits.idle_timeout_ms * 2);
        for c in &conn.cids {
            let key = CidKey::new(c);
            self.by_cid.remove(&key);
            self.moved.insert(key, (owner, expiry));
            self.moved_order.push_back((expiry, key));
        }
        self.ctx.shared.connections.fetch_sub(1, Ordering::Relaxed);
        ShardMetrics::set(&self.ctx.metrics.connections, self.connection_count() as u64);
        self.outbox[owner].push(ShardMsg::Adopt(conn));
    }

    /// Takes over a connection from another shard and re-addresses it with CIDs of this shard.
    fn adopt(&mut self, now: Instant, mut conn: Box<Conn>) {
        self.ctx.shared.connections.fetch_add(1, Ordering::Relaxed);
        ShardMetrics::inc(&self.ctx.metrics.migrated_in);
        // Offer CIDs that steer to this shard; retiring the old ones makes the peer switch.
        let limit = conn.quic.scids_left().max(1) + conn.quic.active_scids();
        for _ in 0..limit.min(4) {
            let fresh = cid::new_cid(self.ctx.index);
            let token = self.ctx.reset_key.token(&fresh);
            let id = quiche::ConnectionId::from_vec(fresh.to_vec());
            if conn.quic.new_scid(&id, token, true).is_ok() {
                conn.cids.push(id);
            }
        }
        let cids = conn.cids.clone();
        conn.phase = Phase::AwaitHello;
        if let Some(ip) = conn.sec.source_ip {
            self.source_opened(ip);
        }
        let r = self.insert_conn(conn);
        for c in cids {
            self.by_cid.insert(CidKey::new(&c), r);
        }
        ShardMetrics::set(&self.ctx.metrics.connections, self.connection_count() as u64);
        // The HELLO that made it move is still at the front of its session buffer.
        self.after_input(now, r);
    }

    /// Starts draining: GOODBYE to every peer, then close once their queues are flushed.
    pub fn start_drain(&mut self, now: Instant, deadline: Instant) {
        self.draining = Some(deadline);
        for r in self.live_refs() {
            self.say_goodbye(now, r, fovea_codec::ErrorCode::ShuttingDown, "node is shutting down");
        }
    }

    /// Closes every connection still open (drain deadline passed).
    pub fn force_close_all(&mut self) {
        for s in &mut self.slots {
            if let Some(c) = s.conn.as_mut() {
                let _ = c.quic.close(
                    true,
                    fovea_codec::ErrorCode::ShuttingDown as u64,
                    b"drain deadline",
                );
            }
        }
        for r in self.live_refs() {
            self.mark_dirty(r);
        }
    }

    /// References to every open connection.
    fn live_refs(&self) -> Vec<ConnRef> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.conn.as_ref().map(|_| ConnRef { slot: i as u32, generation: s.generation })
            })
            .collect()
    }

    /// True when some connection still has queued deliveries (drain waits for them).
    pub fn has_pending_output(&self) -> bool {
        self.slots
            .iter()
            .filter_map(|s| s.conn.as_ref())
            .any(|c| !c.out.data_tx.is_empty() || !c.session_tx.is_empty())
    }

    fn scratch_frame(&mut self) -> &mut BytesMut {
        self.scratch.clear();
        &mut self.scratch
    }
}
