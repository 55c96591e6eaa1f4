//! Fuzz target: arbitrary bytes through `decode_frame`, the node's only way in for peer input.
//!
//! Claims checked on every input:
//! 1. Decoding never panics, whatever the bytes and whatever the limits.
//! 2. Every decoded frame re-encodes to bytes that decode to an equal frame, and re-encoding
//!    that frame gives the same bytes again (the encoding is a fixed point).
//! 3. The decoder is incremental: feeding the same bytes in two pieces yields the same frames
//!    and the same final outcome as feeding them at once.
//! 4. `decode_frame_bytes` agrees with `decode_frame`.
//!
//! The first input byte picks the limits (the defaults, or tiny ones that put every length
//! and count check within reach of short inputs) and the split point of claim 3.

#![no_main]

use bytes::{Bytes, BytesMut};
use fovea_codec::{decode_frame, decode_frame_bytes, DecodeError, Frame, Limits};
use libfuzzer_sys::fuzz_target;

fn tiny_limits() -> Limits {
    Limits {
        max_frame_len: 96,
        max_payload: 16,
        max_topic_len: 24,
        max_topic_depth: 4,
        max_list_len: 2,
        max_sync_entries: 2,
        max_sub_ids: 3,
        max_string: 8,
        max_credential: 8,
    }
}

/// Everything `decode_frame` yields from `buf`, and how it stopped (`None` = needs more bytes).
fn decode_all(buf: &mut BytesMut, limits: &Limits, out: &mut Vec<Frame>) -> Option<DecodeError> {
    loop {
        match decode_frame(buf, limits) {
            Ok(Some(frame)) => out.push(frame),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

fn check_reencode(frame: &Frame, limits: &Limits) {
    let bytes = frame.to_bytes();
    assert_eq!(bytes.len(), frame.encoded_len(), "encoded_len disagrees with encode");
    let mut buf = BytesMut::from(&bytes[..]);
    let again = decode_frame(&mut buf, limits)
        .unwrap_or_else(|e| panic!("re-encoded {frame:?} fails to decode: {e}"))
        .unwrap_or_else(|| panic!("re-encoded {frame:?} is incomplete"));
    assert!(buf.is_empty(), "re-encoded frame has bytes left over");
    assert_eq!(&again, frame, "re-encoded frame decodes to another frame");
    assert_eq!(again.to_bytes(), bytes, "encoding is not a fixed point");
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else { return };
    let limits = if control & 1 == 0 { Limits::default() } else { tiny_limits() };

    // Claims 1 and 2.
    let mut whole = BytesMut::from(input);
    let mut frames = Vec::new();
    let end = decode_all(&mut whole, &limits, &mut frames);
    for frame in &frames {
        check_reencode(frame, &limits);
    }
    if let Some(e) = end {
        let _ = e.error_code();
    }

    // Claim 3: the same bytes in two pieces.
    let split = (control as usize >> 1) * input.len() / 127;
    let mut pieces = BytesMut::from(&input[..split.min(input.len())]);
    let mut frames_pieces = Vec::new();
    let first_end = decode_all(&mut pieces, &limits, &mut frames_pieces);
    let end_pieces = match first_end {
        Some(e) => Some(e),
        None => {
            pieces.extend_from_slice(&input[split.min(input.len())..]);
            decode_all(&mut pieces, &limits, &mut frames_pieces)
        }
    };
    assert_eq!(frames_pieces, frames, "split feeding changed the frames");
    assert_eq!(end_pieces, end, "split feeding changed the outcome");

    // Claim 4: the non-consuming decoder sees the first frame the same way.
    let bytes = Bytes::copy_from_slice(input);
    match decode_frame_bytes(&bytes, &limits) {
        Ok(Some((frame, used))) => {
            assert_eq!(Some(&frame), frames.first());
            assert_eq!(used, input.len() - frames_tail_len(input, &limits));
        }
        Ok(None) => assert!(frames.is_empty() && end.is_none()),
        Err(e) => assert!(frames.is_empty() && end == Some(e)),
    }
});

/// Bytes left in `input` after `decode_frame` took its first frame.
fn frames_tail_len(input: &[u8], limits: &Limits) -> usize {
    let mut buf = BytesMut::from(input);
    let _ = decode_frame(&mut buf, limits);
    buf.len()
}
