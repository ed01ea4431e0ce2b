//! Rules between knobs that an engine enforces when it starts ([`Constraint`]): a value that is
//! fine on its own can still be refused next to another one (`--max-num-batched-tokens 512` with
//! `--no-enable-chunked-prefill` and a 1024-token context), and finding that out by deploying it
//! costs a whole startup. The catalog holds them as data so each engine lists its own, the
//! pre-deploy check refuses a plan that breaks one, and the search never proposes such a point.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::{LaunchFlags, SearchSpace, ServiceSpec};

/// How two values must compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    Ge,
    Le,
}

impl Cmp {
    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Cmp::Ge => left >= right,
            Cmp::Le => left <= right,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Cmp::Ge => ">=",
            Cmp::Le => "<=",
        }
    }

    fn broken_word(self) -> &'static str {
        match self {
            Cmp::Ge => "smaller than",
            Cmp::Le => "larger than",
        }
    }
}

/// What a knob that is not set stands for in a constraint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unset {
    /// The engine derives the value at startup from the others so that the rule holds (vLLM
    /// sizes an unset `--max-num-batched-tokens` to the context when chunked prefill is off):
    /// nothing to check.
    #[default]
    EngineDerives,
    /// The catalog's default stands in for it.
    CatalogDefault,
}

/// One side of a [`Constraint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operand {
    /// A numeric knob's value.
    Knob {
        flag: String,
        #[serde(default)]
        unset: Unset,
    },
    /// The model's context length: `flag` (`--max-model-len`) when set, else
    /// `max_position_embeddings` from `config.json` when the model is a local folder; otherwise
    /// unknown, and the check says so instead of guessing.
    ModelContext { flag: String },
}

impl Operand {
    fn label(&self) -> &str {
        match self {
            Operand::Knob { flag, .. } | Operand::ModelContext { flag } => flag,
        }
    }
}

/// A rule between knobs the engine enforces at startup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// A stable name, e.g. `vllm.batched_tokens_cover_context`.
    pub id: String,
    pub left: Operand,
    pub cmp: Cmp,
    pub right: Operand,
    /// Applies only while these knobs have these effective values (switches read
    /// `"true"`/`"false"`, their default included), e.g. `("--enable-chunked-prefill", "false")`.
    #[serde(default)]
    pub when: Vec<(String, String)>,
    /// The engine's own refusal, `{left}` and `{right}` standing for the two values, so an
    /// operator can match a refusal to a failed run's log.
    pub engine_message: String,
    /// What to change to satisfy it.
    pub fix: String,
    /// Where the rule is known from (a recorded failure, the engine's source).
    pub source: String,
}

/// The outcome of one constraint on one configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// It holds, or does not apply (its condition is off, or the engine derives a side).
    Holds,
    /// The engine would refuse the configuration; the text names both flags and their values.
    Broken(String),
    /// It applies but a side cannot be known here (the model's context length of a hub model):
    /// the text says which and how to make it checkable.
    Unknown(String),
}

impl Constraint {
    /// Checks `spec` against this rule in `space` (for effective switch values and defaults);
    /// `engine` names the engine and version in the messages (`vllm 0.32.0`).
    pub fn check(&self, space: &SearchSpace, spec: &ServiceSpec, engine: &str) -> Verdict {
        for (flag, value) in &self.when {
            // A knob outside this catalog is read as written: present without a value is on.
            let effective = match space.knob(flag) {
                Some(_) => space.effective(&spec.flags, flag),
                None => spec.flags.get(flag).map(|v| v.unwrap_or("true").to_string()),
            };
            if effective.is_none_or(|v| !v.eq_ignore_ascii_case(value)) {
                return Verdict::Holds;
            }
        }
        let condition = self.condition_text(space, &spec.flags);
        let left = match self.resolve(&self.left, space, spec) {
            Side::Value(v, text) => (v, text),
            Side::Derived => return Verdict::Holds,
            Side::Unknown(why) => return Verdict::Unknown(self.unknown_text(engine, &condition, &why)),
        };
        let right = match self.resolve(&self.right, space, spec) {
            Side::Value(v, text) => (v, text),
            Side::Derived => return Verdict::Holds,
            Side::Unknown(why) => return Verdict::Unknown(self.unknown_text(engine, &condition, &why)),
        };
        if self.cmp.holds(left.0, right.0) {
            return Verdict::Holds;
        }
        Verdict::Broken(format!(
            "{} {} is {} {} {}{condition}: the installed {engine} refuses this at startup (`{}`); {} [rule {}, from {}]",
            self.left.label(),
            left.1,
            self.cmp.broken_word(),
            self.right.label(),
            right.1,
            self.engine_message.replace("{left}", &left.0.to_string()).replace("{right}", &right.0.to_string()),
            self.fix,
            self.id,
            self.source
        ))
    }

    /// The flags this rule reads, its condition's included.
    pub fn flags(&self) -> Vec<&str> {
        let mut out: Vec<&str> = vec![self.left.label(), self.right.label()];
        out.extend(self.when.iter().map(|(f, _)| f.as_str()));
        out
    }

    /// Why a side of this rule cannot be known for `spec` whatever the tuned knobs are (the
    /// model's context length of a hub model without `--max-model-len`), or `None`.
    pub fn unknowable(&self, spec: &ServiceSpec) -> Option<String> {
        [&self.left, &self.right].into_iter().find_map(|operand| match operand {
            Operand::ModelContext { flag } => match spec.flags.get(flag) {
                Some(Some(v)) if number(v).is_some_and(|n| n > 0.0) => None,
                Some(v) => Some(format!("{flag} {} is not a length; give a number", v.unwrap_or(""))),
                None => model_context(&spec.model).err().map(|why| format!("{flag} is not set and {why}; set {flag}")),
            },
            _ => None,
        })
    }

    /// `left >= right while ...`, for notes.
    pub fn describe(&self) -> String {
        let when: Vec<String> = self.when.iter().map(|(f, v)| format!("{f} is {v}")).collect();
        format!(
            "{} {} {}{}",
            self.left.label(),
            self.cmp.symbol(),
            self.right.label(),
            if when.is_empty() { String::new() } else { format!(" while {}", when.join(" and ")) }
        )
    }

    fn condition_text(&self, space: &SearchSpace, flags: &LaunchFlags) -> String {
        let parts: Vec<String> = self
            .when
            .iter()
            .map(|(flag, value)| {
                let knob = space.knob(flag);
                let negation = knob.and_then(|k| k.negation.as_deref());
                match negation {
                    Some(n) if flags.contains(n) => format!("{n} is set"),
                    _ if flags.contains(flag) => format!("{flag} is {value}"),
                    _ => format!("{flag} is {value} by the engine's default on this platform"),
                }
            })
            .collect();
        if parts.is_empty() { String::new() } else { format!(" while {}", parts.join(" and ")) }
    }

    fn unknown_text(&self, engine: &str, condition: &str, why: &str) -> String {
        format!(
            "cannot check `{}`{condition} for {engine}: {why} [rule {}, from {}]",
            self.describe(),
            self.id,
            self.source
        )
    }

    fn resolve(&self, operand: &Operand, space: &SearchSpace, spec: &ServiceSpec) -> Side {
        match operand {
            Operand::Knob { flag, unset } => {
                let text = match (spec.flags.get(flag), unset) {
                    (Some(Some(v)), _) => v.to_string(),
                    (Some(None), _) => return Side::Unknown(format!("{flag} is given without a value")),
                    (None, Unset::EngineDerives) => return Side::Derived,
                    (None, Unset::CatalogDefault) => match space.knob(flag).and_then(|k| k.default.clone()) {
                        Some(d) => {
                            return number(&d).map_or_else(
                                || Side::Unknown(format!("the catalog default of {flag}, `{d}`, is not a number")),
                                |v| Side::Value(v, format!("{d} (its default)")),
                            );
                        }
                        None => return Side::Derived,
                    },
                };
                match number(&text) {
                    Some(v) => Side::Value(v, text),
                    None => Side::Unknown(format!("{flag} `{text}` is not a number")),
                }
            }
            Operand::ModelContext { flag } => match spec.flags.get(flag) {
                Some(Some(v)) if matches!(v.trim(), "-1" | "auto") => Side::Unknown(format!(
                    "{flag} {v} lets the engine pick the length that fits in memory at startup; give a number"
                )),
                Some(Some(v)) => number(v).map_or_else(
                    || Side::Unknown(format!("{flag} `{v}` is not a plain number")),
                    |n| Side::Value(n, v.to_string()),
                ),
                _ => match model_context(&spec.model) {
                    Ok(n) => Side::Value(n as f64, format!("{n} (the model's max_position_embeddings)")),
                    Err(why) => Side::Unknown(format!("{flag} is not set and {why}; set {flag}")),
                },
            },
        }
    }
}

enum Side {
    Value(f64, String),
    Derived,
    Unknown(String),
}

fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The context length a model's own config gives, when `model` is a local folder with a
/// `config.json`. Read once per folder: a search checks thousands of points against it.
pub fn model_context(model: &str) -> Result<u64, String> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Result<u64, String>>>> = OnceLock::new();
    let dir = expand_home(model);
    if let Some(hit) = CACHE.get_or_init(Default::default).lock().ok().and_then(|c| c.get(&dir).cloned()) {
        return hit;
    }
    let result = read_model_context(&dir, model);
    if let Ok(mut cache) = CACHE.get_or_init(Default::default).lock() {
        cache.insert(dir, result.clone());
    }
    result
}

fn expand_home(model: &str) -> PathBuf {
    match (model.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(model),
    }
}

fn read_model_context(dir: &Path, model: &str) -> Result<u64, String> {
    let path = dir.join("config.json");
    if !dir.is_dir() {
        return Err(format!(
            "the model `{model}` is not a local folder here (a hub id, or a path on the deploy host), so its \
             context length is unknown"
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{} cannot be read ({e})", path.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON ({e})", path.display()))?;
    // Multimodal configs keep the language model's fields under `text_config`.
    let field = |key: &str| config.get(key).or_else(|| config.get("text_config").and_then(|t| t.get(key)));
    // RoPE scaling stretches the context beyond `max_position_embeddings` by a factor the engine
    // applies itself: reading the bare field would understate it.
    let scaled = ["rope_scaling", "rope_parameters"]
        .iter()
        .filter_map(|k| field(k))
        .any(|r| r.get("factor").is_some_and(|f| !f.is_null()));
    if scaled {
        return Err(format!(
            "{} scales RoPE (`factor`), so the engine's context length is not `max_position_embeddings`",
            path.display()
        ));
    }
    field("max_position_embeddings")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("{} has no integer `max_position_embeddings`", path.display()))
}

/// vLLM's cross-flag rules.
///
/// Both come from `SchedulerConfig.verify_max_model_len` (`vllm/config/scheduler.py`, vLLM's own
/// messages quoted in `engine_message`). The first was met for real: vLLM 0.32.0 (CPU) refused
/// `--max-num-batched-tokens 512 --no-enable-chunked-prefill --max-model-len 1024` at startup
/// with a pydantic `ValidationError` for `SchedulerConfig` (recorded in `failure.rs`'s
/// `a_model_level_validation_error_names_the_field_its_message_opens_with`). An unset
/// `--max-num-batched-tokens` / `--max-num-seqs` is decided by the engine (`--help=all` of
/// 0.32.0: "(default: None) ... this should be set in `EngineArgs.create_engine_config`",
/// `tests/fixtures/vllm_cpu/vllm_0.32.0_serve_help_all.txt`); with chunked prefill off vLLM
/// sizes the batch to at least the context, and `vllm_0.32.0_error_badseqs.log` shows the
/// derived token budget following `--max-num-seqs` (-3 sequences gave -3072 tokens), so an
/// unset side is left to the engine. Chunked prefill is on by default in 0.32.0 on a CPU too
/// (`enable_chunked_prefill=True` in `vllm_0.32.0_cpu_startup.log`), so only an explicit
/// `--no-enable-chunked-prefill` (or a catalog whose platform default is off) arms the first.
pub(crate) fn vllm_constraints() -> Vec<Constraint> {
    const SOURCE_SCHEDULER: &str = "vllm/config/scheduler.py SchedulerConfig.verify_max_model_len";
    vec![
        Constraint {
            id: "vllm.batched_tokens_cover_context".into(),
            left: Operand::Knob { flag: "--max-num-batched-tokens".into(), unset: Unset::EngineDerives },
            cmp: Cmp::Ge,
            right: Operand::ModelContext { flag: "--max-model-len".into() },
            when: vec![("--enable-chunked-prefill".into(), "false".into())],
            engine_message: "max_num_batched_tokens ({left}) is smaller than max_model_len ({right})".into(),
            fix: "raise --max-num-batched-tokens to at least the context length, lower --max-model-len, or leave \
                  chunked prefill on"
                .into(),
            source: format!(
                "{SOURCE_SCHEDULER}; refused for real by vLLM 0.32.0 on CPU (SchedulerConfig ValidationError)"
            ),
        },
        Constraint {
            id: "vllm.batched_tokens_cover_seqs".into(),
            left: Operand::Knob { flag: "--max-num-batched-tokens".into(), unset: Unset::EngineDerives },
            cmp: Cmp::Ge,
            right: Operand::Knob { flag: "--max-num-seqs".into(), unset: Unset::CatalogDefault },
            when: Vec::new(),
            engine_message: "max_num_batched_tokens ({left}) must be greater than or equal to max_num_seqs ({right})"
                .into(),
            fix: "raise --max-num-batched-tokens to at least --max-num-seqs, or lower --max-num-seqs".into(),
            source: SOURCE_SCHEDULER.into(),
        },
    ]
}
