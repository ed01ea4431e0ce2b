//! The twin's engine: a continuous-batching scheduler in virtual time, with the caps and budgets
//! each engine reads from its flags, and a step cost linear in what the step computes.

use std::collections::{BTreeMap, VecDeque};

use autodebug_core::{EngineKind, LaunchFlags};

use super::{FactorScope, StepCosts, TwinError};
use crate::rng::{SplitMix64, seeded};
use crate::simulate::{SimResult, SimWorkload};

/// A run that has not finished after this many steps is a scheduler that cannot make progress.
const MAX_STEPS: u64 = 20_000_000;
/// vLLM hashes prefixes in blocks of this many tokens; only whole blocks hit.
const VLLM_BLOCK_TOKENS: u32 = 16;

/// What the scheduler reads from the flags.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schedule {
    /// Sequences decoding at once (vLLM `--max-num-seqs`, llama.cpp slots).
    pub(crate) max_seqs: usize,
    /// Tokens one step may compute (vLLM `--max-num-batched-tokens`, llama.cpp `--batch-size`).
    pub(crate) token_budget: u32,
    /// Tokens per physical forward pass (llama.cpp `--ubatch-size`); `None`: one pass per step.
    pub(crate) pass_tokens: Option<u32>,
    /// A prompt may be split across steps.
    pub(crate) chunked_prefill: bool,
    /// New prompts join steps that are decoding (off: llama.cpp `--no-cont-batching` processes
    /// prompts only in steps where no slot decodes).
    pub(crate) continuous_batching: bool,
    /// Prompt tokens already computed for an earlier request are reused, in blocks of this size.
    pub(crate) prefix_block: Option<u32>,
}

/// Flags the scheduler models, per engine; every other flag is a cost factor.
fn structural(engine: EngineKind) -> &'static [&'static str] {
    match engine {
        EngineKind::LlamaCpp => {
            &["--parallel", "--batch-size", "--ubatch-size", "--cont-batching", "--no-cont-batching"]
        }
        EngineKind::Vllm => &[
            "--max-num-seqs",
            "--max-num-batched-tokens",
            "--enable-chunked-prefill",
            "--no-enable-chunked-prefill",
            "--enable-prefix-caching",
            "--no-enable-prefix-caching",
        ],
        EngineKind::Sglang => {
            &["--max-running-requests", "--max-prefill-tokens", "--chunked-prefill-size", "--disable-radix-cache"]
        }
    }
}

/// Flags that decide what runs but not how fast a step is: left out of the cost factors.
fn capacity_only(engine: EngineKind) -> &'static [&'static str] {
    match engine {
        EngineKind::Vllm => &["--max-model-len"],
        EngineKind::Sglang => &["--context-length"],
        EngineKind::LlamaCpp => &[],
    }
}

pub(crate) fn defaults(engine: EngineKind, cpu: bool) -> BTreeMap<String, String> {
    let pairs: &[(&str, &str)] = match (engine, cpu) {
        (EngineKind::Vllm, true) => &[("--max-num-seqs", "128"), ("--max-num-batched-tokens", "2048")],
        (EngineKind::Vllm, false) => &[("--max-num-seqs", "256"), ("--max-num-batched-tokens", "8192")],
        // llama-server with `--parallel -1` (its default) opens 4 slots on a unified KV cache.
        (EngineKind::LlamaCpp, _) => &[("--parallel", "4"), ("--batch-size", "2048"), ("--ubatch-size", "512")],
        (EngineKind::Sglang, _) => &[("--max-running-requests", "256"), ("--chunked-prefill-size", "8192")],
    };
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn number(flag: &str, value: Option<&str>) -> Result<Option<u32>, TwinError> {
    match value {
        None => Ok(None),
        Some(text) => match text.trim().parse::<i64>() {
            // llama.cpp's `-1` means "pick for me", which the defaults say.
            Ok(n) if n < 0 => Ok(None),
            Ok(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
            Err(_) => Err(TwinError::Infeasible(format!("`{flag} {text}` is not a whole number"))),
        },
    }
}

impl Schedule {
    pub(crate) fn from_flags(
        engine: EngineKind,
        flags: &LaunchFlags,
        defaults: &BTreeMap<String, String>,
    ) -> Result<Schedule, TwinError> {
        let value = |flag: &str| -> Result<Option<u32>, TwinError> {
            let given = number(flag, flags.get(flag).flatten())?;
            Ok(given.or(number(flag, defaults.get(flag).map(String::as_str))?))
        };
        let switch = |on: &str, off: &str, default: bool| {
            if flags.contains(off) {
                false
            } else if let Some(value) = flags.get(on) {
                !matches!(value, Some("false" | "0" | "off"))
            } else {
                default
            }
        };
        let schedule = match engine {
            EngineKind::Vllm => Schedule {
                max_seqs: value("--max-num-seqs")?.unwrap_or(128) as usize,
                token_budget: value("--max-num-batched-tokens")?.unwrap_or(2048),
                pass_tokens: None,
                chunked_prefill: switch("--enable-chunked-prefill", "--no-enable-chunked-prefill", true),
                continuous_batching: true,
                prefix_block: switch("--enable-prefix-caching", "--no-enable-prefix-caching", true)
                    .then_some(VLLM_BLOCK_TOKENS),
            },
            EngineKind::LlamaCpp => Schedule {
                max_seqs: value("--parallel")?.unwrap_or(4) as usize,
                token_budget: value("--batch-size")?.unwrap_or(2048),
                pass_tokens: Some(value("--ubatch-size")?.unwrap_or(512)),
                chunked_prefill: true,
                continuous_batching: switch("--cont-batching", "--no-cont-batching", true),
                // Each slot keeps its last prompt; llama-server routes a request to the most similar slot.
                prefix_block: Some(1),
            },
            EngineKind::Sglang => Schedule {
                max_seqs: value("--max-running-requests")?.unwrap_or(256) as usize,
                token_budget: value("--chunked-prefill-size")?.unwrap_or(8192),
                pass_tokens: None,
                chunked_prefill: true,
                continuous_batching: true,
                prefix_block: (!flags.contains("--disable-radix-cache")).then_some(1),
            },
        };
        if schedule.max_seqs == 0 || schedule.token_budget == 0 || schedule.pass_tokens == Some(0) {
            return Err(TwinError::Infeasible(format!(
                "{} sequences, a budget of {} tokens per step: nothing can run",
                schedule.max_seqs, schedule.token_budget
            )));
        }
        Ok(schedule)
    }
}

/// The `(flag, value, scopes)` of every flag that scales step cost, values as the engine would see
/// them (llama.cpp's `--threads-batch` is `--threads` unless set); flags at their default are left
/// out, since the fitted costs already are the defaults'.
pub(crate) fn factor_values(
    engine: EngineKind,
    flags: &LaunchFlags,
    defaults: &BTreeMap<String, String>,
) -> Vec<(String, String, &'static [FactorScope])> {
    const PREFILL: &[FactorScope] = &[FactorScope::Prefill];
    const GENERATION: &[FactorScope] = &[FactorScope::Overhead, FactorScope::Decode];
    let skip = |flag: &str| structural(engine).contains(&flag) || capacity_only(engine).contains(&flag);
    let mut values: Vec<(String, String)> = flags
        .iter()
        .filter(|(flag, _)| !skip(flag))
        .map(|(f, v)| (f.to_string(), v.unwrap_or("on").to_string()))
        .collect();
    if engine == EngineKind::LlamaCpp
        && !flags.contains("--threads-batch")
        && let Some(Some(threads)) = flags.get("--threads")
    {
        values.push(("--threads-batch".into(), threads.to_string()));
    }
    values
        .into_iter()
        .filter(|(flag, value)| defaults.get(flag) != Some(value))
        .map(|(flag, value)| {
            let scopes: &'static [FactorScope] = match (engine, flag.as_str()) {
                (EngineKind::LlamaCpp, "--threads") => GENERATION,
                (EngineKind::LlamaCpp, "--threads-batch") => PREFILL,
                _ => &FactorScope::ALL,
            };
            (flag, value, scopes)
        })
        .collect()
}

/// Multipliers on the parts of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scales {
    pub(crate) overhead: f64,
    pub(crate) prefill: f64,
    pub(crate) decode: f64,
}

impl Default for Scales {
    fn default() -> Self {
        Scales { overhead: 1.0, prefill: 1.0, decode: 1.0 }
    }
}

impl Scales {
    pub(crate) fn apply(&mut self, scope: FactorScope, multiplier: f64) {
        match scope {
            FactorScope::Overhead => self.overhead *= multiplier,
            FactorScope::Prefill => self.prefill *= multiplier,
            FactorScope::Decode => self.decode *= multiplier,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) id: u64,
    sent_ns: f64,
    pub(crate) prompt: u32,
    pub(crate) output: u32,
    /// Prompt tokens computed (or found in the prefix cache).
    pub(crate) computed: u32,
    /// Of those, found in the prefix cache (what a served twin reports as cached).
    pub(crate) cached: u32,
    /// Prompt tokens this step computes.
    chunk: u32,
    pub(crate) emitted: u32,
    first_ns: f64,
    last_ns: f64,
}

impl Request {
    pub(crate) fn new(id: u64, sent_ns: f64, prompt: u32, output: u32) -> Request {
        Request {
            id,
            sent_ns,
            prompt: prompt.max(1),
            output: output.max(1),
            computed: 0,
            cached: 0,
            chunk: 0,
            emitted: 0,
            first_ns: 0.0,
            last_ns: 0.0,
        }
    }
}

/// What one step computes and what it costs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StepWork {
    pub(crate) prefill_tokens: u64,
    pub(crate) decoding: u64,
    pub(crate) passes: u64,
    pub(crate) step_ns: f64,
}

/// The requests the scheduler holds, queued and running: the one stepping core behind the
/// virtual-time [`run`] and the served twin (`TwinEngine`), so both schedule alike.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) waiting: VecDeque<Request>,
    pub(crate) running: Vec<Request>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Plans the next step: every decoding sequence, then prompt chunks within the token budget
    /// (running prompts first, then queued ones while a sequence is free), and its cost. An error
    /// when nothing can run: the first queued prompt never fits a step.
    pub(crate) fn plan(
        &mut self,
        schedule: &Schedule,
        costs: &StepCosts,
        scales: Scales,
    ) -> Result<StepWork, TwinError> {
        let mut budget = schedule.token_budget;
        let (mut decoding, mut prefill_tokens, mut context) = (0u64, 0u64, 0u64);
        for request in &self.running {
            if request.computed == request.prompt {
                decoding += 1;
                context += u64::from(request.prompt + request.emitted);
            }
        }
        budget = budget.saturating_sub(u32::try_from(decoding).unwrap_or(u32::MAX));
        if schedule.continuous_batching || decoding == 0 {
            let take = |request: &mut Request, budget: &mut u32| {
                let remaining = request.prompt - request.computed;
                let chunk = if schedule.chunked_prefill {
                    remaining.min(*budget)
                } else if remaining <= *budget {
                    remaining
                } else {
                    0
                };
                request.chunk = chunk;
                *budget -= chunk;
                chunk
            };
            for request in self.running.iter_mut().filter(|r| r.computed < r.prompt) {
                let chunk = take(request, &mut budget);
                prefill_tokens += u64::from(chunk);
                context += u64::from(request.computed);
            }
            while self.running.len() < schedule.max_seqs && budget > 0 {
                let Some(mut request) = self.waiting.pop_front() else { break };
                let chunk = take(&mut request, &mut budget);
                if chunk == 0 {
                    self.waiting.push_front(request);
                    break;
                }
                prefill_tokens += u64::from(chunk);
                context += u64::from(request.computed);
                self.running.push(request);
            }
        }
        if decoding == 0 && prefill_tokens == 0 {
            let prompt = self.waiting.front().or(self.running.first()).map_or(0, |r| r.prompt);
            return Err(TwinError::Infeasible(format!(
                "a {prompt}-token prompt never fits a {}-token step without chunked prefill",
                schedule.token_budget
            )));
        }
        let passes = match schedule.pass_tokens {
            Some(size) => (decoding + prefill_tokens).div_ceil(u64::from(size)).max(1),
            None => 1,
        };
        let step_ns = passes as f64 * costs.step_us * 1e3 * scales.overhead
            + prefill_tokens as f64 * costs.prefill_token_us * 1e3 * scales.prefill
            + (decoding as f64 * costs.decode_seq_us * 1e3 + context as f64 * costs.context_token_ns) * scales.decode;
        Ok(StepWork { prefill_tokens, decoding, passes, step_ns: step_ns.max(1.0) })
    }

    /// Ends the planned step at `clock`: each decoding sequence emits a token and each prompt chunk
    /// is computed (the last chunk emits the first token). `token` sees each token with the time
    /// since the request's previous one (`None` for a first token); a request with its last token
    /// leaves the batch through `done`.
    pub(crate) fn end_step(
        &mut self,
        clock: f64,
        mut token: impl FnMut(&Request, Option<f64>),
        mut done: impl FnMut(Request),
    ) {
        let mut index = 0;
        while index < self.running.len() {
            let request = &mut self.running[index];
            if request.computed == request.prompt {
                request.emitted += 1;
                let since = clock - request.last_ns;
                request.last_ns = clock;
                token(request, Some(since));
            } else if request.chunk > 0 {
                request.computed += request.chunk;
                request.chunk = 0;
                if request.computed == request.prompt {
                    request.emitted = 1;
                    request.first_ns = clock;
                    request.last_ns = clock;
                    token(request, None);
                }
            }
            if request.emitted >= request.output {
                done(self.running.swap_remove(index));
                continue;
            }
            index += 1;
        }
    }

    /// Drops a request wherever it is; false when the batch does not hold it.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        if let Some(at) = self.running.iter().position(|r| r.id == id) {
            self.running.swap_remove(at);
            true
        } else if let Some(at) = self.waiting.iter().position(|r| r.id == id) {
            self.waiting.remove(at);
            true
        } else {
            false
        }
    }
}

/// What the twin's client measured, as the bench would.
pub(crate) struct Run {
    result: SimResult,
    itl_ms: Vec<f64>,
}

impl Run {
    pub(crate) fn into_result(self) -> SimResult {
        self.result
    }

    /// The named metrics only, each as [`Run::metrics`] would give it: the fit asks for a few
    /// metrics thousands of times, and sorting every distribution each time was most of its cost.
    pub(crate) fn values(&self, names: &[&str]) -> Vec<Option<f64>> {
        let mut sorted_ttft: Option<Vec<f64>> = None;
        let mut all: Option<BTreeMap<String, f64>> = None;
        names
            .iter()
            .map(|name| {
                let value = match *name {
                    "ttft.p50" | "ttft.p99" => {
                        let sorted = sorted_ttft.get_or_insert_with(|| {
                            let mut v = self.result.ttft_ms.clone();
                            v.sort_by(f64::total_cmp);
                            v
                        });
                        percentile_sorted(sorted, if *name == "ttft.p50" { 50.0 } else { 99.0 })
                    }
                    "tpot.mean" => SimResult::mean(&self.result.tpot_ms),
                    "e2e.mean" => SimResult::mean(&self.result.e2e_ms),
                    "output_throughput" => self.result.output_throughput,
                    other => *all.get_or_insert_with(|| self.metrics()).get(other)?,
                };
                Some(value).filter(|v| v.is_finite())
            })
            .collect()
    }

    pub(crate) fn metrics(&self) -> BTreeMap<String, f64> {
        let mut metrics = self.result.metrics();
        if !self.itl_ms.is_empty() {
            for (stat, p) in [("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0)] {
                metrics.insert(format!("itl.{stat}"), SimResult::percentile(&self.itl_ms, p));
            }
            metrics.insert("itl.mean".into(), SimResult::mean(&self.itl_ms));
        }
        metrics
    }
}

/// [`SimResult::percentile`] of values already sorted.
fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0) * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// Runs `workload` through the scheduler in virtual time.
pub(crate) fn run(
    schedule: &Schedule,
    costs: &StepCosts,
    scales: Scales,
    workload: &SimWorkload,
    seed: u64,
) -> Result<Run, TwinError> {
    let total = workload.requests;
    let request_ns = costs.request_ms * 1e6;
    let rate = workload.arrival_rate.filter(|r| *r > 0.0);
    let closed_loop = rate.is_none();
    let mut result = SimResult::default();
    let mut itl_ms = Vec::new();
    let mut clock = 0.0f64;
    let mut first_send = f64::INFINITY;
    let mut last_done = 0.0f64;
    let cacheable = if workload.repeat_prompt { workload.prompt_tokens } else { workload.shared_prefix_tokens };
    let new_request = |sent_ns: f64| Request::new(0, sent_ns, workload.prompt_tokens, workload.output_tokens);
    // Open loop: the scheduled send times not reached yet. Closed loop: the first `concurrency`
    // requests go out at once and each completion sends the next.
    let mut sends: VecDeque<f64> = VecDeque::new();
    let mut arriving: VecDeque<Request> = VecDeque::new();
    let mut batch = Batch::default();
    let mut sent = 0usize;
    match rate {
        Some(rate) => {
            let mut rng: SplitMix64 = seeded(workload.arrival_seed.unwrap_or(seed));
            let mut at = 0.0;
            for _ in 0..total {
                sends.push_back(at);
                at += -(1.0 - rng.next_f64()).ln() / rate * 1e9;
            }
        }
        None => {
            while sent < workload.concurrency.max(1).min(total) {
                arriving.push_back(new_request(0.0));
                sent += 1;
            }
        }
    }
    let mut steps = 0u64;
    loop {
        if !closed_loop {
            while let Some(at) = sends.front().copied().filter(|at| *at <= clock) {
                sends.pop_front();
                arriving.push_back(new_request(at));
            }
        }
        while arriving.front().is_some_and(|r| r.sent_ns + request_ns <= clock) {
            let mut request = arriving.pop_front().expect("checked");
            first_send = first_send.min(request.sent_ns);
            // `cacheable` is what a request finds cached on average (the measured share, first
            // requests' misses included), so every request gets it. The last prompt token is always
            // computed: its logits give the first output token.
            if let Some(block) = schedule.prefix_block {
                let reusable = cacheable.min(request.prompt - 1);
                request.computed = reusable / block * block;
            }
            batch.waiting.push_back(request);
        }
        if batch.is_empty() {
            let next_arrival = arriving.front().map(|r| r.sent_ns + request_ns);
            let next_send = sends.front().copied();
            match (next_arrival, next_send) {
                (None, None) => break,
                (a, s) => {
                    clock = clock.max(a.unwrap_or(f64::INFINITY).min(s.unwrap_or(f64::INFINITY)));
                    continue;
                }
            }
        }
        steps += 1;
        if steps > MAX_STEPS {
            return Err(TwinError::Infeasible(format!("no progress after {MAX_STEPS} steps")));
        }
        let work = batch.plan(schedule, costs, scales)?;
        clock += work.step_ns;
        batch.end_step(
            clock,
            |_, since| {
                if let Some(since) = since {
                    itl_ms.push(since / 1e6);
                }
            },
            |done| {
                let e2e = clock - done.sent_ns;
                let ttft = done.first_ns - done.sent_ns;
                result.ttft_ms.push(ttft / 1e6);
                result.e2e_ms.push(e2e / 1e6);
                if done.output > 1 {
                    result.tpot_ms.push((e2e - ttft) / 1e6 / f64::from(done.output - 1));
                }
                result.prompt_tokens += u64::from(done.prompt);
                result.output_tokens += u64::from(done.output);
                last_done = last_done.max(clock);
                if closed_loop && sent < total {
                    arriving.push_back(new_request(clock));
                    sent += 1;
                }
            },
        );
    }
    let duration_s = (last_done - first_send.min(last_done)) / 1e9;
    result.duration_s = duration_s;
    if duration_s > 0.0 {
        result.output_throughput = result.output_tokens as f64 / duration_s;
        result.request_throughput = result.e2e_ms.len() as f64 / duration_s;
    }
    Ok(Run { result, itl_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(text: &str) -> LaunchFlags {
        LaunchFlags::parse_args(&text.split_whitespace().collect::<Vec<_>>()).unwrap()
    }

    const COSTS: StepCosts = StepCosts {
        step_us: 2000.0,
        prefill_token_us: 50.0,
        decode_seq_us: 500.0,
        context_token_ns: 0.0,
        request_ms: 0.0,
    };

    fn run_with(engine: EngineKind, text: &str, workload: &SimWorkload) -> BTreeMap<String, f64> {
        let schedule = Schedule::from_flags(engine, &flags(text), &defaults(engine, true)).unwrap();
        run(&schedule, &COSTS, Scales::default(), workload, 1).unwrap().metrics()
    }

    #[test]
    fn one_stream_costs_one_prefill_then_one_step_per_token() {
        let metrics = run_with(EngineKind::Vllm, "", &SimWorkload::sequential(3, 100, 11));
        // Prefill: 2 ms + 100 × 50 µs; each later token: 2 ms + 0.5 ms.
        assert!((metrics["ttft.p50"] - 7.0).abs() < 1e-9, "{metrics:?}");
        assert!((metrics["tpot.mean"] - 2.5).abs() < 1e-9, "{metrics:?}");
        assert_eq!(metrics["requests"], 3.0);
    }

    #[test]
    fn slots_below_the_concurrency_queue_requests() {
        let workload = SimWorkload::sequential(32, 64, 16).with_concurrency(8);
        let wide = run_with(EngineKind::LlamaCpp, "--parallel 8", &workload);
        let narrow = run_with(EngineKind::LlamaCpp, "--parallel 2", &workload);
        assert!(narrow["ttft.p50"] > 2.0 * wide["ttft.p50"], "{narrow:?} vs {wide:?}");
        assert!(narrow["output_throughput"] < wide["output_throughput"]);
    }

    #[test]
    fn without_continuous_batching_prompts_wait_for_decoding_to_drain() {
        // One prompt per step staggers the streams, so one finishes while the others decode.
        let workload = SimWorkload::sequential(24, 64, 32).with_concurrency(4);
        let on = run_with(EngineKind::LlamaCpp, "--batch-size 64", &workload);
        let off = run_with(EngineKind::LlamaCpp, "--batch-size 64 --no-cont-batching", &workload);
        assert!(off["ttft.p50"] > on["ttft.p50"], "{off:?} vs {on:?}");
    }

    #[test]
    fn a_small_physical_batch_costs_more_passes_for_a_prompt() {
        let workload = SimWorkload::sequential(2, 512, 4);
        let big = run_with(EngineKind::LlamaCpp, "--ubatch-size 512", &workload);
        let small = run_with(EngineKind::LlamaCpp, "--ubatch-size 64", &workload);
        // 8 passes instead of 1: 7 more fixed costs of 2 ms.
        assert!((small["ttft.p50"] - big["ttft.p50"] - 14.0).abs() < 1e-6, "{small:?} vs {big:?}");
    }

    #[test]
    fn prefix_caching_skips_the_shared_blocks() {
        let workload = SimWorkload::sequential(4, 200, 2).with_shared_prefix(150);
        let cached = run_with(EngineKind::Vllm, "", &workload);
        let uncached = run_with(EngineKind::Vllm, "--no-enable-prefix-caching", &workload);
        assert!(cached["ttft.p50"] < uncached["ttft.p50"] - 5.0, "{cached:?} vs {uncached:?}");
    }

    #[test]
    fn a_prompt_larger_than_the_budget_without_chunking_is_infeasible() {
        let schedule = Schedule::from_flags(
            EngineKind::Vllm,
            &flags("--no-enable-chunked-prefill --max-num-batched-tokens 64"),
            &defaults(EngineKind::Vllm, true),
        )
        .unwrap();
        let error = run(&schedule, &COSTS, Scales::default(), &SimWorkload::sequential(1, 128, 4), 1)
            .err()
            .expect("cannot fit");
        assert!(error.to_string().contains("128-token prompt"), "{error}");
    }

    #[test]
    fn open_loop_arrivals_are_latency_from_the_send_time() {
        let slow = SimWorkload::sequential(20, 32, 8).with_arrival_rate(1.0);
        let metrics = run_with(EngineKind::Vllm, "", &slow);
        // At one request a second nothing queues: TTFT is one prefill.
        assert!((metrics["ttft.p50"] - (2.0 + 32.0 * 0.05)).abs() < 1e-6, "{metrics:?}");
    }

    #[test]
    fn llamacpp_threads_batch_follows_threads_unless_set() {
        let prefill: &[FactorScope] = &[FactorScope::Prefill];
        let values = factor_values(EngineKind::LlamaCpp, &flags("--threads 1"), &defaults(EngineKind::LlamaCpp, true));
        assert!(values.contains(&("--threads-batch".into(), "1".into(), prefill)), "{values:?}");
        let values = factor_values(
            EngineKind::LlamaCpp,
            &flags("--threads 1 --threads-batch 2"),
            &defaults(EngineKind::LlamaCpp, true),
        );
        assert!(values.contains(&("--threads-batch".into(), "2".into(), prefill)), "{values:?}");
        assert!(!values.iter().any(|(flag, ..)| flag == "--parallel"));
    }
}
