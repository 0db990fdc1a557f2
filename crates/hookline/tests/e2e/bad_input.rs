//! Bad requests, as a table: each row is one request that must be refused with a given
//! status and error code (or, for 422, a given field location), with the one JSON error
//! shape, without echoing a token or a secret, and without changing anything: the whole
//! observable state is compared with a snapshot after every row, so a partial write
//! (half an endpoint updated, an application created for a message that was then
//! refused) fails the row that caused it.

use hookline_signing::StandardSecret;
use serde_json::{json, Value};

use crate::restart::{secrets_in, snapshot};
use crate::support::{Server, ADMIN_TOKEN};

/// The body limit the server under test runs with.
const BODY_LIMIT: usize = 4096;

enum Auth {
    Admin,
    Anonymous,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// The raw `Authorization` header value.
    Raw(String),
}

enum Body {
    None,
    Json(Value),
    /// Bytes with the given content type (`None`: no content-type header).
    Raw(Option<&'static str>, Vec<u8>),
}

enum Want {
    /// A non-422 error with this `code`.
    Code(&'static str),
    /// A 422 whose `detail` has an entry with exactly this `loc`.
    Loc(Vec<String>),
}

struct Row {
    what: &'static str,
    method: &'static str,
    path: String,
    auth: Auth,
    headers: Vec<(&'static str, String)>,
    body: Body,
    status: u16,
    want: Want,
}

/// A row with the admin token and no body.
fn row(what: &'static str, method: &'static str, path: impl Into<String>) -> Row {
    Row {
        what,
        method,
        path: path.into(),
        auth: Auth::Admin,
        headers: vec![],
        body: Body::None,
        status: 0,
        want: Want::Code(""),
    }
}

impl Row {
    fn json(mut self, v: Value) -> Self {
        self.body = Body::Json(v);
        self
    }
    fn raw(mut self, content_type: Option<&'static str>, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Raw(content_type, bytes.into());
        self
    }
    fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    /// Expects this status and error code.
    fn fails(mut self, status: u16, code: &'static str) -> Self {
        self.status = status;
        self.want = Want::Code(code);
        self
    }
    /// Expects 422 naming this location, dotted: `body.retryPolicy.intervalSeconds`.
    fn invalid(mut self, loc: &str) -> Self {
        self.status = 422;
        self.want = Want::Loc(loc.split('.').map(str::to_string).collect());
        self
    }
}

struct Fixture {
    app: String,
    other_app: String,
    ep: String,
    ep_secret: String,
    hex_ep: String,
    portal_token: String,
}

async fn setup(server: &Server) -> Fixture {
    let api = server.client();
    api.create(
        "/api/v1/event-type",
        json!({"name": "user.created", "description": "A user signed up",
               "schemas": {"1": {"type": "object"}}}),
    )
    .await;
    let app = api
        .create("/api/v1/app", json!({"name": "Acme", "uid": "acme"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other_app = api
        .create("/api/v1/app", json!({"name": "Other", "uid": "other"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Loopback URLs on the discard port; without --allow-target nothing is sent there.
    let ep = api
        .create(
            &format!("/api/v1/app/{app}/endpoint"),
            json!({"url": "http://127.0.0.1:9/hook", "uid": "main-hook",
                   "headers": {"X-Custom": "1"}, "channels": ["c1"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let hex_ep = api
        .create(
            &format!("/api/v1/app/{app}/endpoint"),
            json!({"url": "http://127.0.0.1:9/hex", "secret": "hex-endpoint-secret-1",
                   "signature": {"scheme": "hmac-sha256-hex", "header": "X-Signature"}}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.create(
        &format!("/api/v1/app/{other_app}/endpoint"),
        json!({"url": "http://127.0.0.1:9/other"}),
    )
    .await;
    let (s, secret) = api
        .get(&format!("/api/v1/app/{app}/endpoint/{ep}/secret"))
        .await;
    assert_eq!(s, 200);
    api.create(
        &format!("/api/v1/app/{app}/msg"),
        json!({"eventType": "user.created", "eventId": "evt-1", "payload": {"id": 1}}),
    )
    .await;
    let portal_token = api
        .create(&format!("/api/v1/auth/app-portal-access/{app}"), json!({}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    Fixture {
        app,
        other_app,
        ep,
        ep_secret: secret["key"].as_str().unwrap().to_string(),
        hex_ep,
        portal_token,
    }
}

fn rows(f: &Fixture) -> Vec<Row> {
    let app = &f.app;
    let ep = &f.ep;
    let apps = "/api/v1/app".to_string();
    let eps = format!("/api/v1/app/{app}/endpoint");
    let ep_path = format!("/api/v1/app/{app}/endpoint/{ep}");
    let hex_path = format!("/api/v1/app/{app}/endpoint/{}", f.hex_ep);
    let msgs = format!("/api/v1/app/{app}/msg");
    let ets = "/api/v1/event-type".to_string();
    let url = "http://127.0.0.1:9/x";
    let msg = |extra: Value| {
        let mut m = json!({"eventType": "user.created", "payload": {"a": 1}});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m
    };
    let endpoint = |extra: Value| {
        let mut e = json!({"url": url});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        e
    };
    let big_payload = "x".repeat(BODY_LIMIT + 1000);
    let eleven: Vec<String> = (0..11).map(|i| format!("ch{i}")).collect();

    vec![
        // --- not JSON at all: 400 -------------------------------------------------
        row("malformed JSON", "POST", &apps)
            .raw(Some("application/json"), r#"{"name": "#)
            .fails(400, "bad_request"),
        row("JSON with trailing garbage", "POST", &msgs)
            .raw(
                Some("application/json"),
                r#"{"eventType":"user.created","payload":{}} x"#,
            )
            .fails(400, "bad_request"),
        row("non-JSON content type", "POST", &apps)
            .raw(Some("text/plain"), r#"{"name": "x"}"#)
            .fails(400, "bad_request"),
        row("form-encoded body", "POST", &eps)
            .raw(
                Some("application/x-www-form-urlencoded"),
                "url=http%3A%2F%2F127.0.0.1%3A9%2F",
            )
            .fails(400, "bad_request"),
        row("empty body with a JSON content type", "POST", &apps)
            .raw(Some("application/json"), "")
            .fails(400, "bad_request"),
        row("empty body without a content type", "POST", &msgs)
            .raw(None, "")
            .fails(400, "bad_request"),
        row("whitespace-only body", "PUT", format!("{ets}/user.created"))
            .raw(Some("application/json"), "  \n ")
            .fails(400, "bad_request"),
        // --- too large: 413 -------------------------------------------------------
        row("message over the body limit", "POST", &msgs)
            .json(msg(json!({"payload": {"blob": big_payload}})))
            .fails(413, "payload_too_large"),
        row("endpoint update over the body limit", "PUT", &ep_path)
            .json(endpoint(json!({"description": "d".repeat(BODY_LIMIT)})))
            .fails(413, "payload_too_large"),
        // --- wrong types and missing fields: 422 naming the field -------------------
        row("app name is a number", "POST", &apps)
            .json(json!({"name": 5}))
            .invalid("body.name"),
        row("endpoint channels is a string", "POST", &eps)
            .json(endpoint(json!({"channels": "c1"})))
            .invalid("body.channels"),
        row("message eventType is a number", "POST", &msgs)
            .json(json!({"eventType": 1, "payload": {}}))
            .invalid("body.eventType"),
        row(
            "metadata value is a number",
            "PATCH",
            format!("{apps}/{app}"),
        )
        .json(json!({"metadata": {"plan": 1}}))
        .invalid("body.metadata.plan"),
        row("endpoint disabled is a string (PATCH)", "PATCH", &ep_path)
            .json(json!({"disabled": "yes", "description": "partial?"}))
            .invalid("body.disabled"),
        row("app without name", "POST", &apps)
            .json(json!({"uid": "no-name"}))
            .invalid("body.name"),
        row("endpoint without url", "POST", &eps)
            .json(json!({"description": "no url"}))
            .invalid("body.url"),
        row("message without payload", "POST", &msgs)
            .json(json!({"eventType": "user.created"}))
            .invalid("body.payload"),
        row("event type without description", "POST", &ets)
            .json(json!({"name": "x.y"}))
            .invalid("body.description"),
        row(
            "headers PUT without headers",
            "PUT",
            format!("{ep_path}/headers"),
        )
        .json(json!({}))
        .invalid("body.headers"),
        // --- endpoint URL ---------------------------------------------------------
        row("url not absolute", "POST", &eps)
            .json(json!({"url": "/hook"}))
            .invalid("body.url"),
        row("url with ftp scheme", "POST", &eps)
            .json(json!({"url": "ftp://127.0.0.1/hook"}))
            .invalid("body.url"),
        row("url without host", "POST", &eps)
            .json(json!({"url": "http://"}))
            .invalid("body.url"),
        row("url not a URL", "PATCH", &ep_path)
            .json(json!({"url": "not a url"}))
            .invalid("body.url"),
        // --- uids -----------------------------------------------------------------
        row("app uid with spaces", "POST", &apps)
            .json(json!({"name": "x", "uid": "has spaces"}))
            .invalid("body.uid"),
        row("app uid too long", "POST", &apps)
            .json(json!({"name": "x", "uid": "u".repeat(257)}))
            .invalid("body.uid"),
        row("app uid with the app_ prefix", "POST", &apps)
            .json(json!({"name": "x", "uid": "app_123"}))
            .invalid("body.uid"),
        // An id that names nothing is not found; it is not a uid to create with.
        row(
            "app PUT under an unknown app_ id",
            "PUT",
            format!("{apps}/app_doesnotexist"),
        )
        .json(json!({"name": "x"}))
        .fails(404, "not_found"),
        row(
            "endpoint PUT under an unknown ep_ id",
            "PUT",
            format!("{eps}/ep_doesnotexist"),
        )
        .json(endpoint(json!({})))
        .fails(404, "not_found"),
        // PostgreSQL cannot store NUL in text: refused on every backend alike.
        row("app name with a NUL", "POST", &apps)
            .json(json!({"name": "a\u{0}b"}))
            .invalid("body.name"),
        row(
            "event type description with a NUL",
            "POST",
            "/api/v1/event-type",
        )
        .json(json!({"name": "nul.check", "description": "a\u{0}b"}))
        .invalid("body.description"),
        // serde reads a struct from an array of its values; the API takes objects only.
        row("app as an array of its values", "POST", &apps)
            .json(json!(["x"]))
            .invalid("body"),
        row(
            "message with its application as an array",
            "POST",
            format!("{apps}/nobody-yet/msg"),
        )
        .json(json!({"eventType": "a", "payload": {}, "application": ["x"]}))
        .invalid("body.application"),
        row("endpoint uid with the ep_ prefix", "POST", &eps)
            .json(endpoint(json!({"uid": "ep_123"})))
            .invalid("body.uid"),
        row("message eventId with spaces", "POST", &msgs)
            .json(msg(json!({"eventId": "evt 2"})))
            .invalid("body.eventId"),
        // --- unknown objects: 404 -------------------------------------------------
        row("unknown app", "GET", format!("{apps}/app_doesnotexist")).fails(404, "not_found"),
        row(
            "message to an unknown app",
            "POST",
            "/api/v1/app/nobody/msg",
        )
        .json(msg(json!({})))
        .fails(404, "not_found"),
        row(
            "endpoint in an unknown app",
            "POST",
            "/api/v1/app/nobody/endpoint",
        )
        .json(endpoint(json!({})))
        .fails(404, "not_found"),
        row("unknown endpoint", "GET", format!("{eps}/ep_doesnotexist")).fails(404, "not_found"),
        row(
            "patch unknown endpoint",
            "PATCH",
            format!("{eps}/ep_doesnotexist"),
        )
        .json(json!({"description": "x"}))
        .fails(404, "not_found"),
        row(
            "rotate unknown endpoint's secret",
            "POST",
            format!("{eps}/nope/secret/rotate"),
        )
        .json(json!({}))
        .fails(404, "not_found"),
        row(
            "endpoint of another app",
            "GET",
            format!("/api/v1/app/{}/endpoint/{ep}", f.other_app),
        )
        .fails(404, "not_found"),
        row("unknown message", "GET", format!("{msgs}/msg_doesnotexist")).fails(404, "not_found"),
        row(
            "patch unknown event type",
            "PATCH",
            format!("{ets}/no.such.type"),
        )
        .json(json!({"description": "x"}))
        .fails(404, "not_found"),
        row(
            "delete unknown event type",
            "DELETE",
            format!("{ets}/no.such.type"),
        )
        .fails(404, "not_found"),
        // --- auth: 401 / 403 ------------------------------------------------------
        row("missing token", "GET", &apps)
            .auth(Auth::Anonymous)
            .fails(401, "authentication_failed"),
        row("missing token on a write", "POST", &apps)
            .auth(Auth::Anonymous)
            .json(json!({"name": "anon"}))
            .fails(401, "authentication_failed"),
        row("wrong token", "POST", &msgs)
            .auth(Auth::Bearer("test_admin_token_0123456789abcdeX".into()))
            .json(msg(json!({})))
            .fails(401, "authentication_failed"),
        row("Basic instead of Bearer", "GET", &apps)
            .auth(Auth::Raw("Basic dXNlcjpwYXNz".into()))
            .fails(401, "authentication_failed"),
        row("Bearer without a token", "GET", &apps)
            .auth(Auth::Raw("Bearer ".into()))
            .fails(401, "authentication_failed"),
        row(
            "the admin token under another scheme",
            "DELETE",
            format!("{apps}/{app}"),
        )
        .auth(Auth::Raw(format!("Token {ADMIN_TOKEN}")))
        .fails(401, "authentication_failed"),
        row(
            "portal token reading another app",
            "GET",
            format!("{apps}/{}", f.other_app),
        )
        .auth(Auth::Bearer(f.portal_token.clone()))
        .fails(404, "not_found"),
        row(
            "portal token deleting another app",
            "DELETE",
            format!("{apps}/{}", f.other_app),
        )
        .auth(Auth::Bearer(f.portal_token.clone()))
        .fails(404, "not_found"),
        row("portal token creating an app", "POST", &apps)
            .auth(Auth::Bearer(f.portal_token.clone()))
            .json(json!({"name": "mine"}))
            .fails(403, "forbidden"),
        row("portal token creating an event type", "POST", &ets)
            .auth(Auth::Bearer(f.portal_token.clone()))
            .json(json!({"name": "portal.made", "description": "x"}))
            .fails(403, "forbidden"),
        // --- event types ----------------------------------------------------------
        row("invalid JSON Schema", "POST", &ets)
            .json(json!({"name": "bad.schema", "description": "x",
                         "schemas": {"1": {"type": "no-such-type"}}}))
            .invalid("body.schemas.1"),
        row("schema that is not an object", "POST", &ets)
            .json(json!({"name": "bad.schema", "description": "x", "schemas": {"2": 5}}))
            .invalid("body.schemas.2"),
        row(
            "archive together with an invalid schema",
            "PATCH",
            format!("{ets}/user.created"),
        )
        .json(json!({"archived": true, "schemas": {"1": {"minLength": -1}}}))
        .invalid("body.schemas.1"),
        row("event type name with spaces", "POST", &ets)
            .json(json!({"name": "user created", "description": "x"}))
            .invalid("body.name"),
        // --- messages -------------------------------------------------------------
        row("payload is an array", "POST", &msgs)
            .json(msg(json!({"payload": [1, 2]})))
            .invalid("body.payload"),
        row("payload is a string", "POST", &msgs)
            .json(msg(json!({"payload": "{}"})))
            .invalid("body.payload"),
        row("too many channels on a message", "POST", &msgs)
            .json(msg(json!({"channels": eleven})))
            .invalid("body.channels"),
        row("channel with a space", "POST", &msgs)
            .json(msg(json!({"channels": ["ok", "not ok"]})))
            .invalid("body.channels.1"),
        row(
            "first message would create an app with a bad name",
            "POST",
            "/api/v1/app/brand-new/msg",
        )
        .json(msg(json!({"application": {"name": ""}})))
        .invalid("body.application.name"),
        row(
            "first message would create an app, bad payload",
            "POST",
            "/api/v1/app/brand-new/msg",
        )
        .json(msg(
            json!({"payload": 3, "application": {"name": "Brand new"}}),
        ))
        .invalid("body.payload"),
        // --- pagination -----------------------------------------------------------
        row("limit=0", "GET", format!("{apps}?limit=0")).invalid("query.limit"),
        row("limit=251", "GET", format!("{msgs}?limit=251")).invalid("query.limit"),
        row("limit not a number", "GET", format!("{eps}?limit=ten")).invalid("query.limit"),
        row("unknown order", "GET", format!("{apps}?order=sideways")).invalid("query.order"),
        // --- endpoint settings ----------------------------------------------------
        row("too many channels on an endpoint", "POST", &eps)
            .json(endpoint(json!({"channels": eleven})))
            .invalid("body.channels"),
        row("endpoint channel with bad characters", "PATCH", &ep_path)
            .json(json!({"channels": ["a/b"], "description": "partial?"}))
            .invalid("body.channels.0"),
        row("empty filterTypes", "POST", &eps)
            .json(endpoint(json!({"filterTypes": []})))
            .invalid("body.filterTypes"),
        row("timeoutMs 50", "POST", &eps)
            .json(endpoint(json!({"timeoutMs": 50})))
            .invalid("body.timeoutMs"),
        row("timeoutMs 60001 (PATCH)", "PATCH", &ep_path)
            .json(json!({"timeoutMs": 60001}))
            .invalid("body.timeoutMs"),
        row("maxConcurrency 0", "POST", &eps)
            .json(endpoint(json!({"maxConcurrency": 0})))
            .invalid("body.maxConcurrency"),
        row("negative throttleRate", "POST", &eps)
            .json(endpoint(json!({"throttleRate": -1})))
            .invalid("body.throttleRate"),
        row("retryPolicy of unknown kind", "POST", &eps)
            .json(endpoint(json!({"retryPolicy": {"kind": "sometimes"}})))
            .invalid("body.retryPolicy.kind"),
        row("retryPolicy fixed with interval 0", "POST", &eps)
            .json(endpoint(
                json!({"retryPolicy": {"kind": "fixed", "intervalSeconds": 0,
                                                  "giveUpAfterSeconds": 3600}}),
            ))
            .invalid("body.retryPolicy.intervalSeconds"),
        row(
            "app retryPolicy with factor 100",
            "PATCH",
            format!("{apps}/{app}"),
        )
        .json(
            json!({"name": "renamed?", "retryPolicy": {"kind": "exponential",
                "initialSeconds": 5, "factor": 100.0, "maxIntervalSeconds": 3600,
                "giveUpAfterSeconds": 86400}}),
        )
        .invalid("body.retryPolicy.factor"),
        row("app throttleRate 0", "POST", &apps)
            .json(json!({"name": "x", "throttleRate": 0}))
            .invalid("body.throttleRate"),
        // --- custom headers and signatures ------------------------------------------
        row("reserved header User-Agent", "POST", &eps)
            .json(endpoint(json!({"headers": {"User-Agent": "mine"}})))
            .invalid("body.headers.User-Agent"),
        row("reserved header webhook-id", "POST", &eps)
            .json(endpoint(json!({"headers": {"webhook-id": "x"}})))
            .invalid("body.headers.webhook-id"),
        row("non-ASCII header value", "POST", &eps)
            .json(endpoint(json!({"headers": {"X-Cafe": "café"}})))
            .invalid("body.headers.X-Cafe"),
        row("header names that differ only in case", "POST", &eps)
            .json(endpoint(json!({"headers": {"X-D": "1", "x-d": "2"}})))
            .invalid("body.headers.x-d"),
        row(
            "header names that differ only in case in a headers PUT",
            "PUT",
            format!("{ep_path}/headers"),
        )
        .json(json!({"headers": {"X-Tenant": "1", "x-tenant": "2"}}))
        .invalid("body.headers.x-tenant"),
        row("endpoint URL with a raw CR LF", "POST", &eps)
            .json(json!({"url": "http://127.0.0.1:9/a\r\nX-Injected: 1"}))
            .invalid("body.url"),
        row(
            "reserved header in a headers PUT",
            "PUT",
            format!("{ep_path}/headers"),
        )
        .json(json!({"headers": {"X-Ok": "1", "Content-Type": "text/plain"}}))
        .invalid("body.headers.Content-Type"),
        row(
            "reserved header in a headers PATCH",
            "PATCH",
            format!("{ep_path}/headers"),
        )
        .json(json!({"headers": {"svix-signature": "v1,x"}, "deleteHeaders": ["X-Custom"]}))
        .invalid("body.headers.svix-signature"),
        row(
            "header value with a newline",
            "PATCH",
            format!("{ep_path}/headers"),
        )
        .json(json!({"headers": {"X-Evil": "a\r\nInjected: 1"}}))
        .invalid("body.headers.X-Evil"),
        row(
            "custom header equal to the hex signature header",
            "PATCH",
            format!("{hex_path}/headers"),
        )
        .json(json!({"headers": {"x-signature": "forged"}}))
        .invalid("body.headers.x-signature"),
        row("hmac-sha256-hex with a reserved header name", "POST", &eps)
            .json(endpoint(json!({"secret": "hex-secret-long",
                "signature": {"scheme": "hmac-sha256-hex", "header": "webhook-signature"}})))
            .invalid("body.signature.header"),
        row(
            "hmac-sha256-hex with Content-Type as its header",
            "PATCH",
            &ep_path,
        )
        .json(json!({"signature": {"scheme": "hmac-sha256-hex", "header": "Content-Type"}}))
        .invalid("body.signature.header"),
        row(
            "signature scheme switched onto an existing custom header",
            "PATCH",
            &ep_path,
        )
        .json(json!({"description": "partial?",
                         "signature": {"scheme": "hmac-sha256-hex", "header": "X-Custom"}}))
        .invalid("body.headers.X-Custom"),
        row("unknown signature scheme", "POST", &eps)
            .json(endpoint(json!({"signature": {"scheme": "md5"}})))
            .invalid("body.signature.scheme"),
        row("standard scheme with a non-whsec secret", "POST", &eps)
            .json(endpoint(json!({"secret": "plain-text-secret-value"})))
            .invalid("body.secret"),
        row(
            "standard scheme with a too-short whsec secret",
            "PUT",
            &ep_path,
        )
        .json(endpoint(json!({"secret": "whsec_c2hvcnQ="})))
        .invalid("body.secret"),
        row("hex scheme with a too-short secret", "POST", &eps)
            .json(endpoint(json!({"secret": "short",
                "signature": {"scheme": "hmac-sha256-hex", "header": "X-Sig"}})))
            .invalid("body.secret"),
        row(
            "rotate to a non-whsec key",
            "POST",
            format!("{ep_path}/secret/rotate"),
        )
        .json(json!({"key": "not-a-whsec-key-at-all"}))
        .invalid("body.key"),
        row(
            "rotate to the current key",
            "POST",
            format!("{ep_path}/secret/rotate"),
        )
        .json(json!({"key": f.ep_secret}))
        .invalid("body.key"),
        row(
            "rotate with a grace period over 7 days",
            "POST",
            format!("{ep_path}/secret/rotate"),
        )
        .json(json!({"key": StandardSecret::generate().to_string(),
                         "gracePeriodSeconds": 604801}))
        .invalid("body.gracePeriodSeconds"),
        row(
            "portal token with expiry 0",
            "POST",
            format!("/api/v1/auth/app-portal-access/{app}"),
        )
        .json(json!({"expiry": 0}))
        .invalid("body.expiry"),
        // --- conflicts: 409 ---------------------------------------------------------
        row("eventId already used in this app", "POST", &msgs)
            .json(msg(json!({"eventId": "evt-1", "payload": {"id": 2}})))
            .fails(409, "conflict"),
        row("duplicate app uid", "POST", &apps)
            .json(json!({"name": "Acme again", "uid": "acme"}))
            .fails(409, "conflict"),
        row(
            "app renamed onto another's uid",
            "PATCH",
            format!("{apps}/{}", f.other_app),
        )
        .json(json!({"name": "renamed?", "uid": "acme"}))
        .fails(409, "conflict"),
        row("duplicate endpoint uid", "POST", &eps)
            .json(endpoint(json!({"uid": "main-hook"})))
            .fails(409, "conflict"),
        row("duplicate event type name", "POST", &ets)
            .json(json!({"name": "user.created", "description": "again"}))
            .fails(409, "conflict"),
        // --- routing: 404 / 405 ---------------------------------------------------
        row("unknown route", "GET", "/api/v1/no-such-thing").fails(404, "not_found"),
        row("unknown route, no token", "GET", "/api/v2/app")
            .auth(Auth::Anonymous)
            .fails(404, "not_found"),
        row(
            "unknown sub-route with a body",
            "POST",
            format!("{apps}/{app}/no-such-thing"),
        )
        .json(json!({"name": "x"}))
        .fails(404, "not_found"),
        row("wrong method on a collection", "DELETE", &apps).fails(405, "method_not_allowed"),
        row("wrong method on messages", "PUT", &msgs)
            .json(msg(json!({})))
            .fails(405, "method_not_allowed"),
        row(
            "wrong method on the secret",
            "POST",
            format!("{ep_path}/secret"),
        )
        .json(json!({"key": "x"}))
        .fails(405, "method_not_allowed"),
        // --- idempotency-key --------------------------------------------------------
        row("idempotency-key too long", "POST", &msgs)
            .header("idempotency-key", "k".repeat(300))
            .json(msg(json!({})))
            .fails(400, "bad_request"),
    ]
}

#[tokio::test]
async fn every_bad_request_is_refused_cleanly_and_changes_nothing() {
    let limit = BODY_LIMIT.to_string();
    let server = Server::start_with(&["--body-limit-bytes", &limit]).await;
    let f = setup(&server).await;
    let admin = server.client();
    let mut before = snapshot(&admin).await;
    let mut forbidden_text = secrets_in(&before);
    assert_eq!(forbidden_text.len(), 3, "three endpoints' secrets");
    assert!(forbidden_text.contains(&"hex-endpoint-secret-1".to_string()));
    forbidden_text.push(ADMIN_TOKEN.to_string());
    forbidden_text.push(f.portal_token.clone());

    let rows = rows(&f);
    assert!(rows.len() >= 25);
    let http = reqwest::Client::new();
    let mut failures = Vec::new();
    for r in &rows {
        let mut req = http.request(r.method.parse().unwrap(), server.url(&r.path));
        req = match &r.auth {
            Auth::Admin => req.bearer_auth(ADMIN_TOKEN),
            Auth::Anonymous => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Raw(v) => req.header("authorization", v),
        };
        for (k, v) in &r.headers {
            req = req.header(*k, v);
        }
        req = match &r.body {
            Body::None => req,
            Body::Json(v) => req.json(v),
            Body::Raw(ct, bytes) => {
                let req = match ct {
                    Some(ct) => req.header("content-type", *ct),
                    None => req,
                };
                req.body(bytes.clone())
            }
        };
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.expect("body");
        let label = format!("{} ({} {})", r.what, r.method, r.path);
        if let Err(why) = check_response(r, status, &content_type, &text, &forbidden_text) {
            failures.push(format!("{label}: {why}\n    got {status} {text}"));
        }
        let after = snapshot(&admin).await;
        if after != before {
            failures.push(format!(
                "{label}: the refused request changed state: {}",
                first_difference(&before, &after, "")
            ));
            before = after; // so later rows are judged on their own
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn check_response(
    r: &Row,
    status: u16,
    content_type: &str,
    text: &str,
    forbidden: &[String],
) -> Result<(), String> {
    if status != r.status {
        return Err(format!("status {status}, want {}", r.status));
    }
    if !content_type.starts_with("application/json") {
        return Err(format!("content-type {content_type:?}, want JSON"));
    }
    let body: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let code = body["code"].as_str().ok_or("no string `code`")?;
    for s in forbidden {
        if text.contains(s.as_str()) {
            return Err(format!(
                "the error body contains a secret or token ({s:.8}...)"
            ));
        }
    }
    match &r.want {
        Want::Code(want) => {
            if !body["detail"].is_string() {
                return Err("`detail` is not a string".into());
            }
            if code != *want {
                return Err(format!("code {code:?}, want {want:?}"));
            }
        }
        Want::Loc(loc) => {
            if code != "validation" {
                return Err(format!("code {code:?}, want \"validation\""));
            }
            let detail = body["detail"].as_array().ok_or("`detail` is not a list")?;
            for d in detail {
                let ok = d["loc"].is_array() && d["msg"].is_string() && d["type"].is_string();
                if !ok {
                    return Err(format!("malformed detail entry {d}"));
                }
            }
            let want = json!(loc);
            if !detail.iter().any(|d| d["loc"] == want) {
                return Err(format!("no detail at loc {want}"));
            }
        }
    }
    Ok(())
}

/// Where two JSON values first differ, as `path: before -> after`.
fn first_difference(a: &Value, b: &Value, path: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (va, vb) = (&x.get(k), &y.get(k));
                if va != vb {
                    return match (va, vb) {
                        (Some(va), Some(vb)) => first_difference(va, vb, &format!("{path}.{k}")),
                        _ => format!("{path}.{k}: {va:?} -> {vb:?}"),
                    };
                }
            }
            format!("{path}: (no difference)")
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                if va != vb {
                    return first_difference(va, vb, &format!("{path}[{i}]"));
                }
            }
            format!("{path}: (no difference)")
        }
        _ => format!("{path}: {a} -> {b}"),
    }
}
