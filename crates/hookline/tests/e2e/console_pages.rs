//! The operator console's editing pages over plain HTTP (cheaper than the browser test,
//! which covers how they look and that they are accessible): each form goes through the
//! API, a refused form shows the API's message next to its field and changes nothing,
//! and an accepted one is what the API then holds.

use serde_json::{json, Value};

use crate::console::{plain_client, sign_in};
use crate::support::{app_with_endpoint, Server};

/// A signed-in operator posting the console's forms and reading its pages.
struct Operator {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Operator {
    async fn sign_in(server: &Server) -> Operator {
        let http = plain_client();
        let (cookie, csrf) = sign_in(server, &http).await;
        Operator {
            http,
            base: server.base.clone(),
            cookie,
            csrf,
        }
    }

    /// Posts `form` (with the CSRF token) to `path`: the status, the redirect's target
    /// if any, and the page.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push(("csrf", &self.csrf));
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(&fields)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, location, resp.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

/// The text of the element with `id` (the first tag's content up to its closing tag),
/// HTML entities as the page has them.
fn element_text(page: &str, id: &str) -> Option<String> {
    let start = page.find(&format!("id=\"{id}\""))?;
    let rest = &page[start..];
    let open_end = rest.find('>')? + 1;
    let close = rest[open_end..].find("</")?;
    Some(rest[open_end..open_end + close].to_string())
}

/// The settings form's fields as an endpoint `ep` has them, with `changes` applied.
fn settings_form<'a>(changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("url", "https://example.com/hook"),
        ("description", ""),
        ("filterTypes", ""),
        ("channels", ""),
        ("throttleRate", ""),
        ("timeoutMs", ""),
        ("maxConcurrency", ""),
        ("retryPolicy", ""),
        ("signatureScheme", "standard"),
        ("signatureHeader", ""),
        ("svixHeaders", "default"),
        ("headers", ""),
    ];
    for (name, value) in changes {
        form.iter_mut().find(|(n, _)| n == name).unwrap().1 = value;
    }
    form
}

#[tokio::test]
async fn endpoint_settings_are_edited_through_the_api_and_a_refusal_changes_nothing() {
    let server = Server::start().await;
    let api = server.client();
    let (app, ep) = app_with_endpoint(&api, json!({"url": "https://example.com/hook"})).await;
    let op = Operator::sign_in(&server).await;
    let path = format!("/apps/{app}/endpoints/{ep}/settings");
    let (_, before) = api.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;

    // The page shows the current settings in the form.
    let (status, page) = op.get(&format!("/apps/{app}/endpoints/{ep}")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("value=\"https://example.com/hook\""),
        "{page}"
    );
    assert!(
        page.contains("value=\"15000\""),
        "the default timeout: {page}"
    );

    // Each refusal: 422, the API's own message next to the field, what was typed kept,
    // and the endpoint as it was.
    // (the fields changed, the error element, a part of the API's message)
    type Refusal<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let refusals: &[Refusal] = &[
        (
            &[("url", "not a url")],
            "f-url-error",
            "must be an absolute http(s) URL",
        ),
        (
            &[("timeoutMs", "50")],
            "f-timeoutMs-error",
            "must be between 100 and 60000",
        ),
        (
            &[("timeoutMs", "soon")],
            "f-timeoutMs-error",
            "invalid type: string",
        ),
        (
            &[("maxConcurrency", "0")],
            "f-maxConcurrency-error",
            "must be between 1 and",
        ),
        (
            &[("throttleRate", "0")],
            "f-throttleRate-error",
            "must be between 1 and 100000",
        ),
        (
            &[("retryPolicy", "{\"kind\": \"sometimes\"}")],
            "f-retryPolicy-error",
            "unknown variant",
        ),
        (
            &[("retryPolicy", "{not json")],
            "f-retryPolicy-error",
            "is not valid JSON",
        ),
        (
            &[
                ("signatureScheme", "hmac-sha256-hex"),
                ("signatureHeader", ""),
            ],
            "f-signatureHeader-error",
            "",
        ),
        (
            &[("headers", "webhook-id: mine")],
            "f-headers-error",
            "is set by hookline",
        ),
        (&[("headers", "no colon")], "f-headers-error", "Name: value"),
        // A valid URL beside an invalid field is not saved either.
        (
            &[("url", "https://example.com/other"), ("timeoutMs", "99")],
            "f-timeoutMs-error",
            "must be between 100 and 60000",
        ),
    ];
    for (changes, error_id, message) in refusals {
        let form = settings_form(changes);
        let (status, _, page) = op.post(&path, &form).await;
        assert_eq!(status, 422, "{changes:?}: {page}");
        let shown = element_text(&page, error_id)
            .unwrap_or_else(|| panic!("{changes:?}: no #{error_id} in {page}"));
        assert!(shown.contains(message), "{changes:?}: {shown}");
        let (field, typed) = changes[changes.len() - 1];
        if !typed.contains('"') && !typed.contains('{') {
            assert!(
                page.contains(typed),
                "{changes:?}: what was typed ({field}) is kept"
            );
        }
        let (_, now) = api.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
        assert_eq!(now, before, "{changes:?} changed the endpoint");
    }

    // Accepted: saved through the API, and the page says so.
    let form = settings_form(&[
        ("url", "https://example.com/changed"),
        ("description", "orders"),
        ("filterTypes", "order.created, order.paid"),
        ("channels", "eu"),
        ("throttleRate", "10"),
        ("timeoutMs", "200"),
        ("maxConcurrency", "3"),
        (
            "retryPolicy",
            "{\"kind\": \"fixed\", \"intervalSeconds\": 3600, \"giveUpAfterSeconds\": 172800}",
        ),
        ("signatureScheme", "hmac-sha256-hex"),
        ("signatureHeader", "X-Shop-Signature"),
        ("headers", "X-Team: blue\nX-Env: prod"),
    ]);
    let (status, location, _) = op.post(&path, &form).await;
    assert_eq!(status, 303);
    assert!(location.ends_with("?done=saved"), "{location}");
    let (_, e) = api.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert_eq!(e["url"], "https://example.com/changed");
    assert_eq!(e["description"], "orders");
    assert_eq!(e["filterTypes"], json!(["order.created", "order.paid"]));
    assert_eq!(e["channels"], json!(["eu"]));
    assert_eq!(e["throttleRate"], 10);
    assert_eq!(e["timeoutMs"], 200);
    assert_eq!(e["maxConcurrency"], 3);
    assert_eq!(
        e["retryPolicy"],
        json!({"kind": "fixed", "intervalSeconds": 3600, "giveUpAfterSeconds": 172800})
    );
    assert_eq!(
        e["signature"],
        json!({"scheme": "hmac-sha256-hex", "header": "X-Shop-Signature"})
    );
    assert_eq!(e["disabled"], false);
    let (_, h) = api
        .get(&format!("/api/v1/app/{app}/endpoint/{ep}/headers"))
        .await;
    assert_eq!(h["headers"], json!({"X-Env": "prod", "X-Team": "blue"}));
    let (_, page) = op.get(&location).await;
    assert!(page.contains("Settings saved."));
    assert!(page.contains("value=\"X-Shop-Signature\""));
    // Header values (often credentials) stay off the page; the mask keeps them.
    assert!(page.contains("X-Team: ••••••"), "{page}");
    assert!(!page.contains("blue"), "{page}");
    let mut again = form.clone();
    again.iter_mut().find(|(n, _)| *n == "headers").unwrap().1 = "X-Team: ••••••\nX-Env: staging";
    let (status, _, _) = op.post(&path, &again).await;
    assert_eq!(status, 303);
    let (_, h) = api
        .get(&format!("/api/v1/app/{app}/endpoint/{ep}/headers"))
        .await;
    assert_eq!(h["headers"], json!({"X-Env": "staging", "X-Team": "blue"}));

    // Emptied fields go back to the defaults; what the form does not edit stays.
    api.call(
        "PATCH",
        &format!("/api/v1/app/{app}/endpoint/{ep}"),
        Some(json!({"disabled": true, "metadata": {"owner": "ops"}})),
    )
    .await;
    let (status, _, _) = op
        .post(
            &path,
            &settings_form(&[("url", "https://example.com/changed")]),
        )
        .await;
    assert_eq!(status, 303);
    let (_, e) = api.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert_eq!(e["filterTypes"], Value::Null);
    assert_eq!(e["maxConcurrency"], Value::Null);
    assert_eq!(e["retryPolicy"], Value::Null);
    assert_eq!(e["timeoutMs"], 15000);
    assert_eq!(e["signature"]["scheme"], "standard");
    assert_eq!(e["disabled"], true);
    assert_eq!(e["metadata"], json!({"owner": "ops"}));
}

#[tokio::test]
async fn recovering_an_endpoint_resends_its_failed_deliveries_since_a_time() {
    // No --allow-target: the loopback endpoint is refused, so with no retries each
    // delivery fails at its first attempt.
    let server = Server::start().await;
    let api = server.client();
    let (app, ep) = app_with_endpoint(
        &api,
        json!({"url": "http://127.0.0.1:9/hook", "retryPolicy": {"kind": "none"}}),
    )
    .await;
    let msg = api
        .create(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "a.b", "payload": {}}),
        )
        .await;
    let msg_id = msg["id"].as_str().unwrap();
    let (_, d) = api
        .get_until(&format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"), |v| {
            v["data"][0]["statusText"] == "fail"
        })
        .await;
    assert_eq!(d["data"][0]["statusText"], "fail", "{d}");

    let op = Operator::sign_in(&server).await;
    let path = format!("/apps/{app}/endpoints/{ep}/recover");
    // The API's refusal, next to the field.
    let (status, _, page) = op.post(&path, &[("since", "2999-01-01T00:00")]).await;
    assert_eq!(status, 422, "{page}");
    assert!(element_text(&page, "f-since-error")
        .unwrap()
        .contains("must not be in the future"));
    let (status, _, page) = op.post(&path, &[("since", "yesterday")]).await;
    assert_eq!(status, 422, "{page}");
    assert!(element_text(&page, "f-since-error").is_some(), "{page}");
    let (_, d) = api
        .get(&format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"))
        .await;
    assert_eq!(d["data"][0]["attempts"], 1, "nothing was recovered: {d}");

    // Since an hour ago: the failed delivery goes out again.
    let since = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let (status, location, _) = op.post(&path, &[("since", &since), ("until", "")]).await;
    assert_eq!(status, 303);
    assert!(location.ends_with("?done=recovered&n=1"), "{location}");
    let (_, page) = op.get(&location).await;
    assert!(page.contains("Recovered 1 failed delivery"), "{page}");
    let (_, d) = api
        .get_until(&format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"), |v| {
            v["data"][0]["attempts"] == 2 && v["data"][0]["statusText"] == "fail"
        })
        .await;
    assert_eq!(d["data"][0]["attempts"], 2, "attempted again: {d}");
}

#[tokio::test]
async fn event_types_are_listed_with_their_schemas_created_and_edited_through_the_api() {
    let server = Server::start().await;
    let api = server.client();
    let op = Operator::sign_in(&server).await;

    // An invalid schema: the API's message next to the field, nothing created.
    let bad = [
        (r#"{"1": {"type": "objekt"}}"#, "is not a valid JSON Schema"),
        (r#"{"1": "not a schema"}"#, "must be a JSON Schema object"),
        ("{\"1\": {", "is not valid JSON"),
    ];
    for (schemas, message) in bad {
        let (status, _, page) = op
            .post(
                "/event-types",
                &[
                    ("name", "order.created"),
                    ("description", "An order"),
                    ("schemas", schemas),
                ],
            )
            .await;
        assert_eq!(status, 422, "{schemas}: {page}");
        let shown = element_text(&page, "f-schemas-error").unwrap_or_else(|| panic!("{page}"));
        assert!(shown.contains(message), "{schemas}: {shown}");
        let (status, _) = api.get("/api/v1/event-type/order.created").await;
        assert_eq!(status, 404, "{schemas} created the event type");
    }
    let (status, _, page) = op
        .post(
            "/event-types",
            &[("name", "bad name!"), ("description", "x")],
        )
        .await;
    assert_eq!(status, 422);
    assert!(element_text(&page, "f-name-error").is_some(), "{page}");

    // A valid one: created as typed.
    let schema = r#"{"1": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}}"#;
    let (status, location, _) = op
        .post(
            "/event-types",
            &[
                ("name", "order.created"),
                ("description", "An order <b>was</b> placed"),
                ("schemas", schema),
                ("validatePayloads", "on"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(
        location,
        "/event-types/order.created?done=event-type-created"
    );
    let (_, et) = api.get("/api/v1/event-type/order.created").await;
    assert_eq!(
        et["schemas"],
        serde_json::from_str::<Value>(schema).unwrap()
    );
    assert_eq!(et["validatePayloads"], true);
    // The same name again: the API's conflict, shown on the form.
    let (status, _, page) = op
        .post(
            "/event-types",
            &[("name", "order.created"), ("description", "again")],
        )
        .await;
    assert_eq!(status, 422, "{page}");
    assert!(
        page.contains("<p class=\"error\" role=\"alert\">"),
        "{page}"
    );

    // Listed with its schema indented and its description escaped.
    let (status, page) = op.get("/event-types").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("href=\"/event-types/order.created\""),
        "{page}"
    );
    assert!(
        page.contains("An order &lt;b&gt;was&lt;/b&gt; placed"),
        "{page}"
    );
    assert!(
        page.contains("\n    &quot;required&quot;: ["),
        "indented: {page}"
    );

    // Edited: an invalid schema changes nothing; a valid edit is saved.
    let path = "/event-types/order.created";
    let (status, _, page) = op
        .post(
            path,
            &[
                ("description", "changed"),
                ("schemas", r#"{"2": {"minLength": "x"}}"#),
            ],
        )
        .await;
    assert_eq!(status, 422, "{page}");
    assert!(element_text(&page, "f-schemas-error")
        .unwrap()
        .contains("schemas.2"));
    let (_, unchanged) = api.get("/api/v1/event-type/order.created").await;
    assert_eq!(unchanged, et);
    let (status, location, _) = op
        .post(
            path,
            &[
                ("description", "changed"),
                ("schemas", ""),
                ("deprecated", "on"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(location, "/event-types/order.created?done=event-type-saved");
    let (_, et) = api.get("/api/v1/event-type/order.created").await;
    assert_eq!(et["description"], "changed");
    assert_eq!(et["schemas"], Value::Null);
    assert_eq!(et["deprecated"], true);
    assert_eq!(et["validatePayloads"], false);
    let (_, page) = op.get(&location).await;
    assert!(page.contains("Event type saved."));
}

#[tokio::test]
async fn endpoint_charts_and_health_show_the_attempts_made() {
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let receiver = crate::receiver::Receiver::start().await;
    receiver.set("/bad", crate::receiver::Behavior::Status(500, vec![]));
    let api = server.client();
    let app = api.create("/api/v1/app", json!({"name": "Charts"})).await;
    let app = app["id"].as_str().unwrap().to_string();
    let mut eps = vec![];
    for path in ["/ok", "/bad"] {
        let ep = api
            .create(
                &format!("/api/v1/app/{app}/endpoint"),
                json!({"url": receiver.url(path), "retryPolicy": {"kind": "none"}}),
            )
            .await;
        eps.push(ep["id"].as_str().unwrap().to_string());
    }
    for i in 0..3 {
        api.create(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "chart.test", "payload": {"i": i}}),
        )
        .await;
    }
    for ep in &eps {
        let (_, page) = api
            .get_until(&format!("/api/v1/app/{app}/attempt/endpoint/{ep}"), |v| {
                v["data"].as_array().unwrap().len() == 3
            })
            .await;
        assert_eq!(page["data"].as_array().unwrap().len(), 3, "{page}");
    }

    // The API's figures: all three in the one bucket of the last day.
    let stats = |ep: &str| format!("/api/v1/app/{app}/endpoint/{ep}/stats/attempts");
    let (status, ok) = api
        .get(&format!("{}?bucket_seconds=86400", stats(&eps[0])))
        .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(
        (ok["succeeded"].as_u64(), ok["failed"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(ok["buckets"].as_array().unwrap().len(), 1);
    assert!(ok["buckets"][0]["p99Ms"].as_u64().is_some());
    let (_, bad) = api.get(&stats(&eps[1])).await;
    assert_eq!(
        (bad["succeeded"].as_u64(), bad["failed"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(bad["buckets"].as_array().unwrap().len(), 24);
    for (query, field) in [
        ("bucket_seconds=10", "bucket_seconds"),
        (
            "since=2020-01-01T00:00:00Z&until=2020-03-01T00:00:00Z",
            "since",
        ),
        (
            "since=2020-01-02T00:00:00Z&until=2020-01-01T00:00:00Z",
            "until",
        ),
        // Counted per hour: no minutes for one endpoint.
        ("bucket_seconds=60", "bucket_seconds"),
        ("bucket_seconds=5400", "bucket_seconds"),
    ] {
        let (status, body) = api.get(&format!("{}?{query}", stats(&eps[0]))).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(
            body["detail"][0]["loc"],
            json!(["query", field]),
            "{query}: {body}"
        );
    }

    // The endpoint pages: a bar per outcome per hour with attempts (the three may
    // straddle an hour's end), in both windows, with the numbers in a table.
    let op = Operator::sign_in(&server).await;
    for range in ["", "?range=7d"] {
        let (status, page) = op
            .get(&format!("/apps/{app}/endpoints/{}{range}", eps[0]))
            .await;
        assert_eq!(status, 200);
        let bars = page.matches("class=\"bar ok\"").count();
        assert!((1..=2).contains(&bars), "{range}: {bars} bars");
        assert_eq!(page.matches("class=\"bar bad\"").count(), 0, "{range}");
        assert_eq!(page.matches("class=\"bar p50\"").count(), bars, "{range}");
        assert!(page.contains("3 delivered and 0 failed per hour"), "{page}");
        assert!(page.contains("<svg class=\"chart\""));
        assert!(page.contains("(100 % delivered)"), "{page}");
    }
    let (_, page) = op.get(&format!("/apps/{app}/endpoints/{}", eps[1])).await;
    assert!((1..=2).contains(&page.matches("class=\"bar bad\"").count()));
    assert_eq!(page.matches("class=\"bar ok\"").count(), 0);

    // The application page: each endpoint's share delivered over the last day, and the
    // failing one says since when.
    let (_, page) = op.get(&format!("/apps/{app}")).await;
    assert!(
        page.contains("100 %<br><span class=\"hint\">3 of 3 attempts"),
        "{page}"
    );
    assert!(
        page.contains("0.0 %<br><span class=\"hint\">0 of 3 attempts"),
        "{page}"
    );
    assert_eq!(page.matches("Failing</span> since").count(), 1, "{page}");
    let (_, e) = api
        .get(&format!("/api/v1/app/{app}/endpoint/{}", eps[1]))
        .await;
    assert!(e["failingSince"].is_string(), "{e}");
}

#[tokio::test]
async fn the_message_log_filters_through_the_api_and_the_application_is_edited() {
    let server = Server::start().await;
    let api = server.client();
    let app = api
        .create("/api/v1/app", json!({"name": "Shop", "uid": "shop-1"}))
        .await;
    let app = app["id"].as_str().unwrap().to_string();
    let mut ids = std::collections::HashMap::new();
    for (event_type, channel) in [
        ("order.created", "eu"),
        ("order.paid", "us"),
        ("order.created", "us"),
        ("user.deleted", "eu"),
    ] {
        let m = api
            .create(
                &format!("/api/v1/app/{app}/msg"),
                json!({"eventType": event_type, "payload": {}, "channels": [channel]}),
            )
            .await;
        ids.insert(
            format!("{event_type}/{channel}"),
            m["id"].as_str().unwrap().to_string(),
        );
    }
    let op = Operator::sign_in(&server).await;
    let shown = |page: &str| {
        let mut found: Vec<String> = ids
            .iter()
            .filter(|(_, id)| page.contains(id.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        found.sort();
        found
    };
    let (status, page) = op.get(&format!("/apps/{app}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown(&page).len(), 4);
    let (_, page) = op
        .get(&format!("/apps/{app}?eventTypes=order.created"))
        .await;
    assert_eq!(shown(&page), ["order.created/eu", "order.created/us"]);
    assert!(
        page.contains("value=\"order.created\""),
        "the filter stays filled"
    );
    let (_, page) = op
        .get(&format!(
            "/apps/{app}?eventTypes=order.created,+order.paid&channel=us"
        ))
        .await;
    assert_eq!(shown(&page), ["order.created/us", "order.paid/us"]);
    let (_, page) = op.get(&format!("/apps/{app}?after=2999-01-01T00:00")).await;
    assert!(shown(&page).is_empty());
    let (_, page) = op
        .get(&format!("/apps/{app}?before=2999-01-01T00:00&channel=eu"))
        .await;
    assert_eq!(shown(&page), ["order.created/eu", "user.deleted/eu"]);
    // A time the API cannot read: its message next to the filter.
    let (status, page) = op.get(&format!("/apps/{app}?after=soon")).await;
    assert_eq!(status, 422, "{page}");
    assert!(element_text(&page, "f-after-error").is_some(), "{page}");

    // Edit the application: refused as the API says, then saved.
    let path = format!("/apps/{app}/edit");
    let form = |name: &'static str, rate: &'static str, metadata: &'static str| {
        vec![
            ("appName", name),
            ("appUid", "shop-1"),
            ("appThrottleRate", rate),
            ("appRetryPolicy", ""),
            ("appMetadata", metadata),
        ]
    };
    let (_, before) = api.get(&format!("/api/v1/app/{app}")).await;
    for (f, error_id) in [
        (form("", "", ""), "f-appName-error"),
        (form("Shop", "0", ""), "f-appThrottleRate-error"),
        (form("Shop", "", "no equals sign"), "f-appMetadata-error"),
    ] {
        let (status, _, page) = op.post(&path, &f).await;
        assert_eq!(status, 422, "{f:?}: {page}");
        assert!(element_text(&page, error_id).is_some(), "{f:?}: {page}");
        let (_, now) = api.get(&format!("/api/v1/app/{app}")).await;
        assert_eq!(now, before);
    }
    let mut f = form("Shop EU", "25", "team=payments\nregion = eu");
    f[1].1 = "";
    f[3].1 = r#"{"kind": "none"}"#;
    f.push(("validatePayloads", "on"));
    let (status, location, _) = op.post(&path, &f).await;
    assert_eq!(status, 303);
    assert!(location.ends_with("?done=app-saved"), "{location}");
    let (_, a) = api.get(&format!("/api/v1/app/{app}")).await;
    assert_eq!(a["name"], "Shop EU");
    assert_eq!(a["uid"], Value::Null);
    assert_eq!(a["throttleRate"], 25);
    assert_eq!(a["retryPolicy"], json!({"kind": "none"}));
    assert_eq!(a["metadata"], json!({"team": "payments", "region": "eu"}));
    assert_eq!(a["validatePayloads"], true);
}

/// The message log's status filter: the API lists the messages with a delivery in the
/// state asked for, newest first (paged), and refuses a state it does not know naming the
/// parameter; the console's filter goes through it and shows the API's message.
#[tokio::test]
async fn the_message_log_filters_by_delivery_status_through_the_api() {
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let receiver = crate::receiver::Receiver::start().await;
    receiver.set("/bad", crate::receiver::Behavior::Status(500, vec![]));
    let api = server.client();
    let app = api.create("/api/v1/app", json!({"name": "Log"})).await;
    let app = app["id"].as_str().unwrap().to_string();
    // Every message reaches /ok; those of type `bad` also reach /bad, which fails them
    // for good.
    for (path, types) in [("/ok", None), ("/bad", Some(vec!["bad"]))] {
        api.create(
            &format!("/api/v1/app/{app}/endpoint"),
            json!({"url": receiver.url(path), "retryPolicy": {"kind": "none"}, "filterTypes": types}),
        )
        .await;
    }
    let mut ids = std::collections::HashMap::new();
    for (n, event_type) in ["good", "bad", "good", "bad", "bad"].iter().enumerate() {
        let m = api
            .create(
                &format!("/api/v1/app/{app}/msg"),
                json!({"eventType": event_type, "payload": {"n": n}}),
            )
            .await;
        ids.insert(m["id"].as_str().unwrap().to_string(), *event_type);
    }
    let list = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let msgs = format!("/api/v1/app/{app}/msg");
    let (_, failed) = api
        .get_until(&format!("{msgs}?status=fail"), |v| list(v).len() == 3)
        .await;
    let mut bad: Vec<String> = ids
        .iter()
        .filter(|(_, t)| **t == "bad")
        .map(|(id, _)| id.clone())
        .collect();
    bad.sort();
    bad.reverse();
    assert_eq!(list(&failed), bad, "{failed}");
    // Paged: two, then the third, then done.
    let (_, first) = api.get(&format!("{msgs}?status=fail&limit=2")).await;
    assert_eq!(list(&first), bad[..2]);
    assert_eq!(first["done"], false);
    let it = first["iterator"].as_str().unwrap();
    let (_, rest) = api
        .get(&format!("{msgs}?status=fail&limit=2&iterator={it}"))
        .await;
    assert_eq!(list(&rest), bad[2..]);
    assert_eq!(rest["done"], true);
    for wrong in ["failed", "2", "", "pending", "success"] {
        let (status, body) = api.get(&format!("{msgs}?status={wrong}")).await;
        assert_eq!(status, 422, "{wrong}: {body}");
        assert_eq!(
            body["detail"][0]["loc"],
            json!(["query", "status"]),
            "{body}"
        );
        assert_eq!(
            body["detail"][0]["msg"],
            "must be fail (messages with a delivery that failed for good; other states have no filter)"
        );
    }

    // The console: the filter lists the same messages, stays chosen, and a state the
    // API does not know shows its message next to the filter.
    let op = Operator::sign_in(&server).await;
    let (status, page) = op.get(&format!("/apps/{app}?status=fail")).await;
    assert_eq!(status, 200, "{page}");
    for (id, t) in &ids {
        assert_eq!(page.contains(id.as_str()), *t == "bad", "{id} {t}");
    }
    assert!(page.contains("<option value=\"fail\" selected>"), "{page}");
    let (status, page) = op.get(&format!("/apps/{app}?status=lost")).await;
    assert_eq!(status, 422, "{page}");
    assert_eq!(
        element_text(&page, "f-status-error").as_deref(),
        Some("must be fail (messages with a delivery that failed for good; other states have no filter)"),
        "{page}"
    );
}

#[tokio::test]
async fn the_system_page_shows_the_queue_attempts_per_minute_and_failing_endpoints() {
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let receiver = crate::receiver::Receiver::start().await;
    receiver.set("/down", crate::receiver::Behavior::Status(503, vec![]));
    let api = server.client();
    let mut eps = vec![];
    for path in ["/up", "/down"] {
        let (app, ep) = app_with_endpoint(
            &api,
            json!({"url": receiver.url(path), "retryPolicy": {"kind": "none"}}),
        )
        .await;
        for _ in 0..2 {
            api.create(
                &format!("/api/v1/app/{app}/msg"),
                json!({"eventType": "sys.test", "payload": {}}),
            )
            .await;
        }
        eps.push((app, ep));
    }
    for (app, ep) in &eps {
        let (_, page) = api
            .get_until(&format!("/api/v1/app/{app}/attempt/endpoint/{ep}"), |v| {
                v["data"].as_array().unwrap().len() == 2
            })
            .await;
        assert_eq!(page["data"].as_array().unwrap().len(), 2, "{page}");
    }

    // The API's figures, for admins only.
    let (status, all) = api.get("/api/v1/stats/attempts?bucket_seconds=86400").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        (all["succeeded"].as_u64(), all["failed"].as_u64()),
        (Some(2), Some(2))
    );
    // By minute over the same day; too many buckets for a month.
    let (status, minutes) = api.get("/api/v1/stats/attempts?bucket_seconds=60").await;
    assert_eq!(status, 200, "{minutes}");
    assert_eq!(minutes["buckets"].as_array().unwrap().len(), 1440);
    assert_eq!(minutes["succeeded"], all["succeeded"]);
    let (status, body) = api
        .get("/api/v1/stats/attempts?since=2020-01-01T00:00:00Z&until=2020-01-31T00:00:00Z&bucket_seconds=60")
        .await;
    assert_eq!(
        (status, &body["detail"][0]["loc"]),
        (422, &json!(["query", "bucket_seconds"])),
        "{body}"
    );
    let (status, failing) = api.get("/api/v1/stats/failing-endpoints").await;
    assert_eq!(status, 200);
    assert_eq!(failing["total"], 1);
    assert_eq!(failing["data"][0]["id"], eps[1].1.as_str());
    let (status, body) = api.get("/api/v1/stats/failing-endpoints?limit=0").await;
    assert_eq!(
        (status, &body["detail"][0]["loc"]),
        (422, &json!(["query", "limit"]))
    );
    let (_, portal) = api
        .post(
            &format!("/api/v1/auth/app-portal-access/{}", eps[0].0),
            json!({}),
        )
        .await;
    let scoped = api.with_token(portal["token"].as_str());
    for path in ["/api/v1/stats/attempts", "/api/v1/stats/failing-endpoints"] {
        let (status, _) = scoped.get(path).await;
        assert_eq!(status, 403, "{path}");
    }

    // The page: the queue's figures as /metrics has them, the attempts per minute, and
    // the failing endpoint linked.
    let op = Operator::sign_in(&server).await;
    let (status, page) = op.get("/system").await;
    assert_eq!(status, 200, "{page}");
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let queued = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hookline_deliveries_queued "))
        .expect("a queue figure in /metrics");
    assert_eq!(element_text(&page, "queue-depth").as_deref(), Some(queued));
    assert!(
        element_text(&page, "delivery-lag").unwrap().ends_with(" s"),
        "{page}"
    );
    assert_eq!(element_text(&page, "failing-count").as_deref(), Some("1"));
    assert!(
        page.contains("2 delivered and 2 failed per minute over the last hour"),
        "{page}"
    );
    let bars = page.matches("class=\"bar ok\"").count();
    assert!((1..=2).contains(&bars), "{bars}");
    assert!(page.contains(&format!(
        "href=\"/apps/{}/endpoints/{}\"",
        eps[1].0, eps[1].1
    )));
    assert!(!page.contains(&format!(
        "href=\"/apps/{}/endpoints/{}\"",
        eps[0].0, eps[0].1
    )));
    assert!(
        page.contains("hookline_attempts_total{outcome=&quot;delivered&quot;}"),
        "{page}"
    );
    assert!(
        page.contains("href=\"/system\""),
        "linked from the navigation"
    );
}

/// The system page says what a failing endpoint's deliveries are doing: "Retrying" only
/// while one is queued (here a retry an hour away), "Failing" once every delivery has
/// failed for good (no retries) and nothing more is queued; the API says the same.
#[tokio::test]
async fn the_system_page_tells_a_failing_endpoint_with_a_retry_due_from_one_without() {
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let receiver = crate::receiver::Receiver::start().await;
    receiver.set("/down", crate::receiver::Behavior::Status(503, vec![]));
    let api = server.client();
    let mut eps = vec![];
    for policy in [
        json!({"kind": "none"}),
        json!({"kind": "schedule", "delaysSeconds": [3600]}),
    ] {
        let (app, ep) = app_with_endpoint(
            &api,
            json!({"url": receiver.url("/down"), "retryPolicy": policy}),
        )
        .await;
        api.create(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "sys.test", "payload": {}}),
        )
        .await;
        eps.push((app, ep));
    }
    let (_, failing) = api
        .get_until("/api/v1/stats/failing-endpoints", |v| v["total"] == 2)
        .await;
    let retrying = |ep: &str| {
        failing["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == ep)
            .map(|e| e["retrying"].clone())
    };
    assert_eq!(retrying(&eps[0].1), Some(json!(false)), "{failing}");
    assert_eq!(retrying(&eps[1].1), Some(json!(true)), "{failing}");

    let op = Operator::sign_in(&server).await;
    let (status, page) = op.get("/system").await;
    assert_eq!(status, 200, "{page}");
    let row = |(app, ep): &(String, String)| {
        let at = page
            .find(&format!("href=\"/apps/{app}/endpoints/{ep}\""))
            .expect("the endpoint's row");
        let end = at + page[at..].find("</tr>").unwrap();
        page[at..end].to_string()
    };
    let (no_retry, retry_due) = (row(&eps[0]), row(&eps[1]));
    assert!(no_retry.contains(">Failing<"), "{no_retry}");
    assert!(!no_retry.contains("Retrying"), "{no_retry}");
    assert!(retry_due.contains(">Retrying<"), "{retry_due}");
    assert!(!retry_due.contains("Failing"), "{retry_due}");
}
