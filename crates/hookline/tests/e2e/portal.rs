//! The customer portal at `/portal/{app}`, opened with the `url` from app-portal-access.
//!
//! `customer_flow_in_chromium` drives it in headless Chromium with
//! `tests/browser/portal.mjs` (the same pinned playwright-core and axe-core as the
//! console's test) and asserts on the report that script prints. The other tests check
//! the portal's rules over plain HTTP: the token only in the fragment, sessions scoped
//! to one application, read-only sessions and CSRF, and `--portal-frame-ancestors`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::console::{
    assert_no_serious_axe_violation, assert_nothing_failed_unprovoked,
    assert_screenshots_not_blank, browser_tools, cookie_of, header, plain_client,
    run_browser_script, screenshot_dir,
};
use crate::receiver::{Behavior, Receiver};
use crate::support::{wait_until, Api, Server, ADMIN_TOKEN};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// An app-portal `url` for `app`.
async fn portal_url(api: &Api, app: &str, read_only: bool) -> String {
    let (status, out) = api
        .post(
            &format!("/api/v1/auth/app-portal-access/{app}"),
            json!({ "readOnly": read_only }),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    out["url"].as_str().unwrap().to_string()
}

/// Statuses the script provokes on purpose (the other application's pages, the
/// refused endpoint URL); any other error response is a bug.
fn expected_error(url: &str, status: u64, app_a: &str, app_b: &str) -> bool {
    (status == 404
        && (url.contains(&format!("/portal/{app_a}/endpoints/ep_"))
            || url.contains(&format!("/portal/{app_a}/msgs/msg_"))
            || url.contains(&format!("/portal/{app_b}/endpoints/"))))
        || (status == 422 && url.ends_with(&format!("/portal/{app_a}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_flow_in_chromium() {
    let test = "portal::customer_flow_in_chromium";
    let Some((node, modules)) = browser_tools(test).await else {
        return;
    };
    // The one origin allowed to frame the portal: a loopback port the script serves.
    let embed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let embedder = format!("http://127.0.0.1:{embed_port}");
    let server = Server::start_with(&[
        "--allow-target",
        "127.0.0.0/8",
        "--portal-frame-ancestors",
        &embedder,
    ])
    .await;
    let receiver = Receiver::start().await;
    let api = server.client();

    // The catalog, with a description, a schema and an example.
    api.create(
        "/api/v1/event-type",
        json!({
            "name": "order.created",
            "description": "An order was placed",
            "schemas": {"1": {
                "type": "object",
                "properties": {"orderId": {"type": "string"}},
                "examples": [{"orderId": "ord_example_1"}]
            }}
        }),
    )
    .await;
    api.create(
        "/api/v1/event-type",
        json!({"name": "order.paid", "description": "An order was paid"}),
    )
    .await;

    // Application A: an endpoint whose receiver fails first, with a message whose
    // payload (and the endpoint's description) carries a script.
    receiver.set("/fails-first", Behavior::Status(500, vec![]));
    let app_a = id(&api
        .create("/api/v1/app", json!({"name": "Acme Shop"}))
        .await);
    let ep_a = id(&api
        .create(
            &format!("/api/v1/app/{app_a}/endpoint"),
            json!({
                "url": receiver.url("/fails-first"),
                "description": "<script>alert(1)</script>",
                // No automatic retry during the test: only the customer's resend.
                "retryPolicy": {"kind": "fixed", "intervalSeconds": 3600, "giveUpAfterSeconds": 7200}
            }),
        )
        .await);
    let msg_a = id(&api
        .create(
            &format!("/api/v1/app/{app_a}/msg"),
            json!({"eventType": "order.created",
                   "payload": {"orderId": "<script>alert(1)</script>", "note": "<img src=x onerror=alert(2)>"}}),
        )
        .await);
    let attempts = format!("/api/v1/app/{app_a}/attempt/msg/{msg_a}");
    let (_, failed) = api
        .get_until(&attempts, |v| {
            v["data"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(failed["data"][0]["responseStatusCode"], 500, "{failed}");
    receiver.set("/fails-first", Behavior::Status(200, vec![]));

    // Application B, whose ids the customer of A types into the URL.
    let app_b = id(&api.create("/api/v1/app", json!({"name": "Other Co"})).await);
    let ep_b = id(&api
        .create(
            &format!("/api/v1/app/{app_b}/endpoint"),
            json!({"url": receiver.url("/other-co")}),
        )
        .await);
    let msg_b = id(&api
        .create(
            &format!("/api/v1/app/{app_b}/msg"),
            json!({"eventType": "order.paid", "payload": {"secret": "of B"}}),
        )
        .await);

    let url = portal_url(&api, &app_a, false).await;
    let url_ro = portal_url(&api, &app_a, true).await;
    let shots = screenshot_dir("portal-");
    let r = run_browser_script(
        &node,
        "portal",
        &modules,
        &shots,
        &[
            ("HOOKLINE_URL", server.base.clone()),
            ("PORTAL_URL", url.clone()),
            ("PORTAL_URL_RO", url_ro),
            ("APP_A", app_a.clone()),
            ("EP_A", ep_a),
            ("MSG_A", msg_a.clone()),
            ("APP_B", app_b.clone()),
            ("EP_B", ep_b),
            ("MSG_B", msg_b),
            ("RECEIVER_URL", receiver.url("/added-in-portal")),
            ("EMBED_PORT", embed_port.to_string()),
        ],
        Duration::from_secs(150),
    )
    .await;
    let s = &r["steps"];
    let key = url.split("#key=").nth(1).unwrap();

    // Opened: the key gone from the address bar, a session cookie scripts cannot read,
    // scoped to this application's portal, which is not the key.
    let open = &s["open"];
    assert_eq!(
        open["url"],
        format!("{}/portal/{app_a}", server.base),
        "{r:#}"
    );
    assert_eq!(open["historyHasKey"], false);
    assert_eq!(
        open["cookie"],
        json!({"httpOnly": true, "sameSite": "Strict", "path": format!("/portal/{app_a}")})
    );
    assert_eq!(open["keyInCookie"], false);
    assert_eq!(open["scriptSeesCookie"], false);
    assert_eq!(open["heading"], "Webhooks for Acme Shop");
    // Only A's endpoint and message; the description with a script is text.
    assert_eq!(open["endpoints"], json!([receiver.url("/fails-first")]));
    assert_eq!(open["endpointHints"], json!(["<script>alert(1)</script>"]));
    assert_eq!(open["messages"], json!([msg_a]));
    assert_eq!(open["scripts"], 1, "only portal.js");
    assert_eq!(open["images"], 0);
    // No request ever carried the key in its URL.
    for u in r["requestUrls"].as_array().unwrap() {
        let u = u.as_str().unwrap();
        assert!(!u.contains(key), "the key reached a request URL: {u}");
    }

    // The catalog, with descriptions and the schema.
    let cat = &s["catalog"];
    assert_eq!(
        cat["types"],
        json!(["order.created", "order.paid"]),
        "{r:#}"
    );
    let descriptions = cat["descriptions"].to_string();
    assert!(descriptions.contains("An order was placed"), "{cat}");
    assert!(descriptions.contains("An order was paid"), "{cat}");
    assert_eq!(cat["schemas"], 1);
    assert!(cat["firstSchema"].as_str().unwrap().contains("\"orderId\""));

    // The API's validation message next to the field, the choice kept; then created.
    assert!(
        s["badEndpoint"]["error"]
            .as_str()
            .unwrap()
            .contains("must be an absolute http(s) URL"),
        "{r:#}"
    );
    assert_eq!(s["badEndpoint"]["stillChecked"], true);
    assert_eq!(s["addEndpoint"]["notice"], "Endpoint created.");
    assert_eq!(s["addEndpoint"]["types"], "order.created");
    let (_, eps) = api.get(&format!("/api/v1/app/{app_a}/endpoint")).await;
    let added = eps["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == receiver.url("/added-in-portal"))
        .unwrap_or_else(|| panic!("the endpoint was not created: {eps}"))
        .clone();
    assert_eq!(added["filterTypes"], json!(["order.created"]));
    assert_eq!(added["description"], "added in the portal");

    // Secret revealed, rotated, revealed: the API holds the second one.
    let sec = &s["secret"];
    assert!(
        sec["first"].as_str().unwrap().starts_with("whsec_"),
        "{r:#}"
    );
    assert_ne!(sec["first"], sec["second"]);
    assert!(sec["notice"]
        .as_str()
        .unwrap()
        .starts_with("Secret rotated"));
    let (_, secret) = api
        .get(&format!(
            "/api/v1/app/{app_a}/endpoint/{}/secret",
            id(&added)
        ))
        .await;
    assert_eq!(secret["key"], sec["second"]);

    // The test event: the schema's example, delivered with 200.
    assert_eq!(s["example"]["attemptStatus"], "200", "{r:#}");
    assert!(s["example"]["payload"]
        .as_str()
        .unwrap()
        .contains("ord_example_1"));
    assert!(!receiver.requests_to("/added-in-portal").is_empty());

    // The failed message, resent: a manual attempt answered 200.
    let resend = &s["resend"];
    assert_eq!(resend["firstStatus"], "500", "{r:#}");
    assert_eq!(resend["notice"], "Message resent.");
    assert!(resend["manual"].is_array(), "no manual 200 attempt: {r:#}");
    wait_until(
        Duration::from_secs(5),
        "the resend reached the receiver",
        || receiver.requests_to("/fails-first").len() >= 2,
    )
    .await;

    // The payload's script is text; no dialog anywhere.
    let xss = &s["xss"];
    assert!(xss["payload"]
        .as_str()
        .unwrap()
        .contains("\"orderId\": \"<script>alert(1)</script>\""));
    assert_eq!(xss["scripts"], 1);
    assert_eq!(xss["images"], 0);
    assert_eq!(r["dialogs"], json!([]));

    // Another application's ids: not found, and nothing of B shown.
    let other = &s["otherApp"];
    for k in ["endpoint", "message", "otherEndpoint"] {
        assert_eq!(other[k]["status"], 404, "{k}: {r:#}");
        assert_eq!(other[k]["heading"], "Not found", "{k}");
        assert_eq!(other[k]["forms"], 0, "{k}");
    }
    assert_eq!(other["otherHome"]["heading"], "Portal link needed");
    assert_eq!(other["otherHome"]["forms"], 0);
    assert!(receiver.requests_to("/other-co").len() <= 1);

    assert_eq!(s["keyboard"]["first"], "Skip to content");
    // Dark when the embedding page (the browser) prefers dark.
    assert_ne!(s["colorScheme"]["light"], s["colorScheme"]["dark"], "{r:#}");

    // A read-only link: the data, and nothing to act on.
    let ro = &s["readOnly"];
    assert_eq!(ro["badge"], "Read-only", "{r:#}");
    assert_eq!(ro["endpoints"], 2);
    for k in ["home", "endpoint", "message"] {
        assert_eq!(
            ro[k],
            json!({"forms": 0, "buttons": 0, "inputs": 0}),
            "{k}: {r:#}"
        );
    }
    assert!(ro["endpointHeading"]
        .as_str()
        .unwrap()
        .starts_with("Endpoint"));
    assert_eq!(ro["messageHeading"], format!("Message {msg_a}"));

    // Framed by the allowed origin, dark as that browser prefers; refused elsewhere.
    let embedded = &s["embedded"];
    assert_eq!(embedded["heading"], "Webhooks for Acme Shop", "{r:#}");
    assert_eq!(embedded["background"], s["colorScheme"]["dark"]);
    assert_eq!(embedded["otherOriginHeading"], 0, "{r:#}");
    assert!(
        !embedded["otherOriginFrameUrl"]
            .as_str()
            .unwrap_or("")
            .starts_with(&server.base),
        "{r:#}"
    );

    // Nothing failed that the script did not provoke.
    assert_nothing_failed_unprovoked(&r, |u, status| expected_error(u, status, &app_a, &app_b));

    // Accessibility: no serious or critical violation on any main page.
    assert_no_serious_axe_violation(&r, &["home", "endpoint", "message", "read-only message"]);

    // Screenshots, not blank.
    assert_screenshots_not_blank(
        &r,
        &[
            "portal-home",
            "portal-endpoint",
            "portal-message",
            "portal-home-dark",
            "portal-embedded-dark",
        ],
    );
}

/// Posts the key as the portal's script does; the response.
async fn exchange(
    http: &reqwest::Client,
    server: &Server,
    app: &str,
    key: &str,
    https: bool,
) -> reqwest::Response {
    let mut req = http
        .post(server.url(&format!("/portal/{app}/session")))
        .form(&[("key", key)]);
    if https {
        req = req.header("x-forwarded-proto", "https");
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn the_url_carries_the_token_in_its_fragment_and_sessions_stay_in_their_application() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut server = Server::start_logging(&dir.path().join("data"), &[], Some(&log)).await;
    let api = server.client();
    let http = plain_client();
    let app_a = id(&api.create("/api/v1/app", json!({"name": "A"})).await);
    let app_b = id(&api.create("/api/v1/app", json!({"name": "B"})).await);
    let ep_b = id(&api
        .create(
            &format!("/api/v1/app/{app_b}/endpoint"),
            json!({"url": "https://example.com/hook"}),
        )
        .await);

    // The url: this server's portal for A, the token after `#` only.
    let (_, out) = api
        .post(
            &format!("/api/v1/auth/app-portal-access/{app_a}"),
            json!({}),
        )
        .await;
    let url = out["url"].as_str().unwrap();
    let token = out["token"].as_str().unwrap();
    assert_eq!(
        url,
        format!("{}/portal/{app_a}#key={token}", server.base),
        "{out}"
    );
    let before_fragment = url.split('#').next().unwrap();
    assert!(!before_fragment.contains(token) && !before_fragment.contains('?'));
    // The token works as an API token too (Svix's clients use it so).
    let (status, _) = api
        .with_token(Some(token))
        .get(&format!("/api/v1/app/{app_a}/endpoint"))
        .await;
    assert_eq!(status, 200);

    // Refused: a wrong key, A's key at B's portal, an admin token, no key.
    let (_, b_out) = api
        .post(
            &format!("/api/v1/auth/app-portal-access/{app_b}"),
            json!({}),
        )
        .await;
    for (app, key, want) in [
        (app_a.as_str(), "appsk_not_a_real_key_0123456789", 401),
        (app_b.as_str(), token, 401),
        (app_a.as_str(), b_out["token"].as_str().unwrap(), 401),
        (app_a.as_str(), ADMIN_TOKEN, 401),
        (app_a.as_str(), "", 422),
    ] {
        let resp = exchange(&http, &server, app, key, false).await;
        assert_eq!(resp.status(), want, "{app} {key}");
        assert!(cookie_of(&resp, "hookline_portal").is_none());
        let body = resp.text().await.unwrap();
        assert!(key.is_empty() || !body.contains(key), "{body}");
    }

    // Accepted: a cookie for A's portal only; over https, one a frame can use.
    let resp = exchange(&http, &server, &app_a, token, false).await;
    assert_eq!(resp.status(), 200);
    let set = cookie_of(&resp, "hookline_portal").unwrap();
    assert!(
        set.contains(&format!("Path=/portal/{app_a};"))
            && set.contains("HttpOnly")
            && set.contains("SameSite=Strict")
            && !set.contains(token),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let https = cookie_of(
        &exchange(&http, &server, &app_a, token, true).await,
        "hookline_portal",
    )
    .unwrap();
    assert!(
        https.contains("SameSite=None; Secure; Partitioned"),
        "{https}"
    );

    let get = |path: String| {
        let req = http.get(server.url(&path)).header("cookie", &cookie);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };
    let (status, home) = get(format!("/portal/{app_a}")).await;
    assert_eq!(status, 200);
    assert!(home.contains("Webhooks for A"), "{home}");
    // B's ids under A's portal, and A's cookie at B's portal: nothing of B.
    let (status, page) = get(format!("/portal/{app_a}/endpoints/{ep_b}")).await;
    assert_eq!(status, 404);
    assert!(!page.contains("example.com/hook"));
    let (status, page) = get(format!("/portal/{app_b}/endpoints/{ep_b}")).await;
    assert_eq!(status, 404);
    assert!(!page.contains("example.com/hook"));
    let (status, page) = get(format!("/portal/{app_b}")).await;
    assert_eq!(status, 200);
    assert!(!page.contains("Webhooks for B") && page.contains("id=\"opening\""));

    // A form needs the session's CSRF token.
    let csrf = home
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_string();
    let count = |v: &Value| v["data"].as_array().unwrap().len();
    let eps = format!("/api/v1/app/{app_a}/endpoint");
    for form in [
        vec![("url", "https://example.com/a")],
        vec![("url", "https://example.com/a"), ("csrf", "nope")],
    ] {
        let resp = http
            .post(server.url(&format!("/portal/{app_a}")))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
    }
    assert_eq!(count(&api.get(&eps).await.1), 0);
    let resp = http
        .post(server.url(&format!("/portal/{app_a}")))
        .header("cookie", &cookie)
        .form(&[
            ("url", "https://example.com/a"),
            ("filterTypes", "a.b"),
            ("filterTypes", "c.d"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let (_, list) = api.get(&eps).await;
    assert_eq!(list["data"][0]["filterTypes"], json!(["a.b", "c.d"]));

    // Endpoints come 50 a page, by the API's iterator.
    for i in 0..50 {
        api.create(&eps, json!({"url": format!("https://example.com/{i}")}))
            .await;
    }
    let (_, first) = get(format!("/portal/{app_a}")).await;
    assert_eq!(first.matches("/endpoints/ep_").count(), 50);
    let next = first
        .split("?endpoints=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to more endpoints");
    let (status, second) = get(format!("/portal/{app_a}?endpoints={next}")).await;
    assert_eq!(status, 200);
    assert_eq!(second.matches("/endpoints/ep_").count(), 1);
    assert!(!second.contains("?endpoints="));

    // A read-only session: the same forged post is refused, nothing made.
    let (_, ro) = api
        .post(
            &format!("/api/v1/auth/app-portal-access/{app_a}"),
            json!({"readOnly": true}),
        )
        .await;
    let resp = exchange(&http, &server, &app_a, ro["token"].as_str().unwrap(), false).await;
    let ro_cookie = cookie_of(&resp, "hookline_portal")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let ro_home = http
        .get(server.url(&format!("/portal/{app_a}")))
        .header("cookie", &ro_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!ro_home.contains("<form"), "{ro_home}");
    // It has no CSRF field to copy; one from the other session does not fit it either.
    let resp = http
        .post(server.url(&format!("/portal/{app_a}")))
        .header("cookie", &ro_cookie)
        .form(&[("url", "https://example.com/b"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(!api
        .get(&format!("{eps}?limit=250"))
        .await
        .1
        .to_string()
        .contains("example.com/b"));

    // No token reached the server's log, nor a session id.
    server.terminate().await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("listening"), "{logged}");
    for secret in [token, ro["token"].as_str().unwrap(), &cookie[16..]] {
        assert!(!logged.contains(secret), "{secret} in the log");
    }
}

#[tokio::test]
async fn portal_frame_ancestors_follow_the_flag_and_the_console_is_never_framed() {
    let http = plain_client();

    let server = Server::start().await;
    let resp = http.get(server.url("/portal/app_x")).send().await.unwrap();
    let csp = header(&resp, "content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(header(&resp, "x-frame-options").as_deref(), Some("DENY"));

    let origins = "https://app.example.com,http://127.0.0.1:4000";
    let server = Server::start_with_env(&[], &[("HOOKLINE_PORTAL_FRAME_ANCESTORS", origins)]).await;
    for path in ["/portal/app_x", "/portal/app_x/endpoints/ep_y"] {
        let resp = http.get(server.url(path)).send().await.unwrap();
        let csp = header(&resp, "content-security-policy").unwrap();
        assert!(
            csp.contains("frame-ancestors https://app.example.com http://127.0.0.1:4000;"),
            "{path}: {csp}"
        );
        assert!(header(&resp, "x-frame-options").is_none(), "{path}");
    }
    let resp = http.get(server.url("/")).send().await.unwrap();
    let csp = header(&resp, "content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&resp, "x-frame-options").as_deref(), Some("DENY"));

    let server = Server::start_with(&["--portal-frame-ancestors", "https://b.example"]).await;
    let resp = http.get(server.url("/portal/app_x")).send().await.unwrap();
    assert!(header(&resp, "content-security-policy")
        .unwrap()
        .contains("frame-ancestors https://b.example;"));
}

/// Behind a proxy, `--public-url` is what the portal links start with (the listen
/// address otherwise).
#[tokio::test]
async fn portal_links_start_with_the_public_url() {
    let server = Server::start_with(&["--public-url", "https://hooks.example.com/base/"]).await;
    let api = server.client();
    let app = api
        .create("/api/v1/app", json!({"name": "behind a proxy"}))
        .await;
    let id = app["id"].as_str().unwrap();
    let (status, access) = api
        .post(&format!("/api/v1/auth/app-portal-access/{id}"), json!({}))
        .await;
    assert_eq!(status, 200, "{access}");
    let url = access["url"].as_str().unwrap();
    let token = access["token"].as_str().unwrap();
    assert_eq!(
        url,
        format!("https://hooks.example.com/base/portal/{id}#key={token}")
    );

    let plain = Server::start().await;
    let api = plain.client();
    let app = api.create("/api/v1/app", json!({"name": "direct"})).await;
    let id = app["id"].as_str().unwrap();
    let (_, access) = api
        .post(&format!("/api/v1/auth/app-portal-access/{id}"), json!({}))
        .await;
    assert!(
        access["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/portal/{id}#key=", plain.url(""))),
        "{access}"
    );
}
