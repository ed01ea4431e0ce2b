//! Why an engine failed to start or to run, read from its own log: the ROOT cause (the line that
//! says why), not the last lines of a traceback, which often only point back at it ("See root
//! cause above").
//!
//! One table classifies a line ([`classify_line`]); the telemetry crate's error signals use the
//! same table, so a failure class means the same thing in a trail, a finding and a planner rule.
//!
//! ```
//! use autodebug_core::{LogLine, failure::{root_cause, FailureClass}};
//! let logs = [LogLine { time_ns: 0, text: "vllm: error: unrecognized arguments: --frobnicate-widgets 7".into() }];
//! let cause = root_cause(&logs, "deploy failed").unwrap();
//! assert_eq!(cause.class, FailureClass::UnknownFlag);
//! assert_eq!(cause.flag.as_deref(), Some("--frobnicate-widgets"));
//! ```

use serde::{Deserialize, Serialize};

use crate::{ErrorKind, LogLine};

/// Why a deployment failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The engine does not know a launch flag (argparse `unrecognized arguments`).
    UnknownFlag,
    /// A flag's value was rejected (argparse `invalid choice`/`invalid int value`, pydantic validation).
    InvalidValue,
    /// The machine lacks what the configuration needs (devices, NUMA nodes).
    Hardware,
    /// The KV cache cannot hold one request of the configured context length.
    KvCacheTooSmall,
    /// The engine ran out of (device or host) memory.
    OutOfMemory,
    /// The engine never answered its health check and its log says nothing that explains why.
    NeverHealthy,
    /// The engine process died (a fault, an unclassified exception).
    Crashed,
    /// No known failure line.
    Unknown,
}

impl FailureClass {
    /// The class in snake_case, as it is serialized and as error signals name it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::UnknownFlag => "unknown_flag",
            FailureClass::InvalidValue => "invalid_value",
            FailureClass::Hardware => "hardware",
            FailureClass::KvCacheTooSmall => "kv_cache_too_small",
            FailureClass::OutOfMemory => "out_of_memory",
            FailureClass::NeverHealthy => "never_healthy",
            FailureClass::Crashed => "crashed",
            FailureClass::Unknown => "unknown",
        }
    }

    /// A config that failed this way fails again unchanged.
    pub fn is_deterministic(self) -> bool {
        matches!(
            self,
            FailureClass::UnknownFlag
                | FailureClass::InvalidValue
                | FailureClass::Hardware
                | FailureClass::KvCacheTooSmall
                | FailureClass::OutOfMemory
        )
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The engine's own explanation of a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    pub class: FailureClass,
    /// The engine's own line that says why (verbatim, engine prefix kept).
    pub line: String,
    /// The launch flag it names or implies, e.g. `--max-num-seqs`, `--tensor-parallel-size`, `--frobnicate-widgets`.
    pub flag: Option<String>,
    /// Up to a few following lines that complete it (pydantic field errors).
    pub detail: Vec<String>,
    /// What to do, one sentence.
    pub hint: String,
}

/// Where a pattern finds the flag a line is about.
#[derive(Debug, Clone, Copy)]
enum FlagFrom {
    None,
    /// Always this flag (the NUMA assertion is about tensor parallelism).
    Fixed(&'static str),
    /// The first `--flag` after the pattern (`unrecognized arguments: --x 7`).
    AfterNeedle,
    /// argparse's `argument --x/-y:` or llama.cpp's `argument "--x"`.
    Argument,
    /// Any `--flag` the line mentions (`try to increase --mem-fraction-static`).
    Anywhere,
}

/// How strongly a line explains a failure: lower wins, so a specific assertion beats the
/// generic `RuntimeError` that re-raises it.
const SPECIFIC: u8 = 0;
const FAULT: u8 = 1;
const GENERIC: u8 = 2;
const POINTER: u8 = 3;

struct Pattern {
    needle: &'static str,
    class: FailureClass,
    flag: FlagFrom,
    rank: u8,
}

const fn pattern(needle: &'static str, class: FailureClass, flag: FlagFrom, rank: u8) -> Pattern {
    Pattern { needle, class, flag, rank }
}

use FailureClass::{Crashed, Hardware, InvalidValue, KvCacheTooSmall, OutOfMemory, UnknownFlag};

/// What a line contains → its class; the first match wins, so the most specific comes first.
const PATTERNS: &[Pattern] = &[
    // argparse (vLLM, SGLang) and llama.cpp's argument parser.
    pattern("unrecognized arguments:", UnknownFlag, FlagFrom::AfterNeedle, SPECIFIC),
    pattern("error: invalid argument:", UnknownFlag, FlagFrom::AfterNeedle, SPECIFIC),
    pattern("error while handling argument", InvalidValue, FlagFrom::Argument, SPECIFIC),
    pattern("error: argument ", InvalidValue, FlagFrom::Argument, SPECIFIC),
    // pydantic: the field names follow on the next lines (see `root_cause`).
    pattern("validation error for ", InvalidValue, FlagFrom::None, SPECIFIC),
    pattern("validation errors for ", InvalidValue, FlagFrom::None, SPECIFIC),
    // Topology and devices.
    pattern("Not enough allowed NUMA nodes", Hardware, FlagFrom::Fixed("--tensor-parallel-size"), SPECIFIC),
    pattern(
        "exceeds the total number of available GPUs",
        Hardware,
        FlagFrom::Fixed("--tensor-parallel-size"),
        SPECIFIC,
    ),
    pattern("larger than the number of available GPUs", Hardware, FlagFrom::Fixed("--tensor-parallel-size"), SPECIFIC),
    pattern("No CUDA GPUs are available", Hardware, FlagFrom::None, SPECIFIC),
    pattern("no CUDA-capable device", Hardware, FlagFrom::None, SPECIFIC),
    pattern("Failed to infer device type", Hardware, FlagFrom::None, SPECIFIC),
    // KV cache too small for the context length.
    pattern(
        "larger than the maximum number of tokens that can be stored in KV cache",
        KvCacheTooSmall,
        FlagFrom::Fixed("--max-model-len"),
        SPECIFIC,
    ),
    pattern(
        "which is larger than the available KV cache memory",
        KvCacheTooSmall,
        FlagFrom::Fixed("--max-model-len"),
        SPECIFIC,
    ),
    pattern(
        "No available memory for the cache blocks",
        KvCacheTooSmall,
        FlagFrom::Fixed("--gpu-memory-utilization"),
        SPECIFIC,
    ),
    // Memory.
    pattern("CUDA out of memory", OutOfMemory, FlagFrom::Anywhere, SPECIFIC),
    pattern("OutOfMemoryError", OutOfMemory, FlagFrom::Anywhere, SPECIFIC),
    pattern("Not enough memory", OutOfMemory, FlagFrom::Anywhere, SPECIFIC),
    pattern("Cannot allocate memory", OutOfMemory, FlagFrom::Anywhere, SPECIFIC),
    pattern("MemoryError", OutOfMemory, FlagFrom::Anywhere, SPECIFIC),
    pattern("std::bad_alloc", OutOfMemory, FlagFrom::Anywhere, SPECIFIC),
    pattern("failed to allocate", OutOfMemory, FlagFrom::Anywhere, SPECIFIC),
    pattern("out of memory", OutOfMemory, FlagFrom::Anywhere, SPECIFIC),
    // llama.cpp cannot read the model file.
    pattern("error loading model", InvalidValue, FlagFrom::Fixed("--model"), SPECIFIC),
    pattern("failed to load model", InvalidValue, FlagFrom::Fixed("--model"), SPECIFIC),
    // Faults: the process died; a retry may run.
    pattern("illegal memory access", Crashed, FlagFrom::None, FAULT),
    pattern("CUDA error", Crashed, FlagFrom::None, FAULT),
    pattern("Segmentation fault", Crashed, FlagFrom::None, FAULT),
    pattern("core dumped", Crashed, FlagFrom::None, FAULT),
    pattern("Fatal Python error", Crashed, FlagFrom::None, FAULT),
    // Lines that only point at a cause printed earlier.
    pattern("See root cause above", Crashed, FlagFrom::None, POINTER),
    pattern("See stack trace (above)", Crashed, FlagFrom::None, POINTER),
    pattern("Engine core initialization failed", Crashed, FlagFrom::None, POINTER),
    pattern("EngineDeadError", Crashed, FlagFrom::None, POINTER),
];

/// What a deployer's message says when the engine never became healthy.
const NEVER_HEALTHY: &[&str] = &[
    "not healthy within",
    "did not become ready",
    "did not become healthy",
    "never became healthy",
    "not ready after",
    "not ready within",
    "timed out waiting",
];

/// The most lines of detail a root cause carries.
const MAX_DETAIL: usize = 6;

/// Classification of one line: its failure class and the flag it names or implies, or `None`
/// for a line that does not say the engine failed.
///
/// ```
/// use autodebug_core::failure::{classify_line, FailureClass};
/// let (class, flag) = classify_line("vllm serve: error: argument --dtype: invalid choice: 'float8'").unwrap();
/// assert_eq!((class, flag.as_deref()), (FailureClass::InvalidValue, Some("--dtype")));
/// assert!(classify_line("(APIServer pid=1) INFO 12-06 12:20:14 [api_utils.py:286] non-default args: {}").is_none());
/// ```
pub fn classify_line(text: &str) -> Option<(FailureClass, Option<String>)> {
    classify(text).map(|(class, flag, _)| (class, flag))
}

fn classify(text: &str) -> Option<(FailureClass, Option<String>, u8)> {
    let body = strip_engine_prefix(text);
    // Lines that mention an error while saying the engine is fine (warnings, help text).
    if is_warning(text) {
        return None;
    }
    for p in PATTERNS {
        if let Some(at) = body.find(p.needle) {
            let flag = match p.flag {
                FlagFrom::None => None,
                FlagFrom::Fixed(flag) => Some(flag.to_string()),
                FlagFrom::AfterNeedle => first_long_flag(&body[at + p.needle.len()..]),
                FlagFrom::Argument => argument_flag(body),
                FlagFrom::Anywhere => first_long_flag(body),
            };
            return Some((p.class, flag, p.rank));
        }
    }
    let trimmed = body.trim_start();
    if is_argparse_error(trimmed) {
        return Some((InvalidValue, argument_flag(trimmed).or_else(|| first_long_flag(trimmed)), GENERIC));
    }
    let exception = python_exception(trimmed)?;
    // vLLM and SGLang check their configuration with ValueError; one that names a flag or a
    // config field in backquotes is a rejected value.
    if exception.ends_with("ValueError") {
        let message = &trimmed[exception.len() + 1..];
        if let Some(flag) = first_long_flag(message).or_else(|| backquoted_field(message)) {
            return Some((InvalidValue, Some(flag), GENERIC));
        }
    }
    Some((Crashed, None, GENERIC))
}

/// The kind of a start that failed with `logs` as the engine's output: a rejected configuration
/// when the root cause holds whatever is retried (an unknown flag, a refused value, too little
/// memory or hardware), else transient (a crash nothing explains may not happen again).
///
/// ```
/// use autodebug_core::{ErrorKind, LogLine, failure::start_failure_kind};
/// let line = |text: &str| LogLine { time_ns: 0, text: text.into() };
/// assert_eq!(start_failure_kind(&[line("vllm: error: unrecognized arguments: --frobnicate 7")]), ErrorKind::RejectedConfig);
/// assert_eq!(start_failure_kind(&[line("Segmentation fault (core dumped)")]), ErrorKind::Transient);
/// ```
pub fn start_failure_kind(logs: &[LogLine]) -> ErrorKind {
    match root_cause(logs, "") {
        Some(cause) if cause.class.is_deterministic() => ErrorKind::RejectedConfig,
        _ => ErrorKind::Transient,
    }
}

/// Finds why the engine failed: the most specific failure line in `logs` (the earliest of equal
/// ones, which is where a traceback's root sits), else a line of the deployer's `message`, else
/// a health timeout the message reports. `None` only when neither says anything.
///
/// ```
/// use autodebug_core::{LogLine, failure::{root_cause, FailureClass}};
/// let logs: Vec<LogLine> = [
///     "AssertionError: Not enough allowed NUMA nodes to bind threads of 2 local CPUWorkers.",
///     "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
/// ].iter().map(|t| LogLine { time_ns: 0, text: t.to_string() }).collect();
/// let cause = root_cause(&logs, "").unwrap();
/// assert_eq!(cause.class, FailureClass::Hardware);
/// assert!(cause.line.starts_with("AssertionError"));
/// ```
pub fn root_cause(logs: &[LogLine], message: &str) -> Option<RootCause> {
    let lines: Vec<&str> = logs.iter().flat_map(|l| l.text.lines()).collect();
    if let Some(cause) = best_in(&lines) {
        return Some(cause);
    }
    let message_lines: Vec<&str> = message.lines().collect();
    if let Some(cause) = best_in(&message_lines) {
        return Some(cause);
    }
    let first_line = message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let lowered = message.to_ascii_lowercase();
    if NEVER_HEALTHY.iter().any(|needle| lowered.contains(needle)) {
        return Some(cause(FailureClass::NeverHealthy, first_line.to_string(), None, Vec::new()));
    }
    if lowered.contains("exited with") || lowered.contains("exit status") || lowered.contains("killed") {
        return Some(cause(FailureClass::Crashed, first_line.to_string(), None, Vec::new()));
    }
    let last_error = lines.iter().rev().map(|l| l.trim()).find(|l| l.to_ascii_lowercase().contains("error"));
    last_error
        .or((!first_line.is_empty()).then_some(first_line))
        .map(|line| cause(FailureClass::Unknown, line.to_string(), None, Vec::new()))
}

fn best_in(lines: &[&str]) -> Option<RootCause> {
    let mut best: Option<(usize, FailureClass, Option<String>, u8)> = None;
    for (i, line) in lines.iter().enumerate() {
        if let Some((class, flag, rank)) = classify(line)
            && best.as_ref().is_none_or(|b| rank < b.3)
        {
            best = Some((i, class, flag, rank));
        }
    }
    let (i, class, mut flag, _) = best?;
    let mut detail = Vec::new();
    if lines[i].contains("validation error") {
        detail = pydantic_detail(&lines[i + 1..]);
        if flag.is_none() {
            flag = detail
                .iter()
                .find(|l| is_field_name(l))
                .map(|field| format!("--{}", field.rsplit('.').next().unwrap_or(field).replace('_', "-")))
                .or_else(|| detail.iter().find_map(|l| value_error_field(l)));
        }
    }
    Some(cause(class, lines[i].trim_end().to_string(), flag, detail))
}

fn cause(class: FailureClass, line: String, flag: Option<String>, detail: Vec<String>) -> RootCause {
    let hint = hint(class, flag.as_deref());
    RootCause { class, line, flag, detail, hint }
}

fn hint(class: FailureClass, flag: Option<&str>) -> String {
    let named = |what: &str| flag.map(|f| format!("`{f}`")).unwrap_or_else(|| what.to_string());
    match class {
        FailureClass::UnknownFlag => format!(
            "{} is not an argument of the installed engine version: drop it or use the name its `--help` lists",
            named("a flag")
        ),
        FailureClass::InvalidValue => format!(
            "the engine rejected the value of {}: use a value inside the range or choices the line states",
            named("a setting")
        ),
        FailureClass::Hardware => format!(
            "the machine lacks what this configuration needs (devices, NUMA nodes): keep {} within what the target has",
            named("the parallelism")
        ),
        FailureClass::KvCacheTooSmall => format!(
            "the KV cache cannot hold one request of the context length: lower {} or give the KV cache more memory \
             (`--gpu-memory-utilization`, `VLLM_CPU_KVCACHE_SPACE` on CPU)",
            named("`--max-model-len`")
        ),
        FailureClass::OutOfMemory => format!(
            "the engine ran out of memory: lower {} or the batch limits (`--max-num-seqs`, `--max-num-batched-tokens`)",
            named("the memory it reserves")
        ),
        FailureClass::NeverHealthy => "the engine never answered its health check in time and its log does not say \
                                       why: allow a longer start (first starts compile) or read what it was doing"
            .to_string(),
        FailureClass::Crashed => {
            "the engine process died: the same configuration may run on a retry; the line says where".to_string()
        }
        FailureClass::Unknown => "no known failure line: read the engine log around the quoted line".to_string(),
    }
}

/// The lines after pydantic's `N validation errors for X`: field names and their indented messages,
/// without the `For further information visit` links.
fn pydantic_detail(following: &[&str]) -> Vec<String> {
    let mut detail = Vec::new();
    for line in following {
        let body = strip_engine_prefix(line);
        let trimmed = body.trim();
        if trimmed.is_empty() || trimmed.starts_with("For further information visit") {
            continue;
        }
        let indented = body.starts_with(' ') || body.starts_with('\t');
        if !(indented || is_field_name(trimmed)) || detail.len() >= MAX_DETAIL {
            break;
        }
        detail.push(trimmed.to_string());
    }
    detail
}

/// `max_num_seqs`, `scheduler_config.max_num_seqs`.
fn is_field_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// The log line without vLLM's `(EngineCore pid=1) ERROR 12-06 13:12:34 [core.py:1510] ` or
/// SGLang's `[2026-03-24 20:40:00 TP0] ` prefix; indentation after the prefix is kept.
pub(crate) fn strip_engine_prefix(text: &str) -> &str {
    let mut rest = text.trim_start();
    let mut stripped = false;
    if rest.starts_with('(')
        && let Some(end) = rest.find(") ")
        && rest[..end].contains("pid=")
    {
        rest = &rest[end + 2..];
        stripped = true;
    }
    for level in ["DEBUG ", "INFO ", "WARNING ", "ERROR ", "CRITICAL "] {
        if let Some(after) = rest.strip_prefix(level) {
            let dated = after.starts_with(|c: char| c.is_ascii_digit());
            if let (true, Some(close)) = (dated, after.find("] ")) {
                return &after[close + 2..];
            }
        }
    }
    if rest.starts_with("[20")
        && let Some(close) = rest.find("] ")
    {
        return &rest[close + 2..];
    }
    if stripped { rest } else { text }
}

/// A logged warning that quotes an error without being one (`... fd limit errors like OSError ...`).
fn is_warning(text: &str) -> bool {
    let rest = text.trim_start();
    let rest = if rest.starts_with('(') { rest.find(") ").map_or(rest, |i| &rest[i + 2..]) } else { rest };
    rest.starts_with("WARNING ") || rest.starts_with("INFO ") || rest.starts_with("DEBUG ")
}

/// argparse and llama.cpp print `prog: error: ...` or `error: ...` before exiting.
fn is_argparse_error(trimmed: &str) -> bool {
    trimmed.starts_with("error: ")
        || trimmed.find(": error: ").is_some_and(|i| {
            !trimmed[..i].contains(' ') || trimmed[..i].ends_with(".py") || &trimmed[..i] == "vllm serve"
        })
}

/// The exception of a traceback's last line: `ValueError: ...`,
/// `pydantic_core._pydantic_core.ValidationError: ...`, `torch.OutOfMemoryError: ...`.
fn python_exception(trimmed: &str) -> Option<&str> {
    let (name, _) = trimmed.split_once(':')?;
    let leaf = name.rsplit('.').next()?;
    let is_identifier = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    let is_exception = ["Error", "Exception", "Interrupt", "Exit"].iter().any(|s| leaf.ends_with(s));
    (is_identifier && is_exception && leaf.chars().next().is_some_and(|c| c.is_ascii_uppercase())).then_some(name)
}

/// The first `--long-flag` in `text`.
fn first_long_flag(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '`' | '\'' | '"' | '(' | ')' | '='))
        .find(|w| w.len() > 2 && w.starts_with("--") && w[2..].starts_with(|c: char| c.is_ascii_alphabetic()))
        .map(|w| w.trim_end_matches(['.', ':', ';']).to_string())
}

/// argparse's `argument --tensor-parallel-size/-tp: ...` or llama.cpp's `argument "--ctx-size": ...`.
fn argument_flag(text: &str) -> Option<String> {
    let at = text.find("argument ")? + "argument ".len();
    let name = text[at..].split([':', ' ']).next()?.trim_matches('"');
    let long = name.split('/').find(|n| n.starts_with("--")).or_else(|| name.split('/').find(|n| n.starts_with('-')));
    long.filter(|n| n.len() > 1).map(str::to_string)
}

/// The first field a model-level pydantic check quotes with its value, as a flag: `Value error,
/// max_num_batched_tokens (512) is smaller than max_model_len (1024)` → `--max-num-batched-tokens`;
/// `Value error, User-specified max_model_len (4096) is greater than ...` → `--max-model-len`.
fn value_error_field(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("Value error,")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    words.windows(2).find_map(|pair| {
        let (field, value) = (pair[0], pair[1]);
        let snake =
            field.contains('_') && field.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        (snake && value.starts_with('(')).then(|| format!("--{}", field.replace('_', "-")))
    })
}

/// A config field in backquotes (`` `max_model_len` ``), as a flag.
fn backquoted_field(text: &str) -> Option<String> {
    let mut parts = text.split('`');
    parts.next()?;
    let field = parts.next()?;
    (field.contains('_') && is_field_name(field)).then(|| format!("--{}", field.replace('_', "-")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(text: &str) -> Vec<LogLine> {
        text.lines().map(|t| LogLine { time_ns: 0, text: t.to_string() }).collect()
    }

    const UNKNOWN: &str = include_str!("../tests/fixtures/vllm_cpu/vllm_0.32.0_error_unknown.log");
    const BAD_CHOICE: &str = include_str!("../tests/fixtures/vllm_cpu/vllm_0.32.0_error_badchoice.log");
    const BAD_TYPE: &str = include_str!("../tests/fixtures/vllm_cpu/vllm_0.32.0_error_badtype.log");
    const BAD_SEQS: &str = include_str!("../tests/fixtures/vllm_cpu/vllm_0.32.0_error_badseqs.log");
    const LONG_CONTEXT: &str = include_str!("../tests/fixtures/vllm_cpu/vllm_0.32.0_error_max_model_len.log");
    const TP2_NUMA: &str = include_str!("../tests/fixtures/vllm_cpu/vllm_0.32.0_error_tp2_numa.log");
    const STARTUP: &str = include_str!("../tests/fixtures/vllm_cpu/vllm_0.32.0_cpu_startup.log");

    #[test]
    fn unknown_flag_from_real_argparse_output() {
        let cause = root_cause(&log(UNKNOWN), "exited with exit status: 2").unwrap();
        assert_eq!(cause.class, FailureClass::UnknownFlag);
        assert_eq!(cause.flag.as_deref(), Some("--frobnicate-widgets"));
        assert_eq!(cause.line, "vllm: error: unrecognized arguments: --frobnicate-widgets 7");
        assert!(cause.hint.contains("--frobnicate-widgets"), "{}", cause.hint);
        assert!(cause.class.is_deterministic());
    }

    #[test]
    fn invalid_values_from_real_argparse_output() {
        let choice = root_cause(&log(BAD_CHOICE), "").unwrap();
        assert_eq!((choice.class, choice.flag.as_deref()), (FailureClass::InvalidValue, Some("--dtype")));
        assert!(choice.line.contains("invalid choice: 'float8'"));
        let int = root_cause(&log(BAD_TYPE), "").unwrap();
        assert_eq!((int.class, int.flag.as_deref()), (FailureClass::InvalidValue, Some("--max-num-seqs")));
        assert!(int.line.contains("invalid int value: 'abc'"));
    }

    #[test]
    fn a_model_level_validation_error_names_the_field_its_message_opens_with() {
        // Recorded from the real vLLM 0.32 CPU engine: `--max-num-batched-tokens 512
        // --no-enable-chunked-prefill --max-model-len 1024` fails in SchedulerConfig's own check.
        let log = "pydantic_core._pydantic_core.ValidationError: 1 validation error for SchedulerConfig\n  \
                   Value error, max_num_batched_tokens (512) is smaller than max_model_len (1024). Please increase \
                   max_num_batched_tokens or decrease max_model_len. [type=value_error]";
        let lines: Vec<LogLine> = log.lines().map(|l| LogLine { time_ns: 0, text: l.to_string() }).collect();
        let cause = root_cause(&lines, "deploy failed").unwrap();
        assert_eq!(cause.class, FailureClass::InvalidValue);
        assert_eq!(cause.flag.as_deref(), Some("--max-num-batched-tokens"));
        assert!(cause.detail.iter().any(|d| d.contains("smaller than max_model_len")), "{:?}", cause.detail);
    }

    /// A context longer than the model's own (`--max-model-len 4096` on a 2048-position model):
    /// ModelConfig's check, a value the catalog's ranges cannot know is wrong for this model.
    #[test]
    fn a_context_longer_than_the_models_is_an_invalid_max_model_len() {
        let cause = root_cause(&log(LONG_CONTEXT), "").unwrap();
        assert_eq!(cause.class, FailureClass::InvalidValue);
        assert_eq!(cause.flag.as_deref(), Some("--max-model-len"));
        assert!(cause.line.contains("validation error for ModelConfig"), "{}", cause.line);
        assert!(cause.detail.iter().any(|d| d.contains("User-specified max_model_len (4096)")), "{:?}", cause.detail);
    }

    #[test]
    fn pydantic_validation_error_names_the_first_field_and_keeps_the_field_lines() {
        let cause = root_cause(&log(BAD_SEQS), "").unwrap();
        assert_eq!(cause.class, FailureClass::InvalidValue);
        assert!(cause.line.starts_with("pydantic_core._pydantic_core.ValidationError: 2 validation errors"));
        assert_eq!(cause.flag.as_deref(), Some("--max-num-batched-tokens"));
        assert_eq!(cause.detail.len(), 4, "{:?}", cause.detail);
        assert_eq!(cause.detail[0], "max_num_batched_tokens");
        assert!(cause.detail[1].starts_with("Input should be greater than or equal to 1"));
        assert_eq!(cause.detail[2], "max_num_seqs");
        assert!(cause.detail[3].contains("input_value=-3,"), "{:?}", cause.detail);
        assert!(cause.detail.iter().all(|l| !l.contains("errors.pydantic.dev")));
    }

    #[test]
    fn numa_assertion_wins_over_the_generic_runtime_error_after_it() {
        let logs = log(TP2_NUMA);
        assert!(logs.last().unwrap().text.contains("See root cause above"), "the fixture ends with the pointer");
        let cause = root_cause(&logs, "").unwrap();
        assert_eq!(cause.class, FailureClass::Hardware);
        assert_eq!(cause.flag.as_deref(), Some("--tensor-parallel-size"));
        // The first occurrence, with the engine's own prefix kept verbatim.
        assert!(
            cause.line.starts_with("(EngineCore pid=21341) ERROR 12-06 13:12:34 [core.py:1510] AssertionError: Not enough allowed NUMA nodes to bind threads of 2 local CPUWorkers"),
            "{}",
            cause.line
        );
        // Without the assertion, the generic line is all there is.
        let without: Vec<LogLine> = logs.into_iter().filter(|l| !l.text.contains("AssertionError")).collect();
        let generic = root_cause(&without, "").unwrap();
        assert_eq!(generic.class, FailureClass::Crashed);
        assert!(!generic.class.is_deterministic());
    }

    #[test]
    fn a_healthy_startup_log_has_no_failure_line() {
        for line in STARTUP.lines() {
            assert_eq!(classify_line(line), None, "{line}");
        }
    }

    #[test]
    fn kv_cache_too_small_and_out_of_memory() {
        let kv = "(EngineCore_0 pid=9) ERROR 01-01 00:00:00 [core.py:1] ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be stored in KV cache (16384). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.";
        assert_eq!(classify_line(kv), Some((FailureClass::KvCacheTooSmall, Some("--max-model-len".into()))));
        let oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.";
        assert_eq!(classify_line(oom).map(|c| c.0), Some(FailureClass::OutOfMemory));
        let sglang = "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.";
        assert_eq!(classify_line(sglang), Some((FailureClass::OutOfMemory, Some("--mem-fraction-static".into()))));
    }

    #[test]
    fn never_healthy_only_when_the_log_does_not_explain() {
        let message = "deployment tiny not ready after 600.0s: GET http://127.0.0.1:8011/health did not become ready";
        let quiet = log("INFO 12-06 12:20:14 [api_utils.py:286] non-default args: {'max_model_len': 1024}");
        assert_eq!(root_cause(&quiet, message).unwrap().class, FailureClass::NeverHealthy);
        let loud = log(UNKNOWN);
        assert_eq!(root_cause(&loud, message).unwrap().class, FailureClass::UnknownFlag);
        assert_eq!(root_cause(&[], ""), None);
    }

    #[test]
    fn the_deployers_message_is_read_when_the_logs_are_empty() {
        let message = "`vllm serve` exited with exit status: 2 before it answered; its last output:\n  vllm: error: unrecognized arguments: --x 1";
        let cause = root_cause(&[], message).unwrap();
        assert_eq!((cause.class, cause.flag.as_deref()), (FailureClass::UnknownFlag, Some("--x")));
    }

    #[test]
    fn llama_cpp_argument_errors() {
        assert_eq!(
            classify_line("error: invalid argument: --bogus"),
            Some((FailureClass::UnknownFlag, Some("--bogus".into())))
        );
        assert_eq!(
            classify_line("error while handling argument \"--ctx-size\": stoi"),
            Some((FailureClass::InvalidValue, Some("--ctx-size".into())))
        );
    }

    #[test]
    fn warnings_that_quote_errors_are_not_failures() {
        let w = "(APIServer pid=18687) WARNING 12-06 12:20:14 [system_utils.py:255] Found ulimit of 20000 and failed to automatically increase with error current limit exceeds maximum limit. This can cause fd limit errors like `OSError: [Errno 24] Too many open files`.";
        assert_eq!(classify_line(w), None);
        assert_eq!(classify_line("INFO: the error rate is fine"), None);
    }

    #[test]
    fn serde_names_are_snake_case() {
        assert_eq!(serde_json::to_string(&FailureClass::KvCacheTooSmall).unwrap(), "\"kv_cache_too_small\"");
        assert_eq!(FailureClass::KvCacheTooSmall.as_str(), "kv_cache_too_small");
    }
}
