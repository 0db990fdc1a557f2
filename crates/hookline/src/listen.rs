//! `hookline listen`: a local webhook receiver for developers. It binds 127.0.0.1 only,
//! prints every request as it arrives, checks its signature with crates/signing (the same
//! code hookline signs with: no second implementation) and answers with the status, after
//! the delay, it was told, so that retries and timeouts can be watched.
//!
//! What a delivery's signature means is decided by [`check`], a pure function of the
//! verifier, the headers, the body and the time; the HTTP side only collects those and
//! prints. It must never reach beyond loopback, and never answer anything but the chosen
//! status.

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri};
use hookline_config::ListenArgs;
use hookline_signing::{
    verify_ed25519, verify_hmac_sha256_hex, verify_standard, Ed25519PublicKey, HexVerifyError,
    StandardSecret, VerifyError,
};
use serde_json::{json, Value};

/// How far a Standard Webhooks timestamp may be from now, either way: the five minutes
/// the specification recommends (and Svix's libraries use).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Largest body accepted: well above the API's default 1 MiB payload limit.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// What the signatures are checked against.
pub enum Verifier {
    /// No secret given: nothing is checked.
    None,
    /// Standard Webhooks, with `webhook-*` headers or the `svix-*` ones.
    Standard(StandardSecret),
    /// A `whpk_` public key: ed25519 signatures (`v1a,`) in the same headers.
    Ed25519(Ed25519PublicKey),
    /// A hex HMAC-SHA256 of the body in a header of the endpoint's choosing; the key is
    /// the secret string's bytes, as hookline signs.
    Hex { header: HeaderName, key: String },
}

impl Verifier {
    /// The verifier the flags ask for; an error names the flag at fault, never its value.
    pub fn from_args(args: &ListenArgs) -> Result<Verifier, String> {
        if let Some(header) = &args.hmac_header {
            let header = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("--hmac-header: `{header}` is not a valid header name"))?;
            let key = args.key.clone().ok_or("--hmac-header needs --key")?;
            return Ok(Verifier::Hex { header, key });
        }
        match args.secret.as_deref() {
            None => Ok(Verifier::None),
            Some(s) if s.starts_with("whpk_") => Ed25519PublicKey::parse(s)
                .map(Verifier::Ed25519)
                .map_err(|e| format!("--secret: {e}")),
            Some(s) => StandardSecret::parse(s)
                .map(Verifier::Standard)
                .map_err(|e| format!("--secret: {e}")),
        }
    }

    fn describe(&self) -> String {
        match self {
            Verifier::None => "not checking signatures (no --secret)".into(),
            Verifier::Standard(_) => {
                "checking Standard Webhooks signatures (webhook-* or svix-* headers)".into()
            }
            Verifier::Ed25519(_) => {
                "checking ed25519 signatures (webhook-* or svix-* headers)".into()
            }
            Verifier::Hex { header, .. } => {
                format!("checking the hex HMAC-SHA256 of the body in {header}")
            }
        }
    }
}

/// The outcome of a signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid {
        scheme: &'static str,
    },
    Invalid {
        scheme: &'static str,
        reason: String,
    },
    /// Not checked (no secret, or a scheme not supported yet), and why.
    Unchecked {
        reason: String,
    },
}

/// Checks one request's signature at Unix time `now`.
pub fn check(verifier: &Verifier, headers: &HeaderMap, body: &[u8], now: i64) -> Verdict {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match verifier {
        Verifier::None => Verdict::Unchecked {
            reason: "no --secret given".into(),
        },
        Verifier::Hex { header: name, key } => {
            let scheme = "hmac-sha256-hex";
            let Some(value) = header(name.as_str()) else {
                return Verdict::Invalid {
                    scheme,
                    reason: format!("no {name} header"),
                };
            };
            match verify_hmac_sha256_hex(key.as_bytes(), body, value) {
                Ok(()) => Verdict::Valid { scheme },
                Err(e) => Verdict::Invalid {
                    scheme,
                    reason: match e {
                        HexVerifyError::Mismatch => {
                            "signature does not match (wrong key, or the body was altered)".into()
                        }
                        other => other.to_string(),
                    },
                },
            }
        }
        Verifier::Standard(_) | Verifier::Ed25519(_) => {
            let ed25519 = matches!(verifier, Verifier::Ed25519(_));
            // The `webhook-*` names when they are there, else Svix's (an endpoint sends
            // both while its receivers migrate; either set verifies the same way).
            let (prefix, scheme) =
                if header("webhook-id").is_some() || header("webhook-signature").is_some() {
                    ("webhook", if ed25519 { "ed25519" } else { "standard" })
                } else if header("svix-id").is_some() || header("svix-signature").is_some() {
                    let scheme = if ed25519 {
                        "ed25519 (svix-* headers)"
                    } else {
                        "standard (svix-* headers)"
                    };
                    ("svix", scheme)
                } else {
                    return Verdict::Invalid {
                        scheme: if ed25519 { "ed25519" } else { "standard" },
                        reason: "no webhook-id / webhook-signature headers (nor svix-*)".into(),
                    };
                };
            let invalid = |reason: String| Verdict::Invalid { scheme, reason };
            let (Some(id), Some(ts), Some(sig)) = (
                header(&format!("{prefix}-id")),
                header(&format!("{prefix}-timestamp")),
                header(&format!("{prefix}-signature")),
            ) else {
                return invalid(format!(
                    "missing one of {prefix}-id, {prefix}-timestamp, {prefix}-signature"
                ));
            };
            let Ok(ts) = ts.trim().parse::<i64>() else {
                return invalid(format!("{prefix}-timestamp is not a Unix time"));
            };
            let verified = match verifier {
                Verifier::Ed25519(key) => {
                    verify_ed25519(key, id, ts, body, sig, now, TOLERANCE_SECS)
                }
                Verifier::Standard(secret) => {
                    verify_standard(secret, id, ts, body, sig, now, TOLERANCE_SECS)
                }
                _ => unreachable!("matched above"),
            };
            let version = if ed25519 { "v1a" } else { "v1" };
            match verified {
                Ok(()) => Verdict::Valid { scheme },
                Err(VerifyError::TimestampTooOld) => invalid("expired timestamp".into()),
                Err(VerifyError::TimestampTooNew) => {
                    invalid("timestamp too far in the future".into())
                }
                Err(VerifyError::NoSignature) => {
                    invalid(format!("no {version} signature in {prefix}-signature"))
                }
                Err(VerifyError::NoMatchingSignature) => invalid(
                    "signature does not match (wrong secret, or the body was altered)".into(),
                ),
            }
        }
    }
}

/// Runs the receiver until Ctrl-C. Returns the error to print when it cannot start.
pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let verifier = Verifier::from_args(&args).map_err(anyhow::Error::msg)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e} (choose another port with --port)")
    })?;
    let local = listener.local_addr()?;
    eprintln!(
        "hookline listen: receiving on http://{local} (any path), answering {}{}",
        args.status,
        if args.delay.is_zero() {
            String::new()
        } else {
            format!(" after {:?}", args.delay)
        }
    );
    eprintln!("hookline listen: {}", verifier.describe());
    eprintln!(
        "hookline listen: to deliver here, hookline must allow loopback targets: \
         `hookline serve --allow-target 127.0.0.0/8`"
    );
    let state = Arc::new(Listen {
        verifier,
        status: StatusCode::from_u16(args.status)?,
        delay: args.delay,
        json: args.json,
        colour: std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    });
    let app = axum::Router::new()
        .fallback(receive)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

struct Listen {
    verifier: Verifier,
    status: StatusCode,
    delay: Duration,
    json: bool,
    colour: bool,
}

async fn receive(
    State(listen): State<Arc<Listen>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = chrono::Utc::now();
    let verdict = check(&listen.verifier, &headers, &body, now.timestamp());
    let delivery = Delivery {
        at: now,
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
        verdict: &verdict,
    };
    let text = if listen.json {
        let mut line = delivery.json(listen.status, listen.delay).to_string();
        line.push('\n');
        line
    } else {
        delivery.text(listen.status, &listen.verifier, listen.colour)
    };
    print_whole(&text);
    if !listen.delay.is_zero() {
        tokio::time::sleep(listen.delay).await;
    }
    listen.status
}

/// One write under stdout's lock, so deliveries arriving together never interleave.
fn print_whole(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// One received request, for printing.
struct Delivery<'a> {
    at: chrono::DateTime<chrono::Utc>,
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a [u8],
    verdict: &'a Verdict,
}

impl Delivery<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn msg_id(&self) -> Option<&str> {
        self.header("webhook-id").or_else(|| self.header("svix-id"))
    }

    /// The payload's own event type field, when it has one: hookline sends the payload
    /// as given, and no header names the event type.
    fn event_type(body: &Option<Value>) -> Option<String> {
        let obj = body.as_ref()?.as_object()?;
        ["type", "eventType", "event_type", "event"]
            .iter()
            .find_map(|k| obj.get(*k)?.as_str().map(str::to_string))
    }

    fn json(&self, status: StatusCode, delay: Duration) -> Value {
        let parsed: Option<Value> = serde_json::from_slice(self.body).ok();
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                )
            })
            .collect();
        let signature = match self.verdict {
            Verdict::Valid { scheme } => json!({"result": "valid", "scheme": scheme}),
            Verdict::Invalid { scheme, reason } => {
                json!({"result": "invalid", "scheme": scheme, "reason": reason})
            }
            Verdict::Unchecked { reason } => json!({"result": "unchecked", "reason": reason}),
        };
        json!({
            "receivedAt": self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "method": self.method.as_str(),
            "path": self.uri.path(),
            "query": self.uri.query(),
            "msgId": self.msg_id(),
            "eventType": Self::event_type(&parsed),
            "headers": headers,
            "body": parsed.clone().unwrap_or_else(|| Value::String(String::from_utf8_lossy(self.body).into_owned())),
            "signature": signature,
            "answer": {"status": status.as_u16(), "delayMs": delay.as_millis() as u64},
        })
    }

    fn text(&self, status: StatusCode, verifier: &Verifier, colour: bool) -> String {
        let paint = |code: &str, s: &str| {
            if colour {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let parsed: Option<Value> = serde_json::from_slice(self.body).ok();
        let mut out = format!(
            "{}  {} {}  {}  {}  -> {}\n",
            paint("1", &self.at.format("%H:%M:%S%.3f").to_string()),
            self.method,
            self.uri,
            paint(
                "36",
                &Self::event_type(&parsed).unwrap_or_else(|| "-".into())
            ),
            self.msg_id().unwrap_or("-"),
            status.as_u16(),
        );
        let verdict = match self.verdict {
            Verdict::Valid { scheme } => format!("{} ({scheme})", paint("32", "valid")),
            Verdict::Invalid { scheme, reason } => {
                format!("{} ({scheme})", paint("31", &format!("invalid: {reason}")))
            }
            Verdict::Unchecked { reason } => paint("33", &format!("unchecked: {reason}")),
        };
        out.push_str(&format!("  signature: {verdict}\n"));
        let hex_header = match verifier {
            Verifier::Hex { header, .. } => Some(header.as_str()),
            _ => None,
        };
        for (name, value) in self.headers {
            let n = name.as_str();
            let matters = n.starts_with("webhook-")
                || n.starts_with("svix-")
                || matches!(n, "content-type" | "user-agent")
                || Some(n) == hex_header;
            if matters {
                let value = String::from_utf8_lossy(value.as_bytes());
                out.push_str(&format!("  {}: {value}\n", paint("2", n)));
            }
        }
        let body = match &parsed {
            Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
            None => String::from_utf8_lossy(self.body).into_owned(),
        };
        for line in body.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_signing::{sign_hmac_sha256_hex, sign_standard};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW: i64 = 1_700_000_000;

    fn standard() -> Verifier {
        Verifier::Standard(StandardSecret::parse(SECRET).unwrap())
    }

    fn signed(prefix: &str, body: &[u8], ts: i64) -> HeaderMap {
        let secret = StandardSecret::parse(SECRET).unwrap();
        let mut h = HeaderMap::new();
        let name = |s: &str| HeaderName::from_bytes(format!("{prefix}-{s}").as_bytes()).unwrap();
        h.insert(name("id"), "msg_1".parse().unwrap());
        h.insert(name("timestamp"), ts.to_string().parse().unwrap());
        h.insert(
            name("signature"),
            sign_standard(secret.key(), "msg_1", ts, body)
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn standard_signatures_verify_with_either_header_set() {
        let body = br#"{"id": 1}"#;
        assert_eq!(
            check(&standard(), &signed("webhook", body, NOW), body, NOW),
            Verdict::Valid { scheme: "standard" }
        );
        assert_eq!(
            check(&standard(), &signed("svix", body, NOW - 10), body, NOW),
            Verdict::Valid {
                scheme: "standard (svix-* headers)"
            }
        );
    }

    fn reason(v: Verdict) -> String {
        match v {
            Verdict::Invalid { reason, .. } => reason,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn altered_body_wrong_secret_and_old_timestamp_are_invalid_with_the_reason() {
        let body = br#"{"id": 1}"#;
        let headers = signed("webhook", body, NOW);
        assert!(reason(check(&standard(), &headers, br#"{"id": 2}"#, NOW)).contains("altered"));
        let other = Verifier::Standard(StandardSecret::generate());
        assert!(reason(check(&other, &headers, body, NOW)).contains("wrong secret"));
        let old = signed("webhook", body, NOW - TOLERANCE_SECS - 1);
        assert_eq!(
            reason(check(&standard(), &old, body, NOW)),
            "expired timestamp"
        );
        // At the tolerance's edge it is still fresh.
        let edge = signed("webhook", body, NOW - TOLERANCE_SECS);
        assert!(matches!(
            check(&standard(), &edge, body, NOW),
            Verdict::Valid { .. }
        ));
        let future = signed("webhook", body, NOW + TOLERANCE_SECS + 1);
        assert!(reason(check(&standard(), &future, body, NOW)).contains("future"));
    }

    #[test]
    fn missing_or_malformed_standard_headers_are_named() {
        let body = b"{}";
        assert!(reason(check(&standard(), &HeaderMap::new(), body, NOW)).contains("no webhook-id"));
        let mut h = signed("webhook", body, NOW);
        h.insert("webhook-timestamp", "yesterday".parse().unwrap());
        assert!(reason(check(&standard(), &h, body, NOW)).contains("not a Unix time"));
        let mut h = signed("webhook", body, NOW);
        h.remove("webhook-signature");
        assert!(reason(check(&standard(), &h, body, NOW)).contains("missing one of"));
    }

    #[test]
    fn hex_hmac_in_the_named_header() {
        let v = Verifier::Hex {
            header: HeaderName::from_static("x-cablenetai-signature"),
            key: "plain-key".into(),
        };
        let body = b"{\"a\":1}";
        let mut h = HeaderMap::new();
        assert!(reason(check(&v, &h, body, NOW)).contains("no x-cablenetai-signature header"));
        h.insert(
            "x-cablenetai-signature",
            sign_hmac_sha256_hex(b"plain-key", body).parse().unwrap(),
        );
        assert_eq!(
            check(&v, &h, body, NOW),
            Verdict::Valid {
                scheme: "hmac-sha256-hex"
            }
        );
        assert!(reason(check(&v, &h, b"{\"a\":2}", NOW)).contains("does not match"));
    }

    #[test]
    fn without_a_secret_nothing_is_claimed() {
        let body = b"{}";
        let h = signed("webhook", body, NOW);
        assert!(matches!(
            check(&Verifier::None, &h, body, NOW),
            Verdict::Unchecked { .. }
        ));
    }

    #[test]
    fn ed25519_signatures_are_checked_with_the_public_key() {
        let pair = hookline_signing::Ed25519Secret::generate();
        let v = Verifier::Ed25519(pair.public_key());
        let body = b"{\"a\":1}";
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "msg_1".parse().unwrap());
        h.insert("webhook-timestamp", NOW.to_string().parse().unwrap());
        h.insert(
            "webhook-signature",
            pair.sign("msg_1", NOW, body).parse().unwrap(),
        );
        assert_eq!(
            check(&v, &h, body, NOW),
            Verdict::Valid { scheme: "ed25519" }
        );
        assert!(reason(check(&v, &h, b"{\"a\":2}", NOW)).contains("does not match"));
        let other = Verifier::Ed25519(hookline_signing::Ed25519Secret::generate().public_key());
        assert!(reason(check(&other, &h, body, NOW)).contains("does not match"));
        assert_eq!(reason(check(&v, &h, body, NOW + 600)), "expired timestamp");
        // An HMAC signature is not an ed25519 one.
        let hmac = signed("webhook", body, NOW);
        assert!(reason(check(&v, &hmac, body, NOW)).contains("no v1a signature"));
    }
}
