//! [`SimError`], and the helpers that word a bad flag value the way the engine's argparse does.

use autodebug_core::EngineKind;

/// What goes wrong before a single token is served.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Flags the engine's argument parser does not know (argparse wording).
    #[error("{program}: error: unrecognized arguments: {}", args.join(" "))]
    UnknownFlag { program: &'static str, args: Vec<String> },
    /// A known flag with a value the parser or the engine's checks reject (argparse wording).
    #[error("{program}: error: argument {flag}: {reason}")]
    BadValue { program: &'static str, flag: String, value: String, reason: String },
    #[error(
        "unknown GPU `{0}`: the simulator knows H100, H200, A100 and L4 (write e.g. `H100`, `h100-80gb` or `H100:80GB:2`)"
    )]
    UnknownGpu(String),
    #[error(
        "unknown model `{0}`: the simulator knows Qwen/Qwen1.5-0.5B-Chat, Qwen/Qwen2.5-7B-Instruct, meta-llama/Llama-3.1-8B-Instruct and meta-llama/Llama-3.1-70B-Instruct (short names such as `qwen1.5-0.5b` work too)"
    )]
    UnknownModel(String),
    #[error("the simulator models sglang and vllm, not {0}; point the loop at a real {0} server instead")]
    UnsupportedEngine(EngineKind),
    /// The weights, KV pool, CUDA graphs and activations do not fit: the engine's own OOM text.
    #[error("{message}")]
    StartupOom { message: String, needed_gb: f64, available_gb: f64 },
    /// Any other startup failure, in the engine's words.
    #[error("{message}")]
    Startup { message: String },
    /// A request the engine refuses (prompt longer than the context window...).
    #[error("{message}")]
    InvalidRequest { message: String },
}

pub(super) fn program(engine: EngineKind) -> &'static str {
    match engine {
        EngineKind::Vllm => "vllm serve",
        _ => "launch_server.py",
    }
}

pub(super) fn bad(program: &'static str, flag: &str, value: &str, reason: String) -> SimError {
    SimError::BadValue { program, flag: flag.to_string(), value: value.to_string(), reason }
}

pub(super) fn bad_choice(program: &'static str, flag: &str, value: &str, choices: &[&str]) -> SimError {
    let listed: Vec<String> = choices.iter().map(|c| format!("'{c}'")).collect();
    bad(program, flag, value, format!("invalid choice: '{value}' (choose from {})", listed.join(", ")))
}

pub(super) fn parse_int<T: std::str::FromStr>(program: &'static str, flag: &str, value: &str) -> Result<T, SimError> {
    value.parse().map_err(|_| bad(program, flag, value, format!("invalid int value: '{value}'")))
}

pub(super) fn parse_positive(program: &'static str, flag: &str, value: &str) -> Result<u32, SimError> {
    let number: u32 = parse_int(program, flag, value)?;
    if number == 0 {
        return Err(bad(program, flag, value, "must be at least 1".into()));
    }
    Ok(number)
}

pub(super) fn parse_float(program: &'static str, flag: &str, value: &str) -> Result<f64, SimError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| bad(program, flag, value, format!("invalid float value: '{value}'")))
}
