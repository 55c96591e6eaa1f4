//! TLS beyond the certificate itself: optional client-certificate verification (mTLS) and
//! reloading the certificate, key and client CA without a restart.
//!
//! Reload: a `fovea-tls` thread looks at the files' metadata (mtime, size, inode) every
//! `tls.reload_interval_ms`; when one changed it builds a fresh quiche configuration per shard
//! and leaves it in that shard's slot. A shard takes its new configuration at its next accepted
//! handshake (one relaxed atomic load per accept), so new handshakes use the new certificate
//! and established connections keep the one they were made with. A file that does not load
//! (half-written, key not matching the certificate) is reported once and retried at every
//! interval; the old configuration stays in use until the new pair loads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use boring::ssl::{SslContextBuilder, SslMethod, SslVerifyMode};

use crate::config::{NodeConfig, TlsSection};
use crate::identity::Identity;
use crate::metrics::ShardMetrics;

/// A quiche configuration with the node's TLS verification settings: with `tls.client_ca`
/// the node asks for a client certificate and verifies it against that CA; with
/// `tls.require_client_cert` a client without one fails the handshake.
pub fn new_quiche_config(tls: &TlsSection) -> Result<quiche::Config, quiche::Error> {
    let Some(ca) = &tls.client_ca else {
        return quiche::Config::new(quiche::PROTOCOL_VERSION);
    };
    let mut builder =
        SslContextBuilder::new(SslMethod::tls()).map_err(|_| quiche::Error::TlsFail)?;
    builder.set_ca_file(ca).map_err(|_| quiche::Error::TlsFail)?;
    let mut mode = SslVerifyMode::PEER;
    if tls.require_client_cert {
        mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
    }
    builder.set_verify(mode);
    quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, builder)
}

/// Fresh quiche configurations handed from the reload thread to the shards.
pub struct TlsSource {
    ready: Vec<AtomicBool>,
    slots: Vec<Mutex<Option<quiche::Config>>>,
}

impl TlsSource {
    /// Empty slots for `shards` shards.
    pub fn new(shards: usize) -> Arc<TlsSource> {
        Arc::new(TlsSource {
            ready: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            slots: (0..shards).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// A new configuration for shard `index`, if one was published since the last call. The
    /// common case is one relaxed load.
    pub fn take(&self, index: usize) -> Option<quiche::Config> {
        let flag = self.ready.get(index)?;
        if !flag.load(Ordering::Relaxed) {
            return None;
        }
        flag.store(false, Ordering::Relaxed);
        self.slots[index].lock().ok()?.take()
    }

    fn publish(&self, configs: Vec<quiche::Config>) {
        for (i, c) in configs.into_iter().enumerate() {
            if let Ok(mut slot) = self.slots[i].lock() {
                *slot = Some(c);
            }
            self.ready[i].store(true, Ordering::Release);
        }
    }
}

type Stamp = Vec<Option<(std::time::SystemTime, u64, u64)>>;

fn stamp(paths: &[PathBuf]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
        .collect()
}

/// Starts the reload thread when `tls.reload_interval_ms` > 0 and there is something to
/// reload (configured files). It ends by itself once the shards dropped `source`. Reloads and
/// failures are counted in `metrics` (shard 0's counters).
pub fn spawn_reloader(
    config: &NodeConfig,
    identity: &Identity,
    source: &Arc<TlsSource>,
    metrics: Arc<ShardMetrics>,
) {
    let interval = config.tls.reload_interval_ms;
    if interval == 0 || identity.self_signed && config.tls.client_ca.is_none() {
        return;
    }
    let mut paths = vec![identity.cert_path.clone(), identity.key_path.clone()];
    paths.extend(config.tls.client_ca.clone());
    let config = config.clone();
    let identity = identity.clone();
    let weak: Weak<TlsSource> = Arc::downgrade(source);
    let shards = source.slots.len();
    let _ = std::thread::Builder::new().name("fovea-tls".into()).spawn(move || {
        let mut loaded = stamp(&paths);
        let mut failed: Option<Stamp> = None;
        loop {
            std::thread::sleep(Duration::from_millis(interval));
            let Some(source) = weak.upgrade() else { return };
            let now = stamp(&paths);
            if now == loaded || failed.as_ref() == Some(&now) {
                continue;
            }
            let built: Result<Vec<_>, _> =
                (0..shards).map(|_| crate::quic::server_config(&config, &identity)).collect();
            match built {
                Ok(configs) => {
                    source.publish(configs);
                    loaded = now;
                    failed = None;
                    ShardMetrics::inc(&metrics.tls_reloads);
                    tracing::info!(cert = %identity.cert_path.display(), "TLS certificate reloaded: new handshakes use it");
                }
                Err(e) => {
                    if failed.as_ref() != Some(&now) {
                        ShardMetrics::inc(&metrics.tls_reload_failures);
                        tracing::warn!(error = %e, cert = %identity.cert_path.display(), "TLS files changed but do not load; keeping the previous certificate");
                        failed = Some(now);
                    }
                }
            }
        }
    });
}
