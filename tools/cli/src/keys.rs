//! `--key` files and the `keygen` / `pubkey` subcommands. The file format is the client
//! library's (`fovea_client::Ed25519Key`): the raw 32-byte Ed25519 private key as 64 hex
//! digits, `#` comment lines allowed; PKCS#8 PEM is read too. The node's config wants the
//! public key as 64 hex digits (`ed25519_public_key`), which is what these commands print.

use std::io::Write;
use std::path::Path;

use fovea_client::{Ed25519Key, KeyError};

use crate::args::Cli;
use crate::Usage;

/// Reads a `--key` file; a file that others may read is used, with a warning.
pub(crate) fn load(path: &Path) -> Result<Ed25519Key, Usage> {
    let key = Ed25519Key::load(path).map_err(|e| Usage(format!("--key {e}")))?;
    warn_if_readable_by_others(path);
    Ok(key)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "fovea-cli: warning: the private key {} is readable by others (mode {mode:o}); \
                 chmod 600 it",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// The line for the node's `[[auth.credentials]]`.
fn config_line(key: &Ed25519Key) -> String {
    format!("ed25519_public_key = \"{}\"", key.public_key_hex())
}

fn print_public(cli: &Cli, key: &Ed25519Key, file: &Path) {
    if cli.json {
        let line = serde_json::json!({
            "key_file": file.display().to_string(),
            "ed25519_public_key": key.public_key_hex(),
        });
        println!("{line}");
    } else {
        println!("{}", config_line(key));
    }
}

/// `keygen FILE`: a new key, written with mode 0600 (never over an existing file without
/// `--force`); prints the public key's config line.
pub(crate) fn keygen(cli: &Cli, file: &Path, force: bool) -> anyhow::Result<()> {
    let key = Ed25519Key::generate().map_err(|e| Usage(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let io = |source| Usage(KeyError::Io { path: file.to_owned(), source }.to_string());
    let mut f = options.open(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            Usage(format!("{} exists; pass --force to replace it", file.display()))
        }
        _ => io(e),
    })?;
    #[cfg(unix)]
    {
        // --force over an existing file keeps that file's mode; the key is written only once
        // nobody else can read it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    f.write_all(key.to_key_file_text().as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
    print_public(cli, &key, file);
    if !cli.json {
        eprintln!(
            "fovea-cli: wrote the private key to {} (keep it secret); put the line above in the \
             node's [[auth.credentials]] entry and connect with --key {}",
            file.display(),
            file.display()
        );
    }
    Ok(())
}

/// `pubkey FILE`: the config line of an existing private key.
pub(crate) fn pubkey(cli: &Cli, file: &Path) -> anyhow::Result<()> {
    let key = Ed25519Key::load(file).map_err(|e| Usage(e.to_string()))?;
    print_public(cli, &key, file);
    Ok(())
}
