//! Starting and stopping a node: identity, sockets, one thread per shard, the HTTP endpoint,
//! and the drain on SIGTERM.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cid::ResetKey;
use crate::config::NodeConfig;
use crate::driver::{self, StopFlag};
use crate::http::{self, HttpState};
use crate::mesh::Mesh;
use crate::metrics::ShardMetrics;
use crate::shard::{NodeShared, Shard, ShardContext};

/// A running node.
pub struct Node {
    /// Address the QUIC listener is bound to.
    pub quic_addr: SocketAddr,
    /// Address of the HTTP endpoint.
    pub http_addr: SocketAddr,
    http: Arc<HttpState>,
    shared: Arc<NodeShared>,
    stops: Vec<Arc<StopFlag>>,
    threads: Vec<std::thread::JoinHandle<driver::IoDriver>>,
    drain_timeout: Duration,
    control: Option<crate::control::ControlHandle>,
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Data directory, certificate or key.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Binding a socket.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The federation control thread.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// TLS configuration (certificate or key unusable).
    #[error("QUIC/TLS configuration: {0}")]
    Quic(quiche::Error),
    /// A configuration value the node cannot use (e.g. a credential).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl Node {
    /// Starts every shard and the HTTP endpoint; returns once the sockets are bound.
    pub fn start(config: NodeConfig) -> Result<Node, StartError> {
        // The library refuses what the binary refuses (e.g. federation.max_hops = 0, which
        // would silently stop every forward).
        config.validate()?;
        let shards = config.shard_count();
        let identity = crate::identity::load_or_create(
            &config.node.data_dir,
            config.tls.cert.as_deref(),
            config.tls.key.as_deref(),
        )?;
        if identity.self_signed {
            tracing::warn!(
                cert = %identity.cert_path.display(),
                "no tls.cert/tls.key configured: using a SELF-SIGNED certificate; peers must pin it or run with --insecure"
            );
        }
        let sockets = crate::steer::bind_shard_sockets(
            config.node.listen,
            shards,
            config.node.socket_recv_buffer_bytes,
            config.node.socket_send_buffer_bytes,
        )
        .map_err(|source| StartError::Bind { addr: config.node.listen, source })?;
        let quic_addr = sockets[0]
            .local_addr()
            .map_err(|source| StartError::Bind { addr: config.node.listen, source })?;
        let gso = config.node.gso && crate::steer::gso_supported(&sockets[0]);
        // Per socket: a shard sizes its receive slots for GRO only if its own socket has it.
        let gro: Vec<bool> =
            sockets.iter().map(|s| config.node.gro && crate::udp::enable_gro(s)).collect();
        let use_uring = !config.node.force_legacy_driver && driver::io_uring_available();
        let driver_name = if use_uring { "io_uring" } else { "legacy" };
        let metrics: Vec<Arc<ShardMetrics>> =
            (0..shards).map(|_| Arc::new(ShardMetrics::default())).collect();
        let http_state = Arc::new(HttpState {
            shards: metrics.clone(),
            ready: std::sync::atomic::AtomicBool::new(false),
            driver: driver_name,
            federation: std::sync::OnceLock::new(),
        });
        let http_addr = http::serve(config.node.metrics, http_state.clone())
            .map_err(|source| StartError::Bind { addr: config.node.metrics, source })?;
        let mesh = Mesh::new(shards, (config.limits.cross_shard_queue / 16).max(64));
        let shared = Arc::new(NodeShared::default());
        let reset_key = ResetKey::new(&identity.reset_secret);
        let cores = if config.node.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let auth =
            Arc::new(crate::auth::AuthTable::build(&config.auth).map_err(StartError::Config)?);
        let tls_source = crate::tls::TlsSource::new(shards);
        crate::tls::spawn_reloader(&config, &identity, &tls_source, metrics[0].clone());
        let control = config.federation.is_enabled().then(crate::control::ControlChannel::new);
        let control_link = control.as_ref().map(|c| c.link());
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        let gro_all = gro.iter().all(|&g| g);
        for (index, socket) in sockets.into_iter().enumerate() {
            let offload = crate::udp::Offload { gso, gro: gro[index] };
            let quic_config =
                crate::quic::server_config(&config, &identity).map_err(StartError::Quic)?;
            let ctx = ShardContext {
                index,
                shards,
                limits: config.limits.clone(),
                node_id: identity.node_id,
                reset_key: reset_key.clone(),
                shared: shared.clone(),
                metrics: metrics[index].clone(),
                local_addr: quic_addr,
                wall_clock: crate::shard::wall_clock_now(),
            };
            let stop = Arc::new(StopFlag::default());
            stops.push(stop.clone());
            let mesh = mesh.clone();
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let force_legacy = config.node.force_legacy_driver;
            let control_link = control_link.clone();
            let (auth, tls_source) = (auth.clone(), tls_source.clone());
            let thread = std::thread::Builder::new()
                .name(format!("fovea-shard-{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::warn!(shard = index, "could not pin to a core");
                        }
                    }
                    let mut shard = Shard::new(ctx, quic_config, Instant::now());
                    shard.set_security(auth, Some(tls_source));
                    let shard = with_control(shard, control_link);
                    driver::run(shard, socket, mesh, stop, offload, force_legacy)
                })
                .expect("spawn shard thread");
            threads.push(thread);
        }
        let control = match control {
            Some(channel) => {
                let params = crate::control::ControlParams {
                    config: config.clone(),
                    node_id: identity.node_id,
                    advertise: config.federation.advertise.unwrap_or(quic_addr),
                    mesh: mesh.clone(),
                    shared: shared.clone(),
                };
                let handle = crate::control::start(channel, params)?;
                let _ = http_state.federation.set(handle.status());
                Some(handle)
            }
            None => None,
        };
        http_state.ready.store(true, Ordering::Relaxed);
        tracing::info!(%quic_addr, %http_addr, shards, driver = driver_name, gso, gro = gro_all, "fovea node listening");
        Ok(Node {
            quic_addr,
            http_addr,
            http: http_state,
            shared,
            stops,
            threads,
            drain_timeout: Duration::from_millis(config.node.drain_timeout_ms),
            control,
        })
    }

    /// Drains and stops: readiness fails at once, new connections are refused, queued
    /// deliveries are flushed, peers get GOODBYE, and every shard exits by the deadline.
    pub fn shutdown(self) {
        self.http.ready.store(false, Ordering::Relaxed);
        self.shared.draining.store(true, Ordering::Relaxed);
        // Outgoing federation links close first; the peers' nodes see them go at once.
        if let Some(control) = self.control {
            control.stop();
        }
        let deadline = Instant::now() + self.drain_timeout;
        for s in &self.stops {
            s.drain(deadline);
        }
        for t in self.threads {
            let _ = t.join();
        }
        tracing::info!("fovea node stopped");
    }
}

/// Connects a shard to the control thread when the node federates.
fn with_control(mut shard: Shard, link: Option<crate::control::ControlLink>) -> Shard {
    if let Some(link) = link {
        shard.set_control(link);
    }
    shard
}
