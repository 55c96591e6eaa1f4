//! Every DHT parameter and limit, with its default and why.

use std::time::Duration;

use super::addr::{IPV4_PREFIX_BITS, IPV6_PREFIX_BITS};

/// Bucket size, replication factor and reply size (docs/PROTOCOL.md §7.4: k = 20, which is also
/// the codec's `max_list_len` for NODES and VALUE).
pub const K: usize = 20;
/// Parallel queries per lookup.
pub const ALPHA: usize = 3;

/// The DHT's parameters. `DhtConfig::default()` is what a node runs with; tests shrink the
/// timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtConfig {
    /// Contacts per bucket, lookup result size, STORE replication factor. Default [`K`] (20).
    pub k: usize,
    /// Queries a lookup keeps in flight. Default [`ALPHA`] (3).
    pub alpha: usize,
    /// Newcomers a full bucket keeps waiting for a slot. Default 8: enough to refill a bucket
    /// after a few departures, too few to let a flood of new ids churn it.
    pub replacement_cache: usize,
    /// Time a request (lookup query, liveness probe, STORE) may take before it counts as
    /// failed. Default 2 s: several intercontinental round trips.
    pub request_timeout: Duration,
    /// Extra probes of the oldest contact of a full bucket before it is evicted. Default 1: one
    /// lost datagram must not cost a long-lived contact its slot.
    pub probe_retries: u8,
    /// Times a lookup asks a candidate again after a timeout before giving up on it. Default 1:
    /// with a few percent of datagrams lost, a lookup without a retry misses about one in ten
    /// of the true closest nodes (measured in tests/dht_sim.rs).
    pub query_retries: u8,
    /// Consecutive unanswered lookup queries after which a contact is replaced from the
    /// replacement cache (it stays, marked stale, while the cache is empty, so a node whose own
    /// network fails does not empty its table). Default 3.
    pub max_failures: u8,
    /// Shortlist of a lookup: candidates kept, as a multiple of `k`, so failed ones can be
    /// replaced by the next closest. Default 3 (60 candidates).
    pub shortlist_factor: usize,
    /// Queries after which a lookup stops whatever the state of its shortlist: bounds the cost
    /// of a lookup fed ever-closer ids that never answer. Default 128 (a lookup in a 10 000-node
    /// network takes 30 to 60).
    pub max_queries_per_lookup: usize,
    /// Lookups in progress at once; `start_lookup` and `store` beyond it fail, and refreshes
    /// and republishes wait for a free slot. Default 64.
    pub max_lookups: usize,
    /// A bucket no lookup touched for this long is refreshed with a lookup of a random id in
    /// it. Default 1 h (the Kademlia paper's value).
    pub refresh_interval: Duration,
    /// Contacts of one network prefix in one bucket. Default 2.
    pub max_per_prefix_bucket: usize,
    /// Contacts of one network prefix in the whole table. Default 10.
    pub max_per_prefix_table: usize,
    /// Counted prefix length of IPv4 addresses. Default 24.
    pub ipv4_prefix_bits: u8,
    /// Counted prefix length of IPv6 addresses. Default 48.
    pub ipv6_prefix_bits: u8,
    /// Largest record value accepted (STORE) or published. Default 4096 bytes: records are
    /// service advertisements and endpoints, not payloads.
    pub max_value_len: usize,
    /// Longest TTL a STORE may ask for; longer ones are capped. Default 24 h.
    pub max_ttl: Duration,
    /// Records one publisher may hold on this node (over all keys). Default 64.
    pub max_records_per_publisher: usize,
    /// Records (publishers) under one key; one VALUE reply carries at most 20. Default 20.
    pub max_records_per_key: usize,
    /// Records this node holds for others, in all. Default 65 536.
    pub max_records: usize,
    /// How long before a published record's TTL runs out it is republished, as a fraction of
    /// the TTL in per mille, capped by `republish_interval`. Default 500 (half the TTL).
    pub republish_permille: u32,
    /// Longest time between two republishes of a record. Default 1 h.
    pub republish_interval: Duration,
    /// Records this node publishes and republishes itself. Default 1024.
    pub max_published: usize,
    /// Period of the housekeeping pass in `tick` (expiry, refresh, republish). Default 1 s.
    pub housekeeping_interval: Duration,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            k: K,
            alpha: ALPHA,
            replacement_cache: 8,
            request_timeout: Duration::from_secs(2),
            probe_retries: 1,
            query_retries: 1,
            max_failures: 3,
            shortlist_factor: 3,
            max_queries_per_lookup: 128,
            max_lookups: 64,
            refresh_interval: Duration::from_secs(3600),
            max_per_prefix_bucket: 2,
            max_per_prefix_table: 10,
            ipv4_prefix_bits: IPV4_PREFIX_BITS,
            ipv6_prefix_bits: IPV6_PREFIX_BITS,
            max_value_len: 4096,
            max_ttl: Duration::from_secs(24 * 3600),
            max_records_per_publisher: 64,
            max_records_per_key: K,
            max_records: 65_536,
            republish_permille: 500,
            republish_interval: Duration::from_secs(3600),
            max_published: 1024,
            housekeeping_interval: Duration::from_secs(1),
        }
    }
}

impl DhtConfig {
    /// When a record published with `ttl` is next republished, counted from its last store.
    pub fn republish_after(&self, ttl: Duration) -> Duration {
        let part = ttl.mul_f64(f64::from(self.republish_permille.min(1000)) / 1000.0);
        part.min(self.republish_interval).max(Duration::from_millis(1))
    }
}
