//! Subscriptions, the cross-shard interest index, and fan-out of one publish.
//!
//! Per realm, a shard keeps two pattern tries: `subs` (its own subscribers: connection and
//! subscription id per pattern) and `interest` (which *other* shards have subscribers for a
//! pattern, as a bit mask). A publish is matched once in each: local subscribers get the
//! DELIVER directly, and each interested shard gets one `ShardMsg::Deliver` carrying the same
//! refcounted tail. The DELIVER tail (flags, message id, topic, payload) is encoded once per
//! publish; per connection only the head (type, length, matching sub ids) is written, into a
//! shared arena, so there is no allocation per subscriber.
//!
//! Interest changes are broadcast only on a pattern's first subscriber and its last
//! unsubscribe on a shard. A SUBSCRIBE that creates new interest is acknowledged (OK) only after
//! every other shard has applied it, so a publish sent after the subscriber saw OK is never
//! missed because the publisher's shard had not heard of the subscription yet.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fovea_codec::{ErrorCode, Pattern, Realm, Topic};
use fovea_trie::PatternTrie;
use smallvec::SmallVec;

use super::{Conn, ConnRef, Shard, ShardMsg};
use crate::config::SlowConsumerPolicy;
use crate::metrics::ShardMetrics;

type SubLeaf = SmallVec<[(ConnRef, u64); 2]>;

#[derive(Default)]
struct RealmState {
    subs: PatternTrie<SubLeaf>,
    interest: PatternTrie<u64>,
}

struct PendingOk {
    conn: ConnRef,
    request_id: u64,
    remaining: usize,
}

/// Fan-out state of one shard.
pub(super) struct Fanout {
    realms: ahash::AHashMap<Realm, RealmState>,
    epoch: u64,
    touched: Vec<ConnRef>,
    pending_ok: ahash::AHashMap<u64, PendingOk>,
    next_ack: u64,
    heads: BytesMut,
    subscriptions: u64,
}

impl Fanout {
    pub(super) fn new(_shards: usize) -> Fanout {
        Fanout {
            realms: ahash::AHashMap::new(),
            epoch: 0,
            touched: Vec::new(),
            pending_ok: ahash::AHashMap::new(),
            next_ack: 1,
            heads: BytesMut::with_capacity(64 * 1024),
            subscriptions: 0,
        }
    }
}

/// Outcome of a SUBSCRIBE that passed validation.
pub(super) enum SubscribeOutcome {
    /// Acknowledge now.
    Ok,
    /// OK follows when the other shards acknowledge the new interest.
    Deferred,
}

impl Shard {
    /// Adds a subscription of connection `r`; the caller answers OK or ERROR.
    pub(super) fn subscribe(
        &mut self,
        r: ConnRef,
        request_id: u64,
        sub_id: u64,
        pattern: Pattern,
    ) -> Result<SubscribeOutcome, ErrorCode> {
        let max_subs = self.ctx.limits.max_subscriptions_per_peer;
        let conn = self.conn_mut(r).expect("caller holds a live connection");
        let realm = conn.realm.clone().expect("active sessions have a realm");
        if conn.subs.contains_key(&sub_id) {
            return Err(ErrorCode::DuplicateSubscription);
        }
        if conn.subs.len() >= max_subs {
            return Err(ErrorCode::TooManySubscriptions);
        }
        conn.subs.insert(sub_id, pattern.clone());
        let state = self.fanout.realms.entry(realm.clone()).or_default();
        let leaf = state.subs.entry(&pattern);
        let first_here = leaf.is_empty();
        leaf.push((r, sub_id));
        self.fanout.subscriptions += 1;
        ShardMetrics::set(&self.ctx.metrics.subscriptions, self.fanout.subscriptions);
        if !first_here || self.ctx.shards == 1 {
            return Ok(SubscribeOutcome::Ok);
        }
        let ack = self.expect_acks(r, request_id, self.ctx.shards - 1);
        for dest in (0..self.ctx.shards).filter(|&s| s != self.ctx.index) {
            self.outbox[dest].push(ShardMsg::InterestAdd {
                realm: realm.clone(),
                pattern: pattern.clone(),
                from: self.ctx.index,
                ack,
            });
        }
        Ok(SubscribeOutcome::Deferred)
    }

    /// Remembers a request to answer with OK once `remaining` shards acknowledged the change
    /// it broadcast; returns the token they echo.
    pub(super) fn expect_acks(&mut self, r: ConnRef, request_id: u64, remaining: usize) -> u64 {
        let ack = self.fanout.next_ack;
        self.fanout.next_ack += 1;
        self.fanout.pending_ok.insert(ack, PendingOk { conn: r, request_id, remaining });
        ack
    }

    /// Removes one subscription of connection `r`.
    pub(super) fn unsubscribe(&mut self, r: ConnRef, sub_id: u64) -> Result<(), ErrorCode> {
        let conn = self.conn_mut(r).expect("caller holds a live connection");
        let realm = conn.realm.clone().expect("active sessions have a realm");
        let pattern = conn.subs.remove(&sub_id).ok_or(ErrorCode::UnknownSubscription)?;
        self.remove_sub(r, &realm, &pattern, sub_id);
        Ok(())
    }

    pub(super) fn remove_sub(&mut self, r: ConnRef, realm: &Realm, pattern: &Pattern, sub_id: u64) {
        let Some(state) = self.fanout.realms.get_mut(realm) else { return };
        let mut now_empty = false;
        state.subs.remove_with(pattern, |leaf| {
            leaf.retain(|&mut (c, s)| !(c == r && s == sub_id));
            now_empty = leaf.is_empty();
            now_empty
        });
        self.fanout.subscriptions -= 1;
        ShardMetrics::set(&self.ctx.metrics.subscriptions, self.fanout.subscriptions);
        if now_empty {
            for dest in (0..self.ctx.shards).filter(|&s| s != self.ctx.index) {
                self.outbox[dest].push(ShardMsg::InterestRemove {
                    realm: realm.clone(),
                    pattern: pattern.clone(),
                    from: self.ctx.index,
                });
            }
        }
    }

    /// Drops every subscription of a closing connection.
    pub(super) fn fanout_remove_conn(&mut self, r: ConnRef, conn: &Conn) {
        let Some(realm) = conn.realm.clone() else { return };
        for (&sub_id, pattern) in &conn.subs {
            self.remove_sub(r, &realm, pattern, sub_id);
        }
    }

    /// Fans one accepted PUBLISH out: local subscribers now, interested shards via the outbox.
    pub(super) fn publish(
        &mut self,
        now: Instant,
        realm: &Realm,
        topic: &Topic,
        message_id: Option<u64>,
        payload: &[u8],
    ) {
        let Some(state) = self.fanout.realms.get(realm) else { return };
        let mut remote = 0u64;
        state.interest.for_each_match(topic, |mask| remote |= *mask);
        let has_local = !state.subs.is_empty();
        if remote == 0 && !has_local {
            return;
        }
        let tail = fovea_codec::encode_deliver_tail(message_id, topic, payload);
        while remote != 0 {
            let dest = remote.trailing_zeros() as usize;
            remote &= remote - 1;
            self.outbox[dest].push(ShardMsg::Deliver {
                realm: realm.clone(),
                topic: topic.clone(),
                tail: tail.clone(),
                published_at: now,
            });
        }
        if has_local {
            self.deliver_local(now, realm, topic, &tail, now);
        }
    }

    /// Matches `topic` against this shard's subscribers and queues one DELIVER per matching
    /// connection, listing all of that connection's matching subscription ids.
    fn deliver_local(
        &mut self,
        now: Instant,
        realm: &Realm,
        topic: &Topic,
        tail: &Bytes,
        published_at: Instant,
    ) {
        let Some(state) = self.fanout.realms.get(realm) else { return };
        self.fanout.epoch += 1;
        let epoch = self.fanout.epoch;
        let touched = &mut self.fanout.touched;
        touched.clear();
        let slots = &mut self.slots;
        state.subs.for_each_match(topic, |leaf| {
            for &(r, sub_id) in leaf {
                let Some(conn) = slots[r.slot as usize].conn.as_deref_mut() else { continue };
                if conn.match_epoch != epoch {
                    conn.match_epoch = epoch;
                    conn.matched.clear();
                    touched.push(r);
                }
                conn.matched.push(sub_id);
            }
        });
        let budget = self.ctx.limits.send_budget_bytes;
        let policy = self.ctx.limits.slow_consumer;
        let metrics = self.ctx.metrics.clone();
        let mut delivered = 0u64;
        for i in 0..self.fanout.touched.len() {
            let r = self.fanout.touched[i];
            let heads = &mut self.fanout.heads;
            let Some(conn) = self.slots[r.slot as usize].conn.as_deref_mut() else { continue };
            if conn.close_with.is_some() || conn.goodbye_sent || conn.phase == super::Phase::Closing
            {
                continue;
            }
            if conn.data_tx.bytes + tail.len() > budget {
                match policy {
                    SlowConsumerPolicy::Drop => {
                        conn.dropped += 1;
                        ShardMetrics::inc(&metrics.drops_slow_consumer);
                        continue;
                    }
                    SlowConsumerPolicy::Disconnect => {
                        conn.close_with =
                            Some((ErrorCode::SlowConsumer as u64, "send budget exceeded"));
                        ShardMetrics::inc(&metrics.slow_consumer_disconnects);
                        self.mark_dirty(r);
                        continue;
                    }
                }
            }
            if heads.capacity() - heads.len() < 64 + conn.matched.len() * 8 {
                heads.reserve(64 * 1024);
            }
            fovea_codec::encode_deliver_head(&conn.matched, tail.len(), heads);
            conn.data_tx.push(heads.split().freeze());
            conn.data_tx.push(tail.clone());
            delivered += 1;
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(r);
            }
        }
        if delivered > 0 {
            ShardMetrics::add(&metrics.deliveries, delivered);
            metrics
                .observe_latency_us(now.saturating_duration_since(published_at).as_micros() as u64);
        }
    }

    /// Applies fan-out messages from other shards.
    pub(super) fn handle_fanout_message(&mut self, now: Instant, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver { realm, topic, tail, published_at } => {
                self.deliver_local(now, &realm, &topic, &tail, published_at);
            }
            ShardMsg::InterestAdd { realm, pattern, from, ack } => {
                let state = self.fanout.realms.entry(realm).or_default();
                *state.interest.entry(&pattern) |= 1u64 << from;
                self.outbox[from].push(ShardMsg::InterestAck { ack });
            }
            ShardMsg::InterestRemove { realm, pattern, from } => {
                if let Some(state) = self.fanout.realms.get_mut(&realm) {
                    state.interest.remove_with(&pattern, |mask| {
                        *mask &= !(1u64 << from);
                        *mask == 0
                    });
                }
            }
            ShardMsg::InterestAck { ack } => {
                let Some(p) = self.fanout.pending_ok.get_mut(&ack) else { return };
                p.remaining -= 1;
                if p.remaining == 0 {
                    let p = self.fanout.pending_ok.remove(&ack).expect("present");
                    self.send_ok(p.conn, p.request_id);
                }
            }
            _ => {
                unreachable!("routed by handle_message")
            }
        }
    }

    /// Nothing is deferred across turns today; kept as the hook the flush calls first.
    pub(super) fn fanout_flush_pending(&mut self, _now: Instant) {}
}
