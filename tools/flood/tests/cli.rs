//! The `fovea-flood` binary: JSON on stdout and exit 0 for a clean run against a real node; a
//! clear message and exit code 2 for a refused port, a silent port, a bad address, bad
//! parameters. Every wait has a deadline.

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs the binary with `args`, killing nothing: the tool bounds its own run; this bound only
/// turns a hang into a test failure.
fn flood(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_fovea-flood"))
        .args(args)
        .args(["--quiet"])
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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn clean_run_prints_json_and_exits_0() {
    let node = common::start_node(1);
    let addr = node.quic_addr.to_string();
    let o = flood(&[
        "fanout",
        "--node",
        &addr,
        "--insecure",
        "--json",
        "--publishers",
        "1",
        "--subscribers",
        "3",
        "--rate",
        "200",
        "--duration",
        "1",
        "--warmup",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["publishes"], 200);
    assert_eq!(v["deliveries"], 600);
    assert_eq!(v["lost"], 0);
    assert!(v["deliveries_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["p99_us"].as_f64().is_some());
    node.shutdown();
}

#[test]
fn refused_port_exits_2_with_a_clear_message() {
    // A port where nothing listens: bind, note it, release it.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let o =
        flood(&["pingpong", "--node", &port.to_string(), "--insecure", "--connect-timeout", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
}

#[test]
fn silent_port_times_out_with_exit_2() {
    // Something holds the port but never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    for scenario in ["fanout", "connect"] {
        let o = flood(&[scenario, "--node", &addr, "--insecure", "--connect-timeout", "1"]);
        assert_eq!(o.status.code(), Some(2), "{scenario}: {}", stderr(&o));
        assert!(stderr(&o).contains("timed out"), "{scenario}: {}", stderr(&o));
    }
}

#[test]
fn usage_errors_exit_2() {
    for (args, needle) in [
        (&["fanout", "--node", "not-an-address"][..], "bad node address"),
        (&["fanout", "--payload", "10"][..], "--payload"),
        (&["fanout", "--pattern", "a.#"][..], "bad --pattern"),
        (&["rpc", "--payload", "10"][..], "--payload"),
        (&["rpc", "--procedure", "a..b"][..], "bad --procedure"),
        (&["churn", "--payload", "10"][..], "--payload"),
        (&["churn", "--topic", "a.*"][..], "bad --topic"),
        (&["fanout", "--no-such-flag"][..], "unexpected argument"),
    ] {
        let o = flood(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}
