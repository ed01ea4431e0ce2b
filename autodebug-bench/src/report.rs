//! Output: the versioned JSON report, per-request JSONL records and the console table.
//!
//! ## JSON report, `schema_version` 1
//!
//! ```text
//! {
//!   "schema_version": 1,
//!   "generated_at": "2025-01-01T00:00:00.000Z",     // UTC, when the file was written
//!   "client": "autodebug-bench/0.1.0",
//!   "points": [ {                                    // one per plan (one per sweep point)
//!     "name": "bench@c4",
//!     "context": { "endpoint", "model", "workload", "load", "trials", "cache_state", "client",
//!                  "concurrency": 4 | null, "rate_per_s": 2.5 | null, "arrival": "poisson" | null,
//!                  "requests", "warmup_requests", "duration_ms": null | N, "chat": true },
//!     "summary": BenchSummary,                       // all trials together (ms, per second)
//!     "trials": [BenchSummary, ...],                 // one per trial
//!     "trial_stats": { "<metric>": {n, mean, std, ci_low, ci_high, confidence, values} },
//!     "goodput": null | {slo: {ttft_ms?, tpot_ms?, e2e_ms?}, good_requests, good_fraction, goodput_rps},
//!     "window": {start_ns, end_ns},
//!     "warnings": ["..."]
//!   } ],
//!   "comparison": null | Comparison                  // A/B runs only
//! }
//! ```
//!
//! A field is only ever added within a schema version; renaming or removing one bumps it.
//!
//! ## JSONL records
//!
//! One line per measured request: `{"point": name, "trial": k (from 1), ...RequestRecord}` with
//! the record's fields (`index`, `scheduled_ns`, `queue_delay_ns`, `ttft_ns`, `ttst_ns`, `e2e_ns`,
//! `prompt_tokens`, `output_tokens`, `cached_tokens`, `chunks`, `chunk_gaps_ns`, `chunk_tokens`,
//! `error`, `error_message`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use autodebug_core::{Arrival, BenchContext, BenchSummary, Load, RequestRecord, TimeWindow};
use serde::{Deserialize, Serialize};

use crate::benchmarker::TrialRun;
use crate::error::BenchError;
use crate::request::CLIENT;
use crate::rigor::Comparison;
use crate::stats::{Goodput, MetricStats, Slo, goodput, trial_stats};

/// The version of the JSON report layout; see the module docs.
pub const SCHEMA_VERSION: u32 = 1;

/// The JSON report file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportFile {
    pub schema_version: u32,
    pub generated_at: String,
    pub client: String,
    pub points: Vec<PointReport>,
    #[serde(default)]
    pub comparison: Option<Comparison>,
}

/// Everything a figure needs to be read correctly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportContext {
    #[serde(flatten)]
    pub bench: BenchContext,
    pub concurrency: Option<usize>,
    pub rate_per_s: Option<f64>,
    pub arrival: Option<String>,
    pub requests: usize,
    pub warmup_requests: usize,
    pub duration_ms: Option<u64>,
    pub chat: bool,
}

/// One plan's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointReport {
    pub name: String,
    pub context: ReportContext,
    pub summary: BenchSummary,
    pub trials: Vec<BenchSummary>,
    pub trial_stats: BTreeMap<String, MetricStats>,
    pub goodput: Option<Goodput>,
    pub window: TimeWindow,
    pub warnings: Vec<String>,
}

impl PointReport {
    /// The report of one run; goodput when `slo` has a bound; trial stats at `confidence`, seeded.
    pub fn from_run(run: &TrialRun, slo: Option<Slo>, confidence: f64, seed: u64) -> Self {
        let report = &run.report;
        let plan = &report.plan;
        let (concurrency, rate_per_s, arrival) = match &plan.load {
            Load::Sequential => (Some(1), None, None),
            Load::Concurrent { concurrency } => (Some(*concurrency), None, None),
            Load::Rate { requests_per_s, arrival } => (None, Some(*requests_per_s), Some(arrival_name(arrival))),
        };
        let summaries: Vec<&BenchSummary> = run.trials.iter().map(|t| &t.summary).collect();
        PointReport {
            name: plan.name.clone(),
            context: ReportContext {
                bench: report.context.clone(),
                concurrency,
                rate_per_s,
                arrival,
                requests: plan.requests,
                warmup_requests: plan.warmup_requests,
                duration_ms: plan.duration_ms,
                chat: plan.chat,
            },
            summary: report.summary.clone(),
            trials: run.trials.iter().map(|t| t.summary.clone()).collect(),
            trial_stats: trial_stats(&summaries, confidence, seed),
            goodput: slo.filter(|s| !s.is_empty()).map(|s| goodput(&report.records, s, report.summary.duration_s)),
            window: report.window,
            warnings: report.warnings.clone(),
        }
    }
}

fn arrival_name(arrival: &Arrival) -> String {
    match arrival {
        Arrival::Constant => "constant".into(),
        Arrival::Poisson => "poisson".into(),
        Arrival::Gamma { burstiness } => format!("gamma(burstiness {burstiness})"),
    }
}

impl ReportFile {
    pub fn new(points: Vec<PointReport>, comparison: Option<Comparison>) -> Self {
        ReportFile {
            schema_version: SCHEMA_VERSION,
            generated_at: TimeWindow::format_iso(TimeWindow::now_ns()),
            client: CLIENT.to_string(),
            points,
            comparison,
        }
    }

    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let write_error = |source| BenchError::Write { path: path.display().to_string(), source };
        let text = serde_json::to_string_pretty(self).map_err(|e| write_error(std::io::Error::other(e)))?;
        std::fs::write(path, text + "\n").map_err(write_error)
    }

    /// The console table: one row per point, then warnings and the comparison.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        if let Some(first) = self.points.first() {
            let c = &first.context.bench;
            out.push_str(&format!(
                "{} · model {} · {} · {} · {} trial(s) · cache {} · {}\n",
                c.endpoint, c.model, c.workload, c.load, c.trials, c.cache_state, c.client
            ));
        }
        let header = format!(
            "{:<18} {:>6} {:>6} {:>10} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10}\n",
            "point",
            "ok",
            "fail",
            "ttft p50",
            "ttft p99",
            "tpot p50",
            "itl p99",
            "e2e p50",
            "req/s",
            "tok/s",
            "goodput/s"
        );
        out.push_str(&header);
        for point in &self.points {
            let s = &point.summary;
            let spread = point
                .trial_stats
                .get("output_throughput")
                .filter(|m| m.n > 1)
                .map(|m| format!(" ±{:.0}", m.std))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<18} {:>6} {:>6} {:>8.1}ms {:>8.1}ms {:>7.2}ms {:>7.2}ms {:>8.1}ms {:>9.2} {:>9}{} {:>10}\n",
                truncate(&point.name, 18),
                s.succeeded,
                s.failed,
                s.ttft_ms.p50,
                s.ttft_ms.p99,
                s.tpot_ms.p50,
                s.itl_ms.p99,
                s.e2e_ms.p50,
                s.request_throughput,
                format!("{:.0}", s.output_throughput),
                spread,
                point.goodput.map(|g| format!("{:.2}", g.goodput_rps)).unwrap_or_else(|| "-".into()),
            ));
        }
        for point in &self.points {
            for warning in &point.warnings {
                out.push_str(&format!("warning ({}): {warning}\n", point.name));
            }
        }
        if let Some(c) = &self.comparison {
            out.push_str(&format!(
                "A/B {}: B {} A (B − A = {:+.3}, {:.0}% CI [{:+.3}, {:+.3}], {} trials per arm, min effect {:.0}%)\n",
                c.metric,
                match c.verdict {
                    crate::stats::Verdict::Better => "is better than",
                    crate::stats::Verdict::Worse => "is worse than",
                    crate::stats::Verdict::WithinNoise => "is within noise of",
                },
                c.difference,
                c.confidence * 100.0,
                c.ci_low,
                c.ci_high,
                c.trials_per_arm,
                c.min_relative_effect * 100.0
            ));
        }
        out
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        text.chars().take(width - 1).collect::<String>() + "…"
    }
}

#[derive(Serialize)]
struct JsonlLine<'a> {
    point: &'a str,
    trial: usize,
    #[serde(flatten)]
    record: &'a RequestRecord,
}

/// Writes one JSON line per measured request of every run (see the module docs); returns the
/// number of lines.
pub fn write_jsonl(path: &Path, runs: &[&TrialRun]) -> Result<usize, BenchError> {
    let write_error = |source| BenchError::Write { path: path.display().to_string(), source };
    let file = std::fs::File::create(path).map_err(write_error)?;
    let mut out = std::io::BufWriter::new(file);
    let mut lines = 0;
    for run in runs {
        for (trial, report) in run.trials.iter().enumerate() {
            for record in &report.records {
                let line = JsonlLine { point: &run.report.plan.name, trial: trial + 1, record };
                serde_json::to_writer(&mut out, &line).map_err(|e| write_error(std::io::Error::other(e)))?;
                out.write_all(b"\n").map_err(write_error)?;
                lines += 1;
            }
        }
    }
    out.flush().map_err(write_error)?;
    Ok(lines)
}
