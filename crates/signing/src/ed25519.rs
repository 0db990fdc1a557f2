//! ed25519 signatures as Svix and Standard Webhooks do them.
//!
//! Owns the two key formats and the signature: the sender's `whsk_` secret (base64 of
//! the 64-byte key pair, the 32-byte seed followed by its 32-byte public key), the
//! receiver's `whpk_` public key (base64 of the 32 public bytes), and `v1a,<base64>`
//! signatures over `{msg_id}.{timestamp}.{body}` in `webhook-signature`.
//!
//! Why asymmetric at all: with `whsec_` every receiver holds a key that can also *forge*
//! deliveries; with ed25519 a receiver holds only the public key, so a leak at one
//! customer cannot be used to impersonate the sender to anyone.
//!
//! Like the rest of the crate it is pure: no clock, no I/O. It must never render the
//! private key except through the explicit `Display` (no `Debug`, no error message), and
//! must not decide which keys are valid now; rotation belongs to the caller.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::ed25519::signature::MultipartSigner;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::standard::VerifyError;

/// Prefix of a rendered ed25519 key pair (the sender's secret).
pub const ED25519_SECRET_PREFIX: &str = "whsk_";
/// Prefix of a rendered ed25519 public key (what receivers verify with).
pub const ED25519_PUBLIC_PREFIX: &str = "whpk_";
/// Version tag of an ed25519 entry in `webhook-signature`, as in Svix and the Standard
/// Webhooks specification (`v1` is the HMAC one).
pub const ED25519_SIGNATURE_VERSION: &str = "v1a";

const SEED_LEN: usize = ed25519_dalek::SECRET_KEY_LENGTH;
const PUBLIC_LEN: usize = ed25519_dalek::PUBLIC_KEY_LENGTH;
const KEYPAIR_LEN: usize = SEED_LEN + PUBLIC_LEN;

/// Why an ed25519 key string was refused. Variants carry no part of the input, so the
/// error can be shown to an API client or logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ed25519KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is not valid base64 (standard alphabet, padded) after its prefix")]
    InvalidBase64,
    #[error(
        "key pair must be 64 bytes (a 32-byte seed followed by its 32-byte public key), got {len}"
    )]
    WrongKeyPairLength { len: usize },
    #[error("public key must be 32 bytes, got {len}")]
    WrongPublicKeyLength { len: usize },
    /// The last 32 bytes of a `whsk_` key pair must be what the seed derives: a pair
    /// whose halves disagree would sign with one key while `GET .../secret` hands
    /// receivers another, and every delivery would fail verification.
    #[error("the key pair's public half (its last 32 bytes) is not the public key of its seed (its first 32 bytes)")]
    MismatchedPublicKey,
    #[error("not a valid ed25519 public key (not a point of the curve, or one of small order)")]
    InvalidPublicKey,
}

fn decode(s: &str, prefix: &str) -> Result<Zeroizing<Vec<u8>>, Ed25519KeyError> {
    let encoded = s.strip_prefix(prefix).unwrap_or(s);
    if encoded.is_empty() {
        return Err(Ed25519KeyError::Empty);
    }
    // The decoder's own error names the offending byte and offset, which would leak
    // part of a private key, so it is dropped on purpose.
    STANDARD
        .decode(encoded)
        .map(Zeroizing::new)
        .map_err(|_| Ed25519KeyError::InvalidBase64)
}

/// An endpoint's ed25519 key pair: what hookline signs deliveries with.
///
/// The private key is wiped from memory when this is dropped (ed25519-dalek's
/// `zeroize`).
#[derive(Clone)]
pub struct Ed25519Secret {
    key: SigningKey,
}

impl Ed25519Secret {
    /// Parses `whsk_<base64 of seed ‖ public key>` (the prefix may be left out). The
    /// public half must be the one the seed derives.
    pub fn parse(s: &str) -> Result<Self, Ed25519KeyError> {
        let bytes = decode(s, ED25519_SECRET_PREFIX)?;
        let pair: &[u8; KEYPAIR_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Ed25519KeyError::WrongKeyPairLength { len: bytes.len() })?;
        let (seed, public) = pair.split_at(SEED_LEN);
        let seed: Zeroizing<[u8; SEED_LEN]> =
            Zeroizing::new(seed.try_into().expect("split at the seed length"));
        let key = SigningKey::from_bytes(&seed);
        // Public bytes, so a plain comparison leaks nothing worth hiding.
        if key.verifying_key().as_bytes() != public {
            return Err(Ed25519KeyError::MismatchedPublicKey);
        }
        Ok(Self { key })
    }

    /// A fresh key pair from the thread-local CSPRNG.
    pub fn generate() -> Self {
        let seed = Zeroizing::new(rand::random::<[u8; SEED_LEN]>());
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The public key receivers verify with.
    pub fn public_key(&self) -> Ed25519PublicKey {
        Ed25519PublicKey {
            key: self.key.verifying_key(),
        }
    }

    /// One `v1a,<base64>` signature over `{msg_id}.{timestamp}.{body}`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let ts = timestamp.to_string();
        // Signed in parts so the body is never copied into a joined buffer.
        let signature: Signature =
            self.key
                .multipart_sign(&[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
        format!(
            "{ED25519_SIGNATURE_VERSION},{}",
            STANDARD.encode(signature.to_bytes())
        )
    }
}

/// Renders the full private key pair (`whsk_...`). Intentional: it is how a key is
/// stored and how a customer who brought one sees it; use `{:?}` wherever the value
/// might end up in logs.
impl fmt::Display for Ed25519Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pair = Zeroizing::new(self.key.to_keypair_bytes());
        let encoded = Zeroizing::new(STANDARD.encode(pair.as_slice()));
        f.write_str(ED25519_SECRET_PREFIX)?;
        f.write_str(&encoded)
    }
}

/// Shows the public key only: `Debug` is what ends up in logs and panics.
impl fmt::Debug for Ed25519Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519Secret(sk=***, pk={})", self.public_key())
    }
}

impl FromStr for Ed25519Secret {
    type Err = Ed25519KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Two secrets are equal when their seeds are (the public halves follow).
impl PartialEq for Ed25519Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.key.as_bytes().ct_eq(other.key.as_bytes()).into()
    }
}

impl Eq for Ed25519Secret {}

/// An ed25519 public key: what a receiver needs, and all it needs, to check deliveries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ed25519PublicKey {
    key: VerifyingKey,
}

impl Ed25519PublicKey {
    /// Parses `whpk_<base64 of 32 bytes>` (the prefix may be left out, as receivers
    /// paste either). Points off the curve and small-order points are refused: no
    /// honest key is one, and a small-order key would accept forged signatures.
    pub fn parse(s: &str) -> Result<Self, Ed25519KeyError> {
        let bytes = decode(s, ED25519_PUBLIC_PREFIX)?;
        let raw: &[u8; PUBLIC_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Ed25519KeyError::WrongPublicKeyLength { len: bytes.len() })?;
        let key = VerifyingKey::from_bytes(raw).map_err(|_| Ed25519KeyError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(Ed25519KeyError::InvalidPublicKey);
        }
        Ok(Self { key })
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_LEN] {
        self.key.as_bytes()
    }
}

/// `whpk_<base64>`, the form `GET .../secret` hands out.
impl fmt::Display for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ED25519_PUBLIC_PREFIX}{}",
            STANDARD.encode(self.key.as_bytes())
        )
    }
}

impl fmt::Debug for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519PublicKey({self})")
    }
}

impl FromStr for Ed25519PublicKey {
    type Err = Ed25519KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks a `webhook-signature` header against one ed25519 public key.
///
/// The same contract as [`crate::verify_standard`]: `now` and `tolerance_secs` come from
/// the caller (a negative tolerance counts as zero), the timestamp is checked first, any
/// matching `v1a,` entry is enough, and entries of other versions (the `v1,` HMAC ones
/// sent alongside during a rotation) are skipped. Verification is strict (RFC 8032's
/// canonical encodings; no malleable signatures).
pub fn verify_ed25519(
    public_key: &Ed25519PublicKey,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header_value: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    crate::standard::check_timestamp(timestamp, now, tolerance_secs)?;
    let ts = timestamp.to_string();
    let message = [msg_id.as_bytes(), b".", ts.as_bytes(), b".", body].concat();
    let mut seen = false;
    for encoded in crate::standard::entries(header_value, ED25519_SIGNATURE_VERSION) {
        seen = true;
        // A public-key check reveals nothing through its timing, so the first match may
        // end the loop.
        let Ok(raw) = STANDARD.decode(encoded) else {
            continue;
        };
        let Ok(signature) = Signature::from_slice(&raw) else {
            continue;
        };
        if public_key.key.verify_strict(&message, &signature).is_ok() {
            return Ok(());
        }
    }
    if seen {
        Err(VerifyError::NoMatchingSignature)
    } else {
        Err(VerifyError::NoSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answer, computed with Python's `cryptography` (OpenSSL), not with this crate:
    //   seed = bytes.fromhex(RFC 8032 section 7.1 TEST 1 secret key)
    //   sk = Ed25519PrivateKey.from_private_bytes(seed); pk = raw public bytes
    //   "whsk_" + b64(seed + pk), "whpk_" + b64(pk),
    //   "v1a," + b64(sk.sign(b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}'))
    const KAT_SECRET: &str = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGg==";
    const KAT_PUBLIC: &str = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    const KAT_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const KAT_TS: i64 = 1_614_265_330;
    const KAT_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const KAT_SIG: &str = "v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPePmPsle0zV9jSeGlHFG2NVAw==";
    /// RFC 8032 section 7.1, TEST 1: the public key of the seed above.
    const RFC8032_TEST1_PUBLIC_HEX: &str =
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn kat_secret() -> Ed25519Secret {
        Ed25519Secret::parse(KAT_SECRET).unwrap()
    }

    fn kat_public() -> Ed25519PublicKey {
        Ed25519PublicKey::parse(KAT_PUBLIC).unwrap()
    }

    fn verify(header: &str) -> Result<(), VerifyError> {
        verify_ed25519(&kat_public(), KAT_ID, KAT_TS, KAT_BODY, header, KAT_TS, 300)
    }

    #[test]
    fn known_answer_signs() {
        assert_eq!(kat_secret().sign(KAT_ID, KAT_TS, KAT_BODY), KAT_SIG);
    }

    #[test]
    fn known_answer_verifies() {
        assert_eq!(verify(KAT_SIG), Ok(()));
    }

    #[test]
    fn known_answer_public_key_matches_rfc_8032() {
        let public = kat_secret().public_key();
        assert_eq!(public, kat_public());
        assert_eq!(public.to_string(), KAT_PUBLIC);
        let rfc: Vec<u8> = (0..RFC8032_TEST1_PUBLIC_HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&RFC8032_TEST1_PUBLIC_HEX[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(public.as_bytes().as_slice(), rfc.as_slice());
    }

    #[test]
    fn secret_renders_back_to_its_input() {
        assert_eq!(kat_secret().to_string(), KAT_SECRET);
        let bare: Ed25519Secret = KAT_SECRET.trim_start_matches("whsk_").parse().unwrap();
        assert_eq!(bare, kat_secret());
        assert_eq!(bare.to_string(), KAT_SECRET);
    }

    #[test]
    fn public_key_accepts_bare_base64() {
        let bare: Ed25519PublicKey = KAT_PUBLIC.trim_start_matches("whpk_").parse().unwrap();
        assert_eq!(bare, kat_public());
    }

    #[test]
    fn secret_rejects_bad_input() {
        let pair = STANDARD
            .decode(KAT_SECRET.trim_start_matches("whsk_"))
            .unwrap();
        let mut other_public = pair.clone();
        other_public[63] ^= 1;
        let mut other_seed = pair.clone();
        other_seed[0] ^= 1;
        let cases = [
            ("".to_string(), Ed25519KeyError::Empty),
            ("whsk_".to_string(), Ed25519KeyError::Empty),
            (
                "whsk_not base64!".to_string(),
                Ed25519KeyError::InvalidBase64,
            ),
            // URL-safe alphabet is not what Svix uses.
            (KAT_SECRET.replace('/', "_"), Ed25519KeyError::InvalidBase64),
            (
                format!("whsk_{}", STANDARD.encode(&pair[..32])),
                Ed25519KeyError::WrongKeyPairLength { len: 32 },
            ),
            (
                format!("whsk_{}", STANDARD.encode([&pair[..], &[0]].concat())),
                Ed25519KeyError::WrongKeyPairLength { len: 65 },
            ),
            (
                format!("whsk_{}", STANDARD.encode(&other_public)),
                Ed25519KeyError::MismatchedPublicKey,
            ),
            (
                format!("whsk_{}", STANDARD.encode(&other_seed)),
                Ed25519KeyError::MismatchedPublicKey,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Ed25519Secret::parse(&input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn public_key_rejects_bad_input() {
        assert_eq!(
            Ed25519PublicKey::parse("whpk_"),
            Err(Ed25519KeyError::Empty)
        );
        assert_eq!(
            Ed25519PublicKey::parse("whpk_%%%"),
            Err(Ed25519KeyError::InvalidBase64)
        );
        assert_eq!(
            Ed25519PublicKey::parse(&format!("whpk_{}", STANDARD.encode([1u8; 31]))),
            Err(Ed25519KeyError::WrongPublicKeyLength { len: 31 })
        );
        // The identity point (small order): it would accept forged signatures.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            Ed25519PublicKey::parse(&format!("whpk_{}", STANDARD.encode(identity))),
            Err(Ed25519KeyError::InvalidPublicKey)
        );
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(
            Ed25519PublicKey::parse(&format!("whpk_{}", STANDARD.encode(off_curve))),
            Err(Ed25519KeyError::InvalidPublicKey)
        );
    }

    #[test]
    fn errors_and_debug_do_not_echo_the_private_key() {
        let secret = kat_secret();
        let shown = format!("{secret:?} {secret:#?}");
        assert!(!shown.contains("nWGxne"), "{shown}");
        assert!(!shown.contains("whsk_"), "{shown}");
        assert!(shown.contains(KAT_PUBLIC), "{shown}");
        let mut broken = KAT_SECRET.to_string();
        broken.push('!');
        let err = Ed25519Secret::parse(&broken).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("nWGxne"), "{shown}");
    }

    #[test]
    fn generate_gives_distinct_valid_pairs() {
        let a = Ed25519Secret::generate();
        let b = Ed25519Secret::generate();
        assert_ne!(a, b);
        assert_ne!(a.public_key(), b.public_key());
        let rendered = a.to_string();
        assert!(rendered.starts_with(ED25519_SECRET_PREFIX));
        assert_eq!(Ed25519Secret::parse(&rendered).unwrap(), a);
    }

    #[test]
    fn verify_skips_other_versions_and_needs_a_v1a_entry() {
        let hmac_entry = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(verify(&format!("{hmac_entry} {KAT_SIG}")), Ok(()));
        assert_eq!(verify(&format!("v1a,AAAA {KAT_SIG}")), Ok(()));
        for header in [
            "",
            "  ",
            hmac_entry,
            "v1a",
            "v1ax,abc",
            KAT_SIG.trim_start_matches("v1a,"),
        ] {
            assert_eq!(verify(header), Err(VerifyError::NoSignature), "{header:?}");
        }
        for header in ["v1a,", "v1a,!!!", "v1a,AAAA", "v1a,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="] {
            assert_eq!(
                verify(header),
                Err(VerifyError::NoMatchingSignature),
                "{header:?}"
            );
        }
    }

    #[test]
    fn verify_rejects_tampering_and_other_keys() {
        let check = |id: &str, ts: i64, body: &[u8]| {
            verify_ed25519(&kat_public(), id, ts, body, KAT_SIG, KAT_TS, 300)
        };
        assert_eq!(
            check("msg_other", KAT_TS, KAT_BODY),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(KAT_ID, KAT_TS + 1, KAT_BODY),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(KAT_ID, KAT_TS, br#"{"test": 2432232315}"#),
            Err(VerifyError::NoMatchingSignature)
        );
        let other = Ed25519Secret::generate().public_key();
        assert_eq!(
            verify_ed25519(&other, KAT_ID, KAT_TS, KAT_BODY, KAT_SIG, KAT_TS, 300),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn verify_enforces_tolerance_both_ways() {
        let check =
            |now| verify_ed25519(&kat_public(), KAT_ID, KAT_TS, KAT_BODY, KAT_SIG, now, 300);
        assert_eq!(check(KAT_TS + 300), Ok(()));
        assert_eq!(check(KAT_TS - 300), Ok(()));
        assert_eq!(check(KAT_TS + 301), Err(VerifyError::TimestampTooOld));
        assert_eq!(check(KAT_TS - 301), Err(VerifyError::TimestampTooNew));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsing_any_string_never_panics(s in ".{0,200}") {
                let _ = Ed25519Secret::parse(&s);
                let _ = Ed25519PublicKey::parse(&s);
                let _ = Ed25519Secret::parse(&format!("whsk_{s}"));
                let _ = Ed25519PublicKey::parse(&format!("whpk_{s}"));
            }

            #[test]
            fn parsing_any_base64_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
                let encoded = STANDARD.encode(&bytes);
                match Ed25519Secret::parse(&format!("whsk_{encoded}")) {
                    // Random bytes of the right length are a pair only by a miracle.
                    Ok(_) => prop_assert_eq!(bytes.len(), KEYPAIR_LEN),
                    Err(e) => {
                        let expected = matches!(
                            e,
                            Ed25519KeyError::Empty
                                | Ed25519KeyError::WrongKeyPairLength { .. }
                                | Ed25519KeyError::MismatchedPublicKey
                        );
                        prop_assert!(expected, "{:?}", e);
                    }
                }
                let _ = Ed25519PublicKey::parse(&format!("whpk_{encoded}"));
            }

            #[test]
            fn any_seed_round_trips_through_its_rendering(seed in any::<[u8; 32]>()) {
                let secret = Ed25519Secret { key: SigningKey::from_bytes(&seed) };
                let rendered = secret.to_string();
                prop_assert_eq!(Ed25519Secret::parse(&rendered).unwrap(), secret.clone());
                let public = secret.public_key();
                prop_assert_eq!(Ed25519PublicKey::parse(&public.to_string()).unwrap(), public);
            }

            #[test]
            fn verifying_any_header_never_panics(
                header in ".{0,300}",
                timestamp in any::<i64>(),
                now in any::<i64>(),
                tolerance in any::<i64>(),
            ) {
                let _ = verify_ed25519(&kat_public(), KAT_ID, timestamp, KAT_BODY, &header, now, tolerance);
                let _ = verify_ed25519(&kat_public(), KAT_ID, KAT_TS, KAT_BODY, &header, KAT_TS, 300);
            }

            #[test]
            fn sign_then_verify_round_trips(
                seed in any::<[u8; 32]>(),
                msg_id in "[a-zA-Z0-9_]{1,40}",
                timestamp in 0i64..4_000_000_000,
                body in proptest::collection::vec(any::<u8>(), 0..512),
                skew in -300i64..=300,
            ) {
                let secret = Ed25519Secret { key: SigningKey::from_bytes(&seed) };
                let header = secret.sign(&msg_id, timestamp, &body);
                prop_assert!(header.starts_with("v1a,"));
                prop_assert_eq!(
                    verify_ed25519(&secret.public_key(), &msg_id, timestamp, &body, &header, timestamp + skew, 300),
                    Ok(())
                );
            }

            #[test]
            fn flipping_any_body_bit_breaks_verification(
                body in proptest::collection::vec(any::<u8>(), 1..256),
                index in any::<prop::sample::Index>(),
                bit in 0u8..8,
            ) {
                let secret = kat_secret();
                let header = secret.sign(KAT_ID, KAT_TS, &body);
                let mut tampered = body.clone();
                tampered[index.index(body.len())] ^= 1 << bit;
                prop_assert_eq!(
                    verify_ed25519(&secret.public_key(), KAT_ID, KAT_TS, &tampered, &header, KAT_TS, 300),
                    Err(VerifyError::NoMatchingSignature)
                );
            }
        }
    }
}
