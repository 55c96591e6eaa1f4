//! Discovery cache: recent answers to "which bootstraps have subscribers for this topic /
//! providers of this procedure", valid until the realm's index changes or a TTL passes.
//!
//! Invalidation is per (lookup, realm): any change to a realm's remote interests drops that
//! realm's cached topic answers (a new pattern may match any topic), any change to its remote
//! providers its procedure answers. The TTL is a safety net and keeps the cache from holding
//! topics nobody publishes to any more; the size bound keeps a topic scan from growing it.

use std::collections::HashMap;

use bytes::Bytes;
use fovea_codec::{Id32, Realm};
use smallvec::SmallVec;

/// Which index an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// Topic → bootstraps with matching subscribers.
    Subscribers,
    /// Procedure → bootstraps with providers.
    Providers,
}

#[derive(Debug)]
struct Cached {
    origins: SmallVec<[Id32; 4]>,
    expires_at_ms: u64,
}

/// Hit and miss counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to ask the index.
    pub misses: u64,
    /// Realm invalidations.
    pub invalidations: u64,
}

/// Bounded, expiring cache of discovery answers.
#[derive(Debug)]
pub struct DiscoveryCache {
    realms: HashMap<(Lookup, Realm), HashMap<Bytes, Cached>>,
    len: usize,
    max_entries: usize,
    ttl_ms: u64,
    stats: CacheStats,
}

impl DiscoveryCache {
    /// At most `max_entries` answers, each for at most `ttl_ms`.
    pub fn new(max_entries: usize, ttl_ms: u64) -> DiscoveryCache {
        DiscoveryCache {
            realms: HashMap::new(),
            len: 0,
            max_entries,
            ttl_ms,
            stats: CacheStats::default(),
        }
    }

    /// The cached answer for `key` (a topic or a procedure name), if fresh.
    pub fn get(
        &mut self,
        lookup: Lookup,
        realm: &Realm,
        key: &[u8],
        now_ms: u64,
    ) -> Option<&[Id32]> {
        let fresh = self
            .realms
            .get(&(lookup, realm.clone()))
            .and_then(|m| m.get(key))
            .is_some_and(|c| c.expires_at_ms > now_ms);
        if !fresh {
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        self.realms.get(&(lookup, realm.clone())).and_then(|m| m.get(key)).map(|c| &c.origins[..])
    }

    /// Stores an answer.
    pub fn put(
        &mut self,
        lookup: Lookup,
        realm: &Realm,
        key: Bytes,
        origins: &[Id32],
        now_ms: u64,
    ) {
        if self.max_entries == 0 {
            return;
        }
        if self.len >= self.max_entries {
            self.evict(now_ms);
        }
        let map = self.realms.entry((lookup, realm.clone())).or_default();
        let cached = Cached {
            origins: SmallVec::from_slice(origins),
            expires_at_ms: now_ms.saturating_add(self.ttl_ms),
        };
        if map.insert(key, cached).is_none() {
            self.len += 1;
        }
    }

    /// The realm's index for `lookup` changed: its answers are void.
    pub fn invalidate(&mut self, lookup: Lookup, realm: &Realm) {
        if let Some(map) = self.realms.remove(&(lookup, realm.clone())) {
            self.len -= map.len();
            self.stats.invalidations += 1;
        }
    }

    /// Drops everything (membership changed the set of reachable bootstraps, say).
    pub fn clear(&mut self) {
        self.realms.clear();
        self.len = 0;
    }

    fn evict(&mut self, now_ms: u64) {
        for map in self.realms.values_mut() {
            map.retain(|_, c| c.expires_at_ms > now_ms);
        }
        self.realms.retain(|_, m| !m.is_empty());
        self.len = self.realms.values().map(HashMap::len).sum();
        if self.len >= self.max_entries {
            // Everything is fresh: start over rather than track recency per entry.
            self.clear();
        }
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hits, misses, invalidations.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_are_invalidated_per_realm_and_lookup() {
        let mut cache = DiscoveryCache::new(16, 1_000);
        let acme = Realm::from_static("acme");
        let other = Realm::from_static("other");
        let topic = Bytes::from_static(b"a.b");
        cache.put(Lookup::Subscribers, &acme, topic.clone(), &[[1; 32]], 0);
        cache.put(Lookup::Providers, &acme, topic.clone(), &[[2; 32]], 0);
        cache.put(Lookup::Subscribers, &other, topic.clone(), &[[3; 32]], 0);
        assert_eq!(cache.get(Lookup::Subscribers, &acme, b"a.b", 500), Some(&[[1; 32]][..]));
        assert!(cache.get(Lookup::Subscribers, &acme, b"a.b", 1_000).is_none());
        cache.invalidate(Lookup::Subscribers, &other);
        assert!(cache.get(Lookup::Subscribers, &other, b"a.b", 10).is_none());
        assert_eq!(cache.get(Lookup::Providers, &acme, b"a.b", 10), Some(&[[2; 32]][..]));
        assert_eq!(cache.len(), 2);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.invalidations), (2, 2, 1));
    }

    #[test]
    fn size_is_bounded() {
        let mut cache = DiscoveryCache::new(4, 1_000);
        let acme = Realm::from_static("acme");
        for i in 0..10u8 {
            cache.put(Lookup::Subscribers, &acme, Bytes::from(vec![b'a' + i]), &[], 0);
            assert!(cache.len() <= 4);
        }
    }
}
