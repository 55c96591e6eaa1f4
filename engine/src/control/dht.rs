//! The DHT's side of the control thread: service-advertisement keys and values
//! (docs/PROTOCOL.md §7.4, "What the node stores"), the bookkeeping of peers' DHT requests
//! (rate limit, STOREs per peer, which lookup answers whom), and the `fovea_dht_*` counters.
//!
//! The state machine is `fovea_control::dht::DhtNode`; the driver (`driver.rs`) feeds it the
//! DHT frames of federation links and routes its `Send`s over those links.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fovea_control::dht::NodeId as DhtId;
use fovea_control::federation::Kind;

/// Domain separation of the advertisement keys.
pub const KEY_DOMAIN: &[u8] = b"fovea/dht/v1";

/// The DHT key of the advertisement of `name` in `realm`: SHA-256 of `"fovea/dht/v1" ‖ kind u8
/// ‖ realm length u8 ‖ realm ‖ name`, `kind` 1 for a subscription pattern and 2 for an RPC
/// procedure (the kinds of SYNC_DELTA, §7.5.3).
pub fn advert_key(kind: Kind, realm: &[u8], name: &[u8]) -> DhtId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(KEY_DOMAIN);
    ctx.update(&[kind_byte(kind), realm.len().min(255) as u8]);
    ctx.update(realm);
    ctx.update(name);
    let mut id = [0u8; 32];
    id.copy_from_slice(ctx.finish().as_ref());
    DhtId(id)
}

/// The record value a node stores under [`advert_key`]: UTF-8 `rpc:<realm>/<name>@<endpoint>`
/// or `sub:<realm>/<pattern>@<endpoint>`, `endpoint` the node's advertised federation address
/// as `ip:port` (`[ip]:port` for IPv6). The record's publisher is the node's id.
pub fn advert_value(kind: Kind, realm: &[u8], name: &[u8], endpoint: SocketAddr) -> Bytes {
    let tag = match kind {
        Kind::Interest => "sub",
        Kind::Registration => "rpc",
    };
    let mut v = Vec::with_capacity(realm.len() + name.len() + 64);
    v.extend_from_slice(tag.as_bytes());
    v.push(b':');
    v.extend_from_slice(realm);
    v.push(b'/');
    v.extend_from_slice(name);
    v.extend_from_slice(format!("@{endpoint}").as_bytes());
    Bytes::from(v)
}

/// The endpoint of an advertisement value (what follows the last `@`).
pub fn advert_endpoint(value: &[u8]) -> Option<SocketAddr> {
    let s = std::str::from_utf8(value).ok()?;
    s.rsplit_once('@')?.1.parse().ok()
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Interest => 1,
        Kind::Registration => 2,
    }
}

/// What a peer asked, kept until its lookup completes.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerRequest {
    pub peer: [u8; 32],
    pub shard: usize,
    pub request_id: u64,
}

/// Per-peer limits of DHT requests from peers (not from nodes: those are the DHT's own).
pub(super) struct PeerLimits {
    rate: f64,
    max_stores: usize,
    buckets: HashMap<[u8; 32], (f64, Instant)>,
    /// Keys a peer stored, with when they run out.
    stores: HashMap<[u8; 32], Vec<(DhtId, Instant)>>,
}

/// Entries kept in the buckets before idle ones are pruned.
const PRUNE_AT: usize = 4096;

impl PeerLimits {
    pub(super) fn new(requests_per_s: u32, max_stores: usize) -> PeerLimits {
        PeerLimits {
            rate: f64::from(requests_per_s.max(1)),
            max_stores,
            buckets: HashMap::new(),
            stores: HashMap::new(),
        }
    }

    /// Takes one token of `peer`'s bucket (capacity and refill: `requests_per_s`).
    pub(super) fn allow(&mut self, peer: [u8; 32], now: Instant) -> bool {
        if self.buckets.len() >= PRUNE_AT {
            let idle = Duration::from_secs(10);
            self.buckets.retain(|_, (_, at)| now.saturating_duration_since(*at) < idle);
        }
        let rate = self.rate;
        let (tokens, at) = self.buckets.entry(peer).or_insert((rate, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts a STORE of `key` by `peer` for `ttl`, unless the peer holds `max_stores` live
    /// records already (a STORE of a key it holds renews it).
    pub(super) fn store(
        &mut self,
        peer: [u8; 32],
        key: DhtId,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        if self.stores.len() >= PRUNE_AT {
            self.stores.retain(|_, v| v.iter().any(|(_, until)| *until > now));
        }
        let held = self.stores.entry(peer).or_default();
        held.retain(|(k, until)| *until > now && *k != key);
        if held.len() >= self.max_stores {
            return false;
        }
        held.push((key, now + ttl));
        true
    }
}

/// The `fovea_dht_*` values (docs/OPERATIONS.md, "Federation", "DHT").
#[derive(Debug, Default, Clone, Copy)]
pub struct DhtCounters {
    /// Contacts in the routing table (gauge).
    pub table_size: u64,
    /// Records held for publishers (gauge).
    pub records: u64,
    /// Records this node advertises and republishes (gauge).
    pub advertised: u64,
    /// Lookups started (bootstrap, refresh, find, store).
    pub lookups_started: u64,
    /// Lookups completed.
    pub lookups_done: u64,
    /// Median hops of the last completed lookups (gauge).
    pub lookup_hops: u64,
    /// Requests to other nodes that timed out.
    pub timeouts: u64,
    /// DHT requests from other nodes answered.
    pub requests_in: u64,
    /// Records stored for publishers (STOREs accepted, renewals included).
    pub records_stored: u64,
    /// STOREs refused by the record limits.
    pub stores_refused: u64,
    /// DHT requests from peers.
    pub peer_requests: u64,
    /// Peer requests refused by the rate limit, the STORE limit or a full lookup table.
    pub peer_refused: u64,
    /// DHT frames from nodes whose address was unknown (dropped).
    pub unknown_senders: u64,
    /// Nodes found by the DHT and joined to the federation.
    pub discovered: u64,
}

/// Median of the last hop counts.
#[derive(Debug, Default)]
pub(super) struct Hops {
    last: Vec<u32>,
    next: usize,
}

impl Hops {
    const KEEP: usize = 64;

    pub(super) fn push(&mut self, hops: u32) {
        if self.last.len() < Self::KEEP {
            self.last.push(hops);
        } else {
            self.last[self.next] = hops;
            self.next = (self.next + 1) % Self::KEEP;
        }
    }

    pub(super) fn median(&self) -> u64 {
        let mut v = self.last.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advert_key_and_value_match_the_protocol_doc() {
        let key = advert_key(Kind::Registration, b"acme", b"math.add");
        let hex: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "abf642901f1860291244106a69807c83f6559a58da83f3e53398b397f09bfcdf");
        assert_ne!(key, advert_key(Kind::Interest, b"acme", b"math.add"));
        let ep: SocketAddr = "203.0.113.5:4433".parse().unwrap();
        let v = advert_value(Kind::Registration, b"acme", b"math.add", ep);
        assert_eq!(&v[..], b"rpc:acme/math.add@203.0.113.5:4433");
        assert_eq!(advert_endpoint(&v), Some(ep));
    }

    #[test]
    fn peer_limits_bound_rate_and_stores() {
        let now = Instant::now();
        let mut l = PeerLimits::new(2, 1);
        let p = [1u8; 32];
        assert!(l.allow(p, now) && l.allow(p, now) && !l.allow(p, now));
        assert!(l.allow(p, now + Duration::from_millis(600)));
        let (k1, k2) = (DhtId([1; 32]), DhtId([2; 32]));
        assert!(l.store(p, k1, Duration::from_secs(5), now));
        assert!(l.store(p, k1, Duration::from_secs(5), now), "renewal");
        assert!(!l.store(p, k2, Duration::from_secs(5), now));
        assert!(l.store(p, k2, Duration::from_secs(5), now + Duration::from_secs(6)));
    }
}
