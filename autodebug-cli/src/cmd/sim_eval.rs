//! `autodebug sim eval`: the tuning suite's scenarios as an ask/tell service on stdin/stdout, so
//! any optimizer (Optuna, your own) is measured on the same scale as the built-in planners.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use super::tune_suite::ScenarioArgs;
use autodebug_core::{Error, Result};
use autodebug_sim::tune_suite::{EvalRequest, Evaluator, SuiteOptions, chosen_scenarios, describe, landscape};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the scenarios' spaces as JSON (knobs, levels, objective, constraints, noise) and exit.
    #[arg(long)]
    pub describe: bool,
    /// With --describe: which scenarios are described (evaluation requests name any scenario).
    #[command(flatten)]
    pub chosen: ScenarioArgs,
    /// With --describe: add each scenario's true optimum (measures its whole space; for scoring
    /// and stopping a benchmark run, never for the optimizer itself).
    #[arg(long)]
    pub with_optimum: bool,
}

pub async fn run(args: Args, _global: &crate::Global) -> Result<ExitCode> {
    tokio::task::spawn_blocking(move || serve(args))
        .await
        .map_err(|e| Error::Plan(format!("sim eval stopped unexpectedly: {e}")))?
}

fn serve(args: Args) -> Result<ExitCode> {
    if args.describe {
        let options = args.chosen.into_options(SuiteOptions::default());
        let chosen = chosen_scenarios(&options)?;
        let mut described = describe(&chosen, options.noise_scale);
        if args.with_optimum
            && let serde_json::Value::Array(items) = &mut described
        {
            for (item, s) in items.iter_mut().zip(&chosen) {
                let optimum = landscape(s).optimum(&s.objective).map(|(_, v)| v);
                item["optimum"] = serde_json::json!(optimum);
            }
        }
        let text = serde_json::to_string_pretty(&described)
            .map_err(|e| Error::Plan(format!("cannot encode the description: {e}")))?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut evaluator = Evaluator::new(args.chosen.noise_scale);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let mut bad = false;
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.map_err(|e| Error::Plan(format!("cannot read stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        // A bad line gets an error object on its own line, so a driver never waits forever.
        let answer = serde_json::from_str::<EvalRequest>(&line)
            .map_err(|e| {
                Error::config(
                    "stdin",
                    format!(
                        "line {}: {e}; expected {{\"scenario\": NAME, \"config\": {{FLAG: LEVEL}}, \"seed\": N}}",
                        n + 1
                    ),
                )
            })
            .and_then(|request| evaluator.answer(&request));
        let text = match answer {
            Ok(a) => serde_json::to_string(&a).map_err(|e| Error::Plan(format!("cannot encode an answer: {e}")))?,
            Err(e) => {
                bad = true;
                serde_json::json!({ "error": e.to_string() }).to_string()
            }
        };
        writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .map_err(|e| Error::Plan(format!("cannot write to stdout: {e}")))?;
    }
    Ok(if bad { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
