//! Errors of the client library, and how a closed connection is described.
//!
//! One enum for every operation: callers (the CLI, tests) mostly want to print the error or map
//! it to an exit code, and the variants say which side failed: the arguments, this machine, the
//! network, or the node.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use fovea_codec::{ErrorCode, TopicError};

/// Why and by whom a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The CONNECTION_CLOSE error code: a Fovea error code (docs/PROTOCOL.md §8) when `is_app`,
    /// else a QUIC transport error code (RFC 9000 §20.1; 0x100..=0x1ff are TLS alerts).
    pub error_code: u64,
    /// Application (Fovea) or transport (QUIC, TLS) error code.
    pub is_app: bool,
    /// The reason phrase (lossy UTF-8).
    pub reason: String,
    /// True when the node closed the connection; false when this side did (including an idle
    /// timeout, which QUIC reports without any packet).
    pub by_peer: bool,
}

impl Close {
    /// The code's name: `SHUTTING_DOWN`, `TLS alert 48 (unknown_ca)`, `STREAM_LIMIT_ERROR`.
    pub fn code_name(&self) -> String {
        if self.is_app {
            return app_code_name(self.error_code).to_owned();
        }
        transport_code_name(self.error_code)
    }

    /// True for a normal end: NO_ERROR from either side.
    pub fn is_no_error(&self) -> bool {
        self.error_code == 0
    }

    /// True when QUIC ended the connection after the idle timeout (no CONNECTION_CLOSE).
    pub fn is_idle_timeout(&self) -> bool {
        self.is_app && !self.by_peer && self.error_code == ErrorCode::IdleTimeout as u64
    }

    /// True when the TLS handshake failed (a TLS alert as transport error code).
    pub fn is_tls_failure(&self) -> bool {
        !self.is_app && (0x100..=0x1ff).contains(&self.error_code)
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_idle_timeout() {
            return f.write_str(
                "connection timed out: nothing came from the node within the idle timeout",
            );
        }
        let who = if self.by_peer { "the node" } else { "this client" };
        write!(f, "connection closed by {who}: {} ({:#x})", self.code_name(), self.error_code)?;
        if !self.reason.is_empty() {
            write!(f, " {}", self.reason)?;
        }
        Ok(())
    }
}

/// The name of a Fovea error code, or `APPLICATION_ERROR` for a number Fovea does not define.
pub fn app_code_name(code: u64) -> &'static str {
    ErrorCode::from_u64(code).map_or("APPLICATION_ERROR", ErrorCode::name)
}

/// Names of QUIC transport error codes (RFC 9000 §20.1) and of the TLS alerts a handshake
/// most often fails with (RFC 8446 §6), so that an operator reads "unknown_ca", not "0x130".
fn transport_code_name(code: u64) -> String {
    let name = match code {
        0x00 => "NO_ERROR",
        0x01 => "INTERNAL_ERROR",
        0x02 => "CONNECTION_REFUSED",
        0x03 => "FLOW_CONTROL_ERROR",
        0x04 => "STREAM_LIMIT_ERROR",
        0x05 => "STREAM_STATE_ERROR",
        0x06 => "FINAL_SIZE_ERROR",
        0x07 => "FRAME_ENCODING_ERROR",
        0x08 => "TRANSPORT_PARAMETER_ERROR",
        0x09 => "CONNECTION_ID_LIMIT_ERROR",
        0x0a => "PROTOCOL_VIOLATION",
        0x0b => "INVALID_TOKEN",
        0x0c => "APPLICATION_ERROR",
        0x0d => "CRYPTO_BUFFER_EXCEEDED",
        0x0e => "KEY_UPDATE_ERROR",
        0x0f => "AEAD_LIMIT_REACHED",
        0x10 => "NO_VIABLE_PATH",
        0x100..=0x1ff => {
            let alert = code - 0x100;
            let what = match alert {
                10 => "unexpected_message",
                40 => "handshake_failure",
                42 => "bad_certificate",
                43 => "unsupported_certificate",
                44 => "certificate_revoked",
                45 => "certificate_expired",
                46 => "certificate_unknown",
                47 => "illegal_parameter",
                48 => "unknown_ca",
                50 => "decode_error",
                51 => "decrypt_error",
                70 => "protocol_version",
                80 => "internal_error",
                109 => "missing_extension",
                112 => "unrecognized_name",
                116 => "certificate_required",
                120 => "no_application_protocol",
                _ => "",
            };
            return if what.is_empty() {
                format!("TLS alert {alert}")
            } else {
                format!("TLS alert {alert} ({what})")
            };
        }
        _ => return format!("TRANSPORT_ERROR {code:#x}"),
    };
    name.to_owned()
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// An argument is not valid protocol syntax (topic, pattern, procedure name, realm).
    #[error("invalid {what} {value:?}: {source}")]
    Invalid {
        /// What the value was meant to be ("topic", "pattern", ...).
        what: &'static str,
        /// The value.
        value: String,
        /// Which rule it breaks.
        source: TopicError,
    },
    /// QUIC or TLS configuration failed (e.g. an unreadable CA file).
    #[error("cannot configure QUIC/TLS: {0}")]
    Config(String),
    /// A socket operation failed on this machine.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The node's host answered that nothing listens on the port (ICMP port unreachable).
    #[error("connection refused by {addr}: nothing listens on that UDP port")]
    ConnectionRefused {
        /// The node's address.
        addr: SocketAddr,
    },
    /// The network reports the node's host or network as unreachable.
    #[error("{addr} is unreachable: {source}")]
    Unreachable {
        /// The node's address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The handshake (QUIC, TLS, HELLO/WELCOME) did not complete in time: nothing answered, or
    /// a firewall drops the packets.
    #[error("no answer from {addr} within {after:?} (is a node listening there?)")]
    HandshakeTimeout {
        /// The node's address.
        addr: SocketAddr,
        /// The time allowed.
        after: Duration,
    },
    /// An answer did not come in time on an established connection.
    #[error("no {waiting_for} from the node within {after:?}")]
    Timeout {
        /// What was awaited ("OK to SUBSCRIBE", "PONG", ...).
        waiting_for: &'static str,
        /// The time allowed.
        after: Duration,
    },
    /// The connection is closed (by the node, by QUIC, or by this client). The node's
    /// AUTH_REQUIRED and AUTH_FAILED closes are [`Self::AuthRequired`] and
    /// [`Self::AuthFailed`] instead.
    #[error("{0}")]
    Closed(Close),
    /// The node closed with AUTH_REQUIRED: the realm needs a credential and this client sent
    /// none, or it did not answer the CHALLENGE within the node's `auth.auth_timeout_ms`.
    #[error("the node requires a credential for this realm: {} ({:#x}) {}", .0.code_name(), .0.error_code, .0.reason)]
    AuthRequired(Close),
    /// The node closed with AUTH_FAILED: the token is wrong, the public key is not one of the
    /// realm's, or the AUTH signature does not verify.
    #[error("the node refused the credential: {} ({:#x}) {}", .0.code_name(), .0.error_code, .0.reason)]
    AuthFailed(Close),
    /// The node sent a CHALLENGE, asking this client to prove a public key, but the client
    /// has no private key to sign it with ([`Credential::PublicKey`](crate::Credential) or no
    /// public-key credential at all). The client closed the connection.
    #[error(
        "the node asked for proof of an Ed25519 key (CHALLENGE) but this client has no private \
         key to sign it"
    )]
    NoSigningKey,
    /// The node answered a request with ERROR; the connection stays open.
    #[error("the node rejected {request}: {} ({code:#x}) {message}", app_code_name(*.code))]
    Rejected {
        /// The request's frame name ("SUBSCRIBE", "PUBLISH", ...).
        request: &'static str,
        /// The Fovea error code.
        code: u64,
        /// The node's message.
        message: String,
    },
    /// A CALL ended with CALL_ERROR (no provider, deadline, provider error, ...).
    #[error("call to {procedure} failed: {} ({code:#x}) {message}", app_code_name(*.code))]
    CallFailed {
        /// The procedure.
        procedure: String,
        /// The error code (a Fovea code, or a provider's own).
        code: u64,
        /// The message.
        message: String,
    },
    /// A payload larger than the node's advertised `max_payload` (checked before sending, so
    /// the node does not have to close the connection with FRAME_TOO_LARGE).
    #[error("payload of {len} bytes exceeds the node's max_payload of {max} bytes")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The node's limit.
        max: u64,
    },
    /// A frame longer than the node's advertised `max_frame_len`.
    #[error("frame body of {len} bytes exceeds the node's max_frame_len of {max} bytes")]
    FrameTooLarge {
        /// Body length.
        len: usize,
        /// The node's limit.
        max: u64,
    },
    /// The client's data stream is not open yet: frames on it may only follow WELCOME
    /// (docs/PROTOCOL.md §2.2). Returned only by operations that need it at once.
    #[error("the session is not established yet (no WELCOME)")]
    NotEstablished,
}

impl ClientError {
    /// The Fovea error code the node gave, if the node refused or closed.
    pub fn node_code(&self) -> Option<u64> {
        match self {
            ClientError::Rejected { code, .. } | ClientError::CallFailed { code, .. } => {
                Some(*code)
            }
            ClientError::Closed(c) | ClientError::AuthRequired(c) | ClientError::AuthFailed(c)
                if c.is_app =>
            {
                Some(c.error_code)
            }
            _ => None,
        }
    }

    /// How the connection ended, when this error is a close.
    pub fn close(&self) -> Option<&Close> {
        match self {
            ClientError::Closed(c) | ClientError::AuthRequired(c) | ClientError::AuthFailed(c) => {
                Some(c)
            }
            _ => None,
        }
    }
}

impl From<Close> for ClientError {
    /// [`ClientError::AuthRequired`] or [`ClientError::AuthFailed`] for the node's
    /// authentication closes, [`ClientError::Closed`] for every other close.
    fn from(close: Close) -> ClientError {
        const REQUIRED: u64 = ErrorCode::AuthRequired as u64;
        const FAILED: u64 = ErrorCode::AuthFailed as u64;
        match (close.is_app && close.by_peer, close.error_code) {
            (true, REQUIRED) => ClientError::AuthRequired(close),
            (true, FAILED) => ClientError::AuthFailed(close),
            _ => ClientError::Closed(close),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_fovea_transport_and_tls_codes() {
        let close =
            |error_code, is_app| Close { error_code, is_app, reason: String::new(), by_peer: true };
        assert_eq!(close(0x0d, true).code_name(), "SHUTTING_DOWN");
        assert_eq!(close(0x4242, true).code_name(), "APPLICATION_ERROR");
        assert_eq!(close(0x04, false).code_name(), "STREAM_LIMIT_ERROR");
        assert_eq!(close(0x130, false).code_name(), "TLS alert 48 (unknown_ca)");
        assert!(close(0x130, false).is_tls_failure());
        assert!(!close(0x130, true).is_tls_failure());
        assert_eq!(close(0x1ff, false).code_name(), "TLS alert 255");
        assert_eq!(
            close(0x0d, true).to_string(),
            "connection closed by the node: SHUTTING_DOWN (0xd)"
        );
        let idle = Close { by_peer: false, ..close(0x0e, true) };
        assert!(idle.is_idle_timeout());
        assert!(idle.to_string().contains("timed out"), "{idle}");
    }

    #[test]
    fn auth_closes_by_the_node_are_typed() {
        let close = |error_code, by_peer| Close {
            error_code,
            is_app: true,
            reason: "credential refused".into(),
            by_peer,
        };
        let e = ClientError::from(close(0x09, true));
        assert!(matches!(e, ClientError::AuthFailed(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the node refused the credential: AUTH_FAILED (0x9) credential refused"
        );
        assert_eq!(e.node_code(), Some(0x09));
        let e = ClientError::from(close(0x08, true));
        assert!(matches!(e, ClientError::AuthRequired(_)), "{e:?}");
        assert!(e.to_string().contains("AUTH_REQUIRED (0x8)"), "{e}");
        assert!(matches!(ClientError::from(close(0x09, false)), ClientError::Closed(_)));
        assert!(matches!(ClientError::from(close(0x0d, true)), ClientError::Closed(_)));
        let transport = Close { is_app: false, ..close(0x09, true) };
        assert!(matches!(ClientError::from(transport), ClientError::Closed(_)));
    }

    #[test]
    fn rejected_names_the_code() {
        let e = ClientError::Rejected {
            request: "SUBSCRIBE",
            code: ErrorCode::InvalidPattern as u64,
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "the node rejected SUBSCRIBE: INVALID_PATTERN (0x101) bad");
        assert_eq!(e.node_code(), Some(0x101));
    }
}
