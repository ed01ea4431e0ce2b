use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::TimeWindow;

/// How requests are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Load {
    /// One request at a time.
    Sequential,
    /// Closed loop: this many requests in flight at all times.
    Concurrent { concurrency: usize },
    /// Open loop: requests sent on a schedule; latency counts from the scheduled send time.
    Rate {
        requests_per_s: f64,
        #[serde(default)]
        arrival: Arrival,
    },
}

impl Load {
    /// The number of requests in flight the load aims for (1 for sequential).
    pub fn concurrency(&self) -> usize {
        match self {
            Load::Sequential => 1,
            Load::Concurrent { concurrency } => *concurrency,
            Load::Rate { .. } => 0,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Load::Sequential => "sequential".to_string(),
            Load::Concurrent { concurrency } => format!("concurrency {concurrency}"),
            Load::Rate { requests_per_s, arrival } => format!("{requests_per_s} req/s {arrival:?}"),
        }
    }
}

/// Inter-arrival distribution for open-loop load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrival {
    Constant,
    #[default]
    Poisson,
    /// Gamma-distributed gaps; burstiness < 1 is burstier than Poisson.
    Gamma {
        burstiness: f64,
    },
}

/// What the requests contain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Prompt length in tokens (approximate when sized without the model's tokenizer).
    pub prompt_tokens: u32,
    /// `max_tokens` asked for; with `ignore_eos` the server generates exactly this many.
    pub output_tokens: u32,
    /// Tokens of a system prompt shared by every request (0 = none), to measure prefix caching.
    #[serde(default)]
    pub shared_prefix_tokens: u32,
    /// Send the very same prompt every time (the original autodebug's repeated-prompt test).
    #[serde(default)]
    pub repeat_prompt: bool,
    /// Ask the server to ignore end-of-sequence so output length is fixed.
    #[serde(default = "default_true")]
    pub ignore_eos: bool,
    /// Seed for prompt generation, so two arms of a comparison send the same text.
    #[serde(default)]
    pub seed: u64,
}

fn default_true() -> bool {
    true
}

impl Workload {
    pub fn new(prompt_tokens: u32, output_tokens: u32) -> Self {
        Workload {
            prompt_tokens,
            output_tokens,
            shared_prefix_tokens: 0,
            repeat_prompt: false,
            ignore_eos: true,
            seed: 0,
        }
    }

    pub fn describe(&self) -> String {
        let mut text = format!("{} prompt / {} completion tokens", self.prompt_tokens, self.output_tokens);
        if self.repeat_prompt {
            text.push_str(", repeated prompt");
        }
        if self.shared_prefix_tokens > 0 {
            text.push_str(&format!(", {} shared prefix tokens", self.shared_prefix_tokens));
        }
        text
    }
}

/// Timeouts for one request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    #[serde(with = "duration_ms")]
    pub connect: Duration,
    #[serde(with = "duration_ms")]
    pub first_token: Duration,
    #[serde(with = "duration_ms")]
    pub idle_between_chunks: Duration,
    #[serde(with = "duration_ms")]
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_token: Duration::from_secs(120),
            idle_between_chunks: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// Serde helper: a `Duration` written as milliseconds.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// One benchmark to run against an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchPlan {
    /// A short name that prefixes this plan's metrics (`chat`, `concurrent`, `long_prompt`).
    pub name: String,
    pub workload: Workload,
    pub load: Load,
    /// Measured requests.
    pub requests: usize,
    /// Requests sent first and left out of the results.
    #[serde(default)]
    pub warmup_requests: usize,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Use `/v1/chat/completions` (true) or `/v1/completions` (false).
    #[serde(default = "default_true")]
    pub chat: bool,
    /// Run the whole plan this many times (0 and 1 both mean once); a benchmarker reports the
    /// trials together (records of every trial, spread across trials in its context).
    #[serde(default = "default_trials", skip_serializing_if = "is_one_trial")]
    pub trials: u32,
    /// Stop starting measured requests this many ms after the first one; `requests` is then an
    /// upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Closed loop: start the workers spread evenly over this many ms, so concurrency grows to
    /// its target instead of arriving as one burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_up_ms: Option<u64>,
    /// Measure capacity instead of the plan's own load: the highest open-loop request rate at
    /// which this goal's SLO holds. The workload, warmup, timeouts and endpoint path stay the
    /// plan's; `load`, `requests`, `trials` and `duration_ms` give way to the search's steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityGoal>,
}

fn default_trials() -> u32 {
    1
}

fn is_one_trial(trials: &u32) -> bool {
    *trials <= 1
}

impl BenchPlan {
    pub fn new(name: impl Into<String>, workload: Workload, load: Load, requests: usize) -> Self {
        BenchPlan {
            name: name.into(),
            workload,
            load,
            requests,
            warmup_requests: 0,
            timeouts: Timeouts::default(),
            chat: true,
            trials: 1,
            duration_ms: None,
            ramp_up_ms: None,
            capacity: None,
        }
    }

    /// Repeats the plan `trials` times (at least once).
    pub fn with_trials(mut self, trials: u32) -> Self {
        self.trials = trials.max(1);
        self
    }

    /// Stops starting measured requests after `duration`; `requests` stays an upper bound.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration_ms = Some(duration.as_millis() as u64);
        self
    }

    /// Closed loop: grows concurrency to its target over `ramp_up`.
    pub fn with_ramp_up(mut self, ramp_up: Duration) -> Self {
        self.ramp_up_ms = Some(ramp_up.as_millis() as u64);
        self
    }

    pub fn with_warmup(mut self, warmup_requests: usize) -> Self {
        self.warmup_requests = warmup_requests;
        self
    }

    /// Measures capacity under `goal` instead of running the plan's own load.
    pub fn with_capacity(mut self, goal: CapacityGoal) -> Self {
        self.capacity = Some(goal);
        self
    }
}

/// A capacity search asked of a [`BenchPlan`]: find the highest open-loop request rate (req/s) at
/// which the SLO holds (p99 TTFT, optionally p99 TPOT, and an error budget) with `confidence`, by
/// doubling or halving from `start_rate`, then bisecting until the bracket is within `tolerance`.
/// A rate's verdict rests on the pooled requests of its trials: the share over each bound is
/// tested against the share the SLO allows (1% for a p99), and trials are added at a rate until
/// the test decides or `boundary_trials` is reached. A benchmarker that
/// runs it reports the figures of the highest rate that held and a [`CapacityOutcome`] in
/// [`BenchSummary::capacity`]. The defaults are those of `autodebug_bench::CapacitySearch::new`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityGoal {
    /// Bound on the p99 of time to first token (client-side queueing included), ms.
    pub ttft_p99_ms: f64,
    /// Bound on the p99 of per-request time per output token, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_p99_ms: Option<f64>,
    /// Largest share of failed requests a rate may have and still hold (0.01 = 1%).
    #[serde(default = "CapacityGoal::default_max_error_rate")]
    pub max_error_rate: f64,
    /// First rate tried, req/s.
    #[serde(default = "CapacityGoal::default_start_rate")]
    pub start_rate: f64,
    /// The search goes no lower, req/s; a configuration that breaks the SLO even here has
    /// capacity 0.
    #[serde(default = "CapacityGoal::default_min_rate")]
    pub min_rate: f64,
    /// The search goes no higher, req/s; a configuration that holds here has capacity `max_rate`.
    #[serde(default = "CapacityGoal::default_max_rate")]
    pub max_rate: f64,
    /// Measured time of one step that runs to its end, ms (an overloaded step ends sooner).
    #[serde(default = "CapacityGoal::default_step_ms")]
    pub step_ms: u64,
    /// The search stops once the lowest rate that broke the SLO is within this share above the
    /// highest that held.
    #[serde(default = "CapacityGoal::default_tolerance")]
    pub tolerance: f64,
    /// Most trials pooled at one rate: the sequential test's bound. A rate still undecided after
    /// this many is judged by its pooled point estimate (and says so).
    #[serde(default = "CapacityGoal::default_boundary_trials")]
    pub boundary_trials: u32,
    /// At most this many steps in all.
    #[serde(default = "CapacityGoal::default_max_steps")]
    pub max_steps: u32,
    /// Confidence of each decided verdict (that a rate holds, or that it breaks), shared out over
    /// the `boundary_trials` looks at a rate.
    #[serde(default = "CapacityGoal::default_confidence")]
    pub confidence: f64,
}

impl CapacityGoal {
    /// A p99 TTFT bound, with the default error budget (1%) and search settings (from 1 req/s
    /// within 0.05-1000 req/s, 20 s steps, 5% tolerance, at most 3 trials pooled at a rate,
    /// verdicts at 95% confidence, 40 steps).
    pub fn ttft_p99_ms(ms: f64) -> Self {
        CapacityGoal {
            ttft_p99_ms: ms,
            tpot_p99_ms: None,
            max_error_rate: Self::default_max_error_rate(),
            start_rate: Self::default_start_rate(),
            min_rate: Self::default_min_rate(),
            max_rate: Self::default_max_rate(),
            step_ms: Self::default_step_ms(),
            tolerance: Self::default_tolerance(),
            boundary_trials: Self::default_boundary_trials(),
            max_steps: Self::default_max_steps(),
            confidence: Self::default_confidence(),
        }
    }

    /// How long a search waits for the server to settle after an overloaded step, at most.
    pub const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

    /// Fewest requests a screening step sends, so that a p99 at a low rate rests on more than a
    /// handful (while they fit in [`CapacityGoal::SCREENING_STEP_LENGTHS`] step lengths).
    pub const MIN_SCREENING_REQUESTS: usize = 10;

    /// A screening step at a low rate stops sending after this many step lengths.
    pub const SCREENING_STEP_LENGTHS: u32 = 3;

    /// The share of requests a p99 bound allows over it.
    pub const P99_TAIL: f64 = 0.01;

    /// Requests a screening step at `rate` sends when it runs to its end: a step's worth,
    /// at least [`CapacityGoal::MIN_SCREENING_REQUESTS`] while those fit in
    /// [`CapacityGoal::SCREENING_STEP_LENGTHS`] step lengths.
    ///
    /// ```
    /// let goal = autodebug_core::CapacityGoal::ttft_p99_ms(1000.0); // 20 s steps
    /// assert_eq!(goal.screening_requests(2.0), 40);
    /// assert_eq!(goal.screening_requests(0.1), 6);
    /// ```
    pub fn screening_requests(&self, rate: f64) -> usize {
        let step_s = self.step_ms as f64 / 1000.0;
        let step = (rate * step_s).ceil() as usize;
        let fit = (rate * step_s * f64::from(Self::SCREENING_STEP_LENGTHS)).ceil() as usize;
        step.max(Self::MIN_SCREENING_REQUESTS.min(fit)).max(1)
    }

    /// The SLO as people read it: `ttft.p99 <= 2000 ms, tpot.p99 <= 100 ms, error_rate <= 1%`.
    pub fn describe_slo(&self) -> String {
        let mut text = format!("ttft.p99 <= {} ms", crate::format_number(self.ttft_p99_ms));
        if let Some(tpot) = self.tpot_p99_ms {
            text.push_str(&format!(", tpot.p99 <= {} ms", crate::format_number(tpot)));
        }
        text.push_str(&format!(", error_rate <= {}%", crate::format_number(100.0 * self.max_error_rate)));
        text
    }

    fn default_max_error_rate() -> f64 {
        0.01
    }

    fn default_start_rate() -> f64 {
        1.0
    }

    fn default_min_rate() -> f64 {
        0.05
    }

    fn default_max_rate() -> f64 {
        1000.0
    }

    fn default_step_ms() -> u64 {
        20_000
    }

    fn default_tolerance() -> f64 {
        0.05
    }

    fn default_boundary_trials() -> u32 {
        3
    }

    fn default_confidence() -> f64 {
        0.95
    }

    fn default_max_steps() -> u32 {
        40
    }
}

/// What a capacity search found (see [`CapacityGoal`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityOutcome {
    /// The highest rate whose pooled trials held the SLO, req/s; 0 when even the lowest rate
    /// tried broke it.
    pub rate: f64,
    /// The lowest rate that broke the SLO, req/s: the capacity lies in `[rate, broke_at)`.
    /// `None` when the highest rate allowed still held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broke_at: Option<f64>,
    /// Trials pooled at `rate`; the report's records are theirs.
    pub trials_at_rate: u32,
    /// Every step in the order run.
    #[serde(default)]
    pub steps: Vec<CapacityProbe>,
    /// Wall time of the whole search, s.
    pub search_s: f64,
    /// Confidence of a decided verdict (0 in outcomes stored before verdicts were statistical).
    #[serde(default)]
    pub confidence: f64,
    /// The pooled trials at `rate` and how its verdict was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<CapacityProbe>,
    /// The pooled trials at `broke_at` and how its verdict was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broke: Option<CapacityProbe>,
}

impl CapacityOutcome {
    /// Whether some rate held the SLO (the capacity is at least the lowest rate tried).
    pub fn found(&self) -> bool {
        self.rate > 0.0
    }
}

/// One step of a capacity search, or the pooled trials at one rate, as stored with its
/// [`CapacityOutcome`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityProbe {
    /// Offered rate, req/s.
    pub rate: f64,
    /// Whether the rate held the SLO on the pooled trials so far (a step's own figures may say
    /// otherwise: one trial's p99 is not the verdict).
    pub holds: bool,
    /// Measured requests.
    pub requests: u64,
    /// Failed measured requests.
    pub failed: u64,
    /// p99 of time to first token, ms.
    pub ttft_p99_ms: f64,
    /// p99 of per-request time per output token, ms.
    pub tpot_p99_ms: f64,
    /// Why the step ended before its last request, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// Trials these figures pool (1 for a step; 0 in outcomes stored before trials were pooled).
    #[serde(default)]
    pub trials: u32,
    /// Requests over the TTFT bound (a request still without a first token past it counts).
    #[serde(default)]
    pub over_ttft: u64,
    /// Requests over the TPOT bound.
    #[serde(default)]
    pub over_tpot: u64,
    /// How the rate's verdict stood after these figures: `confident`, `overloaded`, `at the trial
    /// bound` (judged by the point estimate) or `provisional` (one short step, to be confirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<String>,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Connect,
    HttpStatus,
    TimeoutFirstToken,
    TimeoutIdle,
    TimeoutTotal,
    MalformedSse,
    MalformedJson,
    ServerError,
    EarlyClose,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Connect => "connect",
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::TimeoutFirstToken => "timeout_first_token",
            ErrorClass::TimeoutIdle => "timeout_idle",
            ErrorClass::TimeoutTotal => "timeout_total",
            ErrorClass::MalformedSse => "malformed_sse",
            ErrorClass::MalformedJson => "malformed_json",
            ErrorClass::ServerError => "server_error",
            ErrorClass::EarlyClose => "early_close",
        }
    }
}

/// What the client saw of one request. Times are ns relative to the request's scheduled start.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RequestRecord {
    pub index: usize,
    /// Wall-clock ns when the request was scheduled to go out.
    pub scheduled_ns: i128,
    /// Time between the scheduled start and the actual send (client-side queueing).
    pub queue_delay_ns: u64,
    pub ttft_ns: Option<u64>,
    /// Time to second token.
    pub ttst_ns: Option<u64>,
    pub e2e_ns: Option<u64>,
    pub prompt_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
    /// Tokens the server reported as served from its prefix cache, when it says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u32>,
    /// Content-bearing chunks received.
    pub chunks: u32,
    /// Gaps between consecutive content chunks, ns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_gaps_ns: Vec<u64>,
    /// Tokens carried by each content chunk after the first (same length as `chunk_gaps_ns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_tokens: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// How predictable the output was from its own history: `(predicted, considered)` content
    /// chunks, where a chunk is predicted when the three before it occurred earlier in the answer
    /// and were followed there by this same chunk (what an n-gram draft would have proposed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ngram_predicted: Option<(u32, u32)>,
}

impl RequestRecord {
    /// TPOT/TBOT: (e2e − ttft) / (output_tokens − 1), ns; `None` with fewer than two tokens.
    pub fn tpot_ns(&self) -> Option<f64> {
        let (e2e, ttft, out) = (self.e2e_ns?, self.ttft_ns?, self.output_tokens?);
        (out > 1).then(|| (e2e.saturating_sub(ttft)) as f64 / (out - 1) as f64)
    }
}

/// Summary of one distribution, in the unit named by the field that holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Distribution {
    /// A statistic by name: `mean`, `std`, `min`, `p50`, `p90`, `p95`, `p99`, `p999`, `max`.
    pub fn stat(&self, name: &str) -> Option<f64> {
        Some(match name {
            "mean" | "avg" => self.mean,
            "std" => self.std,
            "min" => self.min,
            "p50" | "median" => self.p50,
            "p90" => self.p90,
            "p95" => self.p95,
            "p99" => self.p99,
            "p999" | "p99.9" => self.p999,
            "max" => self.max,
            _ => return None,
        })
    }

    pub const STATS: [&'static str; 9] = ["mean", "std", "min", "p50", "p90", "p95", "p99", "p999", "max"];
}

/// The flat metric a capacity search reports: the highest request rate (req/s) that held the SLO.
pub const CAPACITY_METRIC: &str = "capacity";

/// Summary figures of one benchmark run. Latencies in milliseconds, throughput per second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchSummary {
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub duration_s: f64,
    pub ttft_ms: Distribution,
    pub ttst_ms: Distribution,
    /// TPOT/TBOT per request.
    pub tpot_ms: Distribution,
    /// Inter-token latency, per token.
    pub itl_ms: Distribution,
    /// Gaps between chunks as received.
    pub inter_chunk_ms: Distribution,
    pub e2e_ms: Distribution,
    pub queue_delay_ms: Distribution,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// Share of prompt tokens the server reported as cached, when it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_token_ratio: Option<f64>,
    /// Share of output chunks an n-gram lookup over the answer so far would have predicted
    /// ([`RequestRecord::ngram_predicted`] summed): the evidence that n-gram speculative decoding
    /// can pay, measured without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_ngram_predictability: Option<f64>,
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// What a capacity search found, when the plan asked for one ([`BenchPlan::capacity`]); the
    /// other figures are then those of the highest rate that held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityOutcome>,
}

impl BenchSummary {
    /// Flat metric names used by objectives and the store: `ttft.p99`, `tpot.mean`,
    /// `e2e.p50`, `output_throughput`, `error_rate`, ...; after a capacity search also
    /// `capacity` (req/s, 0 when no rate held), `capacity_broke_at` (req/s, when a rate broke the
    /// SLO) and `capacity_steps`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let dists = [
            ("ttft", &self.ttft_ms),
            ("ttst", &self.ttst_ms),
            ("tpot", &self.tpot_ms),
            ("itl", &self.itl_ms),
            ("inter_chunk", &self.inter_chunk_ms),
            ("e2e", &self.e2e_ms),
            ("queue_delay", &self.queue_delay_ms),
        ];
        for (name, dist) in dists {
            if dist.count == 0 {
                continue;
            }
            for stat in Distribution::STATS {
                if let Some(v) = dist.stat(stat) {
                    out.insert(format!("{name}.{stat}"), v);
                }
            }
        }
        out.insert("request_throughput".into(), self.request_throughput);
        out.insert("output_throughput".into(), self.output_throughput);
        out.insert("total_token_throughput".into(), self.total_token_throughput);
        out.insert("requests".into(), self.requests as f64);
        out.insert("errors".into(), self.failed as f64);
        let rate = if self.requests == 0 { 1.0 } else { self.failed as f64 / self.requests as f64 };
        out.insert("error_rate".into(), rate);
        if let Some(r) = self.cached_token_ratio {
            out.insert("cached_token_ratio".into(), r);
        }
        if let Some(r) = self.output_ngram_predictability {
            out.insert("output_ngram_predictability".into(), r);
        }
        if let Some(capacity) = &self.capacity {
            out.insert(CAPACITY_METRIC.into(), capacity.rate);
            if let Some(broke_at) = capacity.broke_at {
                out.insert("capacity_broke_at".into(), broke_at);
            }
            out.insert("capacity_steps".into(), capacity.steps.len() as f64);
        }
        out
    }
}

/// The full context a benchmark figure needs to be read correctly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchContext {
    pub endpoint: String,
    pub model: String,
    pub workload: String,
    pub load: String,
    pub trials: u32,
    /// `warm` when the prefix cache had seen the prompts before, `cold` otherwise.
    pub cache_state: String,
    pub client: String,
}

/// What a [`Benchmarker`](crate::Benchmarker) returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub plan: BenchPlan,
    pub context: BenchContext,
    pub summary: BenchSummary,
    /// Per-request records (warmup excluded).
    pub records: Vec<RequestRecord>,
    /// The exact measured window, for telemetry.
    pub window: TimeWindow,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn searched(rate: f64, broke_at: Option<f64>) -> BenchSummary {
        let probe = |rate, holds| CapacityProbe { rate, holds, ..Default::default() };
        BenchSummary {
            requests: 20,
            succeeded: 20,
            ttft_ms: Distribution { count: 20, p99: 900.0, ..Default::default() },
            capacity: Some(CapacityOutcome {
                rate,
                broke_at,
                trials_at_rate: 2,
                steps: vec![probe(1.0, true), probe(2.0, true), probe(4.0, false)],
                search_s: 30.0,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_capacity_search_flattens_into_capacity_its_bracket_and_its_steps() {
        let metrics = searched(2.0, Some(4.0)).metrics();
        assert_eq!(metrics.get("capacity"), Some(&2.0));
        assert_eq!(metrics.get("capacity_broke_at"), Some(&4.0));
        assert_eq!(metrics.get("capacity_steps"), Some(&3.0));
        // The figures of the rate that held stay, for the analyzer and the constraints.
        assert_eq!(metrics.get("ttft.p99"), Some(&900.0));

        // Held up to the highest rate allowed: no rate broke, so no upper end of the bracket.
        let metrics = searched(8.0, None).metrics();
        assert_eq!((metrics.get("capacity"), metrics.get("capacity_broke_at")), (Some(&8.0), None));

        // Broke even at the lowest rate: capacity 0, still reported.
        let none_held = searched(0.0, Some(0.05));
        assert!(!none_held.capacity.as_ref().unwrap().found());
        assert_eq!(none_held.metrics().get("capacity"), Some(&0.0));

        // A plan that did not search has no capacity metrics at all.
        let plain = BenchSummary { capacity: None, ..searched(2.0, None) };
        assert!(plain.metrics().keys().all(|k| !k.starts_with("capacity")), "{:?}", plain.metrics());
    }

    #[cfg(feature = "session")]
    #[test]
    fn the_capacity_of_every_plan_is_prefixed_and_the_primary_ones_also_plain() {
        let report = |name: &str, summary: BenchSummary| BenchReport {
            plan: BenchPlan::new(name, Workload::new(8, 8), Load::Sequential, 1),
            context: BenchContext::default(),
            summary,
            records: Vec::new(),
            window: TimeWindow::new(0, 1),
            warnings: Vec::new(),
        };
        let metrics = crate::session::bench_metrics(&[
            report("chat", searched(3.0, Some(3.5))),
            report("long", searched(1.0, Some(1.2))),
        ]);
        assert_eq!(metrics.get("capacity"), Some(&3.0));
        assert_eq!(metrics.get("chat.capacity"), Some(&3.0));
        assert_eq!(metrics.get("long.capacity"), Some(&1.0));
        assert_eq!(metrics.get("long.capacity_broke_at"), Some(&1.2));
    }

    #[test]
    fn a_plan_reads_a_capacity_goal_with_defaults_and_writes_none_when_it_has_none() {
        let plan = BenchPlan::new("chat", Workload::new(8, 8), Load::Sequential, 1);
        let text = serde_json::to_string(&plan).unwrap();
        assert!(!text.contains("capacity"), "{text}");
        // A plan stored before capacity goals existed reads back without one.
        assert_eq!(serde_json::from_str::<BenchPlan>(&text).unwrap(), plan);

        let goal: CapacityGoal = serde_json::from_str(r#"{"ttft_p99_ms": 500, "max_rate": 8}"#).unwrap();
        assert_eq!(goal, CapacityGoal { max_rate: 8.0, ..CapacityGoal::ttft_p99_ms(500.0) });
        assert_eq!(goal.describe_slo(), "ttft.p99 <= 500 ms, error_rate <= 1%");
        let plan = plan.with_capacity(goal);
        assert_eq!(serde_json::from_str::<BenchPlan>(&serde_json::to_string(&plan).unwrap()).unwrap(), plan);
    }
}
