//! `autodebug sim tune-suite`: measures the planners against the true optimum of simulated
//! scenarios, in virtual time.

use std::path::PathBuf;
use std::process::ExitCode;

use autodebug_core::{Error, Result};
use autodebug_sim::tune_suite::{PlannerChoice, SuiteOptions, SuiteReport, run_suite};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Planners to measure, comma-separated: rules, grid, random, oat, bayes, hybrid.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rules,grid,random,bayes,hybrid"
    )]
    pub planners: Vec<String>,
    /// Planner seeds per scenario; results are medians over them.
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// Evaluations per planner run, the baseline included.
    #[arg(long, default_value_t = 150)]
    pub budget: usize,
    /// Only these scenarios (comma-separated names); all by default.
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Keep only the first N levels of every knob (a quick, smaller run).
    #[arg(long, value_name = "N")]
    pub max_levels: Option<usize>,
    /// Write the results as JSON to FILE (`-` for stdout): one object per (scenario, planner).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), autodebug_core::format_number)
}

fn table(report: &SuiteReport) -> String {
    let mut out = String::new();
    for s in &report.scenarios {
        out.push_str(&format!(
            "\n{} — {}\n  {}; {} knobs, {} configurations ({} infeasible or failing, {} within 2% of the optimum: {:.2}%); optimum {} [{}]; baseline {}\n",
            s.name,
            s.description,
            s.objective,
            s.knobs,
            s.configurations,
            s.infeasible_configurations,
            s.within_2pct_configurations,
            100.0 * s.within_2pct_share,
            autodebug_core::format_number(s.optimum),
            s.optimum_config,
            fmt(s.baseline)
        ));
        out.push_str(&format!(
            "  {:<8} {:>14} {:>14} {:>14} {:>8}\n",
            "planner", "evals-to-2%", "best@10", "best@20", "failed"
        ));
        for r in report.rows.iter().filter(|r| r.scenario == s.name) {
            out.push_str(&format!(
                "  {:<8} {:>14} {:>14} {:>14} {:>8}\n",
                r.planner,
                fmt(r.evals_to_within_2pct),
                fmt(r.best_after_10),
                fmt(r.best_after_20),
                autodebug_core::format_number(r.failed_evals)
            ));
        }
    }
    let targets = report.targets();
    if !targets.is_empty() {
        out.push_str(&format!(
            "\ntargets (hybrid: median evaluations to within 2% <= 12, and <= 20% of random's; random-exp: (N+1)/(K+1), what random needs on average)\n  {:<24} {:>8} {:>8} {:>8} {:>10} {:>7} {:>7} {:>6} {:>6}\n",
            "scenario", "within2%", "hybrid", "random", "random-exp", "ratio", "bayes", "<=12", "<=20%"
        ));
        for t in &targets {
            let summary = report.scenarios.iter().find(|s| s.name == t.scenario);
            let share = summary.map_or(0.0, |s| 100.0 * s.within_2pct_share);
            let expected = summary.map(|s| s.random_expected_evals);
            let bayes = report.row(&t.scenario, "bayes").and_then(|r| r.evals_to_within_2pct);
            let random = match t.random {
                Some(r) if t.random_is_lower_bound => {
                    format!(">={}", autodebug_core::format_number(r))
                }
                other => fmt(other),
            };
            let ratio = match t.hybrid_vs_random {
                Some(q) if t.random_is_lower_bound => format!("<={q:.2}"),
                Some(q) => format!("{q:.2}"),
                None => "-".into(),
            };
            let verdict = |ok: bool| if ok { "pass" } else { "FAIL" };
            out.push_str(&format!(
                "  {:<24} {:>7.2}% {:>8} {:>8} {:>10} {:>7} {:>7} {:>6} {:>6}\n",
                t.scenario,
                share,
                fmt(t.hybrid),
                random,
                expected.map_or("-".into(), |e| format!("{e:.0}")),
                ratio,
                fmt(bayes),
                verdict(t.within_12),
                verdict(t.within_20pct_of_random)
            ));
        }
    }
    out
}

pub async fn run(args: Args, global: &crate::Global) -> Result<ExitCode> {
    let planners = args
        .planners
        .iter()
        .map(|p| {
            PlannerChoice::parse(p).ok_or_else(|| {
                Error::config(
                    "--planners",
                    format!(
                        "unknown planner `{p}`; choose from rules, grid, random, oat, bayes, hybrid"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let options = SuiteOptions {
        planners,
        seeds: args.seeds,
        budget: args.budget,
        scenarios: args.scenarios,
        limit_space: args.max_levels,
    };
    let report = tokio::task::spawn_blocking(move || run_suite(&options))
        .await
        .map_err(|e| Error::Plan(format!("the tuning suite stopped unexpectedly: {e}")))??;
    match &args.json {
        Some(path) => {
            let text = serde_json::to_string_pretty(&report.rows)
                .map_err(|e| Error::Plan(format!("cannot encode the results: {e}")))?;
            if path.as_os_str() == "-" {
                println!("{text}");
            } else {
                std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))?;
                if !global.quiet {
                    print!("{}", table(&report));
                }
            }
        }
        None => print!("{}", table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}
