//! Per-shard counters and their Prometheus text exposition.
//!
//! Each shard owns one `ShardMetrics` and is its only writer; the metrics thread only reads.
//! Counters are plain relaxed atomics on the shard's own cache lines, so counting costs an
//! uncontended add and never a lock shared between cores. (A registry crate was considered:
//! its labelled families take a lock on lookup and its histograms lock on observe, which is the
//! shared-lock-on-the-hot-path this design exists to avoid; the text format is simple enough to
//! write directly.)

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What one peer has relayed through the node (SEND and CALL payloads) in its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayer {
    /// Peer id.
    pub peer: [u8; 32],
    /// Realm of its session.
    pub realm: String,
    /// Payload bytes relayed.
    pub bytes: u64,
    /// SENDs and CALLs relayed.
    pub msgs: u64,
}

/// Relayers each shard reports (`GET /relay`).
pub const RELAYERS_PER_SHARD: usize = 32;

/// The `/relay` document: every shard's reported relayers, most bytes first.
pub fn relay_json(shards: &[std::sync::Arc<ShardMetrics>]) -> String {
    let mut all: Vec<(usize, Relayer)> = Vec::new();
    for (i, m) in shards.iter().enumerate() {
        let list = m.relayers.lock().unwrap_or_else(|p| p.into_inner());
        all.extend(list.iter().cloned().map(|r| (i, r)));
    }
    all.sort_by_key(|(_, r)| std::cmp::Reverse(r.bytes));
    let mut out = String::from("{\"peers\":[");
    for (k, (shard, r)) in all.iter().enumerate() {
        let sep = if k == 0 { "" } else { "," };
        let peer: String = r.peer.iter().map(|b| format!("{b:02x}")).collect();
        let realm = r.realm.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = write!(
            out,
            "{sep}{{\"peer\":\"{peer}\",\"realm\":\"{}\",\"shard\":{shard},\"relayed_bytes\":{},\"relayed_msgs\":{}}}",
            realm, r.bytes, r.msgs
        );
    }
    out.push_str("]}\n");
    out
}

macro_rules! shard_counters {
    ($( $field:ident, $name:literal, $kind:literal, $help:literal; )*) => {
        /// Counters and gauges of one shard.
        #[derive(Default)]
        #[repr(align(128))]
        pub struct ShardMetrics {
            $( #[doc = $help] pub $field: AtomicU64, )*
            /// Publish-to-deliver latency histogram (bucket counts, see `LATENCY_BOUNDS_US`).
            pub latency_buckets: [AtomicU64; LATENCY_BUCKETS],
            /// Sum of observed latencies in microseconds.
            pub latency_sum_us: AtomicU64,
            /// RTT of the node's own PINGs to its peers (bucket counts, `LATENCY_BOUNDS_US`).
            pub rtt_buckets: [AtomicU64; LATENCY_BUCKETS],
            /// Sum of observed RTTs in microseconds.
            pub rtt_sum_us: AtomicU64,
            /// The peers of this shard that relayed the most through the node, refreshed about
            /// once a second (`GET /relay`). A lock, but one the shard takes once a second.
            pub relayers: std::sync::Mutex<Vec<Relayer>>,
        }

        const COUNTERS: &[(&str, &str, &str)] = &[ $( ($name, $kind, $help), )* ];

        impl ShardMetrics {
            fn values(&self) -> Vec<u64> {
                vec![ $( self.$field.load(Relaxed), )* ]
            }
        }
    };
}

shard_counters! {
    connections, "fovea_connections", "gauge", "Open QUIC connections owned by the shard.";
    peers, "fovea_peers", "gauge", "Peers that completed HELLO and own a session on the shard.";
    handshakes, "fovea_handshakes_total", "counter", "QUIC handshakes accepted.";
    handshakes_refused, "fovea_handshakes_refused_total", "counter", "Handshakes refused (server full, draining).";
    retries_sent, "fovea_retries_sent_total", "counter", "Retry packets sent for address validation.";
    tokens_invalid, "fovea_retry_tokens_invalid_total", "counter", "Initial packets with a forged, expired or malformed token.";
    stateless_resets, "fovea_stateless_resets_sent_total", "counter", "Stateless resets sent for unknown connection IDs.";
    closes_by_error, "fovea_connections_closed_by_error_total", "counter", "Connections the node closed with an error code.";
    replaced, "fovea_sessions_replaced_total", "counter", "Sessions replaced by a newer connection with the same peer id.";
    migrated_in, "fovea_connections_migrated_in_total", "counter", "Connections adopted from another shard after HELLO.";
    publishes, "fovea_publishes_total", "counter", "PUBLISH frames accepted.";
    publishes_rejected, "fovea_publishes_rejected_total", "counter", "PUBLISH frames rejected (invalid, too large, denied).";
    duplicates_dropped, "fovea_duplicates_dropped_total", "counter", "Repeated (publisher, message id) publishes dropped.";
    deliveries, "fovea_deliveries_total", "counter", "DELIVER frames queued to subscribers.";
    drops_slow_consumer, "fovea_drops_slow_consumer_total", "counter", "Deliveries dropped because a subscriber's send budget was full.";
    slow_consumer_disconnects, "fovea_slow_consumer_disconnects_total", "counter", "Subscribers disconnected with SLOW_CONSUMER.";
    subscriptions, "fovea_subscriptions", "gauge", "Active subscriptions on the shard.";
    subscribe_rejected, "fovea_subscribe_rejected_total", "counter", "SUBSCRIBE requests that failed.";
    frames_in, "fovea_frames_in_total", "counter", "Frames decoded from peers.";
    frames_malformed, "fovea_frames_malformed_total", "counter", "Connections closed for a malformed, oversized or unknown frame.";
    pings_answered, "fovea_pings_answered_total", "counter", "PING frames answered with PONG.";
    packets_in, "fovea_packets_in_total", "counter", "UDP datagrams received.";
    packets_out, "fovea_packets_out_total", "counter", "QUIC packets sent.";
    bytes_in, "fovea_bytes_in_total", "counter", "UDP payload bytes received.";
    bytes_out, "fovea_bytes_out_total", "counter", "UDP payload bytes sent.";
    send_calls, "fovea_send_syscalls_total", "counter", "sendmmsg/sendmsg calls (datagrams per submission = packets_out / this).";
    packets_handed_over, "fovea_packets_handed_over_total", "counter", "Datagrams that reached the wrong shard and were passed to their owner.";
    packets_dropped, "fovea_packets_dropped_total", "counter", "Datagrams dropped (garbage, unknown connection, queue full).";
    cross_shard_out, "fovea_cross_shard_messages_out_total", "counter", "Messages sent to other shards.";
    cross_shard_in, "fovea_cross_shard_messages_in_total", "counter", "Messages received from other shards.";
    cross_shard_queue_depth, "fovea_cross_shard_queue_depth", "gauge", "Messages waiting in this shard's inbox.";
    loop_turns, "fovea_loop_turns_total", "counter", "Event-loop turns.";
    rpc_calls, "fovea_rpc_calls_total", "counter", "CALL frames received from callers on this shard.";
    rpc_replies, "fovea_rpc_replies_total", "counter", "REPLYs returned to callers.";
    rpc_errors, "fovea_rpc_errors_total", "counter", "CALL_ERRORs returned to callers (all reasons but DEADLINE_EXCEEDED, counted on its own).";
    rpc_deadline_exceeded, "fovea_rpc_deadline_exceeded_total", "counter", "Calls answered with DEADLINE_EXCEEDED.";
    rpc_late_replies, "fovea_rpc_late_replies_total", "counter", "Replies that arrived after their call ended (dropped).";
    rpc_calls_in_flight, "fovea_rpc_calls_in_flight", "gauge", "Calls from this shard's callers in flight (each holds one deadline entry).";
    rpc_retries, "fovea_rpc_retries_total", "counter", "Calls retried on another provider (idempotent ones whose provider left, and any whose INVOKE found its provider gone).";
    rpc_invocations_expired, "fovea_rpc_invocations_expired_total", "counter", "Invocations a provider left unanswered past the caller's deadline (forgotten on the provider's shard).";
    messages_relayed, "fovea_messages_relayed_total", "counter", "Direct messages (SEND) relayed to their target.";
    relay_bytes, "fovea_relay_bytes_total", "counter", "Payload bytes of SEND and CALL that peers relayed through the node.";
    relay_rate_limited, "fovea_relay_rate_limited_total", "counter", "SEND and CALL refused with RATE_LIMITED (relay_bytes_per_s).";
    path_change_stalls, "fovea_path_change_stalls_total", "counter", "Connections closed with SLOW_CONSUMER because their data stream stalled after the peer's address changed.";
    acks_deferred, "fovea_acks_deferred_total", "counter", "Times a connection that had only received was not flushed at once, so its ACK could ride on the next data sent to it (limits.ack_delay_us).";
    acks_at_deadline, "fovea_acks_at_deadline_total", "counter", "Deferred ACKs sent because ack_delay_us passed with no data to carry them.";
    observed_addr_changes, "fovea_observed_addr_changes_total", "counter", "OBSERVED_ADDR sent because a peer's address changed.";
    punches, "fovea_punches_total", "counter", "PUNCH introductions made (both peers told).";
    punch_rate_limited, "fovea_punch_rate_limited_total", "counter", "PUNCH_REQUESTs refused with RATE_LIMITED (punch_rate_per_s).";
    auth_successes, "fovea_auth_successes_total", "counter", "Sessions admitted with a valid credential (token or proven public key).";
    auth_failures, "fovea_auth_failures_total", "counter", "Connections closed with AUTH_FAILED (wrong or unknown token, key or signature).";
    auth_required, "fovea_auth_required_total", "counter", "Connections closed with AUTH_REQUIRED (no credential, or no AUTH in time).";
    permission_denied, "fovea_permission_denied_total", "counter", "Requests refused with PERMISSION_DENIED.";
    publish_rate_limited, "fovea_publish_rate_limited_total", "counter", "PUBLISHes refused with RATE_LIMITED (publish_rate_per_s).";
    flood_disconnects, "fovea_flood_disconnects_total", "counter", "Peers closed with FLOOD (flood_after_violations refusals in a row).";
    handshakes_refused_per_ip, "fovea_handshakes_refused_per_ip_total", "counter", "Initials dropped by the per-source-address handshake rate or connection cap.";
    ip_table_full, "fovea_ip_table_full_total", "counter", "Handshakes admitted untracked because the shard's source-address table was full.";
    log_lines_suppressed, "fovea_log_lines_suppressed_total", "counter", "Per-peer log lines not written (log_lines_per_s).";
    tls_reloads, "fovea_tls_reloads_total", "counter", "TLS configurations reloaded from changed files (counted on shard 0).";
    tls_reload_failures, "fovea_tls_reload_failures_total", "counter", "Changed TLS files that did not load (the previous certificate stays; shard 0).";
}

/// Upper bounds (µs) of the latency histogram buckets; the last bucket is +Inf.
pub const LATENCY_BOUNDS_US: [u64; 14] =
    [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000];
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

impl ShardMetrics {
    /// Adds one to a counter (only the owning shard calls this).
    #[inline]
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Sets a gauge.
    #[inline]
    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Relaxed);
    }

    /// Records one publish-to-deliver latency.
    pub fn observe_latency_us(&self, us: u64) {
        self.latency_buckets[bucket(us)].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }

    /// Records one PING round trip measured by the node.
    pub fn observe_rtt_us(&self, us: u64) {
        self.rtt_buckets[bucket(us)].fetch_add(1, Relaxed);
        self.rtt_sum_us.fetch_add(us, Relaxed);
    }
}

fn bucket(us: u64) -> usize {
    LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len())
}

fn render_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    shards: &[std::sync::Arc<ShardMetrics>],
    buckets: impl Fn(&ShardMetrics) -> &[AtomicU64; LATENCY_BUCKETS],
    sum: impl Fn(&ShardMetrics) -> &AtomicU64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0u64;
    let sum_us: u64 = shards.iter().map(|s| sum(s).load(Relaxed)).sum();
    for (i, bound) in LATENCY_BOUNDS_US.iter().map(Some).chain([None]).enumerate() {
        cumulative += shards.iter().map(|s| buckets(s)[i].load(Relaxed)).sum::<u64>();
        match bound {
            Some(b) => {
                let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *b as f64 / 1e6);
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let _ = writeln!(out, "{name}_sum {}\n{name}_count {cumulative}", sum_us as f64 / 1e6);
}

/// Node-wide state shown next to the shard counters.
pub struct NodeGauges<'a> {
    /// True while the node accepts new peers.
    pub ready: bool,
    /// Which I/O driver the shards run ("io_uring" or "legacy").
    pub driver: &'a str,
}

/// Renders every shard's counters, per shard (`shard` label) and summed, in Prometheus text
/// exposition format 0.0.4.
pub fn render(shards: &[std::sync::Arc<ShardMetrics>], node: &NodeGauges<'_>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let per_shard: Vec<Vec<u64>> = shards.iter().map(|s| s.values()).collect();
    for (i, (name, kind, help)) in COUNTERS.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let mut total = 0u64;
        for (shard, values) in per_shard.iter().enumerate() {
            total += values[i];
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", values[i]);
        }
        let _ = writeln!(out, "{name}{{shard=\"all\"}} {total}");
    }
    render_histogram(
        &mut out,
        "fovea_publish_to_deliver_latency_seconds",
        "Time from decoding a PUBLISH to queueing its DELIVER (per publish and shard).",
        shards,
        |s| &s.latency_buckets,
        |s| &s.latency_sum_us,
    );
    render_histogram(
        &mut out,
        "fovea_peer_rtt_seconds",
        "Round-trip time of the node's keep-alive PINGs to its peers.",
        shards,
        |s| &s.rtt_buckets,
        |s| &s.rtt_sum_us,
    );
    let _ = writeln!(
        out,
        "# HELP fovea_ready 1 while the node accepts new peers.\n# TYPE fovea_ready gauge"
    );
    let _ = writeln!(out, "fovea_ready {}", u8::from(node.ready));
    let _ = writeln!(
        out,
        "# HELP fovea_shards Number of data-plane shards.\n# TYPE fovea_shards gauge"
    );
    let _ = writeln!(out, "fovea_shards {}", shards.len());
    let _ = writeln!(
        out,
        "# HELP fovea_io_driver I/O driver of the shards.\n# TYPE fovea_io_driver gauge"
    );
    let _ = writeln!(out, "fovea_io_driver{{driver=\"{}\"}} 1", node.driver);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn render_sums_shards_and_counts_histogram_cumulatively() {
        let a = Arc::new(ShardMetrics::default());
        let b = Arc::new(ShardMetrics::default());
        ShardMetrics::add(&a.deliveries, 3);
        ShardMetrics::add(&b.deliveries, 4);
        a.observe_latency_us(7);
        b.observe_latency_us(2_000_000);
        let text = render(&[a, b], &NodeGauges { ready: true, driver: "io_uring" });
        assert!(text.contains("fovea_deliveries_total{shard=\"0\"} 3\n"));
        assert!(text.contains("fovea_deliveries_total{shard=\"all\"} 7\n"));
        assert!(
            text.contains("fovea_publish_to_deliver_latency_seconds_bucket{le=\"0.00001\"} 1\n")
        );
        assert!(text.contains("fovea_publish_to_deliver_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("fovea_ready 1\n"));
    }
}
