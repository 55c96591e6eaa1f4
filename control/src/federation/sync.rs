//! Anti-entropy: SYNC_DIGEST summaries, the SYNC_DELTAs a peer is missing, applying them.
//!
//! The digest hash of an origin is the wrapping sum (mod 2^64) of one hash per entry,
//! tombstones included, so it does not depend on order and is updated in O(1) per change. The
//! entry hash is FNV-1a 64 over `kind u8 ‖ op u8 ‖ hlc u64 BE ‖ realm length u8 ‖ realm ‖
//! name`, passed through the SplitMix64 finalizer (FNV alone spreads poorly into a sum). Both
//! functions are fixed here because every node must compute the same value.
//!
//! Which deltas to send for one origin, comparing their `(hlc, entries, hash)` with ours:
//! - same count and hash: nothing;
//! - they do not list the origin: everything we hold of it;
//! - our newest stamp is newer than theirs: our entries newer than their newest (they are
//!   behind; the common case after a partition, and it costs only what changed);
//! - same newest stamp, different hash: everything we hold of it (one of us missed an older
//!   change; both sides send, LWW merges);
//! - theirs is newer: nothing, they send to us when they see our digest.
//!
//! So two replicas that keep exchanging digests converge: each round either brings the newest
//! stamps together or, once they are equal, merges the whole origin both ways.

use fovea_codec::frame::{DeltaEntry, DigestEntry, SyncDelta, SyncDigest};

use super::metrics::FederationMetrics;
use super::replica::{delta_entry, Entry, EntryKey, LiveChange, NodeId, Replica};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The hash of one entry, as the digest sums it.
pub fn entry_hash(key: &EntryKey, entry: Entry) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, &[key.kind.wire(), entry.op.wire()]);
    h = fnv1a(h, &entry.hlc.to_be_bytes());
    let realm = key.realm.as_bytes();
    // A realm is at most 64 bytes (codec), so its length fits a byte.
    h = fnv1a(h, &[realm.len() as u8]);
    h = fnv1a(h, realm);
    h = fnv1a(h, key.name.as_bytes());
    splitmix64(h)
}

impl Replica {
    /// Our digest, split into frames of at most `max_entries` origins. Tombstones past their
    /// lifetime are collected first, so the digest covers exactly what a delta would send.
    pub fn digest(
        &mut self,
        request_id: u64,
        max_entries: usize,
        now_ms: u64,
        metrics: &mut FederationMetrics,
    ) -> Vec<SyncDigest> {
        self.collect_tombstones(now_ms, metrics);
        let all: Vec<DigestEntry> = self
            .origins
            .iter()
            .filter(|(_, s)| !s.entries.is_empty())
            .map(|(id, s)| DigestEntry {
                origin: *id,
                hlc: s.newest,
                entries: s.entries.len() as u64,
                hash: s.hash,
            })
            .collect();
        let max = max_entries.max(1);
        if all.is_empty() {
            return vec![SyncDigest { request_id, origins: Vec::new() }];
        }
        all.chunks(max).map(|c| SyncDigest { request_id, origins: c.to_vec() }).collect()
    }

    /// The deltas the sender of `theirs` is missing, at most `max_entries` changes per frame.
    ///
    /// `theirs` may be one frame of a split digest: an origin it does not list is only taken as
    /// missing when `complete` says this frame is the whole digest.
    pub fn deltas_for(
        &mut self,
        theirs: &SyncDigest,
        complete: bool,
        max_entries: usize,
        now_ms: u64,
        metrics: &mut FederationMetrics,
    ) -> Vec<SyncDelta> {
        self.collect_tombstones(now_ms, metrics);
        let theirs_by_origin: std::collections::HashMap<NodeId, &DigestEntry> =
            theirs.origins.iter().map(|d| (d.origin, d)).collect();
        let mut out = Vec::new();
        for (origin, state) in &self.origins {
            if state.entries.is_empty() {
                continue;
            }
            let since = match theirs_by_origin.get(origin) {
                None if complete => None,
                None => continue,
                Some(d) if d.entries == state.entries.len() as u64 && d.hash == state.hash => {
                    continue
                }
                Some(d) if state.newest > d.hlc => Some(d.hlc),
                Some(d) if state.newest == d.hlc => None,
                Some(_) => continue,
            };
            let mut changes: Vec<(&EntryKey, Entry)> = state
                .entries
                .iter()
                .filter(|(_, e)| since.is_none_or(|s| e.hlc > s))
                .map(|(k, e)| (k, *e))
                .collect();
            // Oldest first: a receiver that stops half-way keeps a prefix of history.
            changes.sort_by(|a, b| (a.1.hlc, a.0).cmp(&(b.1.hlc, b.0)));
            for chunk in changes.chunks(max_entries.max(1)) {
                let entries: Vec<DeltaEntry> =
                    chunk.iter().map(|(k, e)| delta_entry(k, *e)).collect();
                out.push(SyncDelta { request_id: theirs.request_id, origin: *origin, entries });
            }
        }
        metrics.sync_deltas_sent += out.len() as u64;
        metrics.sync_changes_sent += out.iter().map(|d| d.entries.len() as u64).sum::<u64>();
        out
    }

    /// Applies a received delta, change by change, with last-writer-wins.
    pub fn apply_delta(
        &mut self,
        delta: &SyncDelta,
        now_ms: u64,
        metrics: &mut FederationMetrics,
        changes: &mut Vec<LiveChange>,
    ) {
        for change in &delta.entries {
            self.apply(delta.origin, change, now_ms, metrics, changes);
        }
        metrics.sync_deltas_applied += 1;
    }
}

#[cfg(test)]
mod tests {
    use fovea_codec::{Pattern, Realm};

    use super::super::hlc::{stamp, Hlc};
    use super::super::replica::{Kind, Op, ReplicaConfig};
    use super::*;

    const A: NodeId = [1; 32];
    const B: NodeId = [2; 32];
    const CONFIG: ReplicaConfig =
        ReplicaConfig { tombstone_ttl_ms: 600_000, origin_ttl_ms: 600_000 };

    fn key(i: usize) -> EntryKey {
        EntryKey {
            kind: if i.is_multiple_of(3) { Kind::Registration } else { Kind::Interest },
            realm: Realm::from_static("acme"),
            name: format!("svc.n{i}").parse::<Pattern>().unwrap(),
        }
    }

    /// The values docs/PROTOCOL.md §7.5.2 gives, so a second implementation can check itself.
    #[test]
    fn entry_hash_matches_the_protocol_doc() {
        let interest = EntryKey {
            kind: Kind::Interest,
            realm: Realm::from_static("acme"),
            name: "sensors.*.temp".parse::<Pattern>().unwrap(),
        };
        let registration = EntryKey {
            kind: Kind::Registration,
            realm: Realm::from_static("acme"),
            name: "math.add".parse::<Pattern>().unwrap(),
        };
        let a = entry_hash(&interest, Entry { op: Op::Add, hlc: 0x0000_0199_3a4f_0001 });
        let b = entry_hash(&registration, Entry { op: Op::Remove, hlc: 0x0000_0199_3a4f_0002 });
        assert_eq!(a, 0xffeb_ea52_eb38_e1bc);
        assert_eq!(b, 0x6bdf_25a4_0452_0703);
        assert_eq!(a.wrapping_add(b), 0x6bcb_0ff6_ef8a_e8bf);
    }

    #[test]
    fn hash_is_order_independent_and_tracks_removal() {
        let mut m = FederationMetrics::default();
        let mut c = Vec::new();
        let mut r1 = Replica::new(A, Hlc::new(1_000), CONFIG);
        let mut r2 = Replica::new(A, Hlc::new(1_000), CONFIG);
        let changes: Vec<DeltaEntry> = (0..20)
            .map(|i| delta_entry(&key(i), Entry { op: Op::Add, hlc: stamp(10, i as u16) }))
            .collect();
        for ch in &changes {
            r1.apply(B, ch, 1_000, &mut m, &mut c);
        }
        for ch in changes.iter().rev() {
            r2.apply(B, ch, 1_000, &mut m, &mut c);
        }
        let d1 = r1.digest(1, 4096, 1_000, &mut m);
        assert_eq!(d1, r2.digest(1, 4096, 1_000, &mut m));
        let hash_before = d1[0].origins[0].hash;
        let remove = delta_entry(&key(3), Entry { op: Op::Remove, hlc: stamp(11, 0) });
        r1.apply(B, &remove, 1_000, &mut m, &mut c);
        assert_ne!(r1.digest(1, 4096, 1_000, &mut m)[0].origins[0].hash, hash_before);
    }

    #[test]
    fn behind_peer_gets_only_newer_changes_split_into_frames() {
        let mut m = FederationMetrics::default();
        let mut c = Vec::new();
        let mut ahead = Replica::new(A, Hlc::new(1_000), CONFIG);
        let mut behind = Replica::new(B, Hlc::new(1_000), CONFIG);
        for i in 0..10 {
            let ch = delta_entry(&key(i), Entry { op: Op::Add, hlc: stamp(10, i as u16) });
            ahead.apply([9; 32], &ch, 1_000, &mut m, &mut c);
            if i < 4 {
                behind.apply([9; 32], &ch, 1_000, &mut m, &mut c);
            }
        }
        let digest = behind.digest(7, 4096, 1_000, &mut m).remove(0);
        let deltas = ahead.deltas_for(&digest, true, 4, 1_000, &mut m);
        let sizes: Vec<usize> = deltas.iter().map(|d| d.entries.len()).collect();
        assert_eq!(sizes, vec![4, 2]);
        assert!(deltas.iter().all(|d| d.request_id == 7));
        for d in &deltas {
            behind.apply_delta(d, 1_000, &mut m, &mut c);
        }
        assert_eq!(behind.snapshot(), ahead.snapshot());
        let digest = behind.digest(8, 4096, 1_000, &mut m).remove(0);
        assert!(ahead.deltas_for(&digest, true, 4, 1_000, &mut m).is_empty());
    }

    #[test]
    fn digest_splits_by_origin_count() {
        let mut m = FederationMetrics::default();
        let mut c = Vec::new();
        let mut r = Replica::new(A, Hlc::new(1_000), CONFIG);
        for o in 0..5u8 {
            let ch = delta_entry(&key(1), Entry { op: Op::Add, hlc: stamp(10, 0) });
            r.apply([o + 10; 32], &ch, 1_000, &mut m, &mut c);
        }
        let frames = r.digest(3, 2, 1_000, &mut m);
        let sizes: Vec<usize> = frames.iter().map(|d| d.origins.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }
}
