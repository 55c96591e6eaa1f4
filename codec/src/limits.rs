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

const _: () = assert!(SEGMENT_LEN_MAX <= TOPIC_LEN_MAX);
const _: () = assert!(REALM_LEN_MAX <= SEGMENT_LEN_MAX);
