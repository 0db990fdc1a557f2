//! The Standard Webhooks signature scheme (<https://www.standardwebhooks.com>).
//!
//! Owns the `whsec_` secret format, producing the `webhook-signature` header
//! value, and verifying it. It must never render a secret anywhere but through
//! the explicit `as_str`/`Display` calls (no `Debug`, no error message), and
//! must not decide which secrets are currently valid or what time it is: key
//! rotation and clocks belong to the caller.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// Header carrying the message id that is part of the signed content.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the Unix timestamp (seconds) that is part of the signed content.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Prefix of a rendered secret. Optional on input, because Svix and several
/// receiver libraries accept a bare base64 key and customers paste either.
pub const SECRET_PREFIX: &str = "whsec_";
/// Smallest accepted key (bytes). 24 bytes matches what Svix issues; anything
/// shorter is too weak to be worth accepting from a customer.
pub const MIN_KEY_LEN: usize = 24;
/// Largest accepted key (bytes). HMAC-SHA256 hashes keys longer than its
/// 64-byte block, so longer keys add nothing but room for mistakes.
pub const MAX_KEY_LEN: usize = 64;

/// Length of freshly generated keys: the Svix default, so secrets look familiar.
const GENERATED_KEY_LEN: usize = 24;

/// Why a secret string was refused. Variants deliberately carry no part of
/// the input, so the error can be returned to an API client or logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret is empty")]
    Empty,
    #[error(
        "secret is not valid base64 (standard alphabet, padded) after the optional `whsec_` prefix"
    )]
    InvalidBase64,
    #[error("secret key is too short: {len} bytes, at least {MIN_KEY_LEN} required")]
    TooShort { len: usize },
    #[error("secret key is too long: {len} bytes, at most {MAX_KEY_LEN} allowed")]
    TooLong { len: usize },
}

/// Why a `webhook-signature` header was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Checked before the signature so stale replays are rejected cheaply.
    #[error("timestamp is older than the allowed tolerance")]
    TimestampTooOld,
    #[error("timestamp is further in the future than the allowed tolerance")]
    TimestampTooNew,
    #[error("signature header contains no signature of the key's version (`v1,` for whsec_ secrets, `v1a,` for whpk_ keys)")]
    NoSignature,
    #[error("no signature in the header matches")]
    NoMatchingSignature,
}

/// A Standard Webhooks signing secret.
///
/// The rendered `whsec_...` form is kept alongside the key so `as_str` can
/// hand out a borrowed string; it is always the canonical form (prefix
/// present, re-encoded from the key), whatever form was parsed.
#[derive(Clone)]
pub struct StandardSecret {
    key: Vec<u8>,
    rendered: String,
}

impl StandardSecret {
    /// Parses `whsec_<base64>` or a bare `<base64>` key.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let encoded = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        // The decoder's own error names the offending byte and offset, which
        // would leak part of the secret, so it is dropped on purpose.
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        Self::from_key(key)
    }

    /// A fresh random secret, drawn from the thread-local CSPRNG.
    pub fn generate() -> Self {
        let key: [u8; GENERATED_KEY_LEN] = rand::random();
        Self::from_key(key.to_vec()).expect("generated key length is within bounds")
    }

    fn from_key(key: Vec<u8>) -> Result<Self, SecretError> {
        match key.len() {
            len if len < MIN_KEY_LEN => Err(SecretError::TooShort { len }),
            len if len > MAX_KEY_LEN => Err(SecretError::TooLong { len }),
            _ => {
                let rendered = format!("{SECRET_PREFIX}{}", STANDARD.encode(&key));
                Ok(Self { key, rendered })
            }
        }
    }

    /// The canonical `whsec_...` form, for showing to the customer or storing.
    pub fn as_str(&self) -> &str {
        &self.rendered
    }

    /// The raw HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

/// Renders the full secret. This is intentional (it is how the secret is
/// shown to its owner); use `{:?}` anywhere the value might end up in logs.
impl fmt::Display for StandardSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

/// Never prints key material: `Debug` is what ends up in logs and panics.
impl fmt::Debug for StandardSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StandardSecret(***)")
    }
}

impl FromStr for StandardSecret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Constant-time, so comparing a stored secret with a submitted one does not
/// leak how many leading bytes agree.
impl PartialEq for StandardSecret {
    fn eq(&self, other: &Self) -> bool {
        self.key.ct_eq(&other.key).into()
    }
}

impl Eq for StandardSecret {}

fn standard_mac(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// One `v1,<base64>` signature over `{msg_id}.{timestamp}.{body}`.
///
/// Takes the raw key rather than a [`StandardSecret`] so receivers holding a
/// key from elsewhere can use it without inventing a secret string.
pub fn sign_standard(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        STANDARD.encode(standard_mac(key, msg_id, timestamp, body))
    )
}

/// The `webhook-signature` header value: one signature per secret, separated
/// by spaces, so receivers still on an old secret keep verifying while a
/// rotation's grace period lasts. Which secrets are still valid is the
/// caller's decision; an empty slice gives an empty string.
pub fn signature_header(
    secrets: &[&StandardSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| sign_standard(secret.key(), msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The entries of a `webhook-signature` header as `(version, signature)` pairs, in
/// order: entries are separated by ASCII whitespace and split at their first comma.
/// Tokens without a comma are skipped (they carry no version), so any string can be fed
/// to it; what a signature must look like is its verifier's business.
pub fn signature_entries(header_value: &str) -> impl Iterator<Item = (&str, &str)> {
    header_value
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
}

/// The signatures of one version (`v1`, `v1a`) in a `webhook-signature` header.
pub(crate) fn entries<'h>(
    header_value: &'h str,
    version: &'h str,
) -> impl Iterator<Item = &'h str> + 'h {
    signature_entries(header_value)
        .filter(move |(v, _)| *v == version)
        .map(|(_, signature)| signature)
}

/// Refuses a timestamp outside `now ± tolerance_secs` (a negative tolerance counts as
/// zero). Checked before any signature so stale replays are rejected cheaply.
pub(crate) fn check_timestamp(
    timestamp: i64,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    // i128 so extreme caller-supplied values cannot overflow.
    let age = i128::from(now) - i128::from(timestamp);
    let tolerance = i128::from(tolerance_secs.max(0));
    if age > tolerance {
        return Err(VerifyError::TimestampTooOld);
    }
    if -age > tolerance {
        return Err(VerifyError::TimestampTooNew);
    }
    Ok(())
}

/// Checks a `webhook-signature` header against one secret.
///
/// `now` and `tolerance_secs` are passed in so the function stays pure and
/// testable; a negative tolerance is treated as zero. Succeeds if any `v1,`
/// entry matches; entries of other versions are ignored so future schemes
/// can be added to the header without breaking existing receivers.
pub fn verify_standard(
    secret: &StandardSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header_value: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    check_timestamp(timestamp, now, tolerance_secs)?;
    let expected = STANDARD.encode(standard_mac(secret.key(), msg_id, timestamp, body));
    let mut seen_v1 = false;
    // Every entry is compared, without early exit, so timing does not reveal
    // which entry matched or how close a forged one came.
    let mut matched = Choice::from(0);
    for signature in entries(header_value, "v1") {
        seen_v1 = true;
        matched |= signature.as_bytes().ct_eq(expected.as_bytes());
    }
    if !seen_v1 {
        Err(VerifyError::NoSignature)
    } else if bool::from(matched) {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn vector_secret() -> StandardSecret {
        StandardSecret::parse(VECTOR_SECRET).unwrap()
    }

    #[test]
    fn published_vector_signs() {
        let secret = vector_secret();
        assert_eq!(
            sign_standard(secret.key(), VECTOR_ID, VECTOR_TS, VECTOR_BODY),
            VECTOR_SIG
        );
    }

    #[test]
    fn published_vector_verifies() {
        let secret = vector_secret();
        assert_eq!(
            verify_standard(
                &secret,
                VECTOR_ID,
                VECTOR_TS,
                VECTOR_BODY,
                VECTOR_SIG,
                VECTOR_TS,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn parse_accepts_bare_base64_and_renders_canonically() {
        let bare = StandardSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(bare.as_str(), VECTOR_SECRET);
        assert_eq!(bare.to_string(), VECTOR_SECRET);
        assert_eq!(bare, vector_secret());
        assert_eq!(bare.key().len(), 24);
    }

    #[test]
    fn from_str_matches_parse() {
        let parsed: StandardSecret = VECTOR_SECRET.parse().unwrap();
        assert_eq!(parsed, vector_secret());
    }

    #[test]
    fn parse_rejects_empty() {
        assert_eq!(StandardSecret::parse(""), Err(SecretError::Empty));
        assert_eq!(StandardSecret::parse("whsec_"), Err(SecretError::Empty));
    }

    #[test]
    fn parse_rejects_bad_base64() {
        for bad in [
            "whsec_not base64 at all!!",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS-", // URL-safe alphabet
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAA", // missing padding
        ] {
            assert_eq!(
                StandardSecret::parse(bad),
                Err(SecretError::InvalidBase64),
                "{bad}"
            );
        }
    }

    #[test]
    fn parse_rejects_too_short_key() {
        let short = format!("whsec_{}", STANDARD.encode([7u8; 23]));
        assert_eq!(
            StandardSecret::parse(&short),
            Err(SecretError::TooShort { len: 23 })
        );
    }

    #[test]
    fn parse_rejects_too_long_key() {
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert_eq!(
            StandardSecret::parse(&long),
            Err(SecretError::TooLong { len: 65 })
        );
    }

    #[test]
    fn parse_accepts_both_length_bounds() {
        for len in [MIN_KEY_LEN, MAX_KEY_LEN] {
            let s = format!("whsec_{}", STANDARD.encode(vec![1u8; len]));
            assert_eq!(StandardSecret::parse(&s).unwrap().key().len(), len);
        }
    }

    #[test]
    fn parse_errors_do_not_echo_the_input() {
        let inputs = [
            "whsec_c2VjcmV0c2VjcmV0",   // too short
            "whsec_c2VjcmV0c2VjcmV0!!", // bad base64
        ];
        for input in inputs {
            let err = StandardSecret::parse(input).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("c2VjcmV0"), "{shown}");
        }
    }

    #[test]
    fn debug_does_not_leak() {
        let secret = vector_secret();
        let shown = format!("{secret:?} {secret:#?} {:?}", Some(&secret));
        assert!(!shown.contains("MfKQ"), "{shown}");
        assert!(!shown.contains("whsec_"), "{shown}");
        assert_eq!(format!("{secret:?}"), "StandardSecret(***)");
    }

    #[test]
    fn generate_gives_distinct_valid_secrets() {
        let a = StandardSecret::generate();
        let b = StandardSecret::generate();
        assert_eq!(a.key().len(), 24);
        assert!(a.as_str().starts_with(SECRET_PREFIX));
        assert_ne!(a, b);
        assert_eq!(StandardSecret::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn header_lists_one_signature_per_secret() {
        let old = vector_secret();
        let new = StandardSecret::generate();
        let header = signature_header(&[&old, &new], VECTOR_ID, VECTOR_TS, VECTOR_BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], VECTOR_SIG);
        assert_eq!(
            parts[1],
            sign_standard(new.key(), VECTOR_ID, VECTOR_TS, VECTOR_BODY)
        );
        for secret in [&old, &new] {
            assert_eq!(
                verify_standard(
                    secret,
                    VECTOR_ID,
                    VECTOR_TS,
                    VECTOR_BODY,
                    &header,
                    VECTOR_TS,
                    0
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn header_for_no_secrets_is_empty() {
        assert_eq!(signature_header(&[], VECTOR_ID, VECTOR_TS, VECTOR_BODY), "");
    }

    #[test]
    fn verify_accepts_if_any_signature_matches() {
        let secret = vector_secret();
        let header =
            format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1a,xyz  {VECTOR_SIG}");
        assert_eq!(
            verify_standard(
                &secret,
                VECTOR_ID,
                VECTOR_TS,
                VECTOR_BODY,
                &header,
                VECTOR_TS,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn verify_rejects_tampered_body() {
        let secret = vector_secret();
        assert_eq!(
            verify_standard(
                &secret,
                VECTOR_ID,
                VECTOR_TS,
                br#"{"test": 2432232315}"#,
                VECTOR_SIG,
                VECTOR_TS,
                300
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn verify_rejects_tampered_timestamp() {
        let secret = vector_secret();
        assert_eq!(
            verify_standard(
                &secret,
                VECTOR_ID,
                VECTOR_TS + 1,
                VECTOR_BODY,
                VECTOR_SIG,
                VECTOR_TS,
                300
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn verify_rejects_tampered_id() {
        let secret = vector_secret();
        assert_eq!(
            verify_standard(
                &secret,
                "msg_other",
                VECTOR_TS,
                VECTOR_BODY,
                VECTOR_SIG,
                VECTOR_TS,
                300
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn verify_rejects_tampered_signature() {
        let secret = vector_secret();
        let tampered = VECTOR_SIG.replace("g0hM", "g0hN");
        assert_eq!(
            verify_standard(
                &secret,
                VECTOR_ID,
                VECTOR_TS,
                VECTOR_BODY,
                &tampered,
                VECTOR_TS,
                300
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn verify_rejects_wrong_secret() {
        let other = StandardSecret::generate();
        assert_eq!(
            verify_standard(
                &other,
                VECTOR_ID,
                VECTOR_TS,
                VECTOR_BODY,
                VECTOR_SIG,
                VECTOR_TS,
                300
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn verify_requires_a_v1_entry() {
        let secret = vector_secret();
        for header in [
            "",
            "   ",
            "v2,abc",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ] {
            assert_eq!(
                verify_standard(
                    &secret,
                    VECTOR_ID,
                    VECTOR_TS,
                    VECTOR_BODY,
                    header,
                    VECTOR_TS,
                    300
                ),
                Err(VerifyError::NoSignature),
                "{header:?}"
            );
        }
    }

    #[test]
    fn verify_enforces_tolerance_both_ways() {
        let secret = vector_secret();
        let check = |now| {
            verify_standard(
                &secret,
                VECTOR_ID,
                VECTOR_TS,
                VECTOR_BODY,
                VECTOR_SIG,
                now,
                300,
            )
        };
        assert_eq!(check(VECTOR_TS + 300), Ok(()));
        assert_eq!(check(VECTOR_TS - 300), Ok(()));
        assert_eq!(check(VECTOR_TS + 301), Err(VerifyError::TimestampTooOld));
        assert_eq!(check(VECTOR_TS - 301), Err(VerifyError::TimestampTooNew));
    }

    #[test]
    fn verify_survives_extreme_inputs() {
        let secret = vector_secret();
        assert_eq!(
            verify_standard(
                &secret,
                VECTOR_ID,
                i64::MIN,
                VECTOR_BODY,
                VECTOR_SIG,
                i64::MAX,
                i64::MAX
            ),
            Err(VerifyError::TimestampTooOld)
        );
        assert_eq!(
            verify_standard(
                &secret,
                VECTOR_ID,
                VECTOR_TS,
                VECTOR_BODY,
                VECTOR_SIG,
                VECTOR_TS,
                -5
            ),
            Ok(())
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn sign_then_verify_round_trips(
                key in proptest::collection::vec(any::<u8>(), MIN_KEY_LEN..=MAX_KEY_LEN),
                msg_id in "[a-zA-Z0-9_]{1,40}",
                timestamp in 0i64..4_000_000_000,
                body in proptest::collection::vec(any::<u8>(), 0..512),
                skew in -300i64..=300,
            ) {
                let secret = StandardSecret::parse(&STANDARD.encode(&key)).unwrap();
                prop_assert_eq!(secret.key(), key.as_slice());
                prop_assert_eq!(StandardSecret::parse(secret.as_str()).unwrap(), secret.clone());
                let header = signature_header(&[&secret], &msg_id, timestamp, &body);
                prop_assert_eq!(
                    verify_standard(&secret, &msg_id, timestamp, &body, &header, timestamp + skew, 300),
                    Ok(())
                );
            }

            #[test]
            fn header_entries_never_panic_and_verify_never_panics(
                header in ".{0,300}",
                timestamp in any::<i64>(),
                now in any::<i64>(),
                tolerance in any::<i64>(),
            ) {
                for (version, signature) in signature_entries(&header) {
                    prop_assert!(!version.contains(','));
                    prop_assert!(!version.chars().chain(signature.chars()).any(|c| c.is_ascii_whitespace()));
                }
                let secret = vector_secret();
                let _ = verify_standard(&secret, VECTOR_ID, timestamp, VECTOR_BODY, &header, now, tolerance);
                let _ = verify_standard(&secret, VECTOR_ID, VECTOR_TS, VECTOR_BODY, &header, VECTOR_TS, 300);
            }

            #[test]
            fn header_entries_round_trip(
                entries in proptest::collection::vec(("[a-z0-9]{1,4}", "[A-Za-z0-9+/=,]{0,90}"), 0..6),
                separators in proptest::collection::vec("[ \t\r\n]{1,3}", 6),
                leading in "[ \t]{0,2}",
            ) {
                let mut header = leading;
                for (i, (version, signature)) in entries.iter().enumerate() {
                    header.push_str(&format!("{version},{signature}"));
                    header.push_str(&separators[i]);
                }
                let parsed: Vec<(String, String)> = signature_entries(&header)
                    .map(|(v, s)| (v.to_string(), s.to_string()))
                    .collect();
                prop_assert_eq!(parsed, entries);
            }

            #[test]
            fn parsing_any_secret_string_never_panics(s in ".{0,200}") {
                let _ = StandardSecret::parse(&s);
                let _ = StandardSecret::parse(&format!("whsec_{s}"));
            }

            #[test]
            fn flipping_any_body_bit_breaks_verification(
                body in proptest::collection::vec(any::<u8>(), 1..256),
                index in any::<prop::sample::Index>(),
                bit in 0u8..8,
            ) {
                let secret = vector_secret();
                let header = sign_standard(secret.key(), VECTOR_ID, VECTOR_TS, &body);
                let mut tampered = body.clone();
                tampered[index.index(body.len())] ^= 1 << bit;
                prop_assert_eq!(
                    verify_standard(&secret, VECTOR_ID, VECTOR_TS, &tampered, &header, VECTOR_TS, 300),
                    Err(VerifyError::NoMatchingSignature)
                );
            }
        }
    }
}
