//! The operators' HTTP endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! Served by `tiny_http` on its own thread: scrapes are rare and must never run on a shard.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::metrics::{self, NodeGauges, ShardMetrics};

/// What the endpoint reads.
pub struct HttpState {
    /// Counters of every shard.
    pub shards: Vec<Arc<ShardMetrics>>,
    /// False from the moment the node starts draining.
    pub ready: AtomicBool,
    /// Which I/O driver the shards run.
    pub driver: &'static str,
    /// The federation's view, once its control thread runs (`/federation`, `fovea_federation_*`).
    pub federation: std::sync::OnceLock<Arc<crate::control::FederationStatus>>,
}

/// Binds the endpoint and serves it on a new thread. Returns the bound address.
pub fn serve(addr: SocketAddr, state: Arc<HttpState>) -> std::io::Result<SocketAddr> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    std::thread::Builder::new().name("fovea-http".into()).spawn(move || {
        for request in server.incoming_requests() {
            let (status, body, content_type) = match request.url() {
                "/metrics" => {
                    let ready = state.ready.load(Ordering::Relaxed);
                    let mut text =
                        metrics::render(&state.shards, &NodeGauges { ready, driver: state.driver });
                    if let Some(federation) = state.federation.get() {
                        federation.render(&mut text);
                    }
                    (200, text, "text/plain; version=0.0.4")
                }
                "/federation" => match state.federation.get() {
                    Some(federation) => (200, federation.to_json(), "application/json"),
                    None => (404, "federation is not enabled\n".to_owned(), "text/plain"),
                },
                "/relay" => (200, metrics::relay_json(&state.shards), "application/json"),
                "/healthz" => (200, "ok\n".to_owned(), "text/plain"),
                "/readyz" => {
                    if state.ready.load(Ordering::Relaxed) {
                        (200, "ready\n".to_owned(), "text/plain")
                    } else {
                        (503, "draining\n".to_owned(), "text/plain")
                    }
                }
                _ => (404, "not found\n".to_owned(), "text/plain"),
            };
            let header =
                tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
                    .expect("static header");
            let response =
                tiny_http::Response::from_string(body).with_status_code(status).with_header(header);
            let _ = request.respond(response);
        }
    })?;
    Ok(bound)
}
