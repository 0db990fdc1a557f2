//! Turning the endpoint page's settings form into the API's `PUT .../endpoint/{id}` body,
//! and the endpoint back into the form's values.
//!
//! The console judges nothing here that the API judges: a number field's text goes to
//! the API as a JSON number when it is one and as the text otherwise, so that the API's
//! own message ("invalid type: string \"abc\", expected u32") names the field; a retry
//! policy goes as the JSON typed. Only what a form cannot carry as JSON is parsed here
//! (is the retry policy JSON at all, is a header line `Name: value`), and those
//! messages name the field as the API would.
//!
//! PUT rather than PATCH: the custom headers are part of an endpoint's PUT body but not
//! of its PATCH, and one PUT checks the headers against the signature scheme in the same
//! transaction as the rest, so a refused form changes nothing at all.

use serde_json::{json, Map, Value};

use crate::pages::{text, Form};
use crate::Failure;

/// The form's fields as the API names them (for errors that name no field shown).
pub(crate) const FIELDS: &[&str] = &[
    "url",
    "description",
    "filterTypes",
    "channels",
    "throttleRate",
    "timeoutMs",
    "maxConcurrency",
    "retryPolicy",
    "signature",
    "headers",
];

/// The signature schemes an endpoint may have, as the API spells them.
pub(crate) const SCHEMES: &[(&str, &str)] = &[
    ("standard", "Standard Webhooks (HMAC, whsec_)"),
    ("ed25519", "Standard Webhooks (ed25519, whsk_)"),
    (
        "hmac-sha256-hex",
        "Hex HMAC-SHA256 of the body in one header",
    ),
    ("none", "None"),
];

/// The form's values for endpoint `e` with custom headers `headers` (the API's
/// `{"headers": {...}}`), keyed by the form fields' names.
pub(crate) fn form_values(e: &Value, headers: &Value) -> Vec<(&'static str, String)> {
    let list = |key: &str| {
        e[key]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let number = |key: &str| e[key].as_u64().map(|n| n.to_string()).unwrap_or_default();
    let sig = &e["signature"];
    let svix = match sig["svixHeaders"].as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "default",
    };
    let retry = match &e["retryPolicy"] {
        Value::Null => String::new(),
        p => serde_json::to_string_pretty(p).unwrap_or_default(),
    };
    // Header values are often credentials: like the secret, they are not put in the
    // page; a masked value keeps the header's current one.
    let header_lines = headers["headers"]
        .as_object()
        .map(|h| {
            h.keys()
                .map(|k| format!("{k}: {KEPT}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    vec![
        ("url", text(e, "url").to_string()),
        ("description", text(e, "description").to_string()),
        ("filterTypes", list("filterTypes")),
        ("channels", list("channels")),
        ("throttleRate", number("throttleRate")),
        ("timeoutMs", number("timeoutMs")),
        ("maxConcurrency", number("maxConcurrency")),
        ("retryPolicy", retry),
        (
            "signatureScheme",
            sig["scheme"].as_str().unwrap_or("standard").to_string(),
        ),
        ("signatureHeader", text(sig, "header").to_string()),
        ("svixHeaders", svix.to_string()),
        ("headers", header_lines),
    ]
}

/// A custom header's value as the settings form shows it: the value stays as it is.
pub(crate) const KEPT: &str = "••••••";

/// The PUT body for the settings in `form`, keeping what the form does not edit
/// (`disabled`, `metadata`, `uid`, the secrets) as endpoint `current` has it, and the
/// value of each header typed with the masked value as `current_headers` (the API's
/// `{"headers": {...}}`) has it.
pub(crate) fn put_body(
    form: &Form,
    current: &Value,
    current_headers: &Value,
) -> Result<Value, Failure> {
    let mut errors = Vec::new();
    let mut body = Map::new();
    body.insert("url".into(), json!(form.get("url").trim()));
    body.insert("description".into(), json!(form.get("description").trim()));
    for name in ["filterTypes", "channels"] {
        if let Some(items) = comma_list(form.get(name)) {
            body.insert(name.into(), json!(items));
        }
    }
    for name in ["throttleRate", "timeoutMs", "maxConcurrency"] {
        if let Some(v) = number_or_text(form.get(name)) {
            body.insert(name.into(), v);
        }
    }
    let retry = form.get("retryPolicy").trim();
    if !retry.is_empty() {
        match serde_json::from_str::<Value>(retry) {
            Ok(v) => {
                body.insert("retryPolicy".into(), v);
            }
            Err(e) => errors.push(("retryPolicy".into(), format!("is not valid JSON: {e}"))),
        }
    }
    let scheme = form.get("signatureScheme").trim();
    let mut sig = Map::new();
    sig.insert("scheme".into(), json!(scheme));
    match scheme {
        "hmac-sha256-hex" => {
            sig.insert("header".into(), json!(form.get("signatureHeader").trim()));
        }
        "standard" | "ed25519" => match form.get("svixHeaders") {
            "yes" => {
                sig.insert("svixHeaders".into(), json!(true));
            }
            "no" => {
                sig.insert("svixHeaders".into(), json!(false));
            }
            _ => {}
        },
        _ => {}
    }
    body.insert("signature".into(), Value::Object(sig));
    match header_lines(form.get("headers"), &current_headers["headers"]) {
        Ok(h) => {
            body.insert("headers".into(), Value::Object(h));
        }
        Err(e) => errors.push(("headers".into(), e)),
    }
    body.insert(
        "disabled".into(),
        json!(current["disabled"].as_bool().unwrap_or(false)),
    );
    if let Some(m) = current.get("metadata").filter(|m| m.is_object()) {
        body.insert("metadata".into(), m.clone());
    }
    if !errors.is_empty() {
        return Err(Failure::Invalid(errors));
    }
    Ok(Value::Object(body))
}

/// The application edit form's fields as the API names them.
pub(crate) const APP_FIELDS: &[&str] = &[
    "name",
    "uid",
    "throttleRate",
    "retryPolicy",
    "metadata",
    "validatePayloads",
];

/// The application edit form's values for application `a` (the form's fields are
/// named `app...` so as not to clash with the page's other forms).
pub(crate) fn app_form_values(a: &Value) -> Vec<(&'static str, String)> {
    let retry = match &a["retryPolicy"] {
        Value::Null => String::new(),
        p => serde_json::to_string_pretty(p).unwrap_or_default(),
    };
    let metadata = a["metadata"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    vec![
        ("appName", text(a, "name").to_string()),
        ("appUid", text(a, "uid").to_string()),
        (
            "appThrottleRate",
            a["throttleRate"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ),
        ("appRetryPolicy", retry),
        ("appMetadata", metadata),
    ]
}

/// The `PATCH .../app/{id}` body for the edit form: an emptied field clears the setting.
pub(crate) fn app_patch_body(form: &Form) -> Result<Value, Failure> {
    let mut errors = Vec::new();
    let mut body = Map::new();
    body.insert("name".into(), json!(form.get("appName").trim()));
    let uid = form.get("appUid").trim();
    body.insert(
        "uid".into(),
        if uid.is_empty() {
            Value::Null
        } else {
            json!(uid)
        },
    );
    body.insert(
        "throttleRate".into(),
        number_or_text(form.get("appThrottleRate")).unwrap_or(Value::Null),
    );
    let retry = form.get("appRetryPolicy").trim();
    if retry.is_empty() {
        body.insert("retryPolicy".into(), Value::Null);
    } else {
        match serde_json::from_str::<Value>(retry) {
            Ok(v) => {
                body.insert("retryPolicy".into(), v);
            }
            Err(e) => errors.push(("retryPolicy".into(), format!("is not valid JSON: {e}"))),
        }
    }
    let mut metadata = Map::new();
    for (i, line) in form.get("appMetadata").lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) => {
                metadata.insert(k.trim().to_string(), json!(v.trim()));
            }
            None => {
                errors.push((
                    "metadata".into(),
                    format!("line {} is not `key=value`: one entry per line", i + 1),
                ));
                break;
            }
        }
    }
    body.insert("metadata".into(), Value::Object(metadata));
    body.insert(
        "validatePayloads".into(),
        json!(form.get("validatePayloads") == "on"),
    );
    if !errors.is_empty() {
        return Err(Failure::Invalid(errors));
    }
    Ok(Value::Object(body))
}

/// Comma-separated form input as a JSON list (`None` when empty: "all").
pub(crate) fn comma_list(s: &str) -> Option<Vec<String>> {
    let list: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    (!list.is_empty()).then_some(list)
}

/// A number field: empty is "not set" (`None`), a JSON number goes as one, anything else
/// as the text typed, for the API to refuse in its own words.
pub(crate) fn number_or_text(s: &str) -> Option<Value> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    Some(
        serde_json::from_str::<serde_json::Number>(s)
            .map(Value::Number)
            .unwrap_or_else(|_| json!(s)),
    )
}

/// Custom headers typed one `Name: value` per line (blank lines skipped); a value of
/// [`KEPT`] is the header's value in `current`.
fn header_lines(s: &str, current: &Value) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (i, line) in s.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "line {} is not `Name: value`: one header per line",
                i + 1
            ));
        };
        let (name, value) = (name.trim(), value.trim());
        let value = if value == KEPT {
            match current.get(name) {
                Some(v) => v.clone(),
                None => {
                    return Err(format!(
                        "line {}: {name} has no current value to keep; type its value",
                        i + 1
                    ))
                }
            }
        } else {
            json!(value)
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        Form(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn numbers_go_as_numbers_and_anything_else_as_text_for_the_api_to_judge() {
        assert_eq!(number_or_text(""), None);
        assert_eq!(number_or_text(" 200 "), Some(json!(200)));
        assert_eq!(number_or_text("-5"), Some(json!(-5)));
        assert_eq!(number_or_text("abc"), Some(json!("abc")));
    }

    #[test]
    fn a_form_becomes_the_put_body_keeping_what_it_does_not_edit() {
        let current = json!({"disabled": true, "metadata": {"team": "a"}});
        let f = form(&[
            ("url", " https://example.com/hook "),
            ("description", "d"),
            ("filterTypes", "a.b, c.d,"),
            ("channels", ""),
            ("timeoutMs", "200"),
            ("maxConcurrency", ""),
            ("throttleRate", "x"),
            ("retryPolicy", r#"{"kind": "none"}"#),
            ("signatureScheme", "hmac-sha256-hex"),
            ("signatureHeader", "X-Sig"),
            ("svixHeaders", "yes"),
            ("headers", "X-A: 1\n\nX-B:two: parts\n"),
        ]);
        let body = put_body(&f, &current, &json!({"headers": {"X-B": "old"}})).unwrap();
        assert_eq!(
            body,
            json!({
                "url": "https://example.com/hook",
                "description": "d",
                "filterTypes": ["a.b", "c.d"],
                "timeoutMs": 200,
                "throttleRate": "x",
                "retryPolicy": {"kind": "none"},
                "signature": {"scheme": "hmac-sha256-hex", "header": "X-Sig"},
                "headers": {"X-A": "1", "X-B": "two: parts"},
                "disabled": true,
                "metadata": {"team": "a"},
            })
        );
    }

    #[test]
    fn what_is_not_json_or_not_a_header_line_is_refused_naming_the_field() {
        let f = form(&[
            ("url", "https://example.com"),
            ("retryPolicy", "{kind: none"),
            ("signatureScheme", "standard"),
            ("headers", "X-A: 1\nno colon here"),
        ]);
        let Err(Failure::Invalid(errors)) = put_body(&f, &json!({}), &Value::Null) else {
            panic!("refused")
        };
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["retryPolicy", "headers"]);
        assert!(errors[1].1.contains("line 2"), "{errors:?}");
    }

    #[test]
    fn a_masked_header_value_keeps_the_current_one() {
        let f = form(&[
            ("url", "https://example.com"),
            ("signatureScheme", "standard"),
            ("headers", &format!("Authorization: {KEPT}\nX-New: 2")),
        ]);
        let current = json!({"headers": {"Authorization": "Bearer s3cret", "X-Old": "1"}});
        let body = put_body(&f, &json!({}), &current).unwrap();
        assert_eq!(
            body["headers"],
            json!({"Authorization": "Bearer s3cret", "X-New": "2"})
        );
        let f = form(&[
            ("url", "https://example.com"),
            ("headers", &format!("X-Unknown: {KEPT}")),
        ]);
        assert!(put_body(&f, &json!({}), &current).is_err());
    }

    #[test]
    fn the_form_shows_an_endpoint_as_the_api_gives_it() {
        let e = json!({
            "url": "https://x", "description": "", "filterTypes": ["a", "b"], "channels": null,
            "throttleRate": null, "timeoutMs": 15000, "maxConcurrency": 4,
            "retryPolicy": {"kind": "none"},
            "signature": {"scheme": "standard", "svixHeaders": false},
        });
        let v: std::collections::HashMap<_, _> = form_values(&e, &json!({"headers": {"X-A": "1"}}))
            .into_iter()
            .collect();
        assert_eq!(v["filterTypes"], "a, b");
        assert_eq!(v["channels"], "");
        assert_eq!(v["throttleRate"], "");
        assert_eq!(v["timeoutMs"], "15000");
        assert_eq!(v["maxConcurrency"], "4");
        assert!(v["retryPolicy"].contains("\"kind\": \"none\""));
        assert_eq!(v["svixHeaders"], "no");
        assert_eq!(
            v["headers"],
            format!("X-A: {KEPT}"),
            "values stay off the page"
        );
    }
}
