//! `fovea-cli` against a real node (in-process shards on loopback): the pub/sub round trip,
//! binary payloads, ping, stats, certificate pinning, a call answered by a provider (and one
//! that runs into its deadline), and what an operator sees when the node refuses a request or
//! the certificate is not trusted. The CLI runs as a real process; every wait has a deadline.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fovea_client::codec::frame::{self, Frame};
use fovea_client::{Client, ConnectOptions, Event, StreamKind, Verify};
use fovea_engine::config::NodeConfig;
use fovea_engine::node::Node;

fn config() -> NodeConfig {
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
    c
}

/// A node that shuts down and removes its data directory when dropped.
struct TestNode {
    node: Option<Node>,
    data_dir: std::path::PathBuf,
}

impl std::ops::Deref for TestNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        self.node.as_ref().expect("running until dropped")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn start(config: NodeConfig) -> TestNode {
    let data_dir = config.node.data_dir.clone();
    TestNode { node: Some(Node::start(config).unwrap()), data_dir }
}

fn start_node() -> TestNode {
    start(config())
}

/// The CLI for a test node: its self-signed certificate is not verified.
fn cli(node: &Node) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fovea-cli"));
    c.args(["--insecure", "--node", &node.quic_addr.to_string(), "--timeout", "20"]);
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts `sub` and returns once it has said on stderr that its subscriptions are active.
fn start_sub(node: &Node, args: &[&str]) -> Child {
    let mut sub =
        cli(node).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(sub.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("subscribed to"), "{line}");
    sub
}

#[test]
fn pub_reaches_sub_with_the_matching_patterns_in_json() {
    let node = start_node();
    let sub = start_sub(
        &node,
        &["--json", "sub", "room.*", "room.kitchen", "other", "--count", "1", "--duration", "20"],
    );
    let out = cli(&node).args(["pub", "room.kitchen", "21.5C"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "published 5 bytes to room.kitchen");
    let got = sub.wait_with_output().unwrap();
    assert!(got.status.success(), "{got:?}");
    let v: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(v["topic"], "room.kitchen");
    assert_eq!(v["payload"], "21.5C");
    assert_eq!(v["payload_encoding"], "utf8");
    let mut patterns: Vec<String> =
        v["patterns"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    patterns.sort();
    assert_eq!(patterns, vec!["room.*", "room.kitchen"]);
    let mut ids: Vec<u64> =
        v["sub_ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn binary_payloads_from_stdin_arrive_as_hex_and_lossy_text() {
    let node = start_node();
    let json = start_sub(&node, &["--json", "sub", "bin.**", "--count", "1", "--duration", "20"]);
    let human = start_sub(&node, &["sub", "bin.**", "--count", "1", "--duration", "20"]);
    let mut publisher = cli(&node)
        .args(["pub", "bin.blob", "-", "--message-id", "9"])
        .stdin(Stdio::piped())
        .output_later();
    publisher.stdin.take().unwrap().write_all(&[0x66, 0xff, 0x00]).unwrap();
    let out = publisher.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let got = json.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(
        (v["payload"].as_str(), v["payload_encoding"].as_str()),
        (Some("66ff00"), Some("hex"))
    );
    assert_eq!(v["message_id"], 9);
    let got = human.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "bin.blob: f\u{fffd}\0\n");
}

trait SpawnPiped {
    fn output_later(&mut self) -> Child;
}

impl SpawnPiped for Command {
    fn output_later(&mut self) -> Child {
        self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }
}

#[test]
fn sub_exits_three_when_the_count_is_not_reached_in_time() {
    let node = start_node();
    let out = cli(&node)
        .args(["sub", "quiet.**", "--count", "1", "--duration", "300ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stderr(&out).contains("0 of 1 deliveries"), "{out:?}");
}

#[test]
fn ping_and_stats_report_figures() {
    let node = start_node();
    let out = cli(&node).args(["--json", "ping", "--count", "3"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], 3);
    assert!(v["max_ms"].as_f64().unwrap() >= v["p50_ms"].as_f64().unwrap());
    assert!(v["p50_ms"].as_f64().unwrap() >= v["min_ms"].as_f64().unwrap());
    let metrics = node.http_addr.to_string();
    let out = cli(&node).args(["--json", "stats", "--metrics", &metrics]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["fovea_pings_answered_total"].as_f64().unwrap() >= 3.0, "{v}");
    let out = cli(&node).args(["stats", "--metrics", &metrics]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("fovea_pings_answered_total ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("fovea_peer_rtt_seconds ")), "{text}");
}

#[test]
fn the_nodes_certificate_can_be_pinned_and_is_not_trusted_otherwise() {
    let config = config();
    let cert = config.node.data_dir.join("cert.pem");
    let node = start(config);
    let addr = node.quic_addr.to_string();
    let cert = cert.to_str().unwrap();
    let base = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fovea-cli"));
        c.args(["--node", &addr, "--timeout", "20"]).args(extra);
        c.output().unwrap()
    };
    let out = base(&["--ca", cert, "ping", "--count", "1"]);
    assert!(out.status.success(), "{out:?}");
    let out = base(&["ping", "--count", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("TLS alert") && err.contains("hint: the node's certificate is not trusted"),
        "{err}"
    );
}

#[test]
fn a_rejected_subscription_prints_the_error_code_and_exits_one() {
    let mut config = config();
    config.limits.max_subscriptions_per_peer = 1;
    let node = start(config);
    let out = cli(&node).args(["sub", "a.**", "b.**", "--duration", "5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("rejected SUBSCRIBE: TOO_MANY_SUBSCRIPTIONS (0x103)"), "{err}");
}

#[test]
fn an_oversized_payload_names_the_nodes_limit_and_exits_one() {
    let node = start_node();
    let mut child = cli(&node).args(["pub", "t", "-"]).stdin(Stdio::piped()).output_later();
    let big = vec![b'x'; 2 * 1024 * 1024];
    child.stdin.take().unwrap().write_all(&big).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("exceeds the node's max_payload of 1048576 bytes"), "{out:?}");
}

#[test]
fn call_without_a_provider_fails_with_no_provider() {
    let node = start_node();
    let out =
        cli(&node).args(["call", "nobody.home", "x", "--deadline-ms", "2000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("NO_PROVIDER"), "{out:?}");
}

#[test]
fn members_lists_the_federation_with_regions_and_capacity() {
    let federated = |region: &str, seeds: Vec<std::net::SocketAddr>| {
        let mut c = config();
        c.federation.enabled = true;
        c.federation.seeds = seeds;
        c.federation.region = region.into();
        c.federation.probe_interval_ms = 300;
        c.federation.probe_timeout_ms = 150;
        c.federation.announce_interval_ms = 300;
        c
    };
    let a = start(federated("eu-west", Vec::new()));
    let b = start(federated("us-east", vec![a.quic_addr]));
    let metrics = a.http_addr.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let table = loop {
        let out = cli(&a).args(["members", "--metrics", &metrics]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains("alive") && text.contains("us-east") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "no member alive at A: {text}{out:?}");
    };
    let row = table.lines().find(|l| l.contains("us-east")).unwrap();
    assert!(row.contains(&b.quic_addr.to_string()) && row.ends_with("20000"), "{table}");
    let out = cli(&a).args(["--json", "members", "--metrics", &metrics]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["region"], "eu-west");
    assert_eq!(v["members"][0]["endpoint"], b.quic_addr.to_string());
    assert_eq!(v["members"][0]["capacity"], 20_000);
}

#[test]
fn a_node_list_skips_a_dead_first_address() {
    let node = start_node();
    // A loopback port where nothing listens: refused at once.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let list = format!("{dead},{}", node.quic_addr);
    let out = Command::new(env!("CARGO_BIN_EXE_fovea-cli"))
        .args(["--insecure", "--timeout", "20", "--node", &list, "ping", "--count", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("trying {}", node.quic_addr)), "{}", stderr(&out));
    // Repeated --node works the same; a list of only dead nodes fails like one dead node.
    let dead = dead.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_fovea-cli"))
        .args(["--insecure", "--timeout", "5", "--node", &dead, "--node", &dead, "ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A provider of `procedure` on `node` (a `fovea-client` session in realm `default`, the
/// CLI's), registered before this returns; a thread serves it until [`Provider::stop`],
/// answering each INVOKE with `answer` (or never, for `None`).
struct Provider {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Client, Vec<frame::Invoke>)>>,
}

/// Bound on a provider's whole life in a test.
const PROVIDER_MAX: Duration = Duration::from_secs(30);

impl Provider {
    fn start(node: &Node, procedure: &str, answer: Option<&'static [u8]>) -> Provider {
        let mut options = ConnectOptions::default();
        options.config.verify = Verify::Insecure;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut client = Client::connect(node.quic_addr, &options, deadline).unwrap();
        let procedure: fovea_client::codec::Name = procedure.parse().unwrap();
        client
            .request(StreamKind::Session, |request_id| {
                Frame::Register(frame::Register { request_id, procedure })
            })
            .expect("REGISTER accepted");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut invokes = Vec::new();
            let end = Instant::now() + PROVIDER_MAX;
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                // A short wait, so the stop flag is seen soon; the session is pumped meanwhile.
                match client.next_event(Instant::now() + Duration::from_millis(20)) {
                    Some(Event::Frame(Frame::Invoke(inv))) => {
                        if let Some(payload) = answer {
                            let reply = frame::Reply {
                                id: inv.invocation_id,
                                payload: payload.to_vec().into(),
                            };
                            client.send_frame(&Frame::Reply(reply), StreamKind::Data).unwrap();
                        }
                        invokes.push(inv);
                    }
                    Some(Event::Closed { .. }) => break,
                    _ => {}
                }
            }
            (client, invokes)
        });
        Provider { stop, thread: Some(thread) }
    }

    /// Stops serving; returns the session and the INVOKEs it received.
    fn stop(mut self) -> (Client, Vec<frame::Invoke>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("provider thread")
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn call_prints_the_providers_reply_and_exits_zero() {
    let node = start_node();
    let provider = Provider::start(&node, "math.add", Some(b"5"));
    let out = cli(&node).args(["call", "math.add", "[2,3]", "--deadline-ms", "5000"]).output();
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "5\n", "{out:?}");
    let out = cli(&node).args(["--json", "call", "math.add", "[4,5]"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&v["procedure"], &v["reply"], &v["reply_encoding"]),
        (&"math.add".into(), &"5".into(), &"utf8".into()),
        "{v}"
    );
    assert!(v["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{v}");
    let (_, invokes) = provider.stop();
    let got: Vec<(&str, &[u8])> =
        invokes.iter().map(|i| (i.procedure.as_str(), i.payload.as_ref())).collect();
    assert_eq!(got, [("math.add", &b"[2,3]"[..]), ("math.add", &b"[4,5]"[..])]);
}

#[test]
fn call_to_a_silent_provider_fails_with_deadline_exceeded_at_the_deadline() {
    let node = start_node();
    let provider = Provider::start(&node, "math.slow", None);
    let started = Instant::now();
    let out = cli(&node).args(["call", "math.slow", "x", "--deadline-ms", "300"]).output();
    let out = out.unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("call to math.slow failed: DEADLINE_EXCEEDED (0x111)"), "{err}");
    assert!(took >= Duration::from_millis(300), "answered after {took:?}, before the deadline");
    let (mut client, invokes) = provider.stop();
    assert_eq!(invokes.len(), 1, "the provider was invoked once: {invokes:?}");
    assert_eq!(invokes[0].payload.as_ref(), b"x");
    // The answer after the deadline is discarded and counted.
    let late = frame::Reply { id: invokes[0].invocation_id, payload: b"late".to_vec().into() };
    client.send_frame(&Frame::Reply(late), StreamKind::Data).unwrap();
    client.flush().unwrap();
    let metrics = node.http_addr.to_string();
    let counter = |v: &serde_json::Value, name: &str| v[name].as_f64().unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cli(&node).args(["--json", "stats", "--metrics", &metrics]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if counter(&v, "fovea_rpc_late_replies_total") >= 1.0 {
            assert_eq!(counter(&v, "fovea_rpc_deadline_exceeded_total"), 1.0, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "the late reply was never counted: {v}");
        // Keeps the provider's session moving (retransmissions) between polls.
        let _ = client.next_event(Instant::now() + Duration::from_millis(10));
    }
}
