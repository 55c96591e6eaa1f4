//! Federation between bootstraps, sans-I/O: nothing here opens a socket, starts a thread or
//! reads a clock; time is an argument (ms since the Unix epoch), inputs and outputs are typed
//! and map onto the codec's federation frames (docs/PROTOCOL.md §7.5).
//!
//! - [`hlc`]: hybrid logical clock stamps as the wire's u64 (48-bit ms, 16-bit counter) with
//!   a bound on how far ahead a remote stamp may be.
//! - [`replica`]: per origin, its interests and registrations, last-writer-wins on hlc,
//!   tombstones with a lifetime, expiry of dead or silent origins.
//! - [`sync`]: anti-entropy, SYNC_DIGEST out, the SYNC_DELTAs a peer misses, deltas in.
//! - [`forward`]: where a publish goes (once per interested bootstrap, never back, hop limit)
//!   and duplicate suppression by (origin, message id).
//! - [`calls`]: which bootstrap gets a call and the table that routes FORWARD_REPLY back.
//! - [`membership`]: SWIM failure detection by `foca`, ANNOUNCE per member, the operator view.
//! - [`node`]: [`Federation`], all of the above as one state machine for the control thread.
//! - [`metrics`]: the counters.
//!
//! The indexes that forwarding reads (remote interests on the pattern trie, remote providers,
//! the discovery cache) are in [`crate::registry`].

pub mod calls;
pub mod error;
pub mod forward;
pub mod hlc;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod sync;

pub use error::{CallRefused, FederationError};
pub use membership::{
    wan_config, FedIdentity, MemberState, MemberView, Membership, MembershipEvent,
};
pub use metrics::FederationMetrics;
pub use node::{CallRequest, Federation, IndexChange, Output};
pub use replica::{Applied, Entry, EntryKey, Kind, LiveChange, NodeId, Op, Replica, ReplicaConfig};

/// Settings of a federation node. The defaults suit a WAN federation of a few to a few dozen
/// bootstraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FederationConfig {
    /// Remote stamps further ahead of our clock than this are rejected (and counted).
    pub max_clock_offset_ms: u64,
    /// Lifetime of a tombstone after its stamp; must exceed the longest partition to heal.
    pub tombstone_ttl_ms: u64,
    /// An origin's entries expire after this long without a refresh (ANNOUNCE, SWIM alive).
    pub origin_ttl_ms: u64,
    /// Most changes per SYNC_DELTA and origins per SYNC_DIGEST (the codec's limit).
    pub max_sync_entries: usize,
    /// A forwarded publish or call takes at most this many hops.
    pub max_hops: u8,
    /// Re-forward received publishes to other interested bootstraps (a partial mesh). Off in a
    /// full mesh, where the entering node reaches every interested bootstrap itself.
    pub relay: bool,
    /// Duplicate suppression: ids remembered.
    pub dedup_entries: usize,
    /// Duplicate suppression: for how long.
    pub dedup_window_ms: u64,
    /// Forwarded calls in flight at most.
    pub max_forwarded_calls: usize,
    /// Discovery cache answers at most.
    pub cache_entries: usize,
    /// Discovery cache answer lifetime.
    pub cache_ttl_ms: u64,
    /// Digest to every member this often.
    pub sync_interval_ms: u64,
    /// ANNOUNCE to every member this often.
    pub announce_interval_ms: u64,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            max_clock_offset_ms: 500,
            tombstone_ttl_ms: 30 * 60_000,
            origin_ttl_ms: 90_000,
            max_sync_entries: 4096,
            max_hops: 4,
            relay: false,
            dedup_entries: 65_536,
            dedup_window_ms: 60_000,
            max_forwarded_calls: 65_536,
            cache_entries: 4096,
            cache_ttl_ms: 5_000,
            sync_interval_ms: 1_000,
            announce_interval_ms: 10_000,
        }
    }
}
