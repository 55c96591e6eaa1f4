//! `fovea-flood`: the load generator's command line. Exit codes: 0 the run kept every promise,
//! 1 messages were lost, duplicated or reordered (or connections failed) where the scenario
//! promises none, 2 usage or connection errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fovea_flood::conn::Tls;
use fovea_flood::params::{self, Churn, Common, Connect, Fanout, Pingpong, Rpc};
use fovea_flood::schedule::Arrivals;
use fovea_flood::FloodError;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "fovea-flood", version, about = "Open-loop load generator for Fovea nodes")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Node QUIC address; several (comma-separated or repeated) are tried in order: every
    /// connection starts on the first, and one that fails moves to the next after a backoff.
    #[arg(long, global = true, default_value = "127.0.0.1:4433")]
    node: Vec<String>,
    /// Attempts a failed connection gets, each on the next node (default: 5 with several
    /// nodes, 0 with one: a failure is final).
    #[arg(long, global = true)]
    reconnect_attempts: Option<u32>,
    /// Do not verify the node's certificate (needed for a node's self-signed certificate).
    #[arg(long, global = true)]
    insecure: bool,
    /// CA certificate (PEM) to verify the node with.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Realm named in HELLO.
    #[arg(long, global = true, default_value = "default")]
    realm: String,
    /// Worker threads (one runtime and one UDP socket each).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, global = true, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of traffic before measuring (excluded from rates and latencies).
    #[arg(long, global = true, default_value_t = 2.0)]
    warmup: f64,
    /// Seed for Poisson schedules.
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
    /// Seconds allowed for connecting before giving up.
    #[arg(long, global = true, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Seconds to wait for in-flight messages once sending stops.
    #[arg(long, global = true, default_value_t = 5.0)]
    drain_timeout: f64,
    /// Seconds the connections stay open and idle after the scenario (and its drain) is done,
    /// before they close: for reading the node's memory per peer after traffic.
    #[arg(long, global = true, default_value_t = 0.0)]
    hold_after: f64,
    /// Longest a connection that only received waits for data to carry its ACK, in µs (0: ACK
    /// every packet at once, quiche's own behaviour). Most QUIC stacks delay ACKs like this.
    #[arg(long, global = true, default_value_t = 1_000)]
    ack_delay_us: u64,
    /// Pid of the node, to report its CPU time over the measured window.
    #[arg(long, global = true)]
    node_pid: Option<u32>,
    /// Print one JSON object on stdout (the human report goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// No progress line.
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Publishers → topic → subscribers; latency, throughput, exact loss accounting.
    Fanout(FanoutArgs),
    /// PING/PONG round-trip time over N connections.
    Pingpong(PingpongArgs),
    /// Connection storm (handshakes per second); --hold keeps the peers connected.
    Connect(ConnectArgs),
    /// Callers → procedure → providers through the node; latency, calls/s, exact answers.
    Rpc(RpcArgs),
    /// Subscribe/unsubscribe/reconnect churn under a publisher's traffic; checks every
    /// active subscription got every message exactly once, in order.
    Churn(ChurnArgs),
}

#[derive(Args, Debug)]
struct FanoutArgs {
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribing connections.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Payload bytes (≥ 24: publisher, sequence, intended send time).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Total publish rate, messages per second over all publishers (open loop).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Poisson arrivals instead of fixed intervals.
    #[arg(long)]
    poisson: bool,
    /// Topic; `{p}` is replaced by the publisher index (e.g. `bench.{p}`).
    #[arg(long, default_value = "flood.bench")]
    topic: String,
    /// Subscription pattern (repeatable; `*` one segment, `**` any). Default: the topic, with
    /// `{p}` as `*`.
    #[arg(long)]
    pattern: Vec<String>,
}

#[derive(Args, Debug)]
struct PingpongArgs {
    /// Connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Total PING rate per second (open loop, round-robin over connections).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Poisson arrivals instead of fixed intervals.
    #[arg(long)]
    poisson: bool,
}

#[derive(Args, Debug)]
struct RpcArgs {
    /// Provider connections (each registers the procedure and echoes every call).
    #[arg(long, default_value_t = 2)]
    providers: usize,
    /// Caller connections.
    #[arg(long, default_value_t = 4)]
    callers: usize,
    /// Procedure name.
    #[arg(long, default_value = "bench.echo")]
    procedure: String,
    /// Total call rate, calls per second over all callers (open loop).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Poisson arrivals instead of fixed intervals.
    #[arg(long)]
    poisson: bool,
    /// Request and reply payload bytes (≥ 24: caller, call id, intended send time).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Call deadline in ms, sent as the CALL's timeout (0: the node's default).
    #[arg(long, default_value_t = 5_000)]
    deadline: u64,
    /// Flag calls idempotent (the node retries them on another provider if one leaves).
    #[arg(long)]
    idempotent: bool,
}

#[derive(Args, Debug)]
struct ChurnArgs {
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Churning subscriber connections.
    #[arg(long, default_value_t = 20)]
    subscribers: usize,
    /// Payload bytes (≥ 24).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Total publish rate, messages per second (open loop).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Subscribe/unsubscribe operations per second over all subscribers.
    #[arg(long, default_value_t = 50.0)]
    churn_rate: f64,
    /// Close and reopen each subscriber's connection every S seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    reconnect_every: f64,
    /// The topic (subscribers subscribe to exactly it).
    #[arg(long, default_value = "flood.churn")]
    topic: String,
}

#[derive(Args, Debug)]
struct ConnectArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Connections opened per second (0: as fast as --inflight allows).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Handshakes in flight per thread when --rate is 0.
    #[arg(long, default_value_t = 128)]
    inflight: usize,
    /// Seconds to keep all connections open once connected (memory measurements).
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
}

fn arrivals(poisson: bool) -> Arrivals {
    if poisson {
        Arrivals::Poisson
    } else {
        Arrivals::Uniform
    }
}

fn common(cli: &Cli) -> Result<Common, FloodError> {
    let nodes = params::resolve_all(&cli.node)?;
    let mut c = Common::new(nodes[0]);
    c.reconnect_attempts = cli.reconnect_attempts.unwrap_or(0);
    let mut c = c.with_nodes(nodes);
    if let Some(n) = cli.reconnect_attempts {
        c.reconnect_attempts = n;
    }
    c.tls = Tls { insecure: cli.insecure, ca: cli.ca.clone() };
    c.realm = cli
        .realm
        .parse()
        .map_err(|e| params::UsageError(format!("bad --realm {:?}: {e}", cli.realm)))?;
    c.threads = cli.threads;
    c.duration_s = cli.duration;
    c.warmup_s = cli.warmup;
    c.seed = cli.seed;
    c.connect_timeout_s = cli.connect_timeout;
    c.drain_timeout_s = cli.drain_timeout;
    c.hold_after_s = cli.hold_after;
    c.ack_delay_us = cli.ack_delay_us;
    c.node_pid = cli.node_pid;
    c.progress = !cli.quiet;
    Ok(c)
}

fn run(cli: &Cli) -> Result<fovea_flood::report::Report, FloodError> {
    let c = common(cli)?;
    match &cli.scenario {
        Scenario::Fanout(a) => {
            let patterns = if a.pattern.is_empty() {
                vec![Fanout::default_pattern(&a.topic)]
            } else {
                a.pattern.clone()
            };
            let p = Fanout {
                publishers: a.publishers,
                subscribers: a.subscribers,
                payload: a.payload,
                rate: a.rate,
                arrivals: arrivals(a.poisson),
                topic: a.topic.clone(),
                patterns,
            };
            fovea_flood::fanout(&c, &p)
        }
        Scenario::Pingpong(a) => {
            let p = Pingpong {
                connections: a.connections,
                rate: a.rate,
                arrivals: arrivals(a.poisson),
            };
            fovea_flood::pingpong(&c, &p)
        }
        Scenario::Connect(a) => {
            let p = Connect {
                connections: a.connections,
                rate: a.rate,
                inflight: a.inflight,
                hold_s: a.hold,
            };
            fovea_flood::connect(&c, &p)
        }
        Scenario::Rpc(a) => {
            let p = Rpc {
                providers: a.providers,
                callers: a.callers,
                procedure: a.procedure.clone(),
                rate: a.rate,
                arrivals: arrivals(a.poisson),
                payload: a.payload,
                deadline_ms: a.deadline,
                idempotent: a.idempotent,
            };
            fovea_flood::rpc(&c, &p)
        }
        Scenario::Churn(a) => {
            let p = Churn {
                publishers: a.publishers,
                subscribers: a.subscribers,
                payload: a.payload,
                rate: a.rate,
                churn_rate: a.churn_rate,
                reconnect_every_s: a.reconnect_every,
                topic: a.topic.clone(),
            };
            fovea_flood::churn(&c, &p)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.insecure && cli.ca.is_none() {
        eprintln!(
            "fovea-flood: note: verifying the node's certificate with the system CAs; a node with \
             its self-signed certificate needs --insecure (or --ca FILE)"
        );
    }
    match run(&cli) {
        Ok(report) => {
            if cli.json {
                eprint!("{}", report.human);
                println!("{}", report.json);
            } else {
                print!("{}", report.human);
            }
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("fovea-flood: FAILED: {}", report.failures.join("; "));
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("fovea-flood: {e}");
            ExitCode::from(2)
        }
    }
}
