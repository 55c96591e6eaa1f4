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
use fovea_engine::config::ProviderSelection;

/// Providers of `procedure` connected to a 2-shard node, one on each shard listed, registered.
fn providers_on(node: std::net::SocketAddr, shards: &[usize], procedure: &str) -> Vec<TestClient> {
    let connect = |&shard: &usize| {
        let mut p = TestClient::connect_as(node, "default", peer_on(shard, 2));
        assert!(matches!(register(&mut p, procedure), Frame::Ok(_)));
        p
    };
    shards.iter().map(connect).collect()
}

fn unregister(c: &mut TestClient, procedure: &str) -> Frame {
    let r = c.request_id();
    c.send_session(&Frame::Unregister(frame::Unregister {
        request_id: r,
        procedure: procedure.parse().unwrap(),
    }));
    c.expect_response(r)
}

fn goodbye(c: &mut TestClient) {
    c.send_session(&Frame::Goodbye(frame::Goodbye { code: 0, reason: Bytes::new() }));
    assert!(c.wait_closed(WAIT).is_some(), "the node closes after GOODBYE");
}

/// The call ids a provider was invoked for, serving each with an echo, until 200 ms pass quiet.
fn served_ids(p: &mut TestClient) -> Vec<u64> {
    served_ids_within(p, Duration::from_millis(200))
}

fn served_ids_within(p: &mut TestClient, quiet: Duration) -> Vec<u64> {
    let mut ids = Vec::new();
    while let Some(Frame::Invoke(inv)) =
        p.try_expect_frame(|f| matches!(f, Frame::Invoke(_)), quiet)
    {
        ids.push(u64::from_be_bytes(inv.payload[..8].try_into().unwrap()));
        p.send_data(&Frame::Reply(frame::Reply { id: inv.invocation_id, payload: inv.payload }));
    }
    ids
}

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
    let mut providers = providers_on(node.quic_addr, &[0, 1, 0], "work");
    let mut caller = TestClient::connect_as(node.quic_addr, "default", peer_on(1, 2));
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
    // The provider's shard forgets the invocation at the deadline too, as it sees it (a moment
    // after the caller's shard: the INVOKE took a moment to get there).
    assert!(
        wait_until(WAIT, || metric(node.http_addr, "fovea_rpc_invocations_expired_total") == 1),
        "the provider's shard forgets the invocation"
    );
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

#[test]
fn a_retried_call_keeps_its_deadline() {
    let node = start_node(test_config(2));
    let mut caller = TestClient::connect_as(node.quic_addr, "default", peer_on(0, 2));
    let mut flaky = TestClient::connect_as(node.quic_addr, "default", peer_on(1, 2));
    assert!(matches!(register(&mut flaky, "idem"), Frame::Ok(_)));
    call(&mut caller, 7, "idem", b"x", 500, true);
    flaky.expect_frame(|f| matches!(f, Frame::Invoke(_)), WAIT);
    let mut silent = TestClient::connect_as(node.quic_addr, "default", peer_on(1, 2));
    assert!(matches!(register(&mut silent, "idem"), Frame::Ok(_)));
    goodbye(&mut flaky);
    // The retry reaches the second provider, which never answers: the deadline still does.
    silent.expect_frame(|f| matches!(f, Frame::Invoke(_)), WAIT);
    assert_eq!(answer(&mut caller, 7), Err(ErrorCode::DeadlineExceeded as u64));
    assert_eq!(metric(node.http_addr, "fovea_rpc_retries_total"), 1);
    assert_eq!(metric(node.http_addr, "fovea_rpc_calls_in_flight"), 0, "the slot is free again");
    node.shutdown();
}

#[test]
fn after_unregister_or_a_disconnect_no_shard_invokes_the_provider() {
    let node = start_node(test_config(2));
    let mut caller = TestClient::connect_as(node.quic_addr, "default", peer_on(1, 2));
    let mut p = TestClient::connect_as(node.quic_addr, "default", peer_on(0, 2));
    assert!(matches!(register(&mut p, "svc.a"), Frame::Ok(_)));
    assert!(matches!(register(&mut p, "svc.b"), Frame::Ok(_)));
    call(&mut caller, 1, "svc.a", &1u64.to_be_bytes(), 5_000, false);
    assert_eq!(served_ids(&mut p), vec![1]);
    assert!(answer(&mut caller, 1).is_ok());

    // UNREGISTER's OK comes after the caller's shard dropped the provider.
    assert!(matches!(unregister(&mut p, "svc.a"), Frame::Ok(_)));
    call(&mut caller, 2, "svc.a", &2u64.to_be_bytes(), 5_000, false);
    assert_eq!(answer(&mut caller, 2), Err(ErrorCode::NoProvider as u64));
    call(&mut caller, 3, "svc.b", &3u64.to_be_bytes(), 5_000, false);
    assert_eq!(served_ids(&mut p), vec![3], "svc.a is no longer invoked, svc.b still is");
    assert!(answer(&mut caller, 3).is_ok());

    // A disconnect withdraws the rest. Until the caller's shard has heard of it, a call may
    // still be sent towards the provider and fail with PROVIDER_GONE; then it is NO_PROVIDER.
    goodbye(&mut p);
    let mut answers = Vec::new();
    for id in 4..54 {
        call(&mut caller, id, "svc.b", &id.to_be_bytes(), 5_000, false);
        answers.push(answer(&mut caller, id));
        if answers.last() == Some(&Err(ErrorCode::NoProvider as u64)) {
            break;
        }
    }
    let (last, before) = answers.split_last().unwrap();
    assert_eq!(*last, Err(ErrorCode::NoProvider as u64), "{answers:?}");
    assert!(before.iter().all(|a| *a == Err(ErrorCode::ProviderGone as u64)), "{answers:?}");
    node.shutdown();
}

#[test]
fn random_selection_spreads_calls_but_not_in_turn() {
    let mut config = test_config(2);
    config.limits.rpc_selection = ProviderSelection::Random;
    let node = start_node(config);
    let mut providers = providers_on(node.quic_addr, &[0, 1, 1], "pick");
    let mut caller = TestClient::connect_as(node.quic_addr, "default", peer_on(0, 2));
    let calls = 300u64;
    for id in 1..=calls {
        call(&mut caller, id, "pick", &id.to_be_bytes(), 10_000, false);
    }
    // The caller's congestion window holds only part of 300 calls: let them all out first.
    assert!(wait_until(WAIT, || {
        caller.pump_for(Duration::from_millis(5));
        metric(node.http_addr, "fovea_rpc_calls_total") == calls
    }));
    // Serve all three in turn until every call was served, so that none waits on another's
    // quiet window (bounded by WAIT).
    let mut got: Vec<Vec<u64>> = vec![Vec::new(); providers.len()];
    let deadline = std::time::Instant::now() + WAIT;
    while got.iter().map(Vec::len).sum::<usize>() < calls as usize
        && std::time::Instant::now() < deadline
    {
        for (ids, p) in got.iter_mut().zip(&mut providers) {
            ids.extend(served_ids_within(p, Duration::from_millis(10)));
        }
    }
    for id in 1..=calls {
        let a = answer(&mut caller, id);
        assert!(a.is_ok(), "call {id}: {a:?}");
    }
    assert_eq!(got.iter().map(Vec::len).sum::<usize>(), calls as usize, "each call served once");
    // Expected 100 each; 50 is six standard deviations away.
    assert!(
        got.iter().all(|ids| ids.len() >= 50),
        "{:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    // Round robin would give each provider one residue class of the call ids.
    let in_turn = got.iter().all(|ids| ids.iter().all(|id| id % 3 == ids[0] % 3));
    assert!(!in_turn, "random selection must not be round robin");
    node.shutdown();
}

#[test]
fn local_first_selection_keeps_calls_on_the_callers_shard_and_falls_back() {
    let mut config = test_config(2);
    config.limits.rpc_selection = ProviderSelection::LocalFirst;
    let node = start_node(config);
    let mut remote = TestClient::connect_as(node.quic_addr, "default", peer_on(0, 2));
    assert!(matches!(register(&mut remote, "near"), Frame::Ok(_)));
    let mut locals = providers_on(node.quic_addr, &[1, 1], "near");
    let mut caller = TestClient::connect_as(node.quic_addr, "default", peer_on(1, 2));
    for id in 1..=20u64 {
        call(&mut caller, id, "near", &id.to_be_bytes(), 10_000, false);
    }
    let counts: Vec<usize> = locals.iter_mut().map(|p| served_ids(p).len()).collect();
    assert_eq!(counts, vec![10, 10], "round robin over the caller's own shard");
    assert!(served_ids(&mut remote).is_empty(), "no call leaves the shard while it has providers");
    for id in 1..=20u64 {
        assert!(answer(&mut caller, id).is_ok());
    }
    // Without a provider on its own shard the caller is served by the other shard's.
    for p in &mut locals {
        goodbye(p);
    }
    call(&mut caller, 21, "near", &21u64.to_be_bytes(), 10_000, false);
    let served = served_ids(&mut remote);
    assert_eq!(served, vec![21], "{:?}", answer(&mut caller, 21));
    assert!(answer(&mut caller, 21).is_ok());
    node.shutdown();
}

#[test]
fn providers_whose_connection_is_closing_are_passed_over_without_a_retry() {
    let mut config = test_config(2);
    config.limits.rpc_selection = ProviderSelection::LocalFirst;
    let node = start_node(config);
    let mut far = TestClient::connect_as(node.quic_addr, "default", peer_on(0, 2));
    assert!(matches!(register(&mut far, "job"), Frame::Ok(_)));
    let mut closing = providers_on(node.quic_addr, &[1, 1, 1, 1], "job");
    let mut caller = TestClient::connect_as(node.quic_addr, "default", peer_on(1, 2));
    // A QUIC CONNECTION_CLOSE and no GOODBYE: the node keeps these connections for a few PTOs.
    for p in &mut closing {
        p.conn.close(true, 0, b"bye").unwrap();
        p.flush();
    }
    call(&mut caller, 1, "job", &1u64.to_be_bytes(), 10_000, false);
    assert_eq!(served_ids(&mut far), vec![1], "served by the one provider still open");
    assert!(answer(&mut caller, 1).is_ok());
    assert_eq!(
        metric(node.http_addr, "fovea_rpc_retries_total"),
        0,
        "the closing local providers were never chosen"
    );
    node.shutdown();
}
