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

use bytes::Bytes;
use fovea_codec::{ErrorCode, Pattern, Realm, Topic};
use fovea_trie::PatternTrie;

use super::{Conn, ConnRef, Shard, ShardMsg};
use crate::control::ControlMsg;
use crate::metrics::ShardMetrics;
use fovea_control::federation::{Kind, Op};
use fovea_fanout::{FanoutPlanner, PlanLimits, Recipient, Recipients};

type SubLeaf = fovea_fanout::SubLeaf<ConnRef>;

/// Bit of the interest mask that means "some other bootstrap has subscribers" (set by the
/// control thread's `RemoteInterest`; shards are at most 63 when the node federates). The
/// publish path tests it with the same mask it already computes, so a node without
/// federation pays one AND per publish.
const FED_BIT: u64 = 1 << 63;

/// Where one publish goes on this node: other shards (mask) and this shard's subscribers;
/// and when it entered the node (latency histogram).
#[derive(Clone, Copy)]
struct Targets {
    shards: u64,
    local: bool,
    published_at: Instant,
}

/// The shard's connection slots as the planner sees them: only connections that still take
/// deliveries (not closing, no GOODBYE sent).
struct OpenSlots<'a>(&'a mut [super::Slot]);

impl Recipients<ConnRef> for OpenSlots<'_> {
    #[inline]
    fn recipient(&mut self, r: ConnRef) -> Option<&mut Recipient> {
        let conn = self.0.get_mut(r.slot as usize)?.conn.as_deref_mut()?;
        if conn.close_with.is_some() || conn.goodbye_sent || conn.phase == super::Phase::Closing {
            return None;
        }
        Some(&mut conn.out)
    }
}

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
    planner: FanoutPlanner<ConnRef>,
    disconnect: Vec<ConnRef>,
    pending_ok: ahash::AHashMap<u64, PendingOk>,
    next_ack: u64,
    subscriptions: u64,
}

impl Fanout {
    pub(super) fn new(_shards: usize) -> Fanout {
        Fanout {
            realms: ahash::AHashMap::new(),
            planner: FanoutPlanner::default(),
            disconnect: Vec::new(),
            pending_ok: ahash::AHashMap::new(),
            next_ack: 1,
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
        // Kept for the subscription's life (and sent to other shards): its own allocation, not
        // a slice of the receive buffer.
        let pattern = pattern.detach();
        conn.subs.insert(sub_id, pattern.clone());
        let state = self.fanout.realms.entry(realm.clone()).or_default();
        let leaf = state.subs.entry(&pattern);
        let first_here = leaf.is_empty();
        leaf.push((r, sub_id));
        self.fanout.subscriptions += 1;
        ShardMetrics::set(&self.ctx.metrics.subscriptions, self.fanout.subscriptions);
        if first_here {
            self.report_local(Kind::Interest, Op::Add, &realm, &pattern);
        }
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
            self.report_local(Kind::Interest, Op::Remove, realm, pattern);
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
        let local = !state.subs.is_empty();
        if remote & FED_BIT != 0 {
            // Other bootstraps have subscribers: one message to the control thread, which
            // forwards once per interested bootstrap.
            remote &= !FED_BIT;
            let payload = Bytes::copy_from_slice(payload);
            let msg = ControlMsg::Publish { realm: realm.clone(), topic: topic.clone(), payload };
            self.to_control(msg);
        }
        let targets = Targets { shards: remote, local, published_at: now };
        self.fan_out(now, realm, topic, message_id, payload, targets);
    }

    /// A publish that another bootstrap forwarded: this node's subscribers only.
    fn publish_forwarded(
        &mut self,
        now: Instant,
        realm: &Realm,
        topic: &Topic,
        payload: &[u8],
        at: Instant,
    ) {
        let Some(state) = self.fanout.realms.get(realm) else { return };
        let mut remote = 0u64;
        state.interest.for_each_match(topic, |mask| remote |= *mask);
        let local = !state.subs.is_empty();
        let targets = Targets { shards: remote & !FED_BIT, local, published_at: at };
        self.fan_out(now, realm, topic, None, payload, targets);
    }

    /// Encodes the DELIVER tail once; one `Deliver` per interested shard, then local delivery.
    fn fan_out(
        &mut self,
        now: Instant,
        realm: &Realm,
        topic: &Topic,
        message_id: Option<u64>,
        payload: &[u8],
        targets: Targets,
    ) {
        let Targets { shards: mut remote, local, published_at } = targets;
        if remote == 0 && !local {
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
                published_at,
            });
        }
        if local {
            self.deliver_local(now, realm, topic, &tail, published_at);
        }
    }

    /// This shard's first subscriber (provider) of `name` appeared, or its last left: the
    /// control thread counts shards and tells the federation about the node's 0 ↔ 1.
    pub(super) fn report_local(&self, kind: Kind, op: Op, realm: &Realm, name: &Pattern) {
        if self.control.is_some() {
            let shard = self.ctx.index;
            let (realm, name) = (realm.clone(), name.clone());
            self.to_control(ControlMsg::LocalChange { kind, op, realm, name, shard });
        }
    }

    /// Matches `topic` against this shard's subscribers and queues one DELIVER per matching
    /// connection, listing all of that connection's matching subscription ids (`plan.rs`).
    fn deliver_local(
        &mut self,
        now: Instant,
        realm: &Realm,
        topic: &Topic,
        tail: &Bytes,
        published_at: Instant,
    ) {
        let Some(state) = self.fanout.realms.get(realm) else { return };
        let limits = PlanLimits {
            send_budget_bytes: self.ctx.limits.send_budget_bytes,
            slow_consumer: self.ctx.limits.slow_consumer,
        };
        let disconnect = &mut self.fanout.disconnect;
        disconnect.clear();
        let outcome = self.fanout.planner.plan(
            &state.subs,
            topic,
            tail,
            &mut OpenSlots(&mut self.slots),
            limits,
            &mut self.dirty,
            disconnect,
        );
        let metrics = &self.ctx.metrics;
        if outcome.dropped > 0 {
            ShardMetrics::add(&metrics.drops_slow_consumer, outcome.dropped);
        }
        if outcome.delivered > 0 {
            ShardMetrics::add(&metrics.deliveries, outcome.delivered);
            metrics
                .observe_latency_us(now.saturating_duration_since(published_at).as_micros() as u64);
        }
        for i in 0..self.fanout.disconnect.len() {
            let r = self.fanout.disconnect[i];
            if let Some(conn) = self.conn_mut(r) {
                conn.close_with = Some((ErrorCode::SlowConsumer as u64, "send budget exceeded"));
            }
            ShardMetrics::inc(&self.ctx.metrics.slow_consumer_disconnects);
            self.mark_dirty(r);
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
            ShardMsg::FederatedPublish { realm, topic, payload, published_at } => {
                self.publish_forwarded(now, &realm, &topic, &payload, published_at);
            }
            ShardMsg::RemoteInterest { realm, pattern, remote: true } => {
                *self.fanout.realms.entry(realm).or_default().interest.entry(&pattern) |= FED_BIT;
            }
            ShardMsg::RemoteInterest { realm, pattern, remote: false } => {
                if let Some(state) = self.fanout.realms.get_mut(&realm) {
                    state.interest.remove_with(&pattern, |mask| {
                        *mask &= !FED_BIT;
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
