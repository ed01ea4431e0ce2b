//! `autodebug twin fit|validate|predict`: a twin of the user's own deployment, fitted to a session's
//! measured iterations, checked on iterations it was not fitted to, and asked about configurations
//! never deployed ([`autodebug_sim::twin`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use autodebug_core::store::SessionRecord;
use autodebug_core::{BenchPlan, CAPACITY_METRIC, Error, History, LaunchFlags, Platform, Result, format_number};
use autodebug_report::export::text_table;
use autodebug_sim::twin::{self, FitOptions, FitProvenance, Holdout, Observation, PREDICTED_METRICS, Twin};
use serde_json::json;

use super::history::{StoreArgs, load, print_json};
use crate::config::RunConfig;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Fit a twin to a session's successful iterations and write it as YAML.
    #[command(after_help = "Examples:\n  autodebug twin fit --db sessions/vllm-cpu/autodebug.db --out twin.yaml")]
    Fit {
        #[command(flatten)]
        store: StoreArgs,
        /// Where the twin goes.
        #[arg(long, default_value = "twin.yaml", value_name = "PATH")]
        out: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Predict iterations the twin was not fitted to and report its error per metric (median and
    /// p90 absolute percentage error).
    #[command(
        after_help = "Examples:\n  autodebug twin validate --db sessions/vllm-cpu/autodebug.db --leave-one-out\n  autodebug twin validate --db store.db --holdout 5 --json"
    )]
    Validate {
        #[command(flatten)]
        store: StoreArgs,
        /// Hold out the last K successful iterations and fit on the ones before.
        #[arg(long, value_name = "K", conflicts_with = "leave_one_out")]
        holdout: Option<usize>,
        /// Hold out each iteration in turn (the default).
        #[arg(long)]
        leave_one_out: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What a fitted twin predicts for a configuration on the bench plans of a session file.
    #[command(
        after_help = "Examples:\n  autodebug twin predict --twin twin.yaml -c examples/vllm-cpu.yaml --flags \"--max-num-seqs 8 --dtype float32\""
    )]
    Predict {
        /// A twin written by `autodebug twin fit`.
        #[arg(long, value_name = "PATH")]
        twin: PathBuf,
        /// The session file whose bench plans are predicted.
        #[arg(short, long, default_value = "autodebug.yaml")]
        config: PathBuf,
        /// The engine flags, as one string.
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        flags: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args, _global: &crate::Global) -> Result<ExitCode> {
    match args.command {
        Command::Fit { store, out, json } => fit(&store, out, json),
        Command::Validate { store, holdout, leave_one_out: _, json } => validate(&store, holdout, json),
        Command::Predict { twin, config, flags, json } => predict(twin, config, &flags, json),
    }
}

/// The session's bench plans (as it recorded them) and its observations.
fn session_data(session: &SessionRecord, history: &History) -> Result<(Twin, Vec<Observation>)> {
    let plans: Vec<BenchPlan> = session
        .config
        .get("bench")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| {
            Error::config(
                "bench",
                format!("session `{}` recorded bench plans this version cannot read: {e}", session.name),
            )
        })?
        .unwrap_or_default();
    let observations = twin::observations(&plans, &history.iterations);
    let first = history.iterations.iter().find(|i| i.is_ok()).ok_or_else(|| {
        Error::config("session", format!("session `{}` has no successful iteration to fit a twin to", session.name))
    })?;
    let engine = first.spec.engine;
    // A CPU service's platform is this host's: fit where the data was measured.
    let defaults = Twin::defaults_for(engine, &Platform::of(&first.spec));
    let mut base = Twin::new(engine, first.spec.model.clone(), defaults);
    base.fitted_on = Some(FitProvenance { session: session.name.clone(), ..FitProvenance::default() });
    Ok((base, observations))
}

fn twin_error(error: twin::TwinError) -> Error {
    Error::config("twin", error.to_string())
}

fn fit(store: &StoreArgs, out: PathBuf, as_json: bool) -> Result<ExitCode> {
    let (_store, session, history) = load(store)?;
    let (base, observations) = session_data(&session, &history)?;
    let started = Instant::now();
    let fitted = twin::fit(&base, &observations, &FitOptions::default()).map_err(twin_error)?;
    let seconds = started.elapsed().as_secs_f64();
    fitted.save(&out).map_err(twin_error)?;
    let provenance = fitted.fitted_on.clone().unwrap_or_default();
    if as_json {
        print_json(&json!({
            "twin": out.display().to_string(),
            "session": session.name,
            "engine": fitted.engine.as_str(),
            "observations": observations.len(),
            "iterations": provenance.iterations,
            "costs": fitted.costs,
            "factors": fitted.factors,
            "fit_median_ape": provenance.fit_median_ape,
            "seconds": seconds,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let c = &fitted.costs;
    println!(
        "twin of session `{}` ({}, {}): fitted on {} observations of {} iterations in {seconds:.2} s",
        session.name,
        fitted.engine.as_str(),
        fitted.model,
        observations.len(),
        provenance.iterations.len()
    );
    println!(
        "step {:.0} µs + {:.2} µs/prefill token + {:.1} µs/decoding sequence + {:.2} ns/context token; {:.2} ms per request",
        c.step_us, c.prefill_token_us, c.decode_seq_us, c.context_token_ns, c.request_ms
    );
    for factor in &fitted.factors {
        println!("  {} {}: x{:.3} ({:?})", factor.flag, factor.value, factor.multiplier, factor.scope);
    }
    let errors: Vec<String> =
        provenance.fit_median_ape.iter().map(|(metric, ape)| format!("{metric} {ape:.1}%")).collect();
    println!("median error on the fitted data: {}", errors.join(", "));
    println!("written to {}; check it on held-out iterations with `autodebug twin validate`", out.display());
    Ok(ExitCode::SUCCESS)
}

fn validate(store: &StoreArgs, holdout: Option<usize>, as_json: bool) -> Result<ExitCode> {
    let (_store, session, history) = load(store)?;
    let (base, observations) = session_data(&session, &history)?;
    let holdout = holdout.map_or(Holdout::LeaveOneOut, Holdout::Last);
    let started = Instant::now();
    let validation = twin::validate(&base, &observations, holdout, &FitOptions::default()).map_err(twin_error)?;
    let seconds = started.elapsed().as_secs_f64();
    if as_json {
        let mut value = serde_json::to_value(&validation).map_err(|e| Error::config("twin", e.to_string()))?;
        value["session"] = json!(session.name);
        value["engine"] = json!(base.engine.as_str());
        value["seconds"] = json!(seconds);
        print_json(&value);
        return Ok(ExitCode::SUCCESS);
    }
    let metrics = shown_metrics(validation.points.iter().any(|p| p.measured.contains_key(CAPACITY_METRIC)));
    let mut header = vec!["iter".to_string(), "plan".to_string()];
    header.extend(metrics.iter().map(|m| format!("{m} pred/meas")));
    header.push("config".into());
    let rows: Vec<Vec<String>> = validation
        .points
        .iter()
        .map(|point| {
            let mut row = vec![point.iteration.to_string(), point.plan.clone()];
            row.extend(metrics.iter().map(|metric| {
                match (point.predicted.get(*metric), point.measured.get(*metric), point.ape.get(*metric)) {
                    (Some(p), Some(m), Some(ape)) => format!("{}/{} ({ape:.0}%)", format_number(*p), format_number(*m)),
                    _ => "-".into(),
                }
            }));
            let mut config = point.flags.clone();
            if !point.unseen.is_empty() {
                config.push_str(&format!(" [unseen: {}]", point.unseen.join(", ")));
            }
            if let Some(why) = &point.infeasible {
                config.push_str(&format!(" [twin: {why}]"));
            }
            row.push(config);
            row
        })
        .collect();
    println!(
        "twin of session `{}` ({}), {} held out, {} points, {seconds:.2} s",
        session.name,
        base.engine.as_str(),
        validation.holdout,
        validation.points.len()
    );
    print!("{}", text_table(&header, &rows));
    let summary_header: Vec<String> =
        ["metric", "median APE", "p90 APE", "no model (plan median)"].map(String::from).to_vec();
    let percent = |value: Option<&f64>| value.map_or("-".into(), |v| format!("{v:.1}%"));
    let summary: Vec<Vec<String>> = validation
        .median_ape
        .iter()
        .map(|(metric, median)| {
            vec![
                metric.clone(),
                percent(Some(median)),
                percent(validation.p90_ape.get(metric)),
                percent(validation.naive_median_ape.get(metric)),
            ]
        })
        .collect();
    print!("{}", text_table(&summary_header, &summary));
    Ok(ExitCode::SUCCESS)
}

fn predict(path: PathBuf, config: PathBuf, flags: &str, as_json: bool) -> Result<ExitCode> {
    let twin = Twin::load(&path).map_err(twin_error)?;
    let run_config = RunConfig::load(&config)?;
    let words: Vec<&str> = flags.split_whitespace().collect();
    let flags = LaunchFlags::parse_args(&words).map_err(|e| Error::config("--flags", e))?;
    let mut out = serde_json::Map::new();
    let mut rows = Vec::new();
    let plans = run_config.loop_bench_plans()?;
    let metrics = shown_metrics(plans.iter().any(|p| p.capacity.is_some()));
    for plan in plans {
        let workload = twin.workload(&plan);
        let prediction = match &plan.capacity {
            Some(goal) => twin.predict_capacity(&flags, &workload, goal),
            None => twin.predict(&flags, &workload),
        }
        .map_err(twin_error)?;
        let mut row = vec![plan.name.clone()];
        row.extend(metrics.iter().map(|m| prediction.metrics.get(*m).map_or("-".into(), |v| format_number(*v))));
        row.push(prediction.unseen.join(", "));
        rows.push(row);
        out.insert(plan.name.clone(), json!({ "metrics": prediction.metrics, "unseen": prediction.unseen }));
    }
    if as_json {
        print_json(&json!({ "twin": path.display().to_string(), "flags": flags.to_args(), "plans": out }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut header = vec!["plan".to_string()];
    header.extend(metrics.iter().map(|m| m.to_string()));
    header.push("unseen (guessed x1)".into());
    print!("{}", text_table(&header, &rows));
    Ok(ExitCode::SUCCESS)
}

/// The metrics a table shows: the twin's, and `capacity` where a plan searched for it.
fn shown_metrics(with_capacity: bool) -> Vec<&'static str> {
    let mut metrics = PREDICTED_METRICS.to_vec();
    if with_capacity {
        metrics.push(CAPACITY_METRIC);
    }
    metrics
}
