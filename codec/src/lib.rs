//! Fovea wire protocol v1 (docs/PROTOCOL.md): frames, message types, topic syntax.
//!
//! No I/O, no runtime and no QUIC here: the engine, the control thread, the flood tool and the
//! CLI all share this crate, and CI checks that its dependency tree stays that way.
//!
//! Use: [`decode_frame`] splits whole frames off a stream buffer (`Ok(None)` = need more
//! bytes); [`Frame::encode`] writes one. The publish/deliver hot path has direct encoders:
//! [`encode_publish`], and [`encode_deliver_tail`] (once per publish) + [`encode_deliver_head`]
//! (per connection), whose concatenation is a DELIVER frame.

#![warn(missing_docs)]

pub mod decode;
pub mod error;
pub mod frame;
pub mod limits;
pub mod topic;
pub mod varint;

pub use decode::{decode_frame, decode_frame_bytes, peek_header, Header};
pub use error::{DecodeError, ErrorCode, Field};
pub use frame::{
    auth_message, deliver_head_len_max, encode_deliver_head, encode_deliver_tail, encode_publish,
    id32_from_hex, Frame, Id32, AUTH_CONTEXT,
};
pub use limits::Limits;
pub use topic::{Name, Pattern, PatternSegment, Realm, Topic, TopicError};
