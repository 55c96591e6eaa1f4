//! The links between shards: `fovea_fanout::mesh` carrying the engine's `ShardMsg`.

use crate::shard::ShardMsg;

/// All inboxes of a node, indexed by shard.
pub type Mesh = fovea_fanout::Mesh<ShardMsg>;
/// One shard's inbox.
pub type Inbox = fovea_fanout::Inbox<ShardMsg>;
