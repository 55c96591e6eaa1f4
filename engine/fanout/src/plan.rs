//! Fan-out planning: one publish's DELIVERs queued on every matching local connection.
//!
//! This is the per-subscriber part of the hot path, kept free of quiche and sockets so that the
//! benches measure exactly the code the shard runs: match the topic in the subscriber trie,
//! group the matching subscription ids per connection, and append one DELIVER per connection
//! (a small per-connection head written into a shared arena, then a refcount of the tail that
//! was encoded once per publish). Nothing is copied or allocated per subscriber; the arena is
//! refilled in 64 KiB blocks.

use bytes::{Bytes, BytesMut};
use fovea_codec::Topic;
use fovea_trie::PatternTrie;
use smallvec::SmallVec;

use crate::{SlowConsumerPolicy, TxQueue};

/// The subscribers of one pattern on a shard: (connection, subscription id).
pub type SubLeaf<K> = SmallVec<[(K, u64); 2]>;

/// Arena block size for DELIVER heads.
const HEAD_ARENA_BLOCK: usize = 64 * 1024;

/// Queued bytes beyond which a connection's DELIVER heads are copied out of the shared arena.
pub const BACKLOG_OWN_HEADS: usize = 4 * 1024;

/// DELIVER heads remembered per plan for reuse by connections with the same matching ids.
const RECENT_HEADS: usize = 4;

/// Slice equality without the `memcmp` call the generic `==` on `[u64]` makes: most
/// connections match one subscription.
#[inline]
fn same_ids(a: &[u64], b: &[u64]) -> bool {
    match (a, b) {
        ([x], [y]) => x == y,
        _ => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y),
    }
}

/// What the fan-out keeps per connection.
#[derive(Default)]
pub struct Recipient {
    /// Frames waiting for quiche's node data stream (deliveries, INVOKEs, MESSAGEs).
    pub data_tx: TxQueue,
    /// True while the connection is on its shard's flush list.
    pub dirty: bool,
    /// Deliveries dropped for this subscriber (slow consumer, drop policy).
    pub dropped: u64,
    /// The plan this connection was last matched in: groups its sub ids into one DELIVER.
    match_epoch: u64,
    /// Sub ids matched in `match_epoch`.
    matched: SmallVec<[u64; 4]>,
}

/// Where the planner finds a connection's [`Recipient`]. `None` means the connection takes no
/// more deliveries (gone, closing, or saying GOODBYE).
pub trait Recipients<K> {
    /// The recipient state of connection `key`.
    fn recipient(&mut self, key: K) -> Option<&mut Recipient>;
}

/// Per-subscriber limits.
#[derive(Debug, Clone, Copy)]
pub struct PlanLimits {
    /// Bytes a connection may have queued beyond quiche before the slow-consumer policy applies.
    pub send_budget_bytes: usize,
    /// What happens to a subscriber over its budget.
    pub slow_consumer: SlowConsumerPolicy,
}

/// What one plan did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlanOutcome {
    /// Connections that got a DELIVER.
    pub delivered: u64,
    /// Connections over budget whose delivery was dropped (drop policy).
    pub dropped: u64,
    /// Connections over budget to close with SLOW_CONSUMER (disconnect policy); listed in the
    /// `disconnect` argument.
    pub disconnected: u64,
}

/// The planner's reusable scratch state (one per shard).
pub struct FanoutPlanner<K> {
    epoch: u64,
    touched: Vec<K>,
    heads: BytesMut,
}

impl<K> Default for FanoutPlanner<K> {
    fn default() -> Self {
        FanoutPlanner {
            epoch: 0,
            touched: Vec::new(),
            heads: BytesMut::with_capacity(HEAD_ARENA_BLOCK),
        }
    }
}

impl<K: Copy> FanoutPlanner<K> {
    /// Queues one DELIVER of `tail` on every connection with a subscription in `subs` matching
    /// `topic`. Connections that become dirty are pushed onto `dirty`; connections the
    /// disconnect policy closes onto `disconnect` (the caller closes them).
    #[allow(clippy::too_many_arguments)]
    pub fn plan<R: Recipients<K>>(
        &mut self,
        subs: &PatternTrie<SubLeaf<K>>,
        topic: &Topic,
        tail: &Bytes,
        recipients: &mut R,
        limits: PlanLimits,
        dirty: &mut Vec<K>,
        disconnect: &mut Vec<K>,
    ) -> PlanOutcome {
        self.epoch += 1;
        let epoch = self.epoch;
        let touched = &mut self.touched;
        touched.clear();
        subs.for_each_match(topic, |leaf| {
            for &(key, sub_id) in leaf {
                let Some(rcp) = recipients.recipient(key) else { continue };
                if rcp.match_epoch != epoch {
                    rcp.match_epoch = epoch;
                    rcp.matched.clear();
                    touched.push(key);
                }
                rcp.matched.push(sub_id);
            }
        });
        let mut outcome = PlanOutcome::default();
        let mut recent: [Option<(SmallVec<[u64; 4]>, Bytes)>; RECENT_HEADS] = Default::default();
        let mut next_recent = 0usize;
        for &key in touched.iter() {
            let Some(rcp) = recipients.recipient(key) else { continue };
            if rcp.data_tx.bytes + tail.len() > limits.send_budget_bytes {
                match limits.slow_consumer {
                    SlowConsumerPolicy::Drop => {
                        rcp.dropped += 1;
                        outcome.dropped += 1;
                    }
                    SlowConsumerPolicy::Disconnect => {
                        outcome.disconnected += 1;
                        disconnect.push(key);
                    }
                }
                continue;
            }
            // Connections whose matching ids are the same (most clients number their
            // subscriptions from 1) get the same head bytes: share a recent one by refcount
            // instead of encoding and splitting one per connection.
            let head = match recent.iter().flatten().find(|(ids, _)| same_ids(ids, &rcp.matched)) {
                Some((_, head)) => head.clone(),
                None => {
                    let heads = &mut self.heads;
                    let need = fovea_codec::deliver_head_len_max(rcp.matched.len());
                    if heads.capacity() - heads.len() < need {
                        heads.reserve(HEAD_ARENA_BLOCK);
                    }
                    fovea_codec::encode_deliver_head(&rcp.matched, tail.len(), heads);
                    let head = heads.split().freeze();
                    recent[next_recent % RECENT_HEADS] = Some((rcp.matched.clone(), head.clone()));
                    next_recent += 1;
                    head
                }
            };
            // A head shares its 64 KiB arena block with the heads of other connections and
            // publishes: a connection that keeps a backlog would pin blocks far beyond what its
            // send budget counts, so a backlogged one gets its few bytes in an allocation of
            // its own.
            let head = if rcp.data_tx.bytes > BACKLOG_OWN_HEADS {
                Bytes::copy_from_slice(&head)
            } else {
                head
            };
            rcp.data_tx.push(head);
            rcp.data_tx.push(tail.clone());
            outcome.delivered += 1;
            if !rcp.dirty {
                rcp.dirty = true;
                dirty.push(key);
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fovea_codec::{decode_frame, Frame, Pattern};

    struct Table(Vec<Option<Recipient>>);

    impl Recipients<u32> for Table {
        fn recipient(&mut self, key: u32) -> Option<&mut Recipient> {
            self.0.get_mut(key as usize)?.as_mut()
        }
    }

    fn limits(budget: usize, policy: SlowConsumerPolicy) -> PlanLimits {
        PlanLimits { send_budget_bytes: budget, slow_consumer: policy }
    }

    fn queued_frames(r: &mut Recipient) -> Vec<Frame> {
        let mut wire = BytesMut::new();
        while let Some(b) = r.data_tx.pop_front() {
            wire.extend_from_slice(&b);
        }
        let mut frames = Vec::new();
        while let Some(f) =
            decode_frame(&mut wire, &fovea_codec::Limits::default()).expect("valid frame")
        {
            frames.push(f);
        }
        frames
    }

    fn trie(entries: &[(&str, u32, u64)]) -> PatternTrie<SubLeaf<u32>> {
        let mut t: PatternTrie<SubLeaf<u32>> = PatternTrie::default();
        for &(p, conn, sub) in entries {
            t.entry(&Pattern::new(Bytes::copy_from_slice(p.as_bytes())).unwrap()).push((conn, sub));
        }
        t
    }

    #[test]
    fn one_deliver_per_connection_lists_every_matching_subscription() {
        let subs = trie(&[("a.*", 0, 1), ("a.b", 0, 2), ("**", 1, 7), ("x.y", 2, 3)]);
        let mut table = Table((0..3).map(|_| Some(Recipient::default())).collect());
        let topic = Topic::from_static("a.b");
        let tail = fovea_codec::encode_deliver_tail(Some(9), &topic, b"hi");
        let mut planner = FanoutPlanner::default();
        let (mut dirty, mut disc) = (Vec::new(), Vec::new());
        let out = planner.plan(
            &subs,
            &topic,
            &tail,
            &mut table,
            limits(1 << 20, SlowConsumerPolicy::Drop),
            &mut dirty,
            &mut disc,
        );
        assert_eq!(out, PlanOutcome { delivered: 2, dropped: 0, disconnected: 0 });
        dirty.sort();
        assert_eq!(dirty, vec![0, 1]);
        let Frame::Deliver(d) = &queued_frames(table.0[0].as_mut().unwrap())[0] else { panic!() };
        let mut ids = d.sub_ids.to_vec();
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(&d.payload[..], b"hi");
        let f1 = queued_frames(table.0[1].as_mut().unwrap());
        assert!(matches!(&f1[..], [Frame::Deliver(d)] if d.sub_ids.as_slice() == [7]));
        assert!(table.0[2].as_mut().unwrap().data_tx.is_empty());
    }

    #[test]
    fn connections_with_the_same_ids_share_a_head_and_others_get_their_own() {
        let subs = trie(&[("t", 0, 1), ("t", 1, 1), ("t", 2, 2), ("t", 3, 1), ("t.*", 3, 9)]);
        let mut table = Table((0..4).map(|_| Some(Recipient::default())).collect());
        let topic = Topic::from_static("t");
        let tail = fovea_codec::encode_deliver_tail(None, &topic, b"p");
        let mut planner = FanoutPlanner::default();
        let (mut dirty, mut disc) = (Vec::new(), Vec::new());
        let l = limits(1 << 20, SlowConsumerPolicy::Drop);
        planner.plan(&subs, &topic, &tail, &mut table, l, &mut dirty, &mut disc);
        let ids = |t: &mut Table, i: usize| match &queued_frames(t.0[i].as_mut().unwrap())[..] {
            [Frame::Deliver(d)] => d.sub_ids.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(ids(&mut table, 0), vec![1]);
        assert_eq!(ids(&mut table, 1), vec![1]);
        assert_eq!(ids(&mut table, 2), vec![2]);
        assert_eq!(ids(&mut table, 3), vec![1], "t.* does not match t");
    }

    #[test]
    fn a_backlogged_connection_does_not_pin_the_shared_head_arena() {
        let subs = trie(&[("t", 0, 1), ("t", 1, 1), ("t", 2, 1)]);
        let mut table = Table((0..3).map(|_| Some(Recipient::default())).collect());
        table.0[1].as_mut().unwrap().data_tx.push(Bytes::from(vec![0u8; BACKLOG_OWN_HEADS + 1]));
        let topic = Topic::from_static("t");
        let tail = fovea_codec::encode_deliver_tail(None, &topic, b"p");
        let mut planner = FanoutPlanner::default();
        let (mut dirty, mut disc) = (Vec::new(), Vec::new());
        let l = limits(1 << 20, SlowConsumerPolicy::Drop);
        planner.plan(&subs, &topic, &tail, &mut table, l, &mut dirty, &mut disc);
        let head = |t: &mut Table, i: usize| {
            let q = &mut t.0[i].as_mut().unwrap().data_tx;
            while q.bytes > 2 * tail.len() + 16 {
                q.pop_front();
            }
            q.pop_front().unwrap()
        };
        let (h0, h1, h2) = (head(&mut table, 0), head(&mut table, 1), head(&mut table, 2));
        assert_eq!(h0, h1, "same bytes");
        assert_eq!(h0.as_ptr(), h2.as_ptr(), "connections with the same ids share one head");
        assert_ne!(h0.as_ptr(), h1.as_ptr(), "the backlogged connection has its own copy");
    }

    #[test]
    fn a_second_plan_starts_fresh_groups_and_dirty_is_not_pushed_twice() {
        let subs = trie(&[("t", 0, 1)]);
        let mut table = Table(vec![Some(Recipient::default())]);
        let topic = Topic::from_static("t");
        let tail = fovea_codec::encode_deliver_tail(None, &topic, b"x");
        let mut planner = FanoutPlanner::default();
        let (mut dirty, mut disc) = (Vec::new(), Vec::new());
        let l = limits(1 << 20, SlowConsumerPolicy::Drop);
        for _ in 0..3 {
            planner.plan(&subs, &topic, &tail, &mut table, l, &mut dirty, &mut disc);
        }
        assert_eq!(dirty, vec![0]);
        let frames = queued_frames(table.0[0].as_mut().unwrap());
        assert_eq!(frames.len(), 3);
        for f in frames {
            assert!(matches!(f, Frame::Deliver(d) if d.sub_ids.as_slice() == [1]));
        }
    }

    #[test]
    fn over_budget_drops_or_disconnects_that_subscriber_only() {
        let subs = trie(&[("t", 0, 1), ("t", 1, 1)]);
        let topic = Topic::from_static("t");
        let tail = fovea_codec::encode_deliver_tail(None, &topic, &[0u8; 100]);
        for policy in [SlowConsumerPolicy::Drop, SlowConsumerPolicy::Disconnect] {
            let mut table = Table(vec![Some(Recipient::default()), Some(Recipient::default())]);
            table.0[0].as_mut().unwrap().data_tx.push(Bytes::from(vec![0u8; 1000]));
            let mut planner = FanoutPlanner::default();
            let (mut dirty, mut disc) = (Vec::new(), Vec::new());
            let out = planner.plan(
                &subs,
                &topic,
                &tail,
                &mut table,
                limits(1050, policy),
                &mut dirty,
                &mut disc,
            );
            assert_eq!(out.delivered, 1, "{policy:?}");
            assert_eq!(dirty, vec![1]);
            match policy {
                SlowConsumerPolicy::Drop => {
                    assert_eq!(out.dropped, 1);
                    assert_eq!(table.0[0].as_ref().unwrap().dropped, 1);
                    assert!(disc.is_empty());
                }
                SlowConsumerPolicy::Disconnect => {
                    assert_eq!(out.disconnected, 1);
                    assert_eq!(disc, vec![0]);
                }
            }
        }
    }

    #[test]
    fn connections_that_take_no_deliveries_are_skipped() {
        let subs = trie(&[("t", 0, 1), ("t", 1, 2)]);
        let mut table = Table(vec![None, Some(Recipient::default())]);
        let topic = Topic::from_static("t");
        let tail = fovea_codec::encode_deliver_tail(None, &topic, b"x");
        let mut planner = FanoutPlanner::default();
        let (mut dirty, mut disc) = (Vec::new(), Vec::new());
        let out = planner.plan(
            &subs,
            &topic,
            &tail,
            &mut table,
            limits(1 << 20, SlowConsumerPolicy::Drop),
            &mut dirty,
            &mut disc,
        );
        assert_eq!(out.delivered, 1);
        assert_eq!(dirty, vec![1]);
    }
}
