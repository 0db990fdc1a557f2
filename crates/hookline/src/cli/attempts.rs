//! `hookline attempts`: the attempt log of a message or an endpoint, oldest first, and
//! with `--follow` the new attempts as they are made (the API is polled; attempts are
//! told apart by id, so none is printed twice).

use std::collections::HashSet;
use std::time::Duration;

use hookline_config::AttemptsArgs;
use serde_json::Value;

use super::{cell, colour, Client};

/// How often `--follow` asks for new attempts.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(args: AttemptsArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.api)?;
    let (segments, query): (Vec<&str>, Vec<(&str, String)>) = match (&args.msg, &args.endpoint) {
        (Some(msg), endpoint) => (
            vec!["app", &args.app, "attempt", "msg", msg],
            endpoint
                .iter()
                .map(|e| ("endpoint_id", e.clone()))
                .collect(),
        ),
        (None, Some(ep)) => (vec!["app", &args.app, "attempt", "endpoint", ep], vec![]),
        (None, None) => unreachable!("clap requires --msg or --endpoint"),
    };
    let mut seen = HashSet::new();
    let mut header_printed = false;
    let mut limit = args.limit;
    loop {
        let mut q = query.clone();
        q.push(("limit", limit.to_string()));
        let page = c.get_query(&segments, &q).await?;
        // Newest first from the API; printed oldest first, as a log reads.
        let mut fresh: Vec<&Value> = page["data"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        fresh.retain(|a| a["id"].as_str().is_some_and(|id| !seen.contains(id)));
        fresh.reverse();
        for a in fresh {
            seen.insert(a["id"].as_str().unwrap_or_default().to_string());
            if c.json {
                outln!("{a}");
            } else {
                if !header_printed {
                    print_row(&HEADERS.map(str::to_string), true);
                    header_printed = true;
                }
                print_row(&row(a), false);
            }
        }
        if !args.follow {
            if !c.json && !header_printed {
                eprintln!("hookline: no attempts yet");
            }
            return Ok(());
        }
        // Following: ask for as many as the API gives, so a burst between two polls is
        // not cut off.
        limit = 250;
        tokio::time::sleep(POLL).await;
    }
}

const HEADERS: [&str; 7] = [
    "TIME", "MESSAGE", "ENDPOINT", "RESULT", "CODE", "MS", "ERROR",
];

/// Column widths fixed up front: with --follow, rows are printed as they come.
const WIDTHS: [usize; 6] = [24, 31, 30, 7, 4, 6];

fn row(a: &Value) -> [String; 7] {
    let code = a["responseStatusCode"].as_u64().unwrap_or(0);
    [
        cell(&a["timestamp"]),
        cell(&a["msgId"]),
        cell(&a["endpointId"]),
        cell(&a["statusText"]),
        if code == 0 {
            "-".into()
        } else {
            code.to_string()
        },
        cell(&a["responseDurationMs"]),
        cell(&a["errorKind"]),
    ]
}

fn print_row(cells: &[String; 7], header: bool) {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        let text = if i == 3 && !header && colour() {
            let code = if c == "success" { "32" } else { "31" };
            format!("\x1b[{code}m{c:<7}\x1b[0m")
        } else if let Some(w) = WIDTHS.get(i) {
            format!("{c:<w$}")
        } else {
            c.clone()
        };
        line.push_str(&text);
        line.push_str("  ");
    }
    let line = line.trim_end();
    if header && colour() {
        outln!("\x1b[1m{line}\x1b[0m");
    } else {
        outln!("{line}");
    }
}
