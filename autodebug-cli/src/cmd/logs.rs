//! `autodebug logs analyze`: the facts in an engine's log and a capacity plan from them.

use std::path::PathBuf;
use std::process::ExitCode;

use autodebug_core::{EngineKind, LogLine, format_number};
use autodebug_telemetry::logs::capacity::{CapacityPlan, RequestShape, capacity_plan, guess_engine};
use autodebug_telemetry::parse_engine_logs;
use serde_json::json;

#[derive(clap::Subcommand)]
pub enum Args {
    /// Signals from an SGLang, vLLM or llama.cpp log, and a capacity plan (weights, KV pool,
    /// CUDA graphs, headroom, max concurrency).
    #[command(
        after_help = "Examples:\n  autodebug logs analyze server.log\n  autodebug logs analyze server.log --engine vllm --isl 2000 --osl 500\n  autodebug logs analyze server.log --json"
    )]
    Analyze(AnalyzeArgs),
}

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// The engine's log file (stdout/stderr as captured).
    file: PathBuf,
    /// The engine that wrote the log; guessed from its lines when left out.
    #[arg(long)]
    engine: Option<EngineKind>,
    /// Prompt tokens per request, for the concurrency figures.
    #[arg(long, default_value_t = 1024)]
    isl: u64,
    /// Output tokens per request, for the concurrency figures.
    #[arg(long, default_value_t = 256)]
    osl: u64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, _global: &crate::Global) -> autodebug_core::Result<ExitCode> {
    match args {
        Args::Analyze(args) => analyze(args),
    }
}

fn analyze(args: AnalyzeArgs) -> autodebug_core::Result<ExitCode> {
    let bytes = std::fs::read(&args.file).map_err(|e| autodebug_core::Error::io(&args.file, e))?;
    // Engines print the odd non-UTF-8 byte (progress bars, model names); keep the rest.
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<LogLine> = text.lines().map(|l| LogLine { time_ns: 0, text: l.to_string() }).collect();
    let (engine, guessed) = match args.engine {
        Some(engine) => (engine, false),
        None => match guess_engine(&lines) {
            Some(engine) => (engine, true),
            None => {
                return Err(autodebug_core::Error::config(
                    args.file.display().to_string(),
                    "cannot tell which engine wrote this log; pass --engine sglang|vllm|llamacpp",
                ));
            }
        },
    };
    let snapshot = parse_engine_logs(engine, &lines, None);
    let plan = capacity_plan(engine, &snapshot, Some(RequestShape { isl: args.isl, osl: args.osl }));
    if args.json {
        let value = json!({
            "file": args.file.display().to_string(),
            "engine": engine.to_string(),
            "engine_guessed": guessed,
            "lines": lines.len(),
            "signals": snapshot.signals,
            "citations": snapshot.signals.iter().map(|s| s.citation()).collect::<Vec<_>>(),
            "capacity": plan,
            "warnings": plan.warnings.iter().map(|s| s.citation()).chain(snapshot.warnings.iter().cloned()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        print!("{}", render(&args, engine, guessed, lines.len(), &snapshot.signals, &plan, &snapshot.warnings));
    }
    Ok(ExitCode::SUCCESS)
}

fn gb(v: Option<f64>) -> String {
    v.map(|v| format!("{} GB", format_number(v))).unwrap_or_else(|| "-".into())
}

fn render(
    args: &AnalyzeArgs,
    engine: EngineKind,
    guessed: bool,
    line_count: usize,
    signals: &[autodebug_core::Signal],
    plan: &CapacityPlan,
    notes: &[String],
) -> String {
    let mut out = format!(
        "log {} ({line_count} lines), engine {engine}{}\n\nSignals ({})\n",
        args.file.display(),
        if guessed { " (guessed; --engine to override)" } else { "" },
        signals.len()
    );
    for signal in signals {
        out.push_str(&format!("  - {}\n", signal.citation()));
    }
    out.push_str(&format!(
        "\nCapacity plan for requests of {} + {} tokens\n  weights {}\n  KV pool {}{}{}\n  CUDA graphs {}\n  headroom {}\n",
        args.isl,
        args.osl,
        gb(plan.weights_gb),
        gb(plan.kv_pool_gb),
        plan.kv_tokens.map(|t| format!(", {} tokens", format_number(t))).unwrap_or_default(),
        plan.kv_bytes_per_token.map(|b| format!(" ({} KB/token)", format_number(b / 1e3))).unwrap_or_default(),
        gb(plan.cuda_graph_gb),
        gb(plan.headroom_gb),
    ));
    if let Some(cap) = plan.max_running_requests {
        out.push_str(&format!("  engine cap {} concurrent requests\n", format_number(cap)));
    }
    if let Some(context) = plan.context_len {
        out.push_str(&format!("  context {} tokens\n", format_number(context)));
    }
    match (plan.max_concurrency, plan.limited_by.as_deref()) {
        (Some(n), Some(limit)) => {
            out.push_str(&format!("  max concurrency {} (limited by {limit})\n", format_number(n)))
        }
        _ => out.push_str("  max concurrency: unknown (the log has no KV pool or slot figures)\n"),
    }
    if !plan.warnings.is_empty() || !notes.is_empty() {
        out.push_str("\nWarnings\n");
        for w in &plan.warnings {
            out.push_str(&format!("  - {}\n", w.citation()));
        }
        for n in notes {
            out.push_str(&format!("  - {n}\n"));
        }
    }
    out
}
