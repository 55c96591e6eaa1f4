//! Ed25519 keys for public-key credentials (docs/PROTOCOL.md §6.1, §6.3, §6.4) and their key
//! file format.
//!
//! The node stores the raw 32-byte public key as 64 hex digits (`ed25519_public_key` in
//! `[[auth.credentials]]`). A key file holds the matching private key the same way: the raw
//! 32-byte Ed25519 private key of RFC 8032 (the "seed") as 64 hex digits. Blank lines and lines
//! starting with `#` are ignored, so a file may name its public key in a comment. A PKCS#8 PEM
//! file (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey -algorithm ed25519` writes) is
//! accepted too.
//!
//! Signatures use `ring`, the crate the node verifies them with.

use std::fmt;
use std::path::{Path, PathBuf};

use fovea_codec::Id32;
use ring::signature::{Ed25519KeyPair, KeyPair};

pub use fovea_codec::{auth_message, AUTH_CONTEXT};

/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read (or written).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The text is not a key in a known format.
    #[error("{what}")]
    Format {
        /// What is wrong with it.
        what: String,
    },
    /// No random bytes for a new key.
    #[error("no random bytes for a new key: {0}")]
    Random(String),
}

fn format_error(what: impl Into<String>) -> KeyError {
    KeyError::Format { what: what.into() }
}

/// An Ed25519 private key, the credential of `cred_kind` 2. HELLO carries its public key; the
/// session signs the node's CHALLENGE with it. `Debug` shows the public key only.
#[derive(Clone)]
pub struct Ed25519Key {
    secret: [u8; 32],
    public: [u8; 32],
}

impl Ed25519Key {
    /// The key whose RFC 8032 private key (seed) is `secret`.
    pub fn from_secret(secret: [u8; 32]) -> Ed25519Key {
        let pair = Ed25519KeyPair::from_seed_unchecked(&secret).expect("a seed of 32 bytes");
        let public = pair.public_key().as_ref().try_into().expect("a 32-byte public key");
        Ed25519Key { secret, public }
    }

    /// A new key from the system's CSPRNG.
    pub fn generate() -> Result<Ed25519Key, KeyError> {
        let mut secret = [0u8; 32];
        boring::rand::rand_bytes(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Ed25519Key::from_secret(secret))
    }

    /// Parses a key file's text: 64 hex digits (`#` comment lines and blank lines ignored), or
    /// a PKCS#8 PEM private key.
    pub fn from_key_file_text(text: &str) -> Result<Ed25519Key, KeyError> {
        if text.contains("-----BEGIN") {
            return Ed25519Key::from_pem(text);
        }
        let digits: String =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        let secret = fovea_codec::id32_from_hex(&digits).ok_or_else(|| {
            format_error(
                "not an Ed25519 private key: expected 64 hex digits (the raw 32-byte key) or a \
                 PKCS#8 PEM file (openssl genpkey -algorithm ed25519)",
            )
        })?;
        Ok(Ed25519Key::from_secret(secret))
    }

    /// Reads a key file (see [`Self::from_key_file_text`]).
    pub fn load(path: &Path) -> Result<Ed25519Key, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
        Ed25519Key::from_key_file_text(&text).map_err(|e| match e {
            KeyError::Format { what } => format_error(format!("{}: {what}", path.display())),
            e => e,
        })
    }

    /// The key file text for this key: a comment naming the public key, then the private key
    /// as 64 hex digits.
    pub fn to_key_file_text(&self) -> String {
        format!(
            "# Fovea Ed25519 private key (keep it secret); public key:\n# {}\n{}\n",
            self.public_key_hex(),
            hex(&self.secret)
        )
    }

    /// The raw 32-byte public key (HELLO's credential).
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// The public key as 64 lowercase hex digits: the node's `ed25519_public_key`.
    pub fn public_key_hex(&self) -> String {
        hex(&self.public)
    }

    /// The Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let pair = Ed25519KeyPair::from_seed_unchecked(&self.secret).expect("a seed of 32 bytes");
        pair.sign(msg).as_ref().try_into().expect("a 64-byte signature")
    }

    /// AUTH's signature for a CHALLENGE's `nonce` on a session that sent `peer_id` in HELLO.
    pub fn sign_auth(&self, nonce: &[u8], peer_id: &Id32) -> [u8; SIGNATURE_LEN] {
        self.sign(&auth_message(nonce, peer_id))
    }

    fn from_pem(text: &str) -> Result<Ed25519Key, KeyError> {
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        let unsupported = || {
            format_error(
                "a PEM key file must hold one Ed25519 key as PKCS#8 (-----BEGIN PRIVATE \
                 KEY-----, as openssl genpkey -algorithm ed25519 writes it)",
            )
        };
        let start = text.find(BEGIN).ok_or_else(unsupported)? + BEGIN.len();
        let len = text[start..].find(END).ok_or_else(unsupported)?;
        let body: String = text[start..start + len].split_whitespace().collect();
        let der = boring::base64::decode_block(&body).map_err(|_| unsupported())?;
        // RFC 8410 PKCS#8 (v1 or v2): SEQUENCE { INTEGER version, SEQUENCE { OID 1.3.101.112 },
        // OCTET STRING { OCTET STRING (32) seed } [, public key] }: the seed is bytes 16..48.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| unsupported())?;
        const HEADER: [u8; 11] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        if der.len() < 48 || der[0] != 0x30 || der[2..4] != [0x02, 0x01] || der[5..16] != HEADER {
            return Err(unsupported());
        }
        let secret: [u8; 32] = der[16..48].try_into().expect("32 bytes");
        let key = Ed25519Key::from_secret(secret);
        if key.public.as_slice() != pair.public_key().as_ref() {
            return Err(unsupported());
        }
        Ok(key)
    }
}

impl PartialEq for Ed25519Key {
    /// Two keys are the same when their public keys are.
    fn eq(&self, other: &Ed25519Key) -> bool {
        self.public == other.public
    }
}

impl Eq for Ed25519Key {}

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Key").field("public", &self.public_key_hex()).finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};

    // RFC 8032 §7.1, TEST 1.
    const SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn hex_key_files_give_the_rfc_8032_public_key() {
        let key = Ed25519Key::from_key_file_text(&format!("{SECRET}\n")).unwrap();
        assert_eq!(key.public_key_hex(), PUBLIC);
        let upper = format!("# a comment\n\n  {}  \n", SECRET.to_uppercase());
        assert_eq!(Ed25519Key::from_key_file_text(&upper).unwrap(), key);
        // What the key file writer produces reads back as the same key.
        assert_eq!(Ed25519Key::from_key_file_text(&key.to_key_file_text()).unwrap(), key);
        assert!(key.to_key_file_text().contains(PUBLIC));
        for bad in ["", "abcd", &SECRET[..62], &format!("{SECRET}00"), &"zz".repeat(32)] {
            assert!(Ed25519Key::from_key_file_text(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{key:?}").contains(SECRET), "Debug never shows the secret");
        let credential = crate::Credential::Ed25519(key);
        assert!(!format!("{credential:?}").contains(SECRET), "{credential:?}");
        let token = crate::Credential::Token(bytes::Bytes::from_static(b"s3cret"));
        assert_eq!(format!("{token:?}"), "Token(<6 bytes>)");
    }

    #[test]
    fn pkcs8_pem_from_openssl_is_accepted() {
        // RFC 8410 §10.3: the private key whose public key is §10.1's
        // 19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1.
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        let key = Ed25519Key::from_key_file_text(pem).unwrap();
        assert_eq!(
            key.public_key_hex(),
            "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
        // PKCS#8 v2 with the public key, as ring writes it.
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            boring::base64::encode_block(doc.as_ref())
        );
        let key = Ed25519Key::from_key_file_text(&pem).unwrap();
        assert_eq!(key.public_key().as_slice(), pair.public_key().as_ref());
        let not_a_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(Ed25519Key::from_key_file_text(not_a_key).is_err());
    }

    #[test]
    fn the_auth_signature_covers_context_nonce_and_peer_id() {
        let key = Ed25519Key::generate().unwrap();
        let nonce = [7u8; 32];
        let peer_id = [9u8; 32];
        let sig = key.sign_auth(&nonce, &peer_id);
        let mut msg = b"fovea-auth-v1".to_vec();
        msg.extend_from_slice(&nonce);
        msg.extend_from_slice(&peer_id);
        let public = UnparsedPublicKey::new(&ED25519, key.public_key());
        assert!(public.verify(&msg, &sig).is_ok());
        assert!(public.verify(&auth_message(&nonce, &[8u8; 32]), &sig).is_err());
        assert_ne!(Ed25519Key::generate().unwrap(), key);
    }
}
