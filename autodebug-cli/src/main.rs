//! `autodebug`: the telemetry-driven optimization loop for LLM inference services, on the command line.
//!
//! A thin binary: it parses arguments, composes the library crates and prints results. Each
//! sub-command lives in its own module under `cmd/`.

mod cmd;
mod compose;
mod config;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "autodebug", version, about = "Deploy, benchmark, read telemetry, find the bottleneck, plan the next config, redeploy: unattended.")]
#[command(after_help = "Examples:\n  autodebug demo --iterations 4 --out /tmp/demo\n  autodebug run -c autodebug.yaml\n  autodebug run -c autodebug.yaml --resume\n  autodebug sim serve --engine sglang --gpu H100 --model qwen1.5-0.5b --port 30000\n\nExit codes: 0 success, 1 error (the message names the file, field or URL), 2 usage error,\n3 a budget check failed (`check --strict`), 130 interrupted twice.")]
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

/// Options every sub-command sees.
pub struct Global {
    pub verbose: u8,
    pub quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the loop on the built-in simulator from the published autodebug baseline
    /// (Qwen1.5-0.5B-Chat, SGLang defaults, 1x H100).
    #[command(after_help = "Example:\n  autodebug demo --iterations 4 --out /tmp/demo --json")]
    Demo(cmd::session::DemoArgs),
    /// Run a configured session (deployer, baseline, benchmarks, objective, planner, budget).
    #[command(after_help = "Examples:\n  autodebug run -c autodebug.yaml\n  autodebug run -c autodebug.yaml --resume --iterations 3")]
    Run(cmd::session::RunArgs),
    // -- commands: add one variant per sub-command above this line --
    /// The simulated inference engine.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
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
    let global = Global { verbose: cli.verbose, quiet: cli.quiet };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => cmd::session::demo(args, &global).await,
            Command::Run(args) => cmd::session::run(args, &global).await,
            // -- dispatch: add one arm per sub-command above this line --
            Command::Sim { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
