//! The client's own performance check: `autodebug bench --self-check`.
//!
//! A load generator is only as good as its timing and its headroom: if it burns a core per few
//! thousand chunks or stamps tokens late, it measures itself instead of the server. [`run`]
//! starts the simulator's OpenAI-compatible server on 127.0.0.1 — as child processes
//! ([`SimulatorHost::Child`], what the CLI does) or on a runtime in this process
//! ([`SimulatorHost::InProcess`]) — in *fast* mode (tokens as fast as the client takes them)
//! and measures this crate's SSE hot path — the same HTTP/1.1 client (`wire.rs`), parser
//! (`sse.rs`) and per-stream accounting (`stream.rs`) every benchmark of an
//! `http://` endpoint uses — against the targets of issue 3:
//!
//! | figure | how | target |
//! |---|---|---|
//! | `cpu_us_per_chunk` | client thread CPU (`getrusage(RUSAGE_THREAD)`) / SSE events received, over a long run on a current-thread runtime | ≤ 10 µs |
//! | `chunks_per_sec` | SSE events received and accounted per second of that one thread's CPU (one core's capacity) | ≥ 100,000 |
//! | `streams_held` | streams simultaneously open (headers in, body not yet read), then all read to the end without an error | ≥ 10,000 |
//! | `ttft_err_*` | per request, client TTFT (clock started right before the request is sent) − server TTFT, against a second simulator that paces its steps in real time (`ttft_paced`; fast mode saturates the machine by design, so it would measure the server's queueing) | mean ≤ 0.3 ms, p99 ≤ 2 ms at c=8; p99 ≤ 2 ms at c=1000 |
//!
//! The server TTFT comes from the stamps the simulator puts on every chunk: `sim_arrival_ns`,
//! the kernel's receive time of the request's first bytes (`SO_TIMESTAMPNS`, so the server's own
//! queueing before its handler is not charged to the client), and `sim_sent_ns`, when the first
//! content chunk left its HTTP layer. The client times the first chunk by its arrival (the
//! kernel's receive stamp on the client's socket), as every benchmark does. The report splits
//! each error into the request leg (sent → arrival at the server) and the response leg (chunk
//! sent → arrival at the client), on the shared Unix clock, and gives as context the **read
//! lag**: arrival → the read returning to the stream's task, what a client that clocks tokens
//! when its reads return would add to its TTFT.
//!
//! The CPU phase runs on a dedicated OS thread with a current-thread Tokio runtime, so its CPU
//! time is its own; the TTFT phases run on a multi-thread runtime with a worker per core, as
//! `autodebug bench` and the loop run the benchmarker. Wall-clock rates on a shared machine are
//! reported as context (`chunks_per_sec_wall`), never asserted.
//!
//! [`replay_sse`] feeds recorded bytes through the same parser and accounting without a network,
//! for microbenchmarks and fuzzing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), autodebug_bench::BenchError> {
//! use autodebug_bench::self_check::{SelfCheckOptions, run};
//!
//! let report = run(SelfCheckOptions::quick()).await?;
//! println!("{}", report.to_table());
//! assert!(report.chunks_measured > 0);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autodebug_core::ErrorClass;
use autodebug_sim::server::{ServeOptions, serve};
use autodebug_sim::{EngineKind, SimConfig};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::BenchError;
use crate::benchmarker::CLIENT;
use crate::sse::SseParser;
use crate::stream::{Stop, StreamAccount};
use crate::wire::WireClient;

/// The targets of issue 3; [`SelfCheckReport::to_table`] marks each figure against them.
pub mod targets {
    pub const CPU_US_PER_CHUNK_MAX: f64 = 10.0;
    pub const CHUNKS_PER_SEC_MIN: f64 = 100_000.0;
    pub const STREAMS_HELD_MIN: usize = 10_000;
    pub const TTFT_ERR_MEAN_MS_C8_MAX: f64 = 0.3;
    pub const TTFT_ERR_P99_MS_C8_MAX: f64 = 2.0;
    pub const TTFT_ERR_P99_MS_C1000_MAX: f64 = 2.0;
}

/// Name under which the in-process simulator serves its model.
const SERVED_MODEL: &str = "self-check";

/// File descriptors kept free for everything besides the held streams' sockets.
const SPARE_FDS: u64 = 256;

/// What the self-check runs; [`Default`] is the full check, [`SelfCheckOptions::quick`] a
/// seconds-long reduced one with the same phases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelfCheckOptions {
    /// Content tokens streamed in the CPU phase (one SSE chunk each on the simulated SGLang).
    pub cpu_tokens: u64,
    /// Concurrent streams in the CPU phase.
    pub cpu_streams: usize,
    /// Output tokens per request in the CPU phase (below the model's context).
    pub cpu_tokens_per_request: u32,
    /// Streams to open at once and hold.
    pub streams_to_hold: usize,
    /// How long all streams stay open before they are read to the end.
    pub hold_for: Duration,
    /// Measured requests of the TTFT phase at the low concurrency (plus one warm-up per worker).
    pub ttft_requests_low: usize,
    /// The low TTFT concurrency (8 in the issue).
    pub ttft_concurrency_low: usize,
    /// Measured requests of the TTFT phase at the high concurrency.
    pub ttft_requests_high: usize,
    /// The high TTFT concurrency (1000 in the issue).
    pub ttft_concurrency_high: usize,
    /// Per request: no response or no byte for this long is a timeout.
    pub request_timeout: Duration,
    /// Each phase stops starting requests after this long.
    pub phase_limit: Duration,
    /// Run the TTFT phases against a second simulator that paces steps in real time (as a GPU
    /// would) instead of the fast one: in fast mode the whole machine is saturated by design, so
    /// the TTFT error measures queueing in the server's HTTP layer rather than the client.
    pub ttft_paced: bool,
    /// Where the simulators run.
    pub simulator: SimulatorHost,
    /// Label of the run in the report's `mode`.
    pub label: String,
}

/// Where the self-check's simulators run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SimulatorHost {
    /// On a runtime in this process: needs no executable (tests, embedding), but client and
    /// server then share this process's descriptor limit (two per stream) and its cores' queues.
    InProcess,
    /// One child process per simulator, started as `program args… --engine sglang --gpu H100
    /// --model qwen1.5-0.5b --host 127.0.0.1 --port P [--fast] --quiet -- --served-model-name …`:
    /// the client's process then holds only its own sockets, as it does against a real server.
    /// `autodebug bench --self-check` passes its own executable with `sim serve`.
    Child { program: std::path::PathBuf, args: Vec<String> },
}

impl SimulatorHost {
    fn descriptors_per_stream(&self) -> u64 {
        match self {
            SimulatorHost::InProcess => 2,
            SimulatorHost::Child { .. } => 1,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            SimulatorHost::InProcess => "in-process",
            SimulatorHost::Child { .. } => "in a child process",
        }
    }
}

impl Default for SelfCheckOptions {
    fn default() -> Self {
        SelfCheckOptions {
            cpu_tokens: 200_000,
            cpu_streams: 8,
            cpu_tokens_per_request: 10_000,
            streams_to_hold: 10_000,
            hold_for: Duration::from_secs(2),
            ttft_requests_low: 800,
            ttft_concurrency_low: 8,
            ttft_requests_high: 3_000,
            ttft_concurrency_high: 1_000,
            request_timeout: Duration::from_secs(60),
            phase_limit: Duration::from_secs(180),
            ttft_paced: true,
            simulator: SimulatorHost::InProcess,
            label: "full".to_string(),
        }
    }
}

impl SelfCheckOptions {
    /// Small counts (a few seconds): for tests and a quick look. Figures are noisier.
    pub fn quick() -> Self {
        SelfCheckOptions {
            cpu_tokens: 4_000,
            cpu_streams: 4,
            cpu_tokens_per_request: 1_000,
            streams_to_hold: 200,
            hold_for: Duration::from_millis(100),
            ttft_requests_low: 40,
            ttft_concurrency_low: 8,
            ttft_requests_high: 200,
            ttft_concurrency_high: 100,
            request_timeout: Duration::from_secs(30),
            phase_limit: Duration::from_secs(60),
            ttft_paced: true,
            simulator: SimulatorHost::InProcess,
            label: "quick".to_string(),
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let invalid = |field: &'static str, message: &str| {
            Err(BenchError::InvalidPlan { plan: "self-check".into(), field, message: message.into() })
        };
        if self.cpu_streams == 0 || self.ttft_concurrency_low == 0 || self.ttft_concurrency_high == 0 {
            return invalid("cpu_streams/ttft_concurrency_*", "must be at least 1");
        }
        if self.cpu_tokens == 0 || self.cpu_tokens_per_request == 0 {
            return invalid("cpu_tokens/cpu_tokens_per_request", "must be at least 1");
        }
        if self.cpu_tokens_per_request > 30_000 {
            return invalid("cpu_tokens_per_request", "must stay below the simulated model's 32k context");
        }
        Ok(())
    }
}

/// Mean and p99 of the two legs of a TTFT error, ms (the Unix clocks of client and server are
/// the same kernel clock; each process anchors it once, so a leg can read a few µs negative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TtftLegs {
    pub request_mean_ms: f64,
    pub request_p99_ms: f64,
    pub response_mean_ms: f64,
    pub response_p99_ms: f64,
    /// First chunk's arrival (the kernel's receive stamp) → the read returning to its task: the
    /// error a client that clocks tokens when its read returns would add on top (context; not in
    /// the TTFT error, which uses the stamps).
    #[serde(default)]
    pub read_lag_mean_ms: f64,
    #[serde(default)]
    pub read_lag_p99_ms: f64,
}

/// The measured figures (field names are the `--json` schema) and their context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfCheckReport {
    /// Client thread CPU (user + system) per SSE event received, µs.
    pub cpu_us_per_chunk: f64,
    /// SSE events received and accounted per second of client CPU on one core.
    pub chunks_per_sec: f64,
    /// Streams that were open at the same moment and were then all read to the end.
    pub streams_held: usize,
    /// Mean of client TTFT − server TTFT at the low concurrency, ms.
    pub ttft_err_mean_ms_c8: f64,
    pub ttft_err_p99_ms_c8: f64,
    pub ttft_err_p99_ms_c1000: f64,

    /// CPU cores this process may use.
    pub machine_cores: usize,
    /// The client under test, `autodebug-bench/<version>`.
    pub client_version: String,
    /// SSE events received in the CPU phase.
    pub chunks_measured: u64,
    /// How it ran: label, server, clocks.
    pub mode: String,
    /// SSE events per wall-clock second in the CPU phase (bounded by the server sharing the
    /// machine; context, not the target).
    pub chunks_per_sec_wall: f64,
    /// Content chunks (tokens) among `chunks_measured`.
    pub content_chunks_measured: u64,
    /// Client CPU seconds and wall seconds of the CPU phase.
    pub cpu_phase_cpu_s: f64,
    pub cpu_phase_wall_s: f64,
    /// Streams the hold phase tried to open (after the descriptor limit).
    pub streams_requested: usize,
    /// Why fewer streams than asked were attempted or held, when so.
    pub streams_note: Option<String>,
    /// `RLIMIT_NOFILE` soft limit during the run.
    pub fd_limit: u64,
    /// The simulator the TTFT phases ran against: `paced` (real-time steps) or `fast`.
    pub ttft_server_mode: String,
    /// TTFT error at the high concurrency: mean, and the concurrency actually used.
    pub ttft_err_mean_ms_c1000: f64,
    pub ttft_concurrency_high: usize,
    pub ttft_concurrency_low: usize,
    /// Where the TTFT error arises, per concurrency: the request leg (request written → the
    /// server's arrival stamp) and the response leg (first chunk sent → read by the client).
    pub ttft_legs_c8: TtftLegs,
    pub ttft_legs_c1000: TtftLegs,
    /// Requests with a TTFT error sample (successful, with server stamps), per concurrency.
    pub ttft_samples_c8: usize,
    pub ttft_samples_c1000: usize,
    /// Failed requests per phase and error class (`phase/class`); empty when none failed.
    pub errors: BTreeMap<String, u64>,
}

impl SelfCheckReport {
    /// One row per target with the measured figure and pass/fail.
    pub fn to_table(&self) -> String {
        use targets::*;
        let mark = |ok: bool| if ok { "pass" } else { "FAIL" };
        let rows = [
            (
                "client CPU per SSE chunk".to_string(),
                format!("{:.2} µs", self.cpu_us_per_chunk),
                format!("<= {CPU_US_PER_CHUNK_MAX} µs"),
                mark(self.cpu_us_per_chunk > 0.0 && self.cpu_us_per_chunk <= CPU_US_PER_CHUNK_MAX),
            ),
            (
                "SSE chunks/s on one core".to_string(),
                format!("{:.0}", self.chunks_per_sec),
                format!(">= {CHUNKS_PER_SEC_MIN:.0}"),
                mark(self.chunks_per_sec >= CHUNKS_PER_SEC_MIN),
            ),
            (
                "concurrent streams held".to_string(),
                self.streams_held.to_string(),
                format!(">= {STREAMS_HELD_MIN}"),
                mark(self.streams_held >= STREAMS_HELD_MIN),
            ),
            (
                format!("TTFT error mean, c={}", self.ttft_concurrency_low),
                format!("{:.3} ms", self.ttft_err_mean_ms_c8),
                format!("<= {TTFT_ERR_MEAN_MS_C8_MAX} ms"),
                mark(self.ttft_samples_c8 > 0 && self.ttft_err_mean_ms_c8 <= TTFT_ERR_MEAN_MS_C8_MAX),
            ),
            (
                format!("TTFT error p99, c={}", self.ttft_concurrency_low),
                format!("{:.3} ms", self.ttft_err_p99_ms_c8),
                format!("<= {TTFT_ERR_P99_MS_C8_MAX} ms"),
                mark(self.ttft_samples_c8 > 0 && self.ttft_err_p99_ms_c8 <= TTFT_ERR_P99_MS_C8_MAX),
            ),
            (
                format!("TTFT error p99, c={}", self.ttft_concurrency_high),
                format!("{:.3} ms", self.ttft_err_p99_ms_c1000),
                format!("<= {TTFT_ERR_P99_MS_C1000_MAX} ms"),
                mark(self.ttft_samples_c1000 > 0 && self.ttft_err_p99_ms_c1000 <= TTFT_ERR_P99_MS_C1000_MAX),
            ),
        ];
        let mut out = format!(
            "{} self-check ({}; {} cores; {} chunks measured)\n",
            self.client_version, self.mode, self.machine_cores, self.chunks_measured
        );
        out.push_str(&format!("{:<28} {:>14}  {:<14} {}\n", "figure", "measured", "target", "result"));
        for (name, value, target, result) in rows {
            out.push_str(&format!("{name:<28} {value:>14}  {target:<14} {result}\n"));
        }
        out.push_str(&format!(
            "context: {:.0} chunks/s wall-clock (the server shares the machine); TTFT against the {} simulator, samples {} at c={}, {} at c={}; fd limit {}\n",
            self.chunks_per_sec_wall,
            self.ttft_server_mode,
            self.ttft_samples_c8,
            self.ttft_concurrency_low,
            self.ttft_samples_c1000,
            self.ttft_concurrency_high,
            self.fd_limit
        ));
        for (concurrency, legs) in
            [(self.ttft_concurrency_low, &self.ttft_legs_c8), (self.ttft_concurrency_high, &self.ttft_legs_c1000)]
        {
            out.push_str(&format!(
                "TTFT error legs, c={concurrency}: request written -> server arrival mean {:.3} ms p99 {:.3} ms; first chunk sent -> arrived mean {:.3} ms p99 {:.3} ms; (not in the error) arrived -> read by its task mean {:.3} ms p99 {:.3} ms\n",
                legs.request_mean_ms,
                legs.request_p99_ms,
                legs.response_mean_ms,
                legs.response_p99_ms,
                legs.read_lag_mean_ms,
                legs.read_lag_p99_ms
            ));
        }
        if let Some(note) = &self.streams_note {
            out.push_str(&format!("streams: {note}\n"));
        }
        if !self.errors.is_empty() {
            let listed: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("failed requests: {}\n", listed.join(", ")));
        }
        out
    }

    /// Every target met.
    pub fn all_targets_met(&self) -> bool {
        use targets::*;
        self.cpu_us_per_chunk > 0.0
            && self.cpu_us_per_chunk <= CPU_US_PER_CHUNK_MAX
            && self.chunks_per_sec >= CHUNKS_PER_SEC_MIN
            && self.streams_held >= STREAMS_HELD_MIN
            && self.ttft_samples_c8 > 0
            && self.ttft_err_mean_ms_c8 <= TTFT_ERR_MEAN_MS_C8_MAX
            && self.ttft_err_p99_ms_c8 <= TTFT_ERR_P99_MS_C8_MAX
            && self.ttft_samples_c1000 > 0
            && self.ttft_err_p99_ms_c1000 <= TTFT_ERR_P99_MS_C1000_MAX
    }
}

/// Runs the self-check (seconds in [`SelfCheckOptions::quick`], about a minute by default).
///
/// Failed requests do not make this fail: they are counted in [`SelfCheckReport::errors`] and
/// leave their figures lower. It fails when the options are unusable, the simulator cannot
/// start, or the HTTP client cannot be built.
pub async fn run(options: SelfCheckOptions) -> Result<SelfCheckReport, BenchError> {
    options.validate()?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    // Its own thread: the client's CPU time must be this thread's alone, whatever runtime the
    // caller uses, and runtimes cannot be dropped inside another runtime.
    std::thread::Builder::new()
        .name("autodebug-self-check".into())
        .spawn(move || {
            let _ = sender.send(run_blocking(&options));
        })
        .map_err(|e| task_error(format!("could not start the self-check thread: {e}")))?;
    receiver.await.map_err(|_| task_error("the self-check thread stopped without a report".into()))?
}

fn task_error(message: String) -> BenchError {
    BenchError::Task { plan: "self-check".into(), message }
}

fn run_blocking(options: &SelfCheckOptions) -> Result<SelfCheckReport, BenchError> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let per_stream = options.simulator.descriptors_per_stream();
    // Raised before any child starts, so a child simulator inherits the same limit.
    let fd_limit = raise_fd_limit(per_stream * options.streams_to_hold as u64 + SPARE_FDS);

    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| task_error(format!("could not start the client's runtime: {e}")))?;
    let mut server_runtime = None;
    let mut children = Vec::new();
    let mut start = |fast: bool| -> Result<String, BenchError> {
        match &options.simulator {
            SimulatorHost::InProcess => {
                let runtime = match &mut server_runtime {
                    Some(runtime) => runtime,
                    none => none.insert(
                        tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(cores.saturating_sub(1).max(1))
                            .thread_name("self-check-sim")
                            .enable_all()
                            .build()
                            .map_err(|e| task_error(format!("could not start the simulator's runtime: {e}")))?,
                    ),
                };
                runtime.block_on(start_simulator(fast))
            }
            SimulatorHost::Child { program, args } => {
                let child = ChildSimulator::start(program, args, fast, cores)?;
                client_runtime.block_on(child.wait_healthy(Duration::from_secs(30)))?;
                let url = child.base_url.clone();
                children.push(child);
                Ok(url)
            }
        }
    };
    let base_url = start(true)?;
    let ttft_base_url = if options.ttft_paced { start(false)? } else { base_url.clone() };
    // One client per phase: the hold phase leaves thousands of idle pooled connections that
    // would use up the descriptors the next phase needs.
    let new_client = |base_url: &str| {
        let url = format!("{base_url}/v1/chat/completions");
        WireClient::for_url(&url, options.request_timeout, CLIENT)
            .map(Arc::new)
            .ok_or_else(|| task_error(format!("the simulator's URL {url} is not plain http")))
    };
    let client = new_client(&base_url)?;
    let mut errors = BTreeMap::new();

    // (a) CPU per chunk and chunks per CPU-second.
    let cpu = client_runtime.block_on(cpu_phase(&client, options));
    merge_errors(&mut errors, "cpu", &cpu.errors);

    let streams_allowed = (fd_limit.saturating_sub(SPARE_FDS) / per_stream) as usize;
    // (c) TTFT error at low and high concurrency, on a multi-thread runtime with a worker per
    // core, as `autodebug bench` and the loop run the benchmarker (a fresh client: pooled
    // connections stay with the runtime that opened them).
    let ttft_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("self-check-client")
        .enable_all()
        .build()
        .map_err(|e| task_error(format!("could not start the client's runtime: {e}")))?;
    let ttft_client = new_client(&ttft_base_url)?;
    let low = ttft_runtime.block_on(ttft_phase(
        &ttft_client,
        options,
        options.ttft_concurrency_low,
        options.ttft_requests_low,
    ));
    merge_errors(&mut errors, &format!("ttft_c{}", options.ttft_concurrency_low), &low.errors);
    let high_concurrency = options.ttft_concurrency_high.min(streams_allowed.max(1));
    let high = ttft_runtime.block_on(ttft_phase(
        &ttft_client,
        options,
        high_concurrency,
        options.ttft_requests_high,
    ));
    merge_errors(&mut errors, &format!("ttft_c{high_concurrency}"), &high.errors);
    drop(ttft_client);
    ttft_runtime.shutdown_timeout(Duration::from_secs(1));

    // (b) Streams held open at once; last, since it leaves thousands of sockets closing.
    let streams_requested = options.streams_to_hold.min(streams_allowed);
    let mut streams_note = (streams_requested < options.streams_to_hold).then(|| {
        format!(
            "RLIMIT_NOFILE is {fd_limit} ({per_stream} descriptor(s) a stream with the simulator {}), so only {streams_requested} of {} were attempted; raise the hard limit (ulimit -Hn) to hold more",
            options.simulator.describe(),
            options.streams_to_hold
        )
    });
    drop(client);
    let client = new_client(&base_url)?;
    let held = client_runtime.block_on(hold_phase(&client, options, streams_requested));
    merge_errors(&mut errors, "hold", &held.errors);
    if held.opened < streams_requested && streams_note.is_none() {
        streams_note =
            Some(format!("{} of {streams_requested} streams got their response headers in time", held.opened));
    }

    drop(client);
    drop(children);
    client_runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some(runtime) = server_runtime {
        runtime.shutdown_background();
    }

    let cpu_us_per_chunk = if cpu.events > 0 { cpu.cpu_s * 1e6 / cpu.events as f64 } else { 0.0 };
    let (low_mean, low_p99) = mean_and_p99(&low.errors_ms);
    let (high_mean, high_p99) = mean_and_p99(&high.errors_ms);
    Ok(SelfCheckReport {
        cpu_us_per_chunk,
        chunks_per_sec: if cpu.cpu_s > 0.0 { cpu.events as f64 / cpu.cpu_s } else { 0.0 },
        streams_held: held.held,
        ttft_err_mean_ms_c8: low_mean,
        ttft_err_p99_ms_c8: low_p99,
        ttft_err_p99_ms_c1000: high_p99,
        machine_cores: cores,
        client_version: CLIENT.to_string(),
        chunks_measured: cpu.events,
        mode: format!(
            "{}: simulator {} on 127.0.0.1 (fast mode; TTFT phases {}), sglang/H100/qwen1.5-0.5b; client: CPU phase on one current-thread runtime, TTFT phases on a {}-worker runtime; CPU from {}",
            options.label,
            options.simulator.describe(),
            if options.ttft_paced { "paced" } else { "fast" },
            cores,
            CPU_CLOCK
        ),
        chunks_per_sec_wall: if cpu.wall_s > 0.0 { cpu.events as f64 / cpu.wall_s } else { 0.0 },
        content_chunks_measured: cpu.content_chunks,
        cpu_phase_cpu_s: cpu.cpu_s,
        cpu_phase_wall_s: cpu.wall_s,
        streams_requested,
        streams_note,
        fd_limit,
        ttft_server_mode: if options.ttft_paced { "paced" } else { "fast" }.to_string(),
        ttft_err_mean_ms_c1000: high_mean,
        ttft_concurrency_high: high_concurrency,
        ttft_concurrency_low: options.ttft_concurrency_low,
        ttft_legs_c8: low.legs(),
        ttft_legs_c1000: high.legs(),
        ttft_samples_c8: low.errors_ms.len(),
        ttft_samples_c1000: high.errors_ms.len(),
        errors,
    })
}

async fn start_simulator(fast: bool) -> Result<String, BenchError> {
    let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &[])
        .map_err(|e| task_error(format!("the simulator refused its configuration: {e}")))?;
    let socket = tokio::net::TcpSocket::new_v4()
        .map_err(|e| task_error(format!("could not open a loopback socket for the simulator: {e}")))?;
    let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    socket.bind(any_port).map_err(|e| task_error(format!("could not bind 127.0.0.1:0 for the simulator: {e}")))?;
    // Thousands of connects arrive at once in the hold phase; the default backlog would drop SYNs.
    let listener =
        socket.listen(8192).map_err(|e| task_error(format!("could not listen on 127.0.0.1 for the simulator: {e}")))?;
    let address = listener.local_addr().map_err(|e| task_error(format!("simulator listener has no address: {e}")))?;
    let options =
        ServeOptions { seed: 7, model_name: Some(SERVED_MODEL.into()), fast, quiet: true, ..ServeOptions::default() };
    tokio::spawn(async move {
        if let Err(error) = serve(config, listener, options).await {
            tracing::error!(%error, "self-check simulator stopped");
        }
    });
    Ok(format!("http://{address}"))
}

/// A simulator in a child process, killed when dropped (and by the kernel should this thread die
/// first: `PR_SET_PDEATHSIG`).
struct ChildSimulator {
    child: std::process::Child,
    command: String,
    base_url: String,
}

impl ChildSimulator {
    fn start(program: &std::path::Path, args: &[String], fast: bool, cores: usize) -> Result<ChildSimulator, BenchError> {
        // The port is chosen here, not by the child, so no log has to be parsed to learn it.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|e| task_error(format!("could not find a free loopback port for the simulator: {e}")))?
            .port();
        let mut command = std::process::Command::new(program);
        command.args(args).args(["--engine", "sglang", "--gpu", "H100", "--model", "qwen1.5-0.5b", "--seed", "7"]);
        command.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--quiet"]);
        if fast {
            command.arg("--fast");
        }
        command.args(["--", "--served-model-name", SERVED_MODEL]);
        command.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        // The server's HTTP layer gets the cores the client's busiest thread leaves, as it does
        // in-process (pinning the two apart measured worse on a shared machine); read by Tokio.
        command.env("TOKIO_WORKER_THREADS", cores.saturating_sub(1).max(1).to_string());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let shown = format!("{} {} (port {port})", program.display(), args.join(" "));
        let child = command
            .spawn()
            .map_err(|e| task_error(format!("could not start the simulator `{shown}`: {e}")))?;
        Ok(ChildSimulator { child, command: shown, base_url: format!("http://127.0.0.1:{port}") })
    }

    async fn wait_healthy(&self, within: Duration) -> Result<(), BenchError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(BenchError::Client)?;
        let url = format!("{}/health", self.base_url);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(task_error(format!(
            "the simulator `{}` did not answer {url} within {} s; run it by hand to see why",
            self.command,
            within.as_secs()
        )))
    }
}

impl Drop for ChildSimulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn merge_errors(into: &mut BTreeMap<String, u64>, phase: &str, from: &BTreeMap<&'static str, u64>) {
    for (class, count) in from {
        *into.entry(format!("{phase}/{class}")).or_default() += count;
    }
}

/// Mean and nearest-rank p99 (ms) of `samples`; zeros when empty.
fn mean_and_p99(samples: &[f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    let rank = ((sorted.len() as f64) * 0.99).ceil() as usize;
    (mean, sorted[rank.clamp(1, sorted.len()) - 1])
}

// ---------------------------------------------------------------------------------------------
// One stream through the crate's parser and accounting.

/// The server's own stamps on the first content chunk.
#[derive(Deserialize)]
struct SimStamps {
    sim_ts_ns: Option<u64>,
    /// When the chunk left the server's HTTP layer; older simulators lack it.
    sim_sent_ns: Option<u64>,
    sim_arrival_ns: Option<u64>,
}

impl SimStamps {
    fn first_byte_ns(&self) -> Option<u64> {
        self.sim_sent_ns.or(self.sim_ts_ns)
    }

    /// Arrival to the moment the first chunk was sent (else produced): what a client with no
    /// error of its own would read as TTFT.
    fn server_ttft_ns(&self) -> Option<u64> {
        Some(self.first_byte_ns()?.saturating_sub(self.sim_arrival_ns?))
    }
}

/// Now on the Unix clock the simulator stamps with, ns.
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

#[derive(Debug, Default)]
struct StreamResult {
    /// SSE events (data) received, `[DONE]` included.
    events: u64,
    content_chunks: u64,
    /// Client TTFT: request written → first content chunk read.
    client_ttft_ns: Option<u64>,
    /// Server TTFT: first content chunk's `sim_sent_ns` − `sim_arrival_ns`.
    server_ttft_ns: Option<u64>,
    /// The TTFT error split by the shared Unix clock: request written → arrival stamp (the
    /// request leg), first chunk sent → read (the response leg), ns; may be negative by the
    /// clocks' anchoring error.
    legs_ns: Option<(i64, i64)>,
    /// The first content chunk's arrival → its read returning, ns.
    read_lag_ns: Option<u64>,
    error: Option<ErrorClass>,
}

/// Holds streams after their headers until every stream of the phase is open.
struct HoldGate {
    opened: AtomicUsize,
    resolved: AtomicUsize,
    release: tokio::sync::watch::Receiver<bool>,
}

async fn one_stream(
    client: &WireClient,
    body: Vec<u8>,
    timeout: Duration,
    gate: Option<&HoldGate>,
    connect_permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> StreamResult {
    let mut result = StreamResult::default();
    let sent_at = Instant::now();
    let sent_unix_ns = unix_now_ns();
    let sent = tokio::time::timeout(timeout, client.post(&body, None)).await;
    // The permit only spaces out connects: the next stream may connect once this one resolved.
    drop(connect_permit);
    if let Some(gate) = gate {
        gate.resolved.fetch_add(1, Ordering::AcqRel);
    }
    let mut response = match sent {
        Err(_) => return failed(result, ErrorClass::TimeoutFirstToken),
        Ok(Err(error)) => return failed(result, error.class()),
        Ok(Ok(response)) if !(200..300).contains(&response.status()) => {
            return failed(result, ErrorClass::HttpStatus);
        }
        Ok(Ok(response)) => response,
    };
    if let Some(gate) = gate {
        gate.opened.fetch_add(1, Ordering::AcqRel);
        let mut release = gate.release.clone();
        if release.wait_for(|released| *released).await.is_err() {
            return failed(result, ErrorClass::EarlyClose);
        }
    }

    let mut parser = SseParser::default();
    let mut account = StreamAccount::new();
    let mut stop = None;
    loop {
        let read = match tokio::time::timeout(timeout, response.read()).await {
            Err(_) => return failed(result, ErrorClass::TimeoutIdle),
            Ok(Err(error)) => return failed(result, error.class()),
            Ok(Ok(read)) => read,
        };
        let read_at = Instant::now();
        let arrived = read.unwrap_or(read_at);
        let now_ns = nanos_since(sent_at, arrived);
        let mut on_event = |data: &[u8]| {
            result.events += 1;
            let had_content = account.has_content();
            let flow = account.on_event(data, now_ns);
            if !had_content && account.has_content() {
                result.client_ttft_ns = Some(now_ns);
                result.read_lag_ns = Some(nanos_since(arrived, read_at));
                // Once per request, after the arrival was stamped: not on the measured path.
                if let Ok(stamps) = serde_json::from_slice::<SimStamps>(data) {
                    result.server_ttft_ns = stamps.server_ttft_ns();
                    if let (Some(arrived), Some(first_byte)) = (stamps.sim_arrival_ns, stamps.first_byte_ns()) {
                        let read_unix_ns = sent_unix_ns + now_ns;
                        result.legs_ns =
                            Some((arrived as i64 - sent_unix_ns as i64, read_unix_ns as i64 - first_byte as i64));
                    }
                }
            }
            match flow {
                ControlFlow::Break(reason) => {
                    stop = Some(reason);
                    ControlFlow::Break(())
                }
                ControlFlow::Continue(()) => ControlFlow::Continue(()),
            }
        };
        let parsed = match read {
            Some(_) => parser.feed(response.body(), &mut on_event),
            None => parser.finish(&mut on_event),
        };
        result.content_chunks = account.content_chunks() as u64;
        if parsed.is_err() {
            return failed(result, ErrorClass::MalformedSse);
        }
        match stop.take() {
            Some(Stop::Done) => {
                // Read the body's end so the connection goes back to the pool: otherwise the next
                // request of this worker would pay (and its TTFT include) a new connect.
                response.finish(Instant::now() + Duration::from_millis(50), 64 * 1024).await;
                return result;
            }
            Some(Stop::Failed(class, _)) => return failed(result, class),
            None if read.is_none() => {
                return if account.saw_finish_reason() { result } else { failed(result, ErrorClass::EarlyClose) };
            }
            None => {}
        }
    }
}

fn failed(mut result: StreamResult, class: ErrorClass) -> StreamResult {
    result.error = Some(class);
    result
}

fn nanos_since(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_nanos().min(u128::from(u64::MAX)) as u64
}

fn chat_body(prompt_words: usize, max_tokens: u32, index: usize) -> Vec<u8> {
    // Distinct prompts so the prefix cache does not turn the TTFT phases into cache hits.
    let prompt: Vec<String> = (0..prompt_words).map(|i| format!("w{}", (index * 31 + i * 7) % 997)).collect();
    let body = serde_json::json!({
        "model": SERVED_MODEL,
        "messages": [{"role": "user", "content": prompt.join(" ")}],
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    body.to_string().into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Phases.

#[cfg(target_os = "linux")]
const CPU_CLOCK: &str = "getrusage(RUSAGE_THREAD)";
#[cfg(not(target_os = "linux"))]
const CPU_CLOCK: &str = "getrusage(RUSAGE_SELF) (whole process: server included)";

/// CPU seconds (user + system) of the calling thread (Linux) or process.
fn cpu_seconds() -> f64 {
    #[cfg(target_os = "linux")]
    let who = libc::RUSAGE_THREAD;
    #[cfg(not(target_os = "linux"))]
    let who = libc::RUSAGE_SELF;
    // SAFETY: getrusage writes one plain-data struct that we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Raises the soft `RLIMIT_NOFILE` towards `wanted` (the hard limit too, when privileged);
/// returns the soft limit in force afterwards.
fn raise_fd_limit(wanted: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit read and write one plain-data struct that we own.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let current = limit.rlim_cur as u64;
    if current >= wanted {
        return current;
    }
    let raised =
        libc::rlimit { rlim_cur: wanted as libc::rlim_t, rlim_max: limit.rlim_max.max(wanted as libc::rlim_t) };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return wanted;
    }
    let to_hard = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &to_hard) } == 0 {
        return limit.rlim_max as u64;
    }
    current
}

#[derive(Default)]
struct Tally {
    events: u64,
    content_chunks: u64,
    errors: BTreeMap<&'static str, u64>,
    /// TTFT errors in ms.
    errors_ms: Vec<f64>,
    /// Their request and response legs in ms.
    request_legs_ms: Vec<f64>,
    response_legs_ms: Vec<f64>,
    read_lags_ms: Vec<f64>,
}

impl Tally {
    fn add(&mut self, result: &StreamResult, measured: bool) {
        self.events += result.events;
        self.content_chunks += result.content_chunks;
        if let Some(class) = result.error {
            *self.errors.entry(class.as_str()).or_default() += 1;
        } else if measured && let (Some(client), Some(server)) = (result.client_ttft_ns, result.server_ttft_ns) {
            self.errors_ms.push((client as f64 - server as f64) / 1e6);
            if let Some((request, response)) = result.legs_ns {
                self.request_legs_ms.push(request as f64 / 1e6);
                self.response_legs_ms.push(response as f64 / 1e6);
            }
            if let Some(lag) = result.read_lag_ns {
                self.read_lags_ms.push(lag as f64 / 1e6);
            }
        }
    }
}

struct CpuFigures {
    events: u64,
    content_chunks: u64,
    cpu_s: f64,
    wall_s: f64,
    errors: BTreeMap<&'static str, u64>,
}

async fn cpu_phase(client: &Arc<WireClient>, options: &SelfCheckOptions) -> CpuFigures {
    let requests = options.cpu_tokens.div_ceil(u64::from(options.cpu_tokens_per_request)) as usize;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + options.phase_limit;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..options.cpu_streams.min(requests) {
        let (client, tally, next) = (client.clone(), tally.clone(), next.clone());
        let (tokens, timeout) = (options.cpu_tokens_per_request, options.request_timeout);
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= requests || Instant::now() >= deadline {
                    return;
                }
                let result = one_stream(&client, chat_body(16, tokens, index), timeout, None, None).await;
                lock(&tally).add(&result, true);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu_before;
    let tally = std::mem::take(&mut *lock(&tally));
    CpuFigures { events: tally.events, content_chunks: tally.content_chunks, cpu_s, wall_s, errors: tally.errors }
}

struct HoldFigures {
    opened: usize,
    held: usize,
    errors: BTreeMap<&'static str, u64>,
}

async fn hold_phase(client: &Arc<WireClient>, options: &SelfCheckOptions, streams: usize) -> HoldFigures {
    if streams == 0 {
        return HoldFigures { opened: 0, held: 0, errors: BTreeMap::new() };
    }
    let (release, release_rx) = tokio::sync::watch::channel(false);
    let gate = Arc::new(HoldGate { opened: AtomicUsize::new(0), resolved: AtomicUsize::new(0), release: release_rx });
    let tally = Arc::new(Mutex::new(Tally::default()));
    let completed = Arc::new(AtomicU64::new(0));
    // Connects in waves: a burst of thousands of SYNs overflows even a large accept queue.
    let connecting = Arc::new(tokio::sync::Semaphore::new(256));
    let mut streams_set = JoinSet::new();
    for index in 0..streams {
        let (client, gate, tally, completed, connecting) =
            (client.clone(), gate.clone(), tally.clone(), completed.clone(), connecting.clone());
        let timeout = options.request_timeout;
        streams_set.spawn(async move {
            let permit = connecting.acquire_owned().await.ok();
            let result = one_stream(&client, chat_body(8, 8, index), timeout, Some(&gate), permit).await;
            if result.error.is_none() {
                completed.fetch_add(1, Ordering::Relaxed);
            }
            lock(&tally).add(&result, false);
        });
    }
    let deadline = Instant::now() + options.phase_limit;
    while gate.resolved.load(Ordering::Acquire) < streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let opened_at_once = gate.opened.load(Ordering::Acquire);
    tokio::time::sleep(options.hold_for).await;
    let _ = release.send(true);
    let finish_by = Instant::now() + options.phase_limit;
    while !streams_set.is_empty() {
        match tokio::time::timeout_at(finish_by.into(), streams_set.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                streams_set.abort_all();
                break;
            }
        }
    }
    let tally = std::mem::take(&mut *lock(&tally));
    let completed = completed.load(Ordering::Relaxed) as usize;
    // Held means open together *and* read to the end without an error afterwards.
    HoldFigures { opened: opened_at_once, held: opened_at_once.min(completed), errors: tally.errors }
}

struct TtftFigures {
    errors_ms: Vec<f64>,
    request_legs_ms: Vec<f64>,
    response_legs_ms: Vec<f64>,
    read_lags_ms: Vec<f64>,
    errors: BTreeMap<&'static str, u64>,
}

impl TtftFigures {
    /// Mean and p99 of the request leg, then of the response leg, ms.
    fn legs(&self) -> TtftLegs {
        let (request_mean_ms, request_p99_ms) = mean_and_p99(&self.request_legs_ms);
        let (response_mean_ms, response_p99_ms) = mean_and_p99(&self.response_legs_ms);
        let (read_lag_mean_ms, read_lag_p99_ms) = mean_and_p99(&self.read_lags_ms);
        TtftLegs {
            request_mean_ms,
            request_p99_ms,
            response_mean_ms,
            response_p99_ms,
            read_lag_mean_ms,
            read_lag_p99_ms,
        }
    }
}

async fn ttft_phase(
    client: &Arc<WireClient>,
    options: &SelfCheckOptions,
    concurrency: usize,
    requests: usize,
) -> TtftFigures {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + options.phase_limit;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let (client, tally, next) = (client.clone(), tally.clone(), next.clone());
        let timeout = options.request_timeout;
        workers.spawn(async move {
            // One unmeasured request per worker opens its connection: TTFT must not include connects.
            let warmup = one_stream(&client, chat_body(32, 16, 1_000_000 + worker), timeout, None, None).await;
            lock(&tally).add(&warmup, false);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= requests || Instant::now() >= deadline {
                    return;
                }
                let result = one_stream(&client, chat_body(32, 16, index), timeout, None, None).await;
                lock(&tally).add(&result, true);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let tally = std::mem::take(&mut *lock(&tally));
    TtftFigures {
        errors_ms: tally.errors_ms,
        request_legs_ms: tally.request_legs_ms,
        response_legs_ms: tally.response_legs_ms,
        read_lags_ms: tally.read_lags_ms,
        errors: tally.errors,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned tally only means a task panicked mid-count; the counts are still usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Offline replay, for microbenchmarks and fuzzing.

/// How a replayed stream ended, as a live request would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ReplayEnd {
    /// `data: [DONE]` arrived.
    Done,
    /// The bytes ended without `[DONE]` after a choice gave a `finish_reason`: complete.
    Finished,
    /// The request would fail with this class.
    Failed(ErrorClass),
}

/// What [`replay_sse`] saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayOutcome {
    /// SSE events handed to the accounting, `[DONE]` included.
    pub events: u64,
    pub content_chunks: u64,
    /// Output tokens the request record would carry (usage, else counted).
    pub output_tokens: u32,
    pub end: ReplayEnd,
}

/// Feeds recorded response bytes, split into network reads as given, through the client's SSE
/// parser and per-stream accounting — the exact per-chunk path of a live request, minus the
/// socket. Never panics, whatever the bytes.
///
/// ```
/// use autodebug_bench::self_check::{ReplayEnd, replay_sse};
/// let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
/// let (a, b) = body.split_at(10);
/// let outcome = replay_sse([a, b]);
/// assert_eq!((outcome.content_chunks, outcome.end), (1, ReplayEnd::Done));
/// ```
pub fn replay_sse<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> ReplayOutcome {
    let mut parser = SseParser::default();
    let mut account = StreamAccount::new();
    let mut events = 0u64;
    let mut stop = None;
    let mut malformed = false;
    for (at, read) in reads.into_iter().enumerate() {
        let at = at as u64 + 1;
        let fed = parser.feed(read, &mut |data| replay_event(&mut account, data, at, &mut events, &mut stop));
        if fed.is_err() {
            malformed = true;
            break;
        }
        if stop.is_some() {
            break;
        }
    }
    if !malformed && stop.is_none() {
        let at = u64::MAX;
        malformed = parser.finish(&mut |data| replay_event(&mut account, data, at, &mut events, &mut stop)).is_err();
    }
    let end = match (malformed, stop) {
        (true, _) => ReplayEnd::Failed(ErrorClass::MalformedSse),
        (false, Some(Stop::Done)) => ReplayEnd::Done,
        (false, Some(Stop::Failed(class, _))) => ReplayEnd::Failed(class),
        (false, None) if account.saw_finish_reason() => ReplayEnd::Finished,
        (false, None) => ReplayEnd::Failed(ErrorClass::EarlyClose),
    };
    ReplayOutcome {
        events,
        content_chunks: account.content_chunks() as u64,
        output_tokens: account.token_split().output_tokens,
        end,
    }
}

fn replay_event(
    account: &mut StreamAccount,
    data: &[u8],
    at: u64,
    events: &mut u64,
    stop: &mut Option<Stop>,
) -> ControlFlow<()> {
    *events += 1;
    match account.on_event(data, at) {
        ControlFlow::Break(reason) => {
            *stop = Some(reason);
            ControlFlow::Break(())
        }
        ControlFlow::Continue(()) => ControlFlow::Continue(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_nearest_rank_and_mean_is_exact() {
        let samples: Vec<f64> = (1..=200).map(f64::from).collect();
        let (mean, p99) = mean_and_p99(&samples);
        assert_eq!(mean, 100.5);
        assert_eq!(p99, 198.0);
        assert_eq!(mean_and_p99(&[]), (0.0, 0.0));
        assert_eq!(mean_and_p99(&[3.0]), (3.0, 3.0));
    }

    #[test]
    fn thread_cpu_clock_advances_with_work() {
        let before = cpu_seconds();
        let mut x = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() > before);
    }

    #[test]
    fn replay_classifies_endings() {
        let chunk = br#"data: {"choices":[{"delta":{"content":"a b"},"finish_reason":null}]}"#;
        let done = [&chunk[..], b"\n\ndata: [DONE]\n\n"].concat();
        assert_eq!(replay_sse([&done[..]]).end, ReplayEnd::Done);
        let open = [&chunk[..], b"\n\n"].concat();
        assert_eq!(replay_sse([&open[..]]).end, ReplayEnd::Failed(ErrorClass::EarlyClose));
        assert_eq!(replay_sse([&b"<html>\n"[..]]).end, ReplayEnd::Failed(ErrorClass::MalformedSse));
        assert_eq!(replay_sse([&b"data: {oops\n\n"[..]]).end, ReplayEnd::Failed(ErrorClass::MalformedJson));
        let finished = br#"data: {"choices":[{"text":"x","finish_reason":"length"}]}"#;
        let outcome = replay_sse([&finished[..]]);
        assert_eq!((outcome.end, outcome.content_chunks, outcome.output_tokens), (ReplayEnd::Finished, 1, 1));
    }

    #[test]
    fn fd_limit_is_at_least_what_was_in_force() {
        let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert!(raise_fd_limit(64) >= (limit.rlim_cur as u64).min(64));
    }
}
