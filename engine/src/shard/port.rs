//! Messages between shards: the only way one shard affects another.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use fovea_codec::{Name, Pattern, Realm, Topic};

use super::rpc::CallOutcome;
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
    /// A provider registered on the sending shard; acknowledge with `ack`.
    ProviderAdd {
        /// Realm.
        realm: Realm,
        /// Procedure.
        procedure: Name,
        /// The provider's shard.
        shard: usize,
        /// The provider's peer id.
        peer: [u8; 32],
        /// Token to acknowledge.
        ack: u64,
    },
    /// A provider withdrew (UNREGISTER or disconnect).
    ProviderRemove {
        /// Realm.
        realm: Realm,
        /// Procedure.
        procedure: Name,
        /// The provider's shard.
        shard: usize,
        /// The provider's peer id.
        peer: [u8; 32],
        /// Token to acknowledge (UNREGISTER's OK waits for every shard; a disconnect does not).
        ack: Option<u64>,
    },
    /// Invoke a provider owned by the receiving shard.
    Invoke {
        /// The caller's shard (where the answer goes).
        caller_shard: usize,
        /// The caller's peer id.
        caller: [u8; 32],
        /// The caller's call id.
        call_id: u64,
        /// The provider's peer id.
        provider: [u8; 32],
        /// Time left, ms.
        timeout_ms: u64,
        /// Procedure.
        procedure: Name,
        /// Arguments (shared, not copied).
        payload: Bytes,
        /// Set for a call forwarded by another node: the answer goes back on this link (through
        /// the control thread) and `call_id` is that node's forward id.
        link: Option<[u8; 32]>,
    },
    /// The outcome of a call, for the caller's shard.
    CallResult {
        /// The caller's peer id.
        caller: [u8; 32],
        /// The caller's call id.
        call_id: u64,
        /// Reply, error, or provider gone.
        outcome: CallOutcome,
    },
    /// A direct message for a peer the receiving shard owns.
    Direct {
        /// Sender.
        source: [u8; 32],
        /// The sender's realm: the target must be in it.
        realm: Realm,
        /// Recipient.
        target: [u8; 32],
        /// Payload.
        payload: Bytes,
        /// The sender's request id (0: no OK wanted).
        request_id: u64,
    },
    /// Introduce `source` to `target` (owned by the receiving shard) if it is in `realm`.
    Punch {
        /// Requesting peer.
        source: [u8; 32],
        /// Its address as the node sees it.
        source_addr: SocketAddr,
        /// Its realm.
        realm: Realm,
        /// Peer to introduce it to.
        target: [u8; 32],
        /// The requester's request id.
        request_id: u64,
        /// Common start time, Unix ms.
        start_at_ms: u64,
    },
    /// The target's side of an introduction, for the requester's shard.
    PunchResult {
        /// Requesting peer.
        source: [u8; 32],
        /// Target peer.
        target: [u8; 32],
        /// The requester's request id.
        request_id: u64,
        /// The target's address, when it was connected in the realm and told.
        found: Option<SocketAddr>,
        /// Common start time, Unix ms.
        start_at_ms: u64,
    },
    /// From the control thread: some remote bootstrap now has subscribers for `pattern`
    /// (`remote`), or none has any more. Kept as bit 63 of the interest mask.
    RemoteInterest {
        /// Realm.
        realm: Realm,
        /// Pattern.
        pattern: Pattern,
        /// True: remote interest exists.
        remote: bool,
    },
    /// From the control thread: some remote bootstrap now provides `procedure`, or none does.
    RemoteProvider {
        /// Realm.
        realm: Realm,
        /// Procedure.
        procedure: Name,
        /// True: a remote provider exists.
        remote: bool,
    },
    /// From the control thread: a publish forwarded by another node. Fanned out to this node's
    /// subscribers (every interested shard) like a local publish, never forwarded again.
    FederatedPublish {
        /// Realm.
        realm: Realm,
        /// Topic.
        topic: Topic,
        /// Payload.
        payload: Bytes,
        /// When the control thread received it (latency histogram).
        published_at: Instant,
    },
    /// From the control thread: a call forwarded by node `from` for a local provider.
    FederatedInvoke {
        /// The link it came from.
        from: [u8; 32],
        /// That node's id for the call.
        forward_id: u64,
        /// The original caller.
        caller: [u8; 32],
        /// Realm.
        realm: Realm,
        /// Procedure.
        procedure: Name,
        /// Time left, ms.
        timeout_ms: u64,
        /// Arguments.
        payload: Bytes,
    },
    /// From the control thread: encoded frames for the federation link of node `to`.
    LinkSend {
        /// The dialing node whose link this shard serves.
        to: [u8; 32],
        /// One or more whole frames.
        frames: Bytes,
    },
    /// From the control thread: the answer (NODES, VALUE, OK or ERROR) to a DHT request of
    /// `peer`, to write on its session stream.
    DhtAnswer {
        /// The requesting peer.
        peer: [u8; 32],
        /// The answer.
        frame: fovea_codec::Frame,
    },
    /// Whether a direct message reached its target, for the sender's shard.
    DirectResult {
        /// Sender.
        source: [u8; 32],
        /// The sender's request id.
        request_id: u64,
        /// True when the target was connected.
        delivered: bool,
    },
}
