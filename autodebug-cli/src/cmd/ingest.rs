//! `autodebug ingest`: benchmark reports from vLLM, SGLang, AIPerf and guidellm join the history.

use std::path::PathBuf;
use std::process::ExitCode;

use autodebug_core::store::Store;
use autodebug_core::{EngineKind, Error, Result};
use autodebug_report::export;
use autodebug_report::ingest::{self, Format, IngestOptions};
use serde_json::json;

use super::history::{config_text, print_json};

#[derive(clap::Args)]
pub struct Args {
    /// The report file.
    file: PathBuf,
    /// The experiment store to add to (created when missing).
    #[arg(long, default_value = "sessions/autodebug.db", value_name = "PATH")]
    db: PathBuf,
    /// Session the runs join (created when missing).
    #[arg(long, default_value = ingest::DEFAULT_SESSION, value_name = "NAME")]
    session: String,
    /// `auto`, `vllm`, `sglang`, `aiperf` or `guidellm`.
    #[arg(long, default_value = "auto")]
    format: String,
    /// The engine that served the runs, when the report does not say (`vllm`, `sglang`, `llamacpp`).
    #[arg(long)]
    engine: Option<String>,
    /// Objective of a new session (default `maximize output_throughput`).
    #[arg(long)]
    objective: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, _global: &crate::Global) -> Result<ExitCode> {
    let format = match args.format.as_str() {
        "auto" => None,
        other => Some(Format::parse(other).ok_or_else(|| {
            Error::config("--format", format!("`{other}`: expected auto, vllm, sglang, aiperf or guidellm"))
        })?),
    };
    let engine = args
        .engine
        .as_deref()
        .map(|e| {
            EngineKind::parse(e)
                .ok_or_else(|| Error::config("--engine", format!("`{e}`: expected vllm, sglang or llamacpp")))
        })
        .transpose()?;
    let objective = args.objective.as_deref().map(super::history::objective_flag).transpose()?;
    if !args.file.is_file() {
        return Err(Error::config(
            args.file.display().to_string(),
            "no such file; give the path of a benchmark report",
        ));
    }
    let store = Store::open(&args.db)?;
    let options = IngestOptions { session: args.session.clone(), format, engine, objective };
    let summary = ingest::ingest(&store, &args.file, &options)?;
    let session = store
        .session_by_name(&summary.session)?
        .ok_or_else(|| Error::config("--session", format!("session `{}` vanished while ingesting", summary.session)))?;
    let history = store.history(session.id)?;
    let added: Vec<_> = history.iterations.iter().filter(|i| summary.iterations.contains(&i.number)).collect();
    if args.json {
        let iterations: Vec<serde_json::Value> = added
            .iter()
            .map(|it| json!({"number": it.number, "label": it.spec.name, "model": it.spec.model, "engine": it.spec.engine, "metrics": it.metrics}))
            .collect();
        print_json(&json!({"summary": summary, "db": args.db, "iterations": iterations}));
        return Ok(ExitCode::SUCCESS);
    }
    let numbers: Vec<String> = summary.iterations.iter().map(u32::to_string).collect();
    println!(
        "ingested {} run(s) from {} ({}) into session `{}`{} as iteration(s) {}\n",
        summary.iterations.len(),
        summary.source,
        summary.format.tool(),
        summary.session,
        if summary.session_created { " (new)" } else { "" },
        numbers.join(", ")
    );
    let mut header = vec!["iter".to_string()];
    header.extend(export::HEADLINE_METRICS.map(String::from));
    header.push("run".into());
    let rows: Vec<Vec<String>> = added
        .iter()
        .map(|it| {
            let mut row = vec![it.number.to_string()];
            row.extend(export::HEADLINE_METRICS.map(|m| export::cell(it, m)));
            row.push(config_text(it));
            row
        })
        .collect();
    print!("{}", export::text_table(&header, &rows));
    println!(
        "\nmetric definitions and the original fields: autodebug history show N --session '{}' --db {}",
        summary.session,
        args.db.display()
    );
    Ok(ExitCode::SUCCESS)
}
