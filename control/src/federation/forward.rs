//! Forwarding decisions for publishes: to which federation peers, and which ones not twice.
//!
//! A publish goes to each bootstrap with matching subscribers once: the interest index yields
//! origins each once however many of their patterns match. Never back to the node where the
//! publish entered the federation, never to the link it came from, never to ourselves, and
//! not at all once it has taken `max_hops` hops. Duplicates that still arrive over a second
//! path (a relaying mesh, a retransmission after a link flap) are dropped by
//! [`DedupWindow`] on (origin, message id).

use std::collections::{HashSet, VecDeque};

use super::replica::NodeId;

/// Where a publish came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishSource {
    /// A peer of this node published it.
    Local,
    /// A FORWARD_PUBLISH from federation link `from`.
    Forwarded {
        /// Node where it entered the federation.
        origin: NodeId,
        /// The link it arrived on.
        from: NodeId,
        /// Hops taken so far.
        hops: u8,
    },
}

/// The peers to send a FORWARD_PUBLISH to, and the hop count to put in it.
///
/// `interested` are the origins with matching subscribers (each once); `reachable` says
/// whether membership considers a peer worth sending to. Returns nothing when the hop limit
/// is reached.
pub fn publish_targets(
    self_id: &NodeId,
    interested: &[NodeId],
    source: PublishSource,
    max_hops: u8,
    mut reachable: impl FnMut(&NodeId) -> bool,
    out: &mut Vec<NodeId>,
) -> Option<u8> {
    out.clear();
    let (hops, origin, from) = match source {
        PublishSource::Local => (0, *self_id, None),
        PublishSource::Forwarded { origin, from, hops } => (hops, origin, Some(from)),
    };
    if hops >= max_hops {
        return None;
    }
    for peer in interested {
        if peer == self_id || *peer == origin || Some(*peer) == from || !reachable(peer) {
            continue;
        }
        if !out.contains(peer) {
            out.push(*peer);
        }
    }
    Some(hops + 1)
}

/// Recently seen (origin, message id) pairs, bounded in count and in age.
#[derive(Debug)]
pub struct DedupWindow {
    seen: HashSet<(NodeId, u64)>,
    order: VecDeque<(u64, NodeId, u64)>,
    max_entries: usize,
    window_ms: u64,
}

impl DedupWindow {
    /// Remembers at most `max_entries` ids, each for at most `window_ms`.
    pub fn new(max_entries: usize, window_ms: u64) -> DedupWindow {
        DedupWindow {
            seen: HashSet::with_capacity(max_entries.min(1 << 16)),
            order: VecDeque::with_capacity(max_entries.min(1 << 16)),
            max_entries: max_entries.max(1),
            window_ms,
        }
    }

    /// True the first time (origin, message id) is seen within the window, false for a
    /// duplicate.
    pub fn first_sight(&mut self, origin: NodeId, message_id: u64, now_ms: u64) -> bool {
        self.expire(now_ms);
        if !self.seen.insert((origin, message_id)) {
            return false;
        }
        if self.order.len() >= self.max_entries {
            if let Some((_, o, m)) = self.order.pop_front() {
                self.seen.remove(&(o, m));
            }
        }
        self.order.push_back((now_ms, origin, message_id));
        true
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(at, o, m)) = self.order.front() {
            if at.saturating_add(self.window_ms) > now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&(o, m));
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = [1; 32];
    const B: NodeId = [2; 32];
    const C: NodeId = [3; 32];
    const D: NodeId = [4; 32];

    #[test]
    fn local_publish_goes_to_every_interested_reachable_peer_once() {
        let mut out = Vec::new();
        let hops =
            publish_targets(&A, &[A, B, C, C, D], PublishSource::Local, 4, |p| *p != D, &mut out);
        assert_eq!(hops, Some(1));
        assert_eq!(out, vec![B, C]);
    }

    #[test]
    fn never_back_to_origin_or_arrival_link() {
        let mut out = Vec::new();
        let source = PublishSource::Forwarded { origin: B, from: C, hops: 1 };
        let hops = publish_targets(&A, &[B, C, D], source, 4, |_| true, &mut out);
        assert_eq!((hops, out), (Some(2), vec![D]));
    }

    #[test]
    fn nothing_at_the_hop_limit() {
        let mut out = vec![B];
        let source = PublishSource::Forwarded { origin: B, from: C, hops: 4 };
        assert_eq!(publish_targets(&A, &[D], source, 4, |_| true, &mut out), None);
        assert!(out.is_empty());
        assert_eq!(publish_targets(&A, &[D], PublishSource::Local, 0, |_| true, &mut out), None);
    }

    #[test]
    fn dedup_window_is_bounded_in_count_and_time() {
        let mut w = DedupWindow::new(2, 1_000);
        assert!(w.first_sight(A, 1, 0));
        assert!(!w.first_sight(A, 1, 10));
        assert!(w.first_sight(B, 1, 20));
        assert!(w.first_sight(A, 2, 30));
        // Count bound: (A, 1) was pushed out by the third id.
        assert!(w.first_sight(A, 1, 40));
        assert_eq!(w.len(), 2);
        // Time bound.
        assert!(!w.first_sight(A, 2, 1_029));
        assert!(w.first_sight(A, 2, 1_031));
    }
}
