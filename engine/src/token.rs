//! Authenticated address-validation tokens for QUIC Retry (RFC 9000 §8.1.2).
//!
//! quiche's example server puts the client address in the token in clear, so anybody can forge
//! one. Ours carry an HMAC-SHA256 over (key id, issue time, original DCID, client address) under
//! a secret that rotates every `ROTATE_MS`; the previous secret is still accepted so tokens
//! issued just before a rotation stay valid. Tokens expire after `TOKEN_LIFETIME_MS`. Time is
//! passed in, never read here.

use std::net::SocketAddr;

use rand::RngCore;

const TOKEN_VERSION: u8 = 1;
const MAC_LEN: usize = 16;
/// How long a Retry token is accepted after it was issued.
pub const TOKEN_LIFETIME_MS: u64 = 10_000;
/// How often the token secret rotates.
pub const ROTATE_MS: u64 = 60_000;
/// Largest token this module issues (header + 20-byte DCID + MAC).
pub const TOKEN_LEN_MAX: usize = 1 + 1 + 8 + 1 + 20 + MAC_LEN;

/// Why a token was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Wrong length or version.
    #[error("malformed token")]
    Malformed,
    /// Signed by no key we hold, or for another address: forged or replayed elsewhere.
    #[error("token authentication failed")]
    BadMac,
    /// Older than the lifetime (or from the future).
    #[error("token expired")]
    Expired,
}

struct Secret {
    id: u8,
    created_ms: u64,
    key: [u8; 32],
}

impl Secret {
    fn random(id: u8, now_ms: u64) -> Secret {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        Secret { id, created_ms: now_ms, key: raw }
    }
}

/// Issues and validates Retry tokens for one shard.
pub struct RetryTokens {
    current: Secret,
    previous: Option<Secret>,
}

impl RetryTokens {
    /// Starts with a fresh random secret.
    pub fn new(now_ms: u64) -> RetryTokens {
        RetryTokens { current: Secret::random(0, now_ms), previous: None }
    }

    fn rotate_if_due(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.current.created_ms) >= ROTATE_MS {
            let next = Secret::random(self.current.id.wrapping_add(1), now_ms);
            self.previous = Some(std::mem::replace(&mut self.current, next));
        }
    }

    fn mac(key: &[u8; 32], body: &[u8], peer: &SocketAddr) -> [u8; MAC_LEN] {
        // body (≤ 31 bytes) ‖ address (≤ 16) ‖ port (2), on the stack.
        let mut input = [0u8; TOKEN_LEN_MAX + 18];
        let mut n = body.len();
        input[..n].copy_from_slice(body);
        match peer {
            SocketAddr::V4(a) => {
                input[n..n + 4].copy_from_slice(&a.ip().octets());
                n += 4;
            }
            SocketAddr::V6(a) => {
                input[n..n + 16].copy_from_slice(&a.ip().octets());
                n += 16;
            }
        }
        input[n..n + 2].copy_from_slice(&peer.port().to_be_bytes());
        n += 2;
        let full = boring::hash::hmac_sha256(key, &input[..n]).expect("HMAC-SHA256");
        full[..MAC_LEN].try_into().expect("MAC_LEN bytes")
    }

    /// A token binding `odcid` to `peer`, written into `out`; returns its length.
    pub fn issue(
        &mut self,
        now_ms: u64,
        odcid: &[u8],
        peer: &SocketAddr,
        out: &mut [u8; TOKEN_LEN_MAX],
    ) -> usize {
        self.rotate_if_due(now_ms);
        assert!(odcid.len() <= 20, "QUIC connection IDs are at most 20 bytes");
        out[0] = TOKEN_VERSION;
        out[1] = self.current.id;
        out[2..10].copy_from_slice(&now_ms.to_be_bytes());
        out[10] = odcid.len() as u8;
        let body_len = 11 + odcid.len();
        out[11..body_len].copy_from_slice(odcid);
        let mac = Self::mac(&self.current.key, &out[..body_len], peer);
        out[body_len..body_len + MAC_LEN].copy_from_slice(&mac);
        body_len + MAC_LEN
    }

    /// Checks a token from `peer`; returns the original DCID it carries.
    pub fn validate<'t>(
        &mut self,
        now_ms: u64,
        token: &'t [u8],
        peer: &SocketAddr,
    ) -> Result<&'t [u8], TokenError> {
        self.rotate_if_due(now_ms);
        if token.len() < 11 + MAC_LEN || token[0] != TOKEN_VERSION {
            return Err(TokenError::Malformed);
        }
        let odcid_len = token[10] as usize;
        let body_len = 11 + odcid_len;
        if odcid_len > 20 || token.len() != body_len + MAC_LEN {
            return Err(TokenError::Malformed);
        }
        let secret = if token[1] == self.current.id {
            &self.current
        } else {
            match &self.previous {
                Some(p) if p.id == token[1] => p,
                _ => return Err(TokenError::BadMac),
            }
        };
        let expected = Self::mac(&secret.key, &token[..body_len], peer);
        // Constant-time comparison: the MAC must not leak through timing.
        if !boring::memcmp::eq(&expected, &token[body_len..]) {
            return Err(TokenError::BadMac);
        }
        let issued = u64::from_be_bytes(token[2..10].try_into().expect("8 bytes"));
        if issued > now_ms || now_ms - issued > TOKEN_LIFETIME_MS {
            return Err(TokenError::Expired);
        }
        Ok(&token[11..body_len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_token_round_trips_for_its_address_only() {
        let mut t = RetryTokens::new(1_000);
        let mut buf = [0u8; TOKEN_LEN_MAX];
        let n = t.issue(1_000, &[9; 8], &addr("127.0.0.1:5000"), &mut buf);
        assert_eq!(t.validate(1_500, &buf[..n], &addr("127.0.0.1:5000")), Ok(&[9u8; 8][..]));
        assert_eq!(t.validate(1_500, &buf[..n], &addr("127.0.0.1:5001")), Err(TokenError::BadMac));
    }

    #[test]
    fn forged_and_tampered_tokens_are_rejected() {
        let mut t = RetryTokens::new(0);
        let mut buf = [0u8; TOKEN_LEN_MAX];
        let n = t.issue(0, &[1; 8], &addr("[::1]:9"), &mut buf);
        let mut tampered = buf;
        tampered[12] ^= 1;
        assert_eq!(t.validate(1, &tampered[..n], &addr("[::1]:9")), Err(TokenError::BadMac));
        // A token minted by another node's secret (an attacker's own RetryTokens) fails too.
        let mut other = RetryTokens::new(0);
        let mut forged = [0u8; TOKEN_LEN_MAX];
        let m = other.issue(0, &[1; 8], &addr("[::1]:9"), &mut forged);
        assert_eq!(t.validate(1, &forged[..m], &addr("[::1]:9")), Err(TokenError::BadMac));
        assert_eq!(t.validate(1, &buf[..5], &addr("[::1]:9")), Err(TokenError::Malformed));
    }

    #[test]
    fn tokens_expire_and_survive_one_rotation() {
        let mut t = RetryTokens::new(0);
        let mut buf = [0u8; TOKEN_LEN_MAX];
        let n = t.issue(ROTATE_MS - 1, &[2; 4], &addr("127.0.0.1:1"), &mut buf);
        // The secret rotates at ROTATE_MS; the token signed just before still validates.
        assert!(t.validate(ROTATE_MS + 10, &buf[..n], &addr("127.0.0.1:1")).is_ok());
        assert_eq!(
            t.validate(ROTATE_MS + TOKEN_LIFETIME_MS, &buf[..n], &addr("127.0.0.1:1")),
            Err(TokenError::Expired)
        );
    }
}
