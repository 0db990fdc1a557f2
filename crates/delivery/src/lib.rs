//! hookline's delivery engine: turns queued deliveries into signed HTTP POSTs, records
//! every attempt, and decides retries.
//!
//! - [`dispatcher`]: claims due work under a lease and runs attempts, with per-endpoint
//!   concurrency and rate limits and a global cap;
//! - [`client`]: the pooled outbound HTTP client (behind [`client::Transport`]) and the
//!   delivery headers;
//! - [`clock`]: the time source (system clock, or tokio's for paused-time tests);
//! - [`ssrf`]: which addresses deliveries may reach;
//! - [`limiter`]: adaptive per-endpoint concurrency, from latency and failures;
//! - [`outcome`]: pure rules from a response to a verdict and a next step.
//!
//! It uses the store and the signing crate; it knows nothing of the HTTP API.

pub mod client;
pub mod clock;
pub mod dispatcher;
pub mod limiter;
pub mod outcome;
pub mod ssrf;

pub use client::{Client, Transport};
pub use clock::{Clock, SystemClock, TokioClock};
pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use ssrf::Guard;
