//! The operator console at `/` and CORS for browser clients of the API.
//!
//! `operator_flow_in_chromium` drives the real console in Debian's headless Chromium
//! (through `playwright-core`, installed here into `target/browser-tests` when missing,
//! at pinned versions; `scripts/test` installs Chromium itself) with
//! `tests/browser/console.mjs`, and asserts on the JSON report that script prints.
//! `svix_js_sdk_lists_endpoints_with_an_app_portal_token_over_cors` runs the official Svix
//! JavaScript SDK in Chromium on another loopback origin (`tests/browser/svix_sdk.mjs`).
//! The npm packages are pinned in `tests/browser/package.json`. The other tests check
//! the console's and CORS's rules over plain HTTP.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::receiver::Receiver;
use crate::support::{require_tool, Server, ADMIN_TOKEN};

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn installed_version(modules: &Path, package: &str) -> Option<String> {
    let text = std::fs::read_to_string(modules.join(package).join("package.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_string)
}

/// The npm packages of the browser tests, pinned exactly in `tests/browser/package.json`
/// (which `scripts/screenshots` reads too), as `(name, version)`.
fn pinned_browser_packages() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/package.json");
    let text = std::fs::read_to_string(&path).expect("tests/browser/package.json");
    let v: Value = serde_json::from_str(&text).expect("tests/browser/package.json is JSON");
    v["dependencies"]
        .as_object()
        .expect("its dependencies")
        .iter()
        .map(|(name, version)| (name.clone(), version.as_str().unwrap().to_string()))
        .collect()
}

/// `target/browser-tests/node_modules` with the pinned packages, installed when missing.
pub(crate) async fn browser_modules(npm: &Path) -> PathBuf {
    let prefix = target_dir().join("browser-tests");
    let modules = prefix.join("node_modules");
    let wanted = pinned_browser_packages();
    if wanted
        .iter()
        .all(|(p, v)| installed_version(&modules, p).as_deref() == Some(v.as_str()))
    {
        return modules;
    }
    std::fs::create_dir_all(&prefix).expect("create target/browser-tests");
    let status = Command::new(npm)
        .arg("install")
        .arg("--prefix")
        .arg(&prefix)
        .args([
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--save-exact",
        ])
        .args(wanted.iter().map(|(p, v)| format!("{p}@{v}")))
        .status()
        .await
        .expect("run npm");
    assert!(
        status.success(),
        "npm install of the browser test's packages failed"
    );
    modules
}

/// node and the pinned browser modules for the browser test `test`, or `None` (the test
/// skipped, as `require_tool` says) where node, npm or Chromium is missing.
pub(crate) async fn browser_tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    let (Some(node), Some(npm), Some(_)) = (
        require_tool("node", test),
        require_tool("npm", test),
        require_tool("chromium", test),
    ) else {
        return None;
    };
    let modules = browser_modules(&npm).await;
    Some((node, modules))
}

/// The folder for the browser tests' screenshots, emptied of the ones named
/// `{prefix}*` (the other browser test saves beside them).
pub(crate) fn screenshot_dir(prefix: &str) -> PathBuf {
    let shots = target_dir().join("browser-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    for old in std::fs::read_dir(&shots)
        .expect("list screenshots")
        .flatten()
    {
        if old.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_file(old.path());
        }
    }
    shots
}

/// Runs `tests/browser/{name}.mjs` in node with `env` (and the pinned modules and the
/// screenshot folder), within `limit`, and answers the JSON report it printed, having
/// checked that the script did not stop half-way.
pub(crate) async fn run_browser_script(
    node: &Path,
    name: &str,
    modules: &Path,
    shots: &Path,
    env: &[(&str, String)],
    limit: Duration,
) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/browser")
        .join(format!("{name}.mjs"));
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(
        limit,
        Command::new(node)
            .arg(&script)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("BROWSER_MODULES", modules)
            .env("OUT_DIR", shots)
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the browser script ends within {limit:?}"))
    .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser script failed: {stdout}");
    let r: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("browser script printed no JSON report ({e}): {stdout}"));
    eprintln!("browser script {name} ran in {:?}", started.elapsed());
    assert!(
        r.get("error").is_none(),
        "the browser script stopped: {r:#}"
    );
    r
}

/// Accessibility: no serious or critical axe-core violation on any of `pages`.
pub(crate) fn assert_no_serious_axe_violation(r: &Value, pages: &[&str]) {
    let axe = r["axe"].as_object().unwrap();
    for page in pages {
        let found = axe
            .get(*page)
            .unwrap_or_else(|| panic!("axe did not run on {page}"));
        let bad: Vec<&Value> = found
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(bad.is_empty(), "axe on {page}: {bad:#?}");
    }
}

/// A screenshot of each of `names`, not blank.
pub(crate) fn assert_screenshots_not_blank(r: &Value, names: &[&str]) {
    let taken = r["screenshots"].as_array().unwrap();
    for name in names {
        let shot = taken
            .iter()
            .find(|s| s["name"] == *name)
            .unwrap_or_else(|| panic!("no screenshot {name}"));
        let path = shot["path"].as_str().unwrap();
        assert!(
            std::fs::metadata(path)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "{path}"
        );
        assert!(
            shot["colors"].as_u64().unwrap() > 20,
            "{name} looks blank: {shot}"
        );
        assert!(
            shot["notBackground"].as_f64().unwrap() > 0.05,
            "{name} looks blank: {shot}"
        );
    }
}

/// Nothing failed in the browser that the script did not provoke: `expected` says
/// which error responses (url, status) it provoked on purpose.
pub(crate) fn assert_nothing_failed_unprovoked(r: &Value, expected: impl Fn(&str, u64) -> bool) {
    assert_eq!(r["pageErrors"], json!([]), "{r:#}");
    // Chromium fetches the favicon after a page loads and cancels it when the script
    // has already moved on: that abort is the browser's, not a failure.
    let failed: Vec<&Value> = r["failedRequests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            !(f["error"] == "net::ERR_ABORTED"
                && f["url"]
                    .as_str()
                    .unwrap()
                    .ends_with("/console/assets/favicon.svg"))
        })
        .collect();
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    for e in r["errorResponses"].as_array().unwrap() {
        let url = e["url"].as_str().unwrap();
        assert!(
            expected(url, e["status"].as_u64().unwrap()),
            "unexpected error response {e}"
        );
    }
    for e in r["consoleErrors"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        let url = e["url"].as_str().unwrap_or("");
        let provoked = text.starts_with("Failed to load resource")
            && r["errorResponses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["url"] == url && text.contains(&x["status"].to_string()));
        assert!(provoked, "console error: {e}");
    }
}

/// A response header's value, if it has one.
pub(crate) fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// The `Set-Cookie` of a response that sets the cookie `name`, if it sets one.
pub(crate) fn cookie_of(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| {
            v.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('='))
        })
        .map(str::to_string)
}

/// Status codes the script provokes on purpose; any other error response, failed
/// request or console error is a bug.
fn expected_error(url: &str, status: u64) -> bool {
    matches!(
        (status, url),
        (401, u) if u.ends_with("/login") || u.ends_with("/api/v1/app")
    ) || (status == 422
        && (url.ends_with("/endpoints")
            || url.ends_with("/settings")
            || url.ends_with("/event-types")))
        || (status == 404 && url.ends_with("/apps/app_doesnotexist"))
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_flow_in_chromium() {
    let test = "console::operator_flow_in_chromium";
    let Some((node, modules)) = browser_tools(test).await else {
        return;
    };
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let receiver = Receiver::start().await;
    let shots = screenshot_dir("console-");
    let r = run_browser_script(
        &node,
        "console",
        &modules,
        &shots,
        &[
            ("HOOKLINE_URL", server.base.clone()),
            ("HOOKLINE_TOKEN", ADMIN_TOKEN.to_string()),
            ("RECEIVER_URL", receiver.url("/console-hook")),
        ],
        Duration::from_secs(120),
    )
    .await;
    let s = &r["steps"];

    // A wrong token: an error and no data.
    assert_eq!(
        s["wrongToken"]["error"], "invalid or expired token",
        "{r:#}"
    );
    assert_eq!(s["wrongToken"]["tables"], 0);
    assert_eq!(s["wrongToken"]["signOut"], 0);

    // Signed in with a cookie that scripts cannot read and other sites cannot send,
    // which is not the token.
    assert!(s["signIn"]["url"].as_str().unwrap().ends_with("/apps"));
    assert_eq!(
        s["signIn"]["cookie"],
        json!({"httpOnly": true, "sameSite": "Strict", "secure": false})
    );
    assert_eq!(s["signIn"]["tokenInCookie"], false);

    assert_eq!(s["createApp"]["heading"], "Acme Support");
    // The API's own validation message, next to the field.
    assert!(
        s["badEndpoint"]["error"]
            .as_str()
            .unwrap()
            .contains("must be an absolute http(s) URL"),
        "{r:#}"
    );
    assert_eq!(s["createEndpoint"]["notice"], "Endpoint created.");
    assert_eq!(s["example"]["attemptStatus"], "200", "{r:#}");
    assert_eq!(s["example"]["delivery"], "success");
    assert_eq!(s["resend"]["notice"], "Message resent.");

    // Reveal, rotate, reveal: a new secret, shown only when asked.
    let sec = &s["secret"];
    assert_eq!(sec["firstPrefix"], "whsec_");
    assert_eq!(sec["changed"], true, "{r:#}");
    assert!(sec["notice"]
        .as_str()
        .unwrap()
        .starts_with("Secret rotated"));
    assert_eq!(s["disable"]["badge"], "Disabled");

    // The console showed what the API holds.
    let api = server.client();
    let app_id = s["createApp"]["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let (status, eps) = api.get(&format!("/api/v1/app/{app_id}/endpoint")).await;
    assert_eq!(status, 200);
    let ep = &eps["data"][0];
    assert_eq!(
        ep["url"],
        format!("{}?edited=1", receiver.url("/console-hook"))
    );
    assert_eq!(ep["timeoutMs"], 2000);
    assert_eq!(ep["disabled"], true);
    let (_, secret) = api
        .get(&format!(
            "/api/v1/app/{app_id}/endpoint/{}/secret",
            ep["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(secret["key"], sec["second"]);
    assert_ne!(secret["key"], sec["first"]);
    // The example and its resend both arrived, signed.
    let got = receiver.requests_to("/console-hook");
    assert!(got.len() >= 2, "the receiver got {} requests", got.len());
    assert!(got.iter().all(|g| g.header("webhook-signature").is_some()));

    // A payload with a script is text: no dialog, no extra script or image element,
    // and its keys in the order they were sent.
    let xss = &s["xss"];
    assert!(xss["payload"]
        .as_str()
        .unwrap()
        .contains("\"z\": \"<script>alert(1)</script>\""));
    assert_eq!(xss["scripts"], 1, "only console.js: {r:#}");
    assert_eq!(xss["images"], 0);
    assert_eq!(xss["keyOrderKept"], true);
    assert_eq!(r["dialogs"], json!([]));

    // The console's cookie is no credential for the API.
    assert_eq!(s["cookieOnly"]["status"], 401);
    assert_eq!(s["missingApp"]["status"], 404);
    assert_eq!(s["search"]["rows"], 1);
    assert_eq!(s["keyboard"]["first"], "Skip to content");
    assert_eq!(
        s["keyboard"]["nav"],
        json!(["hookline", "Applications", "Event types", "System"])
    );

    // The endpoint's settings, edited: the API's message, then saved.
    assert!(
        s["editBad"]["error"]
            .as_str()
            .unwrap()
            .contains("must be an absolute http(s) URL"),
        "{r:#}"
    );
    assert_eq!(s["editGood"]["notice"], "Settings saved.");
    assert_eq!(
        s["editGood"]["url"],
        format!("{}?edited=1", receiver.url("/console-hook"))
    );
    // Charts of its attempts (the example and its resend), each an image with a text.
    assert!(s["charts"]["okBars"].as_u64().unwrap() >= 1, "{r:#}");
    assert_eq!(s["charts"]["labels"], 2);
    // Event types: the API's schema message, then created.
    assert!(
        s["badSchema"]["error"]
            .as_str()
            .unwrap()
            .contains("is not a valid JSON Schema"),
        "{r:#}"
    );
    assert_eq!(s["eventType"]["notice"], "Event type created.");
    assert_eq!(s["system"]["charts"], 2);
    assert_eq!(s["filter"]["rows"], 1, "{r:#}");
    assert!(s["signOut"]["url"].as_str().unwrap().ends_with('/'));
    assert_eq!(s["signOut"]["tokenField"], 1);

    // Nothing failed that the script did not provoke.
    assert_nothing_failed_unprovoked(&r, expected_error);

    // Accessibility: no serious or critical axe-core violation on any main page.
    assert_no_serious_axe_violation(
        &r,
        &[
            "login",
            "applications",
            "application",
            "endpoint",
            "message",
            "endpoint-activity",
            "event-types",
            "event-type",
            "system",
        ],
    );

    // A screenshot of each main page, not blank.
    assert_screenshots_not_blank(
        &r,
        &[
            "console-login",
            "console-applications",
            "console-application",
            "console-endpoint",
            "console-message",
            "console-endpoint-activity",
            "console-event-types",
            "console-event-type",
            "console-system",
        ],
    );
}

/// The official Svix JavaScript SDK, in Chromium on a page of another loopback origin,
/// lists an application's endpoints with an app-portal token (CORS); the token reaches
/// no other application; and where `--cors-allowed-origins` names another origin, the
/// browser refuses the same call.
#[tokio::test(flavor = "multi_thread")]
async fn svix_js_sdk_lists_endpoints_with_an_app_portal_token_over_cors() {
    let test = "console::svix_js_sdk_lists_endpoints_with_an_app_portal_token_over_cors";
    let Some((node, modules)) = browser_tools(test).await else {
        return;
    };
    let open = Server::start().await;
    let api = open.client();
    let app = api
        .create("/api/v1/app", json!({"name": "Customer A"}))
        .await;
    let app_id = app["id"].as_str().unwrap().to_string();
    for i in 0..3 {
        api.create(
            &format!("/api/v1/app/{app_id}/endpoint"),
            json!({"url": format!("https://a.example/hook/{i}"), "description": format!("A {i}")}),
        )
        .await;
    }
    let other = api
        .create("/api/v1/app", json!({"name": "Customer B"}))
        .await;
    let other_id = other["id"].as_str().unwrap().to_string();
    api.create(
        &format!("/api/v1/app/{other_id}/endpoint"),
        json!({"url": "https://b.example/hook"}),
    )
    .await;
    let portal_token = |api: crate::support::Api, app: String| async move {
        let (status, out) = api
            .post(&format!("/api/v1/auth/app-portal-access/{app}"), json!({}))
            .await;
        assert_eq!(status, 200, "{out}");
        out["token"].as_str().unwrap().to_string()
    };
    let token = portal_token(api.clone(), app_id.clone()).await;

    // A server that lets only another origin's pages call it.
    let closed = Server::start_with(&["--cors-allowed-origins", "http://127.0.0.1:1"]).await;
    let closed_api = closed.client();
    let closed_app = closed_api
        .create("/api/v1/app", json!({"name": "Customer C"}))
        .await;
    let closed_app_id = closed_app["id"].as_str().unwrap().to_string();
    closed_api
        .create(
            &format!("/api/v1/app/{closed_app_id}/endpoint"),
            json!({"url": "https://c.example/hook"}),
        )
        .await;
    let closed_token = portal_token(closed_api, closed_app_id.clone()).await;

    let runs = json!([
        {"name": "listed", "serverUrl": open.base, "token": token, "app": app_id},
        {"name": "otherApp", "serverUrl": open.base, "token": token, "app": other_id},
        {"name": "refused", "serverUrl": closed.base, "token": closed_token, "app": closed_app_id},
    ]);
    let shots = screenshot_dir("svix-sdk-");
    let r = run_browser_script(
        &node,
        "svix_sdk",
        &modules,
        &shots,
        &[("RUNS", runs.to_string())],
        Duration::from_secs(60),
    )
    .await;
    let s = &r["steps"];
    let origin = s["origin"].as_str().unwrap();
    assert_ne!(origin, open.base);
    assert_eq!(s["sdkVersion"], "2.5.0", "{r:#}");

    // The page listed exactly what the API holds for that application, in its order.
    let (_, eps) = api
        .get(&format!("/api/v1/app/{app_id}/endpoint?limit=50"))
        .await;
    let expected: Vec<Value> = eps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!({"id": e["id"], "url": e["url"]}))
        .collect();
    assert_eq!(expected.len(), 3);
    let listed = &s["listed"];
    assert_eq!(listed["error"], Value::Null, "{r:#}");
    assert_eq!(listed["endpoints"], json!(expected), "{r:#}");
    assert_eq!(listed["done"], "true");
    // Sent from the other origin, as the SDK sends it, with no cookie.
    let sent = listed["sent"].as_array().unwrap();
    assert!(
        sent.iter().any(|q| q["method"] == "GET"
            && q["origin"] == origin
            && q["status"] == 200
            && q["allowOrigin"] == "*"
            && q["url"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}/api/v1/app/{app_id}/endpoint", open.base))),
        "{r:#}"
    );
    assert!(sent.iter().all(|q| q["cookie"] == false), "{r:#}");

    // The portal token reaches no other application: the API's refusal, as the SDK
    // reports it (an HTTP code, so CORS let the answer through).
    let refusal = s["otherApp"]["error"].as_str().unwrap_or_default();
    assert!(
        refusal.contains("HTTP-Code: 403") || refusal.contains("HTTP-Code: 404"),
        "{r:#}"
    );
    assert_eq!(s["otherApp"]["endpoints"], json!([]));

    // With --cors-allowed-origins naming another origin, the browser refuses the
    // answer: the SDK sees a network error, the console says why, nothing is listed.
    let refused = &s["refused"];
    assert_eq!(refused["endpoints"], json!([]), "{r:#}");
    assert_eq!(refused["error"], "TypeError: Failed to fetch", "{r:#}");
    assert!(
        r["consoleErrors"].as_array().unwrap().iter().any(|e| {
            let text = e["text"].as_str().unwrap();
            text.contains(&closed.base) && text.contains("blocked by CORS policy")
        }),
        "no CORS refusal in the page's console: {r:#}"
    );
    // The open server's answers raised no CORS error.
    assert!(
        r["consoleErrors"].as_array().unwrap().iter().all(|e| {
            !e["text"].as_str().unwrap().contains(&open.base)
                || !e["text"].as_str().unwrap().contains("CORS")
        }),
        "{r:#}"
    );
    assert_eq!(r["pageErrors"], json!([]), "{r:#}");
}

/// An HTTP client that shows redirects instead of following them, with no cookie jar.
pub(crate) fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in and returns the `Cookie` header value and the CSRF token of the apps page.
pub(crate) async fn sign_in(server: &Server, http: &reqwest::Client) -> (String, String) {
    let resp = http
        .post(server.url("/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let set = cookie_of(&resp, "hookline_console").expect("a session cookie");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = http
        .get(server.url("/apps"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_string();
    (cookie, csrf)
}

#[tokio::test]
async fn forms_need_the_sessions_csrf_token_and_tokens_are_checked() {
    let server = Server::start().await;
    let http = plain_client();

    // No session: pages send to the sign-in form.
    let resp = http.get(server.url("/apps")).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/");
    let resp = http.get(server.url("/")).send().await.unwrap();
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    // A wrong token, and an app-portal token, get no session.
    let resp = http
        .post(server.url("/login"))
        .form(&[("token", "sk_wrong_token_0123456789")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(cookie_of(&resp, "hookline_console").is_none());
    let api = server.client();
    let (_, app) = api.post("/api/v1/app", json!({"name": "Portal"})).await;
    let (_, portal) = api
        .post(
            &format!(
                "/api/v1/auth/app-portal-access/{}",
                app["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    let resp = http
        .post(server.url("/login"))
        .form(&[("token", portal["token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(cookie_of(&resp, "hookline_console").is_none());
    assert!(resp.text().await.unwrap().contains("needs an admin token"));

    // Over https (a proxy says so), the cookie is Secure.
    let resp = http
        .post(server.url("/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let set = cookie_of(&resp, "hookline_console").unwrap();
    assert!(
        set.contains("; Secure") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );

    let (cookie, csrf) = sign_in(&server, &http).await;
    let count = |v: Value| v["data"].as_array().unwrap().len();
    let (_, before) = api.get("/api/v1/app").await;

    // Without the CSRF field, with another one, or posted cross-site: refused, nothing made.
    for (form, cross) in [
        (vec![("name", "Sneaky")], false),
        (vec![("name", "Sneaky"), ("csrf", "not-the-token")], false),
        (vec![("name", "Sneaky"), ("csrf", csrf.as_str())], true),
    ] {
        let mut req = http
            .post(server.url("/apps"))
            .header("cookie", &cookie)
            .form(&form);
        if cross {
            req = req.header("sec-fetch-site", "cross-site");
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403, "{form:?} cross-site {cross}");
    }
    let (_, after) = api.get("/api/v1/app").await;
    assert_eq!(count(before.clone()), count(after));

    // With it: created, and the API's validation shows next to the field.
    let resp = http
        .post(server.url("/apps"))
        .header("cookie", &cookie)
        .form(&[("name", "Made here"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = http
        .post(server.url("/apps"))
        .header("cookie", &cookie)
        .form(&[("name", ""), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let page = resp.text().await.unwrap();
    assert!(page.contains("id=\"f-name-error\""), "{page}");
    let (_, after) = api.get("/api/v1/app").await;
    assert_eq!(count(after), count(before) + 1);

    // An application that does not exist is a 404 page; a page with ids that are not
    // plain segments cannot reach another API path.
    for path in [
        "/apps/app_missing",
        "/apps/..%2F..%2Fapp",
        "/apps/x%3Flimit=1",
    ] {
        let resp = http
            .get(server.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }

    // Signing out ends the session on the server, not just in the browser.
    let resp = http
        .post(server.url("/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = http
        .get(server.url("/apps"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
}

async fn preflight(http: &reqwest::Client, url: &str, origin: &str) -> reqwest::Response {
    http.request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_answers_any_origin_by_default_and_only_the_listed_ones_when_set() {
    let http = plain_client();

    let server = Server::start().await;
    let resp = preflight(&http, &server.url("/api/v1/app"), "http://127.0.0.1:1").await;
    assert!(resp.status().is_success());
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(
        header(&resp, "access-control-allow-headers").as_deref(),
        Some("authorization,content-type,idempotency-key")
    );
    // Never credentialed: no cookie could ride along.
    assert!(header(&resp, "access-control-allow-credentials").is_none());
    // Answered on actual requests too, errors included, but not by /metrics or the console.
    let resp = http
        .get(server.url("/api/v1/app"))
        .header("origin", "http://127.0.0.1:1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    for path in ["/metrics", "/"] {
        let resp = http
            .get(server.url(path))
            .header("origin", "http://127.0.0.1:1")
            .send()
            .await
            .unwrap();
        assert!(
            header(&resp, "access-control-allow-origin").is_none(),
            "{path}"
        );
    }

    let listed = "http://127.0.0.1:4321";
    let server = Server::start_with_env(&[], &[("HOOKLINE_CORS_ALLOWED_ORIGINS", listed)]).await;
    let resp = preflight(&http, &server.url("/api/v1/app"), listed).await;
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(listed)
    );
    let resp = preflight(&http, &server.url("/api/v1/app"), "http://127.0.0.1:9999").await;
    assert!(header(&resp, "access-control-allow-origin").is_none());
}
