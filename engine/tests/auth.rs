//! Authentication, authorization, abuse limits and TLS (docs/OPERATIONS.md "Security"): each
//! case asserts the documented outcome and that another peer keeps working. Real QUIC over
//! loopback, in-process shards; every wait polls with a deadline.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fovea_codec::auth_message;
use fovea_codec::frame::{self, Frame};
use fovea_codec::ErrorCode;
use fovea_engine::auth::CredentialConfig;
use ring::signature::{Ed25519KeyPair, KeyPair};

const SHORT: Duration = Duration::from_millis(300);

fn sha256_hex(token: &[u8]) -> String {
    boring::sha::sha256(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn token_cred(realm: &str, token: &[u8]) -> CredentialConfig {
    CredentialConfig {
        name: format!("{realm}-token"),
        realm: realm.into(),
        token_sha256: Some(sha256_hex(token)),
        ..Default::default()
    }
}

fn keypair() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn key_cred(realm: &str, key: &Ed25519KeyPair) -> CredentialConfig {
    let hex: String = key.public_key().as_ref().iter().map(|b| format!("{b:02x}")).collect();
    CredentialConfig {
        name: format!("{realm}-key"),
        realm: realm.into(),
        ed25519_public_key: Some(hex),
        ..Default::default()
    }
}

/// Connects and sends HELLO with a credential; the caller reads the answer.
fn hello_raw(node: std::net::SocketAddr, realm: &str, kind: u8, cred: &[u8]) -> TestClient {
    let mut c = TestClient::connect_raw(node);
    let id = c.peer_id;
    c.send_session(&hello_with(id, realm, kind, cred));
    c
}

/// Connects with a token and waits for WELCOME.
fn with_token(node: std::net::SocketAddr, realm: &str, token: &[u8]) -> TestClient {
    let mut c = hello_raw(node, realm, 1, token);
    c.expect_frame(|f| matches!(f, Frame::Welcome(_)), WAIT);
    c
}

fn expect_closed(c: &mut TestClient, code: ErrorCode) {
    let closed = c.wait_closed(WAIT).expect("closed by the node");
    assert_eq!(closed.code, code as u64, "{closed:?}");
}

fn challenge(c: &mut TestClient) -> Bytes {
    match c.expect_frame(|f| matches!(f, Frame::Challenge(_)), WAIT) {
        Frame::Challenge(ch) => ch.nonce,
        _ => unreachable!(),
    }
}

/// A bystander in the open realm `default` that must keep its traffic.
fn bystander_works(node: std::net::SocketAddr, tag: &[u8]) {
    let mut sub = TestClient::connect(node, "default");
    sub.subscribe(1, "bystander");
    let mut p = TestClient::connect(node, "default");
    assert!(matches!(p.publish_acked("bystander", tag, None), Frame::Ok(_)));
    assert_eq!(&sub.next_deliver(WAIT).expect("bystander served").payload[..], tag);
}

#[test]
fn a_wrong_token_closes_with_auth_failed_and_is_counted() {
    let mut config = test_config(2);
    config.auth.credentials.push(token_cred("acme", b"right-token"));
    let node = start_node(config);
    let mut good = with_token(node.quic_addr, "acme", b"right-token");
    let mut bad = hello_raw(node.quic_addr, "acme", 1, b"wrong-token");
    expect_closed(&mut bad, ErrorCode::AuthFailed);
    // A token valid in one realm is worth nothing in another.
    let mut elsewhere = hello_raw(node.quic_addr, "default", 1, b"right-token");
    expect_closed(&mut elsewhere, ErrorCode::AuthFailed);
    assert_eq!(metric(node.http_addr, "fovea_auth_failures_total"), 2);
    assert_eq!(metric(node.http_addr, "fovea_auth_successes_total"), 1);
    assert!(!metrics_text(node.http_addr).contains("right-token"), "no secret in metrics");
    good.subscribe(1, "still.works");
    bystander_works(node.quic_addr, b"after a wrong token");
    node.shutdown();
}

#[test]
fn no_credential_where_one_is_required_is_auth_required() {
    let mut config = test_config(1);
    config.auth.credentials.push(token_cred("acme", b"t"));
    let node = start_node(config);
    let mut c = hello_raw(node.quic_addr, "acme", 0, b"");
    expect_closed(&mut c, ErrorCode::AuthRequired);
    bystander_works(node.quic_addr, b"open realm stays open");
    node.shutdown();
    // auth.required closes every realm without credentials.
    let mut config = test_config(1);
    config.auth.required = true;
    config.auth.credentials.push(token_cred("acme", b"t"));
    let node = start_node(config);
    let mut c = hello_raw(node.quic_addr, "default", 0, b"");
    expect_closed(&mut c, ErrorCode::AuthRequired);
    let mut ok = with_token(node.quic_addr, "acme", b"t");
    ok.subscribe(1, "x");
    assert_eq!(metric(node.http_addr, "fovea_auth_required_total"), 1);
    node.shutdown();
}

#[test]
fn an_unanswered_challenge_times_out_with_auth_required() {
    let key = keypair();
    let mut config = test_config(1);
    config.auth.auth_timeout_ms = 300;
    config.auth.credentials.push(key_cred("acme", &key));
    let node = start_node(config);
    let mut c = hello_raw(node.quic_addr, "acme", 2, key.public_key().as_ref());
    challenge(&mut c);
    let started = std::time::Instant::now();
    expect_closed(&mut c, ErrorCode::AuthRequired);
    assert!(started.elapsed() < Duration::from_secs(4), "closed at auth_timeout_ms, not later");
    bystander_works(node.quic_addr, b"after an auth timeout");
    node.shutdown();
}

#[test]
fn ed25519_challenge_response_and_replays() {
    let key = keypair();
    let mut config = test_config(2);
    config.auth.credentials.push(key_cred("acme", &key));
    let node = start_node(config);
    // Success: sign the nonce of this connection.
    let mut good = hello_raw(node.quic_addr, "acme", 2, key.public_key().as_ref());
    let nonce = challenge(&mut good);
    let sig = key.sign(&auth_message(&nonce, &good.peer_id));
    good.send_session(&Frame::Auth(frame::Auth {
        signature: Bytes::copy_from_slice(sig.as_ref()),
    }));
    good.expect_frame(|f| matches!(f, Frame::Welcome(_)), WAIT);
    good.subscribe(1, "authed");
    // A wrong signature (another key) fails.
    let other = keypair();
    let mut bad = hello_raw(node.quic_addr, "acme", 2, key.public_key().as_ref());
    let nonce_bad = challenge(&mut bad);
    let sig_bad = other.sign(&auth_message(&nonce_bad, &bad.peer_id));
    bad.send_session(&Frame::Auth(frame::Auth {
        signature: Bytes::copy_from_slice(sig_bad.as_ref()),
    }));
    expect_closed(&mut bad, ErrorCode::AuthFailed);
    // A replay: the first connection's valid signature, on a new connection with the same
    // peer id, fails (the new connection has its own nonce).
    let mut replay = TestClient::connect_raw(node.quic_addr);
    replay.peer_id = good.peer_id;
    replay.send_session(&hello_with(good.peer_id, "acme", 2, key.public_key().as_ref()));
    let nonce2 = challenge(&mut replay);
    assert_ne!(nonce2, nonce, "fresh nonce per connection");
    replay.send_session(&Frame::Auth(frame::Auth {
        signature: Bytes::copy_from_slice(sig.as_ref()),
    }));
    expect_closed(&mut replay, ErrorCode::AuthFailed);
    assert_eq!(metric(node.http_addr, "fovea_auth_failures_total"), 2);
    // The authenticated session was never replaced by the failed attempt.
    let mut p = hello_raw(node.quic_addr, "acme", 2, key.public_key().as_ref());
    let n = challenge(&mut p);
    let s = key.sign(&auth_message(&n, &p.peer_id));
    p.send_session(&Frame::Auth(frame::Auth { signature: Bytes::copy_from_slice(s.as_ref()) }));
    p.expect_frame(|f| matches!(f, Frame::Welcome(_)), WAIT);
    assert!(matches!(p.publish_acked("authed", b"hi", None), Frame::Ok(_)));
    assert_eq!(&good.next_deliver(WAIT).expect("delivered").payload[..], b"hi");
    bystander_works(node.quic_addr, b"after auth failures");
    node.shutdown();
}

#[test]
fn realms_with_credentials_stay_isolated() {
    let mut config = test_config(2);
    config.auth.credentials.push(token_cred("acme", b"a"));
    config.auth.credentials.push(token_cred("globex", b"g"));
    let node = start_node(config);
    let mut sub = with_token(node.quic_addr, "acme", b"a");
    sub.subscribe(1, "**");
    let mut other = with_token(node.quic_addr, "globex", b"g");
    assert!(matches!(other.publish_acked("orders.new", b"globex", None), Frame::Ok(_)));
    let mut own = with_token(node.quic_addr, "acme", b"a");
    assert!(matches!(own.publish_acked("orders.new", b"acme", None), Frame::Ok(_)));
    let d = sub.next_deliver(WAIT).expect("own realm delivered");
    assert_eq!(&d.payload[..], b"acme", "the other realm's publish never arrives");
    assert!(sub.next_deliver(SHORT).is_none());
    node.shutdown();
}

#[test]
fn requests_without_permission_are_denied_and_the_connection_stays() {
    let mut config = test_config(2);
    let mut cred = token_cred("acme", b"limited");
    cred.publish = Some(vec!["sensors.**".into()]);
    cred.subscribe = Some(vec!["sensors.*".into()]);
    cred.register = Some(vec!["svc.allowed".into()]);
    cred.call = Some(vec!["svc.*".into()]);
    config.auth.credentials.push(cred);
    config.auth.credentials.push(token_cred("acme", b"admin"));
    let node = start_node(config);
    let mut c = with_token(node.quic_addr, "acme", b"limited");
    let denied =
        |f: Frame| matches!(f, Frame::Error(e) if e.code == ErrorCode::PermissionDenied as u64);
    assert!(denied(c.publish_acked("billing.x", b"no", None)));
    assert!(denied(c.try_subscribe(1, "**")), "** is not covered by sensors.*");
    assert!(denied(c.try_subscribe(2, "sensors.**")), "sensors.** is not covered by sensors.*");
    let r = c.request_id();
    c.send_session(&Frame::Register(frame::Register {
        request_id: r,
        procedure: "svc.other".parse().unwrap(),
    }));
    assert!(denied(c.expect_response(r)));
    c.send_data(&Frame::Call(frame::Call {
        idempotent: false,
        call_id: 9,
        timeout_ms: 1000,
        procedure: "admin.reset".parse().unwrap(),
        payload: Bytes::new(),
    }));
    let f = c.expect_frame(|f| matches!(f, Frame::CallError(e) if e.id == 9), WAIT);
    assert!(
        matches!(&f, Frame::CallError(e) if e.code == ErrorCode::PermissionDenied as u64),
        "{f:?}"
    );
    assert_eq!(metric(node.http_addr, "fovea_permission_denied_total"), 5);
    // Still open, and what is permitted works.
    c.subscribe(3, "sensors.*");
    let r = c.request_id();
    c.send_session(&Frame::Register(frame::Register {
        request_id: r,
        procedure: "svc.allowed".parse().unwrap(),
    }));
    assert!(matches!(c.expect_response(r), Frame::Ok(_)));
    let mut admin = with_token(node.quic_addr, "acme", b"admin");
    assert!(matches!(admin.publish_acked("sensors.hall", b"ok", None), Frame::Ok(_)));
    assert_eq!(&c.next_deliver(WAIT).expect("permitted subscription").payload[..], b"ok");
    assert!(matches!(c.publish_acked("sensors.kitchen.temp", b"ok", None), Frame::Ok(_)));
    node.shutdown();
}

#[test]
fn publishing_above_the_rate_is_rate_limited_then_flood() {
    let mut config = test_config(1);
    config.limits.publish_rate_per_s = 1;
    config.limits.publish_burst = 3;
    config.limits.flood_after_violations = 5;
    let node = start_node(config);
    let mut sub = TestClient::connect(node.quic_addr, "default");
    sub.subscribe(1, "bystander");
    let mut c = TestClient::connect(node.quic_addr, "default");
    // WELCOME tells the peer the budget it is held to (PROTOCOL.md §6.2, keys 10 and 11);
    // every peer's WELCOME shows the same (below).
    let limits = &c.welcome.as_ref().expect("WELCOME").limits;
    assert!(limits.contains(&(fovea_codec::frame::limit_keys::PUBLISH_RATE_PER_S, 1)));
    assert!(limits.contains(&(fovea_codec::frame::limit_keys::PUBLISH_BURST, 3)));
    for _ in 0..3 {
        assert!(matches!(c.publish_acked("t", b"x", None), Frame::Ok(_)));
    }
    let f = c.publish_acked("t", b"x", None);
    assert!(matches!(&f, Frame::Error(e) if e.code == ErrorCode::RateLimited as u64), "{f:?}");
    for _ in 0..10 {
        c.publish("t", b"x");
    }
    expect_closed(&mut c, ErrorCode::Flood);
    assert_eq!(metric(node.http_addr, "fovea_flood_disconnects_total"), 1);
    assert!(metric(node.http_addr, "fovea_publish_rate_limited_total") >= 5);
    // Another peer has its own budget.
    let mut p = TestClient::connect(node.quic_addr, "default");
    assert!(p.welcome.as_ref().unwrap().limits.contains(&(10, 1)));
    assert!(matches!(p.publish_acked("bystander", b"mine", None), Frame::Ok(_)));
    assert_eq!(&sub.next_deliver(WAIT).unwrap().payload[..], b"mine");
    node.shutdown();
}

fn from(ip: [u8; 4]) -> ClientOpts {
    ClientOpts { bind: Some(ip.into()), wait: Duration::from_millis(1500), ..ClientOpts::default() }
}

#[test]
fn handshakes_per_source_address_are_capped() {
    let mut config = test_config(1);
    config.limits.max_connections_per_ip = 2;
    let node = start_node(config);
    let mut a = TestClient::connect_with(node.quic_addr, &from([127, 0, 0, 1])).unwrap();
    let _b = TestClient::connect_with(node.quic_addr, &from([127, 0, 0, 1])).unwrap();
    assert!(
        TestClient::connect_with(node.quic_addr, &from([127, 0, 0, 1])).is_err(),
        "third refused"
    );
    assert!(metric(node.http_addr, "fovea_handshakes_refused_per_ip_total") >= 1);
    // Another address is unaffected.
    let mut other = TestClient::connect_with(node.quic_addr, &from([127, 0, 0, 2])).unwrap();
    let id = other.peer_id;
    other.send_session(&hello(id, "default"));
    other.expect_frame(|f| matches!(f, Frame::Welcome(_)), WAIT);
    // A closed connection frees its place.
    a.conn.close(true, 0, b"bye").unwrap();
    a.wait_closed(WAIT);
    assert!(
        (0..20).any(|_| TestClient::connect_with(node.quic_addr, &from([127, 0, 0, 1])).is_ok()),
        "a place is free again"
    );
    node.shutdown();
    // The handshake rate per address.
    let mut config = test_config(1);
    config.limits.handshakes_per_ip_per_s = 1;
    config.limits.handshake_burst_per_ip = 2;
    let node = start_node(config);
    for _ in 0..2 {
        TestClient::connect_with(node.quic_addr, &from([127, 0, 0, 3])).unwrap();
    }
    assert!(TestClient::connect_with(
        node.quic_addr,
        &ClientOpts { wait: Duration::from_millis(500), ..from([127, 0, 0, 3]) }
    )
    .is_err());
    TestClient::connect_with(node.quic_addr, &from([127, 0, 0, 4])).expect("other address");
    node.shutdown();
}

/// A CA and a certificate for `localhost` signed by it, written as PEM files into `dir`.
fn make_pki(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("test ca {tag}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join(format!("ca-{tag}.pem")),
        dir.join(format!("cert-{tag}.pem")),
        dir.join(format!("key-{tag}.pem")),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

fn verified(ca: &Path) -> ClientOpts {
    ClientOpts { ca: Some(ca.to_owned()), ..ClientOpts::default() }
}

#[test]
fn a_configured_certificate_is_served_and_reloaded_without_restart() {
    let mut config = test_config(2);
    let dir = config.node.data_dir.join("pki");
    let (ca1, cert1, key1) = make_pki(&dir, "one");
    let (ca2, cert2, key2) = make_pki(&dir, "two");
    let (cert, key) = (dir.join("node-cert.pem"), dir.join("node-key.pem"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    config.tls.cert = Some(cert.clone());
    config.tls.key = Some(key.clone());
    config.tls.reload_interval_ms = 50;
    let node = start_node(config);
    let mut before = TestClient::connect_with(node.quic_addr, &verified(&ca1)).expect("CA one");
    let id = before.peer_id;
    before.send_session(&hello(id, "default"));
    before.expect_frame(|f| matches!(f, Frame::Welcome(_)), WAIT);
    assert!(TestClient::connect_with(node.quic_addr, &verified(&ca2)).is_err(), "not CA two yet");
    // Replace the pair (key first, then the certificate, each by rename).
    for (src, dst) in [(&key2, &key), (&cert2, &cert)] {
        let tmp = dst.with_extension("tmp");
        std::fs::copy(src, &tmp).unwrap();
        std::fs::rename(&tmp, dst).unwrap();
    }
    assert!(
        wait_until(WAIT, || metric(node.http_addr, "fovea_tls_reloads_total") >= 1),
        "reloaded"
    );
    // Each shard swaps at its next accept: a few connections reach both shards.
    let mut seen_new = 0;
    for _ in 0..8 {
        if TestClient::connect_with(node.quic_addr, &verified(&ca2)).is_ok() {
            seen_new += 1;
        }
    }
    assert!(seen_new >= 6, "new handshakes use the new certificate ({seen_new}/8)");
    // The connection made before the reload keeps working.
    before.subscribe(1, "still.up");
    node.shutdown();
}

#[test]
fn mtls_refuses_a_client_without_a_certificate() {
    let mut config = test_config(1);
    let dir = config.node.data_dir.join("pki");
    let (ca, cert, key) = make_pki(&dir, "node");
    let (client_ca, client_cert, client_key) = make_pki(&dir, "clients");
    let (_, stranger_cert, stranger_key) = make_pki(&dir, "strangers");
    config.tls.cert = Some(cert);
    config.tls.key = Some(key);
    config.tls.client_ca = Some(client_ca);
    config.tls.require_client_cert = true;
    let node = start_node(config);
    // In TLS 1.3 the client finishes its handshake before the node has checked its
    // certificate: the refusal is the node's close (a TLS alert), and no WELCOME ever comes.
    let refused = |opts: &ClientOpts| match TestClient::connect_with(node.quic_addr, opts) {
        Err(_) => true,
        Ok(mut c) => {
            let id = c.peer_id;
            c.send_session(&hello(id, "default"));
            let closed = c.wait_closed(WAIT).is_some();
            closed && !c.drain_pending().iter().any(|f| matches!(f, Frame::Welcome(_)))
        }
    };
    assert!(refused(&verified(&ca)), "no client cert");
    let stranger = ClientOpts { cert: Some((stranger_cert, stranger_key)), ..verified(&ca) };
    assert!(refused(&stranger), "cert of another CA");
    let member = ClientOpts { cert: Some((client_cert, client_key)), ..verified(&ca) };
    let mut c = TestClient::connect_with(node.quic_addr, &member).expect("client cert accepted");
    let id = c.peer_id;
    c.send_session(&hello(id, "default"));
    c.expect_frame(|f| matches!(f, Frame::Welcome(_)), WAIT);
    c.subscribe(1, "mtls.works");
    node.shutdown();
}
