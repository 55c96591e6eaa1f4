//! Every message of wire protocol v1 (docs/PROTOCOL.md §6-7), with one body layout each.
//!
//! Each message struct has a `write` that emits its body into a [`Sink`] and a `read` that
//! parses it from a [`Reader`]. The same `write` computes the length (counting sink) and the
//! bytes (buffer sink), so the length prefix and the body can never disagree.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::error::{DecodeError, Field};
use crate::limits::Limits;
use crate::topic::{Name, Pattern, Realm, Topic, TopicError};
use crate::varint;

/// A peer id, node id or DHT key: 32 opaque bytes.
pub type Id32 = [u8; 32];

/// Frame type codes.
pub mod types {
    #![allow(missing_docs)]
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const CHALLENGE: u8 = 0x03;
    pub const AUTH: u8 = 0x04;
    pub const GOODBYE: u8 = 0x05;
    pub const PING: u8 = 0x06;
    pub const PONG: u8 = 0x07;
    pub const OK: u8 = 0x08;
    pub const ERROR: u8 = 0x09;
    pub const SUBSCRIBE: u8 = 0x10;
    pub const UNSUBSCRIBE: u8 = 0x11;
    pub const PUBLISH: u8 = 0x12;
    pub const DELIVER: u8 = 0x13;
    pub const REGISTER: u8 = 0x20;
    pub const UNREGISTER: u8 = 0x21;
    pub const CALL: u8 = 0x22;
    pub const INVOKE: u8 = 0x23;
    pub const REPLY: u8 = 0x24;
    pub const CALL_ERROR: u8 = 0x25;
    pub const SEND: u8 = 0x26;
    pub const MESSAGE: u8 = 0x27;
    pub const OBSERVED_ADDR: u8 = 0x28;
    pub const PUNCH_REQUEST: u8 = 0x29;
    pub const PUNCH: u8 = 0x2a;
    pub const FIND_NODE: u8 = 0x30;
    pub const FIND_VALUE: u8 = 0x31;
    pub const NODES: u8 = 0x32;
    pub const VALUE: u8 = 0x33;
    pub const STORE: u8 = 0x34;
    pub const ANNOUNCE: u8 = 0x40;
    pub const SYNC_DIGEST: u8 = 0x41;
    pub const SYNC_DELTA: u8 = 0x42;
    pub const FORWARD_PUBLISH: u8 = 0x43;
    pub const FORWARD_CALL: u8 = 0x44;
    pub const FORWARD_REPLY: u8 = 0x45;
    /// Types at or above this are extensions: skipped by receivers that do not know them.
    pub const EXTENSION_MIN: u8 = 0x80;
    /// Extension 0x80 SWIM: a SWIM (foca) message on a federation link (PROTOCOL.md §7.5.7).
    /// It decodes as [`Frame::Extension`](super::Frame::Extension) like every type ≥ 0x80;
    /// [`Swim`](super::Swim) reads and writes its body.
    pub const SWIM: u8 = 0x80;

    /// True for every type this version defines.
    #[inline]
    pub const fn is_known(t: u8) -> bool {
        matches!(t, 0x01..=0x09 | 0x10..=0x13 | 0x20..=0x2a | 0x30..=0x34 | 0x40..=0x45)
    }

    /// Types a receiver accepts: the defined ones and every extension type. A table, so the
    /// check on every frame header is one load instead of a chain of range compares.
    pub(crate) static ACCEPTED: [bool; 256] = {
        let mut table = [false; 256];
        let mut t = 0;
        while t < 256 {
            table[t] = t as u8 >= EXTENSION_MIN || is_known(t as u8);
            t += 1;
        }
        table
    };
}

/// Where encoded bytes go: a buffer, or a counter that only measures.
pub trait Sink {
    /// Appends bytes.
    fn w_raw(&mut self, bytes: &[u8]);
    /// Appends one byte.
    fn w_u8(&mut self, b: u8) {
        self.w_raw(&[b]);
    }
    /// Appends a varint.
    fn w_varint(&mut self, v: u64) {
        let mut buf = [0u8; 8];
        let n = varint::encode(v, &mut buf);
        self.w_raw(&buf[..n]);
    }
    /// Appends a fixed-width big-endian u64.
    fn w_u64(&mut self, v: u64) {
        self.w_raw(&v.to_be_bytes());
    }
    /// Appends a length-prefixed byte string.
    fn w_bin(&mut self, b: &[u8]) {
        self.w_varint(b.len() as u64);
        self.w_raw(b);
    }
    /// Appends an address: family, address bytes, port.
    fn w_addr(&mut self, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.w_u8(4);
                self.w_raw(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.w_u8(6);
                self.w_raw(&ip.octets());
            }
        }
        self.w_raw(&a.port().to_be_bytes());
    }
}

/// Counts bytes without writing them.
#[derive(Default)]
pub struct CountSink(pub usize);

impl Sink for CountSink {
    #[inline]
    fn w_raw(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    #[inline]
    fn w_varint(&mut self, v: u64) {
        self.0 += varint::len(v);
    }
}

impl Sink for BytesMut {
    #[inline]
    fn w_raw(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
}

/// Reads a frame body; every slice it returns shares the body's buffer.
pub struct Reader<'a> {
    body: Bytes,
    pos: usize,
    limits: &'a Limits,
}

impl<'a> Reader<'a> {
    /// A reader over one frame body.
    #[inline]
    pub fn new(body: Bytes, limits: &'a Limits) -> Reader<'a> {
        Reader { body, pos: 0, limits }
    }

    #[inline]
    fn rest(&self) -> &[u8] {
        &self.body[self.pos..]
    }

    /// One byte.
    #[inline(always)]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.rest().first().ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// A fixed-width big-endian u64.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes: [u8; 8] =
            self.rest().get(..8).ok_or(DecodeError::Truncated)?.try_into().expect("8 bytes");
        self.pos += 8;
        Ok(u64::from_be_bytes(bytes))
    }

    /// A varint.
    #[inline(always)]
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let (v, n) = varint::decode(self.rest()).ok_or(DecodeError::Truncated)?;
        self.pos += n;
        Ok(v)
    }

    /// 32 raw bytes.
    #[inline]
    pub fn id32(&mut self) -> Result<Id32, DecodeError> {
        let id: Id32 =
            self.rest().get(..32).ok_or(DecodeError::Truncated)?.try_into().expect("32 bytes");
        self.pos += 32;
        Ok(id)
    }

    /// Reads the length of a `bin` and checks it against `max` and the bytes left.
    #[inline(always)]
    fn bin_len(&mut self, field: Field, max: usize) -> Result<usize, DecodeError> {
        let len = self.varint()?;
        if len > max as u64 {
            return Err(DecodeError::LengthOverLimit { field, len, max: max as u64 });
        }
        let len = len as usize;
        if self.rest().len() < len {
            return Err(DecodeError::Truncated);
        }
        Ok(len)
    }

    /// A length-prefixed byte string of at most `max` bytes, as a slice of the body.
    #[inline(always)]
    pub fn bin(&mut self, field: Field, max: usize) -> Result<Bytes, DecodeError> {
        let len = self.bin_len(field, max)?;
        let out = self.body.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// Like [`bin`](Self::bin), for the last field of a message: the body itself is narrowed to
    /// the field instead of sliced, which saves a reference-count increment and decrement per
    /// frame (payloads are last in every hot message). Nothing can be read after it.
    #[inline(always)]
    pub fn last_bin(&mut self, field: Field, max: usize) -> Result<Bytes, DecodeError> {
        let len = self.bin_len(field, max)?;
        let mut out = std::mem::take(&mut self.body);
        out.truncate(self.pos + len);
        bytes::Buf::advance(&mut out, self.pos);
        self.pos = 0;
        Ok(out)
    }

    /// A length-prefixed UTF-8 string.
    pub fn text(&mut self, field: Field, max: usize) -> Result<Bytes, DecodeError> {
        let b = self.bin(field, max)?;
        std::str::from_utf8(&b).map_err(|_| DecodeError::InvalidUtf8(field))?;
        Ok(b)
    }

    /// A topic, checked against the syntax and the node's limits.
    #[inline(always)]
    pub fn topic(&mut self) -> Result<Topic, DecodeError> {
        let b = self.bin(Field::Topic, self.limits.max_topic_len)?;
        let (t, depth) =
            Topic::with_depth(b).map_err(|e| DecodeError::InvalidTopic(Field::Topic, e))?;
        if depth > self.limits.max_topic_depth {
            return Err(DecodeError::InvalidTopic(Field::Topic, TopicError::TooDeep));
        }
        Ok(t)
    }

    /// A subscription pattern, checked against the syntax and the node's limits.
    pub fn pattern(&mut self) -> Result<Pattern, DecodeError> {
        let b = self.bin(Field::Pattern, self.limits.max_topic_len)?;
        let (p, depth) =
            Pattern::with_depth(b).map_err(|e| DecodeError::InvalidTopic(Field::Pattern, e))?;
        if depth > self.limits.max_topic_depth {
            return Err(DecodeError::InvalidTopic(Field::Pattern, TopicError::TooDeep));
        }
        Ok(p)
    }

    /// A procedure name.
    pub fn name(&mut self) -> Result<Name, DecodeError> {
        let b = self.bin(Field::Name, self.limits.max_topic_len)?;
        Name::new(b).map_err(|e| DecodeError::InvalidTopic(Field::Name, e))
    }

    /// A realm.
    pub fn realm(&mut self) -> Result<Realm, DecodeError> {
        let b = self.bin(Field::Realm, crate::limits::REALM_LEN_MAX)?;
        Realm::new(b).map_err(|e| DecodeError::InvalidTopic(Field::Realm, e))
    }

    /// An address.
    pub fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let family = self.u8()?;
        let ip = match family {
            4 => {
                let o: [u8; 4] = self
                    .rest()
                    .get(..4)
                    .ok_or(DecodeError::Truncated)?
                    .try_into()
                    .expect("4 bytes");
                self.pos += 4;
                IpAddr::V4(Ipv4Addr::from(o))
            }
            6 => {
                let o: [u8; 16] = self
                    .rest()
                    .get(..16)
                    .ok_or(DecodeError::Truncated)?
                    .try_into()
                    .expect("16 bytes");
                self.pos += 16;
                IpAddr::V6(Ipv6Addr::from(o))
            }
            other => return Err(DecodeError::InvalidAddrFamily(other)),
        };
        let port: [u8; 2] =
            self.rest().get(..2).ok_or(DecodeError::Truncated)?.try_into().expect("2 bytes");
        self.pos += 2;
        Ok(SocketAddr::new(ip, u16::from_be_bytes(port)))
    }

    /// A list count, checked against `max` and against the bytes left (each entry takes at least
    /// `entry_min` bytes), so a hostile count never causes a large allocation.
    pub fn count(
        &mut self,
        field: Field,
        max: usize,
        entry_min: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(DecodeError::LengthOverLimit { field, len: n, max: max as u64 });
        }
        if n.saturating_mul(entry_min as u64) > self.rest().len() as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    /// The decoder's limits.
    pub fn limits(&self) -> &Limits {
        self.limits
    }
}

macro_rules! frames {
    ($( $variant:ident($ty:ident) = $code:path; )*) => {
        /// One decoded frame.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Frame {
            $( #[doc = concat!("`", stringify!($variant), "` (see [`", stringify!($ty), "`]).")] $variant($ty), )*
            /// A type ≥ 0x80 this version does not know; receivers skip it.
            Extension {
                /// The type byte.
                frame_type: u8,
                /// The raw body.
                body: Bytes,
            },
        }

        impl Frame {
            /// The type byte.
            pub fn frame_type(&self) -> u8 {
                match self {
                    $( Frame::$variant(_) => $code, )*
                    Frame::Extension { frame_type, .. } => *frame_type,
                }
            }

            fn write_body<S: Sink>(&self, s: &mut S) {
                match self {
                    $( Frame::$variant(m) => m.write(s), )*
                    Frame::Extension { body, .. } => s.w_raw(body),
                }
            }

            /// Decodes a body of type `t` (known to be defined or an extension).
            pub(crate) fn read_body(t: u8, body: Bytes, limits: &Limits) -> Result<Frame, DecodeError> {
                if t >= types::EXTENSION_MIN {
                    return Ok(Frame::Extension { frame_type: t, body });
                }
                let mut r = Reader::new(body, limits);
                let frame = match t {
                    $( $code => Frame::$variant($ty::read(&mut r)?), )*
                    t => return Err(DecodeError::UnknownFrameType(t)),
                };
                // Bytes after the known fields are allowed (extension rule) and ignored.
                Ok(frame)
            }
        }
    };
}

frames! {
    Hello(Hello) = types::HELLO;
    Welcome(Welcome) = types::WELCOME;
    Challenge(Challenge) = types::CHALLENGE;
    Auth(Auth) = types::AUTH;
    Goodbye(Goodbye) = types::GOODBYE;
    Ping(Ping) = types::PING;
    Pong(Pong) = types::PONG;
    Ok(Ok) = types::OK;
    Error(Error) = types::ERROR;
    Subscribe(Subscribe) = types::SUBSCRIBE;
    Unsubscribe(Unsubscribe) = types::UNSUBSCRIBE;
    Publish(Publish) = types::PUBLISH;
    Deliver(Deliver) = types::DELIVER;
    Register(Register) = types::REGISTER;
    Unregister(Unregister) = types::UNREGISTER;
    Call(Call) = types::CALL;
    Invoke(Invoke) = types::INVOKE;
    Reply(Reply) = types::REPLY;
    CallError(CallError) = types::CALL_ERROR;
    Send(Send) = types::SEND;
    Message(Message) = types::MESSAGE;
    ObservedAddr(ObservedAddr) = types::OBSERVED_ADDR;
    PunchRequest(PunchRequest) = types::PUNCH_REQUEST;
    Punch(Punch) = types::PUNCH;
    FindNode(FindNode) = types::FIND_NODE;
    FindValue(FindValue) = types::FIND_VALUE;
    Nodes(Nodes) = types::NODES;
    Value(Value) = types::VALUE;
    Store(Store) = types::STORE;
    Announce(Announce) = types::ANNOUNCE;
    SyncDigest(SyncDigest) = types::SYNC_DIGEST;
    SyncDelta(SyncDelta) = types::SYNC_DELTA;
    ForwardPublish(ForwardPublish) = types::FORWARD_PUBLISH;
    ForwardCall(ForwardCall) = types::FORWARD_CALL;
    ForwardReply(ForwardReply) = types::FORWARD_REPLY;
}

impl Frame {
    /// Length of the body in bytes.
    pub fn body_len(&self) -> usize {
        let mut c = CountSink::default();
        self.write_body(&mut c);
        c.0
    }

    /// Length of the whole frame (type, length, body).
    pub fn encoded_len(&self) -> usize {
        let body = self.body_len();
        1 + varint::len(body as u64) + body
    }

    /// Appends the whole frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let body = self.body_len();
        out.reserve(1 + 8 + body);
        out.put_u8(self.frame_type());
        Sink::w_varint(out, body as u64);
        let start = out.len();
        self.write_body(out);
        debug_assert_eq!(out.len() - start, body, "body length and body disagree");
    }

    /// The whole frame as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }
}

/// Defines a message struct with its fields, and `write`/`read` from a field list.
macro_rules! message {
    ($(#[$doc:meta])* $name:ident { $( $(#[$fdoc:meta])* $field:ident : $fty:ty => $kind:tt ),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: $fty, )*
        }

        impl $name {
            /// Writes the body.
            pub fn write<S: Sink>(&self, s: &mut S) {
                $( message!(@write s, self.$field, $kind); )*
            }

            /// Reads the body.
            pub fn read(r: &mut Reader<'_>) -> Result<$name, DecodeError> {
                $( let $field = message!(@read r, $kind); )*
                Ok($name { $( $field, )* })
            }
        }
    };
    (@write $s:ident, $v:expr, varint) => { $s.w_varint($v) };
    (@write $s:ident, $v:expr, u8) => { $s.w_u8($v) };
    (@write $s:ident, $v:expr, u64) => { $s.w_u64($v) };
    (@write $s:ident, $v:expr, id32) => { $s.w_raw(&$v) };
    (@write $s:ident, $v:expr, addr) => { $s.w_addr(&$v) };
    (@write $s:ident, $v:expr, topic) => { $s.w_bin($v.as_bytes()) };
    (@write $s:ident, $v:expr, (bin $f:ident $m:ident)) => { $s.w_bin(&$v) };
    (@write $s:ident, $v:expr, (text $f:ident $m:ident)) => { $s.w_bin(&$v) };
    (@write $s:ident, $v:expr, (last_bin $f:ident $m:ident)) => { $s.w_bin(&$v) };
    (@read $r:ident, varint) => { $r.varint()? };
    (@read $r:ident, u8) => { $r.u8()? };
    (@read $r:ident, u64) => { $r.u64()? };
    (@read $r:ident, id32) => { $r.id32()? };
    (@read $r:ident, addr) => { $r.addr()? };
    (@read $r:ident, (bin $f:ident $m:ident)) => { { let m = $r.limits().$m; $r.bin(Field::$f, m)? } };
    (@read $r:ident, (text $f:ident $m:ident)) => { { let m = $r.limits().$m; $r.text(Field::$f, m)? } };
    (@read $r:ident, (last_bin $f:ident $m:ident)) => { { let m = $r.limits().$m; $r.last_bin(Field::$f, m)? } };
}

// `topic`-kind fields need the specific reader, so those messages are written by hand below.

/// 64 hex digits (either case) as 32 bytes: how keys, token hashes and ids are written in
/// configuration and key files. `None` for any other length or a non-hex digit.
pub fn id32_from_hex(s: &str) -> Option<Id32> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What an AUTH signature covers before the nonce and the peer id (docs/PROTOCOL.md §6.4).
pub const AUTH_CONTEXT: &[u8] = b"fovea-auth-v1";

/// The bytes an AUTH signature covers: `"fovea-auth-v1" ‖ nonce ‖ peer_id`, concatenated
/// without length prefixes. The one definition the client signs and the node verifies.
pub fn auth_message(nonce: &[u8], peer_id: &Id32) -> Vec<u8> {
    [AUTH_CONTEXT, nonce, peer_id].concat()
}

message!(
    /// 0x04 AUTH: proof of possession of a public-key credential.
    Auth {
        /// Signature over "fovea-auth-v1" ‖ nonce ‖ peer id.
        signature: Bytes => (bin Signature max_credential),
    }
);
message!(
    /// 0x03 CHALLENGE: the nonce a public-key credential must sign.
    Challenge {
        /// Random bytes to sign.
        nonce: Bytes => (bin Nonce max_credential),
    }
);
message!(
    /// 0x05 GOODBYE: the sender is closing the session.
    Goodbye {
        /// An [`ErrorCode`](crate::ErrorCode) value.
        code: u64 => varint,
        /// Human-readable reason.
        reason: Bytes => (text Reason max_string),
    }
);
message!(
    /// 0x06 PING.
    Ping {
        /// Correlation id echoed by PONG.
        ping_id: u64 => varint,
        /// Sender's clock, µs; opaque to the receiver.
        sent_at_us: u64 => u64,
    }
);
message!(
    /// 0x07 PONG.
    Pong {
        /// The PING's id.
        ping_id: u64 => varint,
        /// The PING's `sent_at_us`, echoed.
        sent_at_us: u64 => u64,
        /// Responder's clock when it answered, µs.
        received_at_us: u64 => u64,
    }
);
message!(
    /// 0x08 OK: the request succeeded.
    Ok {
        /// The request's id.
        request_id: u64 => varint,
    }
);
message!(
    /// 0x09 ERROR: the request failed (or, with request id 0, a fire-and-forget one did).
    Error {
        /// The request's id.
        request_id: u64 => varint,
        /// An [`ErrorCode`](crate::ErrorCode) value.
        code: u64 => varint,
        /// Human-readable detail.
        message: Bytes => (text Message max_string),
    }
);
message!(
    /// 0x11 UNSUBSCRIBE.
    Unsubscribe {
        /// Request id for OK/ERROR.
        request_id: u64 => varint,
        /// The subscription to end.
        sub_id: u64 => varint,
    }
);
message!(
    /// 0x24 REPLY: the result of a call.
    Reply {
        /// Invocation id (provider→node) or call id (node→caller).
        id: u64 => varint,
        /// Result payload.
        payload: Bytes => (last_bin Payload max_payload),
    }
);
message!(
    /// 0x25 CALL_ERROR: a call failed.
    CallError {
        /// Invocation id (provider→node) or call id (node→caller).
        id: u64 => varint,
        /// An [`ErrorCode`](crate::ErrorCode) value, or an application code ≥ 0x10000.
        code: u64 => varint,
        /// Human-readable detail.
        message: Bytes => (text Message max_string),
    }
);
message!(
    /// 0x26 SEND: a one-way message to another peer through the node.
    Send {
        /// Request id for OK/ERROR (0 = none wanted).
        request_id: u64 => varint,
        /// Target peer id.
        target: Id32 => id32,
        /// Payload.
        payload: Bytes => (last_bin Payload max_payload),
    }
);
message!(
    /// 0x27 MESSAGE: a one-way message from another peer.
    Message {
        /// Source peer id.
        source: Id32 => id32,
        /// Payload.
        payload: Bytes => (last_bin Payload max_payload),
    }
);
message!(
    /// 0x28 OBSERVED_ADDR: the address the node sees the peer at.
    ObservedAddr {
        /// The peer's address as the node sees it.
        observed: SocketAddr => addr,
    }
);
message!(
    /// 0x29 PUNCH_REQUEST: ask the node to introduce this peer to `target`.
    PunchRequest {
        /// Request id for OK/ERROR.
        request_id: u64 => varint,
        /// Peer to be introduced to.
        target: Id32 => id32,
    }
);
message!(
    /// 0x2A PUNCH: an introduction; both peers get one and try a direct connection.
    Punch {
        /// The other peer.
        peer: Id32 => id32,
        /// Its observed address.
        peer_addr: SocketAddr => addr,
        /// When both should start, Unix ms.
        start_at_ms: u64 => u64,
    }
);
message!(
    /// 0x30 FIND_NODE.
    FindNode {
        /// Request id.
        request_id: u64 => varint,
        /// Target id.
        target: Id32 => id32,
    }
);
message!(
    /// 0x31 FIND_VALUE.
    FindValue {
        /// Request id.
        request_id: u64 => varint,
        /// Key.
        key: Id32 => id32,
    }
);
message!(
    /// 0x34 STORE.
    Store {
        /// Request id for OK/ERROR.
        request_id: u64 => varint,
        /// Key.
        key: Id32 => id32,
        /// Time to live, seconds.
        ttl_s: u64 => varint,
        /// Value.
        value: Bytes => (last_bin Value max_payload),
    }
);
message!(
    /// 0x40 ANNOUNCE: a bootstrap's identity and load.
    Announce {
        /// Node id.
        node_id: Id32 => id32,
        /// Where peers and nodes reach it.
        endpoint: SocketAddr => addr,
        /// Operator-chosen region label.
        region: Bytes => (text Region max_string),
        /// Connected peers.
        load: u64 => varint,
        /// Peer capacity (max_peers).
        capacity: u64 => varint,
        /// Hybrid logical clock of the announcement.
        hlc: u64 => u64,
    }
);
message!(
    /// 0x45 FORWARD_REPLY: the result of a forwarded call.
    ForwardReply {
        /// The forwarding node's id for the call.
        forward_id: u64 => varint,
        /// 0 = success, else an error code.
        code: u64 => varint,
        /// Reply payload, or a UTF-8 error message.
        payload: Bytes => (last_bin Payload max_payload),
    }
);

message!(
    /// Extension 0x80 SWIM: one SWIM membership message between federation members, opaque to
    /// the codec (foca's encoding). Carried as an extension frame, so a node that does not
    /// federate skips it (§4.4); see [`Swim::to_frame`] and [`Swim::from_frame`].
    Swim {
        /// foca's encoded message.
        datagram: Bytes => (last_bin Payload max_payload),
    }
);

impl Swim {
    /// The extension frame carrying this message.
    pub fn to_frame(&self) -> Frame {
        let mut body = BytesMut::with_capacity(self.datagram.len() + 8);
        self.write(&mut body);
        Frame::Extension { frame_type: types::SWIM, body: body.freeze() }
    }

    /// The SWIM message in `frame`: `None` when it is not a SWIM extension frame, an error
    /// when its body is malformed.
    pub fn from_frame(frame: &Frame, limits: &Limits) -> Option<Result<Swim, DecodeError>> {
        match frame {
            Frame::Extension { frame_type: types::SWIM, body } => {
                Some(Swim::read(&mut Reader::new(body.clone(), limits)))
            }
            _ => None,
        }
    }
}

/// 0x01 HELLO: the first frame of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version (1).
    pub version: u64,
    /// The peer's id.
    pub peer_id: Id32,
    /// bit 0: federation link; bit 1: DHT participant.
    pub flags: u8,
    /// The realm the session joins.
    pub realm: Realm,
    /// 0 none, 1 token, 2 ed25519 public key.
    pub cred_kind: u8,
    /// Token bytes or public key.
    pub credential: Bytes,
    /// Informational client name (UTF-8).
    pub client_name: Bytes,
}

impl Hello {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_varint(self.version);
        s.w_raw(&self.peer_id);
        s.w_u8(self.flags);
        s.w_bin(self.realm.as_bytes());
        s.w_u8(self.cred_kind);
        s.w_bin(&self.credential);
        s.w_bin(&self.client_name);
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<Hello, DecodeError> {
        let max_cred = r.limits().max_credential;
        let max_string = r.limits().max_string;
        Ok(Hello {
            version: r.varint()?,
            peer_id: r.id32()?,
            flags: r.u8()?,
            realm: r.realm()?,
            cred_kind: r.u8()?,
            credential: r.bin(Field::Credential, max_cred)?,
            client_name: r.text(Field::ClientName, max_string)?,
        })
    }
}

/// 0x02 WELCOME: the node accepted the session; its limits follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Protocol version (1).
    pub version: u64,
    /// The node's id.
    pub node_id: Id32,
    /// The address the node sees the peer at.
    pub observed: SocketAddr,
    /// (limit key, value) pairs; see docs/PROTOCOL.md §6.2. Unknown keys are ignored.
    pub limits: Vec<(u64, u64)>,
}

/// Keys of WELCOME's limits list.
pub mod limit_keys {
    #![allow(missing_docs)]
    pub const MAX_PAYLOAD: u64 = 1;
    pub const MAX_FRAME_LEN: u64 = 2;
    pub const MAX_TOPIC_LEN: u64 = 3;
    pub const MAX_TOPIC_DEPTH: u64 = 4;
    pub const MAX_SUBSCRIPTIONS: u64 = 5;
    pub const MAX_REGISTRATIONS: u64 = 6;
    pub const MAX_INFLIGHT_CALLS: u64 = 7;
    pub const IDLE_TIMEOUT_MS: u64 = 8;
    pub const KEEPALIVE_MS: u64 = 9;
    pub const PUBLISH_RATE_PER_S: u64 = 10;
    pub const PUBLISH_BURST: u64 = 11;
}

impl Welcome {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_varint(self.version);
        s.w_raw(&self.node_id);
        s.w_addr(&self.observed);
        s.w_varint(self.limits.len() as u64);
        for &(k, v) in &self.limits {
            s.w_varint(k);
            s.w_varint(v);
        }
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<Welcome, DecodeError> {
        let version = r.varint()?;
        let node_id = r.id32()?;
        let observed = r.addr()?;
        let n = r.count(Field::List, 64, 2)?;
        let mut limits = Vec::with_capacity(n);
        for _ in 0..n {
            limits.push((r.varint()?, r.varint()?));
        }
        Ok(Welcome { version, node_id, observed, limits })
    }

    /// The value of a limit key, if the node sent it.
    pub fn limit(&self, key: u64) -> Option<u64> {
        self.limits.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
    }
}

/// 0x10 SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Request id for OK/ERROR.
    pub request_id: u64,
    /// Client-chosen subscription id, unique per connection; DELIVER lists it.
    pub sub_id: u64,
    /// The pattern.
    pub pattern: Pattern,
}

impl Subscribe {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_varint(self.request_id);
        s.w_varint(self.sub_id);
        s.w_bin(self.pattern.as_bytes());
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<Subscribe, DecodeError> {
        Ok(Subscribe { request_id: r.varint()?, sub_id: r.varint()?, pattern: r.pattern()? })
    }
}

/// Flag bit: a message id follows (PUBLISH, DELIVER).
pub const FLAG_MESSAGE_ID: u8 = 0x01;

/// 0x12 PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Request id for OK/ERROR (0 = no OK wanted; errors are still reported).
    pub request_id: u64,
    /// Publisher-chosen id for duplicate suppression.
    pub message_id: Option<u64>,
    /// Topic.
    pub topic: Topic,
    /// Payload.
    pub payload: Bytes,
}

impl Publish {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_u8(if self.message_id.is_some() { FLAG_MESSAGE_ID } else { 0 });
        s.w_varint(self.request_id);
        if let Some(id) = self.message_id {
            s.w_varint(id);
        }
        s.w_bin(self.topic.as_bytes());
        s.w_bin(&self.payload);
    }

    /// Reads the body.
    #[inline(always)]
    pub fn read(r: &mut Reader<'_>) -> Result<Publish, DecodeError> {
        let flags = r.u8()?;
        let request_id = r.varint()?;
        let message_id = if flags & FLAG_MESSAGE_ID != 0 { Some(r.varint()?) } else { None };
        let topic = r.topic()?;
        let max = r.limits().max_payload;
        let payload = r.last_bin(Field::Payload, max)?;
        Ok(Publish { request_id, message_id, topic, payload })
    }
}

/// 0x13 DELIVER: one publish, to one connection, listing every matching subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// This connection's subscriptions the topic matched (at least one).
    pub sub_ids: SmallVec<[u64; 4]>,
    /// The publisher's message id, if it gave one.
    pub message_id: Option<u64>,
    /// Topic.
    pub topic: Topic,
    /// Payload.
    pub payload: Bytes,
}

impl Deliver {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_varint(self.sub_ids.len() as u64);
        for &id in &self.sub_ids {
            s.w_varint(id);
        }
        write_deliver_tail(s, self.message_id, &self.topic, &self.payload);
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<Deliver, DecodeError> {
        let max = r.limits().max_sub_ids;
        let n = r.count(Field::SubIds, max, 1)?;
        if n == 0 {
            return Err(DecodeError::InvalidValue(Field::SubIds));
        }
        let mut sub_ids = SmallVec::with_capacity(n);
        for _ in 0..n {
            sub_ids.push(r.varint()?);
        }
        let flags = r.u8()?;
        let message_id = if flags & FLAG_MESSAGE_ID != 0 { Some(r.varint()?) } else { None };
        let topic = r.topic()?;
        let max = r.limits().max_payload;
        let payload = r.last_bin(Field::Payload, max)?;
        Ok(Deliver { sub_ids, message_id, topic, payload })
    }
}

fn write_deliver_tail<S: Sink>(s: &mut S, message_id: Option<u64>, topic: &Topic, payload: &[u8]) {
    s.w_u8(if message_id.is_some() { FLAG_MESSAGE_ID } else { 0 });
    if let Some(id) = message_id {
        s.w_varint(id);
    }
    s.w_bin(topic.as_bytes());
    s.w_bin(payload);
}

/// Encodes the shared tail of a DELIVER (flags, message id, topic, payload) once per publish.
/// `encode_deliver_head` + this tail is a byte-exact DELIVER frame.
pub fn encode_deliver_tail(message_id: Option<u64>, topic: &Topic, payload: &[u8]) -> Bytes {
    let len = 1 + 9 + 2 + topic.as_bytes().len() + 8 + payload.len();
    let mut out = BytesMut::with_capacity(len);
    write_deliver_tail(&mut out, message_id, topic, payload);
    out.freeze()
}

/// The most bytes [`encode_deliver_head`] writes for `sub_ids` subscription ids: type, length
/// and count varints, and up to 8 bytes per id.
#[inline]
pub const fn deliver_head_len_max(sub_ids: usize) -> usize {
    1 + 8 + 8 + 8 * sub_ids
}

/// Writes the per-connection head of a DELIVER (type, length, subscription ids) whose tail is
/// `tail_len` bytes long.
#[inline]
pub fn encode_deliver_head(sub_ids: &[u64], tail_len: usize, out: &mut BytesMut) {
    debug_assert!(!sub_ids.is_empty());
    // The head is written once per subscriber per publish: assembling it on the stack and
    // copying it in one `extend_from_slice` costs a third of one `put_slice` per field.
    const INLINE_IDS: usize = 4;
    if sub_ids.len() > INLINE_IDS {
        return encode_deliver_head_long(sub_ids, tail_len, out);
    }
    let mut ids = [0u8; 8 * (INLINE_IDS + 1)];
    let mut n = varint::encode(sub_ids.len() as u64, &mut ids);
    for &id in sub_ids {
        n += varint::encode(id, &mut ids[n..]);
    }
    let mut buf = [0u8; deliver_head_len_max(INLINE_IDS)];
    buf[0] = types::DELIVER;
    let m = 1 + varint::encode((n + tail_len) as u64, &mut buf[1..]);
    buf[m..m + n].copy_from_slice(&ids[..n]);
    out.extend_from_slice(&buf[..m + n]);
}

#[cold]
fn encode_deliver_head_long(sub_ids: &[u64], tail_len: usize, out: &mut BytesMut) {
    let mut ids_len = varint::len(sub_ids.len() as u64);
    for &id in sub_ids {
        ids_len += varint::len(id);
    }
    let body = ids_len + tail_len;
    let mut buf = [0u8; 9];
    buf[0] = types::DELIVER;
    let n = 1 + varint::encode(body as u64, &mut buf[1..]);
    out.put_slice(&buf[..n]);
    n_varint(out, sub_ids.len() as u64);
    for &id in sub_ids {
        n_varint(out, id);
    }
}

#[inline]
fn n_varint(out: &mut BytesMut, v: u64) {
    let mut buf = [0u8; 8];
    let n = varint::encode(v, &mut buf);
    out.put_slice(&buf[..n]);
}

/// Encodes a PUBLISH frame directly (clients' hot path).
pub fn encode_publish(
    request_id: u64,
    message_id: Option<u64>,
    topic: &Topic,
    payload: &[u8],
    out: &mut BytesMut,
) {
    let mut body = 1 + varint::len(request_id);
    if let Some(id) = message_id {
        body += varint::len(id);
    }
    body += varint::len(topic.as_bytes().len() as u64) + topic.as_bytes().len();
    body += varint::len(payload.len() as u64) + payload.len();
    out.reserve(1 + 8 + body);
    out.put_u8(types::PUBLISH);
    n_varint(out, body as u64);
    out.put_u8(if message_id.is_some() { FLAG_MESSAGE_ID } else { 0 });
    n_varint(out, request_id);
    if let Some(id) = message_id {
        n_varint(out, id);
    }
    n_varint(out, topic.as_bytes().len() as u64);
    out.put_slice(topic.as_bytes());
    n_varint(out, payload.len() as u64);
    out.put_slice(payload);
}

macro_rules! name_request {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// Request id for OK/ERROR.
            pub request_id: u64,
            /// The procedure.
            pub procedure: Name,
        }

        impl $name {
            /// Writes the body.
            pub fn write<S: Sink>(&self, s: &mut S) {
                s.w_varint(self.request_id);
                s.w_bin(self.procedure.as_bytes());
            }

            /// Reads the body.
            pub fn read(r: &mut Reader<'_>) -> Result<$name, DecodeError> {
                Ok($name { request_id: r.varint()?, procedure: r.name()? })
            }
        }
    };
}

name_request!(
    /// 0x20 REGISTER: this peer provides a procedure.
    Register
);
name_request!(
    /// 0x21 UNREGISTER.
    Unregister
);

/// Flag bit of CALL and FORWARD_CALL: the call may be retried on another provider.
pub const FLAG_IDEMPOTENT: u8 = 0x01;

/// 0x22 CALL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// May be retried on another provider if the first disconnects.
    pub idempotent: bool,
    /// Caller-chosen id, unique among the caller's calls in flight.
    pub call_id: u64,
    /// Deadline relative to receipt, ms (0 = node default).
    pub timeout_ms: u64,
    /// Procedure.
    pub procedure: Name,
    /// Arguments.
    pub payload: Bytes,
}

impl Call {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_u8(if self.idempotent { FLAG_IDEMPOTENT } else { 0 });
        s.w_varint(self.call_id);
        s.w_varint(self.timeout_ms);
        s.w_bin(self.procedure.as_bytes());
        s.w_bin(&self.payload);
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<Call, DecodeError> {
        let flags = r.u8()?;
        let call_id = r.varint()?;
        let timeout_ms = r.varint()?;
        let procedure = r.name()?;
        let max = r.limits().max_payload;
        let payload = r.last_bin(Field::Payload, max)?;
        Ok(Call {
            idempotent: flags & FLAG_IDEMPOTENT != 0,
            call_id,
            timeout_ms,
            procedure,
            payload,
        })
    }
}

/// 0x23 INVOKE: the node asks a provider to run a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoke {
    /// Node-chosen id; the provider's REPLY or CALL_ERROR carries it.
    pub invocation_id: u64,
    /// Time left, ms.
    pub timeout_ms: u64,
    /// The caller's peer id.
    pub caller: Id32,
    /// Procedure.
    pub procedure: Name,
    /// Arguments.
    pub payload: Bytes,
}

impl Invoke {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_varint(self.invocation_id);
        s.w_varint(self.timeout_ms);
        s.w_raw(&self.caller);
        s.w_bin(self.procedure.as_bytes());
        s.w_bin(&self.payload);
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<Invoke, DecodeError> {
        let invocation_id = r.varint()?;
        let timeout_ms = r.varint()?;
        let caller = r.id32()?;
        let procedure = r.name()?;
        let max = r.limits().max_payload;
        let payload = r.last_bin(Field::Payload, max)?;
        Ok(Invoke { invocation_id, timeout_ms, caller, procedure, payload })
    }
}

/// 0x32 NODES: closest known nodes to a target (≤ 20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    /// The request's id.
    pub request_id: u64,
    /// (node id, address) pairs.
    pub nodes: Vec<(Id32, SocketAddr)>,
}

impl Nodes {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_varint(self.request_id);
        s.w_varint(self.nodes.len() as u64);
        for (id, addr) in &self.nodes {
            s.w_raw(id);
            s.w_addr(addr);
        }
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<Nodes, DecodeError> {
        let request_id = r.varint()?;
        let max = r.limits().max_list_len;
        let n = r.count(Field::List, max, 32 + 7)?;
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push((r.id32()?, r.addr()?));
        }
        Ok(Nodes { request_id, nodes })
    }
}

/// One record of a VALUE reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRecord {
    /// Who stored it.
    pub publisher: Id32,
    /// Seconds left to live.
    pub ttl_s: u64,
    /// The value.
    pub value: Bytes,
}

/// 0x33 VALUE: records stored under a key (≤ 20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The request's id.
    pub request_id: u64,
    /// The records.
    pub records: Vec<ValueRecord>,
}

impl Value {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_varint(self.request_id);
        s.w_varint(self.records.len() as u64);
        for rec in &self.records {
            s.w_raw(&rec.publisher);
            s.w_varint(rec.ttl_s);
            s.w_bin(&rec.value);
        }
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
        let request_id = r.varint()?;
        let max = r.limits().max_list_len;
        let n = r.count(Field::List, max, 32 + 2)?;
        let max_value = r.limits().max_payload;
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            records.push(ValueRecord {
                publisher: r.id32()?,
                ttl_s: r.varint()?,
                value: r.bin(Field::Value, max_value)?,
            });
        }
        Ok(Value { request_id, records })
    }
}

/// One origin's summary in a SYNC_DIGEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEntry {
    /// The node whose entries these are.
    pub origin: Id32,
    /// Newest HLC among them.
    pub hlc: u64,
    /// How many.
    pub entries: u64,
    /// Order-independent hash of them.
    pub hash: u64,
}

/// 0x41 SYNC_DIGEST: anti-entropy summary, one entry per origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncDigest {
    /// Request id.
    pub request_id: u64,
    /// Per-origin summaries.
    pub origins: Vec<DigestEntry>,
}

impl SyncDigest {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_varint(self.request_id);
        s.w_varint(self.origins.len() as u64);
        for e in &self.origins {
            s.w_raw(&e.origin);
            s.w_u64(e.hlc);
            s.w_varint(e.entries);
            s.w_u64(e.hash);
        }
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<SyncDigest, DecodeError> {
        let request_id = r.varint()?;
        let max = r.limits().max_sync_entries;
        let n = r.count(Field::List, max, 32 + 8 + 1 + 8)?;
        let mut origins = Vec::with_capacity(n);
        for _ in 0..n {
            origins.push(DigestEntry {
                origin: r.id32()?,
                hlc: r.u64()?,
                entries: r.varint()?,
                hash: r.u64()?,
            });
        }
        Ok(SyncDigest { request_id, origins })
    }
}

/// One change in a SYNC_DELTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaEntry {
    /// 1 subscription interest, 2 RPC registration.
    pub kind: u8,
    /// 1 add, 2 remove.
    pub op: u8,
    /// HLC of the change (last writer wins).
    pub hlc: u64,
    /// Realm.
    pub realm: Realm,
    /// Pattern (interest) or procedure name (registration; a name is a valid pattern).
    pub name: Pattern,
}

/// 0x42 SYNC_DELTA: changes of one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncDelta {
    /// Request id.
    pub request_id: u64,
    /// The origin node.
    pub origin: Id32,
    /// The changes.
    pub entries: Vec<DeltaEntry>,
}

impl SyncDelta {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_varint(self.request_id);
        s.w_raw(&self.origin);
        s.w_varint(self.entries.len() as u64);
        for e in &self.entries {
            s.w_u8(e.kind);
            s.w_u8(e.op);
            s.w_u64(e.hlc);
            s.w_bin(e.realm.as_bytes());
            s.w_bin(e.name.as_bytes());
        }
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<SyncDelta, DecodeError> {
        let request_id = r.varint()?;
        let origin = r.id32()?;
        let max = r.limits().max_sync_entries;
        let n = r.count(Field::List, max, 1 + 1 + 8 + 2 + 2)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = r.u8()?;
            let op = r.u8()?;
            if !(1..=2).contains(&kind) || !(1..=2).contains(&op) {
                return Err(DecodeError::InvalidValue(Field::Flags));
            }
            entries.push(DeltaEntry {
                kind,
                op,
                hlc: r.u64()?,
                realm: r.realm()?,
                name: r.pattern()?,
            });
        }
        Ok(SyncDelta { request_id, origin, entries })
    }
}

/// 0x43 FORWARD_PUBLISH: a publish passed to a bootstrap with matching subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardPublish {
    /// Node where the publish entered the federation.
    pub origin: Id32,
    /// Hops taken so far.
    pub hops: u8,
    /// Reserved, 0.
    pub flags: u8,
    /// Message id (for duplicate suppression across paths).
    pub message_id: u64,
    /// Realm.
    pub realm: Realm,
    /// Topic.
    pub topic: Topic,
    /// Payload.
    pub payload: Bytes,
}

impl ForwardPublish {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_raw(&self.origin);
        s.w_u8(self.hops);
        s.w_u8(self.flags);
        s.w_varint(self.message_id);
        s.w_bin(self.realm.as_bytes());
        s.w_bin(self.topic.as_bytes());
        s.w_bin(&self.payload);
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<ForwardPublish, DecodeError> {
        let origin = r.id32()?;
        let hops = r.u8()?;
        let flags = r.u8()?;
        let message_id = r.varint()?;
        let realm = r.realm()?;
        let topic = r.topic()?;
        let max = r.limits().max_payload;
        Ok(ForwardPublish {
            origin,
            hops,
            flags,
            message_id,
            realm,
            topic,
            payload: r.last_bin(Field::Payload, max)?,
        })
    }
}

/// 0x44 FORWARD_CALL: a call passed to a bootstrap with a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardCall {
    /// Node where the call entered the federation.
    pub origin: Id32,
    /// Hops taken so far.
    pub hops: u8,
    /// bit 0: idempotent.
    pub flags: u8,
    /// The forwarding node's id for this call; FORWARD_REPLY carries it.
    pub forward_id: u64,
    /// Time left, ms.
    pub timeout_ms: u64,
    /// The caller's peer id.
    pub caller: Id32,
    /// Realm.
    pub realm: Realm,
    /// Procedure.
    pub procedure: Name,
    /// Arguments.
    pub payload: Bytes,
}

impl ForwardCall {
    /// Writes the body.
    pub fn write<S: Sink>(&self, s: &mut S) {
        s.w_raw(&self.origin);
        s.w_u8(self.hops);
        s.w_u8(self.flags);
        s.w_varint(self.forward_id);
        s.w_varint(self.timeout_ms);
        s.w_raw(&self.caller);
        s.w_bin(self.realm.as_bytes());
        s.w_bin(self.procedure.as_bytes());
        s.w_bin(&self.payload);
    }

    /// Reads the body.
    pub fn read(r: &mut Reader<'_>) -> Result<ForwardCall, DecodeError> {
        let origin = r.id32()?;
        let hops = r.u8()?;
        let flags = r.u8()?;
        let forward_id = r.varint()?;
        let timeout_ms = r.varint()?;
        let caller = r.id32()?;
        let realm = r.realm()?;
        let procedure = r.name()?;
        let max = r.limits().max_payload;
        let payload = r.last_bin(Field::Payload, max)?;
        Ok(ForwardCall {
            origin,
            hops,
            flags,
            forward_id,
            timeout_ms,
            caller,
            realm,
            procedure,
            payload,
        })
    }
}
