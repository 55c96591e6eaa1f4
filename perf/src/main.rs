//! `fovea-perf`: the end-to-end performance harness.
//!
//! Starts a release `fovea` node and the `fovea-flood` load generator on pinned cores, runs the
//! versioned scenario set (`perf/scenarios.toml`), reads the node's own CPU time and memory from
//! /proc, and writes a JSON result plus a markdown table (`perf/results/<stamp>.{json,md}`).
//!
//! The node's CPU per delivery is (utime + stime of the node process over the measured window,
//! read by `fovea-flood --node-pid`) / deliveries in that window: the flood tool's own CPU is
//! excluded, and nothing is inferred from wall time alone. RPC scenarios (`fovea-flood rpc`)
//! report calls instead: replies per second in the window and the node's CPU per reply.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod stalls;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::{Deserialize, Serialize};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "fovea-perf", about = "Run Fovea's end-to-end performance scenarios")]
struct Args {
    /// Scenario file.
    #[arg(long, default_value = "perf/scenarios.toml")]
    scenarios: PathBuf,
    /// Run only the scenarios marked `quick = true` (about 2 minutes).
    #[arg(long)]
    quick: bool,
    /// Run only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Output directory.
    #[arg(long, default_value = "perf/results")]
    out: PathBuf,
    /// Core for the node (its shards are pinned from here on), and for the flood tool.
    #[arg(long, default_value_t = 0)]
    node_core: usize,
    /// Core for the flood tool.
    #[arg(long, default_value_t = 1)]
    flood_core: usize,
    /// Seconds the host's own stalls are measured on both cores before the scenarios (0: skip);
    /// recorded with the results (`environment.host_stalls`).
    #[arg(long, default_value_t = 5.0)]
    stall_probe_s: f64,
}

#[derive(Debug, Deserialize)]
struct ScenarioFile {
    version: u32,
    scenario: Vec<Scenario>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
struct Scenario {
    name: String,
    /// Arguments to `fovea-flood` (the subcommand first), without `--node` and `--json`.
    flood: Vec<String>,
    /// Node shards.
    #[serde(default = "one")]
    shards: usize,
    /// Part of the quick set.
    #[serde(default)]
    quick: bool,
}

fn one() -> usize {
    1
}

#[derive(Debug, Serialize)]
struct Outcome {
    scenario: Scenario,
    flood: serde_json::Value,
    node_cpu_ms: f64,
    node_cpu_us_per_delivery: Option<f64>,
    /// RPC scenarios: replies per second over the measured window.
    #[serde(skip_serializing_if = "Option::is_none")]
    calls_per_s: Option<f64>,
    /// RPC scenarios: the node's CPU time over the window per reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    node_cpu_us_per_call: Option<f64>,
    node_rss_kib_peak: u64,
    /// The node's RSS before the flood tool connected.
    node_rss_kib_start: u64,
    /// Scenarios with `--hold-after`: (RSS at the end of the idle hold − RSS at start) per
    /// connected peer, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    node_kib_per_peer_after_hold: Option<f64>,
    wall_ms: u64,
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

struct NodeProcess {
    child: Child,
    quic: String,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn start_node(args: &Args, shards: usize, data_dir: &Path) -> Result<NodeProcess> {
    let cores = (args.node_core..args.node_core + shards)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut child = Command::new("taskset")
        .args(["-c", &cores])
        .arg(args.bin_dir.join("fovea"))
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--log", "warn", "--no-pin"])
        .args(["--shards", &shards.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting fovea (build it with `cargo build --release`)")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).context("node readiness line")?;
    let quic = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("quic="))
        .context("quic= in readiness line")?
        .to_owned();
    Ok(NodeProcess { child, quic })
}

fn run_scenario(args: &Args, s: &Scenario) -> Result<Outcome> {
    let data_dir = std::env::temp_dir().join(format!("fovea-perf-{}", std::process::id()));
    let node = start_node(args, s.shards, &data_dir)?;
    let pid = node.child.id();
    let cpu_before = cpu_ticks(pid)?;
    let rss_start = rss_kib(pid).unwrap_or(0);
    let started = Instant::now();
    let mut flood = Command::new("taskset")
        .args(["-c", &args.flood_core.to_string()])
        .arg(args.bin_dir.join("fovea-flood"))
        .args(&s.flood)
        .args(["--node", &node.quic, "--insecure", "--json", "--quiet"])
        .args(["--node-pid", &pid.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting fovea-flood")?;
    let mut rss_peak = 0;
    while flood.try_wait()?.is_none() {
        rss_peak = rss_peak.max(rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(200)); // sampling interval, not a readiness wait
    }
    let out = flood.wait_with_output()?;
    let cpu_after = cpu_ticks(pid)?;
    let wall_ms = started.elapsed().as_millis() as u64;
    let flood_json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("flood output: {}", String::from_utf8_lossy(&out.stdout)))?;
    let cpu_ms = (cpu_after - cpu_before) as f64 * 1000.0 / ticks_per_second();
    // Prefer the flood tool's figure: it reads the node's CPU over the measured window only
    // (after connection set-up and warm-up); fall back to the whole run.
    let per_delivery =
        flood_json.get("node_cpu_us_per_delivery").and_then(|v| v.as_f64()).or_else(|| {
            let deliveries = flood_json.get("deliveries").and_then(|v| v.as_f64())?;
            (deliveries > 0.0).then(|| cpu_ms * 1000.0 / deliveries)
        });
    let is_rpc = flood_json.get("scenario").and_then(|v| v.as_str()) == Some("rpc");
    let num = |k: &str| flood_json.get(k).and_then(|v| v.as_f64());
    let calls_per_s = if is_rpc { num("calls_per_s") } else { None };
    let per_call = if is_rpc {
        num("node_cpu_us_per_call").or_else(|| {
            let replies = num("replies")?;
            (replies > 0.0).then(|| cpu_ms * 1000.0 / replies)
        })
    } else {
        None
    };
    let per_peer = match (num("node_rss_kib_after_hold"), num("connected")) {
        (Some(after), Some(peers)) if peers > 0.0 => Some((after - rss_start as f64) / peers),
        _ => None,
    };
    drop(node);
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(Outcome {
        scenario: s.clone(),
        node_cpu_us_per_delivery: if is_rpc { None } else { per_delivery },
        calls_per_s,
        node_cpu_us_per_call: per_call,
        flood: flood_json,
        node_cpu_ms: cpu_ms,
        node_rss_kib_peak: rss_peak,
        node_rss_kib_start: rss_start,
        node_kib_per_peer_after_hold: per_peer,
        wall_ms,
    })
}

fn environment() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or("")
        .to_owned();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    serde_json::json!({
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpu": cpu.split(':').nth(1).unwrap_or("").trim(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "commit": commit,
    })
}

fn markdown(outcomes: &[Outcome], env: &serde_json::Value) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "Environment: kernel {}, CPU {}, {} cores, commit {}\n\n",
        env["kernel"], env["cpu"], env["cores"], env["commit"]
    ));
    if let Some(cores) = env.get("host_stalls").and_then(|v| v.as_array()) {
        md.push_str(&format!(
            "Host stalls before the runs ({} s spinning per core): ",
            env["host_stall_probe_s"]
        ));
        for c in cores {
            md.push_str(&format!(
                "core {}: {:.1} ms ({:.2} %), longest {:.0} µs, {} ≥ 0.5 ms; ",
                c["core"],
                c["stalled_ms"].as_f64().unwrap_or(0.0),
                c["stalled_share"].as_f64().unwrap_or(0.0) * 100.0,
                c["max_us"].as_f64().unwrap_or(0.0),
                c["over_500us"]
            ));
        }
        md.push_str("\n\n");
    }
    let (rpc, rest): (Vec<&Outcome>, Vec<&Outcome>) =
        outcomes.iter().partition(|o| o.calls_per_s.is_some());
    let cell = |f: &serde_json::Value, k: &str| {
        f.get(k).and_then(|v| v.as_f64()).map_or("-".to_owned(), |v| format!("{v:.0}"))
    };
    if !rest.is_empty() {
        md.push_str("| scenario | deliveries/s | p50 µs | p99 µs | p999 µs | lost | node CPU µs/delivery | node RSS peak KiB |\n");
        md.push_str("|---|---|---|---|---|---|---|---|\n");
    }
    for o in rest {
        let num = |k: &str| cell(&o.flood, k);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            o.scenario.name,
            num("deliveries_per_s"),
            num("p50_us"),
            num("p99_us"),
            num("p999_us"),
            num("lost"),
            o.node_cpu_us_per_delivery.map_or("-".to_owned(), |v| format!("{v:.2}")),
            o.node_rss_kib_peak
        ));
    }
    let held: Vec<&Outcome> =
        outcomes.iter().filter(|o| o.node_kib_per_peer_after_hold.is_some()).collect();
    if !held.is_empty() {
        md.push_str("\n| memory scenario | peers | node RSS start KiB | RSS after the idle hold KiB | KiB per peer | RSS peak KiB |\n");
        md.push_str("|---|---|---|---|---|---|\n");
    }
    for o in held {
        let num = |k: &str| cell(&o.flood, k);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} |\n",
            o.scenario.name,
            num("connected"),
            o.node_rss_kib_start,
            num("node_rss_kib_after_hold"),
            o.node_kib_per_peer_after_hold.unwrap_or(0.0),
            o.node_rss_kib_peak
        ));
    }
    if !rpc.is_empty() {
        md.push_str("\n| RPC scenario | calls/s | offered/s | p50 µs | p99 µs | p999 µs | timeouts | duplicates | CALL_ERRORs | node CPU µs/call | node RSS peak KiB |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    }
    for o in rpc {
        let num = |k: &str| cell(&o.flood, k);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            o.scenario.name,
            num("calls_per_s"),
            num("offered_calls_per_s"),
            num("p50_us"),
            num("p99_us"),
            num("p999_us"),
            num("timeouts"),
            num("duplicates"),
            num("call_errors_total"),
            o.node_cpu_us_per_call.map_or("-".to_owned(), |v| format!("{v:.2}")),
            o.node_rss_kib_peak
        ));
    }
    md
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.scenarios)
        .with_context(|| format!("{}", args.scenarios.display()))?;
    let file: ScenarioFile = toml::from_str(&text)?;
    if file.version != 1 {
        bail!("scenario file version {} is not supported", file.version);
    }
    let selected: Vec<&Scenario> = file
        .scenario
        .iter()
        .filter(|s| !args.quick || s.quick)
        .filter(|s| args.only.as_ref().is_none_or(|o| s.name.contains(o.as_str())))
        .collect();
    let mut env = environment();
    let probe = Duration::from_secs_f64(args.stall_probe_s);
    if !probe.is_zero() {
        let cores = [args.node_core, args.flood_core];
        let s = stalls::probe(&cores, probe);
        for c in &s {
            eprintln!(
                "== host stalls on core {}: {:.1} ms of {:.1} s ({:.2} %), longest {:.0} µs, {} of 0.5 ms or more",
                c.core,
                c.stalled_ms,
                probe.as_secs_f64(),
                c.stalled_share * 100.0,
                c.max_us,
                c.over_500us
            );
        }
        env["host_stalls"] = serde_json::to_value(&s)?;
        env["host_stall_probe_s"] = serde_json::json!(probe.as_secs_f64());
    }
    let mut outcomes = Vec::new();
    for s in selected {
        eprintln!("== {}", s.name);
        let o = run_scenario(&args, s)?;
        eprintln!("   {}", serde_json::to_string(&o.flood)?);
        outcomes.push(o);
    }
    std::fs::create_dir_all(&args.out)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let json = serde_json::json!({ "environment": env, "scenario_file_version": file.version, "results": outcomes });
    std::fs::write(args.out.join(format!("{stamp}.json")), serde_json::to_string_pretty(&json)?)?;
    let md = markdown(&outcomes, &env);
    std::fs::write(args.out.join(format!("{stamp}.md")), &md)?;
    println!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str, flood: serde_json::Value) -> Outcome {
        let is_rpc = flood["scenario"] == "rpc";
        Outcome {
            scenario: Scenario { name: name.into(), flood: vec![], shards: 1, quick: false },
            calls_per_s: if is_rpc { flood["calls_per_s"].as_f64() } else { None },
            node_cpu_us_per_call: is_rpc.then_some(4.25),
            node_cpu_us_per_delivery: (!is_rpc).then_some(1.5),
            flood,
            node_cpu_ms: 1.0,
            node_rss_kib_peak: 2048,
            node_rss_kib_start: 1024,
            node_kib_per_peer_after_hold: None,
            wall_ms: 1,
        }
    }

    #[test]
    fn rpc_results_get_their_own_table() {
        let env = serde_json::json!({ "kernel": "k", "cpu": "c", "cores": 2, "commit": "x" });
        let rpc = serde_json::json!({
            "scenario": "rpc", "calls_per_s": 123456.0, "offered_calls_per_s": 200000.0,
            "p50_us": 80.0, "p99_us": 400.0, "p999_us": 900.0, "timeouts": 0,
            "duplicates": 0, "call_errors_total": 7,
        });
        let fanout = serde_json::json!({ "scenario": "fanout", "deliveries_per_s": 1000.0 });
        let md = markdown(&[outcome("f", fanout), outcome("r", rpc)], &env);
        assert!(md.contains("| f | 1000 |"), "{md}");
        assert!(
            md.contains("| r | 123456 | 200000 | 80 | 400 | 900 | 0 | 0 | 7 | 4.25 | 2048 |"),
            "{md}"
        );
    }
}
