//! The console's system page: how the delivery queue stands, attempts per minute over
//! the last hour, the endpoints that are failing, and the key figures of `/metrics`.
//!
//! The queue's and the process's figures are read from the server's own `/metrics`
//! (called in-process, as the API is), so the page and a Prometheus scrape cannot
//! disagree; attempts per minute and failing endpoints come from the API's statistics.
//! Counters in `/metrics` are this process's since it started: with several processes
//! on one PostgreSQL database, each counts its own (the queue figures are the
//! database's).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;
use tower::ServiceExt;

use crate::charts;
use crate::pages::{page, text, timestamp};
use crate::{redirect, seg, Console};

pub fn router() -> Router<Console> {
    Router::new().route("/system", get(system))
}

/// One sample of the Prometheus text: its name, its labels as written, its value.
#[derive(Debug, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: String,
    pub(crate) value: f64,
}

/// The samples of a Prometheus text exposition (comments and malformed lines skipped).
pub(crate) fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.trim().rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            Some(Sample {
                name: name.to_string(),
                labels: labels.to_string(),
                value,
            })
        })
        .collect()
}

fn value(samples: &[Sample], name: &str) -> Option<f64> {
    samples.iter().find(|s| s.name == name).map(|s| s.value)
}

/// The value of `label` in a sample's labels (`outcome="delivered"` gives `delivered`).
fn label_value<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == label).then(|| v.trim().trim_matches('"'))
    })
}

impl Console {
    /// The server's `/metrics` text, or `None` where metrics are off.
    async fn metrics_text(&self) -> Option<String> {
        let req = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .ok()?;
        let resp = match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        if resp.status() != StatusCode::OK {
            return None;
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// A number for people: whole when it is one, else to two decimals.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

async fn system(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(_q): Query<HashMap<String, String>>,
) -> Response {
    let Some(s) = c.session(&headers) else {
        return redirect("/");
    };
    use chrono::{DurationRound, SecondsFormat};
    let minute = chrono::Duration::minutes(1);
    let now = chrono::Utc::now();
    let this_minute = now.duration_trunc(minute).unwrap_or(now);
    let (since, until) = (this_minute - minute * 59, this_minute + minute);
    let path = format!(
        "stats/attempts?since={}&until={}&bucket_seconds=60",
        since.to_rfc3339_opts(SecondsFormat::Secs, true),
        until.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    let per_minute = match c.api_get(&s.token, &path).await {
        Ok(v) => v,
        Err(f) => return c.failed(&headers, &s, f),
    };
    let failing = match c
        .api_get(&s.token, "stats/failing-endpoints?limit=50")
        .await
    {
        Ok(v) => v,
        Err(f) => return c.failed(&headers, &s, f),
    };
    let metrics = c.metrics_text().await;
    let samples = metrics.as_deref().map(parse_metrics).unwrap_or_default();
    let buckets = charts::buckets(&per_minute);
    let what = "per minute over the last hour";
    let figure = |name: &str| value(&samples, name).map(number);
    let outcomes: Vec<(String, f64)> = samples
        .iter()
        .filter(|x| x.name == "hookline_attempts_total")
        .map(|x| {
            (
                label_value(&x.labels, "outcome").unwrap_or("?").to_string(),
                x.value,
            )
        })
        .collect();
    let mean_ms = match (
        value(&samples, "hookline_attempt_duration_seconds_sum"),
        value(&samples, "hookline_attempt_duration_seconds_count"),
    ) {
        (Some(sum), Some(n)) if n > 0.0 => Some(format!("{:.0} ms", sum * 1000.0 / n)),
        _ => None,
    };
    let limits = samples
        .iter()
        .filter(|x| x.name == "hookline_endpoint_concurrency_limit")
        .count();
    let rows = failing["data"].as_array().cloned().unwrap_or_default();
    let total_failing = failing["total"].as_u64().unwrap_or(0);
    let dash = || "—".to_string();
    page(
        StatusCode::OK,
        "System",
        Some(&s),
        html! {
            h1 { "System" }
            section aria-labelledby="queue" {
                h2 #queue { "Delivery queue" }
                @if metrics.is_none() {
                    p.error role="alert" { "This server's metrics are off, so the queue's figures cannot be shown." }
                }
                dl.figures {
                    div { dt { "Queued deliveries" } dd #queue-depth { (figure("hookline_deliveries_queued").unwrap_or_else(dash)) } }
                    div { dt { "Due now" } dd { (figure("hookline_deliveries_due").unwrap_or_else(dash)) } }
                    div { dt { "Delivery lag" } dd #delivery-lag { (figure("hookline_delivery_lag_seconds").map(|v| format!("{v} s")).unwrap_or_else(dash)) } }
                    div { dt { "Attempts in flight" } dd { (figure("hookline_attempts_in_flight").unwrap_or_else(dash)) } }
                    div { dt { "Failing endpoints" } dd #failing-count { (total_failing) } }
                }
            }
            section aria-labelledby="per-minute" {
                h2 #per-minute { "Attempts per minute" }
                p {
                    (per_minute["succeeded"]) " delivered, " (per_minute["failed"]) " failed in the last hour"
                    @if let Some(rate) = charts::success_rate(per_minute["succeeded"].as_u64().unwrap_or(0), per_minute["failed"].as_u64().unwrap_or(0)) {
                        " (" (rate) " delivered)"
                    }
                    "."
                }
                div.charts {
                    figure {
                        figcaption { "Attempts " (what) }
                        (charts::attempts_chart(&buckets, "chart-minutes", what))
                    }
                    figure {
                        figcaption { "Latency " (what) }
                        (charts::latency_chart(&buckets, "chart-minutes-latency", what))
                    }
                }
                details {
                    summary { "The numbers as a table" }
                    (charts::table(&buckets, &format!("Attempts {what}")))
                }
            }
            section aria-labelledby="failing" {
                h2 #failing { "Failing endpoints" }
                @if rows.is_empty() {
                    p.empty { "No endpoint is failing." }
                } @else {
                    @if total_failing > rows.len() as u64 {
                        p.hint { "The " (rows.len()) " failing longest of " (total_failing) "." }
                    }
                    table.failing {
                        thead { tr { th scope="col" { "Endpoint" } th scope="col" { "Application" } th scope="col" { "Failing since" } th scope="col" { "State" } } }
                        tbody {
                            @for e in &rows {
                                tr {
                                    td { a href=(format!("/apps/{}/endpoints/{}", seg(text(e, "appId")), seg(text(e, "id")))) { (text(e, "url")) } }
                                    td { a href=(format!("/apps/{}", seg(text(e, "appId")))) { code { (text(e, "appId")) } } }
                                    td { (timestamp(e, "failingSince")) }
                                    td {
                                        @if e["disabled"].as_bool() == Some(true) { span.badge.off { "Disabled" } }
                                        @else if e["retrying"].as_bool() == Some(true) { span.badge.wait { "Retrying" } }
                                        @else { span.badge.off { "Failing" } " " span.hint { "no retry due" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="process" {
                h2 #process { "This process" }
                p.hint { "From " a href="/metrics" { "/metrics" } ": counts since this process started." }
                @if metrics.is_some() {
                    table.metrics {
                        caption.visually-hidden { "Key metrics" }
                        thead { tr { th scope="col" { "Figure" } th scope="col" { "Value" } th scope="col" { "Metric" } } }
                        tbody {
                            @for (outcome, n) in &outcomes {
                                tr { td { "Attempts: " (outcome) } td { (number(*n)) } td { code { "hookline_attempts_total{outcome=\"" (outcome) "\"}" } } }
                            }
                            tr { td { "Mean attempt duration" } td { (mean_ms.clone().unwrap_or_else(dash)) } td { code { "hookline_attempt_duration_seconds" } } }
                            tr { td { "Endpoints with an adaptive limit now" } td { (limits) } td { code { "hookline_endpoint_concurrency_limit" } } }
                            tr { td { "API connections open" } td { (figure("hookline_api_connections_open").unwrap_or_else(dash)) } td { code { "hookline_api_connections_open" } } }
                            tr { td { "Storage full" } td { (match value(&samples, "hookline_storage_full") { Some(v) if v > 0.0 => "yes", Some(_) => "no", None => "—" }) } td { code { "hookline_storage_full" } } }
                            tr { td { "Writes refused for a full disk" } td { (figure("hookline_storage_full_writes_refused_total").unwrap_or_else(dash)) } td { code { "hookline_storage_full_writes_refused_total" } } }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_samples_are_read_with_their_labels() {
        let text = "# HELP x y\n# TYPE hookline_attempts_total counter\n\
            hookline_attempts_total{outcome=\"delivered\"} 12\n\
            hookline_attempts_total{outcome=\"failed\"} 3\n\
            hookline_delivery_lag_seconds 0.25\n\nbroken line\n";
        let s = parse_metrics(text);
        assert_eq!(s.len(), 3);
        assert_eq!(value(&s, "hookline_delivery_lag_seconds"), Some(0.25));
        assert_eq!(label_value(&s[1].labels, "outcome"), Some("failed"));
        assert_eq!(number(12.0), "12");
        assert_eq!(number(0.25), "0.25");
    }
}
