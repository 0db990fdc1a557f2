//! Adaptive concurrency for an endpoint without a `maxConcurrency`: pure rules, no I/O,
//! no clock (time is passed in) and no locking (the caller owns the limiter).
//!
//! Delay-based, after TCP Vegas and Netflix's gradient limiters: a receiver with room
//! answers as fast with many attempts in flight as with few, so the limit grows while
//! latency stays near its best, and once latency rises it is cut to
//! `limit × best / latency`, which by Little's law is the concurrency the receiver serves
//! without queueing. Plain AIMD learns only from failures, and a queueing receiver slows
//! down long before it times out; Gradient2 compares with a long-term average that
//! follows a queue's latency up, so its limit creeps past a knee.
//!
//! The limit is judged once per round: the mean latency of the limit's worth of
//! successes (at least eight) that started with the limit full and after its last
//! change. Attempts started under an older limit, or while a new one was filling, say
//! nothing about it, and a limit not in use never grows; but a slow round of successes
//! that met less of it cuts it to what their concurrency serves, so a limit above its
//! use (earned from a fast receiver, or in a burst) still comes down when the receiver
//! slows. A slow success counts as at most
//! twice the best, so an outlier barely moves the mean and a round at most halves the
//! limit. After the first cut, flat rounds add a step that starts at 1 and doubles, up to
//! an eighth of the limit, so the limit probes gently past a knee and the cut lands back
//! on it, where the best is seen again.
//!
//! Until the first cut (slow start) the limit grows by one per success, as TCP's window
//! does, judged every eight successes of a limit at least half in use: it doubles each
//! time a limit's worth comes back, not each time a limit's worth has started and ended
//! under one limit, which took twice as long and, with a backlog arriving meanwhile, set
//! the slowest deliveries' wait. Each success carries the attempts in flight it met, so
//! the first slow batch says at what concurrency latency rose however far the limit grew
//! meanwhile, and the cut goes to what that concurrency serves; the limit never exceeds
//! twice what a flat batch met, so it overshoots a knee by at most that, for about one
//! round trip.
//! The best is the lowest round of the last eight to sixteen, so a receiver that got
//! slower for good gets a new one once the limit has come down. Before the first round,
//! the first success that started alone stands in for it, so a receiver that queues
//! below the starting limit is found too.
//!
//! The sender's own delay is not the receiver's: a process short of CPU answers its
//! attempts late whatever the receiver does, and cutting the limit then only queues work
//! behind it. The caller tells the limiter how late its own tasks start
//! ([`Limiter::set_local_delay`]); a round is flat while its mean is within the
//! tolerance plus a few times that delay, and a cut discounts it.
//!
//! A drop to 1 remembers half the limit the failures began at (TCP's ssthresh): slow
//! start goes back up to it, then steps on, so a receiver that refuses beyond some
//! concurrency is not sent twice that again after every reset.
//!
//! Timeouts, connection errors and throttled answers halve the limit, once per round of
//! failures; three in a row drop it to 1, to start over in slow start. Other failures (a
//! 500, a 4xx) say nothing about capacity and change nothing. A throttled answer's
//! `Retry-After` pauses the whole endpoint, for at most [`MAX_PAUSE`].

use std::time::{Duration, Instant};

/// A round is flat while its mean latency is at most `best × TOLERANCE + SLACK`: the
/// rest is noise, or too little to matter.
const TOLERANCE: f64 = 1.25;
const SLACK: Duration = Duration::from_micros(500);

/// How many times the process's own scheduling delay an attempt's latency may carry
/// (its request is written and its response read by tasks that wait that long).
const LOCAL_DELAY_FACTOR: u32 = 4;

/// The fewest successes a round averages, so a limit of 1 or 2 is not judged on one;
/// in slow start, how many are judged together.
const MIN_ROUND: u32 = 8;

/// Where a new limiter starts (an endpoint with no attempts from this process in the last
/// minute). Not the old fixed default of 8: against a backlog arriving at thousands a
/// second, what queues while the limit climbs from 8 is what the slowest deliveries wait
/// for (the `hot` benchmark: p99 create → receipt 170-200 ms from 8, 76-97 ms from 32,
/// 51-58 ms from 256, in one sitting). Not higher: `knee` (a receiver serving 16 at
/// once) settled at 22 from 32 but at 36 from 64, because the first round trips then
/// already queue.
pub const INITIAL_LIMIT: u32 = 32;

/// How many rounds the best latency is kept (between this and twice this).
const BEST_ROUNDS: u32 = 8;

/// Timeouts, connection errors or throttled answers in a row that drop the limit to 1.
const FAILURES_TO_RESET: u32 = 3;

/// The longest one `Retry-After` pauses a whole endpoint. The throttled delivery's own
/// retry honours the full wait; other deliveries should not stall for an hour on one
/// answer.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// How a finished attempt went, as far as the receiver's capacity is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Success,
    /// No answer within the attempt's timeout.
    Timeout,
    /// Refused, reset or closed before an answer.
    ConnectionError,
    /// 429/502/503/504, with its `Retry-After` if any.
    Throttled { retry_after: Option<Duration> },
    /// Anything else (a 500, a 4xx, a TLS error): the receiver answered, or never could.
    Other,
}

/// One endpoint's concurrency limit, between 1 and its cap.
///
/// The caller keeps at most [`limit`](Self::limit) attempts in flight (none while
/// [`paused_until`](Self::paused_until) is ahead) and records every one that finishes.
#[derive(Debug, Clone)]
pub struct Limiter {
    limit: u32,
    max: u32,
    /// Added at the next flat round; doubles with each.
    step: u32,
    /// Until the first cut, and again after a drop to 1: flat rounds double the limit.
    slow_start: bool,
    /// Half the limit at which the last run of failures began (as TCP's ssthresh): slow
    /// start after a drop to 1 doubles up to it, no further, and probes on from there
    /// one step at a time, so a receiver that refuses beyond some concurrency is not hit
    /// with twice that again after every reset.
    failed_at: Option<u32>,
    round: Round,
    /// Successes that met less than the limit (less than half of it in slow start):
    /// they never grow it, but a slow round of them cuts it (see
    /// [`Limiter::under_limit`]).
    under: Round,
    /// The lowest round mean in the last `rounds` rounds, and in the `BEST_ROUNDS`
    /// before them.
    best: Duration,
    best_before: Duration,
    rounds: u32,
    /// Timeouts, connection errors and throttled answers since the last success.
    failures: u32,
    /// When failures last cut the limit: failures of attempts started before do not cut
    /// it again.
    failure_cut_at: Option<Instant>,
    paused_until: Option<Instant>,
    /// How late the caller's tasks start now (its own load), see [`Limiter::set_local_delay`].
    local_delay: Duration,
    /// Made by [`Limiter::fixed`]: the limit is the cap, whatever happens.
    fixed: bool,
}

/// The successes that make up the next verdict on the limit.
#[derive(Debug, Clone)]
struct Round {
    /// Attempts started before this ran under an older limit and do not count.
    since: Option<Instant>,
    successes: u32,
    total: Duration,
    /// Their attempts in flight, summed: in slow start, the concurrency they measured.
    in_flight: u64,
}

impl Round {
    fn new(since: Option<Instant>) -> Self {
        Self {
            since,
            successes: 0,
            total: Duration::ZERO,
            in_flight: 0,
        }
    }

    /// Counts a success that took `latency` and met `in_flight` attempts; a slow one as
    /// at most twice the `best`, so an outlier barely moves the mean.
    fn add(&mut self, latency: Duration, best: Duration, in_flight: u32) {
        self.successes += 1;
        self.total = self
            .total
            .saturating_add(latency.min(best.saturating_mul(2)));
        self.in_flight += u64::from(in_flight);
    }

    fn mean(&self) -> Duration {
        self.total / self.successes.max(1)
    }

    /// The attempts in flight its successes met, on average.
    fn measured_at(&self) -> u32 {
        (self.in_flight / u64::from(self.successes.max(1))) as u32
    }
}

impl Limiter {
    /// A limiter capped at `max`: the endpoint's `maxConcurrency`, or the global maximum.
    /// It starts at [`INITIAL_LIMIT`] (or `max`, if lower).
    pub fn new(max: u32) -> Self {
        let max = max.max(1);
        let limit = INITIAL_LIMIT.min(max);
        Self {
            limit,
            max,
            step: limit,
            slow_start: true,
            failed_at: None,
            round: Round::new(None),
            under: Round::new(None),
            best: Duration::MAX,
            best_before: Duration::MAX,
            rounds: 0,
            failures: 0,
            failure_cut_at: None,
            paused_until: None,
            local_delay: Duration::ZERO,
            fixed: false,
        }
    }

    /// A limit that does not adapt: always `max`, as `maxConcurrency` was before adaptive
    /// concurrency (the benchmarks' reference runs).
    pub fn fixed(max: u32) -> Self {
        let mut limiter = Self::new(max);
        limiter.limit = limiter.max;
        limiter.fixed = true;
        limiter
    }

    /// How late the caller's own tasks start at present (a process short of CPU): that
    /// much of an attempt's latency is the sender's, and says nothing about the receiver.
    pub fn set_local_delay(&mut self, delay: Duration) {
        self.local_delay = delay;
    }

    /// How many attempts may be in flight now.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Changes the cap (the endpoint was updated); a lower one applies at once.
    pub fn set_max(&mut self, max: u32) {
        self.max = max.max(1);
        self.limit = match self.fixed {
            true => self.max,
            false => self.limit.min(self.max),
        };
    }

    /// Until when the receiver asked (with `Retry-After`) to be sent nothing, if that is
    /// still ahead of `now`.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| *until > now)
    }

    /// Records a finished attempt: how it went, how long it took, and how many attempts
    /// to this endpoint were in flight when it started, itself included. `now` is when it
    /// finished, so it started at `now - latency`.
    pub fn record(&mut self, outcome: Outcome, latency: Duration, in_flight: u32, now: Instant) {
        if self.fixed {
            return;
        }
        let started = now.checked_sub(latency).unwrap_or(now);
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.success(latency, in_flight, started, now);
            }
            Outcome::Other => {}
            Outcome::Timeout | Outcome::ConnectionError | Outcome::Throttled { .. } => {
                if let Outcome::Throttled {
                    retry_after: Some(wait),
                } = outcome
                {
                    let until = now + wait.min(MAX_PAUSE);
                    self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
                }
                self.failures += 1;
                if self.failures == 1 {
                    self.failed_at = Some((self.limit / 2).max(1));
                }
                if self.failures >= FAILURES_TO_RESET {
                    self.cut(1, now);
                } else if self.failure_cut_at.is_none_or(|at| started >= at) {
                    self.cut(self.limit / 2, now);
                } else {
                    return;
                }
                self.failure_cut_at = Some(now);
            }
        }
    }

    fn success(&mut self, latency: Duration, in_flight: u32, started: Instant, now: Instant) {
        let best = self.best.min(self.best_before);
        if best == Duration::MAX && in_flight == 1 {
            self.best = latency;
        }
        if self.round.since.is_some_and(|since| started < since) {
            return;
        }
        if self.slow_start && self.limit < self.max {
            return self.slow_start_success(latency, in_flight, started, now);
        }
        if in_flight < self.limit {
            return self.under_limit(latency, in_flight, started, now);
        }
        let round = &mut self.round;
        round.add(latency, best, in_flight);
        if round.successes < self.limit.max(MIN_ROUND) {
            return;
        }
        let mean = round.mean();
        self.round = Round::new(Some(now));

        let best = self.judged(mean);
        if self.flat(mean, best) {
            let most = if self.slow_start {
                match self.failed_at {
                    Some(at) => self.limit.min(at.saturating_sub(self.limit)),
                    None => self.limit,
                }
            } else {
                (self.limit / 8).max(1)
            };
            self.limit = self.limit.saturating_add(self.step.min(most)).min(self.max);
            self.step = self.step.saturating_mul(2).min(self.limit);
            if self.slow_start && self.failed_at.is_some_and(|at| self.limit >= at) {
                // Back where the failures began: probe on gently.
                self.slow_start = false;
                self.step = 1;
            }
        } else {
            self.cut_to_served(self.limit, mean, best, now);
        }
    }

    /// Slow start below the cap: every [`MIN_ROUND`] successes of a limit at least half in
    /// use are judged together, and while they are flat the limit grows by one per
    /// success, so it doubles each time the limit's worth comes back (TCP's slow start)
    /// instead of each time a limit's worth has started and ended under one limit: with
    /// work queued behind the limit, that wait is what the backlog grows in. Each success
    /// carries the attempts in flight it saw, so the first slow batch says at what
    /// concurrency latency rose, however far the limit has grown meanwhile, and the cut
    /// goes to what that concurrency serves without queueing.
    fn slow_start_success(
        &mut self,
        latency: Duration,
        in_flight: u32,
        started: Instant,
        now: Instant,
    ) {
        // A limit not in use says nothing about more (TCP's "cwnd-limited").
        if in_flight.saturating_mul(2) < self.limit {
            return self.under_limit(latency, in_flight, started, now);
        }
        let best = self.best.min(self.best_before);
        let round = &mut self.round;
        round.add(latency, best, in_flight);
        if round.successes < MIN_ROUND {
            return;
        }
        let (mean, measured_at) = (round.mean(), round.measured_at());
        // Later successes keep counting: only a cut starts the limit over.
        self.round = Round::new(round.since);
        let best = self.judged(mean);
        if self.flat(mean, best) {
            let most = match self.failed_at {
                Some(at) => at,
                None => self.max,
            };
            // Never more than twice what was seen to be fine.
            let grown = self
                .limit
                .saturating_add(MIN_ROUND)
                .min(measured_at.saturating_mul(2));
            // Never lower either: a failure may have set where to stop below the limit.
            self.limit = grown.min(most).min(self.max).max(self.limit);
            if self.failed_at.is_some_and(|at| self.limit >= at) {
                // Back where the failures began: probe on gently.
                self.slow_start = false;
                self.step = 1;
                self.round = Round::new(Some(now));
            }
        } else {
            self.cut_to_served(measured_at, mean, best, now);
        }
    }

    /// A success that met less of the limit than a round counts: it says nothing about
    /// more, but a limit's worth of them (at least [`MIN_ROUND`]) that is slow says the
    /// limit is past what the receiver serves, however little of it is in use, and cuts
    /// it to what the concurrency they met serves. Without this a limit above its use is
    /// never judged: one a fast receiver earned stays at the cap while fewer attempts
    /// queue at a receiver that has slowed down, or after a burst of demand that pushed
    /// it up has passed. A flat round of them changes nothing.
    fn under_limit(&mut self, latency: Duration, in_flight: u32, started: Instant, now: Instant) {
        let best = self.best.min(self.best_before);
        if best == Duration::MAX {
            // Nothing to judge against yet: no success started alone, no round judged.
            return;
        }
        let under = &mut self.under;
        if under.since.is_some_and(|since| started < since) {
            return;
        }
        under.add(latency, best, in_flight);
        if under.successes < self.limit.max(MIN_ROUND) {
            return;
        }
        let (mean, measured_at) = (under.mean(), under.measured_at());
        self.under = Round::new(Some(now));
        if !self.flat(mean, best) {
            self.cut_to_served(measured_at, mean, best, now);
        }
    }

    /// Cuts the limit to what `at` attempts in flight serve without queueing, by Little's
    /// law: `at × best / latency`, with the sender's own share of the round's mean
    /// latency discounted.
    fn cut_to_served(&mut self, at: u32, mean: Duration, best: Duration, now: Instant) {
        let receiver = mean.saturating_sub(self.local()).max(best);
        let serves = f64::from(at) * best.as_secs_f64() / receiver.as_secs_f64();
        self.cut(serves as u32, now);
    }

    /// Counts a judged round of mean latency `mean` into the best; the best now.
    fn judged(&mut self, mean: Duration) -> Duration {
        self.best = self.best.min(mean);
        let best = self.best.min(self.best_before);
        self.rounds += 1;
        if self.rounds == BEST_ROUNDS {
            self.rounds = 0;
            self.best_before = std::mem::replace(&mut self.best, Duration::MAX);
        }
        best
    }

    /// Whether a round's mean latency is still near the best: within the tolerance, plus
    /// what the sender's own delay adds.
    fn flat(&self, mean: Duration, best: Duration) -> bool {
        mean <= best.mul_f64(TOLERANCE) + SLACK + self.local()
    }

    /// How much of an attempt's latency may be the sender's own.
    fn local(&self) -> Duration {
        self.local_delay * LOCAL_DELAY_FACTOR
    }

    /// Lowers the limit to `to` (at least 1) and starts a new round from `now`.
    fn cut(&mut self, to: u32, now: Instant) {
        self.limit = to.clamp(1, self.limit);
        self.step = 1;
        self.slow_start = self.limit == 1;
        self.round = Round::new(Some(now));
        self.under = Round::new(Some(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Decides an attempt's latency and outcome from how many attempts were in flight as
    /// it started (itself included) and when.
    trait Receiver: FnMut(u32, Instant) -> (Duration, Outcome) {}
    impl<F: FnMut(u32, Instant) -> (Duration, Outcome)> Receiver for F {}

    /// An attempt on its way to a simulated receiver.
    struct Flying {
        finishes: Instant,
        seq: u64,
        latency: Duration,
        in_flight: u32,
        outcome: Outcome,
    }

    /// A closed loop: a sender with a backlog keeps `min(limit, demand)` attempts in
    /// flight, none while paused; it starts them in batches of at least `batch` (as
    /// claims bring queued work), or 1 by 1.
    struct Sim {
        limiter: Limiter,
        now: Instant,
        demand: u32,
        batch: usize,
        flying: Vec<Flying>,
        seq: u64,
    }

    impl Sim {
        fn new(max: u32) -> Self {
            Self {
                limiter: Limiter::new(max),
                now: Instant::now(),
                demand: u32::MAX,
                batch: 1,
                flying: Vec::new(),
                seq: 0,
            }
        }

        /// Runs until `attempts` more have finished; the limit after each.
        fn run(&mut self, attempts: usize, mut receiver: impl Receiver) -> Vec<u32> {
            let mut limits = Vec::with_capacity(attempts);
            while limits.len() < attempts {
                self.fill(&mut receiver);
                if self.flying.is_empty() {
                    self.now = self.limiter.paused_until(self.now).expect("paused");
                    continue;
                }
                let next = (0..self.flying.len())
                    .min_by_key(|&i| (self.flying[i].finishes, self.flying[i].seq))
                    .unwrap();
                let a = self.flying.swap_remove(next);
                self.now = a.finishes;
                self.limiter
                    .record(a.outcome, a.latency, a.in_flight, self.now);
                limits.push(self.limiter.limit());
            }
            // A freed slot is filled at once, not at the next call.
            self.fill(&mut receiver);
            limits
        }

        fn fill(&mut self, receiver: &mut impl Receiver) {
            let wanted = self.limiter.limit().min(self.demand) as usize;
            if wanted < self.flying.len() + self.batch.min(wanted) {
                return;
            }
            while self.flying.len() < wanted && self.limiter.paused_until(self.now).is_none() {
                let in_flight = self.flying.len() as u32 + 1;
                let (latency, outcome) = receiver(in_flight, self.now);
                self.seq += 1;
                self.flying.push(Flying {
                    finishes: self.now + latency,
                    seq: self.seq,
                    latency,
                    in_flight,
                    outcome,
                });
            }
        }
    }

    fn flat(latency: Duration) -> impl Receiver {
        move |_, _| (latency, Outcome::Success)
    }

    /// 5 ms up to 16 at once; beyond that it queues, and latency grows with the queue.
    fn knee(in_flight: u32, _: Instant) -> (Duration, Outcome) {
        (5 * MS * in_flight.max(16) / 16, Outcome::Success)
    }

    /// `workers` serving one queue in order, each attempt taking `service` plus up to
    /// `jitter` (pseudo-random, the same every run).
    fn queue(workers: usize, service: Duration, jitter: Duration) -> impl Receiver {
        let mut free: Vec<Option<Instant>> = vec![None; workers];
        let mut seed = 1u64;
        move |_, now| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let extra = jitter.mul_f64((seed >> 11) as f64 / (1u64 << 53) as f64);
            let worker = free.iter_mut().min_by_key(|f| f.unwrap_or(now)).unwrap();
            let done = worker.unwrap_or(now).max(now) + service + extra;
            *worker = Some(done);
            (done - now, Outcome::Success)
        }
    }

    /// Attempts until the limit first reached `limit`.
    fn reached(limits: &[u32], limit: u32) -> Option<usize> {
        limits.iter().position(|l| *l >= limit).map(|i| i + 1)
    }

    fn range(limits: &[u32]) -> (u32, u32) {
        (*limits.iter().min().unwrap(), *limits.iter().max().unwrap())
    }

    /// A receiver that serves 4 at once and refuses (503) beyond: once settled, the limit
    /// never goes past 5, also after the drops to 1 that runs of refusals cause (slow
    /// start then climbs back to where the refusals began, not to twice that).
    #[test]
    fn a_receiver_refusing_beyond_four_keeps_the_limit_at_five_or_less() {
        let mut sim = Sim::new(256);
        let refusing = |in_flight: u32, _: Instant| {
            if in_flight > 4 {
                (MS / 10, Outcome::Throttled { retry_after: None })
            } else {
                (5 * MS, Outcome::Success)
            }
        };
        let limits = sim.run(20_000, refusing);
        let (lo, hi) = range(&limits[2_000..]);
        assert!(1 <= lo && hi <= 5, "settled limits in {lo}..={hi}");
    }

    /// A sender short of CPU: a 1 ms receiver's attempts take 1 ms plus up to 8 ms of
    /// the sender's own scheduling, more the more it has in flight. Told its own delay,
    /// the limiter keeps growing; not told, it takes the sender's delay for the
    /// receiver's and cuts.
    #[test]
    fn the_senders_own_delay_is_not_held_against_the_receiver() {
        let busy_sender =
            |in_flight: u32, _: Instant| (MS + MS * in_flight.min(64) / 8, Outcome::Success);
        let mut told = Sim::new(256);
        told.limiter.set_local_delay(2 * MS);
        let limits = told.run(5_000, busy_sender);
        assert!(
            *limits.last().unwrap() >= 64,
            "told of its own delay, the limit should grow past 64: {:?}",
            &limits[limits.len() - 10..]
        );
        let mut blind = Sim::new(256);
        let limits = blind.run(5_000, busy_sender);
        assert!(
            limits.iter().skip(2_500).all(|l| *l < 64),
            "not told, the limit stays low: {:?}",
            &limits[limits.len() - 10..]
        );
    }

    #[test]
    fn a_fast_receiver_gets_the_cap_quickly() {
        let mut sim = Sim::new(256);
        assert_eq!(sim.limiter.limit(), INITIAL_LIMIT);
        let limits = sim.run(2_000, flat(MS));
        let at = reached(&limits, 256).expect("cap reached");
        assert!(at <= 500, "cap reached after {at} attempts");
        assert!(limits[at..].iter().all(|l| *l == 256));

        // Slow start doubles the limit about once per round trip (1 ms here): from 32
        // to 256 is three doublings.
        let mut sim = Sim::new(256);
        let start = sim.now;
        while sim.limiter.limit() < 256 {
            sim.run(1, flat(MS));
        }
        let took = sim.now - start;
        assert!(took <= 5 * MS, "cap reached after {took:?}");

        // Also when queued work starts in batches (claims), so that the attempts in
        // flight are seldom exactly the limit.
        let mut sim = Sim::new(256);
        sim.batch = 16;
        let start = sim.now;
        while sim.limiter.limit() < 256 {
            sim.run(1, flat(MS));
        }
        let took = sim.now - start;
        assert!(took <= 5 * MS, "cap reached after {took:?}");
    }

    #[test]
    fn a_fixed_limit_does_not_adapt() {
        let mut sim = Sim {
            limiter: Limiter::fixed(64),
            ..Sim::new(64)
        };
        let limits = sim.run(500, knee);
        assert!(limits.iter().all(|l| *l == 64), "{:?}", range(&limits));
        let limits = sim.run(50, |_, _| (MS, Outcome::Timeout));
        assert!(limits.iter().all(|l| *l == 64), "{:?}", range(&limits));
        sim.limiter.set_max(16);
        assert_eq!(sim.limiter.limit(), 16);
        sim.limiter.set_max(32);
        assert_eq!(sim.limiter.limit(), 32);
    }

    #[test]
    fn a_slow_healthy_receiver_gets_the_cap_too() {
        let mut sim = Sim::new(256);
        let limits = sim.run(2_000, flat(50 * MS));
        let at = reached(&limits, 256).expect("cap reached");
        assert!(at <= 500, "cap reached after {at} attempts");
        assert!(limits[at..].iter().all(|l| *l == 256));

        // Jitter is not queueing.
        let mut sim = Sim::new(256);
        let limits = sim.run(5_000, queue(1_000, 50 * MS, 50 * MS));
        let at = reached(&limits, 256).expect("cap reached");
        assert!(limits[at..].iter().all(|l| *l == 256));
    }

    #[test]
    fn a_queueing_receiver_settles_near_its_knee() {
        let mut sim = Sim::new(256);
        let limits = sim.run(20_000, knee);
        // Slow start overshoots for about a round trip, to at most twice the concurrency
        // a flat batch met: up to 21 at once is within the tolerance (5 ms × 1.25 +
        // 0.5 ms).
        assert!(limits.iter().all(|l| *l <= 42), "{:?}", range(&limits));
        // The first cut lands near the knee at once: at the concurrency the slow batch
        // met, not at the limit grown meanwhile.
        let first_cut = limits.windows(2).find(|w| w[1] < w[0]).expect("a cut")[1];
        assert!((12..=20).contains(&first_cut), "first cut to {first_cut}");
        let last = &limits[limits.len() - 1_000..];
        let (lo, hi) = range(last);
        assert!(12 <= lo && hi <= 24, "final limits in {lo}..={hi}");
        // Above 16 at once it serves no more, below it serves less.
        let mean = last.iter().sum::<u32>() as f64 / last.len() as f64;
        assert!(mean >= 16.0, "mean limit {mean}");
    }

    #[test]
    fn a_real_queue_with_jitter_settles_near_its_workers() {
        let mut sim = Sim::new(256);
        let start = sim.now;
        let limits = sim.run(20_000, queue(16, 5 * MS, 2 * MS));
        let last = &limits[limits.len() - 1_000..];
        let (lo, hi) = range(last);
        assert!(12 <= lo && hi <= 24, "final limits in {lo}..={hi}");
        // 16 workers at 6 ms on average serve 16 / 6 ms at most.
        let served = 20_000.0 / (sim.now - start).as_secs_f64();
        let most = 16.0 / 0.006;
        assert!(served >= 0.95 * most, "{:.3} of the most", served / most);
    }

    #[test]
    fn a_receiver_that_serves_one_at_a_time_gets_one_or_two() {
        let mut sim = Sim::new(256);
        let limits = sim.run(2_000, queue(1, 5 * MS, Duration::ZERO));
        let (lo, hi) = range(&limits[1_000..]);
        assert!(1 <= lo && hi <= 2, "final limits in {lo}..={hi}");
    }

    #[test]
    fn a_dead_receiver_drops_the_limit_to_one_and_recovery_climbs_again() {
        let mut sim = Sim::new(256);
        sim.run(1_000, flat(MS));
        assert_eq!(sim.limiter.limit(), 256);

        // The first 256 to finish are successes started before it died.
        let limits = sim.run(300, |_, _| (10_000 * MS, Outcome::Timeout));
        assert_eq!(limits[255..260], [256, 128, 128, 1, 1]);
        assert!(limits[258..].iter().all(|l| *l == 1));
        let limits = sim.run(300, |_, _| (MS, Outcome::ConnectionError));
        assert!(limits.iter().all(|l| *l == 1));

        // Slow start back to half the limit the failures began at (128), then steps that
        // double up to an eighth of the limit.
        let limits = sim.run(5_000, flat(MS));
        let at = reached(&limits, 256).expect("recovered");
        assert!(at <= 4_000, "cap again after {at} attempts");
    }

    #[test]
    fn failures_cut_once_per_round() {
        let mut l = Limiter::new(256);
        let t = Instant::now();
        // Failures of attempts started before the cut do not cut again, and successes in
        // between keep the run of failures short.
        for i in 0..10 {
            let now = t + 20 * MS + i * MS;
            l.record(Outcome::Timeout, 20 * MS, 8, now);
            l.record(Outcome::Success, 20 * MS, 8, now);
        }
        assert_eq!(l.limit(), INITIAL_LIMIT / 2);
        l.record(Outcome::ConnectionError, MS, 4, t + 40 * MS);
        assert_eq!(l.limit(), INITIAL_LIMIT / 4);
    }

    /// A failure of an attempt started before the last cut does not cut again, but it
    /// does set where slow start stops; a limit already past that stays where it is.
    #[test]
    fn a_late_failure_in_slow_start_does_not_lower_the_limit() {
        let mut l = Limiter::new(256);
        let t = Instant::now();
        for i in 1..=3 {
            l.record(Outcome::Timeout, MS, 1, t + 2 * i * MS);
        }
        assert_eq!(l.limit(), 1);
        let mut now = t + 10 * MS;
        for _ in 0..3 * MIN_ROUND {
            now += MS;
            let in_flight = l.limit();
            l.record(Outcome::Success, MS, in_flight, now);
        }
        assert_eq!(l.limit(), 8);
        // Started long before the drop to 1.
        l.record(Outcome::Timeout, 100 * MS, 8, now + MS);
        assert_eq!(l.limit(), 8);
        for _ in 0..MIN_ROUND {
            now += MS;
            l.record(Outcome::Success, MS, 8, now);
        }
        assert_eq!(l.limit(), 8);
    }

    #[test]
    fn throttling_halves_the_limit_and_pauses_for_retry_after() {
        let mut l = Limiter::new(256);
        let t = Instant::now();
        let wait = Duration::from_secs(5);
        let throttled = Outcome::Throttled {
            retry_after: Some(wait),
        };
        l.record(throttled, MS, 8, t);
        assert_eq!(l.limit(), INITIAL_LIMIT / 2);
        assert_eq!(l.paused_until(t), Some(t + wait));
        assert_eq!(l.paused_until(t + wait), None);
        // Without Retry-After it still backs off, but does not pause.
        let mut l = Limiter::new(256);
        l.record(Outcome::Throttled { retry_after: None }, MS, 8, t);
        assert_eq!((l.limit(), l.paused_until(t)), (INITIAL_LIMIT / 2, None));
        // One answer pauses an endpoint for at most MAX_PAUSE.
        let hour = Duration::from_secs(3600);
        l.record(
            Outcome::Throttled {
                retry_after: Some(hour),
            },
            MS,
            4,
            t,
        );
        assert_eq!(l.paused_until(t), Some(t + MAX_PAUSE));

        // In a closed loop: nothing is sent during the pause, and the limit climbs again
        // once the receiver answers.
        let mut sim = Sim::new(256);
        sim.run(1_000, flat(MS));
        let start = sim.now;
        // The 256 successes in flight finish, then the 256 attempts sent as they did.
        let limits = sim.run(2 * 256, |_, _| (MS, throttled));
        assert!(sim.flying.is_empty());
        assert_eq!(limits[255..259], [256, 128, 128, 1]);
        let paused = sim.limiter.paused_until(sim.now).expect("paused");
        assert!(paused >= start + wait);
        sim.run(1, flat(MS));
        assert_eq!(sim.now, paused + MS, "sent while paused");
        let limits = sim.run(5_000, flat(MS));
        assert!(reached(&limits, 256).is_some());
    }

    #[test]
    fn an_explicit_cap_is_a_hard_bound() {
        let mut sim = Sim::new(2);
        assert_eq!(sim.limiter.limit(), 2);
        assert!(sim.run(1_000, flat(MS)).iter().all(|l| *l <= 2));

        let mut sim = Sim::new(256);
        sim.run(1_000, flat(MS));
        sim.limiter.set_max(10);
        assert_eq!(sim.limiter.limit(), 10);
        assert!(sim.run(1_000, flat(MS)).iter().all(|l| *l <= 10));
        sim.limiter.set_max(100);
        let limits = sim.run(1_000, flat(MS));
        assert!(limits.iter().all(|l| *l <= 100));
        assert_eq!(limits.last(), Some(&100));
    }

    #[test]
    fn a_slow_outlier_does_not_halve_the_limit() {
        let mut sim = Sim::new(256);
        sim.run(1_000, flat(MS));
        let mut n = 0;
        let limits = sim.run(5_000, |_, _| {
            n += 1;
            // 1-2 ms, and one in a hundred a hundred times slower.
            let latency = if n % 100 == 0 {
                100 * MS
            } else {
                MS + MS * (n % 7) / 7
            };
            (latency, Outcome::Success)
        });
        assert!(limits.iter().all(|l| *l == 256), "{:?}", range(&limits));

        // Nor in a small round.
        let mut sim = Sim::new(4);
        sim.run(100, flat(5 * MS));
        let mut n = 0;
        let limits = sim.run(100, |_, _| {
            n += 1;
            let latency = if n == 50 { 500 * MS } else { 5 * MS };
            (latency, Outcome::Success)
        });
        assert!(limits.iter().all(|l| *l == 4));
    }

    #[test]
    fn other_failures_change_nothing() {
        let mut l = Limiter::new(256);
        let t = Instant::now();
        for i in 0..100 {
            l.record(Outcome::Other, MS, 8, t + i * MS);
        }
        assert_eq!(l.limit(), INITIAL_LIMIT);

        // A receiver answering a 500 or a 400 to some attempts still gets the cap.
        let mut sim = Sim::new(256);
        let mut n = 0;
        let limits = sim.run(2_000, |_, _| {
            n += 1;
            let outcome = if n % 3 == 0 {
                Outcome::Other
            } else {
                Outcome::Success
            };
            (MS, outcome)
        });
        assert!(reached(&limits, 256).is_some());
        let limits = sim.run(1_000, |_, _| (MS / 10, Outcome::Other));
        assert!(limits.iter().all(|l| *l == 256));
    }

    #[test]
    fn a_receiver_that_got_slower_for_good_gets_its_limit_back() {
        let mut sim = Sim::new(256);
        sim.run(1_000, flat(5 * MS));
        assert_eq!(sim.limiter.limit(), 256);
        let limits = sim.run(5_000, flat(20 * MS));
        assert!(limits.iter().any(|l| *l < 256));
        assert_eq!(limits.last(), Some(&256));
    }

    /// A limit well above what is in use is still cut once latency rises: judged only at
    /// the full limit, the 256 a fast receiver earned would stay while 100 attempts queue
    /// at a receiver that now serves 16.
    #[test]
    fn a_limit_above_its_use_still_comes_down() {
        let mut sim = Sim::new(256);
        sim.run(2_000, flat(MS));
        assert_eq!(sim.limiter.limit(), 256);
        sim.demand = 100;
        let limits = sim.run(10_000, knee);
        let below = limits.iter().position(|l| *l < 100).map(|i| i + 1);
        assert!(
            below.is_some_and(|at| at <= 1_000),
            "below 100 after {below:?}"
        );
        let (lo, hi) = range(&limits[8_000..]);
        assert!(12 <= lo && hi <= 24, "final limits in {lo}..={hi}");
    }

    /// Before any best latency (no success started alone, no round judged), successes
    /// under the limit are not judged: there is nothing to judge them against.
    #[test]
    fn successes_under_the_limit_before_any_best_change_nothing() {
        let mut l = Limiter::new(256);
        let t = Instant::now();
        for i in 1..=100 {
            l.record(Outcome::Success, 5 * MS, 2, t + i * MS);
        }
        assert_eq!(l.limit(), INITIAL_LIMIT);
    }

    #[test]
    fn a_limit_not_in_use_does_not_grow() {
        // Less than half in use (TCP's test of a window in use).
        let mut sim = Sim::new(256);
        sim.demand = INITIAL_LIMIT / 2 - 1;
        assert!(sim.run(1_000, flat(MS)).iter().all(|l| *l == INITIAL_LIMIT));
        sim.demand = u32::MAX;
        assert!(reached(&sim.run(1_000, flat(MS)), 256).is_some());
    }
}
