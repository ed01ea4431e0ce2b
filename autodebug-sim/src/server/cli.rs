//! The `autodebug-sim` command line:
//! `--engine sglang|vllm --gpu H100 --model qwen1.5-0.5b --host 127.0.0.1 --port P [--seed N]
//! [--fast] [--api-key K] -- <engine flags>`.
//!
//! The engine flags after `--` are the real engine's (e.g. `--schedule-policy lpm`); like a real
//! SGLang or vLLM command line they may also carry `--host`, `--port`, `--model-path`/`--model`,
//! `--served-model-name` and `--api-key`, which then take precedence.
//!
//! `--twin twin.yaml` serves a twin fitted to a real deployment (`autodebug twin fit`) instead of
//! the built-in model: the flags after `--` configure it as they would the real engine.

use std::process::ExitCode;

use clap::Parser;

use super::engine_log::{self, Level};
use super::{EngineKind, ServeOptions, SimConfig, flag_value, serve_engine, serve_twin, start_engine};
use crate::Engine;
use crate::twin::{Twin, TwinEngine};

/// A simulated SGLang/vLLM server: a real OpenAI-compatible HTTP API over the engine model in
/// real time.
#[derive(Debug, Parser)]
#[command(name = "autodebug-sim", version, about)]
struct SimArgs {
    /// Which engine to play: sglang or vllm.
    #[arg(long, default_value = "sglang")]
    engine: String,
    /// GPU profile, e.g. H100, A100, L4.
    #[arg(long, default_value = "H100")]
    gpu: String,
    /// Model profile: a short name (qwen1.5-0.5b) or a Hugging Face id.
    #[arg(long, default_value = "qwen1.5-0.5b")]
    model: String,
    /// Address to listen on.
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on (default: the engine's, 30000 for SGLang, 8000 for vLLM; 0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Seed of the model's noise and of answer lengths.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Do not sleep: produce tokens as fast as the client reads them (client benchmarks).
    #[arg(long)]
    fast: bool,
    /// Require `Authorization: Bearer <key>` on /v1/*.
    #[arg(long, env = "AUTODEBUG_SIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Do not print engine-style log lines.
    #[arg(long)]
    quiet: bool,
    /// Serve this fitted twin of a real deployment (`autodebug twin fit`) instead of the built-in
    /// model; its engine replaces `--engine`, and `--gpu`/`--model` are not used.
    #[arg(long, value_name = "TWIN_YAML")]
    twin: Option<std::path::PathBuf>,
    /// The engine's own flags, after `--`.
    #[arg(last = true, allow_hyphen_values = true)]
    engine_args: Vec<String>,
}

/// Runs the simulator from command-line arguments (without the program name) until it is
/// killed; returns a failure code, after printing an engine-like error, when the configuration
/// is rejected (unknown flag, startup OOM) or the address cannot be bound.
pub fn run_cli(args: &[String]) -> ExitCode {
    let argv = std::iter::once("autodebug-sim".to_string()).chain(args.iter().cloned());
    let parsed = match SimArgs::try_parse_from(argv) {
        Ok(parsed) => parsed,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let twin = match parsed.twin.as_deref().map(Twin::load).transpose() {
        Ok(twin) => twin,
        Err(error) => {
            eprintln!("autodebug-sim: error: --twin {error}");
            return ExitCode::from(2);
        }
    };
    let engine_name = twin.as_ref().map_or(parsed.engine.as_str(), |t| t.engine.as_str());
    // The built-in engine model plays SGLang and vLLM; a twin plays whichever engine it was fitted to.
    let Some(engine) =
        EngineKind::parse(engine_name).filter(|e| twin.is_some() || matches!(e, EngineKind::Sglang | EngineKind::Vllm))
    else {
        eprintln!("autodebug-sim: error: --engine must be `sglang` or `vllm`, got `{engine_name}`");
        return ExitCode::from(2);
    };
    let args = &parsed.engine_args;
    let model =
        ["--model-path", "--model", "-m"].iter().find_map(|f| flag_value(args, f)).unwrap_or(&parsed.model).to_string();
    let host =
        flag_value(args, "--host").map(str::to_string).or(parsed.host.clone()).unwrap_or_else(|| "127.0.0.1".into());
    let port = match flag_value(args, "--port").map(str::parse::<u16>) {
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("{}: error: argument --port: invalid int value", program(engine));
            return ExitCode::from(2);
        }
        None => parsed.port.unwrap_or(default_port(engine)),
    };
    let fault = super::faults::from_env();
    if let Some(code) = super::faults::startup_failure(fault, engine) {
        return ExitCode::from(code);
    }
    let options = ServeOptions {
        fault,
        seed: parsed.seed,
        model_name: ["--served-model-name", "--alias", "-a"]
            .iter()
            .find_map(|f| flag_value(args, f))
            .map(str::to_string),
        api_key: flag_value(args, "--api-key").map(str::to_string).or(parsed.api_key.clone()),
        fast: parsed.fast,
        quiet: parsed.quiet,
    };

    let start = match twin {
        Some(twin) => {
            let tuned = tuned_flags(args);
            // Refused before the port is bound, like a real engine's bad flag.
            if let Err(error) = TwinEngine::start(&twin, &tuned) {
                report_startup_error(engine, &error.to_string());
                return ExitCode::from(2);
            }
            Start::Twin(Box::new(twin), tuned)
        }
        None => {
            let config = match SimConfig::from_args(engine, &parsed.gpu, &model, args) {
                Ok(config) => config,
                Err(error) => {
                    report_startup_error(engine, &error.to_string());
                    return ExitCode::from(2);
                }
            };
            // The engine starts (and may die of OOM) before the port is bound, like the real ones.
            match start_engine(config, options.seed, options.quiet) {
                Ok(engine_model) => Start::Engine(Box::new(engine_model)),
                Err(error) => {
                    report_startup_error(engine, &error.to_string());
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("autodebug-sim: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let address = format!("{host}:{port}");
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|source| super::ServerError::Bind { address: address.clone(), source })?;
        match start {
            Start::Engine(engine_model) => serve_engine(*engine_model, listener, options).await,
            Start::Twin(twin, tuned) => serve_twin(&twin, &tuned, listener, options).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            engine_log::emit(engine, Level::Error, &error.to_string());
            ExitCode::FAILURE
        }
    }
}

enum Start {
    Engine(Box<Engine>),
    Twin(Box<Twin>, Vec<String>),
}

/// The flags that configure the engine, without those that only say where and as what it serves.
fn tuned_flags(args: &[String]) -> Vec<String> {
    // vLLM's and SGLang's serving flags, then llama-server's (`--metrics` takes no value).
    const SERVING: &[&str] =
        &["--host", "--port", "--model", "--model-path", "--served-model-name", "--api-key", "-m", "--alias", "-a"];
    const SERVING_SWITCHES: &[&str] = &["--metrics"];
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let name = arg.split('=').next().unwrap_or_default();
        if SERVING_SWITCHES.contains(&name) {
            continue;
        }
        if SERVING.contains(&name) {
            skip_value = !arg.contains('=');
            continue;
        }
        out.push(arg.clone());
    }
    out
}

fn default_port(engine: EngineKind) -> u16 {
    match engine {
        EngineKind::Vllm => 8000,
        EngineKind::LlamaCpp => 8080,
        EngineKind::Sglang => 30000,
    }
}

fn program(engine: EngineKind) -> &'static str {
    match engine {
        EngineKind::Vllm => "vllm serve",
        EngineKind::LlamaCpp => "llama-server",
        EngineKind::Sglang => "launch_server.py",
    }
}

/// argparse-style errors are printed the way argparse does (`prog: error: ...`); anything else
/// as an engine error log line.
fn report_startup_error(engine: EngineKind, message: &str) {
    if message.starts_with("error:") {
        eprintln!("{}: {message}", program(engine));
    } else if message.contains(": error: ") {
        eprintln!("{message}");
    } else {
        engine_log::emit(engine, Level::Error, message);
    }
}
