//! The Kademlia DHT, sans-I/O (docs/PROTOCOL.md §7.4): 256-bit ids, XOR distance, k-buckets
//! (k = 20) that prefer long-lived contacts, iterative lookups with α = 3 parallel queries,
//! records with TTL and republish, bucket refresh, and limits against table poisoning.
//!
//! | module | holds |
//! |---|---|
//! | [`id`] | [`NodeId`], [`Distance`], bucket indices |
//! | [`addr`] | which addresses a contact may have, the network prefixes limits count by |
//! | [`config`] | [`DhtConfig`]: every parameter and limit, with defaults |
//! | [`message`] | [`Message`], [`Contact`], [`Record`]; the mapping to codec frames |
//! | [`table`] | [`RoutingTable`]: buckets, replacement caches, probes, closest-k |
//! | [`lookup`] | [`Lookup`]: one iterative lookup's shortlist and termination |
//! | [`store`] | [`RecordStore`]: records held for others, their limits and expiry |
//! | [`node`] | [`DhtNode`]: the state machine a driver feeds (see its docs) |
//!
//! What Macula's DHT lacked and this one has (reference/macula-protocol.md §4): ping-based
//! eviction instead of silently refusing newcomers, lookups that really query other nodes (α
//! at a time, not sequentially), enforced TTLs and bounds, replies to STORE, bucket refresh,
//! and one id scheme (32 raw bytes, never re-hashed).

pub mod addr;
pub mod config;
pub mod id;
pub mod lookup;
pub mod message;
pub mod node;
pub mod store;
pub mod table;

pub use config::{DhtConfig, ALPHA, K};
pub use id::{Distance, NodeId, ID_BITS};
pub use lookup::{Lookup, LookupId, LookupKind, LookupResult};
pub use message::{Contact, Message, NotDhtFrame, Record};
pub use node::{DhtError, DhtNode, DhtStats, Event, Find, Output, Publish};
pub use store::{RecordStore, StoreError};
pub use table::{Eviction, Inserted, Rejection, RoutingTable};
