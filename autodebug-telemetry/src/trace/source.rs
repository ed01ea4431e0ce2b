//! [`TraceSource`]: the profiler traces a service wrote into a directory during the window.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use autodebug_core::{Target, TelemetrySnapshot, TelemetrySource, TimeWindow, async_trait};

use super::analyze::TraceAnalysis;
use super::signals::{SOURCE, analysis_signals};

/// One trace file and what [`analyze_file`](super::analyze_file) found in it.
pub type TraceFileAnalysis = (PathBuf, TraceAnalysis);

/// Reads the PyTorch-profiler traces in a directory (`*.json`, `*.json.gz`, e.g. what
/// `torch.profiler.tensorboard_trace_handler` or SGLang's `/start_profile` write) whose time
/// range overlaps the window, and reports their kernel classes as `gpu.compute.*` signals.
///
/// A trace's range comes from `baseTimeNanoseconds` (or the epoch timestamps of 2021 traces);
/// when the trace does not say, it is taken to end at the file's modification time.
///
/// ```
/// use autodebug_telemetry::trace::TraceSource;
/// let source = TraceSource::new("/tmp/sglang-traces").top_kernels(5);
/// assert_eq!(autodebug_core::TelemetrySource::name(&source), "trace");
/// ```
#[derive(Debug, Clone)]
pub struct TraceSource {
    name: String,
    dir: PathBuf,
    top_kernels: usize,
    max_trace_bytes: u64,
}

impl TraceSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TraceSource {
            name: SOURCE.to_string(),
            dir: dir.into(),
            top_kernels: 10,
            max_trace_bytes: super::MAX_TRACE_BYTES,
        }
    }

    /// Reads the directory from `AUTODEBUG_TRACE_DIR`; an error says to set it.
    pub fn from_env() -> crate::Result<Self> {
        std::env::var_os("AUTODEBUG_TRACE_DIR").filter(|d| !d.is_empty()).map(TraceSource::new).ok_or_else(|| {
            crate::TelemetryError::Config {
                location: "AUTODEBUG_TRACE_DIR".to_string(),
                message: "not set; set it to the folder the PyTorch profiler writes its traces to".to_string(),
            }
        })
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many of the heaviest kernels become `gpu.kernel` signals (default 10).
    pub fn top_kernels(mut self, n: usize) -> Self {
        self.top_kernels = n;
        self
    }

    /// The largest trace read, after gunzip (default [`MAX_TRACE_BYTES`](super::MAX_TRACE_BYTES));
    /// a larger one is skipped with a note.
    pub fn max_trace_bytes(mut self, limit: u64) -> Self {
        self.max_trace_bytes = limit;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The analyses of the traces overlapping `window` by file, with a note for each file skipped.
    pub fn analyses_for(&self, window: TimeWindow) -> autodebug_core::Result<(Vec<TraceFileAnalysis>, Vec<String>)> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            autodebug_core::Error::telemetry(
                &self.name,
                format!("{}: {e}; point the trace source at the directory the profiler writes to", self.dir.display()),
            )
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                p.is_file() && (name.ends_with(".json") || name.ends_with(".json.gz"))
            })
            .collect();
        paths.sort();
        let mut found = Vec::new();
        let mut notes = Vec::new();
        for path in paths {
            let modified_ns = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i128);
            // A trace is written after its last event: one last touched before the window
            // opened cannot overlap it, and is not worth parsing.
            if modified_ns.is_some_and(|m| m < window.start_ns) {
                continue;
            }
            let analysis = match super::analyze_file_limited(&path, self.max_trace_bytes) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable trace");
                    notes.push(format!("skipped {e}"));
                    continue;
                }
            };
            let range = match (analysis.wall_start_ns, analysis.wall_end_ns, modified_ns) {
                (Some(start), Some(end), _) => Some((start as i128, end as i128)),
                (_, _, Some(end)) => Some((end - (analysis.trace_span_us * 1e3) as i128, end)),
                _ => None,
            };
            match range {
                Some((start, end)) if start <= window.end_ns && end >= window.start_ns => found.push((path, analysis)),
                Some(_) => {}
                None => notes.push(format!("{}: the trace's time range is unknown; skipped", path.display())),
            }
        }
        Ok((found, notes))
    }
}

#[async_trait]
impl TelemetrySource for TraceSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, _target: &Target<'_>, window: TimeWindow) -> autodebug_core::Result<TelemetrySnapshot> {
        let this = self.clone();
        // Parsing is CPU work; keep it off the async workers.
        let (found, notes) = tokio::task::spawn_blocking(move || this.analyses_for(window))
            .await
            .map_err(|e| autodebug_core::Error::telemetry(&self.name, format!("trace analysis task failed: {e}")))??;
        let mut snapshot = TelemetrySnapshot::new(&self.name, Some(window));
        snapshot.warnings = notes;
        if found.is_empty() {
            snapshot.warnings.push(format!("no profiler trace in {} overlaps the window", self.dir.display()));
            return Ok(snapshot);
        }
        let analyses: Vec<TraceAnalysis> = found.iter().map(|(_, a)| a.clone()).collect();
        let files: Vec<String> = found.iter().map(|(p, _)| p.display().to_string()).collect();
        snapshot.signals = analysis_signals(&analyses, self.top_kernels);
        for signal in &mut snapshot.signals {
            signal.source = self.name.clone();
        }
        snapshot.raw = Some(format!("traces: {}", files.join(", ")));
        Ok(snapshot)
    }
}
