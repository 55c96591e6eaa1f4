//! The session protocol on one connection: HELLO/WELCOME, requests, PING/PONG, GOODBYE.
//!
//! Frames are decoded from each stream's buffer in order, at most `frames_per_turn` per
//! connection per turn (fairness: one flooding peer cannot monopolise its shard), session
//! stream first so control frames never wait behind bulk publishes.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use fovea_codec::limits::FRAME_OVERHEAD_MAX;
use fovea_codec::{decode_frame, ErrorCode, Frame};

use super::conn::Phase;
use super::fanout::SubscribeOutcome;
use super::{ConnRef, Shard};
use crate::metrics::ShardMetrics;

/// Protocol version this node speaks.
const VERSION: u64 = 1;
/// Bytes buffered per stream before the node stops reading it (QUIC flow control then
/// throttles the peer): one maximal frame plus room for the next header.
fn rx_cap(max_frame: usize) -> usize {
    max_frame + 64 * 1024
}

/// Which buffer a frame came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Session,
    Data,
}

impl Shard {
    fn wire_limits(&self) -> fovea_codec::Limits {
        let l = &self.ctx.limits;
        fovea_codec::Limits {
            // Payloads up to the frame limit decode; the session then answers an oversized one
            // with PAYLOAD_TOO_LARGE instead of closing the connection.
            max_payload: l.max_payload + FRAME_OVERHEAD_MAX,
            max_frame_len: l.max_payload + FRAME_OVERHEAD_MAX,
            max_topic_len: l.max_topic_len,
            max_topic_depth: l.max_topic_depth,
            ..fovea_codec::Limits::default()
        }
    }

    /// Reads the connection's streams and handles frames until its budget for this turn
    /// (`frames_per_turn`) is spent; what is left waits for the next turn (`pending_input`).
    pub(super) fn process_input(&mut self, now: Instant, r: ConnRef) {
        let limits = self.wire_limits();
        let cap = rx_cap(limits.max_frame_len);
        let budget = match self.conn_mut(r) {
            Some(c) => c.frames_left,
            None => return,
        };
        // Publishers wait while other shards' inboxes are backed up (see mesh.rs).
        let hold_data = self.outbox_len() > self.ctx.limits.cross_shard_queue;
        let metrics = self.ctx.metrics.clone();
        {
            let Some(conn) = self.conn_mut(r) else { return };
            if !conn.quic.is_established()
                || conn.phase == Phase::Closing
                || conn.phase == Phase::Moving
            {
                return;
            }
            if let Err(e) = conn.read_streams(cap) {
                let _ = conn.quic.close(false, 0x1, format!("stream error: {e}").as_bytes());
                return;
            }
        }
        let mut handled = 0;
        for source in [Source::Session, Source::Data] {
            if source == Source::Data && hold_data {
                self.defer_input(r);
                continue;
            }
            while handled < budget {
                let frame = {
                    let Some(conn) = self.conn_mut(r) else { return };
                    // Nothing after a frame that closes the connection is handled: its close
                    // code must be the one the peer sees.
                    if (conn.phase != Phase::Active && conn.phase != Phase::AwaitHello)
                        || conn.close_with.is_some()
                    {
                        return;
                    }
                    let buf: &mut BytesMut = match source {
                        Source::Session => &mut conn.session_rx,
                        Source::Data => &mut conn.data_rx,
                    };
                    match decode_frame(buf, &limits) {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => {
                            ShardMetrics::inc(&metrics.frames_malformed);
                            let code = e.error_code();
                            conn.close_with = Some((code as u64, "malformed frame"));
                            tracing::debug!(error = %e, "closing connection on a malformed frame");
                            return;
                        }
                    }
                };
                handled += 1;
                let Some(conn) = self.conn_mut(r) else { return };
                conn.frames_left -= 1;
                // A PING before HELLO is answered on the session stream, which a PING that
                // came on stream 2 first may not have: PROTOCOL.md §2.2 rule 2 applies.
                if source == Source::Data
                    && conn.phase == Phase::AwaitHello
                    && matches!(frame, Frame::Ping(_))
                {
                    return self.close_conn(
                        r,
                        ErrorCode::HelloRequired,
                        "a frame on stream 2 before HELLO",
                    );
                }
                ShardMetrics::inc(&self.ctx.metrics.frames_in);
                self.handle_frame(now, r, frame);
            }
        }
        if handled >= budget {
            self.defer_input(r);
        }
        // An idle peer should cost its QUIC state and little else: give back read buffers
        // once they are drained (the next burst allocates again).
        if let Some(conn) = self.conn_mut(r) {
            conn.release_idle_buffers();
        }
    }

    /// Leaves the rest of a connection's input for the next turn.
    fn defer_input(&mut self, r: ConnRef) {
        if let Some(conn) = self.conn_mut(r) {
            if !conn.input_pending {
                conn.input_pending = true;
                self.pending_input.push(r);
            }
        }
    }

    pub(super) fn close_conn(&mut self, r: ConnRef, code: ErrorCode, reason: &'static str) {
        if let Some(conn) = self.conn_mut(r) {
            // The first reason wins.
            conn.close_with.get_or_insert((code as u64, reason));
        }
        // A closing peer answers no more invocations: no shard should choose it while quiche
        // finishes the close (three PTOs or more), and its callers hear PROVIDER_GONE now.
        self.rpc_retire(r);
        self.mark_dirty(r);
    }

    /// Queues a frame on the session stream.
    pub(super) fn send_session(&mut self, r: ConnRef, frame: &Frame) {
        let buf = self.scratch_frame();
        frame.encode(buf);
        let bytes = buf.split().freeze();
        if let Some(conn) = self.conn_mut(r) {
            conn.session_tx.push(bytes);
        }
        self.mark_dirty(r);
    }

    /// Queues a frame on the node's data stream (after any queued deliveries).
    pub(super) fn send_data_frame(&mut self, r: ConnRef, frame: &Frame) {
        let buf = self.scratch_frame();
        frame.encode(buf);
        let bytes = buf.split().freeze();
        if let Some(conn) = self.conn_mut(r) {
            conn.out.data_tx.push(bytes);
        }
        self.mark_dirty(r);
    }

    pub(super) fn send_ok(&mut self, r: ConnRef, request_id: u64) {
        if request_id != 0 {
            self.send_session(r, &Frame::Ok(fovea_codec::frame::Ok { request_id }));
        }
    }

    pub(super) fn send_error(
        &mut self,
        r: ConnRef,
        request_id: u64,
        code: ErrorCode,
        message: &'static str,
    ) {
        let frame = Frame::Error(fovea_codec::frame::Error {
            request_id,
            code: code as u64,
            message: bytes::Bytes::from_static(message.as_bytes()),
        });
        self.send_session(r, &frame);
    }

    /// Sends the node's keep-alive PING and remembers it for the RTT statistics.
    pub(super) fn send_node_ping(&mut self, now: Instant, r: ConnRef) {
        let epoch = self.epoch_started;
        let Some(conn) = self.conn_mut(r) else { return };
        let id = conn.rtt.samples + 1;
        conn.ping_outstanding = Some((id, now));
        let sent_at_us = now.saturating_duration_since(epoch).as_micros() as u64;
        self.send_session(r, &Frame::Ping(fovea_codec::frame::Ping { ping_id: id, sent_at_us }));
    }

    /// GOODBYE after everything already queued on the data stream, then close by the deadline.
    pub(super) fn say_goodbye(
        &mut self,
        _now: Instant,
        r: ConnRef,
        code: ErrorCode,
        reason: &'static str,
    ) {
        let Some(conn) = self.conn_mut(r) else { return };
        if conn.phase != Phase::Active {
            conn.close_with = Some((code as u64, reason));
            self.mark_dirty(r);
            return;
        }
        conn.goodbye_sent = true;
        let frame = Frame::Goodbye(fovea_codec::frame::Goodbye {
            code: code as u64,
            reason: bytes::Bytes::from_static(reason.as_bytes()),
        });
        self.send_data_frame(r, &frame);
    }

    fn handle_frame(&mut self, now: Instant, r: ConnRef, frame: Frame) {
        // Credentials, permissions and the publish rate (shard/auth.rs).
        let Some(frame) = self.security_gate(now, r, frame) else { return };
        let phase = match self.conn_mut(r) {
            Some(c) => c.phase,
            None => return,
        };
        if phase == Phase::AwaitHello {
            match frame {
                Frame::Hello(hello) => self.handle_hello(now, r, hello),
                Frame::Ping(p) => self.answer_ping(now, r, p),
                Frame::Extension { .. } => {}
                _ => self.close_conn(r, ErrorCode::HelloRequired, "HELLO must be the first frame"),
            }
            return;
        }
        match frame {
            frame @ (Frame::Announce(_)
            | Frame::SyncDigest(_)
            | Frame::SyncDelta(_)
            | Frame::ForwardPublish(_)
            | Frame::ForwardCall(_)
            | Frame::ForwardReply(_)
            | Frame::Extension { frame_type: fovea_codec::frame::types::SWIM, .. }
            // DHT messages between nodes (docs/PROTOCOL.md §7.4), answers included.
            | Frame::FindNode(_)
            | Frame::FindValue(_)
            | Frame::Nodes(_)
            | Frame::Value(_)
            | Frame::Store(_)
            | Frame::Ok(_)
            | Frame::Error(_))
                if self.is_link(r) =>
            {
                self.link_frame(r, frame)
            }
            Frame::Ping(p) => self.answer_ping(now, r, p),
            Frame::Pong(p) => self.record_pong(now, r, p.ping_id),
            Frame::Subscribe(s) => match self.subscribe(r, s.request_id, s.sub_id, s.pattern) {
                Ok(SubscribeOutcome::Ok) => self.send_ok(r, s.request_id),
                Ok(SubscribeOutcome::Deferred) => {}
                Err(code) => {
                    ShardMetrics::inc(&self.ctx.metrics.subscribe_rejected);
                    self.send_error(r, s.request_id, code, code_message(code));
                }
            },
            Frame::Unsubscribe(u) => match self.unsubscribe(r, u.sub_id) {
                Ok(()) => self.send_ok(r, u.request_id),
                Err(code) => self.send_error(r, u.request_id, code, code_message(code)),
            },
            Frame::Publish(p) => self.handle_publish(now, r, p),
            Frame::Goodbye(_) => {
                self.close_conn(r, ErrorCode::NoError, "goodbye");
            }
            Frame::Hello(_) => self.close_conn(r, ErrorCode::ProtocolViolation, "second HELLO"),
            Frame::Extension { .. } => {}
            // Ok(false): the OK waits for the other shards' acknowledgements.
            Frame::Register(f) => match self.register(r, f.request_id, f.procedure) {
                Ok(true) => self.send_ok(r, f.request_id),
                Ok(false) => {}
                Err((code, message)) => self.send_error(r, f.request_id, code, message),
            },
            Frame::Unregister(f) => match self.unregister(r, f.request_id, &f.procedure) {
                Ok(true) => self.send_ok(r, f.request_id),
                Ok(false) => {}
                Err((code, message)) => self.send_error(r, f.request_id, code, message),
            },
            Frame::Call(c) => self.call(now, r, c),
            Frame::Reply(f) => {
                self.provider_answer(r, f.id, super::rpc::CallOutcome::Reply(f.payload))
            }
            Frame::CallError(f) => {
                self.provider_answer(r, f.id, super::rpc::CallOutcome::Error(f.code, f.message))
            }
            Frame::Send(s) => self.direct(now, r, s),
            Frame::PunchRequest(p) => self.punch_request(now, r, p),
            // Served by the control thread's DHT when the node federates (shard/link.rs).
            Frame::FindNode(f) => self.dht_request(r, f.request_id, Frame::FindNode(f)),
            Frame::FindValue(f) => self.dht_request(r, f.request_id, Frame::FindValue(f)),
            Frame::Store(f) => self.dht_request(r, f.request_id, Frame::Store(f)),
            // Frames only a node sends, or only federation links may send.
            _ => self.close_conn(r, ErrorCode::ProtocolViolation, "frame not allowed from a peer"),
        }
    }

    fn answer_ping(&mut self, now: Instant, r: ConnRef, p: fovea_codec::frame::Ping) {
        ShardMetrics::inc(&self.ctx.metrics.pings_answered);
        let received_at_us = now.saturating_duration_since(self.epoch_started).as_micros() as u64;
        let pong = Frame::Pong(fovea_codec::frame::Pong {
            ping_id: p.ping_id,
            sent_at_us: p.sent_at_us,
            received_at_us,
        });
        self.send_session(r, &pong);
    }

    fn record_pong(&mut self, now: Instant, r: ConnRef, ping_id: u64) {
        let Some(conn) = self.conn_mut(r) else { return };
        let Some((id, sent)) = conn.ping_outstanding else { return };
        if id != ping_id {
            return;
        }
        conn.ping_outstanding = None;
        let us = now.saturating_duration_since(sent).as_micros() as u64;
        let s = &mut conn.rtt;
        s.min_us = if s.samples == 0 { us } else { s.min_us.min(us) };
        s.max_us = s.max_us.max(us);
        s.sum_us += us;
        s.samples += 1;
        s.last_seen = Some(now);
        self.ctx.metrics.observe_rtt_us(us);
    }

    pub(super) fn handle_hello(
        &mut self,
        now: Instant,
        r: ConnRef,
        hello: fovea_codec::frame::Hello,
    ) {
        if hello.version != VERSION {
            self.close_conn(r, ErrorCode::VersionUnsupported, "this node speaks version 1");
            return;
        }
        let owner = owner_shard(&hello.peer_id, self.ctx.shards);
        {
            let Some(conn) = self.conn_mut(r) else { return };
            conn.peer_id = hello.peer_id;
            // Flag bit 0 means something only on a node that federates (`link_up`).
            conn.federation = hello.flags & 1 != 0;
            // Detached: the session keeps its realm, which would otherwise pin the whole
            // receive buffer HELLO arrived in (tens of KiB per idle peer).
            conn.realm = Some(hello.realm.detach());
        }
        if owner != self.ctx.index {
            // The HELLO was consumed from the buffer; put it back so the owner sees it first.
            let Some(conn) = self.conn_mut(r) else { return };
            let mut restored = BytesMut::new();
            let frame = Frame::Hello(fovea_codec::frame::Hello {
                version: hello.version,
                peer_id: hello.peer_id,
                flags: hello.flags,
                realm: conn.realm.clone().expect("set above"),
                cred_kind: hello.cred_kind,
                credential: hello.credential,
                client_name: hello.client_name,
            });
            frame.encode(&mut restored);
            restored.extend_from_slice(&conn.session_rx);
            conn.session_rx = restored;
            self.hand_over(now, r, owner);
            return;
        }
        if self.draining.is_some() {
            self.close_conn(r, ErrorCode::ShuttingDown, "node is draining");
            return;
        }
        // Credentials (shard/auth.rs): false when refused or waiting for AUTH.
        if !self.authenticate_hello(now, r, &hello) {
            return;
        }
        let max_peers = self.ctx.limits.max_peers;
        let peers_total = self.ctx.shared.peers.load(std::sync::atomic::Ordering::Relaxed);
        if peers_total >= max_peers {
            ShardMetrics::inc(&self.ctx.metrics.handshakes_refused);
            self.close_conn(r, ErrorCode::ServerFull, "max_peers reached");
            return;
        }
        // A second connection with the same peer id replaces the first.
        if let Some(old) = self.by_peer.insert(hello.peer_id, r) {
            if old != r {
                ShardMetrics::inc(&self.ctx.metrics.replaced);
                if let Some(conn) = self.conn_mut(old) {
                    conn.phase = Phase::Closing;
                    conn.close_with =
                        Some((ErrorCode::Replaced as u64, "replaced by a newer connection"));
                }
                let old_conn_subs = self.take_subs(old);
                self.drop_subs(old, old_conn_subs);
                self.rpc_retire(old);
                self.mark_dirty(old);
                self.peers -= 1;
                self.ctx.shared.peers.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.peers += 1;
        self.ctx.shared.peers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ShardMetrics::set(&self.ctx.metrics.peers, self.peers as u64);
        let keepalive = Duration::from_millis(self.ctx.limits.keepalive_ms);
        let l = &self.ctx.limits;
        use fovea_codec::frame::limit_keys as k;
        let mut welcome_limits = vec![
            (k::MAX_PAYLOAD, l.max_payload as u64),
            (k::MAX_FRAME_LEN, (l.max_payload + FRAME_OVERHEAD_MAX) as u64),
            (k::MAX_TOPIC_LEN, l.max_topic_len as u64),
            (k::MAX_TOPIC_DEPTH, l.max_topic_depth as u64),
            (k::MAX_SUBSCRIPTIONS, l.max_subscriptions_per_peer as u64),
            (k::MAX_REGISTRATIONS, l.max_registrations_per_peer as u64),
            (k::MAX_INFLIGHT_CALLS, l.max_inflight_calls_per_peer as u64),
            (k::IDLE_TIMEOUT_MS, l.idle_timeout_ms),
            (k::KEEPALIVE_MS, l.keepalive_ms),
        ];
        // Only a limit that applies is advertised: 0 (off) would read as "no PUBLISH at all".
        if l.publish_rate_per_s > 0 {
            welcome_limits.push((k::PUBLISH_RATE_PER_S, l.publish_rate_per_s));
            welcome_limits.push((k::PUBLISH_BURST, l.publish_burst));
        }
        let node_id = self.ctx.node_id;
        let Some(conn) = self.conn_mut(r) else { return };
        conn.phase = Phase::Active;
        conn.ping_due = now + keepalive;
        let observed = conn.peer_addr;
        let _ = conn.quic.stream_priority(
            super::conn::SESSION_STREAM,
            super::conn::SESSION_URGENCY,
            true,
        );
        let welcome = Frame::Welcome(fovea_codec::frame::Welcome {
            version: VERSION,
            node_id,
            observed,
            limits: welcome_limits,
        });
        self.send_session(r, &welcome);
        tracing::debug!(shard = self.ctx.index, "session established");
        self.link_up(r);
    }

    fn handle_publish(&mut self, now: Instant, r: ConnRef, p: fovea_codec::frame::Publish) {
        let max_payload = self.ctx.limits.max_payload;
        let window = self.ctx.limits.dedup_window;
        let window_time = Duration::from_millis(self.ctx.limits.dedup_window_ms);
        let metrics = self.ctx.metrics.clone();
        let Some(conn) = self.conn_mut(r) else { return };
        if p.payload.len() > max_payload {
            ShardMetrics::inc(&metrics.publishes_rejected);
            self.send_error(
                r,
                p.request_id,
                ErrorCode::PayloadTooLarge,
                "payload exceeds max_payload",
            );
            return;
        }
        if let Some(id) = p.message_id {
            // Forget ids older than the window, then check.
            while let Some(&(old, at)) = conn.dedup_order.front() {
                if now.saturating_duration_since(at) <= window_time
                    && conn.dedup_order.len() < window
                {
                    break;
                }
                conn.dedup_order.pop_front();
                conn.dedup_set.remove(&old);
            }
            if !conn.dedup_set.insert(id) {
                ShardMetrics::inc(&metrics.duplicates_dropped);
                self.send_ok(r, p.request_id);
                return;
            }
            conn.dedup_order.push_back((id, now));
        }
        let realm = conn.realm.clone().expect("active sessions have a realm");
        ShardMetrics::inc(&metrics.publishes);
        self.publish(now, &realm, &p.topic, p.message_id, &p.payload);
        self.send_ok(r, p.request_id);
    }

    fn take_subs(&mut self, r: ConnRef) -> Vec<(u64, fovea_codec::Pattern)> {
        match self.conn_mut(r) {
            Some(conn) => conn.subs.drain().collect(),
            None => Vec::new(),
        }
    }

    fn drop_subs(&mut self, r: ConnRef, subs: Vec<(u64, fovea_codec::Pattern)>) {
        let Some(realm) = self.conn_mut(r).and_then(|c| c.realm.clone()) else { return };
        for (sub_id, pattern) in subs {
            self.remove_sub(r, &realm, &pattern, sub_id);
        }
    }
}

/// The shard that owns a peer: a hash of its id modulo the shard count. Peer ids are random or
/// key-derived 32-byte values, so their first 8 bytes are already uniform; mixing them once more
/// guards against clients that choose structured ids.
pub fn owner_shard(peer_id: &[u8; 32], shards: usize) -> usize {
    let mut x = u64::from_le_bytes(peer_id[..8].try_into().expect("8 bytes"));
    x ^= u64::from_le_bytes(peer_id[8..16].try_into().expect("8 bytes"));
    // splitmix64 finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % shards as u64) as usize
}

fn code_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::TooManySubscriptions => "max_subscriptions_per_peer reached",
        ErrorCode::DuplicateSubscription => "subscription id already in use on this connection",
        ErrorCode::UnknownSubscription => "no subscription with this id",
        _ => "request failed",
    }
}
