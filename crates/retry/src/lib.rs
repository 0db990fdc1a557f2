//! Retry policies for webhook delivery.
//!
//! Owns the `retryPolicy` JSON shape (a public API field, so its serde form
//! is fixed), the bounds a policy must satisfy, and the pure function that
//! turns "attempts made so far + time since the first attempt + a jitter
//! draw" into the delay before the next attempt.
//!
//! It must know nothing but its inputs: no clock, no randomness, no storage,
//! no HTTP. Callers draw the jitter and measure time, so every answer here is
//! deterministic and testable.

mod policy;
mod schedule;

pub use policy::{
    PolicyError, RetryPolicy, DEFAULT_DELAYS_SECONDS, MAX_ATTEMPTS, MAX_DELAY_SECONDS,
    MAX_EXPONENTIAL_INITIAL_SECONDS, MAX_FACTOR, MAX_GIVE_UP_AFTER_SECONDS, MAX_SCHEDULE_LEN,
    MIN_FACTOR,
};
pub use schedule::JITTER_FRACTION;
