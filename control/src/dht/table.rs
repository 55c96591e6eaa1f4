//! The routing table: 256 k-buckets that prefer long-lived contacts, with per-network limits.
//!
//! Bucket `i` holds the contacts whose distance to the local id has its highest set bit at `i`
//! (see [`NodeId::bucket_index`]). Within a bucket, contacts are ordered least recently seen
//! first. A newcomer for a full bucket does not displace anyone: it waits in the bucket's
//! bounded replacement cache while the least recently seen contact is probed (the table asks for
//! the probe through [`RoutingTable::drain_probes`]; the node sends it and reports back). An
//! answer moves the old contact to the tail and drops the newcomer; a timeout evicts the old
//! contact and promotes the newest waiting one. Long-lived nodes are the likeliest to stay up,
//! and an attacker cannot flush a bucket by minting ids.
//!
//! Two further rules against poisoning: at most `max_per_prefix_bucket` contacts of one network
//! prefix per bucket and `max_per_prefix_table` in the whole table (see [`super::addr`]); and
//! only nodes that talked to us directly get in (the node inserts senders, never the contacts a
//! reply merely names).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::addr::{canonical_addr, is_contact_addr, NetPrefix};
use super::config::DhtConfig;
use super::id::{Distance, NodeId, ID_BITS};
use super::message::Contact;

/// What [`RoutingTable::insert`] did with a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// New in its bucket.
    Added,
    /// Already there: now the most recently seen.
    Refreshed,
    /// Its bucket is full: waiting in the replacement cache.
    Queued,
    /// Not taken.
    Rejected(Rejection),
}

/// Why a contact was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// It is the local node.
    #[error("the local id")]
    LocalId,
    /// Its address cannot be a node's (port 0, unspecified, multicast, broadcast).
    #[error("unusable address")]
    BadAddress,
    /// The id is known at another address; the known one is kept (a sender claiming someone
    /// else's id must not redirect that node's traffic, nor keep a dead entry alive).
    #[error("id known at another address")]
    AddressMismatch,
    /// Its bucket holds `max_per_prefix_bucket` contacts of its network already.
    #[error("too many contacts of its network in the bucket")]
    PrefixBucketLimit,
    /// The table holds `max_per_prefix_table` contacts of its network already.
    #[error("too many contacts of its network in the table")]
    PrefixTableLimit,
}

/// A contact leaving the table, and the waiting one that took its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eviction {
    /// The contact removed.
    pub evicted: Contact,
    /// The replacement promoted into the bucket, if one was waiting (and fits the limits).
    pub promoted: Option<Contact>,
}

#[derive(Debug, Clone)]
struct Entry {
    contact: Contact,
    prefix: NetPrefix,
    last_seen: Instant,
    failures: u8,
}

#[derive(Debug, Clone)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    /// Newcomers waiting for a slot, oldest first.
    replacements: Vec<Contact>,
    /// The entry being probed because a newcomer waits.
    probing: Option<NodeId>,
    /// Last lookup of an id in this bucket's range, or the table's creation.
    touched: Instant,
}

/// The routing table of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    local: NodeId,
    config: DhtConfig,
    buckets: Vec<Bucket>,
    per_prefix: HashMap<NetPrefix, usize>,
    len: usize,
    probes: Vec<Contact>,
}

impl RoutingTable {
    /// An empty table around `local`; `now` starts every bucket's refresh clock.
    pub fn new(local: NodeId, config: &DhtConfig, now: Instant) -> RoutingTable {
        let bucket =
            Bucket { entries: Vec::new(), replacements: Vec::new(), probing: None, touched: now };
        RoutingTable {
            local,
            config: config.clone(),
            buckets: vec![bucket; ID_BITS],
            per_prefix: HashMap::new(),
            len: 0,
            probes: Vec::new(),
        }
    }

    /// The local id.
    pub fn local_id(&self) -> NodeId {
        self.local
    }

    /// Contacts in the table (replacement caches not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no contact.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn prefix(&self, addr: &SocketAddr) -> NetPrefix {
        NetPrefix::of(addr.ip(), self.config.ipv4_prefix_bits, self.config.ipv6_prefix_bits)
    }

    /// Records that `contact` was seen (it sent us something) at `now`. See the module docs for
    /// what happens when its bucket is full; a probe it needs is collected by
    /// [`drain_probes`](Self::drain_probes).
    pub fn insert(&mut self, contact: Contact, now: Instant) -> Inserted {
        let Some(index) = self.local.bucket_index(&contact.id) else {
            return Inserted::Rejected(Rejection::LocalId);
        };
        if !is_contact_addr(&contact.addr) {
            return Inserted::Rejected(Rejection::BadAddress);
        }
        let contact = Contact::new(contact.id, canonical_addr(contact.addr));
        let bucket = &mut self.buckets[index];
        if let Some(pos) = bucket.entries.iter().position(|e| e.contact.id == contact.id) {
            if bucket.entries[pos].contact.addr != contact.addr {
                return Inserted::Rejected(Rejection::AddressMismatch);
            }
            let mut entry = bucket.entries.remove(pos);
            entry.last_seen = now;
            entry.failures = 0;
            bucket.entries.push(entry);
            if bucket.probing == Some(contact.id) {
                // The probed contact is alive: it keeps its slot and the newcomer goes.
                bucket.probing = None;
                bucket.replacements.pop();
                self.probe_next(index);
            }
            return Inserted::Refreshed;
        }
        let prefix = self.prefix(&contact.addr);
        let bucket = &self.buckets[index];
        let in_bucket = bucket.entries.iter().filter(|e| e.prefix == prefix).count();
        if in_bucket >= self.config.max_per_prefix_bucket {
            return Inserted::Rejected(Rejection::PrefixBucketLimit);
        }
        if self.per_prefix.get(&prefix).copied().unwrap_or(0) >= self.config.max_per_prefix_table {
            return Inserted::Rejected(Rejection::PrefixTableLimit);
        }
        if bucket.entries.len() < self.config.k {
            self.add_entry(index, contact, prefix, now);
            return Inserted::Added;
        }
        let cap = self.config.replacement_cache;
        let bucket = &mut self.buckets[index];
        bucket.replacements.retain(|c| c.id != contact.id);
        if cap == 0 {
            return Inserted::Queued;
        }
        if bucket.replacements.len() >= cap {
            bucket.replacements.remove(0);
        }
        bucket.replacements.push(contact);
        if bucket.probing.is_none() {
            self.probe_next(index);
        }
        Inserted::Queued
    }

    fn add_entry(&mut self, index: usize, contact: Contact, prefix: NetPrefix, now: Instant) {
        self.buckets[index].entries.push(Entry { contact, prefix, last_seen: now, failures: 0 });
        *self.per_prefix.entry(prefix).or_insert(0) += 1;
        self.len += 1;
    }

    /// Starts a probe of the bucket's least recently seen contact if newcomers wait.
    fn probe_next(&mut self, index: usize) {
        let bucket = &mut self.buckets[index];
        if bucket.probing.is_some() || bucket.replacements.is_empty() {
            return;
        }
        if let Some(oldest) = bucket.entries.first() {
            bucket.probing = Some(oldest.contact.id);
            self.probes.push(oldest.contact);
        }
    }

    /// Contacts to probe (send a liveness request to), collected since the last call. The node
    /// reports the outcome: any message from the contact (through [`insert`](Self::insert)) or
    /// [`probe_failed`](Self::probe_failed).
    pub fn drain_probes(&mut self) -> std::vec::Drain<'_, Contact> {
        self.probes.drain(..)
    }

    /// The probe of `id` went unanswered: evict it and promote the newest waiting contact.
    pub fn probe_failed(&mut self, id: &NodeId) -> Option<Eviction> {
        let index = self.local.bucket_index(id)?;
        if self.buckets[index].probing != Some(*id) {
            return None;
        }
        self.buckets[index].probing = None;
        let eviction = self.evict(index, id);
        self.probe_next(index);
        eviction
    }

    /// A lookup query to `id` went unanswered. After `max_failures` in a row the contact is
    /// replaced, if a replacement waits.
    pub fn record_failure(&mut self, id: &NodeId) -> Option<Eviction> {
        let index = self.local.bucket_index(id)?;
        let max = self.config.max_failures;
        let bucket = &mut self.buckets[index];
        let entry = bucket.entries.iter_mut().find(|e| e.contact.id == *id)?;
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures < max || bucket.replacements.is_empty() {
            return None;
        }
        if bucket.probing == Some(*id) {
            bucket.probing = None;
        }
        let eviction = self.evict(index, id);
        self.probe_next(index);
        eviction
    }

    /// Removes `id` (and promotes a waiting contact into its slot).
    pub fn remove(&mut self, id: &NodeId) -> Option<Eviction> {
        let index = self.local.bucket_index(id)?;
        if self.buckets[index].probing == Some(*id) {
            self.buckets[index].probing = None;
        }
        self.evict(index, id)
    }

    fn evict(&mut self, index: usize, id: &NodeId) -> Option<Eviction> {
        let pos = self.buckets[index].entries.iter().position(|e| e.contact.id == *id)?;
        let entry = self.buckets[index].entries.remove(pos);
        self.len -= 1;
        if let Some(count) = self.per_prefix.get_mut(&entry.prefix) {
            *count -= 1;
            if *count == 0 {
                self.per_prefix.remove(&entry.prefix);
            }
        }
        // Newest first: the most recently seen newcomer is the likeliest to be up. One that
        // no longer fits the prefix limits (others of its network got in meanwhile) is dropped.
        let mut promoted = None;
        while let Some(candidate) = self.buckets[index].replacements.pop() {
            let prefix = self.prefix(&candidate.addr);
            let in_bucket =
                self.buckets[index].entries.iter().filter(|e| e.prefix == prefix).count();
            let in_table = self.per_prefix.get(&prefix).copied().unwrap_or(0);
            if in_bucket < self.config.max_per_prefix_bucket
                && in_table < self.config.max_per_prefix_table
            {
                // It goes to the head: the least proven contact is the first to be probed when
                // the next newcomer arrives.
                let last_seen = entry.last_seen;
                self.add_entry(index, candidate, prefix, last_seen);
                let bucket = &mut self.buckets[index];
                let added = bucket.entries.pop().expect("just pushed");
                bucket.entries.insert(0, added);
                promoted = Some(candidate);
                break;
            }
        }
        Some(Eviction { evicted: entry.contact, promoted })
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// The contact with `id`, if in the table.
    pub fn get(&self, id: &NodeId) -> Option<Contact> {
        let index = self.local.bucket_index(id)?;
        self.buckets[index].entries.iter().find(|e| e.contact.id == *id).map(|e| e.contact)
    }

    /// The contacts of bucket `index`, least recently seen first.
    pub fn bucket(&self, index: usize) -> Vec<Contact> {
        self.buckets
            .get(index)
            .map_or_else(Vec::new, |b| b.entries.iter().map(|e| e.contact).collect())
    }

    /// The contacts waiting for a slot in bucket `index`, oldest first.
    pub fn replacements(&self, index: usize) -> &[Contact] {
        self.buckets.get(index).map_or(&[], |b| &b.replacements)
    }

    /// Every contact, in bucket order.
    pub fn contacts(&self) -> impl Iterator<Item = Contact> + '_ {
        self.buckets.iter().flat_map(|b| b.entries.iter().map(|e| e.contact))
    }

    /// The `count` contacts closest to `target`, closest first.
    pub fn closest(&self, target: &NodeId, count: usize) -> Vec<Contact> {
        self.closest_except(target, count, None)
    }

    /// [`closest`](Self::closest) without `except` (the requester, who has no use for itself).
    ///
    /// Buckets are visited in distance order rather than sorting the whole table. With `b` the
    /// target's bucket: contacts of bucket `b` are closer than 2^b to it; those of every bucket
    /// below `b` lie in [2^b, 2^(b+1)) (sorted together); and those of a bucket `i > b` lie in
    /// [2^i, 2^(i+1)), so higher buckets follow in order. Only the groups needed are sorted.
    pub fn closest_except(
        &self,
        target: &NodeId,
        count: usize,
        except: Option<&NodeId>,
    ) -> Vec<Contact> {
        let mut out = Vec::with_capacity(count.min(self.len));
        let mut group: Vec<(Distance, Contact)> = Vec::new();
        let mut take = |buckets: &mut dyn Iterator<Item = &Bucket>, out: &mut Vec<Contact>| {
            if out.len() >= count {
                return;
            }
            group.clear();
            for b in buckets {
                for e in &b.entries {
                    if Some(&e.contact.id) != except {
                        group.push((e.contact.id.distance(target), e.contact));
                    }
                }
            }
            let need = count - out.len();
            if group.len() > need {
                group.select_nth_unstable_by_key(need - 1, |e| e.0);
                group.truncate(need);
            }
            group.sort_unstable_by_key(|e| e.0);
            out.extend(group.iter().map(|(_, c)| *c));
        };
        match self.local.bucket_index(target) {
            None => {
                for b in &self.buckets {
                    take(&mut std::iter::once(b), &mut out);
                }
            }
            Some(t) => {
                take(&mut std::iter::once(&self.buckets[t]), &mut out);
                take(&mut self.buckets[..t].iter(), &mut out);
                for b in &self.buckets[t + 1..] {
                    take(&mut std::iter::once(b), &mut out);
                }
            }
        }
        out
    }

    /// Marks the bucket `target` falls in as refreshed at `now` (a lookup of it started).
    pub fn touch(&mut self, target: &NodeId, now: Instant) {
        if let Some(index) = self.local.bucket_index(target) {
            self.buckets[index].touched = now;
        }
    }

    /// Buckets due for a refresh: untouched for `interval`, from the lowest non-empty bucket up
    /// (buckets below it are empty because no node is that close, and stay so).
    pub fn stale_buckets(&self, now: Instant, interval: Duration) -> Vec<usize> {
        let Some(lowest) = self.buckets.iter().position(|b| !b.entries.is_empty()) else {
            return Vec::new();
        };
        (lowest..ID_BITS)
            .filter(|&i| now.saturating_duration_since(self.buckets[i].touched) >= interval)
            .collect()
    }

    /// The lowest non-empty bucket (where the local node's nearest neighbours are).
    pub fn lowest_bucket(&self) -> Option<usize> {
        self.buckets.iter().position(|b| !b.entries.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::super::id::SplitMix;
    use super::*;

    fn config() -> DhtConfig {
        DhtConfig {
            max_per_prefix_bucket: 100,
            max_per_prefix_table: 10_000,
            ..DhtConfig::default()
        }
    }

    /// A contact in its own /24: 10.(n>>8).(n&255).1.
    fn addr(n: u32) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, (n >> 8) as u8, n as u8, 1)), 4433)
    }

    /// An id in bucket `bucket` of a table around zero.
    fn id_in(bucket: usize, rng: &mut SplitMix) -> NodeId {
        NodeId::ZERO.random_in_bucket(bucket, &rng.id())
    }

    fn table(config: &DhtConfig) -> (RoutingTable, Instant) {
        let now = Instant::now();
        (RoutingTable::new(NodeId::ZERO, config, now), now)
    }

    #[test]
    fn contacts_land_in_the_bucket_of_their_distance() {
        let (mut t, now) = table(&config());
        let mut rng = SplitMix::new(1);
        for (n, bucket) in [255, 254, 200, 8, 7, 0].into_iter().enumerate() {
            let c = Contact::new(id_in(bucket, &mut rng), addr(n as u32));
            assert_eq!(t.insert(c, now), Inserted::Added);
            assert_eq!(t.bucket(bucket), vec![c]);
        }
        assert_eq!(t.len(), 6);
        assert_eq!(
            t.insert(Contact::new(NodeId::ZERO, addr(99)), now),
            Inserted::Rejected(Rejection::LocalId)
        );
    }

    #[test]
    fn seen_again_moves_to_the_tail() {
        let (mut t, now) = table(&config());
        let mut rng = SplitMix::new(2);
        let a = Contact::new(id_in(200, &mut rng), addr(1));
        let b = Contact::new(id_in(200, &mut rng), addr(2));
        t.insert(a, now);
        t.insert(b, now);
        assert_eq!(t.insert(a, now), Inserted::Refreshed);
        assert_eq!(t.bucket(200), vec![b, a]);
        let moved = Contact::new(a.id, addr(3));
        assert_eq!(t.insert(moved, now), Inserted::Rejected(Rejection::AddressMismatch));
        assert_eq!(t.get(&a.id), Some(a));
    }

    fn fill(t: &mut RoutingTable, bucket: usize, rng: &mut SplitMix, now: Instant) -> Vec<Contact> {
        let k = t.config.k;
        let contacts: Vec<Contact> =
            (0..k).map(|n| Contact::new(id_in(bucket, rng), addr(n as u32))).collect();
        for c in &contacts {
            assert_eq!(t.insert(*c, now), Inserted::Added);
        }
        contacts
    }

    #[test]
    fn full_bucket_probes_the_oldest_and_keeps_it_when_it_answers() {
        let (mut t, now) = table(&config());
        let mut rng = SplitMix::new(3);
        let old = fill(&mut t, 255, &mut rng, now);
        assert_eq!(t.drain_probes().count(), 0);
        let newcomer = Contact::new(id_in(255, &mut rng), addr(500));
        assert_eq!(t.insert(newcomer, now), Inserted::Queued);
        assert_eq!(t.drain_probes().collect::<Vec<_>>(), vec![old[0]]);
        assert_eq!(t.replacements(255), &[newcomer]);
        // A second newcomer waits without a second probe.
        let second = Contact::new(id_in(255, &mut rng), addr(501));
        assert_eq!(t.insert(second, now), Inserted::Queued);
        assert_eq!(t.drain_probes().count(), 0);
        // The oldest answers: it stays (now newest), the latest newcomer goes, and the other
        // waiting one gets its own probe of the next oldest.
        assert_eq!(t.insert(old[0], now), Inserted::Refreshed);
        assert!(t.contains(&old[0].id));
        assert_eq!(*t.bucket(255).last().unwrap(), old[0]);
        assert_eq!(t.replacements(255), &[newcomer]);
        assert_eq!(t.drain_probes().collect::<Vec<_>>(), vec![old[1]]);
        assert_eq!(t.len(), 20);
    }

    #[test]
    fn full_bucket_evicts_the_oldest_when_its_probe_fails() {
        let (mut t, now) = table(&config());
        let mut rng = SplitMix::new(4);
        let old = fill(&mut t, 254, &mut rng, now);
        let newcomer = Contact::new(id_in(254, &mut rng), addr(500));
        t.insert(newcomer, now);
        let probed: Vec<_> = t.drain_probes().collect();
        assert_eq!(probed, vec![old[0]]);
        // A failure report for a contact that is not being probed changes nothing.
        assert_eq!(t.probe_failed(&old[1].id), None);
        let ev = t.probe_failed(&old[0].id).unwrap();
        assert_eq!(ev, Eviction { evicted: old[0], promoted: Some(newcomer) });
        assert!(!t.contains(&old[0].id));
        assert!(t.contains(&newcomer.id));
        assert_eq!(t.len(), 20);
        assert!(t.replacements(254).is_empty());
        assert_eq!(t.drain_probes().count(), 0);
    }

    #[test]
    fn replacement_cache_is_bounded() {
        let cfg = DhtConfig { replacement_cache: 3, ..config() };
        let (mut t, now) = table(&cfg);
        let mut rng = SplitMix::new(5);
        fill(&mut t, 255, &mut rng, now);
        let waiting: Vec<Contact> =
            (0..10).map(|n| Contact::new(id_in(255, &mut rng), addr(600 + n))).collect();
        for c in &waiting {
            t.insert(*c, now);
        }
        assert_eq!(t.replacements(255), &waiting[7..]);
        assert_eq!(t.drain_probes().count(), 1);
    }

    #[test]
    fn repeated_failures_replace_a_contact_only_when_someone_waits() {
        let cfg = DhtConfig { max_failures: 2, ..config() };
        let (mut t, now) = table(&cfg);
        let mut rng = SplitMix::new(6);
        let old = fill(&mut t, 250, &mut rng, now);
        for _ in 0..5 {
            assert_eq!(t.record_failure(&old[5].id), None);
        }
        assert!(t.contains(&old[5].id), "kept while nobody waits");
        let newcomer = Contact::new(id_in(250, &mut rng), addr(700));
        t.insert(newcomer, now);
        let ev = t.record_failure(&old[5].id).unwrap();
        assert_eq!(ev.evicted, old[5]);
        assert_eq!(ev.promoted, Some(newcomer));
    }

    #[test]
    fn one_network_gets_limited_slots() {
        let cfg =
            DhtConfig { max_per_prefix_bucket: 2, max_per_prefix_table: 3, ..DhtConfig::default() };
        let (mut t, now) = table(&cfg);
        let mut rng = SplitMix::new(7);
        let same_net =
            |host: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, host)), 4433);
        assert_eq!(t.insert(Contact::new(id_in(255, &mut rng), same_net(1)), now), Inserted::Added);
        assert_eq!(t.insert(Contact::new(id_in(255, &mut rng), same_net(2)), now), Inserted::Added);
        assert_eq!(
            t.insert(Contact::new(id_in(255, &mut rng), same_net(3)), now),
            Inserted::Rejected(Rejection::PrefixBucketLimit)
        );
        assert_eq!(t.insert(Contact::new(id_in(254, &mut rng), same_net(4)), now), Inserted::Added);
        assert_eq!(
            t.insert(Contact::new(id_in(253, &mut rng), same_net(5)), now),
            Inserted::Rejected(Rejection::PrefixTableLimit)
        );
        // The mapped IPv6 form is the same network.
        let mapped: SocketAddr = "[::ffff:198.51.100.9]:4433".parse().unwrap();
        assert_eq!(
            t.insert(Contact::new(id_in(252, &mut rng), mapped), now),
            Inserted::Rejected(Rejection::PrefixTableLimit)
        );
        // Another /24 is fine, and evicting frees the network's slot.
        assert_eq!(t.insert(Contact::new(id_in(253, &mut rng), addr(9)), now), Inserted::Added);
        let victim = t.bucket(254)[0];
        t.remove(&victim.id);
        assert_eq!(t.insert(Contact::new(id_in(253, &mut rng), same_net(6)), now), Inserted::Added);
        let bad: SocketAddr = "0.0.0.0:4433".parse().unwrap();
        assert_eq!(
            t.insert(Contact::new(id_in(200, &mut rng), bad), now),
            Inserted::Rejected(Rejection::BadAddress)
        );
    }

    #[test]
    fn closest_matches_a_brute_force_sort() {
        let mut rng = SplitMix::new(8);
        let local = NodeId(rng.id());
        let now = Instant::now();
        let mut t = RoutingTable::new(local, &config(), now);
        // Random ids fill the far buckets; ids near `local` populate the near ones.
        for n in 0..3000u32 {
            let id = if n % 3 == 0 {
                local.random_in_bucket((rng.next_u64() % 40) as usize, &rng.id())
            } else {
                NodeId(rng.id())
            };
            t.insert(Contact::new(id, addr(n)), now);
        }
        let all: Vec<Contact> = t.contacts().collect();
        assert!(all.len() > 200, "{}", all.len());
        let mut targets: Vec<NodeId> = (0..200).map(|_| NodeId(rng.id())).collect();
        targets.push(local);
        targets.extend(all.iter().take(20).map(|c| c.id));
        targets.extend(
            (0..50).map(|_| local.random_in_bucket((rng.next_u64() % 256) as usize, &rng.id())),
        );
        for target in targets {
            for count in [1, 3, 20, 60, 10_000] {
                let mut expect = all.clone();
                expect.sort_by_key(|c| c.id.distance(&target));
                expect.truncate(count);
                assert_eq!(t.closest(&target, count), expect, "target {target} count {count}");
            }
            let except = all[0].id;
            let got = t.closest_except(&target, 20, Some(&except));
            assert!(!got.iter().any(|c| c.id == except));
            assert_eq!(got.len(), 20);
        }
    }

    #[test]
    fn untouched_buckets_become_stale() {
        let (mut t, now) = table(&config());
        let mut rng = SplitMix::new(9);
        assert!(t
            .stale_buckets(now + Duration::from_secs(7200), Duration::from_secs(3600))
            .is_empty());
        t.insert(Contact::new(id_in(250, &mut rng), addr(1)), now);
        let later = now + Duration::from_secs(3600);
        assert!(t.stale_buckets(now, Duration::from_secs(3600)).is_empty());
        assert_eq!(
            t.stale_buckets(later, Duration::from_secs(3600)),
            (250..256).collect::<Vec<_>>()
        );
        t.touch(&id_in(252, &mut rng), later);
        assert_eq!(
            t.stale_buckets(later, Duration::from_secs(3600)),
            vec![250, 251, 253, 254, 255]
        );
    }
}
