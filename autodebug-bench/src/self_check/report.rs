//! The self-check's figures, their `--json` schema, and the table that marks them against the targets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::targets;

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
    /// Whole-process CPU (user + system) per SSE event received by the client, µs.
    pub cpu_us_per_chunk: f64,
    /// Whole-process CPU per SSE event of the bare reader over the same kind of streams in the
    /// same run, µs (the floor).
    #[serde(default)]
    pub floor_cpu_us_per_chunk: f64,
    /// `cpu_us_per_chunk / floor_cpu_us_per_chunk` (0 when there is no floor).
    #[serde(default)]
    pub cpu_ratio_to_floor: f64,
    /// SSE events received and accounted per second of that process CPU.
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
    /// SSE events the floor's bare reader counted, and its CPU seconds.
    #[serde(default)]
    pub floor_chunks_measured: u64,
    #[serde(default)]
    pub floor_cpu_s: f64,
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
                "CPU per chunk / bare reader".to_string(),
                format!("{:.2}x", self.cpu_ratio_to_floor),
                format!("<= {CPU_RATIO_TO_FLOOR_MAX}x"),
                mark(self.cpu_ratio_to_floor > 0.0 && self.cpu_ratio_to_floor <= CPU_RATIO_TO_FLOOR_MAX),
            ),
            (
                "SSE chunks/s per CPU-second".to_string(),
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
            "CPU floor: a bare reader of the same kind of streams used {:.2} µs per chunk ({} chunks, {:.3} s CPU); the client {} chunks, {:.3} s CPU\n",
            self.floor_cpu_us_per_chunk,
            self.floor_chunks_measured,
            self.floor_cpu_s,
            self.chunks_measured,
            self.cpu_phase_cpu_s
        ));
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
            && self.cpu_ratio_to_floor > 0.0
            && self.cpu_ratio_to_floor <= CPU_RATIO_TO_FLOOR_MAX
            && self.chunks_per_sec >= CHUNKS_PER_SEC_MIN
            && self.streams_held >= STREAMS_HELD_MIN
            && self.ttft_samples_c8 > 0
            && self.ttft_err_mean_ms_c8 <= TTFT_ERR_MEAN_MS_C8_MAX
            && self.ttft_err_p99_ms_c8 <= TTFT_ERR_P99_MS_C8_MAX
            && self.ttft_samples_c1000 > 0
            && self.ttft_err_p99_ms_c1000 <= TTFT_ERR_P99_MS_C1000_MAX
    }
}
