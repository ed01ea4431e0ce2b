//! `autodebug engines check`: autodebug's knob catalog held against the installed engine's own
//! argument list, on this machine's platform.

use std::path::PathBuf;
use std::process::ExitCode;

use autodebug_core::{Domain, EngineKind, Platform, SearchSpace};
use autodebug_deploy::engine_args::{default_cache_dir, probe};
use serde_json::json;

#[derive(clap::Subcommand)]
pub enum Args {
    /// Run the engine's own help and compare it with the catalog: knobs the installed version
    /// lacks, values it refuses, and its arguments that look worth tuning.
    #[command(
        after_help = "Examples:\n  autodebug engines check --engine vllm --command \"~/.cache/autodebug/vllm-venv/bin/vllm serve\"\n  autodebug engines check --engine llamacpp --command ~/.cache/autodebug/llama-server --json"
    )]
    Check(CheckArgs),
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The engine (sglang, vllm, llamacpp).
    #[arg(long)]
    engine: EngineKind,
    /// The launch command up to its options, e.g. `vllm serve`.
    #[arg(long)]
    command: String,
    /// The GPUs the engine will run on (`H100:2`); a CPU platform (this host) when left out.
    #[arg(long)]
    gpu: Option<String>,
    /// Run the help again instead of reading the cached answer.
    #[arg(long)]
    no_cache: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, _global: &crate::Global) -> autodebug_core::Result<ExitCode> {
    match args {
        Args::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> autodebug_core::Result<ExitCode> {
    let mut words = args.command.split_whitespace().map(crate::config::expand_home);
    let program = PathBuf::from(words.next().ok_or_else(|| {
        autodebug_core::Error::config("--command", "is empty; give the engine's launcher, e.g. `vllm serve`")
    })?);
    let leading: Vec<String> = words.collect();
    let cache = if args.no_cache { None } else { default_cache_dir() };
    let installed = probe(args.engine, &program, &leading, cache.as_deref())?;
    let platform = match &args.gpu {
        Some(gpu) => {
            let spec = autodebug_core::ServiceSpec::new("check", args.engine, "m").with_gpu(gpu.clone());
            Platform::of(&spec)
        }
        None => Platform::host_cpu(),
    };
    let space = SearchSpace::for_platform(args.engine, &platform);
    let report = installed.check_catalog(&space);
    let version = installed.version.clone().unwrap_or_else(|| "unknown".into());
    if args.json {
        let knobs: Vec<_> = space
            .knobs
            .iter()
            .map(|k| json!({"flag": k.flag, "default": k.default, "candidates": k.candidates, "domain": k.domain}))
            .collect();
        let out = json!({
            "engine": args.engine.as_str(),
            "version": version,
            "platform": platform,
            "arguments": installed.args.values().map(|a| &a.flag).collect::<std::collections::BTreeSet<_>>().len(),
            "catalog": knobs,
            "missing": report.missing,
            "refused_values": report.refused_values,
            "worth_tuning": report.worth_tuning,
            "different_defaults": report.different_defaults,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!(
            "{} {version} on {}: {} arguments in its help",
            args.engine,
            platform.describe(),
            installed.args.values().map(|a| &a.flag).collect::<std::collections::BTreeSet<_>>().len()
        );
        println!("\ncatalog knob                  default     tuned over                 installed");
        for knob in &space.knobs {
            let here = if autodebug_core::is_env_knob(&knob.flag) {
                "environment".to_string()
            } else if report.missing.contains(&knob.flag) {
                "MISSING".to_string()
            } else {
                let refused: Vec<&str> =
                    report.refused_values.iter().filter(|(f, _)| f == &knob.flag).map(|(_, v)| v.as_str()).collect();
                if refused.is_empty() { "ok".to_string() } else { format!("refuses {}", refused.join(", ")) }
            };
            let tuned = match &knob.domain {
                Domain::Switch => "on/off".to_string(),
                _ => knob.candidates.join(","),
            };
            println!("{:<29} {:<11} {:<26} {here}", knob.flag, knob.default.as_deref().unwrap_or("engine"), tuned);
        }
        for (flag, ours, theirs) in &report.different_defaults {
            println!("\ndefault differs: {flag} is {ours} in the catalog, {theirs} in this engine's help");
        }
        if !report.worth_tuning.is_empty() {
            println!("\nnot in the catalog, named like performance knobs: {}", report.worth_tuning.join(" "));
        }
    }
    let bad = !report.missing.is_empty() || !report.refused_values.is_empty() || !report.different_defaults.is_empty();
    Ok(if bad { ExitCode::from(3) } else { ExitCode::SUCCESS })
}
