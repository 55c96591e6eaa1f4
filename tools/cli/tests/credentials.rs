//! Credentials end to end, as an operator sets them up (docs/OPERATIONS.md "Security"): keys
//! made with `fovea-cli keygen`, their public keys and a token's SHA-256 in the config file of a
//! real `fovea` process, and `fovea-cli --key` / `--token` / `--token-file` against it. Right
//! credentials get through, wrong ones end with AUTH_FAILED and none with AUTH_REQUIRED (exit
//! 1, the code's name printed). Every wait has a deadline; nothing sleeps.
//!
//! The node binary is `target/<profile>/fovea`, next to `fovea-cli`: cargo builds it for the
//! engine's tests (`tools/test.sh`, `cargo test --workspace`); with `cargo test -p fovea-cli`
//! alone build it first (`cargo build -p fovea-engine --bin fovea`), or point `FOVEA_BIN` at
//! one.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fovea_client::{Client, ClientError, ConnectOptions, Credential, Ed25519Key, Verify};

/// Bound on the node's start and on each CLI run.
const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "f0vea-test-token-0123456789abcdef";

fn rand_u64() -> u64 {
    let mut r = [0u8; 8];
    boring::rand::rand_bytes(&mut r).unwrap();
    u64::from_le_bytes(r)
}

fn fovea_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FOVEA_BIN") {
        return bin.into();
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_fovea-cli"))
        .with_file_name(format!("fovea{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build the node first (cargo build -p fovea-engine --bin fovea; \
         tools/test.sh builds it with the workspace) or set FOVEA_BIN",
        bin.display()
    );
    bin
}

/// A `fovea` process with key and token credentials, in a directory of its own. Dropping it
/// kills the process and removes the directory.
struct AuthNode {
    child: Child,
    quic: SocketAddr,
    dir: PathBuf,
    /// A key file whose public key the node admits to realm `acme`.
    key: PathBuf,
}

impl Drop for AuthNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl AuthNode {
    /// Makes a key with `fovea-cli keygen`, writes the node's config with its public key (realm
    /// `acme`, publish only under `sensors.**`) and the token's SHA-256 (realm `tokens`), starts
    /// the node and waits for its readiness line.
    fn start(tag: &str) -> AuthNode {
        let dir = std::env::temp_dir().join(format!(
            "fovea-cli-{tag}-{}-{:016x}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("operator.key");
        let public_line = keygen(&key);
        let token_sha256: String =
            boring::sha::sha256(TOKEN.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let config = format!(
            r#"
[auth]
auth_timeout_ms = 2000

[[auth.credentials]]
name = "operator-key"
realm = "acme"
{public_line}
publish = ["sensors.**"]

[[auth.credentials]]
name = "operator-token"
realm = "tokens"
token_sha256 = "{token_sha256}"
"#
        );
        let config_file = dir.join("fovea.toml");
        std::fs::write(&config_file, config).unwrap();
        let mut cmd = Command::new(fovea_bin());
        cmd.args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--shards", "2"])
            .args(["--no-pin", "--log", "warn", "--config"])
            .arg(&config_file)
            .arg("--data-dir")
            .arg(dir.join("data"));
        let (child, quic) = spawn_until_ready(&mut cmd);
        AuthNode { child, quic, dir, key }
    }

    /// `fovea-cli` for this node (self-signed certificate not verified), with none of the
    /// credential variables of the caller's environment.
    fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fovea-cli"));
        for var in ["FOVEA_TOKEN", "FOVEA_TOKEN_FILE", "FOVEA_KEY", "FOVEA_NODE"] {
            c.env_remove(var);
        }
        c.args(["--insecure", "--node", &self.quic.to_string(), "--timeout", "20"]);
        c
    }

    /// A fresh key the node does not know.
    fn stranger_key(&self) -> PathBuf {
        let path = self.dir.join(format!("stranger-{:016x}.key", rand_u64()));
        keygen(&path);
        path
    }
}

/// Runs `fovea-cli keygen FILE` and returns the config line it printed.
fn keygen(file: &Path) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_fovea-cli")).arg("keygen").arg(file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let hex = line
        .strip_prefix("ed25519_public_key = \"")
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("a config line: {line:?}"));
    assert_eq!(hex.len(), 64, "{line}");
    line
}

/// Spawns `fovea` and waits (with a deadline) for its readiness line
/// `fovea ready quic=ADDR metrics=ADDR`; returns the QUIC address.
fn spawn_until_ready(cmd: &mut Command) -> (Child, SocketAddr) {
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn fovea");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = match rx.recv_timeout(WAIT) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            panic!("fovea printed no readiness line within {WAIT:?}: {e}");
        }
    };
    let quic = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("quic="))
        .unwrap_or_else(|| panic!("quic= in {line:?}"))
        .parse()
        .unwrap();
    (child, quic)
}

/// Runs a CLI command to its end (its `--timeout 20` bounds every wait in it).
fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a run the node refused: exit code 1 and `code` named on stderr.
fn assert_refused(out: &Output, code: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(out);
    assert!(err.contains(code), "{code} named: {err}");
    assert!(err.contains("hint:"), "a hint: {err}");
}

/// Starts `sub` and returns once it said (stderr) that its subscriptions are active.
fn start_sub(mut cmd: Command) -> Child {
    let mut sub = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let err = sub.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("subscribed to") => return sub,
            Ok(_) => {}
            Err(e) => {
                let _ = sub.kill();
                panic!("sub never said it subscribed: {e}; {:?}", sub.wait_with_output());
            }
        }
    }
}

#[test]
fn a_key_in_the_nodes_config_lets_every_command_through() {
    let node = AuthNode::start("key-ok");
    let key = node.key.to_str().unwrap();
    let out = run(node.cli().args(["--realm", "acme", "--key", key, "ping", "--count", "2"]));
    assert!(out.status.success(), "{out:?}");
    let mut sub = node.cli();
    sub.args(["--realm", "acme", "--key", key, "--json", "sub", "sensors.**", "--count", "1"]);
    sub.args(["--duration", "20"]);
    let sub = start_sub(sub);
    let out = run(node.cli().args(["--realm", "acme", "--key", key, "pub", "sensors.hall", "19"]));
    assert!(out.status.success(), "{out:?}");
    let got = sub.wait_with_output().unwrap();
    assert!(got.status.success(), "{got:?}");
    let v: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!((v["topic"].as_str(), v["payload"].as_str()), (Some("sensors.hall"), Some("19")));
    // The session has the credential's permissions: publish only under sensors.**.
    let out = run(node.cli().args(["--realm", "acme", "--key", key, "pub", "config.x", "1"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("PERMISSION_DENIED"), "{}", stderr(&out));
    // FOVEA_KEY works like --key; `pubkey` prints the line keygen printed.
    let out =
        run(node.cli().env("FOVEA_KEY", key).args(["--realm", "acme", "ping", "--count", "1"]));
    assert!(out.status.success(), "{out:?}");
    let out = run(node.cli().args(["pubkey", key]));
    let config = std::fs::read_to_string(node.dir.join("fovea.toml")).unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success() && config.contains(&line), "{line} in {config}");
}

#[test]
fn a_key_the_node_does_not_know_fails_with_auth_failed() {
    let node = AuthNode::start("key-wrong");
    let stranger = node.stranger_key();
    let out =
        run(node.cli().args(["--realm", "acme", "--key", stranger.to_str().unwrap(), "ping"]));
    assert_refused(&out, "AUTH_FAILED (0x9)");
    assert!(stderr(&out).contains("refused the credential"), "{}", stderr(&out));
    // A key is valid in its own realm only: the right key in another realm fails too.
    let key = node.key.to_str().unwrap();
    let out = run(node.cli().args(["--realm", "default", "--key", key, "ping"]));
    assert_refused(&out, "AUTH_FAILED");
    // A file that is not a key is a usage error, found before connecting.
    let bogus = node.dir.join("bogus.key");
    std::fs::write(&bogus, "not a key\n").unwrap();
    let out = run(node.cli().args(["--realm", "acme", "--key", bogus.to_str().unwrap(), "ping"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("not an Ed25519 private key"), "{}", stderr(&out));
}

#[test]
fn no_credential_in_a_realm_with_credentials_fails_with_auth_required() {
    let node = AuthNode::start("key-none");
    for realm in ["acme", "tokens"] {
        let out = run(node.cli().args(["--realm", realm, "ping"]));
        assert_refused(&out, "AUTH_REQUIRED (0x8)");
        assert!(stderr(&out).contains("requires a credential"), "{}", stderr(&out));
        let out = run(node.cli().args(["--realm", realm, "pub", "sensors.hall", "1"]));
        assert_refused(&out, "AUTH_REQUIRED");
    }
    // The realm without credentials stays open.
    let out = run(node.cli().args(["ping", "--count", "1"]));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn tokens_from_the_flag_the_file_and_the_environment() {
    let node = AuthNode::start("token");
    let file = node.dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let file = file.to_str().unwrap();
    for args in [&["--token", TOKEN][..], &["--token-file", file][..]] {
        let out = run(node.cli().args(["--realm", "tokens"]).args(args).args(["ping"]));
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let out = run(node.cli().env("FOVEA_TOKEN", TOKEN).args(["--realm", "tokens", "ping"]));
    assert!(out.status.success(), "{out:?}");
    let out = run(node.cli().args(["--realm", "tokens", "--token", "not-the-token", "ping"]));
    assert_refused(&out, "AUTH_FAILED (0x9)");
    assert!(!stderr(&out).contains("not-the-token"), "no secret printed: {}", stderr(&out));
    let out = run(node.cli().args(["--realm", "tokens", "ping"]));
    assert_refused(&out, "AUTH_REQUIRED (0x8)");
}

#[test]
fn the_client_library_answers_the_real_nodes_challenge() {
    let node = AuthNode::start("library");
    let key = Ed25519Key::load(&node.key).unwrap();
    let options = |credential| {
        let mut o = ConnectOptions::default();
        o.config.verify = Verify::Insecure;
        o.config.realm = "acme".parse().unwrap();
        o.config.credential = credential;
        o
    };
    let mut client = Client::connect(
        node.quic,
        &options(Credential::Ed25519(key.clone())),
        Instant::now() + WAIT,
    )
    .unwrap();
    client.publish("sensors.lib", b"x", true).unwrap();
    client.close().unwrap();
    // The public key alone cannot answer: a typed error at once, not the node's auth timeout.
    let public = Credential::PublicKey(key.public_key().to_vec().into());
    let started = Instant::now();
    let err = Client::connect(node.quic, &options(public), Instant::now() + WAIT).unwrap_err();
    assert!(matches!(err, ClientError::NoSigningKey), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let other = Ed25519Key::generate().unwrap();
    let err =
        Client::connect(node.quic, &options(Credential::Ed25519(other)), Instant::now() + WAIT)
            .unwrap_err();
    assert!(matches!(err, ClientError::AuthFailed(ref c) if c.by_peer), "{err:?}");
    let err =
        Client::connect(node.quic, &options(Credential::None), Instant::now() + WAIT).unwrap_err();
    assert!(matches!(err, ClientError::AuthRequired(_)), "{err:?}");
}
