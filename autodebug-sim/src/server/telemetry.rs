//! What the server records about its own run, shared by `/metrics` and the debug context:
//! cumulative counters and histograms (Prometheus semantics) and bounded ring buffers of recent
//! steps and requests (for time-window queries).

use std::collections::VecDeque;

use super::{EngineKind, EngineStats, StepKind};

/// Steps kept for debug-context windows; at ~1.5 ms a step this is several minutes of full load.
pub const STEP_HISTORY: usize = 200_000;
/// Finished requests kept for debug-context windows.
pub const REQUEST_HISTORY: usize = 100_000;

/// What a step did, copied out of the model's [`StepKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPhase {
    Prefill,
    Decode,
    Mixed,
    Idle,
}

impl StepPhase {
    pub fn of(kind: &StepKind) -> StepPhase {
        match kind {
            StepKind::Prefill => StepPhase::Prefill,
            StepKind::Decode => StepPhase::Decode,
            StepKind::Mixed => StepPhase::Mixed,
            StepKind::Idle => StepPhase::Idle,
        }
    }
}

/// One scheduler iteration as the real clock saw it.
#[derive(Debug, Clone, Copy)]
pub struct StepRecord {
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// CPU scheduling overhead plus forward time: what a profiler attributes to `run_batch`.
    pub run_batch_ns: u64,
    pub forward_ns: u64,
    pub forward_passes: u32,
    pub phase: StepPhase,
    pub batch_size: u32,
    pub new_tokens: u64,
    pub running: u32,
    pub queued: u32,
    pub token_usage: f64,
}

/// One request that left the server (finished, stopped or aborted).
#[derive(Debug, Clone, Copy)]
pub struct FinishedRequest {
    pub streaming: bool,
    pub finished_unix_ns: u64,
    pub ttft_s: Option<f64>,
    pub tpot_s: Option<f64>,
    pub e2e_s: f64,
    pub prompt_tokens: u32,
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    /// `length`, `stop` or `abort`.
    pub finish_reason: &'static str,
}

/// A Prometheus histogram with fixed upper bounds (the `+Inf` bucket is implicit).
#[derive(Debug, Clone)]
pub struct Histogram {
    pub bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; one more than `bounds` for `+Inf`.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, value: f64) {
        self.observe_n(value, 1);
    }

    pub fn observe_n(&mut self, value: f64, times: u32) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket] += u64::from(times);
        self.sum += value * f64::from(times);
        self.count += u64::from(times);
    }

    /// Cumulative counts per bound, then `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().scan(0u64, |total, count| {
            *total += count;
            Some(*total)
        })
    }
}

/// Request-level series, kept once for streaming and once for non-streaming requests (SGLang
/// labels them `is_streaming`).
#[derive(Debug, Clone)]
pub struct RequestSeries {
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    pub requests: u64,
    pub ttft: Histogram,
    pub e2e: Histogram,
    pub tpot: Histogram,
}

impl RequestSeries {
    fn new(buckets: &Buckets) -> RequestSeries {
        RequestSeries {
            prompt_tokens: 0,
            generation_tokens: 0,
            requests: 0,
            ttft: Histogram::new(buckets.ttft),
            e2e: Histogram::new(buckets.e2e),
            tpot: Histogram::new(buckets.tpot),
        }
    }
}

/// The bucket bounds one engine version uses.
pub struct Buckets {
    pub ttft: &'static [f64],
    pub itl: &'static [f64],
    pub tpot: &'static [f64],
    pub e2e: &'static [f64],
    pub queue: &'static [f64],
}

/// The engine's last known state, copied from its stats after every step.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineGauges {
    pub running: usize,
    pub queued: usize,
    pub token_usage: f64,
    pub max_total_tokens: u64,
    pub prompt_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub generation_tokens: u64,
    pub retractions: u64,
    pub spec_accept_tokens: u64,
    pub spec_draft_tokens: u64,
    pub forward_passes: u64,
}

impl EngineGauges {
    fn copy_from(&mut self, stats: &EngineStats) {
        *self = EngineGauges {
            running: stats.running,
            queued: stats.queued,
            token_usage: stats.token_usage,
            max_total_tokens: stats.max_total_tokens,
            prompt_tokens: stats.prompt_tokens,
            cached_prompt_tokens: stats.cached_prompt_tokens,
            generation_tokens: stats.generation_tokens,
            retractions: stats.retractions,
            spec_accept_tokens: stats.spec_accept_tokens,
            spec_draft_tokens: stats.spec_draft_tokens,
            forward_passes: stats.forward_passes,
        };
    }
}

/// Everything the server measured about its own run.
#[derive(Debug)]
pub struct Telemetry {
    pub engine: EngineKind,
    pub served_model_name: String,
    pub started_unix_ns: u64,
    pub cuda_graph: bool,
    /// Labels of vLLM's `cache_config_info` besides `engine` and `num_gpu_blocks`.
    pub cache_config: Vec<(&'static str, String)>,
    pub streaming: RequestSeries,
    pub non_streaming: RequestSeries,
    pub queue_time: Histogram,
    pub inter_token: Histogram,
    pub finish_reasons: Vec<(&'static str, u64)>,
    pub cached_tokens: u64,
    pub gauges: EngineGauges,
    /// Hit rate of the last prefill batch, as SGLang reports it.
    pub last_prefill_hit_rate: f64,
    pub retractions_last_step: u64,
    pub gen_throughput: f64,
    pub graph_passes: u64,
    pub eager_passes: u64,
    pub steps: VecDeque<StepRecord>,
    pub requests: VecDeque<FinishedRequest>,
    /// llama.cpp's per-slot timers summed over slots: a step counts once for every sequence it
    /// prefilled (prompt) or decoded (generation), as each slot times its own phase.
    pub slot_prompt_seconds: f64,
    pub slot_generation_seconds: f64,
    /// Sequences in each working step, summed, and the working steps: llama.cpp's busy slots per decode.
    pub busy_slots: u64,
    pub working_steps: u64,
    /// The longest sequence seen, prompt plus generation (llama.cpp's `n_tokens_max`).
    pub max_sequence_tokens: u32,
}

impl Telemetry {
    pub fn new(
        engine: EngineKind,
        served_model_name: String,
        cuda_graph: bool,
        started_unix_ns: u64,
        buckets: &Buckets,
    ) -> Telemetry {
        Telemetry {
            engine,
            served_model_name,
            started_unix_ns,
            cuda_graph,
            cache_config: Vec::new(),
            streaming: RequestSeries::new(buckets),
            non_streaming: RequestSeries::new(buckets),
            queue_time: Histogram::new(buckets.queue),
            inter_token: Histogram::new(buckets.itl),
            finish_reasons: ["stop", "length", "abort", "error", "repetition"].iter().map(|r| (*r, 0)).collect(),
            cached_tokens: 0,
            gauges: EngineGauges::default(),
            last_prefill_hit_rate: 0.0,
            retractions_last_step: 0,
            gen_throughput: 0.0,
            graph_passes: 0,
            eager_passes: 0,
            steps: VecDeque::new(),
            requests: VecDeque::new(),
            slot_prompt_seconds: 0.0,
            slot_generation_seconds: 0.0,
            busy_slots: 0,
            working_steps: 0,
            max_sequence_tokens: 0,
        }
    }

    pub fn record_step(
        &mut self,
        step: &StepRecord,
        stats: &EngineStats,
        new_seqs: u32,
        new_prompt_tokens: u64,
        cached_prompt_tokens: u64,
    ) {
        let retractions_before = self.gauges.retractions;
        self.gauges.copy_from(stats);
        self.retractions_last_step = stats.retractions.saturating_sub(retractions_before);
        if new_seqs > 0 {
            let total = new_prompt_tokens + cached_prompt_tokens;
            self.last_prefill_hit_rate = if total == 0 { 0.0 } else { cached_prompt_tokens as f64 / total as f64 };
        }
        if step.phase != StepPhase::Idle {
            let seconds = step.end_unix_ns.saturating_sub(step.start_unix_ns) as f64 / 1e9;
            let prefilling = new_seqs.min(step.batch_size);
            self.slot_prompt_seconds += seconds * f64::from(prefilling);
            self.slot_generation_seconds += seconds * f64::from(step.batch_size - prefilling);
            self.busy_slots += u64::from(step.batch_size);
            self.working_steps += 1;
        }
        let graphed = self.cuda_graph && step.phase == StepPhase::Decode;
        if graphed {
            self.graph_passes += u64::from(step.forward_passes);
        } else {
            self.eager_passes += u64::from(step.forward_passes);
        }
        if self.steps.len() == STEP_HISTORY {
            self.steps.pop_front();
        }
        self.steps.push_back(*step);
    }

    /// Takes the engine's state outside a step (after a cancel), so gauges do not go stale
    /// while the engine idles.
    pub fn refresh_gauges(&mut self, stats: &EngineStats) {
        let retractions = self.gauges.retractions;
        self.gauges.copy_from(stats);
        self.gauges.retractions = self.gauges.retractions.max(retractions);
    }

    pub fn record_queue_time(&mut self, seconds: f64) {
        self.queue_time.observe(seconds);
    }

    pub fn record_inter_token(&mut self, seconds_per_token: f64, tokens: u32) {
        self.inter_token.observe_n(seconds_per_token, tokens);
    }

    pub fn set_gen_throughput(&mut self, tokens_per_s: f64) {
        self.gen_throughput = tokens_per_s;
    }

    pub fn record_request(&mut self, request: FinishedRequest) {
        let series = if request.streaming { &mut self.streaming } else { &mut self.non_streaming };
        series.requests += 1;
        series.prompt_tokens += u64::from(request.prompt_tokens);
        series.generation_tokens += u64::from(request.completion_tokens);
        if let Some(ttft) = request.ttft_s {
            series.ttft.observe(ttft);
        }
        if let Some(tpot) = request.tpot_s {
            series.tpot.observe(tpot);
        }
        series.e2e.observe(request.e2e_s);
        self.cached_tokens += u64::from(request.cached_tokens);
        self.max_sequence_tokens = self.max_sequence_tokens.max(request.prompt_tokens + request.completion_tokens);
        if let Some(slot) = self.finish_reasons.iter_mut().find(|(reason, _)| *reason == request.finish_reason) {
            slot.1 += 1;
        }
        if self.requests.len() == REQUEST_HISTORY {
            self.requests.pop_front();
        }
        self.requests.push_back(request);
    }

    /// Steps that ended inside `[start_ns, end_ns]`.
    pub fn steps_in(&self, start_ns: u64, end_ns: u64) -> impl Iterator<Item = &StepRecord> {
        let first = self.steps.partition_point(|step| step.end_unix_ns < start_ns);
        self.steps.range(first..).take_while(move |step| step.end_unix_ns <= end_ns)
    }

    /// Requests that finished inside `[start_ns, end_ns]`.
    pub fn requests_in(&self, start_ns: u64, end_ns: u64) -> impl Iterator<Item = &FinishedRequest> {
        let first = self.requests.partition_point(|request| request.finished_unix_ns < start_ns);
        self.requests.range(first..).take_while(move |request| request.finished_unix_ns <= end_ns)
    }
}
