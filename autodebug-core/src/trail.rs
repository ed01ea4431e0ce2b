//! The session trail: the files people read, in the original autodebug layout.
//!
//! Each iteration leaves `sessions/debug-<ISO>.md` (what was measured, the signals cited, the
//! findings, the planned changes and the config diff) and, when the deployer rendered one,
//! `sessions/<target>-<ISO>.<ext>`, the complete deployable file (`dstack-<ISO>.yml`, ...).
//! `<ISO>` is the iteration's start time in whole UTC seconds; when two iterations start in the
//! same second the later pair gets `-2`, `-3`, ... so neither is overwritten.
//!
//! The [`store`](crate::store) remains the source of truth; the trail is for people.
//!
//! ```
//! use autodebug_core::trail::render_debug_log;
//! use autodebug_core::{Analysis, EngineKind, Iteration, IterationStatus, Objective, ServiceSpec, Signal, SignalKind};
//!
//! let mut analysis = Analysis::default();
//! analysis.cite(
//!     Signal::number("graphsignal", SignalKind::Profile, "sglang.scheduler.Scheduler.run_batch", 435.0, "ms")
//!         .with_count(405.0),
//! );
//! let iteration = Iteration {
//!     number: 1,
//!     spec: ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat"),
//!     artifact: None,
//!     status: IterationStatus::Ok,
//!     metrics: [("ttft.mean".to_string(), 164.0)].into(),
//!     bench: Default::default(),
//!     analysis,
//!     plan: None,
//!     error: None,
//!     started_ns: 1_774_191_600_000_000_000,
//!     finished_ns: 1_774_191_660_000_000_000,
//!     timings: Default::default(),
//!     round: None,
//! };
//! let log = render_debug_log(&iteration, None, &Objective::minimize("ttft.mean"), "chat: 512/128 tokens");
//! assert!(log.starts_with("# debug-2026-03-22T15:00:00Z\n"));
//! assert!(log.contains("**Metrics**: TTFT=164.0ms"));
//! assert!(log.contains("- Profile `sglang.scheduler.Scheduler.run_batch`: 405 calls / 435 ms"));
//! assert!(log.contains("**Config changes from previous**:\n- none (baseline)"));
//! ```

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use crate::secret::{MASK, is_secret_name};
use crate::{
    BenchSummary, Error, Iteration, IterationStatus, Objective, Result, ServiceSpec, Severity, Signal, TimeWindow,
    format_number,
};

/// How many `-N` suffixes to try before deciding the directory is not usable.
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// Writes the human-readable trail of a session into one directory (usually `sessions/`).
#[derive(Debug, Clone)]
pub struct Trail {
    dir: PathBuf,
    session: Option<String>,
}

/// The files one iteration left in the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailFiles {
    pub debug_log: PathBuf,
    /// The deployable file, when the iteration had an artifact.
    pub config: Option<PathBuf>,
}

impl Trail {
    /// A trail in `dir`, created (with its parents) when missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Trail> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Trail { dir, session: None })
    }

    /// Names the session in each log's header ("Iteration 2 of session `demo`").
    pub fn with_session(mut self, name: impl Into<String>) -> Trail {
        self.session = Some(name.into());
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `debug-<ISO>.md` and, when the iteration has an artifact, `<artifact.target>-<ISO>.<ext>`
    /// holding exactly the artifact's content. Existing files are never overwritten: on a name
    /// clash both files get the same `-2`, `-3`, ... suffix.
    pub fn write_iteration(
        &self,
        iteration: &Iteration,
        previous: Option<&Iteration>,
        objective: &Objective,
        context: &str,
    ) -> Result<TrailFiles> {
        let iso = TimeWindow::format_iso(iteration.started_ns);
        let (debug_log, mut debug_file, config) = self.claim_names(&iso, iteration)?;
        let title = debug_log.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let text = render(&title, self.session.as_deref(), iteration, previous, objective, context);
        debug_file.write_all(text.as_bytes()).map_err(|e| Error::io(&debug_log, e))?;
        let config = match (config, &iteration.artifact) {
            (Some((path, mut file)), Some(artifact)) => {
                let content = crate::secret::redact(&artifact.content);
                file.write_all(content.as_bytes()).map_err(|e| Error::io(&path, e))?;
                Some(path)
            }
            _ => None,
        };
        tracing::debug!(debug_log = %debug_log.display(), config = ?config, iteration = iteration.number, "session trail written");
        Ok(TrailFiles { debug_log, config })
    }

    /// Creates the first free pair of file names, so two writers never share a file.
    #[allow(clippy::type_complexity)]
    fn claim_names(&self, iso: &str, iteration: &Iteration) -> Result<(PathBuf, File, Option<(PathBuf, File)>)> {
        for attempt in 1..=MAX_NAME_ATTEMPTS {
            let suffix = if attempt == 1 { String::new() } else { format!("-{attempt}") };
            let debug_log = self.dir.join(format!("debug-{iso}{suffix}.md"));
            let Some(debug_file) = create_new(&debug_log)? else { continue };
            let Some(artifact) = &iteration.artifact else { return Ok((debug_log, debug_file, None)) };
            let extension = artifact.extension.trim_start_matches('.');
            let name = if extension.is_empty() {
                format!("{}-{iso}{suffix}", artifact.target)
            } else {
                format!("{}-{iso}{suffix}.{extension}", artifact.target)
            };
            let config = self.dir.join(name);
            match create_new(&config) {
                Ok(Some(file)) => return Ok((debug_log, debug_file, Some((config, file)))),
                Ok(None) => {
                    // Keep the pair's suffixes equal: give the log name back and try the next one.
                    drop(debug_file);
                    std::fs::remove_file(&debug_log).map_err(|e| Error::io(&debug_log, e))?;
                }
                Err(e) => {
                    drop(debug_file);
                    let _ = std::fs::remove_file(&debug_log);
                    return Err(e);
                }
            }
        }
        Err(Error::io(
            self.dir.join(format!("debug-{iso}.md")),
            std::io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{MAX_NAME_ATTEMPTS} files for this second already exist; clean up the sessions directory"),
            ),
        ))
    }
}

/// Creates `path` only if it does not exist yet; `None` when it does.
fn create_new(path: &Path) -> Result<Option<File>> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The debug log of one iteration, in the original autodebug's format.
pub fn render_debug_log(
    iteration: &Iteration,
    previous: Option<&Iteration>,
    objective: &Objective,
    context: &str,
) -> String {
    render_debug_log_for_session(None, iteration, previous, objective, context)
}

/// Like [`render_debug_log`], naming the session in the header when given.
pub fn render_debug_log_for_session(
    session: Option<&str>,
    iteration: &Iteration,
    previous: Option<&Iteration>,
    objective: &Objective,
    context: &str,
) -> String {
    let title = format!("debug-{}", TimeWindow::format_iso(iteration.started_ns));
    render(&title, session, iteration, previous, objective, context)
}

fn render(
    title: &str,
    session: Option<&str>,
    iteration: &Iteration,
    previous: Option<&Iteration>,
    objective: &Objective,
    context: &str,
) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; the results of writeln! are ignored for that reason.
    let _ = writeln!(out, "# {title}\n");
    let of_session = session.map(|s| format!(" of session `{s}`")).unwrap_or_default();
    let _ = writeln!(
        out,
        "Iteration {}{of_session} · status {} · objective: {}",
        iteration.number,
        iteration.status.as_str(),
        objective.describe()
    );
    if !context.trim().is_empty() {
        let _ = writeln!(out, "{}", context.trim_end());
    }
    out.push('\n');

    match iteration.status {
        IterationStatus::Ok => write_metrics(&mut out, iteration, objective),
        IterationStatus::Running => {
            let _ = writeln!(out, "**Metrics**: none yet (iteration still running)\n");
        }
        status => write_failure(&mut out, status, iteration, previous),
    }
    write_analysis(&mut out, iteration);
    write_findings(&mut out, iteration);
    write_plan(&mut out, iteration);
    write_config_diff(&mut out, &iteration.spec, previous.map(|p| &p.spec));
    write_timings(&mut out, iteration);
    // The secrets of every spec shown are registered, so no section can print one (a log line
    // quoting the engine's arguments included).
    let specs = std::iter::once(&iteration.spec)
        .chain(previous.map(|p| &p.spec))
        .chain(iteration.plan.as_ref().map(|p| &p.next));
    specs.for_each(crate::secret::register_spec);
    crate::secret::redact(&out).into_owned()
}

fn write_failure(out: &mut String, status: IterationStatus, iteration: &Iteration, previous: Option<&Iteration>) {
    let what = match status {
        IterationStatus::DeployFailed => "Deploy failed",
        IterationStatus::BenchFailed => "Benchmark failed",
        IterationStatus::Interrupted => "Interrupted",
        _ => "Failed",
    };
    let error = iteration.error.as_deref().unwrap_or("no error message was recorded");
    let _ = writeln!(out, "**{what}**: {}", error.trim_end());
    let _ = match previous {
        Some(p) => writeln!(out, "Rolled back to iteration {}.", p.number),
        None => writeln!(out, "Nothing to roll back to: this was the first iteration."),
    };
    let _ = writeln!(out, "\n**Metrics**: none ({})\n", what.to_lowercase());
}

fn write_metrics(out: &mut String, iteration: &Iteration, objective: &Objective) {
    let primary = iteration.bench.values().next();
    let metric = |name: &str| -> Option<f64> {
        iteration
            .metrics
            .get(name)
            .copied()
            .or_else(|| primary.and_then(|s| s.metrics().get(name).copied()))
            .filter(|v| v.is_finite())
    };
    let ms = |name: &str| metric(name).map(|v| format!("{}ms", format_ms(v))).unwrap_or_else(|| "n/a".to_string());
    let throughput = metric("output_throughput").map(|v| format!("{v:.0} tok/s")).unwrap_or_else(|| "n/a".to_string());
    let errors = metric("errors").map(format_number).unwrap_or_else(|| "n/a".to_string());
    let _ = write!(
        out,
        "**Metrics**: TTFT={}, TBOT={}, TTLT={}, Throughput={throughput}, Errors={errors}",
        ms("ttft.mean"),
        ms("tpot.mean"),
        ms("e2e.mean")
    );
    let shown = ["ttft.mean", "tpot.mean", "e2e.mean", "output_throughput", "errors"];
    if !shown.contains(&objective.metric.as_str()) {
        let value = objective.value(&iteration.metrics).map(format_number).unwrap_or_else(|| "n/a".to_string());
        let _ = write!(out, "; {}={value}", objective.metric);
    }
    let violations = objective.violations(&iteration.metrics);
    if !violations.is_empty() {
        let broken: Vec<String> = violations.iter().map(|c| c.to_string()).collect();
        let _ = write!(out, " (infeasible: breaks {})", broken.join(", "));
    }
    out.push_str("\n\n");

    if !iteration.bench.is_empty() {
        out.push_str(
            "| plan | TTFT p50/p99 (ms) | TPOT mean (ms) | ITL p99 (ms) | e2e mean (ms) | out tok/s | errors |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|\n");
        for (name, summary) in &iteration.bench {
            let _ = writeln!(out, "{}", table_row(name, summary));
        }
        out.push('\n');
    }
}

fn table_row(name: &str, s: &BenchSummary) -> String {
    let dist = |count: u64, value: f64| if count == 0 { "n/a".to_string() } else { format_ms(value) };
    format!(
        "| {name} | {} / {} | {} | {} | {} | {:.0} | {}/{} |",
        dist(s.ttft_ms.count, s.ttft_ms.p50),
        dist(s.ttft_ms.count, s.ttft_ms.p99),
        dist(s.tpot_ms.count, s.tpot_ms.mean),
        dist(s.itl_ms.count, s.itl_ms.p99),
        dist(s.e2e_ms.count, s.e2e_ms.mean),
        s.output_throughput,
        s.failed,
        s.requests
    )
}

/// Milliseconds the way the original trail prints them: `164.0`, `1.51`.
fn format_ms(v: f64) -> String {
    if v.abs() >= 10.0 { format!("{v:.1}") } else { format!("{v:.2}") }
}

fn write_analysis(out: &mut String, iteration: &Iteration) {
    out.push_str("**Analysis** (signals cited from this iteration's telemetry):\n");
    if iteration.analysis.cited.is_empty() {
        out.push_str("- none cited\n");
    }
    for signal in &iteration.analysis.cited {
        let _ = writeln!(out, "- {}", signal.citation());
    }
    out.push('\n');
}

fn write_findings(out: &mut String, iteration: &Iteration) {
    out.push_str("**Findings**:\n");
    if iteration.analysis.findings.is_empty() {
        out.push_str("- none\n");
    }
    for finding in &iteration.analysis.findings {
        let severity = match finding.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        };
        let evidence = if finding.evidence.is_empty() {
            "no evidence cited".to_string()
        } else {
            format!("evidence: {}", signal_names(&finding.evidence))
        };
        let _ = writeln!(
            out,
            "- [{} · {severity}] {} (rule `{}`; {evidence})",
            finding.bottleneck,
            finding.summary.trim_end(),
            finding.rule
        );
    }
    out.push('\n');
}

fn write_plan(out: &mut String, iteration: &Iteration) {
    let Some(plan) = &iteration.plan else {
        out.push_str("**Planned changes**: none: no plan was made for this iteration\n\n");
        return;
    };
    if plan.changes.is_empty() {
        let why = if !plan.notes.is_empty() {
            plan.notes.join("; ")
        } else if plan.exhausted {
            format!("planner `{}` has nothing left to try", plan.planner)
        } else {
            format!("planner `{}` proposed no change", plan.planner)
        };
        let _ = writeln!(out, "**Planned changes**: none: {why}\n");
        return;
    }
    let _ = writeln!(out, "**Planned changes** (planner `{}`):", plan.planner);
    for change in &plan.changes {
        let cites = if change.evidence.is_empty() {
            String::new()
        } else {
            format!("; cites {}", signal_names(&change.evidence))
        };
        let _ = writeln!(
            out,
            "- `{}`: {} → {} — {} (rule `{}`{cites})",
            change.knob,
            change.from.as_deref().unwrap_or("(default)"),
            change.to.as_deref().unwrap_or("(removed)"),
            change.reason.trim_end(),
            change.rule
        );
    }
    for note in &plan.notes {
        let _ = writeln!(out, "- note: {note}");
    }
    if plan.exhausted {
        out.push_str("- note: the planner has nothing left to try after this\n");
    }
    out.push('\n');
}

fn signal_names(signals: &[Signal]) -> String {
    signals.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ")
}

/// One `knob: before → after` line per difference between two specs.
pub fn config_changes(current: &ServiceSpec, previous: &ServiceSpec) -> Vec<String> {
    let mut lines = Vec::new();
    let mut diff = |knob: &str, before: Option<&str>, after: Option<&str>| {
        if before != after {
            lines.push(format!("`{knob}`: {} → {}", before.unwrap_or("(unset)"), after.unwrap_or("(unset)")));
        }
    };
    diff("engine", Some(previous.engine.as_str()), Some(current.engine.as_str()));
    diff("model", Some(&previous.model), Some(&current.model));
    diff("image", previous.image.as_deref(), current.image.as_deref());
    // Compared on real values, shown masked: a secret flag's value (`--api-key`) never appears.
    fn shown<'a>(name: &str, value: Option<&'a str>) -> Option<&'a str> {
        match value {
            Some(_) if is_secret_name(name) => Some(MASK),
            other => other,
        }
    }
    for (name, value) in previous.flags.iter() {
        let (before, after) = (flag_text(Some(value)), flag_text(current.flags.get(name)));
        match (shown(name, before), shown(name, after)) {
            (Some(MASK), Some(MASK)) if before != after => diff(name, Some(MASK), Some("*** (changed)")),
            (b, a) if before != after => diff(name, b, a),
            _ => {}
        }
    }
    for (name, value) in current.flags.iter().filter(|(n, _)| !previous.flags.contains(n)) {
        diff(name, None, shown(name, flag_text(Some(value))));
    }
    let (before, after) = (&previous.resources, &current.resources);
    diff("resources.gpu", before.gpu.as_deref(), after.gpu.as_deref());
    diff("resources.cpu", before.cpu.as_deref(), after.cpu.as_deref());
    diff("resources.memory", before.memory.as_deref(), after.memory.as_deref());
    let mut keys: Vec<&str> = Vec::new();
    for (key, _) in previous.env.iter().chain(current.env.iter()) {
        if !keys.contains(&key.as_str()) {
            keys.push(key);
        }
    }
    for key in keys {
        let env_value = |spec: &ServiceSpec| spec.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let (before, after) = (env_value(previous), env_value(current));
        if before == after {
            continue;
        }
        // Values of credential-like variables stay out of the trail.
        if is_secret_name(key) {
            let shown = |v: &Option<String>| v.as_ref().map(|_| "***");
            match (shown(&before), shown(&after)) {
                (Some(_), Some(_)) => diff(&format!("env.{key}"), Some("***"), Some("*** (changed)")),
                (b, a) => diff(&format!("env.{key}"), b, a),
            }
        } else {
            diff(&format!("env.{key}"), before.as_deref(), after.as_deref());
        }
    }
    if previous.base != current.base {
        lines.push("`base`: the rest of the base file changed".to_string());
    }
    lines
}

/// A flag's value as the diff shows it: a switch has no value, so "on" says it is present.
fn flag_text(value: Option<Option<&str>>) -> Option<&str> {
    value.map(|v| v.unwrap_or("on"))
}

fn write_config_diff(out: &mut String, current: &ServiceSpec, previous: Option<&ServiceSpec>) {
    out.push_str("**Config changes from previous**:\n");
    match previous {
        None => out.push_str("- none (baseline)\n"),
        Some(previous) => {
            let lines = config_changes(current, previous);
            if lines.is_empty() {
                out.push_str("- none (same configuration)\n");
            }
            for line in lines {
                let _ = writeln!(out, "- {line}");
            }
        }
    }
}

fn write_timings(out: &mut String, iteration: &Iteration) {
    let total_s = (iteration.finished_ns - iteration.started_ns) as f64 / 1e9;
    if iteration.timings.is_empty() && total_s <= 0.0 {
        return;
    }
    let steps: Vec<String> = iteration.timings.iter().map(|(step, s)| format!("{step} {s:.1}s")).collect();
    let _ = write!(out, "\n**Timings**: total {total_s:.1}s");
    if !steps.is_empty() {
        let _ = write!(out, " ({})", steps.join(", "));
    }
    out.push('\n');
}
