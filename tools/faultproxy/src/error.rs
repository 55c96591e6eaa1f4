//! Errors: invalid fault settings, unreadable scripts, sockets that cannot be set up.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A fault setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    /// A probability outside 0..=1.
    #[error("{name} must be a probability between 0 and 1, not {value}")]
    Probability {
        /// The setting.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// Another invalid value.
    #[error("{name} {why}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

/// A script that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The file cannot be read.
    #[error("cannot read script {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML, or keys the script format does not have.
    #[error("script is not valid: {0}")]
    Toml(#[from] toml::de::Error),
    /// A duration that humantime cannot parse ("10s", "250ms", "1m30s").
    #[error("phase {phase}: {key} = {value:?} is not a duration ({source})")]
    Duration {
        /// Index of the phase (0-based, in file order).
        phase: usize,
        /// The key.
        key: &'static str,
        /// The text.
        value: String,
        /// Why it does not parse.
        source: humantime::DurationError,
    },
    /// A phase's faults are out of range.
    #[error("phase {phase} ({dir}): {source}")]
    Fault {
        /// Index of the phase.
        phase: usize,
        /// `up`, `down` or `both`.
        dir: &'static str,
        /// The problem.
        source: FaultError,
    },
    /// A phase sets `both` and also `up` or `down`.
    #[error("phase {phase}: `both` cannot be combined with `up` or `down`")]
    BothAndOne {
        /// Index of the phase.
        phase: usize,
    },
    /// Phases must be in time order, so the file reads like the timeline it is.
    #[error("phase {phase} starts at {at:?}, before the phase above it ({previous:?})")]
    OutOfOrder {
        /// Index of the phase.
        phase: usize,
        /// Its start.
        at: std::time::Duration,
        /// The previous phase's start.
        previous: std::time::Duration,
    },
}

/// The proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Binding or configuring a socket failed.
    #[error("cannot {what} {addr}: {source}")]
    Socket {
        /// "bind", "connect to", ...
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread could not be spawned.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// The initial faults are out of range.
    #[error("initial faults ({dir}): {source}")]
    Fault {
        /// The direction.
        dir: crate::Direction,
        /// The problem.
        source: FaultError,
    },
}
