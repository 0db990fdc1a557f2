//! Attempt statistics kept as attempts are written, so that charts and health columns
//! never read the attempts themselves.
//!
//! Every attempt the store records is also counted in the table `attempt_stats`, in the
//! same transaction, under three keys: its endpoint's hour, and every endpoint's minute
//! and hour (scope `""`). A row holds, for one key and one *duration bucket*, how many
//! attempts succeeded and how many failed; the buckets together are the duration
//! histogram of that hour or minute. Reading a day of an endpoint is at most 24 × the
//! buckets in use rows, however many attempts it made; before this table the console's
//! pages counted the attempts of the window (50 000 attempts: 35 ms of CPU, page p99s of
//! 100–600 ms at 1 000 000 messages; see BENCHMARKS.md "Console and portal pages").
//!
//! Duration buckets are exact below 4 ms, then four per doubling, so a bucket is at most
//! a quarter of its lower bound wide; the last, 63, holds everything from 2^16 ms up.
//! A percentile is read as the largest duration of the bucket its rank falls in: an
//! upper bound at most 25 % above the exact nearest-rank value (and exact below 8 ms).
//!
//! Writes are merged before they reach the table: the SQLite writer counts a whole
//! group commit's attempts in memory and upserts each key once before the commit;
//! PostgreSQL does the same per write batch, with its rows in key order (so two batches
//! never wait on each other's rows in opposite orders) and under the process's own
//! `shard`, so that nodes delivering to one endpoint do not queue on one row.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::AttemptBucket;

/// The scope of the rows counting every endpoint's attempts.
pub(crate) const ALL: &str = "";
/// Rows' lengths, in seconds.
pub(crate) const HOUR: i64 = 3600;
pub(crate) const MINUTE: i64 = 60;
/// The shard of rows `hookline copy` brought from SQLite (live processes use 0 to 15).
pub(crate) const COPIED_SHARD: i16 = 16;
/// How many duration buckets there are.
pub(crate) const BUCKETS: usize = 64;

/// The duration bucket of `ms`.
pub(crate) fn bucket_of(ms: u64) -> u8 {
    if ms < 4 {
        return ms as u8;
    }
    let e = 63 - u64::from(ms.leading_zeros()); // ⌊log2 ms⌋, at least 2
    let sub = (ms >> (e - 2)) & 3;
    (4 * (e - 1) + sub).min(BUCKETS as u64 - 1) as u8
}

/// The largest duration in bucket `b` (for the last bucket: the largest below 2^17, as
/// no attempt lasts longer than its timeout, at most a minute).
pub(crate) fn bucket_top(b: u8) -> u64 {
    let b = u64::from(b.min(BUCKETS as u8 - 1));
    if b < 4 {
        return b;
    }
    let (e, sub) = (b / 4 + 1, b % 4);
    ((4 + sub + 1) << (e - 2)) - 1
}

/// [`bucket_of`] as an SQL expression over the integer column `d`, the same on SQLite and
/// PostgreSQL: what the migrations that created the table used to count the attempts
/// already written (tests check they still say it).
#[cfg(test)]
pub(crate) fn bucket_sql(d: &str) -> String {
    let mut sql = format!("CASE WHEN {d} < 4 THEN {d}");
    for e in 2..=16u32 {
        sql.push_str(&format!(
            " WHEN {d} < {} THEN {} + ({d} - {}) / {}",
            1u64 << (e + 1),
            4 * (e - 1),
            1u64 << e,
            1u64 << (e - 2)
        ));
    }
    sql.push_str(&format!(" ELSE {} END", BUCKETS - 1));
    sql
}

/// One row's key: scope (endpoint id or [`ALL`]), length, start, duration bucket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) scope: String,
    pub(crate) span: i64,
    pub(crate) start: DateTime<Utc>,
    pub(crate) bucket: u8,
}

/// Attempts counted in memory, to be added to the table in one go.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    rows: BTreeMap<Key, (i64, i64)>,
}

impl Tally {
    /// Counts one attempt under its three keys.
    pub(crate) fn add(
        &mut self,
        endpoint_id: &str,
        attempted_at: DateTime<Utc>,
        duration_ms: u64,
        succeeded: bool,
    ) {
        let bucket = bucket_of(duration_ms);
        for (scope, span) in [(endpoint_id, HOUR), (ALL, MINUTE), (ALL, HOUR)] {
            let key = Key {
                scope: scope.to_string(),
                span,
                start: floor(attempted_at, span),
                bucket,
            };
            let counts = self.rows.entry(key).or_default();
            if succeeded {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }

    /// Adds what another tally counted.
    pub(crate) fn merge(&mut self, other: Tally) {
        for (key, (ok, failed)) in other.rows {
            let counts = self.rows.entry(key).or_default();
            counts.0 += ok;
            counts.1 += failed;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows to add, in key order: (key, succeeded, failed).
    pub(crate) fn rows(&self) -> impl Iterator<Item = (&Key, i64, i64)> {
        self.rows.iter().map(|(k, (ok, failed))| (k, *ok, *failed))
    }
}

/// The start of the `span`-second row holding `t`.
pub(crate) fn floor(t: DateTime<Utc>, span: i64) -> DateTime<Utc> {
    let s = t.timestamp().div_euclid(span) * span;
    DateTime::from_timestamp(s, 0).unwrap_or(t)
}

/// Which rows answer a window of `width` from `since`: hours when both are whole hours,
/// else minutes (only every endpoint's attempts have them).
pub(crate) fn span_for(since: DateTime<Utc>, width: chrono::Duration) -> i64 {
    let w = width.num_seconds();
    if w > 0 && w % HOUR == 0 && since.timestamp().rem_euclid(HOUR) == 0 {
        HOUR
    } else {
        MINUTE
    }
}

/// One row as read for a window: start, duration bucket, succeeded, failed.
pub(crate) type Row = (DateTime<Utc>, u8, u64, u64);

/// Buckets of a window from rows read for it: (start, duration bucket, succeeded,
/// failed). A row counts in the bucket its start falls in; only buckets with attempts,
/// by index.
pub(crate) fn fold(
    rows: impl IntoIterator<Item = Row>,
    since: DateTime<Utc>,
    width: chrono::Duration,
) -> Vec<AttemptBucket> {
    let width_ms = width.num_milliseconds().max(1);
    let mut by_index: BTreeMap<u32, (u64, u64, [u64; BUCKETS])> = BTreeMap::new();
    for (start, bucket, ok, failed) in rows {
        let offset = (start - since).num_milliseconds();
        if offset < 0 {
            continue;
        }
        let index = u32::try_from(offset / width_ms).unwrap_or(u32::MAX);
        let b = by_index.entry(index).or_insert((0, 0, [0; BUCKETS]));
        b.0 += ok;
        b.1 += failed;
        b.2[usize::from(bucket).min(BUCKETS - 1)] += ok + failed;
    }
    by_index
        .into_iter()
        .map(|(index, (succeeded, failed, hist))| AttemptBucket {
            index,
            succeeded,
            failed,
            p50_ms: percentile(&hist, 50),
            p99_ms: percentile(&hist, 99),
        })
        .collect()
}

/// The top of the bucket holding rank ⌈n × pct / 100⌉ (nearest rank).
fn percentile(hist: &[u64; BUCKETS], pct: u64) -> u64 {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return 0;
    }
    let rank = (n * pct).div_ceil(100).max(1);
    let mut seen = 0;
    for (b, count) in hist.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return bucket_top(b as u8);
        }
    }
    bucket_top(BUCKETS as u8 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_durations_in_order_within_a_quarter() {
        let mut last = 0;
        for ms in 0..200_000u64 {
            let b = bucket_of(ms);
            assert!(b >= last, "{ms}");
            last = b;
            if b < 63 {
                let top = bucket_top(b);
                assert!(ms <= top, "{ms} above its bucket's top {top}");
                assert!(
                    top <= ms + ms / 4,
                    "{ms}: top {top} more than a quarter above"
                );
                assert_eq!(bucket_of(top), b);
                assert_eq!(bucket_of(top + 1), b + 1);
            }
        }
        assert_eq!(
            (bucket_of(0), bucket_of(3), bucket_of(4), bucket_of(7)),
            (0, 3, 4, 7)
        );
        assert_eq!((bucket_of(8), bucket_of(9), bucket_of(10)), (8, 8, 9));
        assert_eq!(bucket_of(u64::MAX), 63);
        assert_eq!(bucket_top(63), (1 << 17) - 1);
    }

    #[test]
    fn percentiles_are_the_top_of_the_rank_s_bucket() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let mut tally = Tally::default();
        for d in [10, 20, 30, 40, 500] {
            tally.add("ep", t(100), d, d != 500);
        }
        let rows: Vec<_> = tally
            .rows()
            .filter(|(k, _, _)| k.scope == "ep")
            .map(|(k, ok, failed)| (k.start, k.bucket, ok as u64, failed as u64))
            .collect();
        let got = fold(rows, t(0), chrono::Duration::hours(1));
        // Ranks 3 (30 ms: bucket 28-31) and 5 (500 ms: bucket 448-511).
        assert_eq!(
            got,
            [AttemptBucket {
                index: 0,
                succeeded: 4,
                failed: 1,
                p50_ms: 31,
                p99_ms: 511,
            }]
        );
    }

    #[test]
    fn an_attempt_counts_under_its_endpoint_s_hour_and_every_endpoint_s_minute_and_hour() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let mut tally = Tally::default();
        tally.add("ep", t(7_261), 5, true);
        let mut other = Tally::default();
        other.add("ep", t(7_299), 5, false);
        tally.merge(other);
        let rows: Vec<_> = tally
            .rows()
            .map(|(k, ok, failed)| (k.scope.as_str(), k.span, k.start.timestamp(), ok, failed))
            .collect();
        assert_eq!(
            rows,
            [
                ("", 60, 7_260, 1, 1),
                ("", 3600, 7_200, 1, 1),
                ("ep", 3600, 7_200, 1, 1)
            ]
        );
    }

    #[test]
    fn the_postgresql_migration_buckets_as_the_code_does() {
        let m = crate::postgres::MIGRATIONS
            .iter()
            .find(|m| m.name == "attempt_stats")
            .unwrap();
        assert_eq!(m.sql.matches(&bucket_sql("duration_ms")).count(), 2);
    }

    #[test]
    fn windows_of_whole_hours_read_hours() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        assert_eq!(span_for(t(7_200), chrono::Duration::hours(1)), HOUR);
        assert_eq!(span_for(t(7_200), chrono::Duration::days(1)), HOUR);
        assert_eq!(span_for(t(7_260), chrono::Duration::hours(1)), MINUTE);
        assert_eq!(span_for(t(7_200), chrono::Duration::minutes(5)), MINUTE);
    }
}
