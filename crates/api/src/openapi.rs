//! The OpenAPI shapes of the rules the handlers enforce, for fields and parameters whose
//! Rust type says less than the check does (`#[schema(schema_with = ...)]`,
//! `#[param(schema_with = ...)]`). Each one is built from the constants [`validate`] and
//! [`pagination`] check with, so that the document and the checks change together; the
//! contract test (`e2e contract::`) fuzzes the server against them.
//!
//! Patterns are anchored and written for both ECMA-262 and Python (whose `re` the
//! contract fuzzer generates from): no `\d`, `\s` or `\w`, whose meanings differ.
//!
//! [`validate`]: crate::validate
//! [`pagination`]: crate::pagination

use serde_json::{json, Value};
use utoipa::openapi::schema::{OneOfBuilder, Schema};

use crate::pagination::MAX_LIMIT;
use crate::validate::{self, MAX_CHANNELS, MAX_FILTER_TYPES, MAX_HEADERS, MAX_METADATA};

/// A schema from its JSON (an object, or an array with `items`).
fn schema(v: Value) -> Schema {
    let parsed = if v.get("items").is_some() {
        serde_json::from_value(v).map(Schema::Array)
    } else {
        serde_json::from_value(v).map(Schema::Object)
    };
    parsed.expect("a schema utoipa can represent")
}

/// The same schema that also accepts `null` (an optional field that may be sent as null).
fn or_null(mut v: Value) -> Value {
    let t = v["type"].clone();
    v["type"] = json!([t, "null"]);
    v
}

/// `^[a-zA-Z0-9\-_.]{1,256}$`, the Svix rule for uids, event ids and event type names.
const ID_PATTERN: &str = "^[a-zA-Z0-9._-]{1,256}$";

fn id_string() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": ID_PATTERN})
}

/// A uid that must not start with the prefix of the ids of its kind (`app_`, `ep_`).
fn uid_with_reserved(prefix: &str) -> Value {
    // Case-sensitive, as the check (`validate::uid_not_id`) is.
    json!({"type": "string", "minLength": 1, "maxLength": 256,
        "pattern": format!("^(?!{prefix}_)[a-zA-Z0-9._-]{{1,256}}$"),
        "description": format!("1 to 256 of a-z, A-Z, 0-9, `-`, `_`, `.`; not starting with `{prefix}_` (ids start so)")})
}

/// An id or uid in a path.
pub fn path_id() -> Schema {
    schema(id_string())
}

/// An application's uid (nullable).
pub fn app_uid() -> Schema {
    schema(or_null(uid_with_reserved("app")))
}

/// An endpoint's uid (nullable).
pub fn endpoint_uid() -> Schema {
    schema(or_null(uid_with_reserved("ep")))
}

/// An event type's name, also as `eventType` of a message.
pub fn event_type_name() -> Schema {
    schema(id_string())
}

/// An optional uid-like string: `eventId`, `groupName` (nullable).
pub fn optional_id() -> Schema {
    schema(or_null(id_string()))
}

/// Event type names: `filterTypes` (nullable; not empty).
pub fn filter_types() -> Schema {
    schema(
        json!({"type": ["array", "null"], "minItems": 1, "maxItems": MAX_FILTER_TYPES,
        "items": id_string()}),
    )
}

/// Feature flags of an event type (nullable).
pub fn feature_flags() -> Schema {
    schema(json!({"type": ["array", "null"], "maxItems": 10, "items": id_string()}))
}

/// A message's tags (nullable).
pub fn tags() -> Schema {
    schema(json!({"type": ["array", "null"], "maxItems": 5, "items": id_string()}))
}

/// Channels of an endpoint or a message (nullable).
pub fn channels() -> Schema {
    schema(
        json!({"type": ["array", "null"], "maxItems": MAX_CHANNELS, "items":
        {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[a-zA-Z0-9._:-]{1,128}$"}}),
    )
}

fn name_value() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": validate::NAME_PATTERN,
        "description": "1 to 256 characters, not only spaces, tabs and line breaks, no NUL (U+0000)"})
}

/// An application's name.
pub fn name() -> Schema {
    schema(name_value())
}

/// An application's name in a PATCH (null: unchanged).
pub fn optional_name() -> Schema {
    schema(or_null(name_value()))
}

/// A description (nullable).
pub fn description() -> Schema {
    schema(
        json!({"type": ["string", "null"], "maxLength": validate::MAX_DESCRIPTION,
        "pattern": validate::DESCRIPTION_PATTERN}),
    )
}

/// An event type's description (required, may be empty).
pub fn event_type_description() -> Schema {
    schema(
        json!({"type": "string", "maxLength": validate::MAX_DESCRIPTION,
        "pattern": validate::DESCRIPTION_PATTERN}),
    )
}

/// Metadata: string values by key (nullable).
pub fn metadata() -> Schema {
    schema(
        json!({"type": ["object", "null"], "maxProperties": MAX_METADATA,
        "propertyNames": {"type": "string", "minLength": 1, "maxLength": 256},
        "additionalProperties": {"type": "string", "maxLength": 4096}}),
    )
}

fn url_value() -> Value {
    json!({"type": "string", "format": "uri", "maxLength": 2048, "pattern": "^[hH][tT][tT][pP][sS]?://[^/?#]",
        "description": "An absolute `http` or `https` URL with a host, at most 2048 characters, no control characters."})
}

/// An endpoint's URL.
pub fn url() -> Schema {
    schema(url_value())
}

/// An endpoint's URL in a PATCH (null: unchanged).
pub fn optional_url() -> Schema {
    schema(or_null(url_value()))
}

/// An HTTP header name (an RFC 9110 token) that hookline does not set itself.
pub fn header_name_pattern() -> String {
    let either_case = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                } else if c == '-' {
                    "-".to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let exact: Vec<String> = validate::RESERVED_HEADERS
        .iter()
        .map(|h| either_case(h))
        .collect();
    let prefixes: Vec<String> = validate::RESERVED_HEADER_PREFIXES
        .iter()
        .map(|h| either_case(h))
        .collect();
    format!(
        "^(?!(?:{})$)(?!(?:{}))[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        exact.join("|"),
        prefixes.join("|")
    )
}

fn headers_value() -> Value {
    json!({"type": "object", "maxProperties": MAX_HEADERS,
        "propertyNames": {"type": "string", "pattern": header_name_pattern()},
        "additionalProperties": {"type": "string", "maxLength": 4096, "pattern": "^[\t !-~]*$"},
        "description": "Header names are HTTP tokens, case-insensitive (no two may differ only in case), and not one hookline sets itself (`content-type`, `user-agent`, `webhook-*`, `svix-*`, ...); values are visible ASCII, spaces and tabs."})
}

/// Custom headers (required).
pub fn headers() -> Schema {
    schema(headers_value())
}

/// Custom headers (nullable).
pub fn optional_headers() -> Schema {
    schema(or_null(headers_value()))
}

/// How deliveries to an endpoint are signed (hookline extension), one of four schemes.
pub fn signature() -> Schema {
    let svix_headers = json!({"type": ["boolean", "null"],
        "description": "Also send the `svix-*` header names (default: the server's `--svix-headers`)."});
    let variants = [
        json!({"type": "object", "title": "standard",
            "description": "Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` keyed by a `whsec_` secret.",
            "required": ["scheme"], "additionalProperties": false,
            "properties": {"scheme": {"type": "string", "enum": ["standard"]}, "svixHeaders": svix_headers}}),
        json!({"type": "object", "title": "ed25519",
            "description": "The same headers signed with ed25519 as Svix does it: `v1a,<base64 signature>` by a `whsk_` key pair; `GET .../secret` answers the `whpk_` public key receivers verify with.",
            "required": ["scheme"], "additionalProperties": false,
            "properties": {"scheme": {"type": "string", "enum": ["ed25519"]}, "svixHeaders": svix_headers}}),
        json!({"type": "object", "title": "hmac-sha256-hex",
            "description": "Lower-case hex HMAC-SHA256 of the raw body, keyed by the secret string as typed, in the named header.",
            "required": ["scheme", "header"], "additionalProperties": false,
            "properties": {"scheme": {"type": "string", "enum": ["hmac-sha256-hex"]},
                "header": {"type": "string", "pattern": header_name_pattern(),
                    "description": "An HTTP header name hookline does not set itself (nor one of the endpoint's custom headers), e.g. `X-Signature`."}}}),
        json!({"type": "object", "title": "none", "description": "No signature.",
            "required": ["scheme"], "additionalProperties": false,
            "properties": {"scheme": {"type": "string", "enum": ["none"]}}}),
    ];
    Schema::OneOf(
        variants
            .into_iter()
            .fold(OneOfBuilder::new(), |b, v| b.item(schema(v)))
            .description(Some(
                "How deliveries to an endpoint are signed (hookline extension).",
            ))
            .build(),
    )
}

/// A `whsec_` secret: base64 (canonical, padded) of 24 to 64 bytes, the prefix optional.
const WHSEC_PATTERN: &str = concat!(
    "^(?:whsec_)?(?:",
    "(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?",
    "|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/][AQgw]==)?",
    ")$"
);

/// An endpoint's secret as created or rotated (nullable: generated).
pub fn secret() -> Schema {
    schema(json!({"type": ["string", "null"], "pattern": WHSEC_PATTERN,
        "description": "`whsec_` and the base64 of 24 to 64 random bytes (HMAC, `v1,` signatures), or a `whsk_` ed25519 key pair: base64 of the 32-byte seed and its 32-byte public key (`v1a,`; the scheme becomes `ed25519`). With `signature.scheme` `hmac-sha256-hex`, any 8 to 512 visible ASCII characters but a `whsk_` pair. A secret must fit the scheme: a `whsk_` pair with `ed25519`, a `whsec_` secret with `standard`. Generated when left out, of the kind the scheme signs with."}))
}

/// An event type's `schemas`: JSON Schemas by version (nullable).
pub fn event_type_schemas() -> Schema {
    schema(json!({"type": ["object", "null"], "maxProperties": 20,
        "additionalProperties": {"type": "object"}}))
}

/// `limit` of a list: 1 to 250.
pub fn limit() -> Schema {
    schema(json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}))
}

/// `iterator` of a list: what a previous page returned.
pub fn iterator() -> Schema {
    schema(json!({"type": "string", "minLength": 1, "maxLength": 300}))
}

/// An attempt's `status` as a filter: 0 success, 2 fail.
pub fn attempt_status() -> Schema {
    schema(json!({"type": "integer", "enum": [0, 2]}))
}

/// `statusCodeClass`: the hundreds of the response status, 0 for no response.
pub fn status_code_class() -> Schema {
    schema(json!({"type": "integer", "enum": [0, 100, 200, 300, 400, 500]}))
}

/// A delivery's `status`: 0 success, 1 pending, 2 fail, 3 sending.
pub fn message_status() -> Schema {
    schema(json!({"type": "integer", "enum": [0, 1, 2, 3]}))
}

/// An attempt's `statusText`.
pub fn attempt_status_text() -> Schema {
    schema(json!({"type": "string", "enum": ["success", "fail"]}))
}

/// A delivery's `statusText`.
pub fn message_status_text() -> Schema {
    schema(json!({"type": "string", "enum": ["success", "pending", "fail", "sending"]}))
}

/// The message list's `status` filter: only `fail` (see `MessageQuery::failed`).
pub fn message_status_filter() -> Schema {
    schema(json!({"type": "string", "enum": ["fail"]}))
}

/// An attempt's `triggerType`: 0 scheduled, 1 manual.
pub fn trigger_type() -> Schema {
    schema(json!({"type": "integer", "enum": [0, 1]}))
}

/// A retry policy (hookline extension), one of four kinds.
fn retry_policy_kinds() -> OneOfBuilder {
    use hookline_retry::{
        MAX_DELAY_SECONDS, MAX_EXPONENTIAL_INITIAL_SECONDS, MAX_FACTOR, MAX_GIVE_UP_AFTER_SECONDS,
        MAX_SCHEDULE_LEN, MIN_FACTOR,
    };
    let kind = |k: &str| json!({"type": "string", "enum": [k]});
    let seconds = |lo: u64, hi: u64| json!({"type": "integer", "minimum": lo, "maximum": hi});
    let variants = [
        json!({"type": "object", "title": "none", "description": "Deliver once; never retry.",
            "required": ["kind"], "additionalProperties": false,
            "properties": {"kind": kind("none")}}),
        json!({"type": "object", "title": "schedule", "description": "Explicit delays in seconds: after attempt n wait `delaysSeconds[n-1]`.",
            "required": ["kind", "delaysSeconds"], "additionalProperties": false,
            "properties": {"kind": kind("schedule"), "delaysSeconds": {"type": "array",
                "minItems": 1, "maxItems": MAX_SCHEDULE_LEN, "items": seconds(1, MAX_DELAY_SECONDS)}}}),
        json!({"type": "object", "title": "exponential", "description": "Delays grow by `factor` from `initialSeconds`, capped at `maxIntervalSeconds` (at least `initialSeconds`), until `giveUpAfterSeconds` (at least `initialSeconds`) after the first attempt; at most 1000 attempts in all (allowing for ±20 % jitter).",
            "required": ["kind", "initialSeconds", "factor", "maxIntervalSeconds", "giveUpAfterSeconds"],
            "additionalProperties": false,
            "properties": {"kind": kind("exponential"),
                "initialSeconds": seconds(1, MAX_EXPONENTIAL_INITIAL_SECONDS),
                "factor": {"type": "number", "minimum": MIN_FACTOR, "maximum": MAX_FACTOR},
                "maxIntervalSeconds": seconds(1, MAX_DELAY_SECONDS),
                "giveUpAfterSeconds": seconds(1, MAX_GIVE_UP_AFTER_SECONDS)}}),
        json!({"type": "object", "title": "fixed", "description": "A constant interval until `giveUpAfterSeconds` (at least `intervalSeconds`) after the first attempt; at most 1000 attempts in all.",
            "required": ["kind", "intervalSeconds", "giveUpAfterSeconds"], "additionalProperties": false,
            "properties": {"kind": kind("fixed"), "intervalSeconds": seconds(1, MAX_DELAY_SECONDS),
                "giveUpAfterSeconds": seconds(1, MAX_GIVE_UP_AFTER_SECONDS)}}),
    ];
    variants
        .into_iter()
        .fold(OneOfBuilder::new(), |b, v| b.item(schema(v)))
}

/// A retry policy.
pub fn retry_policy() -> Schema {
    Schema::OneOf(retry_policy_kinds().build())
}

/// A retry policy, or `null` (the application's, or the default).
pub fn nullable_retry_policy() -> Schema {
    Schema::OneOf(
        retry_policy_kinds()
            .item(schema(json!({"type": "null"})))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utoipa's types drop keys they do not know: every shape here must come out as it
    /// went in.
    #[test]
    fn schemas_keep_every_keyword() {
        for v in [
            or_null(uid_with_reserved("app")),
            json!({"type": ["array", "null"], "minItems": 1, "maxItems": 3, "items": id_string()}),
            or_null(headers_value()),
            json!({"type": ["object", "null"], "maxProperties": MAX_METADATA,
                "propertyNames": {"type": "string", "minLength": 1, "maxLength": 256},
                "additionalProperties": {"type": "string", "maxLength": 4096}}),
            url_value(),
            json!({"type": "integer", "enum": [0, 2]}),
        ] {
            assert_eq!(serde_json::to_value(schema(v.clone())).unwrap(), v);
        }
    }

    #[test]
    fn header_name_pattern_refuses_the_reserved_names_in_any_case() {
        let p = header_name_pattern();
        assert!(
            p.contains("[cC][oO][nN][tT][eE][nN][tT]-[tT][yY][pP][eE]"),
            "{p}"
        );
        assert!(p.contains("[wW][eE][bB][hH][oO][oO][kK]-"), "{p}");
    }
}
