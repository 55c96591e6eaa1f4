//! Incremental, zero-copy decoding of frames from a stream buffer.

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::frame::{types, Frame};
use crate::limits::Limits;
use crate::varint;

/// A frame header: type, body length, header length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Type byte.
    pub frame_type: u8,
    /// Body length in bytes.
    pub body_len: usize,
    /// Bytes the header takes (type + length varint).
    pub header_len: usize,
}

/// Reads a frame header from the front of `buf`. `Ok(None)`: not all header bytes are here yet.
/// The type and the length are checked as soon as they are known, so an oversized or unknown
/// frame is rejected before its body is buffered.
#[inline]
pub fn peek_header(buf: &[u8], limits: &Limits) -> Result<Option<Header>, DecodeError> {
    let Some(&frame_type) = buf.first() else { return Ok(None) };
    if !types::ACCEPTED[frame_type as usize] {
        return Err(DecodeError::UnknownFrameType(frame_type));
    }
    let Some((len, n)) = varint::decode(&buf[1..]) else { return Ok(None) };
    if len > limits.max_frame_len as u64 {
        return Err(DecodeError::FrameTooLarge { len, max: limits.max_frame_len as u64 });
    }
    Ok(Some(Header { frame_type, body_len: len as usize, header_len: 1 + n }))
}

/// Decodes the next frame from a stream buffer.
///
/// `Ok(None)` means "need more bytes" (a partial header or body): never an error. On success the
/// frame's bytes are split off the front of `buf`, and the frame's `Bytes` fields are slices of
/// them: no copy, and one allocation is shared by everything decoded from it.
#[inline]
pub fn decode_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, DecodeError> {
    let Some(h) = peek_header(buf, limits)? else { return Ok(None) };
    let total = h.header_len + h.body_len;
    if buf.len() < total {
        return Ok(None);
    }
    // Drop the header in place and split off only the body: one reference-count increment
    // per frame instead of two (split, then split again) and a decrement.
    bytes::Buf::advance(buf, h.header_len);
    let body = buf.split_to(h.body_len).freeze();
    Frame::read_body(h.frame_type, body, limits).map(Some)
}

/// Decodes one frame from the front of `bytes` without consuming: `Ok(Some((frame, used)))`.
pub fn decode_frame_bytes(
    bytes: &Bytes,
    limits: &Limits,
) -> Result<Option<(Frame, usize)>, DecodeError> {
    let Some(h) = peek_header(bytes, limits)? else { return Ok(None) };
    let total = h.header_len + h.body_len;
    if bytes.len() < total {
        return Ok(None);
    }
    let body = bytes.slice(h.header_len..total);
    Ok(Some((Frame::read_body(h.frame_type, body, limits)?, total)))
}
