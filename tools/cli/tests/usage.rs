//! `fovea-cli` error paths and `stats` without a node: bad arguments, a silent port, a port
//! where nothing listens, and a canned metrics endpoint; `keygen` and `pubkey`. The CLI runs as a real process; every
//! wait is bounded.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fovea-cli")).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_address_is_a_usage_error() {
    let out = cli(&["--node", "not-an-address", "ping"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("--node \"not-an-address\" is not an ADDRESS:PORT"), "{out:?}");
}

#[test]
fn a_silent_port_times_out_within_the_timeout() {
    // Bound but never read: no ICMP error, only the timeout ends the wait.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let start = Instant::now();
    let out = cli(&["--node", &addr, "--insecure", "--timeout", "1s", "ping"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains(&format!("no answer from {addr} within 1s")), "{out:?}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_millis(2500), "{took:?}");
}

#[test]
fn a_port_where_nothing_listens_is_refused_at_once() {
    let addr = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let start = Instant::now();
    let out = cli(&["--node", &addr, "--insecure", "--timeout", "5", "pub", "t", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("connection refused"), "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
}

#[test]
fn invalid_names_are_usage_errors_before_connecting() {
    // Nothing listens on the discard port; an attempt to connect would show as a refusal.
    for args in [
        &["--node", "127.0.0.1:9", "pub", "a.*", "x"][..],
        &["--node", "127.0.0.1:9", "sub", "ok.**", "a.#"][..],
        &["--node", "127.0.0.1:9", "call", "bad name", "x"][..],
        &["--node", "127.0.0.1:9", "--realm", "a.b", "ping"][..],
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = stderr(&out);
        assert!(err.contains("invalid") || err.contains("not a valid realm"), "{args:?}: {err}");
        assert!(!err.contains("refused"), "{args:?}: {err}");
    }
}

#[test]
fn conflicting_or_malformed_flags_are_usage_errors() {
    for args in [
        &["--insecure", "--ca", "x.pem", "ping"][..],
        &["--timeout", "soon", "ping"][..],
        &["--timeout", "0", "ping"][..],
        &["--peer-id", "abcd", "ping"][..],
        &["ping", "--count", "0"][..],
        &["sub"][..],
        &["--token", "t", "--key", "k.key", "ping"][..],
        &["--node", "127.0.0.1:9", "--key", "/nonexistent/k.key", "ping"][..],
        &["--node", "127.0.0.1:9", "--token", "", "ping"][..],
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

#[test]
fn keygen_writes_a_key_only_its_owner_reads_and_never_over_another() {
    let dir = std::env::temp_dir().join(format!("fovea-cli-keygen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("id.key");
    let path = file.to_str().unwrap();
    let _ = std::fs::remove_file(&file);
    let out = cli(&["keygen", path]);
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(line.starts_with("ed25519_public_key = \"") && line.len() == 87, "{line}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    let first = std::fs::read(&file).unwrap();
    let out = cli(&["keygen", path]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("--force"), "{out:?}");
    assert_eq!(std::fs::read(&file).unwrap(), first, "the existing key is untouched");
    // `pubkey` reads it back; --json names both.
    let out = cli(&["--json", "pubkey", path]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        format!("ed25519_public_key = \"{}\"", v["ed25519_public_key"].as_str().unwrap()),
        line
    );
    let out = cli(&["keygen", "--force", path]);
    assert!(out.status.success(), "{out:?}");
    assert_ne!(std::fs::read(&file).unwrap(), first, "--force replaces it");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_ca_file_is_named() {
    let out = cli(&["--node", "127.0.0.1:9", "--ca", "/nonexistent/ca.pem", "ping"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("/nonexistent/ca.pem"), "{out:?}");
}

const METRICS: &str = "# HELP fovea_connections Open QUIC connections owned by the shard.
# TYPE fovea_connections gauge
fovea_connections{shard=\"0\"} 1
fovea_connections{shard=\"1\"} 2
fovea_connections{shard=\"all\"} 3
# TYPE fovea_pings_answered_total counter
fovea_pings_answered_total{shard=\"0\"} 4
fovea_pings_answered_total{shard=\"all\"} 4
# TYPE fovea_peer_rtt_seconds histogram
fovea_peer_rtt_seconds_bucket{le=\"0.001\"} 9
fovea_peer_rtt_seconds_bucket{le=\"+Inf\"} 10
fovea_peer_rtt_seconds_sum 0.02
fovea_peer_rtt_seconds_count 10
fovea_ready 1
";

/// Serves `body` to `requests` HTTP requests on a loopback port, one at a time.
fn metrics_endpoint(body: &'static str, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for _ in 0..requests {
            let (mut s, _) = listener.accept().unwrap();
            // Read the whole request, so closing does not reset the connection.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body.as_bytes());
        }
    });
    addr
}

#[test]
fn stats_summarises_fovea_metrics() {
    let addr = metrics_endpoint(METRICS, 2);
    let out = cli(&["stats", "--metrics", &addr]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("fovea_connections") && l.contains("  3  (shards 0: 1, 1: 2)")),
        "{text}"
    );
    assert!(text.contains("count 10, mean 2.000ms, p50 <= 1.000ms, p99 <= +Inf"), "{text}");
    let out = cli(&["--json", "stats", "--metrics", &addr]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fovea_connections"], 3.0);
    assert_eq!(v["fovea_pings_answered_total"], 4.0);
    assert_eq!(v["fovea_peer_rtt_seconds"]["count"], 10.0);
    assert_eq!(v["fovea_ready"], 1.0);
}

#[test]
fn stats_without_an_endpoint_is_a_connection_error() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let out = cli(&["--timeout", "1", "stats", "--metrics", &addr]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("cannot reach the metrics endpoint"), "{out:?}");
    let not_fovea = metrics_endpoint("other_metric 1\n", 1);
    let out = cli(&["stats", "--metrics", &not_fovea]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("serves no fovea_* metrics"), "{out:?}");
}
