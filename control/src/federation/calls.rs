//! Forwarded calls: which bootstrap gets a call, and the table that routes FORWARD_REPLY back.
//!
//! Placement: among the reachable bootstraps with providers, the least loaded by its last
//! ANNOUNCE (load / capacity), ties broken by rotating through them, so equal bootstraps share
//! calls round robin. Bootstraps that never announced rank after those that did.
//!
//! Every forwarded call gets a table entry under a forward id of ours: who asked (a local
//! caller, or the link and forward id of the node that forwarded it to us), the bootstrap we
//! sent it to, and the deadline. FORWARD_REPLY is matched by forward id *and* sender; entries
//! past their deadline are answered with DEADLINE_EXCEEDED, entries sent to a bootstrap that
//! membership declared dead with PROVIDER_GONE. The table is bounded: a call beyond it fails
//! at once instead of growing memory.

use std::collections::{BTreeSet, HashMap};

use super::replica::NodeId;

/// Who is waiting for a forwarded call's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallWaiter {
    /// A caller of this node; `call_ref` is the driver's handle for it (shard and call id).
    Local {
        /// The driver's handle.
        call_ref: u64,
    },
    /// The node that forwarded the call to us.
    Link {
        /// Its node id (the link to answer on).
        from: NodeId,
        /// Its forward id, echoed in our FORWARD_REPLY.
        forward_id: u64,
    },
}

/// One forwarded call in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingCall {
    /// Who waits for the answer.
    pub waiter: CallWaiter,
    /// The caller's peer id.
    pub caller: NodeId,
    /// The bootstrap we forwarded it to.
    pub sent_to: NodeId,
    /// When we answer DEADLINE_EXCEEDED ourselves, ms.
    pub deadline_ms: u64,
}

/// The table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} forwarded calls in flight")]
pub struct CallTableFull(pub usize);

/// Forwarded calls in flight, by our forward id.
#[derive(Debug)]
pub struct CallTable {
    pending: HashMap<u64, PendingCall>,
    deadlines: BTreeSet<(u64, u64)>,
    next_id: u64,
    max_entries: usize,
}

impl CallTable {
    /// A table holding at most `max_entries` calls.
    pub fn new(max_entries: usize) -> CallTable {
        CallTable { pending: HashMap::new(), deadlines: BTreeSet::new(), next_id: 1, max_entries }
    }

    /// Records a call and returns its forward id.
    pub fn insert(&mut self, call: PendingCall) -> Result<u64, CallTableFull> {
        if self.pending.len() >= self.max_entries {
            return Err(CallTableFull(self.pending.len()));
        }
        let id = self.next_id;
        // Varints stop at 2^62; wrapping there is decades of calls away, and ids still in the
        // table are skipped.
        self.next_id = if id >= (1 << 62) - 1 { 1 } else { id + 1 };
        if self.pending.contains_key(&id) {
            return self.insert(call);
        }
        self.pending.insert(id, call);
        self.deadlines.insert((call.deadline_ms, id));
        Ok(id)
    }

    /// Takes the call a FORWARD_REPLY from `from` answers; `None` when unknown, expired, or
    /// the reply came from a node we did not send the call to.
    pub fn take_reply(&mut self, forward_id: u64, from: &NodeId) -> Option<PendingCall> {
        let call = self.pending.get(&forward_id)?;
        if call.sent_to != *from {
            return None;
        }
        let call = self.pending.remove(&forward_id)?;
        self.deadlines.remove(&(call.deadline_ms, forward_id));
        Some(call)
    }

    /// Removes and returns every call whose deadline is at or before `now_ms`.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<(u64, PendingCall)>) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now_ms {
                break;
            }
            self.deadlines.pop_first();
            if let Some(call) = self.pending.remove(&id) {
                out.push((id, call));
            }
        }
    }

    /// Removes and returns every call sent to `node` (declared dead).
    pub fn fail_sent_to(&mut self, node: &NodeId, out: &mut Vec<(u64, PendingCall)>) {
        let ids: Vec<u64> =
            self.pending.iter().filter(|(_, c)| c.sent_to == *node).map(|(id, _)| *id).collect();
        for id in ids {
            if let Some(call) = self.pending.remove(&id) {
                self.deadlines.remove(&(call.deadline_ms, id));
                out.push((id, call));
            }
        }
    }

    /// The earliest deadline (the driver's wake-up).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|d| d.0)
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when none is in flight.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Picks the bootstrap for a call among `candidates` (sorted, from the provider index),
/// skipping `exclude` and unreachable ones. `load` gives (load, capacity) from ANNOUNCE;
/// `rotation` is a per-node counter that advances on each choice.
pub fn choose_provider(
    candidates: &[NodeId],
    exclude: &[NodeId],
    mut reachable: impl FnMut(&NodeId) -> bool,
    mut load: impl FnMut(&NodeId) -> Option<(u64, u64)>,
    rotation: &mut u64,
) -> Option<NodeId> {
    // Load per mille of capacity; unknown ranks last.
    let ranked: Vec<(u64, NodeId)> = candidates
        .iter()
        .filter(|c| !exclude.contains(c) && reachable(c))
        .map(|c| {
            let rank = match load(c) {
                Some((l, cap)) if cap > 0 => l.saturating_mul(1000) / cap,
                Some((_, _)) => u64::MAX - 1,
                None => u64::MAX,
            };
            (rank, *c)
        })
        .collect();
    let best = ranked.iter().map(|r| r.0).min()?;
    let tied: Vec<NodeId> = ranked.iter().filter(|r| r.0 == best).map(|r| r.1).collect();
    let pick = tied[(*rotation % tied.len() as u64) as usize];
    *rotation = rotation.wrapping_add(1);
    Some(pick)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: NodeId = [2; 32];
    const C: NodeId = [3; 32];
    const D: NodeId = [4; 32];

    fn call(sent_to: NodeId, deadline_ms: u64) -> PendingCall {
        PendingCall {
            waiter: CallWaiter::Local { call_ref: 7 },
            caller: [9; 32],
            sent_to,
            deadline_ms,
        }
    }

    #[test]
    fn reply_is_routed_only_from_the_node_it_went_to() {
        let mut table = CallTable::new(8);
        let id = table.insert(call(B, 1_000)).unwrap();
        assert!(table.take_reply(id, &C).is_none());
        assert_eq!(
            table.take_reply(id, &B).map(|c| c.waiter),
            Some(CallWaiter::Local { call_ref: 7 })
        );
        assert!(table.take_reply(id, &B).is_none());
        assert!(table.is_empty());
    }

    #[test]
    fn expired_and_orphaned_calls_come_out_once() {
        let mut table = CallTable::new(8);
        let early = table.insert(call(B, 100)).unwrap();
        let late = table.insert(call(B, 300)).unwrap();
        let other = table.insert(call(C, 200)).unwrap();
        assert_eq!(table.next_deadline_ms(), Some(100));
        let mut out = Vec::new();
        table.expire(150, &mut out);
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![early]);
        out.clear();
        table.fail_sent_to(&B, &mut out);
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![late]);
        out.clear();
        table.expire(1_000, &mut out);
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![other]);
    }

    #[test]
    fn table_is_bounded() {
        let mut table = CallTable::new(1);
        table.insert(call(B, 1)).unwrap();
        assert_eq!(table.insert(call(B, 1)), Err(CallTableFull(1)));
    }

    #[test]
    fn least_loaded_wins_and_ties_rotate() {
        let mut rot = 0;
        let load = |n: &NodeId| match n[0] {
            2 => Some((50, 100)),
            3 => Some((10, 100)),
            4 => Some((1, 10)),
            _ => None,
        };
        assert_eq!(choose_provider(&[B, C, D], &[], |_| true, load, &mut rot), Some(C));
        let mut picks = Vec::new();
        for _ in 0..4 {
            picks.push(choose_provider(&[B, D], &[], |_| true, |_| Some((0, 1)), &mut rot));
        }
        assert_eq!(picks, vec![Some(D), Some(B), Some(D), Some(B)]);
        assert_eq!(choose_provider(&[B], &[B], |_| true, load, &mut rot), None);
        assert_eq!(choose_provider(&[B, C], &[], |n| *n == B, load, &mut rot), Some(B));
    }
}
