//! What the binary prints: a progress line while the loop runs, then a table or one JSON object.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::path::Path;

use autodebug_core::session::{SessionEvent, SessionOutcome};
use autodebug_core::{Comparison, Iteration, format_number};
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
            let message = shown(&message).into_owned();
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
    // A bounded metric gets a column, so what the objective's gain costs elsewhere shows.
    let mut bounded: Vec<&str> = Vec::new();
    for c in &objective.constraints {
        let bound = matches!(c.op, Comparison::AtMost | Comparison::AtLeast);
        if bound && c.metric != objective.metric && !bounded.contains(&c.metric.as_str()) {
            bounded.push(&c.metric);
        }
    }
    let mut header = vec!["iter".to_string(), "status".into(), objective.metric.clone()];
    header.extend(bounded.iter().map(|m| m.to_string()));
    header.extend(["ttft.p50 ms".into(), "tpot.mean ms".into(), "out tok/s".into(), "planned next".into()]);
    let mut rows = vec![header];
    for it in &outcome.history.iterations {
        let mark = if Some(it.number) == champion { "*" } else { "" };
        let status = if it.is_ok() && !objective.is_feasible(&it.metrics) {
            "infeasible".to_string()
        } else {
            it.status.as_str().to_string()
        };
        let mut row = vec![format!("{}{mark}", it.number), status, metric(it, &objective.metric)];
        row.extend(bounded.iter().map(|m| metric(it, m)));
        row.extend([
            metric(it, "ttft.p50"),
            metric(it, "tpot.mean"),
            metric(it, "output_throughput"),
            autodebug_report::export::planned_text(it),
        ]);
        rows.push(row);
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
    if let (Some(base), Some(best)) = (outcome.baseline(), outcome.champion()) {
        for m in &bounded {
            if let (Some(b), Some(c)) = (base.metrics.get(*m), best.metrics.get(*m)) {
                let change = if *b != 0.0 { format!(": {:+.1}%", (c - b) / b * 100.0) } else { String::new() };
                out.push_str(&format!("  {m} = {} vs baseline {}{change}\n", format_number(*c), format_number(*b)));
            }
        }
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
                "round": it.round,
                "status": it.status.as_str(),
                "started_ns": it.started_ns.to_string(),
                "finished_ns": it.finished_ns.to_string(),
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

/// `text` as this process may show it: registered secret values masked, and control characters
/// other than newline and tab (terminal escapes an engine printed) made visible.
pub fn shown(text: &str) -> Cow<'_, str> {
    match autodebug_core::secret::redact(text) {
        Cow::Borrowed(text) => autodebug_core::printable(text),
        Cow::Owned(text) => Cow::Owned(autodebug_core::printable(&text).into_owned()),
    }
}

/// Writes to stdout what [`shown`] lets through; a reader that went away (a closed pipe) is not
/// an error worth a panic.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let text = match args.as_str() {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(args.to_string()),
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(shown(&text).as_bytes()).and_then(|_| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: writing to stdout: {e}");
    }
}

/// Writes to stderr what [`shown`] lets through; a closed stderr leaves nowhere to complain.
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let text = args.to_string();
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(shown(&text).as_bytes()).and_then(|_| err.flush());
}

/// The log subscriber's writer: stderr, one formatted event at a time, through [`shown`], so a
/// secret value in a field (`flags = --api-key K`) or a control character an engine printed never
/// reaches the terminal or a CI log. With colour on, ESC passes: the formatter writes it itself,
/// and escapes any inside field values.
#[derive(Clone, Copy)]
pub struct LogWriter {
    pub ansi: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogEvent;

    fn make_writer(&'a self) -> LogEvent {
        LogEvent { ansi: self.ansi, buf: Vec::new() }
    }
}

/// One event's bytes, redacted as a whole when it ends: a value split across two writes is
/// still masked.
pub struct LogEvent {
    ansi: bool,
    buf: Vec<u8>,
}

impl LogEvent {
    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        let text = autodebug_core::secret::redact(&text);
        if !self.ansi {
            return autodebug_core::printable(&text).into_owned();
        }
        // Colour codes are ESC sequences: keep ESC, make every other control visible.
        text.split('\x1b').map(|part| autodebug_core::printable(part)).collect::<Vec<_>>().join("\x1b")
    }
}

impl std::io::Write for LogEvent {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = self.text();
        self.buf.clear();
        let mut err = std::io::stderr().lock();
        err.write_all(text.as_bytes())?;
        err.flush()
    }
}

impl Drop for LogEvent {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn what_is_shown_masks_registered_secrets_and_controls_but_keeps_colour_codes_when_asked() {
        autodebug_core::secret::register("canary-shown-4f2a");
        let line = "flags=--api-key canary-shown-4f2a\r\x1b]0;t\x07 --max-num-batched-tokens 4096\n";
        assert_eq!(shown(line), "flags=--api-key ***\\r\\x1b]0;t\\x07 --max-num-batched-tokens 4096\n");
        assert!(matches!(shown("plain line\n"), Cow::Borrowed(_)), "nothing to change, nothing copied");

        let mut plain = LogEvent { ansi: false, buf: Vec::new() };
        plain.write_all(b"\x1b[2mINFO\x1b[0m key=canary-").unwrap();
        plain.write_all(b"shown-4f2a\r\n").unwrap();
        assert_eq!(plain.text(), "\\x1b[2mINFO\\x1b[0m key=***\\r\n");
        plain.buf.clear();
        let mut coloured = LogEvent { ansi: true, buf: Vec::new() };
        coloured.write_all(b"\x1b[2mINFO\x1b[0m key=canary-shown-4f2a\x07\n").unwrap();
        assert_eq!(coloured.text(), "\x1b[2mINFO\x1b[0m key=***\\x07\n");
        coloured.buf.clear();
    }
}
