//! How the client trusts the node's certificate, applied to a quiche configuration.

use std::path::PathBuf;

use crate::error::ClientError;

/// How the node's certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verify {
    /// Against the system's default CA store (BoringSSL's default verify paths).
    #[default]
    System,
    /// Against the CA certificates (PEM) in this file only. A node's self-signed certificate
    /// (`fovea-data/cert.pem`) is its own CA, so this pins it.
    CaFile(PathBuf),
    /// Not at all: any certificate is accepted. For tests and self-signed nodes on a trusted
    /// network; the connection is encrypted but the node is not authenticated.
    Insecure,
}

/// Applies `verify` to `config`.
pub(crate) fn apply(verify: &Verify, config: &mut quiche::Config) -> Result<(), ClientError> {
    match verify {
        // quiche's `Config::new` already loaded the default verify paths.
        Verify::System => config.verify_peer(true),
        Verify::CaFile(path) => {
            let path_str = path.to_str().ok_or_else(|| {
                ClientError::Config(format!("CA file path {} is not UTF-8", path.display()))
            })?;
            // BoringSSL reports a missing file as a bare TlsFail; check first to say which.
            if let Err(e) = std::fs::metadata(path) {
                return Err(ClientError::Config(format!("CA file {}: {e}", path.display())));
            }
            config.load_verify_locations_from_file(path_str).map_err(|e| {
                ClientError::Config(format!(
                    "CA file {} holds no usable PEM certificate ({e})",
                    path.display()
                ))
            })?;
            config.verify_peer(true);
        }
        Verify::Insecure => config.verify_peer(false),
    }
    Ok(())
}
