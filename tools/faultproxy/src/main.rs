//! `fovea-faultproxy`: a fault-injecting UDP proxy between clients and a node.
//!
//! Prints `fovea-faultproxy ready listen=ADDR upstream=ADDR seed=N` on stdout once it listens,
//! its counters on stderr every `--stats-every` and on exit (SIGINT, SIGTERM). Exit codes: 0
//! after a signal, 2 for usage or configuration errors, 1 when it cannot start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use fovea_faultproxy::{Faults, Proxy, ProxyConfig, RateLimit, Script, DEFAULT_REORDER_DELAY};

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (examples: 20ms, 1.5s, 2m)"))
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err("must be between 0 and 1 (0.05 is 5 %)".into())
    }
}

/// A fault-injecting UDP proxy (loss, delay, reordering, duplication, blackholes, bandwidth
/// caps, NAT rebinding). The fault flags apply to both directions from the start; a --script
/// changes them over time, per direction (tools/faultproxy/README.md).
#[derive(Parser, Debug)]
#[command(name = "fovea-faultproxy", version)]
struct Args {
    /// Address clients send to.
    #[arg(long, env = "FAULTPROXY_LISTEN", default_value = "127.0.0.1:4434")]
    listen: SocketAddr,
    /// The node's address.
    #[arg(long, env = "FAULTPROXY_UPSTREAM", default_value = "127.0.0.1:4433")]
    upstream: SocketAddr,
    /// Seed of every random decision (default: random, printed on the ready line).
    #[arg(long)]
    seed: Option<u64>,
    /// TOML schedule of fault phases.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Exit after the script's last phase plus this long (default: run until a signal).
    #[arg(long, value_parser = duration)]
    exit_after_script: Option<Duration>,
    /// Validate the --script file and exit (0 valid, 2 invalid).
    #[arg(long)]
    check: bool,
    /// Loss probability, both ways (0.05 = 5 %).
    #[arg(long, value_parser = probability, default_value_t = 0.0)]
    loss: f64,
    /// Added one-way delay, both ways.
    #[arg(long, value_parser = duration)]
    delay: Option<Duration>,
    /// Delay varies uniformly within ± this.
    #[arg(long, value_parser = duration)]
    jitter: Option<Duration>,
    /// Probability that a datagram is held back by --reorder-delay.
    #[arg(long, value_parser = probability, default_value_t = 0.0)]
    reorder: f64,
    /// Hold-back of a reordered datagram.
    #[arg(long, value_parser = duration)]
    reorder_delay: Option<Duration>,
    /// Probability that a datagram is sent twice.
    #[arg(long, value_parser = probability, default_value_t = 0.0)]
    duplicate: f64,
    /// Bandwidth cap in bytes per second, each way.
    #[arg(long)]
    rate: Option<u64>,
    /// Token-bucket burst of the cap in bytes (default: 50 ms worth, at least 3000).
    #[arg(long, requires = "rate")]
    burst: Option<u64>,
    /// Bytes queued behind the cap before tail drop (default: 250 ms worth, at least 64 KiB).
    #[arg(long, requires = "rate")]
    queue: Option<u64>,
    /// Drop datagrams with a UDP payload longer than this.
    #[arg(long)]
    mtu: Option<usize>,
    /// Rebind every client's upstream port this often.
    #[arg(long, value_parser = duration)]
    rebind_every: Option<Duration>,
    /// Memory cap of delayed datagrams, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_queued_bytes: usize,
    /// Clients served at once.
    #[arg(long, default_value_t = 4096)]
    max_clients: usize,
    /// A client silent this long loses its upstream socket.
    #[arg(long, value_parser = duration, default_value = "5m")]
    client_idle: Duration,
    /// Print the counters this often (0s: only on exit).
    #[arg(long, value_parser = duration, default_value = "10s")]
    stats_every: Duration,
}

impl Args {
    fn faults(&self) -> Faults {
        Faults {
            loss: self.loss,
            delay: self.delay.unwrap_or_default(),
            jitter: self.jitter.unwrap_or_default(),
            reorder: self.reorder,
            reorder_delay: self.reorder_delay.unwrap_or(DEFAULT_REORDER_DELAY),
            duplicate: self.duplicate,
            blackhole: false,
            rate: self.rate.map(|r| {
                let mut l = RateLimit::new(r);
                l.burst = self.burst.unwrap_or(l.burst);
                l.queue = self.queue.unwrap_or(l.queue);
                l
            }),
            mtu: self.mtu,
        }
    }
}

enum Wake {
    Signal(i32),
    ScriptDone,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let script = match &args.script {
        Some(path) => match Script::load(path) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("fovea-faultproxy: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    if args.check {
        if script.is_none() {
            eprintln!("fovea-faultproxy: --check needs --script FILE");
            return ExitCode::from(2);
        }
        println!("script ok");
        return ExitCode::SUCCESS;
    }
    let faults = args.faults();
    if let Err(e) = faults.validate() {
        eprintln!("fovea-faultproxy: {e}");
        return ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut config = ProxyConfig::new(args.listen, args.upstream);
    config.seed = seed;
    config.up = faults.clone();
    config.down = faults;
    config.max_queued_bytes = args.max_queued_bytes;
    config.max_clients = args.max_clients;
    config.client_idle_timeout = args.client_idle;
    config.rebind_every = args.rebind_every.filter(|d| !d.is_zero());

    let (tx, rx) = mpsc::channel();
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fovea-faultproxy: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signal_tx = tx.clone();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _ = signal_tx.send(Wake::Signal(sig));
        }
    });

    let proxy = match Proxy::start(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fovea-faultproxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(script) = script {
        if let Some(extra) = args.exit_after_script {
            let total = script.length() + extra;
            std::thread::spawn(move || {
                // Only a timer for the exit: the script itself runs on the proxy's thread.
                std::thread::sleep(total);
                let _ = tx.send(Wake::ScriptDone);
            });
        }
        if let Err(e) = proxy.run_script(script) {
            eprintln!("fovea-faultproxy: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Readiness line: scripts wait for it instead of sleeping.
    println!(
        "fovea-faultproxy ready listen={} upstream={} seed={seed}",
        proxy.local_addr(),
        proxy.upstream()
    );
    let every = (!args.stats_every.is_zero()).then_some(args.stats_every);
    loop {
        let wake = match every {
            Some(d) => rx.recv_timeout(d),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match wake {
            Ok(Wake::Signal(sig)) => {
                eprintln!("fovea-faultproxy: signal {sig}, stopping");
                break;
            }
            Ok(Wake::ScriptDone) => {
                eprintln!("fovea-faultproxy: script done, stopping");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("[{:.1?}]\n{}", proxy.elapsed(), proxy.counters());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let elapsed = proxy.elapsed();
    let counters = proxy.shutdown();
    eprintln!("final after {elapsed:.1?}\n{counters}");
    ExitCode::SUCCESS
}
