//! Node configuration: a TOML file, overridden by flags and environment variables.
//!
//! Precedence: command-line flag, then environment variable (`FOVEA_*`), then the file, then
//! the defaults below. Unknown keys in the file are errors, so a typo never silently falls back
//! to a default. Every limit the node enforces is a key here; docs/OPERATIONS.md lists them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Top-level configuration file layout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Process-level settings.
    pub node: NodeSection,
    /// TLS certificate and key.
    pub tls: TlsSection,
    /// Credentials and permissions per realm (docs/OPERATIONS.md, "Security").
    pub auth: crate::auth::AuthSection,
    /// Every bound the node enforces.
    pub limits: Limits,
    /// Links to other bootstraps.
    pub federation: FederationSection,
}

/// `[federation]`: links to other bootstraps (docs/OPERATIONS.md, "Federation";
/// docs/decisions/0004-federation-links.md). Off unless `enabled` or `seeds` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FederationSection {
    /// Run the federation without seeds (a node that others dial).
    pub enabled: bool,
    /// Nodes to dial at start (and again after a link drops), `host:port` of their QUIC port.
    pub seeds: Vec<SocketAddr>,
    /// The QUIC address other nodes reach this one at; default: `node.listen` as bound (which
    /// must then not be a wildcard address on a multi-host federation).
    pub advertise: Option<SocketAddr>,
    /// Operator-chosen region label sent in ANNOUNCE.
    pub region: String,
    /// Anti-entropy digest to every member this often.
    pub sync_interval_ms: u64,
    /// ANNOUNCE (load, capacity) to every member this often.
    pub announce_interval_ms: u64,
    /// Hops a forwarded publish or call may take.
    pub max_hops: u8,
    /// SWIM probe period.
    pub probe_interval_ms: u64,
    /// SWIM: a probe unanswered this long goes indirect.
    pub probe_timeout_ms: u64,
    /// SWIM: a suspect member is declared down after this long.
    pub suspect_timeout_ms: u64,
    /// Remote clock stamps further ahead than this are rejected.
    pub max_clock_offset_ms: u64,
    /// First delay before dialing a seed or member again after a failure; doubles per failure.
    pub redial_min_ms: u64,
    /// Longest delay between dials.
    pub redial_max_ms: u64,
    /// CA file (PEM) that other nodes' certificates must chain to (a self-signed node's own
    /// `cert.pem` pins it). Unset: certificates are not verified (links are encrypted, not
    /// authenticated; a warning is logged).
    pub ca_file: Option<PathBuf>,
    /// Token our links present in HELLO (realm `fovea-federation`): protect that realm on the
    /// dialed nodes with an `[[auth.credentials]]` entry for it so only nodes holding the token
    /// can federate. Unset: no credential (the realm must then be open).
    pub token: Option<String>,
    /// TTL of the DHT records this node advertises (one per procedure it has providers for
    /// and per pattern it has subscribers for); republished at half of it.
    pub dht_record_ttl_s: u64,
    /// DHT requests (FIND_NODE, FIND_VALUE, STORE) one peer may make per second; beyond,
    /// ERROR RATE_LIMITED.
    pub dht_peer_requests_per_s: u32,
    /// Live records one peer may have stored through this node (STORE); beyond, ERROR
    /// RATE_LIMITED until one runs out.
    pub dht_peer_stores: usize,
}

impl Default for FederationSection {
    fn default() -> Self {
        FederationSection {
            enabled: false,
            seeds: Vec::new(),
            advertise: None,
            region: String::new(),
            sync_interval_ms: 1_000,
            announce_interval_ms: 10_000,
            max_hops: 4,
            probe_interval_ms: 1_000,
            probe_timeout_ms: 500,
            suspect_timeout_ms: 5_000,
            max_clock_offset_ms: 500,
            redial_min_ms: 250,
            redial_max_ms: 10_000,
            ca_file: None,
            token: None,
            dht_record_ttl_s: 3_600,
            dht_peer_requests_per_s: 20,
            dht_peer_stores: 16,
        }
    }
}

impl FederationSection {
    /// True when the node federates: `enabled`, or seeds given.
    pub fn is_enabled(&self) -> bool {
        self.enabled || !self.seeds.is_empty()
    }
}

/// `[node]`: addresses, threads, data directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// UDP address the QUIC listener binds (every shard binds it with `SO_REUSEPORT`).
    pub listen: SocketAddr,
    /// TCP address of the metrics and health endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub metrics: SocketAddr,
    /// Directory holding the generated certificate and the persistent keys.
    pub data_dir: PathBuf,
    /// Number of shards (data-plane threads); 0 means one per available core.
    pub shards: usize,
    /// Pin each shard thread to one core.
    pub pin_cores: bool,
    /// Force the legacy (epoll) monoio driver even where io_uring works.
    pub force_legacy_driver: bool,
    /// How long a draining node (SIGTERM) waits for queued deliveries before it exits.
    pub drain_timeout_ms: u64,
    /// Kernel socket buffer sizes requested per shard socket (the kernel may cap them).
    pub socket_recv_buffer_bytes: usize,
    /// See `socket_recv_buffer_bytes`.
    pub socket_send_buffer_bytes: usize,
    /// Use UDP GSO for several packets to one peer when the kernel supports it.
    pub gso: bool,
    /// Use UDP GRO (receive several datagrams of one sender as one buffer) when the kernel
    /// supports it.
    pub gro: bool,
}

/// `[tls]`: certificate and key files; a self-signed pair is generated in `data_dir` if unset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// PEM CA certificates that client certificates are verified against (mTLS); unset: the
    /// node does not ask for client certificates.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: a client without a valid certificate fails the handshake.
    pub require_client_cert: bool,
    /// How often the certificate, key and client CA files are checked for changes (new
    /// handshakes use the new files); 0: never reload.
    pub reload_interval_ms: u64,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            cert: None,
            key: None,
            client_ca: None,
            require_client_cert: false,
            reload_interval_ms: 2_000,
        }
    }
}

pub use fovea_fanout::SlowConsumerPolicy;

/// How the node picks a provider for a call.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProviderSelection {
    /// Each shard cycles through the providers.
    RoundRobin,
    /// A uniformly random provider.
    Random,
    /// A provider on the caller's shard if there is one, else round robin.
    LocalFirst,
}

/// `[limits]`: every bound, with its default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connected peers per node; further handshakes are refused with SERVER_FULL.
    pub max_peers: usize,
    /// Subscriptions per peer; further SUBSCRIBEs fail with TOO_MANY_SUBSCRIPTIONS.
    pub max_subscriptions_per_peer: usize,
    /// Largest PUBLISH payload in bytes (advertised in WELCOME).
    pub max_payload: usize,
    /// Longest topic or pattern in bytes.
    pub max_topic_len: usize,
    /// Deepest topic or pattern in segments.
    pub max_topic_depth: usize,
    /// Bytes of deliveries queued for one subscriber beyond what QUIC flow control accepts.
    pub send_budget_bytes: usize,
    /// Policy when `send_budget_bytes` is exceeded.
    pub slow_consumer: SlowConsumerPolicy,
    /// QUIC idle timeout.
    pub idle_timeout_ms: u64,
    /// Interval of the node's PINGs to each peer (keeps NAT bindings and measures RTT).
    pub keepalive_ms: u64,
    /// Time a connection has to complete the handshake and HELLO.
    pub hello_timeout_ms: u64,
    /// Unvalidated handshakes in progress per shard before the node answers with Retry.
    pub retry_threshold: usize,
    /// Frames decoded from one connection per loop turn (fairness between peers).
    pub frames_per_turn: usize,
    /// Longest a connection that only received waits for data to carry its ACK before the ACK
    /// goes alone, µs (0: acknowledge at once). Must stay below the 25 ms max_ack_delay the node
    /// advertises (docs/decisions/0007-deferred-acks.md).
    pub ack_delay_us: u64,
    /// Recent (publisher, message id) pairs remembered for duplicate suppression, per peer.
    pub dedup_window: usize,
    /// How long a message id is remembered for duplicate suppression.
    pub dedup_window_ms: u64,
    /// Messages queued from one shard to another before the sender stops reading publishers.
    pub cross_shard_queue: usize,
    /// Procedures one peer may provide; further REGISTERs fail with TOO_MANY_REGISTRATIONS.
    pub max_registrations_per_peer: usize,
    /// Calls one peer may have in flight; further CALLs fail with TOO_MANY_CALLS.
    pub max_inflight_calls_per_peer: usize,
    /// Deadline of a CALL that asks for none (timeout 0).
    pub rpc_default_timeout_ms: u64,
    /// Longest deadline a CALL may ask for (longer ones are cut to this).
    pub rpc_max_timeout_ms: u64,
    /// How providers are chosen.
    pub rpc_selection: ProviderSelection,
    /// Payload bytes per second one peer may relay through the node (SEND and CALL payloads;
    /// 0: unlimited); beyond it requests fail with RATE_LIMITED.
    pub relay_bytes_per_s: u64,
    /// Burst of `relay_bytes_per_s`.
    pub relay_burst_bytes: u64,
    /// PUNCH_REQUESTs per second one peer may make (0: unlimited).
    pub punch_rate_per_s: u64,
    /// Burst of `punch_rate_per_s`.
    pub punch_burst: u64,
    /// How far ahead of the introduction PUNCH's common start time lies (both peers must have
    /// received it by then).
    pub punch_lead_ms: u64,
    /// QUIC connection-level receive window in bytes.
    pub conn_window_bytes: u64,
    /// QUIC per-stream receive window in bytes.
    pub stream_window_bytes: u64,
    /// PUBLISHes per second one peer may send (0: unlimited); beyond it RATE_LIMITED.
    pub publish_rate_per_s: u64,
    /// Burst of `publish_rate_per_s`.
    pub publish_burst: u64,
    /// RATE_LIMITED publishes in a row after which the peer is closed with FLOOD (0: never).
    pub flood_after_violations: u64,
    /// New handshakes per second from one source IP address, per shard (0: unlimited).
    pub handshakes_per_ip_per_s: u64,
    /// Burst of `handshakes_per_ip_per_s`.
    pub handshake_burst_per_ip: u64,
    /// Open connections from one source IP address, per shard (0: unlimited).
    pub max_connections_per_ip: usize,
    /// Source addresses one shard tracks for the two limits above.
    pub ip_table_size: usize,
    /// Per-peer log lines (auth failures, denials, floods) per second and shard; the rest is
    /// counted, not written.
    pub log_lines_per_s: u64,
    /// Burst of `log_lines_per_s`.
    pub log_burst: u64,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            listen: "0.0.0.0:4433".parse().expect("valid literal"),
            metrics: "127.0.0.1:9090".parse().expect("valid literal"),
            data_dir: PathBuf::from("fovea-data"),
            shards: 0,
            pin_cores: true,
            force_legacy_driver: false,
            drain_timeout_ms: 5_000,
            socket_recv_buffer_bytes: 32 << 20,
            socket_send_buffer_bytes: 8 << 20,
            gso: true,
            gro: true,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_peers: 20_000,
            max_subscriptions_per_peer: 1_024,
            max_payload: 1 << 20,
            max_topic_len: 256,
            max_topic_depth: 16,
            send_budget_bytes: 4 << 20,
            slow_consumer: SlowConsumerPolicy::Drop,
            idle_timeout_ms: 30_000,
            keepalive_ms: 10_000,
            hello_timeout_ms: 5_000,
            retry_threshold: 512,
            frames_per_turn: 256,
            ack_delay_us: 1_000,
            dedup_window: 1_024,
            dedup_window_ms: 60_000,
            cross_shard_queue: 65_536,
            max_registrations_per_peer: 64,
            max_inflight_calls_per_peer: 1_024,
            rpc_default_timeout_ms: 30_000,
            rpc_max_timeout_ms: 300_000,
            rpc_selection: ProviderSelection::RoundRobin,
            relay_bytes_per_s: 16 << 20,
            relay_burst_bytes: 32 << 20,
            punch_rate_per_s: 2,
            punch_burst: 10,
            punch_lead_ms: 250,
            conn_window_bytes: 8 << 20,
            stream_window_bytes: 4 << 20,
            publish_rate_per_s: 0,
            publish_burst: 1_000,
            flood_after_violations: 100,
            handshakes_per_ip_per_s: 0,
            handshake_burst_per_ip: 100,
            max_connections_per_ip: 0,
            ip_table_size: 65_536,
            log_lines_per_s: 20,
            log_burst: 200,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys included).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// Parser message, with line and column.
        message: String,
    },
    /// A value is outside what the node can work with.
    #[error("invalid value for {key}: {reason}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl NodeConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let config: NodeConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks relationships between values that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let invalid = |key, reason| Err(ConfigError::Invalid { key, reason });
        if self.node.shards > crate::cid::SHARDS_MAX {
            return invalid("node.shards", "at most 64 shards");
        }
        if l.max_payload == 0 || l.max_payload > 16 << 20 {
            return invalid("limits.max_payload", "must be 1..=16 MiB");
        }
        if l.max_topic_len == 0 || l.max_topic_len > fovea_codec::limits::TOPIC_LEN_MAX {
            return invalid("limits.max_topic_len", "must be 1..=256");
        }
        if l.max_topic_depth == 0 || l.max_topic_depth > fovea_codec::limits::TOPIC_DEPTH_MAX {
            return invalid("limits.max_topic_depth", "must be 1..=16");
        }
        if l.max_peers == 0 {
            return invalid("limits.max_peers", "must be at least 1");
        }
        if l.ack_delay_us > 20_000 {
            return invalid("limits.ack_delay_us", "must be at most 20000 (below max_ack_delay)");
        }
        if l.frames_per_turn == 0 {
            return invalid("limits.frames_per_turn", "must be at least 1");
        }
        if l.idle_timeout_ms < 1_000 {
            return invalid("limits.idle_timeout_ms", "must be at least 1000");
        }
        if l.keepalive_ms == 0 || l.keepalive_ms >= l.idle_timeout_ms {
            return invalid("limits.keepalive_ms", "must be below idle_timeout_ms");
        }
        if l.relay_bytes_per_s > 0 && (l.relay_burst_bytes as usize) < l.max_payload {
            return invalid("limits.relay_burst_bytes", "must be at least max_payload");
        }
        if l.punch_rate_per_s > 0 && l.punch_burst == 0 {
            return invalid("limits.punch_burst", "must be at least 1");
        }
        if l.cross_shard_queue < 64 {
            return invalid("limits.cross_shard_queue", "must be at least 64");
        }
        if l.publish_rate_per_s > 0 && l.publish_burst == 0 {
            return invalid("limits.publish_burst", "must be at least 1");
        }
        if l.handshakes_per_ip_per_s > 0 && l.handshake_burst_per_ip == 0 {
            return invalid("limits.handshake_burst_per_ip", "must be at least 1");
        }
        if l.ip_table_size == 0 {
            return invalid("limits.ip_table_size", "must be at least 1");
        }
        if self.tls.require_client_cert && self.tls.client_ca.is_none() {
            return invalid("tls.require_client_cert", "needs tls.client_ca");
        }
        crate::auth::AuthTable::build(&self.auth)?;
        if l.max_subscriptions_per_peer > fovea_codec::limits::SUB_IDS_MAX {
            return invalid(
                "limits.max_subscriptions_per_peer",
                "at most 1024 (one DELIVER lists them all)",
            );
        }
        if (l.stream_window_bytes as usize)
            < l.max_payload + fovea_codec::limits::FRAME_OVERHEAD_MAX
        {
            return invalid("limits.stream_window_bytes", "must hold one max_payload frame");
        }
        self.validate_federation()
    }

    fn validate_federation(&self) -> Result<(), ConfigError> {
        let f = &self.federation;
        let invalid = |key, reason| Err(ConfigError::Invalid { key, reason });
        if !f.is_enabled() {
            return Ok(());
        }
        // Bit 63 of the shards' interest masks is the remote-interest bit.
        if self.node.shards > crate::cid::SHARDS_MAX - 1 {
            return invalid("node.shards", "at most 63 shards with federation");
        }
        if f.region.len() > fovea_codec::Limits::default().max_string {
            return invalid("federation.region", "too long for ANNOUNCE");
        }
        if f.max_hops == 0 {
            return invalid("federation.max_hops", "must be at least 1");
        }
        if f.sync_interval_ms == 0 || f.announce_interval_ms == 0 {
            return invalid("federation.sync_interval_ms", "intervals must be at least 1 ms");
        }
        if f.probe_interval_ms == 0 || f.probe_timeout_ms == 0 || f.suspect_timeout_ms == 0 {
            return invalid("federation.probe_interval_ms", "SWIM times must be at least 1 ms");
        }
        if f.probe_timeout_ms >= f.probe_interval_ms {
            return invalid("federation.probe_timeout_ms", "must be below probe_interval_ms");
        }
        if f.redial_min_ms == 0 || f.redial_max_ms < f.redial_min_ms {
            return invalid("federation.redial_max_ms", "must be at least redial_min_ms (> 0)");
        }
        if f.dht_record_ttl_s == 0 {
            return invalid("federation.dht_record_ttl_s", "must be at least 1 s");
        }
        Ok(())
    }

    /// Number of shards to run: the configured count, or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.node.shards > 0 {
            return self.node.shards;
        }
        // With federation, bit 63 of the interest masks is taken (see `validate`).
        let max = crate::cid::SHARDS_MAX - usize::from(self.federation.is_enabled());
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(NodeConfig::from_toml("", Path::new("x")).unwrap(), NodeConfig::default());
    }

    #[test]
    fn keys_override_defaults() {
        let c = NodeConfig::from_toml(
            "[node]\nlisten = \"127.0.0.1:5000\"\n[limits]\nmax_peers = 7\nslow_consumer = \"disconnect\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.node.listen.port(), 5000);
        assert_eq!(c.limits.max_peers, 7);
        assert_eq!(c.limits.slow_consumer, SlowConsumerPolicy::Disconnect);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = NodeConfig::from_toml("[limits]\nmax_peer = 7\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("max_peer"), "{e}");
        assert!(NodeConfig::from_toml("[nod]\n", Path::new("x")).is_err());
    }

    #[test]
    fn inconsistent_values_are_errors() {
        let e =
            NodeConfig::from_toml("[limits]\nkeepalive_ms = 40000\n", Path::new("x")).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { key: "limits.keepalive_ms", .. }), "{e}");
        let e = NodeConfig::from_toml("[limits]\nmax_payload = 0\n", Path::new("x")).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { key: "limits.max_payload", .. }), "{e}");
    }

    #[test]
    fn federation_is_on_with_seeds_or_enabled_and_checks_its_keys() {
        let off = NodeConfig::from_toml("", Path::new("x")).unwrap();
        assert!(!off.federation.is_enabled());
        let seeded = NodeConfig::from_toml(
            "[federation]\nseeds = [\"127.0.0.1:4434\", \"[::1]:4435\"]\nregion = \"eu-west\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert!(seeded.federation.is_enabled());
        assert_eq!(seeded.federation.seeds.len(), 2);
        assert_eq!(seeded.federation.region, "eu-west");
        let enabled =
            NodeConfig::from_toml("[federation]\nenabled = true\n", Path::new("x")).unwrap();
        assert!(enabled.federation.is_enabled() && enabled.federation.seeds.is_empty());
        let e = NodeConfig::from_toml("[federation]\nseed = []\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("seed"), "{e}");
        let e = NodeConfig::from_toml(
            "[node]\nshards = 64\n[federation]\nenabled = true\n",
            Path::new("x"),
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { key: "node.shards", .. }), "{e}");
        let e = NodeConfig::from_toml(
            "[federation]\nenabled = true\nprobe_timeout_ms = 2000\n",
            Path::new("x"),
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { key: "federation.probe_timeout_ms", .. }));
    }
}
