//! Fovea client library (docs/PROTOCOL.md).
//!
//! Two layers:
//!
//! - [`ClientSession`]: the protocol without I/O. It wraps a client-side `quiche::Connection`,
//!   writes HELLO once the handshake completes, frames and unframes the three streams with
//!   `fovea-codec`, answers the node's PINGs, and reports [`Event`]s. A driver (the blocking
//!   [`Client`] here, an async one elsewhere) moves datagrams and runs timers.
//! - [`Client`]: a blocking client on a std `UdpSocket`, for the CLI and tests. Every wait has
//!   a deadline; waiting blocks on the socket until a datagram or quiche's next timer.
//!
//! Credentials (docs/PROTOCOL.md §6.1, §6.3, §6.4) go in [`ClientConfig::credential`]: a
//! [`Credential::Token`], or a [`Credential::Ed25519`] private key ([`Ed25519Key::load`] reads
//! a key file), with which the session answers the node's CHALLENGE. A refusal comes back from
//! [`Client::connect`] as [`ClientError::AuthRequired`] or [`ClientError::AuthFailed`].
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use fovea_client::{Client, ConnectOptions, Event, Verify};
//!
//! let mut options = ConnectOptions::default();
//! options.config.verify = Verify::Insecure; // a node with its self-signed certificate
//! let deadline = Instant::now() + Duration::from_secs(5);
//! let mut client = Client::connect("127.0.0.1:4433".parse()?, &options, deadline)?;
//! client.subscribe(1, "sensors.**")?;
//! client.publish("sensors.kitchen.temp", b"21.5", true)?;
//! if let Some(Event::Frame(frame)) = client.next_event(Instant::now() + Duration::from_secs(1)) {
//!     println!("{frame:?}");
//! }
//! client.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod blocking;
mod config;
mod error;
mod key;
mod session;
mod tls;

pub use blocking::{Client, ConnectOptions, DATA_OUTBOX_HIGH_BYTES};
pub use config::{ClientConfig, Credential, ALPN, UDP_PAYLOAD_SEND_MAX};
pub use error::{app_code_name, ClientError, Close};
pub use key::{auth_message, Ed25519Key, KeyError, AUTH_CONTEXT, SIGNATURE_LEN};
pub use session::{
    ClientSession, Event, StreamKind, DATA_QUEUE_BYTES_MAX, DATA_QUEUE_FRAMES_MAX,
    PROTOCOL_VERSION, SESSION_QUEUE_FRAMES_MAX,
};
pub use tls::Verify;

/// The codec this client speaks, re-exported so users name the same frame types.
pub use fovea_codec as codec;
