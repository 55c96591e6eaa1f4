//! Copies small values out of a connection's receive buffer before the node keeps them.
//!
//! A decoded frame's fields are slices of the receive buffer they arrived in (16 KiB or more),
//! and a slice keeps that whole buffer alive. Most frames are done with within the turn or the
//! next cross-shard hop (what goes out to a peer is encoded into a buffer of its own), but a
//! call's procedure and arguments stay in its call state until the answer, for an idempotent
//! retry or a forward. Kept as slices, every 64-byte call pinned a 16 KiB buffer (256 times
//! its size): at 90,000 calls/s a short stall left thousands of calls in flight, the node
//! faulted in (and the kernel zeroed) fresh memory for each new buffer, which slowed it
//! further: 94 % of a stalled node's time went to `clear_page_erms` under `read_streams`
//! (docs/BENCHMARKS.md, "RPC"). Copying up to `COPY_AT_MOST` bytes costs tens of nanoseconds;
//! larger values stay zero-copy slices, where the buffer is mostly them.

use bytes::Bytes;

/// Largest value copied rather than sliced: at most a quarter of the default read buffer, so a
/// kept slice never pins more than four times its own size.
pub(super) const COPY_AT_MOST: usize = 4 * 1024;

/// `b` in an allocation of its own when it is small, else `b` itself.
pub(super) fn detach_small(b: Bytes) -> Bytes {
    if b.len() <= COPY_AT_MOST {
        Bytes::copy_from_slice(&b)
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_no_longer_share_the_buffer_and_large_ones_still_do() {
        let buffer = Bytes::from(vec![7u8; 16 * 1024]);
        let small = detach_small(buffer.slice(100..164));
        assert_eq!(&small[..], &[7u8; 64][..]);
        assert_ne!(small.as_ptr(), buffer[100..].as_ptr(), "copied");
        let large = detach_small(buffer.slice(0..COPY_AT_MOST + 1));
        assert_eq!(large.as_ptr(), buffer.as_ptr(), "still a slice");
        assert!(detach_small(buffer.slice(5..5)).is_empty());
    }
}
