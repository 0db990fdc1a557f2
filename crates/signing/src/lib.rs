//! Signing and verification of webhook payloads.
//!
//! Owns the two signature schemes hookline offers to endpoints: the Standard
//! Webhooks scheme (`webhook-signature: v1,<base64>`, keyed by a `whsec_`
//! secret) and a plain lower-case hex HMAC-SHA256 of the body.
//!
//! It must stay pure: no I/O, no clock, no async, no logging, no knowledge of
//! storage or HTTP frameworks. A webhook *receiver* should be able to depend on
//! this crate alone to check what hookline sends, so the current time and the
//! set of valid secrets are always passed in by the caller.

mod hmac_hex;
mod standard;

pub use hmac_hex::{sign_hmac_sha256_hex, verify_hmac_sha256_hex, HexVerifyError};
pub use standard::{
    sign_standard, signature_header, verify_standard, SecretError, StandardSecret, VerifyError,
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_KEY_LEN, MIN_KEY_LEN, SECRET_PREFIX,
};
