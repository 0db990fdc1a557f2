//! Signed-in operators: a random session id in a cookie, everything else on the server.
//!
//! Sessions live in this process's memory (this slice's choice): a restart signs every
//! operator out, and with several API processes behind a load balancer a session only
//! works on the process that made it (use sticky sessions, or sign in again). The admin
//! token an operator signed in with is kept here, never in the cookie, a URL or a log,
//! because the console acts through the API with it: whatever the token may do, the
//! console may do, and nothing more.
//!
//! Each session has its own CSRF token, sent in a hidden field of every form that
//! changes something and compared in constant time; with the cookie's `SameSite=Strict`
//! that is two independent locks against cross-site form posts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "hookline_console";

/// A session unused for this long is gone (sign in again).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// Sessions kept at most: a flood of sign-ins cannot grow memory without bound; past
/// it, the least recently used session is dropped.
const MAX_SESSIONS: usize = 10_000;

/// What a request's session gives the page that serves it.
#[derive(Clone)]
pub struct Session {
    pub id: String,
    /// The admin token the operator signed in with (the console calls the API with it).
    pub token: String,
    /// This session's CSRF token, for the hidden field of every form.
    pub csrf: String,
    /// The one application a portal session may show (`None`: an operator's session).
    pub app: Option<String>,
    /// A portal session opened with a read-only token: its pages offer no action.
    pub read_only: bool,
}

impl std::fmt::Debug for Session {
    // Neither the token nor the ids may reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(***)")
    }
}

struct Entry {
    token: String,
    csrf: String,
    app: Option<String>,
    read_only: bool,
    last_used: Instant,
}

/// The in-memory session table. A std mutex, not tokio's: it is held for a map lookup
/// only, never across an await.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
}

/// 32 random bytes, URL-safe base64: unguessable, and safe in a cookie or a form field.
fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    /// A new operator session for `token`.
    pub fn create(&self, token: String) -> Session {
        self.create_scoped(token, None, false)
    }

    /// A new session for `token`, limited to one application (a customer's portal).
    pub fn create_scoped(&self, token: String, app: Option<String>, read_only: bool) -> Session {
        let id = random_id();
        let csrf = random_id();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, e| now.duration_since(e.last_used) < IDLE_TIMEOUT);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Entry {
                token: token.clone(),
                csrf: csrf.clone(),
                app: app.clone(),
                read_only,
                last_used: now,
            },
        );
        Session {
            id,
            token,
            csrf,
            app,
            read_only,
        }
    }

    /// The live session with this id, marked as used now.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.get_mut(id)?;
        if now.duration_since(entry.last_used) >= IDLE_TIMEOUT {
            map.remove(id);
            return None;
        }
        entry.last_used = now;
        Some(Session {
            id: id.to_string(),
            token: entry.token.clone(),
            csrf: entry.csrf.clone(),
            app: entry.app.clone(),
            read_only: entry.read_only,
        })
    }

    /// Signs out.
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

impl Session {
    /// Whether a form's CSRF field is this session's (constant time).
    pub fn csrf_matches(&self, sent: Option<&str>) -> bool {
        sent.is_some_and(|s| bool::from(s.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

/// The value of the cookie `name` in a request's `Cookie` headers, if any: the console's
/// session id ([`COOKIE`]) or a portal's (`portal::COOKIE`).
pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value that holds a session: script cannot read it (`HttpOnly`), no
/// other site's page can make the browser send it (`SameSite=Strict`), and over https
/// it never travels in clear (`Secure`).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        IDLE_TIMEOUT.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_id_and_removed() {
        let s = Sessions::default();
        let a = s.create("sk_one".into());
        let b = s.create("sk_two".into());
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(s.get(&a.id).unwrap().token, "sk_one");
        s.remove(&a.id);
        assert!(s.get(&a.id).is_none());
        assert!(s.get(&b.id).is_some());
        assert!(s.get("made-up").is_none());
    }

    #[test]
    fn csrf_must_match_exactly() {
        let s = Sessions::default().create("sk".into());
        assert!(s.csrf_matches(Some(&s.csrf.clone())));
        assert!(!s.csrf_matches(None));
        assert!(!s.csrf_matches(Some("")));
        assert!(!s.csrf_matches(Some(&s.csrf[1..])));
    }

    #[test]
    fn cookie_is_read_among_others_and_flags_are_set() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; hookline_console=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h, COOKIE).as_deref(), Some("abc"));
        let c = set_cookie("abc", true);
        for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(c.contains(flag), "{c}");
        }
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(
            format!(
                "{:?}",
                Session {
                    id: "i".into(),
                    token: "sk_x".into(),
                    csrf: "c".into(),
                    app: None,
                    read_only: false,
                }
            ) == "Session(***)"
        );
    }
}
