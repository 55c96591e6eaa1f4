//! NAT assistance: OBSERVED_ADDR when a peer's address changes, PUNCH introductions, and the
//! relay budget for traffic that flows through the node instead of a direct path.
//!
//! An introduction runs over two shards at most: the requester's shard checks its rate limit,
//! fixes the common start time (one wall-clock reading, so both sides get the same value) and
//! asks the target's owner; the owner sends PUNCH to the target (if it is connected in the same
//! realm) and answers; the requester's shard then sends OK and PUNCH to the requester, or
//! ERROR UNKNOWN_PEER. Peers never learn the address of a peer outside their realm.

use std::net::SocketAddr;
use std::time::Instant;

use fovea_codec::frame::{self, Frame};
use fovea_codec::{ErrorCode, Realm};

use super::bucket::TokenBucket;
use super::{owner_shard, ConnRef, Phase, Shard, ShardMsg};
use crate::metrics::{Relayer, ShardMetrics, RELAYERS_PER_SHARD};

/// How often a shard refreshes its relayers for `GET /relay`.
const RELAY_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Per-connection NAT and relay state.
#[derive(Debug, Default)]
pub struct NatState {
    /// PUNCH_REQUEST budget (created on first use).
    punch: Option<TokenBucket>,
    /// Relay budget in bytes for SEND and CALL payloads (created on first use).
    relay: Option<TokenBucket>,
    /// Bytes this peer sent through the node to other peers (SEND and CALL payloads).
    pub relayed_bytes: u64,
    /// Messages this peer sent through the node to other peers.
    pub relayed_msgs: u64,
}

/// Keep-alive checks for a stalled data stream after a path change. One was not enough: at the
/// first check after a rebinding the data stream often still moved (what was stuck on the old
/// path had not blocked it yet, and quiche had dropped the old path, so its retransmissions no
/// longer counted), and the stall that followed was never looked at again.
pub(super) const PATH_CHECKS: u8 = 3;

impl Shard {
    /// Unix time in ms at `now`, from the wall-clock anchor the driver gave this shard.
    pub(super) fn unix_ms(&self, now: Instant) -> u64 {
        let (at, unix_ms) = self.ctx.wall_clock;
        unix_ms + now.saturating_duration_since(at).as_millis() as u64
    }

    /// A datagram of an active connection came from a new address (NAT rebinding, migration):
    /// tell the peer what the node now sees.
    pub(super) fn peer_address_changed(&mut self, r: ConnRef, from: SocketAddr) {
        let Some(conn) = self.conn_mut(r) else { return };
        if conn.peer_addr == from {
            return;
        }
        conn.peer_addr = from;
        if conn.phase != Phase::Active {
            return;
        }
        conn.path_changed = Some((old_path_retransmissions(conn), PATH_CHECKS));
        ShardMetrics::inc(&self.ctx.metrics.observed_addr_changes);
        self.send_session(r, &Frame::ObservedAddr(frame::ObservedAddr { observed: from }));
    }

    /// Publishes this shard's top relayers for `GET /relay`, at most once a second: a scan of
    /// the shard's connections, kept off the per-message path.
    pub(super) fn report_relayers(&mut self, now: Instant) {
        if now < self.relay_report_at {
            return;
        }
        self.relay_report_at = now + RELAY_REPORT_EVERY;
        let mut top: Vec<Relayer> = self
            .slots
            .iter()
            .filter_map(|s| s.conn.as_deref())
            .filter(|c| c.phase == Phase::Active && c.nat.relayed_msgs > 0)
            .map(|c| Relayer {
                peer: c.peer_id,
                realm: c.realm.as_ref().map(|r| r.as_str().to_owned()).unwrap_or_default(),
                bytes: c.nat.relayed_bytes,
                msgs: c.nat.relayed_msgs,
            })
            .collect();
        top.sort_unstable_by_key(|r| std::cmp::Reverse(r.bytes));
        top.truncate(RELAYERS_PER_SHARD);
        *self.ctx.metrics.relayers.lock().unwrap_or_else(|p| p.into_inner()) = top;
    }

    /// Charges `bytes` of relayed traffic to connection `r`; false when over its budget.
    pub(super) fn charge_relay(&mut self, now: Instant, r: ConnRef, bytes: usize) -> bool {
        let (rate, burst) = (self.ctx.limits.relay_bytes_per_s, self.ctx.limits.relay_burst_bytes);
        let Some(conn) = self.conn_mut(r) else { return false };
        let bucket = conn.nat.relay.get_or_insert_with(|| TokenBucket::new(now, rate, burst));
        if !bucket.take(now, bytes as u64) {
            ShardMetrics::inc(&self.ctx.metrics.relay_rate_limited);
            return false;
        }
        conn.nat.relayed_bytes += bytes as u64;
        conn.nat.relayed_msgs += 1;
        ShardMetrics::add(&self.ctx.metrics.relay_bytes, bytes as u64);
        true
    }

    /// PUNCH_REQUEST from connection `r`.
    pub(super) fn punch_request(&mut self, now: Instant, r: ConnRef, p: frame::PunchRequest) {
        let limits = &self.ctx.limits;
        let (rate, burst, lead) =
            (limits.punch_rate_per_s, limits.punch_burst, limits.punch_lead_ms);
        let start_at_ms = self.unix_ms(now) + lead;
        let Some(conn) = self.conn_mut(r) else { return };
        let (source, source_addr) = (conn.peer_id, conn.peer_addr);
        let Some(realm) = conn.realm.clone() else { return };
        let bucket = conn.nat.punch.get_or_insert_with(|| TokenBucket::new(now, rate, burst));
        if !bucket.take(now, 1) {
            ShardMetrics::inc(&self.ctx.metrics.punch_rate_limited);
            return self.send_error(
                r,
                p.request_id,
                ErrorCode::RateLimited,
                "punch_rate_per_s exceeded",
            );
        }
        if p.target == source {
            return self.send_error(
                r,
                p.request_id,
                ErrorCode::UnknownPeer,
                "a peer cannot be introduced to itself",
            );
        }
        let msg = ShardMsg::Punch {
            source,
            source_addr,
            realm,
            target: p.target,
            request_id: p.request_id,
            start_at_ms,
        };
        self.route(now, owner_shard(&p.target, self.ctx.shards), msg);
    }

    /// Punch messages from other shards (or this one).
    pub(super) fn handle_nat_message(&mut self, now: Instant, msg: ShardMsg) {
        match msg {
            ShardMsg::Punch { source, source_addr, realm, target, request_id, start_at_ms } => {
                let found = self.peer_in_realm(&target, &realm).map(|(r, addr)| {
                    let punch = Frame::Punch(frame::Punch {
                        peer: source,
                        peer_addr: source_addr,
                        start_at_ms,
                    });
                    self.send_session(r, &punch);
                    ShardMetrics::inc(&self.ctx.metrics.punches);
                    addr
                });
                let answer =
                    ShardMsg::PunchResult { source, target, request_id, found, start_at_ms };
                self.route(now, owner_shard(&source, self.ctx.shards), answer);
            }
            ShardMsg::PunchResult { source, target, request_id, found, start_at_ms } => {
                let Some(&r) = self.by_peer.get(&source) else { return };
                match found {
                    Some(peer_addr) => {
                        self.send_ok(r, request_id);
                        let punch =
                            Frame::Punch(frame::Punch { peer: target, peer_addr, start_at_ms });
                        self.send_session(r, &punch);
                    }
                    None => self.send_error(
                        r,
                        request_id,
                        ErrorCode::UnknownPeer,
                        "no peer with this id is connected in this realm",
                    ),
                }
            }
            _ => unreachable!("routed by handle_message"),
        }
    }

    /// The connection and current address of `peer`, if it has a session in `realm` here.
    pub(super) fn peer_in_realm(
        &mut self,
        peer: &[u8; 32],
        realm: &Realm,
    ) -> Option<(ConnRef, SocketAddr)> {
        let r = *self.by_peer.get(peer)?;
        let conn = self.conn_mut(r)?;
        (conn.realm.as_ref() == Some(realm)).then_some((r, conn.peer_addr))
    }

    /// Handles `msg` here when this shard is `dest`, else queues it for `dest`.
    fn route(&mut self, now: Instant, dest: usize, msg: ShardMsg) {
        if dest == self.ctx.index {
            self.handle_nat_message(now, msg);
        } else {
            self.outbox[dest].push(msg);
        }
    }
}

/// Retransmissions counted on the paths that are not active: quiche 0.30 keeps retransmitting
/// on the old path what was in flight there when the peer moved (its recovery is per path), so
/// a count that grows after a move means stream data that will never arrive.
pub(super) fn old_path_retransmissions(conn: &super::Conn) -> usize {
    conn.quic.path_stats().filter(|p| !p.active).map(|p| p.retrans).sum()
}
