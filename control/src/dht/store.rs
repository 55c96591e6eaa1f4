//! Records this node holds for others: bounded per value, per publisher, per key and in all,
//! each with an expiry.
//!
//! A record is identified by (key, publisher): a publisher storing again under the same key
//! replaces its value and renews its TTL, which is how republishing works. The STORE frame has
//! no publisher field, so the publisher is the node that sent it; a holder therefore cannot
//! re-replicate someone else's record in its name, and only publishers republish (the Kademlia
//! paper's hourly replication by holders is left out for that reason). A STORE with TTL 0
//! withdraws the sender's record.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fovea_codec::ErrorCode;

use super::config::DhtConfig;
use super::id::NodeId;
use super::message::Record;

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The value is longer than `max_value_len`.
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The publisher holds `max_records_per_publisher` records here already.
    #[error("publisher holds too many records")]
    PublisherLimit,
    /// The key holds `max_records_per_key` records of other publishers already.
    #[error("key holds too many records")]
    KeyFull,
    /// The node holds `max_records` records already.
    #[error("record store full")]
    StoreFull,
    /// Too many lookups in progress to start the STORE's.
    #[error("too many lookups in progress")]
    Busy,
}

impl StoreError {
    /// The protocol error code an ERROR answer carries for it.
    pub fn code(self) -> ErrorCode {
        match self {
            StoreError::ValueTooLarge { .. } => ErrorCode::PayloadTooLarge,
            _ => ErrorCode::RateLimited,
        }
    }
}

#[derive(Debug, Clone)]
struct Stored {
    publisher: NodeId,
    value: Bytes,
    expires: Instant,
}

/// The records held for other nodes.
#[derive(Debug, Clone)]
pub struct RecordStore {
    config: DhtConfig,
    by_key: HashMap<NodeId, Vec<Stored>>,
    per_publisher: HashMap<NodeId, usize>,
    len: usize,
}

impl RecordStore {
    /// An empty store with the limits of `config`.
    pub fn new(config: &DhtConfig) -> RecordStore {
        RecordStore {
            config: config.clone(),
            by_key: HashMap::new(),
            per_publisher: HashMap::new(),
            len: 0,
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores (or replaces, or with a zero `ttl` withdraws) `publisher`'s record under `key`,
    /// to expire `ttl` after `now` (capped at `max_ttl`).
    pub fn put(
        &mut self,
        key: NodeId,
        publisher: NodeId,
        value: Bytes,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), StoreError> {
        if value.len() > self.config.max_value_len {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                max: self.config.max_value_len,
            });
        }
        if ttl.is_zero() {
            self.remove(&key, &publisher);
            return Ok(());
        }
        let expires = now + ttl.min(self.config.max_ttl);
        if let Some(existing) =
            self.by_key.get_mut(&key).and_then(|v| v.iter_mut().find(|r| r.publisher == publisher))
        {
            existing.value = value;
            existing.expires = expires;
            return Ok(());
        }
        if self.per_publisher.get(&publisher).copied().unwrap_or(0)
            >= self.config.max_records_per_publisher
        {
            return Err(StoreError::PublisherLimit);
        }
        if self.by_key.get(&key).map_or(0, Vec::len) >= self.config.max_records_per_key {
            return Err(StoreError::KeyFull);
        }
        if self.len >= self.config.max_records {
            return Err(StoreError::StoreFull);
        }
        self.by_key.entry(key).or_default().push(Stored { publisher, value, expires });
        *self.per_publisher.entry(publisher).or_insert(0) += 1;
        self.len += 1;
        Ok(())
    }

    fn remove(&mut self, key: &NodeId, publisher: &NodeId) {
        let Some(records) = self.by_key.get_mut(key) else { return };
        let before = records.len();
        records.retain(|r| r.publisher != *publisher);
        let removed = records.len() < before;
        if records.is_empty() {
            self.by_key.remove(key);
        }
        if removed {
            self.forget_one(publisher);
        }
    }

    fn forget_one(&mut self, publisher: &NodeId) {
        self.len -= 1;
        if let Some(n) = self.per_publisher.get_mut(publisher) {
            *n -= 1;
            if *n == 0 {
                self.per_publisher.remove(publisher);
            }
        }
    }

    /// The live records under `key`, with the whole seconds each has left (rounded up), at most
    /// `max_records_per_key` of them.
    pub fn get(&self, key: &NodeId, now: Instant) -> Vec<Record> {
        let Some(records) = self.by_key.get(key) else { return Vec::new() };
        records
            .iter()
            .filter(|r| r.expires > now)
            .take(self.config.max_records_per_key)
            .map(|r| {
                let left = r.expires - now;
                let ttl_s = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Record { publisher: r.publisher, ttl_s, value: r.value.clone() }
            })
            .collect()
    }

    /// Drops the records expired at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut gone: Vec<NodeId> = Vec::new();
        self.by_key.retain(|_, records| {
            records.retain(|r| {
                let live = r.expires > now;
                if !live {
                    gone.push(r.publisher);
                }
                live
            });
            !records.is_empty()
        });
        for publisher in &gone {
            self.forget_one(publisher);
        }
        gone.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    fn v(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn records_live_for_their_ttl() {
        let mut s = RecordStore::new(&DhtConfig::default());
        let now = Instant::now();
        s.put(id(1), id(9), v("a"), Duration::from_secs(10), now).unwrap();
        let at = |secs: f64| now + Duration::from_secs_f64(secs);
        assert_eq!(s.get(&id(1), now)[0].ttl_s, 10);
        assert_eq!(s.get(&id(1), at(0.5))[0].ttl_s, 10, "rounded up");
        assert_eq!(s.get(&id(1), at(9.5))[0].ttl_s, 1);
        assert!(s.get(&id(1), at(10.0)).is_empty(), "expired records are not served");
        assert_eq!(s.len(), 1, "until expire() runs");
        assert_eq!(s.expire(at(9.0)), 0);
        assert_eq!(s.expire(at(10.0)), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn storing_again_renews_the_record() {
        let mut s = RecordStore::new(&DhtConfig::default());
        let now = Instant::now();
        s.put(id(1), id(9), v("a"), Duration::from_secs(10), now).unwrap();
        let later = now + Duration::from_secs(8);
        s.put(id(1), id(9), v("b"), Duration::from_secs(10), later).unwrap();
        assert_eq!(s.len(), 1);
        let after = now + Duration::from_secs(15);
        assert_eq!(
            s.get(&id(1), after),
            vec![Record { publisher: id(9), ttl_s: 3, value: v("b") }]
        );
        s.put(id(1), id(9), v(""), Duration::ZERO, after).unwrap();
        assert!(s.is_empty(), "TTL 0 withdraws");
    }

    #[test]
    fn limits_hold() {
        let cfg = DhtConfig {
            max_value_len: 4,
            max_records_per_publisher: 2,
            max_records_per_key: 2,
            max_records: 3,
            max_ttl: Duration::from_secs(100),
            ..DhtConfig::default()
        };
        let mut s = RecordStore::new(&cfg);
        let now = Instant::now();
        let ttl = Duration::from_secs(1000);
        assert_eq!(
            s.put(id(1), id(9), v("12345"), ttl, now),
            Err(StoreError::ValueTooLarge { len: 5, max: 4 })
        );
        s.put(id(1), id(9), v("a"), ttl, now).unwrap();
        assert_eq!(s.get(&id(1), now)[0].ttl_s, 100, "TTL capped");
        s.put(id(2), id(9), v("a"), ttl, now).unwrap();
        assert_eq!(s.put(id(3), id(9), v("a"), ttl, now), Err(StoreError::PublisherLimit));
        s.put(id(1), id(8), v("a"), ttl, now).unwrap();
        assert_eq!(s.put(id(1), id(7), v("a"), ttl, now), Err(StoreError::KeyFull));
        assert_eq!(s.put(id(4), id(7), v("a"), ttl, now), Err(StoreError::StoreFull));
        // Replacing an existing record is always allowed.
        s.put(id(1), id(9), v("b"), ttl, now).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(StoreError::PublisherLimit.code(), ErrorCode::RateLimited);
    }
}
