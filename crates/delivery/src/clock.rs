//! Where the dispatcher gets the time of day from.
//!
//! Production uses the system clock. [`TokioClock`] follows tokio's clock instead, so a
//! test with paused time (`tokio::time::pause`) can run hours of retries in moments.

use chrono::{DateTime, Utc};

/// Wall-clock time for timestamps, due times and lease expiry.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock, in the database's time where several processes share one
/// ([`hookline_store::clock`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        hookline_store::now()
    }
}

/// Wall time that moves with tokio's clock from the moment it was made: under paused
/// time it jumps exactly when tokio's clock advances.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        Self {
            wall: Utc::now(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.start.elapsed()).unwrap_or_default();
        self.wall + elapsed
    }
}
