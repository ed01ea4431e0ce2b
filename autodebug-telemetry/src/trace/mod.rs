//! PyTorch-profiler (Kineto) traces: where the GPU time went.
//!
//! [`analyze_file`] reads a Chrome-trace JSON file (`.json` or `.json.gz`) written by
//! `torch.profiler` — the current Kineto format (`kernel`, `gpu_memcpy`, `cuda_runtime`, `ac2g`
//! flows, `baseTimeNanoseconds`), the 2021 legacy format (`Kernel`, `Runtime`, `Memcpy`, flows
//! `async`/`launch`, string tids such as `"stream 7"`) and ROCm traces — in one streaming pass
//! (no DOM: a serde visitor walks `traceEvents` one event at a time, borrowing strings from the
//! input), and returns a [`TraceAnalysis`]: kernels and kernel classes (memcpy and memset totalled
//! apart, as they are not kernel work), GPU busy/idle over all GPU events with idle
//! split into host-bound gaps and launch gaps, per-stream compute/communication overlap, CPU
//! operators mapped to the kernels they launched, and per-step figures.
//!
//! [`TraceSource`] is the [`TelemetrySource`](autodebug_core::TelemetrySource) over a directory
//! of such files; [`analysis_signals`] turns an analysis into `gpu.compute.*` signals.
//!
//! ```
//! use autodebug_telemetry::trace::{analyze_bytes, KernelCategory};
//! let trace = br#"{"schemaVersion": 1, "traceEvents": [
//!   {"ph": "X", "cat": "kernel", "name": "sm90_xmma_gemm_bf16", "pid": 0, "tid": 7, "ts": 0.0, "dur": 30.0},
//!   {"ph": "X", "cat": "kernel", "name": "flash_fwd_kernel", "pid": 0, "tid": 7, "ts": 35.0, "dur": 10.0},
//!   {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoH", "pid": 0, "tid": 7, "ts": 45.0, "dur": 5.0}]}"#;
//! let analysis = analyze_bytes(trace).unwrap();
//! assert_eq!((analysis.kernel_total_us, analysis.kernel_count), (40.0, 2));
//! assert_eq!((analysis.memcpy_us, analysis.memcpy_count), (5.0, 1));
//! assert_eq!(analysis.span_us, 50.0);
//! assert_eq!(analysis.gpu_busy_us, 45.0);
//! assert_eq!(analysis.gpu_idle_us, 5.0);
//! assert_eq!(analysis.kernels[0].category, KernelCategory::Gemm);
//! ```

mod analyze;
mod classify;
mod intervals;
mod parse;
mod signals;
mod source;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use analyze::{
    CategoryRow, DeviceRow, KernelRow, LAUNCH_GAP_NS, Links, OperatorRow, StepRow, StreamRow, TraceAnalysis,
};
pub use classify::KernelCategory;
pub use parse::DistributedInfo;
pub use signals::{SOURCE, analysis_signals};
pub use source::{TraceFileAnalysis, TraceSource};

/// Why a trace could not be analysed; names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file, or what it gunzips to, is larger than the limit; nothing past it was read.
    #[error(
        "{path}: the trace is larger than {limit} bytes (uncompressed) and was skipped; profile fewer steps, or raise the limit with TraceSource::max_trace_bytes"
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{origin}: not a PyTorch-profiler trace (Chrome trace JSON with `traceEvents`): {source}")]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
}

impl TraceError {
    /// Converts into the loop's error, naming the telemetry source.
    pub fn into_core(self) -> autodebug_core::Error {
        autodebug_core::Error::telemetry(SOURCE, self.to_string())
    }
}

/// Analyses uncompressed trace JSON held in memory.
pub fn analyze_bytes(bytes: &[u8]) -> Result<TraceAnalysis, TraceError> {
    analyze_named(bytes, "trace")
}

fn analyze_named(bytes: &[u8], origin: &str) -> Result<TraceAnalysis, TraceError> {
    let mut accumulator = analyze::Accumulator::default();
    let header = parse::for_each_event(bytes, |event| accumulator.push(event))
        .map_err(|source| TraceError::Json { origin: origin.to_string(), source })?;
    Ok(accumulator.finish(header))
}

/// The largest trace (after gunzip) read by default. The whole trace is held in memory while it
/// is analysed, and a profile of a few serving steps is tens to hundreds of MB: a bigger file, or
/// a small `.gz` that inflates past it, is refused instead of exhausting memory.
pub const MAX_TRACE_BYTES: u64 = 1024 * 1024 * 1024;

/// Reads a trace file, gunzipping it when it starts with the gzip magic (whatever its name); at
/// most [`MAX_TRACE_BYTES`].
pub fn read_trace_file(path: &Path) -> Result<Vec<u8>, TraceError> {
    read_trace_file_limited(path, MAX_TRACE_BYTES)
}

/// [`read_trace_file`] with another limit on the file's size and on what it gunzips to;
/// [`TraceError::TooLarge`] as soon as either passes it.
pub fn read_trace_file_limited(path: &Path, limit: u64) -> Result<Vec<u8>, TraceError> {
    let io = |source| TraceError::Io { path: path.to_path_buf(), source };
    let too_large = || TraceError::TooLarge { path: path.to_path_buf(), limit };
    let file = std::fs::File::open(path).map_err(io)?;
    let on_disk = file.metadata().map_err(io)?.len();
    if on_disk > limit {
        return Err(too_large());
    }
    // The size on disk is only a hint (a device or a file still being written has another): the
    // read itself stops one byte past the limit.
    let mut raw = Vec::with_capacity(on_disk as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut raw).map_err(io)?;
    if raw.len() as u64 > limit {
        return Err(too_large());
    }
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    // The gzip trailer holds the uncompressed size (mod 2^32); sizing the buffer from it keeps
    // peak memory at the file's size instead of a doubling Vec's up-to-2x. It is the file's
    // claim, so it is believed only up to the limit.
    let trailer = raw.len().checked_sub(4).and_then(|at| raw.get(at..)).and_then(|b| <[u8; 4]>::try_from(b).ok());
    let expected = trailer.map_or(0, |b| u64::from(u32::from_le_bytes(b))).min(limit);
    let mut out = Vec::with_capacity(expected.max(raw.len() as u64) as usize + 64);
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(io)?;
    if out.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(out)
}

/// Analyses a trace file (`.json` or `.json.gz`).
pub fn analyze_file(path: &Path) -> Result<TraceAnalysis, TraceError> {
    analyze_file_limited(path, MAX_TRACE_BYTES)
}

/// [`analyze_file`] with another limit on the trace's size (see [`read_trace_file_limited`]).
pub fn analyze_file_limited(path: &Path, limit: u64) -> Result<TraceAnalysis, TraceError> {
    let bytes = read_trace_file_limited(path, limit)?;
    analyze_named(&bytes, &path.display().to_string())
}
