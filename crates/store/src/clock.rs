//! The time every record and decision is made in: [`now`].
//!
//! Processes sharing a PostgreSQL database must agree on due times and lease expiry
//! even when their machines' clocks disagree by seconds. So each process measures how
//! far its clock is from the database's (at start and every minute after, on the
//! connection that listens for changes) and [`now`] adds that offset: every due time,
//! lease and timestamp is in the database's time, whichever process wrote it. On SQLite
//! (one process) the offset stays zero.
//!
//! `HOOKLINE_TEST_CLOCK_SKEW_MS` (tests only) makes this process's clock read that many
//! milliseconds off, to show that the offset puts it right.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};

/// The database's clock less this process's, in milliseconds.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// This process's clock (with the test skew, if any).
pub fn system_now() -> DateTime<Utc> {
    static SKEW: OnceLock<Duration> = OnceLock::new();
    let skew = SKEW.get_or_init(|| {
        std::env::var("HOOKLINE_TEST_CLOCK_SKEW_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::milliseconds)
            .unwrap_or_default()
    });
    Utc::now() + *skew
}

/// The current time at the precision the store keeps (milliseconds), so a record reads
/// back exactly as it was returned when written; in the database's time where one is
/// shared.
pub fn now() -> DateTime<Utc> {
    let t = system_now() + Duration::milliseconds(OFFSET_MS.load(Ordering::Relaxed));
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// How far the database's clock is ahead of this process's.
pub fn offset() -> Duration {
    Duration::milliseconds(OFFSET_MS.load(Ordering::Relaxed))
}

pub(crate) fn set_offset(offset: Duration) {
    OFFSET_MS.store(offset.num_milliseconds(), Ordering::Relaxed);
}
