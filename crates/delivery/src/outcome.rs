//! What an attempt's result means: pure rules, no I/O.
//!
//! A receiver's failure is data, not an error: every result becomes a [`Verdict`], and
//! a verdict plus the retry policy becomes the delivery's [`NextStep`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_retry::RetryPolicy;
use hookline_store::NextStep;

/// The shortest and longest wait a `Retry-After` header can impose.
pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// 410: the receiver wants no more; the endpoint gets disabled.
    Gone,
    /// 429/502/503/504: back off, honouring `Retry-After` when given.
    Throttled { retry_after: Option<Duration> },
    /// Anything else, including 3xx (never followed) and transport errors.
    Failed,
}

impl Verdict {
    /// A short name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Gone => "gone",
            Self::Throttled { .. } => "throttled",
            Self::Failed => "failed",
        }
    }
}

/// Classifies a status code.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        429 | 502 | 503 | 504 => Verdict::Throttled { retry_after },
        _ => Verdict::Failed,
    }
}

/// Parses `Retry-After` (delay-seconds or an HTTP date), clamped to a sane window.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    let wait = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when: std::time::SystemTime = httpdate::parse_http_date(v).ok()?;
        let when: DateTime<Utc> = when.into();
        (when - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX))
}

/// Decides what happens after an attempt.
///
/// `attempts_made` counts this attempt; `scheduled_age` is how long after the delivery's
/// first scheduled time this attempt was *scheduled* (not when it ran), so slow attempts
/// never eat into the policy's give-up window; `jitter` is drawn by the caller in [-1, 1].
pub fn next_step(
    verdict: &Verdict,
    policy: &RetryPolicy,
    attempts_made: u32,
    scheduled_age: Duration,
    jitter: f64,
    now: DateTime<Utc>,
) -> NextStep {
    match verdict {
        Verdict::Delivered => NextStep::Succeeded,
        Verdict::Gone => NextStep::Failed,
        Verdict::Failed | Verdict::Throttled { .. } => {
            let Some(delay) = policy.next_delay(attempts_made, scheduled_age.as_secs(), jitter)
            else {
                return NextStep::Failed;
            };
            let delay = match verdict {
                Verdict::Throttled {
                    retry_after: Some(ra),
                } => delay.max(*ra),
                _ => delay,
            };
            NextStep::RetryAt(now + chrono::Duration::from_std(delay).unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(classify(200, None), Verdict::Delivered);
        assert_eq!(classify(204, None), Verdict::Delivered);
        assert_eq!(classify(301, None), Verdict::Failed);
        assert_eq!(classify(302, None), Verdict::Failed);
        assert_eq!(classify(400, None), Verdict::Failed);
        assert_eq!(classify(410, None), Verdict::Gone);
        assert_eq!(
            classify(429, Some(Duration::from_secs(3))),
            Verdict::Throttled {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(classify(503, None), Verdict::Throttled { .. }));
        assert_eq!(classify(500, None), Verdict::Failed);
    }

    #[test]
    fn retry_after_forms_and_clamps() {
        let now = Utc::now();
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("0", now), Some(RETRY_AFTER_MIN));
        assert_eq!(parse_retry_after("999999", now), Some(RETRY_AFTER_MAX));
        let later = now + chrono::Duration::seconds(120);
        let date = httpdate::fmt_http_date(later.into());
        let got = parse_retry_after(&date, now).unwrap();
        assert!((119..=120).contains(&got.as_secs()), "{got:?}");
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn next_steps() {
        let now = Utc::now();
        let none = RetryPolicy::None;
        assert_eq!(
            next_step(&Verdict::Failed, &none, 1, Duration::ZERO, 0.0, now),
            NextStep::Failed
        );
        let def = RetryPolicy::default();
        assert_eq!(
            next_step(&Verdict::Delivered, &def, 1, Duration::ZERO, 0.0, now),
            NextStep::Succeeded
        );
        assert_eq!(
            next_step(&Verdict::Gone, &def, 1, Duration::ZERO, 0.0, now),
            NextStep::Failed
        );
        assert_eq!(
            next_step(&Verdict::Failed, &def, 1, Duration::ZERO, 0.0, now),
            NextStep::RetryAt(now + chrono::Duration::seconds(5))
        );
        // Retry-After longer than the policy's delay wins.
        assert_eq!(
            next_step(
                &Verdict::Throttled {
                    retry_after: Some(Duration::from_secs(60))
                },
                &def,
                1,
                Duration::ZERO,
                0.0,
                now
            ),
            NextStep::RetryAt(now + chrono::Duration::seconds(60))
        );
        // After the last scheduled retry the delivery fails.
        assert_eq!(
            next_step(&Verdict::Failed, &def, 8, Duration::ZERO, 0.0, now),
            NextStep::Failed
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever a receiver sends as `Retry-After`, parsing ends (no panic) and a
            /// wait is always within 1 s to 1 h.
            #[test]
            fn any_retry_after_is_parsed_within_bounds(value in ".{0,64}") {
                if let Some(wait) = parse_retry_after(&value, Utc::now()) {
                    prop_assert!((RETRY_AFTER_MIN..=RETRY_AFTER_MAX).contains(&wait));
                }
            }

            /// Delay-seconds round-trip: n seconds is a wait of n seconds, clamped.
            #[test]
            fn delay_seconds_are_the_wait(n in any::<u64>()) {
                let wait = parse_retry_after(&n.to_string(), Utc::now()).unwrap();
                prop_assert_eq!(wait, Duration::from_secs(n).clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX));
            }

            /// An HTTP date that far ahead is that wait (to the second), clamped.
            #[test]
            fn http_dates_are_the_wait_until_them(secs in 0u64..10_000) {
                let now = Utc::now();
                let at = std::time::SystemTime::from(now) + Duration::from_secs(secs + 1);
                let wait = parse_retry_after(&httpdate::fmt_http_date(at), now).unwrap();
                let expected = Duration::from_secs(secs).clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX);
                prop_assert!(wait.abs_diff(expected) <= Duration::from_secs(1), "{:?} vs {:?}", wait, expected);
            }
        }
    }
}
