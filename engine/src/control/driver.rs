//! The control loop: waits on the channel (shard messages and datagrams) until the next timer,
//! feeds `Federation`, and routes its outputs to links and shards.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use fovea_client::{ClientConfig, Credential, Event, Verify};
use fovea_codec::frame::Swim;
use fovea_codec::{ErrorCode, Frame, Limits, Name, Realm};
use fovea_control::federation::{
    wan_config, CallRequest, FedIdentity, Federation, FederationConfig, IndexChange, Kind, NodeId,
    Op, Output,
};

use super::links::{self, Links, QUEUE_MAX};
use super::status::{FederationStatus, LinkCounters};
use super::{ControlError, ControlMsg, ControlParams, LINK_REALM};
use crate::mesh::Mesh;
use crate::shard::{owner_shard, CallOutcome, NodeShared, ShardMsg};

/// Longest wait of the loop: the load in ANNOUNCE and the status stay fresh, and `stop` is seen.
const MAX_WAIT: Duration = Duration::from_millis(250);
/// Members list for the status (it allocates) at most this often.
const MEMBERS_REFRESH: Duration = Duration::from_millis(500);
/// Messages handled per wake-up before outputs are routed (latency of the first ones).
const BATCH: usize = 1024;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(super) struct Driver {
    fed: Federation,
    self_id: NodeId,
    rx: Receiver<ControlMsg>,
    socket: UdpSocket,
    local: SocketAddr,
    mesh: Arc<Mesh>,
    shards: usize,
    shared: Arc<NodeShared>,
    max_peers: u64,
    links: Links,
    /// Incoming links: node → serving shard.
    incoming: HashMap<NodeId, usize>,
    /// Messages for each shard, pushed as one batch per turn.
    pending: Vec<Vec<ShardMsg>>,
    /// Forwarded calls of our callers: call_ref → (caller, call id).
    calls: HashMap<u64, ([u8; 32], u64)>,
    next_call_ref: u64,
    /// Which shards have local interest or providers, per (kind, realm, name).
    local_names: HashMap<(bool, Realm, Bytes), u64>,
    outputs: Vec<Output>,
    limits: Limits,
    status: Arc<FederationStatus>,
    stop: Arc<AtomicBool>,
    counters: LinkCounters,
    members_at: Option<Instant>,
    send_buf: Vec<u8>,
}

impl Driver {
    pub(super) fn new(
        params: ControlParams,
        socket: UdpSocket,
        rx: Receiver<ControlMsg>,
        status: Arc<FederationStatus>,
        stop: Arc<AtomicBool>,
    ) -> Result<Driver, ControlError> {
        let f = &params.config.federation;
        let config = FederationConfig {
            max_clock_offset_ms: f.max_clock_offset_ms,
            max_hops: f.max_hops,
            sync_interval_ms: f.sync_interval_ms,
            announce_interval_ms: f.announce_interval_ms,
            ..FederationConfig::default()
        };
        let mut swim = wan_config((f.seeds.len() as u32 + 1).max(3));
        swim.probe_period = Duration::from_millis(f.probe_interval_ms);
        swim.probe_rtt = Duration::from_millis(f.probe_timeout_ms);
        swim.suspect_to_down_after = Duration::from_millis(f.suspect_timeout_ms);
        // A restarted node comes back with a higher incarnation than its last life.
        let incarnation = (now_ms() / 1000) as u32;
        let identity = FedIdentity { id: params.node_id, endpoint: params.advertise, incarnation };
        let seed = rand::random::<u64>();
        let fed = Federation::new(identity, Bytes::from(f.region.clone()), config, swim, seed);
        let verify = match &f.ca_file {
            Some(path) => Verify::CaFile(path.clone()),
            None => {
                tracing::warn!(
                    "federation.ca_file is not set: other nodes' certificates are not verified"
                );
                Verify::Insecure
            }
        };
        let client = ClientConfig {
            realm: Realm::from_static(LINK_REALM),
            peer_id: Some(params.node_id),
            client_name: concat!("fovea-federation/", env!("CARGO_PKG_VERSION")).to_owned(),
            hello_flags: 1,
            credential: match &f.token {
                Some(t) => Credential::Token(Bytes::from(t.clone().into_bytes())),
                None => Credential::None,
            },
            verify,
            // Links carry SWIM and digests every second; a dead path shows well before this.
            idle_timeout: Duration::from_millis((f.probe_interval_ms * 10).max(10_000)),
            ..ClientConfig::default()
        };
        let mut links = Links::new(
            client,
            Duration::from_millis(f.redial_min_ms),
            Duration::from_millis(f.redial_max_ms),
        )?;
        for seed in &f.seeds {
            if *seed != params.advertise {
                links.add(*seed, true, None);
            }
        }
        let local = socket.local_addr().map_err(ControlError::Socket)?;
        let shards = params.mesh.shards();
        Ok(Driver {
            fed,
            self_id: params.node_id,
            rx,
            socket,
            local,
            mesh: params.mesh,
            shards,
            shared: params.shared,
            max_peers: params.config.limits.max_peers as u64,
            links,
            incoming: HashMap::new(),
            pending: (0..shards).map(|_| Vec::new()).collect(),
            calls: HashMap::new(),
            next_call_ref: 1,
            local_names: HashMap::new(),
            outputs: Vec::new(),
            limits: Limits {
                max_payload: params.config.limits.max_payload + 1024,
                max_frame_len: params.config.limits.max_payload + 4096,
                ..Limits::default()
            },
            status,
            stop,
            counters: LinkCounters::default(),
            members_at: None,
            send_buf: vec![0u8; 1500],
        })
    }

    pub(super) fn run(mut self) {
        tracing::info!(seeds = self.links.dials.len(), "federation control thread started");
        self.fed.tick(now_ms());
        'outer: loop {
            let wait = self.next_deadline().saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(ControlMsg::Stop) => break,
                Ok(msg) => {
                    self.handle(msg);
                    for _ in 0..BATCH {
                        match self.rx.try_recv() {
                            Ok(ControlMsg::Stop) => break 'outer,
                            Ok(msg) => self.handle(msg),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            self.service();
            self.pump();
        }
        self.close_all();
    }

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut at = now + MAX_WAIT;
        if let Some(ms) = self.fed.next_wakeup_ms() {
            let wall = now_ms();
            at = at.min(now + Duration::from_millis(ms.saturating_sub(wall)));
        }
        for d in &self.links.dials {
            match &d.session {
                Some(s) => {
                    if let Some(t) = s.timeout() {
                        at = at.min(now + t);
                    }
                }
                None if !d.retired => at = at.min(d.next_attempt),
                None => {}
            }
        }
        if self.pending.iter().any(|p| !p.is_empty()) {
            // A shard inbox was full: try again soon.
            at = at.min(now + Duration::from_millis(1));
        }
        at
    }

    fn handle(&mut self, msg: ControlMsg) {
        let now = now_ms();
        match msg {
            ControlMsg::Datagram { mut data, from } => {
                let local = self.local;
                if let Some(d) = self.links.dials.iter_mut().find(|d| d.addr == from) {
                    if let Some(s) = d.session.as_mut() {
                        s.handle_datagram(&mut data, from, local);
                    }
                }
            }
            ControlMsg::LinkUp { node, shard } => {
                tracing::debug!(node = %short(&node), shard, "federation link accepted");
                self.incoming.insert(node, shard);
            }
            ControlMsg::LinkDown { node, shard } => {
                if self.incoming.get(&node) == Some(&shard) {
                    self.incoming.remove(&node);
                }
            }
            ControlMsg::LinkFrame { from, frame } => self.on_link_frame(from, &frame, now),
            ControlMsg::LocalChange { kind, op, realm, name, shard } => {
                self.local_change(kind, op, realm, name, shard, now)
            }
            ControlMsg::Publish { realm, topic, payload } => {
                self.fed.publish(&realm, &topic, payload, now);
            }
            ControlMsg::Call {
                caller,
                call_id,
                realm,
                procedure,
                timeout_ms,
                idempotent,
                payload,
            } => {
                let call_ref = self.next_call_ref;
                self.next_call_ref += 1;
                let request = CallRequest {
                    call_ref,
                    caller,
                    realm,
                    procedure,
                    timeout_ms,
                    idempotent,
                    payload,
                };
                match self.fed.call(request, now) {
                    Ok(_) => {
                        self.calls.insert(call_ref, (caller, call_id));
                    }
                    Err(refused) => {
                        let code = refused.error_code();
                        let message = Bytes::from(refused.to_string());
                        self.answer_call(caller, call_id, CallOutcome::Error(code as u64, message));
                    }
                }
            }
            ControlMsg::InvokeAnswer { to, forward_id, code, payload } => {
                self.fed.reply_forwarded(to, forward_id, code, payload);
            }
            ControlMsg::Stop => {}
        }
    }

    fn on_link_frame(&mut self, from: NodeId, frame: &Frame, now: u64) {
        match Swim::from_frame(frame, &self.limits) {
            Some(Ok(swim)) => self.fed.on_swim(&swim.datagram, now),
            Some(Err(e)) => tracing::debug!(error = %e, "malformed SWIM frame"),
            None => {
                if let Err(e) = self.fed.on_frame(from, frame, now) {
                    tracing::debug!(error = %e, "frame on a federation link ignored");
                }
            }
        }
    }

    fn local_change(
        &mut self,
        kind: Kind,
        op: Op,
        realm: Realm,
        name: fovea_codec::Pattern,
        shard: usize,
        now: u64,
    ) {
        let key = (kind == Kind::Interest, realm, name.as_inner().clone());
        let bit = 1u64 << shard;
        match op {
            Op::Add => {
                let mask = self.local_names.entry(key.clone()).or_insert(0);
                let first = *mask == 0;
                *mask |= bit;
                if first {
                    self.fed.local_change(kind, Op::Add, key.1, name, now);
                }
            }
            Op::Remove => {
                let Some(mask) = self.local_names.get_mut(&key) else { return };
                *mask &= !bit;
                if *mask == 0 {
                    self.local_names.remove(&key);
                    self.fed.local_change(kind, Op::Remove, key.1, name, now);
                }
            }
        }
    }

    /// Timers: the sessions', redials, and the federation's.
    fn service(&mut self) {
        let now = Instant::now();
        for i in 0..self.links.dials.len() {
            let d = &mut self.links.dials[i];
            match d.session.as_mut() {
                Some(s) if s.timeout().is_some_and(|t| t.is_zero()) => s.on_timeout(),
                Some(_) => {}
                None if !d.retired && d.next_attempt <= now => self.links.connect(i, self.local),
                None => {}
            }
        }
        let wall = now_ms();
        if self.fed.next_wakeup_ms().is_none_or(|t| t <= wall) {
            let peers = self.shared.peers.load(Ordering::Relaxed) as u64;
            self.fed.set_load(peers.saturating_sub(self.incoming.len() as u64), self.max_peers);
            self.fed.tick(wall);
        }
    }

    /// Moves everything along until nothing is left: session events into the federation, its
    /// outputs to links and shards, packets to the socket, batches to the inboxes.
    fn pump(&mut self) {
        for _ in 0..64 {
            let moved = self.poll_sessions();
            self.fed.flush();
            let mut outputs = std::mem::take(&mut self.outputs);
            self.fed.drain_outputs(&mut outputs);
            if outputs.is_empty() && !moved {
                self.outputs = outputs;
                break;
            }
            for out in outputs.drain(..) {
                self.route(out);
            }
            self.outputs = outputs;
        }
        self.transmit();
        self.push_batches();
        self.refresh_status();
    }

    fn poll_sessions(&mut self) -> bool {
        let mut moved = false;
        let now = now_ms();
        for i in 0..self.links.dials.len() {
            loop {
                let Some(event) = self.links.dials[i].session.as_mut().and_then(|s| s.poll_event())
                else {
                    break;
                };
                moved = true;
                match event {
                    Event::Welcome { node_id, .. } => self.on_welcome(i, node_id, now),
                    Event::Frame(frame) => {
                        if let Some(node) = self.links.dials[i].node {
                            self.on_link_frame(node, &frame, now);
                        }
                    }
                    Event::Closed { error_code, reason, .. } => {
                        let d = &self.links.dials[i];
                        let keep = d.seed
                            || d.node.is_some_and(|n| self.fed.membership().is_reachable(&n));
                        tracing::debug!(addr = %d.addr, error_code, reason, keep, "federation link closed");
                        let dropped = self.links.closed(i, keep);
                        self.counters.unroutable_frames += dropped as u64;
                        break;
                    }
                }
            }
        }
        moved
    }

    fn on_welcome(&mut self, i: usize, node_id: NodeId, now: u64) {
        let duplicate = self
            .links
            .dials
            .iter()
            .enumerate()
            .any(|(j, d)| j != i && d.welcomed && d.node == Some(node_id));
        let d = &mut self.links.dials[i];
        if node_id == self.self_id || duplicate {
            // A seed that is ourselves, or a second address of a node we already reach.
            if let Some(s) = d.session.as_mut() {
                s.close(ErrorCode::NoError as u64, "duplicate federation link");
            }
            d.retired = true;
            d.seed = false;
            return;
        }
        tracing::info!(addr = %d.addr, node = %short(&node_id), "federation link up");
        d.node = Some(node_id);
        d.welcomed = true;
        d.failures = 0;
        let queued: Vec<Frame> = d.queued.drain(..).collect();
        let (seed, addr) = (d.seed, d.addr);
        if let Some(s) = d.session.as_mut() {
            for f in &queued {
                if !links::send(s, f) {
                    self.counters.unroutable_frames += 1;
                }
            }
        }
        if seed {
            self.fed.join(FedIdentity { id: node_id, endpoint: addr, incarnation: 0 }, now);
        }
    }

    fn route(&mut self, out: Output) {
        match out {
            Output::Frame { to, frame } => self.send_to(to, frame, None),
            Output::Swim { to, datagram } => {
                self.send_to(to.id, Swim { datagram }.to_frame(), Some(to.endpoint))
            }
            Output::Deliver(p) => {
                self.counters.delivered_publishes += 1;
                let shard = owner_shard(&p.origin, self.shards);
                self.pending[shard].push(ShardMsg::FederatedPublish {
                    realm: p.realm,
                    topic: p.topic,
                    payload: p.payload,
                    published_at: Instant::now(),
                });
            }
            Output::Invoke { from, call } => {
                let shard = owner_shard(&call.caller, self.shards);
                self.pending[shard].push(ShardMsg::FederatedInvoke {
                    from,
                    forward_id: call.forward_id,
                    caller: call.caller,
                    realm: call.realm,
                    procedure: call.procedure,
                    timeout_ms: call.timeout_ms,
                    payload: call.payload,
                });
            }
            Output::CallDone { call_ref, code, payload, .. } => {
                let Some((caller, call_id)) = self.calls.remove(&call_ref) else { return };
                let outcome = if code == 0 {
                    CallOutcome::Reply(payload)
                } else {
                    CallOutcome::Error(code, payload)
                };
                self.answer_call(caller, call_id, outcome);
            }
            Output::Index(IndexChange::Interest { realm, pattern, remote }) => {
                gauge(&mut self.counters.remote_interests, remote);
                for p in &mut self.pending {
                    p.push(ShardMsg::RemoteInterest {
                        realm: realm.clone(),
                        pattern: pattern.clone(),
                        remote,
                    });
                }
            }
            Output::Index(IndexChange::Provider { realm, procedure, remote }) => {
                gauge(&mut self.counters.remote_providers, remote);
                let Ok(procedure) = Name::new(procedure.as_inner().clone()) else { return };
                for p in &mut self.pending {
                    p.push(ShardMsg::RemoteProvider {
                        realm: realm.clone(),
                        procedure: procedure.clone(),
                        remote,
                    });
                }
            }
            Output::MemberUp(m) => {
                tracing::info!(node = %short(&m.id), endpoint = %m.endpoint, "federation member up")
            }
            Output::MemberDown(m) => {
                tracing::warn!(node = %short(&m.id), endpoint = %m.endpoint, "federation member down")
            }
        }
    }

    fn answer_call(&mut self, caller: [u8; 32], call_id: u64, outcome: CallOutcome) {
        let shard = owner_shard(&caller, self.shards);
        self.pending[shard].push(ShardMsg::CallResult { caller, call_id, outcome });
    }

    /// Our own outgoing link first, then the incoming one, else queue on a dial (started if
    /// we know where the node is).
    fn send_to(&mut self, to: NodeId, frame: Frame, endpoint: Option<SocketAddr>) {
        if let Some(s) = self.links.established(&to) {
            if !links::send(s, &frame) {
                self.counters.unroutable_frames += 1;
            }
            return;
        }
        if let Some(&shard) = self.incoming.get(&to) {
            let mut buf = BytesMut::with_capacity(frame.encoded_len());
            frame.encode(&mut buf);
            self.pending[shard].push(ShardMsg::LinkSend { to, frames: buf.freeze() });
            return;
        }
        let i = match self.links.pending_to(&to) {
            Some(i) => i,
            None => {
                let endpoint = endpoint.or_else(|| {
                    self.fed.members().into_iter().find(|m| m.id == to).map(|m| m.endpoint)
                });
                let Some(addr) = endpoint else {
                    self.counters.unroutable_frames += 1;
                    return;
                };
                self.links.add(addr, false, Some(to))
            }
        };
        let d = &mut self.links.dials[i];
        if d.retired || d.queued.len() >= QUEUE_MAX {
            self.counters.unroutable_frames += 1;
            return;
        }
        d.queued.push_back(frame);
    }

    fn transmit(&mut self) {
        for d in &mut self.links.dials {
            let Some(s) = d.session.as_mut() else { continue };
            while let Some((n, to)) = s.poll_transmit(&mut self.send_buf) {
                if let Err(e) = self.socket.send_to(&self.send_buf[..n], to) {
                    tracing::debug!(error = %e, %to, "federation send failed");
                    break;
                }
            }
        }
    }

    fn push_batches(&mut self) {
        for (i, p) in self.pending.iter_mut().enumerate() {
            if p.is_empty() {
                continue;
            }
            let batch = std::mem::take(p);
            if let Err(batch) = self.mesh.inbox(i).push(batch) {
                // Full: keep the order, retry on the next turn (1 ms).
                let rest = std::mem::replace(p, batch);
                p.extend(rest);
            }
        }
    }

    fn refresh_status(&mut self) {
        self.counters.links_out = self.links.up() as u64;
        self.counters.links_in = self.incoming.len() as u64;
        self.counters.dials = self.links.attempts;
        self.counters.dial_failures = self.links.failures;
        let now = Instant::now();
        let members = match self.members_at {
            Some(at) if now.duration_since(at) < MEMBERS_REFRESH => None,
            _ => {
                self.members_at = Some(now);
                Some(self.fed.members())
            }
        };
        self.status.update(self.fed.metrics(), self.counters, members);
    }

    fn close_all(&mut self) {
        for d in &mut self.links.dials {
            if let Some(s) = d.session.as_mut() {
                s.close(ErrorCode::ShuttingDown as u64, "node is shutting down");
            }
        }
        self.transmit();
        tracing::info!("federation control thread stopped");
    }
}

fn short(id: &NodeId) -> String {
    id[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn gauge(g: &mut u64, up: bool) {
    *g = if up { *g + 1 } else { g.saturating_sub(1) };
}
