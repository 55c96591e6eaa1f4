//! Plain counters of the federation state machines; the driver copies them into its exporter.

/// Counters since start (gauges where the name says so). All plain `u64`s: the control thread
/// owns them, the driver reads or copies the struct.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FederationMetrics {
    /// Received changes stored (new key or newer stamp).
    pub changes_applied: u64,
    /// Received changes we already held.
    pub duplicate_changes: u64,
    /// Received changes that lost last-writer-wins to what we held: the conflicts.
    pub stale_changes: u64,
    /// Received changes whose hlc was more than `max_clock_offset_ms` ahead of our clock.
    pub rejected_clock_offsets: u64,
    /// Received tombstones past their lifetime, or leftovers of an expired origin.
    pub expired_changes: u64,
    /// Received changes about our own origin that we overruled by re-stamping our state.
    pub self_corrections: u64,
    /// Changes with a kind or op outside the protocol (hand-built frames).
    pub malformed_changes: u64,
    /// Tombstones dropped at the end of their lifetime.
    pub tombstones_collected: u64,
    /// Origins whose entries expired (dead or not refreshed).
    pub origins_expired: u64,
    /// SYNC_DIGEST frames sent.
    pub sync_digests_sent: u64,
    /// SYNC_DELTA frames sent (anti-entropy and pushes).
    pub sync_deltas_sent: u64,
    /// Changes in them.
    pub sync_changes_sent: u64,
    /// SYNC_DELTA frames applied.
    pub sync_deltas_applied: u64,
    /// FORWARD_PUBLISH frames sent.
    pub forwarded_publishes: u64,
    /// FORWARD_PUBLISH frames received and delivered locally.
    pub received_publishes: u64,
    /// FORWARD_PUBLISH frames dropped as duplicates of (origin, message id).
    pub suppressed_duplicates: u64,
    /// Forwarded publishes or calls refused at the hop limit.
    pub hop_limit_drops: u64,
    /// FORWARD_CALL frames sent.
    pub forwarded_calls: u64,
    /// Calls with no remote provider.
    pub calls_without_provider: u64,
    /// FORWARD_REPLY frames routed back.
    pub replies_routed: u64,
    /// FORWARD_REPLY frames for unknown or expired forward ids.
    pub replies_unknown: u64,
    /// Forwarded calls answered with DEADLINE_EXCEEDED by us.
    pub calls_timed_out: u64,
    /// Forwarded calls refused because the table was full.
    pub calls_table_full: u64,
    /// ANNOUNCE frames accepted (newer stamp).
    pub announces_applied: u64,
    /// SWIM datagrams foca could not decode or handle.
    pub membership_errors: u64,
    /// Gauge: members foca holds alive.
    pub members_alive: u64,
    /// Gauge: members suspected.
    pub members_suspect: u64,
    /// Gauge: members declared down.
    pub members_dead: u64,
}
