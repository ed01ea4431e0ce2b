//! Engine-style log lines: the startup banner, the ready line, and the periodic batch statistics
//! (SGLang `Prefill batch` / `Decode batch`, vLLM `Engine 000: Avg prompt throughput`), llama.cpp's
//! per-request `print_timing`, written to
//! stdout with each engine's own timestamp prefix so log parsers written for the real engine work.

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::macros::format_description;

use super::telemetry::{FinishedRequest, StepPhase, StepRecord};
use super::{EngineKind, EngineStats, StepOutcome};

/// SGLang's default `--decode-log-interval`.
const SGLANG_DECODE_LOG_INTERVAL: u64 = 40;
/// vLLM's stats logger period.
const VLLM_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Prefixes one line the way the engine's logger does.
pub fn format_line(engine: EngineKind, level: Level, line: &str) -> String {
    let now = OffsetDateTime::now_utc();
    match engine {
        EngineKind::Vllm => {
            let stamp = now.format(format_description!("[month]-[day] [hour]:[minute]:[second]")).unwrap_or_default();
            format!("{} {stamp} [{}] {line}", level.as_str(), vllm_source(line))
        }
        EngineKind::LlamaCpp => {
            // llama.cpp stamps minutes.seconds.millis.micros since the process started.
            let since = process_start().elapsed();
            let (micros, total_ms) = (since.subsec_micros() % 1000, since.as_millis());
            let (minutes, seconds, millis) = (total_ms / 60_000, (total_ms / 1000) % 60, total_ms % 1000);
            let level = match level {
                Level::Info => 'I',
                Level::Warning => 'W',
                Level::Error => 'E',
            };
            format!("{minutes}.{seconds:02}.{millis:03}.{micros:03} {level} {line}")
        }
        EngineKind::Sglang => {
            let stamp =
                now.format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap_or_default();
            format!("[{stamp}] {line}")
        }
    }
}

fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

/// vLLM names the emitting file and line; the simulator picks the file that logs such a line.
fn vllm_source(line: &str) -> &'static str {
    if line.contains("Avg prompt throughput") {
        "loggers.py:127"
    } else if line.contains("Model loading took") {
        "gpu_model_runner.py:2007"
    } else if line.contains("KV cache") || line.contains("Maximum concurrency") {
        "kv_cache_utils.py:1087"
    } else if line.contains("Graph capturing") {
        "gpu_model_runner.py:2708"
    } else if line.contains("Preempt") || line.contains("preempt") {
        "scheduler.py:470"
    } else {
        "api_server.py:1880"
    }
}

/// Writes one engine log line to stdout (errors to stderr), timestamped.
pub fn emit(engine: EngineKind, level: Level, line: &str) {
    let formatted = format_line(engine, level, line);
    if level == Level::Error {
        eprintln!("{formatted}");
    } else {
        println!("{formatted}");
    }
}

/// The lines an engine prints once it listens.
pub fn ready_lines(engine: EngineKind, host: &str, port: u16) -> Vec<String> {
    match engine {
        EngineKind::Vllm => vec![
            format!("Starting vLLM API server 0 on http://{host}:{port}"),
            "Started server process".into(),
            "Waiting for application startup.".into(),
            "Application startup complete.".into(),
        ],
        EngineKind::LlamaCpp => vec![
            format!("srv  llama_server: listening on http://{host}:{port}"),
            "srv  update_slots: all slots are idle".into(),
        ],
        EngineKind::Sglang => vec![
            format!("Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)"),
            "The server is fired up and ready to roll!".into(),
        ],
    }
}

/// Produces the periodic batch statistics lines from the engine thread.
#[derive(Debug)]
pub struct BatchLogger {
    engine: EngineKind,
    enabled: bool,
    cuda_graph: bool,
    cuda_graph_max_bs: u32,
    /// Set once the model writes its own batch lines, so they are not printed twice.
    model_logs_batches: bool,
    decode_steps: u64,
    interval_started: Option<Instant>,
    interval_generated: u64,
    interval_prompt: u64,
    interval_cached: u64,
    finished_requests: u64,
}

impl BatchLogger {
    pub fn new(engine: EngineKind, enabled: bool, cuda_graph: bool, cuda_graph_max_bs: u32) -> BatchLogger {
        BatchLogger {
            engine,
            enabled,
            cuda_graph,
            cuda_graph_max_bs,
            model_logs_batches: false,
            decode_steps: 0,
            interval_started: None,
            interval_generated: 0,
            interval_prompt: 0,
            interval_cached: 0,
            finished_requests: 0,
        }
    }

    /// Logs what this step calls for; returns a fresh generation throughput (tokens/s) whenever
    /// the engine would report one.
    #[allow(clippy::too_many_arguments)]
    pub fn after_step(
        &mut self,
        outcome: &StepOutcome,
        stats: &EngineStats,
        step: &StepRecord,
        now: Instant,
        new_seqs: u32,
        new_prompt_tokens: u64,
        cached_prompt_tokens: u64,
    ) -> Option<f64> {
        for line in &outcome.log_lines {
            if line.contains("Prefill batch") || line.contains("Decode batch") || line.contains("Avg prompt throughput")
            {
                self.model_logs_batches = true;
            }
            if self.enabled {
                let level =
                    if line.contains("full") || line.contains("Retract") { Level::Warning } else { Level::Info };
                emit(self.engine, level, line);
            }
        }
        let started = *self.interval_started.get_or_insert(now);
        self.interval_generated += step.new_tokens.saturating_sub(u64::from(new_seqs));
        self.interval_prompt += new_prompt_tokens + cached_prompt_tokens;
        self.interval_cached += cached_prompt_tokens;
        let elapsed = now.saturating_duration_since(started).as_secs_f64();
        let mut throughput = None;
        match self.engine {
            EngineKind::Vllm => {
                if now.saturating_duration_since(started) >= VLLM_LOG_INTERVAL {
                    let generation = self.interval_generated as f64 / elapsed.max(1e-9);
                    if self.enabled && !self.model_logs_batches {
                        let hit_rate = if self.interval_prompt == 0 {
                            0.0
                        } else {
                            self.interval_cached as f64 / self.interval_prompt as f64
                        };
                        let line = format!(
                            "Engine 000: Avg prompt throughput: {:.1} tokens/s, Avg generation throughput: {:.1} tokens/s, Running: {} reqs, Waiting: {} reqs, GPU KV cache usage: {:.1}%, Prefix cache hit rate: {:.1}%",
                            self.interval_prompt as f64 / elapsed.max(1e-9),
                            generation,
                            stats.running,
                            stats.queued,
                            stats.token_usage * 100.0,
                            hit_rate * 100.0
                        );
                        emit(self.engine, Level::Info, &line);
                    }
                    throughput = Some(generation);
                    self.restart_interval(now);
                }
            }
            // llama-server prints no periodic batch lines, only each request's timings (below).
            EngineKind::LlamaCpp => {}
            EngineKind::Sglang => {
                if new_seqs > 0 && self.enabled && !self.model_logs_batches {
                    let line = format!(
                        "Prefill batch, #new-seq: {new_seqs}, #new-token: {new_prompt_tokens}, #cached-token: {cached_prompt_tokens}, token usage: {:.2}, #running-req: {}, #queue-req: {}",
                        stats.token_usage,
                        stats.running.saturating_sub(new_seqs as usize),
                        stats.queued
                    );
                    emit(self.engine, Level::Info, &line);
                }
                if matches!(step.phase, StepPhase::Decode | StepPhase::Mixed) {
                    self.decode_steps += u64::from(step.forward_passes.max(1));
                    if self.decode_steps >= SGLANG_DECODE_LOG_INTERVAL {
                        let generation = self.interval_generated as f64 / elapsed.max(1e-9);
                        if self.enabled && !self.model_logs_batches {
                            let graphed = self.cuda_graph && step.batch_size <= self.cuda_graph_max_bs;
                            let line = format!(
                                "Decode batch, #running-req: {}, #token: {}, token usage: {:.2}, cuda graph: {}, gen throughput (token/s): {:.2}, #queue-req: {}",
                                stats.running,
                                (stats.token_usage * stats.max_total_tokens as f64).round() as u64,
                                stats.token_usage,
                                if graphed { "True" } else { "False" },
                                generation,
                                stats.queued
                            );
                            emit(self.engine, Level::Info, &line);
                        }
                        throughput = Some(generation);
                        self.decode_steps = 0;
                        self.restart_interval(now);
                    }
                }
            }
        }
        throughput
    }

    /// The lines an engine prints when a request leaves it: llama-server's `print_timing` (its
    /// prompt time is the request's time to first token here, queueing included).
    pub fn after_request(&mut self, request: &FinishedRequest) {
        if !self.enabled || self.engine != EngineKind::LlamaCpp {
            return;
        }
        self.finished_requests += 1;
        for line in print_timing(self.finished_requests, request) {
            emit(self.engine, Level::Info, &line);
        }
    }

    fn restart_interval(&mut self, now: Instant) {
        self.interval_started = Some(now);
        self.interval_generated = 0;
        self.interval_prompt = 0;
        self.interval_cached = 0;
    }
}

/// llama-server's three `print_timing` lines for one finished request (task `task`).
fn print_timing(task: u64, request: &FinishedRequest) -> [String; 3] {
    let prompt_ms = request.ttft_s.unwrap_or(request.e2e_s) * 1e3;
    let eval_ms = (request.e2e_s * 1e3 - prompt_ms).max(0.0);
    let computed = request.prompt_tokens.saturating_sub(request.cached_tokens);
    let rate = |ms: f64, tokens: u32| {
        let tokens = f64::from(tokens.max(1));
        (ms / tokens, tokens / (ms / 1e3).max(1e-9))
    };
    let (prompt_per_token, prompt_rate) = rate(prompt_ms, computed);
    let (eval_per_token, eval_rate) = rate(eval_ms, request.completion_tokens);
    let head = format!("slot print_timing: id  0 | task {task} |");
    [
        format!(
            "{head} prompt eval time = {prompt_ms:10.2} ms / {computed:5} tokens ({prompt_per_token:8.2} ms per token, {prompt_rate:8.2} tokens per second)"
        ),
        format!(
            "{head}        eval time = {eval_ms:10.2} ms / {:5} tokens ({eval_per_token:8.2} ms per token, {eval_rate:8.2} tokens per second)",
            request.completion_tokens
        ),
        format!(
            "{head}       total time = {:10.2} ms / {:5} tokens",
            prompt_ms + eval_ms,
            computed + request.completion_tokens
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real line shape (`autodebug-telemetry/tests/fixtures/llamacpp_smollm2_server.log`):
    /// `prompt eval time =  130.68 ms /  38 tokens (  3.44 ms per token,  290.78 tokens per second)`.
    #[test]
    fn print_timing_lines_carry_the_requests_own_times_and_tokens() {
        let request = FinishedRequest {
            streaming: true,
            finished_unix_ns: 0,
            ttft_s: Some(0.130),
            tpot_s: Some(0.01),
            e2e_s: 1.410,
            prompt_tokens: 48,
            cached_tokens: 10,
            completion_tokens: 128,
            finish_reason: "length",
        };
        let [prompt, eval, total] = print_timing(7, &request);
        let number_after = |line: &str, marker: &str| -> f64 {
            let rest = &line[line.find(marker).unwrap_or_else(|| panic!("{marker} in {line}")) + marker.len()..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        assert!(prompt.starts_with("slot print_timing: id  0 | task 7 | prompt eval time ="), "{prompt}");
        assert_eq!(number_after(&prompt, "time ="), 130.0);
        assert_eq!(number_after(&prompt, "ms /"), 38.0, "cached tokens are not evaluated");
        assert_eq!(number_after(&eval, "time ="), 1280.0);
        assert_eq!(number_after(&eval, "ms /"), 128.0);
        assert_eq!(number_after(&eval, "ms per token,"), 100.0);
        assert_eq!(number_after(&total, "ms /"), 166.0);
        assert!(eval.contains("|        eval time ="), "{eval}");
    }
}
