//! A simulated network of DHT nodes in one process: a virtual clock, a seeded RNG, messages
//! delivered after a random delay or dropped. Shared by `tests/dht_sim.rs` (assertions) and
//! `examples/dht_sim` (figures); deterministic for a given seed.

#![allow(dead_code, unreachable_pub)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use fovea_control::dht::{
    Contact, DhtConfig, DhtNode, Find, LookupId, LookupResult, Message, NodeId, Output,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the simulated links behave.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    /// Shortest one-way delay, µs.
    pub min_delay_us: u64,
    /// Longest one-way delay, µs.
    pub max_delay_us: u64,
    /// Messages lost, per mille.
    pub drop_permille: u32,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig { min_delay_us: 5_000, max_delay_us: 50_000, drop_permille: 50 }
    }
}

enum Ev {
    Deliver { to: usize, from: Contact, msg: Message },
    Timer(usize),
}

/// The simulation.
pub struct SimNet {
    pub nodes: Vec<DhtNode>,
    by_addr: HashMap<SocketAddr, usize>,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    seq: u64,
    timer_at: Vec<u64>,
    base: Instant,
    /// Virtual time, µs since `base`.
    pub now_us: u64,
    pub rng: StdRng,
    net: NetConfig,
    pub dht: DhtConfig,
    /// Completed lookups not yet taken, by (node, lookup).
    pub done: HashMap<(usize, LookupId), LookupResult>,
    pub sent: u64,
    pub dropped: u64,
    pub processed: u64,
}

/// The address of node `i`: each in its own /24 (10.x.y.1), so the per-network limits never
/// bind in the simulation (up to 65 536 nodes).
pub fn addr_of(i: usize) -> SocketAddr {
    let i = i as u32;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 1)), 4433)
}

impl SimNet {
    pub fn new(seed: u64, net: NetConfig, dht: DhtConfig) -> SimNet {
        SimNet {
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            heap: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            timer_at: Vec::new(),
            base: Instant::now(),
            now_us: 0,
            rng: StdRng::seed_from_u64(seed),
            net,
            dht,
            done: HashMap::new(),
            sent: 0,
            dropped: 0,
            processed: 0,
        }
    }

    pub fn now(&self) -> Instant {
        self.base + Duration::from_micros(self.now_us)
    }

    pub fn random_id(&mut self) -> NodeId {
        NodeId(self.rng.gen())
    }

    /// Adds a node (not yet joined); returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let contact = Contact::new(self.random_id(), addr_of(i));
        let seed = self.rng.gen();
        let now = self.now();
        self.nodes.push(DhtNode::new(contact, self.dht.clone(), seed, now));
        self.by_addr.insert(contact.addr, i);
        self.timer_at.push(u64::MAX);
        self.schedule_timer(i);
        i
    }

    /// Node `i` joins through node `seed`.
    pub fn join(&mut self, i: usize, seed: usize) {
        let now = self.now();
        let seed = self.nodes[seed].local();
        self.nodes[i].bootstrap(&[seed], now).expect("bootstrap");
        self.flush(i);
    }

    pub fn start(&mut self, i: usize, find: Find) -> LookupId {
        let now = self.now();
        let id = self.nodes[i].start_lookup(find, now).expect("lookup");
        self.flush(i);
        id
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.heap.push(Reverse((at, self.seq)));
    }

    fn schedule_timer(&mut self, i: usize) {
        let at = self.nodes[i].poll_timeout();
        let at_us = at.saturating_duration_since(self.base).as_micros() as u64;
        let at_us = at_us.max(self.now_us);
        if at_us < self.timer_at[i] || self.timer_at[i] < self.now_us {
            self.timer_at[i] = at_us;
            self.push(at_us, Ev::Timer(i));
        }
    }

    /// Carries node `i`'s outputs into the network.
    pub fn flush(&mut self, i: usize) {
        let from = self.nodes[i].local();
        while let Some(out) = self.nodes[i].poll_output() {
            match out {
                Output::Send { to, msg } => {
                    self.sent += 1;
                    if self.rng.gen_range(0..1000) < self.net.drop_permille {
                        self.dropped += 1;
                        continue;
                    }
                    let Some(&to) = self.by_addr.get(&to.addr) else { continue };
                    let delay = self.rng.gen_range(self.net.min_delay_us..=self.net.max_delay_us);
                    self.push(self.now_us + delay, Ev::Deliver { to, from, msg });
                }
                Output::Done(result) => {
                    self.done.insert((i, result.id), result);
                }
                Output::Event(_) => {}
            }
        }
        self.schedule_timer(i);
    }

    /// Processes one event; false when none is left.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.heap.pop() else { return false };
        let Some(ev) = self.events.remove(&seq) else { return true };
        self.now_us = self.now_us.max(at);
        self.processed += 1;
        let now = self.now();
        match ev {
            Ev::Deliver { to, from, msg } => {
                self.nodes[to].handle_message(from.id, from.addr, msg, now);
                self.flush(to);
            }
            Ev::Timer(i) => {
                if self.timer_at[i] == at {
                    self.timer_at[i] = u64::MAX;
                }
                if self.nodes[i].poll_timeout() <= now {
                    self.nodes[i].tick(now);
                }
                self.flush(i);
            }
        }
        true
    }

    /// Runs until virtual time `until_us`; panics after `max_events` (the bound of the test).
    pub fn run_until(&mut self, until_us: u64, max_events: u64) {
        let mut n = 0;
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > until_us {
                break;
            }
            self.step();
            n += 1;
            assert!(n <= max_events, "simulation did not settle within {max_events} events");
        }
        self.now_us = self.now_us.max(until_us);
    }

    pub fn run_for(&mut self, d: Duration, max_events: u64) {
        self.run_until(self.now_us + d.as_micros() as u64, max_events);
    }

    /// Runs until every lookup in `ids` completed; returns them in order.
    pub fn wait_all(&mut self, ids: &[(usize, LookupId)], max_events: u64) -> Vec<LookupResult> {
        let mut n = 0;
        while !ids.iter().all(|k| self.done.contains_key(k)) {
            assert!(self.step(), "network went quiet with lookups pending");
            n += 1;
            assert!(n <= max_events, "lookups did not finish within {max_events} events");
        }
        ids.iter().map(|k| self.done.remove(k).expect("checked")).collect()
    }

    /// Builds a network of `n` nodes: node 0 first, then the others join through it one every
    /// `spacing`; then runs `settle` more.
    pub fn build(&mut self, n: usize, spacing: Duration, settle: Duration, max_events: u64) {
        let first = self.add_node();
        debug_assert_eq!(first, 0);
        for _ in 1..n {
            let i = self.add_node();
            self.join(i, 0);
            self.run_for(spacing, max_events);
        }
        self.run_for(settle, max_events);
        self.done.clear();
    }

    /// The true `k` closest node ids to `target`, by brute force.
    pub fn true_closest(&self, target: &NodeId, k: usize) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.nodes.iter().map(|n| n.local().id).collect();
        ids.sort_by_cached_key(|id| id.distance(target));
        ids.truncate(k);
        ids
    }
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [u32]) -> u32 {
    v.sort_unstable();
    v[v.len() / 2]
}
