//! Codec fixtures: one frame of each benched kind at each payload size, its encoded bytes, and
//! the measured encode and decode calls.
//!
//! Decoding is measured on the stream API (`decode_frame` on a `BytesMut`) from a buffer that
//! has already had one frame split off. A fresh `BytesMut` pays a one-time allocation on its
//! first split (it turns shared); a connection's receive buffer pays that once, not per frame,
//! so the fixture pays it in setup.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use fovea_codec::frame::{Call, Deliver, Publish, Reply, Subscribe};
use fovea_codec::{
    decode_frame, encode_deliver_head, encode_deliver_tail, encode_publish, DecodeError, Frame,
    Limits, Name, Pattern, Topic,
};

/// Payload sizes benched, in bytes.
pub const PAYLOAD_SIZES: [usize; 4] = [16, 64, 1024, 16 * 1024];

/// Topic of every PUBLISH and DELIVER: depth 5, 35 bytes, a realistic sensor topic.
pub const TOPIC: &str = "org3.realm17.site2040.device11.temp";
/// Pattern of the SUBSCRIBE fixture.
pub const PATTERN: &str = "org3.realm17.*.device11.**";
/// Procedure of the CALL fixture.
pub const PROCEDURE: &str = "org3.billing.charge";
/// Subscription ids of the DELIVER fixture (one connection, two matching subscriptions).
pub const SUB_IDS: [u64; 2] = [7, 300];

/// Frame kinds benched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 0x12 PUBLISH.
    Publish,
    /// 0x13 DELIVER.
    Deliver,
    /// 0x10 SUBSCRIBE (no payload: one size only).
    Subscribe,
    /// 0x22 CALL.
    Call,
    /// 0x24 REPLY.
    Reply,
}

impl Kind {
    /// Lower-case name for bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Publish => "publish",
            Kind::Deliver => "deliver",
            Kind::Subscribe => "subscribe",
            Kind::Call => "call",
            Kind::Reply => "reply",
        }
    }

    /// The kinds with a payload, benched at every [`PAYLOAD_SIZES`] entry.
    pub const WITH_PAYLOAD: [Kind; 4] = [Kind::Publish, Kind::Deliver, Kind::Call, Kind::Reply];
}

/// Payload bytes of a given size (a repeating pattern, not zeros: no accidental fast paths).
pub fn payload(size: usize) -> Bytes {
    (0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>().into()
}

/// A frame, its encoding, and what the encoders and decoders are fed.
#[derive(Debug, Clone)]
pub struct FrameFixture {
    /// Kind benched.
    pub kind: Kind,
    /// The frame.
    pub frame: Frame,
    /// Its encoding.
    pub bytes: Bytes,
    /// Default decoder limits.
    pub limits: Limits,
    /// Topic of PUBLISH and DELIVER.
    pub topic: Topic,
    /// Payload (empty for SUBSCRIBE).
    pub payload: Bytes,
    /// The DELIVER tail (flags, topic, payload), encoded once per publish.
    pub deliver_tail: Bytes,
    /// An output buffer with room for the frame, so encoding measures no allocation.
    pub out: BytesMut,
}

impl FrameFixture {
    /// The fixture for `kind` with a `payload_len`-byte payload (ignored for SUBSCRIBE).
    pub fn new(kind: Kind, payload_len: usize) -> Self {
        let topic: Topic = TOPIC.parse().expect("valid topic");
        let payload = if kind == Kind::Subscribe { Bytes::new() } else { payload(payload_len) };
        let frame = match kind {
            Kind::Publish => Frame::Publish(Publish {
                request_id: 0,
                message_id: None,
                topic: topic.clone(),
                payload: payload.clone(),
            }),
            Kind::Deliver => Frame::Deliver(Deliver {
                sub_ids: SUB_IDS.iter().copied().collect(),
                message_id: None,
                topic: topic.clone(),
                payload: payload.clone(),
            }),
            Kind::Subscribe => Frame::Subscribe(Subscribe {
                request_id: 12,
                sub_id: 300,
                pattern: PATTERN.parse::<Pattern>().expect("valid pattern"),
            }),
            Kind::Call => Frame::Call(Call {
                idempotent: false,
                call_id: 4711,
                timeout_ms: 5000,
                procedure: PROCEDURE.parse::<Name>().expect("valid name"),
                payload: payload.clone(),
            }),
            Kind::Reply => Frame::Reply(Reply { id: 4711, payload: payload.clone() }),
        };
        let bytes = frame.to_bytes();
        let deliver_tail = encode_deliver_tail(None, &topic, &payload);
        let out = BytesMut::with_capacity(bytes.len() + 64);
        FrameFixture {
            kind,
            frame,
            bytes,
            limits: Limits::default(),
            topic,
            payload,
            deliver_tail,
            out,
        }
    }

    /// A receive buffer holding this frame, already past its first split (see module docs).
    pub fn stream(&self) -> BytesMut {
        let mut buf = BytesMut::with_capacity(2 * self.bytes.len());
        buf.extend_from_slice(&self.bytes);
        buf.extend_from_slice(&self.bytes);
        let first = decode_frame(&mut buf, &self.limits).expect("valid").expect("whole frame");
        assert_eq!(first, self.frame, "fixture frame round-trips");
        buf
    }

    /// A receive buffer past its first split holding the first `at` bytes of this frame.
    pub fn split_stream(&self, at: usize) -> BytesMut {
        let mut buf = self.stream();
        buf.truncate(at);
        buf
    }
}

/// Measured: decode the next frame of a receive buffer.
#[inline(never)]
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, DecodeError> {
    black_box(decode_frame(black_box(buf), limits))
}

/// Measured: the incremental decoder fed one frame in two pieces. `buf` holds the first piece;
/// the first call must answer "need more", then `rest` arrives and the frame comes out.
#[inline(never)]
pub fn decode_split(buf: &mut BytesMut, rest: &[u8], limits: &Limits) -> Option<Frame> {
    let early = decode_frame(black_box(buf), limits).expect("valid prefix");
    assert!(early.is_none(), "a partial frame decodes to need-more");
    buf.extend_from_slice(black_box(rest));
    black_box(decode_frame(buf, limits).expect("valid frame"))
}

/// Measured: encode a frame through the generic encoder into a buffer with room.
#[inline(never)]
pub fn encode_frame(frame: &Frame, out: &mut BytesMut) -> usize {
    out.clear();
    black_box(frame).encode(out);
    black_box(out.len())
}

/// Measured: the direct PUBLISH encoder (what a client's publish path calls).
#[inline(never)]
pub fn encode_publish_into(topic: &Topic, payload: &[u8], out: &mut BytesMut) -> usize {
    out.clear();
    encode_publish(0, None, black_box(topic), black_box(payload), out);
    black_box(out.len())
}

/// Measured: the per-connection part of a DELIVER (type, length, sub ids); the shared tail is
/// encoded once per publish ([`encode_deliver_tail_once`]) and appended by reference.
#[inline(never)]
pub fn encode_deliver_head_into(sub_ids: &[u64], tail_len: usize, out: &mut BytesMut) -> usize {
    out.clear();
    encode_deliver_head(black_box(sub_ids), black_box(tail_len), out);
    black_box(out.len())
}

/// Measured: the once-per-publish DELIVER tail (flags, topic, payload) into a new `Bytes`.
#[inline(never)]
pub fn encode_deliver_tail_once(topic: &Topic, payload: &[u8]) -> Bytes {
    black_box(encode_deliver_tail(None, black_box(topic), black_box(payload)))
}
