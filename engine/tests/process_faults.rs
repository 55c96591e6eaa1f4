//! Process faults and whole-node resource bounds that need the real `fovea` binary (its own
//! address space, so its RSS can be read from /proc and it can be SIGKILLed): a SIGKILL under
//! load and a restart (stateless resets, peers reconnect), and one publish at max payload to
//! thousands of subscribers held in one shared buffer. Real QUIC on loopback; every wait
//! polls with a deadline. docs/OPERATIONS.md "Hostile input and faults: what the node does".

mod common;

use std::time::{Duration, Instant};

use common::*;
use fovea_codec::frame::{self, Frame};

fn spawn_node(args: &[&str], data_dir: &std::path::Path) -> NodeProcess {
    spawn_node_on(args, data_dir, "error")
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fovea-{tag}-{}-{}", std::process::id(), rand_u64()))
}

/// VmRSS of a process in bytes (/proc/<pid>/status).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse().unwrap())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

#[test]
fn sigkill_under_load_then_restart_resets_old_connections_and_peers_reconnect() {
    let dir = temp_dir("sigkill");
    // One shard: quiche clients recognise a stateless reset only for the node's first CID
    // (docs/OPERATIONS.md, restart notes); with one shard no connection moves.
    let first = spawn_node(&["--listen", "127.0.0.1:0", "--shards", "1"], &dir);
    let port = first.quic.port();
    let mut sub = TestClient::connect(first.quic, "default");
    sub.subscribe(1, "load.*");
    let mut publisher = TestClient::connect(first.quic, "default");
    // Load: publishes in flight, the subscriber reading part of them, when the node dies.
    let mut got = 0u32;
    for i in 0..2000u32 {
        let mut msg = vec![0u8; 512];
        msg[..4].copy_from_slice(&i.to_be_bytes());
        publisher.publish("load.hot", &msg);
        if i % 64 == 0 {
            sub.step(Instant::now());
            while sub.next_deliver(Duration::ZERO).is_some() {
                got += 1;
            }
        }
    }
    assert!(got > 0, "the subscriber was receiving when the node was killed");
    let mut first = first;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(first.child.id() as i32, libc::SIGKILL) };
    let status = first.child.wait().unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    drop(first);
    let listen = format!("127.0.0.1:{port}");
    let second = spawn_node(&["--listen", &listen, "--shards", "1"], &dir);
    let restarted = Instant::now();
    // The old connections' next packets get stateless resets under the same reset key.
    for c in [&mut sub, &mut publisher] {
        c.send_session(&Frame::Ping(frame::Ping { ping_id: 7, sent_at_us: 0 }));
    }
    assert!(sub.wait_closed(WAIT).is_some(), "the old subscriber connection ended");
    assert!(publisher.wait_closed(WAIT).is_some(), "the old publisher connection ended");
    assert!(restarted.elapsed() < Duration::from_secs(10), "well before the 30 s idle timeout");
    assert!(metric(second.http, "fovea_stateless_resets_sent_total") >= 2);
    // Peers reconnect, subscribe again, and traffic flows in order.
    let mut sub = TestClient::connect(second.quic, "default");
    sub.subscribe(1, "load.*");
    let mut publisher = TestClient::connect(second.quic, "default");
    for i in 0..100u32 {
        publisher.publish("load.hot", &i.to_be_bytes());
    }
    assert!(matches!(publisher.publish_acked("load.hot", b"end", None), Frame::Ok(_)));
    for i in 0..100u32 {
        let d = sub.next_deliver(WAIT).unwrap_or_else(|| panic!("delivery {i} after restart"));
        assert_eq!(&d.payload[..], &i.to_be_bytes());
    }
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

/// Subscribers of the fan-out test; `FOVEA_FANOUT_SUBSCRIBERS` overrides (see the docs table
/// for the time it takes).
fn fanout_subscribers() -> usize {
    std::env::var("FOVEA_FANOUT_SUBSCRIBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

#[test]
fn one_publish_at_max_payload_to_10000_subscribers_is_held_in_one_shared_buffer() {
    let max_payload: usize = std::env::var("FOVEA_FANOUT_MAX_PAYLOAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 * 1024);
    let n = fanout_subscribers();
    let payload_len: usize = std::env::var("FOVEA_FANOUT_PAYLOAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(max_payload);
    let dir = temp_dir("fanout10k");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("fovea.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_payload = {max_payload}\nretry_threshold = 1000000\n\
             idle_timeout_ms = 120000\nhello_timeout_ms = 60000\n"
        ),
    )
    .unwrap();
    let node = spawn_node(
        &["--listen", "127.0.0.1:0", "--shards", "2", "--config", config.to_str().unwrap()],
        &dir.join("data"),
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut swarm = Swarm::new(node.quic, 64, "fan.out");
    let batch = 500;
    while swarm.conns.len() < n {
        let range = swarm.open(batch.min(n - swarm.conns.len()));
        assert!(
            swarm.drive(range.clone(), deadline, |c| c.subscribed),
            "batch {range:?} subscribed ({} connections at the node)",
            metric(node.http, "fovea_peers")
        );
    }
    let connected = started.elapsed();
    assert_eq!(metric(node.http, "fovea_peers") as usize, n);
    let pid = node.child.id();
    let before = rss_bytes(pid);
    let mut publisher = TestClient::connect(node.quic, "default");
    let payload = vec![0xa5u8; payload_len];
    let published = Instant::now();
    assert!(matches!(publisher.publish_acked("fan.out", &payload, None), Frame::Ok(_)));
    assert!(
        wait_until(WAIT, || metric(node.http, "fovea_deliveries_total") as usize >= n),
        "all {n} deliveries queued"
    );
    let queued = published.elapsed();
    // The node transmits while we look: take the largest RSS over the next half second.
    let mut after = rss_bytes(pid);
    let look = Instant::now();
    while look.elapsed() < Duration::from_millis(500) {
        after = after.max(rss_bytes(pid));
        std::thread::yield_now();
    }
    let growth = after.saturating_sub(before);
    let copies = (n * payload_len) as u64;
    eprintln!(
        "fan-out: {n} subscribers connected in {connected:?}; deliveries queued {queued:?} after \
         the publish; node RSS {} MiB before, {} MiB after (growth {} MiB; {n} copies would be \
         {} MiB)",
        before >> 20,
        after >> 20,
        growth >> 20,
        copies >> 20
    );
    assert!(
        growth < copies / 4,
        "RSS grew {growth} bytes: more than a quarter of {n} copies ({copies} bytes)"
    );
    // And the deliveries are real: a sample of subscribers reads the whole payload.
    let sample = 0..20.min(n);
    assert!(
        swarm.drive(sample.clone(), Instant::now() + WAIT, |c| c.delivered == 1),
        "sampled subscribers got the publish"
    );
    // The publisher is unaffected.
    assert!(matches!(publisher.publish_acked("other", b"x", None), Frame::Ok(_)));
    drop(node);
    let _ = std::fs::remove_dir_all(dir);
}
