//! What a client says in HELLO and how it configures QUIC.

use std::time::Duration;

use bytes::Bytes;
use fovea_codec::{Id32, Limits, Realm};

use crate::error::ClientError;
use crate::key::Ed25519Key;
use crate::tls::{self, Verify};

/// The ALPN of protocol version 1 (docs/PROTOCOL.md §2.1).
pub const ALPN: &[u8] = b"fovea/1";

/// Largest UDP payload the client sends. The node sends at most 1350 bytes too; 1350 leaves
/// room for tunnels and IPv6 headers on common paths (no path MTU discovery).
pub const UDP_PAYLOAD_SEND_MAX: usize = 1350;

/// The credential HELLO carries (docs/PROTOCOL.md §6.1, `cred_kind` and `credential`).
/// `Debug` never shows a token or a private key.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credential {
    /// `cred_kind` 0: no credential (enough for a realm without credentials).
    #[default]
    None,
    /// `cred_kind` 1: a bearer token (the node compares its SHA-256 with `token_sha256`).
    Token(Bytes),
    /// `cred_kind` 2 with the private key: HELLO carries the public key, and the session
    /// answers the node's CHALLENGE with AUTH, signed with this key (§6.3, §6.4).
    Ed25519(Ed25519Key),
    /// `cred_kind` 2 with only the raw 32-byte public key: the session reports the node's
    /// CHALLENGE as an [`Event::Frame`](crate::Event::Frame) for the application to answer
    /// with AUTH itself (a key held elsewhere); the blocking [`Client`](crate::Client) fails
    /// with [`ClientError::NoSigningKey`].
    PublicKey(Bytes),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::Token(t) => write!(f, "Token(<{} bytes>)", t.len()),
            Credential::Ed25519(key) => f.debug_tuple("Ed25519").field(key).finish(),
            Credential::PublicKey(k) => f.debug_tuple("PublicKey").field(k).finish(),
        }
    }
}

impl Credential {
    /// The `cred_kind` byte.
    pub fn kind(&self) -> u8 {
        match self {
            Credential::None => 0,
            Credential::Token(_) => 1,
            Credential::Ed25519(_) | Credential::PublicKey(_) => 2,
        }
    }

    /// The credential bytes (empty for `None`, the public key for `Ed25519`).
    pub fn bytes(&self) -> Bytes {
        match self {
            Credential::None => Bytes::new(),
            Credential::Token(b) | Credential::PublicKey(b) => b.clone(),
            Credential::Ed25519(key) => Bytes::copy_from_slice(key.public_key()),
        }
    }

    /// The private key that answers CHALLENGE, if this credential has one.
    pub fn signing_key(&self) -> Option<&Ed25519Key> {
        match self {
            Credential::Ed25519(key) => Some(key),
            _ => None,
        }
    }
}

/// Everything a session needs besides addresses: identity, trust, transport sizes.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The realm HELLO joins.
    pub realm: Realm,
    /// The peer id HELLO carries; `None` draws 32 random bytes per session.
    pub peer_id: Option<Id32>,
    /// HELLO's credential.
    pub credential: Credential,
    /// HELLO's informational client name.
    pub client_name: String,
    /// HELLO's flags (docs/PROTOCOL.md §6.1): 0 for clients; bit 0 marks a node's federation
    /// link.
    pub hello_flags: u8,
    /// How the node's certificate is verified.
    pub verify: Verify,
    /// QUIC idle timeout; the node answers keep-alive traffic, so this only ends dead paths.
    pub idle_timeout: Duration,
    /// After this long without sending, the client sends an ack-eliciting packet (a QUIC
    /// PING). A client that only receives otherwise sends nothing once its path breaks (a NAT
    /// rebinding drops the node's packets at the old address), and the node learns its new
    /// address only from the client's next packet. `None`: never.
    pub keepalive: Option<Duration>,
    /// Receive window of the node's data stream. The protocol asks for at least the node's
    /// `max_frame_len` (about 1 MiB), so one DELIVER never waits for a window update.
    pub stream_window_bytes: u64,
    /// Connection-level receive window.
    pub connection_window_bytes: u64,
    /// Bounds for decoding the node's frames.
    pub limits: Limits,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            realm: Realm::from_static("default"),
            peer_id: None,
            credential: Credential::None,
            client_name: concat!("fovea-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            hello_flags: 0,
            verify: Verify::System,
            idle_timeout: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(5)),
            stream_window_bytes: 4 << 20,
            connection_window_bytes: 8 << 20,
            limits: Limits::default(),
        }
    }
}

impl ClientConfig {
    /// The quiche configuration for this client. Building one loads the CA store, so a
    /// program that opens many sessions builds it once and uses
    /// [`ClientSession::with_quic_config`](crate::ClientSession::with_quic_config).
    pub fn quic_config(&self) -> Result<quiche::Config, ClientError> {
        let err = |e: quiche::Error| ClientError::Config(e.to_string());
        let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).map_err(err)?;
        c.set_application_protos(&[ALPN]).map_err(err)?;
        tls::apply(&self.verify, &mut c)?;
        c.set_max_idle_timeout(u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX));
        c.set_max_send_udp_payload_size(UDP_PAYLOAD_SEND_MAX);
        c.set_initial_max_data(self.connection_window_bytes);
        // Stream 0 is ours: its window bounds the node's answers (small frames).
        c.set_initial_max_stream_data_bidi_local(1 << 20);
        c.set_initial_max_stream_data_bidi_remote(0);
        c.set_initial_max_stream_data_uni(self.stream_window_bytes);
        // The node opens exactly one stream, its data stream 3, and never a bidirectional one.
        c.set_initial_max_streams_bidi(0);
        c.set_initial_max_streams_uni(1);
        Ok(c)
    }
}
