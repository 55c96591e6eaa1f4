//! Credentials and permissions: the `[auth]` configuration section, the compiled per-realm
//! credential table the shards check HELLOs against, and the permission rules
//! (docs/OPERATIONS.md "Security", docs/decisions/0005-authentication.md).
//!
//! The node stores no secret: a token credential is configured as the SHA-256 of the token, a
//! public-key credential as the Ed25519 public key. Nothing here is ever logged except a
//! credential's `name`.

use std::collections::HashMap;
use std::sync::Arc;

use fovea_codec::{Name, Pattern, PatternSegment, Topic};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `[auth]`: who may join which realm, and what they may do there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// When true every realm needs a credential (a realm without credentials admits nobody);
    /// when false only realms that have credentials configured do.
    pub required: bool,
    /// Time from HELLO to the proof of a public-key credential (AUTH); then AUTH_REQUIRED.
    pub auth_timeout_ms: u64,
    /// The credentials.
    pub credentials: Vec<CredentialConfig>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection { required: false, auth_timeout_ms: 5_000, credentials: Vec::new() }
    }
}

/// `[[auth.credentials]]`: one credential, valid in one realm.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialConfig {
    /// Label used in logs (never the secret).
    pub name: String,
    /// The realm this credential admits to.
    pub realm: String,
    /// Token credential (`cred_kind` 1): lowercase hex SHA-256 of the token bytes.
    pub token_sha256: Option<String>,
    /// Public-key credential (`cred_kind` 2): the 32-byte Ed25519 public key in hex.
    pub ed25519_public_key: Option<String>,
    /// Patterns of topics it may publish to (absent: everything in the realm; `[]`: nothing).
    pub publish: Option<Vec<String>>,
    /// Patterns whose subscriptions it may make (a SUBSCRIBE must be covered by one).
    pub subscribe: Option<Vec<String>>,
    /// Patterns of procedure names it may REGISTER.
    pub register: Option<Vec<String>>,
    /// Patterns of procedure names it may CALL.
    pub call: Option<Vec<String>>,
}

/// What one credential may do; `None` in a list means "everything".
#[derive(Debug, Default)]
pub struct Permissions {
    /// The credential's name (for logs).
    pub name: String,
    publish: Option<Vec<Pattern>>,
    subscribe: Option<Vec<Pattern>>,
    register: Option<Vec<Pattern>>,
    call: Option<Vec<Pattern>>,
}

/// Which operation a permission check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// PUBLISH to a topic.
    Publish,
    /// REGISTER a procedure.
    Register,
    /// CALL a procedure.
    Call,
}

impl Permissions {
    /// May the holder publish to `topic`?
    pub fn may_publish(&self, topic: &Topic) -> bool {
        allowed(&self.publish, |p| p.matches(topic))
    }

    /// May the holder subscribe with `pattern` (it must be covered by an allowed pattern)?
    pub fn may_subscribe(&self, pattern: &Pattern) -> bool {
        allowed(&self.subscribe, |p| covers(p, pattern))
    }

    /// May the holder register or call `name`?
    pub fn may_name(&self, op: Op, name: &Name) -> bool {
        let list = match op {
            Op::Register => &self.register,
            Op::Call => &self.call,
            Op::Publish => &self.publish,
        };
        // A name has the topic syntax without wildcards.
        match Topic::new(name.as_inner().clone()) {
            Ok(topic) => allowed(list, |p| p.matches(&topic)),
            Err(_) => false,
        }
    }
}

fn allowed(list: &Option<Vec<Pattern>>, f: impl Fn(&Pattern) -> bool) -> bool {
    match list {
        None => true,
        Some(patterns) => patterns.iter().any(f),
    }
}

/// True when every topic `requested` matches is matched by `allowed` — decided conservatively:
/// `allowed` must match `requested` read segment by segment as if it were a topic, where a
/// literal consumes only the same literal, `*` consumes a literal or a `*`, and `**` consumes
/// any run of segments (literals, `*` and `**`). A requested `**` is therefore covered only by
/// an allowed `**`, and a requested `*` only by `*` or `**`. This never admits a pattern that
/// reaches an unpermitted topic; it may refuse a few exotic ones that are in fact covered
/// (`**.x` under `*.**`).
pub fn covers(allowed: &Pattern, requested: &Pattern) -> bool {
    let req: Vec<PatternSegment<'_>> = requested.segments().collect();
    let mut reachable = vec![false; req.len() + 1];
    reachable[0] = true;
    for seg in allowed.segments() {
        let mut next = vec![false; req.len() + 1];
        for j in 0..=req.len() {
            if !reachable[j] {
                continue;
            }
            match seg {
                PatternSegment::Literal(l) => {
                    if j < req.len() && req[j] == PatternSegment::Literal(l) {
                        next[j + 1] = true;
                    }
                }
                PatternSegment::One => {
                    if j < req.len() && req[j] != PatternSegment::Many {
                        next[j + 1] = true;
                    }
                }
                PatternSegment::Many => {
                    for slot in next.iter_mut().skip(j) {
                        *slot = true;
                    }
                }
            }
        }
        reachable = next;
    }
    reachable[req.len()]
}

/// The credentials of one realm.
#[derive(Debug, Default)]
struct RealmCreds {
    /// (SHA-256 of the token, permissions): compared in constant time, all of them.
    tokens: Vec<([u8; 32], Arc<Permissions>)>,
    /// Ed25519 public key → permissions.
    keys: HashMap<[u8; 32], Arc<Permissions>>,
}

/// The compiled `[auth]` section, shared read-only by every shard.
#[derive(Debug, Default)]
pub struct AuthTable {
    required: bool,
    /// How long a public-key credential has to answer CHALLENGE.
    pub auth_timeout_ms: u64,
    realms: HashMap<Vec<u8>, RealmCreds>,
}

/// What a HELLO's credential amounts to.
pub enum Verdict {
    /// The realm is open and no credential was given: everything is allowed.
    Open,
    /// The token matched this credential.
    Accepted(Arc<Permissions>),
    /// A known public key: the peer must prove it (CHALLENGE → AUTH).
    Challenge([u8; 32], Arc<Permissions>),
    /// The realm needs a credential and none was given.
    Required,
    /// Wrong, unknown or malformed credential.
    Failed,
}

/// `cred_kind` values of HELLO (docs/PROTOCOL.md §6.1).
pub const CRED_NONE: u8 = 0;
/// A token.
pub const CRED_TOKEN: u8 = 1;
/// An Ed25519 public key.
pub const CRED_ED25519: u8 = 2;
pub use fovea_codec::AUTH_CONTEXT;

impl AuthTable {
    /// Compiles and validates the section.
    pub fn build(section: &AuthSection) -> Result<AuthTable, ConfigError> {
        let invalid = |key, reason| ConfigError::Invalid { key, reason };
        if section.auth_timeout_ms == 0 {
            return Err(invalid("auth.auth_timeout_ms", "must be at least 1"));
        }
        let mut realms: HashMap<Vec<u8>, RealmCreds> = HashMap::new();
        for c in &section.credentials {
            let realm = fovea_codec::Realm::new(bytes::Bytes::from(c.realm.clone()))
                .map_err(|_| invalid("auth.credentials.realm", "not a valid realm"))?;
            let patterns = |list: &Option<Vec<String>>| -> Result<_, ConfigError> {
                list.as_ref()
                    .map(|l| {
                        l.iter()
                            .map(|p| {
                                p.parse::<Pattern>().map_err(|_| {
                                    invalid(
                                        "auth.credentials",
                                        "a permission is not a valid pattern",
                                    )
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()
            };
            let perms = Arc::new(Permissions {
                name: c.name.clone(),
                publish: patterns(&c.publish)?,
                subscribe: patterns(&c.subscribe)?,
                register: patterns(&c.register)?,
                call: patterns(&c.call)?,
            });
            let entry = realms.entry(realm.as_bytes().to_vec()).or_default();
            match (&c.token_sha256, &c.ed25519_public_key) {
                (Some(h), None) => {
                    let hash = fovea_codec::id32_from_hex(h.trim()).ok_or(invalid(
                        "auth.credentials.token_sha256",
                        "must be 64 hex digits (sha256sum of the token)",
                    ))?;
                    entry.tokens.push((hash, perms));
                }
                (None, Some(k)) => {
                    let key = fovea_codec::id32_from_hex(k.trim()).ok_or(invalid(
                        "auth.credentials.ed25519_public_key",
                        "must be 64 hex digits (the raw 32-byte key)",
                    ))?;
                    entry.keys.insert(key, perms);
                }
                _ => {
                    return Err(invalid(
                        "auth.credentials",
                        "set exactly one of token_sha256 and ed25519_public_key",
                    ))
                }
            }
        }
        Ok(AuthTable {
            required: section.required,
            auth_timeout_ms: section.auth_timeout_ms,
            realms,
        })
    }

    /// True when no realm needs credentials (the node behaves as before credentials existed).
    pub fn is_open(&self) -> bool {
        !self.required && self.realms.is_empty()
    }

    /// Judges a HELLO's credential for `realm`.
    pub fn judge(&self, realm: &[u8], cred_kind: u8, credential: &[u8]) -> Verdict {
        let creds = self.realms.get(realm);
        match cred_kind {
            CRED_NONE if creds.is_none() && !self.required => Verdict::Open,
            CRED_NONE => Verdict::Required,
            CRED_TOKEN => {
                let Some(creds) = creds else { return Verdict::Failed };
                let digest = boring::sha::sha256(credential);
                // Every candidate is compared, in constant time, whatever matched before.
                let mut found = None;
                for (hash, perms) in &creds.tokens {
                    if boring::memcmp::eq(hash, &digest) && found.is_none() {
                        found = Some(perms.clone());
                    }
                }
                found.map_or(Verdict::Failed, Verdict::Accepted)
            }
            CRED_ED25519 => {
                let Some(creds) = creds else { return Verdict::Failed };
                let Ok(key) = <[u8; 32]>::try_from(credential) else { return Verdict::Failed };
                match creds.keys.get(&key) {
                    Some(perms) => Verdict::Challenge(key, perms.clone()),
                    None => Verdict::Failed,
                }
            }
            _ => Verdict::Failed,
        }
    }
}

/// Checks an AUTH signature: Ed25519 by `key` over `AUTH_CONTEXT ‖ nonce ‖ peer_id`.
pub fn verify_auth(key: &[u8; 32], nonce: &[u8], peer_id: &[u8; 32], signature: &[u8]) -> bool {
    let msg = fovea_codec::auth_message(nonce, peer_id);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(&msg, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        s.parse().unwrap()
    }

    #[test]
    fn covered_is_conservative() {
        let yes = [
            ("**", "a.b"),
            ("**", "**"),
            ("**", "a.*.**"),
            ("a.**", "a.b.*"),
            ("a.**", "a.**"),
            ("a.*", "a.b"),
            ("a.*", "a.*"),
            ("a.b", "a.b"),
            ("*.*", "a.*"),
            ("a.**.z", "a.*.z"),
        ];
        for (allowed, requested) in yes {
            assert!(covers(&p(allowed), &p(requested)), "{allowed} covers {requested}");
        }
        let no = [
            ("a.*", "a.**"),
            ("a.*", "a.b.c"),
            ("a.b", "a.*"),
            ("a.**", "**"),
            ("a.**", "b.**"),
            ("*", "**"),
            ("a.**.z", "a.**"),
        ];
        for (allowed, requested) in no {
            assert!(!covers(&p(allowed), &p(requested)), "{allowed} must not cover {requested}");
        }
    }

    #[test]
    fn covered_patterns_only_match_allowed_topics() {
        // Soundness against the reference matcher on a small universe.
        let pats = ["**", "a.**", "a.*", "*.b", "a.b", "*", "**.b", "a.**.b", "*.*", "a"];
        let topics = ["a", "b", "a.b", "a.c", "b.b", "a.b.b", "a.c.b", "c.a.b", "a.b.c"];
        for allowed in pats {
            for requested in pats {
                if !covers(&p(allowed), &p(requested)) {
                    continue;
                }
                for t in topics {
                    let t: Topic = t.parse().unwrap();
                    if p(requested).matches(&t) {
                        assert!(p(allowed).matches(&t), "{allowed} covers {requested} but not {t}");
                    }
                }
            }
        }
    }

    #[test]
    fn tokens_are_stored_hashed_and_realms_open_or_closed() {
        let token_hash = boring::sha::sha256(b"s3cret");
        let hex: String = token_hash.iter().map(|b| format!("{b:02x}")).collect();
        let section = AuthSection {
            credentials: vec![CredentialConfig {
                name: "t".into(),
                realm: "acme".into(),
                token_sha256: Some(hex),
                publish: Some(vec!["x.**".into()]),
                ..Default::default()
            }],
            ..Default::default()
        };
        let table = AuthTable::build(&section).unwrap();
        assert!(matches!(table.judge(b"open", CRED_NONE, b""), Verdict::Open));
        assert!(matches!(table.judge(b"acme", CRED_NONE, b""), Verdict::Required));
        assert!(matches!(table.judge(b"acme", CRED_TOKEN, b"wrong"), Verdict::Failed));
        assert!(matches!(table.judge(b"open", CRED_TOKEN, b"s3cret"), Verdict::Failed));
        let Verdict::Accepted(perms) = table.judge(b"acme", CRED_TOKEN, b"s3cret") else {
            panic!("token accepted")
        };
        assert!(perms.may_publish(&"x.y".parse().unwrap()));
        assert!(!perms.may_publish(&"y".parse().unwrap()));
        assert!(perms.may_subscribe(&p("anything.**")), "absent list allows everything");
        let bad = AuthSection {
            credentials: vec![CredentialConfig {
                realm: "acme".into(),
                token_sha256: Some("zz".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(AuthTable::build(&bad).is_err());
    }
}
