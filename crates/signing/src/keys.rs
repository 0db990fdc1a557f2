//! An endpoint's signing key of either kind, told apart by its prefix.
//!
//! Owns the rule that a stored secret string decides how it signs: `whsk_` is an
//! ed25519 key pair (`v1a,` signatures), anything else a Standard Webhooks HMAC secret
//! (`v1,`), as in Svix, where one endpoint's secrets may be of both kinds while a
//! rotation from one to the other is in its grace period. It must not decide which keys
//! are currently valid; the caller passes those.

use std::fmt;

use crate::ed25519::{Ed25519KeyError, Ed25519Secret, ED25519_SECRET_PREFIX};
use crate::standard::{sign_standard, SecretError, StandardSecret};

/// Why an endpoint key string was refused, by the kind its prefix announced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointKeyError {
    #[error("{0}")]
    Hmac(#[from] SecretError),
    #[error("{0}")]
    Ed25519(#[from] Ed25519KeyError),
}

/// A key an endpoint signs with under the Standard Webhooks headers.
#[derive(Clone, PartialEq, Eq)]
pub enum EndpointKey {
    /// `whsec_...`: HMAC-SHA256, `v1,` signatures; receivers hold the same secret.
    Hmac(StandardSecret),
    /// `whsk_...`: ed25519, `v1a,` signatures; receivers hold only the `whpk_` key.
    Ed25519(Ed25519Secret),
}

impl EndpointKey {
    /// `whsk_...` parses as an ed25519 key pair; anything else as a `whsec_` secret
    /// (whose prefix is optional, so existing bare base64 secrets keep working).
    pub fn parse(s: &str) -> Result<Self, EndpointKeyError> {
        if s.starts_with(ED25519_SECRET_PREFIX) {
            Ok(Self::Ed25519(Ed25519Secret::parse(s)?))
        } else {
            Ok(Self::Hmac(StandardSecret::parse(s)?))
        }
    }

    /// Whether `s` announces an ed25519 key pair (whether or not it is a valid one).
    pub fn is_ed25519(s: &str) -> bool {
        s.starts_with(ED25519_SECRET_PREFIX)
    }

    /// This key's entry for `webhook-signature`: `v1,<base64>` or `v1a,<base64>`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        match self {
            Self::Hmac(secret) => sign_standard(secret.key(), msg_id, timestamp, body),
            Self::Ed25519(secret) => secret.sign(msg_id, timestamp, body),
        }
    }

    /// What a receiver verifies with, for showing to the endpoint's owner: the shared
    /// `whsec_` secret itself, or only the `whpk_` public key of a key pair.
    pub fn verification_key(&self) -> String {
        match self {
            Self::Hmac(secret) => secret.to_string(),
            Self::Ed25519(secret) => secret.public_key().to_string(),
        }
    }
}

/// Never prints private key material.
impl fmt::Debug for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hmac(s) => fmt::Debug::fmt(s, f),
            Self::Ed25519(s) => fmt::Debug::fmt(s, f),
        }
    }
}

/// The `webhook-signature` value for several keys: one entry per key, space separated,
/// in the order given, so receivers on either side of a rotation (even one from `whsec_`
/// to `whsk_`) keep verifying during its grace period.
pub fn endpoint_signature_header(
    keys: &[EndpointKey],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    keys.iter()
        .map(|k| k.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{verify_ed25519, verify_standard, VerifyError};

    const HMAC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn prefix_decides_the_kind() {
        assert!(matches!(EndpointKey::parse(HMAC), Ok(EndpointKey::Hmac(_))));
        assert!(matches!(
            EndpointKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Ok(EndpointKey::Hmac(_))
        ));
        let pair = Ed25519Secret::generate().to_string();
        assert!(matches!(
            EndpointKey::parse(&pair),
            Ok(EndpointKey::Ed25519(_))
        ));
        assert!(EndpointKey::is_ed25519(&pair));
        assert!(!EndpointKey::is_ed25519(HMAC));
        // A broken whsk_ key is an ed25519 error, never an attempt at an HMAC key.
        assert_eq!(
            EndpointKey::parse("whsk_AAAA"),
            Err(EndpointKeyError::Ed25519(
                Ed25519KeyError::WrongKeyPairLength { len: 3 }
            ))
        );
        assert_eq!(
            EndpointKey::parse("whsec_AAAA"),
            Err(EndpointKeyError::Hmac(SecretError::TooShort { len: 3 }))
        );
    }

    #[test]
    fn verification_key_never_reveals_a_private_key() {
        let pair = Ed25519Secret::generate();
        let key = EndpointKey::Ed25519(pair.clone());
        assert_eq!(key.verification_key(), pair.public_key().to_string());
        assert!(key.verification_key().starts_with("whpk_"));
        assert!(!format!("{key:?}").contains(&pair.to_string()[5..20]));
        let hmac = EndpointKey::parse(HMAC).unwrap();
        assert_eq!(hmac.verification_key(), HMAC);
    }

    #[test]
    fn mixed_header_verifies_with_each_kind() {
        let pair = Ed25519Secret::generate();
        let hmac = StandardSecret::parse(HMAC).unwrap();
        let keys = [
            EndpointKey::Ed25519(pair.clone()),
            EndpointKey::Hmac(hmac.clone()),
        ];
        let header = endpoint_signature_header(&keys, "msg_1", 1000, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2, "{header}");
        assert!(
            parts[0].starts_with("v1a,") && parts[1].starts_with("v1,"),
            "{header}"
        );
        assert_eq!(
            verify_ed25519(&pair.public_key(), "msg_1", 1000, b"{}", &header, 1000, 0),
            Ok(())
        );
        assert_eq!(
            verify_standard(&hmac, "msg_1", 1000, b"{}", &header, 1000, 0),
            Ok(())
        );
        assert_eq!(
            verify_standard(&hmac, "msg_1", 1000, b"{ }", &header, 1000, 0),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn no_keys_give_an_empty_header() {
        assert_eq!(endpoint_signature_header(&[], "msg_1", 1, b""), "");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsing_any_string_never_panics(s in ".{0,200}") {
                let _ = EndpointKey::parse(&s);
                let _ = EndpointKey::parse(&format!("whsk_{s}"));
                let _ = EndpointKey::parse(&format!("whsec_{s}"));
            }
        }
    }
}
