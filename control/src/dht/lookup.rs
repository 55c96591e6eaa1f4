//! One iterative lookup: a shortlist of candidates ordered by distance to the target, queried
//! α at a time, that converges on the k closest nodes that answer.
//!
//! The lookup knows nothing of request ids, messages or timers: the node sends what
//! [`Lookup::next_queries`] returns and reports each outcome ([`Lookup::on_nodes`],
//! [`Lookup::on_value`], [`Lookup::on_timeout`], [`Lookup::on_failure`]). It ends when the k closest
//! candidates that have not failed have all answered (nothing closer is left to ask), when a
//! FIND_VALUE finds records, or after `max_queries_per_lookup` queries.
//!
//! Hops: a contact from the local table is one hop away, one named by a reply from a contact at
//! `h` hops is `h + 1`. A lookup's hop count is the largest among the k closest that answered:
//! the sequential round trips it took to reach them.
//!
//! Replies are screened before they touch the shortlist: truncated to k; entries with our own
//! id, the replier's own id, a duplicate id or an unusable address are rejected (counted); and
//! entries that are not closer than the current k-th best are ignored, since a reply claims to
//! list nodes close to the target and those cannot change the result. Nothing a reply names goes
//! into the routing table (only nodes that talk to us do), so a lying node can waste a few
//! queries but not poison the table.

use std::time::{Duration, Instant};

use super::addr::{canonical_addr, is_contact_addr};
use super::config::DhtConfig;
use super::id::{Distance, NodeId};
use super::message::{Contact, Record};

/// Identifies a lookup for its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// What a lookup is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// FIND_NODE: the k closest nodes to an id.
    FindNode,
    /// FIND_VALUE: the records under a key.
    FindValue,
    /// The FIND_NODE phase of a STORE, then STORE at the k closest found.
    Store,
    /// A bucket refresh (a FIND_NODE of a random id in the bucket).
    Refresh,
    /// The first FIND_NODE of our own id after joining.
    Bootstrap,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupResult {
    /// Which lookup.
    pub id: LookupId,
    /// Its target id or key.
    pub target: NodeId,
    /// What it was for.
    pub kind: LookupKind,
    /// Up to k closest nodes that answered, closest first.
    pub closest: Vec<Contact>,
    /// FIND_VALUE: the records found (empty: none found).
    pub records: Vec<Record>,
    /// STORE: nodes that accepted the record.
    pub stored: usize,
    /// Sequential round trips to the closest nodes (see the module docs).
    pub hops: u32,
    /// Queries sent.
    pub queries: u32,
    /// Queries that failed (timed out or answered with an error).
    pub failures: u32,
    /// Reply entries rejected as malformed, duplicate, or our own id.
    pub rejected: u32,
    /// Time from start to completion.
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    contact: Contact,
    distance: Distance,
    hops: u32,
    state: State,
    attempts: u8,
}

/// How a reply's entries were screened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Screened {
    /// New candidates.
    pub accepted: usize,
    /// Rejected: our own id, the replier's, duplicates, unusable addresses, beyond k.
    pub rejected: usize,
    /// Valid but not closer than the current k-th best (or already known).
    pub ignored: usize,
}

/// The state of one lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    id: LookupId,
    target: NodeId,
    kind: LookupKind,
    local: NodeId,
    k: usize,
    alpha: usize,
    max_candidates: usize,
    max_queries: usize,
    max_value_len: usize,
    retries: u8,
    candidates: Vec<Candidate>,
    queries: u32,
    failures: u32,
    rejected: u32,
    records: Vec<Record>,
    started: Instant,
}

impl Lookup {
    /// A lookup of `target` starting from `seeds` (the local table's closest contacts).
    pub fn new(
        id: LookupId,
        kind: LookupKind,
        target: NodeId,
        local: NodeId,
        seeds: &[Contact],
        config: &DhtConfig,
        now: Instant,
    ) -> Lookup {
        let mut lookup = Lookup {
            id,
            target,
            kind,
            local,
            k: config.k.max(1),
            alpha: config.alpha.max(1),
            max_candidates: config.k.max(1) * config.shortlist_factor.max(1),
            max_queries: config.max_queries_per_lookup,
            max_value_len: config.max_value_len,
            retries: config.query_retries,
            candidates: Vec::new(),
            queries: 0,
            failures: 0,
            rejected: 0,
            records: Vec::new(),
            started: now,
        };
        for seed in seeds {
            lookup.add_candidate(*seed, 1);
        }
        lookup
    }

    /// Its id.
    pub fn id(&self) -> LookupId {
        self.id
    }

    /// Its target.
    pub fn target(&self) -> NodeId {
        self.target
    }

    /// What it is for.
    pub fn kind(&self) -> LookupKind {
        self.kind
    }

    /// Whether replies are FIND_VALUE answers.
    pub fn wants_value(&self) -> bool {
        self.kind == LookupKind::FindValue
    }

    fn add_candidate(&mut self, contact: Contact, hops: u32) -> bool {
        if contact.id == self.local || self.candidates.iter().any(|c| c.contact.id == contact.id) {
            return false;
        }
        let distance = contact.id.distance(&self.target);
        let pos = self.candidates.partition_point(|c| c.distance < distance);
        if pos >= self.max_candidates {
            return false;
        }
        self.candidates
            .insert(pos, Candidate { contact, distance, hops, state: State::Waiting, attempts: 0 });
        self.candidates.truncate(self.max_candidates);
        true
    }

    /// The k closest candidates that have not failed.
    fn window(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.iter().filter(|c| c.state != State::Failed).take(self.k)
    }

    fn in_flight(&self) -> usize {
        self.candidates.iter().filter(|c| c.state == State::InFlight).count()
    }

    /// Contacts to query now, marked in flight: the closest not yet asked within the window,
    /// up to α in flight at once.
    pub fn next_queries(&mut self) -> Vec<Contact> {
        let mut out = Vec::new();
        if self.is_done() {
            return out;
        }
        let mut in_flight = self.in_flight();
        while in_flight < self.alpha && (self.queries as usize) < self.max_queries {
            let k = self.k;
            let next = self
                .candidates
                .iter_mut()
                .filter(|c| c.state != State::Failed)
                .take(k)
                .find(|c| c.state == State::Waiting);
            let Some(c) = next else { break };
            c.state = State::InFlight;
            c.attempts = c.attempts.saturating_add(1);
            out.push(c.contact);
            in_flight += 1;
            self.queries += 1;
        }
        out
    }

    fn answered(&mut self, from: &NodeId) -> Option<u32> {
        let c = self.candidates.iter_mut().find(|c| c.contact.id == *from)?;
        if c.state != State::InFlight {
            return None;
        }
        c.state = State::Answered;
        Some(c.hops)
    }

    /// A NODES reply from `from`; screens the entries (see the module docs).
    pub fn on_nodes(&mut self, from: &NodeId, nodes: &[Contact]) -> Screened {
        let mut screened = Screened::default();
        let Some(hops) = self.answered(from) else {
            return screened;
        };
        if nodes.len() > self.k {
            screened.rejected += nodes.len() - self.k;
        }
        for (i, node) in nodes.iter().take(self.k).enumerate() {
            let duplicate = nodes[..i].iter().any(|n| n.id == node.id);
            if node.id == self.local
                || node.id == *from
                || duplicate
                || !is_contact_addr(&node.addr)
            {
                screened.rejected += 1;
                continue;
            }
            let distance = node.id.distance(&self.target);
            let kth = self.window().nth(self.k - 1).map(|c| c.distance);
            if kth.is_some_and(|kth| distance >= kth) {
                screened.ignored += 1;
                continue;
            }
            let contact = Contact::new(node.id, canonical_addr(node.addr));
            if self.add_candidate(contact, hops + 1) {
                screened.accepted += 1;
            } else {
                screened.ignored += 1;
            }
        }
        self.rejected += screened.rejected as u32;
        screened
    }

    /// A VALUE reply from `from`. Records with an oversized value or a zero TTL are dropped;
    /// any left end a FIND_VALUE.
    pub fn on_value(&mut self, from: &NodeId, records: &[Record]) {
        if self.answered(from).is_none() {
            return;
        }
        for r in records.iter().take(self.k) {
            let valid = r.ttl_s > 0 && r.value.len() <= self.max_value_len;
            if !valid {
                self.rejected += 1;
            } else if self.wants_value() && !self.records.iter().any(|x| x.publisher == r.publisher)
            {
                self.records.push(r.clone());
            }
        }
    }

    /// The query to `from` timed out: it is asked again up to `query_retries` times, then it
    /// counts as failed.
    pub fn on_timeout(&mut self, from: &NodeId) {
        let retries = self.retries;
        if let Some(c) = self.candidates.iter_mut().find(|c| c.contact.id == *from) {
            if c.state == State::InFlight && c.attempts <= retries {
                c.state = State::Waiting;
                return;
            }
        }
        self.on_failure(from);
    }

    /// The query to `from` failed for good (an ERROR answer, or out of retries).
    pub fn on_failure(&mut self, from: &NodeId) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.contact.id == *from) {
            if c.state == State::InFlight {
                c.state = State::Failed;
                self.failures += 1;
            }
        }
    }

    /// Whether the lookup has its answer.
    pub fn is_done(&self) -> bool {
        if !self.records.is_empty() {
            return true;
        }
        if self.queries as usize >= self.max_queries && self.in_flight() == 0 {
            return true;
        }
        self.window().all(|c| c.state == State::Answered)
    }

    /// The k closest candidates that answered, closest first.
    pub fn closest(&self) -> Vec<Contact> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Answered)
            .take(self.k)
            .map(|c| c.contact)
            .collect()
    }

    /// The result, with `stored` STORE acknowledgements, completed at `now`.
    pub fn result(&self, stored: usize, now: Instant) -> LookupResult {
        let hops = self
            .candidates
            .iter()
            .filter(|c| c.state == State::Answered)
            .take(self.k)
            .map(|c| c.hops)
            .max()
            .unwrap_or(0);
        LookupResult {
            id: self.id,
            target: self.target,
            kind: self.kind,
            closest: self.closest(),
            records: self.records.clone(),
            stored,
            hops,
            queries: self.queries,
            failures: self.failures,
            rejected: self.rejected,
            elapsed: now.saturating_duration_since(self.started),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use bytes::Bytes;

    use super::super::id::SplitMix;
    use super::*;

    fn addr(n: u32) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8)),
            4433,
        )
    }

    /// A network where every node knows every other: replies hold the true k closest.
    struct World {
        nodes: Vec<Contact>,
    }

    impl World {
        fn new(n: u32, rng: &mut SplitMix) -> World {
            World { nodes: (0..n).map(|i| Contact::new(NodeId(rng.id()), addr(i + 1))).collect() }
        }

        fn closest(&self, target: &NodeId, k: usize) -> Vec<Contact> {
            let mut all = self.nodes.clone();
            all.sort_by_key(|c| c.id.distance(target));
            all.truncate(k);
            all
        }

        /// What `node` would answer if it knew only the nodes sharing a prefix with it, the
        /// way a real table is skewed towards its own neighbourhood: some of each bucket.
        fn partial_view(&self, node: &NodeId, target: &NodeId, k: usize) -> Vec<Contact> {
            let mut per_bucket: HashMap<usize, usize> = HashMap::new();
            let mut known: Vec<Contact> = Vec::new();
            let mut by_distance = self.nodes.clone();
            by_distance.sort_by_cached_key(|c| c.id.distance(node));
            for c in by_distance {
                let Some(b) = node.bucket_index(&c.id) else { continue };
                let n = per_bucket.entry(b).or_insert(0);
                if *n < 3 {
                    *n += 1;
                    known.push(c);
                }
            }
            known.sort_by_cached_key(|c| c.id.distance(target));
            known.truncate(k);
            known
        }
    }

    fn config() -> DhtConfig {
        DhtConfig::default()
    }

    #[test]
    fn converges_on_the_true_k_closest() {
        let mut rng = SplitMix::new(11);
        let world = World::new(1000, &mut rng);
        let local = NodeId(rng.id());
        let now = Instant::now();
        for round in 0..10 {
            let target = NodeId(rng.id());
            let seeds = world.partial_view(&local, &target, 20);
            let mut l = Lookup::new(
                LookupId(round),
                LookupKind::FindNode,
                target,
                local,
                &seeds,
                &config(),
                now,
            );
            let mut steps = 0;
            while !l.is_done() {
                let batch = l.next_queries();
                assert!(!batch.is_empty() && batch.len() <= 3, "stalled or over alpha");
                for c in batch {
                    let reply = world.partial_view(&c.id, &target, 20);
                    l.on_nodes(&c.id, &reply);
                }
                steps += 1;
                assert!(steps < 200);
            }
            let r = l.result(0, now);
            assert_eq!(r.closest, world.closest(&target, 20), "round {round}");
            assert!(r.hops >= 1 && r.hops <= 11, "hops {}", r.hops);
            assert!(r.queries as usize <= config().max_queries_per_lookup);
        }
    }

    #[test]
    fn keeps_alpha_in_flight_and_survives_timeouts() {
        let mut rng = SplitMix::new(12);
        let world = World::new(500, &mut rng);
        let local = NodeId(rng.id());
        let target = NodeId(rng.id());
        let now = Instant::now();
        let seeds = world.partial_view(&local, &target, 20);
        let mut l =
            Lookup::new(LookupId(1), LookupKind::FindNode, target, local, &seeds, &config(), now);
        // Every third node never answers (its timeout is reported as a failure).
        let dead = |c: &Contact| c.id.0[31].is_multiple_of(3);
        let mut in_flight: Vec<Contact> = Vec::new();
        while !l.is_done() {
            in_flight.extend(l.next_queries());
            assert!(in_flight.len() <= 3);
            let c = in_flight.remove(0);
            if dead(&c) {
                l.on_failure(&c.id);
            } else {
                l.on_nodes(&c.id, &world.partial_view(&c.id, &target, 20));
            }
        }
        let r = l.result(0, now);
        assert!(r.failures > 0);
        let live: Vec<Contact> =
            world.closest(&target, 200).into_iter().filter(|c| !dead(c)).take(20).collect();
        assert_eq!(r.closest, live, "the k closest live nodes");
    }

    #[test]
    fn screens_replies() {
        let mut rng = SplitMix::new(13);
        let local = NodeId(rng.id());
        let target = NodeId(rng.id());
        let now = Instant::now();
        let seed = Contact::new(NodeId(rng.id()), addr(1));
        let cfg = DhtConfig { k: 4, ..config() };
        let mut l =
            Lookup::new(LookupId(1), LookupKind::FindNode, target, local, &[seed], &cfg, now);
        assert_eq!(l.next_queries(), vec![seed]);
        let good = Contact::new(target.random_in_bucket(10, &rng.id()), addr(2));
        let bad_addr: SocketAddr = "0.0.0.0:4433".parse().unwrap();
        let reply = vec![
            good,
            good,                                     // duplicate
            Contact::new(local, addr(3)),             // our own id
            seed,                                     // the replier itself
            Contact::new(NodeId(rng.id()), bad_addr), // malformed address
            Contact::new(NodeId(rng.id()), addr(4)),  // beyond k = 4
        ];
        let s = l.on_nodes(&seed.id, &reply);
        assert_eq!(s, Screened { accepted: 1, rejected: 5, ignored: 0 });
        // A reply from a node we did not ask (or asked already) changes nothing.
        let stranger = NodeId(rng.id());
        assert_eq!(
            l.on_nodes(&stranger, &[Contact::new(NodeId(rng.id()), addr(5))]),
            Screened::default()
        );
        assert_eq!(
            l.on_nodes(&seed.id, &[Contact::new(NodeId(rng.id()), addr(6))]),
            Screened::default()
        );
        // Once k candidates are closer, farther entries are ignored.
        assert_eq!(l.next_queries(), vec![good]);
        let near: Vec<Contact> = (0..4)
            .map(|i| Contact::new(target.random_in_bucket(5, &rng.id()), addr(10 + i)))
            .collect();
        assert_eq!(l.on_nodes(&good.id, &near).accepted, 4);
        let far = Contact::new(target.random_in_bucket(200, &rng.id()), addr(20));
        let next = l.next_queries();
        assert_eq!(next.len(), 3);
        assert_eq!(l.on_nodes(&next[0].id, &[far]).ignored, 1);
    }

    #[test]
    fn find_value_stops_at_the_first_records() {
        let mut rng = SplitMix::new(14);
        let world = World::new(300, &mut rng);
        let local = NodeId(rng.id());
        let key = NodeId(rng.id());
        let now = Instant::now();
        let seeds = world.partial_view(&local, &key, 20);
        let mut l =
            Lookup::new(LookupId(1), LookupKind::FindValue, key, local, &seeds, &config(), now);
        let first = l.next_queries();
        let rec = Record { publisher: NodeId([1; 32]), ttl_s: 60, value: Bytes::from_static(b"v") };
        let bad = Record { publisher: NodeId([2; 32]), ttl_s: 0, value: Bytes::from_static(b"v") };
        l.on_value(&first[0].id, &[rec.clone(), bad]);
        assert!(l.is_done());
        let r = l.result(0, now);
        assert_eq!(r.records, vec![rec]);
        assert_eq!(r.rejected, 1);
        assert!(l.next_queries().is_empty());
    }

    #[test]
    fn empty_seed_list_is_done_at_once() {
        let now = Instant::now();
        let l = Lookup::new(
            LookupId(1),
            LookupKind::FindNode,
            NodeId([1; 32]),
            NodeId::ZERO,
            &[],
            &config(),
            now,
        );
        assert!(l.is_done());
        assert!(l.result(0, now).closest.is_empty());
    }
}
