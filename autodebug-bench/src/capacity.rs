//! Capacity under an SLO: the highest request rate at which an open-loop run still holds a
//! latency SLO (`ttft.p99`, optionally the p99 of per-request TPOT, and an error budget).
//!
//! The search brackets the capacity by doubling or halving from a start rate, then bisects at
//! geometric midpoints until the bracket is within `tolerance`. Once the bracket is narrow, each
//! probe is repeated (`boundary_trials`, fresh prompts and arrivals each time) and holds only when
//! every trial does, and the rate finally reported is confirmed the same way: it held every time it
//! was tried. Each step ends as soon as its SLO can no longer hold: more completed requests over
//! the TTFT bound than its p99 allows, more failures than the error budget, or every in-flight slot
//! busy when a request is due (the server completes fewer requests than are offered). An
//! overloaded step then costs seconds instead of its whole duration plus the drain of its queue.
//! After a step cut short the search waits for the server to settle (one request at a time until
//! one's first token comes within half the bound), and every step opens with a warmup request,
//! sent alone and left out, so no step inherits another's backlog.
//!
//! ```no_run
//! use autodebug_bench::{CapacitySearch, CapacitySlo, RequestSource, SseBenchmarker};
//! use autodebug_core::{BenchPlan, Endpoint, Load, Workload};
//!
//! # async fn demo() -> Result<(), autodebug_bench::BenchError> {
//! let plan = BenchPlan::new("capacity", Workload::new(512, 128), Load::Sequential, 1);
//! let search = CapacitySearch::new(plan, CapacitySlo::ttft_p99_ms(2000.0));
//! let endpoint = Endpoint::new("http://127.0.0.1:30000", "Qwen/Qwen1.5-0.5B-Chat");
//! let source = RequestSource::from_workload(&search.plan.workload);
//! let capacity = search.run(&SseBenchmarker::default(), &endpoint, &source).await?;
//! println!("{}", capacity.to_table());
//! # Ok(()) }
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use autodebug_core::{Arrival, BenchPlan, BenchReport, Endpoint, Load};
use serde::Serialize;

use crate::benchmarker::SseBenchmarker;
use crate::error::BenchError;
use crate::workloads::RequestSource;

/// What a rate must hold to count as within capacity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CapacitySlo {
    /// Bound on the p99 of time to first token (queueing in the client included), ms.
    pub ttft_p99_ms: f64,
    /// Bound on the p99 of per-request time per output token, ms.
    pub tpot_p99_ms: Option<f64>,
    /// Largest share of failed requests (0.01 = 1%).
    pub max_error_rate: f64,
}

impl CapacitySlo {
    /// A TTFT bound alone, with a 1% error budget.
    pub fn ttft_p99_ms(ms: f64) -> Self {
        CapacitySlo { ttft_p99_ms: ms, tpot_p99_ms: None, max_error_rate: 0.01 }
    }
}

/// The search: doubling or halving from `start_rate` until the SLO both holds and breaks, then
/// bisection, repeated trials near the boundary, and every overloaded step cut short.
#[derive(Debug, Clone)]
pub struct CapacitySearch {
    /// Workload, warmup, timeouts and endpoint path of every step; its load and length are set per step.
    pub plan: BenchPlan,
    pub slo: CapacitySlo,
    pub arrival: Arrival,
    /// First rate tried, req/s.
    pub start_rate: f64,
    /// The search does not go below or above these, req/s.
    pub min_rate: f64,
    pub max_rate: f64,
    /// Measured time of a step that runs to its end: `ceil(rate * step)` requests (at least
    /// [`MIN_STEP_REQUESTS`] while they fit in three step lengths).
    pub step: Duration,
    /// Stop when the lowest rate that broke the SLO is within this share above the highest that held it.
    pub tolerance: f64,
    /// Trials of each probe once the bracket is within four tolerances, and of the rate reported.
    pub boundary_trials: u32,
    /// At most this many steps in all.
    pub max_steps: usize,
}

/// Fewest requests a step sends, so that a p99 at a low rate rests on more than a handful.
pub const MIN_STEP_REQUESTS: usize = 10;

impl CapacitySearch {
    /// Defaults: Poisson arrivals from 1 req/s, within 0.05-1000 req/s, 20 s steps, 5% tolerance,
    /// 2 trials at the boundary, 40 steps at most.
    pub fn new(plan: BenchPlan, slo: CapacitySlo) -> Self {
        CapacitySearch {
            plan,
            slo,
            arrival: Arrival::Poisson,
            start_rate: 1.0,
            min_rate: 0.05,
            max_rate: 1000.0,
            step: Duration::from_secs(20),
            tolerance: 0.05,
            boundary_trials: 2,
            max_steps: 40,
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let invalid = |field: &'static str, message: String| BenchError::InvalidPlan {
            plan: self.plan.name.clone(),
            field,
            message,
        };
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.slo.ttft_p99_ms) {
            return Err(invalid(
                "slo.ttft_p99_ms",
                format!("must be a positive number of ms, got {}", self.slo.ttft_p99_ms),
            ));
        }
        if let Some(tpot) = self.slo.tpot_p99_ms.filter(|t| !positive(*t)) {
            return Err(invalid("slo.tpot_p99_ms", format!("must be a positive number of ms, got {tpot}")));
        }
        if !(0.0..1.0).contains(&self.slo.max_error_rate) {
            return Err(invalid("slo.max_error_rate", format!("must be in [0, 1), got {}", self.slo.max_error_rate)));
        }
        if !(positive(self.min_rate) && self.min_rate <= self.start_rate && self.start_rate <= self.max_rate) {
            return Err(invalid(
                "start_rate",
                format!(
                    "needs 0 < min ({}) <= start ({}) <= max ({}) req/s",
                    self.min_rate, self.start_rate, self.max_rate
                ),
            ));
        }
        if !(self.tolerance > 0.0 && self.tolerance < 1.0) {
            return Err(invalid("tolerance", format!("must be in (0, 1), got {}", self.tolerance)));
        }
        if self.step.is_zero() {
            return Err(invalid("step", "must be longer than 0".into()));
        }
        Ok(())
    }

    /// Runs the search against `endpoint` with the requests of `source`.
    pub async fn run(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
    ) -> Result<Capacity, BenchError> {
        self.validate()?;
        let started = Instant::now();
        let mut probes = Probes::default();
        let mut next_trial = 0u32;
        let boundary_trials = self.boundary_trials.max(1);
        while probes.steps.len() < self.max_steps {
            let (held, broke) = (probes.held(), probes.broke());
            let (rate, trials) = match (held, broke) {
                (None, None) => (self.start_rate, 1),
                (Some(lo), None) if lo >= self.max_rate => break,
                (Some(lo), None) => ((lo * 2.0).min(self.max_rate), 1),
                (None, Some(hi)) if hi <= self.min_rate => break,
                (None, Some(hi)) => ((hi / 2.0).max(self.min_rate), 1),
                (Some(lo), Some(hi)) if hi / lo <= 1.0 + self.tolerance => {
                    // Narrow enough: the rate to report must have held every time it was tried.
                    let tried = probes.trials_at(lo);
                    if tried >= boundary_trials {
                        break;
                    }
                    (lo, boundary_trials - tried)
                }
                (Some(lo), Some(hi)) => {
                    let narrow = hi / lo <= 1.0 + 4.0 * self.tolerance;
                    ((lo * hi).sqrt(), if narrow { boundary_trials } else { 1 })
                }
            };
            for _ in 0..trials {
                if probes.steps.len() >= self.max_steps {
                    break;
                }
                let step = self.step_at(bench, endpoint, source, rate, next_trial).await?;
                next_trial += 1;
                let holds = step.holds;
                probes.record(step);
                if !holds {
                    break;
                }
            }
        }
        let rate = probes.held();
        Ok(Capacity {
            rate,
            broke_at: probes.broke(),
            trials_at_rate: rate.map_or(0, |r| probes.trials_at(r)),
            slo: self.slo,
            bench_seconds: started.elapsed().as_secs_f64(),
            steps: probes.steps,
        })
    }

    /// One open-loop step at `rate`, stopped as soon as its SLO can no longer hold.
    async fn step_at(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
        rate: f64,
        trial: u32,
    ) -> Result<CapacityStep, BenchError> {
        let mut plan = self.plan.clone();
        plan.load = Load::Rate { requests_per_s: rate, arrival: self.arrival };
        plan.requests = ((rate * self.step.as_secs_f64()).ceil() as usize).max(MIN_STEP_REQUESTS);
        // At a low rate the minimum count would stretch a step far past its length; the server is
        // mostly idle there, and three lengths' worth of requests say enough.
        plan.duration_ms = Some(3 * self.step.as_millis() as u64);
        plan.trials = 1;
        // A closed-loop warmup request queues behind whatever an aborted step left in the server,
        // so a step starts on an idle server instead of inheriting the last one's backlog.
        plan.warmup_requests = plan.warmup_requests.max(1);
        let watch = std::sync::Arc::new(SloWatch::new(&self.slo, plan.requests));
        let started = Instant::now();
        let report = bench.run_watched(endpoint, &plan, source, trial, Some(watch.clone())).await?;
        if watch.stopped().is_some() {
            self.settle(bench, endpoint, source, trial).await?;
        }
        let step = CapacityStep::judge(&report, rate, trial, &self.slo, watch.stopped(), started.elapsed());
        tracing::info!(rate, trial, holds = step.holds, ttft_p99_ms = step.ttft_p99_ms, stopped_early = ?step.stopped_early,
            "capacity step");
        Ok(step)
    }
}

impl CapacitySearch {
    /// After a step cut short: the requests it abandoned may still be queued in the server (an
    /// engine may notice a closed stream only when it writes the first token), and the next step
    /// would inherit them. Sends one request at a time until one gets its first token within half
    /// the TTFT bound, which FCFS admission gives only once what was queued ahead is gone.
    async fn settle(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
        trial: u32,
    ) -> Result<(), BenchError> {
        let mut probe = self.plan.clone();
        probe.name = format!("{} settle", self.plan.name);
        probe.load = Load::Sequential;
        (probe.requests, probe.warmup_requests, probe.trials, probe.duration_ms) = (1, 0, 1, None);
        let deadline = Instant::now() + SETTLE_LIMIT;
        while Instant::now() < deadline {
            let report = bench.run_once(endpoint, &probe, source, trial).await?;
            if report.summary.succeeded > 0 && report.summary.ttft_ms.max <= self.slo.ttft_p99_ms / 2.0 {
                return Ok(());
            }
        }
        tracing::warn!(limit_s = SETTLE_LIMIT.as_secs(), "the server did not settle after an overloaded step");
        Ok(())
    }
}

/// How long [`CapacitySearch`] waits for a server to settle after an overloaded step.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// The steps so far and what they say about the bracket.
#[derive(Default)]
struct Probes {
    steps: Vec<CapacityStep>,
}

impl Probes {
    fn record(&mut self, step: CapacityStep) {
        self.steps.push(step);
    }

    /// The lowest rate that broke the SLO in any trial.
    fn broke(&self) -> Option<f64> {
        self.steps.iter().filter(|s| !s.holds).map(|s| s.rate).min_by(f64::total_cmp)
    }

    /// The highest rate below [`Probes::broke`] that held the SLO in every trial.
    fn held(&self) -> Option<f64> {
        let broke = self.broke().unwrap_or(f64::INFINITY);
        self.steps.iter().filter(|s| s.holds && s.rate < broke).map(|s| s.rate).max_by(f64::total_cmp)
    }

    fn trials_at(&self, rate: f64) -> u32 {
        self.steps.iter().filter(|s| s.rate == rate).count() as u32
    }
}

/// One step of the search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityStep {
    /// Offered rate, req/s.
    pub rate: f64,
    pub trial: u32,
    pub holds: bool,
    /// Why the step ended before its last request, when it did.
    pub stopped_early: Option<String>,
    pub requests: u64,
    pub failed: u64,
    /// Failed requests by error class.
    pub errors: std::collections::BTreeMap<String, u64>,
    pub ttft_p99_ms: f64,
    pub tpot_p99_ms: f64,
    pub output_throughput: f64,
    /// Wall time of the step, warmup and drain included.
    pub seconds: f64,
}

impl CapacityStep {
    fn judge(
        report: &BenchReport,
        rate: f64,
        trial: u32,
        slo: &CapacitySlo,
        stopped_early: Option<String>,
        took: Duration,
    ) -> Self {
        let s = &report.summary;
        let error_rate = if s.requests == 0 { 1.0 } else { s.failed as f64 / s.requests as f64 };
        let holds = stopped_early.is_none()
            && s.succeeded > 0
            && s.ttft_ms.p99 <= slo.ttft_p99_ms
            && slo.tpot_p99_ms.is_none_or(|bound| s.tpot_ms.p99 <= bound)
            && error_rate <= slo.max_error_rate;
        CapacityStep {
            rate,
            trial,
            holds,
            stopped_early,
            requests: s.requests,
            failed: s.failed,
            errors: s.errors.clone(),
            ttft_p99_ms: s.ttft_ms.p99,
            tpot_p99_ms: s.tpot_ms.p99,
            output_throughput: s.output_throughput,
            seconds: took.as_secs_f64(),
        }
    }
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// The highest rate that held the SLO in every trial, req/s; `None` when even the lowest tried did not.
    pub rate: Option<f64>,
    /// The lowest rate that broke it; `None` when the highest allowed still held.
    pub broke_at: Option<f64>,
    /// Trials run at `rate` (all held).
    pub trials_at_rate: u32,
    pub slo: CapacitySlo,
    pub steps: Vec<CapacityStep>,
    /// Wall time of the whole search.
    pub bench_seconds: f64,
}

impl Capacity {
    /// How far above `rate` the capacity may be: `broke_at / rate - 1`.
    pub fn bracket_width(&self) -> Option<f64> {
        Some(self.broke_at? / self.rate? - 1.0)
    }

    /// The steps and the verdict, for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{:>9}  {:>5}  {:>5}  {:>8}  {:>12}  {:>12}  {:>9}  {:>7}  stopped early\n",
            "rate/s", "trial", "holds", "requests", "ttft.p99 ms", "tpot.p99 ms", "out tok/s", "seconds"
        );
        for s in &self.steps {
            out.push_str(&format!(
                "{:>9.3}  {:>5}  {:>5}  {:>8}  {:>12.1}  {:>12.2}  {:>9.1}  {:>7.1}  {}\n",
                s.rate,
                s.trial,
                if s.holds { "yes" } else { "no" },
                s.requests,
                s.ttft_p99_ms,
                s.tpot_p99_ms,
                s.output_throughput,
                s.seconds,
                s.stopped_early.as_deref().unwrap_or("-"),
            ));
        }
        let slo = match self.slo.tpot_p99_ms {
            Some(tpot) => format!("ttft.p99 <= {} ms, tpot.p99 <= {tpot} ms", self.slo.ttft_p99_ms),
            None => format!("ttft.p99 <= {} ms", self.slo.ttft_p99_ms),
        };
        let verdict = match (self.rate, self.broke_at) {
            (Some(rate), Some(broke)) => format!(
                "capacity {rate:.3} req/s (held {} of {} trials); broke at {broke:.3} req/s, so within +{:.1}%",
                self.trials_at_rate,
                self.trials_at_rate,
                100.0 * (broke / rate - 1.0)
            ),
            (Some(rate), None) => format!("held up to {rate:.3} req/s, the highest rate allowed: raise --max-rate"),
            (None, Some(broke)) => format!("broke already at {broke:.3} req/s, the lowest rate allowed"),
            (None, None) => "no step ran".to_string(),
        };
        out.push_str(&format!(
            "{verdict} ({slo}, error rate <= {}%); {} steps in {:.0} s\n",
            100.0 * self.slo.max_error_rate,
            self.steps.len(),
            self.bench_seconds
        ));
        out
    }
}

/// How often a watched open loop looks at its requests in flight while nothing else wakes it.
pub(crate) const WATCH_TICK: Duration = Duration::from_millis(100);

/// Watches an open-loop step's requests and says when its SLO can no longer hold: a request
/// counts as over the TTFT bound when its first token came later than the bound, or when it is
/// still waiting for one past the bound (it can only be later).
pub(crate) struct SloWatch {
    ttft_limit_ns: u64,
    /// Requests over the TTFT bound that the p99 of `planned` requests still allows (nearest
    /// rank: `planned - ceil(0.99 planned)`); one more and the p99 is over the bound.
    allowed_slow: usize,
    allowed_failed: usize,
    state: Mutex<WatchState>,
    stopped_now: tokio::sync::Notify,
}

#[derive(Default)]
struct WatchState {
    /// Requests due and still without a first token, by index: when each was due.
    awaiting: std::collections::HashMap<usize, Instant>,
    slow: usize,
    failed: usize,
    stopped: Option<String>,
}

impl SloWatch {
    pub(crate) fn new(slo: &CapacitySlo, planned: usize) -> Self {
        SloWatch {
            ttft_limit_ns: (slo.ttft_p99_ms * 1e6) as u64,
            allowed_slow: planned - (0.99 * planned as f64).ceil() as usize,
            allowed_failed: (slo.max_error_rate * planned as f64).floor() as usize,
            state: Mutex::new(WatchState::default()),
            stopped_now: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn due(&self, index: usize, scheduled: Instant) {
        self.lock().awaiting.insert(index, scheduled);
    }

    pub(crate) fn first_token(&self, index: usize, ttft_ns: u64) {
        let mut state = self.lock();
        state.awaiting.remove(&index);
        if ttft_ns > self.ttft_limit_ns {
            state.slow += 1;
        }
    }

    pub(crate) fn ended(&self, index: usize, failed: bool) {
        let mut state = self.lock();
        state.awaiting.remove(&index);
        if failed {
            state.failed += 1;
        }
    }

    /// The reason to stop, once there is one; looks at the requests still waiting at `now`.
    pub(crate) fn check(&self, now: Instant) -> Option<String> {
        let mut state = self.lock();
        if state.stopped.is_none() {
            let limit = Duration::from_nanos(self.ttft_limit_ns);
            let overdue = state.awaiting.values().filter(|due| now.saturating_duration_since(**due) > limit).count();
            let slow = state.slow + overdue;
            if slow > self.allowed_slow {
                state.stopped = Some(format!(
                    "{slow} requests over the TTFT bound of {} ms ({overdue} still waiting), more than the p99 allows ({})",
                    self.ttft_limit_ns / 1_000_000,
                    self.allowed_slow
                ));
            } else if state.failed > self.allowed_failed {
                state.stopped = Some(format!(
                    "{} requests failed, more than the error budget allows ({})",
                    state.failed, self.allowed_failed
                ));
            }
            if state.stopped.is_some() {
                self.stopped_now.notify_waiters();
            }
        }
        state.stopped.clone()
    }

    pub(crate) fn stop(&self, reason: String) {
        self.lock().stopped.get_or_insert(reason);
        self.stopped_now.notify_waiters();
    }

    pub(crate) fn stopped(&self) -> Option<String> {
        self.lock().stopped.clone()
    }

    /// Sleeps until `until`, looking at the requests in flight every [`WATCH_TICK`]; returns
    /// early once the step should stop.
    pub(crate) async fn sleep_until(&self, until: Instant) {
        loop {
            if self.check(Instant::now()).is_some() {
                return;
            }
            let wake = until.min(Instant::now() + WATCH_TICK);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = self.stopped_now.notified() => return,
            }
            if Instant::now() >= until {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, holds: bool) -> CapacityStep {
        CapacityStep {
            rate,
            trial: 0,
            holds,
            stopped_early: None,
            requests: 10,
            failed: 0,
            errors: Default::default(),
            ttft_p99_ms: 0.0,
            tpot_p99_ms: 0.0,
            output_throughput: 0.0,
            seconds: 1.0,
        }
    }

    #[test]
    fn the_bracket_is_the_highest_rate_that_always_held_below_the_lowest_that_broke() {
        let mut probes = Probes::default();
        for (rate, holds) in [(1.0, true), (2.0, true), (4.0, false), (2.8, true), (3.4, false), (2.8, false)] {
            probes.record(step(rate, holds));
        }
        // 2.8 broke on its second trial: it no longer counts as held.
        assert_eq!((probes.held(), probes.broke()), (Some(2.0), Some(2.8)));
        assert_eq!(probes.trials_at(2.8), 2);
    }

    #[test]
    fn the_watch_stops_a_step_once_its_p99_cannot_hold() {
        let slo = CapacitySlo::ttft_p99_ms(100.0);
        // 200 planned requests: the p99 (rank 198) allows two over the bound, not three.
        let watch = SloWatch::new(&slo, 200);
        assert_eq!(watch.allowed_slow, 2);
        let t0 = Instant::now();
        for index in 0..4 {
            watch.due(index, t0);
        }
        watch.first_token(0, 50_000_000);
        watch.first_token(1, 150_000_000);
        watch.first_token(2, 150_000_000);
        assert_eq!(watch.check(t0 + Duration::from_millis(90)), None, "request 3 may still be on time");
        // Request 3 has waited past the bound without a first token: it can only be late.
        let reason = watch.check(t0 + Duration::from_millis(101)).expect("stopped");
        assert!(reason.contains("3 requests over the TTFT bound of 100 ms (1 still waiting)"), "{reason}");
        // 50 planned requests: none may be over the bound, and one failure is past a 1% budget.
        let watch = SloWatch::new(&slo, 50);
        assert_eq!((watch.allowed_slow, watch.allowed_failed), (0, 0));
        watch.due(0, t0);
        watch.ended(0, true);
        assert!(watch.check(t0).expect("stopped").contains("1 requests failed"));
    }
}
