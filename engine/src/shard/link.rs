//! Federation links this shard serves (docs/decisions/0004-federation-links.md): a session
//! whose HELLO has flag bit 0, on a node that federates. Its federation frames (and SWIM
//! extension frames) go to the control thread; frames the control thread addresses to the
//! dialing node (`ShardMsg::LinkSend`) are written on the node data stream, behind whatever is
//! queued there. Everything else on the session is served as for any peer.

use bytes::Bytes;
use fovea_codec::Frame;

use super::{ConnRef, Shard};
use crate::control::{ControlLink, ControlMsg, LINK_REALM};

/// Peers' DHT requests one shard passes to the control thread per second, all peers together;
/// beyond, ERROR RATE_LIMITED at once. Bounds what peers can put in the control queue, which
/// federation traffic shares; the per-peer limit (`federation.dht_peer_requests_per_s`) is the
/// control thread's.
pub(super) const DHT_REQUESTS_PER_SHARD: f64 = 2_000.0;

impl Shard {
    /// Connects this shard to the control thread: the node federates.
    pub fn set_control(&mut self, link: ControlLink) {
        self.control = Some(link);
    }

    /// Sends `msg` to the control thread (never blocks; a full queue drops and counts).
    pub(super) fn to_control(&self, msg: ControlMsg) {
        if let Some(c) = &self.control {
            c.send(msg);
        }
    }

    /// True when connection `r` is a federation link.
    pub(super) fn is_link(&mut self, r: ConnRef) -> bool {
        self.conn_mut(r).is_some_and(|c| c.federation)
    }

    /// The session of `r` is established: if it is a federation link, tell the control thread.
    pub(super) fn link_up(&mut self, r: ConnRef) {
        let federates = self.control.is_some();
        let Some(conn) = self.conn_mut(r) else { return };
        if !conn.federation {
            return;
        }
        let link_realm = conn.realm.as_ref().is_some_and(|r| r.as_bytes() == LINK_REALM.as_bytes());
        if !federates || !link_realm {
            // A node without federation, or a session in a peers' realm, is served as a plain
            // peer: flag bit 0 alone does not let a client inject federation frames.
            conn.federation = false;
            return;
        }
        let node = conn.peer_id;
        self.to_control(ControlMsg::LinkUp { node, shard: self.ctx.index });
    }

    /// The link to `node` served here closed.
    pub(super) fn link_down(&self, node: [u8; 32]) {
        self.to_control(ControlMsg::LinkDown { node, shard: self.ctx.index });
    }

    /// A federation frame from link `r`.
    pub(super) fn link_frame(&mut self, r: ConnRef, frame: Frame) {
        let Some(conn) = self.conn_mut(r) else { return };
        let from = conn.peer_id;
        self.to_control(ControlMsg::LinkFrame { from, frame });
    }

    /// A DHT request (FIND_NODE, FIND_VALUE, STORE) of a peer: to the control thread when the
    /// node federates (the answer comes back as `ShardMsg::DhtAnswer`), else ERROR UNSUPPORTED.
    pub(super) fn dht_request(&mut self, r: ConnRef, request_id: u64, frame: Frame) {
        if self.control.is_none() {
            let code = fovea_codec::ErrorCode::Unsupported;
            self.send_error(r, request_id, code, "DHT is not enabled on this node");
            return;
        }
        let now = self.last_now;
        let (tokens, at) = &mut self.dht_budget;
        let refill = now.saturating_duration_since(*at).as_secs_f64() * DHT_REQUESTS_PER_SHARD;
        *tokens = (*tokens + refill).min(DHT_REQUESTS_PER_SHARD);
        *at = now;
        if *tokens < 1.0 {
            let code = fovea_codec::ErrorCode::RateLimited;
            self.send_error(r, request_id, code, "too many DHT requests");
            return;
        }
        *tokens -= 1.0;
        let Some(conn) = self.conn_mut(r) else { return };
        let peer = conn.peer_id;
        self.to_control(ControlMsg::DhtRequest { peer, shard: self.ctx.index, frame });
    }

    /// The control thread's answer to a DHT request of `peer`; dropped when it is gone.
    pub(super) fn dht_answer(&mut self, peer: [u8; 32], frame: &Frame) {
        let Some(&r) = self.by_peer.get(&peer) else { return };
        self.send_session(r, frame);
    }

    /// Encoded frames from the control thread for the link of `to`; dropped when the link is
    /// gone (the control thread learns it from `LinkDown`, SWIM repairs the loss).
    pub(super) fn link_send(&mut self, to: [u8; 32], frames: Bytes) {
        let Some(&r) = self.by_peer.get(&to) else { return };
        let Some(conn) = self.conn_mut(r) else { return };
        if !conn.federation {
            return;
        }
        conn.out.data_tx.push(frames);
        self.mark_dirty(r);
    }
}
