//! `autodebug`: the telemetry-driven optimization loop for LLM inference services, on the command line.
//!
//! A thin binary: it parses arguments, composes the library crates and prints results. Each
//! sub-command lives in its own module under `cmd/`.

// Every sub-command's stdout: a reader that went away (`autodebug history list | head`) ends the
// output quietly instead of panicking as `std::println!` does. Defined before the modules so
// they all see these in place of std's.
macro_rules! println {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! print {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}
// And stderr: an error message that quotes a command line or an engine's line goes through the
// same redaction as the logs.
macro_rules! eprintln {
    ($($arg:tt)*) => { $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

mod cmd;
mod compose;
mod config;
mod output;

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "autodebug",
    version,
    about = "Deploy, benchmark, read telemetry, find the bottleneck, plan the next config, redeploy: unattended."
)]
#[command(
    after_help = "Examples:\n  autodebug demo --iterations 4 --out /tmp/demo\n  autodebug run -c autodebug.yaml\n  autodebug run -c autodebug.yaml --resume\n  autodebug sim serve --engine sglang --gpu H100 --model qwen1.5-0.5b --port 30000\n\nExit codes: 0 success, 1 error (the message names the file, field or URL), 2 usage error,\n3 a budget check failed (`check --strict`), 130 interrupted twice."
)]
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

// Parsed once per process: the size of the largest arguments costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the loop on the built-in simulator from the published autodebug baseline
    /// (Qwen1.5-0.5B-Chat, SGLang defaults, 1x H100).
    #[command(after_help = "Example:\n  autodebug demo --iterations 4 --out /tmp/demo --json")]
    Demo(cmd::session::DemoArgs),
    /// Run a configured session (deployer, baseline, benchmarks, objective, planner, budget).
    #[command(
        after_help = "Examples:\n  autodebug run -c autodebug.yaml\n  autodebug run -c autodebug.yaml --resume --iterations 3\n  autodebug run -c autodebug.yaml --from-known-good   # start from the last champion on this model and GPU\n  autodebug run -c examples/llm-planner.yaml\n  autodebug run -c autodebug.yaml --planner llm   # reads the file's `llm:` section; key from OPENAI_API_KEY"
    )]
    Run(cmd::session::RunArgs),
    /// Write a self-contained HTML report of a session (SVG charts inline), and its charts as
    /// SVG or PNG files for slides.
    #[command(
        after_help = "Examples:\n  autodebug report --db sessions --out report.html\n  autodebug report --db /tmp/demo --session NAME --out /tmp/report.html --png-dir /tmp/charts"
    )]
    Report(cmd::report::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  autodebug completions bash > ~/.local/share/bash-completion/completions/autodebug\n  autodebug completions zsh > ~/.zfunc/_autodebug\n  autodebug completions fish > ~/.config/fish/completions/autodebug.fish"
    )]
    Completions(cmd::completions::Args),
    /// Write a commented starter autodebug.yaml for a deployment target.
    #[command(
        after_help = "Examples:\n  autodebug init\n  autodebug init --target local --out autodebug.yaml --force\n  autodebug init --target dstack --out -"
    )]
    Init(cmd::init::Args),
    /// Print the autodebug.yaml reference (markdown, generated from the config types).
    #[command(
        after_help = "Examples:\n  autodebug config-reference > docs/config-reference.md\n  autodebug config-reference --json > autodebug.schema.json"
    )]
    ConfigReference(cmd::config_reference::Args),
    /// Benchmark an OpenAI-compatible endpoint: load modes, workloads, trials, sweeps, A/B.
    #[command(
        after_help = "Examples:\n  autodebug bench --url http://127.0.0.1:30000 --model qwen --concurrency 8 --requests 64 --isl 512 --osl 128\n  autodebug bench --url URL --model M --rate 4 --arrival gamma --burstiness 0.5 --duration 60s --json report.json --jsonl requests.jsonl\n  autodebug bench --url URL --model M --sweep-concurrency 1,2,4,8 --trials 3\n  autodebug bench --url URL_A --compare-url URL_B --model M --concurrency 4 --trials 5 --metric output_throughput\n  autodebug bench --url URL --model M --dataset sharegpt.jsonl --tokenizer tokenizer.json\n  autodebug bench --self-check --json\n  autodebug bench --self-check --quick --json self-check.json\n\nThe bearer token comes from --token-env VAR, --token-file FILE, AUTODEBUG_BENCH_TOKEN or OPENAI_API_KEY; it is never printed."
    )]
    Bench(cmd::bench::Args),
    /// Analyze a PyTorch-profiler (Kineto) trace: kernel classes, GPU busy/idle, stream overlap,
    /// operators and steps.
    #[command(
        subcommand,
        after_help = "Examples:\n  autodebug trace analyze worker0.pt.trace.json.gz\n  autodebug trace analyze trace.json --top 30 --json"
    )]
    Trace(cmd::trace::Args),
    /// Analyze an engine log (SGLang, vLLM, llama.cpp): signals and a capacity plan.
    #[command(
        subcommand,
        after_help = "Examples:\n  autodebug logs analyze server.log\n  autodebug logs analyze server.log --engine vllm --isl 2000 --osl 500 --json"
    )]
    Logs(cmd::logs::Args),
    /// Hold autodebug's knob catalog against the installed engine's own argument list.
    #[command(
        subcommand,
        after_help = "Examples:\n  autodebug engines check --engine vllm --command \"vllm serve\"\n  autodebug engines check --engine llamacpp --command llama-server --json"
    )]
    Engines(cmd::engines::Args),
    /// Fetch one telemetry source (Prometheus server, Graphsignal, a live /metrics scrape) for a window.
    #[command(
        subcommand,
        after_help = "Examples:\n  autodebug telemetry fetch --source prometheus --url http://prometheus:9090 --start 2026-03-24T20:40:00Z --end 2026-03-24T20:45:00Z\n  autodebug telemetry fetch --source scrape --url http://127.0.0.1:30000 --duration 10s --json"
    )]
    Telemetry(cmd::telemetry::Args),
    /// Read the experiment store back: sessions, iterations, diffs, the champion, Pareto fronts.
    #[command(
        after_help = "Examples:\n  autodebug history list\n  autodebug history list --session demo\n  autodebug history show 3\n  autodebug history diff 1 3\n  autodebug history best --objective \"minimize e2e.mean\"\n  autodebug history pareto --x ttft.p99 --y output_throughput\n\nAll take --db PATH (default sessions/autodebug.db), --session NAME (default: the latest) and --json."
    )]
    History(cmd::history::Args),
    /// A twin of your own deployment: fit it to a session's measured iterations, check its error on
    /// iterations it was not fitted to, and ask it about configurations never deployed.
    #[command(
        after_help = "Examples:\n  autodebug twin fit --db sessions/vllm-cpu/autodebug.db --out twin.yaml\n  autodebug twin validate --db sessions/vllm-cpu/autodebug.db --leave-one-out\n  autodebug twin predict --twin twin.yaml -c examples/vllm-cpu.yaml --flags \"--max-num-seqs 8\""
    )]
    Twin(cmd::twin::Args),
    /// Judge service-level budgets on every iteration of a session (a CI gate for serving configs).
    #[command(
        after_help = "Examples:\n  autodebug check --ttft-p99-ms 200 --itl-p95-ms 20 --min-output-throughput 300 --max-error-rate 0\n  autodebug check --budget \"concurrent.e2e.p99 <= 2s\" --champion --strict --json\n\nExit codes: 0 judged (without --strict: whatever the verdicts), 1 error (no store, bad budget),\n2 usage error, 3 with --strict: a budget failed or a metric needed to judge one is missing."
    )]
    Check(cmd::check::Args),
    /// Export a session as CSV, JSON or markdown (a results table, a GitHub issue or PR body).
    #[command(
        after_help = "Examples:\n  autodebug export --format csv --out results.csv\n  autodebug export --format markdown --template issue\n  autodebug export --format markdown --template pr --session demo --out pr.md\n  autodebug export --json"
    )]
    Export(cmd::export::Args),
    /// Add benchmark reports from vLLM, SGLang, AIPerf or guidellm to the history.
    #[command(
        after_help = "Examples:\n  autodebug ingest vllm-result.json\n  autodebug ingest results.jsonl --format sglang --session sglang-sweep\n  autodebug ingest artifacts/profile_export_aiperf.json --engine sglang\n  autodebug ingest benchmarks.json --session guidellm --json\n\nFormats: vLLM `vllm bench serve --save-result` JSON, SGLang `bench_serving --output-file` JSONL,\nAIPerf profile_export_aiperf.json, guidellm benchmarks.json. Each run becomes an `ok` iteration;\nits findings name the source file, the original fields and the definitions that differ\n(guidellm's TPOT includes TTFT; its ITL and AIPerf's ITL are autodebug's tpot)."
    )]
    Ingest(cmd::ingest::Args),
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
    /// Measure the planners (rules, grid, random, oat, bayes, hybrid, twin) against the true optimum of
    /// six hand-written and any number of generated scenarios, with measurement noise, in virtual time.
    #[command(
        after_help = "Examples:\n  autodebug sim tune-suite\n  autodebug sim tune-suite --generate 30 --seed 1\n  autodebug sim tune-suite --planners random,hybrid --seeds 3 --json results.json\n  autodebug sim tune-suite --scenarios kv-starved --budget 30 --json -"
    )]
    TuneSuite(cmd::tune_suite::Args),
    /// Run the loop for a long time on the simulator with faults injected at every stage (deploy
    /// errors, crashes, cut and garbage streams, broken telemetry, hostile logs, nonsense from the
    /// LLM planner, SIGKILL and resume, a full disk, a corrupt store) and check what must hold:
    /// nothing lost, nothing leaked, nothing left running.
    #[command(
        after_help = "Examples:\n  autodebug sim chaos --iterations 500 --faults all --seed 1 --json\n  autodebug sim chaos --iterations 60 --faults stall,stream_cut,sigkill\n\nExit code 1 when an invariant does not hold."
    )]
    Chaos(cmd::chaos::Args),
    /// Evaluate configurations of the tune-suite's scenarios, one JSON line in, one out: the
    /// noisy metrics, feasibility and objective value an outside optimizer is measured on.
    #[command(
        after_help = "Examples:\n  autodebug sim eval --describe --generate 30 --skip-builtin\n  echo '{\"scenario\": \"kv-starved\", \"config\": {\"--max-running-requests\": \"16\"}, \"seed\": 3}' | autodebug sim eval\n\nEach answer: valid, failed, feasible, value, direction, constraint_violations (> 0 breaks), metrics.\nNoise is drawn per (scenario, seed, eval index); the index counts up per (scenario, seed) unless given as \"eval\"."
    )]
    Eval(cmd::sim_eval::Args),
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = log_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(output::LogWriter { ansi }).with_ansi(ansi).init();
}

/// Colour is for a person at a terminal who has not opted out (<https://no-color.org>: any
/// non-empty `NO_COLOR`); in a pipe or a CI log the escapes are noise that breaks `grep`.
fn log_colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away (`| head`)
    // instead of panicking on a broken pipe.
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
            Command::Report(args) => cmd::report::run(args, &global).await,
            Command::Completions(args) => cmd::completions::run(args, &global).await,
            Command::Init(args) => cmd::init::run(args, &global).await,
            Command::ConfigReference(args) => cmd::config_reference::run(args, &global).await,
            Command::Bench(args) => cmd::bench::run(args, &global).await,
            Command::Trace(args) => cmd::trace::run(args, &global).await,
            Command::Logs(args) => cmd::logs::run(args, &global).await,
            Command::Engines(args) => cmd::engines::run(args, &global).await,
            Command::Telemetry(args) => cmd::telemetry::run(args, &global).await,
            Command::History(args) => cmd::history::run(args, &global).await,
            Command::Twin(args) => cmd::twin::run(args, &global).await,
            Command::Check(args) => cmd::check::run(args, &global).await,
            Command::Export(args) => cmd::export::run(args, &global).await,
            Command::Ingest(args) => cmd::ingest::run(args, &global).await,
            // -- dispatch: add one arm per sub-command above this line --
            Command::Sim { command: SimCommand::TuneSuite(args) } => cmd::tune_suite::run(args, &global).await,
            Command::Sim { command: SimCommand::Eval(args) } => cmd::sim_eval::run(args, &global).await,
            Command::Sim { command: SimCommand::Chaos(args) } => cmd::chaos::run(args, &global).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some(OsStr::new(""))), "an empty NO_COLOR does not opt out");
        assert!(!log_colour(true, Some(OsStr::new("1"))));
        assert!(!log_colour(false, None));
        assert!(!log_colour(false, Some(OsStr::new(""))));
    }
}
