//! `fovea-cli` against a real node (in-process shards on loopback): the pub/sub round trip,
//! ping, stats, and the errors an operator sees for a bad address, a silent port and a refused
//! request. The CLI runs as a real process; every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use fovea_engine::config::NodeConfig;
use fovea_engine::node::Node;

fn start_node() -> Node {
    let mut c = NodeConfig::default();
    c.node.listen = "127.0.0.1:0".parse().unwrap();
    c.node.metrics = "127.0.0.1:0".parse().unwrap();
    c.node.shards = 2;
    c.node.pin_cores = false;
    c.node.drain_timeout_ms = 1_000;
    let mut r = [0u8; 8];
    boring::rand::rand_bytes(&mut r).unwrap();
    c.node.data_dir = std::env::temp_dir().join(format!(
        "fovea-cli-{}-{}",
        std::process::id(),
        u64::from_le_bytes(r)
    ));
    Node::start(c).unwrap()
}

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fovea-cli"));
    c.arg("--insecure");
    c
}

#[test]
fn pub_reaches_sub_with_the_matching_patterns_in_json() {
    let node = start_node();
    let addr = node.quic_addr.to_string();
    let mut sub = cli()
        .args([
            "--node",
            &addr,
            "--json",
            "sub",
            "room.*",
            "room.kitchen",
            "other",
            "--count",
            "1",
            "--duration",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The subscriber says so on stderr once its subscriptions are acknowledged.
    let mut err = BufReader::new(sub.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("subscribed to"), "{line}");
    let out = cli().args(["--node", &addr, "pub", "room.kitchen", "21.5C"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let got = sub.wait_with_output().unwrap();
    assert!(got.status.success(), "{got:?}");
    let v: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(v["topic"], "room.kitchen");
    assert_eq!(v["payload"], "21.5C");
    let mut patterns: Vec<String> =
        v["patterns"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    patterns.sort();
    assert_eq!(patterns, vec!["room.*", "room.kitchen"]);
    node.shutdown();
}

#[test]
fn ping_and_stats_report_figures() {
    let node = start_node();
    let addr = node.quic_addr.to_string();
    let out = cli().args(["--node", &addr, "--json", "ping", "--count", "3"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], 3);
    assert!(v["max_ms"].as_f64().unwrap() >= v["min_ms"].as_f64().unwrap());
    let metrics = node.http_addr.to_string();
    let out = cli().args(["--json", "stats", "--metrics", &metrics]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["fovea_pings_answered_total"].as_f64().unwrap() >= 3.0, "{v}");
    node.shutdown();
}

#[test]
fn a_bad_address_is_a_usage_error() {
    let out = cli().args(["--node", "not-an-address", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an ADDRESS:PORT"));
}

#[test]
fn a_port_where_nothing_listens_times_out_with_a_clear_error() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let start = std::time::Instant::now();
    let out = cli().args(["--node", &addr, "--timeout", "1", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer from"), "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_rejected_request_prints_the_error_code_and_exits_one() {
    let node = start_node();
    let addr = node.quic_addr.to_string();
    let big = "x".repeat(2 * 1024 * 1024);
    let mut child = cli()
        .args(["--node", &addr, "pub", "t", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(big.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FRAME_TOO_LARGE") || err.contains("PAYLOAD_TOO_LARGE"), "{err}");
    node.shutdown();
}

#[test]
fn call_without_a_provider_fails_with_no_provider() {
    let node = start_node();
    let addr = node.quic_addr.to_string();
    let out = cli()
        .args(["--node", &addr, "call", "nobody.home", "x", "--deadline-ms", "2000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NO_PROVIDER"), "{out:?}");
    node.shutdown();
}
