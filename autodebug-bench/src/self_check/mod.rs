//! The client's own performance check: `autodebug bench --self-check`.
//!
//! A load generator is only as good as its timing and its headroom: if it burns a core per few
//! thousand chunks or stamps tokens late, it measures itself instead of the server. [`run`]
//! starts the simulator's OpenAI-compatible server on 127.0.0.1 — as child processes
//! ([`SimulatorHost::Child`], what the CLI does) or on a runtime in this process through a serve
//! function the caller passes ([`SimulatorHost::InProcess`]; this crate does not build the
//! simulator in) — in *fast* mode (tokens as fast as the client takes them)
//! and measures this crate's SSE hot path — the same HTTP/1.1 client (`wire.rs`), parser
//! (`sse.rs`) and per-stream accounting (`stream.rs`) every benchmark of an
//! `http://` endpoint uses — against the targets of issue 3:
//!
//! | figure | how | target |
//! |---|---|---|
//! | `cpu_us_per_chunk` | whole-process CPU (`getrusage(RUSAGE_SELF)`; the simulator in a child) / SSE events received, over 64-512-token streams on a multi-thread runtime with a worker per core (as `autodebug bench` runs) | ≤ 10 µs |
//! | `floor_cpu_us_per_chunk` | the same over the same kind of streams in the same run, read by a bare reader: socket reads and the `\n\n` event boundary, no HTTP client, no JSON, no accounting | context |
//! | `cpu_ratio_to_floor` | `cpu_us_per_chunk / floor_cpu_us_per_chunk`: what the client costs over reading the bytes at all, less bound to the machine than either figure | ≤ 2 |
//! | `chunks_per_sec` | SSE events received and accounted per second of that process CPU | ≥ 100,000 |
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
//! The CPU phase and the TTFT phases run on a multi-thread runtime with a worker per core, as
//! `autodebug bench` and the loop run the benchmarker. In the CPU phase the client and the floor
//! take turns ([`CPU_ROUNDS`] each, the same stream lengths), so load from a neighbour on a shared
//! machine falls on both; the absolute µs per chunk still moves with the machine (7 µs on one
//! 2-core VM, 14-15 µs on another for the same build), the ratio much less. With
//! [`SimulatorHost::InProcess`] the process CPU includes the server's, which dilutes the ratio
//! towards 1 (the report's `mode` says so). Wall-clock rates on a shared machine are reported as
//! context (`chunks_per_sec_wall`), never asserted.
//!
//! [`replay_sse`] feeds recorded bytes through the same parser and accounting without a network,
//! for microbenchmarks and fuzzing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), autodebug_bench::BenchError> {
//! use autodebug_bench::self_check::{SelfCheckOptions, SimulatorHost, run};
//!
//! // `autodebug sim serve` in child processes.
//! let simulator = SimulatorHost::Child { program: "autodebug".into(), args: vec!["sim".into(), "serve".into()] };
//! let report = run(SelfCheckOptions { simulator, ..SelfCheckOptions::quick() }).await?;
//! println!("{}", report.to_table());
//! assert!(report.chunks_measured > 0);
//! # Ok(())
//! # }
//! ```

mod cpu;
mod floor;
mod hold;
mod measure;
mod replay;
mod report;
mod simulator;
mod ttft;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::BenchError;
use crate::request::CLIENT;
use crate::wire::WireClient;

pub use cpu::{CPU_ROUNDS, CPU_STREAM_TOKENS};
pub use replay::{ReplayEnd, ReplayOutcome, parse_sse, replay_sse};
pub use report::{SelfCheckReport, TtftLegs};
pub use simulator::{InProcessSimulator, SimulatorHost};

use cpu::{CPU_CLOCK, cpu_phase};
use hold::{hold_phase, raise_fd_limit};
use simulator::{ChildSimulator, start_simulator};
use ttft::ttft_phase;

/// The targets of issue 3; [`SelfCheckReport::to_table`] marks each figure against them.
pub mod targets {
    pub const CPU_US_PER_CHUNK_MAX: f64 = 10.0;
    /// Issue 16: client CPU per chunk over the bare reader's, same run, same streams.
    pub const CPU_RATIO_TO_FLOOR_MAX: f64 = 2.0;
    pub const CHUNKS_PER_SEC_MIN: f64 = 100_000.0;
    pub const STREAMS_HELD_MIN: usize = 10_000;
    pub const TTFT_ERR_MEAN_MS_C8_MAX: f64 = 0.3;
    pub const TTFT_ERR_P99_MS_C8_MAX: f64 = 2.0;
    pub const TTFT_ERR_P99_MS_C1000_MAX: f64 = 2.0;
}

/// The model name every request sends; a simulator must serve under it.
pub const SERVED_MODEL: &str = "self-check";

/// The simulator a child is started as, and an in-process one must match: SGLang on an H100 with
/// Qwen1.5-0.5B, seed 7 (`--engine sglang --gpu H100 --model qwen1.5-0.5b --seed 7`).
pub const SIMULATOR_ARGS: [&str; 8] = ["--engine", "sglang", "--gpu", "H100", "--model", "qwen1.5-0.5b", "--seed", "7"];

/// File descriptors kept free for everything besides the held streams' sockets.
const SPARE_FDS: u64 = 256;

/// What the self-check runs; [`Default`] is the full check, [`SelfCheckOptions::quick`] a
/// seconds-long reduced one with the same phases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelfCheckOptions {
    /// Content tokens streamed in the CPU phase by the client, and again by the floor's bare
    /// reader (one SSE chunk each on the simulated SGLang).
    pub cpu_tokens: u64,
    /// Concurrent streams in the CPU phase.
    pub cpu_streams: usize,
    /// The longest stream of the CPU phase: streams take 64, 128, 256 and 512 output tokens in
    /// turn ([`CPU_STREAM_TOKENS`]), each capped by this (below the model's context).
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
            simulator: SimulatorHost::autodebug_on_path(),
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
            simulator: SimulatorHost::autodebug_on_path(),
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
            SimulatorHost::InProcess { serve } => {
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
                runtime.block_on(start_simulator(serve, fast))
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
    let mut errors = BTreeMap::new();
    // The CPU and TTFT phases run on a multi-thread runtime with a worker per core, as
    // `autodebug bench` and the loop run the benchmarker.
    let ttft_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("self-check-client")
        .enable_all()
        .build()
        .map_err(|e| task_error(format!("could not start the client's runtime: {e}")))?;

    // (a) CPU per chunk, of the client and of the bare reader, in turns.
    let (cpu, floor) = {
        let client = new_client(&base_url)?;
        let authority = base_url.strip_prefix("http://").unwrap_or(&base_url).to_string();
        cpu_phase(&ttft_runtime, &client, &authority, options)
    };
    merge_errors(&mut errors, "cpu", &cpu.errors);
    merge_errors(&mut errors, "cpu_floor", &floor.errors);

    let streams_allowed = (fd_limit.saturating_sub(SPARE_FDS) / per_stream) as usize;
    // (c) TTFT error at low and high concurrency (a fresh client: pooled connections stay with
    // the phase that opened them).
    let ttft_client = new_client(&ttft_base_url)?;
    let low = ttft_runtime.block_on(ttft_phase(
        &ttft_client,
        options,
        options.ttft_concurrency_low,
        options.ttft_requests_low,
    ));
    merge_errors(&mut errors, &format!("ttft_c{}", options.ttft_concurrency_low), &low.errors);
    let high_concurrency = options.ttft_concurrency_high.min(streams_allowed.max(1));
    let high = ttft_runtime.block_on(ttft_phase(&ttft_client, options, high_concurrency, options.ttft_requests_high));
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
    let floor_cpu_us_per_chunk = if floor.events > 0 { floor.cpu_s * 1e6 / floor.events as f64 } else { 0.0 };
    let (low_mean, low_p99) = mean_and_p99(&low.errors_ms);
    let (high_mean, high_p99) = mean_and_p99(&high.errors_ms);
    Ok(SelfCheckReport {
        cpu_us_per_chunk,
        floor_cpu_us_per_chunk,
        cpu_ratio_to_floor: if floor_cpu_us_per_chunk > 0.0 { cpu_us_per_chunk / floor_cpu_us_per_chunk } else { 0.0 },
        chunks_per_sec: if cpu.cpu_s > 0.0 { cpu.events as f64 / cpu.cpu_s } else { 0.0 },
        streams_held: held.held,
        ttft_err_mean_ms_c8: low_mean,
        ttft_err_p99_ms_c8: low_p99,
        ttft_err_p99_ms_c1000: high_p99,
        machine_cores: cores,
        client_version: CLIENT.to_string(),
        chunks_measured: cpu.events,
        mode: format!(
            "{}: simulator {} on 127.0.0.1 (fast mode; TTFT phases {}), sglang/H100/qwen1.5-0.5b; client: CPU and TTFT phases on a {}-worker runtime, CPU phase streams of {:?} tokens (capped at {}), {} rounds of client then bare reader; CPU from {}{}",
            options.label,
            options.simulator.describe(),
            if options.ttft_paced { "paced" } else { "fast" },
            cores,
            CPU_STREAM_TOKENS,
            options.cpu_tokens_per_request,
            CPU_ROUNDS,
            CPU_CLOCK,
            match options.simulator {
                SimulatorHost::InProcess { .. } => " (the in-process server's CPU included in both)",
                SimulatorHost::Child { .. } => "",
            }
        ),
        chunks_per_sec_wall: if cpu.wall_s > 0.0 { cpu.events as f64 / cpu.wall_s } else { 0.0 },
        content_chunks_measured: cpu.content_chunks,
        cpu_phase_cpu_s: cpu.cpu_s,
        cpu_phase_wall_s: cpu.wall_s,
        floor_chunks_measured: floor.events,
        floor_cpu_s: floor.cpu_s,
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
}
