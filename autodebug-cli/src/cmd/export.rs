//! `autodebug export`: a session's history as CSV, JSON or markdown (a results table, or a
//! GitHub issue / pull-request body).

use std::path::PathBuf;
use std::process::ExitCode;

use autodebug_core::{Error, Result};
use autodebug_report::export::{self, Template};

use super::history::{StoreArgs, load};

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Csv,
    Json,
    Markdown,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TemplateArg {
    /// A GitHub issue body: context, results table, champion, changes tried, how to reproduce.
    Issue,
    /// A pull-request body: summary, config diff, baseline vs proposed, evidence, how to reproduce.
    Pr,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "markdown")]
    format: FormatArg,
    /// Markdown shape (markdown only; default: context and results table).
    #[arg(long, value_enum)]
    template: Option<TemplateArg>,
    /// Write to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Same as --format json.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, _global: &crate::Global) -> Result<ExitCode> {
    let format = if args.json { FormatArg::Json } else { args.format };
    if args.template.is_some() && !matches!(format, FormatArg::Markdown) {
        return Err(Error::config(
            "--template",
            "templates shape markdown only; drop --template or use --format markdown",
        ));
    }
    let (_store, record, history) = load(&args.store)?;
    let db = args.store.db.display().to_string();
    let session = export::Session { record: &record, history: &history, db_path: &db };
    let text = match format {
        FormatArg::Csv => export::csv(&session),
        FormatArg::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&export::json(&session))
                .map_err(|e| Error::config("export", e.to_string()))?
        ),
        FormatArg::Markdown => export::markdown(
            &session,
            match args.template {
                None => Template::Table,
                Some(TemplateArg::Issue) => Template::Issue,
                Some(TemplateArg::Pr) => Template::PullRequest,
            },
        ),
    };
    match &args.out {
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            std::fs::write(path, &text).map_err(|e| Error::io(path, e))?;
            eprintln!(
                "wrote {} ({} iterations of session `{}`)",
                path.display(),
                history.iterations.len(),
                record.name
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
