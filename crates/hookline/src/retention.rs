//! The retention pass (`--retention`): a background task that deletes messages, with their
//! deliveries and attempts, once they are older than the retention period, drops
//! payloads whose own retention (`payloadRetentionPeriod`/`Hours`) ended, and gives freed
//! space back. What may be deleted, and how safely with several processes, is the
//! store's ([`Store::prune_messages`]); here is only when, and how much at a time.
//!
//! **Small batches, sized by time.** Each batch reports how long it held the database;
//! the next one is sized so that it takes about [`TARGET`] (on SQLite that is the time
//! the writer thread, which every write waits for, spends on it). Between two batches the
//! task waits as long as the last one took, so retention never takes more than half of
//! the writer's time however large the backlog (the first pass after lowering the
//! retention, say): writes from the API interleave with it at every batch.
//!
//! **Cadence from the period.** A pass starts every fifth of the retention period,
//! between 1 s and 1 min: a 90-day retention looks once a minute, a 5 s one (tests)
//! every second, so nothing outlives its period by more than a fifth.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_store::{Pruned, Store};

/// How long one batch may hold the database.
pub const TARGET: Duration = Duration::from_millis(10);
/// Bounds of the batch size (messages looked at per batch).
const MIN_BATCH: usize = 1;
const MAX_BATCH: usize = 2000;
/// The first batch's size, before any has been measured.
const FIRST_BATCH: usize = 50;
/// Rows of attempt statistics deleted per batch (small rows, by an index: a few ms).
const STATS_BATCH: usize = 2000;
/// Most reclaim calls per pass (each gives back a bounded number of pages).
const MAX_RECLAIMS: usize = 64;

/// How often a pass starts, for a retention `period`: see the module docs.
pub fn interval(period: Duration) -> Duration {
    (period / 5).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The batch size, adapted to the time batches take.
#[derive(Debug, Clone, Copy)]
pub struct BatchSize(usize);

impl Default for BatchSize {
    fn default() -> Self {
        Self(FIRST_BATCH)
    }
}

impl BatchSize {
    pub fn get(self) -> usize {
        self.0
    }

    /// After a batch of the current size that looked at `examined` rows took `held`:
    /// aims the next at half of [`TARGET`] by the time per row just measured (batches
    /// of one size vary: rows differ, pages are cached or not), moving at most 4 times
    /// down or 1.5 times up at once (one slow batch, a pause of the machine, must not
    /// shrink it to nothing). A batch that found less than it may take says nothing of
    /// a larger one: the size stays.
    pub fn adapt(&mut self, examined: usize, held: Duration) {
        let aim = TARGET.as_secs_f64() * 0.5;
        if held > TARGET * 3 / 4 {
            let scaled = self.0 as f64 * aim / held.as_secs_f64();
            self.0 = (scaled as usize).max(self.0 / 4).max(MIN_BATCH);
        } else if examined >= self.0 && held < TARGET * 2 / 5 {
            let per_row = held.as_secs_f64() / examined.max(1) as f64;
            let fits = (aim / per_row.max(1e-9)) as usize;
            self.0 = fits.min(self.0 * 3 / 2).max(self.0).min(MAX_BATCH);
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub messages: u64,
    pub deliveries: u64,
    pub attempts: u64,
    pub payloads: u64,
    /// Rows of attempt statistics (the charts' counts) for hours before the cutoff.
    pub stats: u64,
    /// API tokens past their expiry, deleted.
    pub tokens: u64,
    pub pages_reclaimed: u64,
    pub batches: usize,
    /// The longest any batch held the database.
    pub longest: Duration,
}

impl PassReport {
    fn add(&mut self, p: &Pruned) {
        self.messages += p.messages;
        self.deliveries += p.deliveries;
        self.attempts += p.attempts;
        self.payloads += p.payloads;
        self.stats += p.stats;
        self.batches += 1;
        self.longest = self.longest.max(p.held);
        metrics::histogram!("hookline_retention_batch_seconds").record(p.held.as_secs_f64());
        for (kind, n) in [
            ("message", p.messages),
            ("delivery", p.deliveries),
            ("attempt", p.attempts),
            ("payload", p.payloads),
            ("attempt_stats", p.stats),
        ] {
            if n > 0 {
                metrics::counter!("hookline_pruned_total", "kind" => kind).increment(n);
            }
        }
    }
}

/// One pass: every message created before `before` that owes no delivery is deleted,
/// every payload whose retention ended by `now` is dropped, the attempt statistics of
/// hours before `before` go (the counts with the attempts they counted), API tokens
/// expired by `now` are deleted, and some free space is given back. `size` carries the batch size from pass to pass.
pub async fn pass(
    store: &dyn Store,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
    size: &mut BatchSize,
) -> hookline_store::Result<PassReport> {
    let mut report = PassReport::default();
    let mut after: Option<String> = None;
    loop {
        let p = store
            .prune_messages(before, after.as_deref(), size.get())
            .await?;
        report.add(&p);
        size.adapt(p.examined, p.held);
        after = p.next;
        if after.is_none() {
            break;
        }
        tokio::time::sleep(p.held).await;
    }
    loop {
        let limit = size.get();
        let p = store.drop_expired_payloads(now, limit).await?;
        report.add(&p);
        size.adapt(p.payloads as usize, p.held);
        if (p.payloads as usize) < limit {
            break;
        }
        tokio::time::sleep(p.held).await;
    }
    loop {
        let p = store.prune_attempt_stats(before, STATS_BATCH).await?;
        report.add(&p);
        if (p.stats as usize) < STATS_BATCH {
            break;
        }
        tokio::time::sleep(p.held).await;
    }
    report.tokens = store.purge_expired_tokens(now).await?;
    if report.tokens > 0 {
        metrics::counter!("hookline_pruned_total", "kind" => "token").increment(report.tokens);
    }
    if report.messages > 0 || report.payloads > 0 {
        for _ in 0..MAX_RECLAIMS {
            match store.reclaim_space().await? {
                0 => break,
                n => report.pages_reclaimed += n,
            }
        }
    }
    Ok(report)
}

/// Runs a pass every [`interval`] until the process stops (the task is aborted).
pub async fn run(store: Arc<dyn Store>, period: Duration) {
    let mut tick = tokio::time::interval(interval(period));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut size = BatchSize::default();
    let period = chrono::Duration::from_std(period).unwrap_or(chrono::Duration::MAX);
    loop {
        tick.tick().await;
        let now = hookline_store::now();
        let before = now
            .checked_sub_signed(period)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        match pass(store.as_ref(), before, now, &mut size).await {
            Ok(r) if r.messages + r.payloads + r.stats + r.tokens + r.pages_reclaimed == 0 => {
                tracing::trace!(batches = r.batches, "retention: nothing to delete")
            }
            Ok(r) => tracing::debug!(
                messages = r.messages,
                deliveries = r.deliveries,
                attempts = r.attempts,
                payloads = r.payloads,
                attempt_stats = r.stats,
                tokens = r.tokens,
                pages_reclaimed = r.pages_reclaimed,
                batches = r.batches,
                longest_batch_ms = r.longest.as_secs_f64() * 1000.0,
                batch_size = size.get(),
                "retention pass"
            ),
            // Storage trouble is logged by the store and the health check; the next
            // pass tries again.
            Err(e) => tracing::warn!(error = %e, "retention pass failed; retried at the next"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_store::sqlite::SqliteStore;
    use hookline_store::*;

    #[test]
    fn interval_is_a_fifth_of_the_period_within_a_second_and_a_minute() {
        assert_eq!(interval(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(interval(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(interval(Duration::from_secs(100)), Duration::from_secs(20));
        assert_eq!(
            interval(Duration::from_secs(90 * 86400)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn batch_size_follows_the_time_per_row() {
        let mut s = BatchSize::default();
        // Fast full batches grow it, at most 1.5 times at once, up to the bound.
        s.adapt(50, Duration::from_millis(1));
        assert_eq!(s.get(), 75);
        // Near half the target, where it aims: it stays.
        s.adapt(75, Duration::from_micros(4500));
        assert_eq!(s.get(), 75);
        for _ in 0..20 {
            s.adapt(s.get(), Duration::from_micros(100));
        }
        assert_eq!(s.get(), MAX_BATCH);
        // A slow batch shrinks it toward half the target, at most 4 times at once.
        s.adapt(MAX_BATCH, Duration::from_millis(20));
        assert_eq!(s.get(), MAX_BATCH / 4);
        s.adapt(500, Duration::from_millis(8));
        assert_eq!(s.get(), 312);
        // A batch that found less than it could take leaves it as it is.
        let before = s.get();
        s.adapt(3, Duration::from_micros(10));
        assert_eq!(s.get(), before);
        // It never reaches zero.
        for _ in 0..20 {
            s.adapt(s.get(), Duration::from_secs(1));
        }
        assert_eq!(s.get(), MIN_BATCH);
    }

    /// A pass deletes the API tokens past their expiry, and only those.
    #[tokio::test]
    async fn a_pass_deletes_expired_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
        let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        for (byte, expires_at) in [
            (1u8, Some(now - chrono::Duration::minutes(1))),
            (2, Some(now + chrono::Duration::days(1))),
            (3, None),
        ] {
            store
                .insert_token(hookline_store::ApiToken {
                    hash: [byte; 32],
                    expires_at,
                    created_at: now,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let mut size = BatchSize::default();
        let report = pass(&store, now - chrono::Duration::days(90), now, &mut size)
            .await
            .unwrap();
        assert_eq!(report.tokens, 1);
        let left: Vec<u8> = store
            .list_tokens(now - chrono::Duration::days(1))
            .await
            .unwrap()
            .iter()
            .map(|t| t.hash[0])
            .collect();
        assert_eq!(left, [2, 3]);
    }

    /// On SQLite, a pass over a backlog of thousands of delivered messages holds the
    /// writer about [`TARGET`] per batch once the size has adapted: figures printed.
    /// (Some slack: this machine's other work can stretch any single batch.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_batches_hold_the_writer_about_ten_milliseconds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("db.sqlite")).unwrap());
        let now = Utc::now();
        let app = store
            .create_app(Application {
                id: new_id("app"),
                uid: None,
                name: "a".into(),
                throttle_rate: None,
                metadata: Default::default(),
                retry_policy: None,
                validate_payloads: false,
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
        let ep = store
            .create_endpoint(Endpoint {
                id: new_id("ep"),
                app_id: app.id.clone(),
                uid: None,
                url: "http://127.0.0.1:1/".into(),
                disabled: false,
                settings: Default::default(),
                created_at: now,
                updated_at: now,
                failing_since: None,
            })
            .await
            .unwrap();
        let total = 4000;
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (store, app_id) = (store.clone(), app.id.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..total / 8 {
                    store
                        .create_message(Message {
                            id: new_id("msg"),
                            app_id: app_id.clone(),
                            event_id: None,
                            event_type: "t".into(),
                            payload: format!(
                                "{{\"n\":{},\"pad\":\"{}\"}}",
                                t * 1000 + i,
                                "x".repeat(300)
                            )
                            .into(),
                            channels: None,
                            tags: None,
                            created_at: Utc::now(),
                            deliver_at: None,
                            payload_expires_at: None,
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Deliver everything: claim and report each delivery once.
        let lease = chrono::Duration::seconds(60);
        let mut delivered = 0;
        while delivered < total {
            let claimed = store
                .claim_deliveries(Utc::now(), lease, 500, 500, &[])
                .await
                .unwrap();
            assert!(!claimed.is_empty(), "only {delivered} of {total} claimed");
            for d in claimed {
                let report = AttemptReport {
                    attempt: Attempt {
                        id: new_id("atmpt"),
                        app_id: app.id.clone(),
                        msg_id: d.message.id.clone(),
                        endpoint_id: ep.id.clone(),
                        url: ep.url.clone(),
                        attempted_at: Utc::now(),
                        status_code: Some(200),
                        duration_ms: 1,
                        succeeded: true,
                        error_kind: None,
                        response: "ok".repeat(100),
                        trigger: Trigger::Scheduled,
                    },
                    next: NextStep::Succeeded,
                    disable_endpoint: false,
                    disable_if_failing_since: None,
                    raise: None,
                };
                store
                    .report_attempt(d.id, &d.lease_token, report)
                    .await
                    .unwrap();
                delivered += 1;
            }
        }
        // The pass, batch by batch, as `pass` does it, keeping every batch's time.
        let before = Utc::now() + chrono::Duration::seconds(1);
        let mut size = BatchSize::default();
        let mut after: Option<String> = None;
        let (mut held, mut sizes, mut deleted) = (Vec::new(), Vec::new(), 0);
        loop {
            sizes.push(size.get());
            let p = store
                .prune_messages(before, after.as_deref(), size.get())
                .await
                .unwrap();
            deleted += p.messages;
            held.push(p.held);
            size.adapt(p.examined, p.held);
            after = p.next;
            if after.is_none() {
                break;
            }
        }
        assert_eq!(deleted, total as u64);
        let mut sorted = held.clone();
        sorted.sort();
        let pct = |q: usize| sorted[(sorted.len() - 1) * q / 100];
        let within = held.iter().filter(|h| **h <= TARGET).count();
        println!(
            "retention on SQLite: {total} messages in {} batches (sizes {}..{}), writer held p50 {:?} p90 {:?} max {:?}; {within} of {} batches within {TARGET:?}",
            held.len(),
            sizes.iter().min().unwrap(),
            sizes.iter().max().unwrap(),
            pct(50),
            pct(90),
            sorted.last().unwrap(),
            held.len()
        );
        assert!(
            held.len() >= 4,
            "the backlog went in too few batches to tell"
        );
        assert!(
            within * 10 >= held.len() * 9,
            "fewer than 90 % of batches held the writer at most {TARGET:?}: {held:?}"
        );
        // The space went back to the file system (a new database has incremental
        // auto-vacuum): the freed pages, beyond a tenth of the file kept for reuse.
        let mut reclaimed = 0;
        while let Ok(n @ 1..) = store.reclaim_space().await {
            reclaimed += n;
        }
        assert!(reclaimed > 100, "only {reclaimed} pages given back");
    }
}
