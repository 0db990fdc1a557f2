//! The dispatcher: claims due deliveries from the store under a lease, runs each attempt
//! as its own task, and reports the outcome back.
//!
//! Isolation: the store hands out work per endpoint, never more than an endpoint's free
//! `maxConcurrency` slots (counted here), so a slow endpoint only ever ties up its own
//! slots. `throttleRate` is a per-endpoint pacing: each claimed delivery is booked a
//! start time (here; on PostgreSQL the claim books it in the database, so that every
//! process's attempts together keep the rate, and says how long to wait). A throttled endpoint gets new work only while its bookings reach less than
//! [`PACE_AHEAD`] ahead (and at most a second's worth per claim, from the store), so the
//! deliveries waiting for their turn are few, wait briefly (well within their lease) and
//! do not sit on the global slots other endpoints need. A global semaphore is a hard cap
//! on attempts in flight. Many dead endpoints together could still fill that cap, each
//! holding its slots until its timeout: so a failing endpoint (its last attempt failed)
//! gets one slot instead of its `maxConcurrency`, and failing endpoints together get at
//! most half the cap, leaving the other half to endpoints that answer. Nothing is kept in
//! memory beyond the claimed work: the backlog stays on disk and is found by index.
//!
//! Fresh work: the dispatcher is the store's [`Intake`]. While a message is fanned out, the
//! store asks it for a free slot for each endpoint (one with work queued before it only
//! while most of its slots are free: [`passes_queue`]); the slot is counted at once (so
//! claims see it), the delivery is written already leased, and once the message is
//! durable it arrives here through a channel and starts without a claim.
//!
//! Wake-ups: work queued without a hand-over (a create the dispatcher had no slot for,
//! through [`Intake::queued`]; a resend or recovery, through [`Dispatcher::waker`]) wakes
//! the loop so it is claimed at once, and so does a finished attempt whose slot queued
//! work may wait for (its endpoint was at its cap, or no slot was free at all). Polling (at least every `poll_interval`, sooner when the
//! store says something falls due) is the safety net, so correctness never depends on
//! a notification.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_retry::RetryPolicy;
use hookline_store::{
    new_id, passes_queue, Applied, Attempt, AttemptReport, Busy, ClaimedDelivery, DeliveryQueue,
    Endpoint, Intake, NextStep, Raise, ReportOutcome, StoreError,
};
use rand::Rng;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::client::{delivery_headers, payload_body, Client, Transport};
use crate::clock::{Clock, SystemClock};
use crate::limiter::{Limiter, Outcome};
use crate::outcome::{classify, next_step, parse_retry_after, Verdict};

/// Default per-attempt timeout when the endpoint sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(15_000);

/// `--max-endpoint-concurrency`'s default.
pub const DEFAULT_MAX_ENDPOINT_CONCURRENCY: u32 = 256;

/// How long an endpoint's adaptive limit is kept after its last attempt: it is shown
/// (stats, `/metrics`) and used while the endpoint has work, and an endpoint back after
/// a pause starts afresh, from the default.
const LIMIT_KEPT_FOR: Duration = Duration::from_secs(60);

/// The `throttleRate`s that pace deliveries to `d`'s endpoint: its own and its
/// application's, by id.
fn paces_of(d: &ClaimedDelivery) -> Vec<(&str, u32)> {
    [
        (d.endpoint.id.as_str(), d.endpoint.settings.throttle_rate),
        (d.endpoint.app_id.as_str(), d.app_throttle_rate),
    ]
    .into_iter()
    .filter_map(|(key, rate)| Some((key, rate.filter(|r| *r > 0)?)))
    .collect()
}

/// The least a start booked across processes may be late and still go out
/// ([`Dispatcher::too_late`]): a timer fires up to a millisecond late, more on a loaded
/// machine, and a claim's first booked start can be now, so a bound of half a step of a
/// fast rate would hand back most starts. Above 100/s a start may thus go out up to this
/// late, where the exact bound would be less.
const LATE_START_FLOOR: Duration = Duration::from_millis(5);

/// How late after its planned time a paced start may go out and still count from that
/// time ([`Dispatcher::keep_spacing`]): the timer's granularity.
const SPACING_SLACK: Duration = Duration::from_millis(1);

/// A throttled endpoint gets no new claims while its pacing is booked further ahead.
pub use hookline_store::PACE_AHEAD;

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Hard cap on attempts in flight in this process.
    pub max_in_flight: usize,
    /// How long a claim is held before another worker may take the delivery over.
    pub lease: Duration,
    /// Longest sleep between looks at the store when nothing was announced.
    pub poll_interval: Duration,
    /// An endpoint failing for this long with no success is disabled.
    pub disable_after: Duration,
    /// On shutdown, how long in-flight attempts may finish before being handed back.
    pub shutdown_grace: Duration,
    /// Send `svix-*` headers to endpoints that do not say otherwise.
    pub svix_headers: bool,
    /// Spread retries by ±20 % (off only in tests that check exact schedules).
    pub jitter: bool,
    /// The most attempts in flight to one endpoint that sets no `maxConcurrency`: its
    /// adaptive limit grows up to this ([`crate::limiter`]).
    pub max_endpoint_concurrency: u32,
    /// An explicit `maxConcurrency` is a fixed limit, not a ceiling the limit adapts
    /// under (benchmarks' reference runs only: `HOOKLINE_TEST_FIXED_MAX_CONCURRENCY=1`).
    pub fixed_explicit_limits: bool,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 512,
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            shutdown_grace: Duration::from_secs(10),
            svix_headers: false,
            jitter: true,
            max_endpoint_concurrency: DEFAULT_MAX_ENDPOINT_CONCURRENCY,
            fixed_explicit_limits: false,
        }
    }
}

/// Something that wants to hear about attempts (operational webhooks, metrics).
pub trait AttemptObserver: Send + Sync + 'static {
    /// Messages the attempt's report should raise, written by the store in the report's
    /// own transaction (see [`Raise`]): for what must happen exactly when the attempt is
    /// recorded.
    fn raises(
        &self,
        _delivery: &ClaimedDelivery,
        _attempt: &Attempt,
        _next: &NextStep,
    ) -> Option<Raise> {
        None
    }

    /// After the report: for what may be missed if the process dies (counters, tests).
    fn attempted(&self, _delivery: &ClaimedDelivery, _attempt: &Attempt, _outcome: &Observed) {}
}

/// What happened, for observers.
#[derive(Debug, Clone)]
pub struct Observed {
    pub verdict: Verdict,
    pub next: hookline_store::NextStep,
    pub endpoint_disabled: bool,
    pub consecutive_failures: u32,
    /// The attempt was logged, but its lease had expired and the delivery was claimed
    /// again (this worker stalled): `next` and the endpoint's health were not applied;
    /// the worker holding the delivery now decides them, and is the one to act on them.
    pub lease_lost: bool,
}

/// One endpoint's attempts in flight in this process, against its `maxConcurrency`.
#[derive(Debug, Default, Clone, Copy)]
struct InFlight {
    attempts: usize,
    cap: usize,
    /// The endpoint was failing when its slot was taken. A failing endpoint gets one
    /// attempt at a time, and only once nothing else of it is in flight, so its slots are
    /// either all taken while it was healthy or this one.
    failing: bool,
}

/// One endpoint's adaptive concurrency limit.
#[derive(Debug)]
struct Adaptive {
    limiter: Limiter,
    /// When an attempt last took a slot or finished.
    used: tokio::time::Instant,
}

/// Attempts in flight in this process, per endpoint id and to failing endpoints in all.
#[derive(Debug, Default)]
struct Slots {
    endpoints: HashMap<String, InFlight>,
    failing: usize,
}

pub struct Dispatcher {
    store: Arc<dyn DeliveryQueue>,
    client: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    cfg: DispatcherConfig,
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    /// Per endpoint id: attempts in flight and its `maxConcurrency`; and how many go to
    /// failing endpoints (a std mutex: held only for a map update).
    in_flight: Mutex<Slots>,
    /// Per endpoint and per application id: the earliest time the next attempt may
    /// start (throttleRate pacing).
    pacing: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Per paced endpoint and application id: 1/rate after this process's last actual
    /// start under it (kept while ahead; see [`Dispatcher::keep_spacing`]).
    spacing: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Claimed deliveries not yet reported, for handing back on shutdown.
    leases: Mutex<HashMap<i64, String>>,
    /// Per endpoint id with attempts in the last [`LIMIT_KEPT_FOR`]: its adaptive
    /// concurrency limit (a std mutex: held for a map update or a limiter's arithmetic).
    limits: Mutex<HashMap<String, Adaptive>>,
    observers: Vec<Arc<dyn AttemptObserver>>,
    /// Deliveries handed over by the store's creates ([`Intake::take`]); the receiver is
    /// taken by [`Dispatcher::run`].
    fresh_tx: UnboundedSender<ClaimedDelivery>,
    fresh_rx: Mutex<Option<UnboundedReceiver<ClaimedDelivery>>>,
    /// Slots reserved by creates whose deliveries have not arrived (or been cancelled) yet.
    reserved: AtomicUsize,
    /// Set when draining starts: no more reservations.
    stopping: AtomicBool,
    /// How late attempt tasks start after being spawned (a moving average, in
    /// microseconds): this process's own load, which the adaptive limits discount.
    start_delay_us: AtomicU64,
    /// What the claim loop is doing, for an attempt that schedules work to fall due.
    idle: Mutex<LoopIdle>,
}

/// Where the claim loop is between claims. An attempt whose report schedules a retry
/// must have the loop look at the queue again by the retry's time: a loop that is
/// claiming will (it asks for the next due time before it sleeps); one that already
/// asked may have done so before the report committed, and one asleep looks again only
/// when its sleep ends, which may be a poll interval (or a lease) away.
#[derive(Clone, Copy)]
enum LoopIdle {
    /// Claiming: it asks the queue for its next due time before it sleeps.
    Claiming,
    /// Asking the queue for its next due time; the answer may predate a report.
    Planning,
    /// Asleep until then (or until woken).
    Asleep(tokio::time::Instant),
}

/// One attempt's hold on its endpoint's slot and on a global permit, given back when
/// dropped: when the attempt is done, and also when its task is aborted.
struct Slot {
    dispatcher: Arc<Dispatcher>,
    endpoint_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let was_full = self.dispatcher.release_slot(&self.endpoint_id);
        let none_free = self.dispatcher.slots.available_permits() == 0;
        self.dispatcher.slots.add_permits(1);
        metrics::gauge!("hookline_attempts_in_flight").decrement(1.0);
        // A freed slot may unblock queued work a claim passed by for want of it: the
        // endpoint's (it was at its cap, or failing ones at theirs) or anyone's (no
        // attempt could start at all). Otherwise it changes nothing a claim would see,
        // and waking for every finished attempt would keep the loop (and the database)
        // busy with claims that find nothing.
        if was_full || none_free {
            self.dispatcher.wake.notify_one();
        }
    }
}

impl Dispatcher {
    pub fn new(store: Arc<dyn DeliveryQueue>, client: Client, cfg: DispatcherConfig) -> Arc<Self> {
        Self::with_observers(store, client, cfg, vec![], Arc::new(Notify::new()))
    }

    /// A dispatcher that reports every attempt to `observers` and wakes on `wake`.
    pub fn with_observers(
        store: Arc<dyn DeliveryQueue>,
        client: Client,
        cfg: DispatcherConfig,
        observers: Vec<Arc<dyn AttemptObserver>>,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        Self::with_parts(
            store,
            Arc::new(client),
            Arc::new(SystemClock),
            cfg,
            observers,
            wake,
        )
    }

    /// A dispatcher with its transport and clock chosen by the caller (tests: an
    /// in-process receiver and tokio's paused clock).
    pub fn with_parts(
        store: Arc<dyn DeliveryQueue>,
        client: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        cfg: DispatcherConfig,
        observers: Vec<Arc<dyn AttemptObserver>>,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        let (fresh_tx, fresh_rx) = unbounded_channel();
        Arc::new(Self {
            store,
            client,
            clock,
            slots: Arc::new(Semaphore::new(cfg.max_in_flight)),
            cfg,
            wake,
            in_flight: Mutex::new(Slots::default()),
            pacing: Mutex::new(HashMap::new()),
            spacing: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            observers,
            fresh_tx,
            fresh_rx: Mutex::new(Some(fresh_rx)),
            reserved: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            start_delay_us: AtomicU64::new(0),
            idle: Mutex::new(LoopIdle::Claiming),
        })
    }

    /// Notify this after committing new work to have it picked up at once.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until `stop` turns true, then drains: no new claims, in-flight attempts get
    /// `shutdown_grace` to finish, the rest are handed back to the store.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut fresh = self
            .fresh_rx
            .lock()
            .expect("fresh receiver")
            .take()
            .expect("a dispatcher runs once");
        let me: Arc<dyn Intake> = self.clone();
        self.store.attach_intake(Arc::downgrade(&me));
        let mut tasks = JoinSet::new();
        // While the database cannot be reached, said once when it starts and once when
        // it ends, not at every poll.
        let mut unreachable = false;
        loop {
            if *stop.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            while let Ok(d) = fresh.try_recv() {
                self.start_fresh(&mut tasks, d);
            }
            let free = self.slots.available_permits();
            let mut claim_failed = false;
            let claimed = if free == 0 {
                Vec::new()
            } else {
                let busy = self.busy();
                let claim = self.store.claim_deliveries(
                    self.clock.now(),
                    self.lease(),
                    free.min(256),
                    self.failing_room(),
                    &busy,
                );
                tokio::pin!(claim);
                // Deliveries handed over meanwhile start without waiting for the claim.
                let claimed = loop {
                    tokio::select! {
                        claimed = &mut claim => break claimed,
                        Some(d) = fresh.recv() => self.start_fresh(&mut tasks, d),
                    }
                };
                match claimed {
                    Ok(c) => {
                        if std::mem::take(&mut unreachable) {
                            tracing::info!("the database can be reached again; delivering");
                        }
                        c
                    }
                    Err(e) => {
                        claim_failed = true;
                        match e {
                            // The store logs a full disk once per episode.
                            StoreError::StorageFull(_) => {
                                tracing::debug!(error = %e, "claiming deliveries failed")
                            }
                            StoreError::Unavailable(_) if unreachable => {
                                tracing::debug!(error = %e, "claiming deliveries failed")
                            }
                            StoreError::Unavailable(_) => {
                                unreachable = true;
                                tracing::warn!(
                                    error = %e,
                                    "the database cannot be reached; deliveries wait until it is back"
                                );
                            }
                            _ => tracing::error!(error = %e, "claiming deliveries failed"),
                        }
                        Vec::new()
                    }
                }
            };
            let got = claimed.len();
            if !claim_failed && free > 0 {
                metrics::counter!("hookline_claims_total").increment(1);
                if got == 0 {
                    metrics::counter!("hookline_claims_empty_total").increment(1);
                }
            }
            let mut started = 0;
            // What this process had in flight to each endpoint as the claim came back:
            // the claim's count less that is the other processes' share (none counted
            // where the store serves this process only).
            let mut own: HashMap<String, u32> = HashMap::new();
            for d in claimed {
                let elsewhere = match d.in_flight_shared {
                    0 => 0,
                    shared => shared.saturating_sub(
                        *own.entry(d.endpoint.id.clone())
                            .or_insert_with(|| self.in_flight_to(&d.endpoint.id)),
                    ),
                };
                self.slots
                    .acquire()
                    .await
                    .expect("semaphore never closed")
                    .forget();
                if !self.take_slot(&d.endpoint, elsewhere, false) {
                    // A create took the endpoint's last slot (or the failing endpoints'
                    // last one) between this claim's look at the counts and the claim
                    // itself, or the claim went by a cap the limit is below (the
                    // default, for an endpoint this process had no limit for yet), with
                    // other processes' attempts counted: back to the queue, due now.
                    self.slots.add_permits(1);
                    self.release(d.id, &d.lease_token).await;
                    continue;
                }
                // Booked now, so the next claim already sees how far ahead it reaches.
                let start_at = self.book_pace(&d);
                self.start(&mut tasks, d, start_at, elsewhere);
                started += 1;
            }
            // Claimed and all handed back (each had lost its slot meanwhile): wait as
            // after an empty claim, rather than claim them again at once.
            if started > 0 {
                continue;
            }
            // After a failed claim the next waits a poll interval, not for the work that
            // is due now (that would retry at once, in a loop).
            self.set_idle(LoopIdle::Planning);
            let wait = if claim_failed {
                self.cfg.poll_interval
            } else {
                self.idle_wait().await
            };
            let until = tokio::time::Instant::now() + wait;
            self.set_idle(LoopIdle::Asleep(until));
            let sleep = tokio::time::sleep_until(until);
            tokio::pin!(sleep);
            // A delivery handed over needs no claim: it starts, and the wait goes on.
            // Finished attempts are reaped as they end: a task's memory stays with the
            // set until it is joined, and a wait can last through many hand-overs.
            loop {
                tokio::select! {
                    _ = self.wake.notified() => break,
                    Some(d) = fresh.recv() => self.start_fresh(&mut tasks, d),
                    Some(_) = tasks.join_next() => {}
                    _ = &mut sleep => break,
                    _ = stop.changed() => break,
                }
            }
            self.set_idle(LoopIdle::Claiming);
        }
        self.drain(tasks, fresh).await;
    }

    /// Counts an attempt to `endpoint` against its concurrency cap (one while it is
    /// failing), with `elsewhere` attempts to it in flight in other processes, and, if it
    /// is failing, against the slots failing endpoints may hold; if it has room in both.
    /// `behind`: a fresh delivery with older work of the endpoint queued, which needs
    /// more room to pass it ([`passes_queue`]).
    fn take_slot(&self, endpoint: &Endpoint, elsewhere: u32, behind: bool) -> bool {
        let cap = endpoint.concurrency_cap_within(Some(self.adaptive_limit(endpoint)));
        let failing = endpoint.is_failing();
        let mut slots = self.in_flight.lock().expect("in-flight map");
        let attempts = slots.endpoints.get(&endpoint.id).map_or(0, |f| f.attempts);
        if !passes_queue(attempts.saturating_add(elsewhere as usize), cap, behind)
            || (failing && slots.failing >= self.failing_cap())
        {
            return false;
        }
        let entry = slots.endpoints.entry(endpoint.id.clone()).or_default();
        entry.attempts += 1;
        entry.cap = cap;
        if failing {
            // The cap of one means nothing else of this endpoint is in flight.
            entry.failing = true;
            slots.failing += 1;
        }
        true
    }

    /// The most the adaptive limit of `ep` may reach: its `maxConcurrency`, or the
    /// global maximum.
    fn limit_ceiling(&self, ep: &Endpoint) -> u32 {
        ep.settings
            .max_concurrency
            .unwrap_or(self.cfg.max_endpoint_concurrency)
            .max(1)
    }

    /// This process's concurrency limit for `ep` now: its adaptive limit (made, at the
    /// default, for an endpoint it has none for), or 0 while the receiver asked for a
    /// pause with `Retry-After`.
    fn adaptive_limit(&self, ep: &Endpoint) -> usize {
        self.with_limiter(ep, |limiter, now| {
            if limiter.paused_until(now.into_std()).is_some() {
                0
            } else {
                limiter.limit() as usize
            }
        })
    }

    /// Runs `f` on the limiter of `ep` (made at the default if it has none), marked used
    /// now and capped at the endpoint's ceiling.
    fn with_limiter<T>(
        &self,
        ep: &Endpoint,
        f: impl FnOnce(&mut Limiter, tokio::time::Instant) -> T,
    ) -> T {
        let now = tokio::time::Instant::now();
        let ceiling = self.limit_ceiling(ep);
        let mut limits = self.limits.lock().expect("limit map");
        let fixed = self.cfg.fixed_explicit_limits && ep.settings.max_concurrency.is_some();
        let a = limits.entry(ep.id.clone()).or_insert_with(|| Adaptive {
            limiter: match fixed {
                true => Limiter::fixed(ceiling),
                false => Limiter::new(ceiling),
            },
            used: now,
        });
        a.used = now;
        a.limiter.set_max(ceiling);
        f(&mut a.limiter, now)
    }

    /// Attempts to `endpoint_id` in flight in this process.
    fn in_flight_to(&self, endpoint_id: &str) -> u32 {
        self.in_flight
            .lock()
            .expect("in-flight map")
            .endpoints
            .get(endpoint_id)
            .map_or(0, |f| f.attempts) as u32
    }

    /// Folds how late an attempt task started into the moving average (weight 1/8).
    fn note_start_delay(&self, delay: Duration) {
        let sample = delay.as_micros().min(u128::from(u32::MAX)) as u64;
        let _ = self
            .start_delay_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |avg| {
                Some(avg - avg / 8 + sample / 8)
            });
    }

    /// Feeds a finished attempt to its endpoint's adaptive limit.
    fn learn(
        &self,
        ep: &Endpoint,
        verdict: &Verdict,
        error_kind: Option<&str>,
        latency: Duration,
        in_flight: u32,
    ) {
        let outcome = match verdict {
            Verdict::Delivered => Outcome::Success,
            Verdict::Throttled { retry_after } => Outcome::Throttled {
                retry_after: *retry_after,
            },
            Verdict::Gone => Outcome::Other,
            Verdict::Failed => match error_kind {
                Some("timeout") => Outcome::Timeout,
                Some("connect" | "connection_refused" | "connection_reset") => {
                    Outcome::ConnectionError
                }
                _ => Outcome::Other,
            },
        };
        let local_delay = Duration::from_micros(self.start_delay_us.load(Ordering::Relaxed));
        let (before, after) = self.with_limiter(ep, |limiter, now| {
            limiter.set_local_delay(local_delay);
            let before = limiter.limit();
            limiter.record(outcome, latency, in_flight, now.into_std());
            (before, limiter.limit())
        });

        if before != after {
            tracing::trace!(
                endpoint = %ep.id,
                before,
                after,
                latency_us = latency.as_micros() as u64,
                in_flight,
                local_delay_us = local_delay.as_micros() as u64,
                "adaptive concurrency limit"
            );
            if let Some(f) = self
                .in_flight
                .lock()
                .expect("in-flight map")
                .endpoints
                .get_mut(&ep.id)
            {
                f.cap = ep.concurrency_cap_within(Some(after as usize));
            }
            // More room than the claims so far took: look again now, not when a slot
            // of a full endpoint frees.
            if after > before {
                self.wake.notify_one();
            }
        }
    }

    /// The adaptive concurrency limit of each endpoint with attempts in the last minute
    /// (stats, `/metrics`).
    pub fn concurrency_limits(&self) -> Vec<(String, u32)> {
        let now = tokio::time::Instant::now();
        let mut limits = self.limits.lock().expect("limit map");
        limits.retain(|_, a| now.duration_since(a.used) < LIMIT_KEPT_FOR);
        limits
            .iter()
            .map(|(id, a)| (id.clone(), a.limiter.limit()))
            .collect()
    }

    /// The adaptive concurrency limit of `endpoint_id`, if it had attempts in the last
    /// minute.
    pub fn concurrency_limit(&self, endpoint_id: &str) -> Option<u32> {
        let now = tokio::time::Instant::now();
        self.limits
            .lock()
            .expect("limit map")
            .get(endpoint_id)
            .filter(|a| now.duration_since(a.used) < LIMIT_KEPT_FOR)
            .map(|a| a.limiter.limit())
    }

    /// How many attempts may go to failing endpoints at once: half the global cap. Dead
    /// endpoints each hold a slot until their timeout; however many there are, they can
    /// fill only this part, and healthy endpoints always have the other half.
    fn failing_cap(&self) -> usize {
        (self.cfg.max_in_flight / 2).max(1)
    }

    /// How many more attempts to failing endpoints may start now.
    fn failing_room(&self) -> usize {
        let failing = self.in_flight.lock().expect("in-flight map").failing;
        self.failing_cap().saturating_sub(failing)
    }

    /// Starts a delivery a create handed over; its slots were taken when it was reserved.
    fn start_fresh(self: &Arc<Self>, tasks: &mut JoinSet<()>, d: ClaimedDelivery) {
        self.reserved.fetch_sub(1, Ordering::SeqCst);
        // The create's count of every process's attempts, less this process's besides
        // this one (about: its later reservations in the same write are counted here only).
        let elsewhere = match d.in_flight_shared {
            0 => 0,
            shared => shared.saturating_sub(self.in_flight_to(&d.endpoint.id).saturating_sub(1)),
        };
        self.start(tasks, d, None, elsewhere);
    }

    /// Runs the attempt of `d` (at `start_at`, if paced) as its own task, with `elsewhere`
    /// attempts to its endpoint in flight in other processes. The caller has taken its
    /// endpoint slot and a global permit; the task gives them back.
    fn start(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        d: ClaimedDelivery,
        start_at: Option<tokio::time::Instant>,
        elsewhere: u32,
    ) {
        self.leases
            .lock()
            .expect("lease map")
            .insert(d.id, d.lease_token.clone());
        metrics::gauge!("hookline_attempts_in_flight").increment(1.0);
        let slot = Slot {
            dispatcher: self.clone(),
            endpoint_id: d.endpoint.id.clone(),
        };
        let spawned = tokio::time::Instant::now();
        tasks.spawn(async move {
            match start_at {
                Some(t) => {
                    tokio::time::sleep_until(t).await;
                    if d.start_at.is_some() && slot.dispatcher.too_late(&d, t) {
                        slot.dispatcher.hand_back_late(&d).await;
                        return;
                    }
                    slot.dispatcher.keep_spacing(&d, t).await;
                }
                None => slot.dispatcher.note_start_delay(spawned.elapsed()),
            }
            // The concurrency this attempt meets: a claim's whole batch has taken its
            // slots by now (the limiter judges latency against it), and other processes'
            // attempts as its claim counted them.
            let in_flight = slot
                .dispatcher
                .in_flight_to(&slot.endpoint_id)
                .max(1)
                .saturating_add(elsewhere);
            slot.dispatcher.attempt(d, in_flight).await;
            drop(slot);
        });
    }

    fn set_idle(&self, idle: LoopIdle) {
        *self.idle.lock().expect("loop state") = idle;
    }

    /// Work this process's report made fall due at `at` (a retry): wakes the claim loop
    /// unless it will look at the queue by then anyway. Called after the report commits,
    /// so a loop that asks for the next due time later sees it.
    fn falls_due(&self, at: chrono::DateTime<chrono::Utc>) {
        let due = self.instant_of(at);
        let wake = match *self.idle.lock().expect("loop state") {
            LoopIdle::Claiming => false,
            LoopIdle::Planning => true,
            LoopIdle::Asleep(until) => due < until,
        };
        if wake {
            self.wake.notify_one();
        }
    }

    /// How long to sleep when there was nothing to claim: until the next delivery falls
    /// due on an endpoint with room (a freed slot wakes the loop anyway).
    async fn idle_wait(&self) -> Duration {
        let wait = match self
            .store
            .next_due(&self.busy(), self.failing_room() > 0)
            .await
        {
            Ok(Some(t)) => (t - self.clock.now())
                .to_std()
                .unwrap_or(Duration::from_millis(5))
                .clamp(Duration::from_millis(5), self.cfg.poll_interval),
            _ => self.cfg.poll_interval,
        };
        // The work of a paused endpoint was left out above: look again when it resumes.
        let now = tokio::time::Instant::now();
        let resumes = self
            .limits
            .lock()
            .expect("limit map")
            .values()
            .filter_map(|a| a.limiter.paused_until(now.into_std()))
            .min();
        match resumes {
            Some(at) => {
                wait.min(at.saturating_duration_since(now.into_std()) + Duration::from_millis(1))
            }
            None => wait,
        }
    }

    async fn drain(
        self: &Arc<Self>,
        mut tasks: JoinSet<()>,
        mut fresh: UnboundedReceiver<ClaimedDelivery>,
    ) {
        self.stopping.store(true, Ordering::SeqCst);
        let grace = tokio::time::sleep(self.cfg.shutdown_grace);
        tokio::pin!(grace);
        // Deliveries creates still hand over are not started: they go back with the rest.
        let park = |d: ClaimedDelivery| {
            self.reserved.fetch_sub(1, Ordering::SeqCst);
            self.leases
                .lock()
                .expect("lease map")
                .insert(d.id, d.lease_token.clone());
            self.release_slot(&d.endpoint.id);
            self.slots.add_permits(1);
        };
        while !tasks.is_empty() || self.reserved.load(Ordering::SeqCst) > 0 {
            tokio::select! {
                _ = tasks.join_next(), if !tasks.is_empty() => {}
                Some(d) = fresh.recv() => park(d),
                _ = &mut grace => {
                    tasks.abort_all();
                    break;
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        while let Ok(d) = fresh.try_recv() {
            park(d);
        }
        let left: Vec<(i64, String)> = self.leases.lock().expect("lease map").drain().collect();
        for (id, token) in left {
            self.release(id, &token).await;
        }
        tracing::info!("dispatcher stopped");
    }

    /// Attempts in flight and adaptive limits per endpoint, for the store's claim: an
    /// endpoint at its limit counts as full ([`Busy::FULL`]), and so does a throttled endpoint
    /// (or application: its id) whose pacing is booked beyond [`PACE_AHEAD`], until it
    /// catches up.
    fn busy(&self) -> Vec<Busy> {
        let now = tokio::time::Instant::now();
        let mut busy: HashMap<String, Busy> = HashMap::new();
        // Every endpoint with a limit, so claims take no more than it allows even of one
        // with nothing in flight (and nothing of one the receiver paused).
        {
            let mut limits = self.limits.lock().expect("limit map");
            limits.retain(|_, a| now.duration_since(a.used) < LIMIT_KEPT_FOR);
            for (id, a) in limits.iter() {
                let paused = a.limiter.paused_until(now.into_std()).is_some();
                let mut b = Busy::new(id.clone(), if paused { Busy::FULL } else { 0 });
                b.limit = Some(a.limiter.limit() as usize);
                busy.insert(id.clone(), b);
            }
        }
        for (id, f) in &self.in_flight.lock().expect("in-flight map").endpoints {
            let b = busy
                .entry(id.clone())
                .or_insert_with(|| Busy::new(id.clone(), 0));
            if !b.is_full() {
                b.in_flight = if f.attempts >= f.cap {
                    Busy::FULL
                } else {
                    f.attempts
                };
            }
        }
        let mut pacing = self.pacing.lock().expect("pacing map");
        // A slot in the past is the same as none.
        pacing.retain(|_, next| *next > now);
        for (id, next) in pacing.iter() {
            if *next > now + PACE_AHEAD {
                busy.insert(id.clone(), Busy::full(id.clone()));
            }
        }
        busy.into_values().collect()
    }

    /// Gives back a slot of `endpoint_id`; whether the endpoint was at its cap (or a
    /// failing one while failing endpoints held all theirs) until now.
    fn release_slot(&self, endpoint_id: &str) -> bool {
        let failing_cap = self.failing_cap();
        let mut slots = self.in_flight.lock().expect("in-flight map");
        let failing_full = slots.failing >= failing_cap;
        let Some(f) = slots.endpoints.get_mut(endpoint_id) else {
            return false;
        };
        let was_full = f.attempts >= f.cap || (f.failing && failing_full);
        f.attempts -= 1;
        if f.attempts == 0 {
            let failing = f.failing;
            slots.endpoints.remove(endpoint_id);
            if failing {
                slots.failing -= 1;
            }
        }
        was_full
    }

    /// Books the start time of `d` under its endpoint's and its application's
    /// `throttleRate`, if any: the later of the two free slots.
    ///
    /// Where the store booked it (across processes: `start_at`, in the database's time),
    /// that start is kept (now if it has passed), and only noted here so that
    /// [`Dispatcher::busy`] sees how far ahead it reaches.
    fn book_pace(&self, d: &ClaimedDelivery) -> Option<tokio::time::Instant> {
        let limits = paces_of(d);
        if limits.is_empty() {
            return None;
        }
        let mut map = self.pacing.lock().expect("pacing map");
        let now = tokio::time::Instant::now();
        let slot = match d.start_at {
            // In the past if the claim came back after it: how late is kept.
            Some(at) => self.instant_of(at),
            None => limits
                .iter()
                .filter_map(|(key, _)| map.get(*key).copied())
                .fold(now, |a, b| a.max(b)),
        };
        for (key, rate) in limits {
            let next = slot + Duration::from_secs_f64(1.0 / rate as f64);
            let entry = map.entry(key.to_string()).or_insert(next);
            *entry = (*entry).max(next);
        }
        Some(slot)
    }

    /// Whether it is too late for `d`, booked to start at `booked` by a claim that paced
    /// it with other processes' starts (PostgreSQL), to go out now: later than half its
    /// tightest pace's step (at least [`LATE_START_FLOOR`]). A start later than a whole
    /// step goes out together with other processes' next ones, which start on time, and
    /// the receiver would see `rate + 2` in a second; within this process
    /// [`Dispatcher::keep_spacing`] re-spaces late starts, across processes only not
    /// starting them can.
    fn too_late(&self, d: &ClaimedDelivery, booked: tokio::time::Instant) -> bool {
        let Some(fastest) = paces_of(d).iter().map(|(_, rate)| *rate).max() else {
            return false;
        };
        let bound = Duration::from_secs_f64(0.5 / f64::from(fastest)).max(LATE_START_FLOOR);
        tokio::time::Instant::now().saturating_duration_since(booked) > bound
    }

    /// Gives back a paced delivery that missed its booked start ([`Dispatcher::too_late`]):
    /// due now, the next claim books it a start of its own. Its missed start goes unused,
    /// so the receiver gets less than the rate then, never more.
    async fn hand_back_late(&self, d: &ClaimedDelivery) {
        self.leases.lock().expect("lease map").remove(&d.id);
        metrics::counter!("hookline_paced_starts_missed_total").increment(1);
        tracing::debug!(delivery = d.id, endpoint = %d.endpoint.id, "paced start missed: handed back for a later one");
        self.release(d.id, &d.lease_token).await;
        self.wake.notify_one();
    }

    /// Hands a claimed delivery back to the queue, due now.
    async fn release(&self, id: i64, lease_token: &str) {
        if let Err(e) = self
            .store
            .release_delivery(id, lease_token, self.clock.now())
            .await
        {
            tracing::warn!(delivery = id, error = %e, "could not hand back delivery");
        }
    }

    /// `at`, in the clock's time, on tokio's clock (in the past as far as `at` is).
    fn instant_of(&self, at: chrono::DateTime<chrono::Utc>) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let from_now = at - self.clock.now();
        match from_now.to_std() {
            Ok(ahead) => now + ahead,
            Err(_) => {
                let behind = (-from_now).to_std().unwrap_or_default();
                now.checked_sub(behind).unwrap_or(now)
            }
        }
    }

    /// Waits, once a paced attempt's booked start `booked` has come, until 1/rate after
    /// this process's previous start under each of its paces. Booked starts are spaced
    /// exactly, but one that starts late (its claim came back after it, or a loaded
    /// machine ran its timer late) would otherwise go out together with the next one,
    /// which starts on time, and a receiver could see `rate + 2` in a second.
    ///
    /// A start counts from when it was planned, unless it went out more than
    /// [`SPACING_SLACK`] after that: a timer fires up to a millisecond late, and counting
    /// from that would push every next start later, so that a rate whose step is not a
    /// whole number of milliseconds drifts (300/s went out at 250/s).
    async fn keep_spacing(&self, d: &ClaimedDelivery, booked: tokio::time::Instant) {
        let limits = paces_of(d);
        loop {
            let now = tokio::time::Instant::now();
            let wait = {
                let mut spacing = self.spacing.lock().expect("spacing map");
                // Kept a little past due: a start within the slack of it counts from it.
                let stale = now.checked_sub(SPACING_SLACK).unwrap_or(now);
                spacing.retain(|_, next| *next > stale);
                let planned = limits
                    .iter()
                    .filter_map(|(key, _)| spacing.get(*key).copied())
                    .fold(booked, |a, b| a.max(b));
                if planned <= now {
                    let from = if now - planned > SPACING_SLACK {
                        now
                    } else {
                        planned
                    };
                    for (key, rate) in &limits {
                        let step = Duration::from_secs_f64(1.0 / f64::from(*rate));
                        spacing.insert(key.to_string(), from + step);
                    }
                    None
                } else {
                    Some(planned)
                }
            };
            match wait {
                Some(t) => tokio::time::sleep_until(t).await,
                None => return,
            }
        }
    }

    /// Makes the attempt of `d`, which started with `in_flight` attempts to its endpoint
    /// in flight (itself included), and reports it.
    async fn attempt(&self, d: ClaimedDelivery, in_flight: u32) {
        let now = self.clock.now();
        let ep = &d.endpoint;
        let timeout = ep
            .settings
            .timeout_ms
            .map(|ms| Duration::from_millis(ms as u64))
            .unwrap_or(DEFAULT_TIMEOUT)
            // The attempt and its report end within the lease (reports retry for up to
            // the other half), so no other process takes the delivery over meanwhile.
            .min(self.cfg.lease / 2);
        let headers = delivery_headers(ep, &d.message, now, self.cfg.svix_headers);
        let result = self
            .client
            .post(&ep.url, headers, payload_body(&d.message.payload), timeout)
            .await;

        let verdict = match result.status {
            Some(code) => classify(
                code,
                result
                    .retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, self.clock.now())),
            ),
            None => Verdict::Failed,
        };
        let policy: RetryPolicy = ep
            .settings
            .retry_policy
            .clone()
            .or_else(|| d.app_retry_policy.clone())
            .unwrap_or_default();
        let scheduled_age = (d.scheduled_at - d.created_at).to_std().unwrap_or_default();
        let jitter = if self.cfg.jitter {
            rand::rng().random_range(-1.0..=1.0)
        } else {
            0.0
        };
        self.learn(ep, &verdict, result.error_kind, result.duration, in_flight);
        let finished = self.clock.now();
        let next = next_step(
            &verdict,
            &policy,
            d.attempts + 1,
            scheduled_age,
            jitter,
            finished,
        );
        metrics::counter!("hookline_attempts_total", "outcome" => verdict.label()).increment(1);
        metrics::histogram!("hookline_attempt_duration_seconds")
            .record(result.duration.as_secs_f64());
        let attempt = Attempt {
            id: new_id("atmpt"),
            app_id: d.message.app_id.clone(),
            msg_id: d.message.id.clone(),
            endpoint_id: ep.id.clone(),
            url: ep.url.clone(),
            attempted_at: now,
            status_code: result.status,
            duration_ms: result.duration.as_millis() as u64,
            succeeded: verdict == Verdict::Delivered,
            error_kind: result.error_kind.map(str::to_string),
            response: result.response,
            trigger: d.trigger,
        };
        let disable_after = chrono::Duration::from_std(self.cfg.disable_after).unwrap_or_default();
        let mut raises: Vec<Raise> = self
            .observers
            .iter()
            .filter_map(|o| o.raises(&d, &attempt, &next))
            .collect();
        let raise = match raises.len() {
            0 | 1 => raises.pop(),
            _ => Some(Raise(Arc::new(move |outcome: &ReportOutcome| {
                raises.iter().flat_map(|r| (r.0)(outcome)).collect()
            }))),
        };
        let report = AttemptReport {
            attempt: attempt.clone(),
            next: next.clone(),
            disable_endpoint: verdict == Verdict::Gone,
            disable_if_failing_since: Some(finished - disable_after),
            raise,
        };
        let reported = self.report(&d, report).await;
        // Reported or not, this worker is done with the lease: a report that failed
        // leaves the delivery to come due again when the lease expires.
        self.leases.lock().expect("lease map").remove(&d.id);
        match reported {
            Ok(outcome) => {
                match outcome.applied {
                    Applied::Yes => {
                        if let NextStep::RetryAt(at) = &next {
                            self.falls_due(*at);
                        }
                    }
                    Applied::LeaseLost => {}
                    Applied::DeliveryGone => {
                        // Deleting an endpoint with attempts in flight is ordinary, and
                        // there is nothing left to tell observers about.
                        tracing::debug!(
                            delivery = d.id,
                            endpoint = %ep.id,
                            "attempt not recorded: the endpoint (or its application) was deleted while it ran"
                        );
                        return;
                    }
                }
                let lease_lost = outcome.applied == Applied::LeaseLost;
                if lease_lost {
                    tracing::warn!(
                        delivery = d.id,
                        "attempt logged, delivery left alone: its lease expired before the \
                         attempt was reported and the delivery was claimed again"
                    );
                }
                let observed = Observed {
                    verdict,
                    next,
                    endpoint_disabled: outcome.endpoint_disabled,
                    consecutive_failures: outcome.consecutive_failures,
                    lease_lost,
                };
                for o in &self.observers {
                    o.attempted(&d, &attempt, &observed);
                }
            }
            // The lease will expire and the delivery will be tried again. On a full disk
            // every attempt fails this way: the store's one line per episode says so.
            Err(e @ StoreError::StorageFull(_)) => {
                tracing::debug!(delivery = d.id, error = %e, "recording attempt failed");
            }
            Err(e) => {
                tracing::error!(delivery = d.id, error = %e, "recording attempt failed");
            }
        }
    }

    /// Reports an attempt. While the store is unavailable (its database away) the report
    /// is tried again, backing off up to 2 s, for as long as half the lease: an outage
    /// shorter than that costs neither the attempt's record nor a second delivery once
    /// the lease expires. Not while stopping: the drain must not wait for the database.
    async fn report(
        &self,
        d: &ClaimedDelivery,
        report: AttemptReport,
    ) -> hookline_store::Result<ReportOutcome> {
        let give_up = std::time::Instant::now() + self.cfg.lease / 2;
        let mut wait = Duration::from_millis(50);
        loop {
            let out = self
                .store
                .report_attempt(d.id, &d.lease_token, report.clone())
                .await;
            match out {
                Err(StoreError::Unavailable(e))
                    if std::time::Instant::now() + wait < give_up
                        && !self.stopping.load(Ordering::SeqCst) =>
                {
                    tracing::debug!(delivery = d.id, error = %e, "recording attempt: the store is unavailable; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                out => return out,
            }
        }
    }
}

/// Reservations run on the store's writer thread, inside the create's transaction: they
/// only look at and update in-memory counts.
impl Intake for Dispatcher {
    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.cfg.lease).unwrap_or_default()
    }

    fn limit(&self, endpoint: &Endpoint) -> Option<usize> {
        Some(self.adaptive_limit(endpoint))
    }

    fn reserve(&self, endpoint: &Endpoint, app_throttle_rate: Option<u32>) -> bool {
        self.reserve_slot(endpoint, app_throttle_rate, false)
    }

    fn reserve_behind(&self, endpoint: &Endpoint, app_throttle_rate: Option<u32>) -> bool {
        // A failing endpoint's queue is its retries, waiting for the one slot it gets:
        // they go first.
        !endpoint.is_failing() && self.reserve_slot(endpoint, app_throttle_rate, true)
    }

    fn take(&self, claimed: Vec<ClaimedDelivery>) {
        for d in claimed {
            // Fails only once `run` has returned; the lease then brings it back.
            let _ = self.fresh_tx.send(d);
        }
    }

    fn cancel(&self, endpoint_ids: Vec<String>) {
        for id in endpoint_ids {
            self.release_slot(&id);
            self.slots.add_permits(1);
            self.reserved.fetch_sub(1, Ordering::SeqCst);
        }
        self.wake.notify_one();
    }

    fn queued(&self) {
        self.wake.notify_one();
    }
}

impl Dispatcher {
    /// [`Intake::reserve`] and [`Intake::reserve_behind`].
    fn reserve_slot(
        &self,
        endpoint: &Endpoint,
        app_throttle_rate: Option<u32>,
        behind: bool,
    ) -> bool {
        // Paced endpoints and applications go through the claim, which books their turns.
        if endpoint.settings.throttle_rate.is_some_and(|r| r > 0)
            || app_throttle_rate.is_some_and(|r| r > 0)
        {
            return false;
        }
        // Counted before looking at `stopping` (and the drain sets `stopping` before it
        // reads the count), so the drain either sees this reservation or it is refused.
        self.reserved.fetch_add(1, Ordering::SeqCst);
        if self.stopping.load(Ordering::SeqCst) {
            self.reserved.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        let Ok(permit) = self.slots.try_acquire() else {
            self.reserved.fetch_sub(1, Ordering::SeqCst);
            return false;
        };
        // The store counted other processes' attempts when it asked.
        if !self.take_slot(endpoint, 0, behind) {
            self.reserved.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        permit.forget();
        true
    }
}

/// A message of event type `t` with an empty JSON payload, made `at`, for the tests.
#[cfg(test)]
fn test_message(
    id: String,
    app_id: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> hookline_store::Message {
    hookline_store::Message {
        id,
        app_id: app_id.into(),
        event_id: None,
        event_type: "t".into(),
        payload: "{}".into(),
        channels: None,
        tags: None,
        created_at: at,
        deliver_at: None,
        payload_expires_at: None,
    }
}

#[cfg(test)]
mod intake_tests;
#[cfg(test)]
mod timing_tests;
