//! The shard's security hooks: credentials in HELLO (tokens, Ed25519 CHALLENGE/AUTH),
//! permissions per request, the per-peer publish rate with FLOOD, the per-source-address
//! handshake rate and connection cap, TLS configuration swaps, and a limiter on the per-peer
//! log lines. The session code calls in through a few one-line hooks; the rules are in
//! `crate::auth` and docs/OPERATIONS.md ("Security").

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fovea_codec::frame::{self, Frame};
use fovea_codec::ErrorCode;

use super::bucket::TokenBucket;
use super::conn::{Conn, Phase};
use super::{ConnRef, Shard};
use crate::auth::{AuthTable, Op, Permissions, Verdict};
use crate::metrics::ShardMetrics;
use crate::tls::TlsSource;

/// A public-key credential waiting for its AUTH.
#[derive(Debug)]
struct PendingAuth {
    hello: frame::Hello,
    nonce: [u8; 32],
    key: [u8; 32],
    perms: Arc<Permissions>,
    deadline: Instant,
}

/// Per-connection security state.
#[derive(Debug, Default)]
pub struct ConnSec {
    /// What the credential may do; `None`: everything (open realm).
    perms: Option<Arc<Permissions>>,
    pending: Option<Box<PendingAuth>>,
    /// AUTH succeeded: the re-run HELLO goes through.
    proven: bool,
    /// Source address at accept (for the per-address connection count).
    pub(super) source_ip: Option<IpAddr>,
    publish: Option<TokenBucket>,
    violations: u64,
}

impl ConnSec {
    /// Deadline of a pending CHALLENGE (replaces the HELLO deadline while it runs).
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }
}

/// Closes a connection whose CHALLENGE was not answered in time; true when it did.
pub(super) fn expire_auth(conn: &mut Conn, now: Instant, metrics: &ShardMetrics) -> bool {
    match &conn.sec.pending {
        Some(p) if now >= p.deadline => {
            conn.sec.pending = None;
            ShardMetrics::inc(&metrics.auth_required);
            let code = ErrorCode::AuthRequired as u64;
            let _ = conn.quic.close(true, code, b"no AUTH within auth_timeout_ms");
            true
        }
        Some(_) => true,
        None => false,
    }
}

#[derive(Debug)]
struct SourceEntry {
    conns: u32,
    bucket: Option<TokenBucket>,
}

/// Per-shard security state.
pub(super) struct ShardSec {
    auth: Arc<AuthTable>,
    tls: Option<Arc<TlsSource>>,
    sources: ahash::AHashMap<IpAddr, SourceEntry>,
    log: Option<TokenBucket>,
}

impl Default for ShardSec {
    fn default() -> Self {
        ShardSec {
            auth: Arc::new(AuthTable::default()),
            tls: None,
            sources: Default::default(),
            log: None,
        }
    }
}

impl Shard {
    /// Installs the credential table and the TLS reload source (the node calls this once
    /// before the shard runs; without it the node is open and keeps its first certificate).
    pub fn set_security(&mut self, auth: Arc<AuthTable>, tls: Option<Arc<TlsSource>>) {
        self.sec.auth = auth;
        self.sec.tls = tls;
    }

    /// True when a per-peer log line may be written now; suppressed lines are counted.
    pub(super) fn log_allowed(&mut self, now: Instant) -> bool {
        let (rate, burst) = (self.ctx.limits.log_lines_per_s, self.ctx.limits.log_burst);
        let bucket = self.sec.log.get_or_insert_with(|| TokenBucket::new(now, rate, burst));
        if bucket.take(now, 1) {
            return true;
        }
        ShardMetrics::inc(&self.ctx.metrics.log_lines_suppressed);
        false
    }

    /// Takes a reloaded TLS configuration, if any, before a new handshake is accepted.
    pub(super) fn refresh_tls(&mut self) {
        if let Some(c) = self.sec.tls.as_ref().and_then(|t| t.take(self.ctx.index)) {
            self.quic_config = c;
        }
    }

    /// Per-source-address admission of a new handshake: rate (`handshakes_per_ip_per_s`) and
    /// open connections (`max_connections_per_ip`, per shard). False: drop the Initial.
    pub(super) fn admit_source(&mut self, now: Instant, ip: IpAddr) -> bool {
        let l = &self.ctx.limits;
        let (rate, burst, cap) =
            (l.handshakes_per_ip_per_s, l.handshake_burst_per_ip, l.max_connections_per_ip);
        if rate == 0 && cap == 0 {
            return true;
        }
        if !self.sec.sources.contains_key(&ip) && self.sec.sources.len() >= l.ip_table_size {
            // Forget addresses without connections; if every entry has some, admit untracked.
            self.sec.sources.retain(|_, e| e.conns > 0);
            if self.sec.sources.len() >= l.ip_table_size {
                ShardMetrics::inc(&self.ctx.metrics.ip_table_full);
                return true;
            }
        }
        let e = self.sec.sources.entry(ip).or_insert(SourceEntry { conns: 0, bucket: None });
        if cap > 0 && e.conns as usize >= cap {
            ShardMetrics::inc(&self.ctx.metrics.handshakes_refused_per_ip);
            return false;
        }
        let bucket = e.bucket.get_or_insert_with(|| TokenBucket::new(now, rate, burst));
        if !bucket.take(now, 1) {
            ShardMetrics::inc(&self.ctx.metrics.handshakes_refused_per_ip);
            return false;
        }
        true
    }

    /// A connection from `ip` now lives on this shard.
    pub(super) fn source_opened(&mut self, ip: IpAddr) {
        if let Some(e) = self.sec.sources.get_mut(&ip) {
            e.conns += 1;
        } else if self.ctx.limits.max_connections_per_ip > 0
            && self.sec.sources.len() < self.ctx.limits.ip_table_size
        {
            self.sec.sources.insert(ip, SourceEntry { conns: 1, bucket: None });
        }
    }

    /// A connection from `ip` left this shard (closed or moved).
    pub(super) fn source_closed(&mut self, ip: Option<IpAddr>) {
        if let Some(e) = ip.and_then(|ip| self.sec.sources.get_mut(&ip)) {
            e.conns = e.conns.saturating_sub(1);
        }
    }

    /// Judges HELLO's credential on the owner shard. True: establish the session now. False:
    /// the connection was closed, or a CHALLENGE was sent and AUTH will resume the HELLO.
    pub(super) fn authenticate_hello(
        &mut self,
        now: Instant,
        r: ConnRef,
        hello: &frame::Hello,
    ) -> bool {
        let auth = self.sec.auth.clone();
        let metrics = self.ctx.metrics.clone();
        let Some(conn) = self.conn_mut(r) else { return false };
        if std::mem::take(&mut conn.sec.proven) {
            ShardMetrics::inc(&metrics.auth_successes);
            return true;
        }
        if auth.is_open() && hello.cred_kind == crate::auth::CRED_NONE {
            return true;
        }
        match auth.judge(hello.realm.as_bytes(), hello.cred_kind, &hello.credential) {
            Verdict::Open => true,
            Verdict::Accepted(perms) => {
                conn.sec.perms = Some(perms);
                ShardMetrics::inc(&metrics.auth_successes);
                true
            }
            Verdict::Challenge(key, perms) => {
                let mut nonce = [0u8; 32];
                if boring::rand::rand_bytes(&mut nonce).is_err() {
                    self.close_conn(r, ErrorCode::InternalError, "no randomness for a nonce");
                    return false;
                }
                let deadline = now + Duration::from_millis(auth.auth_timeout_ms);
                conn.sec.pending = Some(Box::new(PendingAuth {
                    hello: hello.clone(),
                    nonce,
                    key,
                    perms,
                    deadline,
                }));
                let challenge =
                    Frame::Challenge(frame::Challenge { nonce: Bytes::copy_from_slice(&nonce) });
                self.send_session(r, &challenge);
                false
            }
            Verdict::Required => {
                ShardMetrics::inc(&metrics.auth_required);
                if self.log_allowed(now) {
                    tracing::info!(realm = %hello.realm, "HELLO without a credential in a realm that requires one");
                }
                self.close_conn(r, ErrorCode::AuthRequired, "this realm requires a credential");
                false
            }
            Verdict::Failed => {
                self.auth_failed(now, r, "credential refused");
                false
            }
        }
    }

    fn auth_failed(&mut self, now: Instant, r: ConnRef, reason: &'static str) {
        ShardMetrics::inc(&self.ctx.metrics.auth_failures);
        let addr = self.conn_mut(r).map(|c| c.peer_addr);
        if self.log_allowed(now) {
            // The address only: never the credential.
            tracing::warn!(peer = ?addr, reason, "authentication failed");
        }
        self.close_conn(r, ErrorCode::AuthFailed, reason);
    }

    /// Runs before every frame is handled: AUTH while a CHALLENGE is pending, permissions and
    /// the publish rate on active sessions. `None`: the frame was answered (or closed) here.
    pub(super) fn security_gate(
        &mut self,
        now: Instant,
        r: ConnRef,
        frame: Frame,
    ) -> Option<Frame> {
        let conn = self.conn_mut(r)?;
        if conn.phase == Phase::AwaitHello && conn.sec.pending.is_some() {
            return self.pending_auth_frame(now, r, frame);
        }
        if conn.phase != Phase::Active {
            return Some(frame);
        }
        if let Frame::Publish(p) = &frame {
            if !self.charge_publish(now, r, p.request_id) {
                return None;
            }
        }
        let conn = self.conn_mut(r)?;
        let Some(perms) = conn.sec.perms.clone() else { return Some(frame) };
        let denied: Option<&'static str> = match &frame {
            Frame::Publish(p) => (!perms.may_publish(&p.topic)).then_some("publish"),
            Frame::Subscribe(s) => (!perms.may_subscribe(&s.pattern)).then_some("subscribe"),
            Frame::Register(f) => {
                (!perms.may_name(Op::Register, &f.procedure)).then_some("register")
            }
            Frame::Call(c) => (!perms.may_name(Op::Call, &c.procedure)).then_some("call"),
            _ => None,
        };
        let Some(what) = denied else { return Some(frame) };
        ShardMetrics::inc(&self.ctx.metrics.permission_denied);
        if self.log_allowed(now) {
            tracing::info!(credential = %perms.name, op = what, "permission denied");
        }
        let code = ErrorCode::PermissionDenied;
        match frame {
            Frame::Publish(p) => {
                ShardMetrics::inc(&self.ctx.metrics.publishes_rejected);
                self.send_error(r, p.request_id, code, "not permitted to publish to this topic");
            }
            Frame::Subscribe(s) => {
                ShardMetrics::inc(&self.ctx.metrics.subscribe_rejected);
                self.send_error(
                    r,
                    s.request_id,
                    code,
                    "not permitted to subscribe to this pattern",
                );
            }
            Frame::Register(f) => {
                self.send_error(r, f.request_id, code, "not permitted to register this procedure")
            }
            Frame::Call(c) => {
                ShardMetrics::inc(&self.ctx.metrics.rpc_errors);
                let err = Frame::CallError(frame::CallError {
                    id: c.call_id,
                    code: code as u64,
                    message: Bytes::from_static(b"not permitted to call this procedure"),
                });
                self.send_data_frame(r, &err);
            }
            _ => {}
        }
        None
    }

    /// One PUBLISH against the peer's rate; false when it was refused (RATE_LIMITED) or the
    /// connection closed (FLOOD after `flood_after_violations` refusals in a row).
    fn charge_publish(&mut self, now: Instant, r: ConnRef, request_id: u64) -> bool {
        let l = &self.ctx.limits;
        let (rate, burst, flood_after) =
            (l.publish_rate_per_s, l.publish_burst, l.flood_after_violations);
        if rate == 0 {
            return true;
        }
        let metrics = self.ctx.metrics.clone();
        let Some(conn) = self.conn_mut(r) else { return false };
        let bucket = conn.sec.publish.get_or_insert_with(|| TokenBucket::new(now, rate, burst));
        if bucket.take(now, 1) {
            conn.sec.violations = 0;
            return true;
        }
        conn.sec.violations += 1;
        ShardMetrics::inc(&metrics.publish_rate_limited);
        if flood_after > 0 && conn.sec.violations >= flood_after {
            ShardMetrics::inc(&metrics.flood_disconnects);
            if self.log_allowed(now) {
                tracing::warn!(
                    violations = flood_after,
                    "closing a peer with FLOOD: it kept publishing above its rate"
                );
            }
            self.close_conn(r, ErrorCode::Flood, "kept publishing above publish_rate_per_s");
            return false;
        }
        self.send_error(r, request_id, ErrorCode::RateLimited, "publish_rate_per_s exceeded");
        false
    }

    fn pending_auth_frame(&mut self, now: Instant, r: ConnRef, frame: Frame) -> Option<Frame> {
        match frame {
            Frame::Ping(_) | Frame::Extension { .. } => Some(frame),
            Frame::Auth(a) => {
                let conn = self.conn_mut(r)?;
                let pending = conn.sec.pending.take()?;
                let ok = crate::auth::verify_auth(
                    &pending.key,
                    &pending.nonce,
                    &pending.hello.peer_id,
                    &a.signature,
                );
                if !ok {
                    self.auth_failed(now, r, "signature does not verify");
                    return None;
                }
                let PendingAuth { hello, perms, .. } = *pending;
                conn.sec.perms = Some(perms);
                conn.sec.proven = true;
                self.handle_hello(now, r, hello);
                None
            }
            Frame::Hello(_) => {
                self.close_conn(r, ErrorCode::ProtocolViolation, "second HELLO");
                None
            }
            _ => {
                ShardMetrics::inc(&self.ctx.metrics.auth_required);
                self.close_conn(r, ErrorCode::AuthRequired, "AUTH must follow CHALLENGE");
                None
            }
        }
    }
}
