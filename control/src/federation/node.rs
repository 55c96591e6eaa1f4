//! [`Federation`]: one node's federation state machine, what the control-thread driver owns.
//!
//! Inputs: frames from federation links ([`on_frame`](Federation::on_frame)), SWIM datagrams
//! ([`on_swim`](Federation::on_swim)), this node's own subscription and registration changes
//! ([`local_change`](Federation::local_change)), publishes and calls the shards could not
//! serve locally ([`publish`](Federation::publish), [`call`](Federation::call)), answers of
//! local providers to forwarded calls ([`reply_forwarded`](Federation::reply_forwarded)), and
//! time ([`tick`](Federation::tick)). Outputs are drained with
//! [`drain_outputs`](Federation::drain_outputs): frames and SWIM datagrams to send, publishes
//! and calls to hand to the shards, and [`IndexChange`]s, the deltas of the read-mostly
//! snapshot the shards keep of "which realms/patterns/procedures have a remote bootstrap".

use bytes::Bytes;
use fovea_codec::frame::{
    Announce, DeltaEntry, ForwardCall, ForwardPublish, ForwardReply, SyncDelta, SyncDigest,
};
use fovea_codec::{ErrorCode, Frame, Name, Pattern, Realm, Topic};

use super::calls::{choose_provider, CallTable, CallWaiter, PendingCall};
use super::error::{CallRefused, FederationError};
use super::forward::{publish_targets, DedupWindow, PublishSource};
use super::hlc::Hlc;
use super::membership::{FedIdentity, MemberView, Membership, MembershipEvent};
use super::metrics::FederationMetrics;
use super::replica::{EntryKey, Kind, LiveChange, NodeId, Op, Replica, ReplicaConfig};
use super::FederationConfig;
use crate::registry::{DiscoveryCache, InterestIndex, Lookup, ProviderIndex};

/// A change of the data plane's federation snapshot: a (realm, pattern) or (realm, procedure)
/// gained its first remote bootstrap or lost its last one. Shards keep a bit per pattern and
/// send a publish (or a call without a local provider) to the control thread only when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexChange {
    /// Remote subscribers for `pattern`.
    Interest {
        /// Realm.
        realm: Realm,
        /// Pattern.
        pattern: Pattern,
        /// True: some remote bootstrap now has subscribers; false: none has any more.
        remote: bool,
    },
    /// Remote providers of `procedure`.
    Provider {
        /// Realm.
        realm: Realm,
        /// Procedure name (as stored: a valid pattern).
        procedure: Pattern,
        /// True: some remote bootstrap now has a provider; false: none has any more.
        remote: bool,
    },
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `frame` on the federation link to `to`.
    Frame {
        /// Destination node.
        to: NodeId,
        /// ANNOUNCE, SYNC_DIGEST, SYNC_DELTA, FORWARD_PUBLISH, FORWARD_CALL or FORWARD_REPLY.
        frame: Frame,
    },
    /// Send a SWIM datagram to a member.
    Swim {
        /// The member.
        to: FedIdentity,
        /// foca's bytes.
        datagram: Bytes,
    },
    /// Deliver a forwarded publish to this node's subscribers.
    Deliver(ForwardPublish),
    /// Invoke a local provider for a forwarded call; answer with
    /// [`Federation::reply_forwarded`]`(from, call.forward_id, ..)`.
    Invoke {
        /// The link the call came from.
        from: NodeId,
        /// The call.
        call: ForwardCall,
    },
    /// The answer to a call this node forwarded for one of its callers.
    CallDone {
        /// The driver's handle given to [`Federation::call`].
        call_ref: u64,
        /// The caller.
        caller: NodeId,
        /// 0: success, else an error code.
        code: u64,
        /// Reply, or a UTF-8 error message.
        payload: Bytes,
    },
    /// The shards' federation snapshot changed.
    Index(IndexChange),
    /// A federation member came up.
    MemberUp(FedIdentity),
    /// A federation member was declared down (its entries are gone already).
    MemberDown(FedIdentity),
}

/// A call to forward to a remote provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    /// The driver's handle for the waiting caller (returned in [`Output::CallDone`]).
    pub call_ref: u64,
    /// The caller's peer id.
    pub caller: NodeId,
    /// Realm.
    pub realm: Realm,
    /// Procedure.
    pub procedure: Name,
    /// Time left, ms.
    pub timeout_ms: u64,
    /// Safe to retry.
    pub idempotent: bool,
    /// Arguments.
    pub payload: Bytes,
}

/// One node's federation: replica, indexes, forwarding, calls and membership.
#[derive(Debug)]
pub struct Federation {
    config: FederationConfig,
    replica: Replica,
    interests: InterestIndex,
    providers: ProviderIndex,
    cache: DiscoveryCache,
    dedup: DedupWindow,
    calls: CallTable,
    membership: Membership,
    metrics: FederationMetrics,
    outputs: Vec<Output>,
    pending_push: Vec<DeltaEntry>,
    region: Bytes,
    load: (u64, u64),
    rotation: u64,
    next_request_id: u64,
    last_sync_ms: Option<u64>,
    last_announce_ms: Option<u64>,
    scratch: Vec<NodeId>,
    targets: Vec<NodeId>,
    live: Vec<LiveChange>,
}

impl Federation {
    /// A federation node. `swim` is foca's configuration
    /// ([`wan_config`](super::membership::wan_config) is a start), `seed` seeds its member
    /// choice.
    pub fn new(
        identity: FedIdentity,
        region: Bytes,
        config: FederationConfig,
        swim: foca::Config,
        seed: u64,
    ) -> Federation {
        let replica = Replica::new(
            identity.id,
            Hlc::new(config.max_clock_offset_ms),
            ReplicaConfig {
                tombstone_ttl_ms: config.tombstone_ttl_ms,
                origin_ttl_ms: config.origin_ttl_ms,
            },
        );
        Federation {
            replica,
            interests: InterestIndex::new(),
            providers: ProviderIndex::new(),
            cache: DiscoveryCache::new(config.cache_entries, config.cache_ttl_ms),
            dedup: DedupWindow::new(config.dedup_entries, config.dedup_window_ms),
            calls: CallTable::new(config.max_forwarded_calls),
            membership: Membership::new(identity, swim, seed),
            metrics: FederationMetrics::default(),
            outputs: Vec::new(),
            pending_push: Vec::new(),
            region,
            load: (0, 0),
            rotation: 0,
            next_request_id: 1,
            last_sync_ms: None,
            last_announce_ms: None,
            scratch: Vec::new(),
            targets: Vec::new(),
            live: Vec::new(),
            config,
        }
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.replica.self_id()
    }

    /// Asks a configured federation peer to let us into the cluster.
    pub fn join(&mut self, seed: FedIdentity, now_ms: u64) {
        self.membership.join(seed, now_ms, &mut self.metrics);
        self.pump_membership(now_ms);
    }

    /// Our connected peers and `max_peers`, for ANNOUNCE.
    pub fn set_load(&mut self, load: u64, capacity: u64) {
        self.load = (load, capacity);
    }

    /// This node's subscribers for `name` (interest) or providers of it (registration)
    /// appeared (`Op::Add`) or are all gone (`Op::Remove`). Pushed to reachable members on
    /// the next [`tick`](Self::tick) or [`flush`](Self::flush); anti-entropy repairs whatever
    /// a push misses.
    pub fn local_change(&mut self, kind: Kind, op: Op, realm: Realm, name: Pattern, now_ms: u64) {
        let key = EntryKey { kind, realm, name };
        let change = self.replica.local_change(key, op, now_ms, &mut self.live);
        self.live.clear(); // our own entries are not remote interest
        self.pending_push.push(change);
    }

    /// Sends the pushed changes gathered since the last flush.
    pub fn flush(&mut self) {
        if self.pending_push.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.pending_push);
        let peers = self.reachable_peers();
        for chunk in changes.chunks(self.config.max_sync_entries.max(1)) {
            for peer in &peers {
                let delta = SyncDelta { request_id: 0, origin: self.id(), entries: chunk.to_vec() };
                self.metrics.sync_deltas_sent += 1;
                self.metrics.sync_changes_sent += chunk.len() as u64;
                self.outputs.push(Output::Frame { to: *peer, frame: Frame::SyncDelta(delta) });
            }
        }
    }

    /// A publish of a local peer that matched remote interest: forwards it once to each
    /// reachable bootstrap with matching subscribers. Returns how many got it.
    pub fn publish(&mut self, realm: &Realm, topic: &Topic, payload: Bytes, now_ms: u64) -> usize {
        // Our HLC as the message id: unique per node and increasing across restarts, so a
        // restarted node does not reuse ids that receivers still remember.
        let message_id = self.replica.clock_mut().now(now_ms);
        let frame = ForwardPublish {
            origin: self.id(),
            hops: 0,
            flags: 0,
            message_id,
            realm: realm.clone(),
            topic: topic.clone(),
            payload,
        };
        self.dedup.first_sight(frame.origin, message_id, now_ms);
        self.forward_publish(frame, PublishSource::Local, now_ms)
    }

    fn forward_publish(
        &mut self,
        mut frame: ForwardPublish,
        source: PublishSource,
        now_ms: u64,
    ) -> usize {
        self.lookup_subscribers(&frame.realm, &frame.topic, now_ms);
        let mut targets = std::mem::take(&mut self.targets);
        let membership = &self.membership;
        let self_id = self.replica.self_id();
        let hops = publish_targets(
            &self_id,
            &self.scratch,
            source,
            self.config.max_hops,
            |p| membership.is_reachable(p),
            &mut targets,
        );
        let Some(hops) = hops else {
            self.metrics.hop_limit_drops += 1;
            self.targets = targets;
            return 0;
        };
        frame.hops = hops;
        for peer in &targets {
            self.outputs
                .push(Output::Frame { to: *peer, frame: Frame::ForwardPublish(frame.clone()) });
        }
        let n = targets.len();
        self.metrics.forwarded_publishes += n as u64;
        self.targets = targets;
        n
    }

    /// Fills `self.scratch` with the bootstraps whose interests match, through the cache.
    fn lookup_subscribers(&mut self, realm: &Realm, topic: &Topic, now_ms: u64) {
        let key = topic.as_bytes();
        if let Some(hit) = self.cache.get(Lookup::Subscribers, realm, key, now_ms) {
            self.scratch.clear();
            self.scratch.extend_from_slice(hit);
            return;
        }
        self.interests.origins_for(realm, topic, &mut self.scratch);
        self.cache.put(Lookup::Subscribers, realm, topic.as_inner().clone(), &self.scratch, now_ms);
    }

    /// A call of a local peer with no local provider: forwards it to a remote bootstrap with a
    /// provider. The answer comes as [`Output::CallDone`] with `call_ref`.
    pub fn call(&mut self, request: CallRequest, now_ms: u64) -> Result<NodeId, CallRefused> {
        if self.config.max_hops == 0 {
            self.metrics.hop_limit_drops += 1;
            return Err(CallRefused::TooManyHops);
        }
        let self_id = self.id();
        let Some(to) = self.pick_provider(&request.realm, &request.procedure, &[self_id], now_ms)
        else {
            self.metrics.calls_without_provider += 1;
            return Err(CallRefused::NoProvider);
        };
        let pending = PendingCall {
            waiter: CallWaiter::Local { call_ref: request.call_ref },
            caller: request.caller,
            sent_to: to,
            deadline_ms: now_ms.saturating_add(request.timeout_ms),
        };
        let Ok(forward_id) = self.calls.insert(pending) else {
            self.metrics.calls_table_full += 1;
            return Err(CallRefused::TooManyCalls);
        };
        let frame = ForwardCall {
            origin: self_id,
            hops: 1,
            flags: u8::from(request.idempotent),
            forward_id,
            timeout_ms: request.timeout_ms,
            caller: request.caller,
            realm: request.realm,
            procedure: request.procedure,
            payload: request.payload,
        };
        self.metrics.forwarded_calls += 1;
        self.outputs.push(Output::Frame { to, frame: Frame::ForwardCall(frame) });
        Ok(to)
    }

    fn pick_provider(
        &mut self,
        realm: &Realm,
        procedure: &Name,
        exclude: &[NodeId],
        now_ms: u64,
    ) -> Option<NodeId> {
        let key = procedure.as_bytes();
        let candidates: Vec<NodeId> = match self.cache.get(Lookup::Providers, realm, key, now_ms) {
            Some(hit) => hit.to_vec(),
            None => {
                let found = self.providers.origins(realm, key).to_vec();
                self.cache.put(
                    Lookup::Providers,
                    realm,
                    procedure.as_inner().clone(),
                    &found,
                    now_ms,
                );
                found
            }
        };
        let membership = &self.membership;
        choose_provider(
            &candidates,
            exclude,
            |n| membership.is_reachable(n),
            |n| membership.announce_of(n).map(|a| (a.load, a.capacity)),
            &mut self.rotation,
        )
    }

    /// A local provider's answer to a forwarded call ([`Output::Invoke`]).
    pub fn reply_forwarded(&mut self, to: NodeId, forward_id: u64, code: u64, payload: Bytes) {
        let frame = Frame::ForwardReply(ForwardReply { forward_id, code, payload });
        self.outputs.push(Output::Frame { to, frame });
    }

    fn refuse_forwarded(&mut self, to: NodeId, forward_id: u64, code: ErrorCode) {
        let message = Bytes::from_static(code.name().as_bytes());
        self.reply_forwarded(to, forward_id, code as u64, message);
    }

    /// A federation frame arrived on the link to `from`.
    pub fn on_frame(
        &mut self,
        from: NodeId,
        frame: &Frame,
        now_ms: u64,
    ) -> Result<(), FederationError> {
        self.membership.seen(from, now_ms);
        match frame {
            Frame::Announce(a) => self.on_announce(a, now_ms),
            Frame::SyncDigest(d) => self.on_digest(from, d, now_ms),
            Frame::SyncDelta(d) => self.on_delta(d, now_ms),
            Frame::ForwardPublish(p) => self.on_forward_publish(from, p, now_ms),
            Frame::ForwardCall(c) => self.on_forward_call(from, c, now_ms),
            Frame::ForwardReply(r) => self.on_forward_reply(from, r),
            other => return Err(FederationError::NotFederationFrame(other.frame_type())),
        }
        Ok(())
    }

    fn on_announce(&mut self, a: &Announce, now_ms: u64) {
        if self.replica.clock_mut().check(a.hlc, now_ms).is_err() {
            self.metrics.rejected_clock_offsets += 1;
            return;
        }
        if self.membership.on_announce(a, now_ms) {
            self.metrics.announces_applied += 1;
            self.replica.revive(a.node_id);
            self.replica.refresh(a.node_id, now_ms);
        }
    }

    fn on_digest(&mut self, from: NodeId, digest: &SyncDigest, now_ms: u64) {
        // A digest split over frames fills all but the last; only an unfilled one is the whole.
        let complete = digest.origins.len() < self.config.max_sync_entries;
        let deltas = self.replica.deltas_for(
            digest,
            complete,
            self.config.max_sync_entries,
            now_ms,
            &mut self.metrics,
        );
        for delta in deltas {
            self.outputs.push(Output::Frame { to: from, frame: Frame::SyncDelta(delta) });
        }
    }

    fn on_delta(&mut self, delta: &SyncDelta, now_ms: u64) {
        self.replica.apply_delta(delta, now_ms, &mut self.metrics, &mut self.live);
        if delta.origin == self.id() {
            // Corrections of our own entries go back out like local changes.
            self.queue_own_corrections(delta);
        }
        self.apply_live_changes();
    }

    fn queue_own_corrections(&mut self, delta: &SyncDelta) {
        for change in &delta.entries {
            let (Some(kind), Some(_)) = (Kind::from_wire(change.kind), Op::from_wire(change.op))
            else {
                continue;
            };
            let key = EntryKey { kind, realm: change.realm.clone(), name: change.name.clone() };
            if let Some(held) = self.replica.get(&self.id(), &key) {
                if held.hlc > change.hlc {
                    self.pending_push.push(super::replica::delta_entry(&key, held));
                }
            }
        }
    }

    fn apply_live_changes(&mut self) {
        let self_id = self.id();
        for change in std::mem::take(&mut self.live) {
            if change.origin == self_id {
                continue;
            }
            let LiveChange { origin, key, live } = change;
            match key.kind {
                Kind::Interest => {
                    let flipped = if live {
                        self.interests.add(&key.realm, &key.name, origin)
                    } else {
                        self.interests.remove(&key.realm, &key.name, &origin)
                    };
                    self.cache.invalidate(Lookup::Subscribers, &key.realm);
                    if flipped {
                        self.outputs.push(Output::Index(IndexChange::Interest {
                            realm: key.realm,
                            pattern: key.name,
                            remote: live,
                        }));
                    }
                }
                Kind::Registration => {
                    let name = key.name.as_inner();
                    let flipped = if live {
                        self.providers.add(&key.realm, name, origin)
                    } else {
                        self.providers.remove(&key.realm, name, &origin)
                    };
                    self.cache.invalidate(Lookup::Providers, &key.realm);
                    if flipped {
                        self.outputs.push(Output::Index(IndexChange::Provider {
                            realm: key.realm,
                            procedure: key.name,
                            remote: live,
                        }));
                    }
                }
            }
        }
    }

    fn on_forward_publish(&mut self, from: NodeId, p: &ForwardPublish, now_ms: u64) {
        if p.origin == self.id() || !self.dedup.first_sight(p.origin, p.message_id, now_ms) {
            self.metrics.suppressed_duplicates += 1;
            return;
        }
        if p.hops > self.config.max_hops {
            self.metrics.hop_limit_drops += 1;
            return;
        }
        self.metrics.received_publishes += 1;
        self.outputs.push(Output::Deliver(p.clone()));
        if self.config.relay {
            let source = PublishSource::Forwarded { origin: p.origin, from, hops: p.hops };
            self.forward_publish(p.clone(), source, now_ms);
        }
    }

    fn on_forward_call(&mut self, from: NodeId, c: &ForwardCall, now_ms: u64) {
        let local = Pattern::new(c.procedure.as_inner().clone()).ok().is_some_and(|name| {
            let key = EntryKey { kind: Kind::Registration, realm: c.realm.clone(), name };
            self.replica.get(&self.id(), &key).is_some_and(|e| e.op == Op::Add)
        });
        if local {
            self.outputs.push(Output::Invoke { from, call: c.clone() });
            return;
        }
        if c.hops >= self.config.max_hops {
            self.metrics.hop_limit_drops += 1;
            self.refuse_forwarded(from, c.forward_id, ErrorCode::TooManyHops);
            return;
        }
        let exclude = [self.id(), c.origin, from];
        let Some(to) = self.pick_provider(&c.realm, &c.procedure, &exclude, now_ms) else {
            self.metrics.calls_without_provider += 1;
            self.refuse_forwarded(from, c.forward_id, ErrorCode::NoProvider);
            return;
        };
        let pending = PendingCall {
            waiter: CallWaiter::Link { from, forward_id: c.forward_id },
            caller: c.caller,
            sent_to: to,
            deadline_ms: now_ms.saturating_add(c.timeout_ms),
        };
        let Ok(forward_id) = self.calls.insert(pending) else {
            self.metrics.calls_table_full += 1;
            self.refuse_forwarded(from, c.forward_id, ErrorCode::TooManyCalls);
            return;
        };
        let frame = ForwardCall { hops: c.hops + 1, forward_id, ..c.clone() };
        self.metrics.forwarded_calls += 1;
        self.outputs.push(Output::Frame { to, frame: Frame::ForwardCall(frame) });
    }

    fn on_forward_reply(&mut self, from: NodeId, r: &ForwardReply) {
        let Some(call) = self.calls.take_reply(r.forward_id, &from) else {
            self.metrics.replies_unknown += 1;
            return;
        };
        self.metrics.replies_routed += 1;
        self.answer(call, r.code, r.payload.clone());
    }

    fn answer(&mut self, call: PendingCall, code: u64, payload: Bytes) {
        match call.waiter {
            CallWaiter::Local { call_ref } => {
                self.outputs.push(Output::CallDone {
                    call_ref,
                    caller: call.caller,
                    code,
                    payload,
                });
            }
            CallWaiter::Link { from, forward_id } => {
                self.reply_forwarded(from, forward_id, code, payload);
            }
        }
    }

    /// A SWIM datagram arrived.
    pub fn on_swim(&mut self, datagram: &[u8], now_ms: u64) {
        self.membership.handle_datagram(datagram, now_ms, &mut self.metrics);
        self.pump_membership(now_ms);
    }

    fn pump_membership(&mut self, now_ms: u64) {
        let mut events = Vec::new();
        self.membership.drain_events(&mut events);
        for event in events {
            match event {
                MembershipEvent::Send { to, datagram } => {
                    self.outputs.push(Output::Swim { to, datagram });
                }
                MembershipEvent::Up(m) => {
                    self.replica.revive(m.id);
                    self.replica.refresh(m.id, now_ms);
                    self.cache.clear();
                    self.outputs.push(Output::MemberUp(m));
                }
                MembershipEvent::Down(m) => self.member_down(m, now_ms),
                MembershipEvent::Renamed { new, .. } => {
                    self.replica.revive(new.id);
                    self.cache.clear();
                }
                MembershipEvent::Rejoined(_) => self.cache.clear(),
                MembershipEvent::Idle => {}
            }
        }
    }

    fn member_down(&mut self, m: FedIdentity, now_ms: u64) {
        if self.replica.expire_origin(m.id, now_ms, &mut self.live) > 0 {
            self.metrics.origins_expired += 1;
        }
        self.apply_live_changes();
        self.cache.clear();
        let mut orphans = Vec::new();
        self.calls.fail_sent_to(&m.id, &mut orphans);
        for (_, call) in orphans {
            let code = ErrorCode::ProviderGone;
            self.answer(call, code as u64, Bytes::from_static(code.name().as_bytes()));
        }
        self.outputs.push(Output::MemberDown(m));
    }

    /// Time passes: SWIM timers, expiry of tombstones, origins and calls, pushes, and the
    /// periodic digest and ANNOUNCE to every reachable member.
    pub fn tick(&mut self, now_ms: u64) {
        self.membership.advance(now_ms, &mut self.metrics);
        self.pump_membership(now_ms);
        let alive: Vec<NodeId> = self.membership.active().map(|m| m.id).collect();
        for id in alive {
            self.replica.refresh(id, now_ms);
        }
        self.replica.tick(now_ms, &mut self.metrics, &mut self.live);
        self.apply_live_changes();
        let mut expired = Vec::new();
        self.calls.expire(now_ms, &mut expired);
        for (_, call) in expired {
            self.metrics.calls_timed_out += 1;
            let code = ErrorCode::DeadlineExceeded;
            self.answer(call, code as u64, Bytes::from_static(code.name().as_bytes()));
        }
        self.flush();
        if due(self.last_announce_ms, self.config.announce_interval_ms, now_ms) {
            self.last_announce_ms = Some(now_ms);
            self.announce_all(now_ms);
        }
        if due(self.last_sync_ms, self.config.sync_interval_ms, now_ms) {
            self.last_sync_ms = Some(now_ms);
            self.sync_all(now_ms);
        }
    }

    /// Sends our digest to every reachable member now (a tick does it every
    /// `sync_interval_ms`).
    pub fn sync_all(&mut self, now_ms: u64) {
        let peers = self.reachable_peers();
        if peers.is_empty() {
            return;
        }
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let digests = self.replica.digest(
            request_id,
            self.config.max_sync_entries,
            now_ms,
            &mut self.metrics,
        );
        for peer in peers {
            for d in &digests {
                self.metrics.sync_digests_sent += 1;
                self.outputs.push(Output::Frame { to: peer, frame: Frame::SyncDigest(d.clone()) });
            }
        }
    }

    fn announce_all(&mut self, now_ms: u64) {
        let announce = Announce {
            node_id: self.id(),
            endpoint: self.membership.identity().endpoint,
            region: self.region.clone(),
            load: self.load.0,
            capacity: self.load.1,
            hlc: self.replica.clock_mut().now(now_ms),
        };
        for peer in self.reachable_peers() {
            self.outputs.push(Output::Frame { to: peer, frame: Frame::Announce(announce.clone()) });
        }
    }

    fn reachable_peers(&self) -> Vec<NodeId> {
        let me = self.id();
        self.membership.active().map(|m| m.id).filter(|id| *id != me).collect()
    }

    /// When [`tick`](Self::tick) next has work (SWIM timer, call deadline, sync or announce).
    pub fn next_wakeup_ms(&self) -> Option<u64> {
        let periodic = [
            self.last_sync_ms.map(|t| t + self.config.sync_interval_ms),
            self.last_announce_ms.map(|t| t + self.config.announce_interval_ms),
        ];
        [self.membership.next_timer_ms(), self.calls.next_deadline_ms()]
            .into_iter()
            .chain(periodic)
            .flatten()
            .min()
    }

    /// Moves everything produced since the last call into `out`.
    pub fn drain_outputs(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.outputs);
    }

    /// Counters (gauges included).
    pub fn metrics(&self) -> FederationMetrics {
        self.metrics
    }

    /// The operator view of the members.
    pub fn members(&self) -> Vec<MemberView> {
        self.membership.members()
    }

    /// The replicated state.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Remote interests.
    pub fn interests(&self) -> &InterestIndex {
        &self.interests
    }

    /// Remote providers.
    pub fn providers(&self) -> &ProviderIndex {
        &self.providers
    }

    /// The discovery cache (hit counts).
    pub fn cache(&self) -> &DiscoveryCache {
        &self.cache
    }

    /// Membership.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Forwarded calls in flight.
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }
}

fn due(last: Option<u64>, interval_ms: u64, now_ms: u64) -> bool {
    last.is_none_or(|t| now_ms >= t.saturating_add(interval_ms))
}
