//! The quiche configuration a shard accepts connections with, and the `Bytes` buffer factory
//! that lets one encoded DELIVER be appended to many streams without copying.

use bytes::Bytes;

use crate::config::NodeConfig;
use crate::identity::Identity;

/// ALPN of Fovea wire protocol v1.
pub const ALPN: &[u8] = b"fovea/1";
/// Largest UDP payload the node sends; safe on every path that carries IPv6's minimum MTU plus
/// tunnelling overhead, and what quiche-cost.md measured.
pub const SEND_UDP_PAYLOAD: usize = 1350;
/// Largest UDP payload the node accepts.
pub const RECV_UDP_PAYLOAD: usize = 1472;

/// Stream buffers are `Bytes`, so `stream_send_zc` appends a refcount, not a copy.
#[derive(Debug, Clone, Default)]
pub struct BytesFactory;

impl quiche::BufFactory for BytesFactory {
    type Buf = Bytes;
    type DgramBuf = Vec<u8>;

    fn buf_from_slice(buf: &[u8]) -> Bytes {
        Bytes::copy_from_slice(buf)
    }

    fn dgram_buf_from_slice(buf: &[u8]) -> Vec<u8> {
        buf.to_vec()
    }
}

/// A server connection with `Bytes` stream buffers.
pub type QuicConn = quiche::Connection<BytesFactory>;

/// Builds the server-side quiche configuration from the node configuration.
pub fn server_config(
    config: &NodeConfig,
    identity: &Identity,
) -> Result<quiche::Config, quiche::Error> {
    let limits = &config.limits;
    let mut q = crate::tls::new_quiche_config(&config.tls)?;
    q.load_cert_chain_from_pem_file(identity.cert_path.to_str().ok_or(quiche::Error::TlsFail)?)?;
    q.load_priv_key_from_pem_file(identity.key_path.to_str().ok_or(quiche::Error::TlsFail)?)?;
    q.set_application_protos(&[ALPN])?;
    q.set_max_idle_timeout(limits.idle_timeout_ms);
    q.set_max_send_udp_payload_size(SEND_UDP_PAYLOAD);
    q.set_max_recv_udp_payload_size(RECV_UDP_PAYLOAD);
    q.set_initial_max_data(limits.conn_window_bytes);
    // The client's session stream (bidi 0) and its data stream (uni 2): one of each
    // (docs/PROTOCOL.md §2). The node's own data stream (uni 3) is governed by the client's
    // limits.
    q.set_initial_max_stream_data_bidi_remote(limits.stream_window_bytes);
    q.set_initial_max_stream_data_bidi_local(limits.stream_window_bytes);
    q.set_initial_max_stream_data_uni(limits.stream_window_bytes);
    q.set_initial_max_streams_bidi(1);
    q.set_initial_max_streams_uni(1);
    q.set_disable_active_migration(false);
    // Larger initial window: fan-out bursts go to peers on a LAN or loopback first.
    q.set_initial_congestion_window_packets(64);
    q.enable_pacing(false);
    // Peers coalesce their ACKs for up to 25 ms (the default), which keeps ACK processing,
    // ~2.4 µs per ACK packet, off the fan-out budget.
    q.set_max_ack_delay(25);
    Ok(q)
}
