//! The replicated federation state: per origin node, its interests and registrations.
//!
//! Each origin (a bootstrap) owns its entries: only it writes them, every other node holds a
//! replica. A change is `(kind, realm, name) → (op, hlc)`; the newest hlc wins per key. Within
//! one origin two different ops with the same hlc can only come from a bug or a restart that
//! reused stamps; the tie goes to `Remove` so every replica picks the same winner without
//! looking at anything but the change (the origin is the same on both sides, so an origin-id
//! tie-break would decide nothing here).
//!
//! Removes stay as tombstones until `tombstone_ttl_ms` after their *hlc* (not after the local
//! time they arrived): every replica drops a tombstone at the same moment up to clock offset,
//! and a tombstone that arrives already past its lifetime is not stored, so two replicas never
//! hand a collected tombstone back and forth. A tombstone must outlive the longest partition
//! that anti-entropy is expected to heal; an add older than a collected tombstone that comes
//! back from a laggard is corrected by its origin (below), or expires with it.
//!
//! An origin's entries expire together when membership declares it dead or nothing refreshed
//! it for `origin_ttl_ms`. Its newest hlc is then kept as a floor for `tombstone_ttl_ms`:
//! changes at or below it are leftovers held by slower replicas and are dropped, so a dead
//! origin is not resurrected by them; a restarted origin stamps above it.
//!
//! Our own origin is authoritative: a received change about our own entries that disagrees
//! with what we hold (a replica of our previous life, say) is answered by re-stamping our truth
//! above it, which then wins everywhere.

use std::collections::{BTreeMap, HashMap};

use fovea_codec::frame::DeltaEntry;
use fovea_codec::{Id32, Pattern, Realm};

use super::hlc::{stamp_ms, Hlc};
use super::metrics::FederationMetrics;
use super::sync::entry_hash;

/// A federation node's id (its 32-byte node id).
pub type NodeId = Id32;

/// What an entry says exists at its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Subscribers for a pattern (wire kind 1).
    Interest,
    /// Providers of a procedure (wire kind 2).
    Registration,
}

impl Kind {
    /// The wire value.
    pub const fn wire(self) -> u8 {
        match self {
            Kind::Interest => 1,
            Kind::Registration => 2,
        }
    }

    /// From the wire value (the codec already rejects others).
    pub const fn from_wire(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Interest),
            2 => Some(Kind::Registration),
            _ => None,
        }
    }
}

/// Add or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// The entry exists (wire op 1).
    Add,
    /// The entry was removed (wire op 2); held as a tombstone.
    Remove,
}

impl Op {
    /// The wire value.
    pub const fn wire(self) -> u8 {
        match self {
            Op::Add => 1,
            Op::Remove => 2,
        }
    }

    /// From the wire value.
    pub const fn from_wire(v: u8) -> Option<Op> {
        match v {
            1 => Some(Op::Add),
            2 => Some(Op::Remove),
            _ => None,
        }
    }
}

/// The key of an entry within its origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryKey {
    /// Interest or registration.
    pub kind: Kind,
    /// Realm.
    pub realm: Realm,
    /// Pattern (interest) or procedure name (registration, a valid pattern too).
    pub name: Pattern,
}

/// The value of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Add or remove.
    pub op: Op,
    /// Stamp of the change.
    pub hlc: u64,
}

/// An entry that started or stopped being live (an add); what the indexes follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveChange {
    /// Whose entry.
    pub origin: NodeId,
    /// Which entry.
    pub key: EntryKey,
    /// True: now live; false: no longer live.
    pub live: bool,
}

/// Limits of the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// How long a tombstone is kept after its hlc.
    pub tombstone_ttl_ms: u64,
    /// How long an origin's entries live without a refresh.
    pub origin_ttl_ms: u64,
}

#[derive(Debug, Default)]
pub(super) struct OriginState {
    pub(super) entries: HashMap<EntryKey, Entry>,
    /// Wrapping sum of `entry_hash` over `entries`: the order-independent digest hash.
    pub(super) hash: u64,
    /// Newest hlc among `entries`; 0 when empty.
    pub(super) newest: u64,
    pub(super) last_refresh_ms: u64,
}

impl OriginState {
    fn put(&mut self, key: EntryKey, entry: Entry) {
        let added = entry_hash(&key, entry);
        if let Some(old) = self.entries.insert(key.clone(), entry) {
            self.hash = self.hash.wrapping_sub(entry_hash(&key, old));
        }
        self.hash = self.hash.wrapping_add(added);
        self.newest = self.newest.max(entry.hlc);
    }

    fn take(&mut self, key: &EntryKey) -> Option<Entry> {
        let old = self.entries.remove(key)?;
        self.hash = self.hash.wrapping_sub(entry_hash(key, old));
        if old.hlc == self.newest {
            self.newest = self.entries.values().map(|e| e.hlc).max().unwrap_or(0);
        }
        Some(old)
    }
}

/// What one applied change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored (new key or newer stamp).
    Stored,
    /// Already held with the same op and stamp.
    Duplicate,
    /// Lost to a newer change (or to a remove with the same stamp).
    Stale,
    /// Refused: its hlc is too far ahead of our clock.
    ClockAhead,
    /// A tombstone past its lifetime, or a leftover of an expired origin.
    Expired,
    /// About our own origin and wrong: we re-stamped our truth above it.
    Corrected,
}

/// The replicated state of one node: every origin's entries, ours included.
#[derive(Debug)]
pub struct Replica {
    pub(super) self_id: NodeId,
    pub(super) clock: Hlc,
    pub(super) origins: BTreeMap<NodeId, OriginState>,
    /// Expired origins: (newest hlc when they expired, until when the floor holds).
    floors: HashMap<NodeId, (u64, u64)>,
    pub(super) config: ReplicaConfig,
}

impl Replica {
    /// An empty replica for node `self_id`, with `clock` bounding remote stamps.
    pub fn new(self_id: NodeId, clock: Hlc, config: ReplicaConfig) -> Replica {
        Replica { self_id, clock, origins: BTreeMap::new(), floors: HashMap::new(), config }
    }

    /// Our node id.
    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// The clock (ANNOUNCE stamps come from it too).
    pub fn clock_mut(&mut self) -> &mut Hlc {
        &mut self.clock
    }

    /// A local change (a subscription or registration of this node appeared or went), stamped
    /// now. Returns the change to push to federation peers.
    pub fn local_change(
        &mut self,
        key: EntryKey,
        op: Op,
        now_ms: u64,
        changes: &mut Vec<LiveChange>,
    ) -> DeltaEntry {
        let hlc = self.clock.now(now_ms);
        let self_id = self.self_id;
        self.store(self_id, key.clone(), Entry { op, hlc }, now_ms, changes);
        delta_entry(&key, Entry { op, hlc })
    }

    /// Applies one received change of `origin` with last-writer-wins.
    pub fn apply(
        &mut self,
        origin: NodeId,
        change: &DeltaEntry,
        now_ms: u64,
        metrics: &mut FederationMetrics,
        changes: &mut Vec<LiveChange>,
    ) -> Applied {
        let (Some(kind), Some(op)) = (Kind::from_wire(change.kind), Op::from_wire(change.op))
        else {
            // The codec rejects these; a hand-built frame is not worth a panic.
            metrics.malformed_changes += 1;
            return Applied::Stale;
        };
        let key = EntryKey { kind, realm: change.realm.clone(), name: change.name.clone() };
        let incoming = Entry { op, hlc: change.hlc };
        let outcome = self.apply_entry(origin, key, incoming, now_ms, changes);
        match outcome {
            Applied::Stored => metrics.changes_applied += 1,
            Applied::Duplicate => metrics.duplicate_changes += 1,
            Applied::Stale => metrics.stale_changes += 1,
            Applied::ClockAhead => metrics.rejected_clock_offsets += 1,
            Applied::Expired => metrics.expired_changes += 1,
            Applied::Corrected => metrics.self_corrections += 1,
        }
        outcome
    }

    fn apply_entry(
        &mut self,
        origin: NodeId,
        key: EntryKey,
        incoming: Entry,
        now_ms: u64,
        changes: &mut Vec<LiveChange>,
    ) -> Applied {
        if self.clock.check(incoming.hlc, now_ms).is_err() {
            return Applied::ClockAhead;
        }
        if let Some(&(floor, _)) = self.floors.get(&origin) {
            if incoming.hlc <= floor {
                return Applied::Expired;
            }
        }
        // Checked above: the stamp is within the bound, so observing it cannot fail.
        let _ = self.clock.observe(incoming.hlc, now_ms);
        let held = self.origins.get(&origin).and_then(|o| o.entries.get(&key)).copied();
        if origin == self.self_id {
            return self.apply_own(key, incoming, held, now_ms, changes);
        }
        match held {
            Some(h) if h == incoming => return Applied::Duplicate,
            Some(h) if !wins(incoming, h) => return Applied::Stale,
            _ => {}
        }
        if incoming.op == Op::Remove && self.tombstone_expired(incoming.hlc, now_ms) {
            // Past its lifetime: it still deletes what it beats, but is not kept.
            if held.is_some() {
                self.delete(origin, &key, changes);
            }
            return Applied::Expired;
        }
        self.store(origin, key, incoming, now_ms, changes);
        Applied::Stored
    }

    fn apply_own(
        &mut self,
        key: EntryKey,
        incoming: Entry,
        held: Option<Entry>,
        now_ms: u64,
        changes: &mut Vec<LiveChange>,
    ) -> Applied {
        let truth = held.map_or(Op::Remove, |h| h.op);
        match held {
            Some(h) if h == incoming => Applied::Duplicate,
            Some(h) if !wins(incoming, h) => Applied::Stale,
            None if incoming.op == Op::Remove => {
                // Absent here means removed: the tombstone agrees, keep it so digests match.
                if self.tombstone_expired(incoming.hlc, now_ms) {
                    return Applied::Expired;
                }
                let self_id = self.self_id;
                self.store(self_id, key, incoming, now_ms, changes);
                Applied::Stored
            }
            _ => {
                let hlc = self.clock.now(now_ms);
                let self_id = self.self_id;
                self.store(self_id, key, Entry { op: truth, hlc }, now_ms, changes);
                Applied::Corrected
            }
        }
    }

    fn tombstone_expired(&self, hlc: u64, now_ms: u64) -> bool {
        stamp_ms(hlc).saturating_add(self.config.tombstone_ttl_ms) <= now_ms
    }

    fn store(
        &mut self,
        origin: NodeId,
        key: EntryKey,
        entry: Entry,
        now_ms: u64,
        changes: &mut Vec<LiveChange>,
    ) {
        let state = self
            .origins
            .entry(origin)
            .or_insert_with(|| OriginState { last_refresh_ms: now_ms, ..OriginState::default() });
        let was_live = state.entries.get(&key).is_some_and(|e| e.op == Op::Add);
        let live = entry.op == Op::Add;
        state.put(key.clone(), entry);
        if was_live != live {
            changes.push(LiveChange { origin, key, live });
        }
    }

    fn delete(&mut self, origin: NodeId, key: &EntryKey, changes: &mut Vec<LiveChange>) {
        let Some(state) = self.origins.get_mut(&origin) else { return };
        if let Some(old) = state.take(key) {
            if old.op == Op::Add {
                changes.push(LiveChange { origin, key: key.clone(), live: false });
            }
        }
    }

    /// Evidence that `origin` is alive (an ANNOUNCE with a newer stamp, membership says alive):
    /// its entries' TTL starts over.
    pub fn refresh(&mut self, origin: NodeId, now_ms: u64) {
        if let Some(state) = self.origins.get_mut(&origin) {
            state.last_refresh_ms = state.last_refresh_ms.max(now_ms);
        }
    }

    /// `origin` is back (membership up again, a newer ANNOUNCE): its floor goes, so the
    /// entries it still holds are accepted again when anti-entropy brings them. It was alive
    /// on the other side of a partition, not dead; whatever it removed meanwhile, it corrects.
    pub fn revive(&mut self, origin: NodeId) {
        self.floors.remove(&origin);
    }

    /// Drops every entry of `origin` (membership declared it dead, or its TTL passed) and keeps
    /// its newest stamp as a floor against leftovers. Returns how many entries went.
    pub fn expire_origin(
        &mut self,
        origin: NodeId,
        now_ms: u64,
        changes: &mut Vec<LiveChange>,
    ) -> usize {
        if origin == self.self_id {
            return 0;
        }
        let Some(state) = self.origins.remove(&origin) else { return 0 };
        let until = now_ms.saturating_add(self.config.tombstone_ttl_ms);
        let floor = self.floors.get(&origin).map_or(0, |f| f.0).max(state.newest);
        self.floors.insert(origin, (floor, until));
        let count = state.entries.len();
        for (key, entry) in state.entries {
            if entry.op == Op::Add {
                changes.push(LiveChange { origin, key, live: false });
            }
        }
        count
    }

    /// Time passes: collects tombstones past their lifetime, expires origins not refreshed
    /// within `origin_ttl_ms`, forgets floors past theirs.
    pub fn tick(
        &mut self,
        now_ms: u64,
        metrics: &mut FederationMetrics,
        changes: &mut Vec<LiveChange>,
    ) {
        self.collect_tombstones(now_ms, metrics);
        let ttl = self.config.origin_ttl_ms;
        let stale: Vec<NodeId> = self
            .origins
            .iter()
            .filter(|(id, s)| {
                **id != self.self_id && s.last_refresh_ms.saturating_add(ttl) <= now_ms
            })
            .map(|(id, _)| *id)
            .collect();
        for origin in stale {
            self.expire_origin(origin, now_ms, changes);
            metrics.origins_expired += 1;
        }
        self.floors.retain(|_, (_, until)| *until > now_ms);
    }

    pub(super) fn collect_tombstones(&mut self, now_ms: u64, metrics: &mut FederationMetrics) {
        let ttl = self.config.tombstone_ttl_ms;
        for state in self.origins.values_mut() {
            let dead: Vec<EntryKey> = state
                .entries
                .iter()
                .filter(|(_, e)| {
                    e.op == Op::Remove && stamp_ms(e.hlc).saturating_add(ttl) <= now_ms
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in dead {
                state.take(&key);
                metrics.tombstones_collected += 1;
            }
        }
        self.origins.retain(|id, s| *id == self.self_id || !s.entries.is_empty());
    }

    /// The entry of `origin` under `key`, tombstones included.
    pub fn get(&self, origin: &NodeId, key: &EntryKey) -> Option<Entry> {
        self.origins.get(origin)?.entries.get(key).copied()
    }

    /// Origins held, in id order.
    pub fn origins(&self) -> impl Iterator<Item = &NodeId> {
        self.origins.keys()
    }

    /// Live entries (adds) of `origin`.
    pub fn live_entries(&self, origin: &NodeId) -> impl Iterator<Item = &EntryKey> {
        self.origins
            .get(origin)
            .into_iter()
            .flat_map(|s| s.entries.iter().filter(|(_, e)| e.op == Op::Add).map(|(k, _)| k))
    }

    /// Every entry, tombstones included, in a canonical order: what two converged replicas
    /// agree on exactly (tests compare it).
    pub fn snapshot(&self) -> Vec<(NodeId, EntryKey, Entry)> {
        let mut all: Vec<(NodeId, EntryKey, Entry)> = self
            .origins
            .iter()
            .flat_map(|(id, s)| s.entries.iter().map(|(k, e)| (*id, k.clone(), *e)))
            .collect();
        all.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        all
    }

    /// Entries held, tombstones included.
    pub fn len(&self) -> usize {
        self.origins.values().map(|s| s.entries.len()).sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Does `incoming` beat `held`? Newer stamp; on a tie, remove beats add.
fn wins(incoming: Entry, held: Entry) -> bool {
    (incoming.hlc, incoming.op == Op::Remove) > (held.hlc, held.op == Op::Remove)
}

/// The wire form of one entry.
pub(super) fn delta_entry(key: &EntryKey, entry: Entry) -> DeltaEntry {
    DeltaEntry {
        kind: key.kind.wire(),
        op: entry.op.wire(),
        hlc: entry.hlc,
        realm: key.realm.clone(),
        name: key.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::hlc::stamp;
    use super::*;

    const A: NodeId = [0xaa; 32];
    const B: NodeId = [0xbb; 32];
    const CONFIG: ReplicaConfig = ReplicaConfig { tombstone_ttl_ms: 60_000, origin_ttl_ms: 30_000 };

    fn key(name: &'static str) -> EntryKey {
        EntryKey {
            kind: Kind::Interest,
            realm: Realm::from_static("acme"),
            name: Pattern::from_static(name),
        }
    }

    fn change(name: &'static str, op: Op, hlc: u64) -> DeltaEntry {
        delta_entry(&key(name), Entry { op, hlc })
    }

    fn replica(id: NodeId) -> Replica {
        Replica::new(id, Hlc::new(1_000), CONFIG)
    }

    #[test]
    fn newer_stamp_wins_in_any_arrival_order() {
        let mut m = FederationMetrics::default();
        let mut c = Vec::new();
        let add = change("a.*", Op::Add, stamp(100, 0));
        let remove = change("a.*", Op::Remove, stamp(200, 0));
        let mut r1 = replica(A);
        r1.apply(B, &add, 1_000, &mut m, &mut c);
        r1.apply(B, &remove, 1_000, &mut m, &mut c);
        let mut r2 = replica(A);
        r2.apply(B, &remove, 1_000, &mut m, &mut c);
        assert_eq!(r2.apply(B, &add, 1_000, &mut m, &mut c), Applied::Stale);
        assert_eq!(r1.snapshot(), r2.snapshot());
        assert_eq!(r1.get(&B, &key("a.*")).map(|e| e.op), Some(Op::Remove));
    }

    #[test]
    fn same_stamp_different_op_is_a_conflict_won_by_remove() {
        let mut m = FederationMetrics::default();
        let mut c = Vec::new();
        let mut r = replica(A);
        r.apply(B, &change("x", Op::Remove, stamp(5, 1)), 1_000, &mut m, &mut c);
        let outcome = r.apply(B, &change("x", Op::Add, stamp(5, 1)), 1_000, &mut m, &mut c);
        assert_eq!(outcome, Applied::Stale);
        assert_eq!(r.get(&B, &key("x")).map(|e| e.op), Some(Op::Remove));
        assert_eq!(m.stale_changes, 1);
    }

    #[test]
    fn stamp_beyond_offset_is_rejected_and_counted() {
        let mut m = FederationMetrics::default();
        let mut c = Vec::new();
        let mut r = replica(A);
        let far = change("x", Op::Add, stamp(10_000, 0));
        assert_eq!(r.apply(B, &far, 1_000, &mut m, &mut c), Applied::ClockAhead);
        assert_eq!(m.rejected_clock_offsets, 1);
        assert!(r.is_empty());
        // Once our clock catches up the same change is accepted.
        assert_eq!(r.apply(B, &far, 9_500, &mut m, &mut c), Applied::Stored);
    }

    #[test]
    fn live_changes_follow_adds_only() {
        let mut m = FederationMetrics::default();
        let mut c = Vec::new();
        let mut r = replica(A);
        r.apply(B, &change("x", Op::Remove, stamp(1, 0)), 1_000, &mut m, &mut c);
        assert!(c.is_empty());
        r.apply(B, &change("x", Op::Add, stamp(2, 0)), 1_000, &mut m, &mut c);
        r.apply(B, &change("x", Op::Add, stamp(3, 0)), 1_000, &mut m, &mut c);
        r.apply(B, &change("x", Op::Remove, stamp(4, 0)), 1_000, &mut m, &mut c);
        let lives: Vec<bool> = c.iter().map(|l| l.live).collect();
        assert_eq!(lives, vec![true, false]);
    }

    #[test]
    fn tombstones_are_collected_by_their_stamp_and_expired_ones_not_stored() {
        let mut m = FederationMetrics::default();
        let mut c = Vec::new();
        let mut r = replica(A);
        r.apply(B, &change("x", Op::Remove, stamp(1_000, 0)), 1_000, &mut m, &mut c);
        r.refresh(B, 61_000);
        r.tick(61_000, &mut m, &mut c);
        assert!(r.get(&B, &key("x")).is_none());
        assert_eq!(m.tombstones_collected, 1);
        let late = change("x", Op::Remove, stamp(1_000, 0));
        assert_eq!(r.apply(B, &late, 61_000, &mut m, &mut c), Applied::Expired);
        assert!(r.get(&B, &key("x")).is_none());
    }

    #[test]
    fn origin_expires_without_refresh_and_its_leftovers_stay_out() {
        let mut m = FederationMetrics::default();
        let mut c = Vec::new();
        let mut r = replica(A);
        r.apply(B, &change("x", Op::Add, stamp(1_000, 0)), 1_000, &mut m, &mut c);
        r.tick(20_000, &mut m, &mut c);
        assert!(r.get(&B, &key("x")).is_some());
        r.tick(31_000, &mut m, &mut c);
        assert!(r.get(&B, &key("x")).is_none());
        assert_eq!(c.last().map(|l| l.live), Some(false));
        let leftover = change("x", Op::Add, stamp(1_000, 0));
        assert_eq!(r.apply(B, &leftover, 31_000, &mut m, &mut c), Applied::Expired);
        // Until it is seen alive again: then what it held comes back.
        let mut revived = replica(A);
        revived.apply(B, &leftover, 1_000, &mut m, &mut c);
        revived.expire_origin(B, 2_000, &mut c);
        assert_eq!(revived.apply(B, &leftover, 2_000, &mut m, &mut c), Applied::Expired);
        revived.revive(B);
        assert_eq!(revived.apply(B, &leftover, 2_000, &mut m, &mut c), Applied::Stored);
        // A restarted origin stamps above the floor and is accepted.
        let fresh = change("x", Op::Add, stamp(31_000, 0));
        assert_eq!(r.apply(B, &fresh, 31_000, &mut m, &mut c), Applied::Stored);
    }

    #[test]
    fn own_origin_corrects_a_stale_replica_of_itself() {
        let mut m = FederationMetrics::default();
        let mut c = Vec::new();
        let mut r = replica(A);
        // A replica of our previous life says we have "x"; we do not.
        let ghost = change("x", Op::Add, stamp(900, 3));
        assert_eq!(r.apply(A, &ghost, 1_000, &mut m, &mut c), Applied::Corrected);
        let held = r.get(&A, &key("x")).unwrap();
        assert_eq!(held.op, Op::Remove);
        assert!(held.hlc > ghost.hlc);
        assert_eq!(m.self_corrections, 1);
    }
}
