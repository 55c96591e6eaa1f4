//! Node ids, DHT keys and the XOR metric.
//!
//! Ids are 256 bits, compared as big-endian unsigned integers (byte 0 is the most significant),
//! the order docs/PROTOCOL.md §3.3 gives `id32`. Keys live in the same space: a record is held by
//! the nodes whose ids are closest to its key. Unlike Macula, nothing here hashes an id on the
//! way in (its `normalize/1` silently re-hashed ids of the wrong length, so two parts of one
//! node computed distances in different spaces): an id is exactly 32 bytes or it does not parse.

use std::fmt;

use fovea_codec::Id32;

/// Bits in an id, and so the number of k-buckets.
pub const ID_BITS: usize = 256;

/// A 256-bit node id or DHT key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub Id32);

/// The XOR distance between two ids, ordered like the integer it encodes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance(pub Id32);

impl NodeId {
    /// The id with every bit zero.
    pub const ZERO: NodeId = NodeId([0; 32]);

    /// The XOR distance to `other`.
    #[inline]
    pub fn distance(&self, other: &NodeId) -> Distance {
        let mut d = [0u8; 32];
        for (i, byte) in d.iter_mut().enumerate() {
            *byte = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// Index of the k-bucket `other` belongs to in a table owned by `self`: the position of the
    /// highest set bit of the distance (255 = the far half of the space, 0 = the one id that
    /// differs only in the last bit). `None` for `self` itself, which no table holds.
    #[inline]
    pub fn bucket_index(&self, other: &NodeId) -> Option<usize> {
        self.distance(other).bit_len().checked_sub(1)
    }

    /// An id whose bucket index seen from `self` is `bucket`, the other low bits taken from
    /// `random` (used to refresh a bucket with a lookup of a random id inside it).
    pub fn random_in_bucket(&self, bucket: usize, random: &Id32) -> NodeId {
        debug_assert!(bucket < ID_BITS);
        let mut d = *random;
        // Clear every bit above `bucket`, set bit `bucket`: the distance's highest bit is it.
        for bit in bucket + 1..ID_BITS {
            d[31 - bit / 8] &= !(1 << (bit % 8));
        }
        d[31 - bucket / 8] |= 1 << (bucket % 8);
        let mut id = self.0;
        for (i, byte) in id.iter_mut().enumerate() {
            *byte ^= d[i];
        }
        NodeId(id)
    }
}

impl Distance {
    /// Number of significant bits: 0 for the zero distance, 256 when the top bit is set.
    #[inline]
    pub fn bit_len(&self) -> usize {
        for (i, byte) in self.0.iter().enumerate() {
            if *byte != 0 {
                return ID_BITS - i * 8 - byte.leading_zeros() as usize;
            }
        }
        0
    }
}

impl From<Id32> for NodeId {
    fn from(id: Id32) -> Self {
        NodeId(id)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// The first 8 bytes in hex: enough to tell ids apart in logs and test failures.
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

/// A small seeded generator (SplitMix64) for the few random choices the state machine makes
/// (refresh targets): seeded by the caller, so a node is deterministic given its inputs.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn id(&mut self) -> Id32 {
        let mut id = [0u8; 32];
        for chunk in id.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_be_bytes());
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_with_bit(bit: usize) -> NodeId {
        let mut id = [0u8; 32];
        id[31 - bit / 8] = 1 << (bit % 8);
        NodeId(id)
    }

    #[test]
    fn bucket_index_is_the_highest_differing_bit() {
        let zero = NodeId::ZERO;
        assert_eq!(zero.bucket_index(&zero), None);
        for bit in [0, 1, 7, 8, 100, 254, 255] {
            assert_eq!(zero.bucket_index(&id_with_bit(bit)), Some(bit), "bit {bit}");
        }
        let mut far = [0u8; 32];
        far[0] = 0x80;
        far[31] = 0x01;
        assert_eq!(zero.bucket_index(&NodeId(far)), Some(255));
    }

    #[test]
    fn distance_orders_like_the_integer() {
        let a = id_with_bit(3);
        let b = id_with_bit(200);
        let zero = NodeId::ZERO;
        assert!(zero.distance(&a) < zero.distance(&b));
        assert_eq!(a.distance(&b), b.distance(&a));
        assert_eq!(a.distance(&a).bit_len(), 0);
    }

    #[test]
    fn random_in_bucket_lands_in_that_bucket() {
        let mut rng = SplitMix::new(7);
        let local = NodeId(rng.id());
        for bucket in [0, 5, 8, 9, 63, 64, 128, 255] {
            for _ in 0..20 {
                let id = local.random_in_bucket(bucket, &rng.id());
                assert_eq!(local.bucket_index(&id), Some(bucket));
            }
        }
    }
}
