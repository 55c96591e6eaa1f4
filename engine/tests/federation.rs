//! Federation between real `fovea` processes on loopback (docs/decisions/0004): three nodes,
//! B and C seeded with A; publishes cross bootstraps once per interested bootstrap and reach
//! each remote subscriber exactly once and in order; a call at A reaches a provider at C; a
//! SIGKILLed node is detected and the other two keep working. A test client speaking as a
//! bootstrap on a federation link sees a node refuse a forwarded call at the hop limit.
//!
//! Every wait has a deadline and returns as soon as its condition holds.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fovea_codec::frame::{self, Frame};

/// Fast SWIM and sync for a test on one host (the defaults suit a WAN).
const FEDERATION_TOML: &str = "[federation]
enabled = true
sync_interval_ms = 200
probe_interval_ms = 300
probe_timeout_ms = 150
suspect_timeout_ms = 1500
redial_min_ms = 100
redial_max_ms = 1000
";

fn spawn_node(tag: &str, seeds: &[SocketAddr]) -> NodeProcess {
    let toml = format!("{FEDERATION_TOML}region = \"region-{tag}\"\n");
    spawn_node_process(&format!("fed-{tag}"), &toml, seeds)
}

/// A federation series, e.g. `fovea_federation_members{state="alive"}`.
fn fed(http: SocketAddr, name: &str) -> u64 {
    series(http, name)
}

fn alive(n: &NodeProcess) -> u64 {
    fed(n.http, "fovea_federation_members{state=\"alive\"}")
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(WAIT, cond), "timed out waiting for {what}");
}

/// Receives deliveries until `want` with payload prefix `m` arrived (or the deadline); then
/// listens a little longer for duplicates. Returns the sequence numbers in arrival order.
fn collect(c: &mut TestClient, want: usize) -> Vec<u32> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < want && Instant::now() < deadline {
        if let Some(d) = c.next_deliver(Duration::from_millis(100)) {
            got.push(seq(&d.payload));
        }
    }
    // A duplicate would arrive right behind the originals.
    while let Some(d) = c.next_deliver(Duration::from_millis(300)) {
        got.push(seq(&d.payload));
    }
    got
}

fn seq(payload: &Bytes) -> u32 {
    std::str::from_utf8(payload).unwrap().strip_prefix('m').unwrap().parse().unwrap()
}

fn assert_exactly_once_in_order(got: &[u32], from: u32, n: u32, who: &str) {
    let want: Vec<u32> = (from..from + n).collect();
    let distinct: HashSet<u32> = got.iter().copied().collect();
    assert_eq!(distinct.len(), got.len(), "{who}: duplicates in {got:?}");
    assert_eq!(got, &want[..], "{who}: every message once, in publish order");
}

fn register(c: &mut TestClient, procedure: &str) {
    let request_id = c.request_id();
    c.send_session(&Frame::Register(frame::Register {
        request_id,
        procedure: procedure.parse().unwrap(),
    }));
    assert!(matches!(c.expect_response(request_id), Frame::Ok(_)), "REGISTER accepted");
}

/// Calls `math.add` from `caller` while `provider` answers its INVOKE; returns the reply.
fn call_across(caller: &mut TestClient, provider: &mut TestClient, call_id: u64) -> Bytes {
    caller.send_data(&Frame::Call(frame::Call {
        idempotent: false,
        call_id,
        timeout_ms: 5_000,
        procedure: "math.add".parse().unwrap(),
        payload: Bytes::from_static(b"[2,3]"),
    }));
    let Frame::Invoke(inv) = provider.expect_frame(|f| matches!(f, Frame::Invoke(_)), WAIT) else {
        unreachable!()
    };
    assert_eq!(inv.payload.as_ref(), b"[2,3]");
    assert_eq!(&inv.caller, &caller.peer_id, "INVOKE names the original caller");
    provider.send_data(&Frame::Reply(frame::Reply {
        id: inv.invocation_id,
        payload: Bytes::from_static(b"5"),
    }));
    match caller.expect_frame(
        |f| {
            matches!(f, Frame::Reply(r) if r.id == call_id)
                || matches!(f, Frame::CallError(e) if e.id == call_id)
        },
        WAIT,
    ) {
        Frame::Reply(r) => r.payload,
        other => panic!("call {call_id} failed: {other:?}"),
    }
}

fn publish_n(p: &mut TestClient, from: u32, n: u32) {
    for i in from..from + n {
        p.publish("sensors.kitchen.temp", format!("m{i}").as_bytes());
    }
}

#[test]
fn three_processes_federate_forward_once_call_across_and_survive_a_kill() {
    let started = Instant::now();
    let a = spawn_node("a", &[]);
    let mut b = spawn_node("b", &[a.quic]);
    let c = spawn_node("c", &[a.quic]);
    let nodes = [&a, &b, &c];
    wait_for("every node to see two members alive", || nodes.iter().all(|n| alive(n) == 2));

    // Different patterns at B and C, so A's count of remote patterns shows both arrived.
    let mut sub_b = TestClient::connect(b.quic, "acme");
    sub_b.subscribe(1, "sensors.**");
    let mut sub_c = TestClient::connect(c.quic, "acme");
    sub_c.subscribe(1, "sensors.*.temp");
    wait_for("A to learn both remote interests", || {
        fed(a.http, "fovea_federation_remote_interests") == 2
    });

    let mut publisher = TestClient::connect(a.quic, "acme");
    let forwarded = |n: &NodeProcess| fed(n.http, "fovea_federation_forwarded_publishes_total");
    let before = forwarded(&a);
    publish_n(&mut publisher, 0, 100);
    let got_b = collect(&mut sub_b, 100);
    let got_c = collect(&mut sub_c, 100);
    assert_exactly_once_in_order(&got_b, 0, 100, "subscriber at B");
    assert_exactly_once_in_order(&got_c, 0, 100, "subscriber at C");
    assert_eq!(forwarded(&a) - before, 200, "one FORWARD_PUBLISH per interested bootstrap");
    assert_eq!(fed(b.http, "fovea_federation_forwarded_publishes_total"), 0, "B never re-forwards");

    // A call at A with the only provider at C.
    let mut provider = TestClient::connect(c.quic, "acme");
    register(&mut provider, "math.add");
    wait_for("A to learn the remote provider", || {
        fed(a.http, "fovea_federation_remote_providers") == 1
    });
    let mut caller = TestClient::connect(a.quic, "acme");
    assert_eq!(call_across(&mut caller, &mut provider, 1).as_ref(), b"5");
    assert_eq!(fed(a.http, "fovea_federation_forwarded_calls_total"), 1);

    // B dies without a word; A and C notice, and keep serving each other.
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    wait_for("A and C to declare B down", || alive(&a) == 1 && alive(&c) == 1);
    wait_for("B's interest to expire at A", || {
        fed(a.http, "fovea_federation_remote_interests") == 1
    });
    let before = forwarded(&a);
    publish_n(&mut publisher, 100, 20);
    let got_c = collect(&mut sub_c, 20);
    assert_exactly_once_in_order(&got_c, 100, 20, "subscriber at C after B's death");
    assert_eq!(forwarded(&a) - before, 20, "only C is forwarded to");
    assert_eq!(call_across(&mut caller, &mut provider, 2).as_ref(), b"5");
    eprintln!("federation test took {:?}", started.elapsed());
}

/// p50/p99 of publish-to-deliver (sent by the test, received by the test: one clock) for a
/// subscriber on the publisher's node and one on another bootstrap, one message in flight at
/// a time. Run: `cargo test --release -p fovea-engine --test federation -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement: run it in release"]
fn cross_bootstrap_publish_latency() {
    let a = spawn_node("lat-a", &[]);
    let b = spawn_node("lat-b", &[a.quic]);
    wait_for("A and B to see each other", || alive(&a) == 1 && alive(&b) == 1);
    let mut local = TestClient::connect(a.quic, "acme");
    local.subscribe(1, "sensors.**");
    let mut remote = TestClient::connect(b.quic, "acme");
    remote.subscribe(1, "sensors.**");
    wait_for("A to learn B's interest", || fed(a.http, "fovea_federation_remote_interests") == 1);
    let mut publisher = TestClient::connect(a.quic, "acme");
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for i in 0..2_000u32 {
        let sent = Instant::now();
        publisher.publish("sensors.kitchen.temp", format!("m{i}").as_bytes());
        let d = local.next_deliver(WAIT).expect("local delivery");
        l.push(sent.elapsed());
        assert_eq!(seq(&d.payload), i);
        let d = remote.next_deliver(WAIT).expect("remote delivery");
        r.push(sent.elapsed());
        assert_eq!(seq(&d.payload), i);
        // The publisher's ACKs, outside the measured window (else its window closes).
        publisher.step(Instant::now());
    }
    let pct = |v: &mut Vec<Duration>, p: usize| {
        v.sort();
        v[(v.len() * p / 100).min(v.len() - 1)]
    };
    eprintln!(
        "publish-to-deliver over {} messages: local p50 {:?} p99 {:?}; via federation p50 {:?} p99 {:?}",
        l.len(),
        pct(&mut l, 50),
        pct(&mut l, 99),
        pct(&mut r, 50),
        pct(&mut r, 99)
    );
}

#[test]
fn the_federation_flag_in_a_peers_realm_does_not_open_a_link() {
    let mut config = test_config(2);
    config.federation.enabled = true;
    let node = start_node(config);
    let mut c = TestClient::connect_raw(node.quic_addr);
    let Frame::Hello(mut h) = hello(random_peer_id(), "acme") else { unreachable!() };
    h.flags = 1;
    c.send_session(&Frame::Hello(h));
    c.expect_frame(|f| matches!(f, Frame::Welcome(_)), WAIT);
    c.send_data(&Frame::ForwardReply(frame::ForwardReply {
        forward_id: 1,
        code: 0,
        payload: Bytes::new(),
    }));
    let closed = c.wait_closed(WAIT).expect("the node closes the session");
    assert_eq!(closed.code, fovea_codec::ErrorCode::ProtocolViolation as u64);
    node.shutdown();
}

#[test]
fn with_a_credential_on_the_link_realm_only_nodes_holding_the_token_federate() {
    let digest: String =
        boring::sha::sha256(b"s3cret").iter().map(|b| format!("{b:02x}")).collect();
    let federated = |seeds: Vec<SocketAddr>, token: Option<&str>| {
        let mut c = test_config(1);
        c.federation.enabled = true;
        c.federation.seeds = seeds;
        c.federation.token = token.map(str::to_owned);
        c.federation.probe_interval_ms = 300;
        c.federation.probe_timeout_ms = 150;
        c
    };
    let mut config = federated(Vec::new(), None);
    config.auth.credentials.push(fovea_engine::auth::CredentialConfig {
        name: "federation".into(),
        realm: "fovea-federation".into(),
        token_sha256: Some(digest),
        ..Default::default()
    });
    let a = start_node(config);
    let b = start_node(federated(vec![a.quic_addr], Some("s3cret")));
    let c = start_node(federated(vec![a.quic_addr], Some("wrong")));
    let alive = |http| fed(http, "fovea_federation_members{state=\"alive\"}");
    wait_for("A and B to federate", || alive(a.http_addr) == 1 && alive(b.http_addr) == 1);
    wait_for("C's dial to be refused", || {
        fed(c.http_addr, "fovea_federation_dial_failures_total") >= 1
    });
    assert_eq!(alive(c.http_addr), 0, "C holds the wrong token");
    assert_eq!(alive(a.http_addr), 1, "A admitted only B");
    for n in [c, b, a] {
        n.shutdown();
    }
}

/// A FORWARD_CALL on a link, as a bootstrap forwarding a caller's call sends it.
fn forward_call(forward_id: u64, hops: u8, caller: [u8; 32], origin: [u8; 32]) -> Frame {
    Frame::ForwardCall(frame::ForwardCall {
        origin,
        hops,
        flags: 0,
        forward_id,
        timeout_ms: 5_000,
        caller,
        realm: "acme".parse().unwrap(),
        procedure: "math.add".parse().unwrap(),
        payload: Bytes::from_static(b"[2,3]"),
    })
}

/// The FORWARD_REPLY to `forward_id` on `link`: (code, payload as text).
fn expect_forward_reply(link: &mut TestClient, forward_id: u64) -> (u64, String) {
    let is_reply = |f: &Frame| matches!(f, Frame::ForwardReply(r) if r.forward_id == forward_id);
    let Frame::ForwardReply(r) = link.expect_frame(is_reply, WAIT) else { unreachable!() };
    (r.code, String::from_utf8_lossy(&r.payload).into_owned())
}

/// The hop limit on the wire: a test client opens a federation link to a real `fovea` process
/// as a bootstrap does (HELLO flag bit 0 in realm `fovea-federation`) and forwards calls for a
/// procedure the node has no provider for. At `hops = max_hops` (and beyond) the node refuses
/// with FORWARD_REPLY TOO_MANY_HOPS instead of forwarding further; one hop below the limit the
/// same call gets NO_PROVIDER (the node would forward it, but knows no other bootstrap). At
/// the limit a local provider still serves the call: the limit bounds re-forwarding only.
#[test]
fn a_forwarded_call_at_the_hop_limit_is_refused_with_too_many_hops() {
    use fovea_codec::ErrorCode::{NoProvider, TooManyHops};
    let toml = format!("{FEDERATION_TOML}region = \"region-hops\"\nmax_hops = 3\n");
    let node = spawn_node_process("fed-hops", &toml, &[]);
    let bootstrap = random_peer_id();
    let mut link = TestClient::connect_raw(node.quic);
    link.peer_id = bootstrap;
    let Frame::Hello(mut h) = hello(bootstrap, "fovea-federation") else { unreachable!() };
    h.flags = 1;
    link.send_session(&Frame::Hello(h));
    link.expect_frame(|f| matches!(f, Frame::Welcome(_)), WAIT);
    wait_for("the node to count the link", || {
        fed(node.http, "fovea_federation_links{direction=\"in\"}") == 1
    });
    let caller = random_peer_id();
    let origin = random_peer_id();

    // At the limit, and far beyond it: TOO_MANY_HOPS, with its name as the message.
    for (forward_id, hops) in [(1, 3), (2, u8::MAX)] {
        link.send_data(&forward_call(forward_id, hops, caller, origin));
        assert_eq!(
            expect_forward_reply(&mut link, forward_id),
            (TooManyHops as u64, "TOO_MANY_HOPS".to_owned()),
            "hops {hops} with max_hops 3"
        );
    }
    // One below the limit the hop check passes; with no other bootstrap there is no provider.
    link.send_data(&forward_call(3, 2, caller, origin));
    assert_eq!(expect_forward_reply(&mut link, 3), (NoProvider as u64, "NO_PROVIDER".to_owned()));
    wait_for("the refusals to be counted", || {
        fed(node.http, "fovea_federation_hop_limit_drops_total") == 2
            && fed(node.http, "fovea_federation_calls_without_provider_total") == 1
    });
    assert_eq!(fed(node.http, "fovea_federation_forwarded_calls_total"), 0);

    // A local provider. The shard queues the registration for the control thread before its
    // OK, so a FORWARD_CALL sent after the OK finds it there.
    let mut provider = TestClient::connect(node.quic, "acme");
    register(&mut provider, "math.add");
    link.send_data(&forward_call(4, 3, caller, origin));
    let Frame::Invoke(inv) = provider.expect_frame(|f| matches!(f, Frame::Invoke(_)), WAIT) else {
        unreachable!()
    };
    assert_eq!((&inv.caller, inv.payload.as_ref()), (&caller, &b"[2,3]"[..]));
    provider.send_data(&Frame::Reply(frame::Reply {
        id: inv.invocation_id,
        payload: Bytes::from_static(b"5"),
    }));
    assert_eq!(expect_forward_reply(&mut link, 4), (0, "5".to_owned()), "served at the limit");
    assert_eq!(fed(node.http, "fovea_federation_hop_limit_drops_total"), 2);
}
