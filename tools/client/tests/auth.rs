//! Credentials against the test node: an Ed25519 key answers CHALLENGE with AUTH over exactly
//! the bytes PROTOCOL.md §6.4 names (checked with `ring`, independently of the client's
//! signer), a public key without its private key hands the CHALLENGE to the application, and
//! the node's AUTH_REQUIRED / AUTH_FAILED closes come back as typed errors. The sans-I/O
//! session runs in memory; the blocking client over loopback. Every wait has a deadline.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fovea_client::codec::frame::{self, Frame};
use fovea_client::codec::{ErrorCode, Realm};
use fovea_client::{
    Client, ClientConfig, ClientError, ConnectOptions, Credential, Ed25519Key, Event, StreamKind,
    Verify,
};
use ring::signature::{UnparsedPublicKey, ED25519};
use support::{Identity, Pipe, UdpNode, CHALLENGE_NONCE};

const WAIT: Duration = Duration::from_secs(10);
const PEER_ID: [u8; 32] = [0x11; 32];

fn config(credential: Credential) -> ClientConfig {
    ClientConfig {
        verify: Verify::Insecure,
        peer_id: Some(PEER_ID),
        realm: Realm::from_static("acme"),
        credential,
        ..ClientConfig::default()
    }
}

/// The signed message of AUTH, written out from the spec (not with the client's helper).
fn spec_message(nonce: &[u8], peer_id: &[u8; 32]) -> Vec<u8> {
    let mut msg = b"fovea-auth-v1".to_vec();
    assert_eq!(msg.len(), 13);
    msg.extend_from_slice(nonce);
    msg.extend_from_slice(peer_id);
    msg
}

#[test]
fn an_ed25519_key_answers_the_challenge_on_stream_0_and_is_welcomed() {
    let identity = Identity::generate();
    let key = Ed25519Key::generate().unwrap();
    let mut pipe = Pipe::new(&config(Credential::Ed25519(key.clone())), &identity, 1 << 20);
    let events = pipe.events();
    assert!(matches!(&events[..], [Event::Welcome { .. }]), "{events:?}");
    assert!(pipe.client.is_established());
    match &pipe.node.received[..] {
        [(0, Frame::Hello(h)), (0, Frame::Auth(a))] => {
            assert_eq!(h.cred_kind, 2);
            assert_eq!(&h.credential[..], key.public_key());
            assert_eq!(a.signature.len(), 64);
            let public = UnparsedPublicKey::new(&ED25519, key.public_key());
            public.verify(&spec_message(&CHALLENGE_NONCE, &PEER_ID), &a.signature).unwrap();
        }
        other => panic!("expected HELLO then AUTH on stream 0, got {other:?}"),
    }
    // The session works as any other.
    pipe.client
        .send_frame(&Frame::Ping(frame::Ping { ping_id: 3, sent_at_us: 1 }), StreamKind::Session)
        .unwrap();
    let events = pipe.events();
    assert!(events.iter().any(|e| matches!(e, Event::Frame(Frame::Pong(p)) if p.ping_id == 3)));
}

#[test]
fn requests_queued_before_auth_wait_for_it() {
    let identity = Identity::generate();
    let key = Ed25519Key::generate().unwrap();
    let mut pipe = Pipe::new(&config(Credential::Ed25519(key)), &identity, 1 << 20);
    // Queued before any packet moved: without a credential it would pipeline behind HELLO,
    // but the node takes nothing between HELLO and AUTH but AUTH (PROTOCOL §6.3).
    let subscribe = Frame::Subscribe(frame::Subscribe {
        request_id: 1,
        sub_id: 1,
        pattern: "room.*".parse().unwrap(),
    });
    pipe.client.send_frame(&subscribe, StreamKind::Session).unwrap();
    assert!(pipe.client.pending_bytes(StreamKind::Session) > subscribe.encoded_len());
    let events = pipe.events();
    let types: Vec<(u64, u8)> =
        pipe.node.received.iter().map(|(s, f)| (*s, f.frame_type())).collect();
    assert_eq!(types, vec![(0, 0x01), (0, 0x04), (0, 0x10)], "HELLO, AUTH, SUBSCRIBE");
    assert!(matches!(events[0], Event::Welcome { .. }), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::Frame(Frame::Ok(ok)) if ok.request_id == 1)));
    assert_eq!(pipe.client.pending_bytes(StreamKind::Session), 0);
}

#[test]
fn a_public_key_alone_hands_the_challenge_to_the_application() {
    let identity = Identity::generate();
    let key = Ed25519Key::generate().unwrap();
    let public = Bytes::copy_from_slice(key.public_key());
    let mut pipe = Pipe::new(&config(Credential::PublicKey(public)), &identity, 1 << 20);
    let ping = Frame::Ping(frame::Ping { ping_id: 5, sent_at_us: 0 });
    pipe.client.send_frame(&ping, StreamKind::Session).unwrap();
    let events = pipe.events();
    let nonce = match &events[..] {
        [Event::Frame(Frame::Challenge(c))] => c.nonce.clone(),
        other => panic!("expected the CHALLENGE, got {other:?}"),
    };
    assert_eq!(&nonce[..], &CHALLENGE_NONCE);
    assert!(!pipe.client.is_established());
    // A signer elsewhere answers; the session carries its AUTH.
    let signature = Bytes::copy_from_slice(&key.sign(&spec_message(&nonce, &PEER_ID)));
    pipe.client.send_frame(&Frame::Auth(frame::Auth { signature }), StreamKind::Session).unwrap();
    let events = pipe.events();
    assert!(matches!(&events[0], Event::Welcome { .. }), "{events:?}");
    let types: Vec<u8> = pipe.node.frames().iter().map(Frame::frame_type).collect();
    assert_eq!(types, vec![0x01, 0x04, 0x06], "HELLO, AUTH, then the PING held for it");
}

#[test]
fn a_second_challenge_closes_with_protocol_violation() {
    let identity = Identity::generate();
    let key = Ed25519Key::generate().unwrap();
    let mut pipe = Pipe::new(&config(Credential::Ed25519(key)), &identity, 1 << 20);
    pipe.node.answer = false;
    pipe.drive();
    let challenge = Frame::Challenge(frame::Challenge { nonce: Bytes::from_static(&[1; 32]) });
    pipe.node.send(false, &challenge);
    pipe.drive();
    pipe.node.send(false, &challenge);
    let events = pipe.events();
    match events.last() {
        Some(Event::Closed { error_code, by_peer: false, is_app: true, .. }) => {
            assert_eq!(*error_code, ErrorCode::ProtocolViolation as u64);
        }
        other => panic!("expected a local close, got {other:?}"),
    }
    let auths = pipe.node.frames().iter().filter(|f| matches!(f, Frame::Auth(_))).count();
    assert_eq!(auths, 1, "one AUTH for the first CHALLENGE only");
}

fn options(realm: &'static str, credential: Credential) -> ConnectOptions {
    let mut o = ConnectOptions { request_timeout: WAIT, ..ConnectOptions::default() };
    o.config = ClientConfig { realm: Realm::from_static(realm), ..config(credential) };
    o
}

/// Connects to a fresh test node (it serves one connection).
fn connect(realm: &'static str, credential: Credential) -> Result<Client, ClientError> {
    let identity = Identity::generate();
    let node = UdpNode::start(&identity);
    Client::connect(node.addr, &options(realm, credential), Instant::now() + WAIT)
}

#[test]
fn the_blocking_client_connects_with_a_key() {
    let identity = Identity::generate();
    let node = UdpNode::start(&identity);
    let key = Ed25519Key::generate().unwrap();
    let options = options("acme", Credential::Ed25519(key));
    let mut client = Client::connect(node.addr, &options, Instant::now() + WAIT).unwrap();
    client.ping().unwrap();
    let frames: Vec<u8> = node.received().iter().map(|(_, f)| f.frame_type()).collect();
    assert_eq!(&frames[..2], &[0x01, 0x04], "HELLO, AUTH: {frames:?}");
    client.close().unwrap();
}

#[test]
fn refusals_of_the_credential_are_typed_errors() {
    let key = || Ed25519Key::generate().unwrap();
    let err = connect("closed", Credential::None).unwrap_err();
    assert!(matches!(err, ClientError::AuthRequired(ref c) if c.by_peer), "{err:?}");
    assert!(err.to_string().contains("AUTH_REQUIRED (0x8)"), "{err}");
    assert_eq!(err.node_code(), Some(ErrorCode::AuthRequired as u64));
    let err = connect("refused", Credential::Ed25519(key())).unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed(_)), "{err:?}");
    assert!(err.to_string().contains("AUTH_FAILED (0x9) credential refused"), "{err}");
    let err = connect("refused", Credential::Token(Bytes::from_static(b"t"))).unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed(_)), "{err:?}");
    let public = Bytes::copy_from_slice(key().public_key());
    let err = connect("acme", Credential::PublicKey(public)).unwrap_err();
    assert!(matches!(err, ClientError::NoSigningKey), "{err:?}");
    assert!(err.to_string().contains("no private key"), "{err}");
}
