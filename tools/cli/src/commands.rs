//! The subcommands that speak the protocol: `pub`, `sub`, `call`, `ping`; and `stats`.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::Context;
use fovea_client::codec::frame::Frame;
use fovea_client::codec::{ErrorCode, Pattern, Topic};
use fovea_client::{Client, ClientError, Event};

use crate::args::{resolve, Cli};
use crate::{metrics, Incomplete, Usage};

/// How long `sub` waits when no --duration bounds it: effectively forever, still a deadline.
const SUB_WAIT_MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// First wait between two nodes of the --node list; doubled for each further one.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest wait between two nodes.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The wait before trying the `k`-th next node (k ≥ 1): `BACKOFF_BASE · 2^(k−1)` capped at
/// `BACKOFF_MAX`, times a jitter factor in [0.5, 1.5) from `unit` in [0, 1), so many CLIs that
/// failed together do not all come back in the same instant.
fn backoff(k: u32, unit: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << k.saturating_sub(1).min(10));
    exp.min(BACKOFF_MAX).mul_f64(0.5 + unit.clamp(0.0, 1.0))
}

/// A jitter in [0, 1) from the clock's nanoseconds: one sleep needs no random generator.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1e6
}

/// Connects to the first node of --node that gives a session, trying them in order, each
/// within --timeout, with a backoff between them; the last node's error if none does.
fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let nodes = cli.node_addrs()?;
    let credential = cli.credential()?;
    let mut last = None;
    for (k, (name, addr)) in nodes.iter().enumerate() {
        if k > 0 {
            std::thread::sleep(backoff(k as u32, jitter()));
        }
        let options = cli.connect_options_for(name, &credential)?;
        match Client::connect(*addr, &options, Instant::now() + cli.timeout) {
            Ok(client) => return Ok(client),
            Err(e) => {
                if k + 1 < nodes.len() {
                    eprintln!("fovea-cli: {name}: {e}; trying {}", nodes[k + 1].0);
                }
                last = Some(e);
            }
        }
    }
    Err(last.expect("at least one node").into())
}

/// The payload of a `MESSAGE`/`ARGS` argument: the text, or standard input for `-`.
fn read_payload(arg: &str) -> anyhow::Result<Vec<u8>> {
    if arg != "-" {
        return Ok(arg.as_bytes().to_vec());
    }
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).context("reading standard input")?;
    Ok(buf)
}

/// A payload for JSON: the text when it is UTF-8, else lowercase hex; and which one it is.
fn payload_json(payload: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(payload) {
        Ok(s) => (s.to_owned(), "utf8"),
        Err(_) => (payload.iter().map(|b| format!("{b:02x}")).collect(), "hex"),
    }
}

pub(crate) fn publish(
    cli: &Cli,
    topic: &str,
    message: &str,
    message_id: Option<u64>,
) -> anyhow::Result<()> {
    // Syntax errors are usage errors, found before connecting.
    topic.parse::<Topic>().map_err(|e| Usage(format!("invalid topic {topic:?}: {e}")))?;
    let payload = read_payload(message)?;
    let mut client = connect(cli)?;
    client.publish_with_id(topic, &payload, message_id, true)?;
    if cli.json {
        println!("{}", serde_json::json!({ "published": topic, "bytes": payload.len() }));
    } else {
        println!("published {} bytes to {topic}", payload.len());
    }
    // The OK is in: a slow close changes nothing for the caller.
    let _ = client.close();
    Ok(())
}

pub(crate) fn subscribe(
    cli: &Cli,
    patterns: &[String],
    count: Option<u64>,
    duration: Option<Duration>,
) -> anyhow::Result<()> {
    for p in patterns {
        p.parse::<Pattern>().map_err(|e| Usage(format!("invalid pattern {p:?}: {e}")))?;
    }
    let mut client = connect(cli)?;
    for (i, pattern) in patterns.iter().enumerate() {
        client.subscribe(i as u64 + 1, pattern)?;
    }
    // On stderr even with --json: scripts wait for this line before publishing.
    eprintln!("subscribed to {}", patterns.join(", "));
    let deadline = Instant::now() + duration.unwrap_or(SUB_WAIT_MAX);
    let mut seen = 0u64;
    while count.is_none_or(|c| seen < c) {
        let Some(event) = client.next_event(deadline) else {
            return match count {
                Some(c) => {
                    Err(Incomplete(format!("{seen} of {c} deliveries before --duration ended"))
                        .into())
                }
                None => Ok(()),
            };
        };
        match event {
            Event::Frame(Frame::Deliver(d)) => {
                seen += 1;
                if cli.json {
                    // Sub id i+1 is patterns[i]; an id this connection never used is skipped.
                    let matched: Vec<&str> = d
                        .sub_ids
                        .iter()
                        .filter_map(|&id| {
                            patterns.get((id as usize).wrapping_sub(1)).map(String::as_str)
                        })
                        .collect();
                    let (payload, encoding) = payload_json(&d.payload);
                    let line = serde_json::json!({
                        "topic": d.topic.as_str(),
                        "payload": payload,
                        "payload_encoding": encoding,
                        "patterns": matched,
                        "sub_ids": d.sub_ids.to_vec(),
                        "message_id": d.message_id,
                    });
                    println!("{line}");
                } else {
                    println!("{}: {}", d.topic, String::from_utf8_lossy(&d.payload));
                }
            }
            Event::Frame(Frame::Goodbye(g)) => {
                // The node drains: deliveries already queued still come, then it closes.
                eprintln!(
                    "fovea-cli: the node is leaving: {} {}",
                    fovea_client::app_code_name(g.code),
                    String::from_utf8_lossy(&g.reason)
                );
            }
            Event::Frame(Frame::Error(e)) => {
                eprintln!(
                    "fovea-cli: error from the node: {} ({:#x}) {}",
                    fovea_client::app_code_name(e.code),
                    e.code,
                    String::from_utf8_lossy(&e.message)
                );
            }
            Event::Closed { error_code, reason, by_peer, is_app } => {
                let close = fovea_client::Close { error_code, reason, by_peer, is_app };
                return Err(ClientError::from(close).into());
            }
            Event::Frame(_) | Event::Welcome { .. } => {}
        }
    }
    let _ = client.close();
    Ok(())
}

pub(crate) fn call(
    cli: &Cli,
    procedure: &str,
    args: &str,
    deadline_ms: u64,
    idempotent: bool,
) -> anyhow::Result<()> {
    procedure
        .parse::<fovea_client::codec::Name>()
        .map_err(|e| Usage(format!("invalid procedure name {procedure:?}: {e}")))?;
    let payload = read_payload(args)?;
    let mut client = connect(cli)?;
    let started = Instant::now();
    let reply = match client.call(procedure, &payload, deadline_ms, idempotent) {
        Ok(reply) => reply,
        Err(ClientError::CallFailed { code, .. }) if code == ErrorCode::Unsupported as u64 => {
            anyhow::bail!(crate::NodeRefused(
                "RPC is not supported by this node (UNSUPPORTED)".into()
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let _ = client.close();
    if cli.json {
        let (reply, encoding) = payload_json(&reply);
        let line = serde_json::json!({
            "procedure": procedure, "reply": reply, "reply_encoding": encoding, "ms": ms
        });
        println!("{line}");
    } else {
        println!("{}", String::from_utf8_lossy(&reply));
    }
    Ok(())
}

/// Round-trip statistics in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RttStats {
    pub(crate) min_ms: f64,
    pub(crate) avg_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) max_ms: f64,
}

/// Min, mean, median (nearest rank) and max; `None` for no samples.
pub(crate) fn rtt_stats(rtts: &[Duration]) -> Option<RttStats> {
    let mut ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    if n == 0 {
        return None;
    }
    Some(RttStats {
        min_ms: ms[0],
        avg_ms: ms.iter().sum::<f64>() / n as f64,
        p50_ms: ms[n.div_ceil(2) - 1],
        max_ms: ms[n - 1],
    })
}

pub(crate) fn ping(cli: &Cli, count: u32) -> anyhow::Result<()> {
    let mut client = connect(cli)?;
    let mut rtts = Vec::with_capacity(count as usize);
    for i in 1..=count {
        let rtt = client.ping()?;
        if !cli.json {
            println!("pong {i}: {:.3} ms", rtt.as_secs_f64() * 1000.0);
        }
        rtts.push(rtt);
    }
    let _ = client.close();
    let s = rtt_stats(&rtts).expect("count is at least 1");
    if cli.json {
        let line = serde_json::json!({
            "count": count, "min_ms": s.min_ms, "avg_ms": s.avg_ms, "p50_ms": s.p50_ms, "max_ms": s.max_ms
        });
        println!("{line}");
    } else {
        println!(
            "rtt min/avg/p50/max = {:.3}/{:.3}/{:.3}/{:.3} ms",
            s.min_ms, s.avg_ms, s.p50_ms, s.max_ms
        );
    }
    Ok(())
}

pub(crate) fn stats(cli: &Cli, endpoint: &str) -> anyhow::Result<()> {
    let addr = resolve("--metrics", endpoint)?;
    let text = metrics::fetch(addr, cli.timeout).map_err(|e| Usage(format!("{e:#}")))?;
    let families = metrics::parse(&text).map_err(|e| Usage(format!("{addr}: {e:#}")))?;
    let summary = metrics::summarise(&families);
    if summary.is_empty() {
        return Err(Usage(format!("{addr} serves no fovea_* metrics")).into());
    }
    if cli.json {
        println!("{}", metrics::render_json(&summary));
    } else {
        print!("{}", metrics::render_human(&summary));
    }
    Ok(())
}

/// `members`: the node's `/federation` view as a table (or its JSON with `--json`).
pub(crate) fn members(cli: &Cli, endpoint: &str) -> anyhow::Result<()> {
    let addr = resolve("--metrics", endpoint)?;
    let body = metrics::fetch_path(addr, "/federation", cli.timeout)
        .map_err(|e| Usage(format!("{e:#} (is federation enabled on the node?)")))?;
    if cli.json {
        print!("{body}");
        return Ok(());
    }
    let view: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| Usage(format!("{addr}/federation is not JSON: {e}")))?;
    print!("{}", render_members(&view));
    Ok(())
}

/// `relay`: the node's per-peer relay meters.
pub(crate) fn relay(cli: &Cli, endpoint: &str) -> anyhow::Result<()> {
    let addr = resolve("--metrics", endpoint)?;
    let body = metrics::fetch_path(addr, "/relay", cli.timeout)?;
    if cli.json {
        print!("{body}");
        return Ok(());
    }
    let view: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| Usage(format!("{addr}/relay is not JSON: {e}")))?;
    print!("{}", render_relay(&view));
    Ok(())
}

fn render_relay(view: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<16} {:>5} {:>14} {:>10}",
        "peer", "realm", "shard", "relayed bytes", "messages"
    );
    for p in view["peers"].as_array().into_iter().flatten() {
        let text = |k: &str| p[k].as_str().unwrap_or("").to_owned();
        let num = |k: &str| p[k].as_u64().unwrap_or(0);
        let id = text("peer");
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:>5} {:>14} {:>10}",
            &id[..id.len().min(16)],
            text("realm"),
            num("shard"),
            num("relayed_bytes"),
            num("relayed_msgs")
        );
    }
    out
}

fn render_members(view: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_owned();
    let num = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mut out = String::new();
    let id = text(view, "node_id");
    let _ = writeln!(out, "node {} region {:?}", &id[..id.len().min(16)], text(view, "region"));
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:<8} {:<12} {:>8} {:>9}",
        "member", "endpoint", "state", "region", "load", "capacity"
    );
    for m in view["members"].as_array().into_iter().flatten() {
        let id = text(m, "id");
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<8} {:<12} {:>8} {:>9}",
            &id[..id.len().min(16)],
            text(m, "endpoint"),
            text(m, "state"),
            text(m, "region"),
            num(m, "load"),
            num(m, "capacity")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff(1, 0.5), Duration::from_millis(100));
        assert_eq!(backoff(3, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(30, 0.5), BACKOFF_MAX);
        assert_eq!(backoff(1, 0.0), Duration::from_millis(50));
        assert!(backoff(1, 0.9999) < Duration::from_millis(150));
        assert!((0.0..1.0).contains(&jitter()));
    }

    #[test]
    fn relay_table_lists_each_peer_with_its_bytes_and_messages() {
        let view: serde_json::Value = serde_json::from_str(
            r#"{"peers":[{"peer":"cccccccccccccccccccccccc","realm":"acme","shard":1,
               "relayed_bytes":300,"relayed_msgs":3}]}"#,
        )
        .unwrap();
        let table = render_relay(&view);
        let row = table.lines().nth(1).expect("one peer row");
        assert!(row.starts_with("cccccccccccccccc acme"), "{table}");
        assert!(row.ends_with(" 300          3"), "{table}");
    }

    #[test]
    fn members_table_lists_each_member_with_region_load_and_capacity() {
        let view: serde_json::Value = serde_json::from_str(
            r#"{"node_id":"aaaaaaaaaaaaaaaaaaaa","region":"eu","members":[
              {"id":"bbbbbbbbbbbbbbbbbbbbbbbb","endpoint":"10.0.0.2:4433","region":"us",
               "load":12,"capacity":20000,"state":"alive","last_seen_ms":1}]}"#,
        )
        .unwrap();
        let table = render_members(&view);
        let row = table.lines().nth(2).expect("one member row");
        assert!(row.starts_with("bbbbbbbbbbbbbbbb 10.0.0.2:4433"), "{table}");
        assert!(row.contains("alive") && row.contains(" us ") && row.ends_with("20000"), "{table}");
    }

    #[test]
    fn rtt_stats_use_the_nearest_rank_median() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        let s = rtt_stats(&ms(&[4, 1, 3, 2])).unwrap();
        assert_eq!((s.min_ms, s.avg_ms, s.p50_ms, s.max_ms), (1.0, 2.5, 2.0, 4.0));
        let s = rtt_stats(&ms(&[5])).unwrap();
        assert_eq!((s.min_ms, s.p50_ms, s.max_ms), (5.0, 5.0, 5.0));
        assert!(rtt_stats(&[]).is_none());
    }

    #[test]
    fn binary_payloads_are_hex_in_json() {
        assert_eq!(payload_json(b"21.5C"), ("21.5C".to_owned(), "utf8"));
        assert_eq!(payload_json(&[0xff, 0x00, 0x10]), ("ff0010".to_owned(), "hex"));
    }
}
