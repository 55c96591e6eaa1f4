//! Node lifecycle and transport behaviour: the `fovea` binary's drain on SIGTERM, restart with
//! stateless resets, Retry under load, and peer-id sharding. Real processes or in-process
//! shards, real QUIC on loopback.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use fovea_codec::frame::Frame;
use fovea_codec::ErrorCode;

fn spawn_node(args: &[&str], data_dir: &std::path::Path) -> NodeProcess {
    spawn_node_on(args, data_dir, "warn")
}

fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

fn wait_exit(child: &mut Child, wait: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::yield_now();
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fovea-{tag}-{}-{}", std::process::id(), rand_u64()))
}

#[test]
fn sigterm_drains_flushes_says_goodbye_and_exits_zero() {
    let dir = temp_dir("drain");
    let mut node = spawn_node(&["--listen", "127.0.0.1:0", "--shards", "2"], &dir);
    assert_eq!(http_status(node.http, "/readyz"), Some(200));
    assert_eq!(http_status(node.http, "/healthz"), Some(200));
    let mut sub = TestClient::connect(node.quic, "default");
    sub.subscribe(1, "news.*");
    let mut publisher = TestClient::connect(node.quic, "default");
    for i in 0..50u32 {
        publisher.publish("news.today", &i.to_be_bytes());
    }
    assert!(matches!(publisher.publish_acked("news.today", b"last", None), Frame::Ok(_)));
    // SIGTERM while the subscriber has not read anything yet.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
    assert!(
        wait_until(WAIT, || http_status(node.http, "/readyz") != Some(200)),
        "readiness fails at once"
    );
    for i in 0..50u32 {
        let d = sub.next_deliver(WAIT).unwrap_or_else(|| panic!("queued delivery {i} flushed"));
        assert_eq!(&d.payload[..], &i.to_be_bytes());
    }
    assert_eq!(&sub.next_deliver(WAIT).unwrap().payload[..], b"last");
    let bye = sub.expect_frame(|f| matches!(f, Frame::Goodbye(_)), WAIT);
    assert!(matches!(bye, Frame::Goodbye(g) if g.code == ErrorCode::ShuttingDown as u64));
    let late = TestClient::connect_raw_result(node.quic);
    assert!(late.is_err(), "new connections are refused while draining");
    let status = wait_exit(&mut node.child, WAIT).expect("exits within the drain deadline");
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_restarted_node_resets_connections_of_its_previous_incarnation() {
    let dir = temp_dir("restart");
    // One shard: quiche clients (0.30) check a reset only against the token of the node's
    // first connection ID (a TODO in quiche's `is_stateless_reset`), not the per-CID tokens of
    // the CIDs a connection gets when it moves between shards (docs/OPERATIONS.md).
    let first = spawn_node(&["--listen", "127.0.0.1:0", "--shards", "1"], &dir);
    let port = first.quic.port();
    let mut client = TestClient::connect(first.quic, "default");
    client.subscribe(1, "t");
    drop(first);
    let listen = format!("127.0.0.1:{port}");
    let second = spawn_node(&["--listen", &listen, "--shards", "1"], &dir);
    let started = Instant::now();
    // The old connection's next packet gets a stateless reset under the same secret, so the
    // client learns at once instead of waiting for its 30 s idle timeout.
    client.send_session(&Frame::Ping(fovea_codec::frame::Ping { ping_id: 1, sent_at_us: 0 }));
    let closed = client.wait_closed(WAIT);
    assert!(
        closed.is_some(),
        "the client's connection ended (resets sent: {}, packets in: {}, handed over: {}, dropped: {})",
        metric(second.http, "fovea_stateless_resets_sent_total"),
        metric(second.http, "fovea_packets_in_total"),
        metric(second.http, "fovea_packets_handed_over_total"),
        metric(second.http, "fovea_packets_dropped_total"),
    );
    assert!(started.elapsed() < Duration::from_secs(10), "well before the idle timeout");
    assert!(metric(second.http, "fovea_stateless_resets_sent_total") >= 1);
    // And a new connection works.
    let mut again = TestClient::connect(second.quic, "default");
    again.subscribe(1, "t");
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn handshakes_beyond_the_retry_threshold_validate_their_address() {
    let mut config = test_config(2);
    config.limits.retry_threshold = 0;
    let node = start_node(config);
    let mut c = TestClient::connect(node.quic_addr, "default");
    c.subscribe(1, "t");
    let mut p = TestClient::connect(node.quic_addr, "default");
    p.publish_acked("t", b"after retry", None);
    assert_eq!(&c.next_deliver(WAIT).unwrap().payload[..], b"after retry");
    assert!(metric(node.http_addr, "fovea_retries_sent_total") >= 2);
    node.shutdown();
}

#[test]
fn each_peer_lives_on_the_shard_its_id_hashes_to() {
    let shards = 2;
    let node = start_node(test_config(shards));
    let mut expected = vec![0u64; shards];
    let clients: Vec<TestClient> = (0..16)
        .map(|_| {
            let id = random_peer_id();
            expected[fovea_engine::shard::owner_shard(&id, shards)] += 1;
            TestClient::connect_as(node.quic_addr, "default", id)
        })
        .collect();
    let text = metrics_text(node.http_addr);
    for (shard, want) in expected.iter().enumerate() {
        let key = format!("fovea_peers{{shard=\"{shard}\"}} ");
        let got: u64 =
            text.lines().find_map(|l| l.strip_prefix(&key)).unwrap().trim().parse().unwrap();
        assert_eq!(got, *want, "shard {shard}");
    }
    // Handshakes land on a random shard, so about half the connections moved after HELLO.
    assert!(metric(node.http_addr, "fovea_connections_migrated_in_total") > 0);
    drop(clients);
    node.shutdown();
}

#[test]
fn the_node_pings_its_peers_and_records_their_rtt() {
    let mut config = test_config(2);
    config.limits.keepalive_ms = 200;
    config.limits.idle_timeout_ms = 5_000;
    let node = start_node(config);
    let mut c = TestClient::connect(node.quic_addr, "default");
    // The test client answers the node's PINGs; wait for the node's first RTT sample.
    let ping = c.expect_frame(|f| matches!(f, Frame::Ping(_)), WAIT);
    assert!(matches!(ping, Frame::Ping(_)));
    let text_count = || {
        metrics_text(node.http_addr)
            .lines()
            .find_map(|l| {
                l.strip_prefix("fovea_peer_rtt_seconds_count ")
                    .map(|v| v.trim().parse::<u64>().unwrap())
            })
            .unwrap()
    };
    let deadline = Instant::now() + WAIT;
    while text_count() == 0 {
        assert!(Instant::now() < deadline, "no RTT sample recorded");
        c.step(Instant::now() + Duration::from_millis(50));
    }
    node.shutdown();
}

#[test]
fn the_legacy_driver_serves_pub_sub_too() {
    let mut config = test_config(2);
    config.node.force_legacy_driver = true;
    let node = start_node(config);
    let mut sub = TestClient::connect(node.quic_addr, "default");
    sub.subscribe(1, "epoll.*");
    let mut p = TestClient::connect(node.quic_addr, "default");
    p.publish_acked("epoll.works", b"yes", None);
    assert_eq!(&sub.next_deliver(WAIT).unwrap().payload[..], b"yes");
    assert!(metrics_text(node.http_addr).contains("fovea_io_driver{driver=\"legacy\"} 1"));
    node.shutdown();
}

#[test]
fn check_config_accepts_a_valid_file_and_names_the_bad_key_of_an_invalid_one() {
    let dir = temp_dir("checkconfig");
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "[limits]\nmax_peers = 100\n").unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_perrs = 100\n").unwrap();
    let run = |file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_fovea")).arg("--check-config").arg(file).output().unwrap()
    };
    let ok = run(&good);
    assert!(ok.status.success(), "{ok:?}");
    let err = run(&bad);
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("max_perrs"), "{err:?}");
    let _ = std::fs::remove_dir_all(dir);
}
