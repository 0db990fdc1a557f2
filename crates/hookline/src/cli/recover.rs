//! `hookline recover`: requeue an endpoint's failed deliveries since a time, then watch
//! them to their outcomes with a progress bar (on stderr, for a person at a terminal)
//! and print how many were recovered and how they ended.
//!
//! The API recovers in one transaction and says how many deliveries it requeued; their
//! outcomes are read from the endpoint's delivery counts (`/stats`), taken just before the
//! recovery: each recovered delivery leaves `fail`, and its outcome adds to `success` or
//! back to `fail`. Other traffic to the same endpoint meanwhile is counted alike, so the
//! figures are exact for an endpoint that gets nothing else while it recovers; the wait
//! also ends once the endpoint has nothing pending or in flight.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use hookline_config::{parse_duration, RecoverArgs};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};

use super::Client;

const POLL: Duration = Duration::from_millis(250);

/// `--since`/`--until`: RFC 3339, or a duration before `now`.
pub fn parse_time(flag: &str, s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    parse_duration(s)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| {
            anyhow!(
                "{flag}: `{s}` is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor a duration ago (90m, 2h, 3d)"
            )
        })
}

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    success: u64,
    fail: u64,
    outstanding: u64,
}

async fn stats(c: &Client, app: &str, ep: &str) -> anyhow::Result<Stats> {
    let s = c.get(&["app", app, "endpoint", ep, "stats"]).await?;
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    Ok(Stats {
        success: n("success"),
        fail: n("fail"),
        outstanding: n("pending") + n("sending"),
    })
}

pub async fn run(args: RecoverArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.api)?;
    let now = Utc::now();
    let since = parse_time("--since", &args.since, now)?;
    let mut body = json!({ "since": since.to_rfc3339() });
    if let Some(until) = &args.until {
        body["until"] = parse_time("--until", until, now)?.to_rfc3339().into();
    }
    let (app, ep) = (args.app.as_str(), args.endpoint.as_str());
    let before = stats(&c, app, ep).await?;
    let answer = c
        .send_json(
            Method::POST,
            &["app", app, "endpoint", ep, "recover"],
            &body,
        )
        .await?;
    let recovered = answer["recovered"]
        .as_u64()
        .ok_or_else(|| anyhow!("hookline's answer has no `recovered` count"))?;
    if args.no_wait || recovered == 0 {
        return report(c.json, recovered, None);
    }

    let bar = progress_bar(recovered);
    // The recovered deliveries left `fail`: what was failed before, less them, is the
    // base from which failures count again.
    let fail_base = before.fail.saturating_sub(recovered);
    let outcome = loop {
        let s = stats(&c, app, ep).await?;
        let delivered = s.success.saturating_sub(before.success).min(recovered);
        let failed = s.fail.saturating_sub(fail_base).min(recovered - delivered);
        bar.set_position(delivered + failed);
        bar.set_message(format!("{delivered} delivered, {failed} failed"));
        if delivered + failed >= recovered || s.outstanding == 0 {
            break (delivered, failed);
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    report(c.json, recovered, Some(outcome))
}

fn report(json: bool, recovered: u64, outcome: Option<(u64, u64)>) -> anyhow::Result<()> {
    if json {
        let mut v: Value = json!({ "recovered": recovered });
        if let Some((delivered, failed)) = outcome {
            v["delivered"] = delivered.into();
            v["failed"] = failed.into();
        }
        outln!("{v}");
    } else {
        match outcome {
            Some((delivered, failed)) => {
                outln!("recovered {recovered} deliveries: {delivered} delivered, {failed} failed")
            }
            None => outln!("recovered {recovered} deliveries"),
        }
    }
    Ok(())
}

/// On stderr, and only for a person at a terminal; scripts get the summary line.
fn progress_bar(len: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now: DateTime<Utc> = "2026-01-31T12:00:00Z".parse().unwrap();
        assert_eq!(
            parse_time("--since", "2026-01-30T00:00:00+01:00", now).unwrap(),
            "2026-01-29T23:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_time("--since", "2h", now).unwrap(),
            "2026-01-31T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let e = parse_time("--since", "yesterday", now).unwrap_err();
        assert!(e.to_string().starts_with("--since: `yesterday`"), "{e}");
    }
}
