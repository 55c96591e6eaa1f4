//! Federation links this shard serves (docs/decisions/0004-federation-links.md): a session
//! whose HELLO has flag bit 0, on a node that federates. Its federation frames (and SWIM
//! extension frames) go to the control thread; frames the control thread addresses to the
//! dialing node (`ShardMsg::LinkSend`) are written on the node data stream, behind whatever is
//! queued there. Everything else on the session is served as for any peer.

use bytes::Bytes;
use fovea_codec::Frame;

use super::{ConnRef, Shard};
use crate::control::{ControlLink, ControlMsg, LINK_REALM};

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
