//! RPC and direct messages through the node (docs/decisions/0003-rpc-routing.md).
//!
//! Every shard keeps a replica of the provider registry (realm, procedure) → ring of (shard,
//! peer), updated by broadcast `ProviderAdd`/`ProviderRemove` messages, so choosing a provider
//! is a local O(1) cursor step. A call's state lives on the caller's shard (deadline, duplicate
//! id, in-flight limit, idempotent retry); the provider's shard only maps its invocation id back
//! to the caller, in the provider's connection, until the answer or the deadline. Replies find
//! the caller's shard by hashing its peer id.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fovea_codec::frame::{self, Frame};
use fovea_codec::{ErrorCode, Name, Realm};
use smallvec::SmallVec;

use super::conn::Phase;
use super::retain::detach_small;
use super::session::owner_shard;
use super::{ConnRef, Shard, ShardMsg};
use crate::config::ProviderSelection;
use crate::control::ControlMsg;
use crate::metrics::ShardMetrics;
use fovea_codec::Pattern;
use fovea_control::federation::{Kind, Op};

type PeerId = [u8; 32];

/// The "shard" of a call's provider when the provider is on another bootstrap: the control
/// thread forwards it and the answer comes back as a `CallResult` like any other.
const FEDERATION: usize = usize::MAX;

/// Providers of one procedure, in registration order, with this shard's round-robin cursor;
/// those on this shard also in a ring of their own, for local-first selection.
#[derive(Default)]
struct Ring {
    members: Vec<(usize, PeerId)>,
    cursor: usize,
    local: Vec<PeerId>,
    local_cursor: usize,
}

impl Ring {
    /// The next member of `ring` from `cursor` on that `ok` accepts, advancing the cursor past
    /// it: O(1) unless members are excluded.
    fn step<T: Copy>(
        ring: &[T],
        cursor: &mut usize,
        start: usize,
        ok: impl Fn(&T) -> bool,
    ) -> Option<T> {
        let n = ring.len();
        for k in 0..n {
            let m = ring[(start + k) % n];
            if ok(&m) {
                *cursor = (start + k + 1) % n;
                return Some(m);
            }
        }
        None
    }
}

/// A call in flight, kept on the caller's shard.
struct CallState {
    deadline: Instant,
    realm: Realm,
    procedure: Name,
    payload: Bytes,
    idempotent: bool,
    provider: (usize, PeerId),
    tried: SmallVec<[(usize, PeerId); 2]>,
}

/// An invocation in flight, kept in the provider's connection (so that only that peer can
/// answer it and a disconnect finds its invocations without a scan).
pub struct Invocation {
    caller: PeerId,
    call_id: u64,
    /// Forwarded by this node (the answer goes back through the control thread; `call_id`
    /// is its forward id).
    link: Option<PeerId>,
    /// The caller's deadline as this shard sees it; the invocation is forgotten then.
    expires: Instant,
}

/// Outcome of a call, carried back to the caller's shard.
pub enum CallOutcome {
    /// REPLY payload.
    Reply(Bytes),
    /// CALL_ERROR code and message.
    Error(u64, Bytes),
    /// The provider disconnected before answering (the caller's shard retries an idempotent
    /// call).
    ProviderGone,
    /// The provider was gone before the INVOKE reached it, so the call was never executed: the
    /// caller's shard retries it on another provider whether or not it is idempotent.
    Undelivered,
}

/// RPC state of one shard.
#[derive(Default)]
pub(super) struct Rpc {
    rings: ahash::AHashMap<(Realm, Name), Ring>,
    calls: ahash::AHashMap<(PeerId, u64), CallState>,
    inflight_per_caller: ahash::AHashMap<PeerId, usize>,
    /// Deadlines of the calls in flight, earliest first. An ordered set rather than a heap so
    /// that an answered call leaves it at once: a heap with lazy deletion kept rate × timeout
    /// entries (6 M at 200,000 calls/s with 30 s deadlines), most of them for calls long done.
    deadlines: std::collections::BTreeSet<(Instant, PeerId, u64)>,
    /// When the invocations held by this shard's providers expire: a provider that never
    /// answers must not collect them until it disconnects.
    invocation_expiry: std::collections::BTreeSet<(Instant, ConnRef, u64)>,
    next_invocation: u64,
    /// (realm, procedure) with a provider on another bootstrap (from the control thread).
    remote: ahash::AHashSet<(Realm, Name)>,
}

impl Rpc {
    /// Earliest call deadline or invocation expiry.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let call = self.deadlines.first().map(|(at, _, _)| *at);
        let invocation = self.invocation_expiry.first().map(|(at, _, _)| *at);
        call.into_iter().chain(invocation).min()
    }
}

/// Whether a provider's connection can still receive an INVOKE and answer it: active, and no
/// close begun by either side (the node, the peer, or quiche on an error).
fn answers_invocations(c: &super::conn::Conn) -> bool {
    c.phase == Phase::Active
        && c.close_with.is_none()
        && !c.quic.is_draining()
        && !c.quic.is_closed()
        && c.quic.local_error().is_none()
        && c.quic.peer_error().is_none()
}

fn err(code: ErrorCode, message: &'static str) -> (ErrorCode, &'static str) {
    (code, message)
}

impl Shard {
    fn peer_of(&mut self, r: ConnRef) -> Option<(PeerId, Realm)> {
        let conn = self.conn_mut(r)?;
        Some((conn.peer_id, conn.realm.clone()?))
    }

    /// REGISTER: this peer provides `procedure` in its realm.
    pub(super) fn register(
        &mut self,
        r: ConnRef,
        request_id: u64,
        procedure: Name,
    ) -> Result<bool, (ErrorCode, &'static str)> {
        let max = self.ctx.limits.max_registrations_per_peer;
        let Some((peer, realm)) = self.peer_of(r) else { return Ok(false) };
        let conn = self.conn_mut(r).expect("checked above");
        if conn.registrations.contains(&procedure) {
            return Err(err(
                ErrorCode::AlreadyRegistered,
                "this peer already provides the procedure",
            ));
        }
        if conn.registrations.len() >= max {
            return Err(err(ErrorCode::TooManyRegistrations, "max_registrations_per_peer reached"));
        }
        let procedure = procedure.detach();
        conn.registrations.push(procedure.clone());
        if !self.has_own_provider(&realm, &procedure) {
            self.report_provider(Op::Add, &realm, &procedure);
        }
        self.apply_provider(&realm, &procedure, self.ctx.index, peer, true);
        if self.ctx.shards == 1 {
            return Ok(true);
        }
        let ack = self.expect_acks(r, request_id, self.ctx.shards - 1);
        for dest in (0..self.ctx.shards).filter(|&s| s != self.ctx.index) {
            self.outbox[dest].push(ShardMsg::ProviderAdd {
                realm: realm.clone(),
                procedure: procedure.clone(),
                shard: self.ctx.index,
                peer,
                ack,
            });
        }
        Ok(false)
    }

    /// UNREGISTER. Ok(false): the OK waits until every shard has stopped choosing the provider
    /// (INVOKEs those shards sent before reach the provider ahead of the OK).
    pub(super) fn unregister(
        &mut self,
        r: ConnRef,
        request_id: u64,
        procedure: &Name,
    ) -> Result<bool, (ErrorCode, &'static str)> {
        let Some((peer, realm)) = self.peer_of(r) else { return Ok(false) };
        let conn = self.conn_mut(r).expect("checked above");
        let Some(i) = conn.registrations.iter().position(|p| p == procedure) else {
            return Err(err(
                ErrorCode::UnknownRegistration,
                "this peer does not provide the procedure",
            ));
        };
        conn.registrations.swap_remove(i);
        let others = self.ctx.shards - 1;
        let ack = (others > 0).then(|| self.expect_acks(r, request_id, others));
        self.withdraw_provider(&realm, procedure, peer, ack);
        Ok(ack.is_none())
    }

    fn withdraw_provider(
        &mut self,
        realm: &Realm,
        procedure: &Name,
        peer: PeerId,
        ack: Option<u64>,
    ) {
        self.apply_provider(realm, procedure, self.ctx.index, peer, false);
        if !self.has_own_provider(realm, procedure) {
            self.report_provider(Op::Remove, realm, procedure);
        }
        for dest in (0..self.ctx.shards).filter(|&s| s != self.ctx.index) {
            self.outbox[dest].push(ShardMsg::ProviderRemove {
                realm: realm.clone(),
                procedure: procedure.clone(),
                shard: self.ctx.index,
                peer,
                ack,
            });
        }
    }

    fn apply_provider(
        &mut self,
        realm: &Realm,
        procedure: &Name,
        shard: usize,
        peer: PeerId,
        add: bool,
    ) {
        let key = (realm.clone(), procedure.clone());
        let local = shard == self.ctx.index;
        if add {
            let ring = self.rpc.rings.entry(key).or_default();
            ring.members.push((shard, peer));
            if local {
                ring.local.push(peer);
            }
        } else if let Some(ring) = self.rpc.rings.get_mut(&key) {
            ring.members.retain(|m| *m != (shard, peer));
            if local {
                ring.local.retain(|p| *p != peer);
            }
            if ring.members.is_empty() {
                self.rpc.rings.remove(&key);
            }
        }
    }

    /// True when a peer of this shard provides `procedure`.
    fn has_own_provider(&self, realm: &Realm, procedure: &Name) -> bool {
        self.rpc
            .rings
            .get(&(realm.clone(), procedure.clone()))
            .is_some_and(|ring| !ring.local.is_empty())
    }

    fn report_provider(&self, op: Op, realm: &Realm, procedure: &Name) {
        if self.control.is_none() {
            return;
        }
        // A procedure name is a valid pattern; the federation stores both kinds as patterns.
        if let Ok(name) = Pattern::new(procedure.as_inner().clone()) {
            self.report_local(Kind::Registration, op, realm, &name);
        }
    }

    /// Picks a provider not in `exclude` (the providers an idempotent call already tried): O(1)
    /// for every selection, round robin over this shard's own providers first for local-first.
    /// A provider of this shard whose connection is closing is passed over here, so an INVOKE
    /// on this shard never bounces back into the call that sent it (a bounce would recurse
    /// once per dead provider); one on another shard bounces as `Undelivered` through the inbox.
    fn pick_provider(
        &mut self,
        realm: &Realm,
        procedure: &Name,
        exclude: &[(usize, PeerId)],
    ) -> Option<(usize, PeerId)> {
        let index = self.ctx.index;
        let selection = self.ctx.limits.rpc_selection;
        let (by_peer, slots) = (&self.by_peer, &self.slots);
        let local_live = |p: &PeerId| {
            by_peer.get(p).is_some_and(|r| {
                slots.get(r.slot as usize).is_some_and(|s| {
                    s.generation == r.generation
                        && s.conn.as_deref().is_some_and(answers_invocations)
                })
            })
        };
        let ring = self.rpc.rings.get_mut(&(realm.clone(), procedure.clone()))?;
        if selection == ProviderSelection::LocalFirst && !ring.local.is_empty() {
            let start = ring.local_cursor;
            let ok = |p: &PeerId| !exclude.contains(&(index, *p)) && local_live(p);
            if let Some(p) = Ring::step(&ring.local, &mut ring.local_cursor, start, ok) {
                return Some((index, p));
            }
        }
        let start = match selection {
            ProviderSelection::Random => rand::random::<usize>() % ring.members.len(),
            _ => ring.cursor,
        };
        let ok = |m: &(usize, PeerId)| !exclude.contains(m) && (m.0 != index || local_live(&m.1));
        Ring::step(&ring.members, &mut ring.cursor, start, ok)
    }

    /// CALL from connection `r`.
    pub(super) fn call(&mut self, now: Instant, r: ConnRef, c: frame::Call) {
        let Some((caller, realm)) = self.peer_of(r) else { return };
        let limits = &self.ctx.limits;
        let inflight_max = limits.max_inflight_calls_per_peer;
        let timeout = match c.timeout_ms {
            0 => limits.rpc_default_timeout_ms,
            t => t.min(limits.rpc_max_timeout_ms),
        };
        ShardMetrics::inc(&self.ctx.metrics.rpc_calls);
        if !self.charge_relay(now, r, c.payload.len()) {
            return self.call_error(
                r,
                c.call_id,
                ErrorCode::RateLimited,
                "relay_bytes_per_s exceeded",
            );
        }
        if self.rpc.calls.contains_key(&(caller, c.call_id)) {
            return self.call_error(
                r,
                c.call_id,
                ErrorCode::DuplicateCallId,
                "a call with this id is in flight",
            );
        }
        if self.rpc.inflight_per_caller.get(&caller).copied().unwrap_or(0) >= inflight_max {
            return self.call_error(
                r,
                c.call_id,
                ErrorCode::TooManyCalls,
                "max_inflight_calls_per_peer reached",
            );
        }
        let local = self.pick_provider(&realm, &c.procedure, &[]);
        let remote = || self.rpc.remote.contains(&(realm.clone(), c.procedure.clone()));
        let Some(provider) = local.or_else(|| remote().then_some((FEDERATION, [0; 32]))) else {
            return self.call_error(
                r,
                c.call_id,
                ErrorCode::NoProvider,
                "no provider is registered",
            );
        };
        let deadline = now + Duration::from_millis(timeout);
        // Both stay in the call state until the answer, for a retry or a forward (super::retain).
        let state = CallState {
            deadline,
            realm: realm.clone(),
            procedure: c.procedure.detach(),
            payload: detach_small(c.payload),
            idempotent: c.idempotent,
            provider,
            tried: SmallVec::new(),
        };
        self.book_call(caller, c.call_id, state);
        self.dispatch(now, caller, c.call_id);
    }

    /// Puts a call in the books (its state, its deadline entry, its caller's in-flight count):
    /// what `finish_call` takes out, so a retry puts back exactly what its first try held.
    fn book_call(&mut self, caller: PeerId, call_id: u64, state: CallState) {
        *self.rpc.inflight_per_caller.entry(caller).or_default() += 1;
        self.rpc.deadlines.insert((state.deadline, caller, call_id));
        ShardMetrics::set(&self.ctx.metrics.rpc_calls_in_flight, self.rpc.deadlines.len() as u64);
        self.rpc.calls.insert((caller, call_id), state);
    }

    /// Sends the INVOKE of a call already in `calls`: it must be there first, because an answer
    /// can come back at once (a provider on this shard that turns out to be gone), and an
    /// answer for a call not in the books is dropped as late.
    fn dispatch(&mut self, now: Instant, caller: PeerId, call_id: u64) {
        let Some(state) = self.rpc.calls.get(&(caller, call_id)) else { return };
        // Rounded up: the provider's shard must not forget the invocation before the deadline.
        let left = state.deadline.saturating_duration_since(now);
        let timeout_ms = left.as_micros().div_ceil(1000) as u64;
        if state.provider.0 == FEDERATION {
            return self.to_control(ControlMsg::Call {
                caller,
                call_id,
                realm: state.realm.clone(),
                procedure: state.procedure.clone(),
                timeout_ms,
                idempotent: state.idempotent,
                payload: state.payload.clone(),
            });
        }
        let msg = ShardMsg::Invoke {
            caller_shard: self.ctx.index,
            caller,
            call_id,
            provider: state.provider.1,
            timeout_ms,
            procedure: state.procedure.clone(),
            payload: state.payload.clone(),
            link: None,
        };
        let shard = state.provider.0;
        if shard == self.ctx.index {
            self.handle_rpc_message(now, msg);
        } else {
            self.outbox[shard].push(msg);
        }
    }

    fn call_error(&mut self, r: ConnRef, call_id: u64, code: ErrorCode, message: &'static str) {
        ShardMetrics::inc(&self.ctx.metrics.rpc_errors);
        let frame = Frame::CallError(frame::CallError {
            id: call_id,
            code: code as u64,
            message: Bytes::from_static(message.as_bytes()),
        });
        self.send_data_frame(r, &frame);
    }

    /// REPLY or CALL_ERROR from a provider for one of this shard's invocations.
    pub(super) fn provider_answer(&mut self, r: ConnRef, invocation_id: u64, outcome: CallOutcome) {
        // Only the peer that was invoked holds the id; anyone else's answer is unknown to it.
        let inv = self.conn_mut(r).and_then(|c| c.invocations.remove(&invocation_id));
        let Some(inv) = inv else {
            ShardMetrics::inc(&self.ctx.metrics.rpc_late_replies);
            return;
        };
        self.rpc.invocation_expiry.remove(&(inv.expires, r, invocation_id));
        self.route_invocation(inv, outcome);
    }

    /// The answer of an invocation: to the caller's shard, or back to the forwarding node.
    fn route_invocation(&mut self, inv: Invocation, outcome: CallOutcome) {
        match inv.link {
            Some(to) => self.answer_link(to, inv.call_id, outcome),
            None => self.route_outcome(inv.caller, inv.call_id, outcome),
        }
    }

    fn answer_link(&self, to: PeerId, forward_id: u64, outcome: CallOutcome) {
        let (code, payload) = match outcome {
            CallOutcome::Reply(payload) => (0, payload),
            CallOutcome::Error(code, message) => (code, message),
            CallOutcome::ProviderGone | CallOutcome::Undelivered => {
                let code = ErrorCode::ProviderGone;
                (code as u64, Bytes::from_static(code.name().as_bytes()))
            }
        };
        self.to_control(ControlMsg::InvokeAnswer { to, forward_id, code, payload });
    }

    fn route_outcome(&mut self, caller: PeerId, call_id: u64, outcome: CallOutcome) {
        let shard = owner_shard(&caller, self.ctx.shards);
        let msg = ShardMsg::CallResult { caller, call_id, outcome };
        if shard == self.ctx.index {
            self.handle_rpc_message(self.last_now, msg);
        } else {
            self.outbox[shard].push(msg);
        }
    }

    fn finish_call(&mut self, caller: PeerId, call_id: u64) -> Option<CallState> {
        let state = self.rpc.calls.remove(&(caller, call_id))?;
        self.rpc.deadlines.remove(&(state.deadline, caller, call_id));
        ShardMetrics::set(&self.ctx.metrics.rpc_calls_in_flight, self.rpc.deadlines.len() as u64);
        if let Some(n) = self.rpc.inflight_per_caller.get_mut(&caller) {
            *n -= 1;
            if *n == 0 {
                self.rpc.inflight_per_caller.remove(&caller);
            }
        }
        Some(state)
    }

    /// Handles RPC and direct-message traffic between shards (and the same shard's own).
    pub(super) fn handle_rpc_message(&mut self, now: Instant, msg: ShardMsg) {
        match msg {
            ShardMsg::ProviderAdd { realm, procedure, shard, peer, ack } => {
                self.apply_provider(&realm, &procedure, shard, peer, true);
                self.outbox[shard].push(ShardMsg::InterestAck { ack });
            }
            ShardMsg::ProviderRemove { realm, procedure, shard, peer, ack } => {
                self.apply_provider(&realm, &procedure, shard, peer, false);
                if let Some(ack) = ack {
                    self.outbox[shard].push(ShardMsg::InterestAck { ack });
                }
            }
            ShardMsg::Invoke {
                caller_shard,
                caller,
                call_id,
                provider,
                timeout_ms,
                procedure,
                payload,
                link,
            } => {
                let invocation_id = self.rpc.next_invocation + 1;
                let expires = now + Duration::from_millis(timeout_ms);
                let inv = Invocation { caller, call_id, link, expires };
                // A provider whose connection is closing would never see the INVOKE.
                let r = self.by_peer.get(&provider).copied();
                let live = r
                    .and_then(|r| Some((r, self.conn_mut(r)?)))
                    .filter(|(_, c)| answers_invocations(c));
                let Some((r, conn)) = live else {
                    if let Some(to) = link {
                        return self.answer_link(to, call_id, CallOutcome::Undelivered);
                    }
                    let msg =
                        ShardMsg::CallResult { caller, call_id, outcome: CallOutcome::Undelivered };
                    if caller_shard == self.ctx.index {
                        return self.handle_rpc_message(now, msg);
                    }
                    return self.outbox[caller_shard].push(msg);
                };
                conn.invocations.insert(invocation_id, inv);
                self.rpc.next_invocation = invocation_id;
                self.rpc.invocation_expiry.insert((expires, r, invocation_id));
                let frame = Frame::Invoke(frame::Invoke {
                    invocation_id,
                    timeout_ms,
                    caller,
                    procedure,
                    payload,
                });
                self.send_data_frame(r, &frame);
            }
            ShardMsg::CallResult { caller, call_id, outcome } => {
                self.call_result(now, caller, call_id, outcome)
            }
            ShardMsg::RemoteProvider { realm, procedure, remote } => {
                if remote {
                    self.rpc.remote.insert((realm, procedure));
                } else {
                    self.rpc.remote.remove(&(realm, procedure));
                }
            }
            ShardMsg::FederatedInvoke {
                from,
                forward_id,
                caller,
                realm,
                procedure,
                timeout_ms,
                payload,
            } => {
                let Some((shard, provider)) = self.pick_provider(&realm, &procedure, &[]) else {
                    let code = ErrorCode::NoProvider;
                    let message = Bytes::from_static(code.name().as_bytes());
                    let outcome = CallOutcome::Error(code as u64, message);
                    return self.answer_link(from, forward_id, outcome);
                };
                let msg = ShardMsg::Invoke {
                    caller_shard: self.ctx.index,
                    caller,
                    call_id: forward_id,
                    provider,
                    timeout_ms,
                    procedure,
                    payload,
                    link: Some(from),
                };
                if shard == self.ctx.index {
                    self.handle_rpc_message(now, msg);
                } else {
                    self.outbox[shard].push(msg);
                }
            }
            ShardMsg::Direct { source, realm, target, payload, request_id } => {
                let source_shard = owner_shard(&source, self.ctx.shards);
                let delivered = match self.peer_in_realm(&target, &realm) {
                    Some((r, _)) => {
                        self.send_data_frame(
                            r,
                            &Frame::Message(frame::Message { source, payload }),
                        );
                        ShardMetrics::inc(&self.ctx.metrics.messages_relayed);
                        true
                    }
                    None => false,
                };
                if request_id != 0 || !delivered {
                    let msg = ShardMsg::DirectResult { source, request_id, delivered };
                    if source_shard == self.ctx.index {
                        self.handle_rpc_message(now, msg);
                    } else {
                        self.outbox[source_shard].push(msg);
                    }
                }
            }
            ShardMsg::DirectResult { source, request_id, delivered } => {
                let Some(&r) = self.by_peer.get(&source) else { return };
                if delivered {
                    self.send_ok(r, request_id);
                } else {
                    self.send_error(
                        r,
                        request_id,
                        ErrorCode::UnknownPeer,
                        "no peer with this id is connected",
                    );
                }
            }
            _ => unreachable!("routed by handle_message"),
        }
    }

    fn call_result(&mut self, now: Instant, caller: PeerId, call_id: u64, outcome: CallOutcome) {
        let Some(state) = self.finish_call(caller, call_id) else {
            // The deadline passed (the caller was answered) or the caller left.
            ShardMetrics::inc(&self.ctx.metrics.rpc_late_replies);
            return;
        };
        let Some(&r) = self.by_peer.get(&caller) else { return };
        let frame = match outcome {
            CallOutcome::Reply(payload) => {
                ShardMetrics::inc(&self.ctx.metrics.rpc_replies);
                Frame::Reply(frame::Reply { id: call_id, payload })
            }
            CallOutcome::Error(code, message) => {
                ShardMetrics::inc(&self.ctx.metrics.rpc_errors);
                Frame::CallError(frame::CallError { id: call_id, code, message })
            }
            gone @ (CallOutcome::ProviderGone | CallOutcome::Undelivered) => {
                let never_ran = matches!(gone, CallOutcome::Undelivered);
                if (state.idempotent || never_ran) && now < state.deadline {
                    let mut state = state;
                    state.tried.push(state.provider);
                    if let Some(next) =
                        self.pick_provider(&state.realm, &state.procedure, &state.tried)
                    {
                        state.provider = next;
                        ShardMetrics::inc(&self.ctx.metrics.rpc_retries);
                        self.book_call(caller, call_id, state);
                        self.dispatch(now, caller, call_id);
                        return;
                    }
                }
                ShardMetrics::inc(&self.ctx.metrics.rpc_errors);
                Frame::CallError(frame::CallError {
                    id: call_id,
                    code: ErrorCode::ProviderGone as u64,
                    message: Bytes::from_static(b"the provider disconnected during the call"),
                })
            }
        };
        self.send_data_frame(r, &frame);
    }

    /// Answers calls whose deadline passed with DEADLINE_EXCEEDED.
    pub(super) fn expire_calls(&mut self, now: Instant) {
        while let Some(&(at, caller, call_id)) = self.rpc.deadlines.first() {
            if at > now {
                break;
            }
            self.rpc.deadlines.pop_first();
            // Entries leave with their call, so this one is in flight; the check keeps a
            // mismatch from answering a call whose deadline is another.
            match self.rpc.calls.get(&(caller, call_id)) {
                Some(s) if s.deadline == at => {}
                _ => continue,
            }
            self.finish_call(caller, call_id);
            ShardMetrics::inc(&self.ctx.metrics.rpc_deadline_exceeded);
            if let Some(&r) = self.by_peer.get(&caller) {
                let frame = Frame::CallError(frame::CallError {
                    id: call_id,
                    code: ErrorCode::DeadlineExceeded as u64,
                    message: Bytes::from_static(b"the call's deadline passed"),
                });
                self.send_data_frame(r, &frame);
            }
        }
    }

    /// Forgets invocations whose caller's deadline passed: the caller's shard answered
    /// DEADLINE_EXCEEDED, and a later answer from the provider counts as late.
    pub(super) fn expire_invocations(&mut self, now: Instant) {
        while let Some(&(at, r, id)) = self.rpc.invocation_expiry.first() {
            if at > now {
                break;
            }
            self.rpc.invocation_expiry.pop_first();
            if self.conn_mut(r).and_then(|c| c.invocations.remove(&id)).is_some() {
                ShardMetrics::inc(&self.ctx.metrics.rpc_invocations_expired);
            }
        }
    }

    /// The node is closing a session, or a newer connection replaced it: its registrations and
    /// invocations end now (its own calls wait for the connection to go). A session without
    /// any (not past HELLO, or already retired) has nothing to end.
    pub(super) fn rpc_retire(&mut self, r: ConnRef) {
        let Some(conn) = self.conn_mut(r) else { return };
        let registrations = std::mem::take(&mut conn.registrations);
        let invocations = std::mem::take(&mut conn.invocations);
        let (peer, realm) = (conn.peer_id, conn.realm.clone());
        self.rpc_remove_conn(r, peer, realm.as_ref(), &registrations, invocations, false);
    }

    /// A peer's session ends: withdraw its registrations, fail the invocations it held, drop
    /// its own calls.
    pub(super) fn rpc_remove_conn(
        &mut self,
        r: ConnRef,
        peer: PeerId,
        realm: Option<&Realm>,
        registrations: &[Name],
        invocations: ahash::AHashMap<u64, Invocation>,
        drop_calls: bool,
    ) {
        if let Some(realm) = realm {
            for procedure in registrations {
                self.withdraw_provider(realm, procedure, peer, None);
            }
        }
        for (id, inv) in invocations {
            self.rpc.invocation_expiry.remove(&(inv.expires, r, id));
            self.route_invocation(inv, CallOutcome::ProviderGone);
        }
        // Most sessions that end hold no calls; only theirs are looked for among the shard's.
        if !drop_calls || !self.rpc.inflight_per_caller.contains_key(&peer) {
            return;
        }
        let own: Vec<(PeerId, u64)> =
            self.rpc.calls.keys().filter(|(c, _)| *c == peer).copied().collect();
        for key in own {
            self.finish_call(key.0, key.1);
        }
    }

    /// SEND: a one-way message to another peer, routed by the target's owner shard.
    pub(super) fn direct(&mut self, now: Instant, r: ConnRef, s: frame::Send) {
        let Some((source, realm)) = self.peer_of(r) else { return };
        if !self.charge_relay(now, r, s.payload.len()) {
            return self.send_error(
                r,
                s.request_id,
                ErrorCode::RateLimited,
                "relay_bytes_per_s exceeded",
            );
        }
        let target_shard = owner_shard(&s.target, self.ctx.shards);
        let msg = ShardMsg::Direct {
            source,
            realm,
            target: s.target,
            payload: s.payload,
            request_id: s.request_id,
        };
        if target_shard == self.ctx.index {
            self.handle_rpc_message(now, msg);
        } else {
            self.outbox[target_shard].push(msg);
        }
    }
}
