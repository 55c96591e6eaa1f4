//! `fovea-cli`: the operators' client. `pub`, `sub`, `call`, `ping` speak the Fovea protocol over QUIC;
//! `stats` reads the node's metrics endpoint. Human output by default, `--json` for scripts.
//! Exit codes: 0 success, 1 the node refused or closed, 2 usage or connection errors.

mod client;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use client::{Client, ClientError, Options};
use fovea_codec::frame::{self, Frame};
use fovea_codec::{Pattern, Topic};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "fovea-cli",
    version,
    about = "Talk to a Fovea node: publish, subscribe, ping, stats"
)]
struct Cli {
    /// The node's QUIC address.
    #[arg(long, global = true, default_value = "127.0.0.1:4433", env = "FOVEA_NODE")]
    node: String,
    /// Realm to join.
    #[arg(long, global = true, default_value = "default")]
    realm: String,
    /// Do not verify the node's certificate (self-signed nodes).
    #[arg(long, global = true)]
    insecure: bool,
    /// CA certificate (PEM) to verify the node with, e.g. fovea-data/cert.pem.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Server name for TLS.
    #[arg(long, global = true, default_value = "localhost")]
    server_name: String,
    /// Peer id as 64 hex digits (random by default).
    #[arg(long, global = true)]
    peer_id: Option<String>,
    /// One JSON object per result line instead of human output.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the connection and each answer.
    #[arg(long, global = true, default_value_t = 5.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish MESSAGE to TOPIC (`-` reads the payload from standard input).
    Pub {
        /// Topic, e.g. `sensors.kitchen.temp`.
        topic: String,
        /// Payload, or `-` for standard input.
        message: String,
        /// Message id for duplicate suppression.
        #[arg(long)]
        message_id: Option<u64>,
    },
    /// Subscribe to one or more patterns and print deliveries as they arrive.
    Sub {
        /// Patterns (`*` one segment, `**` zero or more).
        #[arg(required = true)]
        patterns: Vec<String>,
        /// Exit after this many deliveries.
        #[arg(long)]
        count: Option<u64>,
        /// Exit after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Call a procedure registered by some peer and print its reply.
    Call {
        /// Procedure name, e.g. `math.add`.
        procedure: String,
        /// Arguments (the payload), or `-` for standard input.
        #[arg(default_value = "")]
        args: String,
        /// Deadline in milliseconds (0: the node's default).
        #[arg(long, default_value_t = 0)]
        deadline_ms: u64,
        /// The node may retry the call on another provider if the first disconnects.
        #[arg(long)]
        idempotent: bool,
    },
    /// Measure round trips to the node with PING/PONG.
    Ping {
        /// Number of pings.
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
    /// Summarise the node's metrics endpoint.
    Stats {
        /// Address of the node's metrics endpoint.
        #[arg(long, default_value = "127.0.0.1:9090")]
        metrics: String,
    },
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let code = match e {
            ClientError::Refused { .. } | ClientError::Closed { .. } => 1,
            _ => 2,
        };
        Failure { code, message: e.to_string() }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { code: 2, message: message.into() }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("fovea-cli: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn options(cli: &Cli) -> Result<Options, Failure> {
    let node: SocketAddr = cli.node.parse().map_err(|_| {
        usage(format!("--node {:?} is not an ADDRESS:PORT (e.g. 127.0.0.1:4433)", cli.node))
    })?;
    let peer_id = match &cli.peer_id {
        None => None,
        Some(hex) => {
            Some(parse_hex32(hex).ok_or_else(|| usage("--peer-id must be 64 hex digits"))?)
        }
    };
    if !cli.timeout.is_finite() || cli.timeout <= 0.0 {
        return Err(usage("--timeout must be a positive number of seconds"));
    }
    Ok(Options {
        node,
        realm: cli.realm.clone(),
        insecure: cli.insecure,
        ca: cli.ca.clone(),
        server_name: cli.server_name.clone(),
        peer_id,
        timeout: Duration::from_secs_f64(cli.timeout),
    })
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Pub { topic, message, message_id } => publish(cli, topic, message, *message_id),
        Command::Sub { patterns, count, duration } => subscribe(cli, patterns, *count, *duration),
        Command::Call { procedure, args, deadline_ms, idempotent } => {
            call(cli, procedure, args, *deadline_ms, *idempotent)
        }
        Command::Ping { count } => ping(cli, *count),
        Command::Stats { metrics } => stats(cli, metrics),
    }
}

fn publish(cli: &Cli, topic: &str, message: &str, message_id: Option<u64>) -> Result<(), Failure> {
    let topic: Topic = topic.parse().map_err(|e| usage(format!("invalid topic {topic:?}: {e}")))?;
    let payload = read_payload(message)?;
    let opts = options(cli)?;
    let mut client = Client::connect(&opts)?;
    let request_id = client.request_id();
    let frame = Frame::Publish(frame::Publish {
        request_id,
        message_id,
        topic: topic.clone(),
        payload: payload.clone(),
    });
    client.request(&frame, request_id)?;
    if cli.json {
        println!("{}", serde_json::json!({ "published": topic.as_str(), "bytes": payload.len() }));
    } else {
        println!("published {} bytes to {topic}", payload.len());
    }
    client.close();
    Ok(())
}

fn subscribe(
    cli: &Cli,
    patterns: &[String],
    count: Option<u64>,
    duration: Option<f64>,
) -> Result<(), Failure> {
    let parsed: Vec<Pattern> = patterns
        .iter()
        .map(|p| p.parse().map_err(|e| usage(format!("invalid pattern {p:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    let opts = options(cli)?;
    let mut client = Client::connect(&opts)?;
    for (i, pattern) in parsed.iter().enumerate() {
        let request_id = client.request_id();
        let frame = Frame::Subscribe(frame::Subscribe {
            request_id,
            sub_id: i as u64 + 1,
            pattern: pattern.clone(),
        });
        client.request(&frame, request_id)?;
    }
    // On stderr even with --json: scripts wait for this line before publishing.
    eprintln!("subscribed to {}", patterns.join(", "));
    let deadline = duration.map(|d| Instant::now() + Duration::from_secs_f64(d));
    let mut seen = 0u64;
    while count.is_none_or(|c| seen < c) {
        let Some(f) = client.next_frame(deadline)? else { break };
        let Frame::Deliver(d) = f else { continue };
        seen += 1;
        let matched: Vec<&str> = d
            .sub_ids
            .iter()
            .filter_map(|&id| parsed.get((id as usize).wrapping_sub(1)).map(|p| p.as_str()))
            .collect();
        if cli.json {
            let (payload, encoding) = match std::str::from_utf8(&d.payload) {
                Ok(s) => (s.to_owned(), "utf8"),
                Err(_) => (d.payload.iter().map(|b| format!("{b:02x}")).collect(), "hex"),
            };
            println!(
                "{}",
                serde_json::json!({
                    "topic": d.topic.as_str(),
                    "payload": payload,
                    "payload_encoding": encoding,
                    "patterns": matched,
                    "sub_ids": d.sub_ids.to_vec(),
                    "message_id": d.message_id,
                })
            );
        } else {
            println!("{}: {}", d.topic, String::from_utf8_lossy(&d.payload));
        }
    }
    client.close();
    Ok(())
}

fn read_payload(arg: &str) -> Result<Bytes, Failure> {
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(|e| usage(format!("reading stdin: {e}")))?;
        Ok(Bytes::from(buf))
    } else {
        Ok(Bytes::copy_from_slice(arg.as_bytes()))
    }
}

fn call(
    cli: &Cli,
    procedure: &str,
    args: &str,
    deadline_ms: u64,
    idempotent: bool,
) -> Result<(), Failure> {
    let name: fovea_codec::Name =
        procedure.parse().map_err(|e| usage(format!("invalid procedure {procedure:?}: {e}")))?;
    let payload = read_payload(args)?;
    let opts = options(cli)?;
    let mut client = Client::connect(&opts)?;
    let call_id = client.request_id();
    let started = Instant::now();
    client.send(&Frame::Call(frame::Call {
        idempotent,
        call_id,
        timeout_ms: deadline_ms,
        procedure: name,
        payload,
    }))?;
    // The node answers by the call's deadline at the latest; wait a little longer than that.
    let wait =
        Duration::from_millis(if deadline_ms == 0 { 30_000 } else { deadline_ms }) + opts.timeout;
    let answer = client.wait_for(
        |f| {
            matches!(f, Frame::Reply(r) if r.id == call_id)
                || matches!(f, Frame::CallError(e) if e.id == call_id)
        },
        started + wait,
    )?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    client.close();
    match answer {
        Frame::Reply(r) => {
            if cli.json {
                let reply = String::from_utf8_lossy(&r.payload);
                println!(
                    "{}",
                    serde_json::json!({ "procedure": procedure, "reply": reply, "ms": ms })
                );
            } else {
                println!("{}", String::from_utf8_lossy(&r.payload));
            }
            Ok(())
        }
        Frame::CallError(e) => {
            let name =
                fovea_codec::ErrorCode::from_u64(e.code).map_or("APPLICATION_ERROR", |c| c.name());
            Err(Failure {
                code: 1,
                message: format!(
                    "call failed: {name} ({:#x}) {}",
                    e.code,
                    String::from_utf8_lossy(&e.message)
                ),
            })
        }
        _ => unreachable!("matched above"),
    }
}

fn ping(cli: &Cli, count: u32) -> Result<(), Failure> {
    let opts = options(cli)?;
    let mut client = Client::connect(&opts)?;
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("valid precision");
    for id in 1..=u64::from(count) {
        let start = Instant::now();
        client.send(&Frame::Ping(frame::Ping { ping_id: id, sent_at_us: 0 }))?;
        let deadline = start + opts.timeout;
        client.wait_for(|f| matches!(f, Frame::Pong(p) if p.ping_id == id), deadline)?;
        let us = start.elapsed().as_micros() as u64;
        hist.record(us.max(1)).expect("in range");
        if !cli.json {
            println!("pong {id}: {:.3} ms", us as f64 / 1000.0);
        }
    }
    let ms = |v: u64| v as f64 / 1000.0;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "count": count,
                "min_ms": ms(hist.min()),
                "avg_ms": hist.mean() / 1000.0,
                "p50_ms": ms(hist.value_at_quantile(0.5)),
                "max_ms": ms(hist.max()),
            })
        );
    } else {
        println!(
            "rtt min/avg/p50/max = {:.3}/{:.3}/{:.3}/{:.3} ms",
            ms(hist.min()),
            hist.mean() / 1000.0,
            ms(hist.value_at_quantile(0.5)),
            ms(hist.max())
        );
    }
    client.close();
    Ok(())
}

fn stats(cli: &Cli, metrics: &str) -> Result<(), Failure> {
    use std::io::Write;
    let addr: SocketAddr = metrics
        .parse()
        .map_err(|_| usage(format!("--metrics {metrics:?} is not an ADDRESS:PORT")))?;
    let timeout = Duration::from_secs_f64(cli.timeout.max(0.1));
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| usage(format!("cannot reach the metrics endpoint {addr}: {e}")))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| usage(e.to_string()))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| usage(e.to_string()))?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| usage(format!("reading metrics: {e}")))?;
    let text = body.split_once("\r\n\r\n").map_or(body.as_str(), |(_, b)| b);
    // Totals are the `shard="all"` series; unlabelled gauges are node-wide.
    let mut totals: Vec<(String, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("fovea_")) {
        let Some((key, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let name = if let Some(n) = key.strip_suffix("{shard=\"all\"}") {
            n
        } else if !key.contains('{') {
            key
        } else {
            continue;
        };
        totals.push((name.to_owned(), value));
    }
    if totals.is_empty() {
        return Err(usage(format!("{addr} did not serve Fovea metrics")));
    }
    if cli.json {
        let map: serde_json::Map<String, serde_json::Value> =
            totals.into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        let width = totals.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in totals {
            println!("{k:<width$}  {v}");
        }
    }
    Ok(())
}
