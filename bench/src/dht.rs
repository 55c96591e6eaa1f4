//! DHT fixtures: routing tables that have heard of 1K and 100K nodes, and the measured table
//! calls (insert, closest-k).
//!
//! A table only keeps k = 20 contacts per bucket, so one that has heard of 100K random nodes
//! holds about 20 × log2(100K / 20) ≈ 250 of them, with full far buckets whose replacement
//! caches are full too: the shape of a long-running node's table. Every contact is in its own
//! /24, so the per-network limits do not bind. Seeded and built outside the measured region.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use fovea_control::dht::{Contact, DhtConfig, Inserted, NodeId, RoutingTable, K};

use crate::rng::Rng;

/// Known-node counts benched.
pub const KNOWN_COUNTS: [usize; 2] = [1_000, 100_000];
/// Contacts of the insert batches (fewer than k, so one empty bucket takes them all).
pub const BATCH: usize = 16;

/// Address of the `i`-th fixture node: 11.0.0.1 on, each in its own /24.
pub fn fixture_addr(i: usize) -> SocketAddr {
    let i = i as u32;
    let ip = Ipv4Addr::new(11 + (i >> 16) as u8, (i >> 8) as u8, i as u8, 1);
    SocketAddr::new(IpAddr::V4(ip), 4433)
}

fn random_id(rng: &mut Rng) -> NodeId {
    let mut id = [0u8; 32];
    for chunk in id.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
    }
    NodeId(id)
}

/// A routing table that has heard of `known` nodes, and inputs for the measured calls.
#[derive(Debug)]
pub struct TableFixture {
    /// Nodes the table was offered.
    pub known: usize,
    /// The table.
    pub table: RoutingTable,
    /// The `now` of every call.
    pub now: Instant,
    /// A contact in the table (insert: `Refreshed`, the path of every message received).
    pub present: Contact,
    /// New contacts for a full bucket (insert: `Queued` in the replacement cache).
    pub queued: Vec<Contact>,
    /// New contacts for an empty bucket below the nearest neighbour (insert: `Added`).
    pub added: Vec<Contact>,
    /// Lookup targets, random.
    pub targets: Vec<NodeId>,
}

impl TableFixture {
    /// The fixture for `known` nodes (seeded by the count).
    pub fn new(known: usize) -> TableFixture {
        let mut rng = Rng::new(0xD47 ^ known as u64);
        let local = random_id(&mut rng);
        let now = Instant::now();
        let mut table = RoutingTable::new(local, &DhtConfig::default(), now);
        for i in 0..known {
            table.insert(Contact::new(random_id(&mut rng), fixture_addr(i)), now);
        }
        // Probes nobody will answer: the full buckets stay as they are.
        table.drain_probes().for_each(drop);
        let present = table.bucket(255)[K / 2];
        let queued = (0..BATCH)
            .map(|i| {
                let id = local.random_in_bucket(255, &random_id(&mut rng).0);
                Contact::new(id, fixture_addr(known + i))
            })
            .collect();
        let lowest = table.lowest_bucket().expect("non-empty table");
        assert!(lowest > 0, "an empty bucket below the nearest neighbour");
        let added = (0..BATCH)
            .map(|i| {
                let id = local.random_in_bucket(lowest - 1, &random_id(&mut rng).0);
                Contact::new(id, fixture_addr(known + BATCH + i))
            })
            .collect();
        let targets = (0..64).map(|_| random_id(&mut rng)).collect();
        let fx = TableFixture { known, table, now, present, queued, added, targets };
        fx.check();
        fx
    }

    /// Bench id, e.g. `100k`.
    pub fn label(&self) -> String {
        format!("{}k", self.known / 1000)
    }

    /// The measured calls do what the fixture says (run once, outside the measurement).
    fn check(&self) {
        let mut t = self.table.clone();
        assert_eq!(table_insert(&mut t, self.present, self.now), Inserted::Refreshed);
        assert_eq!(table_insert(&mut t, self.queued[0], self.now), Inserted::Queued);
        assert_eq!(table_insert(&mut t, self.added[0], self.now), Inserted::Added);
        let all: Vec<Contact> = self.table.contacts().collect();
        for target in &self.targets {
            let mut expect = all.clone();
            expect.sort_by_key(|c| c.id.distance(target));
            expect.truncate(K);
            assert_eq!(table_closest(&self.table, target), expect);
        }
    }
}

/// Measured: one contact seen (every received message does this).
#[inline(never)]
pub fn table_insert(table: &mut RoutingTable, contact: Contact, now: Instant) -> Inserted {
    black_box(table.insert(black_box(contact), now))
}

/// Undo of an `Added` insert (not measured).
pub fn table_remove(table: &mut RoutingTable, contact: &Contact) {
    assert!(table.remove(&contact.id).is_some_and(|ev| ev.promoted.is_none()));
}

/// Measured: the k closest contacts to `target` (every FIND_NODE answer and lookup start).
#[inline(never)]
pub fn table_closest(table: &RoutingTable, target: &NodeId) -> Vec<Contact> {
    black_box(table.closest(black_box(target), K))
}
