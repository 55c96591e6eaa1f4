//! Fovea wire protocol v1 (docs/PROTOCOL.md): frames, message types, topic syntax.
//!
//! No I/O, no runtime and no QUIC here: the engine, the control thread, the flood tool and the
//! CLI all share this crate, and CI checks that its dependency tree stays that way.

#![warn(missing_docs)]

pub mod limits;
pub mod topic;

pub use topic::{Name, Pattern, PatternSegment, Realm, Topic, TopicError};
