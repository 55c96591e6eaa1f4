//! What a node keeps in its data directory: its TLS certificate and key (self-signed on first
//! start unless configured), its node id, and the stateless-reset secret that must survive
//! restarts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// Files the node loaded or created.
#[derive(Debug, Clone)]
pub struct Identity {
    /// PEM certificate chain used for TLS.
    pub cert_path: PathBuf,
    /// PEM private key used for TLS.
    pub key_path: PathBuf,
    /// True when the pair was generated here (self-signed).
    pub self_signed: bool,
    /// The node's 256-bit id (DHT and WELCOME).
    pub node_id: [u8; 32],
    /// Secret for stateless-reset tokens.
    pub reset_secret: [u8; 32],
}

/// Errors preparing the data directory.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Filesystem failure.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Cert(String),
    /// Only one of `tls.cert` and `tls.key` is set, or a secret file is damaged.
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_owned(), source }
}

/// Writes `bytes` to `path` readable by the owner only, via a temporary file and a rename so
/// a crash never leaves a half-written secret behind.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn load_or_create_secret(path: &Path) -> Result<[u8; 32], IdentityError> {
    match fs::read(path) {
        Ok(bytes) => bytes.as_slice().try_into().map_err(|_| {
            IdentityError::Invalid(format!("{} must hold exactly 32 bytes", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut secret);
            write_private(path, &secret)?;
            Ok(secret)
        }
        Err(e) => Err(IdentityError::Io { path: path.to_owned(), source: e }),
    }
}

/// Loads the identity from `data_dir`, creating what is missing.
pub fn load_or_create(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Identity, IdentityError> {
    fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let node_id = load_or_create_secret(&data_dir.join("node_id"))?;
    let reset_secret = load_or_create_secret(&data_dir.join("reset.key"))?;
    let (cert_path, key_path, self_signed) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned(), false),
        (None, None) => {
            let cert_path = data_dir.join("cert.pem");
            let key_path = data_dir.join("key.pem");
            if !(cert_path.exists() && key_path.exists()) {
                // ECDSA P-256 (rcgen's default): a handshake costs the server ~4x less CPU
                // than with RSA-2048 (docs/decisions/0002-node-shape.md).
                let names = vec!["localhost".to_owned(), "fovea.local".to_owned()];
                let generated = rcgen::generate_simple_self_signed(names)
                    .map_err(|e| IdentityError::Cert(e.to_string()))?;
                write_private(&key_path, generated.key_pair.serialize_pem().as_bytes())?;
                write_private(&cert_path, generated.cert.pem().as_bytes())?;
            }
            (cert_path, key_path, true)
        }
        _ => {
            return Err(IdentityError::Invalid("set both tls.cert and tls.key, or neither".into()))
        }
    };
    Ok(Identity { cert_path, key_path, self_signed, node_id, reset_secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_generates_and_second_start_reuses() {
        let dir = std::env::temp_dir().join(format!("fovea-identity-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = load_or_create(&dir, None, None).expect("create");
        assert!(first.self_signed);
        let cert = fs::read(&first.cert_path).unwrap();
        assert!(String::from_utf8_lossy(&cert).contains("BEGIN CERTIFICATE"));
        let second = load_or_create(&dir, None, None).expect("reuse");
        assert_eq!(first.node_id, second.node_id);
        assert_eq!(first.reset_secret, second.reset_secret, "reset secret survives restarts");
        assert_eq!(cert, fs::read(&second.cert_path).unwrap());
        assert!(load_or_create(&dir, Some(&first.cert_path), None).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
