//! Fault schedules: a list of phases, each starting at an offset from the proxy's start (or
//! from when the script was started) and changing the faults from then on.
//!
//! The file format is TOML (tools/faultproxy/README.md has the full description):
//!
//! ```toml
//! [[phase]]
//! at = "0s"
//! both = { loss = 0.05 }
//!
//! [[phase]]
//! at = "10s"
//! both = { blackhole = true }
//!
//! [[phase]]
//! at = "50s"
//! clear = true
//!
//! [[phase]]
//! at = "55s"
//! rebind = true
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ScriptError;
use crate::faults::{Faults, RateLimit};

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Phase {
    /// Offset from the start of the script.
    pub at: Duration,
    /// Reset both directions to clean and stop periodic rebinding, before the rest applies.
    pub clear: bool,
    /// New faults client → node (replacing the previous ones entirely).
    pub up: Option<Faults>,
    /// New faults node → client.
    pub down: Option<Faults>,
    /// Rebind every client's upstream port once, at `at`.
    pub rebind: bool,
    /// From `at` on, rebind every client this often (`Some(None)`: stop; `None`: unchanged).
    pub rebind_every: Option<Option<Duration>>,
}

/// A schedule: phases in time order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Script {
    /// The phases.
    pub phases: Vec<Phase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptToml {
    #[serde(default)]
    phase: Vec<PhaseToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseToml {
    at: String,
    #[serde(default)]
    clear: bool,
    up: Option<FaultsToml>,
    down: Option<FaultsToml>,
    both: Option<FaultsToml>,
    #[serde(default)]
    rebind: bool,
    rebind_every: Option<String>,
}

/// The faults table of a phase; keys not given are off.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FaultsToml {
    loss: f64,
    delay: Option<String>,
    jitter: Option<String>,
    reorder: f64,
    reorder_delay: Option<String>,
    duplicate: f64,
    blackhole: bool,
    rate: Option<u64>,
    burst: Option<u64>,
    queue: Option<u64>,
    mtu: Option<usize>,
}

fn duration(phase: usize, key: &'static str, text: &str) -> Result<Duration, ScriptError> {
    humantime::parse_duration(text.trim()).map_err(|source| ScriptError::Duration {
        phase,
        key,
        value: text.to_owned(),
        source,
    })
}

impl FaultsToml {
    fn into_faults(self, phase: usize, dir: &'static str) -> Result<Faults, ScriptError> {
        let d = |key, v: Option<String>| match v {
            Some(t) => duration(phase, key, &t).map(Some),
            None => Ok(None),
        };
        let mut f = Faults {
            loss: self.loss,
            reorder: self.reorder,
            duplicate: self.duplicate,
            blackhole: self.blackhole,
            mtu: self.mtu,
            ..Faults::default()
        };
        f.delay = d("delay", self.delay)?.unwrap_or_default();
        f.jitter = d("jitter", self.jitter)?.unwrap_or_default();
        if let Some(r) = d("reorder_delay", self.reorder_delay)? {
            f.reorder_delay = r;
        }
        if let Some(rate) = self.rate {
            let mut limit = RateLimit::new(rate);
            limit.burst = self.burst.unwrap_or(limit.burst);
            limit.queue = self.queue.unwrap_or(limit.queue);
            f.rate = Some(limit);
        }
        f.validate().map_err(|source| ScriptError::Fault { phase, dir, source })?;
        Ok(f)
    }
}

impl Script {
    /// Parses a script from TOML text.
    pub fn parse(text: &str) -> Result<Script, ScriptError> {
        let raw: ScriptToml = toml::from_str(text)?;
        let mut phases = Vec::with_capacity(raw.phase.len());
        for (i, p) in raw.phase.into_iter().enumerate() {
            let at = duration(i, "at", &p.at)?;
            if let Some(prev) = phases.last().map(|p: &Phase| p.at) {
                if at < prev {
                    return Err(ScriptError::OutOfOrder { phase: i, at, previous: prev });
                }
            }
            let (mut up, mut down) = (None, None);
            if let Some(both) = p.both {
                if p.up.is_some() || p.down.is_some() {
                    return Err(ScriptError::BothAndOne { phase: i });
                }
                let f = both.into_faults(i, "both")?;
                up = Some(f.clone());
                down = Some(f);
            }
            if let Some(f) = p.up {
                up = Some(f.into_faults(i, "up")?);
            }
            if let Some(f) = p.down {
                down = Some(f.into_faults(i, "down")?);
            }
            let rebind_every = match p.rebind_every {
                None => None,
                Some(t) => {
                    let every = duration(i, "rebind_every", &t)?;
                    Some((!every.is_zero()).then_some(every))
                }
            };
            phases.push(Phase { at, clear: p.clear, up, down, rebind: p.rebind, rebind_every });
        }
        Ok(Script { phases })
    }

    /// Reads and parses a script file.
    pub fn load(path: &Path) -> Result<Script, ScriptError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScriptError::Read { path: path.to_owned(), source })?;
        Script::parse(&text)
    }

    /// When the last phase starts.
    pub fn length(&self) -> Duration {
        self.phases.last().map_or(Duration::ZERO, |p| p.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_readme_example() {
        let s = Script::parse(
            r#"
            [[phase]]
            at = "0s"
            both = { loss = 0.05, reorder = 0.02 }

            [[phase]]
            at = "10s"
            up = { blackhole = true }
            down = { blackhole = true, delay = "20ms", jitter = "5ms" }

            [[phase]]
            at = "50s"
            clear = true

            [[phase]]
            at = "55s"
            rebind = true
            rebind_every = "5s"

            [[phase]]
            at = "1m"
            down = { rate = 125000, mtu = 1280 }
            rebind_every = "0s"
            "#,
        )
        .unwrap();
        assert_eq!(s.phases.len(), 5);
        let p0 = &s.phases[0];
        assert_eq!(p0.up, p0.down);
        assert_eq!(p0.up.as_ref().unwrap().loss, 0.05);
        assert_eq!(p0.up.as_ref().unwrap().reorder, 0.02);
        let p1 = &s.phases[1];
        assert_eq!(p1.at, Duration::from_secs(10));
        assert!(p1.up.as_ref().unwrap().blackhole);
        assert_eq!(p1.down.as_ref().unwrap().jitter, Duration::from_millis(5));
        assert!(s.phases[2].clear && s.phases[2].up.is_none());
        assert!(s.phases[3].rebind);
        assert_eq!(s.phases[3].rebind_every, Some(Some(Duration::from_secs(5))));
        let p4 = &s.phases[4];
        assert_eq!(p4.rebind_every, Some(None));
        assert_eq!(p4.down.as_ref().unwrap().rate, Some(RateLimit::new(125_000)));
        assert_eq!(p4.up, None);
        assert_eq!(s.length(), Duration::from_secs(60));
    }

    #[test]
    fn rejects_bad_scripts() {
        let err = |t: &str| Script::parse(t).unwrap_err().to_string();
        assert!(err("[[phase]]\nat = \"soon\"\n").contains("not a duration"));
        assert!(err("[[phase]]\nat = \"0s\"\nboth = { loss = 2.0 }\n").contains("probability"));
        assert!(err("[[phase]]\nat = \"0s\"\nboth = { los = 0.1 }\n").contains("los"));
        assert!(err("[[phase]]\nat = \"0s\"\nboth = {}\nup = {}\n").contains("cannot be combined"));
        assert!(err("[[phase]]\nat = \"5s\"\n[[phase]]\nat = \"1s\"\n").contains("before"));
        assert!(err("[[phase]]\nat = \"0s\"\nboth = { rate = 0 }\n").contains("rate"));
        assert_eq!(Script::parse("").unwrap(), Script::default());
    }
}
