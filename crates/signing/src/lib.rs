//! Signing and verification of webhook payloads.
//!
//! Owns the signatures hookline offers to endpoints: the Standard Webhooks
//! headers with an HMAC (`webhook-signature: v1,<base64>`, keyed by a `whsec_`
//! secret) or an ed25519 signature (`v1a,<base64>`, signed with a `whsk_` key
//! pair and checked with its `whpk_` public key), and a plain lower-case hex
//! HMAC-SHA256 of the body.
//!
//! It must stay pure: no I/O, no clock, no async, no logging, no knowledge of
//! storage or HTTP frameworks. A webhook *receiver* should be able to depend on
//! this crate alone to check what hookline sends, so the current time and the
//! set of valid secrets are always passed in by the caller.

mod ed25519;
mod hmac_hex;
mod keys;
mod standard;

pub use ed25519::{
    verify_ed25519, Ed25519KeyError, Ed25519PublicKey, Ed25519Secret, ED25519_PUBLIC_PREFIX,
    ED25519_SECRET_PREFIX, ED25519_SIGNATURE_VERSION,
};

pub use hmac_hex::{sign_hmac_sha256_hex, verify_hmac_sha256_hex, HexVerifyError};
pub use keys::{endpoint_signature_header, EndpointKey, EndpointKeyError};
pub use standard::{
    sign_standard, signature_entries, signature_header, verify_standard, SecretError,
    StandardSecret, VerifyError, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_KEY_LEN,
    MIN_KEY_LEN, SECRET_PREFIX,
};
