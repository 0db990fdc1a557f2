//! `GET /api/v1/openapi.json`: a valid OpenAPI 3.x document (checked with the Python
//! `openapi-spec-validator`) that lists exactly the routes the server serves: every
//! documented path+method answers (with and without a trailing slash), documented paths
//! refuse undocumented methods with 405, undocumented paths are 404, and no route the
//! Svix SDK knows is served without being documented. Requests carry `{}` bodies and
//! mostly nonexistent ids, so they exercise routing, not the handlers.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::{json, Value};

use crate::support::{require_python, Api, Server};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Whether the server answered "there is no such route" (as opposed to a handler's
/// answer, such as "application not found").
fn route_miss(status: u16, body: &Value) -> bool {
    status == 405 || (status == 404 && body["detail"] == json!("no such route"))
}

/// Whether a concrete path matches a templated one (`{x}` matches one segment).
fn matches_template(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}')) || t == p)
}

/// Replaces each `{name}` with `values[name]`, or `fallback(name)` when unknown.
fn fill(
    template: &str,
    values: &BTreeMap<&str, String>,
    fallback: &dyn Fn(&str) -> String,
) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').expect("closing brace") + start;
        let name = &rest[start + 1..end];
        out.push_str(&rest[..start]);
        out.push_str(&values.get(name).cloned().unwrap_or_else(|| fallback(name)));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn body_for(method: &str) -> Option<Value> {
    matches!(method, "POST" | "PUT" | "PATCH").then(|| json!({}))
}

/// The documented operations: path template -> methods.
fn operations(spec: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let paths = spec["paths"].as_object().expect("paths object");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("path item")
                .keys()
                .map(|m| m.to_ascii_uppercase())
                .filter(|m| METHODS.contains(&m.as_str()))
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

fn documented(ops: &BTreeMap<String, BTreeSet<String>>, method: &str, path: &str) -> bool {
    ops.iter()
        .any(|(t, ms)| ms.contains(method) && matches_template(t, path))
}

fn run_python(python: &std::path::Path, script: &str, arg: &str) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(arg)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

const VALIDATE: &str = r#"
import json, sys
from openapi_spec_validator import validate
with open(sys.argv[1]) as f:
    spec = json.load(f)
try:
    validate(spec)
except Exception as e:
    # The message, not the validator's deep traceback.
    print(f"invalid: {type(e).__name__}: {e}")
else:
    print("valid")
"#;

/// Every (method, path) the installed Svix Python SDK calls.
const SVIX_ROUTES: &str = r#"
import json, pathlib, re, sys, svix
routes = set()
for f in (pathlib.Path(svix.__file__).parent / "api").glob("*.py"):
    for m in re.finditer(r'method="(\w+)",\s*path="([^"]+)"', f.read_text()):
        routes.add((m.group(1).upper(), m.group(2)))
print(json.dumps(sorted(routes)))
"#;

async fn fetch_spec(server: &Server) -> Value {
    let anonymous = server.client().with_token(None);
    let (status, spec) = anonymous.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200, "the document needs no auth: {spec}");
    assert!(spec.is_object(), "the document is JSON: {spec}");
    let (status, again) = anonymous.get("/api/v1/openapi.json/").await;
    assert_eq!((status, &again), (200, &spec));
    spec
}

#[tokio::test]
async fn openapi_document_is_valid() {
    let server = Server::start().await;
    let spec = fetch_spec(&server).await;
    let version = spec["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "OpenAPI 3.x, got {version}");
    assert!(spec["info"]["title"].is_string());
    let ops = operations(&spec);
    for must in [
        "/api/v1/app",
        "/api/v1/app/{app_id}",
        "/api/v1/app/{app_id}/endpoint",
        "/api/v1/app/{app_id}/msg",
        "/api/v1/event-type",
        "/api/v1/health",
        "/api/v1/openapi.json",
    ] {
        assert!(ops.contains_key(must), "{must} is not documented");
    }

    let Some(python) = require_python("openapi_document_is_valid") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&spec).unwrap()).expect("write spec");
    let out = run_python(&python, VALIDATE, file.to_str().unwrap());
    assert_eq!(out.trim(), "valid");
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_served_routes() {
    let server = Server::start().await;
    let api = server.client();
    let spec = fetch_spec(&server).await;
    let ops = operations(&spec);
    assert!(ops.len() >= 10, "suspiciously few paths: {ops:?}");

    // Real objects for the path parameters.
    api.create(
        "/api/v1/event-type",
        json!({"name": "doc.check", "description": "for the route walk"}),
    )
    .await;
    let app = api
        .create("/api/v1/app", json!({"name": "Doc", "uid": "doc-app"}))
        .await;
    let app_id = app["id"].as_str().unwrap().to_string();
    let ep = api
        .create(
            &format!("/api/v1/app/{app_id}/endpoint"),
            json!({"url": "http://127.0.0.1:9/doc"}),
        )
        .await;
    let msg = api
        .create(
            &format!("/api/v1/app/{app_id}/msg"),
            json!({"eventType": "doc.check", "payload": {"x": 1}}),
        )
        .await;
    let real: BTreeMap<&str, String> = [
        ("app_id", app_id.clone()),
        ("endpoint_id", ep["id"].as_str().unwrap().to_string()),
        ("msg_id", msg["id"].as_str().unwrap().to_string()),
        ("event_type_name", "doc.check".to_string()),
    ]
    .into();
    let nonexistent = |name: &str| format!("nonexistent-{}", name.replace('_', "-"));
    let none: BTreeMap<&str, String> = BTreeMap::new();

    let mut problems = Vec::new();
    let call = |api: &Api, method: &'static str, path: String| {
        let api = api.clone();
        async move { api.call(method, &path, body_for(method)).await }
    };

    // 1. Every documented operation exists, with nonexistent ids (all methods) and with
    //    real ids (all but DELETE), and answers the same with a trailing slash.
    for (template, methods) in &ops {
        for method in METHODS.iter().filter(|m| methods.contains(**m)) {
            let mut variants = vec![fill(template, &none, &nonexistent)];
            if *method != "DELETE" && template.contains('{') {
                variants.push(fill(template, &real, &nonexistent));
            }
            for path in variants {
                let (status, body) = call(&api, method, path.clone()).await;
                if route_miss(status, &body) {
                    problems.push(format!("{method} {path} (documented): {status} {body}"));
                    continue;
                }
                // Same route with a trailing slash; a GET gives the same answer (writes
                // may not: the first call changed something).
                let (status2, body2) = call(&api, method, format!("{path}/")).await;
                if route_miss(status2, &body2) || (*method == "GET" && status2 != status) {
                    problems.push(format!(
                        "{method} {path}/ (trailing slash): {status2} {body2}, without: {status}"
                    ));
                }
            }
            // A GET with real ids for every parameter finds what it asks for.
            let all_known = template
                .split('{')
                .skip(1)
                .all(|p| real.contains_key(p.split('}').next().unwrap()));
            if *method == "GET" && all_known {
                let path = fill(template, &real, &nonexistent);
                let (status, body) = api.get(&path).await;
                if status != 200 {
                    problems.push(format!("GET {path} with real ids: {status} {body}"));
                }
            }
        }
        // 2. Methods a documented path does not list are 405, not silently served.
        for method in METHODS.iter().filter(|m| !methods.contains(**m)) {
            let path = fill(template, &none, &nonexistent);
            let (status, body) = call(&api, method, path.clone()).await;
            if status != 405 || body["code"] != json!("method_not_allowed") {
                problems.push(format!(
                    "{method} {path} is not documented but answers {status} {body}"
                ));
            }
        }
    }

    // 3. Paths that are not documented are 404 with the JSON error shape, with or
    //    without a token.
    let ep_id = &real["endpoint_id"];
    let msg_id = &real["msg_id"];
    // (`/` itself is the web console's sign-in page, tested in `console::`.)
    let samples = [
        "/nope".to_string(),
        "/api".to_string(),
        "/api/v1".to_string(),
        "/api/v1/nope".to_string(),
        "/api/v2/app".to_string(),
        "/api/v1/openapi.yaml".to_string(),
        "/api/v1/apps".to_string(),
        format!("/api/v1/app/{app_id}/nope"),
        format!("/api/v1/app/{app_id}/endpoint/{ep_id}/nope"),
        format!("/api/v1/app/{app_id}/endpoint/{ep_id}/secret/nope"),
        format!("/api/v1/app/{app_id}/msg/{msg_id}/nope/deeper"),
        "/api/v1/event-type/doc.check/nope".to_string(),
        "/API/V1/APP".to_string(),
    ];
    for path in &samples {
        assert!(
            !METHODS.iter().any(|m| documented(&ops, m, path)),
            "sample {path} is documented; pick another"
        );
        for (who, client) in [("admin", api.clone()), ("anonymous", api.with_token(None))] {
            for method in ["GET", "POST"] {
                let (status, body) = client.call(method, path, body_for(method)).await;
                if status != 404
                    || body["code"] != json!("not_found")
                    || !body["detail"].is_string()
                {
                    problems.push(format!(
                        "{method} {path} ({who}, undocumented): {status} {body}, want 404 not_found"
                    ));
                }
            }
        }
    }

    // 4. No route the Svix SDK knows is served unless documented.
    if let Some(python) = require_python("openapi_document_lists_exactly_the_served_routes") {
        let out = run_python(&python, SVIX_ROUTES, "");
        let routes: Vec<(String, String)> = serde_json::from_str(&out).expect("route list");
        assert!(
            routes.len() > 50,
            "found only {} Svix SDK routes",
            routes.len()
        );
        for (method, template) in routes {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let path = fill(&template, &none, &nonexistent);
            if documented(&ops, &method, &path) {
                continue;
            }
            let (status, body) = api.call(&method, &path, body_for(&method)).await;
            if !route_miss(status, &body) {
                problems.push(format!(
                    "{method} {template} is served ({status} {body}) but not in the OpenAPI document"
                ));
            }
        }
    }

    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every operation documents the error answers of its kind (the trust issue's item 6):
/// 401, 429 and 503 where a token is needed, 403 where it writes, 404 where an id is in
/// the path, 422 where there is a query, 400, 413 and 422 where there is a body, 409 on a
/// write. And what the server really answers
/// without a token is a 401 the document lists.
#[tokio::test]
async fn every_operation_documents_the_errors_of_its_kind() {
    let server = Server::start().await;
    let spec = fetch_spec(&server).await;
    let anonymous = server.client().with_token(None);
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.to_ascii_uppercase().as_str()) {
                continue;
            }
            let codes: BTreeSet<&str> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let mut want = vec![];
            if secured {
                want.extend(["401", "429", "503"]);
                if path.contains('{') {
                    want.push("404");
                }
                if method != "get" {
                    want.push("403");
                }
                if matches!(method.as_str(), "post" | "put" | "patch") {
                    want.push("409");
                }
            }
            let has_query = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            if has_query {
                want.push("422");
            }
            if op.get("requestBody").is_some() {
                want.extend(["400", "413", "422"]);
            }
            for code in want {
                assert!(
                    codes.contains(code),
                    "{method} {path} does not document {code}: {codes:?}"
                );
            }
            if secured {
                let url = path.replace(['{', '}'], "");
                let (status, body) = anonymous
                    .call(&method.to_ascii_uppercase(), &url, Some(json!({})))
                    .await;
                assert_eq!(status, 401, "{method} {url} without a token: {body}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} secured operations");
    eprintln!("{checked} secured operations answer 401 without a token, as documented");
}

/// The document states the constraints the server enforces (spot checks; the contract
/// test, `contract::`, fuzzes all of them): list `limit` 1 to 250, attempt filters as
/// enums, bounded and patterned body fields, optional bodies, and response examples.
#[tokio::test]
async fn openapi_document_states_the_constraints() {
    let server = Server::start().await;
    let spec = fetch_spec(&server).await;
    let param = |path: &str, name: &str| -> Value {
        spec["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path} has parameters"))
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("GET {path} has {name}"))["schema"]
            .clone()
    };
    let mut lists = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let Some(ps) = item["get"]["parameters"].as_array() else {
            continue;
        };
        if let Some(limit) = ps.iter().find(|p| p["name"] == "limit") {
            assert_eq!(limit["schema"]["minimum"], json!(1), "{path}");
            assert_eq!(limit["schema"]["maximum"], json!(250), "{path}");
            lists += 1;
        }
    }
    assert!(lists >= 8, "only {lists} lists document limit");
    let by_endpoint = "/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}";
    assert_eq!(param(by_endpoint, "status")["enum"], json!([0, 2]));
    assert_eq!(
        param(by_endpoint, "status_code_class")["enum"],
        json!([0, 100, 200, 300, 400, 500])
    );
    assert_eq!(
        param("/api/v1/app/{app_id}/endpoint/{endpoint_id}/msg", "status")["enum"],
        json!([0, 1, 2, 3])
    );
    assert!(param("/api/v1/app/{app_id}", "app_id")["pattern"].is_string());

    let schemas = &spec["components"]["schemas"];
    let endpoint_in = &schemas["EndpointIn"]["properties"];
    assert_eq!(endpoint_in["url"]["format"], json!("uri"));
    assert_eq!(endpoint_in["url"]["maxLength"], json!(2048));
    assert_eq!(endpoint_in["timeoutMs"]["minimum"], json!(100));
    assert_eq!(endpoint_in["timeoutMs"]["maximum"], json!(60000));
    let header_names = endpoint_in["headers"]["propertyNames"]["pattern"]
        .as_str()
        .expect("header names have a pattern");
    assert!(
        header_names.contains("[wW][eE][bB][hH][oO][oO][kK]-"),
        "{header_names}"
    );
    assert_eq!(
        schemas["ApplicationIn"]["properties"]["name"]["maxLength"],
        json!(256)
    );
    assert_eq!(
        schemas["MessageAttemptOut"]["properties"]["status"]["enum"],
        json!([0, 2])
    );
    assert_eq!(
        endpoint_in["retryPolicy"]["oneOf"].as_array().map(Vec::len),
        Some(5),
        "four kinds and null"
    );

    // Bodies that may be left out say so.
    for path in [
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
        "/api/v1/auth/app-portal-access/{app_id}",
    ] {
        let body = &spec["paths"][path]["post"]["requestBody"];
        assert_ne!(body["required"], json!(true), "{path}: {body}");
    }
    // The main shapes carry examples.
    for (name, field) in [
        ("ApplicationOut", "id"),
        ("EndpointOut", "url"),
        ("MessageOut", "eventType"),
        ("MessageAttemptOut", "responseStatusCode"),
        ("EventTypeOut", "name"),
    ] {
        assert!(
            !schemas[name]["properties"][field]["example"].is_null(),
            "{name}.{field} has no example"
        );
    }
}
