//! `fovea`: the node operators run on a bootstrap host.
//!
//! `fovea` with no arguments listens for QUIC on UDP 0.0.0.0:4433, generates a self-signed
//! certificate in `./fovea-data` on first start, and serves metrics on 127.0.0.1:9090.
//! docs/OPERATIONS.md describes every key and flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fovea_engine::config::NodeConfig;

// `--no-default-features` builds with the system allocator, which heap profilers
// (valgrind's massif and dhat) see; mimalloc maps its own pages.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flags override the config file; each flag also reads a `FOVEA_*` environment variable.
#[derive(Parser, Debug)]
#[command(
    name = "fovea",
    version,
    about = "Fovea: the data-plane node of a QUIC pub/sub and RPC mesh"
)]
struct Args {
    /// TOML configuration file (unknown keys are errors).
    #[arg(long, env = "FOVEA_CONFIG")]
    config: Option<PathBuf>,
    /// Validate a configuration file and exit (0 when valid).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// UDP address for QUIC (default 0.0.0.0:4433).
    #[arg(long, env = "FOVEA_LISTEN")]
    listen: Option<SocketAddr>,
    /// TCP address for /metrics, /healthz and /readyz (default 127.0.0.1:9090).
    #[arg(long, env = "FOVEA_METRICS")]
    metrics: Option<SocketAddr>,
    /// Directory for the certificate and persistent keys (default ./fovea-data).
    #[arg(long, env = "FOVEA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Number of shards (default: one per core).
    #[arg(long, env = "FOVEA_SHARDS")]
    shards: Option<usize>,
    /// Use the legacy epoll driver instead of io_uring.
    #[arg(long, env = "FOVEA_FORCE_LEGACY_DRIVER")]
    force_legacy_driver: bool,
    /// Do not pin shard threads to cores.
    #[arg(long, env = "FOVEA_NO_PIN")]
    no_pin: bool,
    /// Federation seed to dial, `ADDR:PORT` of another node's QUIC port; repeatable, added
    /// to `federation.seeds` (and turns federation on).
    #[arg(long = "seed", value_name = "ADDR:PORT")]
    seeds: Vec<SocketAddr>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `fovea_engine=debug`.
    #[arg(long, env = "FOVEA_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        // stdout carries only the readiness line; logs go to stderr.
        .with_writer(std::io::stderr)
        .init();
    if let Some(path) = &args.check_config {
        return match NodeConfig::from_file(path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    let mut config = match &args.config {
        Some(path) => match NodeConfig::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => NodeConfig::default(),
    };
    if let Some(v) = args.listen {
        config.node.listen = v;
    }
    if let Some(v) = args.metrics {
        config.node.metrics = v;
    }
    if let Some(v) = args.data_dir {
        config.node.data_dir = v;
    }
    if let Some(v) = args.shards {
        config.node.shards = v;
    }
    if args.force_legacy_driver {
        config.node.force_legacy_driver = true;
    }
    if args.no_pin {
        config.node.pin_cores = false;
    }
    for seed in &args.seeds {
        if !config.federation.seeds.contains(seed) {
            config.federation.seeds.push(*seed);
        }
    }
    if let Err(e) = config.validate() {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let node = match fovea_engine::node::Node::start(config) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("fovea: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Readiness line on stdout: tests and scripts wait for it instead of sleeping.
    println!("fovea ready quic={} metrics={}", node.quic_addr, node.http_addr);
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "draining");
    }
    node.shutdown();
    ExitCode::SUCCESS
}
