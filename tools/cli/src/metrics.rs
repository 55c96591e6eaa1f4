//! `stats`: fetch the node's Prometheus text over HTTP/1.0, parse it, summarise `fovea_*`.
//!
//! A small parser of the text exposition format (version 0.0.4) rather than a crate: the CLI
//! needs names, labels and values, the format is line-based, and the node's endpoint is the
//! only producer it reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

/// Largest response read (the node's is about 16 KiB).
const RESPONSE_BYTES_MAX: u64 = 16 << 20;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A metric family: its `# TYPE`, `# HELP` and samples (for a histogram, its `_bucket`,
/// `_sum` and `_count` lines).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Family {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) help: String,
    pub(crate) samples: Vec<Sample>,
}

/// Parses exposition text into families, in order of first appearance.
pub(crate) fn parse(text: &str) -> anyhow::Result<Vec<Family>> {
    let mut families: Vec<Family> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (Some(keyword), Some(name)) = (words.next(), words.next()) else { continue };
            let rest = words.next().unwrap_or("").trim();
            match keyword {
                "TYPE" => family_mut(&mut families, name).kind = rest.to_owned(),
                "HELP" => family_mut(&mut families, name).help = rest.to_owned(),
                _ => {}
            }
            continue;
        }
        let sample =
            parse_sample(line).with_context(|| format!("metrics line {}: {line:?}", n + 1))?;
        let family = family_of(&families, &sample.name);
        family_mut(&mut families, &family).samples.push(sample);
    }
    Ok(families)
}

fn family_mut<'a>(families: &'a mut Vec<Family>, name: &str) -> &'a mut Family {
    if let Some(i) = families.iter().position(|f| f.name == name) {
        return &mut families[i];
    }
    families.push(Family {
        name: name.to_owned(),
        kind: "untyped".to_owned(),
        help: String::new(),
        samples: Vec::new(),
    });
    families.last_mut().expect("just pushed")
}

/// The family a sample belongs to: its own name, or for `x_bucket`/`x_sum`/`x_count` the
/// histogram or summary `x`.
fn family_of(families: &[Family], sample: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            if families
                .iter()
                .any(|f| f.name == base && matches!(f.kind.as_str(), "histogram" | "summary"))
            {
                return base.to_owned();
            }
        }
    }
    sample.to_owned()
}

fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    if name_end == 0 {
        bail!("no metric name");
    }
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    // A value, then an optional timestamp (ignored).
    let value = rest.split_whitespace().next().context("no value")?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().with_context(|| format!("value {v:?} is not a number"))?,
    };
    Ok(Sample { name, labels, value })
}

/// Parses `k="v",k2="v2"}` (after the opening brace); returns the labels and the text after
/// the closing brace. Values may hold `\\`, `\"` and `\n` escapes.
fn parse_labels(mut s: &str) -> anyhow::Result<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').context("label without '='")?;
        let key = s[..eq].trim().to_owned();
        let mut chars = s[eq + 1..].trim_start().char_indices();
        let value_start = s.len() - s[eq + 1..].trim_start().len();
        if chars.next().map(|(_, c)| c) != Some('"') {
            bail!("label {key} has no quoted value");
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => value.push('\n'),
                (true, c) => value.push(c),
                (false, '\\') => {}
                (false, '"') => {
                    end = Some(value_start + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
            escaped = !escaped && c == '\\';
        }
        let end = end.context("unterminated label value")?;
        labels.push((key, value));
        s = s[end..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// GETs `/metrics` from `addr` (HTTP/1.0, so no keep-alive and usually no chunking).
pub(crate) fn fetch(addr: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    fetch_path(addr, "/metrics", timeout)
}

/// GETs `path` from the node's metrics endpoint `addr`.
pub(crate) fn fetch_path(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot reach the metrics endpoint {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: a request split over segments is no problem for HTTP, but one is simpler
    // for the tiny servers that answer after the first read.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("sending the request to {addr}"))?;
    let mut response = Vec::new();
    stream
        .take(RESPONSE_BYTES_MAX)
        .read_to_end(&mut response)
        .with_context(|| format!("reading the metrics from {addr}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr} did not answer with HTTP"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("the metrics endpoint {addr} answered {status:?} for {path}");
    }
    let chunked = head.lines().any(|h| {
        h.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if chunked {
        return dechunk(body);
    }
    Ok(body.to_owned())
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("truncated chunk header")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("truncated chunk")?);
        body = rest.get(size..).and_then(|r| r.strip_prefix("\r\n")).context("bad chunk end")?;
    }
}

/// One line of the summary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Summary {
    /// A counter or gauge: node-wide value, and per shard when the node reports shards.
    Value { key: String, total: f64, per_shard: Vec<(String, f64)> },
    /// A histogram: observations, sum, and bucket bounds holding the median and the 99th
    /// percentile (upper estimates: the bucket's `le`).
    Histogram { key: String, count: f64, sum: f64, p50_le: Option<f64>, p99_le: Option<f64> },
}

/// Summarises the `fovea_*` families: the `shard="all"` series (or the sum over shards) as
/// the value, other labelled series one line each, histograms by count/mean/quantiles.
pub(crate) fn summarise(families: &[Family]) -> Vec<Summary> {
    let mut out = Vec::new();
    for family in families.iter().filter(|f| f.name.starts_with("fovea_")) {
        if family.kind == "histogram" {
            out.extend(histogram(family));
            continue;
        }
        let by_shard = |s: &&Sample| s.labels.len() == 1 && s.label("shard").is_some();
        let sharded: Vec<&Sample> = family.samples.iter().filter(by_shard).collect();
        if !sharded.is_empty() {
            let all = sharded.iter().find(|s| s.label("shard") == Some("all"));
            let per_shard: Vec<(String, f64)> = sharded
                .iter()
                .filter(|s| s.label("shard") != Some("all"))
                .map(|s| (s.label("shard").unwrap_or("").to_owned(), s.value))
                .collect();
            let total = all.map_or_else(|| per_shard.iter().map(|(_, v)| v).sum(), |s| s.value);
            out.push(Summary::Value { key: family.name.clone(), total, per_shard });
        }
        for s in family.samples.iter().filter(|s| !by_shard(s)) {
            out.push(Summary::Value { key: series_key(s), total: s.value, per_shard: Vec::new() });
        }
    }
    out
}

fn series_key(s: &Sample) -> String {
    if s.labels.is_empty() {
        return s.name.clone();
    }
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{}{{{}}}", s.name, labels.join(","))
}

fn histogram(family: &Family) -> Option<Summary> {
    let find = |suffix: &str| {
        family
            .samples
            .iter()
            .find(|s| s.name == format!("{}{suffix}", family.name))
            .map(|s| s.value)
    };
    let count = find("_count")?;
    let sum = find("_sum").unwrap_or(0.0);
    let mut buckets: Vec<(f64, f64)> = family
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_bucket"))
        .filter_map(|s| {
            let le = s.label("le")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, s.value))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let quantile = |q: f64| {
        if count <= 0.0 {
            return None;
        }
        buckets.iter().find(|(_, cumulative)| *cumulative >= q * count).map(|(le, _)| *le)
    };
    Some(Summary::Histogram {
        key: family.name.clone(),
        count,
        sum,
        p50_le: quantile(0.5),
        p99_le: quantile(0.99),
    })
}

/// A number without a useless `.0`.
pub(crate) fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Seconds as the most readable unit.
pub(crate) fn seconds(v: f64) -> String {
    if v.is_infinite() {
        return "+Inf".to_owned();
    }
    if v >= 1.0 {
        format!("{v:.3}s")
    } else if v >= 1e-3 {
        format!("{:.3}ms", v * 1e3)
    } else {
        format!("{:.1}µs", v * 1e6)
    }
}

/// The summary as aligned human-readable lines.
pub(crate) fn render_human(summary: &[Summary]) -> String {
    let key = |s: &Summary| match s {
        Summary::Value { key, .. } | Summary::Histogram { key, .. } => key.len(),
    };
    let width = summary.iter().map(key).max().unwrap_or(0);
    let mut out = String::new();
    for line in summary {
        match line {
            Summary::Value { key, total, per_shard } => {
                out.push_str(&format!("{key:<width$}  {}", number(*total)));
                // Per shard only when there is something to split (most counters of an idle
                // node are zero everywhere).
                if per_shard.len() > 1 && *total != 0.0 {
                    let parts: Vec<String> =
                        per_shard.iter().map(|(s, v)| format!("{s}: {}", number(*v))).collect();
                    out.push_str(&format!("  (shards {})", parts.join(", ")));
                }
            }
            Summary::Histogram { key, count, sum, p50_le, p99_le } => {
                out.push_str(&format!("{key:<width$}  count {}", number(*count)));
                if *count > 0.0 {
                    out.push_str(&format!(", mean {}", seconds(sum / count)));
                }
                if let Some(p) = p50_le {
                    out.push_str(&format!(", p50 <= {}", seconds(*p)));
                }
                if let Some(p) = p99_le {
                    out.push_str(&format!(", p99 <= {}", seconds(*p)));
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The summary as one JSON object: values by key; histograms as objects.
pub(crate) fn render_json(summary: &[Summary]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for line in summary {
        match line {
            Summary::Value { key, total, .. } => {
                map.insert(key.clone(), serde_json::json!(total));
            }
            Summary::Histogram { key, count, sum, p50_le, p99_le } => {
                map.insert(
                    key.clone(),
                    serde_json::json!({ "count": count, "sum": sum, "p50_le": p50_le, "p99_le": p99_le }),
                );
            }
        }
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP fovea_connections Open QUIC connections owned by the shard.
# TYPE fovea_connections gauge
fovea_connections{shard="0"} 1
fovea_connections{shard="1"} 2
fovea_connections{shard="all"} 3
# TYPE fovea_lat_seconds histogram
fovea_lat_seconds_bucket{le="0.00001"} 0
fovea_lat_seconds_bucket{le="0.00005"} 60
fovea_lat_seconds_bucket{le="0.001"} 99
fovea_lat_seconds_bucket{le="+Inf"} 100
fovea_lat_seconds_sum 0.01
fovea_lat_seconds_count 100
# TYPE fovea_io_driver gauge
fovea_io_driver{driver="io_uring"} 1
fovea_ready 1 1700000000000
other_metric 5
"#;

    #[test]
    fn parses_families_labels_histograms_and_timestamps() {
        let f = parse(TEXT).unwrap();
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fovea_connections",
                "fovea_lat_seconds",
                "fovea_io_driver",
                "fovea_ready",
                "other_metric"
            ]
        );
        assert_eq!(f[0].kind, "gauge");
        assert_eq!(f[0].help, "Open QUIC connections owned by the shard.");
        assert_eq!(f[1].samples.len(), 6);
        assert_eq!(f[3].samples[0].value, 1.0);
    }

    #[test]
    fn label_values_unescape() {
        let s = parse_sample(r#"m{a="x\"y",b="back\\slash", c="line\nbreak",} 2.5"#).unwrap();
        assert_eq!(
            s.labels,
            vec![
                ("a".to_owned(), "x\"y".to_owned()),
                ("b".to_owned(), "back\\slash".to_owned()),
                ("c".to_owned(), "line\nbreak".to_owned()),
            ]
        );
        assert_eq!(s.value, 2.5);
        assert!(parse_sample("m{a=\"open} 1").is_err());
        assert!(parse_sample("m one").is_err());
    }

    #[test]
    fn summary_uses_the_all_series_and_bucket_bounds() {
        let summary = summarise(&parse(TEXT).unwrap());
        assert_eq!(
            summary[0],
            Summary::Value {
                key: "fovea_connections".into(),
                total: 3.0,
                per_shard: vec![("0".into(), 1.0), ("1".into(), 2.0)]
            }
        );
        assert_eq!(
            summary[1],
            Summary::Histogram {
                key: "fovea_lat_seconds".into(),
                count: 100.0,
                sum: 0.01,
                p50_le: Some(0.00005),
                p99_le: Some(0.001)
            }
        );
        assert_eq!(summary.len(), 4, "other_metric is not fovea's: {summary:?}");
        let human = render_human(&summary);
        assert!(human.contains("fovea_connections"), "{human}");
        assert!(human.contains("(shards 0: 1, 1: 2)"), "{human}");
        assert!(human.contains("mean 100.0µs, p50 <= 50.0µs, p99 <= 1.000ms"), "{human}");
        assert!(human.contains("fovea_io_driver{driver=\"io_uring\"}"), "{human}");
        let json = render_json(&summary);
        assert_eq!(json["fovea_connections"], 3.0);
        assert_eq!(json["fovea_lat_seconds"]["count"], 100.0);
        assert_eq!(json["fovea_ready"], 1.0);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("4\r\nfove\r\n2;x=1\r\na_\r\n0\r\n\r\n").unwrap(), "fovea_");
        assert!(dechunk("9\r\nshort\r\n").is_err());
    }
}
