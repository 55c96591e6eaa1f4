//! RPC and direct messages through the node, end to end over real QUIC: providers register,
//! callers call, the node routes INVOKE to a provider on its owning shard and the REPLY back to
//! the caller's shard. Every error case of PROTOCOL.md §7.2 is provoked and checked; deadlines
//! are waited for with deadlines, never sleeps.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use fovea_codec::frame::{self, Frame};
use fovea_codec::ErrorCode;

fn register(c: &mut TestClient, procedure: &str) -> Frame {
    let r = c.request_id();
    c.send_session(&Frame::Register(frame::Register {
        request_id: r,
        procedure: procedure.parse().unwrap(),
    }));
    c.expect_response(r)
}

fn call(
    c: &mut TestClient,
    call_id: u64,
    procedure: &str,
    payload: &[u8],
    timeout_ms: u64,
    idempotent: bool,
) {
    c.send_data(&Frame::Call(frame::Call {
        idempotent,
        call_id,
        timeout_ms,
        procedure: procedure.parse().unwrap(),
        payload: Bytes::copy_from_slice(payload),
    }));
}

/// The caller's answer for `call_id`: Ok(reply payload) or Err(error code).
fn answer(c: &mut TestClient, call_id: u64) -> Result<Bytes, u64> {
    match c.expect_frame(
        |f| {
            matches!(f, Frame::Reply(r) if r.id == call_id)
                || matches!(f, Frame::CallError(e) if e.id == call_id)
        },
        WAIT,
    ) {
        Frame::Reply(r) => Ok(r.payload),
        Frame::CallError(e) => Err(e.code),
        _ => unreachable!(),
    }
}

/// Serves INVOKEs on a provider until `n` were answered; the reply echoes the payload with a tag.
fn serve(p: &mut TestClient, n: usize, tag: &[u8]) -> usize {
    let mut served = 0;
    while served < n {
        let Some(Frame::Invoke(inv)) =
            p.try_expect_frame(|f| matches!(f, Frame::Invoke(_)), Duration::from_millis(200))
        else {
            break;
        };
        let mut reply = tag.to_vec();
        reply.extend_from_slice(&inv.payload);
        p.send_data(&Frame::Reply(frame::Reply {
            id: inv.invocation_id,
            payload: Bytes::from(reply),
        }));
        served += 1;
    }
    served
}

#[test]
fn a_call_reaches_a_provider_and_the_reply_returns() {
    let node = start_node(test_config(2));
    let mut provider = TestClient::connect(node.quic_addr, "default");
    assert!(matches!(register(&mut provider, "math.double"), Frame::Ok(_)));
    let mut caller = TestClient::connect(node.quic_addr, "default");
    call(&mut caller, 1, "math.double", b"21", 5_000, false);
    let inv = provider.expect_frame(|f| matches!(f, Frame::Invoke(_)), WAIT);
    let Frame::Invoke(inv) = inv else { unreachable!() };
    assert_eq!(inv.caller, caller.peer_id);
    assert_eq!(inv.procedure.as_str(), "math.double");
    assert_eq!(&inv.payload[..], b"21");
    provider.send_data(&Frame::Reply(frame::Reply {
        id: inv.invocation_id,
        payload: Bytes::from_static(b"42"),
    }));
    assert_eq!(answer(&mut caller, 1).unwrap(), Bytes::from_static(b"42"));
    node.shutdown();
}

#[test]
fn round_robin_spreads_calls_evenly_over_providers_on_both_shards() {
    let node = start_node(test_config(2));
    let mut providers: Vec<TestClient> = (0..3)
        .map(|_| {
            let mut p = TestClient::connect(node.quic_addr, "default");
            assert!(matches!(register(&mut p, "work"), Frame::Ok(_)));
            p
        })
        .collect();
    let mut caller = TestClient::connect(node.quic_addr, "default");
    let calls = 30u64;
    for id in 1..=calls {
        call(&mut caller, id, "work", &id.to_be_bytes(), 10_000, false);
    }
    let mut counts = Vec::new();
    for (i, p) in providers.iter_mut().enumerate() {
        counts.push(serve(p, calls as usize, &[i as u8]));
    }
    for id in 1..=calls {
        let reply = answer(&mut caller, id).expect("reply");
        assert_eq!(&reply[1..], &id.to_be_bytes(), "each reply belongs to its call");
    }
    assert_eq!(counts, vec![10, 10, 10], "round robin");
    node.shutdown();
}

#[test]
fn no_provider_duplicate_ids_and_the_inflight_limit_are_typed_errors() {
    let mut config = test_config(2);
    config.limits.max_inflight_calls_per_peer = 2;
    let node = start_node(config);
    let mut caller = TestClient::connect(node.quic_addr, "default");
    call(&mut caller, 1, "nobody.home", b"", 1_000, false);
    assert_eq!(answer(&mut caller, 1), Err(ErrorCode::NoProvider as u64));
    let mut provider = TestClient::connect(node.quic_addr, "default");
    assert!(matches!(register(&mut provider, "slow"), Frame::Ok(_)));
    call(&mut caller, 10, "slow", b"", 10_000, false);
    call(&mut caller, 10, "slow", b"", 10_000, false);
    assert_eq!(
        answer(&mut caller, 10),
        Err(ErrorCode::DuplicateCallId as u64),
        "second call with id 10"
    );
    call(&mut caller, 11, "slow", b"", 10_000, false);
    call(&mut caller, 12, "slow", b"", 10_000, false);
    assert_eq!(answer(&mut caller, 12), Err(ErrorCode::TooManyCalls as u64));
    assert_eq!(serve(&mut provider, 2, b""), 2);
    assert!(answer(&mut caller, 10).is_ok());
    assert!(answer(&mut caller, 11).is_ok());
    node.shutdown();
}

#[test]
fn a_deadline_answers_the_caller_and_the_late_reply_is_dropped() {
    let node = start_node(test_config(2));
    let mut provider = TestClient::connect(node.quic_addr, "default");
    assert!(matches!(register(&mut provider, "sleepy"), Frame::Ok(_)));
    let mut caller = TestClient::connect(node.quic_addr, "default");
    call(&mut caller, 1, "sleepy", b"", 200, false);
    let Frame::Invoke(inv) = provider.expect_frame(|f| matches!(f, Frame::Invoke(_)), WAIT) else {
        unreachable!()
    };
    assert_eq!(answer(&mut caller, 1), Err(ErrorCode::DeadlineExceeded as u64));
    provider.send_data(&Frame::Reply(frame::Reply {
        id: inv.invocation_id,
        payload: Bytes::from_static(b"late"),
    }));
    assert!(wait_until(WAIT, || metric(node.http_addr, "fovea_rpc_late_replies_total") == 1));
    caller.pump_for(Duration::from_millis(100));
    assert!(
        caller.try_expect_frame(|f| matches!(f, Frame::Reply(_)), Duration::ZERO).is_none(),
        "the caller never sees a second answer"
    );
    node.shutdown();
}

#[test]
fn a_provider_that_leaves_mid_call_fails_the_call_or_the_node_retries_an_idempotent_one() {
    let node = start_node(test_config(2));
    let mut caller = TestClient::connect(node.quic_addr, "default");
    let mut leaving2 = TestClient::connect(node.quic_addr, "default");
    assert!(matches!(register(&mut leaving2, "job2"), Frame::Ok(_)));
    call(&mut caller, 2, "job2", b"b", 10_000, false);
    leaving2.expect_frame(|f| matches!(f, Frame::Invoke(_)), WAIT);
    leaving2.send_session(&Frame::Goodbye(frame::Goodbye { code: 0, reason: Bytes::new() }));
    leaving2.wait_closed(WAIT);
    assert_eq!(answer(&mut caller, 2), Err(ErrorCode::ProviderGone as u64));

    // Idempotent: the node moves the call to another provider.
    let mut flaky = TestClient::connect(node.quic_addr, "default");
    assert!(matches!(register(&mut flaky, "idem"), Frame::Ok(_)));
    call(&mut caller, 3, "idem", b"c", 10_000, true);
    flaky.expect_frame(|f| matches!(f, Frame::Invoke(_)), WAIT);
    let mut steady = TestClient::connect(node.quic_addr, "default");
    assert!(matches!(register(&mut steady, "idem"), Frame::Ok(_)));
    flaky.send_session(&Frame::Goodbye(frame::Goodbye { code: 0, reason: Bytes::new() }));
    flaky.wait_closed(WAIT);
    assert_eq!(serve(&mut steady, 1, b"ok:"), 1, "the retry reached the other provider");
    assert_eq!(answer(&mut caller, 3).unwrap(), Bytes::from_static(b"ok:c"));
    assert!(metric(node.http_addr, "fovea_rpc_retries_total") >= 1);
    node.shutdown();
}

#[test]
fn registration_limits_and_unknown_registrations_are_request_errors() {
    let mut config = test_config(1);
    config.limits.max_registrations_per_peer = 2;
    let node = start_node(config);
    let mut p = TestClient::connect(node.quic_addr, "default");
    assert!(matches!(register(&mut p, "a"), Frame::Ok(_)));
    assert!(
        matches!(register(&mut p, "a"), Frame::Error(e) if e.code == ErrorCode::AlreadyRegistered as u64)
    );
    assert!(matches!(register(&mut p, "b"), Frame::Ok(_)));
    assert!(
        matches!(register(&mut p, "c"), Frame::Error(e) if e.code == ErrorCode::TooManyRegistrations as u64)
    );
    let r = p.request_id();
    p.send_session(&Frame::Unregister(frame::Unregister {
        request_id: r,
        procedure: "zzz".parse().unwrap(),
    }));
    assert!(
        matches!(p.expect_response(r), Frame::Error(e) if e.code == ErrorCode::UnknownRegistration as u64)
    );
    let r = p.request_id();
    p.send_session(&Frame::Unregister(frame::Unregister {
        request_id: r,
        procedure: "a".parse().unwrap(),
    }));
    assert!(matches!(p.expect_response(r), Frame::Ok(_)));
    let mut caller = TestClient::connect(node.quic_addr, "default");
    call(&mut caller, 1, "a", b"", 1_000, false);
    assert_eq!(answer(&mut caller, 1), Err(ErrorCode::NoProvider as u64), "unregistered");
    node.shutdown();
}

#[test]
fn realms_isolate_procedures() {
    let node = start_node(test_config(2));
    let mut p = TestClient::connect(node.quic_addr, "tenant-a");
    assert!(matches!(register(&mut p, "svc"), Frame::Ok(_)));
    let mut caller = TestClient::connect(node.quic_addr, "tenant-b");
    call(&mut caller, 1, "svc", b"", 1_000, false);
    assert_eq!(answer(&mut caller, 1), Err(ErrorCode::NoProvider as u64));
    node.shutdown();
}

#[test]
fn direct_messages_reach_their_target_or_fail_with_unknown_peer() {
    let node = start_node(test_config(2));
    let mut a = TestClient::connect(node.quic_addr, "default");
    let mut b = TestClient::connect(node.quic_addr, "default");
    let r = a.request_id();
    a.send_data(&Frame::Send(frame::Send {
        request_id: r,
        target: b.peer_id,
        payload: Bytes::from_static(b"hi b"),
    }));
    assert!(matches!(a.expect_response(r), Frame::Ok(_)));
    let Frame::Message(m) = b.expect_frame(|f| matches!(f, Frame::Message(_)), WAIT) else {
        unreachable!()
    };
    assert_eq!(m.source, a.peer_id);
    assert_eq!(&m.payload[..], b"hi b");
    let r = a.request_id();
    a.send_data(&Frame::Send(frame::Send {
        request_id: r,
        target: random_peer_id(),
        payload: Bytes::new(),
    }));
    assert!(
        matches!(a.expect_response(r), Frame::Error(e) if e.code == ErrorCode::UnknownPeer as u64)
    );
    node.shutdown();
}

#[test]
fn answered_calls_release_their_deadline_entries_at_once() {
    let node = start_node(test_config(2));
    let mut provider = TestClient::connect(node.quic_addr, "default");
    assert!(matches!(register(&mut provider, "svc.echo"), Frame::Ok(_)));
    let mut caller = TestClient::connect(node.quic_addr, "default");
    let calls = 50u64;
    for id in 1..=calls {
        // Long deadlines: an entry that outlived its call would sit for five minutes.
        call(&mut caller, id, "svc.echo", &id.to_be_bytes(), 300_000, false);
    }
    assert!(
        wait_until(WAIT, || metric(node.http_addr, "fovea_rpc_calls_in_flight") == calls),
        "every call holds one deadline entry while in flight"
    );
    assert_eq!(serve(&mut provider, calls as usize, b""), calls as usize);
    for id in 1..=calls {
        assert_eq!(&answer(&mut caller, id).unwrap()[..], &id.to_be_bytes());
    }
    assert_eq!(metric(node.http_addr, "fovea_rpc_calls_in_flight"), 0, "answered calls hold none");
    node.shutdown();
}
