//! `autodebug sim tune-suite`: measures the planners against the true optimum of simulated
//! scenarios, in virtual time.

use std::path::PathBuf;
use std::process::ExitCode;

use autodebug_core::{Error, Result};
use autodebug_sim::tune_suite::{ExternalRun, PlannerChoice, SuiteOptions, SuiteReport, run_suite};

/// Which scenarios, and how noisy: shared by `sim tune-suite` and `sim eval --describe`.
#[derive(clap::Args, Debug)]
pub struct ScenarioArgs {
    /// Also draw N scenarios from --seed (`gen-<seed>-<index>`), added to the hand-written six.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub generate: usize,
    /// The seed the generated scenarios are drawn from.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Leave out the six hand-written scenarios.
    #[arg(long)]
    pub skip_builtin: bool,
    /// Only these scenarios (comma-separated names); all by default.
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Multiplier on the measured measurement noise (1 = as measured, 0 = noise off).
    #[arg(long, default_value_t = 1.0)]
    pub noise_scale: f64,
}

impl ScenarioArgs {
    /// `options` with these scenarios and this noise.
    pub fn into_options(self, options: SuiteOptions) -> SuiteOptions {
        SuiteOptions {
            scenarios: self.scenarios,
            generate: self.generate,
            generate_seed: self.seed,
            noise_scale: self.noise_scale,
            skip_builtin: self.skip_builtin,
            ..options
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Planners to measure, comma-separated: rules, grid, random, oat, bayes, hybrid, twin.
    #[arg(long, value_delimiter = ',', default_value = "oat,random,bayes,hybrid,rules")]
    pub planners: Vec<String>,
    /// Run seeds per scenario (each seeds the planner and the measurement noise); results are
    /// medians over them.
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    #[command(flatten)]
    pub chosen: ScenarioArgs,
    /// Score an outside optimizer's runs on the same truth: a JSON-lines file of
    /// `{"planner", "scenario", "seed", "evals": [{"config": {...}, "failed": bool}]}`
    /// (what `benches/optuna_tpe.py` writes). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub external: Vec<PathBuf>,
    /// Evaluations per planner run, the baseline included.
    #[arg(long, default_value_t = 150)]
    pub budget: usize,
    /// Keep only the first N levels of every knob (a quick, smaller run).
    #[arg(long, value_name = "N")]
    pub max_levels: Option<usize>,
    /// Write the results as JSON to FILE (`-` for stdout): `{"rows": [one object per (scenario,
    /// planner)], "scenarios": [...], "summary": {per planner medians, hybrid's ratios, targets}}`.
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
            "\n{} — {}\n  {}; {} knobs, {} configurations ({} infeasible or failing, {} within 2% of the optimum: {:.2}%); optimum {} [{}]; baseline {}; noise sd {:.2}% of the objective\n",
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
            fmt(s.baseline),
            100.0 * s.noise_sd
        ));
        out.push_str(&format!(
            "  {:<10} {:>14} {:>14} {:>14} {:>8} {:>8} {:>8} {:>8}\n",
            "planner", "evals-to-2%", "best@10", "best@20", "failed", "invalid", "snapped", "stopped"
        ));
        for r in report.rows.iter().filter(|r| r.scenario == s.name) {
            out.push_str(&format!(
                "  {:<10} {:>14} {:>14} {:>14} {:>8} {:>8} {:>8} {:>8}\n",
                r.planner,
                fmt(r.evals_to_within_2pct),
                fmt(r.best_after_10),
                fmt(r.best_after_20),
                autodebug_core::format_number(r.failed_evals),
                r.invalid_evals,
                r.snapped_proposals,
                r.stopped_early
            ));
        }
    }
    if let Some(first) = report.scenarios.first() {
        out.push_str(&format!("\nnoise: {}\n", first.noise_source));
    }
    let overall = report.overall();
    if !overall.is_empty() {
        out.push_str(&format!(
            "\nover {} scenarios (medians; a planner that did not get there counts as budget + 1)\n  {:<10} {:>12} {:>9} {:>8} {:>13}\n",
            report.scenarios.len(),
            "planner", "median-evals", "reached", "invalid", "median-failed"
        ));
        for o in &overall {
            out.push_str(&format!(
                "  {:<10} {:>12} {:>5}/{:<3} {:>8} {:>13}\n",
                o.planner,
                autodebug_core::format_number(o.median_evals),
                o.scenarios_reached,
                o.scenarios,
                o.invalid_evals,
                autodebug_core::format_number(o.median_failed_evals)
            ));
        }
        for other in ["random", "optuna-tpe", "oat", "bayes"] {
            if let Some(c) = report.hybrid_against(other) {
                out.push_str(&format!(
                    "  hybrid/{:<10} median ratio {:.2}, worst {:.2} ({}), hybrid needs more on {} of {} scenarios{}\n",
                    other,
                    c.median_ratio,
                    c.worst_ratio,
                    c.worst_scenario,
                    c.hybrid_loses.len(),
                    report.scenarios.len(),
                    if c.hybrid_loses.is_empty() { String::new() } else { format!(": {}", c.hybrid_loses.join(", ")) }
                ));
            }
        }
    }
    let summary = report.summary();
    if !summary.planners.is_empty() {
        out.push_str("\nissue 14 targets over all scenarios\n");
        for t in &summary.targets {
            out.push_str(&format!(
                "  {:<36} {:>8} (bound {}) {}\n",
                t.target,
                t.measured.map_or("-".into(), |m| format!("{m:.2}")),
                t.bound,
                match (t.measured, t.met) {
                    (None, _) => "not measured",
                    (_, true) => "met",
                    (_, false) => "MISSED",
                }
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
                    format!("unknown planner `{p}`; choose from rules, grid, random, oat, bayes, hybrid, twin"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut external = Vec::new();
    for path in &args.external {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let run: ExternalRun = serde_json::from_str(line).map_err(|e| {
                Error::config(
                    "--external",
                    format!(
                        "{}:{}: not a run ({e}); expected {{\"planner\", \"scenario\", \"seed\", \"evals\": [{{\"config\": {{...}}, \"failed\": false}}]}}",
                        path.display(),
                        n + 1
                    ),
                )
            })?;
            external.push(run);
        }
    }
    let options = args.chosen.into_options(SuiteOptions {
        planners,
        seeds: args.seeds,
        budget: args.budget,
        limit_space: args.max_levels,
        external,
        ..SuiteOptions::default()
    });
    let started = std::time::Instant::now();
    let report = tokio::task::spawn_blocking(move || run_suite(&options))
        .await
        .map_err(|e| Error::Plan(format!("the tuning suite stopped unexpectedly: {e}")))??;
    let wall = started.elapsed().as_secs_f64();
    match &args.json {
        Some(path) => {
            let document = serde_json::json!({
                "rows": &report.rows,
                "scenarios": &report.scenarios,
                "summary": report.summary(),
                "wall_s": wall,
            });
            let text = serde_json::to_string_pretty(&document)
                .map_err(|e| Error::Plan(format!("cannot encode the results: {e}")))?;
            if path.as_os_str() == "-" {
                println!("{text}");
            } else {
                std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))?;
                if !global.quiet {
                    print!("{}", table(&report));
                    println!("wall time {wall:.1} s");
                }
            }
        }
        None => {
            print!("{}", table(&report));
            println!("wall time {wall:.1} s");
        }
    }
    Ok(ExitCode::SUCCESS)
}
