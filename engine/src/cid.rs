//! Connection IDs that name their owning shard, and the stateless-reset tokens derived from them.
//!
//! Every connection ID the node issues is `CID_LEN` bytes: byte 0 is the owning shard's index,
//! the rest is random. The reuseport BPF program (`steer.rs`) reads that byte from a
//! short-header packet (offset 1) or a long-header packet (offset 6, after the 1-byte DCID
//! length) and picks the socket of that shard, so a connection's packets land on its owner
//! without a cross-core hop. A client's first Initial carries a DCID of its own choosing; its
//! byte 0 is random, which spreads new handshakes over the shards.

use rand::RngCore;

/// Length of every connection ID the node issues.
pub const CID_LEN: usize = 16;
/// Most shards a node can run: shard indexes must fit the steering program's modulo and the
/// 64-bit interest masks.
pub const SHARDS_MAX: usize = 64;

/// A new random connection ID owned by `shard`.
pub fn new_cid(shard: usize) -> [u8; CID_LEN] {
    debug_assert!(shard < SHARDS_MAX);
    let mut cid = [0u8; CID_LEN];
    rand::thread_rng().fill_bytes(&mut cid[1..]);
    cid[0] = shard as u8;
    cid
}

/// The shard a connection ID names, if the node issued it (`None` for foreign lengths).
pub fn shard_of(dcid: &[u8], shards: usize) -> Option<usize> {
    if dcid.len() != CID_LEN {
        return None;
    }
    let shard = dcid[0] as usize;
    (shard < shards).then_some(shard)
}

/// A connection ID as a fixed-size map key: hashing and comparing it needs no allocation, so the
/// per-packet lookup stays allocation-free (quiche's `ConnectionId` owns a `Vec`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidKey {
    len: u8,
    bytes: [u8; 20],
}

impl CidKey {
    /// The key of a connection ID (at most 20 bytes, RFC 9000 §17.2).
    pub fn new(cid: &[u8]) -> CidKey {
        let len = cid.len().min(20);
        let mut bytes = [0u8; 20];
        bytes[..len].copy_from_slice(&cid[..len]);
        CidKey { len: len as u8, bytes }
    }

    /// The connection ID bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for CidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Derives stateless-reset tokens from a secret that survives restarts, so that a restarted
/// node can still reset connections its previous incarnation issued (RFC 9000 §10.3).
#[derive(Clone)]
pub struct ResetKey {
    secret: [u8; 32],
}

impl ResetKey {
    /// Wraps a 32-byte secret.
    pub fn new(secret: &[u8; 32]) -> ResetKey {
        ResetKey { secret: *secret }
    }

    /// The reset token of a connection ID: the first 16 bytes of HMAC-SHA256(secret, cid).
    pub fn token(&self, cid: &[u8]) -> u128 {
        let mac = boring::hash::hmac_sha256(&self.secret, cid).expect("HMAC-SHA256");
        u128::from_be_bytes(mac[..16].try_into().expect("16 bytes"))
    }

    /// Builds a stateless reset for a packet addressed to `dcid` that was `received_len` bytes
    /// long. The reset is shorter than the packet that caused it (so two nodes cannot loop and
    /// the reset can never amplify) and at least 21 bytes, as RFC 9000 §10.3 requires.
    pub fn stateless_reset(
        &self,
        dcid: &[u8],
        received_len: usize,
        out: &mut [u8],
    ) -> Option<usize> {
        const RESET_LEN_MIN: usize = 21;
        let len = received_len.checked_sub(1)?.min(out.len()).min(43);
        if len < RESET_LEN_MIN {
            return None;
        }
        rand::thread_rng().fill_bytes(&mut out[..len - 16]);
        // Short header form: fixed bit set, long-header bit clear.
        out[0] = 0x40 | (out[0] & 0x3f);
        out[len - 16..len].copy_from_slice(&self.token(dcid).to_be_bytes());
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_names_its_shard() {
        for shard in [0, 1, 7, 63] {
            let cid = new_cid(shard);
            assert_eq!(shard_of(&cid, 64), Some(shard));
        }
        assert_eq!(shard_of(&new_cid(5), 4), None, "a shard index beyond the count is foreign");
        assert_eq!(shard_of(&[0u8; 8], 4), None, "foreign lengths are not ours");
    }

    #[test]
    fn reset_tokens_are_stable_per_secret_and_differ_per_cid() {
        let a = ResetKey::new(&[7; 32]);
        let b = ResetKey::new(&[7; 32]);
        let c = ResetKey::new(&[8; 32]);
        let cid = new_cid(1);
        assert_eq!(a.token(&cid), b.token(&cid));
        assert_ne!(a.token(&cid), c.token(&cid));
        assert_ne!(a.token(&cid), a.token(&new_cid(1)));
    }

    #[test]
    fn stateless_reset_is_shorter_than_its_trigger_and_ends_with_the_token() {
        let key = ResetKey::new(&[1; 32]);
        let cid = new_cid(0);
        let mut out = [0u8; 64];
        assert_eq!(key.stateless_reset(&cid, 21, &mut out), None, "too short to answer");
        let len = key.stateless_reset(&cid, 40, &mut out).expect("reset");
        assert_eq!(len, 39);
        assert_eq!(out[0] & 0xc0, 0x40);
        assert_eq!(&out[len - 16..len], &key.token(&cid).to_be_bytes());
    }
}
