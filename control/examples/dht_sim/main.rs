//! Figures of the DHT in a simulated network (docs/BENCHMARKS.md): for each network size, the
//! wall time to build it, then lookups per second of wall time and their hop counts.
//!
//! `cargo run --release -p fovea-control --example dht_sim -- [sizes…] [--lookups N]`
//! (default sizes 1000 10000, 1000 lookups each, 50 in flight at once). The network is the
//! tests' (examples/dht_sim/net.rs): 5–50 ms delays, 5% loss, seeded; the wall time includes the
//! simulator's own event queue, so it is a lower bound on what the state machine sustains.

mod net;

use std::time::{Duration, Instant};

use fovea_control::dht::{DhtConfig, Find, LookupResult};
use net::{median, NetConfig, SimNet};
use rand::Rng;

const MAX_EVENTS: u64 = u64::MAX;
const IN_FLIGHT: usize = 50;

fn main() {
    let mut sizes = Vec::new();
    let mut lookups = 1000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--lookups" {
            lookups = args.next().and_then(|v| v.parse().ok()).expect("--lookups N");
        } else {
            sizes.push(a.parse::<usize>().expect("a network size"));
        }
    }
    if sizes.is_empty() {
        sizes = vec![1000, 10_000];
    }
    println!("nodes  build_s  lookups  lookups_per_s  hops_median  hops_p90  queries_mean  k_closest_found");
    for n in sizes {
        run(n, lookups);
    }
}

fn run(n: usize, lookups: usize) {
    let mut sim = SimNet::new(0xF0EA ^ n as u64, NetConfig::default(), DhtConfig::default());
    let started = Instant::now();
    sim.build(n, Duration::from_millis(10), Duration::from_secs(10), MAX_EVENTS);
    let build_s = started.elapsed().as_secs_f64();
    let (events0, virtual0) = (sim.processed, sim.now_us);

    let mut queue: Vec<(usize, fovea_control::dht::NodeId)> =
        (0..lookups).map(|_| (sim.rng.gen_range(0..n), sim.random_id())).collect();
    queue.reverse();
    let mut results: Vec<LookupResult> = Vec::with_capacity(lookups);
    let started = Instant::now();
    let mut in_flight = Vec::new();
    while results.len() < lookups {
        while in_flight.len() < IN_FLIGHT {
            let Some((from, target)) = queue.pop() else { break };
            in_flight.push((from, sim.start(from, Find::Node(target))));
        }
        assert!(sim.step(), "network went quiet");
        in_flight.retain(|key| match sim.done.remove(key) {
            Some(r) => {
                results.push(r);
                false
            }
            None => true,
        });
    }
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "  build: {events0} events, {:.0} s virtual; lookups: {} events, {:.1} s virtual, {:.2} µs/event",
        virtual0 as f64 / 1e6,
        sim.processed - events0,
        (sim.now_us - virtual0) as f64 / 1e6,
        wall * 1e6 / (sim.processed - events0) as f64,
    );

    let mut hops: Vec<u32> = results.iter().map(|r| r.hops).collect();
    let hops_median = median(&mut hops);
    let hops_p90 = hops[hops.len() * 9 / 10];
    let queries = results.iter().map(|r| f64::from(r.queries)).sum::<f64>() / lookups as f64;
    let found: usize = results
        .iter()
        .map(|r| {
            let truth = sim.true_closest(&r.target, 20);
            r.closest.iter().filter(|c| truth.contains(&c.id)).count()
        })
        .sum();
    println!(
        "{n:>5}  {build_s:>7.1}  {lookups:>7}  {:>13.0}  {hops_median:>11}  {hops_p90:>8}  {queries:>12.1}  {:>14.1}%",
        lookups as f64 / wall,
        found as f64 * 100.0 / (lookups * 20) as f64,
    );
}
