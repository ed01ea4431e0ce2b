//! What a failed iteration records: its status, the engine's root cause, the settings it blames,
//! and the gaps an analysis went without.

use crate::failure::{RootCause, root_cause};
use crate::{
    BenchReport, Bottleneck, Error, ErrorKind, Finding, History, Iteration, IterationStatus, LogLine, Plan,
    SearchSpace, ServiceSpec, Severity, Signal, SignalKind,
};

use super::{ERROR_SIGNAL, ROOT_CAUSE_SIGNAL};

/// Prefix of the message of an iteration whose benchmark got no answer at all.
const NOTHING_MEASURED: &str = "no request succeeded";

/// `Some(message)` when a benchmark plan had requests and none succeeded: such a run measured
/// nothing, so it is a failure (of its most common error), never a result to plan from. The message
/// says what to do for the failures that have one cause a user can fix.
pub(super) fn nothing_measured(reports: &[BenchReport], endpoint: &crate::Endpoint) -> Option<String> {
    let report = reports.iter().find(|r| r.summary.requests > 0 && r.summary.succeeded == 0)?;
    let (class, count) = report.summary.errors.iter().max_by_key(|(_, n)| **n).map(|(c, n)| (c.as_str(), *n))?;
    let sample = report.records.iter().find_map(|r| r.error_message.as_deref()).unwrap_or("");
    let lower = sample.to_ascii_lowercase();
    let advice = if lower.contains("401") || lower.contains("403") || lower.contains("unauthorized") {
        if endpoint.token.is_some() {
            "the engine refused the key the benchmark sent: check that the service's key and the bench's token are the same"
        } else {
            "the engine requires a key: the benchmark sends the service's `--api-key`, or set the bench token's environment variable"
        }
    } else if lower.contains("404") {
        "the engine does not serve this model name: check `--served-model-name` and the model the benchmark asks for"
    } else if class == "connect" {
        "nothing answered at the endpoint: check the port and that the engine is still running"
    } else {
        "see the engine log below"
    };
    Some(format!(
        "{NOTHING_MEASURED} in `{}`: {count} of {} failed with {class}{}; {advice}",
        report.plan.name,
        report.summary.requests,
        if sample.is_empty() { String::new() } else { format!(" ({})", crate::secret::redact(sample)) },
    ))
}

/// Whether the last two iterations both measured nothing, for the same reason.
pub(super) fn same_failure_twice(history: &History) -> bool {
    let reason = |it: &Iteration| {
        (it.status == IterationStatus::BenchFailed)
            .then(|| it.error.as_deref().filter(|e| e.starts_with(NOTHING_MEASURED)))
            .flatten()
            .map(|e| e.split(';').next().unwrap_or(e).to_string())
    };
    let mut last = history.iterations.iter().rev();
    matches!((last.next().and_then(reason), last.next().and_then(reason)), (Some(a), Some(b)) if a == b)
}

/// Why an iteration stopped short: the status to record, the message, the logs that explain it,
/// and, when an error said so, what kind of failure it was (the trail and the planner read it
/// from the finding's `iteration.error` signal).
pub(super) struct Failed {
    pub(super) status: IterationStatus,
    pub(super) message: String,
    pub(super) logs: Vec<LogLine>,
    pub(super) kind: Option<ErrorKind>,
}

impl Failed {
    /// The message and the logs are the engine's words (a quoted log tail, a response body), so
    /// they are made [printable](crate::printable) here, once for every way an iteration fails.
    pub(super) fn new(status: IterationStatus, message: impl Into<String>, logs: Vec<LogLine>) -> Self {
        let message = crate::printable(&message.into()).into_owned();
        let logs = logs.into_iter().map(|l| LogLine::new(l.time_ns, l.text)).collect();
        Failed { status, message, logs, kind: None }
    }

    pub(super) fn of(error: &Error, status: IterationStatus, message: String, logs: Vec<LogLine>) -> Self {
        Failed { kind: Some(error.kind()), ..Failed::new(status, message, logs) }
    }
}

/// The finding a failed iteration records: the engine's own root-cause line (found in the log,
/// not the traceback's last lines) with its failure class and the flag it names, so the trail
/// says why and the planner can keep away from a setting that fails for a reason that holds.
pub(super) fn failure_finding(
    status: IterationStatus,
    message: &str,
    kind: Option<ErrorKind>,
    logs: &[LogLine],
    spec: &ServiceSpec,
) -> Finding {
    let mut error = Signal::text("session", SignalKind::LogLine, ERROR_SIGNAL, first_line(message));
    if let Some(kind) = kind {
        error = error.with_label("kind", kind.as_str());
    }
    let mut evidence = vec![error];
    let cause = root_cause(logs, message);
    let summary = match &cause {
        Some(cause) => {
            evidence.push(root_cause_signal(cause, spec));
            // The header of a validation error says little; its field lines say what was wrong.
            let detail: Vec<&str> = cause.detail.iter().map(|d| d.trim()).filter(|d| !d.is_empty()).take(2).collect();
            let detail = if detail.is_empty() { String::new() } else { format!(": {}", detail.join("; ")) };
            format!("{} ({}): {}{detail}", status.as_str(), cause.class.as_str(), cause.line.trim())
        }
        None => format!("{}: {}", status.as_str(), first_line(message)),
    };
    Finding {
        rule: format!("session.{}", status.as_str()),
        bottleneck: Bottleneck::Errors,
        severity: Severity::Critical,
        summary,
        evidence,
    }
}

/// What the analysis went without (a telemetry source that failed, a log that could not be read),
/// kept with the iteration so its trail and store say so instead of reading as a quiet service.
pub(super) fn telemetry_gaps(warnings: &[String]) -> Option<Finding> {
    if warnings.is_empty() {
        return None;
    }
    Some(Finding {
        rule: "session.telemetry_gaps".into(),
        bottleneck: Bottleneck::Telemetry,
        severity: Severity::Info,
        summary: format!("analyzed without {} source(s): {}", warnings.len(), warnings.join("; ")),
        evidence: warnings
            .iter()
            .map(|w| Signal::text("session", SignalKind::LogLine, "telemetry.gap", w.clone()))
            .collect(),
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn root_cause_signal(cause: &RootCause, spec: &ServiceSpec) -> Signal {
    let mut detail = cause.line.trim().to_string();
    for line in &cause.detail {
        detail.push_str(" | ");
        detail.push_str(line.trim());
    }
    if !cause.hint.is_empty() {
        detail.push_str(" -> ");
        detail.push_str(&cause.hint);
    }
    let mut signal = Signal::text("logs", SignalKind::LogLine, ROOT_CAUSE_SIGNAL, cause.line.trim())
        .with_detail(detail)
        .with_label("class", cause.class.as_str())
        .with_label("deterministic", if cause.class.is_deterministic() { "true" } else { "false" });
    if let Some(flag) = &cause.flag
        && let Some(value) = spec.flags.get(flag)
    {
        signal = signal.with_label("flag", flag).with_label("value", value.unwrap_or("true"));
    }
    signal
}

/// Drops from a plan every change back to a setting that already made a start fail for a reason
/// that still holds (an unknown flag, a value the engine refuses, hardware it lacks): such a
/// change fails again, whatever the planner thinks of it.
pub(super) fn without_blamed_settings(
    mut plan: Plan,
    current: &ServiceSpec,
    history: &History,
    space: &SearchSpace,
) -> Plan {
    for blamed in history.blamed_settings() {
        let proposed = plan.next.flags.get(&blamed.flag).map(|v| v.unwrap_or("true"));
        if proposed != Some(blamed.value.as_str()) {
            continue;
        }
        // Back to what the configuration planned from had, or, when that is the failed setting
        // itself (a baseline that never started), to the engine's default.
        match current.flags.get(&blamed.flag).filter(|v| v.unwrap_or("true") != blamed.value) {
            Some(value) => plan.next.flags.set(&blamed.flag, value),
            None => {
                plan.next.flags.remove(&blamed.flag);
            }
        }
        let knob = space.knob_for(&blamed.flag).map_or(blamed.flag.as_str(), |k| k.flag.as_str());
        plan.changes.retain(|c| c.knob != knob && c.knob != blamed.flag);
        plan.notes.push(format!(
            "not retried: `{} {}` made iteration {} fail ({}: {})",
            blamed.flag, blamed.value, blamed.iteration, blamed.class, blamed.line
        ));
    }
    plan
}
