//! The DHT in a simulated network: 300 nodes in one process, a virtual clock, a seeded RNG,
//! 5–50 ms one-way delays and 5% of messages lost. Nodes join one after the other through node
//! 0. Bounded in events, no sleeps; the same seed gives the same run.

#[path = "../examples/dht_sim/net.rs"]
mod net;

use std::time::Duration;

use bytes::Bytes;
use fovea_control::dht::{DhtConfig, Find, LookupKind, NodeId, Publish};
use net::{median, NetConfig, SimNet};
use rand::Rng;

const NODES: usize = 300;
const MAX_EVENTS: u64 = 20_000_000;
const SEED: u64 = 0xD47;

fn network(seed: u64, n: usize) -> SimNet {
    let mut sim = SimNet::new(seed, NetConfig::default(), DhtConfig::default());
    sim.build(n, Duration::from_millis(20), Duration::from_secs(10), MAX_EVENTS);
    sim
}

#[test]
fn lookups_converge_in_log_n_hops() {
    let mut sim = network(SEED, NODES);
    let sizes: Vec<usize> = sim.nodes.iter().map(|n| n.table().len()).collect();
    eprintln!("table sizes min {:?} max {:?}", sizes.iter().min(), sizes.iter().max());
    assert!(sizes.iter().all(|&t| t >= 10), "every node joined");
    let mut found = 0;
    let mut hops = Vec::new();
    let lookups = 100;
    for _ in 0..lookups {
        let from = sim.rng.gen_range(0..NODES);
        let target = sim.random_id();
        let id = sim.start(from, Find::Node(target));
        let r = sim.wait_all(&[(from, id)], MAX_EVENTS).remove(0);
        assert_eq!(r.kind, LookupKind::FindNode);
        let truth = sim.true_closest(&target, 20);
        found += r.closest.iter().filter(|c| truth.contains(&c.id)).count();
        hops.push(r.hops);
    }
    let share = found as f64 / (lookups * 20) as f64;
    let median_hops = median(&mut hops);
    let log2n = (NODES as f64).log2();
    eprintln!(
        "k closest found {:.1}%, median hops {median_hops}, log2 n {log2n:.1}",
        share * 100.0
    );
    assert!(share >= 0.95, "found {:.1}% of the true k closest", share * 100.0);
    assert!(f64::from(median_hops) <= log2n.ceil(), "median hops {median_hops}");
    assert!(sim.dropped > 0, "the network loses messages");
}

fn find_value(sim: &mut SimNet, key: NodeId, askers: &[usize]) -> usize {
    let ids: Vec<_> = askers.iter().map(|&i| (i, sim.start(i, Find::Value(key)))).collect();
    sim.wait_all(&ids, MAX_EVENTS).iter().filter(|r| !r.records.is_empty()).count()
}

#[test]
fn records_are_found_expire_and_survive_when_republished() {
    let mut sim = network(SEED + 1, NODES);
    let ttl = Duration::from_secs(60);
    let now = sim.now();
    let (once, kept) = (sim.random_id(), sim.random_id());
    let id =
        sim.nodes[7].store(once, Bytes::from_static(b"once"), ttl, Publish::Once, now).unwrap();
    sim.flush(7);
    let id2 = sim.nodes[8]
        .store(kept, Bytes::from_static(b"kept"), ttl, Publish::Republish, now)
        .unwrap();
    sim.flush(8);
    let stored = sim.wait_all(&[(7, id), (8, id2)], MAX_EVENTS);
    for r in &stored {
        assert_eq!(r.kind, LookupKind::Store);
        assert!(r.stored >= 15, "stored at {} of the k closest", r.stored);
    }

    let askers: Vec<usize> = (100..120).collect();
    assert_eq!(find_value(&mut sim, once, &askers), askers.len(), "found from other nodes");
    let ids: Vec<_> = askers.iter().map(|&i| (i, sim.start(i, Find::Value(kept)))).collect();
    let found = sim.wait_all(&ids, MAX_EVENTS);
    assert!(found.iter().all(|r| r.records.len() == 1 && r.records[0].value == "kept"));
    assert!(found.iter().all(|r| r.records[0].publisher == sim.nodes[8].local().id));

    // Past the TTL: the one-shot record is gone everywhere, the republished one is not.
    sim.run_for(Duration::from_secs(200), MAX_EVENTS);
    assert_eq!(find_value(&mut sim, once, &askers), 0, "expired after its TTL");
    assert_eq!(find_value(&mut sim, kept, &askers), askers.len(), "republished records survive");
    let now = sim.now();
    assert!(sim.nodes.iter().all(|n| n.records().get(&once, now).is_empty()));
    let held: usize = sim.nodes.iter().map(|n| n.records().len()).sum();
    assert!((15..=40).contains(&held), "only the republished record is held, {held} copies");

    // Unpublished, it expires too.
    assert!(sim.nodes[8].unpublish(&kept));
    sim.run_for(Duration::from_secs(70), MAX_EVENTS);
    assert_eq!(find_value(&mut sim, kept, &askers), 0);
}

#[test]
fn same_seed_same_run() {
    let digest = |seed| {
        let mut sim = network(seed, 60);
        let target = sim.random_id();
        let id = sim.start(5, Find::Node(target));
        let r = sim.wait_all(&[(5, id)], MAX_EVENTS).remove(0);
        (sim.sent, sim.dropped, sim.processed, r.closest, r.hops, r.queries)
    };
    assert_eq!(digest(9), digest(9));
}
