//! The measurement header every published payload starts with.
//!
//! 24 bytes, big-endian: publisher index (u64), sequence number (u64, from 0 per publisher),
//! intended send time (u64, ns since the run's epoch). The rest of the payload is zeros up to
//! `--payload`. Subscribers need nothing else to compute latency and per-publisher loss,
//! duplicates and order.

/// Bytes of the header; the smallest payload the tool sends.
pub const HEADER_LEN: usize = 24;

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the publisher in the run (0-based).
    pub publisher: u64,
    /// Sequence number within that publisher.
    pub seq: u64,
    /// When the message was scheduled to be sent, ns since the epoch.
    pub intended_ns: u64,
}

impl Stamp {
    /// Writes the header into the first 24 bytes of `payload`.
    #[inline]
    pub fn write(&self, payload: &mut [u8]) {
        payload[0..8].copy_from_slice(&self.publisher.to_be_bytes());
        payload[8..16].copy_from_slice(&self.seq.to_be_bytes());
        payload[16..24].copy_from_slice(&self.intended_ns.to_be_bytes());
    }

    /// Reads the header; `None` when the payload is too short to carry one.
    #[inline]
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let h: &[u8; HEADER_LEN] = payload.get(..HEADER_LEN)?.try_into().ok()?;
        let u = |i: usize| u64::from_be_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        Some(Stamp { publisher: u(0), seq: u(8), intended_ns: u(16) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_short() {
        let s = Stamp { publisher: 7, seq: 1 << 40, intended_ns: 123_456_789 };
        let mut p = vec![0u8; 64];
        s.write(&mut p);
        assert_eq!(Stamp::read(&p), Some(s));
        assert_eq!(Stamp::read(&p[..23]), None);
    }
}
