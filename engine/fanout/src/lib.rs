//! Fovea's fan-out core, without I/O or QUIC: what the shards run per subscriber and between
//! each other.
//!
//! - [`plan`]: one publish's DELIVERs queued on every matching local connection (the head
//!   written per connection into a shared arena, the tail shared by refcount).
//! - [`txqueue`]: a connection's queue of outgoing frame pieces waiting for QUIC flow control.
//! - [`mesh`]: the bounded lock-free inboxes between shards, fed in batches.
//!
//! It is its own crate so that the benches measure the engine's own code without building
//! quiche and BoringSSL (docs/BENCHMARKS.md).

pub mod mesh;
pub mod plan;
pub mod txqueue;

pub use mesh::{Inbox, Mesh};
pub use plan::{FanoutPlanner, PlanLimits, PlanOutcome, Recipient, Recipients, SubLeaf};
pub use txqueue::TxQueue;

use serde::{Deserialize, Serialize};

/// What the node does with a subscriber whose send budget is exhausted.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Drop the newest delivery for that subscriber and count it.
    Drop,
    /// Close the subscriber's connection with SLOW_CONSUMER.
    Disconnect,
}
