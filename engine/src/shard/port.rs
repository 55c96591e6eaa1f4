//! Messages between shards: the only way one shard affects another.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use fovea_codec::{Pattern, Realm, Topic};

use super::Conn;

/// A message from one shard to another, carried in batches by `mesh::Inbox`.
pub enum ShardMsg {
    /// A datagram that arrived on the wrong shard.
    Datagram {
        /// The UDP payload.
        data: Vec<u8>,
        /// Its source.
        from: SocketAddr,
    },
    /// A connection whose peer id this shard owns, after HELLO.
    Adopt(Box<Conn>),
    /// A publish with subscribers on the receiving shard: match locally and fan out. `tail` is
    /// the DELIVER tail encoded once by the publisher's shard and shared by refcount.
    Deliver {
        /// Realm of the publish.
        realm: Realm,
        /// Topic, for matching on the receiving shard.
        topic: Topic,
        /// Encoded DELIVER tail (flags, message id, topic, payload).
        tail: Bytes,
        /// When the publishing shard decoded the PUBLISH (latency histogram).
        published_at: Instant,
    },
    /// The sending shard has its first subscriber for `pattern`; acknowledge with `ack`.
    InterestAdd {
        /// Realm of the pattern.
        realm: Realm,
        /// The pattern.
        pattern: Pattern,
        /// Sending shard.
        from: usize,
        /// Token to acknowledge.
        ack: u64,
    },
    /// The sending shard has no subscriber left for `pattern`.
    InterestRemove {
        /// Realm of the pattern.
        realm: Realm,
        /// The pattern.
        pattern: Pattern,
        /// Sending shard.
        from: usize,
    },
    /// A receiving shard has applied `InterestAdd` with this token.
    InterestAck {
        /// The token.
        ack: u64,
    },
}
