//! Property: replicas that exchange SYNC_DIGEST / SYNC_DELTA until quiet hold identical state,
//! whatever the operations, partitions, heals, clock skews, duplicated and reordered deltas.
//! And that state is the truth: every origin's live entries, as each replica holds them, are
//! the ones its own last operations left.

use std::collections::BTreeMap;

use fovea_codec::frame::SyncDelta;
use fovea_codec::{Pattern, Realm};
use fovea_control::federation::hlc::Hlc;
use fovea_control::federation::{
    EntryKey, FederationMetrics, Kind, NodeId, Op, Replica, ReplicaConfig,
};
use proptest::prelude::*;

const NODES: usize = 3;
const KEYS: usize = 6;
const MAX_ENTRIES: usize = 3;
const CONFIG: ReplicaConfig = ReplicaConfig { tombstone_ttl_ms: 4_000, origin_ttl_ms: u64::MAX };

#[derive(Debug, Clone)]
enum Step {
    /// Node `node` adds or removes key `key` of its own.
    Local { node: usize, key: usize, add: bool },
    /// `puller` sends its digest to `peer` and applies the deltas it gets back, delivered in
    /// the order `shuffle` gives, with the first `dup` of them delivered twice.
    Sync { puller: usize, peer: usize, shuffle: u64, dup: usize },
    /// The link between `a` and `b` goes down or comes up.
    Link { a: usize, b: usize, up: bool },
    /// Time passes.
    Wait { ms: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..NODES, 0..KEYS, any::<bool>()).prop_map(|(node, key, add)| Step::Local { node, key, add }),
        4 => (0..NODES, 0..NODES, any::<u64>(), 0usize..3)
            .prop_map(|(puller, peer, shuffle, dup)| Step::Sync { puller, peer, shuffle, dup }),
        1 => (0..NODES, 0..NODES, any::<bool>()).prop_map(|(a, b, up)| Step::Link { a, b, up }),
        2 => (1u64..1_500).prop_map(|ms| Step::Wait { ms }),
    ]
}

fn id(n: usize) -> NodeId {
    [n as u8 + 1; 32]
}

fn key(k: usize) -> EntryKey {
    EntryKey {
        kind: if k.is_multiple_of(2) { Kind::Interest } else { Kind::Registration },
        realm: Realm::from_static(if k < 3 { "acme" } else { "beta" }),
        name: format!("svc.k{k}").parse::<Pattern>().expect("valid pattern"),
    }
}

struct World {
    replicas: Vec<Replica>,
    skew: Vec<u64>,
    links: [[bool; NODES]; NODES],
    now: u64,
    metrics: FederationMetrics,
}

impl World {
    fn new(skew: Vec<u64>) -> World {
        let replicas = (0..NODES).map(|n| Replica::new(id(n), Hlc::new(500), CONFIG)).collect();
        World {
            replicas,
            skew,
            links: [[true; NODES]; NODES],
            now: 10_000,
            metrics: Default::default(),
        }
    }

    fn clock(&self, n: usize) -> u64 {
        self.now + self.skew[n]
    }

    /// One pull; returns how many deltas moved.
    fn sync(&mut self, puller: usize, peer: usize, shuffle: u64, dup: usize) -> usize {
        if puller == peer || !self.links[puller][peer] {
            return 0;
        }
        let (tp, tq) = (self.clock(puller), self.clock(peer));
        let digests = self.replicas[puller].digest(1, 4096, tp, &mut self.metrics);
        let mut deltas: Vec<SyncDelta> = Vec::new();
        for d in &digests {
            deltas.extend(self.replicas[peer].deltas_for(
                d,
                true,
                MAX_ENTRIES,
                tq,
                &mut self.metrics,
            ));
        }
        let moved = deltas.len();
        let mut order: Vec<SyncDelta> = deltas.iter().take(dup).cloned().collect();
        order.extend(deltas);
        // Deterministic shuffle from the drawn seed.
        let mut s = shuffle | 1;
        for i in (1..order.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut changes = Vec::new();
        for d in &order {
            self.replicas[puller].apply_delta(d, tp, &mut self.metrics, &mut changes);
        }
        moved
    }

    fn tick(&mut self) {
        let mut changes = Vec::new();
        for n in 0..NODES {
            let t = self.clock(n);
            self.replicas[n].tick(t, &mut self.metrics, &mut changes);
        }
    }
}

fn live_of(r: &Replica, origin: &NodeId) -> Vec<EntryKey> {
    let mut v: Vec<EntryKey> = r.live_entries(origin).cloned().collect();
    v.sort();
    v
}

fn run(steps: Vec<Step>, skew: Vec<u64>) -> Result<(), TestCaseError> {
    let mut w = World::new(skew);
    // The truth: each origin's last op per key.
    let mut truth: Vec<BTreeMap<EntryKey, bool>> = vec![BTreeMap::new(); NODES];
    for s in steps {
        match s {
            Step::Local { node, key: k, add } => {
                let t = w.clock(node);
                let op = if add { Op::Add } else { Op::Remove };
                let mut changes = Vec::new();
                w.replicas[node].local_change(key(k), op, t, &mut changes);
                truth[node].insert(key(k), add);
            }
            Step::Sync { puller, peer, shuffle, dup } => {
                w.sync(puller, peer, shuffle, dup);
            }
            Step::Link { a, b, up } => {
                w.links[a][b] = up;
                w.links[b][a] = up;
            }
            Step::Wait { ms } => {
                w.now += ms;
                w.tick();
            }
        }
    }
    // Heal and exchange until every replica holds the same.
    w.links = [[true; NODES]; NODES];
    let mut converged = false;
    for round in 0..80u64 {
        for a in 0..NODES {
            for b in 0..NODES {
                w.sync(a, b, round, 0);
            }
        }
        let first = w.replicas[0].snapshot();
        if w.replicas.iter().all(|r| r.snapshot() == first) {
            converged = true;
            break;
        }
        w.now += 100;
        w.tick();
    }
    prop_assert!(
        converged,
        "no convergence: {:#?}",
        w.replicas.iter().map(|r| r.snapshot()).collect::<Vec<_>>()
    );
    // A converged round moves nothing more.
    for a in 0..NODES {
        for b in 0..NODES {
            prop_assert_eq!(w.sync(a, b, 0, 0), 0);
        }
    }
    for (o, t) in truth.iter().enumerate() {
        let want: Vec<EntryKey> =
            t.iter().filter(|(_, add)| **add).map(|(k, _)| k.clone()).collect();
        for r in &w.replicas {
            prop_assert_eq!(&live_of(r, &id(o)), &want, "origin {}", o);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_to_the_truth(
        steps in prop::collection::vec(step(), 1..80),
        skew in prop::collection::vec(0u64..300, NODES),
    ) {
        run(steps, skew)?;
    }
}

#[test]
fn partition_then_heal_with_concurrent_writes_on_both_sides() {
    let mut steps =
        vec![Step::Link { a: 0, b: 1, up: false }, Step::Link { a: 0, b: 2, up: false }];
    for k in 0..KEYS {
        steps.push(Step::Local { node: 0, key: k, add: true });
        steps.push(Step::Local { node: 1, key: k, add: k.is_multiple_of(2) });
        steps.push(Step::Local { node: 2, key: k, add: true });
        steps.push(Step::Sync { puller: 1, peer: 2, shuffle: k as u64, dup: 1 });
        steps.push(Step::Wait { ms: 700 });
    }
    run(steps, vec![0, 250, 120]).unwrap();
}
