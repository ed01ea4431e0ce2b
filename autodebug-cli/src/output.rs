//! What the binary prints: a progress line while the loop runs, then a table or one JSON object.

use std::io::IsTerminal;
use std::path::Path;

use autodebug_core::session::{SessionEvent, SessionOutcome};
use autodebug_core::{Iteration, format_number};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// A spinner on a terminal; plain status lines on stderr otherwise; nothing when quiet.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress { bar, lines: !quiet && !terminal }
    }

    pub fn observer(&self) -> impl Fn(&SessionEvent) + Send + Sync + 'static {
        let bar = self.bar.clone();
        let lines = self.lines;
        move |event: &SessionEvent| {
            let message = match event {
                SessionEvent::IterationStarted { number, spec } => {
                    format!(
                        "iteration {number}: {}",
                        if spec.flags.is_empty() {
                            "engine defaults".to_string()
                        } else {
                            spec.flags.to_command_line()
                        }
                    )
                }
                SessionEvent::Deploying { number } => format!("iteration {number}: deploying, waiting until healthy"),
                SessionEvent::Ready { number, base_url } => format!("iteration {number}: ready at {base_url}"),
                SessionEvent::Benchmarking { number, plan } => format!("iteration {number}: benchmark `{plan}`"),
                SessionEvent::Benchmarked { number, plan, summary } => format!(
                    "iteration {number}: `{plan}` TTFT p50 {:.1} ms, TPOT {:.3} ms, e2e {:.1} ms, {:.0} tok/s, {} errors",
                    summary.ttft_ms.p50,
                    summary.tpot_ms.mean,
                    summary.e2e_ms.mean,
                    summary.output_throughput,
                    summary.failed
                ),
                SessionEvent::IterationFinished { iteration } => format!(
                    "iteration {}: {}{}",
                    iteration.number,
                    iteration.status.as_str(),
                    iteration.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                ),
                SessionEvent::Stopped { reason } => format!("stopped: {reason}"),
            };
            if let Some(bar) = &bar {
                bar.set_message(message);
            } else if lines {
                eprintln!("{message}");
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn metric(iteration: &Iteration, name: &str) -> String {
    iteration.metrics.get(name).map(|v| format_number(*v)).unwrap_or_else(|| "-".into())
}

/// The iterations as an aligned text table, then the champion.
pub fn outcome_table(outcome: &SessionOutcome, dir: &Path) -> String {
    let objective = &outcome.session.objective;
    let champion = outcome.champion().map(|c| c.number);
    let mut rows = vec![vec![
        "iter".to_string(),
        "status".into(),
        objective.metric.clone(),
        "ttft.p50 ms".into(),
        "tpot.mean ms".into(),
        "out tok/s".into(),
        "planned next".into(),
    ]];
    for it in &outcome.history.iterations {
        let mark = if Some(it.number) == champion { "*" } else { "" };
        rows.push(vec![
            format!("{}{mark}", it.number),
            it.status.as_str().to_string(),
            metric(it, &objective.metric),
            metric(it, "ttft.p50"),
            metric(it, "tpot.mean"),
            metric(it, "output_throughput"),
            autodebug_report::export::planned_text(it),
        ]);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = format!("session `{}`: {}\n\n", outcome.session.name, objective.describe());
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push('\n');
    match (outcome.baseline(), outcome.champion(), outcome.improvement_pct()) {
        (Some(base), Some(best), Some(pct)) => out.push_str(&format!(
            "champion: iteration {} ({} = {} vs baseline {}: {:+.1}%)\n  flags: {}\n",
            best.number,
            objective.metric,
            metric(best, &objective.metric),
            metric(base, &objective.metric),
            pct,
            if best.spec.flags.is_empty() { "engine defaults".to_string() } else { best.spec.flags.to_command_line() }
        )),
        _ => out.push_str("champion: none (no iteration met the objective's constraints)\n"),
    }
    if let Some(confirmation) = &outcome.confirmation {
        out.push_str(&confirmation.describe());
        out.push('\n');
    }
    out.push_str(&format!("stopped: {}\ntrail and store: {}\n", outcome.stop_reason.as_str(), dir.display()));
    out
}

fn iteration_ref(outcome: &SessionOutcome, iteration: Option<&Iteration>) -> serde_json::Value {
    let objective = &outcome.session.objective;
    match iteration {
        Some(it) => json!({
            "iteration": it.number,
            "metric": objective.metric,
            "value": objective.value(&it.metrics),
            "flags": it.spec.flags,
        }),
        None => serde_json::Value::Null,
    }
}

/// One JSON object: `iterations`, `baseline`, `champion`, `improvement_pct`, and where the trail is.
pub fn outcome_json(outcome: &SessionOutcome, dir: &Path) -> String {
    let objective = &outcome.session.objective;
    let iterations: Vec<serde_json::Value> = outcome
        .history
        .iterations
        .iter()
        .map(|it| {
            json!({
                "number": it.number,
                "status": it.status.as_str(),
                "objective_value": objective.value(&it.metrics),
                "feasible": objective.is_feasible(&it.metrics),
                "flags": it.spec.flags,
                "metrics": it.metrics,
                "findings": it.analysis.findings.iter().map(|f| json!({"rule": f.rule, "bottleneck": f.bottleneck, "summary": f.summary})).collect::<Vec<_>>(),
                "planned_changes": it.plan.as_ref().map(|p| &p.changes),
                "error": it.error,
            })
        })
        .collect();
    let value = json!({
        "session": outcome.session.name,
        "objective": objective.describe(),
        "iterations": iterations,
        "baseline": iteration_ref(outcome, outcome.baseline()),
        "champion": iteration_ref(outcome, outcome.champion()),
        "improvement_pct": outcome.improvement_pct(),
        "confirmation": outcome.confirmation,
        "stop_reason": outcome.stop_reason.as_str(),
        "sessions_dir": dir,
    });
    serde_json::to_string_pretty(&value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Writes to stdout; a reader that went away (a closed pipe) is not an error worth a panic.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|_| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: writing to stdout: {e}");
    }
}
