//! `fovea-flood`: an open-loop load generator for Fovea nodes.
//!
//! Thread-per-core like the node: each worker thread runs a monoio runtime driving many QUIC
//! client connections over one UDP socket (`endpoint`), with batched sends and quiche's timers;
//! nothing busy-waits and no thread is spent per connection. Messages follow a schedule fixed in
//! advance (`schedule`) and carry their intended send time (`payload`), so latency is measured
//! free of coordinated omission; every delivery is accounted per (subscriber, publisher) pair
//! (`stats`).
//!
//! Entry points: [`fanout`], [`pingpong`], [`connect`], [`rpc`], [`churn`]; each returns a
//! [`report::Report`].

pub mod clock;
pub mod conn;
pub mod endpoint;
pub mod failover;
pub mod params;
pub mod payload;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod stats;
pub mod udp;
pub mod wire;
pub mod worker;

use std::time::Duration;

use params::{Churn, Common, Connect, Fanout, Pingpong, Rpc, UsageError};
use report::Report;
use run::{ConnectError, Measure, Spec};

/// Why a run produced no report.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    /// Bad parameters.
    #[error("{0}")]
    Usage(#[from] UsageError),
    /// The node could not be reached or refused the setup.
    #[error("{0}")]
    Connect(#[from] ConnectError),
}

/// Runs a fan-out: publishers → subscribers through the node.
pub fn fanout(common: &Common, params: &Fanout) -> Result<Report, FloodError> {
    fanout_with(common, params, false)
}

/// Like [`fanout`]; `force_legacy` runs the workers on monoio's legacy (epoll) driver.
pub fn fanout_with(
    common: &Common,
    params: &Fanout,
    force_legacy: bool,
) -> Result<Report, FloodError> {
    let shares = scenario::fanout::plan(common, params)?;
    let spec = Spec {
        common: common.clone(),
        publishers: params.publishers,
        connections: params.publishers + params.subscribers,
        measure: Measure::Timed,
        labels: ("publishes", "deliveries"),
        force_legacy,
    };
    let outcome = run::execute(&spec, shares)?;
    Ok(report::fanout(common, params, &outcome))
}

/// Runs PING/PONG round trips.
pub fn pingpong(common: &Common, params: &Pingpong) -> Result<Report, FloodError> {
    let shares = scenario::pingpong::plan(common, params)?;
    let spec = Spec {
        common: common.clone(),
        publishers: 0,
        connections: params.connections,
        measure: Measure::Timed,
        labels: ("pings", "pongs"),
        force_legacy: false,
    };
    let outcome = run::execute(&spec, shares)?;
    Ok(report::pingpong(common, params, &outcome))
}

/// Runs RPC calls: callers → node → providers and back.
pub fn rpc(common: &Common, params: &Rpc) -> Result<Report, FloodError> {
    let shares = scenario::rpc::plan(common, params)?;
    let spec = Spec {
        common: common.clone(),
        publishers: 0,
        connections: params.providers + params.callers,
        measure: Measure::Timed,
        labels: ("calls", "replies"),
        force_legacy: false,
    };
    let outcome = run::execute(&spec, shares)?;
    Ok(report::rpc(common, params, &outcome))
}

/// Runs subscribe/unsubscribe/reconnect churn under a publisher's traffic.
pub fn churn(common: &Common, params: &Churn) -> Result<Report, FloodError> {
    let shares = scenario::churn::plan(common, params)?;
    let spec = Spec {
        common: common.clone(),
        publishers: params.publishers,
        connections: params.publishers + params.subscribers,
        measure: Measure::Timed,
        labels: ("publishes", "deliveries"),
        force_legacy: false,
    };
    let outcome = run::execute(&spec, shares)?;
    Ok(report::churn(common, params, &outcome))
}

/// Runs a connection storm (and holds the connections with `hold_s`).
pub fn connect(common: &Common, params: &Connect) -> Result<Report, FloodError> {
    let shares = scenario::connect::plan(common, params)?;
    // The storm gets the time its schedule needs plus the connect timeout.
    let scheduled = if params.rate > 0.0 { params.connections as f64 / params.rate } else { 0.0 };
    let spec = Spec {
        common: common.clone(),
        publishers: 0,
        connections: params.connections,
        measure: Measure::UntilConnected {
            hold: Duration::from_secs_f64(params.hold_s),
            storm: Duration::from_secs_f64(scheduled + common.connect_timeout_s),
        },
        labels: ("opened", "connected"),
        force_legacy: false,
    };
    let outcome = run::execute(&spec, shares)?;
    if outcome.tally.connected == 0 {
        // Not one session: the node is unreachable or refuses everyone; say why (exit 2).
        let known = outcome.thread_failures.iter().chain(&outcome.tally.error_samples).next();
        let why = known.cloned().unwrap_or_else(|| {
            format!(
                "timed out after {:.1} s: no connection got a session from {} (no QUIC answer?)",
                common.connect_timeout_s, common.node
            )
        });
        return Err(ConnectError(why).into());
    }
    Ok(report::connect(common, params, &outcome))
}
