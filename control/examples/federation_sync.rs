//! Measures anti-entropy on the replica alone: how many digest/delta rounds and how much CPU
//! two replicas need to converge after a partition in which one origin gained 10,000
//! interests, and what a quiet round costs.
//!
//! `cargo run --release -p fovea-control --example federation_sync`

use std::time::Instant;

use bytes::BytesMut;
use fovea_codec::{Frame, Pattern, Realm};
use fovea_control::federation::hlc::Hlc;
use fovea_control::federation::{EntryKey, FederationMetrics, Kind, Op, Replica, ReplicaConfig};

const CONFIG: ReplicaConfig = ReplicaConfig { tombstone_ttl_ms: 1_800_000, origin_ttl_ms: 90_000 };
const MAX_ENTRIES: usize = 4096;

fn key(i: usize) -> EntryKey {
    EntryKey {
        kind: Kind::Interest,
        realm: Realm::from_static("acme"),
        name: format!("tenant{}.device{i}.*", i % 50).parse::<Pattern>().expect("pattern"),
    }
}

fn frame_len(frame: Frame) -> usize {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    buf.len()
}

/// `puller` sends its digest to `peer` and applies what comes back. Returns (deltas, bytes).
fn pull(
    puller: &mut Replica,
    peer: &mut Replica,
    now: u64,
    m: &mut FederationMetrics,
) -> (usize, usize) {
    let mut bytes = 0;
    let mut n = 0;
    for digest in puller.digest(1, MAX_ENTRIES, now, m) {
        bytes += frame_len(Frame::SyncDigest(digest.clone()));
        for delta in peer.deltas_for(&digest, true, MAX_ENTRIES, now, m) {
            bytes += frame_len(Frame::SyncDelta(delta.clone()));
            n += 1;
            puller.apply_delta(&delta, now, m, &mut Vec::new());
        }
    }
    (n, bytes)
}

fn converge(a: &mut Replica, b: &mut Replica, now: u64, label: &str) {
    let mut m = FederationMetrics::default();
    let start = Instant::now();
    let mut rounds = 0;
    let mut total = (0, 0);
    loop {
        rounds += 1;
        let (n1, b1) = pull(a, b, now, &mut m);
        let (n2, b2) = pull(b, a, now, &mut m);
        total = (total.0 + n1 + n2, total.1 + b1 + b2);
        if n1 + n2 == 0 {
            break;
        }
    }
    let took = start.elapsed();
    assert_eq!(a.snapshot(), b.snapshot());
    println!(
        "{label}: {} round(s) with changes + 1 quiet round, {} delta frames, {} bytes, {:?} CPU",
        rounds - 1,
        total.0,
        total.1,
        took
    );
}

fn main() {
    let now = 1_700_000_000_000u64;
    let mut m = FederationMetrics::default();
    let a_id = [1; 32];
    let b_id = [2; 32];

    // B gains 10,000 interests while A cannot hear it.
    let mut a = Replica::new(a_id, Hlc::new(500), CONFIG);
    let mut b = Replica::new(b_id, Hlc::new(500), CONFIG);
    let start = Instant::now();
    for i in 0..10_000 {
        b.local_change(key(i), Op::Add, now, &mut Vec::new());
    }
    println!("10,000 local changes at B: {:?}", start.elapsed());
    converge(&mut a, &mut b, now + 1, "10k new interests, A empty");

    // Both hold 10,000 with the same newest stamp but A missed one older change: full merge.
    let mut c = Replica::new([3; 32], Hlc::new(500), CONFIG);
    for delta in
        b.deltas_for(&c.digest(1, MAX_ENTRIES, now, &mut m)[0], true, MAX_ENTRIES, now, &mut m)
    {
        let mut delta = delta;
        delta.entries.retain(|e| e.name.as_str() != "tenant7.device5007.*");
        c.apply_delta(&delta, now + 2, &mut m, &mut Vec::new());
    }
    converge(&mut c, &mut b, now + 2, "10k held, one older change missed (full-origin merge)");

    // A quiet round: what two converged replicas exchange each sync interval.
    let start = Instant::now();
    let (n, bytes) = pull(&mut a, &mut b, now + 3, &mut m);
    println!("quiet round: {n} deltas, {bytes} bytes of digest, {:?} CPU", start.elapsed());
}
