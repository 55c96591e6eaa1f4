//! The control thread: federation between bootstraps (docs/decisions/0004-federation-links.md).
//!
//! One std thread, not a shard, owns `fovea_control::federation::Federation` (sans-I/O) and is
//! its driver: it runs its timers from `next_wakeup_ms`, dials the configured seeds and the
//! members it must reach as a QUIC client (`fovea_client::ClientSession`s on one UDP socket,
//! with reconnect backoff), and moves frames between the state machine and the links. It talks
//! to the shards only through typed messages: [`ControlMsg`] in (a bounded crossbeam channel;
//! the shards' side is [`ControlLink`]), `ShardMsg` out through the shards' inboxes.
//!
//! - [`links`]: the outgoing links (dial, backoff, frames queued until WELCOME).
//! - [`driver`]: the loop.
//! - [`status`]: what `/metrics` and `/federation` show.
//! - [`dht`]: the DHT's advertisement keys and values, peers' DHT requests, `fovea_dht_*`.
//!
//! The thread also owns a Kademlia `fovea_control::dht::DhtNode` (id: the node id, address:
//! the advertised federation endpoint) whose messages travel on the federation links.

pub mod dht;
mod driver;
mod links;
pub mod status;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fovea_codec::{Frame, Name, Pattern, Realm, Topic};
use fovea_control::federation::{Kind, NodeId, Op};

use crate::config::NodeConfig;
use crate::mesh::Mesh;
use crate::shard::NodeShared;
pub use status::FederationStatus;

/// The realm a federation link's HELLO names. A session is served as a link only in this
/// realm, so `[auth]` can require a credential of dialing nodes (`federation.token`) without
/// touching the realms of peers.
pub const LINK_REALM: &str = "fovea-federation";

/// Messages waiting for the control thread at most; beyond, shards drop and count
/// (`fovea_federation_control_queue_drops_total`) rather than wait.
pub const CONTROL_QUEUE: usize = 65_536;

/// What shards (and the UDP reader) tell the control thread.
#[derive(Debug)]
pub enum ControlMsg {
    /// A federation link dialed by `node` completed HELLO on `shard`.
    LinkUp {
        /// The dialing node's id (its HELLO peer id).
        node: NodeId,
        /// The shard serving the link.
        shard: usize,
    },
    /// That link closed.
    LinkDown {
        /// The dialing node.
        node: NodeId,
        /// The shard that served it.
        shard: usize,
    },
    /// A federation frame (or a SWIM extension frame) arrived on a link served by a shard.
    LinkFrame {
        /// The node at the other end.
        from: NodeId,
        /// The frame.
        frame: Frame,
    },
    /// `shard` got its first subscriber of a pattern or provider of a procedure (`Op::Add`), or
    /// lost its last (`Op::Remove`). The control thread counts shards per name.
    LocalChange {
        /// Interest or registration.
        kind: Kind,
        /// Add or remove.
        op: Op,
        /// Realm.
        realm: Realm,
        /// Pattern, or procedure name as a pattern.
        name: Pattern,
        /// Reporting shard.
        shard: usize,
    },
    /// A local publish that matched remote interest.
    Publish {
        /// Realm.
        realm: Realm,
        /// Topic.
        topic: Topic,
        /// Payload.
        payload: Bytes,
    },
    /// A call with no local provider but a remote one. The caller's shard keeps the call's
    /// deadline; the answer comes back as `ShardMsg::CallResult`.
    Call {
        /// The caller's peer id.
        caller: [u8; 32],
        /// The caller's call id.
        call_id: u64,
        /// Realm.
        realm: Realm,
        /// Procedure.
        procedure: Name,
        /// Time left, ms.
        timeout_ms: u64,
        /// Safe to retry.
        idempotent: bool,
        /// Arguments.
        payload: Bytes,
    },
    /// A local provider's answer (or a failure) for a call forwarded to this node.
    InvokeAnswer {
        /// The link the call came from.
        to: NodeId,
        /// The forwarding node's id for the call.
        forward_id: u64,
        /// 0: success, else an error code.
        code: u64,
        /// Reply or UTF-8 error message.
        payload: Bytes,
    },
    /// A peer's FIND_NODE, FIND_VALUE or STORE; answered with `ShardMsg::DhtAnswer` to `shard`.
    DhtRequest {
        /// The requesting peer.
        peer: [u8; 32],
        /// Its shard.
        shard: usize,
        /// The request.
        frame: Frame,
    },
    /// A datagram for one of the outgoing links (from the UDP reader thread).
    Datagram {
        /// The UDP payload.
        data: Vec<u8>,
        /// Its source.
        from: SocketAddr,
    },
    /// Close the links and exit.
    Stop,
}

/// The shards' handle on the control thread's inbox: never blocks; a full queue drops the
/// message and counts it.
#[derive(Clone)]
pub struct ControlLink {
    tx: crossbeam_channel::Sender<ControlMsg>,
    dropped: Arc<AtomicU64>,
}

impl ControlLink {
    /// Queues `msg` for the control thread.
    pub fn send(&self, msg: ControlMsg) {
        if self.tx.try_send(msg).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Errors starting the control thread.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The client UDP socket.
    #[error("federation client socket: {0}")]
    Socket(std::io::Error),
    /// The QUIC client configuration (CA file).
    #[error("federation client configuration: {0}")]
    Client(#[from] fovea_client::ClientError),
}

/// A running control thread.
pub struct ControlHandle {
    link: ControlLink,
    status: Arc<FederationStatus>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The channel between shards and the control thread, made before the shards start.
pub struct ControlChannel {
    link: ControlLink,
    rx: crossbeam_channel::Receiver<ControlMsg>,
}

impl ControlChannel {
    /// A bounded channel of [`CONTROL_QUEUE`] messages.
    pub fn new() -> ControlChannel {
        let (tx, rx) = crossbeam_channel::bounded(CONTROL_QUEUE);
        ControlChannel { link: ControlLink { tx, dropped: Arc::new(AtomicU64::new(0)) }, rx }
    }

    /// The shards' side.
    pub fn link(&self) -> ControlLink {
        self.link.clone()
    }
}

impl Default for ControlChannel {
    fn default() -> Self {
        ControlChannel::new()
    }
}

/// What the control thread needs from the node.
pub struct ControlParams {
    /// The node's configuration (`[federation]`, `limits.max_peers`).
    pub config: NodeConfig,
    /// The node id (WELCOME's and our HELLO's id).
    pub node_id: NodeId,
    /// Where other nodes reach us (`federation.advertise`, else the bound QUIC address).
    pub advertise: SocketAddr,
    /// The shards' inboxes.
    pub mesh: Arc<Mesh>,
    /// Node-wide counters (peers, for ANNOUNCE's load).
    pub shared: Arc<NodeShared>,
}

/// Starts the control thread on `channel`.
pub fn start(
    channel: ControlChannel,
    params: ControlParams,
) -> Result<ControlHandle, ControlError> {
    let any: SocketAddr = if params.advertise.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(any).map_err(ControlError::Socket)?;
    let status = Arc::new(FederationStatus::new(
        params.node_id,
        params.config.federation.region.clone(),
        channel.link.dropped.clone(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(&socket, channel.link.clone(), stop.clone())?;
    let driver = driver::Driver::new(params, socket, channel.rx, status.clone(), stop.clone())?;
    let thread = std::thread::Builder::new()
        .name("fovea-control".into())
        .spawn(move || driver.run())
        .map_err(ControlError::Socket)?;
    Ok(ControlHandle {
        link: channel.link,
        status,
        stop,
        thread: Some(thread),
        reader: Some(reader),
    })
}

/// The reader turns datagrams into channel messages, so the control loop waits on one channel
/// for everything. It checks `stop` between reads (a 200 ms read timeout bounds the wait).
fn spawn_reader(
    socket: &UdpSocket,
    link: ControlLink,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, ControlError> {
    let socket = socket.try_clone().map_err(ControlError::Socket)?;
    socket.set_read_timeout(Some(Duration::from_millis(200))).map_err(ControlError::Socket)?;
    std::thread::Builder::new()
        .name("fovea-control-rx".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        link.send(ControlMsg::Datagram { data: buf[..n].to_vec(), from })
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                                | std::io::ErrorKind::ConnectionRefused
                        ) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "federation client socket failed");
                        return;
                    }
                }
            }
        })
        .map_err(ControlError::Socket)
}

impl ControlHandle {
    /// What `/metrics` and `/federation` read.
    pub fn status(&self) -> Arc<FederationStatus> {
        self.status.clone()
    }

    /// Closes the outgoing links and joins the threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // The channel may be full; the control thread also sees `stop` within its longest wait.
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.link.tx.send_timeout(ControlMsg::Stop, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
