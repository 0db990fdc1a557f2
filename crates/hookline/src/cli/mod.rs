//! The developer tools of the `hookline` binary: `listen`, the API commands (`app`,
//! `endpoint`, `event-type`, `send`, `attempts`, `recover`), `completions` and `man`.
//!
//! The API commands are a thin client of hookline's own HTTP API, as a person with curl
//! would use it: they know the paths and JSON shapes, nothing of the store. The client is
//! reqwest (rustls, webpki roots), already in the build as the e2e tests' client and with
//! hyper-rustls and ring already there for deliveries, so the CLI adds no TLS stack of its
//! own; hyper-util's bare client would have meant writing redirects-off, timeouts and
//! JSON handling again for no fewer crates.
//!
//! Output: tables (or `field: value` lines for one object) for a person, JSON lines with
//! `--json`. Colour only when stdout is a terminal and NO_COLOR is unset. Every failure is
//! one line on stderr (the API's `detail` for an API error) and exit status 1; clap's
//! usage errors exit 2.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, Context};
use hookline_config::{ApiArgs, Command};
use reqwest::{Method, Url};
use serde_json::Value;

/// `println!` that ends the process quietly, with status 0, when stdout is closed
/// (`hookline app list | head -1`), as ripgrep does, instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::cli::write_out(&format!("{}\n", format_args!($($t)*)))
    };
}

mod attempts;
mod docs;
mod recover;
mod resources;

/// Runs a developer-tool command; returns the process's exit status.
pub async fn run(command: Command) -> i32 {
    let result = match command {
        Command::Listen(args) => crate::listen::run(args).await,
        Command::App(args) => resources::app(args).await,
        Command::Endpoint(args) => resources::endpoint(args).await,
        Command::EventType(args) => resources::event_type(args).await,
        Command::Send(args) => resources::send(args).await,
        Command::Attempts(args) => attempts::run(args).await,
        Command::Recover(args) => recover::run(args).await,
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
        Command::Serve(_)
        | Command::Migrate(_)
        | Command::Copy(_)
        | Command::Backup(_)
        | Command::Token(_)
        | Command::RotateKey(_) => Err(anyhow!("not a developer tool")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hookline: {e:#}");
            1
        }
    }
}

/// Writes `text` to stdout; see [`outln!`].
pub fn write_out(text: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// An API call that got an error answer: the API's own `detail`, and the status.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: Option<String>,
    pub detail: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {}", self.detail, self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        f.write_str(")")?;
        if self.status == 401 {
            f.write_str("; check --token or HOOKLINE_TOKEN")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

/// The API's `detail`: a string, or a list of `{loc, msg}` field errors (422) rendered
/// as `field.path: msg; ...`.
fn detail_text(body: &Value) -> Option<String> {
    match body.get("detail")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .map(|item| {
                    let loc = item["loc"]
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .map(|p| match p {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    let msg = item["msg"].as_str().unwrap_or("invalid");
                    format!("{loc}: {msg}")
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => Some(other.to_string()),
    }
}

/// A client of one hookline's API.
pub struct Client {
    base: Url,
    token: String,
    http: reqwest::Client,
    pub json: bool,
}

impl Client {
    pub fn new(api: &ApiArgs) -> anyhow::Result<Client> {
        let base = Url::parse(&api.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                anyhow!(
                    "--url: `{}` is not an http:// or https:// URL (e.g. http://127.0.0.1:8080)",
                    api.url
                )
            })?;
        let token = api
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("no API token: pass --token or set HOOKLINE_TOKEN"))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("hookline-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            // An API call answered by a redirect is a misconfigured --url, not something
            // to follow with the token attached.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("setting up the HTTP client")?;
        Ok(Client {
            base,
            token,
            http,
            json: api.json,
        })
    }

    /// `/api/v1/` + the segments (each percent-encoded), under the base URL's own path.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("checked: an http(s) URL has a path");
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    /// Sends a request and returns the JSON answer (`Null` for an empty one); an error
    /// answer becomes an [`ApiFailure`].
    pub async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<String>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach hookline at {}: {} (is `hookline serve` running there? see --url / HOOKLINE_URL)",
                self.base,
                root_cause(&e)
            )
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| anyhow!("reading hookline's answer: {}", root_cause(&e)))?;
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_success() {
            return Ok(json);
        }
        let detail = detail_text(&json).unwrap_or_else(|| match &json {
            Value::String(s) if !s.is_empty() => s.chars().take(200).collect(),
            _ => status.canonical_reason().unwrap_or("error").to_string(),
        });
        Err(ApiFailure {
            status: status.as_u16(),
            code: json.get("code").and_then(Value::as_str).map(str::to_string),
            detail,
        }
        .into())
    }

    pub async fn get(&self, segments: &[&str]) -> anyhow::Result<Value> {
        self.call(Method::GET, self.url(segments), None).await
    }

    pub async fn get_query(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        let mut url = self.url(segments);
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        self.call(Method::GET, url, None).await
    }

    pub async fn send_json(
        &self,
        method: Method,
        segments: &[&str],
        body: &Value,
    ) -> anyhow::Result<Value> {
        self.call(method, self.url(segments), Some(body.to_string()))
            .await
    }
}

/// The innermost error's text ("Connection refused"), not reqwest's outer "error sending
/// request for url (...)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Whether to colour stdout: a terminal, and NO_COLOR unset (https://no-color.org).
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A value as a table cell: strings bare, null empty, the rest as compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// Rows aligned in columns under a header (bold on a colour terminal).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string()
    };
    let head = line(headers.iter().map(|h| h.to_string()).collect());
    let mut out = if colour() {
        format!("\x1b[1m{head}\x1b[0m\n")
    } else {
        format!("{head}\n")
    };
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

/// One object: a JSON line with `--json`, else `field: value` lines.
pub fn print_object(json: bool, v: &Value) {
    if json {
        outln!("{v}");
        return;
    }
    let Some(obj) = v.as_object() else {
        outln!("{}", cell(v));
        return;
    };
    let width = obj.keys().map(|k| k.chars().count()).max().unwrap_or(0);
    for (k, v) in obj {
        outln!("{k:width$}  {}", cell(v));
    }
}

/// A list page: JSON lines with `--json`, else a table of `columns` (JSON field, header).
/// A page that is not the last says how to get the next on stderr.
pub fn print_list(json: bool, page: &Value, columns: &[(&str, &str)]) {
    let items = page["data"].as_array().cloned().unwrap_or_default();
    if json {
        for item in &items {
            outln!("{item}");
        }
    } else {
        let headers: Vec<&str> = columns.iter().map(|(_, h)| *h).collect();
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|item| columns.iter().map(|(f, _)| cell(&item[*f])).collect())
            .collect();
        write_out(&table(&headers, &rows));
    }
    if page["done"] == Value::Bool(false) {
        if let Some(it) = page["iterator"].as_str() {
            eprintln!("hookline: more: add --iterator {it}");
        }
    }
}

/// `JSON`, `@FILE` or `-` (stdin), read and checked to be JSON; `what` names the flag.
pub fn read_json_arg(what: &str, arg: &str) -> anyhow::Result<Box<serde_json::value::RawValue>> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin())
            .with_context(|| format!("{what}: reading stdin"))?
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("{what}: reading {path}"))?
    } else {
        arg.to_string()
    };
    serde_json::from_str(text.trim()).map_err(|e| anyhow!("{what} is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn details_are_the_api_text_or_each_field() {
        assert_eq!(
            detail_text(&json!({"code": "not_found", "detail": "application not found"})),
            Some("application not found".into())
        );
        assert_eq!(
            detail_text(&json!({"detail": [
                {"loc": ["body", "url"], "msg": "must be http(s)"},
                {"loc": ["body", "filterTypes", 0], "msg": "unknown"}]})),
            Some("body.url: must be http(s); body.filterTypes.0: unknown".into())
        );
        assert_eq!(detail_text(&json!({"x": 1})), None);
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_segments() {
        let api = ApiArgs {
            url: "http://h:1/proxy/".into(),
            token: Some("t".into()),
            json: false,
        };
        let c = Client::new(&api).unwrap();
        assert_eq!(
            c.url(&["app", "a b/c", "msg"]).as_str(),
            "http://h:1/proxy/api/v1/app/a%20b%2Fc/msg"
        );
    }

    #[test]
    fn bad_url_or_missing_token_are_named() {
        let api = |url: &str, token: Option<&str>| ApiArgs {
            url: url.into(),
            token: token.map(str::to_string),
            json: false,
        };
        let e = Client::new(&api("127.0.0.1:8080", Some("t")))
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("--url:"), "{e}");
        let e = Client::new(&api("http://h", None)).err().unwrap();
        assert!(e.to_string().contains("HOOKLINE_TOKEN"), "{e}");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["app_1".into(), "Acme".into()],
                vec!["a".into(), "B".into()],
            ],
        );
        assert_eq!(t, "ID     NAME\napp_1  Acme\na      B\n");
    }
}
