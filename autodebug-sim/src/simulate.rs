//! Virtual-time benchmark: drives the engine with a synthetic workload and a simulated client,
//! adding each step's duration to a clock instead of sleeping.

use std::collections::{BTreeMap, VecDeque};

use crate::config::SimConfig;
use crate::engine::{Engine, EngineStats, SimRequest, StepOutcome};
use crate::rng::{SimDraws, SplitMix64, seeded};

/// Tokenization, HTTP and IPC before the scheduler sees a request.
const FRONTEND_IN_NS: u64 = 300_000;
/// Detokenization and streaming back to the client.
const FRONTEND_OUT_NS: u64 = 100_000;
/// Virtual-time guard: a run that has not finished after this long is reported as failed.
const MAX_VIRTUAL_NS: u64 = 24 * 3600 * 1_000_000_000;
const MAX_STEPS: u64 = 200_000_000;

/// What the simulated client sends.
#[derive(Debug, Clone, PartialEq)]
pub struct SimWorkload {
    pub requests: usize,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    /// Leading tokens every prompt shares (a system prompt).
    pub shared_prefix_tokens: u32,
    /// Send the very same prompt every time.
    pub repeat_prompt: bool,
    /// Closed loop: this many requests in flight; 1 = sequential. Ignored with `arrival_rate`.
    pub concurrency: usize,
    /// Open loop: Poisson arrivals at this many requests per second.
    pub arrival_rate: Option<f64>,
    /// Open loop: draw the arrival times from this seed instead of the run's, so runs with
    /// different seeds replay one arrival trace (as a benchmark tool replaying a recorded
    /// trace does) and differ only in the engine's timing and the prompts.
    pub arrival_seed: Option<u64>,
    /// Share (0..1) of each answer that repeats text earlier in its prompt or answer, as a client
    /// measures `output_ngram_predictability`; 0 is fresh text. Sets n-gram draft acceptance.
    pub output_predictability: f64,
}

impl SimWorkload {
    /// Sequential requests of `prompt_tokens` / `output_tokens`, distinct prompts.
    pub fn sequential(requests: usize, prompt_tokens: u32, output_tokens: u32) -> Self {
        SimWorkload {
            requests,
            prompt_tokens,
            output_tokens,
            shared_prefix_tokens: 0,
            repeat_prompt: false,
            concurrency: 1,
            arrival_rate: None,
            arrival_seed: None,
            output_predictability: 0.0,
        }
    }

    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    pub fn with_repeated_prompt(mut self) -> Self {
        self.repeat_prompt = true;
        self
    }

    pub fn with_shared_prefix(mut self, tokens: u32) -> Self {
        self.shared_prefix_tokens = tokens;
        self
    }

    pub fn with_arrival_rate(mut self, requests_per_s: f64) -> Self {
        self.arrival_rate = Some(requests_per_s);
        self
    }

    /// Replays the arrival trace of `seed` whatever the run's seed (see `arrival_seed`).
    pub fn with_arrival_seed(mut self, seed: u64) -> Self {
        self.arrival_seed = Some(seed);
        self
    }

    /// Answers of which `share` repeats their own earlier text (see `output_predictability`).
    pub fn with_output_predictability(mut self, share: f64) -> Self {
        self.output_predictability = share;
        self
    }
}

/// What the simulated client measured. Latencies in ms, per successful request.
#[derive(Debug, Clone, Default)]
pub struct SimResult {
    pub ttft_ms: Vec<f64>,
    /// (e2e − ttft) / (output − 1), per request with at least two tokens.
    pub tpot_ms: Vec<f64>,
    pub e2e_ms: Vec<f64>,
    pub duration_s: f64,
    pub output_throughput: f64,
    pub request_throughput: f64,
    pub cached_token_ratio: f64,
    pub failed: bool,
    pub failure: Option<String>,
    pub stats: EngineStats,
    /// Requests the engine refused or cut short.
    pub errors: usize,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
}

impl SimResult {
    /// Arithmetic mean; NaN for no values.
    pub fn mean(values: &[f64]) -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        values.iter().sum::<f64>() / values.len() as f64
    }

    /// The `p`-th percentile (0..=100), linearly interpolated; NaN for no values.
    pub fn percentile(values: &[f64], p: f64) -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = (p.clamp(0.0, 100.0) / 100.0) * (sorted.len() - 1) as f64;
        let low = rank.floor() as usize;
        let high = rank.ceil() as usize;
        sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
    }

    fn std(values: &[f64]) -> f64 {
        let mean = Self::mean(values);
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len().max(1) as f64).sqrt()
    }

    /// Flat metrics under the same names as `autodebug_core::BenchSummary::metrics()`:
    /// `ttft.mean`, `ttft.p99`, `tpot.mean`, `e2e.p50`, `output_throughput`, `error_rate`...
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        // With one token per chunk and no client-side gaps, ITL per request is its TPOT.
        for (name, values) in
            [("ttft", &self.ttft_ms), ("tpot", &self.tpot_ms), ("itl", &self.tpot_ms), ("e2e", &self.e2e_ms)]
        {
            if values.is_empty() {
                continue;
            }
            let stats = [
                ("mean", Self::mean(values)),
                ("std", Self::std(values)),
                ("min", Self::percentile(values, 0.0)),
                ("p50", Self::percentile(values, 50.0)),
                ("p90", Self::percentile(values, 90.0)),
                ("p95", Self::percentile(values, 95.0)),
                ("p99", Self::percentile(values, 99.0)),
                ("p999", Self::percentile(values, 99.9)),
                ("max", Self::percentile(values, 100.0)),
            ];
            for (stat, value) in stats {
                out.insert(format!("{name}.{stat}"), value);
            }
        }
        let requests = self.e2e_ms.len() + self.errors;
        out.insert("request_throughput".into(), self.request_throughput);
        out.insert("output_throughput".into(), self.output_throughput);
        let total = if self.duration_s > 0.0 {
            (self.prompt_tokens + self.output_tokens) as f64 / self.duration_s
        } else {
            0.0
        };
        out.insert("total_token_throughput".into(), total);
        out.insert("requests".into(), requests as f64);
        out.insert("errors".into(), self.errors as f64);
        let rate = if self.failed || requests == 0 { 1.0 } else { self.errors as f64 / requests as f64 };
        out.insert("error_rate".into(), rate);
        out.insert("cached_token_ratio".into(), self.cached_token_ratio);
        out
    }

    pub(crate) fn failure(message: String) -> SimResult {
        SimResult { failed: true, failure: Some(message), ..SimResult::default() }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Flight {
    sent_ns: u64,
    first_ns: Option<u64>,
    done_ns: Option<u64>,
    output: u32,
    cached: u32,
    prompt: u32,
}

struct Prompts {
    rng: SplitMix64,
    shared: Vec<u32>,
    repeated: Option<Vec<u32>>,
    length: usize,
}

impl Prompts {
    fn new(workload: &SimWorkload, seed: u64) -> Self {
        let mut rng = seeded(seed ^ 0x7072_6F6D_7074);
        let length = workload.prompt_tokens.max(1) as usize;
        let shared: Vec<u32> =
            (0..workload.shared_prefix_tokens.min(workload.prompt_tokens)).map(|_| word(&mut rng)).collect();
        let mut prompts = Prompts { rng, shared, repeated: None, length };
        if workload.repeat_prompt {
            prompts.repeated = Some(prompts.fresh());
        }
        prompts
    }

    fn fresh(&mut self) -> Vec<u32> {
        let mut prompt = Vec::with_capacity(self.length);
        prompt.extend_from_slice(&self.shared);
        while prompt.len() < self.length {
            prompt.push(word(&mut self.rng));
        }
        prompt
    }

    fn next(&mut self) -> Vec<u32> {
        match &self.repeated {
            Some(prompt) => prompt.clone(),
            None => self.fresh(),
        }
    }
}

fn word(rng: &mut SplitMix64) -> u32 {
    1 + (rng.next_u64() % 149_999) as u32
}

/// Runs `workload` in virtual time on `engine`: the built-in engine model ([`SimConfig`]) or a twin
/// fitted to a real deployment and launched with its flags ([`crate::twin::Twin::launch`]). A
/// startup failure (OOM, bad flags caught at startup, a configuration the twin cannot run) gives
/// `failed = true` with the engine's message.
///
/// ```
/// use autodebug_sim::{simulate, EngineKind, SimConfig, SimWorkload};
/// let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &[]).unwrap();
/// let result = simulate(&config, &SimWorkload::sequential(5, 31, 150).with_repeated_prompt(), 1);
/// assert!(!result.failed);
/// assert_eq!(result.e2e_ms.len(), 5);
/// assert!(result.metrics()["tpot.mean"] > 0.5);
/// ```
pub fn simulate(engine: &impl Simulated, workload: &SimWorkload, seed: u64) -> SimResult {
    engine.simulate(workload, seed)
}

/// An engine that [`simulate`] can run in virtual time.
pub trait Simulated {
    fn simulate(&self, workload: &SimWorkload, seed: u64) -> SimResult;
}

impl Simulated for SimConfig {
    fn simulate(&self, workload: &SimWorkload, seed: u64) -> SimResult {
        run_engine(self, workload, seed)
    }
}

fn run_engine(config: &SimConfig, workload: &SimWorkload, seed: u64) -> SimResult {
    let mut engine = match Engine::start(config.clone(), seed) {
        Ok(engine) => engine,
        Err(error) => return SimResult::failure(error.to_string()),
    };
    engine.set_logging(false);
    engine.set_output_predictability(workload.output_predictability);
    let total = workload.requests;
    let mut prompts = Prompts::new(workload, seed);
    let mut arrivals_rng = seeded(workload.arrival_seed.unwrap_or(seed) ^ 0x6172_7269_7665);
    let mut flights = vec![Flight::default(); total];
    // (time the engine sees it, request index), in time order.
    let mut pending: VecDeque<(u64, usize)> = VecDeque::new();
    let mut issued = 0usize;
    match workload.arrival_rate {
        Some(rate) if rate > 0.0 => {
            let mut t = 0.0f64;
            for (index, flight) in flights.iter_mut().enumerate() {
                pending.push_back((t as u64 + FRONTEND_IN_NS, index));
                flight.sent_ns = t as u64;
                t += arrivals_rng.exponential(1e9 / rate);
            }
            issued = total;
        }
        _ => {
            let first_wave = workload.concurrency.max(1).min(total);
            for index in 0..first_wave {
                pending.push_back((FRONTEND_IN_NS, index));
            }
            issued = issued.max(first_wave);
        }
    }
    let closed_loop = !matches!(workload.arrival_rate, Some(rate) if rate > 0.0);
    let mut now = 0u64;
    let mut done = 0usize;
    let mut steps = 0u64;
    let mut outcome = StepOutcome::default();
    while done < total {
        while let Some(&(at, index)) = pending.front() {
            if at > now {
                break;
            }
            pending.pop_front();
            let prompt = prompts.next();
            flights[index].prompt = prompt.len() as u32;
            engine.submit(SimRequest {
                id: index as u64,
                prompt,
                max_tokens: workload.output_tokens.max(1),
                ignore_eos: true,
            });
        }
        if !engine.has_work() {
            match pending.front() {
                Some(&(at, _)) => {
                    now = now.max(at);
                    continue;
                }
                None => break,
            }
        }
        engine.step_into(&mut outcome);
        now += outcome.duration_ns;
        steps += 1;
        if steps > MAX_STEPS || now > MAX_VIRTUAL_NS {
            return SimResult::failure(format!(
                "the simulation did not finish: {done} of {total} requests done after {steps} steps and {:.0} s of virtual time",
                now as f64 / 1e9
            ));
        }
        let seen = now + FRONTEND_OUT_NS;
        for event in &outcome.events {
            let Some(flight) = flights.get_mut(event.id as usize) else {
                continue;
            };
            if event.first {
                flight.first_ns = Some(seen);
                flight.cached = event.cached_tokens;
            }
            flight.output = event.output_tokens_so_far;
            if event.finished {
                flight.done_ns = Some(seen);
                done += 1;
                if closed_loop && issued < total {
                    // The client sends its next request as soon as this one completes.
                    flights[issued].sent_ns = seen;
                    pending.push_back((seen + FRONTEND_IN_NS, issued));
                    issued += 1;
                }
            }
        }
    }
    summarize(&flights, engine.stats().clone(), workload)
}

fn summarize(flights: &[Flight], stats: EngineStats, workload: &SimWorkload) -> SimResult {
    let mut result = SimResult { stats, ..SimResult::default() };
    let mut end = 0u64;
    let mut cached = 0u64;
    for flight in flights {
        let (Some(first), Some(finished)) = (flight.first_ns, flight.done_ns) else {
            result.errors += 1;
            continue;
        };
        if flight.output < workload.output_tokens.max(1) {
            result.errors += 1;
        }
        end = end.max(finished);
        let ttft = (first - flight.sent_ns) as f64 / 1e6;
        let e2e = (finished - flight.sent_ns) as f64 / 1e6;
        result.ttft_ms.push(ttft);
        result.e2e_ms.push(e2e);
        if flight.output > 1 {
            result.tpot_ms.push((e2e - ttft) / (flight.output - 1) as f64);
        }
        result.output_tokens += flight.output as u64;
        result.prompt_tokens += flight.prompt as u64;
        cached += flight.cached as u64;
    }
    result.duration_s = end as f64 / 1e9;
    if result.duration_s > 0.0 {
        result.output_throughput = result.output_tokens as f64 / result.duration_s;
        result.request_throughput = result.e2e_ms.len() as f64 / result.duration_s;
    }
    result.cached_token_ratio =
        if result.prompt_tokens > 0 { cached as f64 / result.prompt_tokens as f64 } else { 0.0 };
    result
}
