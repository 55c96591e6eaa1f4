//! Command-line arguments, and turning them into client options.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fovea_client::codec::Realm;
use fovea_client::{ConnectOptions, Credential, Verify};

use crate::Usage;

const EXIT_CODES: &str = "\
Exit codes: 0 success; 1 the node refused the request or closed the connection (the error \
code's name is printed); 2 usage or connection errors (bad address, nothing answering, \
certificate not trusted); 3 `sub --count N` ended by --duration before N deliveries.";

#[derive(Parser, Debug)]
#[command(
    name = "fovea-cli",
    version,
    about = "Talk to a Fovea node: publish, subscribe, call, ping, stats",
    after_help = EXIT_CODES
)]
pub(crate) struct Cli {
    /// The node's QUIC address, ADDRESS:PORT or HOST:PORT; several (comma-separated or
    /// repeated) are tried in order, with a short backoff, until one gives a session.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:4433",
        env = "FOVEA_NODE",
        value_delimiter = ','
    )]
    pub(crate) node: Vec<String>,
    /// Realm to join.
    #[arg(long, global = true, default_value = "default")]
    pub(crate) realm: String,
    /// Do not verify the node's certificate (a test node with its self-signed certificate).
    #[arg(long, global = true, conflicts_with = "ca")]
    pub(crate) insecure: bool,
    /// CA certificate (PEM) to verify the node with; a node's own fovea-data/cert.pem pins it.
    /// Without --ca or --insecure the system's CA store is used.
    #[arg(long, global = true)]
    pub(crate) ca: Option<PathBuf>,
    /// TLS server name (default: the host of --node, or `localhost` for an IP address).
    #[arg(long, global = true)]
    pub(crate) server_name: Option<String>,
    /// Peer id as 64 hex digits (random by default).
    #[arg(long, global = true, value_parser = parse_peer_id)]
    pub(crate) peer_id: Option<[u8; 32]>,
    /// Bearer token of a token credential (the node stores its SHA-256 as `token_sha256`).
    /// Other users of this host may see it in the process list: prefer --token-file or the
    /// environment.
    #[arg(
        long,
        global = true,
        env = "FOVEA_TOKEN",
        hide_env_values = true,
        conflicts_with_all = ["token_file", "key"]
    )]
    pub(crate) token: Option<String>,
    /// File holding the token (one trailing newline is ignored).
    #[arg(long, global = true, env = "FOVEA_TOKEN_FILE", conflicts_with = "key")]
    pub(crate) token_file: Option<PathBuf>,
    /// Ed25519 private key file of a public-key credential: 64 hex digits, or PKCS#8 PEM. HELLO
    /// carries its public key and the node's CHALLENGE is signed with it. `fovea-cli keygen
    /// FILE` makes one and prints the public key for the node's `[[auth.credentials]]`.
    #[arg(long, global = true, env = "FOVEA_KEY")]
    pub(crate) key: Option<PathBuf>,
    /// One JSON object per result line instead of human output.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Bound on connecting and on each answer: seconds (`2.5`) or a duration (`500ms`, `1m`).
    #[arg(long, global = true, default_value = "5", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Publish MESSAGE to TOPIC and wait for the node's OK.
    Pub {
        /// Topic, e.g. `sensors.kitchen.temp`.
        topic: String,
        /// Payload, or `-` to read it from standard input.
        message: String,
        /// Message id for the node's duplicate suppression.
        #[arg(long)]
        message_id: Option<u64>,
    },
    /// Subscribe to patterns (sub ids 1..n, one connection) and print deliveries as they come.
    ///
    /// Human output: `topic: payload` (payload as lossy UTF-8). With --json, one object per
    /// delivery: `topic`, `payload` (the text, or lowercase hex when it is not UTF-8),
    /// `payload_encoding` (`utf8` or `hex`), `patterns` (this connection's patterns the
    /// delivery matched), `sub_ids`, `message_id`. "subscribed to ..." goes to stderr once
    /// every subscription is acknowledged, so scripts can publish after reading it.
    Sub {
        /// Patterns (`*` one segment, `**` zero or more).
        #[arg(required = true)]
        patterns: Vec<String>,
        /// Exit after this many deliveries.
        #[arg(long)]
        count: Option<u64>,
        /// Exit after this long: seconds or a duration (`30s`). With --count, running out of
        /// time first exits with code 3.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Call a procedure registered by some peer and print its reply.
    Call {
        /// Procedure name, e.g. `math.add`.
        procedure: String,
        /// Arguments (the payload), or `-` to read them from standard input.
        #[arg(default_value = "")]
        args: String,
        /// The call's deadline at the node in milliseconds (0: the node's default).
        #[arg(long, default_value_t = 0)]
        deadline_ms: u64,
        /// The node may retry the call on another provider if the first disconnects.
        #[arg(long)]
        idempotent: bool,
    },
    /// Measure round trips to the node with PING/PONG (min/avg/p50/max).
    Ping {
        /// Number of pings.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
    },
    /// Summarise the node's `fovea_*` metrics (its Prometheus endpoint).
    Stats {
        /// The metrics endpoint, ADDRESS:PORT or HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:9090")]
        metrics: String,
    },
    /// List the node's federation members: state, region, load and capacity (its
    /// `/federation` endpoint on the metrics port).
    Members {
        /// The metrics endpoint, ADDRESS:PORT or HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:9090")]
        metrics: String,
    },
    /// List the peers that relayed the most through the node (SEND and CALL payloads in their
    /// current session; up to 32 per shard, refreshed each second; its `/relay` endpoint).
    Relay {
        /// The metrics endpoint, ADDRESS:PORT or HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:9090")]
        metrics: String,
    },
    /// Generate an Ed25519 key pair for --key: writes the private key to FILE (mode 0600) and
    /// prints the `ed25519_public_key = "..."` line for the node's `[[auth.credentials]]`.
    Keygen {
        /// Where to write the private key (refused if it exists, unless --force).
        file: PathBuf,
        /// Overwrite an existing FILE.
        #[arg(long)]
        force: bool,
    },
    /// Print the `ed25519_public_key = "..."` line of an existing private key file.
    Pubkey {
        /// The private key file (as --key takes it).
        file: PathBuf,
    },
}

/// Seconds as a number (`2`, `0.5`) or a humantime duration (`500ms`, `2s`, `1m`); positive.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => Duration::from_secs_f64(secs),
        Ok(_) => return Err(format!("{s:?} is not a positive number of seconds")),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("{s:?} is neither seconds nor a duration like 500ms: {e}"))?,
    };
    if d.is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(d)
}

fn parse_peer_id(s: &str) -> Result<[u8; 32], String> {
    let err = || format!("{s:?} is not 64 hex digits");
    if s.len() != 64 || !s.is_ascii() {
        return Err(err());
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err())?;
    }
    Ok(id)
}

/// Resolves `ADDRESS:PORT` or `HOST:PORT` (first address), naming the flag in errors.
pub(crate) fn resolve(flag: &str, s: &str) -> Result<SocketAddr, Usage> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let not_an_address = |detail: String| {
        Usage(format!("{flag} {s:?} is not an ADDRESS:PORT or HOST:PORT address ({detail})"))
    };
    // A string without a port never resolves; say so rather than "invalid socket address".
    if s.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
        return Err(not_an_address("missing or invalid port".into()));
    }
    let mut addrs = s.to_socket_addrs().map_err(|e| not_an_address(e.to_string()))?;
    addrs.next().ok_or_else(|| not_an_address("the name has no address".into()))
}

impl Cli {
    /// The nodes' addresses, in the order to try them, each with the string it came from
    /// (for the TLS server name). All are checked before anything connects.
    pub(crate) fn node_addrs(&self) -> Result<Vec<(String, SocketAddr)>, Usage> {
        let nodes: Vec<&str> =
            self.node.iter().map(|n| n.trim()).filter(|n| !n.is_empty()).collect();
        if nodes.is_empty() {
            return Err(Usage("--node needs an ADDRESS:PORT or HOST:PORT address".into()));
        }
        nodes.into_iter().map(|n| Ok((n.to_owned(), resolve("--node", n)?))).collect()
    }

    /// Client options from the global flags, for the first node.
    #[cfg(test)]
    pub(crate) fn connect_options(&self) -> Result<ConnectOptions, Usage> {
        self.connect_options_for(&self.node[0], &self.credential()?)
    }

    /// HELLO's credential from --token, --token-file or --key (read once per run: the files
    /// are read here).
    pub(crate) fn credential(&self) -> Result<Credential, Usage> {
        if let Some(token) = &self.token {
            return token_credential("--token", token.as_bytes().to_vec());
        }
        if let Some(path) = &self.token_file {
            let mut token = std::fs::read(path)
                .map_err(|e| Usage(format!("--token-file {}: {e}", path.display())))?;
            if token.ends_with(b"\n") {
                token.pop();
                if token.ends_with(b"\r") {
                    token.pop();
                }
            }
            return token_credential("--token-file", token);
        }
        if let Some(path) = &self.key {
            return Ok(Credential::Ed25519(crate::keys::load(path)?));
        }
        Ok(Credential::None)
    }

    /// Client options from the global flags and `credential`, for connecting to `node`.
    pub(crate) fn connect_options_for(
        &self,
        node: &str,
        credential: &Credential,
    ) -> Result<ConnectOptions, Usage> {
        let realm: Realm = self
            .realm
            .parse()
            .map_err(|e| Usage(format!("--realm {:?} is not a valid realm: {e}", self.realm)))?;
        let mut options = ConnectOptions { request_timeout: self.timeout, ..Default::default() };
        options.config.realm = realm;
        options.config.peer_id = self.peer_id;
        options.config.credential = credential.clone();
        options.config.client_name = concat!("fovea-cli/", env!("CARGO_PKG_VERSION")).to_owned();
        options.config.verify = match (&self.ca, self.insecure) {
            (_, true) => Verify::Insecure,
            (Some(ca), false) => Verify::CaFile(ca.clone()),
            (None, false) => Verify::System,
        };
        options.server_name =
            Some(self.server_name.clone().unwrap_or_else(|| default_server_name(node)));
        Ok(options)
    }
}

/// A token credential, refused early when HELLO could not carry it.
fn token_credential(flag: &str, token: Vec<u8>) -> Result<Credential, Usage> {
    let max = fovea_client::codec::Limits::default().max_credential;
    if token.is_empty() {
        return Err(Usage(format!("{flag}: the token is empty")));
    }
    if token.len() > max {
        return Err(Usage(format!("{flag}: the token is longer than {max} bytes")));
    }
    Ok(Credential::Token(token.into()))
}

/// The host part of a --node address when it is a name, else `localhost` (what the node's
/// self-signed certificate names).
fn default_server_name(node: &str) -> String {
    if node.parse::<SocketAddr>().is_ok() {
        return "localhost".to_owned();
    }
    match node.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => host.to_owned(),
        _ => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_or_humantime() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        for bad in ["0", "-1", "NaN", "inf", "soon", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_ids_are_64_hex_digits() {
        let id = parse_peer_id(&"ab".repeat(32)).unwrap();
        assert_eq!(id, [0xab; 32]);
        assert!(parse_peer_id("ab").is_err());
        assert!(parse_peer_id(&"zz".repeat(32)).is_err());
        assert!(parse_peer_id(&"é".repeat(32)).is_err());
    }

    #[test]
    fn addresses_resolve_or_say_why_not() {
        assert_eq!(resolve("--node", "127.0.0.1:4433").unwrap(), "127.0.0.1:4433".parse().unwrap());
        assert_eq!(resolve("--node", "[::1]:4433").unwrap(), "[::1]:4433".parse().unwrap());
        assert!(resolve("--node", "localhost:4433").unwrap().ip().is_loopback());
        let e = resolve("--node", "not-an-address").unwrap_err();
        assert!(e.0.contains("is not an ADDRESS:PORT") && e.0.contains("port"), "{}", e.0);
        assert!(resolve("--node", "127.0.0.1:99999").is_err());
    }

    #[test]
    fn the_server_name_follows_a_host_name() {
        let cli = |node: &str| Cli::try_parse_from(["fovea-cli", "--node", node, "ping"]).unwrap();
        assert_eq!(default_server_name("node.example:4433"), "node.example");
        assert_eq!(default_server_name("127.0.0.1:4433"), "localhost");
        let list = cli("127.0.0.1:1,127.0.0.1:2").node_addrs().unwrap();
        assert_eq!(list.iter().map(|(_, a)| a.port()).collect::<Vec<_>>(), vec![1, 2]);
        assert!(cli("127.0.0.1:1,nonsense").node_addrs().is_err(), "all are checked first");
        let o = cli("node.example:4433").connect_options().unwrap();
        assert_eq!(o.server_name.as_deref(), Some("node.example"));
    }

    #[test]
    fn insecure_and_ca_exclude_each_other() {
        let r = Cli::try_parse_from(["fovea-cli", "--insecure", "--ca", "x.pem", "ping"]);
        assert!(r.is_err());
    }

    #[test]
    fn one_credential_at_most_and_tokens_go_into_hello() {
        for args in [
            &["fovea-cli", "--token", "t", "--key", "k", "ping"][..],
            &["fovea-cli", "--token", "t", "--token-file", "f", "ping"][..],
            &["fovea-cli", "--token-file", "f", "--key", "k", "ping"][..],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        let cli = Cli::try_parse_from(["fovea-cli", "ping", "--token", "s3cret"]).unwrap();
        let o = cli.connect_options().unwrap();
        assert_eq!(o.config.credential, Credential::Token(b"s3cret".to_vec().into()));
        let cli = Cli::try_parse_from(["fovea-cli", "--token", "", "ping"]).unwrap();
        assert!(cli.credential().unwrap_err().0.contains("empty"));
        let dir = std::env::temp_dir().join(format!("fovea-cli-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-a-file\r\n").unwrap();
        let cli =
            Cli::try_parse_from(["fovea-cli", "--token-file", file.to_str().unwrap(), "ping"])
                .unwrap();
        assert_eq!(cli.credential().unwrap(), Credential::Token(b"from-a-file".to_vec().into()));
        let missing = dir.join("missing");
        let cli =
            Cli::try_parse_from(["fovea-cli", "--key", missing.to_str().unwrap(), "ping"]).unwrap();
        assert!(cli.credential().unwrap_err().0.contains("missing"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            Cli::try_parse_from(["fovea-cli", "ping"]).unwrap().credential().unwrap(),
            Credential::None
        );
    }
}
