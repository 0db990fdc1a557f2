//! HTTP clients: hyper-util's pooled keep-alive client (the same stack reqwest, and so
//! hookline's delivery client, is built on), used raw for the baseline and wrapped as
//! [`Api`] for hookline's management API.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive HTTP/1.1 client that keeps up to `pool` idle connections per host.
pub fn client(pool: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// The payload every scenario sends: a JSON object of exactly `size` bytes that starts
/// with `{"seq":N` so the receiver can tell which message a delivery is.
pub struct Payloads {
    pad: String,
    size: usize,
}

impl Payloads {
    pub fn new(size: usize) -> Self {
        Self {
            pad: "x".repeat(size),
            size,
        }
    }

    pub fn payload(&self, seq: u64) -> String {
        let head = format!("{{\"seq\":{seq},\"pad\":\"");
        let pad = self.size.saturating_sub(head.len() + 2);
        format!("{head}{}\"}}", &self.pad[..pad])
    }

    /// A message-create body for `POST /api/v1/app/{app}/msg`.
    pub fn message(&self, seq: u64, deliver_at: Option<&str>) -> Bytes {
        let at = deliver_at
            .map(|t| format!(",\"deliverAt\":\"{t}\""))
            .unwrap_or_default();
        Bytes::from(format!(
            "{{\"eventType\":\"bench.event\",\"payload\":{}{at}}}",
            self.payload(seq)
        ))
    }
}

/// hookline's management API, as the admin.
#[derive(Clone)]
pub struct Api {
    client: HttpClient,
    base: String,
    auth: HeaderValue,
}

impl Api {
    pub fn new(addr: std::net::SocketAddr, token: &str) -> Self {
        Self {
            client: client(256),
            base: format!("http://{addr}/api/v1"),
            auth: HeaderValue::from_str(&format!("Bearer {token}")).expect("token is ASCII"),
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.auth.clone());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        let resp = self
            .client
            .request(req)
            .await
            .with_context(|| format!("request to {path}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `http://127.0.0.1:PORT`, the server's own pages (the console) hang off it.
    pub fn origin(&self) -> &str {
        self.base.trim_end_matches("/api/v1")
    }

    /// `GET /metrics`: the value of each counter named in `names` (summed over labels).
    pub async fn counters(&self, names: &[&str]) -> anyhow::Result<Vec<f64>> {
        let base = self.base.trim_end_matches("/api/v1");
        let req = Request::builder()
            .uri(format!("{base}/metrics"))
            .body(Full::new(Bytes::new()))?;
        let resp = self.client.request(req).await.context("GET /metrics")?;
        let text = resp.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&text);
        Ok(names
            .iter()
            .map(|name| {
                text.lines()
                    .filter(|l| {
                        l.strip_prefix(name)
                            .is_some_and(|rest| rest.starts_with([' ', '{']))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            })
            .collect())
    }

    /// `GET /api/v1/health` answers 200.
    pub async fn healthy(&self) -> bool {
        matches!(self.request(Method::GET, "/health", None).await, Ok((s, _)) if s == StatusCode::OK)
    }

    async fn post_expect(&self, path: &str, body: Bytes, want: StatusCode) -> anyhow::Result<()> {
        let (status, resp) = self.request(Method::POST, path, Some(body)).await?;
        if status != want {
            bail!(
                "POST {path}: expected {want}, got {status}: {}",
                String::from_utf8_lossy(&resp)
            );
        }
        Ok(())
    }

    /// `POST /api/v1/app` with `uid` (referred to by its uid afterwards).
    pub async fn create_app(&self, uid: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({"name": format!("bench {uid}"), "uid": uid});
        self.post_expect("/app", body.to_string().into(), StatusCode::CREATED)
            .await
    }

    /// `POST /api/v1/app/{app}/endpoint` with `body` (`url` and any settings).
    pub async fn create_endpoint(&self, app: &str, body: serde_json::Value) -> anyhow::Result<()> {
        self.post_expect(
            &format!("/app/{app}/endpoint"),
            body.to_string().into(),
            StatusCode::CREATED,
        )
        .await
    }

    /// `POST /api/v1/app/{app}/msg`; returns when the 202 arrived.
    pub async fn create_message(&self, app: &str, body: Bytes) -> anyhow::Result<Instant> {
        self.post_expect(&format!("/app/{app}/msg"), body, StatusCode::ACCEPTED)
            .await?;
        Ok(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_exact_size_and_parse() {
        let p = Payloads::new(1024);
        for seq in [0, 7, 123_456_789] {
            let s = p.payload(seq);
            assert_eq!(s.len(), 1024);
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            assert_eq!(v["seq"], seq);
            assert_eq!(crate::receiver::parse_seq(s.as_bytes()), Some(seq));
        }
        let m: serde_json::Value =
            serde_json::from_slice(&p.message(3, Some("2030-01-01T00:00:00Z"))).unwrap();
        assert_eq!(m["payload"]["seq"], 3);
        assert_eq!(m["deliverAt"], "2030-01-01T00:00:00Z");
    }
}
