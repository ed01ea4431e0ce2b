//! `autodebug`: the telemetry-driven optimization loop for LLM inference services, on the command line.
//!
//! A thin binary: it parses arguments, composes the library crates and prints results.

mod compose;
mod config;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};

use crate::config::RunConfig;

#[derive(Parser)]
#[command(name = "autodebug", version, about = "Deploy, benchmark, read telemetry, find the bottleneck, plan the next config, redeploy: unattended.")]
#[command(after_help = "Examples:\n  autodebug demo --iterations 4 --out /tmp/demo\n  autodebug run -c autodebug.yaml\n  autodebug run -c autodebug.yaml --resume\n  autodebug sim serve --engine sglang --gpu H100 --model qwen1.5-0.5b --port 30000")]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the loop on the built-in simulator from the published autodebug baseline
    /// (Qwen1.5-0.5B-Chat, SGLang defaults, 1x H100).
    #[command(after_help = "Example:\n  autodebug demo --iterations 4 --out /tmp/demo --json")]
    Demo(DemoArgs),
    /// Run a configured session (deployer, baseline, benchmarks, objective, planner, budget).
    #[command(after_help = "Examples:\n  autodebug run -c autodebug.yaml\n  autodebug run -c autodebug.yaml --resume --iterations 3")]
    Run(RunArgs),
    /// The simulated inference engine.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
}

#[derive(Args)]
struct DemoArgs {
    /// Iterations to run.
    #[arg(long, default_value_t = 4)]
    iterations: u32,
    /// Directory for the session trail and the store.
    #[arg(long, default_value = "sessions")]
    out: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    /// The session configuration file.
    #[arg(short, long, default_value = "autodebug.yaml")]
    config: PathBuf,
    /// Iterations to run (overrides the file's budget).
    #[arg(long)]
    iterations: Option<u32>,
    /// Continue the latest session (or --session NAME) from the store.
    #[arg(long)]
    resume: bool,
    /// Session name (new) or the session to resume.
    #[arg(long)]
    session: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SimCommand {
    /// Serve the simulated engine over HTTP (OpenAI-compatible API, /metrics, /health).
    #[command(disable_help_flag = true)]
    Serve {
        /// `--engine sglang|vllm --gpu H100 --model qwen1.5-0.5b --port P [-- engine flags]`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = if quiet {
        "error"
    } else {
        match verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sim { command: SimCommand::Serve { args } } = &cli.command {
        return autodebug_sim::server::run_cli(args);
    }
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => {
                let config = RunConfig::demo(&args.out, args.iterations);
                run_session(config, None, false, None, args.json, cli.quiet).await
            }
            Command::Run(args) => {
                let config = RunConfig::load(&args.config)?;
                run_session(config, args.session, args.resume, args.iterations, args.json, cli.quiet).await
            }
            Command::Sim { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run_session(
    config: RunConfig,
    session: Option<String>,
    resume: bool,
    iterations: Option<u32>,
    json: bool,
    quiet: bool,
) -> autodebug_core::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    spawn_ctrl_c_handler(stop.clone());
    let given_name = session.or_else(|| config.session.clone());
    let name = given_name.clone().unwrap_or_else(|| {
        format!("{}-{}", config.service.engine, autodebug_core::TimeWindow::format_iso(autodebug_core::TimeWindow::now_ns()))
    });
    let progress = output::Progress::new(quiet || json);
    let session_config = config.session_config(name, iterations)?;
    let session = compose::session(&config, session_config, stop, progress.observer())?;
    let outcome = if resume { session.resume(given_name.as_deref()).await? } else { session.run(config.baseline()).await? };
    progress.finish();
    if json {
        println!("{}", output::outcome_json(&outcome, &config.sessions_dir));
    } else {
        print!("{}", output::outcome_table(&outcome, &config.sessions_dir));
    }
    Ok(())
}

/// First Ctrl-C: finish the current step, record it and stop. Second: leave at once (children
/// die with us: the local deployer sets PDEATHSIG).
fn spawn_ctrl_c_handler(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping after the current step (Ctrl-C again to quit now)");
            stop.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
}
