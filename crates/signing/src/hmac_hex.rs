//! The "hex" scheme: lower-case hex HMAC-SHA256 of the raw request body.
//!
//! Exists for receivers written against the common GitHub-style convention.
//! It signs the body only (no id, no timestamp), so it gives no replay
//! protection; that trade-off is the customer's choice, not this module's.
//! It must not interpret the key: the caller passes the secret string's bytes
//! exactly as the customer sees it, because that is what receivers key with.

use hmac::{Hmac, Mac};
use sha2::Sha256;

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
}
