//! The per-token API request rate (`--api-rate-limit`): a token bucket per token, in
//! this process's memory.
//!
//! A bucket holds up to one second's worth of requests and refills continuously, so a
//! token may send `rate` requests at once and then `rate` a second. Buckets are keyed by
//! the SHA-256 of the token text and checked before the token is looked up, so a flood
//! costs no database read, and one token's flood empties only its own bucket.
//!
//! Written here rather than taken from `governor`: the whole of it is a map of two
//! numbers per key under a lock held for a few instructions, where `governor`'s keyed
//! limiter would bring `dashmap`, `quanta` and its own clock abstraction for the same
//! arithmetic. With several processes, each keeps its own buckets: the limit is per
//! process (the README says so).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many buckets are kept before the full (idle) ones are dropped. A full bucket is
/// what a new one would be, so dropping it changes nothing; the cap bounds the memory
/// that a client inventing tokens could make the process hold.
const MAX_BUCKETS: usize = 65_536;

/// Token buckets, one per token.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests the token may still send now (at most `per_second`).
    room: f64,
    /// When `room` was last brought up to date.
    at: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_second` requests a second per token (at least 1).
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from the token's bucket, or says how long until it has room.
    pub fn check(&self, token_hash: &[u8; 32]) -> Result<(), Duration> {
        self.check_at(token_hash, Instant::now())
    }

    fn check_at(&self, key: &[u8; 32], now: Instant) -> Result<(), Duration> {
        let rate = self.per_second;
        let refill = |b: &Bucket| {
            (b.room + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(rate)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, b| refill(b) < rate);
            if buckets.len() >= MAX_BUCKETS {
                // Every bucket in use at once: forgetting them all lets a few requests
                // too many through, once, rather than holding unbounded memory.
                buckets.clear();
            }
        }
        let bucket = buckets.entry(*key).or_insert(Bucket {
            room: rate,
            at: now,
        });
        bucket.room = refill(bucket);
        bucket.at = now;
        if bucket.room >= 1.0 {
            bucket.room -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.room) / rate))
        }
    }
}

/// The `Retry-After` seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_its_rate_then_waits_while_others_are_unaffected() {
        let limiter = RateLimiter::new(5);
        let t0 = Instant::now();
        let (a, b) = ([1; 32], [2; 32]);
        for _ in 0..5 {
            assert!(limiter.check_at(&a, t0).is_ok());
        }
        let wait = limiter
            .check_at(&a, t0)
            .expect_err("the sixth is over the rate");
        assert!(
            (wait.as_secs_f64() - 0.2).abs() < 1e-9,
            "one request's refill: {wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 1);
        // Another token has its whole bucket.
        for _ in 0..5 {
            assert!(limiter.check_at(&b, t0).is_ok());
        }
        // 0.2 s later, one more request fits, and not two.
        let t1 = t0 + Duration::from_millis(200);
        assert!(limiter.check_at(&a, t1).is_ok());
        assert!(limiter.check_at(&a, t1).is_err());
        // An idle second refills the bucket, never beyond one second's worth.
        let t2 = t1 + Duration::from_secs(10);
        for _ in 0..5 {
            assert!(limiter.check_at(&a, t2).is_ok());
        }
        assert!(limiter.check_at(&a, t2).is_err());
    }

    #[test]
    fn idle_buckets_are_dropped_when_the_map_is_full() {
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        for i in 0..MAX_BUCKETS as u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            assert!(limiter.check_at(&key, t0).is_ok());
        }
        // A second later all are full again: the next new key drops them.
        let t1 = t0 + Duration::from_secs(1);
        assert!(limiter.check_at(&[0xff; 32], t1).is_ok());
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}
