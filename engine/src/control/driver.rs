//! The control loop: waits on the channel (shard messages and datagrams) until the next timer,
//! feeds `Federation` and the DHT (`DhtNode`), and routes their outputs to links and shards.

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
use fovea_control::dht::{
    Contact, DhtConfig, DhtError, DhtNode, Event as DhtEvent, Find, LookupId, LookupKind,
    LookupResult, Message, NodeId as DhtId, Output as DhtOutput, Publish, K,
};
use fovea_control::federation::{
    wan_config, CallRequest, FedIdentity, Federation, FederationConfig, IndexChange, Kind, NodeId,
    Op, Output,
};

use super::dht::{advert_key, advert_value, DhtCounters, Hops, PeerLimits, PeerRequest};
use super::links::{self, Links, QUEUE_MAX};
use super::status::{FederationStatus, LinkCounters};
use super::{ControlError, ControlMsg, ControlParams, LINK_REALM};
use crate::mesh::Mesh;
use crate::shard::{owner_shard, CallOutcome, NodeShared, ShardMsg};

/// Longest wait of the loop: the load in ANNOUNCE and the status stay fresh, and `stop` is seen.
const MAX_WAIT: Duration = Duration::from_millis(250);
/// Members list for the status (it allocates) at most this often.
const MEMBERS_REFRESH: Duration = Duration::from_millis(500);
/// DHT frames held for nodes of unknown endpoint, in all and per node; beyond, dropped and
/// counted (`fovea_dht_unknown_senders_total`).
const DHT_WAITING_MAX: usize = 256;
const DHT_WAITING_PER_NODE: usize = 16;
/// Nodes joined again per rejoin pass at most.
const REJOIN_MAX: usize = 8;
/// Delay of a round of re-stored advertisements after a bootstrap or a join (coalesces joins).
const READVERTISE_DELAY: Duration = Duration::from_millis(500);
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
    /// The Kademlia node: id = node id, address = the advertised federation endpoint.
    dht: DhtNode,
    /// Lookups run for a peer's request, with whom to answer.
    dht_peer: HashMap<LookupId, PeerRequest>,
    /// Our advertisement records (key → value), republished until withdrawn.
    advertised: HashMap<DhtId, Bytes>,
    /// Advertisements waiting for a free lookup slot (or re-stored after a bootstrap).
    advert_retry: Vec<DhtId>,
    /// When to store every advertisement again: after a bootstrap, and after a contact joined
    /// a table of at most k (in a small network every newcomer is among the k closest to every
    /// key). Coalesces a burst of joins into one round.
    readvertise_at: Option<Instant>,
    /// Next pass that joins again the seeds and DHT contacts SWIM holds as down (heals a
    /// partition after which both sides declared each other down), and its period.
    rejoin_at: Instant,
    rejoin_every: Duration,
    record_ttl: Duration,
    endpoint: SocketAddr,
    /// Federation endpoints of nodes (SWIM members, DHT contacts).
    endpoints: HashMap<NodeId, SocketAddr>,
    /// DHT frames from nodes whose endpoint is not known yet (a dialing node's first FIND_NODE
    /// can arrive right behind its SWIM join, before the member is up): replayed at MemberUp.
    dht_waiting: HashMap<NodeId, Vec<Frame>>,
    peer_limits: PeerLimits,
    dht_counters: DhtCounters,
    hops: Hops,
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
        let dht = DhtNode::new(
            Contact::new(DhtId(params.node_id), params.advertise),
            DhtConfig::default(),
            rand::random::<u64>(),
            Instant::now(),
        );
        let record_ttl = Duration::from_secs(f.dht_record_ttl_s);
        let rejoin_every = Duration::from_millis(f.suspect_timeout_ms.max(f.probe_interval_ms));
        let peer_limits = PeerLimits::new(f.dht_peer_requests_per_s, f.dht_peer_stores);
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
            dht,
            dht_peer: HashMap::new(),
            advertised: HashMap::new(),
            advert_retry: Vec::new(),
            readvertise_at: None,
            rejoin_at: Instant::now(),
            rejoin_every,
            record_ttl,
            endpoint: params.advertise,
            endpoints: HashMap::new(),
            dht_waiting: HashMap::new(),
            peer_limits,
            dht_counters: DhtCounters::default(),
            hops: Hops::default(),
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
        at = at.min(self.dht.poll_timeout().max(now));
        if !self.advert_retry.is_empty() {
            at = at.min(now + Duration::from_millis(50));
        }
        if let Some(t) = self.readvertise_at {
            at = at.min(t.max(now));
        }
        at = at.min(self.rejoin_at.max(now));
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
                    if let Some(frames) = self.dht_waiting.remove(&node) {
                        self.dht_counters.unknown_senders += frames.len() as u64;
                    }
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
            ControlMsg::DhtRequest { peer, shard, frame } => self.peer_dht(peer, shard, frame),
            ControlMsg::Stop => {}
        }
    }

    fn on_link_frame(&mut self, from: NodeId, frame: &Frame, now: u64) {
        if is_dht_frame(frame) {
            self.dht_frame(from, frame.clone());
            return;
        }
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
                    self.advertise(kind, key.1.as_bytes(), &key.2);
                    self.fed.local_change(kind, Op::Add, key.1, name, now);
                }
            }
            Op::Remove => {
                let Some(mask) = self.local_names.get_mut(&key) else { return };
                *mask &= !bit;
                if *mask == 0 {
                    self.local_names.remove(&key);
                    self.withdraw(kind, key.1.as_bytes(), &key.2);
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
        if self.dht.poll_timeout() <= now {
            self.dht.tick(now);
        }
        if self.rejoin_at <= now {
            self.rejoin_at = now + self.rejoin_every;
            self.rejoin_unreachable();
        }
        if self.readvertise_at.is_some_and(|t| t <= now) {
            self.readvertise_at = None;
            let keys: Vec<DhtId> = self.advertised.keys().copied().collect();
            for key in keys {
                if !self.advert_retry.contains(&key) {
                    self.advert_retry.push(key);
                }
            }
        }
        while !self.advert_retry.is_empty()
            && self.dht.lookups_in_progress() < self.dht.config().max_lookups / 2
        {
            let key = self.advert_retry.remove(0);
            self.publish_advert(key);
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
            let dht_moved = self.drain_dht();
            self.fed.flush();
            let mut outputs = std::mem::take(&mut self.outputs);
            self.fed.drain_outputs(&mut outputs);
            if outputs.is_empty() && !moved && !dht_moved {
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
            // The DHT joins through the seeds too, over the same link.
            self.endpoints.insert(node_id, addr);
            let seed = Contact::new(DhtId(node_id), addr);
            if let Err(e) = self.dht.bootstrap(&[seed], Instant::now()) {
                tracing::debug!(error = %e, "DHT bootstrap not started");
            }
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
                tracing::info!(node = %short(&m.id), endpoint = %m.endpoint, "federation member up");
                self.endpoints.insert(m.id, m.endpoint);
                for frame in self.dht_waiting.remove(&m.id).unwrap_or_default() {
                    self.dht_frame(m.id, frame);
                }
                if self.dht.table().is_empty() {
                    // A node without seeds joins the DHT through its first member.
                    let _ = self
                        .dht
                        .bootstrap(&[Contact::new(DhtId(m.id), m.endpoint)], Instant::now());
                }
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
        let stats = *self.dht.stats();
        let d = &mut self.dht_counters;
        d.table_size = self.dht.table().len() as u64;
        d.records = self.dht.records().len() as u64;
        d.advertised = self.advertised.len() as u64;
        d.lookups_done = stats.lookups_done;
        d.lookups_started = stats.lookups_done + self.dht.lookups_in_progress() as u64;
        d.lookup_hops = self.hops.median();
        d.timeouts = stats.timeouts;
        d.requests_in = stats.requests_in;
        d.stores_refused = stats.stores_refused;
        self.status.update(self.fed.metrics(), self.counters, self.dht_counters, members);
    }

    /// Joins again (SWIM announce) up to `REJOIN_MAX` nodes that SWIM holds as down or does not
    /// know but that we still reach: seeds with a link up, and DHT contacts. After a partition
    /// both sides may have declared each other down, and SWIM alone never probes a down member
    /// again; the announce makes the other side tell us (we renew our identity) or take us back.
    fn rejoin_unreachable(&mut self) {
        let mut nodes: Vec<(NodeId, SocketAddr)> = self
            .links
            .dials
            .iter()
            .filter(|d| d.seed && d.welcomed)
            .filter_map(|d| d.node.map(|n| (n, d.addr)))
            .collect();
        nodes.extend(self.dht.table().contacts().map(|c| (c.id.0, c.addr)));
        let membership = self.fed.membership();
        nodes.retain(|(n, _)| !membership.is_reachable(n));
        nodes.sort_unstable();
        nodes.dedup_by_key(|(n, _)| *n);
        let now = now_ms();
        for (id, endpoint) in nodes.into_iter().take(REJOIN_MAX) {
            self.fed.join(FedIdentity { id, endpoint, incarnation: 0 }, now);
        }
    }

    fn readvertise_soon(&mut self) {
        if !self.advertised.is_empty() {
            self.readvertise_at.get_or_insert(Instant::now() + READVERTISE_DELAY);
        }
    }

    /// A DHT message from the node at the other end of a link.
    fn dht_frame(&mut self, from: NodeId, frame: Frame) {
        let Some(addr) = self.endpoint_of(&from) else {
            let held: usize = self.dht_waiting.values().map(Vec::len).sum();
            let node = self.dht_waiting.entry(from).or_default();
            if held < DHT_WAITING_MAX && node.len() < DHT_WAITING_PER_NODE {
                node.push(frame);
            } else {
                self.dht_counters.unknown_senders += 1;
            }
            return;
        };
        let Ok(msg) = Message::try_from(frame) else { return };
        self.dht.handle_message(DhtId(from), addr, msg, Instant::now());
    }

    /// Where `node` is reached: our link's address, or its SWIM / DHT endpoint.
    fn endpoint_of(&mut self, node: &NodeId) -> Option<SocketAddr> {
        if let Some(d) = self.links.dials.iter().find(|d| d.welcomed && d.node == Some(*node)) {
            return Some(d.addr);
        }
        if let Some(a) = self.endpoints.get(node) {
            return Some(*a);
        }
        let a = self.fed.members().into_iter().find(|m| m.id == *node).map(|m| m.endpoint)?;
        self.endpoints.insert(*node, a);
        Some(a)
    }

    fn drain_dht(&mut self) -> bool {
        let mut moved = false;
        while let Some(out) = self.dht.poll_output() {
            moved = true;
            match out {
                DhtOutput::Send { to, msg } => {
                    self.send_to(to.id.0, Frame::from(msg), Some(to.addr))
                }
                DhtOutput::Done(result) => self.dht_done(result),
                DhtOutput::Event(DhtEvent::ContactAdded(c)) => self.discovered(c),
                DhtOutput::Event(DhtEvent::RecordStored { .. }) => {
                    self.dht_counters.records_stored += 1
                }
                DhtOutput::Event(_) => {}
            }
        }
        moved
    }

    /// A node the DHT found: join it to the federation unless SWIM has it already.
    fn discovered(&mut self, c: Contact) {
        self.endpoints.insert(c.id.0, c.addr);
        if self.dht.table().len() <= K {
            self.readvertise_soon();
        }
        if !self.fed.membership().is_reachable(&c.id.0) {
            self.dht_counters.discovered += 1;
            let identity = FedIdentity { id: c.id.0, endpoint: c.addr, incarnation: 0 };
            self.fed.join(identity, now_ms());
        }
    }

    fn dht_done(&mut self, result: LookupResult) {
        self.hops.push(result.hops);
        let Some(req) = self.dht_peer.remove(&result.id) else {
            if result.kind == LookupKind::Bootstrap {
                // Records stored before we had neighbours reached too few nodes.
                self.readvertise_soon();
            }
            return;
        };
        let request_id = req.request_id;
        let msg = match result.kind {
            LookupKind::FindValue if !result.records.is_empty() => {
                Message::Value { request_id, records: result.records.into_iter().take(K).collect() }
            }
            LookupKind::FindValue | LookupKind::FindNode => {
                Message::Nodes { request_id, nodes: result.closest.into_iter().take(K).collect() }
            }
            LookupKind::Store if result.stored > 0 => Message::StoreOk { request_id },
            _ => Message::error(request_id, ErrorCode::DeadlineExceeded),
        };
        self.pending[req.shard].push(ShardMsg::DhtAnswer { peer: req.peer, frame: msg.into() });
    }

    /// A peer's FIND_NODE / FIND_VALUE / STORE: a lookup on its behalf, answered when it
    /// completes (docs/PROTOCOL.md §7.4).
    fn peer_dht(&mut self, peer: [u8; 32], shard: usize, frame: Frame) {
        let now = Instant::now();
        self.dht_counters.peer_requests += 1;
        let Ok(msg) = Message::try_from(frame) else { return };
        let request_id = msg.request_id();
        if !self.peer_limits.allow(peer, now) {
            return self.refuse_peer(peer, shard, request_id, ErrorCode::RateLimited);
        }
        let started = match msg {
            Message::FindNode { target, .. } => self.dht.start_lookup(Find::Node(target), now),
            Message::FindValue { key, .. } => self.dht.start_lookup(Find::Value(key), now),
            Message::Store { key, ttl_s, value, .. } => {
                if self.advertised.contains_key(&key) {
                    // The node's own advertisement: a peer may not replace it.
                    return self.refuse_peer(peer, shard, request_id, ErrorCode::PermissionDenied);
                }
                let ttl = Duration::from_secs(ttl_s)
                    .min(self.dht.config().max_ttl)
                    .max(Duration::from_secs(1));
                if !self.peer_limits.store(peer, key, ttl, now) {
                    return self.refuse_peer(peer, shard, request_id, ErrorCode::RateLimited);
                }
                self.dht.store(key, value, ttl, Publish::Once, now)
            }
            _ => return,
        };
        match started {
            Ok(id) => {
                self.dht_peer.insert(id, PeerRequest { peer, shard, request_id });
            }
            Err(DhtError::Record(e)) => self.refuse_peer(peer, shard, request_id, e.code()),
            Err(DhtError::Busy | DhtError::TooManyPublished) => {
                self.refuse_peer(peer, shard, request_id, ErrorCode::RateLimited)
            }
        }
    }

    fn refuse_peer(&mut self, peer: [u8; 32], shard: usize, request_id: u64, code: ErrorCode) {
        self.dht_counters.peer_refused += 1;
        let frame = Message::error(request_id, code).into();
        self.pending[shard].push(ShardMsg::DhtAnswer { peer, frame });
    }

    /// The first local provider of a procedure or subscriber of a pattern: advertise it.
    fn advertise(&mut self, kind: Kind, realm: &[u8], name: &[u8]) {
        let key = advert_key(kind, realm, name);
        self.advertised.insert(key, advert_value(kind, realm, name, self.endpoint));
        self.publish_advert(key);
    }

    /// The last one went: stop republishing; the stored copies expire with their TTL.
    fn withdraw(&mut self, kind: Kind, realm: &[u8], name: &[u8]) {
        let key = advert_key(kind, realm, name);
        self.advertised.remove(&key);
        self.advert_retry.retain(|k| *k != key);
        self.dht.unpublish(&key);
    }

    fn publish_advert(&mut self, key: DhtId) {
        let Some(value) = self.advertised.get(&key).cloned() else { return };
        match self.dht.store(key, value, self.record_ttl, Publish::Republish, Instant::now()) {
            Ok(_) => {}
            Err(DhtError::Busy) => {
                if !self.advert_retry.contains(&key) {
                    self.advert_retry.push(key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "DHT advertisement not stored"),
        }
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

/// The frames of the DHT between nodes (docs/PROTOCOL.md §7.4), OK and ERROR included: the
/// federation sends neither on links.
fn is_dht_frame(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::FindNode(_)
            | Frame::FindValue(_)
            | Frame::Nodes(_)
            | Frame::Value(_)
            | Frame::Store(_)
            | Frame::Ok(_)
            | Frame::Error(_)
    )
}
