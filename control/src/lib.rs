//! The control thread of a Fovea node (not built yet).
//!
//! Will hold the sans-I/O Kademlia DHT, the service registry and the federation state machines,
//! driven by typed messages and an injected clock; the engine's shards carry their frames.
//!
//! Built so far: [`dht`], the Kademlia DHT (routing table, iterative lookups, records with TTL
//! and republish), a sans-I/O state machine driven by `now: Instant` arguments.
//!
//! [`federation`]: replicated interests and registrations between bootstraps (HLC
//! last-writer-wins, anti-entropy), forwarding of publishes and calls, SWIM membership by foca;
//! [`registry`]: the remote interest and provider indexes and the discovery cache it forwards by.

pub mod dht;
pub mod federation;
pub mod registry;
