//! The DHT between real `fovea` processes on loopback (docs/PROTOCOL.md §7.4): three nodes, B
//! and C seeded with A, form a Kademlia network over their federation links; a procedure
//! registered at C is advertised under its key and a peer's FIND_VALUE at A finds it; a peer's
//! STORE at B is found by a peer at C; the records of a killed node expire after their TTL; an
//! advertisement made before the others joined is copied to them; a node partitioned by
//! SIGSTOP is forgotten and returns after SIGCONT; a peer beyond its DHT limits is refused; a
//! withdrawn advertisement expires while a live one is republished.
//!
//! Every wait has a deadline and returns as soon as its condition holds.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fovea_codec::frame::{self, Frame};
use fovea_control::federation::Kind;
use fovea_engine::control::dht::{advert_endpoint, advert_key};

/// Fast SWIM and a short record TTL (2 s, republished every second) for one host.
const CONFIG_TOML: &str = "[federation]
enabled = true
sync_interval_ms = 200
probe_interval_ms = 300
probe_timeout_ms = 150
suspect_timeout_ms = 1500
redial_min_ms = 100
redial_max_ms = 1000
dht_record_ttl_s = 2
dht_peer_requests_per_s = 1000
";

fn spawn_node(tag: &str, seeds: &[SocketAddr]) -> NodeProcess {
    spawn_node_with(tag, seeds, CONFIG_TOML)
}

fn spawn_node_with(tag: &str, seeds: &[SocketAddr], toml: &str) -> NodeProcess {
    spawn_node_process(&format!("dht-{tag}"), toml, seeds)
}

/// An unlabelled `fovea_dht_*` series.
fn dht_metric(http: SocketAddr, name: &str) -> u64 {
    series(http, name)
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(WAIT, cond), "timed out waiting for {what}");
}

/// Three nodes, B and C seeded with A, once every DHT table holds the other two.
fn three_nodes() -> [NodeProcess; 3] {
    let a = spawn_node("a", &[]);
    let b = spawn_node("b", &[a.quic]);
    let c = spawn_node("c", &[a.quic]);
    wait_for("every DHT table to hold the other two nodes", || {
        [&a, &b, &c].iter().all(|n| dht_metric(n.http, "fovea_dht_table_size") >= 2)
    });
    [a, b, c]
}

/// Sends a DHT request on the session stream; returns the NODES, VALUE, OK or ERROR for it.
fn dht_request(c: &mut TestClient, make: impl FnOnce(u64) -> Frame) -> Frame {
    let request_id = c.request_id();
    c.send_session(&make(request_id));
    c.expect_frame(
        |f| match f {
            Frame::Nodes(n) => n.request_id == request_id,
            Frame::Value(v) => v.request_id == request_id,
            Frame::Ok(o) => o.request_id == request_id,
            Frame::Error(e) => e.request_id == request_id,
            _ => false,
        },
        WAIT,
    )
}

/// The records a FIND_VALUE finds. A poll may outrun the per-peer rate limit: RATE_LIMITED is
/// asked again (the client reads for 10 ms in between), never taken for "no record".
fn find_value(c: &mut TestClient, key: [u8; 32]) -> Vec<frame::ValueRecord> {
    let deadline = Instant::now() + WAIT;
    loop {
        match dht_request(c, |request_id| Frame::FindValue(frame::FindValue { request_id, key })) {
            Frame::Value(v) => return v.records,
            Frame::Nodes(_) => return Vec::new(),
            Frame::Error(e) if e.code == 0x107 && Instant::now() < deadline => {
                c.pump_for(Duration::from_millis(10))
            }
            other => panic!("FIND_VALUE answered with {other:?}"),
        }
    }
}

fn register(c: &mut TestClient, procedure: &str) {
    let request_id = c.request_id();
    c.send_session(&Frame::Register(frame::Register {
        request_id,
        procedure: procedure.parse().unwrap(),
    }));
    assert!(matches!(c.expect_response(request_id), Frame::Ok(_)), "REGISTER accepted");
}

#[test]
fn three_nodes_form_the_dht_advertise_providers_and_serve_peers() {
    let started = Instant::now();
    let [a, b, c] = three_nodes();

    // A provider at C is advertised; a peer at A finds the record naming C.
    let mut provider = TestClient::connect(c.quic, "acme");
    let c_id = provider.welcome.as_ref().unwrap().node_id;
    register(&mut provider, "math.add");
    wait_for("C's advertisement at A", || dht_metric(a.http, "fovea_dht_records") >= 1);
    let key = advert_key(Kind::Registration, b"acme", b"math.add").0;
    let mut peer_a = TestClient::connect(a.quic, "acme");
    let records = find_value(&mut peer_a, key);
    let rec = records.iter().find(|r| r.publisher == c_id).expect("a record published by C");
    assert_eq!(advert_endpoint(&rec.value), Some(c.quic), "the record names C's endpoint");
    assert!(rec.ttl_s >= 1 && rec.ttl_s <= 2, "TTL from the config: {}", rec.ttl_s);

    // FIND_NODE lists the other nodes.
    let target = [0x44; 32];
    let Frame::Nodes(nodes) = dht_request(&mut peer_a, |request_id| {
        Frame::FindNode(frame::FindNode { request_id, target })
    }) else {
        panic!("FIND_NODE answered with NODES")
    };
    assert!(nodes.nodes.len() >= 2, "{nodes:?}");

    // A peer's STORE at B, found by a peer at C.
    let mut peer_b = TestClient::connect(b.quic, "acme");
    let b_id = peer_b.welcome.as_ref().unwrap().node_id;
    let key = [0x5a; 32];
    let value = Bytes::from_static(b"hello from a peer");
    let stored = dht_request(&mut peer_b, |request_id| {
        Frame::Store(frame::Store { request_id, key, ttl_s: 30, value: value.clone() })
    });
    assert!(matches!(stored, Frame::Ok(_)), "STORE accepted: {stored:?}");
    let mut peer_c = TestClient::connect(c.quic, "acme");
    let records = find_value(&mut peer_c, key);
    assert!(
        records.iter().any(|r| r.value == value && r.publisher == b_id),
        "the stored record, published by B: {records:?}"
    );
    // A peer may not replace a node's own advertisement.
    let key = advert_key(Kind::Registration, b"acme", b"math.add").0;
    let refused = dht_request(&mut peer_c, |request_id| {
        Frame::Store(frame::Store { request_id, key, ttl_s: 30, value: value.clone() })
    });
    assert!(matches!(&refused, Frame::Error(e) if e.code == 0x106), "{refused:?}");
    assert!(dht_metric(a.http, "fovea_dht_lookups_completed_total") >= 1);
    for n in [&a, &b, &c] {
        // A dialing node's first DHT frames wait for its SWIM join instead of being dropped.
        assert_eq!(dht_metric(n.http, "fovea_dht_unknown_senders_total"), 0);
    }
    eprintln!("dht three nodes: {:?}", started.elapsed());
}

#[test]
fn records_of_a_killed_node_expire_after_their_ttl() {
    let started = Instant::now();
    let [a, b, mut c] = three_nodes();
    let mut provider = TestClient::connect(c.quic, "acme");
    let c_id = provider.welcome.as_ref().unwrap().node_id;
    register(&mut provider, "math.add");
    let key = advert_key(Kind::Registration, b"acme", b"math.add").0;
    let mut peer_a = TestClient::connect(a.quic, "acme");
    wait_for("C's record at A", || {
        find_value(&mut peer_a, key).iter().any(|r| r.publisher == c_id)
    });

    let _ = c.child.kill();
    let _ = c.child.wait();
    let killed = Instant::now();
    wait_for("C's records to expire at A and B", || {
        dht_metric(a.http, "fovea_dht_records") == 0 && dht_metric(b.http, "fovea_dht_records") == 0
    });
    let gone = killed.elapsed();
    assert!(find_value(&mut peer_a, key).is_empty(), "no record left under the key");
    // Republished every second with a 2 s TTL: gone within the TTL (plus housekeeping).
    assert!(gone <= Duration::from_millis(4_500), "expired after {gone:?}");
    eprintln!("dht expiry: {:?} after the kill, test {:?}", gone, started.elapsed());
}

#[test]
fn an_advertisement_made_before_the_others_joined_is_copied_to_them() {
    let started = Instant::now();
    // A TTL of an hour: republishing (at half of it) cannot be what brings the copies.
    let toml = CONFIG_TOML.replace("dht_record_ttl_s = 2", "dht_record_ttl_s = 3600");
    let a = spawn_node_with("a", &[], &toml);
    let mut provider = TestClient::connect(a.quic, "acme");
    let a_id = provider.welcome.as_ref().unwrap().node_id;
    register(&mut provider, "math.add");
    wait_for("A's own copy", || dht_metric(a.http, "fovea_dht_records") >= 1);
    let b = spawn_node_with("b", &[a.quic], &toml);
    let c = spawn_node_with("c", &[a.quic], &toml);
    wait_for("copies of A's advertisement at B and C", || {
        dht_metric(b.http, "fovea_dht_records") >= 1 && dht_metric(c.http, "fovea_dht_records") >= 1
    });
    let key = advert_key(Kind::Registration, b"acme", b"math.add").0;
    let mut peer_c = TestClient::connect(c.quic, "acme");
    let records = find_value(&mut peer_c, key);
    let rec = records.iter().find(|r| r.publisher == a_id).expect("a record published by A");
    assert!(rec.ttl_s > 3000, "the configured TTL: {}", rec.ttl_s);
    assert_eq!(dht_metric(a.http, "fovea_dht_advertised"), 1);
    eprintln!("dht late joiners: {:?}", started.elapsed());
}

/// The value of an unlabelled federation series.
fn remote_interests(n: &NodeProcess) -> u64 {
    dht_metric(n.http, "fovea_federation_remote_interests")
}

fn signal(n: &NodeProcess, sig: i32) {
    // SAFETY: a plain kill(2) on the child we spawned.
    let rc = unsafe { libc::kill(n.child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill({sig})");
}

/// B is cut off by freezing its process (SIGSTOP: no datagram in or out, its sockets and
/// connections intact), then healed (SIGCONT): A and C drop B's interest and B's DHT records
/// expire; after the heal both come back (SWIM rejoin, anti-entropy, republish).
#[test]
fn a_partitioned_node_is_forgotten_and_returns_after_the_heal() {
    let started = Instant::now();
    let [a, b, c] = three_nodes();
    let mut sub = TestClient::connect(b.quic, "acme");
    let b_id = sub.welcome.as_ref().unwrap().node_id;
    sub.subscribe(1, "part.*");
    let key = advert_key(Kind::Interest, b"acme", b"part.*").0;
    let mut peer_a = TestClient::connect(a.quic, "acme");
    let names_b = |peer: &mut TestClient| find_value(peer, key).iter().any(|r| r.publisher == b_id);
    wait_for("B's interest at A and C", || remote_interests(&a) == 1 && remote_interests(&c) == 1);
    wait_for("B's record found at A", || names_b(&mut peer_a));

    signal(&b, libc::SIGSTOP);
    let cut = Instant::now();
    wait_for("A and C to drop B's interest", || {
        remote_interests(&a) == 0 && remote_interests(&c) == 0
    });
    wait_for("B's record to expire", || !names_b(&mut peer_a));
    let forgotten = cut.elapsed();

    signal(&b, libc::SIGCONT);
    let healed = Instant::now();
    wait_for("B's interest back at A and C", || {
        remote_interests(&a) == 1 && remote_interests(&c) == 1
    });
    wait_for("B's record back at A", || names_b(&mut peer_a));
    eprintln!(
        "dht partition: forgotten after {forgotten:?}, back {:?} after the heal, test {:?}",
        healed.elapsed(),
        started.elapsed()
    );
}

/// A lone federating node (in-process) serves peers' DHT requests within its per-peer limits:
/// requests per second, then live records stored per peer.
#[test]
fn a_peer_beyond_its_dht_limits_is_refused() {
    let mut config = test_config(1);
    config.federation.enabled = true;
    config.federation.dht_peer_requests_per_s = 3;
    config.federation.dht_peer_stores = 1;
    let node = start_node(config);
    let mut peer = TestClient::connect(node.quic_addr, "acme");
    // Three requests at once pass (a full bucket), the fourth is refused.
    let ids: Vec<u64> = (0..4)
        .map(|_| {
            let request_id = peer.request_id();
            let target = [0x44; 32];
            peer.send_session(&Frame::FindNode(frame::FindNode { request_id, target }));
            request_id
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let f = peer.expect_frame(
            |f| match f {
                Frame::Nodes(n) => n.request_id == *id,
                Frame::Error(e) => e.request_id == *id,
                _ => false,
            },
            WAIT,
        );
        match (i, f) {
            (0..=2, Frame::Nodes(n)) => assert!(n.nodes.is_empty(), "a lone node knows no one"),
            (3, Frame::Error(e)) => assert_eq!(e.code, 0x107, "RATE_LIMITED"),
            (i, f) => panic!("request {i}: {f:?}"),
        }
    }

    // One live record per peer: a second key is refused, the first one renewed.
    let mut peer = TestClient::connect(node.quic_addr, "acme");
    let store = |peer: &mut TestClient, key: [u8; 32]| {
        let value = Bytes::from_static(b"v");
        dht_request(peer, |request_id| {
            Frame::Store(frame::Store { request_id, key, ttl_s: 60, value })
        })
    };
    assert!(matches!(store(&mut peer, [1; 32]), Frame::Ok(_)));
    assert!(matches!(store(&mut peer, [2; 32]), Frame::Error(e) if e.code == 0x107));
    assert!(matches!(store(&mut peer, [1; 32]), Frame::Ok(_)), "a renewal");
    let mut other = TestClient::connect(node.quic_addr, "acme");
    let records = find_value(&mut other, [1; 32]);
    assert_eq!(records.len(), 1);
    assert_eq!(&records[0].value[..], b"v");
    node.shutdown();
}

/// The last local provider of one procedure goes: its record expires, while the record of a
/// procedure still provided is republished (it outlives its 2 s TTL).
#[test]
fn a_withdrawn_advertisement_expires_and_a_live_one_is_republished() {
    let [a, _b, c] = three_nodes();
    let mut provider = TestClient::connect(c.quic, "acme");
    let c_id = provider.welcome.as_ref().unwrap().node_id;
    register(&mut provider, "math.add");
    register(&mut provider, "math.mul");
    let add = advert_key(Kind::Registration, b"acme", b"math.add").0;
    let mul = advert_key(Kind::Registration, b"acme", b"math.mul").0;
    let mut peer_a = TestClient::connect(a.quic, "acme");
    let names_c =
        |peer: &mut TestClient, key| find_value(peer, key).iter().any(|r| r.publisher == c_id);
    wait_for("both records at A", || names_c(&mut peer_a, add) && names_c(&mut peer_a, mul));
    wait_for("C to advertise two names", || dht_metric(c.http, "fovea_dht_advertised") == 2);

    let request_id = provider.request_id();
    provider.send_session(&Frame::Unregister(frame::Unregister {
        request_id,
        procedure: "math.mul".parse().unwrap(),
    }));
    assert!(matches!(provider.expect_response(request_id), Frame::Ok(_)));
    let withdrawn = Instant::now();
    wait_for("math.mul's record to expire", || !names_c(&mut peer_a, mul));
    assert!(withdrawn.elapsed() >= Duration::from_millis(500), "left to expire, not deleted");
    assert_eq!(dht_metric(c.http, "fovea_dht_advertised"), 1);
    assert!(names_c(&mut peer_a, add), "math.add's record republished past its TTL");
}
