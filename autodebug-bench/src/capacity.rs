//! Capacity under an SLO: the highest request rate at which an open-loop run still holds a
//! latency SLO (`ttft.p99`, optionally the p99 of per-request TPOT, and an error budget), decided
//! statistically.
//!
//! **What "holds" means.** A p99 bound says at most 1% of requests may be over it. A rate's
//! verdict rests on the pooled requests of every trial at that rate: with `k` of `n` over the TTFT
//! bound, the rate *breaks* when `k` or more would be unlikely (probability at most `alpha`) were
//! the true share exactly 1%, and *holds* when `k` or fewer would be that unlikely (an exact
//! binomial test each way; the TPOT bound and the error budget are tested the same way). Neither
//! yet: another trial at the rate, fresh prompts and arrivals, pooled with the others, up to
//! `boundary_trials`; a rate still undecided then is judged by its pooled point estimate and says
//! so. `alpha` is `1 - confidence` shared out over those looks (Bonferroni), so a verdict that
//! says `confident` is wrong with probability at most `1 - confidence` if requests are over the
//! bound independently. They are not quite: an arrival burst makes a run of late requests, so the
//! evidence is the number of such episodes more than of requests, and near the boundary verdicts
//! are surer than they should be (measured in `benches/README.md`, `find_max_rate`). One
//! trial's p99 at 30 requests is its maximum, and verdicts on it flip at random near the
//! boundary; the pooled share is what the bound is about.
//!
//! **How long a trial is.** A confirming trial sends at least as many requests as can show a
//! rate holds with none over the bound (`ceil(ln alpha / ln 0.99)`: 408 at 95% over 3 looks), or
//! `step` worth at the rate if that is more. Far from the boundary one such trial decides; near
//! it, more are pooled.
//!
//! **The search.** Doubling or halving from `start_rate` until a rate holds and one breaks, then
//! bisection at geometric midpoints until the lowest that broke is within `tolerance` above the
//! highest that held. Bracketing and bisection probe each rate with one `step`-long screening
//! trial, judged by the same test (a provisional point estimate when it does not decide); the two
//! rates that end up bracketing the capacity are then confirmed by adding trials until decided,
//! and if a confirmation overturns a provisional verdict the bracket moves and the search goes on.
//! The answer is the bracket: the highest rate that held, the lowest that broke, and how each was
//! decided.
//!
//! **Cost.** Each step ends as soon as its verdict is certain: once the requests over a bound
//! (pooled with the earlier trials at the rate) are so many that the trial's end can only say
//! "breaks", once failures are past the same test of the error budget, or once every in-flight
//! slot is busy when a request is due (the server completes fewer requests than are offered:
//! overloaded, a decided break). After a step cut short the search waits for the server to settle
//! (one request at a time until one's first token comes within half the bound), and every step
//! opens with a warmup request, sent alone and left out, so no step inherits another's backlog.
//!
//! In the loop a [`BenchPlan`] asks for the search with a [`CapacityGoal`]
//! ([`BenchPlan::capacity`]); [`SseBenchmarker`] then runs [`CapacitySearch::run_report`], which
//! returns one [`BenchReport`]: the records and summary of every trial at the highest rate that
//! held, the window of the whole search, and the outcome in `summary.capacity`, whose flat
//! metric `capacity` the objective can maximize. A search in which no rate held reports capacity 0
//! with a warning and the figures of the lowest rate tried, not an error.
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

use autodebug_core::{
    Arrival, BenchPlan, BenchReport, CapacityGoal, CapacityOutcome, CapacityProbe, Endpoint, Load, RequestRecord,
    TimeWindow,
};
use serde::Serialize;

use crate::benchmarker::{SseBenchmarker, aggregate};
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

    /// The requests of one trial counted against this SLO.
    pub fn count(&self, records: &[RequestRecord]) -> SloCounts {
        let ttft_limit_ns = self.ttft_p99_ms * 1e6;
        let mut counts = SloCounts { requests: records.len() as u64, ..SloCounts::default() };
        for record in records {
            if record.error.is_some() {
                counts.failed += 1;
            }
            if record.ttft_ns.is_some_and(|t| t as f64 > ttft_limit_ns) {
                counts.over_ttft += 1;
            }
            if let (Some(bound), Some(tpot)) = (self.tpot_p99_ms, record.tpot_ns())
                && tpot > bound * 1e6
            {
                counts.over_tpot += 1;
            }
        }
        counts
    }
}

/// Share of requests a p99 bound lets be over it.
pub const P99_TAIL: f64 = CapacityGoal::P99_TAIL;

/// Requests of one or more trials at a rate, counted against a [`CapacitySlo`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SloCounts {
    /// Requests sent (completed, failed, or abandoned past the TTFT bound when a step was cut).
    pub requests: u64,
    /// Over the TTFT bound, or still without a first token past it when the step was cut.
    pub over_ttft: u64,
    pub over_tpot: u64,
    pub failed: u64,
}

impl std::ops::AddAssign for SloCounts {
    fn add_assign(&mut self, other: SloCounts) {
        self.requests += other.requests;
        self.over_ttft += other.over_ttft;
        self.over_tpot += other.over_tpot;
        self.failed += other.failed;
    }
}

impl SloCounts {
    /// The tested shares: (requests over the limit, share the SLO allows), one per bound.
    /// The last says whether none at all passes the "holds" side without the test (failures).
    fn tests(&self, slo: &CapacitySlo) -> Vec<(u64, f64, bool)> {
        let mut tests = vec![(self.over_ttft, P99_TAIL, false)];
        if slo.tpot_p99_ms.is_some() {
            tests.push((self.over_tpot, P99_TAIL, false));
        }
        tests.push((self.failed, slo.max_error_rate, true));
        tests
    }

    /// The exact binomial verdict at level `alpha`: `Some(false)` when some share is over what the
    /// SLO allows with confidence `1 - alpha`, `Some(true)` when every share is under it with that
    /// confidence, `None` when the requests do not tell yet. A budget of 0 breaks on the first
    /// failure; no failure at all is not held against a rate, since a budget below `1/n` could
    /// otherwise never be shown to hold (the TTFT share already sets how many requests a verdict needs).
    pub fn verdict(&self, slo: &CapacitySlo, alpha: f64) -> Option<bool> {
        if self.requests == 0 {
            return None;
        }
        let mut holds = true;
        for (k, allowed, none_passes) in self.tests(slo) {
            if allowed <= 0.0 {
                if k > 0 {
                    return Some(false);
                }
                continue;
            }
            if binomial_at_least(k, self.requests, allowed) <= alpha {
                return Some(false);
            }
            if binomial_at_most(k, self.requests, allowed) > alpha && !(none_passes && k == 0) {
                holds = false;
            }
        }
        holds.then_some(true)
    }

    /// The point estimate: every share at most what the SLO allows.
    pub fn estimate(&self, slo: &CapacitySlo) -> bool {
        self.requests > 0
            && self.tests(slo).into_iter().all(|(k, allowed, _)| k as f64 <= allowed * self.requests as f64)
    }

    /// One-sided bounds, each at level `alpha`, of the share of requests over the TTFT bound.
    pub fn over_ttft_interval(&self, alpha: f64) -> (f64, f64) {
        share_interval(self.over_ttft, self.requests, alpha)
    }
}

/// P(X <= k) for X ~ Binomial(n, p), summed in log space so large `n` does not underflow early.
pub fn binomial_at_most(k: u64, n: u64, p: f64) -> f64 {
    if k >= n || p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let (ln_p, ln_q) = (p.ln(), (1.0 - p).ln());
    let mut ln_pmf = n as f64 * ln_q;
    let mut sum = 0.0;
    for i in 0..=k {
        sum += ln_pmf.exp();
        ln_pmf += ((n - i) as f64).ln() - ((i + 1) as f64).ln() + ln_p - ln_q;
    }
    sum.min(1.0)
}

/// P(X >= k) for X ~ Binomial(n, p).
pub fn binomial_at_least(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    (1.0 - binomial_at_most(k - 1, n, p)).max(0.0)
}

/// Clopper-Pearson one-sided bounds at level `alpha` each: the share `p` below which `k` or more
/// of `n` would be that unlikely, and above which `k` or fewer would be.
pub fn share_interval(k: u64, n: u64, alpha: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    // Bisection on a monotone tail probability; 60 halvings are below f64 resolution on [0, 1].
    let solve = |too_low: &dyn Fn(f64) -> bool| {
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if too_low(mid) { lo = mid } else { hi = mid }
        }
        0.5 * (lo + hi)
    };
    let lower = if k == 0 { 0.0 } else { solve(&|p| binomial_at_least(k, n, p) <= alpha) };
    let upper = if k >= n { 1.0 } else { solve(&|p| binomial_at_most(k, n, p) > alpha) };
    (lower, upper)
}

/// How a rate's verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decided {
    /// The binomial test decided at the search's confidence.
    Confident,
    /// Every in-flight slot was busy when a request was due: the server completes fewer
    /// requests than are offered, and its queue only grows.
    Overloaded,
    /// Still undecided after `boundary_trials`: judged by the pooled point estimate.
    AtBound,
    /// One screening step that did not decide: its point estimate, until confirmed.
    Provisional,
}

impl Decided {
    pub fn as_str(self) -> &'static str {
        match self {
            Decided::Confident => "confident",
            Decided::Overloaded => "overloaded",
            Decided::AtBound => "at the trial bound",
            Decided::Provisional => "provisional",
        }
    }

    fn settled(self) -> bool {
        !matches!(self, Decided::Provisional)
    }
}

/// The pooled trials at one rate and its verdict so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityRate {
    /// Offered rate, req/s.
    pub rate: f64,
    pub trials: u32,
    pub counts: SloCounts,
    pub holds: bool,
    pub decided: Decided,
    /// One-sided bounds (each at the per-look level) of the share of requests over the TTFT bound.
    pub over_ttft_share: (f64, f64),
    /// p99 over the pooled trials' completed requests, ms (a cut step's abandoned requests are
    /// in `counts`, not here).
    pub ttft_p99_ms: f64,
    pub tpot_p99_ms: f64,
    #[serde(skip)]
    ttft_ms: Vec<f64>,
    #[serde(skip)]
    tpot_ms: Vec<f64>,
}

impl CapacityRate {
    fn new(rate: f64) -> Self {
        CapacityRate {
            rate,
            trials: 0,
            counts: SloCounts::default(),
            holds: false,
            decided: Decided::Provisional,
            over_ttft_share: (0.0, 1.0),
            ttft_p99_ms: 0.0,
            tpot_p99_ms: 0.0,
            ttft_ms: Vec::new(),
            tpot_ms: Vec::new(),
        }
    }

    /// Pools one trial and judges the rate again.
    fn pool(&mut self, search: &CapacitySearch, trial: &TrialResult) {
        self.trials += 1;
        self.counts += trial.counts;
        self.ttft_ms.extend(trial.ttft_ms.iter().copied());
        self.tpot_ms.extend(trial.tpot_ms.iter().copied());
        self.ttft_p99_ms = nearest_rank_p99(&mut self.ttft_ms);
        self.tpot_p99_ms = nearest_rank_p99(&mut self.tpot_ms);
        let alpha = search.alpha_per_look();
        self.over_ttft_share = self.counts.over_ttft_interval(alpha);
        (self.holds, self.decided) = if trial.overloaded {
            (false, Decided::Overloaded)
        } else if self.decided == Decided::Overloaded {
            // An overloaded trial stays the verdict: a later trial that kept up was luck.
            (false, Decided::Overloaded)
        } else {
            search.rate_verdict(&self.counts, self.trials)
        };
    }

    fn probe(&self) -> CapacityProbe {
        CapacityProbe {
            rate: self.rate,
            holds: self.holds,
            requests: self.counts.requests,
            failed: self.counts.failed,
            ttft_p99_ms: self.ttft_p99_ms,
            tpot_p99_ms: self.tpot_p99_ms,
            stopped_early: None,
            trials: self.trials,
            over_ttft: self.counts.over_ttft,
            over_tpot: self.counts.over_tpot,
            decided: Some(self.decided.as_str().to_string()),
        }
    }

    /// "held: 2 of 816 requests over the TTFT bound (share 0.05-0.8%), confident after 2 trials".
    fn describe(&self) -> String {
        let (lo, hi) = self.over_ttft_share;
        format!(
            "{} of {} requests over the TTFT bound (share {:.2}-{:.2}%){}{}, {} after {} trial{}",
            self.counts.over_ttft,
            self.counts.requests,
            100.0 * lo,
            100.0 * hi,
            if self.counts.over_tpot > 0 {
                format!(", {} over the TPOT bound", self.counts.over_tpot)
            } else {
                String::new()
            },
            if self.counts.failed > 0 { format!(", {} failed", self.counts.failed) } else { String::new() },
            self.decided.as_str(),
            self.trials,
            if self.trials == 1 { "" } else { "s" },
        )
    }
}

fn nearest_rank_p99(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((1.0 - P99_TAIL) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// The search: doubling or halving from `start_rate` until the SLO both holds and breaks, then
/// bisection, the bracket's ends confirmed by pooled trials, and every overloaded step cut short.
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
    /// Measured time of a screening step that runs to its end: `ceil(rate * step)` requests (at
    /// least [`MIN_STEP_REQUESTS`] while they fit in three step lengths); a confirming trial sends
    /// at least [`CapacitySearch::decisive_requests`].
    pub step: Duration,
    /// Stop when the lowest rate that broke the SLO is within this share above the highest that held it.
    pub tolerance: f64,
    /// Most trials pooled at one rate (the sequential test's bound).
    pub boundary_trials: u32,
    /// Confidence of a decided verdict, shared out over the `boundary_trials` looks at a rate.
    pub confidence: f64,
    /// At most this many steps in all.
    pub max_steps: usize,
}

/// The longest step [`CapacitySearch`] takes: one measurement of one rate, so a day is a typo.
const MAX_STEP: Duration = Duration::from_secs(86_400);

/// Fewest requests a step sends, so that a p99 at a low rate rests on more than a handful.
pub const MIN_STEP_REQUESTS: usize = CapacityGoal::MIN_SCREENING_REQUESTS;

/// A confirming trial at a low rate stops sending after this many step lengths, so a rate whose
/// decisive count would take hours takes more (shorter) trials and ends at the bound instead.
const CONFIRM_STEPS: u32 = 10;

impl CapacitySearch {
    /// Defaults: Poisson arrivals from 1 req/s, within 0.05-1000 req/s, 20 s screening steps, 5%
    /// tolerance, at most 3 trials pooled at a rate, verdicts at 95% confidence, 40 steps at most.
    pub fn new(plan: BenchPlan, slo: CapacitySlo) -> Self {
        let goal = CapacityGoal::ttft_p99_ms(slo.ttft_p99_ms);
        CapacitySearch { slo, arrival: Arrival::Poisson, ..CapacitySearch::for_goal(plan, &goal) }
    }

    /// The search a plan's [`CapacityGoal`] asks for: its SLO and search settings, the plan's
    /// arrival process when its load is open-loop (Poisson otherwise).
    pub fn for_goal(plan: BenchPlan, goal: &CapacityGoal) -> Self {
        let arrival = match plan.load {
            Load::Rate { arrival, .. } => arrival,
            _ => Arrival::Poisson,
        };
        CapacitySearch {
            slo: CapacitySlo {
                ttft_p99_ms: goal.ttft_p99_ms,
                tpot_p99_ms: goal.tpot_p99_ms,
                max_error_rate: goal.max_error_rate,
            },
            arrival,
            start_rate: goal.start_rate,
            min_rate: goal.min_rate,
            max_rate: goal.max_rate,
            step: Duration::from_millis(goal.step_ms),
            tolerance: goal.tolerance,
            boundary_trials: goal.boundary_trials,
            confidence: goal.confidence,
            max_steps: goal.max_steps as usize,
            plan,
        }
    }

    /// The level of each look's test: `1 - confidence` over the looks a rate may get.
    pub fn alpha_per_look(&self) -> f64 {
        (1.0 - self.confidence) / self.boundary_trials.max(1) as f64
    }

    /// Requests that can show a rate holds when none is over the bound: the smallest `n` with
    /// `0.99^n <= alpha` (408 at 95% over 3 looks). Fewer could only ever say "breaks".
    pub fn decisive_requests(&self) -> usize {
        (self.alpha_per_look().ln() / (1.0 - P99_TAIL).ln()).ceil().max(1.0) as usize
    }

    /// Requests of a confirming trial at `rate`: the decisive count, or a step's worth if more.
    pub fn trial_requests(&self, rate: f64) -> usize {
        self.decisive_requests().max((rate * self.step.as_secs_f64()).ceil() as usize)
    }

    /// Longest send time of a confirming trial (a low rate gets fewer requests, and more trials).
    pub fn trial_duration(&self) -> Duration {
        self.step * CONFIRM_STEPS
    }

    /// The verdict on a rate's pooled `counts` after `trials`: `None` while undecided and another
    /// trial is allowed; at the bound, the point estimate.
    pub fn rate_verdict(&self, counts: &SloCounts, trials: u32) -> (bool, Decided) {
        match counts.verdict(&self.slo, self.alpha_per_look()) {
            Some(holds) => (holds, Decided::Confident),
            None if trials >= self.boundary_trials.max(1) => (counts.estimate(&self.slo), Decided::AtBound),
            None => (counts.estimate(&self.slo), Decided::Provisional),
        }
    }

    /// Whether the SLO and the search settings are usable; the error names the field.
    pub fn validate(&self) -> Result<(), BenchError> {
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
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return Err(invalid("confidence", format!("must be in (0.5, 1), e.g. 0.95, got {}", self.confidence)));
        }
        if self.boundary_trials == 0 || self.boundary_trials > 100 {
            return Err(invalid(
                "boundary_trials",
                format!("must be 1-100 trials pooled at a rate, got {}", self.boundary_trials),
            ));
        }
        if self.step.is_zero() || self.step > MAX_STEP {
            return Err(invalid(
                "step",
                format!("must be longer than 0 and at most {} s, got {:?}", MAX_STEP.as_secs(), self.step),
            ));
        }
        if self.max_steps == 0 {
            return Err(invalid("max_steps", "must be at least 1".into()));
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
        self.search(bench, endpoint, source, None).await
    }

    /// Runs the search and reports it as one [`BenchReport`], as the loop's benchmarker does for
    /// a plan with a [`CapacityGoal`]: `plan` is this search's plan; `records` and `summary` are
    /// those of every trial at the highest rate that held (so latency figures exist for the
    /// analyzer and for constraints), `summary.capacity` the outcome, `window` spans the whole
    /// search (telemetry covers every step), and `context` says which rate the figures are from.
    /// When no rate held, capacity is 0, the figures are those of the lowest rate tried, and a
    /// warning says so: an overloaded configuration is a result, not a failure.
    pub async fn run_report(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
    ) -> Result<BenchReport, BenchError> {
        let mut kept = Kept::default();
        let capacity = self.search(bench, endpoint, source, Some(&mut kept)).await?;
        self.report(&capacity, kept)
    }

    /// The search's one report (see [`CapacitySearch::run_report`]) from what it kept.
    fn report(&self, capacity: &Capacity, kept: Kept) -> Result<BenchReport, BenchError> {
        let figures_rate = match capacity.rate {
            Some(rate) => rate,
            None => kept.reports.iter().map(|(r, _)| *r).min_by(f64::total_cmp).unwrap_or(0.0),
        };
        let chosen: Vec<BenchReport> =
            kept.reports.into_iter().filter(|(r, _)| *r == figures_rate).map(|(_, report)| report).collect();
        if chosen.is_empty() {
            return Err(BenchError::InvalidPlan {
                plan: self.plan.name.clone(),
                field: "max_steps",
                message: "allowed no step of the capacity search to run".into(),
            });
        }
        let mut report = aggregate(&chosen);
        let outcome = capacity.outcome();
        let slo = self.goal_text();
        report.plan = self.plan.clone();
        report.window = kept.window.unwrap_or(report.window);
        report.context.load = format!(
            "capacity search ({slo}, verdicts at {}% confidence): {} open-loop {:?} steps of {} s from {} req/s; \
             figures at {} req/s",
            autodebug_core::format_number(100.0 * self.confidence),
            capacity.steps.len(),
            self.arrival,
            autodebug_core::format_number(self.step.as_secs_f64()),
            autodebug_core::format_number(self.start_rate),
            autodebug_core::format_number(figures_rate),
        );
        if !outcome.found() {
            let warning = format!(
                "capacity 0: no rate tried held the SLO ({slo}), down to {} req/s, the lowest tried; \
                 the figures are those of that rate. Lower `min_rate` to search below it, or relax the SLO",
                autodebug_core::format_number(figures_rate)
            );
            tracing::warn!(plan = %self.plan.name, "{warning}");
            report.warnings.insert(0, warning);
        }
        report.summary.capacity = Some(outcome);
        Ok(report)
    }

    /// The SLO as the report's context and warnings state it.
    fn goal_text(&self) -> String {
        CapacityGoal {
            tpot_p99_ms: self.slo.tpot_p99_ms,
            max_error_rate: self.slo.max_error_rate,
            ..CapacityGoal::ttft_p99_ms(self.slo.ttft_p99_ms)
        }
        .describe_slo()
    }

    /// The next trial the search wants given what it has seen; `None` when it is done.
    fn next_trial(&self, probes: &Probes) -> Option<NextTrial> {
        if probes.steps >= self.max_steps {
            return None;
        }
        let screen = |rate: f64| Some(NextTrial { rate, confirm: false });
        let confirm = |rate: f64| Some(NextTrial { rate, confirm: true });
        let unsettled = |rate: f64| probes.at(rate).is_some_and(|r| !r.decided.settled());
        match (probes.held(), probes.broke()) {
            (None, None) => screen(self.start_rate),
            (Some(lo), None) if lo >= self.max_rate => unsettled(lo).then_some(NextTrial { rate: lo, confirm: true }),
            (Some(lo), None) => screen((lo * 2.0).min(self.max_rate)),
            (None, Some(hi)) if hi <= self.min_rate => unsettled(hi).then_some(NextTrial { rate: hi, confirm: true }),
            (None, Some(hi)) => screen((hi / 2.0).max(self.min_rate)),
            (Some(lo), Some(hi)) if hi / lo <= 1.0 + self.tolerance => {
                // The answer is this bracket: both ends must be decided, not one short step's luck.
                if unsettled(lo) {
                    confirm(lo)
                } else if unsettled(hi) {
                    confirm(hi)
                } else {
                    None
                }
            }
            (Some(lo), Some(hi)) => screen((lo * hi).sqrt()),
        }
    }

    /// Requests and the longest send time of the next trial at `next.rate`.
    fn trial_size(&self, next: &NextTrial) -> (usize, Duration) {
        if next.confirm {
            (self.trial_requests(next.rate), self.trial_duration())
        } else {
            // At a low rate the minimum count would stretch a step far past its length; the
            // server is mostly idle there, and three lengths' worth of requests say enough.
            (
                ((next.rate * self.step.as_secs_f64()).ceil() as usize).max(MIN_STEP_REQUESTS),
                self.step * CapacityGoal::SCREENING_STEP_LENGTHS,
            )
        }
    }

    /// The search itself; with `kept`, the reports [`CapacitySearch::run_report`] may need are kept.
    async fn search(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
        mut kept: Option<&mut Kept>,
    ) -> Result<Capacity, BenchError> {
        self.validate()?;
        let started = Instant::now();
        let mut probes = Probes::default();
        let mut next_trial = 0u32;
        while let Some(next) = self.next_trial(&probes) {
            let prior = probes.at(next.rate).map(|r| r.counts).unwrap_or_default();
            let (requests, longest) = self.trial_size(&next);
            let (result, report) =
                self.step_at(bench, endpoint, source, next.rate, requests, longest, prior, next_trial).await?;
            next_trial += 1;
            if let Some(kept) = kept.as_deref_mut() {
                kept.keep(next.rate, report);
            }
            probes.record(self, next.rate, result);
        }
        Ok(probes.finish(self, started.elapsed().as_secs_f64()))
    }

    /// One open-loop trial of `requests` at `rate`, stopped as soon as its verdict can only be
    /// "breaks" (pooled with `prior`, the earlier trials at the rate); what it counted, and its report.
    #[allow(clippy::too_many_arguments)]
    async fn step_at(
        &self,
        bench: &SseBenchmarker,
        endpoint: &Endpoint,
        source: &RequestSource,
        rate: f64,
        requests: usize,
        longest: Duration,
        prior: SloCounts,
        trial: u32,
    ) -> Result<(TrialResult, BenchReport), BenchError> {
        let mut plan = self.plan.clone();
        plan.load = Load::Rate { requests_per_s: rate, arrival: self.arrival };
        plan.requests = requests;
        plan.duration_ms = Some(longest.as_millis() as u64);
        plan.trials = 1;
        // A closed-loop warmup request queues behind whatever an aborted step left in the server,
        // so a step starts on an idle server instead of inheriting the last one's backlog.
        plan.warmup_requests = plan.warmup_requests.max(1);
        let watch = std::sync::Arc::new(SloWatch::new(&self.slo, requests, prior, self.alpha_per_look()));
        let started = Instant::now();
        let report = bench.run_watched(endpoint, &plan, source, trial, Some(watch.clone())).await?;
        let stopped = watch.stopped();
        if stopped.is_some() {
            self.settle(bench, endpoint, source, trial).await?;
        }
        let mut counts = self.slo.count(&report.records);
        if stopped.is_some() {
            // The abandoned requests are not in the records; the watch saw them due and late.
            let seen = watch.counts();
            counts.requests = counts.requests.max(seen.requests);
            counts.over_ttft = counts.over_ttft.max(seen.over_ttft);
            counts.failed = counts.failed.max(seen.failed);
        }
        let s = &report.summary;
        let result = TrialResult {
            counts,
            overloaded: watch.overloaded(),
            ttft_ms: report.records.iter().filter_map(|r| r.ttft_ns).map(|t| t as f64 / 1e6).collect(),
            tpot_ms: report.records.iter().filter_map(|r| r.tpot_ns()).map(|t| t / 1e6).collect(),
            step: CapacityStep {
                rate,
                trial,
                holds: false,
                decided: Decided::Provisional,
                stopped_early: stopped,
                requests: counts.requests,
                failed: counts.failed,
                over_ttft: counts.over_ttft,
                over_tpot: counts.over_tpot,
                errors: s.errors.clone(),
                ttft_p99_ms: s.ttft_ms.p99,
                tpot_p99_ms: s.tpot_ms.p99,
                output_throughput: s.output_throughput,
                seconds: started.elapsed().as_secs_f64(),
            },
        };
        tracing::info!(rate, trial, requests = counts.requests, over_ttft = counts.over_ttft, failed = counts.failed,
            stopped_early = ?result.step.stopped_early, "capacity step");
        Ok((result, report))
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
            if report.summary.succeeded == 0 {
                // A refused request comes back at once and drains nothing: asking again at once
                // would only hammer a server that answers with errors, not slowly.
                tracing::warn!(
                    error = report.records.first().and_then(|r| r.error_message.as_deref()).unwrap_or("no answer"),
                    "the server failed the settling request; not waiting for it to settle"
                );
                return Ok(());
            }
        }
        tracing::warn!(limit_s = SETTLE_LIMIT.as_secs(), "the server did not settle after an overloaded step");
        Ok(())
    }
}

/// Where the search goes next.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NextTrial {
    rate: f64,
    /// A confirming trial (decisive size) rather than a screening step.
    confirm: bool,
}

/// What one trial measured.
#[derive(Debug, Clone)]
struct TrialResult {
    counts: SloCounts,
    overloaded: bool,
    ttft_ms: Vec<f64>,
    tpot_ms: Vec<f64>,
    step: CapacityStep,
}

/// Every step's report, for [`CapacitySearch::run_report`], and the span of every step.
#[derive(Default)]
struct Kept {
    reports: Vec<(f64, BenchReport)>,
    /// From the first step's first send to the last step's last byte.
    window: Option<TimeWindow>,
}

impl Kept {
    fn keep(&mut self, rate: f64, report: BenchReport) {
        let window = report.window;
        self.window = Some(match self.window {
            Some(w) => TimeWindow::new(w.start_ns.min(window.start_ns), w.end_ns.max(window.end_ns)),
            None => window,
        });
        self.reports.push((rate, report));
    }
}

/// How long [`CapacitySearch`] waits for a server to settle after an overloaded step.
const SETTLE_LIMIT: Duration = autodebug_core::CapacityGoal::SETTLE_LIMIT;

/// The rates tried so far, their pooled verdicts, and every step.
#[derive(Default)]
struct Probes {
    rates: Vec<CapacityRate>,
    log: Vec<CapacityStep>,
    steps: usize,
}

impl Probes {
    fn at(&self, rate: f64) -> Option<&CapacityRate> {
        self.rates.iter().find(|r| r.rate == rate)
    }

    fn record(&mut self, search: &CapacitySearch, rate: f64, result: TrialResult) {
        self.steps += 1;
        let index = match self.rates.iter().position(|r| r.rate == rate) {
            Some(index) => index,
            None => {
                self.rates.push(CapacityRate::new(rate));
                self.rates.len() - 1
            }
        };
        let state = &mut self.rates[index];
        state.pool(search, &result);
        let mut step = result.step;
        (step.holds, step.decided) = (state.holds, state.decided);
        self.log.push(step);
    }

    /// The lowest rate whose verdict so far is "breaks".
    fn broke(&self) -> Option<f64> {
        self.rates.iter().filter(|r| !r.holds).map(|r| r.rate).min_by(f64::total_cmp)
    }

    /// The highest rate below [`Probes::broke`] whose verdict so far is "holds": a rate that held
    /// above one that broke is not capacity (the lower verdict is the safe one).
    fn held(&self) -> Option<f64> {
        let broke = self.broke().unwrap_or(f64::INFINITY);
        self.rates.iter().filter(|r| r.holds && r.rate < broke).map(|r| r.rate).max_by(f64::total_cmp)
    }

    fn finish(self, search: &CapacitySearch, bench_seconds: f64) -> Capacity {
        let (rate, broke_at) = (self.held(), self.broke());
        let pick = |at: Option<f64>| at.and_then(|a| self.rates.iter().find(|r| r.rate == a).cloned());
        Capacity {
            rate,
            broke_at,
            trials_at_rate: rate.and_then(|r| self.at(r)).map_or(0, |r| r.trials),
            held: pick(rate),
            broke: pick(broke_at),
            confidence: search.confidence,
            slo: search.slo,
            steps: self.log,
            bench_seconds,
        }
    }
}

/// One step of the search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityStep {
    /// Offered rate, req/s.
    pub rate: f64,
    pub trial: u32,
    /// The rate's verdict on its pooled trials after this step.
    pub holds: bool,
    pub decided: Decided,
    /// Why the step ended before its last request, when it did.
    pub stopped_early: Option<String>,
    pub requests: u64,
    pub failed: u64,
    pub over_ttft: u64,
    pub over_tpot: u64,
    /// Failed requests by error class.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// This step's own p99 (not the verdict: see `holds`).
    pub ttft_p99_ms: f64,
    pub tpot_p99_ms: f64,
    pub output_throughput: f64,
    /// Wall time of the step, warmup, drain and settling included.
    pub seconds: f64,
}

/// What the search found: the bracket and how each end was decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// The highest rate that held the SLO on its pooled trials, req/s; `None` when even the
    /// lowest tried did not.
    pub rate: Option<f64>,
    /// The lowest rate that broke it; `None` when the highest allowed still held.
    pub broke_at: Option<f64>,
    /// Trials pooled at `rate`.
    pub trials_at_rate: u32,
    /// The pooled trials at `rate` and how its verdict was decided.
    pub held: Option<CapacityRate>,
    /// The pooled trials at `broke_at` and how its verdict was decided.
    pub broke: Option<CapacityRate>,
    /// Confidence of a verdict decided `confident`.
    pub confidence: f64,
    pub slo: CapacitySlo,
    pub steps: Vec<CapacityStep>,
    /// Wall time of the whole search.
    pub bench_seconds: f64,
}

impl Capacity {
    /// The outcome as a [`BenchReport`] carries it (`summary.capacity`): rate 0 when none held.
    pub fn outcome(&self) -> CapacityOutcome {
        CapacityOutcome {
            rate: self.rate.unwrap_or(0.0),
            broke_at: self.broke_at,
            trials_at_rate: self.trials_at_rate,
            steps: self
                .steps
                .iter()
                .map(|s| CapacityProbe {
                    rate: s.rate,
                    holds: s.holds,
                    requests: s.requests,
                    failed: s.failed,
                    ttft_p99_ms: s.ttft_p99_ms,
                    tpot_p99_ms: s.tpot_p99_ms,
                    stopped_early: s.stopped_early.clone(),
                    trials: 1,
                    over_ttft: s.over_ttft,
                    over_tpot: s.over_tpot,
                    decided: Some(s.decided.as_str().to_string()),
                })
                .collect(),
            search_s: self.bench_seconds,
            confidence: self.confidence,
            held: self.held.as_ref().map(CapacityRate::probe),
            broke: self.broke.as_ref().map(CapacityRate::probe),
        }
    }

    /// How far above `rate` the capacity may be: `broke_at / rate - 1`.
    pub fn bracket_width(&self) -> Option<f64> {
        Some(self.broke_at? / self.rate? - 1.0)
    }

    /// The steps and the verdict, for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{:>9}  {:>5}  {:>8}  {:>6}  {:>12}  {:>12}  {:>9}  {:>7}  {:<20}  stopped early\n",
            "rate/s",
            "trial",
            "requests",
            "over",
            "ttft.p99 ms",
            "tpot.p99 ms",
            "out tok/s",
            "seconds",
            "rate's verdict"
        );
        for s in &self.steps {
            out.push_str(&format!(
                "{:>9.3}  {:>5}  {:>8}  {:>6}  {:>12.1}  {:>12.2}  {:>9.1}  {:>7.1}  {:<20}  {}\n",
                s.rate,
                s.trial,
                s.requests,
                s.over_ttft + s.over_tpot,
                s.ttft_p99_ms,
                s.tpot_p99_ms,
                s.output_throughput,
                s.seconds,
                format!("{} ({})", if s.holds { "holds" } else { "breaks" }, s.decided.as_str()),
                s.stopped_early.as_deref().unwrap_or("-"),
            ));
        }
        let slo = match self.slo.tpot_p99_ms {
            Some(tpot) => format!("ttft.p99 <= {} ms, tpot.p99 <= {tpot} ms", self.slo.ttft_p99_ms),
            None => format!("ttft.p99 <= {} ms", self.slo.ttft_p99_ms),
        };
        let verdict = match (&self.held, &self.broke) {
            (Some(held), Some(broke)) => format!(
                "capacity {:.3} req/s, in [{:.3}, {:.3}) (+{:.1}%)\n  held: {}\n  broke: {}",
                held.rate,
                held.rate,
                broke.rate,
                100.0 * (broke.rate / held.rate - 1.0),
                held.describe(),
                broke.describe()
            ),
            (Some(held), None) => format!(
                "held up to {:.3} req/s, the highest rate allowed: raise --max-rate\n  held: {}",
                held.rate,
                held.describe()
            ),
            (None, Some(broke)) => format!(
                "broke already at {:.3} req/s, the lowest rate tried\n  broke: {}",
                broke.rate,
                broke.describe()
            ),
            (None, None) => "no step ran".to_string(),
        };
        out.push_str(&format!(
            "{verdict}\n  ({slo}, error rate <= {}%; verdicts at {}% confidence); {} steps in {:.0} s\n",
            100.0 * self.slo.max_error_rate,
            100.0 * self.confidence,
            self.steps.len(),
            self.bench_seconds
        ));
        out
    }
}

/// How often a watched open loop looks at its requests in flight while nothing else wakes it.
pub(crate) const WATCH_TICK: Duration = Duration::from_millis(100);

/// Watches an open-loop step's requests and says when its verdict can only be "breaks": a
/// request counts as over the TTFT bound when its first token came later than the bound, or when
/// it is still waiting for one past the bound (it can only be later). The cut is the trial's own
/// end-of-trial test, applied early: with the earlier trials at the rate pooled in and the
/// trial's planned size as `n`, once `k` requests are over the bound the test says "breaks"
/// whatever the rest do (more requests over it only strengthen that, and a trial that ends
/// sooner has a smaller `n`), so cutting adds no look and no error.
pub(crate) struct SloWatch {
    ttft_limit_ns: u64,
    /// Requests over the TTFT bound, this trial's and the earlier trials' at the rate together,
    /// at which the trial can only end "breaks".
    ttft_cut: u64,
    /// The same for failed requests.
    failed_cut: u64,
    prior: SloCounts,
    /// Requests the verdict at the trial's end would pool: the earlier trials' and this one's planned.
    pooled: u64,
    state: Mutex<WatchState>,
    stopped_now: tokio::sync::Notify,
}

#[derive(Default)]
struct WatchState {
    /// Requests due and still without a first token, by index: when each was due.
    awaiting: std::collections::HashMap<usize, Instant>,
    due: u64,
    slow: u64,
    failed: u64,
    overdue: u64,
    stopped: Option<String>,
    overloaded: bool,
}

/// The smallest count of `n` that the binomial test at `alpha` finds over the share `allowed`
/// (`u64::MAX` when even all `n` would not be).
fn breaking_count(n: u64, allowed: f64, alpha: f64) -> u64 {
    if allowed <= 0.0 {
        return 1;
    }
    // The tail P(X >= k) falls as k grows, so the first k that passes is the count; k <= n + 1.
    (0..=n).find(|&k| k > 0 && binomial_at_least(k, n, allowed) <= alpha).unwrap_or(u64::MAX)
}

impl SloWatch {
    pub(crate) fn new(slo: &CapacitySlo, planned: usize, prior: SloCounts, alpha: f64) -> Self {
        let n = prior.requests + planned as u64;
        SloWatch {
            ttft_limit_ns: (slo.ttft_p99_ms * 1e6) as u64,
            ttft_cut: breaking_count(n, P99_TAIL, alpha),
            failed_cut: breaking_count(n, slo.max_error_rate, alpha),
            prior,
            pooled: n,
            state: Mutex::new(WatchState::default()),
            stopped_now: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn due(&self, index: usize, scheduled: Instant) {
        let mut state = self.lock();
        state.due += 1;
        state.awaiting.insert(index, scheduled);
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

    /// This trial's requests as the watch saw them (the abandoned ones past the bound included).
    pub(crate) fn counts(&self) -> SloCounts {
        let state = self.lock();
        SloCounts { requests: state.due, over_ttft: state.slow + state.overdue, over_tpot: 0, failed: state.failed }
    }

    /// Whether the step was cut because the server could not keep up with the offered rate.
    pub(crate) fn overloaded(&self) -> bool {
        self.lock().overloaded
    }

    /// The reason to stop, once there is one; looks at the requests still waiting at `now`.
    pub(crate) fn check(&self, now: Instant) -> Option<String> {
        let mut state = self.lock();
        if state.stopped.is_none() {
            let limit = Duration::from_nanos(self.ttft_limit_ns);
            let overdue = state.awaiting.values().filter(|due| now.saturating_duration_since(**due) > limit).count();
            state.overdue = overdue as u64;
            let slow = state.slow + state.overdue;
            if self.prior.over_ttft + slow >= self.ttft_cut {
                state.stopped = Some(format!(
                    "{slow} requests over the TTFT bound of {} ms ({overdue} still waiting){}: at least {} of {} \
                     requests pooled at this rate, so the rate breaks the p99",
                    self.ttft_limit_ns / 1_000_000,
                    if self.prior.requests > 0 {
                        format!(", {} more in earlier trials", self.prior.over_ttft)
                    } else {
                        String::new()
                    },
                    self.ttft_cut,
                    self.pooled,
                ));
            } else if self.prior.failed + state.failed >= self.failed_cut {
                state.stopped = Some(format!(
                    "{} requests failed (with the earlier trials at this rate {}), past the error budget",
                    state.failed,
                    self.prior.failed + state.failed,
                ));
            }
            if state.stopped.is_some() {
                self.stopped_now.notify_waiters();
            }
        }
        state.stopped.clone()
    }

    /// Stops the step because the server does not keep up: an overloaded, decided break.
    pub(crate) fn stop(&self, reason: String) {
        let mut state = self.lock();
        if state.stopped.is_none() {
            state.overloaded = true;
            state.stopped = Some(reason);
        }
        drop(state);
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

    fn search_for(goal: CapacityGoal) -> CapacitySearch {
        let plan = BenchPlan::new("chat", autodebug_core::Workload::new(8, 8), Load::Sequential, 1);
        CapacitySearch::for_goal(plan.with_capacity(goal.clone()), &goal)
    }

    fn counts(requests: u64, over_ttft: u64) -> SloCounts {
        SloCounts { requests, over_ttft, ..SloCounts::default() }
    }

    /// A trial as the fake server answers it: `over` of `requests` over the TTFT bound.
    fn trial(rate: f64, requests: u64, over: u64) -> TrialResult {
        TrialResult {
            counts: counts(requests, over),
            overloaded: false,
            ttft_ms: (0..requests).map(|i| if i < over { 2000.0 } else { 10.0 }).collect(),
            tpot_ms: Vec::new(),
            step: CapacityStep {
                rate,
                trial: 0,
                holds: false,
                decided: Decided::Provisional,
                stopped_early: None,
                requests,
                failed: 0,
                over_ttft: over,
                over_tpot: 0,
                errors: Default::default(),
                ttft_p99_ms: 0.0,
                tpot_p99_ms: 0.0,
                output_throughput: 0.0,
                seconds: 1.0,
            },
        }
    }

    /// The search's own loop, with `server` in place of a real step: given the rate, the planned
    /// requests and the earlier counts at the rate, the requests over the bound.
    fn drive(search: &CapacitySearch, mut server: impl FnMut(f64, u64) -> u64) -> Capacity {
        let mut probes = Probes::default();
        while let Some(next) = search.next_trial(&probes) {
            let (requests, _) = search.trial_size(&next);
            let over = server(next.rate, requests as u64);
            probes.record(search, next.rate, trial(next.rate, requests as u64, over));
        }
        probes.finish(search, 0.0)
    }

    /// Share over the bound at `rate` for a server of capacity `c`: 1% exactly at `c`, growing
    /// tenfold every 10% of `c` above it, as a queue's tail does near saturation.
    fn share(rate: f64, c: f64) -> f64 {
        (P99_TAIL * 10f64.powf((rate - c) / (0.1 * c))).min(1.0)
    }

    /// A small deterministic generator (SplitMix64), so the sampled fake replays exactly.
    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn binomial(&mut self, n: u64, p: f64) -> u64 {
            (0..n).filter(|_| self.unit() < p).count() as u64
        }
    }

    #[test]
    fn binomial_tails_match_hand_computed_values() {
        // 0.99^299 = 0.0495: the fewest requests that show a 1% tail at 95% with none over.
        assert!((binomial_at_most(0, 299, 0.01) - 0.99f64.powi(299)).abs() < 1e-12);
        // P(X >= 3) for Binomial(10, 1/2) = 1 - (1 + 10 + 45) / 1024.
        assert!((binomial_at_least(3, 10, 0.5) - (1.0 - 56.0 / 1024.0)).abs() < 1e-12);
        assert_eq!(
            (binomial_at_least(0, 5, 0.3), binomial_at_least(6, 5, 0.3), binomial_at_most(5, 5, 0.3)),
            (1.0, 0.0, 1.0)
        );
        // Large n does not underflow to a wrong answer: 100 of 10,000 at 1% is the median.
        let mid = binomial_at_most(100, 10_000, 0.01);
        assert!(mid > 0.5 && mid < 0.56, "{mid}");
        let (lo, hi) = share_interval(0, 299, 0.05);
        assert!(lo == 0.0 && (hi - 0.01).abs() < 1e-3, "{lo} {hi}");
        let (lo, hi) = share_interval(20, 1000, 0.025);
        assert!(lo > 0.012 && lo < 0.02 && hi > 0.02 && hi < 0.032, "{lo} {hi}");
    }

    #[test]
    fn a_rate_is_decided_on_its_pooled_requests_not_one_steps_maximum() {
        let search = search_for(CapacityGoal::ttft_p99_ms(100.0));
        assert_eq!(search.boundary_trials, 3);
        // 95% over 3 looks: 1.67% a look, so 408 requests with none over the bound show it holds.
        assert_eq!(search.decisive_requests(), 408);
        assert_eq!(search.rate_verdict(&counts(408, 0), 1), (true, Decided::Confident));
        // 407 cannot, and 40 with none over are a provisional hold, to be confirmed.
        assert_eq!(search.rate_verdict(&counts(407, 0), 1), (true, Decided::Provisional));
        assert_eq!(search.rate_verdict(&counts(40, 0), 1), (true, Decided::Provisional));
        // One over the bound in 40 makes that step's p99 its maximum and over the bound, but it is
        // not evidence of a breach: still undecided, and by its estimate (2.5%) provisionally broken.
        assert_eq!(search.rate_verdict(&counts(40, 1), 1), (false, Decided::Provisional));
        // Pooled with a second trial that had none over, the rate is still undecided, now holding.
        assert_eq!(search.rate_verdict(&counts(448, 1), 2), (true, Decided::Provisional));
        // Clearly broken: 12 of 408 (2.9%).
        assert_eq!(search.rate_verdict(&counts(408, 12), 1), (false, Decided::Confident));
        // Near the boundary, after the third trial, the point estimate decides and says so.
        assert_eq!(search.rate_verdict(&counts(1224, 11), 3), (true, Decided::AtBound));
        assert_eq!(search.rate_verdict(&counts(1224, 14), 3), (false, Decided::AtBound));
        // 1224 with 2 over is a confident hold; 1224 with 25 a confident break.
        assert_eq!(search.rate_verdict(&counts(1224, 2), 3), (true, Decided::Confident));
        assert_eq!(search.rate_verdict(&counts(1224, 25), 3), (false, Decided::Confident));
        // A zero error budget breaks on one failure; a TPOT bound is tested like the TTFT one.
        let strict = search_for(CapacityGoal {
            max_error_rate: 0.0,
            tpot_p99_ms: Some(50.0),
            ..CapacityGoal::ttft_p99_ms(100.0)
        });
        let failed = SloCounts { failed: 1, ..counts(1000, 0) };
        assert_eq!(strict.rate_verdict(&failed, 1), (false, Decided::Confident));
        let slow_tokens = SloCounts { over_tpot: 30, ..counts(1000, 0) };
        assert_eq!(strict.rate_verdict(&slow_tokens, 1), (false, Decided::Confident));
        assert_eq!(strict.rate_verdict(&counts(1000, 0), 1), (true, Decided::Confident));
    }

    #[test]
    fn the_watch_cuts_a_step_exactly_when_its_end_could_only_say_breaks() {
        let search = search_for(CapacityGoal::ttft_p99_ms(100.0));
        let alpha = search.alpha_per_look();
        let t0 = Instant::now();
        for (prior, planned) in [(SloCounts::default(), 408usize), (counts(408, 3), 408), (counts(40, 1), 1000)] {
            let watch = SloWatch::new(&search.slo, planned, prior, alpha);
            let n = prior.requests + planned as u64;
            // The cut is the smallest pooled count the end-of-trial test calls a break.
            let cut = watch.ttft_cut;
            assert_eq!(counts(n, cut).verdict(&search.slo, alpha), Some(false), "{prior:?} {planned}");
            assert_ne!(counts(n, cut - 1).verdict(&search.slo, alpha), Some(false), "{prior:?} {planned}");
            let needed = (cut - prior.over_ttft) as usize;
            for index in 0..needed {
                watch.due(index, t0);
            }
            // All but the last are late; the last may still be on time.
            for index in 0..needed - 1 {
                watch.first_token(index, 150_000_000);
            }
            assert_eq!(watch.check(t0 + Duration::from_millis(90)), None, "{prior:?}: one short of the cut");
            // Waiting past the bound without a first token, it can only be late: the cut.
            let reason = watch.check(t0 + Duration::from_millis(101)).expect("stopped");
            assert!(reason.contains("(1 still waiting)") && reason.contains("breaks the p99"), "{reason}");
            assert_eq!(watch.counts(), counts(needed as u64, needed as u64));
            assert!(!watch.overloaded());
        }
        // Busy slots are overload, a decided break.
        let watch = SloWatch::new(&search.slo, 100, SloCounts::default(), alpha);
        watch.stop("all slots busy".into());
        assert!(watch.overloaded() && watch.check(t0).is_some());
        // A zero error budget cuts at the first failure.
        let strict = search_for(CapacityGoal { max_error_rate: 0.0, ..CapacityGoal::ttft_p99_ms(100.0) });
        let watch = SloWatch::new(&strict.slo, 50, SloCounts::default(), alpha);
        watch.due(0, t0);
        watch.ended(0, true);
        assert!(watch.check(t0).expect("stopped").contains("1 requests failed"));
    }

    #[test]
    fn against_a_server_of_known_capacity_the_bracket_holds_it_within_the_tolerance() {
        for capacity in [0.7, 3.0, 9.5, 41.0, 230.0] {
            let search = search_for(CapacityGoal { step_ms: 20_000, ..CapacityGoal::ttft_p99_ms(100.0) });
            // The expected count at each rate: the boundary is where the share crosses 1%.
            let found = drive(&search, |rate, n| (n as f64 * share(rate, capacity)).round() as u64);
            let (lo, hi) = (found.rate.expect("a rate held"), found.broke_at.expect("a rate broke"));
            // Rounding the expected counts moves the 1% crossing by under 1% of the rate.
            assert!(lo <= capacity * 1.01 && hi >= capacity, "capacity {capacity}: [{lo}, {hi})");
            assert!(hi / lo <= 1.0 + search.tolerance + 1e-9, "capacity {capacity}: [{lo}, {hi})");
            let (held, broke) = (found.held.as_ref().unwrap(), found.broke.as_ref().unwrap());
            assert!(held.decided.settled() && broke.decided.settled(), "{held:?} {broke:?}");
            assert!(found.steps.len() <= search.max_steps);
            assert!(found.to_table().contains(&format!("capacity {lo:.3} req/s, in [{lo:.3}, {hi:.3})")));
        }
    }

    #[test]
    fn against_a_sampled_server_the_reported_rate_is_rarely_above_capacity() {
        // Requests over the bound drawn at random: 40 searches, each must bracket within the
        // tolerance, and the rate reported may be above capacity only as often as the confidence
        // allows (plus the at-bound verdicts near it); below, within 10%.
        let capacity = 5.0;
        let search = search_for(CapacityGoal::ttft_p99_ms(100.0));
        let mut above = 0;
        for seed in 0..40 {
            let mut rng = Rng(seed);
            let found = drive(&search, |rate, n| rng.binomial(n, share(rate, capacity)));
            let (lo, hi) = (found.rate.expect("a rate held"), found.broke_at.expect("a rate broke"));
            assert!(hi / lo <= 1.0 + search.tolerance + 1e-9 || found.steps.len() == search.max_steps, "seed {seed}");
            assert!(lo >= 0.9 * capacity, "seed {seed}: {lo}");
            if lo > capacity * 1.02 {
                above += 1;
            }
        }
        assert!(above <= 4, "{above} of 40 searches reported more than 2% above capacity");
    }

    #[test]
    fn a_screen_that_held_by_luck_is_overturned_by_its_confirmation() {
        // Capacity 3.7: the first screen above it (4 req/s, share 20%) is made to hold, a lucky
        // step; confirming it pools 408 more requests, the rate breaks, and the bracket moves down.
        let search = search_for(CapacityGoal::ttft_p99_ms(100.0));
        let mut luck = 1;
        let found = drive(&search, |rate, n| {
            if rate > 3.7 && luck > 0 {
                luck -= 1;
                return 0;
            }
            (n as f64 * share(rate, 3.7)).round() as u64
        });
        let (lo, hi) = (found.rate.unwrap(), found.broke_at.unwrap());
        assert!(lo <= 3.7 * 1.01 && hi >= 3.7 && hi / lo <= 1.05 + 1e-9, "[{lo}, {hi})");
        assert!(found.steps.iter().any(|s| s.rate > 3.7 && s.holds), "no lucky hold was tried");
        assert!(found.broke.as_ref().is_some_and(|b| b.decided.settled()), "{:?}", found.broke);
    }

    #[test]
    fn a_goal_searches_with_the_same_defaults_as_the_command_line() {
        let plan = BenchPlan::new("chat", autodebug_core::Workload::new(8, 8), Load::Sequential, 1);
        let from_goal = CapacitySearch::for_goal(plan.clone(), &CapacityGoal::ttft_p99_ms(500.0));
        let from_new = CapacitySearch::new(plan, CapacitySlo::ttft_p99_ms(500.0));
        assert_eq!(format!("{from_goal:?}"), format!("{from_new:?}"));
        assert_eq!((from_new.confidence, from_new.boundary_trials), (0.95, 3));
        let open_loop = BenchPlan::new(
            "chat",
            autodebug_core::Workload::new(8, 8),
            Load::Rate { requests_per_s: 3.0, arrival: Arrival::Constant },
            1,
        );
        assert_eq!(CapacitySearch::for_goal(open_loop, &CapacityGoal::ttft_p99_ms(500.0)).arrival, Arrival::Constant);
    }

    /// A step's report: `requests` records with TTFT `ttft_ms`, measured from `start_s` for 1 s.
    fn step_report(requests: usize, ttft_ms: u64, start_s: i128) -> BenchReport {
        let plan = BenchPlan::new("capacity", autodebug_core::Workload::new(8, 8), Load::Sequential, requests);
        let records: Vec<autodebug_core::RequestRecord> = (0..requests)
            .map(|index| autodebug_core::RequestRecord {
                index,
                ttft_ns: Some(ttft_ms * 1_000_000),
                e2e_ns: Some(2 * ttft_ms * 1_000_000),
                output_tokens: Some(8),
                ..Default::default()
            })
            .collect();
        let window = TimeWindow::new(start_s * 1_000_000_000, (start_s + 1) * 1_000_000_000);
        BenchReport {
            plan,
            context: Default::default(),
            summary: crate::summarize(&records, window),
            records,
            window,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_report_holds_the_figures_of_every_trial_at_the_rate_that_held_and_spans_the_search() {
        let search = search_for(CapacityGoal { start_rate: 2.0, min_rate: 1.0, ..CapacityGoal::ttft_p99_ms(100.0) });
        let mut probes = Probes::default();
        let mut kept = Kept::default();
        // 2 holds, 4 holds (two trials pooled to a confident hold), 8 breaks clearly.
        for (at, (rate, requests, over, ttft)) in
            [(2.0, 408, 0, 10), (4.0, 200, 0, 40), (8.0, 408, 40, 900), (4.0, 300, 0, 50)].into_iter().enumerate()
        {
            probes.record(&search, rate, trial(rate, requests, over));
            kept.keep(rate, step_report(requests as usize, ttft, 10 * at as i128));
        }
        let capacity = probes.finish(&search, 9.0);
        let report = search.report(&capacity, kept).unwrap();
        let outcome = report.summary.capacity.clone().expect("the outcome");
        assert_eq!(
            (outcome.rate, outcome.broke_at, outcome.trials_at_rate, outcome.steps.len()),
            (4.0, Some(8.0), 2, 4)
        );
        let held = outcome.held.as_ref().expect("the held rate's pooled figures");
        assert_eq!((held.requests, held.trials, held.decided.as_deref()), (500, 2, Some("confident")));
        assert_eq!(outcome.broke.as_ref().map(|b| b.over_ttft), Some(40));
        assert_eq!(outcome.confidence, 0.95);
        // Both trials at 4 req/s, nothing of the others.
        assert_eq!(report.records.len(), 500);
        assert_eq!((report.summary.ttft_ms.min, report.summary.ttft_ms.max), (40.0, 50.0));
        assert_eq!(report.window, TimeWindow::new(0, 31_000_000_000), "the window spans every step");
        assert_eq!(report.plan.name, "chat");
        assert!(report.context.load.contains("figures at 4 req/s"), "{}", report.context.load);
        assert!(report.warnings.iter().all(|w| !w.contains("capacity 0")), "{:?}", report.warnings);
        assert_eq!(report.summary.metrics().get("capacity"), Some(&4.0));
        // Stored outcomes from before the statistical verdict still read.
        let old = r#"{"rate":3.6,"broke_at":3.8,"trials_at_rate":2,"steps":[{"rate":3.6,"holds":true,"requests":36,"failed":0,"ttft_p99_ms":1400.0,"tpot_p99_ms":20.0}],"search_s":192.0}"#;
        let read: CapacityOutcome = serde_json::from_str(old).expect("an old outcome reads");
        assert_eq!((read.rate, read.confidence, read.held, read.steps[0].trials), (3.6, 0.0, None, 0));
    }

    #[test]
    fn a_search_where_no_rate_held_reports_capacity_zero_with_a_warning_not_an_error() {
        let search = search_for(CapacityGoal { start_rate: 2.0, min_rate: 1.0, ..CapacityGoal::ttft_p99_ms(100.0) });
        let mut probes = Probes::default();
        let mut kept = Kept::default();
        probes.record(&search, 2.0, trial(2.0, 30, 10));
        kept.keep(2.0, step_report(3, 300, 0));
        probes.record(&search, 1.0, trial(1.0, 40, 10));
        kept.keep(1.0, step_report(4, 200, 10));
        let capacity = probes.finish(&search, 9.0);
        let report = search.report(&capacity, kept).unwrap();
        assert_eq!(report.summary.capacity.as_ref().map(|c| c.rate), Some(0.0));
        assert_eq!(report.summary.metrics().get("capacity"), Some(&0.0));
        // The figures of the lowest rate tried, so the analyzer still sees why it broke.
        assert_eq!((report.records.len(), report.summary.ttft_ms.max), (4, 200.0));
        let warning = &report.warnings[0];
        assert!(warning.starts_with("capacity 0") && warning.contains("down to 1 req/s"), "{warning}");
        assert!(warning.contains("ttft.p99 <= 100 ms"), "{warning}");
    }

    #[test]
    fn the_bracket_is_the_highest_rate_that_held_below_the_lowest_that_broke() {
        let search = search_for(CapacityGoal::ttft_p99_ms(100.0));
        let mut probes = Probes::default();
        for (rate, requests, over) in [(1.0, 408, 0), (2.0, 408, 0), (4.0, 408, 30), (2.8, 408, 0), (3.4, 408, 30)] {
            probes.record(&search, rate, trial(rate, requests, over));
        }
        assert_eq!((probes.held(), probes.broke()), (Some(2.8), Some(3.4)));
        // 2.8 breaks once its pooled trials say so: it no longer counts as held.
        probes.record(&search, 2.8, trial(2.8, 408, 30));
        assert_eq!((probes.held(), probes.broke()), (Some(2.0), Some(2.8)));
        assert_eq!(probes.at(2.8).map(|r| (r.trials, r.counts.requests)), Some((2, 816)));
    }
}
