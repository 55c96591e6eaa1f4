//! Error codes on the wire (docs/PROTOCOL.md §8) and decoding errors.

use std::fmt;

use crate::topic::TopicError;

macro_rules! error_codes {
    ($( $variant:ident = $value:literal, $name:literal, $closes:literal, $meaning:literal; )*) => {
        /// Error codes carried by ERROR, CALL_ERROR, GOODBYE and FORWARD_REPLY, and used as the
        /// QUIC application error code when the node closes a connection.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u64)]
        pub enum ErrorCode {
            $( #[doc = $meaning] $variant = $value, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The code for a number, if it is one of ours.
            pub fn from_u64(v: u64) -> Option<ErrorCode> {
                match v {
                    $( $value => Some(ErrorCode::$variant), )*
                    _ => None,
                }
            }

            /// The upper-case name used in docs/PROTOCOL.md.
            pub fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $name, )*
                }
            }

            /// True when the node closes the connection with this code; false when only the
            /// request fails and the connection stays open.
            pub fn closes_connection(self) -> bool {
                match self {
                    $( ErrorCode::$variant => $closes, )*
                }
            }

            /// One-line meaning, as in the table.
            pub fn meaning(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $meaning, )*
                }
            }
        }
    };
}

error_codes! {
    NoError = 0x00, "NO_ERROR", true, "Normal close (GOODBYE, client exit).";
    InternalError = 0x01, "INTERNAL_ERROR", true, "The node failed; the peer may reconnect.";
    ProtocolViolation = 0x02, "PROTOCOL_VIOLATION", true, "A frame not allowed in this state or from this side (second HELLO, node-only frame).";
    FrameMalformed = 0x03, "FRAME_MALFORMED", true, "A frame whose body does not parse (truncated field, bad UTF-8, bad address, invalid topic).";
    FrameTooLarge = 0x04, "FRAME_TOO_LARGE", true, "A frame length beyond the node's max_frame_len (rejected before it is buffered).";
    UnknownFrameType = 0x05, "UNKNOWN_FRAME_TYPE", true, "A frame type below 0x80 that the receiver does not know.";
    HelloRequired = 0x06, "HELLO_REQUIRED", true, "A frame before HELLO, or no HELLO within the node's hello timeout.";
    VersionUnsupported = 0x07, "VERSION_UNSUPPORTED", true, "HELLO asked for a protocol version the node does not speak.";
    AuthRequired = 0x08, "AUTH_REQUIRED", true, "The realm needs credentials and none were proven in time.";
    AuthFailed = 0x09, "AUTH_FAILED", true, "The credentials were wrong.";
    ServerFull = 0x0a, "SERVER_FULL", true, "The node has max_peers sessions.";
    Replaced = 0x0b, "REPLACED", true, "A newer connection with the same peer id took over the session.";
    SlowConsumer = 0x0c, "SLOW_CONSUMER", true, "The peer did not read its deliveries fast enough (disconnect policy).";
    ShuttingDown = 0x0d, "SHUTTING_DOWN", true, "The node is draining; reconnect to another node or later.";
    IdleTimeout = 0x0e, "IDLE_TIMEOUT", true, "Nothing was received within the idle timeout.";
    Flood = 0x0f, "FLOOD", true, "The peer kept exceeding its rate limits after being throttled.";
    InvalidTopic = 0x100, "INVALID_TOPIC", false, "The topic breaks the syntax or the node's limits.";
    InvalidPattern = 0x101, "INVALID_PATTERN", false, "The pattern breaks the syntax or the node's limits.";
    InvalidName = 0x102, "INVALID_NAME", false, "The procedure name breaks the syntax.";
    TooManySubscriptions = 0x103, "TOO_MANY_SUBSCRIPTIONS", false, "The peer has max_subscriptions_per_peer subscriptions.";
    DuplicateSubscription = 0x104, "DUPLICATE_SUBSCRIPTION", false, "The subscription id is already in use on this connection.";
    UnknownSubscription = 0x105, "UNKNOWN_SUBSCRIPTION", false, "No subscription with this id.";
    PermissionDenied = 0x106, "PERMISSION_DENIED", false, "The credential may not do this.";
    RateLimited = 0x107, "RATE_LIMITED", false, "The peer exceeded a rate limit; retry later.";
    PayloadTooLarge = 0x108, "PAYLOAD_TOO_LARGE", false, "The payload exceeds max_payload.";
    NoProvider = 0x110, "NO_PROVIDER", false, "No provider is registered for the procedure.";
    DeadlineExceeded = 0x111, "DEADLINE_EXCEEDED", false, "The call's deadline passed before a reply.";
    ProviderGone = 0x112, "PROVIDER_GONE", false, "The provider disconnected during the call.";
    DuplicateCallId = 0x113, "DUPLICATE_CALL_ID", false, "A call with this id is still in flight.";
    TooManyCalls = 0x114, "TOO_MANY_CALLS", false, "The peer has max_inflight_calls calls in flight.";
    TooManyHops = 0x115, "TOO_MANY_HOPS", false, "A forwarded call or publish exceeded the hop limit.";
    TooManyRegistrations = 0x116, "TOO_MANY_REGISTRATIONS", false, "The peer has max_registrations registrations.";
    AlreadyRegistered = 0x117, "ALREADY_REGISTERED", false, "This peer already registered the procedure.";
    UnknownRegistration = 0x118, "UNKNOWN_REGISTRATION", false, "This peer has no such registration.";
    UnknownPeer = 0x119, "UNKNOWN_PEER", false, "No peer with this id is connected.";
    UnknownCall = 0x11a, "UNKNOWN_CALL", false, "A REPLY or CALL_ERROR for an invocation the node does not know.";
    Unsupported = 0x11b, "UNSUPPORTED", false, "The node does not serve this request (feature disabled or not built).";
    NotFound = 0x11c, "NOT_FOUND", false, "The DHT holds no value for the key.";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field of a frame, named in decoding errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Field {
    Credential,
    ClientName,
    Nonce,
    Signature,
    Reason,
    Message,
    Payload,
    Value,
    Region,
    List,
    SubIds,
    Topic,
    Pattern,
    Name,
    Realm,
    Address,
    Flags,
}

/// Why bytes could not be decoded as a frame. Small and `Copy`: no strings, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A type below 0x80 that this version does not define.
    UnknownFrameType(u8),
    /// The frame's declared length exceeds `Limits::max_frame_len`.
    FrameTooLarge {
        /// Declared body length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The body ended before a field did.
    Truncated,
    /// A declared length or count exceeds its limit.
    LengthOverLimit {
        /// Which field.
        field: Field,
        /// Declared length or count.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A topic, pattern, name or realm breaks the syntax.
    InvalidTopic(Field, TopicError),
    /// A text field is not UTF-8.
    InvalidUtf8(Field),
    /// An address family other than 4 or 6.
    InvalidAddrFamily(u8),
    /// A field's value is outside its domain (e.g. a DELIVER with no subscription id).
    InvalidValue(Field),
}

impl DecodeError {
    /// The error code a node closes the connection with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownFrameType(_) => ErrorCode::UnknownFrameType,
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::FrameMalformed,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownFrameType(t) => write!(f, "unknown frame type 0x{t:02x}"),
            DecodeError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds {max}")
            }
            DecodeError::Truncated => f.write_str("frame body ends inside a field"),
            DecodeError::LengthOverLimit { field, len, max } => {
                write!(f, "{field:?} length {len} exceeds {max}")
            }
            DecodeError::InvalidTopic(field, e) => write!(f, "invalid {field:?}: {e}"),
            DecodeError::InvalidUtf8(field) => write!(f, "{field:?} is not UTF-8"),
            DecodeError::InvalidAddrFamily(v) => write!(f, "address family {v} is neither 4 nor 6"),
            DecodeError::InvalidValue(field) => write!(f, "invalid {field:?}"),
        }
    }
}

impl std::error::Error for DecodeError {}
