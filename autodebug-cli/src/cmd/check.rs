//! `autodebug check`: service-level budgets judged on every iteration of a session, as a CI gate.

use std::process::ExitCode;

use autodebug_core::{Comparison, Constraint, Error, Result, format_number};
use autodebug_report::budget::{self, Verdict};
use autodebug_report::export;
use serde_json::json;

use super::history::{StoreArgs, config_text, load, print_json};

/// Exit code when `--strict` finds a failed budget or a metric it cannot judge.
pub const EXIT_BUDGET_FAILED: u8 = 3;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Budget: TTFT p99 at most this many ms (`ttft.p99 <= N`).
    #[arg(long, value_name = "MS")]
    ttft_p99_ms: Option<f64>,
    /// Budget: inter-token latency p95 at most this many ms (`itl.p95 <= N`).
    #[arg(long, value_name = "MS")]
    itl_p95_ms: Option<f64>,
    /// Budget: TPOT mean at most this many ms (`tpot.mean <= N`).
    #[arg(long, value_name = "MS")]
    tpot_mean_ms: Option<f64>,
    /// Budget: end-to-end latency p99 at most this many ms (`e2e.p99 <= N`).
    #[arg(long, value_name = "MS")]
    e2e_p99_ms: Option<f64>,
    /// Budget: output throughput at least this many tokens/s (`output_throughput >= N`).
    #[arg(long, value_name = "TOK_PER_S")]
    min_output_throughput: Option<f64>,
    /// Budget: share of failed requests at most this (`error_rate <= N`, 0..1).
    #[arg(long, value_name = "RATE")]
    max_error_rate: Option<f64>,
    /// Any other budget, e.g. `concurrent.ttft.p99 <= 500ms` (repeatable).
    #[arg(long = "budget", value_name = "CONSTRAINT")]
    budgets: Vec<String>,
    /// Judge only this iteration.
    #[arg(long, value_name = "N", conflicts_with = "champion")]
    iteration: Option<u32>,
    /// Judge only the session's champion.
    #[arg(long)]
    champion: bool,
    /// Exit with code 3 when a budget fails or a metric needed to judge one is missing.
    #[arg(long)]
    strict: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Args {
    fn budgets(&self) -> Result<Vec<Constraint>> {
        let mut out = Vec::new();
        let mut add = |metric: &str, op: Comparison, bound: Option<f64>, flag: &str| -> Result<()> {
            if let Some(bound) = bound {
                if !bound.is_finite() {
                    return Err(Error::config(flag, format!("`{bound}` is not a finite number")));
                }
                out.push(Constraint { metric: metric.into(), op, bound });
            }
            Ok(())
        };
        add("ttft.p99", Comparison::AtMost, self.ttft_p99_ms, "--ttft-p99-ms")?;
        add("itl.p95", Comparison::AtMost, self.itl_p95_ms, "--itl-p95-ms")?;
        add("tpot.mean", Comparison::AtMost, self.tpot_mean_ms, "--tpot-mean-ms")?;
        add("e2e.p99", Comparison::AtMost, self.e2e_p99_ms, "--e2e-p99-ms")?;
        add("output_throughput", Comparison::AtLeast, self.min_output_throughput, "--min-output-throughput")?;
        add("error_rate", Comparison::AtMost, self.max_error_rate, "--max-error-rate")?;
        for text in &self.budgets {
            out.push(text.parse().map_err(|e: Error| Error::config("--budget", e.to_string()))?);
        }
        if out.is_empty() {
            return Err(Error::config(
                "check",
                "no budget given; pass e.g. --ttft-p99-ms 200 --min-output-throughput 300 or --budget \"e2e.p99 <= 2s\"",
            ));
        }
        Ok(out)
    }
}

pub async fn run(args: Args, _global: &crate::Global) -> Result<ExitCode> {
    let budgets = args.budgets()?;
    let (_store, session, history) = load(&args.store)?;
    let champion = history.champion(&session.objective).map(|c| c.number);
    let selected: Vec<_> = history
        .iterations
        .iter()
        .filter(|it| args.iteration.is_none_or(|n| it.number == n))
        .filter(|it| !args.champion || Some(it.number) == champion)
        .cloned()
        .collect();
    if selected.is_empty() {
        let what = match (args.iteration, args.champion) {
            (Some(n), _) => format!("no finished iteration {n}"),
            (None, true) => "no champion (no iteration meets the objective)".to_string(),
            (None, false) => "no finished iterations".to_string(),
        };
        if args.strict {
            eprintln!("check: session `{}` has {what}: nothing to judge", session.name);
            return Ok(ExitCode::from(EXIT_BUDGET_FAILED));
        }
        return Err(Error::config("check", format!("session `{}` has {what}", session.name)));
    }
    let verdicts = budget::check(&budgets, &selected);
    let failed = verdicts.iter().map(|v| v.count(Verdict::Fail)).sum::<usize>();
    let missing = verdicts.iter().map(|v| v.count(Verdict::Missing)).sum::<usize>();
    let passed = verdicts.iter().filter(|v| v.passed()).count();
    let gate_fails = failed > 0 || missing > 0;

    if args.json {
        print_json(&json!({
            "session": session.name,
            "budgets": budgets.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
            "iterations": verdicts,
            "passed_iterations": passed,
            "failed_budgets": failed,
            "missing_metrics": missing,
            "strict": args.strict,
            "ok": !gate_fails,
        }));
    } else {
        let mut header = vec!["iter".to_string(), "status".to_string()];
        header.extend(budgets.iter().map(|b| b.to_string()));
        header.extend(["verdict".to_string(), "config".to_string()]);
        let rows: Vec<Vec<String>> = verdicts
            .iter()
            .zip(&selected)
            .map(|(v, it)| {
                let mut row = vec![
                    format!("{}{}", v.iteration, if Some(v.iteration) == champion { "*" } else { "" }),
                    v.status.as_str().to_string(),
                ];
                row.extend(v.results.iter().map(|r| match (r.verdict, r.value) {
                    (Verdict::Missing, _) | (_, None) => "missing".to_string(),
                    (verdict, Some(value)) => {
                        format!("{} {}", format_number(value), if verdict == Verdict::Pass { "ok" } else { "FAIL" })
                    }
                }));
                let verdict = if v.passed() {
                    "pass"
                } else if v.count(Verdict::Fail) > 0 {
                    "FAIL"
                } else {
                    "cannot judge"
                };
                row.extend([verdict.to_string(), config_text(it)]);
                row
            })
            .collect();
        println!("session `{}`: {} budget(s), latencies in ms\n", session.name, budgets.len());
        print!("{}", export::text_table(&header, &rows));
        println!(
            "\n{passed} of {} iteration(s) within every budget; {failed} budget failure(s), {missing} metric(s) missing{}",
            verdicts.len(),
            if args.strict && gate_fails { format!(" -> exit {EXIT_BUDGET_FAILED} (--strict)") } else { String::new() }
        );
    }
    Ok(if args.strict && gate_fails { ExitCode::from(EXIT_BUDGET_FAILED) } else { ExitCode::SUCCESS })
}
