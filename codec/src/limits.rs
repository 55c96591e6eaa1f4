//! Protocol limits: syntax bounds fixed by the protocol, and decoder bounds a node may lower.
//!
//! Units and qualifiers come last in names (`TOPIC_LEN_MAX`). docs/PROTOCOL.md §9 lists them.

/// Longest topic, pattern or procedure name in bytes.
pub const TOPIC_LEN_MAX: usize = 256;
/// Most segments in a topic, pattern or name.
pub const TOPIC_DEPTH_MAX: usize = 16;
/// Longest segment in bytes.
pub const SEGMENT_LEN_MAX: usize = 64;
/// Longest realm in bytes.
pub const REALM_LEN_MAX: usize = 64;
/// Most subscription ids one DELIVER lists (and so most subscriptions a node lets a peer hold).
pub const SUB_IDS_MAX: usize = 1024;
/// Room a frame needs beyond its payload: a DELIVER listing `SUB_IDS_MAX` 8-byte ids plus the
/// longest topic and every header fits, so `max_frame_len = max_payload + FRAME_OVERHEAD_MAX`.
pub const FRAME_OVERHEAD_MAX: usize = 16 * 1024;

const _: () = assert!(SUB_IDS_MAX * 9 + TOPIC_LEN_MAX + 64 <= FRAME_OVERHEAD_MAX);

const _: () = assert!(SEGMENT_LEN_MAX <= TOPIC_LEN_MAX);
const _: () = assert!(REALM_LEN_MAX <= SEGMENT_LEN_MAX);

/// Bounds a decoder enforces before it allocates or buffers anything. A node may lower the
/// defaults (its configuration), never raise the syntax limits above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest frame body accepted; checked as soon as the header is in.
    pub max_frame_len: usize,
    /// Longest payload (PUBLISH, DELIVER, CALL, ...).
    pub max_payload: usize,
    /// Longest topic or pattern (≤ `TOPIC_LEN_MAX`).
    pub max_topic_len: usize,
    /// Deepest topic or pattern (≤ `TOPIC_DEPTH_MAX`).
    pub max_topic_depth: usize,
    /// Most entries in NODES and VALUE (Kademlia's k).
    pub max_list_len: usize,
    /// Most entries in SYNC_DIGEST and SYNC_DELTA.
    pub max_sync_entries: usize,
    /// Most subscription ids in one DELIVER.
    pub max_sub_ids: usize,
    /// Longest reason, message, client name or region.
    pub max_string: usize,
    /// Longest credential, nonce or signature.
    pub max_credential: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: (1 << 20) + FRAME_OVERHEAD_MAX,
            max_payload: 1 << 20,
            max_topic_len: TOPIC_LEN_MAX,
            max_topic_depth: TOPIC_DEPTH_MAX,
            max_list_len: 20,
            max_sync_entries: 4096,
            max_sub_ids: SUB_IDS_MAX,
            max_string: 1024,
            max_credential: 4096,
        }
    }
}
