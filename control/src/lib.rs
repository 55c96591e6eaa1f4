//! The control thread of a Fovea node (not built yet).
//!
//! Will hold the sans-I/O Kademlia DHT, the service registry and the federation state machines,
//! driven by typed messages and an injected clock; the engine's shards carry their frames.
