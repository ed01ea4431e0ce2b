//! Benchmark reports written by other tools, mapped onto autodebug's metrics so runs made
//! elsewhere join the history: vLLM `vllm bench serve --save-result` JSON, SGLang
//! `python -m sglang.bench_serving --output-file` JSONL, AIPerf `profile_export_aiperf.json` and
//! guidellm `benchmarks.json`. One module per format.
//!
//! Each tool names and defines its figures its own way; the mapping keeps autodebug's meaning:
//!
//! | autodebug | vLLM / SGLang | AIPerf | guidellm |
//! |---|---|---|---|
//! | `ttft.*` | `*_ttft_ms` | `time_to_first_token` | `time_to_first_token_ms` |
//! | `tpot.*`: (e2e − TTFT) / (tokens − 1) per request | `*_tpot_ms` | `inter_token_latency` | `inter_token_latency_ms` |
//! | `itl.*`: gaps between streamed tokens | `*_itl_ms` | – | – |
//! | `e2e.*` | `*_e2el_ms` / `*_e2e_latency_ms` | `request_latency` | `request_latency` (s) |
//! | `output_throughput` | `output_throughput` | `output_token_throughput` | `output_tokens_per_second` |
//!
//! guidellm's `time_per_output_token_ms` includes the first token's wait, so it is kept apart as
//! `tpot_incl_ttft.*`. Every ingested iteration carries an `ingest.source` finding naming the
//! file, the tool and the original field behind each metric, and one `ingest.definition` finding
//! per definition that differs from autodebug's.
//!
//! ```
//! use autodebug_report::ingest::{self, Format};
//!
//! let text = r#"{"backend": "vllm", "model_id": "Qwen/Qwen2.5-0.5B", "completed": 10, "failed": 0,
//!               "output_throughput": 812.5, "mean_ttft_ms": 21.0, "p99_ttft_ms": 48.0}"#;
//! assert_eq!(ingest::detect(text), Some(Format::Vllm));
//! let runs = ingest::parse(text, Format::Vllm).unwrap();
//! assert_eq!(runs[0].metrics["ttft.p99"], 48.0);
//! assert_eq!(runs[0].metrics["error_rate"], 0.0);
//! ```

pub mod aiperf;
pub mod guidellm;
pub mod sglang;
pub mod vllm;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::Value;

use autodebug_core::store::Store;
use autodebug_core::{
    Analysis, Bottleneck, EngineKind, Error, Finding, Iteration, IterationStatus, Objective, RequestRecord, Result,
    ServiceSpec, Severity, Signal, SignalKind, TimeWindow,
};

/// The session ingested runs join unless told otherwise.
pub const DEFAULT_SESSION: &str = "ingested";
/// The bench plan name under which ingested per-request records are stored.
pub const PLAN_NAME: &str = "ingested";
/// Finding rule that records where an ingested iteration came from.
pub const SOURCE_RULE: &str = "ingest.source";
/// Finding rule for a metric definition that differs from autodebug's.
pub const DEFINITION_RULE: &str = "ingest.definition";

/// A peer tool's report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Vllm,
    Sglang,
    Aiperf,
    Guidellm,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Vllm, Format::Sglang, Format::Aiperf, Format::Guidellm];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Vllm => "vllm",
            Format::Sglang => "sglang",
            Format::Aiperf => "aiperf",
            Format::Guidellm => "guidellm",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// The tool and output this format comes from, for notes.
    pub fn tool(self) -> &'static str {
        match self {
            Format::Vllm => "vLLM `vllm bench serve --save-result`",
            Format::Sglang => "SGLang `python -m sglang.bench_serving --output-file` (JSONL)",
            Format::Aiperf => "AIPerf `profile_export_aiperf.json`",
            Format::Guidellm => "guidellm `benchmarks.json`",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One benchmark run read from a peer report (a report may hold several: a guidellm sweep, an
/// appended vLLM or SGLang results file).
#[derive(Debug, Clone, PartialEq)]
pub struct IngestedRun {
    /// What distinguishes this run within the file (`concurrent streams=8`, `rate 4 req/s`).
    pub label: String,
    pub model: Option<String>,
    /// The serving engine, when the report says which.
    pub engine: Option<EngineKind>,
    /// Metrics under autodebug's names; latencies in ms.
    pub metrics: BTreeMap<String, f64>,
    /// `(autodebug metric, original field)` for every metric.
    pub fields: Vec<(String, String)>,
    /// Where the tool's definition differs from autodebug's, in words.
    pub definitions: Vec<String>,
    /// Facts about the run (load, dataset, warnings about missing figures).
    pub notes: Vec<String>,
    /// Per-request records when the report has them (vLLM `--save-detailed`).
    pub records: Vec<RequestRecord>,
    pub started_ns: Option<i128>,
    pub duration_s: Option<f64>,
}

impl IngestedRun {
    fn new(label: impl Into<String>) -> Self {
        IngestedRun {
            label: label.into(),
            model: None,
            engine: None,
            metrics: BTreeMap::new(),
            fields: Vec::new(),
            definitions: Vec::new(),
            notes: Vec::new(),
            records: Vec::new(),
            started_ns: None,
            duration_s: None,
        }
    }

    /// Records a metric and the field it came from; non-finite values are skipped.
    fn put(&mut self, metric: impl Into<String>, value: f64, field: impl Into<String>) {
        if value.is_finite() {
            let metric = metric.into();
            self.fields.retain(|(m, _)| *m != metric);
            self.fields.push((metric.clone(), field.into()));
            self.metrics.insert(metric, value);
        }
    }

    /// Sets `requests`, `errors` and `error_rate` from counts.
    fn put_counts(&mut self, succeeded: f64, failed: f64, field: &str) {
        let total = succeeded + failed;
        self.put("requests", total, field);
        self.put("errors", failed, field);
        self.put("error_rate", if total > 0.0 { failed / total } else { 1.0 }, field);
    }
}

/// Guesses the format from the content.
pub fn detect(text: &str) -> Option<Format> {
    let first = first_json_value(text)?;
    let object = first.as_object()?;
    if object.get("benchmarks").is_some_and(Value::is_array) {
        return Some(Format::Guidellm);
    }
    let metric_block = |v: &Value| v.get("unit").is_some() && (v.get("avg").is_some() || v.get("p50").is_some());
    let records = object.get("records").filter(|r| r.is_object()).unwrap_or(&first);
    if ["time_to_first_token", "request_latency", "request_throughput", "output_token_throughput"]
        .iter()
        .any(|tag| records.get(*tag).is_some_and(metric_block))
    {
        return Some(Format::Aiperf);
    }
    let has = |key: &str| object.contains_key(key);
    if has("mean_e2e_latency_ms") || has("total_output_tokens_retokenized") || has("random_input_len") {
        return Some(Format::Sglang);
    }
    if has("mean_ttft_ms") || has("mean_e2el_ms") || has("model_id") || has("endpoint_type") {
        return Some(Format::Vllm);
    }
    None
}

/// Parses a report in `format` into runs. The error says what is wrong with the content; the
/// caller adds the file name.
pub fn parse(text: &str, format: Format) -> std::result::Result<Vec<IngestedRun>, String> {
    let runs = match format {
        Format::Vllm => vllm::parse(text)?,
        Format::Sglang => sglang::parse(text)?,
        Format::Aiperf => aiperf::parse(text)?,
        Format::Guidellm => guidellm::parse(text)?,
    };
    if runs.is_empty() {
        return Err(format!("no benchmark results found in this {} file", format.tool()));
    }
    Ok(runs)
}

/// Reads and parses a report file; `format` `None` detects it.
pub fn read_file(path: &Path, format: Option<Format>) -> Result<(Format, Vec<IngestedRun>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let format = match format.or_else(|| detect(&text)) {
        Some(f) => f,
        None => {
            return Err(Error::config(
                path.display().to_string(),
                "not a report this version can recognise (vLLM --save-result JSON, SGLang bench_serving JSONL, \
                 AIPerf profile_export_aiperf.json, guidellm benchmarks.json); pass --format to name it",
            ));
        }
    };
    let runs = parse(&text, format).map_err(|message| {
        Error::config(path.display().to_string(), format!("reading it as {}: {message}", format.tool()))
    })?;
    Ok((format, runs))
}

/// Options of [`ingest`].
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The session to add iterations to; created when missing.
    pub session: String,
    /// `None` detects the format from the content.
    pub format: Option<Format>,
    /// Overrides the engine the report names (or the `vllm` assumed when it names none).
    pub engine: Option<EngineKind>,
    /// The objective of a newly created session (default: maximize `output_throughput`, the
    /// figure every supported tool reports).
    pub objective: Option<Objective>,
}

impl IngestOptions {
    pub fn new(session: impl Into<String>) -> Self {
        IngestOptions { session: session.into(), format: None, engine: None, objective: None }
    }
}

/// What [`ingest`] added.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IngestSummary {
    pub session: String,
    pub session_created: bool,
    pub format: Format,
    pub source: String,
    /// Iteration numbers added, one per run in the file.
    pub iterations: Vec<u32>,
    pub labels: Vec<String>,
}

/// Reads a peer report and appends one `ok` iteration per run to a session of the store.
pub fn ingest(store: &Store, path: &Path, options: &IngestOptions) -> Result<IngestSummary> {
    let (format, runs) = read_file(path, options.format)?;
    let source = path.display().to_string();
    let now = TimeWindow::now_ns();
    let (session, session_created) = match store.session_by_name(&options.session)? {
        Some(session) => (session, false),
        None => {
            let objective = options.objective.clone().unwrap_or_else(|| Objective::maximize("output_throughput"));
            let engine = options.engine.or(runs[0].engine).map(|e| e.to_string()).unwrap_or_else(|| "unknown".into());
            let config = serde_json::json!({"source": source, "format": format.as_str(), "tool": format.tool()});
            (store.create_session(&options.session, "ingested", &engine, &objective, &config, now)?, true)
        }
    };
    let mut next = store.history(session.id)?.iterations.iter().map(|i| i.number).max().unwrap_or(0);
    next = next.max(store.unfinished(session.id)?.into_iter().max().unwrap_or(0));
    let mut numbers = Vec::new();
    let mut labels = Vec::new();
    for run in runs {
        next += 1;
        let iteration = to_iteration(&run, next, format, &source, options.engine, now);
        store.begin_iteration(session.id, next, &iteration.spec, None, iteration.started_ns)?;
        if !run.records.is_empty() {
            store.save_bench_records(session.id, next, PLAN_NAME, &run.records)?;
        }
        store.finish_iteration(session.id, &iteration)?;
        tracing::info!(session = %session.name, iteration = next, label = %run.label, "ingested a run from {source}");
        numbers.push(next);
        labels.push(run.label);
    }
    Ok(IngestSummary { session: session.name, session_created, format, source, iterations: numbers, labels })
}

/// The iteration an ingested run becomes: status `ok`, its metrics, and findings that name the
/// source file, the tool, the original field of each metric and the definitions that differ.
pub fn to_iteration(
    run: &IngestedRun,
    number: u32,
    format: Format,
    source: &str,
    engine: Option<EngineKind>,
    now_ns: i128,
) -> Iteration {
    let mut notes = run.notes.clone();
    let engine = match engine.or(run.engine) {
        Some(e) => e,
        None => {
            notes.push("the report does not name the serving engine; vllm assumed (pass --engine to set it)".into());
            EngineKind::Vllm
        }
    };
    let model = run.model.clone().unwrap_or_else(|| {
        notes.push("the report does not name the model".into());
        "unknown".into()
    });
    let spec = ServiceSpec::new(run.label.clone(), engine, model);
    let tool_source = format!("ingest:{}", format.as_str());
    let evidence: Vec<Signal> = run
        .fields
        .iter()
        .map(|(metric, field)| {
            let mut signal = Signal::number(
                &tool_source,
                SignalKind::Bench,
                field,
                run.metrics.get(metric).copied().unwrap_or(f64::NAN),
                "",
            );
            signal.labels.insert("autodebug_metric".into(), metric.clone());
            signal
        })
        .collect();
    let mut summary = format!("ingested from `{source}` ({}), run `{}`", format.tool(), run.label);
    if !notes.is_empty() {
        summary.push_str(&format!("; {}", notes.join("; ")));
    }
    let mut findings = vec![Finding {
        rule: SOURCE_RULE.into(),
        bottleneck: Bottleneck::Client,
        severity: Severity::Info,
        summary,
        evidence,
    }];
    findings.extend(run.definitions.iter().map(|d| Finding {
        rule: DEFINITION_RULE.into(),
        bottleneck: Bottleneck::Client,
        severity: Severity::Info,
        summary: d.clone(),
        evidence: Vec::new(),
    }));
    let started_ns = run.started_ns.unwrap_or(now_ns);
    let finished_ns =
        started_ns + run.duration_s.filter(|d| d.is_finite() && *d > 0.0).map_or(0, |d| (d * 1e9) as i128);
    Iteration {
        number,
        spec,
        artifact: None,
        status: IterationStatus::Ok,
        metrics: run.metrics.clone(),
        bench: BTreeMap::new(),
        analysis: Analysis { metrics: run.metrics.clone(), findings, cited: Vec::new() },
        plan: None,
        error: None,
        started_ns,
        finished_ns,
        timings: BTreeMap::new(),
        round: None,
    }
}

/// The `ingest.source` finding of an iteration, when it was ingested.
pub fn source_finding(iteration: &Iteration) -> Option<&Finding> {
    iteration.analysis.findings.iter().find(|f| f.rule == SOURCE_RULE)
}

// ---- helpers shared by the format modules ----

/// The first JSON value of a file holding one JSON document or JSON lines.
fn first_json_value(text: &str) -> Option<Value> {
    json_values(text).ok()?.into_iter().next()
}

/// Every JSON value in a file: one document, or one per non-empty line (JSONL, appended results).
fn json_values(text: &str) -> std::result::Result<Vec<Value>, String> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Ok(vec![value]);
    }
    let mut values = Vec::new();
    for (index, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value = serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", index + 1))?;
        values.push(value);
    }
    if values.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(values)
}

/// A number at a JSON pointer-like path of object keys.
fn number_at(value: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(value, |v, key| v.get(*key))?.as_f64()
}

fn text_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(*key))?.as_str()
}

/// Maps a statistic name used by the peers onto autodebug's: `avg`/`mean` → `mean`,
/// `median`/`p50` → `p50`, `std`/`std_dev` → `std`, `p99.9` → `p999`, `pNN` kept.
fn statistic(name: &str) -> Option<String> {
    Some(match name {
        "mean" | "avg" => "mean".into(),
        "median" | "p50" => "p50".into(),
        "std" | "std_dev" => "std".into(),
        "min" => "min".into(),
        "max" => "max".into(),
        "p99.9" | "p999" => "p999".into(),
        p if p.starts_with('p') && p.len() > 1 && p[1..].chars().all(|c| c.is_ascii_digit()) => {
            let digits = p[1..].trim_start_matches('0');
            if digits.is_empty() || p[1..].starts_with('0') {
                // guidellm's p001 / p01 / p05 are 0.1 / 1 / 5th percentiles: not autodebug names.
                return None;
            }
            format!("p{digits}")
        }
        _ => return None,
    })
}

fn engine_from_backend(backend: &str) -> Option<EngineKind> {
    let backend = backend.to_ascii_lowercase();
    if backend.starts_with("sglang") {
        Some(EngineKind::Sglang)
    } else if backend.starts_with("vllm") {
        Some(EngineKind::Vllm)
    } else {
        None
    }
}

/// `*_<metric>_ms` keys written by vLLM and SGLang (`mean_ttft_ms`, `p99_e2el_ms`, `p99.9_itl_ms`).
fn put_serving_stats(run: &mut IngestedRun, object: &serde_json::Map<String, Value>, metric_names: &[(&str, &str)]) {
    for (key, value) in object {
        let Some(stripped) = key.strip_suffix("_ms") else {
            continue;
        };
        let Some(v) = value.as_f64() else { continue };
        for (suffix, metric) in metric_names {
            let Some(stat) = stripped.strip_suffix(suffix).and_then(|s| s.strip_suffix('_')) else {
                continue;
            };
            if let Some(stat) = statistic(stat) {
                run.put(format!("{metric}.{stat}"), v, key.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_map_onto_autodebug_names() {
        assert_eq!(statistic("avg").as_deref(), Some("mean"));
        assert_eq!(statistic("median").as_deref(), Some("p50"));
        assert_eq!(statistic("p99.9").as_deref(), Some("p999"));
        assert_eq!(statistic("p999").as_deref(), Some("p999"));
        assert_eq!(statistic("p95").as_deref(), Some("p95"));
        assert_eq!(statistic("p01"), None);
        assert_eq!(statistic("p001"), None);
        assert_eq!(statistic("variance"), None);
    }

    #[test]
    fn unknown_content_is_not_detected() {
        assert_eq!(detect("{\"hello\": 1}"), None);
        assert_eq!(detect("not json"), None);
        assert!(parse("{\"hello\": 1}", Format::Guidellm).is_err());
    }
}
