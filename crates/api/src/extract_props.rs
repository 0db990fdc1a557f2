//! Property tests of request-body parsing (issue 21: the parsers facing the outside):
//! whatever bytes or JSON arrive, the answer is a value or a 400/422 naming what is
//! wrong, never a panic; and well-formed bodies read back what was sent.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::parse_json;
use crate::applications::ApplicationIn;
use crate::endpoints::EndpointIn;
use crate::error::ApiError;
use crate::event_types::EventTypeIn;
use crate::messages::MessageIn;

/// Field names the request types know, and some they do not, so that generated objects
/// reach past the first "missing field" now and then.
const KEYS: &[&str] = &[
    "name",
    "uid",
    "url",
    "eventType",
    "payload",
    "metadata",
    "secret",
    "headers",
    "channels",
    "filterTypes",
    "throttleRate",
    "rateLimit",
    "retryPolicy",
    "description",
    "disabled",
    "schemas",
    "eventId",
    "tags",
    "deliverAt",
    "version",
    "signature",
    "x",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..8).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// The answer to a body that does not parse: 400 (not JSON) or 422 (naming a field).
fn is_client_error(e: &ApiError) -> bool {
    matches!(e, ApiError::BadRequest(_) | ApiError::Validation(_))
}

fn every_type_answers(bytes: &[u8]) -> Result<(), TestCaseError> {
    macro_rules! check {
        ($($t:ty),*) => {$(
            if let Err(e) = parse_json::<$t>(bytes) {
                prop_assert!(is_client_error(&e), "{}: {e:?}", stringify!($t));
            }
        )*};
    }
    check!(ApplicationIn, EndpointIn, MessageIn, EventTypeIn);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_get_an_answer(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        every_type_answers(&bytes)?;
    }

    #[test]
    fn any_json_gets_an_answer(v in json_value()) {
        every_type_answers(&serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn an_application_reads_back_as_sent(
        name in "\\PC{1,40}",
        uid in proptest::option::of("[a-zA-Z0-9_.-]{1,60}"),
        throttle_rate in proptest::option::of(any::<u32>()),
        metadata in prop::collection::btree_map("\\PC{1,10}", "\\PC{0,10}", 0..4),
    ) {
        let body = json!({
            "name": name, "uid": uid, "throttleRate": throttle_rate, "metadata": metadata,
        });
        let app: ApplicationIn = parse_json(&serde_json::to_vec(&body).unwrap())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(app.name, name);
        prop_assert_eq!(app.uid, uid);
        prop_assert_eq!(app.throttle_rate, throttle_rate);
        prop_assert_eq!(app.metadata, Some(metadata));
    }

    #[test]
    fn a_payload_is_kept_byte_for_byte(v in json_value(), pad in "[ \\n]{0,3}") {
        // The payload is stored and delivered as sent, spacing and key order included.
        let payload = format!("{pad}{}{pad}", serde_json::to_string(&v).unwrap());
        let body = format!(r#"{{"eventType":"a.b","payload":{payload}}}"#);
        let msg: MessageIn = parse_json(body.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(msg.payload.get(), payload.trim_matches(|c| c == ' ' || c == '\n'));
    }
}

#[test]
fn a_wrong_type_names_its_field() {
    let e = parse_json::<ApplicationIn>(br#"{"name": "a", "metadata": {"k": 1}}"#).unwrap_err();
    let ApiError::Validation(fields) = e else {
        panic!("{e:?}");
    };
    assert_eq!(fields[0].loc, ["body", "metadata", "k"]);
}
