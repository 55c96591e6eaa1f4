//! Fovea's data plane: thread-per-core QUIC shards, the pattern trie, fan-out, and the `fovea`
//! node binary (docs/ARCHITECTURE.md).
//!
//! Layout: the sans-I/O shard core (`shard`) holds connections, sessions and subscriptions and
//! takes time as an argument; the driver (`driver`) owns sockets, timers and threads.

pub mod auth;
pub mod cid;
pub mod config;
pub mod control;
pub mod driver;
pub mod http;
pub mod identity;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod quic;
pub mod shard;
pub mod steer;
pub mod tls;
pub mod token;
pub mod udp;
