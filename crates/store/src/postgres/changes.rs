//! In-memory lookups of applications and event types on PostgreSQL, kept true by the
//! database's change notices.
//!
//! Creating a message reads its application and its event type; on PostgreSQL those two
//! reads cost more than the message's share of its batched write. They are cached the
//! way SQLite caches them ([`LookupCache`]), with one difference: other processes write
//! too. So a trigger (migration 3) notifies the channel `hookline_changes` whenever a
//! statement writes either table, at its commit, whoever made it; a task of this process
//! listens on a connection of its own and drops the cache of that table on each notice.
//!
//! The same connection listens on `hookline_work`, which a transaction notifies when it
//! queues deliveries `pending` (no slot of its own process took them): the attached
//! [`Intake`] is told, so this process's workers look at the queue at once instead of at
//! their next poll. A hint only: polling stays the truth, and a notice lost while the
//! connection was down costs at most one poll interval.
//!
//! The cache is used only while that connection is listening. When it is lost, the
//! caches are dropped and bypassed (every lookup reads the database) until a new
//! connection listens again, so a change made while nobody listened is never missed.
//! What a lookup can miss is a change committed by another process in the moments before
//! its notice arrives (a few milliseconds); this process's own writes drop the caches as
//! they commit, before the writer hears back.
//!
//! The same connection also measures, every [`CLOCK_EVERY`], how far this machine's
//! clock is from the database's ([`sync_clock`], [`crate::clock`]), and counts, every
//! [`PEERS_EVERY`], the hookline processes on the database: their listening connections,
//! named [`LISTENER_NAME`] ([`count_processes`]; the batcher runs fewer write batches at
//! once when it is not alone).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use super::batch::SharedIntake;
use super::PgSettings;
use crate::cache::*;
use crate::*;

/// The channel the trigger notifies.
const CHANNEL: &str = "hookline_changes";
/// The channel notified when deliveries are queued.
pub(super) const WORK: &str = "hookline_work";
/// How long the listener waits before connecting again after losing its connection.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// How often the offset from the database's clock is measured again.
const CLOCK_EVERY: Duration = Duration::from_secs(60);
/// How often the hookline processes on the database are counted.
const PEERS_EVERY: Duration = Duration::from_secs(1);
/// The `application_name` of every process's listening connection (unless the URL sets
/// one of its own): one per process, so counting them counts the processes.
pub(super) const LISTENER_NAME: &str = "hookline listener";

/// How many hookline processes listen on this database (this one included), by their
/// listening connections; 0 when they cannot be told apart (the URL sets its own
/// `application_name`).
async fn count_processes(client: &tokio_postgres::Client) -> Result<usize> {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
            &[&LISTENER_NAME],
        )
        .await
        .map_err(super::errors::backend)?;
    let n: i64 = row.try_get(0).map_err(super::errors::backend)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Measures how far the database's clock is from this process's (the best of three
/// round trips: the database's time against the middle of the shortest) and makes
/// [`crate::now`] follow the database's. Says so once when the two differ by more than a
/// second, and again when that changes.
pub(super) async fn sync_clock(client: &tokio_postgres::Client) -> Result<()> {
    let stmt = client
        .prepare("SELECT clock_timestamp()")
        .await
        .map_err(super::errors::backend)?;
    let mut best: Option<(Duration, chrono::Duration)> = None;
    for _ in 0..3 {
        let sent = crate::clock::system_now();
        let started = std::time::Instant::now();
        let row = client
            .query_one(&stmt, &[])
            .await
            .map_err(super::errors::backend)?;
        let rtt = started.elapsed();
        let db: chrono::DateTime<chrono::Utc> = row.try_get(0).map_err(super::errors::backend)?;
        let offset = db - (sent + chrono::Duration::from_std(rtt / 2).unwrap_or_default());
        if best.is_none_or(|(r, _)| rtt < r) {
            best = Some((rtt, offset));
        }
    }
    let Some((rtt, measured)) = best else {
        return Ok(());
    };
    let before = crate::clock::offset();
    let offset = settle_offset(before, measured, rtt);
    let far = |d: chrono::Duration| d.num_milliseconds().abs() > 1000;
    if far(offset) && (!far(before) || (offset - before).num_milliseconds().abs() > 1000) {
        tracing::warn!(
            offset_ms = offset.num_milliseconds(),
            "this machine's clock is more than a second off the database's; hookline keeps the database's time"
        );
    }
    crate::clock::set_offset(offset);
    Ok(())
}

/// The offset to use after measuring `measured` over a round trip of `rtt`, with `before`
/// in use: the true offset lies within half the round trip of the measure (the database
/// read its clock somewhere in it), so the one in use stays while it is in that range,
/// and otherwise moves only to its nearer end. Processes whose clocks agree (on one
/// machine, or well synchronised) then keep the same offset, zero, however slow a loaded
/// machine made their measurements; taken as it came, each measure may be off by up to
/// half its round trip (milliseconds on a loaded machine), and processes' paced starts,
/// booked in the database's time, would be off from each other by as much.
fn settle_offset(
    before: chrono::Duration,
    measured: chrono::Duration,
    rtt: Duration,
) -> chrono::Duration {
    let half = chrono::Duration::from_std(rtt / 2).unwrap_or_default();
    before.clamp(measured - half, measured + half)
}

/// The cached lookups, and whether they may be used.
pub(super) struct Lookups {
    pub(super) apps: LookupCache<Application>,
    pub(super) event_types: LookupCache<EventType>,
    /// The listener is listening: a change elsewhere would reach us.
    live: AtomicBool,
    /// Told when work is queued anywhere.
    intake: SharedIntake,
    /// This process's node id: its own work notices are not news to it.
    node: std::sync::RwLock<Arc<str>>,
    /// Hookline processes on the database, as last counted (0: not known).
    pub(super) processes: Arc<AtomicUsize>,
}

impl Lookups {
    /// The caches, with a task listening for changes while they live.
    pub(super) fn start(
        settings: PgSettings,
        intake: SharedIntake,
        node: Arc<str>,
        processes: Arc<AtomicUsize>,
    ) -> Arc<Lookups> {
        let lookups = Arc::new(Lookups {
            apps: LookupCache::new(LOOKUP_CACHE_BYTES, app_weight),
            event_types: LookupCache::new(LOOKUP_CACHE_BYTES, event_type_weight),
            live: AtomicBool::new(false),
            intake,
            node: std::sync::RwLock::new(node),
            processes,
        });
        tokio::spawn(listen(settings, Arc::downgrade(&lookups)));
        lookups
    }

    /// This process runs as `node` from now on.
    pub(super) fn set_node(&self, node: Arc<str>) {
        *self.node.write().unwrap_or_else(|e| e.into_inner()) = node;
    }

    fn node(&self) -> Arc<str> {
        self.node.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cache of applications, if it may be used now.
    pub(super) fn apps(&self) -> Option<&LookupCache<Application>> {
        self.live.load(Ordering::Acquire).then_some(&self.apps)
    }

    /// The cache of event types, if it may be used now.
    pub(super) fn event_types(&self) -> Option<&LookupCache<EventType>> {
        self.live
            .load(Ordering::Acquire)
            .then_some(&self.event_types)
    }

    fn notice(&self, channel: &str, payload: &str) {
        if channel == WORK {
            if payload == &*self.node() {
                return; // this process's own: its workers were told in-process
            }
            let intake = self
                .intake
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(Weak::upgrade);
            if let Some(intake) = intake {
                intake.queued();
            }
            return;
        }
        match payload {
            "applications" => self.apps.invalidate(),
            "event_types" => self.event_types.invalidate(),
            _ => self.invalidate(),
        }
    }

    fn invalidate(&self) {
        self.apps.invalidate();
        self.event_types.invalidate();
    }

    fn set_live(&self, live: bool) {
        // Dropped on both edges: what was cached before a connection listened may be
        // stale, and nothing cached while none listens is trusted.
        self.invalidate();
        self.live.store(live, Ordering::Release);
        self.invalidate();
    }
}

/// Listens for change notices while `lookups` lives, connecting again when the
/// connection is lost.
async fn listen(settings: PgSettings, lookups: Weak<Lookups>) {
    let connector = match settings.connector() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "lookups of applications and event types are not cached");
            return;
        }
    };
    let mut warned = false;
    let mut config = settings.config.clone();
    if config.get_application_name() == Some(super::DEFAULT_APPLICATION_NAME) {
        config.application_name(LISTENER_NAME);
    }
    loop {
        if lookups.strong_count() == 0 {
            return;
        }
        match config.connect(connector.clone()).await {
            Ok((client, mut connection)) => {
                // The connection delivers notices through its own poll; the LISTEN runs
                // on the client meanwhile.
                let (notices, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let conn = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                let notice = (n.channel().to_string(), n.payload().to_string());
                                if notices.send(notice).is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => return,
                        }
                    }
                });
                if let Err(e) = client
                    .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {WORK}"))
                    .await
                {
                    tracing::debug!(error = %e, "LISTEN failed");
                } else {
                    if warned {
                        tracing::info!("listening for changes again: lookups cached again");
                        warned = false;
                    }
                    let Some(l) = lookups.upgrade() else { return };
                    l.set_live(true);
                    drop(l);
                    let mut clock_synced = tokio::time::Instant::now();
                    let mut counted: Option<tokio::time::Instant> = None;
                    loop {
                        if clock_synced.elapsed() >= CLOCK_EVERY {
                            clock_synced = tokio::time::Instant::now();
                            if let Err(e) = sync_clock(&client).await {
                                tracing::debug!(error = %e, "measuring the database's clock failed");
                            }
                        }
                        if counted.is_none_or(|t| t.elapsed() >= PEERS_EVERY) {
                            counted = Some(tokio::time::Instant::now());
                            match (count_processes(&client).await, lookups.upgrade()) {
                                (Ok(n), Some(l)) => l.processes.store(n, Ordering::Relaxed),
                                (Err(e), _) => {
                                    tracing::debug!(error = %e, "counting hookline processes failed")
                                }
                                (_, None) => return,
                            }
                        }
                        // A notice, the connection's end, or a look at whether the store
                        // is still there.
                        match tokio::time::timeout(PEERS_EVERY, rx.recv()).await {
                            Ok(Some((channel, payload))) => match lookups.upgrade() {
                                Some(l) => l.notice(&channel, &payload),
                                None => return,
                            },
                            Ok(None) => break,
                            Err(_) if lookups.strong_count() == 0 => return,
                            Err(_) => {}
                        }
                    }
                }
                conn.abort();
                let Some(l) = lookups.upgrade() else { return };
                if l.live.load(Ordering::Acquire) {
                    tracing::warn!(
                        "lost the connection listening for changes: lookups of applications and event types read the database until it is back"
                    );
                    warned = true;
                }
                l.set_live(false);
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        error = %e,
                        "cannot listen for changes: lookups of applications and event types read the database until it can"
                    );
                    warned = true;
                }
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

#[cfg(test)]
mod offset_tests {
    use super::settle_offset;
    use chrono::Duration as D;
    use std::time::Duration;

    #[test]
    fn an_offset_moves_only_as_far_as_its_measurement_says() {
        let rtt = Duration::from_millis(10);
        // Within half the round trip of the measure: the offset in use stays.
        assert_eq!(settle_offset(D::zero(), D::milliseconds(4), rtt), D::zero());
        assert_eq!(
            settle_offset(D::zero(), D::milliseconds(-5), rtt),
            D::zero()
        );
        // Outside it: to the nearer end of what the measure allows.
        assert_eq!(
            settle_offset(D::zero(), D::milliseconds(8), rtt),
            D::milliseconds(3)
        );
        assert_eq!(
            settle_offset(D::zero(), D::milliseconds(8_000), rtt),
            D::milliseconds(7_995)
        );
        assert_eq!(
            settle_offset(D::milliseconds(8_000), D::milliseconds(-8_000), rtt),
            D::milliseconds(-7_995)
        );
        // A precise measure is taken as it is.
        assert_eq!(
            settle_offset(D::zero(), D::milliseconds(2), Duration::ZERO),
            D::milliseconds(2)
        );
    }
}
