//! Typed errors of the federation state machines.

use fovea_codec::ErrorCode;
use thiserror::Error;

/// A frame the federation cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FederationError {
    /// A frame type that is not a federation frame (the driver closes the link with
    /// PROTOCOL_VIOLATION).
    #[error("frame type {0:#04x} is not a federation frame")]
    NotFederationFrame(u8),
}

impl FederationError {
    /// The wire code to close with.
    pub fn error_code(self) -> ErrorCode {
        match self {
            FederationError::NotFederationFrame(_) => ErrorCode::ProtocolViolation,
        }
    }
}

/// Why a call could not be forwarded; each maps onto a CALL_ERROR code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CallRefused {
    /// No reachable bootstrap has a provider.
    #[error("no remote provider")]
    NoProvider,
    /// The hop limit is zero or reached.
    #[error("hop limit reached")]
    TooManyHops,
    /// The forwarded-call table is full.
    #[error("too many forwarded calls in flight")]
    TooManyCalls,
}

impl CallRefused {
    /// The CALL_ERROR / FORWARD_REPLY code.
    pub fn error_code(self) -> ErrorCode {
        match self {
            CallRefused::NoProvider => ErrorCode::NoProvider,
            CallRefused::TooManyHops => ErrorCode::TooManyHops,
            CallRefused::TooManyCalls => ErrorCode::TooManyCalls,
        }
    }
}
