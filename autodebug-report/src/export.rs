//! Renderings of a session's history: CSV (one row per iteration, one column per metric),
//! JSON, and markdown shaped as a results table, a GitHub issue body or a pull-request body.
//! Also the plain-text and markdown table writers the CLI uses.

use std::collections::BTreeSet;

use serde_json::json;

use autodebug_core::store::SessionRecord;
use autodebug_core::{History, Iteration, Objective, TimeWindow, format_number};

/// The shape of a markdown export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// Context and the results table only.
    Table,
    /// A GitHub issue body: context, table, champion, changes tried, how to reproduce.
    Issue,
    /// A pull-request body proposing the champion: summary, config diff, baseline vs champion, evidence.
    PullRequest,
}

/// What every export needs to know about a session.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    pub record: &'a SessionRecord,
    pub history: &'a History,
    /// The store file, for the reproduce commands.
    pub db_path: &'a str,
}

impl Session<'_> {
    fn objective(&self) -> &Objective {
        &self.record.objective
    }

    /// The first successful iteration.
    pub fn baseline(&self) -> Option<&Iteration> {
        self.history.baseline()
    }

    pub fn champion(&self) -> Option<&Iteration> {
        self.history.champion(self.objective())
    }

    /// Champion over baseline in percent of the baseline, positive when better.
    pub fn improvement_pct(&self) -> Option<f64> {
        self.history.improvement_pct(self.objective())
    }
}

/// The usual latency, throughput and error figures of a summary table.
pub const HEADLINE_METRICS: [&str; 7] =
    ["ttft.p50", "ttft.p99", "tpot.mean", "itl.p95", "e2e.mean", "output_throughput", "error_rate"];

/// The metrics worth a column in a summary: the objective's, its constraints', then
/// [`HEADLINE_METRICS`] (duplicates removed, order kept).
pub fn headline_metrics(objective: &Objective) -> Vec<String> {
    let mut names = vec![objective.metric.clone()];
    names.extend(objective.constraints.iter().map(|c| c.metric.clone()));
    names.extend(HEADLINE_METRICS.map(String::from));
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// A metric value for a table cell (`-` when missing).
pub fn cell(iteration: &Iteration, metric: &str) -> String {
    iteration.metrics.get(metric).filter(|v| v.is_finite()).map(|v| format_number(*v)).unwrap_or_else(|| "-".into())
}

/// The launch flags as a command line (`engine defaults` when none).
pub fn flags_text(iteration: &Iteration) -> String {
    if iteration.spec.flags.is_empty() { "engine defaults".to_string() } else { iteration.spec.flags.to_command_line() }
}

/// The changes an iteration's plan proposes, as `--flag value` words.
pub fn planned_text(iteration: &Iteration) -> String {
    match &iteration.plan {
        Some(plan) if !plan.changes.is_empty() => plan
            .changes
            .iter()
            .map(|c| match c.to.as_deref() {
                Some("true") => c.knob.clone(),
                Some("false") | None => format!("no {}", c.knob),
                Some(v) => format!("{} {v}", c.knob),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(plan) if plan.exhausted => "(nothing left to try)".into(),
        _ => String::new(),
    }
}

/// An aligned plain-text table (columns separated by two spaces, trailing blanks trimmed).
pub fn text_table(header: &[String], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let width = |c: usize| {
        std::iter::once(header)
            .chain(rows.iter().map(|r| r.as_slice()))
            .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows.iter().map(|r| r.as_slice())) {
        let cells: Vec<String> =
            (0..columns).map(|c| format!("{:<w$}", row.get(c).map_or("", |s| s.as_str()), w = widths[c])).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A GitHub-flavoured markdown table (pipes in cells escaped).
pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let escape = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let line = |cells: &[String]| format!("| {} |\n", cells.iter().map(|c| escape(c)).collect::<Vec<_>>().join(" | "));
    let mut out = line(header);
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// One CSV row per iteration: identity columns, then every metric any iteration has (sorted).
pub fn csv(session: &Session<'_>) -> String {
    let objective = session.objective();
    let champion = session.champion().map(|c| c.number);
    let metrics: BTreeSet<&String> = session.history.iterations.iter().flat_map(|i| i.metrics.keys()).collect();
    let mut header: Vec<String> = [
        "session",
        "iteration",
        "status",
        "champion",
        "feasible",
        "objective_metric",
        "objective_value",
        "started_at",
        "engine",
        "model",
        "gpu",
        "flags",
        "error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(metrics.iter().map(|m| m.to_string()));
    let mut out = csv_line(&header);
    for it in &session.history.iterations {
        let mut row = vec![
            session.record.name.clone(),
            it.number.to_string(),
            it.status.as_str().to_string(),
            (Some(it.number) == champion).to_string(),
            (it.is_ok() && objective.is_feasible(&it.metrics)).to_string(),
            objective.metric.clone(),
            objective.value(&it.metrics).map(|v| v.to_string()).unwrap_or_default(),
            TimeWindow::format_iso(it.started_ns),
            it.spec.engine.to_string(),
            it.spec.model.clone(),
            it.spec.resources.gpu.clone().unwrap_or_default(),
            it.spec.flags.to_command_line(),
            it.error.clone().unwrap_or_default(),
        ];
        row.extend(
            metrics
                .iter()
                .map(|m| it.metrics.get(*m).filter(|v| v.is_finite()).map(|v| v.to_string()).unwrap_or_default()),
        );
        out.push_str(&csv_line(&row));
    }
    out
}

fn csv_line(cells: &[String]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|c| if c.contains([',', '"', '\n', '\r']) { format!("\"{}\"", c.replace('"', "\"\"")) } else { c.clone() })
        .collect();
    format!("{}\n", quoted.join(","))
}

/// The session as one JSON value: identity, objective, baseline, champion, improvement and
/// every iteration with its metrics, findings and planned changes.
pub fn json(session: &Session<'_>) -> serde_json::Value {
    let objective = session.objective();
    let reference = |it: Option<&Iteration>| match it {
        Some(it) => {
            json!({"iteration": it.number, "value": objective.value(&it.metrics), "flags": it.spec.flags})
        }
        None => serde_json::Value::Null,
    };
    let iterations: Vec<serde_json::Value> = session
        .history
        .iterations
        .iter()
        .map(|it| {
            json!({
                "number": it.number,
                "status": it.status.as_str(),
                "started_at": TimeWindow::format_iso(it.started_ns),
                "objective_value": objective.value(&it.metrics),
                "feasible": it.is_ok() && objective.is_feasible(&it.metrics),
                "engine": it.spec.engine,
                "model": it.spec.model,
                "gpu": it.spec.resources.gpu,
                "flags": it.spec.flags,
                "metrics": it.metrics,
                "findings": it.analysis.findings.iter().map(|f| json!({"rule": f.rule, "bottleneck": f.bottleneck, "severity": f.severity, "summary": f.summary})).collect::<Vec<_>>(),
                "planned_changes": it.plan.as_ref().map(|p| &p.changes),
                "error": it.error,
            })
        })
        .collect();
    json!({
        "session": session.record.name,
        "target": session.record.target,
        "engine": session.record.engine,
        "started_at": TimeWindow::format_iso(session.record.started_ns),
        "stop_reason": session.record.stop_reason,
        "objective": objective,
        "objective_text": objective.describe(),
        "baseline": reference(session.baseline()),
        "champion": reference(session.champion()),
        "improvement_pct": session.improvement_pct(),
        "iterations": iterations,
    })
}

/// The session as markdown in the given template.
pub fn markdown(session: &Session<'_>, template: Template) -> String {
    match template {
        Template::Table => format!("{}\n## Results\n\n{}", context_section(session), results_section(session)),
        Template::Issue => {
            let mut out = context_section(session);
            out.push_str(&format!("\n## Results\n\n{}", results_section(session)));
            out.push_str(&format!("\n## Champion\n\n{}", champion_section(session)));
            out.push_str(&format!("\n## Changes tried\n\n{}", changes_section(session)));
            out.push_str(&format!("\n## How to reproduce\n\n{}", reproduce_section(session)));
            out
        }
        Template::PullRequest => pull_request(session),
    }
}

fn context_section(session: &Session<'_>) -> String {
    let record = session.record;
    let first = session.history.iterations.first();
    let ok = session.history.iterations.iter().filter(|i| i.is_ok()).count();
    let mut out = String::from("## Context\n\n");
    out.push_str(&format!(
        "- Session: `{}` (target `{}`, engine `{}`, started {})\n",
        record.name,
        record.target,
        record.engine,
        TimeWindow::format_iso(record.started_ns)
    ));
    if let Some(first) = first {
        out.push_str(&format!(
            "- Model: `{}`{}\n",
            first.spec.model,
            first.spec.resources.gpu.as_deref().map(|g| format!(" on `{g}`")).unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "- Objective: {} (noise margin {}%)\n",
        record.objective.describe(),
        format_number(record.objective.noise_pct)
    ));
    out.push_str(&format!("- Iterations: {} ({} ok)", session.history.iterations.len(), ok));
    if let Some(reason) = &record.stop_reason {
        out.push_str(&format!(", stopped: {reason}"));
    }
    out.push('\n');
    if let Some(bench) = record.config.get("bench").and_then(|b| b.as_array()) {
        let plans: Vec<String> = bench
            .iter()
            .filter_map(|p| {
                let name = p.get("name")?.as_str()?;
                let workload = p.get("workload").map(|w| {
                    format!(
                        "{} prompt / {} completion tokens",
                        w.get("prompt_tokens").map(|v| v.to_string()).unwrap_or_default(),
                        w.get("output_tokens").map(|v| v.to_string()).unwrap_or_default()
                    )
                });
                Some(format!("`{name}`{}", workload.map(|w| format!(" ({w})")).unwrap_or_default()))
            })
            .collect();
        if !plans.is_empty() {
            out.push_str(&format!("- Benchmarks: {}\n", plans.join(", ")));
        }
    }
    out
}

fn results_section(session: &Session<'_>) -> String {
    let objective = session.objective();
    let champion = session.champion().map(|c| c.number);
    let metrics = headline_metrics(objective);
    let mut header = vec!["iter".to_string(), "status".to_string()];
    header.extend(metrics.iter().cloned());
    header.push("flags".into());
    let rows: Vec<Vec<String>> = session
        .history
        .iterations
        .iter()
        .map(|it| {
            let mut row = vec![
                format!("{}{}", it.number, if Some(it.number) == champion { " ★" } else { "" }),
                it.status.as_str().to_string(),
            ];
            row.extend(metrics.iter().map(|m| cell(it, m)));
            row.push(format!("`{}`", flags_text(it)));
            row
        })
        .collect();
    let mut out = markdown_table(&header, &rows);
    out.push_str("\n★ champion: the best feasible iteration, replaced only by one that beats it outside the noise margin. Latencies in ms, throughput in tokens/s.\n");
    out
}

fn champion_section(session: &Session<'_>) -> String {
    let objective = session.objective();
    match (session.baseline(), session.champion()) {
        (Some(base), Some(best)) => {
            let mut out = format!(
                "Iteration {}: `{}` = {} vs baseline (iteration {}) {}",
                best.number,
                objective.metric,
                cell(best, &objective.metric),
                base.number,
                cell(base, &objective.metric)
            );
            if let Some(pct) = session.improvement_pct() {
                out.push_str(&format!(" ({pct:+.1}% better)"));
            }
            out.push_str(&format!("\n\n```\n{}\n```\n", flags_text(best)));
            out
        }
        _ => "None: no iteration met the objective's constraints.\n".to_string(),
    }
}

fn changes_section(session: &Session<'_>) -> String {
    let mut out = String::new();
    for it in &session.history.iterations {
        let Some(plan) = &it.plan else { continue };
        for change in &plan.changes {
            let to = change.to.as_deref().unwrap_or("(unset)");
            let from = change.from.as_deref().unwrap_or("(unset)");
            let cited: Vec<String> = change.evidence.iter().take(3).map(|s| format!("`{}`", s.name)).collect();
            out.push_str(&format!(
                "- after iteration {}: `{}` {} → {} ({}): {}{}\n",
                it.number,
                change.knob,
                from,
                to,
                change.rule,
                change.reason,
                if cited.is_empty() { String::new() } else { format!(" [cites {}]", cited.join(", ")) }
            ));
        }
    }
    if out.is_empty() {
        out.push_str("No planned changes recorded.\n");
    }
    out
}

fn reproduce_section(session: &Session<'_>) -> String {
    let mut out = String::new();
    let target = session.champion().or_else(|| session.history.iterations.last());
    if let Some(it) = target {
        if let Some(artifact) = &it.artifact {
            out.push_str(&format!(
                "Deployable file of iteration {} (`{}-*.{}` in the session trail):\n\n```{}\n{}\n```\n\n",
                it.number,
                artifact.target,
                artifact.extension,
                if artifact.extension == "yml" { "yaml" } else { "sh" },
                artifact.content.trim_end()
            ));
        }
        out.push_str(&format!(
            "```sh\nautodebug history show {} --session '{}' --db {}\nautodebug history diff 1 {} --session '{}' --db {}\n```\n",
            it.number, session.record.name, session.db_path, it.number, session.record.name, session.db_path
        ));
    }
    if let Some(source) = session.record.config.get("source").and_then(|s| s.as_str()) {
        out.push_str(&format!("\nIngested from `{source}`.\n"));
    }
    out
}

fn pull_request(session: &Session<'_>) -> String {
    let objective = session.objective();
    let (Some(base), Some(best)) = (session.baseline(), session.champion()) else {
        return format!(
            "## Summary\n\nNo configuration to propose: no iteration met the objective ({}).\n",
            objective.describe()
        );
    };
    let mut out = String::from("## Summary\n\n");
    out.push_str(&format!(
        "Serve `{}` with the configuration of iteration {} of session `{}`: `{}` {} → {}{}, measured by autodebug ({}).\n",
        best.spec.model,
        best.number,
        session.record.name,
        objective.metric,
        cell(base, &objective.metric),
        cell(best, &objective.metric),
        session.improvement_pct().map(|p| format!(" ({p:+.1}%)")).unwrap_or_default(),
        objective.describe()
    ));
    out.push_str("\n## Configuration changes (baseline → proposed)\n\n");
    let changes = crate::diff::config_changes(base, best);
    if changes.is_empty() {
        out.push_str("None: the baseline is the champion.\n");
    } else {
        let rows: Vec<Vec<String>> = changes
            .iter()
            .map(|c| {
                vec![
                    format!("`{}`", c.knob),
                    c.from.clone().unwrap_or_else(|| "(unset)".into()),
                    c.to.clone().unwrap_or_else(|| "(unset)".into()),
                ]
            })
            .collect();
        out.push_str(&markdown_table(&["knob".into(), "before".into(), "after".into()], &rows));
    }
    out.push_str("\n## Results (baseline vs proposed)\n\n");
    let metrics = headline_metrics(objective);
    let delta = crate::diff::diff(base, best, objective.noise_pct, Some(&metrics));
    let rows: Vec<Vec<String>> = delta
        .metrics
        .iter()
        .map(|m| {
            let fmt = |v: Option<f64>| v.map(format_number).unwrap_or_else(|| "-".into());
            let verdict = match (m.better, m.outside_noise) {
                (Some(true), true) => "better",
                (Some(false), true) => "worse",
                (Some(_), false) => "within noise",
                (None, _) => "",
            };
            vec![
                format!("`{}`", m.name),
                fmt(m.a),
                fmt(m.b),
                m.change_pct.map(|p| format!("{p:+.1}%")).unwrap_or_else(|| "-".into()),
                verdict.to_string(),
            ]
        })
        .collect();
    out.push_str(&markdown_table(
        &[
            "metric".into(),
            format!("baseline ({})", base.number),
            format!("proposed ({})", best.number),
            "change".into(),
            "verdict".into(),
        ],
        &rows,
    ));
    out.push_str(&format!("\nNoise margin: {}% (the objective's `noise_pct`).\n", format_number(objective.noise_pct)));
    out.push_str("\n## Evidence\n\n");
    let mut evidence = String::new();
    for it in session.history.iterations.iter().filter(|i| i.number < best.number) {
        for finding in &it.analysis.findings {
            evidence.push_str(&format!(
                "- iteration {}: {} ({}): {}\n",
                it.number, finding.bottleneck, finding.rule, finding.summary
            ));
        }
    }
    out.push_str(if evidence.is_empty() { "No findings recorded.\n" } else { &evidence });
    out.push_str(&format!("\n## How to reproduce\n\n{}", reproduce_section(session)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let line = csv_line(&["a".into(), "b,c".into(), "say \"hi\"".into(), "x\ny".into()]);
        assert_eq!(line, "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\"\n");
    }

    #[test]
    fn tables_align_and_escape() {
        let header = vec!["iter".to_string(), "flags".to_string()];
        let rows = vec![vec!["10".to_string(), "--a|b".to_string()]];
        assert_eq!(text_table(&header, &rows), "iter  flags\n10    --a|b\n");
        assert_eq!(markdown_table(&header, &rows), "| iter | flags |\n|---|---|\n| 10 | --a\\|b |\n");
    }

    #[test]
    fn headline_metrics_start_with_the_objective_and_have_no_duplicates() {
        let objective = Objective::minimize("ttft.p99").with_constraint("error_rate == 0".parse().unwrap());
        let names = headline_metrics(&objective);
        assert_eq!(names[0], "ttft.p99");
        assert_eq!(names[1], "error_rate");
        assert_eq!(names.iter().filter(|n| *n == "ttft.p99").count(), 1);
        assert_eq!(names.iter().filter(|n| *n == "error_rate").count(), 1);
    }
}
