//! The final report: one JSON object with every figure and the run's parameters, a human
//! summary, and the verdict (what the scenario promised and did not get).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::params::{Churn, Common, Connect, Fanout, Pingpong, Rpc};
use crate::progress::fmt_ns;
use crate::run::Outcome;

/// A finished run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every figure and parameter (`--json` prints this).
    pub json: Value,
    /// The human summary.
    pub human: String,
    /// Broken promises (lost, duplicated, reordered, failed, ...); non-empty means exit code 1.
    pub failures: Vec<String>,
}

impl Report {
    /// A figure from the JSON object, as a number (tests and callers).
    pub fn num(&self, key: &str) -> f64 {
        self.json.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
    }
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// Percentiles of `h` in µs under `prefix` keys (`p50_us`, ...).
fn percentiles(m: &mut Map<String, Value>, prefix: &str, h: &Histogram<u64>) {
    let q = |x: f64| if h.is_empty() { Value::Null } else { json!(us(h.value_at_quantile(x))) };
    m.insert(format!("{prefix}samples"), json!(h.len()));
    m.insert(format!("{prefix}p50_us"), q(0.5));
    m.insert(format!("{prefix}p90_us"), q(0.9));
    m.insert(format!("{prefix}p99_us"), q(0.99));
    m.insert(format!("{prefix}p999_us"), q(0.999));
    let v = |x: u64| if h.is_empty() { Value::Null } else { json!(us(x)) };
    m.insert(format!("{prefix}max_us"), v(h.max()));
    m.insert(format!("{prefix}min_us"), v(h.min()));
    m.insert(
        format!("{prefix}mean_us"),
        if h.is_empty() { Value::Null } else { json!((h.mean() / 100.0).round() / 10.0) },
    );
}

fn pct_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n = {})",
        fmt_ns(h.value_at_quantile(0.5)),
        fmt_ns(h.value_at_quantile(0.9)),
        fmt_ns(h.value_at_quantile(0.99)),
        fmt_ns(h.value_at_quantile(0.999)),
        fmt_ns(h.max()),
        h.len()
    )
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// Figures every scenario has.
fn common_figures(m: &mut Map<String, Value>, scenario: &str, common: &Common, o: &Outcome) {
    let t = &o.tally;
    m.insert("scenario".into(), json!(scenario));
    m.insert("node".into(), json!(common.node.to_string()));
    m.insert("threads".into(), json!(common.threads));
    let driver = match o.io_uring_threads {
        0 => "legacy",
        n if n == common.threads => "io_uring",
        _ => "mixed",
    };
    m.insert("io_driver".into(), json!(driver));
    m.insert("connected".into(), json!(t.connected));
    m.insert("connect_s".into(), json!(o.connect_s));
    m.insert("errors".into(), json!(t.errors + o.thread_failures.len() as u64));
    let mut samples: Vec<String> = t.error_samples.clone();
    samples.extend(o.thread_failures.iter().cloned());
    m.insert("error_samples".into(), json!(samples));
    m.insert("stray_datagrams".into(), json!(t.stray_datagrams));
    m.insert("flood_socket_drops".into(), json!(t.socket_drops));
    m.insert("flood_cpu_ms".into(), json!((o.flood_cpu.as_secs_f64() * 1e4).round() / 10.0));
    m.insert("flood_spin_ms".into(), json!((o.flood_spin.as_secs_f64() * 1e4).round() / 10.0));
    m.insert("flood_cpu_share".into(), json!((flood_share(common, o) * 1e3).round() / 1e3));
    if let Some(cpu) = o.node_cpu {
        m.insert("node_cpu_ms".into(), json!((cpu.as_secs_f64() * 1e4).round() / 10.0));
    }
    m.insert("hold_after_s".into(), json!(common.hold_after_s));
    if let Some(kib) = o.node_rss_after_hold_kib {
        m.insert("node_rss_kib_after_hold".into(), json!(kib));
    }
    let ms = |d: Option<std::time::Duration>| d.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0);
    m.insert("flood_runqueue_wait_ms".into(), json!(ms(o.flood_runqueue_wait)));
    m.insert("host_other_cpu_ms".into(), json!(ms(o.host_other_cpu)));
    if o.node_runqueue_wait.is_some() {
        m.insert("node_runqueue_wait_ms".into(), json!(ms(o.node_runqueue_wait)));
    }
}

/// Other work on the host during the window, and how long the tool and the node waited for a
/// CPU (contention, and on a VM the wake-up latency of idle vCPUs).
fn contention_line(out: &mut String, o: &Outcome) {
    let ms = |d: Option<std::time::Duration>| {
        d.map_or("-".to_string(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
    };
    let _ = writeln!(
        out,
        "  host         other work {} CPU; runnable-not-running: flood {}, node {}",
        ms(o.host_other_cpu),
        ms(o.flood_runqueue_wait),
        ms(o.node_runqueue_wait)
    );
}

/// The tool's working CPU time over the window (without its spins before scheduled sends) as a
/// share of its threads' capacity.
fn flood_share(common: &Common, o: &Outcome) -> f64 {
    let capacity = o.window_s * common.threads as f64;
    if capacity > 0.0 {
        o.flood_cpu.saturating_sub(o.flood_spin).as_secs_f64() / capacity
    } else {
        0.0
    }
}

/// A warning when the generator itself was the bottleneck.
fn saturation_line(out: &mut String, common: &Common, o: &Outcome) {
    let share = flood_share(common, o);
    if share > 0.9 || o.tally.socket_drops > 0 {
        let _ = writeln!(
            out,
            "  warning: the generator fell behind (CPU {:.0}% of its threads, {} datagrams dropped at its socket): rates and latencies may understate the node",
            share * 100.0,
            o.tally.socket_drops
        );
    }
}

fn node_cpu_per(o: &Outcome, n: u64) -> Option<f64> {
    let cpu = o.node_cpu?;
    (n > 0).then(|| (cpu.as_secs_f64() * 1e6 / n as f64 * 1000.0).round() / 1000.0)
}

fn error_lines(out: &mut String, o: &Outcome) {
    for e in o.tally.error_samples.iter().chain(&o.thread_failures) {
        let _ = writeln!(out, "  error: {e}");
    }
}

/// The report of a fan-out run.
pub fn fanout(common: &Common, p: &Fanout, o: &Outcome) -> Report {
    let t = &o.tally;
    let mut m = Map::new();
    common_figures(&mut m, "fanout", common, o);
    let params = json!({
        "common": common, "fanout": p,
    });
    m.insert("params".into(), params);
    m.insert("publishers".into(), json!(p.publishers));
    m.insert("subscribers".into(), json!(p.subscribers));
    m.insert("payload_bytes".into(), json!(p.payload));
    m.insert("rate".into(), json!(p.rate));
    m.insert("warmup_s".into(), json!(common.warmup_s));
    m.insert("duration_s".into(), json!(o.window_s));
    m.insert("warmup_excluded".into(), json!(true));
    m.insert("publishes".into(), json!(t.sent));
    m.insert("publishes_measured".into(), json!(t.sent_measured));
    m.insert("publishes_per_s".into(), json!(rate(t.sent_measured, o.window_s)));
    m.insert("publishes_skipped".into(), json!(t.skipped));
    m.insert("deliveries".into(), json!(t.received));
    m.insert("deliveries_measured".into(), json!(t.received_measured));
    m.insert("deliveries_per_s".into(), json!(rate(t.received_measured, o.window_s)));
    m.insert("expected_deliveries".into(), json!(t.expected));
    m.insert("lost".into(), json!(t.lost));
    m.insert("duplicates".into(), json!(t.duplicates));
    m.insert("reordered".into(), json!(t.reordered));
    m.insert("unexpected".into(), json!(t.unexpected));
    m.insert("drain_s".into(), json!(o.drain_s));
    m.insert("drain_complete".into(), json!(t.drain_timeouts == 0));
    percentiles(&mut m, "", &t.latency);
    percentiles(&mut m, "send_lag_", &t.send_lag);
    if let Some(v) = node_cpu_per(o, t.received_measured) {
        m.insert("node_cpu_us_per_delivery".into(), json!(v));
    }

    let mut h = String::new();
    let patterns = p.patterns.join(", ");
    let _ = writeln!(
        h,
        "fovea-flood fanout → {}: {} publisher(s) on {:?} → {} subscriber(s) on [{patterns}], {} B, {} msg/s {}, {} thread(s), {} driver",
        common.node, p.publishers, p.topic, p.subscribers, p.payload, p.rate,
        if p.arrivals == crate::schedule::Arrivals::Poisson { "(Poisson)" } else { "(uniform)" },
        common.threads, m["io_driver"].as_str().unwrap_or("?")
    );
    let _ = writeln!(h, "  setup        {} sessions in {:.2} s", t.connected, o.connect_s);
    let _ =
        writeln!(h, "  measured     {:.1} s after {:.1} s of warm-up", o.window_s, common.warmup_s);
    let _ = writeln!(
        h,
        "  publishes    {} ({:.1}/s)",
        t.sent_measured,
        rate(t.sent_measured, o.window_s)
    );
    let _ = writeln!(
        h,
        "  deliveries   {} ({:.1}/s)",
        t.received_measured,
        rate(t.received_measured, o.window_s)
    );
    let _ = writeln!(h, "  latency      {}", pct_line(&t.latency));
    let _ = writeln!(h, "  send lag     {}", pct_line(&t.send_lag));
    let drain = if t.drain_timeouts == 0 {
        format!("drain {:.2} s", o.drain_s)
    } else {
        format!("drain timed out after {:.2} s: what had not arrived counts as lost", o.drain_s)
    };
    let _ = writeln!(
        h,
        "  whole run    published {}, delivered {} of {} expected ({drain})",
        t.sent, t.received, t.expected
    );
    let _ = writeln!(
        h,
        "  accounting   lost {}, duplicates {}, reordered {}, unexpected {}, skipped sends {}, errors {}",
        t.lost,
        t.duplicates,
        t.reordered,
        t.unexpected,
        t.skipped,
        m["errors"]
    );
    if let Some(cpu) = o.node_cpu {
        let _ = writeln!(
            h,
            "  node CPU     {:.1} ms over the window = {} µs per delivery",
            cpu.as_secs_f64() * 1e3,
            node_cpu_per(o, t.received_measured).map_or("-".into(), |v| format!("{v:.3}"))
        );
    }
    let _ = writeln!(
        h,
        "  flood        CPU {:.1} ms over the window, socket drops {}",
        o.flood_cpu.as_secs_f64() * 1e3,
        t.socket_drops
    );
    contention_line(&mut h, o);
    saturation_line(&mut h, common, o);
    error_lines(&mut h, o);

    let mut failures = Vec::new();
    for (n, what) in [
        (t.lost, "lost"),
        (t.duplicates, "duplicated"),
        (t.reordered, "reordered"),
        (t.unexpected, "unexpected (not matching the patterns, or not ours)"),
    ] {
        if n > 0 {
            failures.push(format!("{n} deliveries {what}"));
        }
    }
    if t.errors > 0 || !o.thread_failures.is_empty() {
        failures.push(format!("{} errors", m["errors"]));
    }
    Report { json: Value::Object(m), human: h, failures }
}

/// The report of a ping-pong run.
pub fn pingpong(common: &Common, p: &Pingpong, o: &Outcome) -> Report {
    let t = &o.tally;
    let mut m = Map::new();
    common_figures(&mut m, "pingpong", common, o);
    m.insert("params".into(), json!({ "common": common, "pingpong": p }));
    m.insert("connections".into(), json!(p.connections));
    m.insert("rate".into(), json!(p.rate));
    m.insert("warmup_s".into(), json!(common.warmup_s));
    m.insert("duration_s".into(), json!(o.window_s));
    m.insert("warmup_excluded".into(), json!(true));
    m.insert("pings".into(), json!(t.sent));
    m.insert("pings_per_s".into(), json!(rate(t.sent_measured, o.window_s)));
    m.insert("pongs".into(), json!(t.received));
    m.insert("pongs_per_s".into(), json!(rate(t.received_measured, o.window_s)));
    m.insert("lost".into(), json!(t.lost));
    m.insert("duplicates".into(), json!(t.duplicates));
    m.insert("reordered".into(), json!(t.reordered));
    m.insert("drain_s".into(), json!(o.drain_s));
    m.insert("drain_complete".into(), json!(t.drain_timeouts == 0));
    percentiles(&mut m, "", &t.latency);
    percentiles(&mut m, "send_lag_", &t.send_lag);
    if let Some(v) = node_cpu_per(o, t.received_measured) {
        m.insert("node_cpu_us_per_pong".into(), json!(v));
    }

    let mut h = String::new();
    let _ = writeln!(
        h,
        "fovea-flood pingpong → {}: {} connections, {} pings/s, {} thread(s)",
        common.node, p.connections, p.rate, common.threads
    );
    let _ = writeln!(h, "  setup        {} sessions in {:.2} s", t.connected, o.connect_s);
    let _ =
        writeln!(h, "  measured     {:.1} s after {:.1} s of warm-up", o.window_s, common.warmup_s);
    let _ = writeln!(
        h,
        "  pings        {} sent ({:.1}/s measured), {} answered",
        t.sent,
        rate(t.sent_measured, o.window_s),
        t.received
    );
    let _ = writeln!(h, "  RTT          {}", pct_line(&t.latency));
    let _ = writeln!(h, "  send lag     {}", pct_line(&t.send_lag));
    let _ = writeln!(
        h,
        "  accounting   lost {}, duplicates {}, reordered {}, errors {}",
        t.lost, t.duplicates, t.reordered, m["errors"]
    );
    if let Some(cpu) = o.node_cpu {
        let _ = writeln!(h, "  node CPU     {:.1} ms over the window", cpu.as_secs_f64() * 1e3);
    }
    contention_line(&mut h, o);
    saturation_line(&mut h, common, o);
    error_lines(&mut h, o);
    let mut failures = Vec::new();
    for (n, what) in [
        (t.lost, "unanswered"),
        (t.duplicates, "answered twice"),
        (t.reordered, "answered out of order"),
    ] {
        if n > 0 {
            failures.push(format!("{n} pings {what}"));
        }
    }
    if t.errors > 0 || !o.thread_failures.is_empty() {
        failures.push(format!("{} errors", m["errors"]));
    }
    Report { json: Value::Object(m), human: h, failures }
}

/// Names of CALL_ERROR codes with their counts (`NO_PROVIDER`: 3, or `0x10001` for an
/// application code).
fn call_error_names(t: &crate::stats::Tally) -> Map<String, Value> {
    t.call_errors
        .iter()
        .map(|(&code, &n)| {
            let name = fovea_codec::ErrorCode::from_u64(code)
                .map_or_else(|| format!("0x{code:x}"), |c| c.name().to_string());
            (name, json!(n))
        })
        .collect()
}

/// How evenly the providers were invoked: min, max, and (max − min) / mean.
fn spread(counts: &[u64]) -> (u64, u64, f64) {
    let (Some(&min), Some(&max)) = (counts.iter().min(), counts.iter().max()) else {
        return (0, 0, 0.0);
    };
    let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
    let rel = if mean > 0.0 { (max - min) as f64 / mean } else { 0.0 };
    (min, max, (rel * 1e4).round() / 1e4)
}

/// The report of an RPC run.
pub fn rpc(common: &Common, p: &Rpc, o: &Outcome) -> Report {
    let t = &o.tally;
    let mut m = Map::new();
    common_figures(&mut m, "rpc", common, o);
    m.insert("params".into(), json!({ "common": common, "rpc": p }));
    m.insert("providers".into(), json!(p.providers));
    m.insert("callers".into(), json!(p.callers));
    m.insert("procedure".into(), json!(p.procedure));
    m.insert("payload_bytes".into(), json!(p.payload));
    m.insert("rate".into(), json!(p.rate));
    m.insert("deadline_ms".into(), json!(p.deadline_ms));
    m.insert("idempotent".into(), json!(p.idempotent));
    m.insert("warmup_s".into(), json!(common.warmup_s));
    m.insert("duration_s".into(), json!(o.window_s));
    m.insert("warmup_excluded".into(), json!(true));
    m.insert("calls".into(), json!(t.sent));
    m.insert("calls_measured".into(), json!(t.sent_measured));
    m.insert("offered_calls_per_s".into(), json!(rate(t.sent_measured, o.window_s)));
    m.insert("calls_skipped".into(), json!(t.skipped));
    m.insert("replies".into(), json!(t.received));
    m.insert("replies_measured".into(), json!(t.received_measured));
    // What the node achieved: replies that arrived inside the measured window, per second.
    m.insert("calls_per_s".into(), json!(rate(t.received_measured, o.window_s)));
    let errors = call_error_names(t);
    let errors_total: u64 = t.call_errors.values().sum();
    m.insert("call_errors".into(), Value::Object(errors.clone()));
    m.insert("call_errors_total".into(), json!(errors_total));
    m.insert("timeouts".into(), json!(t.lost));
    m.insert("duplicates".into(), json!(t.duplicates));
    m.insert("unexpected".into(), json!(t.unexpected));
    m.insert("drain_s".into(), json!(o.drain_s));
    m.insert("drain_complete".into(), json!(t.drain_timeouts == 0));
    let (min, max, rel) = spread(&t.invocations);
    m.insert("invocations_per_provider".into(), json!(t.invocations));
    m.insert("invocations_min".into(), json!(min));
    m.insert("invocations_max".into(), json!(max));
    m.insert("invocation_spread".into(), json!(rel));
    percentiles(&mut m, "", &t.latency);
    percentiles(&mut m, "send_lag_", &t.send_lag);
    if let Some(v) = node_cpu_per(o, t.received_measured) {
        m.insert("node_cpu_us_per_call".into(), json!(v));
    }

    let mut h = String::new();
    let _ = writeln!(
        h,
        "fovea-flood rpc → {}: {} caller(s) → {:?} → {} provider(s), {} B, {} calls/s {}, deadline {}, {} thread(s), {} driver",
        common.node, p.callers, p.procedure, p.providers, p.payload, p.rate,
        if p.arrivals == crate::schedule::Arrivals::Poisson { "(Poisson)" } else { "(uniform)" },
        if p.deadline_ms == 0 { "node default".to_string() } else { format!("{} ms", p.deadline_ms) },
        common.threads, m["io_driver"].as_str().unwrap_or("?")
    );
    let _ = writeln!(h, "  setup        {} sessions in {:.2} s", t.connected, o.connect_s);
    let _ =
        writeln!(h, "  measured     {:.1} s after {:.1} s of warm-up", o.window_s, common.warmup_s);
    let _ = writeln!(
        h,
        "  calls        {} sent ({:.1}/s offered), {} replies ({:.1}/s)",
        t.sent_measured,
        rate(t.sent_measured, o.window_s),
        t.received_measured,
        rate(t.received_measured, o.window_s)
    );
    let _ = writeln!(h, "  latency      {}", pct_line(&t.latency));
    let _ = writeln!(h, "  send lag     {}", pct_line(&t.send_lag));
    let drain = if t.drain_timeouts == 0 {
        format!("drain {:.2} s", o.drain_s)
    } else {
        format!("drain timed out after {:.2} s: calls not answered count as timeouts", o.drain_s)
    };
    let _ = writeln!(
        h,
        "  whole run    {} calls, {} replies, {} CALL_ERRORs {} ({drain})",
        t.sent,
        t.received,
        errors_total,
        Value::Object(errors)
    );
    let _ = writeln!(
        h,
        "  accounting   timeouts {}, duplicates {}, unexpected {}, skipped sends {}, errors {}",
        t.lost, t.duplicates, t.unexpected, t.skipped, m["errors"]
    );
    let _ = writeln!(
        h,
        "  providers    invocations {:?} (min {min}, max {max}, spread {:.2}% of the mean)",
        t.invocations,
        rel * 100.0
    );
    if let Some(cpu) = o.node_cpu {
        let _ = writeln!(
            h,
            "  node CPU     {:.1} ms over the window = {} µs per call",
            cpu.as_secs_f64() * 1e3,
            node_cpu_per(o, t.received_measured).map_or("-".into(), |v| format!("{v:.3}"))
        );
    }
    let _ = writeln!(
        h,
        "  flood        CPU {:.1} ms over the window, socket drops {}",
        o.flood_cpu.as_secs_f64() * 1e3,
        t.socket_drops
    );
    contention_line(&mut h, o);
    saturation_line(&mut h, common, o);
    error_lines(&mut h, o);

    let mut failures = Vec::new();
    for (n, what) in [
        (t.lost, "calls got no answer (timeout)"),
        (t.duplicates, "calls were answered twice"),
        (t.unexpected, "answers matched no call of ours (unknown id or another call's header)"),
    ] {
        if n > 0 {
            failures.push(format!("{n} {what}"));
        }
    }
    if t.errors > 0 || !o.thread_failures.is_empty() {
        failures.push(format!("{} errors", m["errors"]));
    }
    Report { json: Value::Object(m), human: h, failures }
}

/// The report of a churn run.
pub fn churn(common: &Common, p: &Churn, o: &Outcome) -> Report {
    let t = &o.tally;
    let mut m = Map::new();
    common_figures(&mut m, "churn", common, o);
    m.insert("params".into(), json!({ "common": common, "churn": p }));
    m.insert("publishers".into(), json!(p.publishers));
    m.insert("subscribers".into(), json!(p.subscribers));
    m.insert("payload_bytes".into(), json!(p.payload));
    m.insert("rate".into(), json!(p.rate));
    m.insert("churn_rate".into(), json!(p.churn_rate));
    m.insert("reconnect_every_s".into(), json!(p.reconnect_every_s));
    m.insert("warmup_s".into(), json!(common.warmup_s));
    m.insert("duration_s".into(), json!(o.window_s));
    m.insert("publishes".into(), json!(t.sent));
    m.insert("publishes_skipped".into(), json!(t.skipped));
    m.insert("deliveries".into(), json!(t.received));
    m.insert("deliveries_per_s".into(), json!(rate(t.received_measured, o.window_s)));
    let ops = t.subscribes + t.unsubscribes + t.reconnects;
    m.insert("churn_ops".into(), json!(ops));
    m.insert("subscribes".into(), json!(t.subscribes));
    m.insert("unsubscribes".into(), json!(t.unsubscribes));
    m.insert("reconnects".into(), json!(t.reconnects));
    m.insert("churn_skipped".into(), json!(t.churn_skipped));
    m.insert("windows".into(), json!(t.windows));
    m.insert("window_missing".into(), json!(t.window_missing));
    m.insert("duplicated_or_reordered".into(), json!(t.duplicates));
    m.insert("unexpected".into(), json!(t.unexpected));
    let violations = t.window_missing + t.duplicates + t.unexpected;
    m.insert("violations".into(), json!(violations));
    m.insert("drain_s".into(), json!(o.drain_s));
    m.insert("drain_complete".into(), json!(t.drain_timeouts == 0));
    percentiles(&mut m, "", &t.latency);

    let mut h = String::new();
    let _ = writeln!(
        h,
        "fovea-flood churn → {}: {} publisher(s) on {:?} at {} msg/s → {} subscriber(s), {} churn ops/s, reconnect every {}, {} thread(s)",
        common.node, p.publishers, p.topic, p.rate, p.subscribers, p.churn_rate,
        if p.reconnect_every_s > 0.0 { format!("{} s", p.reconnect_every_s) } else { "never".into() },
        common.threads
    );
    let _ = writeln!(h, "  setup        {} sessions in {:.2} s", t.connected, o.connect_s);
    let _ = writeln!(
        h,
        "  churn        {ops} operations: {} subscribes, {} unsubscribes, {} reconnects ({} skipped: all busy)",
        t.subscribes, t.unsubscribes, t.reconnects, t.churn_skipped
    );
    let _ = writeln!(
        h,
        "  traffic      published {}, delivered {} ({:.1}/s in the window)",
        t.sent,
        t.received,
        rate(t.received_measured, o.window_s)
    );
    let _ = writeln!(h, "  latency      {}", pct_line(&t.latency));
    let _ = writeln!(
        h,
        "  promises     {} active windows checked: missing {}, duplicated or reordered {}, unexpected {} → {violations} violations",
        t.windows, t.window_missing, t.duplicates, t.unexpected
    );
    contention_line(&mut h, o);
    saturation_line(&mut h, common, o);
    error_lines(&mut h, o);

    let mut failures = Vec::new();
    if violations > 0 {
        failures.push(format!(
            "{violations} violations ({} owed messages missing, {} duplicated or reordered, {} unexpected)",
            t.window_missing, t.duplicates, t.unexpected
        ));
    }
    if t.drain_timeouts > 0 {
        failures.push("the drain timed out with owed messages missing".into());
    }
    if t.errors > 0 || !o.thread_failures.is_empty() {
        failures.push(format!("{} errors", m["errors"]));
    }
    Report { json: Value::Object(m), human: h, failures }
}

/// The report of a connection storm.
pub fn connect(common: &Common, p: &Connect, o: &Outcome) -> Report {
    let t = &o.tally;
    let mut m = Map::new();
    common_figures(&mut m, "connect", common, o);
    m.insert("params".into(), json!({ "common": common, "connect": p }));
    m.insert("connections".into(), json!(p.connections));
    m.insert("rate".into(), json!(p.rate));
    m.insert("hold_s".into(), json!(p.hold_s));
    m.insert("failed".into(), json!(t.lost));
    let secs = o.all_connected_s.unwrap_or(0.0);
    m.insert("all_connected_s".into(), json!(secs));
    m.insert("connects_per_s".into(), json!(rate(t.connected, secs)));
    m.insert("held_at_end".into(), json!(t.held));
    percentiles(&mut m, "", &t.connect);
    if let Some(v) = node_cpu_per(o, t.connected) {
        m.insert("node_cpu_us_per_connect".into(), json!(v));
    }

    let mut h = String::new();
    let how = if p.rate > 0.0 {
        format!("{} connections/s", p.rate)
    } else {
        format!("as fast as possible, {} handshakes in flight per thread", p.inflight)
    };
    let _ = writeln!(
        h,
        "fovea-flood connect → {}: {} connections, {how}, {} thread(s)",
        common.node, p.connections, common.threads
    );
    let _ = writeln!(
        h,
        "  connected    {} of {} in {:.2} s ({:.1}/s), {} failed",
        t.connected,
        p.connections,
        secs,
        rate(t.connected, secs),
        t.lost
    );
    let _ = writeln!(h, "  setup time   {}", pct_line(&t.connect));
    if p.hold_s > 0.0 {
        let _ = writeln!(h, "  held         {:.0} s; {} still open at the end", p.hold_s, t.held);
    }
    if let Some(cpu) = o.node_cpu {
        let _ = writeln!(
            h,
            "  node CPU     {:.1} ms over the storm = {} µs per connection",
            cpu.as_secs_f64() * 1e3,
            node_cpu_per(o, t.connected).map_or("-".into(), |v| format!("{v:.1}"))
        );
    }
    let _ =
        writeln!(h, "  flood        CPU {:.1} ms over the storm", o.flood_cpu.as_secs_f64() * 1e3);
    error_lines(&mut h, o);
    let mut failures = Vec::new();
    if t.lost > 0 {
        failures.push(format!("{} of {} connections failed", t.lost, p.connections));
    }
    if t.errors > 0 || !o.thread_failures.is_empty() {
        failures.push(format!("{} errors", m["errors"]));
    }
    Report { json: Value::Object(m), human: h, failures }
}
