//! Secrets at rest: endpoint signing secrets (every one a rotation keeps) and custom
//! header values are sealed with XChaCha20-Poly1305 under the installation's main key
//! before they reach the database, on both backends. The operational webhook's secret is
//! an endpoint's secret like any other.
//!
//! **What is sealed.** An endpoint's settings are one JSON document. In its stored form
//! the `secrets` member is a string, `hl1:{key id}:{base64url(nonce ‖ ciphertext)}`, whose
//! plaintext is `{"secrets": [...], "headers": {...}}`, and `headers` is left out. The
//! rest (URL, filters, description, limits) stays readable: it is no secret, and
//! operators and queries read it. The endpoint's id is the associated data, so a sealed
//! value copied onto another endpoint's row does not open. A hookline older than this
//! format fails to read such a row (a string where it expects a list) rather than
//! delivering unsigned. Nonces are 24 random bytes (XChaCha): no counter has to be kept
//! across processes or restarts.
//!
//! **The main key** is 32 random bytes, given base64-encoded with `--encryption-key` /
//! `HOOKLINE_ENCRYPTION_KEY`, or else kept in the key file `encryption.key` in the data
//! dir, created (mode 0600) the first time a database is sealed. The database keeps a
//! check value (a constant sealed under the key, in the `sealing` table), so a wrong or
//! missing key is refused at start before anything is read or written ([`unlock`]).
//! Without the key, a stolen database file or backup reveals no secret; with both, it
//! does: keep the key apart from the backups.
//!
//! **Where keys live in a process.** A store unlocks its database's key at open and
//! registers it in this process's set of unlocked keys ([`register`]); reading an
//! endpoint's row opens its sealed value with the key its key id names
//! ([`open_settings`]), so the many places that read endpoint rows need no key passed
//! to them, and only the two that write settings seal ([`Sealer::seal_settings`]) with
//! their store's own key. Nothing opens without a key the process unlocked against a
//! database's check value.
//!
//! **Rotation** (`hookline rotate-key`) re-seals every endpoint under a new key and
//! replaces the check value, in one transaction. The key file may hold several keys, one
//! per line: while a rotation runs it holds the new key and the old one, so whichever
//! side of the commit a crash falls on, the file still holds the key the database is
//! sealed under ([`unlock`] takes the one the check value opens with).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::model::{EndpointSettings, SecretEntry};

/// The key file's name in the data dir.
pub const KEY_FILE: &str = "encryption.key";
/// What every sealed value starts with (the format's version).
const PREFIX: &str = "hl1:";
const NONCE_LEN: usize = 24;
/// The check value's plaintext and associated data.
const CHECK_TEXT: &[u8] = b"hookline sealing check";
const CHECK_AAD: &[u8] = b"hookline:check";

/// The installation's main key: 32 random bytes, wiped from memory when dropped.
#[derive(Clone)]
pub struct MainKey(Zeroizing<[u8; 32]>);

impl MainKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut());
        Self(key)
    }

    /// A key from its base64 text (standard alphabet, padding optional). The error says
    /// what is wrong with it, never what it is.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .map_err(|_| {
                    "is not base64; generate a key with `openssl rand -base64 32`".to_string()
                })?,
        );
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "decodes to {} bytes, not 32; generate a key with `openssl rand -base64 32`",
                bytes.len()
            )
        })?;
        Ok(Self(Zeroizing::new(key)))
    }

    /// The key as text, as [`MainKey::parse`] reads it.
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    /// A short public name for the key (8 hex digits of a hash of it), to tell keys
    /// apart in messages; it reveals nothing of the key.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"hookline main key id\0");
        h.update(self.0.as_ref());
        hex_prefix(&h.finalize())
    }
}

impl fmt::Debug for MainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MainKey({})", self.id())
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a process gets the main key from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `--encryption-key` / `HOOKLINE_ENCRYPTION_KEY`.
    Given(MainKey),
    /// The key file, created when a database is first sealed and the file is missing.
    File(PathBuf),
}

impl KeySource {
    /// The key file in `data_dir` unless a key is given.
    pub fn new(given: Option<MainKey>, data_dir: &Path) -> Self {
        match given {
            Some(key) => Self::Given(key),
            None => Self::File(data_dir.join(KEY_FILE)),
        }
    }
}

/// The database's record of the key it is sealed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub key_id: String,
    pub value: String,
}

/// The key found for a database, and what the store has to write for it.
pub struct Unlocked {
    pub sealer: Sealer,
    /// The check value to store: the database had none (it is sealed for the first
    /// time, under this key).
    pub new_check: Option<Check>,
    /// The key file just created for it, if one was.
    pub created_file: Option<PathBuf>,
}

/// Finds the key a database is sealed under (`stored`: its check value; `None`: not
/// sealed yet), or refuses with an error that says which key is wanted and where it was
/// looked for. Creates the key file only for a database not sealed yet.
pub fn unlock(source: &KeySource, stored: Option<&Check>) -> Result<Unlocked, String> {
    let unlocked = |key: &MainKey, created_file| {
        let sealer = Sealer::new(key);
        let new_check = stored.is_none().then(|| sealer.check());
        Unlocked {
            sealer,
            new_check,
            created_file,
        }
    };
    match source {
        KeySource::Given(key) => match stored {
            Some(check) if !Sealer::new(key).opens(check) => Err(format!(
                "the encryption key given (key {}) is not the one this database's secrets are sealed under (key {}); nothing was changed",
                key.id(),
                check.key_id
            )),
            _ => Ok(unlocked(key, None)),
        },
        KeySource::File(path) => {
            let keys = read_key_file(path)?;
            match (stored, keys.is_empty()) {
                (Some(check), true) => Err(format!(
                    "this database's secrets are sealed (key {}) and no key was given: set --encryption-key (HOOKLINE_ENCRYPTION_KEY) or put the key file at {}",
                    check.key_id,
                    path.display()
                )),
                (Some(check), false) => keys
                    .iter()
                    .find(|k| Sealer::new(k).opens(check))
                    .map(|k| unlocked(k, None))
                    .ok_or_else(|| {
                        format!(
                            "the key file {} holds no key this database's secrets are sealed under (key {}); nothing was changed",
                            path.display(),
                            check.key_id
                        )
                    }),
                (None, false) => Ok(unlocked(&keys[0], None)),
                (None, true) => {
                    let key = MainKey::generate();
                    write_key_file(path, &[&key])?;
                    Ok(unlocked(&key, Some(path.clone())))
                }
            }
        }
    }
}

/// One key for every store a test process opens, so that stores sharing a database
/// agree on it.
#[cfg(test)]
pub(crate) fn test_key() -> KeySource {
    static KEY: std::sync::OnceLock<MainKey> = std::sync::OnceLock::new();
    KeySource::Given(KEY.get_or_init(MainKey::generate).clone())
}

/// Says what opening a database with `sealer` did: the key file it created, if any (its
/// path and the key's id, never the key), and how many endpoints it sealed that were
/// still in the clear. Then registers the key for this process's reads.
pub fn opened(sealer: &Sealer, created_file: Option<&Path>, sealed: usize) {
    if let Some(path) = created_file {
        tracing::warn!(
            path = %path.display(),
            key_id = sealer.key_id(),
            "created a main key file for sealing endpoint secrets: keep a copy apart from the database's backups, and give every process on a shared database this key; without it the secrets cannot be read"
        );
    }
    if sealed > 0 {
        tracing::info!(
            endpoints = sealed,
            key_id = sealer.key_id(),
            "sealed the secrets of endpoints stored in the clear"
        );
    }
    register(sealer);
}

/// The keys in a key file, one per line (none: the file does not exist).
pub fn read_key_file(path: &Path) -> Result<Vec<MainKey>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the key file {}: {e}", path.display())),
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, line)| {
            MainKey::parse(line)
                .map_err(|why| format!("the key file {}: line {}: {why}", path.display(), i + 1))
        })
        .collect()
}

/// Writes `keys` (one per line) to the key file atomically, mode 0600: a temporary
/// file beside it, synced, renamed over it, and the folder synced.
pub fn write_key_file(path: &Path, keys: &[&MainKey]) -> Result<(), String> {
    let fail = |doing: &str, e: std::io::Error| format!("{doing} {}: {e}", path.display());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| fail("cannot create the folder of", e))?;
    let tmp = path.with_extension("key.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut text = Zeroizing::new(String::new());
    for key in keys {
        text.push_str(&key.encode());
        text.push('\n');
    }
    let mut file = options
        .open(&tmp)
        .map_err(|e| fail("cannot write the key file", e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fail("cannot write the key file", e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail("cannot write the key file", e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all()
            .map_err(|e| fail("cannot sync the folder of", e))?;
    }
    Ok(())
}

/// Seals and opens under one main key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    key_id: String,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer({})", self.key_id)
    }
}

/// What an endpoint's sealed value holds.
#[derive(Serialize)]
struct SealedRef<'a> {
    secrets: &'a [SecretEntry],
    headers: &'a BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SealedOwned {
    secrets: Vec<SecretEntry>,
    headers: BTreeMap<String, String>,
}

impl Sealer {
    pub fn new(key: &MainKey) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key.0.as_ref())),
            key_id: key.id(),
        }
    }

    /// The id of the key this seals under.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn seal(&self, aad: &[u8], plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("XChaCha20-Poly1305 seals any length hookline stores");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.key_id, URL_SAFE_NO_PAD.encode(out))
    }

    fn open(&self, aad: &[u8], sealed: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        let (key_id, body) = sealed
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .ok_or("is not a sealed value hookline knows")?;
        if key_id != self.key_id {
            return Err(format!(
                "is sealed under key {key_id}, and this process has key {} (was `hookline rotate-key` run while it ran? restart it with the new key)",
                self.key_id
            ));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| "is damaged (not base64)")?;
        if bytes.len() < NONCE_LEN {
            return Err("is damaged (too short)".into());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| "does not open: damaged, or moved from another record".into())
    }

    /// The check value a database sealed under this key keeps.
    pub fn check(&self) -> Check {
        Check {
            key_id: self.key_id.clone(),
            value: self.seal(CHECK_AAD, CHECK_TEXT),
        }
    }

    /// Whether `check` was made under this key.
    pub fn opens(&self, check: &Check) -> bool {
        check.key_id == self.key_id
            && self
                .open(CHECK_AAD, &check.value)
                .is_ok_and(|p| p.as_slice() == CHECK_TEXT)
    }

    /// The stored form of an endpoint's settings: JSON with the secrets and header
    /// values sealed.
    pub fn seal_settings(&self, endpoint_id: &str, settings: &EndpointSettings) -> String {
        let plain = Zeroizing::new(
            serde_json::to_vec(&SealedRef {
                secrets: &settings.secrets,
                headers: &settings.headers,
            })
            .expect("secrets always serialize"),
        );
        let sealed = self.seal(&endpoint_aad(endpoint_id), &plain);
        let open = EndpointSettings {
            secrets: Vec::new(),
            headers: BTreeMap::new(),
            ..settings.clone()
        };
        let mut doc = match serde_json::to_value(open) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("endpoint settings serialize to an object"),
        };
        doc.remove("headers");
        doc.insert("secrets".into(), Value::String(sealed));
        serde_json::to_string(&doc).expect("a JSON object always serializes")
    }

    /// An endpoint's settings from their stored form, opened with this key.
    pub fn open_settings(
        &self,
        endpoint_id: &str,
        stored: &str,
    ) -> Result<EndpointSettings, String> {
        open_with(endpoint_id, stored, |_| Some(self.clone()))
    }
}

/// The keys this process has unlocked (a handful at most: one per database opened).
static UNLOCKED: std::sync::RwLock<Vec<Sealer>> = std::sync::RwLock::new(Vec::new());

/// Adds a key checked against a database's check value to this process's unlocked keys.
pub fn register(sealer: &Sealer) {
    let mut keys = UNLOCKED.write().unwrap_or_else(|e| e.into_inner());
    if !keys.iter().any(|k| k.key_id == sealer.key_id) {
        keys.push(sealer.clone());
    }
}

/// Settings opened lately, by endpoint id and stored text: opening costs a few
/// microseconds (XChaCha20's key setup, base64, a JSON parse of each part), and every
/// message's fan-out and every claim reads its endpoints' rows. The text holds a random
/// nonce, so a changed row (a new secret, a rotation of the main key) misses; the id is
/// part of the key because the id is the sealed value's associated data.
struct Opened {
    settings: std::collections::HashMap<String, EndpointSettings>,
    bytes: usize,
}

/// What [`Opened`] may hold, counted as twice the stored text (the parsed form is about
/// as large again); when full, it starts over.
const OPENED_BYTES: usize = 8 << 20;

static OPENED: std::sync::Mutex<Option<Opened>> = std::sync::Mutex::new(None);

/// An endpoint's settings from their stored form (sealed under a key this process has
/// unlocked, or plain as written by a hookline before sealing: a store seals those when
/// it opens).
pub fn open_settings(endpoint_id: &str, stored: &str) -> Result<EndpointSettings, String> {
    if is_plain(stored) {
        return open_with(endpoint_id, stored, |_| None);
    }
    let key = format!("{endpoint_id}\n{stored}");
    {
        let opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(settings) = opened.as_ref().and_then(|o| o.settings.get(&key)) {
            return Ok(settings.clone());
        }
    }
    let settings = open_with(endpoint_id, stored, |key_id| {
        let keys = UNLOCKED.read().unwrap_or_else(|e| e.into_inner());
        keys.iter().find(|k| k.key_id == key_id).cloned()
    })?;
    let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    let opened = opened.get_or_insert_with(|| Opened {
        settings: Default::default(),
        bytes: 0,
    });
    let weight = 2 * key.len();
    if opened.bytes + weight > OPENED_BYTES {
        opened.settings.clear();
        opened.bytes = 0;
    }
    if opened.settings.insert(key, settings.clone()).is_none() {
        opened.bytes += weight;
    }
    Ok(settings)
}

fn open_with(
    endpoint_id: &str,
    stored: &str,
    find: impl FnOnce(&str) -> Option<Sealer>,
) -> Result<EndpointSettings, String> {
    let mut doc: Map<String, Value> = serde_json::from_str(stored).map_err(|e| unreadable(&e))?;
    let sealed = match doc.remove("secrets") {
        Some(Value::String(sealed)) => Some(sealed),
        Some(plain) => {
            doc.insert("secrets".into(), plain);
            None
        }
        None => None,
    };
    let mut settings: EndpointSettings =
        serde_json::from_value(Value::Object(doc)).map_err(|e| unreadable(&e))?;
    if let Some(sealed) = sealed {
        let key_id = sealed
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .map(|(id, _)| id)
            .ok_or("settings: its sealed secrets are not a sealed value hookline knows")?;
        let sealer = find(key_id).ok_or_else(|| {
            format!(
                "settings: its secrets are sealed under key {key_id}, which this process was not given (was `hookline rotate-key` run while it ran? restart it with the new key)"
            )
        })?;
        let plain = sealer
            .open(&endpoint_aad(endpoint_id), &sealed)
            .map_err(|why| format!("settings: its sealed secrets {why}"))?;
        let inner: SealedOwned = serde_json::from_slice(&plain)
            .map_err(|_| "settings: its sealed secrets are not what hookline seals")?;
        settings.secrets = inner.secrets;
        settings.headers = inner.headers;
    }
    Ok(settings)
}

/// What is wrong with a settings document, without serde's detail (which may quote a
/// value, and values here may be secrets).
fn unreadable(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!(
                "settings: not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )
        }
        _ => "settings: JSON this hookline cannot read".into(),
    }
}

fn endpoint_aad(endpoint_id: &str) -> Vec<u8> {
    [b"hookline:endpoint:".as_slice(), endpoint_id.as_bytes()].concat()
}

/// Whether stored settings are still in the plain form (written before sealing).
/// serde_json writes no spaces, so the plain form's secrets list is this exact text,
/// which a sealed document (or one with that text inside a string, escaped) never holds.
pub fn is_plain(stored: &str) -> bool {
    stored.contains("\"secrets\":[")
}

/// Checks that stored settings are a document this hookline reads, without opening the
/// sealed part (`hookline copy` moves them as they are).
pub fn check_stored(stored: &str) -> Result<(), String> {
    let mut doc: Map<String, Value> = serde_json::from_str(stored).map_err(|e| unreadable(&e))?;
    match doc.remove("secrets") {
        Some(Value::String(s)) if s.starts_with(PREFIX) => {}
        Some(Value::String(_)) => return Err("secrets: not a sealed value hookline knows".into()),
        Some(other) => {
            doc.insert("secrets".into(), other);
        }
        None => {}
    }
    serde_json::from_value::<EndpointSettings>(Value::Object(doc))
        .map(drop)
        .map_err(|e| unreadable(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EndpointSettings {
        EndpointSettings {
            description: "orders".into(),
            headers: BTreeMap::from([("authorization".into(), "Bearer hdr-value-123".into())]),
            secrets: vec![
                SecretEntry {
                    key: "whsec_c2VjcmV0LXZhbHVlLW9uZS0xMjM0NTY3OA==".into(),
                    expires_at: None,
                },
                SecretEntry {
                    key: "whsec_b2xkLXNlY3JldC12YWx1ZS0xMjM0NTY3OA==".into(),
                    expires_at: Some(chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap()),
                },
            ],
            throttle_rate: Some(5),
            ..Default::default()
        }
    }

    #[test]
    fn settings_round_trip_and_hide_the_secrets() {
        let sealer = Sealer::new(&MainKey::generate());
        let stored = sealer.seal_settings("ep_1", &settings());
        for secret in [
            "c2VjcmV0LXZhbHVl",
            "b2xkLXNlY3JldC12",
            "hdr-value-123",
            "authorization",
        ] {
            assert!(!stored.contains(secret), "{secret} in {stored}");
        }
        assert!(stored.contains("\"description\":\"orders\""), "{stored}");
        assert!(!is_plain(&stored));
        check_stored(&stored).unwrap();
        assert_eq!(sealer.open_settings("ep_1", &stored).unwrap(), settings());
        // Two seals of the same settings differ (fresh nonce).
        assert_ne!(stored, sealer.seal_settings("ep_1", &settings()));
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_on_its_endpoint() {
        let sealer = Sealer::new(&MainKey::generate());
        let stored = sealer.seal_settings("ep_1", &settings());
        let moved = sealer.open_settings("ep_2", &stored).unwrap_err();
        assert!(moved.contains("moved from another record"), "{moved}");
        let other = Sealer::new(&MainKey::generate());
        let wrong = other.open_settings("ep_1", &stored).unwrap_err();
        assert!(wrong.contains(sealer.key_id()), "{wrong}");
        let tampered = stored.replacen(":", ":0", 2);
        assert!(sealer.open_settings("ep_1", &tampered).is_err());
    }

    #[test]
    fn the_process_wide_open_checks_the_endpoint_even_for_text_opened_before() {
        let sealer = Sealer::new(&MainKey::generate());
        let stored = sealer.seal_settings("ep_a", &settings());
        // Not unlocked in this process yet: nothing opens it.
        let err = open_settings("ep_a", &stored).unwrap_err();
        assert!(err.contains("which this process was not given"), "{err}");
        register(&sealer);
        assert_eq!(open_settings("ep_a", &stored).unwrap(), settings());
        // Opened once (and kept): the same text on another endpoint's row still fails.
        assert_eq!(open_settings("ep_a", &stored).unwrap(), settings());
        assert!(open_settings("ep_b", &stored).is_err());
    }

    #[test]
    fn plain_settings_still_read() {
        let plain = serde_json::to_string(&settings()).unwrap();
        assert!(is_plain(&plain));
        let sealer = Sealer::new(&MainKey::generate());
        assert_eq!(sealer.open_settings("ep_1", &plain).unwrap(), settings());
        // A description holding the marker text is escaped, so not mistaken for it.
        let tricky = EndpointSettings {
            description: "\"secrets\":[".into(),
            ..settings()
        };
        assert!(!is_plain(&sealer.seal_settings("ep_1", &tricky)));
    }

    #[test]
    fn keys_parse_from_base64_of_32_bytes_only() {
        let key = MainKey::generate();
        let again = MainKey::parse(&key.encode()).unwrap();
        assert_eq!(key.id(), again.id());
        let short = MainKey::parse(&STANDARD.encode([1u8; 16])).unwrap_err();
        assert!(short.contains("16 bytes"), "{short}");
        assert!(MainKey::parse("not base64!").is_err());
        assert!(!format!("{key:?}").contains(key.encode().as_str()));
    }

    #[test]
    fn unlock_checks_the_key_and_makes_a_key_file_only_for_a_new_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let source = KeySource::File(path.clone());
        let first = unlock(&source, None).unwrap();
        assert_eq!(first.created_file.as_deref(), Some(path.as_path()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let check = first.new_check.unwrap();
        // The file is read back, and opens the check.
        let again = unlock(&source, Some(&check)).unwrap();
        assert!(again.new_check.is_none() && again.created_file.is_none());
        // A wrong key given, or a key file without the key: refused, naming the key ids.
        let wrong = unlock(&KeySource::Given(MainKey::generate()), Some(&check))
            .err()
            .unwrap();
        assert!(wrong.contains(&check.key_id), "{wrong}");
        write_key_file(&path, &[&MainKey::generate()]).unwrap();
        assert!(unlock(&source, Some(&check)).is_err());
        // A sealed database and no key file: refused, and no file is made.
        std::fs::remove_file(&path).unwrap();
        let missing = unlock(&source, Some(&check)).err().unwrap();
        assert!(missing.contains("--encryption-key"), "{missing}");
        assert!(!path.exists());
    }
}
