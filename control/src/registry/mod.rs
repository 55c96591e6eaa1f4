//! Where remote subscribers and providers are: the indexes the federation forwards by.
//!
//! - [`InterestIndex`]: per realm, a pattern trie of remote interests; a publish's topic yields
//!   the bootstraps with matching subscribers at a cost that does not grow with the patterns
//!   that do not match (the trie's walk).
//! - [`ProviderIndex`]: per realm and procedure name, the bootstraps with providers.
//! - [`DiscoveryCache`]: answers to both lookups, reused until the index they came from changes
//!   or a TTL passes. Macula's service discovery won 5-10x from such a cache; here a lookup is a
//!   local trie walk rather than a DHT round trip, so the cache saves the walk on hot topics.
//!
//! The federation updates these from its replica's [`LiveChange`](crate::federation::LiveChange)s
//! and nothing else writes them.

mod cache;
mod interest;
mod providers;

pub use cache::{CacheStats, DiscoveryCache, Lookup};
pub use interest::InterestIndex;
pub use providers::ProviderIndex;
