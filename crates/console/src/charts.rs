//! Charts drawn on the server as inline SVG: an endpoint's attempts per hour by outcome
//! and their latency, from the API's `.../stats/attempts` buckets.
//!
//! No chart library and no script: an `<svg>` of `<rect>`s whose colours come from
//! classes in the console's stylesheet (the CSP allows no inline style, and classes
//! follow the dark theme). Each chart is an image with a text summary for screen readers
//! (`role="img"`, `<title>`, `<desc>`), each bar has a `<title>` for pointer users, and
//! the numbers themselves are in a table beside it.

use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde_json::Value;

/// One bucket of the API's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) start: DateTime<Utc>,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) p50_ms: Option<u64>,
    pub(crate) p99_ms: Option<u64>,
}

/// The buckets of a `.../stats/attempts` answer.
pub(crate) fn buckets(stats: &Value) -> Vec<Bucket> {
    stats["buckets"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|b| {
                    Some(Bucket {
                        start: b["start"].as_str()?.parse().ok()?,
                        succeeded: b["succeeded"].as_u64().unwrap_or(0),
                        failed: b["failed"].as_u64().unwrap_or(0),
                        p50_ms: b["p50Ms"].as_u64(),
                        p99_ms: b["p99Ms"].as_u64(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

// The drawing's coordinates (the SVG scales to the page's width).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 22.0;

fn plot_height() -> f64 {
    HEIGHT - TOP - BOTTOM
}

/// How a bucket's start is labelled: the hour over a day, the day and hour over more.
fn label(t: DateTime<Utc>, long: bool) -> String {
    if long {
        t.format("%b %-d %H:%M").to_string()
    } else {
        t.format("%H:%M").to_string()
    }
}

fn spans_days(b: &[Bucket]) -> bool {
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => l.start - f.start > chrono::Duration::hours(24),
        _ => false,
    }
}

/// The frame: axis line, the top and zero values, and the time at the start, middle
/// and end.
fn frame(b: &[Bucket], top_label: &str) -> Markup {
    let long = spans_days(b);
    let base = HEIGHT - BOTTOM;
    let ticks: Vec<(f64, String, &str)> = match b.len() {
        0 => Vec::new(),
        n => {
            let step = (WIDTH - LEFT - RIGHT) / n as f64;
            let mut t = vec![(LEFT, label(b[0].start, long), "start")];
            if n > 2 {
                t.push((
                    LEFT + step * (n / 2) as f64,
                    label(b[n / 2].start, long),
                    "middle",
                ));
            }
            t.push((WIDTH - RIGHT, label(b[n - 1].start, long), "end"));
            t
        }
    };
    html! {
        line.axis x1=(LEFT) y1=(base) x2=(WIDTH - RIGHT) y2=(base) {}
        text.tick x=(LEFT - 6.0) y=(TOP + 10.0) text-anchor="end" { (top_label) }
        text.tick x=(LEFT - 6.0) y=(base) text-anchor="end" { "0" }
        @for (x, text, anchor) in &ticks {
            text.tick x=(format!("{x:.1}")) y=(HEIGHT - 6.0) text-anchor=(anchor) { (text) }
        }
    }
}

/// One bar from `value` (of `max`) up, at bucket `i` of `n`; `lift` is where it starts.
fn bar(class: &str, i: usize, n: usize, lift: u64, value: u64, max: u64, tip: &str) -> Markup {
    let step = (WIDTH - LEFT - RIGHT) / n.max(1) as f64;
    let scale = plot_height() / max.max(1) as f64;
    let h = value as f64 * scale;
    let y = HEIGHT - BOTTOM - lift as f64 * scale - h;
    let w = (step * 0.8).max(1.0);
    html! {
        rect class=(class) x=(format!("{:.2}", LEFT + step * i as f64 + step * 0.1)) y=(format!("{y:.2}"))
            width=(format!("{w:.2}")) height=(format!("{h:.2}")) {
            title { (tip) }
        }
    }
}

/// Attempts per bucket, delivered below and failed stacked above. `what` names the
/// chart ("per hour over the last 24 hours").
pub(crate) fn attempts_chart(b: &[Bucket], id: &str, what: &str) -> Markup {
    let max = b.iter().map(|x| x.succeeded + x.failed).max().unwrap_or(0);
    let (ok, bad): (u64, u64) = b
        .iter()
        .fold((0, 0), |(o, f), x| (o + x.succeeded, f + x.failed));
    let long = spans_days(b);
    let busiest = b
        .iter()
        .filter(|x| x.succeeded + x.failed > 0)
        .max_by_key(|x| x.succeeded + x.failed);
    let summary = match busiest {
        None => format!("No attempts {what}."),
        Some(x) => format!(
            "{ok} delivered and {bad} failed {what}; the most in one bucket: {} at {}.",
            x.succeeded + x.failed,
            label(x.start, long)
        ),
    };
    let n = b.len();
    html! {
        svg.chart viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-labelledby=(format!("{id}-title {id}-desc")) xmlns="http://www.w3.org/2000/svg" {
            title id=(format!("{id}-title")) { "Attempts " (what) }
            desc id=(format!("{id}-desc")) { (summary) }
            (frame(b, &max.to_string()))
            @for (i, x) in b.iter().enumerate() {
                @if x.succeeded > 0 {
                    (bar("bar ok", i, n, 0, x.succeeded, max, &format!("{}: {} delivered", label(x.start, long), x.succeeded)))
                }
                @if x.failed > 0 {
                    (bar("bar bad", i, n, x.succeeded, x.failed, max, &format!("{}: {} failed", label(x.start, long), x.failed)))
                }
            }
        }
        p.legend aria-hidden="true" { span.key.ok {} " delivered " span.key.bad {} " failed" }
    }
}

/// Latency per bucket: the 99th percentile's bar with the median's in front of it.
pub(crate) fn latency_chart(b: &[Bucket], id: &str, what: &str) -> Markup {
    let max = b.iter().filter_map(|x| x.p99_ms).max().unwrap_or(0);
    let long = spans_days(b);
    let worst = b
        .iter()
        .filter(|x| x.p99_ms.is_some())
        .max_by_key(|x| x.p99_ms);
    let summary = match worst {
        None => format!("No attempts {what}."),
        Some(x) => format!(
            "The slowest bucket's 99th percentile: {} ms at {} (median {} ms).",
            x.p99_ms.unwrap_or(0),
            label(x.start, long),
            x.p50_ms.unwrap_or(0)
        ),
    };
    let n = b.len();
    html! {
        svg.chart viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-labelledby=(format!("{id}-title {id}-desc")) xmlns="http://www.w3.org/2000/svg" {
            title id=(format!("{id}-title")) { "Latency " (what) }
            desc id=(format!("{id}-desc")) { (summary) }
            (frame(b, &format!("{max} ms")))
            @for (i, x) in b.iter().enumerate() {
                @if let (Some(p50), Some(p99)) = (x.p50_ms, x.p99_ms) {
                    (bar("bar p99", i, n, 0, p99, max, &format!("{}: p99 {p99} ms", label(x.start, long))))
                    (bar("bar p50", i, n, 0, p50, max, &format!("{}: p50 {p50} ms", label(x.start, long))))
                }
            }
        }
        p.legend aria-hidden="true" { span.key.p50 {} " median (p50) " span.key.p99 {} " 99th percentile (p99)" }
    }
}

/// The charts' numbers: one row per bucket with attempts.
pub(crate) fn table(b: &[Bucket], caption: &str) -> Markup {
    let long = spans_days(b);
    let rows: Vec<&Bucket> = b.iter().filter(|x| x.succeeded + x.failed > 0).collect();
    html! {
        @if rows.is_empty() {
            p.empty { "No attempts in this window." }
        } @else {
            table.numbers {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "From (UTC)" } th scope="col" { "Delivered" } th scope="col" { "Failed" }
                    th scope="col" { "p50" } th scope="col" { "p99" }
                } }
                tbody {
                    @for x in rows {
                        tr {
                            td { time datetime=(x.start.to_rfc3339()) { (label(x.start, long)) } }
                            td { (x.succeeded) }
                            td { (x.failed) }
                            td { (x.p50_ms.unwrap_or(0)) " ms" }
                            td { (x.p99_ms.unwrap_or(0)) " ms" }
                        }
                    }
                }
            }
        }
    }
}

/// Delivered attempts as a share of all, to the percent (`None` without attempts).
pub(crate) fn success_rate(succeeded: u64, failed: u64) -> Option<String> {
    let all = succeeded + failed;
    (all > 0).then(|| {
        let pct = succeeded as f64 * 100.0 / all as f64;
        // 99.96 % is not 100 %: only all delivered shows as 100.
        if succeeded == all {
            "100 %".to_string()
        } else if pct >= 99.9 {
            format!("{:.2} %", (pct * 100.0).floor() / 100.0)
        } else {
            format!("{:.1} %", (pct * 10.0).floor() / 10.0)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Vec<Bucket> {
        buckets(&json!({"buckets": [
            {"start": "2026-01-01T00:00:00Z", "succeeded": 3, "failed": 1, "p50Ms": 20, "p99Ms": 90},
            {"start": "2026-01-01T01:00:00Z", "succeeded": 0, "failed": 0, "p50Ms": null, "p99Ms": null},
            {"start": "2026-01-01T02:00:00Z", "succeeded": 0, "failed": 2, "p50Ms": 5, "p99Ms": 7},
        ]}))
    }

    #[test]
    fn bars_are_drawn_for_each_outcome_with_attempts_only() {
        let b = sample();
        assert_eq!(b.len(), 3);
        let svg = attempts_chart(&b, "c", "per hour").into_string();
        assert_eq!(svg.matches("class=\"bar ok\"").count(), 1);
        assert_eq!(svg.matches("class=\"bar bad\"").count(), 2);
        assert!(svg.contains("3 delivered and 3 failed per hour"), "{svg}");
        assert!(!svg.contains("style="));
        let lat = latency_chart(&b, "l", "per hour").into_string();
        assert_eq!(lat.matches("class=\"bar p50\"").count(), 2);
        assert!(lat.contains("90 ms at 00:00"), "{lat}");
    }

    #[test]
    fn the_tallest_bar_fills_the_plot_and_the_others_scale() {
        let b = sample();
        let svg = attempts_chart(&b, "c", "x").into_string();
        // Bucket 0: 4 attempts (the most): 3 delivered from the base, 1 failed on top.
        let full = plot_height();
        assert!(
            svg.contains(&format!("height=\"{:.2}\"", full * 3.0 / 4.0)),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("y=\"{:.2}\"", TOP)),
            "the stack reaches the top: {svg}"
        );
    }

    #[test]
    fn the_table_lists_buckets_with_attempts() {
        let t = table(&sample(), "Attempts").into_string();
        assert_eq!(t.matches("<tr>").count(), 3, "header and two buckets: {t}");
        assert!(table(&[], "x").into_string().contains("No attempts"));
    }

    #[test]
    fn success_rates_round_down() {
        assert_eq!(success_rate(0, 0), None);
        assert_eq!(success_rate(5, 0).as_deref(), Some("100 %"));
        assert_eq!(success_rate(9999, 1).as_deref(), Some("99.99 %"));
        assert_eq!(success_rate(2, 1).as_deref(), Some("66.6 %"));
    }
}
