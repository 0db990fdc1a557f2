//! Percentiles, CDFs and rates over time.

use std::time::Instant;

use serde::Serialize;

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Nearest-rank percentile of sorted values, `p` in 0..=100.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(values_ms: &[f64]) -> Summary {
    let mut v = values_ms.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Summary {
        n,
        min_ms: v.first().copied().unwrap_or(f64::NAN),
        p50_ms: percentile(&v, 50.0),
        p90_ms: percentile(&v, 90.0),
        p95_ms: percentile(&v, 95.0),
        p99_ms: percentile(&v, 99.0),
        max_ms: v.last().copied().unwrap_or(f64::NAN),
        mean_ms: if n == 0 {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / n as f64
        },
    }
}

/// `(value, fraction ≤ value)` points of the empirical CDF, at most about `max_points`.
pub fn cdf_points(values: &[f64], max_points: usize) -> Vec<(f64, f64)> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return vec![];
    }
    let step = n.div_ceil(max_points.max(1)).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (v[i], (i + 1) as f64 / n as f64))
        .collect();
    if pts.last().map(|p| p.1) != Some(1.0) {
        pts.push((v[n - 1], 1.0));
    }
    pts
}

/// Events per second in consecutive buckets of `bucket_s` from `start`:
/// `(bucket middle in s, rate)`. The last bucket ends with the last event; its rate is
/// over that shorter span, and it is left out when shorter than a quarter bucket (too
/// few events to mean anything).
pub fn rate_series(start: Instant, times: &[Instant], bucket_s: f64) -> Vec<(f64, f64)> {
    let offsets: Vec<f64> = times
        .iter()
        .map(|t| t.saturating_duration_since(start).as_secs_f64())
        .collect();
    let end = offsets.iter().copied().fold(0.0, f64::max);
    let buckets = (end / bucket_s).floor() as usize + 1;
    let mut counts = vec![0u64; buckets];
    for o in offsets {
        counts[((o / bucket_s).floor() as usize).min(buckets - 1)] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let from = i as f64 * bucket_s;
            let width = (end - from).min(bucket_s);
            let width = if i + 1 < buckets { bucket_s } else { width };
            (width >= bucket_s / 4.0).then(|| (from + width / 2.0, c as f64 / width))
        })
        .collect()
}

/// 100 ms buckets for short runs, 1 s for long ones.
pub fn bucket_for(duration_s: f64) -> f64 {
    if duration_s < 30.0 {
        0.1
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        let s = summarize(&[2.0, 1.0, 3.0]);
        assert_eq!(
            (s.min_ms, s.p50_ms, s.max_ms, s.mean_ms),
            (1.0, 2.0, 3.0, 2.0)
        );
    }

    #[test]
    fn cdf_ends_at_one() {
        let v: Vec<f64> = (0..10_000).map(f64::from).collect();
        let pts = cdf_points(&v, 100);
        assert!(pts.len() <= 101);
        assert_eq!(pts.last().unwrap(), &(9999.0, 1.0));
    }

    #[test]
    fn rates_count_per_bucket() {
        let t0 = Instant::now();
        let times = [0, 50, 150, 1080].map(|ms| t0 + Duration::from_millis(ms));
        let r = rate_series(t0, &times, 0.1);
        assert_eq!(r.len(), 11);
        assert_eq!(r[0], (0.05, 20.0));
        assert_eq!(r[1].1, 10.0);
        assert!((r[10].0 - 1.04).abs() < 1e-9 && (r[10].1 - 1.0 / 0.08).abs() < 1e-6);
        // A last bucket of 10 ms is dropped.
        let times = [0, 50, 1010].map(|ms| t0 + Duration::from_millis(ms));
        assert_eq!(rate_series(t0, &times, 0.1).len(), 10);
    }
}
