//! Several `--node` addresses: connections start on the first and move to the next one when it
//! refuses them, with a bounded number of attempts.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fovea_flood::params::Pingpong;
use fovea_flood::schedule::Arrivals;

/// A loopback UDP port where nothing listens (bound, noted, released): refused at once.
fn dead_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn flood(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_fovea-flood"))
        .args(args)
        .args(["--quiet", "--insecure"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fovea-flood");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("fovea-flood finished in time").unwrap()
}

#[test]
fn a_dead_first_node_is_skipped_for_the_live_second() {
    let node = common::start_node(1);
    let dead = dead_port();
    let mut c = common::common(&node).with_nodes(vec![dead, node.quic_addr]);
    c.duration_s = 0.5;
    let p = Pingpong { connections: 8, rate: 200.0, arrivals: Arrivals::Uniform };
    let r = fovea_flood::pingpong(&c, &p).expect("fails over to the second node");
    assert_eq!(r.num("connected"), 8.0, "{}", r.human);
    assert_eq!(r.num("pings"), 100.0, "{}", r.human);
    assert_eq!(r.num("pongs"), 100.0, "{}", r.human);
    assert_eq!(r.num("errors"), 0.0, "the refusals were retried, not failures: {}", r.human);

    // The same through the command line, repeated and comma-separated, with rpc.
    let live = node.quic_addr.to_string();
    let list = format!("{dead},{live}");
    let args = ["rpc", "--node", &list, "--json", "--rate", "200", "--duration", "0.5"];
    let o = flood(&[&args[..], &["--warmup", "0"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["calls"], 100);
    assert_eq!(v["replies"], v["calls"]);
    let dead = dead.to_string();
    let args = ["pingpong", "--node", &dead, "--node", &live, "--duration", "0.3", "--warmup", "0"];
    let o = flood(&args);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    node.shutdown();
}

#[test]
fn only_dead_nodes_give_up_after_the_attempts_with_exit_2() {
    let (a, b) = (dead_port().to_string(), dead_port().to_string());
    let o = flood(&["pingpong", "--node", &a, "--node", &b, "--reconnect-attempts", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused") && err.contains("after 3 attempts"), "{err}");
}

/// One counter of a node (the `shard="all"` row of its /metrics).
fn metric(http: SocketAddr, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).expect("metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let key = format!("{name}{{shard=\"all\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn peers_of_a_node_that_goes_away_mid_run_move_to_the_next_node() {
    let first = common::start_node(1);
    let second = common::start_node(1);
    let (first_http, second_http) = (first.http_addr, second.http_addr);
    let mut c = common::common(&first).with_nodes(vec![first.quic_addr, second.quic_addr]);
    c.duration_s = 3.0;
    c.reconnect_attempts = 5;
    // Pings lost at the close never come back: do not wait long for them.
    c.drain_timeout_s = 1.0;
    let p = Pingpong { connections: 8, rate: 200.0, arrivals: Arrivals::Uniform };
    // The first node drains (GOODBYE, close) once it has answered some of the run's pings.
    let killer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while metric(first_http, "fovea_pings_answered_total") < 50 {
            assert!(std::time::Instant::now() < deadline, "the run never reached the first node");
            std::thread::yield_now();
        }
        first.shutdown();
    });
    let r = fovea_flood::pingpong(&c, &p).expect("the run completes");
    killer.join().unwrap();
    // Every peer had a session on each node, and each lost one close (SHUTTING_DOWN) on the
    // way; pings in flight at the close are lost, nothing else.
    assert_eq!(r.num("connected"), 16.0, "{}", r.human);
    assert_eq!(r.num("errors"), 8.0, "{}", r.human);
    assert!(metric(second_http, "fovea_handshakes_total") >= 8, "every peer reconnected there");
    let answered_later = metric(second_http, "fovea_pings_answered_total");
    assert!(answered_later > 100, "the second node served the rest: {answered_later} pings");
    assert!(r.num("pongs") > 300.0, "{}", r.human);
    second.shutdown();
}
