//! The "hex" scheme: lower-case hex HMAC-SHA256 of the raw request body.
//!
//! Exists for receivers written against the common GitHub-style convention.
//! It signs the body only (no id, no timestamp), so it gives no replay
//! protection; that trade-off is the customer's choice, not this module's.
//! It must not interpret the key: the caller passes the secret string's bytes
//! exactly as the customer sees it, because that is what receivers key with.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a hex signature header was not accepted. Carries no part of the header or
/// key, so it can be shown or logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HexVerifyError {
    #[error("signature header is empty")]
    Empty,
    #[error("signature is not 64 hex digits")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

/// Lower-case hex HMAC-SHA256 of `body` keyed by `key`.
///
/// `key` is the secret *string's* bytes (`secret.as_bytes()`), not a decoded
/// key: receivers of this scheme paste the secret verbatim into their HMAC
/// call, so any decoding here would make signatures impossible to reproduce.
pub fn sign_hmac_sha256_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a hex HMAC-SHA256 header value against `body` keyed by `key` (the
/// secret string's bytes, as for [`sign_hmac_sha256_hex`]).
///
/// Accepts upper- or lower-case hex and an optional GitHub-style `sha256=`
/// prefix, since receivers and proxies differ in both; surrounding whitespace is
/// ignored. The comparison is constant-time over the decoded MAC, so timing does
/// not reveal how many leading bytes a forged signature got right.
pub fn verify_hmac_sha256_hex(
    key: &[u8],
    body: &[u8],
    header_value: &str,
) -> Result<(), HexVerifyError> {
    let value = header_value.trim();
    let value = value.strip_prefix("sha256=").unwrap_or(value);
    if value.is_empty() {
        return Err(HexVerifyError::Empty);
    }
    let given = hex::decode(value).map_err(|_| HexVerifyError::Malformed)?;
    if given.len() != 32 {
        return Err(HexVerifyError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(HexVerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_style_known_vector() {
        // Computed independently with Python's hmac module; this is also the
        // widely published HMAC_SHA256("key", "The quick brown fox ...") value.
        assert_eq!(
            sign_hmac_sha256_hex(b"key", b"The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn keys_with_the_secret_string_verbatim() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"whsec_plainsecret",
        //   b"{\"event\":\"ping\"}",hashlib.sha256).hexdigest())'
        assert_eq!(
            sign_hmac_sha256_hex(b"whsec_plainsecret", br#"{"event":"ping"}"#),
            "555753379b2aaae540710d685d6687b84aa6bb6d95d7381c1754cfed1cece6da"
        );
    }

    #[test]
    fn output_is_lower_case_hex_of_32_bytes() {
        let sig = sign_hmac_sha256_hex(b"k", b"");
        assert_eq!(sig.len(), 64);
        assert!(sig
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn different_body_gives_different_signature() {
        assert_ne!(
            sign_hmac_sha256_hex(b"key", b"body"),
            sign_hmac_sha256_hex(b"key", b"body ")
        );
    }

    #[test]
    fn verifies_what_it_signs() {
        let sig = sign_hmac_sha256_hex(b"whsec_plainsecret", b"{}");
        assert_eq!(
            verify_hmac_sha256_hex(b"whsec_plainsecret", b"{}", &sig),
            Ok(())
        );
        // Upper case, a `sha256=` prefix and padding are the same signature.
        let upper = format!(" sha256={} ", sig.to_uppercase());
        assert_eq!(
            verify_hmac_sha256_hex(b"whsec_plainsecret", b"{}", &upper),
            Ok(())
        );
    }

    #[test]
    fn refuses_another_body_key_or_garbage() {
        let sig = sign_hmac_sha256_hex(b"key", b"body");
        assert_eq!(
            verify_hmac_sha256_hex(b"key", b"body ", &sig),
            Err(HexVerifyError::Mismatch)
        );
        assert_eq!(
            verify_hmac_sha256_hex(b"other", b"body", &sig),
            Err(HexVerifyError::Mismatch)
        );
        assert_eq!(
            verify_hmac_sha256_hex(b"key", b"body", ""),
            Err(HexVerifyError::Empty)
        );
        assert_eq!(
            verify_hmac_sha256_hex(b"key", b"body", "zz"),
            Err(HexVerifyError::Malformed)
        );
        // A truncated MAC is malformed, never a prefix match.
        assert_eq!(
            verify_hmac_sha256_hex(b"key", b"body", &sig[..32]),
            Err(HexVerifyError::Malformed)
        );
    }
}
