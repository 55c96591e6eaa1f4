//! The DHT node: the state machine that ties the table, the lookups and the record store
//! together.
//!
//! # Driving it
//!
//! Sans-I/O: no sockets, threads or clock reads. Every entry point takes `now: Instant`, the
//! driver's clock (the engine's shard cores take theirs the same way); times only ever compare
//! against earlier `now`s, so a simulation can feed `base + virtual offset`.
//!
//! - [`DhtNode::handle_message`]: a [`Message`] from another node (decoded from a DHT frame, see
//!   [`super::message`]), with the sender's id and address as the connection established them.
//! - [`DhtNode::tick`]: call at [`DhtNode::poll_timeout`] (or any time later): request timeouts,
//!   record expiry, republishing, bucket refresh.
//! - [`DhtNode::bootstrap`], [`DhtNode::start_lookup`], [`DhtNode::store`]: the operations.
//! - After each call, take the [`Output`]s with [`DhtNode::poll_output`]: messages to send (to a
//!   contact: id + address), completed lookups, and events for logs and metrics.
//!
//! Request ids are the node's own (one counter, never 0): a reply is matched by request id and
//! by the id of the node it was sent to, so a third node cannot answer in someone's place by
//! guessing ids.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::addr::canonical_addr;
use super::config::DhtConfig;
use super::id::{NodeId, SplitMix};
use super::lookup::{Lookup, LookupId, LookupKind, LookupResult};
use super::message::{Contact, Message};
use super::store::{RecordStore, StoreError};
use super::table::{Eviction, Inserted, Rejection, RoutingTable};

/// What the driver should do or know after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` to `to`.
    Send {
        /// The addressee.
        to: Contact,
        /// The message (`Frame::from(msg)` for the wire).
        msg: Message,
    },
    /// A lookup (or a STORE) finished.
    Done(LookupResult),
    /// Something worth a log line or a counter.
    Event(Event),
}

/// Notable changes of the node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A contact entered the routing table.
    ContactAdded(Contact),
    /// A contact left the table (probe or repeated query timeouts).
    ContactEvicted(Eviction),
    /// A record was stored (or renewed) for `publisher`.
    RecordStored {
        /// Its key.
        key: NodeId,
        /// Who stored it.
        publisher: NodeId,
    },
    /// A STORE was refused.
    RecordRefused {
        /// Its key.
        key: NodeId,
        /// Who asked.
        publisher: NodeId,
        /// Why.
        reason: StoreError,
    },
    /// Records expired in a housekeeping pass.
    RecordsExpired(usize),
}

/// How long a record published by this node lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Stored once: it expires after its TTL.
    Once,
    /// Republished (a new lookup and STORE) before its TTL runs out, until
    /// [`DhtNode::unpublish`].
    Republish,
}

/// What [`DhtNode::start_lookup`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Find {
    /// The k closest nodes to an id.
    Node(NodeId),
    /// The records under a key.
    Value(NodeId),
}

/// An operation that could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    /// `max_lookups` lookups are in progress.
    #[error("too many lookups in progress")]
    Busy,
    /// The record breaks a limit.
    #[error(transparent)]
    Record(#[from] StoreError),
    /// `max_published` records are published already.
    #[error("too many published records")]
    TooManyPublished,
}

/// Counters of the node, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Requests received (FIND_NODE, FIND_VALUE, STORE).
    pub requests_in: u64,
    /// Replies matched to a request of ours.
    pub replies_in: u64,
    /// Replies matching no request of ours (late, duplicate, or from the wrong node).
    pub replies_unmatched: u64,
    /// Requests sent.
    pub requests_out: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Liveness probes sent.
    pub probes: u64,
    /// Contacts evicted.
    pub evictions: u64,
    /// Senders the table did not take (limits, bad address, id at another address).
    pub contacts_rejected: u64,
    /// Reply entries rejected by the lookup screening.
    pub entries_rejected: u64,
    /// STOREs refused.
    pub stores_refused: u64,
    /// Lookups completed.
    pub lookups_done: u64,
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    Query(LookupId),
    Probe { attempt: u8 },
    Store(LookupId),
}

#[derive(Debug, Clone, Copy)]
struct Request {
    to: Contact,
    purpose: Purpose,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct StoreJob {
    value: Bytes,
    ttl_s: u64,
    started: bool,
    pending: usize,
    acks: usize,
}

#[derive(Debug)]
struct Active {
    lookup: Lookup,
    store: Option<StoreJob>,
}

#[derive(Debug, Clone)]
struct Published {
    value: Bytes,
    ttl: Duration,
    next: Instant,
}

/// One node of the DHT.
#[derive(Debug)]
pub struct DhtNode {
    config: DhtConfig,
    local: Contact,
    table: RoutingTable,
    records: RecordStore,
    lookups: HashMap<LookupId, Active>,
    requests: HashMap<u64, Request>,
    published: HashMap<NodeId, Published>,
    next_request: u64,
    next_lookup: u64,
    rng: SplitMix,
    out: VecDeque<Output>,
    next_housekeeping: Instant,
    /// A join that reached nobody is retried then (with the backoff after it).
    rejoin: Option<(Instant, Duration)>,
    stats: DhtStats,
}

impl DhtNode {
    /// A node with id `local.id`, reachable at `local.addr`; `seed` drives its few random
    /// choices (refresh targets), so equal inputs give equal outputs.
    pub fn new(local: Contact, config: DhtConfig, seed: u64, now: Instant) -> DhtNode {
        DhtNode {
            table: RoutingTable::new(local.id, &config, now),
            records: RecordStore::new(&config),
            next_housekeeping: now + config.housekeeping_interval,
            config,
            local,
            lookups: HashMap::new(),
            requests: HashMap::new(),
            published: HashMap::new(),
            next_request: 1,
            next_lookup: 1,
            rng: SplitMix::new(seed),
            out: VecDeque::new(),
            rejoin: None,
            stats: DhtStats::default(),
        }
    }

    /// The local contact.
    pub fn local(&self) -> Contact {
        self.local
    }

    /// The configuration.
    pub fn config(&self) -> &DhtConfig {
        &self.config
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The records held for others.
    pub fn records(&self) -> &RecordStore {
        &self.records
    }

    /// The counters.
    pub fn stats(&self) -> &DhtStats {
        &self.stats
    }

    /// Lookups in progress.
    pub fn lookups_in_progress(&self) -> usize {
        self.lookups.len()
    }

    /// The next output, if any. Drain after every call: outputs accumulate until taken.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`tick`](Self::tick) has something to do: the earliest request deadline or the next
    /// housekeeping pass.
    pub fn poll_timeout(&self) -> Instant {
        self.requests.values().map(|r| r.deadline).fold(self.next_housekeeping, Instant::min)
    }

    /// Joins the DHT through `seeds` (configured bootstrap nodes): adds them to the table, looks
    /// up our own id (which makes us known to our neighbours), then refreshes every bucket
    /// beyond the nearest neighbour's.
    pub fn bootstrap(&mut self, seeds: &[Contact], now: Instant) -> Result<LookupId, DhtError> {
        for seed in seeds {
            self.see(*seed, now);
        }
        self.begin(LookupKind::Bootstrap, self.local.id, None, now)
    }

    /// Starts a FIND_NODE or FIND_VALUE lookup. A FIND_VALUE for a key this node holds records
    /// under completes at once (0 hops).
    pub fn start_lookup(&mut self, find: Find, now: Instant) -> Result<LookupId, DhtError> {
        match find {
            Find::Node(target) => self.begin(LookupKind::FindNode, target, None, now),
            Find::Value(key) => {
                let local = self.records.get(&key, now);
                if local.is_empty() {
                    return self.begin(LookupKind::FindValue, key, None, now);
                }
                let id = self.alloc_lookup()?;
                let lookup = Lookup::new(
                    id,
                    LookupKind::FindValue,
                    key,
                    self.local.id,
                    &[],
                    &self.config,
                    now,
                );
                let mut result = lookup.result(0, now);
                result.records = local;
                self.stats.lookups_done += 1;
                self.out.push_back(Output::Done(result));
                Ok(id)
            }
        }
    }

    /// Publishes `value` under `key` for `ttl`: a lookup of the key, then STORE at the k closest
    /// nodes that answered (and here, if this node is among them). The completion's `stored`
    /// counts the acceptances. With [`Publish::Republish`] the node repeats this before the TTL
    /// runs out (see `DhtConfig::republish_after`).
    pub fn store(
        &mut self,
        key: NodeId,
        value: Bytes,
        ttl: Duration,
        mode: Publish,
        now: Instant,
    ) -> Result<LookupId, DhtError> {
        if value.len() > self.config.max_value_len {
            let max = self.config.max_value_len;
            return Err(StoreError::ValueTooLarge { len: value.len(), max }.into());
        }
        let ttl = ttl.min(self.config.max_ttl).max(Duration::from_secs(1));
        if mode == Publish::Republish
            && !self.published.contains_key(&key)
            && self.published.len() >= self.config.max_published
        {
            return Err(DhtError::TooManyPublished);
        }
        let job = StoreJob {
            value: value.clone(),
            ttl_s: ttl.as_secs(),
            started: false,
            pending: 0,
            acks: 0,
        };
        let id = self.begin(LookupKind::Store, key, Some(job), now)?;
        match mode {
            Publish::Republish => {
                let next = now + self.config.republish_after(ttl);
                self.published.insert(key, Published { value, ttl, next });
            }
            Publish::Once => {
                self.published.remove(&key);
            }
        }
        Ok(id)
    }

    /// Stops republishing `key` (the stored copies expire with their TTL).
    pub fn unpublish(&mut self, key: &NodeId) -> bool {
        self.published.remove(key).is_some()
    }

    fn alloc_lookup(&mut self) -> Result<LookupId, DhtError> {
        if self.lookups.len() >= self.config.max_lookups {
            return Err(DhtError::Busy);
        }
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        Ok(id)
    }

    fn begin(
        &mut self,
        kind: LookupKind,
        target: NodeId,
        store: Option<StoreJob>,
        now: Instant,
    ) -> Result<LookupId, DhtError> {
        let id = self.alloc_lookup()?;
        self.table.touch(&target, now);
        let seeds = self.table.closest(&target, self.config.k);
        let lookup = Lookup::new(id, kind, target, self.local.id, &seeds, &self.config, now);
        self.lookups.insert(id, Active { lookup, store });
        self.advance(id, now);
        Ok(id)
    }

    /// Handles a message from `from` at `from_addr`.
    pub fn handle_message(
        &mut self,
        from: NodeId,
        from_addr: SocketAddr,
        msg: Message,
        now: Instant,
    ) {
        if from == self.local.id {
            return;
        }
        self.see(Contact::new(from, from_addr), now);
        match msg {
            Message::FindNode { request_id, target } => {
                self.stats.requests_in += 1;
                let nodes = self.table.closest_except(&target, self.config.k, Some(&from));
                self.send(Contact::new(from, from_addr), Message::Nodes { request_id, nodes });
            }
            Message::FindValue { request_id, key } => {
                self.stats.requests_in += 1;
                let records = self.records.get(&key, now);
                let reply = if records.is_empty() {
                    let nodes = self.table.closest_except(&key, self.config.k, Some(&from));
                    Message::Nodes { request_id, nodes }
                } else {
                    Message::Value { request_id, records }
                };
                self.send(Contact::new(from, from_addr), reply);
            }
            Message::Store { request_id, key, ttl_s, value } => {
                self.stats.requests_in += 1;
                let ttl = Duration::from_secs(ttl_s);
                let reply = match self.records.put(key, from, value, ttl, now) {
                    Ok(()) => {
                        self.event(Event::RecordStored { key, publisher: from });
                        Message::StoreOk { request_id }
                    }
                    Err(reason) => {
                        self.stats.stores_refused += 1;
                        self.event(Event::RecordRefused { key, publisher: from, reason });
                        Message::error(request_id, reason.code())
                    }
                };
                self.send(Contact::new(from, from_addr), reply);
            }
            reply => self.handle_reply(from, from_addr, reply, now),
        }
    }

    fn handle_reply(&mut self, from: NodeId, from_addr: SocketAddr, msg: Message, now: Instant) {
        let request_id = msg.request_id();
        let matched = self.requests.get(&request_id).is_some_and(|r| r.to.id == from);
        if !matched {
            self.stats.replies_unmatched += 1;
            return;
        }
        let Some(req) = self.requests.remove(&request_id) else { return };
        self.stats.replies_in += 1;
        match req.purpose {
            Purpose::Query(id) => {
                let Some(active) = self.lookups.get_mut(&id) else { return };
                match &msg {
                    Message::Nodes { nodes, .. } => {
                        let s = active.lookup.on_nodes(&from, nodes);
                        self.stats.entries_rejected += s.rejected as u64;
                    }
                    Message::Value { records, .. } => active.lookup.on_value(&from, records),
                    _ => active.lookup.on_failure(&from),
                }
                self.advance(id, now);
            }
            Purpose::Probe { .. } => {
                // The sender was refreshed by `see` unless it answered from another address;
                // then the known address is dead as far as the table can tell.
                if self.table.get(&from).is_some_and(|c| c.addr != canonical_addr(from_addr)) {
                    self.probe_failed(&from, now);
                }
            }
            Purpose::Store(id) => {
                let Some(job) = self.lookups.get_mut(&id).and_then(|a| a.store.as_mut()) else {
                    return;
                };
                job.pending = job.pending.saturating_sub(1);
                if matches!(msg, Message::StoreOk { .. }) {
                    job.acks += 1;
                }
                self.advance(id, now);
            }
        }
    }

    /// Housekeeping and timeouts due at `now`.
    pub fn tick(&mut self, now: Instant) {
        let mut expired: Vec<u64> =
            self.requests.iter().filter(|(_, r)| r.deadline <= now).map(|(id, _)| *id).collect();
        // Hash-map order is not deterministic across processes; sorting keeps the node's
        // outputs a pure function of its inputs.
        expired.sort_unstable();
        for request_id in expired {
            let Some(req) = self.requests.remove(&request_id) else { continue };
            self.stats.timeouts += 1;
            match req.purpose {
                Purpose::Query(id) => {
                    if let Some(ev) = self.table.record_failure(&req.to.id) {
                        self.evicted(ev, now);
                    }
                    if let Some(active) = self.lookups.get_mut(&id) {
                        active.lookup.on_timeout(&req.to.id);
                        self.advance(id, now);
                    }
                }
                Purpose::Probe { attempt } => {
                    if attempt < self.config.probe_retries && self.table.contains(&req.to.id) {
                        self.send_probe(req.to, attempt + 1, now);
                    } else {
                        self.probe_failed(&req.to.id, now);
                    }
                }
                Purpose::Store(id) => {
                    if let Some(job) = self.lookups.get_mut(&id).and_then(|a| a.store.as_mut()) {
                        job.pending = job.pending.saturating_sub(1);
                        self.advance(id, now);
                    }
                }
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + self.config.housekeeping_interval;
            self.housekeeping(now);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        if let Some((at, wait)) = self.rejoin {
            if at <= now && self.begin(LookupKind::Bootstrap, self.local.id, None, now).is_ok() {
                self.rejoin = Some((now + wait * 2, wait));
            }
        }
        let expired = self.records.expire(now);
        if expired > 0 {
            self.event(Event::RecordsExpired(expired));
        }
        let mut due: Vec<NodeId> =
            self.published.iter().filter(|(_, p)| p.next <= now).map(|(k, _)| *k).collect();
        due.sort_unstable();
        for key in due {
            let Some(p) = self.published.get(&key).cloned() else { continue };
            if self.store(key, p.value, p.ttl, Publish::Republish, now).is_err() {
                break; // busy: retried at the next pass
            }
        }
        for bucket in self.table.stale_buckets(now, self.config.refresh_interval) {
            let target = self.local.id.random_in_bucket(bucket, &self.rng.id());
            if self.begin(LookupKind::Refresh, target, None, now).is_err() {
                break;
            }
        }
    }

    /// Drives lookup `id`: sends its next queries, or its STOREs, or completes it.
    fn advance(&mut self, id: LookupId, now: Instant) {
        let Some(active) = self.lookups.get_mut(&id) else { return };
        let queries = active.lookup.next_queries();
        let target = active.lookup.target();
        let wants_value = active.lookup.wants_value();
        for to in queries {
            self.send_request(to, Purpose::Query(id), now, |request_id| {
                if wants_value {
                    Message::FindValue { request_id, key: target }
                } else {
                    Message::FindNode { request_id, target }
                }
            });
        }
        let Some(active) = self.lookups.get_mut(&id) else { return };
        if !active.lookup.is_done() {
            return;
        }
        if let Some(job) = active.store.as_mut() {
            if !job.started {
                job.started = true;
                let closest = active.lookup.closest();
                let (value, ttl_s) = (job.value.clone(), job.ttl_s);
                let here = self.local.id.distance(&target);
                let local_is_close = closest.len() < self.config.k
                    || closest.last().is_some_and(|c| here < c.id.distance(&target));
                let mut acks = 0;
                if local_is_close {
                    let ttl = Duration::from_secs(ttl_s);
                    if self.records.put(target, self.local.id, value.clone(), ttl, now).is_ok() {
                        acks += 1;
                    }
                }
                for to in &closest {
                    let value = value.clone();
                    self.send_request(*to, Purpose::Store(id), now, |request_id| Message::Store {
                        request_id,
                        key: target,
                        ttl_s,
                        value,
                    });
                }
                if let Some(job) = self.lookups.get_mut(&id).and_then(|a| a.store.as_mut()) {
                    job.pending = closest.len();
                    job.acks = acks;
                }
            }
            let Some(job) = self.lookups.get(&id).and_then(|a| a.store.as_ref()) else { return };
            if job.pending > 0 {
                return;
            }
        }
        let Some(active) = self.lookups.remove(&id) else { return };
        let stored = active.store.map_or(0, |j| j.acks);
        let result = active.lookup.result(stored, now);
        let (kind, answered) = (result.kind, result.closest.len());
        self.stats.lookups_done += 1;
        self.out.push_back(Output::Done(result));
        if kind == LookupKind::Bootstrap {
            if answered == 0 {
                // Nobody answered (the seed's reply was lost, or it is down): try again later,
                // backing off, rather than waiting a refresh interval alone.
                let wait = self.rejoin.map_or(self.config.request_timeout, |(_, w)| w * 2);
                let wait = wait.min(self.config.refresh_interval);
                self.rejoin = Some((now + wait, wait));
            } else {
                self.rejoin = None;
                self.refresh_beyond_neighbours(now);
            }
        }
    }

    /// After joining: a lookup in every bucket above the nearest neighbour's, to fill them.
    fn refresh_beyond_neighbours(&mut self, now: Instant) {
        let Some(lowest) = self.table.lowest_bucket() else { return };
        for bucket in lowest + 1..super::id::ID_BITS {
            let target = self.local.id.random_in_bucket(bucket, &self.rng.id());
            if self.begin(LookupKind::Refresh, target, None, now).is_err() {
                break;
            }
        }
    }

    /// A contact sent us something: the table learns of it.
    fn see(&mut self, contact: Contact, now: Instant) {
        match self.table.insert(contact, now) {
            Inserted::Added => self.event(Event::ContactAdded(contact)),
            Inserted::Rejected(Rejection::LocalId) => {}
            Inserted::Rejected(_) => self.stats.contacts_rejected += 1,
            Inserted::Refreshed | Inserted::Queued => {}
        }
        let probes: Vec<Contact> = self.table.drain_probes().collect();
        for p in probes {
            self.send_probe(p, 0, now);
        }
    }

    fn send_probe(&mut self, to: Contact, attempt: u8, now: Instant) {
        self.stats.probes += 1;
        let target = self.local.id;
        self.send_request(to, Purpose::Probe { attempt }, now, |request_id| Message::FindNode {
            request_id,
            target,
        });
    }

    fn probe_failed(&mut self, id: &NodeId, now: Instant) {
        if let Some(ev) = self.table.probe_failed(id) {
            self.evicted(ev, now);
        }
    }

    fn evicted(&mut self, ev: Eviction, now: Instant) {
        self.stats.evictions += 1;
        self.event(Event::ContactEvicted(ev));
        let probes: Vec<Contact> = self.table.drain_probes().collect();
        for p in probes {
            self.send_probe(p, 0, now);
        }
    }

    fn send_request(
        &mut self,
        to: Contact,
        purpose: Purpose,
        now: Instant,
        msg: impl FnOnce(u64) -> Message,
    ) -> u64 {
        let request_id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        self.requests.insert(
            request_id,
            Request { to, purpose, deadline: now + self.config.request_timeout },
        );
        self.stats.requests_out += 1;
        self.send(to, msg(request_id));
        request_id
    }

    fn send(&mut self, to: Contact, msg: Message) {
        self.out.push_back(Output::Send { to, msg });
    }

    fn event(&mut self, ev: Event) {
        self.out.push_back(Output::Event(ev));
    }
}
