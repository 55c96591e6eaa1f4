//! `fovea-cli`: the operators' client. `pub`, `sub`, `call`, `ping` speak the Fovea protocol
//! over QUIC through `fovea-client`, with a token or an Ed25519 key as credential (`--token`,
//! `--token-file`, `--key`; `keygen` makes a key); `stats` reads the node's metrics endpoint.
//! Human output by default, `--json` for scripts. Exit codes: 0 success, 1 the node refused or closed, 2 usage
//! or connection errors, 3 `sub --count` not reached within `--duration`.

mod args;
mod commands;
mod keys;
mod metrics;

use std::process::ExitCode;

use clap::Parser;
use fovea_client::ClientError;

use args::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A usage or local error: bad arguments, unreachable endpoints (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// The node said no, in words this tool chose (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NodeRefused(String);

/// `sub --count N` ran out of time (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Incomplete(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fovea-cli: {e:#}");
            if let Some(hint) = hint(&e) {
                eprintln!("  hint: {hint}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Pub { topic, message, message_id } => {
            commands::publish(cli, topic, message, *message_id)
        }
        Command::Sub { patterns, count, duration } => {
            commands::subscribe(cli, patterns, *count, *duration)
        }
        Command::Call { procedure, args, deadline_ms, idempotent } => {
            commands::call(cli, procedure, args, *deadline_ms, *idempotent)
        }
        Command::Ping { count } => commands::ping(cli, *count),
        Command::Stats { metrics } => commands::stats(cli, metrics),
        Command::Members { metrics } => commands::members(cli, metrics),
        Command::Relay { metrics } => commands::relay(cli, metrics),
        Command::Keygen { file, force } => keys::keygen(cli, file, *force),
        Command::Pubkey { file } => keys::pubkey(cli, file),
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<NodeRefused>().is_some() {
        return 1;
    }
    if e.downcast_ref::<Incomplete>().is_some() {
        return 3;
    }
    match e.downcast_ref::<ClientError>() {
        Some(
            ClientError::Rejected { .. }
            | ClientError::CallFailed { .. }
            | ClientError::PayloadTooLarge { .. }
            | ClientError::FrameTooLarge { .. }
            | ClientError::AuthRequired(_)
            | ClientError::AuthFailed(_)
            | ClientError::NoSigningKey,
        ) => 1,
        // Closed by this side (an untrusted certificate, a silent node, a socket error) is a
        // connection problem, not the node's refusal; so is a TLS failure either way.
        Some(ClientError::Closed(c)) if c.by_peer && !c.is_tls_failure() => 1,
        _ => 2,
    }
}

fn hint(e: &anyhow::Error) -> Option<&'static str> {
    match e.downcast_ref::<ClientError>()? {
        ClientError::Closed(c) if c.is_tls_failure() && !c.by_peer => Some(
            "the node's certificate is not trusted: pass --ca with the node's certificate \
             (fovea-data/cert.pem), or --insecure for a test node",
        ),
        ClientError::Closed(c) if c.is_tls_failure() => {
            Some("the node refused the TLS handshake (ALPN fovea/1?)")
        }
        ClientError::AuthRequired(_) => Some(
            "this realm requires a credential: pass --key FILE (an Ed25519 key whose public key \
             is in the node's [[auth.credentials]] for this --realm) or --token-file FILE",
        ),
        ClientError::AuthFailed(_) => Some(
            "the node does not accept this credential in this realm: check --realm, and that \
             the node's [[auth.credentials]] hold this key's public key (fovea-cli pubkey FILE) \
             or this token's SHA-256",
        ),
        _ => None,
    }
}
