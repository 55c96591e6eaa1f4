//! What the operators see of the federation: a snapshot the control thread refreshes and the
//! HTTP thread renders (`/metrics` text and `/federation` JSON). A mutex is fine here: only
//! those two threads touch it, neither on the data path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fovea_control::federation::{FederationMetrics, MemberState, MemberView, NodeId};

use super::dht::DhtCounters;

/// The control thread's counters besides `FederationMetrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkCounters {
    /// Outgoing links with WELCOME.
    pub links_out: u64,
    /// Incoming links served by the shards.
    pub links_in: u64,
    /// Dials started.
    pub dials: u64,
    /// Dials that failed or links that dropped.
    pub dial_failures: u64,
    /// Frames with no link to their node (dropped).
    pub unroutable_frames: u64,
    /// Forwarded publishes handed to the shards.
    pub delivered_publishes: u64,
    /// (realm, pattern)s with subscribers on some other bootstrap.
    pub remote_interests: u64,
    /// (realm, procedure)s with a provider on some other bootstrap.
    pub remote_providers: u64,
}

#[derive(Default)]
struct Snapshot {
    metrics: FederationMetrics,
    links: LinkCounters,
    dht: DhtCounters,
    members: Vec<MemberView>,
}

/// Shared between the control thread (writer) and the HTTP thread (reader).
pub struct FederationStatus {
    node_id: NodeId,
    region: String,
    snapshot: Mutex<Snapshot>,
    control_drops: Arc<AtomicU64>,
}

impl FederationStatus {
    pub(super) fn new(node_id: NodeId, region: String, control_drops: Arc<AtomicU64>) -> Self {
        FederationStatus { node_id, region, snapshot: Mutex::default(), control_drops }
    }

    pub(super) fn update(
        &self,
        metrics: FederationMetrics,
        links: LinkCounters,
        dht: DhtCounters,
        members: Option<Vec<MemberView>>,
    ) {
        let mut s = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        s.metrics = metrics;
        s.links = links;
        s.dht = dht;
        if let Some(m) = members {
            s.members = m;
        }
    }

    /// Appends the `fovea_federation_*` families in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let s = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        let m = &s.metrics;
        let l = &s.links;
        let drops = self.control_drops.load(Ordering::Relaxed);
        let counters: [(&str, &str, u64); 26] = [
            (
                "forwarded_publishes_total",
                "FORWARD_PUBLISH frames sent (one per interested bootstrap per publish).",
                m.forwarded_publishes,
            ),
            (
                "received_publishes_total",
                "FORWARD_PUBLISH frames received and delivered locally.",
                m.received_publishes,
            ),
            (
                "suppressed_duplicates_total",
                "FORWARD_PUBLISH frames dropped as duplicates of (origin, message id).",
                m.suppressed_duplicates,
            ),
            (
                "hop_limit_drops_total",
                "Forwarded publishes or calls refused at the hop limit.",
                m.hop_limit_drops,
            ),
            ("sync_digests_sent_total", "SYNC_DIGEST frames sent.", m.sync_digests_sent),
            (
                "sync_deltas_sent_total",
                "SYNC_DELTA frames sent (anti-entropy and pushes).",
                m.sync_deltas_sent,
            ),
            (
                "sync_changes_sent_total",
                "Changes in the SYNC_DELTA frames sent.",
                m.sync_changes_sent,
            ),
            ("sync_deltas_applied_total", "SYNC_DELTA frames applied.", m.sync_deltas_applied),
            (
                "changes_applied_total",
                "Received changes stored (new key or newer stamp).",
                m.changes_applied,
            ),
            ("duplicate_changes_total", "Received changes already held.", m.duplicate_changes),
            (
                "conflicts_total",
                "Received changes that lost last-writer-wins to what was held.",
                m.stale_changes,
            ),
            (
                "rejected_clock_offsets_total",
                "Remote stamps too far ahead of our clock.",
                m.rejected_clock_offsets,
            ),
            (
                "origins_expired_total",
                "Origins whose entries expired (dead or silent).",
                m.origins_expired,
            ),
            ("forwarded_calls_total", "FORWARD_CALL frames sent.", m.forwarded_calls),
            (
                "calls_without_provider_total",
                "Calls with no reachable remote provider.",
                m.calls_without_provider,
            ),
            ("replies_routed_total", "FORWARD_REPLY frames routed back.", m.replies_routed),
            (
                "replies_unknown_total",
                "FORWARD_REPLY frames for unknown or expired calls.",
                m.replies_unknown,
            ),
            (
                "calls_timed_out_total",
                "Forwarded calls answered with DEADLINE_EXCEEDED.",
                m.calls_timed_out,
            ),
            ("announces_applied_total", "ANNOUNCE frames accepted.", m.announces_applied),
            (
                "membership_errors_total",
                "SWIM messages that could not be handled.",
                m.membership_errors,
            ),
            ("dials_total", "Outgoing link dials started.", l.dials),
            (
                "dial_failures_total",
                "Dials without WELCOME and outgoing links that dropped.",
                l.dial_failures,
            ),
            (
                "unroutable_frames_total",
                "Frames dropped for want of a link to their node.",
                l.unroutable_frames,
            ),
            (
                "delivered_publishes_total",
                "Forwarded publishes handed to the shards for local delivery.",
                l.delivered_publishes,
            ),
            (
                "control_queue_drops_total",
                "Messages shards dropped because the control queue was full.",
                drops,
            ),
            (
                "tombstones_collected_total",
                "Tombstones dropped at the end of their lifetime.",
                m.tombstones_collected,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP fovea_federation_{name} {help}");
            let _ = writeln!(out, "# TYPE fovea_federation_{name} counter");
            let _ = writeln!(out, "fovea_federation_{name} {v}");
        }
        let _ = writeln!(out, "# HELP fovea_federation_links Federation links up, by direction.");
        let _ = writeln!(out, "# TYPE fovea_federation_links gauge");
        let _ = writeln!(out, "fovea_federation_links{{direction=\"out\"}} {}", l.links_out);
        let _ = writeln!(out, "fovea_federation_links{{direction=\"in\"}} {}", l.links_in);
        let _ = writeln!(
            out,
            "# HELP fovea_federation_members Federation members SWIM knows, by state."
        );
        let _ = writeln!(out, "# TYPE fovea_federation_members gauge");
        for (state, v) in
            [("alive", m.members_alive), ("suspect", m.members_suspect), ("dead", m.members_dead)]
        {
            let _ = writeln!(out, "fovea_federation_members{{state=\"{state}\"}} {v}");
        }
        for (name, help, v) in [
            (
                "remote_interests",
                "Patterns with subscribers on another bootstrap.",
                l.remote_interests,
            ),
            (
                "remote_providers",
                "Procedures with a provider on another bootstrap.",
                l.remote_providers,
            ),
        ] {
            let _ = writeln!(out, "# HELP fovea_federation_{name} {help}");
            let _ = writeln!(out, "# TYPE fovea_federation_{name} gauge");
            let _ = writeln!(out, "fovea_federation_{name} {v}");
        }
        render_dht(&s.dht, out);
    }

    /// This node and its members as JSON (`/federation`).
    pub fn to_json(&self) -> String {
        let s = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"node_id\":\"{}\",\"region\":\"{}\",\"members\":[",
            hex(&self.node_id),
            escape(&self.region)
        );
        for (i, m) in s.members.iter().enumerate() {
            let state = match m.state {
                MemberState::Alive => "alive",
                MemberState::Suspect => "suspect",
                MemberState::Dead => "dead",
            };
            let _ = write!(
                out,
                "{}{{\"id\":\"{}\",\"endpoint\":\"{}\",\"region\":\"{}\",\"load\":{},\"capacity\":{},\"state\":\"{}\",\"last_seen_ms\":{}}}",
                if i == 0 { "" } else { "," },
                hex(&m.id),
                m.endpoint,
                escape(&String::from_utf8_lossy(&m.region)),
                m.load,
                m.capacity,
                state,
                m.last_seen_ms
            );
        }
        out.push_str("]}\n");
        out
    }
}

/// The `fovea_dht_*` families (docs/OPERATIONS.md, "Federation", "DHT").
fn render_dht(d: &DhtCounters, out: &mut String) {
    let gauges = [
        ("table_size", "Contacts in the DHT routing table.", d.table_size),
        ("records", "DHT records held for publishers (this node's own included).", d.records),
        ("advertised", "Advertisement records this node publishes and republishes.", d.advertised),
        ("lookup_hops", "Median hops of the last 64 completed DHT lookups.", d.lookup_hops),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP fovea_dht_{name} {help}");
        let _ = writeln!(out, "# TYPE fovea_dht_{name} gauge");
        let _ = writeln!(out, "fovea_dht_{name} {v}");
    }
    let counters = [
        (
            "lookups_started_total",
            "DHT lookups started (bootstrap, refresh, find, store).",
            d.lookups_started,
        ),
        ("lookups_completed_total", "DHT lookups completed.", d.lookups_done),
        ("timeouts_total", "DHT requests to other nodes that timed out.", d.timeouts),
        ("requests_total", "DHT requests from other nodes answered.", d.requests_in),
        ("records_stored_total", "DHT STOREs accepted (renewals included).", d.records_stored),
        ("stores_refused_total", "DHT STOREs refused by the record limits.", d.stores_refused),
        ("peer_requests_total", "DHT requests from peers.", d.peer_requests),
        (
            "peer_refused_total",
            "Peer DHT requests refused (rate, STORE limit, busy).",
            d.peer_refused,
        ),
        (
            "unknown_senders_total",
            "DHT frames from nodes of unknown address (dropped).",
            d.unknown_senders,
        ),
        ("discovered_total", "Nodes found by the DHT and joined to the federation.", d.discovered),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(out, "# HELP fovea_dht_{name} {help}");
        let _ = writeln!(out, "# TYPE fovea_dht_{name} counter");
        let _ = writeln!(out, "fovea_dht_{name} {v}");
    }
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gauges_with_labels_and_json_escapes_regions() {
        let status = FederationStatus::new([0xab; 32], "eu\"1".into(), Arc::default());
        let metrics =
            FederationMetrics { members_alive: 2, forwarded_publishes: 7, ..Default::default() };
        let links = LinkCounters { links_out: 1, ..Default::default() };
        let dht = DhtCounters { table_size: 2, ..Default::default() };
        status.update(metrics, links, dht, Some(vec![]));
        let mut text = String::new();
        status.render(&mut text);
        assert!(text.contains("fovea_federation_members{state=\"alive\"} 2\n"), "{text}");
        assert!(text.contains("fovea_federation_forwarded_publishes_total 7\n"));
        assert!(text.contains("fovea_federation_links{direction=\"out\"} 1\n"));
        assert!(text.contains("fovea_dht_table_size 2\n"), "{text}");
        let json = status.to_json();
        assert!(json.starts_with("{\"node_id\":\"abab"), "{json}");
        assert!(json.contains("\"region\":\"eu\\\"1\""), "{json}");
    }
}
