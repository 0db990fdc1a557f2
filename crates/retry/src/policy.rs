//! The `retryPolicy` type, its fixed JSON shape, and its validation rules.
//!
//! Owns what a policy *is* and which policies are acceptable. It must not
//! compute delays (that is `schedule`), and it must not change the serde
//! shape: it is a public API field that customers already send.

use serde::{Deserialize, Serialize};

/// The schedule used when an endpoint does not choose one: quick first
/// retries for blips, then hours apart for outages, ~27 h in total.
pub const DEFAULT_DELAYS_SECONDS: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

/// Most entries an explicit schedule may list.
pub const MAX_SCHEDULE_LEN: usize = 50;
/// Longest single delay or interval (7 days): beyond that a retry is more
/// likely to surprise the receiver than to help it.
pub const MAX_DELAY_SECONDS: u64 = 604_800;
/// Longest first delay of an exponential policy (1 day).
pub const MAX_EXPONENTIAL_INITIAL_SECONDS: u64 = 86_400;
/// Smallest growth factor: below 1 the delays would shrink.
pub const MIN_FACTOR: f64 = 1.0;
/// Largest growth factor: above this the interval hits its cap after a
/// couple of tries anyway, so larger values only signal a typo.
pub const MAX_FACTOR: f64 = 10.0;
/// Longest time a message may keep being retried (30 days), which also bounds
/// how long the store must keep undelivered messages around.
pub const MAX_GIVE_UP_AFTER_SECONDS: u64 = 2_592_000;
/// Most delivery attempts (the first one included) any policy may make.
/// Validation rejects policies that could exceed it even with the most
/// unfavourable jitter, and `next_delay` enforces it as a hard stop for
/// policies that were never validated.
pub const MAX_ATTEMPTS: u32 = 1000;

/// How a failed delivery is retried.
///
/// Serialized as an internally tagged object with a `kind` field and
/// camelCase fields; unknown kinds and unknown fields are rejected so a typo
/// in a customer's request fails loudly instead of silently using defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields,
    from = "WirePolicy"
)]
pub enum RetryPolicy {
    /// Deliver once; never retry.
    None,
    /// Explicit delays: after attempt `n` wait `delays_seconds[n - 1]`.
    Schedule { delays_seconds: Vec<u64> },
    /// Delays grow by `factor` from `initial_seconds`, capped at
    /// `max_interval_seconds`, until `give_up_after_seconds` after the first
    /// attempt. Each un-jittered delay is rounded to whole seconds.
    Exponential {
        initial_seconds: u64,
        factor: f64,
        max_interval_seconds: u64,
        give_up_after_seconds: u64,
    },
    /// A constant interval until `give_up_after_seconds` after the first attempt.
    Fixed {
        interval_seconds: u64,
        give_up_after_seconds: u64,
    },
}

/// What is actually deserialized. serde ignores `deny_unknown_fields` for
/// unit variants of an internally tagged enum, so `{"kind": "none",
/// "delaysSeconds": [5]}` would be accepted; an empty struct variant does
/// reject it. Kept private so the public type can keep its plain `None`.
#[derive(Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
enum WirePolicy {
    None {},
    Schedule {
        delays_seconds: Vec<u64>,
    },
    Exponential {
        initial_seconds: u64,
        factor: f64,
        max_interval_seconds: u64,
        give_up_after_seconds: u64,
    },
    Fixed {
        interval_seconds: u64,
        give_up_after_seconds: u64,
    },
}

impl From<WirePolicy> for RetryPolicy {
    fn from(wire: WirePolicy) -> Self {
        match wire {
            WirePolicy::None {} => Self::None,
            WirePolicy::Schedule { delays_seconds } => Self::Schedule { delays_seconds },
            WirePolicy::Exponential {
                initial_seconds,
                factor,
                max_interval_seconds,
                give_up_after_seconds,
            } => Self::Exponential {
                initial_seconds,
                factor,
                max_interval_seconds,
                give_up_after_seconds,
            },
            WirePolicy::Fixed {
                interval_seconds,
                give_up_after_seconds,
            } => Self::Fixed {
                interval_seconds,
                give_up_after_seconds,
            },
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::Schedule {
            delays_seconds: DEFAULT_DELAYS_SECONDS.to_vec(),
        }
    }
}

/// A policy field outside its bounds.
///
/// `field` is a JSON path relative to the policy object (`"factor"`,
/// `"delaysSeconds[2]"`) so the API layer can prefix it with wherever the
/// policy sits in its request (`"retryPolicy."`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

impl PolicyError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), PolicyError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(PolicyError::new(
            field,
            format!("must be between {min} and {max} seconds, got {value}"),
        ))
    }
}

fn too_many_attempts(field: &str) -> PolicyError {
    PolicyError::new(
        field,
        format!(
            "this policy could make more than {MAX_ATTEMPTS} delivery attempts \
             (allowing for ±20% jitter); use a longer interval or a shorter giveUpAfterSeconds"
        ),
    )
}

impl RetryPolicy {
    /// Checks every bound, reporting the first field that is out of range.
    ///
    /// Deserialization alone accepts any numbers; this is what keeps a
    /// customer from configuring a policy that hammers a receiver or keeps
    /// messages in the queue for months.
    pub fn validate(&self) -> Result<(), PolicyError> {
        match self {
            Self::None => Ok(()),
            Self::Schedule { delays_seconds } => {
                if delays_seconds.is_empty() {
                    return Err(PolicyError::new(
                        "delaysSeconds",
                        "must list at least one delay (use kind \"none\" to disable retries)",
                    ));
                }
                if delays_seconds.len() > MAX_SCHEDULE_LEN {
                    return Err(PolicyError::new(
                        "delaysSeconds",
                        format!(
                            "must list at most {MAX_SCHEDULE_LEN} delays, got {}",
                            delays_seconds.len()
                        ),
                    ));
                }
                for (i, &delay) in delays_seconds.iter().enumerate() {
                    check_range(&format!("delaysSeconds[{i}]"), delay, 1, MAX_DELAY_SECONDS)?;
                }
                Ok(())
            }
            &Self::Exponential {
                initial_seconds,
                factor,
                max_interval_seconds,
                give_up_after_seconds,
            } => {
                check_range(
                    "initialSeconds",
                    initial_seconds,
                    1,
                    MAX_EXPONENTIAL_INITIAL_SECONDS,
                )?;
                // `contains` is false for NaN, so non-finite factors fail here too.
                if !(MIN_FACTOR..=MAX_FACTOR).contains(&factor) {
                    return Err(PolicyError::new(
                        "factor",
                        format!("must be a number between {MIN_FACTOR:.1} and {MAX_FACTOR:.1}, got {factor}"),
                    ));
                }
                check_range(
                    "maxIntervalSeconds",
                    max_interval_seconds,
                    initial_seconds,
                    MAX_DELAY_SECONDS,
                )?;
                check_range(
                    "giveUpAfterSeconds",
                    give_up_after_seconds,
                    initial_seconds,
                    MAX_GIVE_UP_AFTER_SECONDS,
                )?;
                if self.exceeds_attempt_cap() {
                    // The count depends on every field; giveUpAfterSeconds is
                    // the one that always fixes it.
                    return Err(too_many_attempts("giveUpAfterSeconds"));
                }
                Ok(())
            }
            &Self::Fixed {
                interval_seconds,
                give_up_after_seconds,
            } => {
                check_range("intervalSeconds", interval_seconds, 1, MAX_DELAY_SECONDS)?;
                check_range(
                    "giveUpAfterSeconds",
                    give_up_after_seconds,
                    interval_seconds,
                    MAX_GIVE_UP_AFTER_SECONDS,
                )?;
                if self.exceeds_attempt_cap() {
                    return Err(too_many_attempts("intervalSeconds"));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<RetryPolicy, serde_json::Error> {
        serde_json::from_value(value)
    }

    fn err_field(policy: &RetryPolicy) -> String {
        policy.validate().unwrap_err().field
    }

    #[test]
    fn none_kind_is_lower_case() {
        assert_eq!(parse(json!({"kind": "none"})).unwrap(), RetryPolicy::None);
        assert_eq!(
            serde_json::to_value(RetryPolicy::None).unwrap(),
            json!({"kind": "none"})
        );
    }

    #[test]
    fn the_four_documented_shapes_round_trip() {
        let shapes = [
            json!({"kind": "none"}),
            json!({"kind": "schedule", "delaysSeconds": [5, 300, 1800, 7200, 18000, 36000, 36000]}),
            json!({"kind": "exponential", "initialSeconds": 5, "factor": 2.0,
                   "maxIntervalSeconds": 3600, "giveUpAfterSeconds": 86400}),
            json!({"kind": "fixed", "intervalSeconds": 3600, "giveUpAfterSeconds": 172800}),
        ];
        for shape in shapes {
            let policy = parse(shape.clone()).unwrap();
            policy.validate().unwrap();
            assert_eq!(serde_json::to_value(&policy).unwrap(), shape);
        }
    }

    #[test]
    fn documented_shapes_parse_to_the_expected_values() {
        assert_eq!(
            parse(
                json!({"kind": "exponential", "initialSeconds": 5, "factor": 2.0,
                         "maxIntervalSeconds": 3600, "giveUpAfterSeconds": 86400})
            )
            .unwrap(),
            RetryPolicy::Exponential {
                initial_seconds: 5,
                factor: 2.0,
                max_interval_seconds: 3600,
                give_up_after_seconds: 86400
            }
        );
        assert_eq!(
            parse(json!({"kind": "fixed", "intervalSeconds": 3600, "giveUpAfterSeconds": 172800}))
                .unwrap(),
            RetryPolicy::Fixed {
                interval_seconds: 3600,
                give_up_after_seconds: 172800
            }
        );
        // An integer factor is accepted for an f64 field.
        assert!(parse(
            json!({"kind": "exponential", "initialSeconds": 5, "factor": 2,
                             "maxIntervalSeconds": 3600, "giveUpAfterSeconds": 86400})
        )
        .is_ok());
    }

    #[test]
    fn default_is_the_documented_schedule() {
        assert_eq!(
            serde_json::to_value(RetryPolicy::default()).unwrap(),
            json!({"kind": "schedule", "delaysSeconds": [5, 300, 1800, 7200, 18000, 36000, 36000]})
        );
        RetryPolicy::default().validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        for shape in [
            json!({"kind": "none", "delaysSeconds": [1]}),
            json!({"kind": "schedule", "delaysSeconds": [1], "extra": true}),
            json!({"kind": "schedule", "delays_seconds": [1]}),
            json!({"kind": "exponential", "initialSeconds": 5, "factor": 2.0,
                   "maxIntervalSeconds": 3600, "giveUpAfterSeconds": 86400, "jitter": 0.1}),
            json!({"kind": "fixed", "intervalSeconds": 3600, "giveUpAfterSeconds": 172800,
                   "maxAttempts": 3}),
        ] {
            assert!(parse(shape.clone()).is_err(), "{shape}");
        }
    }

    #[test]
    fn unknown_or_missing_kinds_are_rejected() {
        for shape in [
            json!({"kind": "linear", "intervalSeconds": 5}),
            json!({"kind": "None"}),
            json!({"kind": "Fixed", "intervalSeconds": 3600, "giveUpAfterSeconds": 172800}),
            json!({"intervalSeconds": 3600, "giveUpAfterSeconds": 172800}),
            json!({"kind": null}),
            json!("none"),
        ] {
            assert!(parse(shape.clone()).is_err(), "{shape}");
        }
    }

    #[test]
    fn missing_and_mistyped_fields_are_rejected() {
        for shape in [
            json!({"kind": "schedule"}),
            json!({"kind": "fixed", "intervalSeconds": 3600}),
            json!({"kind": "fixed", "intervalSeconds": -1, "giveUpAfterSeconds": 172800}),
            json!({"kind": "fixed", "intervalSeconds": 1.5, "giveUpAfterSeconds": 172800}),
            json!({"kind": "exponential", "initialSeconds": 5, "factor": "2",
                   "maxIntervalSeconds": 3600, "giveUpAfterSeconds": 86400}),
        ] {
            assert!(parse(shape.clone()).is_err(), "{shape}");
        }
    }

    #[test]
    fn schedule_bounds() {
        let schedule = |delays: Vec<u64>| RetryPolicy::Schedule {
            delays_seconds: delays,
        };
        assert_eq!(err_field(&schedule(vec![])), "delaysSeconds");
        assert_eq!(err_field(&schedule(vec![1; 51])), "delaysSeconds");
        assert!(schedule(vec![1; 50]).validate().is_ok());
        assert_eq!(err_field(&schedule(vec![5, 300, 0])), "delaysSeconds[2]");
        assert_eq!(err_field(&schedule(vec![5, 604_801])), "delaysSeconds[1]");
        assert!(schedule(vec![1, 604_800]).validate().is_ok());
    }

    fn exponential(initial: u64, factor: f64, max: u64, give_up: u64) -> RetryPolicy {
        RetryPolicy::Exponential {
            initial_seconds: initial,
            factor,
            max_interval_seconds: max,
            give_up_after_seconds: give_up,
        }
    }

    #[test]
    fn exponential_bounds() {
        assert!(exponential(5, 2.0, 3600, 86400).validate().is_ok());
        assert_eq!(
            err_field(&exponential(0, 2.0, 3600, 86400)),
            "initialSeconds"
        );
        assert_eq!(
            err_field(&exponential(86_401, 2.0, 604_800, 2_592_000)),
            "initialSeconds"
        );
        assert_eq!(err_field(&exponential(5, 0.99, 3600, 86400)), "factor");
        assert_eq!(err_field(&exponential(5, 10.01, 3600, 86400)), "factor");
        assert_eq!(err_field(&exponential(5, f64::NAN, 3600, 86400)), "factor");
        assert_eq!(
            err_field(&exponential(5, f64::INFINITY, 3600, 86400)),
            "factor"
        );
        assert!(exponential(5, 1.0, 3600, 3600).validate().is_ok());
        assert!(exponential(5, 10.0, 3600, 86400).validate().is_ok());
        assert_eq!(
            err_field(&exponential(60, 2.0, 59, 86400)),
            "maxIntervalSeconds"
        );
        assert_eq!(
            err_field(&exponential(5, 2.0, 604_801, 86400)),
            "maxIntervalSeconds"
        );
        assert_eq!(
            err_field(&exponential(60, 2.0, 3600, 59)),
            "giveUpAfterSeconds"
        );
        assert_eq!(
            err_field(&exponential(5, 2.0, 3600, 2_592_001)),
            "giveUpAfterSeconds"
        );
    }

    #[test]
    fn exponential_attempt_cap() {
        // 1 s forever for a day would be ~108k attempts.
        let err = exponential(1, 1.0, 1, 86_400).validate().unwrap_err();
        assert_eq!(err.field, "giveUpAfterSeconds");
        assert!(err.message.contains("1000"), "{}", err.message);
        // Hourly for 30 days is ~720 attempts (~900 with jitter): fine.
        assert!(exponential(60, 2.0, 3600, 2_592_000).validate().is_ok());
    }

    #[test]
    fn fixed_bounds() {
        let fixed = |interval, give_up| RetryPolicy::Fixed {
            interval_seconds: interval,
            give_up_after_seconds: give_up,
        };
        assert!(fixed(3600, 172_800).validate().is_ok());
        assert_eq!(err_field(&fixed(0, 172_800)), "intervalSeconds");
        assert_eq!(err_field(&fixed(604_801, 2_592_000)), "intervalSeconds");
        assert_eq!(err_field(&fixed(3600, 3599)), "giveUpAfterSeconds");
        assert_eq!(err_field(&fixed(3600, 2_592_001)), "giveUpAfterSeconds");
        assert!(fixed(604_800, 604_800).validate().is_ok());
    }

    #[test]
    fn fixed_attempt_cap_rejects_one_second_for_thirty_days() {
        let err = RetryPolicy::Fixed {
            interval_seconds: 1,
            give_up_after_seconds: 2_592_000,
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "intervalSeconds");
        assert!(err.message.contains("more than 1000"), "{}", err.message);
        assert_eq!(err.to_string(), format!("intervalSeconds: {}", err.message));
    }

    #[test]
    fn none_is_always_valid() {
        assert!(RetryPolicy::None.validate().is_ok());
    }
}
