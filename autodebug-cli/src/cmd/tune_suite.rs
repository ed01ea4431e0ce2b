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
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Evaluations per planner run, the baseline included.
    #[arg(long, default_value_t = 60)]
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
            "\n{} — {}\n  {}; {} knobs, {} configurations ({} infeasible or failing); optimum {} [{}]; baseline {}\n",
            s.name,
            s.description,
            s.objective,
            s.knobs,
            s.configurations,
            s.infeasible_configurations,
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
