//! One client connection: its quiche state, the bytes waiting to enter its streams, the bytes
//! read from them and not yet decoded, and where it is in the session handshake.
//!
//! Streams (docs/PROTOCOL.md §3): the client's bidirectional stream 0 carries the session
//! (HELLO, SUBSCRIBE, PING/PONG), its unidirectional stream 2 carries PUBLISH; the node answers
//! on stream 0 and delivers on its unidirectional stream 3.

use std::time::Instant;

use bytes::BytesMut;

/// The client's session stream.
pub const SESSION_STREAM: u64 = 0;
/// The client's data stream (PUBLISH).
pub const DATA_STREAM: u64 = 2;

/// ALPN of protocol v1.
pub const ALPN: &[u8] = b"fovea/1";

/// TLS options of a run.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// Do not verify the node's certificate (a node with its self-signed certificate).
    pub insecure: bool,
    /// CA file (PEM) to verify the node's certificate with.
    pub ca: Option<std::path::PathBuf>,
}

/// The quiche configuration every connection of a thread uses.
pub fn quic_config(tls: &Tls) -> Result<quiche::Config, quiche::Error> {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION)?;
    c.set_application_protos(&[ALPN])?;
    c.verify_peer(!tls.insecure);
    if let Some(ca) = &tls.ca {
        c.load_verify_locations_from_file(&ca.to_string_lossy())?;
    }
    c.set_max_idle_timeout(30_000);
    c.set_max_recv_udp_payload_size(1472);
    c.set_max_send_udp_payload_size(crate::udp::PACKET_MAX);
    // Windows of an ordinary client: a subscriber that reads at once never fills them, and the
    // node's behaviour under back-pressure is what it would be with real clients.
    c.set_initial_max_data(1 << 20);
    c.set_initial_max_stream_data_bidi_local(256 << 10);
    c.set_initial_max_stream_data_bidi_remote(256 << 10);
    c.set_initial_max_stream_data_uni(256 << 10);
    c.set_initial_max_streams_bidi(4);
    c.set_initial_max_streams_uni(4);
    c.set_disable_active_migration(true);
    Ok(c)
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// QUIC handshake in progress.
    Handshake,
    /// HELLO sent, WELCOME not received.
    Hello,
    /// WELCOME received: requests may flow.
    Session,
    /// Closed and reported.
    Closed,
}

/// A client connection.
pub struct Conn {
    /// The QUIC state.
    pub quic: quiche::Connection,
    /// Our connection ID (the DCID of everything the node sends us).
    pub scid: u128,
    /// When the connection was opened.
    pub opened: Instant,
    /// Where the session is.
    pub phase: Phase,
    /// Bytes received on stream 0 not yet decoded.
    pub session_rx: BytesMut,
    /// Bytes received on the node's data stream not yet decoded.
    pub data_rx: BytesMut,
    /// Bytes for stream 0 that quiche's flow control has not taken yet.
    pub session_tx: BytesMut,
    /// Bytes for stream 2 that quiche's flow control has not taken yet.
    pub data_tx: BytesMut,
    /// Earliest timer entry queued for this connection.
    pub timer: Option<Instant>,
    /// Queued for the next flush.
    pub dirty: bool,
    /// Dirty only because of packets it received (its ACK may wait for data).
    pub ack_only: bool,
    /// When its deferred ACK goes out at the latest.
    pub ack_due: Option<Instant>,
    /// Queued for the next flush among the latency-sensitive connections.
    pub urgent: bool,
    /// True once we asked to close it (a close is then expected, not an error).
    pub closing: bool,
    /// Index of the node (and socket) it is connected to.
    pub node: usize,
    /// Retries before this connection attempt (0: the first).
    pub attempt: u32,
}

impl Conn {
    /// Wraps a new quiche client connection.
    pub fn new(quic: quiche::Connection, scid: u128, now: Instant) -> Conn {
        Conn {
            quic,
            scid,
            opened: now,
            phase: Phase::Handshake,
            session_rx: BytesMut::new(),
            data_rx: BytesMut::new(),
            session_tx: BytesMut::new(),
            data_tx: BytesMut::new(),
            timer: None,
            dirty: true,
            ack_only: false,
            ack_due: None,
            urgent: false,
            closing: false,
            node: 0,
            attempt: 0,
        }
    }

    /// Moves what quiche's stream flow control allows from the pending buffers into the
    /// streams; data first waits on the session stream (control must not queue behind bulk).
    pub fn push_pending(&mut self) {
        for (stream, buf) in
            [(SESSION_STREAM, &mut self.session_tx), (DATA_STREAM, &mut self.data_tx)]
        {
            if buf.is_empty() {
                continue;
            }
            match self.quic.stream_send(stream, buf, false) {
                Ok(n) => {
                    let _ = buf.split_to(n);
                }
                Err(quiche::Error::Done) => {}
                // The stream or connection is gone; the close is reported by the endpoint.
                Err(_) => buf.clear(),
            }
        }
    }

    /// Bytes still waiting for flow control.
    pub fn backlog(&self) -> usize {
        self.session_tx.len() + self.data_tx.len()
    }

    /// Why the connection ended, for the report.
    pub fn close_reason(&self) -> String {
        let describe = |who: &str, e: &quiche::ConnectionError| {
            let reason = String::from_utf8_lossy(&e.reason);
            if e.is_app {
                let name = fovea_codec::ErrorCode::from_u64(e.error_code).map_or("?", |c| c.name());
                format!("closed by {who}: {name} (0x{:x}) {reason}", e.error_code)
            } else {
                format!("closed by {who}: QUIC transport error 0x{:x} {reason}", e.error_code)
            }
        };
        if let Some(e) = self.quic.peer_error() {
            return describe("the node", e);
        }
        if let Some(e) = self.quic.local_error() {
            if !e.is_app && (0x100..0x200).contains(&e.error_code) {
                // CRYPTO_ERROR: a TLS alert, most often the certificate check.
                return format!(
                    "TLS handshake failed (alert {}): a self-signed node needs --insecure, or --ca FILE",
                    e.error_code - 0x100
                );
            }
            return describe("us", e);
        }
        if self.quic.is_timed_out() {
            return if self.phase == Phase::Handshake {
                "handshake timed out (no answer from the node)".into()
            } else {
                "idle timeout (the node stopped answering)".into()
            };
        }
        "closed".into()
    }
}
