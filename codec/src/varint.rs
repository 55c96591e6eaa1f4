//! QUIC variable-length integers (RFC 9000 §16): the two high bits of the first byte give the
//! length (1, 2, 4 or 8 bytes), the rest is the value, big-endian. Encoders write the shortest
//! form; decoders accept any form.

/// Largest value a varint holds (2^62 - 1).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Bytes the shortest encoding of `v` takes.
#[inline]
pub const fn len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Decodes a varint from the front of `buf`: `Some((value, bytes used))`, `None` when `buf`
/// holds only part of it.
#[inline]
pub fn decode(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let n = 1usize << (first >> 6);
    if buf.len() < n {
        return None;
    }
    let mut v = u64::from(first & 0x3f);
    for &b in &buf[1..n] {
        v = (v << 8) | u64::from(b);
    }
    Some((v, n))
}

/// Writes the shortest encoding of `v` into `out`, which must have room (`len(v)` bytes).
/// Returns the bytes written. Values above `VARINT_MAX` are a programming error.
#[inline]
pub fn encode(v: u64, out: &mut [u8]) -> usize {
    debug_assert!(v <= VARINT_MAX, "varint out of range");
    match len(v) {
        1 => {
            out[0] = v as u8;
            1
        }
        2 => {
            out[..2].copy_from_slice(&((v as u16) | 0x4000).to_be_bytes());
            2
        }
        4 => {
            out[..4].copy_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
            4
        }
        _ => {
            out[..8].copy_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
            8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9000_examples_decode() {
        // RFC 9000 §A.1 sample encodings.
        assert_eq!(
            decode(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]),
            Some((151_288_809_941_952_652, 8))
        );
        assert_eq!(decode(&[0x9d, 0x7f, 0x3e, 0x7d]), Some((494_878_333, 4)));
        assert_eq!(decode(&[0x7b, 0xbd]), Some((15_293, 2)));
        assert_eq!(decode(&[0x25]), Some((37, 1)));
        assert_eq!(decode(&[0x40, 0x25]), Some((37, 2)), "non-minimal forms are accepted");
        assert_eq!(decode(&[0x9d, 0x7f]), None, "partial input is not an error");
    }

    #[test]
    fn encode_is_shortest_and_round_trips_at_every_boundary() {
        for v in [0, 63, 64, 16_383, 16_384, (1 << 30) - 1, 1 << 30, VARINT_MAX] {
            let mut buf = [0u8; 8];
            let n = encode(v, &mut buf);
            assert_eq!(n, len(v));
            assert_eq!(decode(&buf[..n]), Some((v, n)));
        }
    }
}
