//! Turning a policy into concrete delays.
//!
//! Owns the arithmetic: base delay per attempt, jitter, the give-up deadline
//! and the attempt cap. It must stay deterministic: the caller draws the
//! jitter and measures elapsed time, and nothing here reads a clock or a
//! random number generator.

use std::time::Duration;

use crate::policy::{RetryPolicy, MAX_ATTEMPTS};

/// Jitter spreads retries by up to ±20 % so that endpoints recovering from an
/// outage are not hit by every queued message in the same second.
pub const JITTER_FRACTION: f64 = 0.2;

/// Most entries `schedule_preview` returns, whatever the policy.
const PREVIEW_CAP: usize = MAX_ATTEMPTS as usize;

/// Maps any input to `[-1, 1]`, NaN to 0, so a buggy caller can only get a
/// delay within the documented band, never a negative or absurd one.
fn clamp_jitter(jitter: f64) -> f64 {
    if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(-1.0, 1.0)
    }
}

/// `secs` as a Duration, saturating instead of panicking on values only an
/// unvalidated policy could produce.
fn duration_from_secs_f64(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

impl RetryPolicy {
    /// The delay before the next attempt, or `None` to give up.
    ///
    /// - `attempts_made`: attempts already made, the first included (so `1`
    ///   after the first failure; `0` is treated as `1`).
    /// - `first_attempt_age_secs`: time since the first attempt, as the caller
    ///   measured it (it includes delivery latency, which the policy cannot see).
    /// - `jitter`: a value in `[-1, 1]` the caller drew at random; the delay is
    ///   `base * (1 + 0.2 * jitter)`. Values outside the range are clamped.
    ///
    /// For `exponential` and `fixed`, no attempt is ever scheduled later than
    /// `giveUpAfterSeconds` after the first: if the jittered delay would
    /// overshoot but the un-jittered one would not, the delay is clamped to
    /// land exactly on the deadline, so jitter never costs the customer a
    /// retry they were promised. `schedule` has no deadline; its list length
    /// is the limit. No policy ever exceeds [`MAX_ATTEMPTS`] attempts.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        first_attempt_age_secs: u64,
        jitter: f64,
    ) -> Option<Duration> {
        if attempts_made >= MAX_ATTEMPTS {
            return None;
        }
        self.next_delay_uncapped(attempts_made, first_attempt_age_secs, jitter)
    }

    /// `next_delay` without the attempt cap, so validation can count how many
    /// attempts a policy would make on its own.
    fn next_delay_uncapped(
        &self,
        attempts_made: u32,
        age_secs: u64,
        jitter: f64,
    ) -> Option<Duration> {
        let base = self.base_delay_secs(attempts_made.max(1))?;
        let jittered =
            duration_from_secs_f64(base as f64 * (1.0 + JITTER_FRACTION * clamp_jitter(jitter)));
        let Some(give_up) = self.give_up_after_secs() else {
            return Some(jittered);
        };
        // Compared as Durations, not floats, so "lands exactly on the
        // deadline" is exact and rounding cannot push an attempt past it.
        let age = Duration::from_secs(age_secs);
        let deadline = Duration::from_secs(give_up);
        match age.checked_add(jittered) {
            Some(at) if at <= deadline => Some(jittered),
            _ if age_secs.checked_add(base).is_some_and(|at| at <= give_up) => Some(deadline - age),
            _ => None,
        }
    }

    /// The un-jittered delay after attempt `n` (1-based), ignoring any
    /// deadline; `None` when the policy has no such retry at all.
    pub(crate) fn base_delay_secs(&self, n: u32) -> Option<u64> {
        match self {
            Self::None => None,
            Self::Schedule { delays_seconds } => {
                let index = usize::try_from(n.checked_sub(1)?).ok()?;
                delays_seconds.get(index).copied()
            }
            &Self::Exponential {
                initial_seconds,
                factor,
                max_interval_seconds,
                ..
            } => {
                let exponent = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
                let raw = initial_seconds as f64 * factor.powi(exponent);
                // Rounded rather than truncated so that float error in
                // factor^k (1.1^k and friends) cannot shave off a second.
                // NaN or overflow only arise from unvalidated factors; they
                // fall back to the cap.
                if raw.is_nan() || raw >= max_interval_seconds as f64 {
                    Some(max_interval_seconds)
                } else {
                    Some((raw.round() as u64).min(max_interval_seconds))
                }
            }
            &Self::Fixed {
                interval_seconds, ..
            } => Some(interval_seconds),
        }
    }

    fn give_up_after_secs(&self) -> Option<u64> {
        match *self {
            Self::Exponential {
                give_up_after_seconds,
                ..
            }
            | Self::Fixed {
                give_up_after_seconds,
                ..
            } => Some(give_up_after_seconds),
            Self::None | Self::Schedule { .. } => None,
        }
    }

    /// Whether some jitter draws could make this policy exceed
    /// [`MAX_ATTEMPTS`] before it gives up on its own.
    ///
    /// Jitter of -1 everywhere is the worst case: each retry's delay is then
    /// as short as it can be, and whether a retry happens at all only gets
    /// more likely the earlier it is asked for. Ages are whole seconds,
    /// truncated, as a caller would measure them.
    pub(crate) fn exceeds_attempt_cap(&self) -> bool {
        let mut elapsed = Duration::ZERO;
        for attempts_made in 1..MAX_ATTEMPTS {
            match self.next_delay_uncapped(attempts_made, elapsed.as_secs(), -1.0) {
                Some(delay) => elapsed = elapsed.saturating_add(delay),
                None => return false,
            }
        }
        // Attempt number MAX_ATTEMPTS was made; would the policy go on?
        self.next_delay_uncapped(MAX_ATTEMPTS, elapsed.as_secs(), -1.0)
            .is_some()
    }

    /// Offsets in seconds after the first attempt of every retry the policy
    /// would make with zero jitter and zero delivery latency, capped at 1000
    /// entries. This is what the API shows a customer as "your schedule".
    pub fn schedule_preview(&self) -> Vec<u64> {
        let mut offsets = Vec::new();
        let mut offset: u64 = 0;
        let mut attempts_made: u32 = 1;
        while offsets.len() < PREVIEW_CAP {
            let Some(delay) = self.next_delay(attempts_made, offset, 0.0) else {
                break;
            };
            // Zero jitter on whole-second bases gives whole seconds.
            offset = offset.saturating_add(delay.as_secs());
            offsets.push(offset);
            attempts_made += 1;
        }
        offsets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;

    fn fixed(interval: u64, give_up: u64) -> RetryPolicy {
        RetryPolicy::Fixed {
            interval_seconds: interval,
            give_up_after_seconds: give_up,
        }
    }

    fn exponential(initial: u64, factor: f64, max: u64, give_up: u64) -> RetryPolicy {
        RetryPolicy::Exponential {
            initial_seconds: initial,
            factor,
            max_interval_seconds: max,
            give_up_after_seconds: give_up,
        }
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn none_never_retries() {
        for attempts in [0, 1, 2, 999, u32::MAX] {
            assert_eq!(RetryPolicy::None.next_delay(attempts, 0, 0.0), None);
        }
        assert!(RetryPolicy::None.schedule_preview().is_empty());
    }

    #[test]
    fn schedule_uses_the_nth_delay_then_stops() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay(1, 0, 0.0), secs(5));
        assert_eq!(policy.next_delay(2, 5, 0.0), secs(300));
        assert_eq!(policy.next_delay(7, 99_999, 0.0), secs(36_000));
        assert_eq!(policy.next_delay(8, 0, 0.0), None);
        // 0 attempts made is treated as 1 rather than panicking.
        assert_eq!(policy.next_delay(0, 0, 0.0), secs(5));
    }

    #[test]
    fn schedule_ignores_age() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay(3, u64::MAX, 0.0), secs(1800));
    }

    #[test]
    fn default_preview_is_cumulative() {
        assert_eq!(
            RetryPolicy::default().schedule_preview(),
            vec![5, 305, 2105, 9305, 27_305, 63_305, 99_305]
        );
    }

    #[test]
    fn jitter_is_twenty_percent_either_way() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay(2, 0, 1.0), secs(360));
        assert_eq!(policy.next_delay(2, 0, -1.0), secs(240));
        assert_eq!(policy.next_delay(2, 0, 0.5), secs(330));
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay(2, 0, 7.0), secs(360));
        assert_eq!(policy.next_delay(2, 0, -7.0), secs(240));
        assert_eq!(policy.next_delay(2, 0, f64::NAN), secs(300));
        assert_eq!(policy.next_delay(2, 0, f64::INFINITY), secs(360));
    }

    #[test]
    fn fixed_hourly_for_48h_makes_exactly_48_retries() {
        let policy = fixed(HOUR, 48 * HOUR);
        let mut age = 0;
        let mut retries = 0;
        while let Some(delay) = policy.next_delay(retries + 1, age, 0.0) {
            assert_eq!(delay, Duration::from_secs(HOUR));
            age += delay.as_secs();
            retries += 1;
            assert_eq!(age, u64::from(retries) * HOUR);
        }
        assert_eq!(retries, 48);
        assert_eq!(age, 172_800);
    }

    #[test]
    fn fixed_preview_hourly_for_48h() {
        let preview = fixed(HOUR, 172_800).schedule_preview();
        assert_eq!(preview.len(), 48);
        assert_eq!(preview.first(), Some(&HOUR));
        assert_eq!(preview.last(), Some(&172_800));
        assert!(preview
            .iter()
            .enumerate()
            .all(|(i, &t)| t == (i as u64 + 1) * HOUR));
    }

    #[test]
    fn fixed_clamps_jitter_to_the_deadline() {
        let policy = fixed(HOUR, 48 * HOUR);
        // The 48th retry fits un-jittered; +20% would overshoot by 720 s.
        assert_eq!(policy.next_delay(48, 47 * HOUR, 1.0), secs(HOUR));
        // With some latency already spent it lands exactly on the deadline.
        assert_eq!(
            policy.next_delay(48, 47 * HOUR - 100, 1.0),
            secs(HOUR + 100)
        );
    }

    #[test]
    fn fixed_gives_up_when_even_the_base_overshoots() {
        let policy = fixed(HOUR, 48 * HOUR);
        assert_eq!(policy.next_delay(49, 48 * HOUR, 0.0), None);
        assert_eq!(policy.next_delay(48, 47 * HOUR + 1, 0.0), None);
        assert_eq!(policy.next_delay(48, 47 * HOUR + 1, 1.0), None);
    }

    #[test]
    fn fixed_negative_jitter_may_still_fit() {
        // Un-jittered would land at 48h + 1s, but -20% lands well before.
        let policy = fixed(HOUR, 48 * HOUR);
        assert_eq!(policy.next_delay(48, 47 * HOUR + 1, -1.0), secs(2880));
    }

    #[test]
    fn exponential_grows_and_caps() {
        let policy = exponential(5, 2.0, 3600, 86_400);
        let bases: Vec<u64> = (1..=12)
            .map(|n| policy.base_delay_secs(n).unwrap())
            .collect();
        assert_eq!(
            bases,
            vec![5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(policy.next_delay(3, 15, 0.0), secs(20));
        assert_eq!(policy.base_delay_secs(u32::MAX), Some(3600));
    }

    #[test]
    fn exponential_rounds_fractional_bases() {
        let policy = exponential(5, 1.5, 3600, 86_400);
        // 5, 7.5, 11.25, 16.875
        let bases: Vec<u64> = (1..=4)
            .map(|n| policy.base_delay_secs(n).unwrap())
            .collect();
        assert_eq!(bases, vec![5, 8, 11, 17]);
    }

    #[test]
    fn exponential_never_schedules_past_24h() {
        let policy = exponential(5, 2.0, 3600, 86_400);
        for jitter in [-1.0, -0.5, 0.0, 0.37, 1.0] {
            let mut elapsed = Duration::ZERO;
            let mut attempts = 1;
            while let Some(delay) = policy.next_delay(attempts, elapsed.as_secs(), jitter) {
                elapsed += delay;
                attempts += 1;
                assert!(elapsed <= Duration::from_secs(86_400), "{elapsed:?}");
            }
            assert!(attempts > 20, "{attempts}");
        }
        let preview = policy.schedule_preview();
        assert!(*preview.last().unwrap() <= 86_400);
        assert_eq!(preview[..4], [5, 15, 35, 75]);
    }

    #[test]
    fn attempt_cap_is_a_hard_stop() {
        // Unvalidated on purpose: the cap must hold anyway.
        let policy = fixed(1, 2_592_000);
        assert!(policy.validate().is_err());
        assert_eq!(policy.next_delay(MAX_ATTEMPTS - 1, 0, 0.0), secs(1));
        assert_eq!(policy.next_delay(MAX_ATTEMPTS, 0, 0.0), None);
        assert_eq!(policy.schedule_preview().len(), MAX_ATTEMPTS as usize - 1);
    }

    #[test]
    fn unvalidated_extremes_do_not_panic() {
        let huge = RetryPolicy::Schedule {
            delays_seconds: vec![u64::MAX],
        };
        assert_eq!(huge.next_delay(1, 0, 1.0), Some(Duration::MAX));
        assert_eq!(huge.schedule_preview(), vec![u64::MAX]);
        let weird = exponential(5, f64::NAN, 60, u64::MAX);
        assert_eq!(weird.next_delay(3, u64::MAX - 1, 0.0), None);
        assert_eq!(weird.next_delay(3, 0, 0.0), secs(60));
        let shrinking = exponential(5, 0.0, 60, 100);
        assert_eq!(shrinking.next_delay(2, 0, 0.0), secs(0));
    }

    #[test]
    fn cap_check_counts_worst_case_jitter() {
        // 2592000 / 2700 = 960 retries un-jittered, but 1200 at -20%.
        let policy = fixed(2700, 2_592_000);
        assert_eq!(policy.schedule_preview().len(), 960);
        assert!(policy.exceeds_attempt_cap());
        // 2592000 / (0.8 * 3300) = 981.8: fits even in the worst case.
        assert!(!fixed(3300, 2_592_000).exceeds_attempt_cap());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn valid_policy() -> impl Strategy<Value = RetryPolicy> {
        let schedule = proptest::collection::vec(1u64..=604_800, 1..=50)
            .prop_map(|delays_seconds| RetryPolicy::Schedule { delays_seconds });
        let exponential = (1u64..=86_400, 100u32..=1000)
            .prop_flat_map(|(initial, factor_percent)| {
                (
                    Just(initial),
                    Just(f64::from(factor_percent) / 100.0),
                    initial..=604_800,
                    initial..=2_592_000,
                )
            })
            .prop_map(|(initial, factor, max, give_up)| RetryPolicy::Exponential {
                initial_seconds: initial,
                factor,
                max_interval_seconds: max,
                give_up_after_seconds: give_up,
            });
        // Skewed towards short intervals so the attempt cap is exercised.
        let fixed = prop_oneof![1u64..=604_800, 1u64..=10_000]
            .prop_flat_map(|interval| (Just(interval), interval..=2_592_000))
            .prop_map(|(interval, give_up)| RetryPolicy::Fixed {
                interval_seconds: interval,
                give_up_after_seconds: give_up,
            });
        prop_oneof![Just(RetryPolicy::None), schedule, exponential, fixed]
            .prop_filter("must validate", |p| p.validate().is_ok())
    }

    fn jitters() -> impl Strategy<Value = Vec<f64>> {
        proptest::collection::vec(
            prop_oneof![-1.0f64..=1.0, Just(-1.0), Just(1.0), Just(0.0)],
            1..64,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn delays_stay_in_band_and_before_the_deadline(
            policy in valid_policy(),
            jitters in jitters(),
            latency in 0u64..5,
        ) {
            let give_up = policy.give_up_after_secs().map(Duration::from_secs);
            let mut elapsed = Duration::ZERO;
            let mut attempts_made: u32 = 1;
            loop {
                let jitter = jitters[attempts_made as usize % jitters.len()];
                // The policy only sees whole seconds; the deadline is judged
                // against the age it was told.
                let age = Duration::from_secs(elapsed.as_secs());
                let Some(delay) = policy.next_delay(attempts_made, age.as_secs(), jitter) else {
                    break;
                };
                let base = policy.base_delay_secs(attempts_made).unwrap() as f64;
                let landed = age + delay;
                let clamped = give_up == Some(landed);
                let d = delay.as_secs_f64();
                prop_assert!(
                    clamped || (d >= base * 0.8 - 1e-6 && d <= base * 1.2 + 1e-6),
                    "delay {d} for base {base}"
                );
                if let Some(give_up) = give_up {
                    prop_assert!(landed <= give_up, "{landed:?} > {give_up:?}");
                }
                attempts_made += 1;
                prop_assert!(attempts_made <= MAX_ATTEMPTS);
                // Delivery itself takes time; the policy must cope with ages
                // that are not exact sums of its own delays.
                elapsed += delay + Duration::from_secs(latency);
            }
            prop_assert!(attempts_made <= MAX_ATTEMPTS);
        }

        #[test]
        fn valid_policies_end_on_their_own_before_the_cap(policy in valid_policy()) {
            // Worst case: shortest possible delays, ages truncated.
            let mut elapsed = Duration::ZERO;
            let mut attempts_made: u32 = 1;
            while let Some(delay) = policy.next_delay_uncapped(attempts_made, elapsed.as_secs(), -1.0) {
                elapsed += delay;
                attempts_made += 1;
                prop_assert!(attempts_made <= MAX_ATTEMPTS, "{policy:?}");
            }
        }

        #[test]
        fn preview_matches_zero_jitter_run(policy in valid_policy()) {
            let preview = policy.schedule_preview();
            prop_assert!(preview.len() < MAX_ATTEMPTS as usize);
            prop_assert!(preview.windows(2).all(|w| w[0] < w[1]));
            if let Some(give_up) = policy.give_up_after_secs() {
                prop_assert!(preview.last().is_some_and(|&t| t <= give_up));
            }
            let mut elapsed = 0;
            for (i, &offset) in preview.iter().enumerate() {
                let delay = policy.next_delay(i as u32 + 1, elapsed, 0.0).unwrap();
                prop_assert_eq!(delay.subsec_nanos(), 0);
                elapsed += delay.as_secs();
                prop_assert_eq!(elapsed, offset);
            }
            prop_assert_eq!(policy.next_delay(preview.len() as u32 + 1, elapsed, 0.0), None);
        }

        #[test]
        fn serde_round_trips(policy in valid_policy()) {
            let json = serde_json::to_string(&policy).unwrap();
            let back: RetryPolicy = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, policy);
        }
    }
}
