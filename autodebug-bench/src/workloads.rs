//! What the requests of a run contain: synthetic prompts of fixed or random lengths, presets,
//! multi-turn conversations, JSONL datasets (plain or ShareGPT) and timestamped traces to replay.
//!
//! A [`RequestSource`] turns a conversation number into a [`Conversation`]: one turn for most
//! sources, several for [`RequestSource::MultiTurn`], whose later turns also carry the earlier
//! answers the server actually gave.

use std::path::Path;
use std::sync::Arc;

use autodebug_core::Workload;
use autodebug_core::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::tokenizer::Tokenizer;

/// Mixed into the seed for length draws, so lengths do not correlate with prompt words.
const LENGTH_STREAM_MIX: u64 = 0x5bd1_e995_2f6a_1c3d;

/// A token count: fixed, or drawn per request (deterministically from the seed and the index).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LengthDist {
    Fixed {
        tokens: u32,
    },
    /// Uniform over `min..=max`.
    Uniform {
        min: u32,
        max: u32,
    },
    /// Normal, rounded and clamped into `min..=max`.
    Normal {
        mean: f64,
        std: f64,
        min: u32,
        max: u32,
    },
}

impl LengthDist {
    pub fn fixed(tokens: u32) -> Self {
        LengthDist::Fixed { tokens }
    }

    pub(crate) fn sample(&self, rng: &mut SplitMix64) -> u32 {
        match *self {
            LengthDist::Fixed { tokens } => tokens,
            LengthDist::Uniform { min, max } => {
                let (lo, hi) = (min.min(max), min.max(max));
                lo + (rng.next_u64() % (u64::from(hi - lo) + 1)) as u32
            }
            LengthDist::Normal { mean, std, min, max } => {
                let (lo, hi) = (min.min(max), min.max(max));
                (mean + std * rng.next_normal()).round().clamp(f64::from(lo), f64::from(hi)) as u32
            }
        }
    }

    /// The mean length, for describing a workload.
    pub fn mean(&self) -> f64 {
        match *self {
            LengthDist::Fixed { tokens } => f64::from(tokens),
            LengthDist::Uniform { min, max } => (f64::from(min) + f64::from(max)) / 2.0,
            LengthDist::Normal { mean, .. } => mean,
        }
    }

    pub fn describe(&self) -> String {
        match *self {
            LengthDist::Fixed { tokens } => tokens.to_string(),
            LengthDist::Uniform { min, max } => format!("uniform {min}..{max}"),
            LengthDist::Normal { mean, std, min, max } => format!("normal {mean}±{std} in {min}..{max}"),
        }
    }

    /// Parses `N`, `MIN..MAX` (uniform) or `MEAN±STD` / `MEAN+-STD` (normal, clamped to 1..=2·MEAN+STD).
    pub fn parse(text: &str) -> Result<LengthDist, String> {
        let number = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("{s:?} is not a whole number of tokens"));
        if let Some((min, max)) = text.split_once("..") {
            let (min, max) = (number(min)?, number(max)?);
            if min > max {
                return Err(format!("{text:?}: the minimum is above the maximum"));
            }
            return Ok(LengthDist::Uniform { min, max });
        }
        if let Some((mean, std)) = text.split_once('±').or_else(|| text.split_once("+-")) {
            let (mean, std) = (number(mean)?, number(std)?);
            return Ok(LengthDist::Normal { mean: f64::from(mean), std: f64::from(std), min: 1, max: 2 * mean + std });
        }
        Ok(LengthDist::fixed(number(text)?))
    }
}

/// One request shape of a synthetic workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    pub input: LengthDist,
    pub output: LengthDist,
}

/// Synthetic prompts sized with a [`Tokenizer`].
#[derive(Debug, Clone)]
pub struct Synthetic {
    /// One shape, or several picked per request with equal probability (a mixed workload).
    pub shapes: Vec<Shape>,
    /// Tokens of a prefix shared by every request (0 = none).
    pub shared_prefix_tokens: u32,
    /// Every request sends request 0's prompt.
    pub repeat_prompt: bool,
    pub ignore_eos: bool,
    pub seed: u64,
    pub tokenizer: Tokenizer,
}

/// Named workload shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Long prompts, short answers: stresses prefill (2048 in, 32 out).
    Prefill,
    /// Short prompts, long answers: stresses decode (64 in, 1024 out).
    Decode,
    /// Half prefill-shaped, half decode-shaped requests, interleaved at random.
    Mixed,
}

impl Preset {
    pub const PREFILL: Shape =
        Shape { input: LengthDist::Fixed { tokens: 2048 }, output: LengthDist::Fixed { tokens: 32 } };
    pub const DECODE: Shape =
        Shape { input: LengthDist::Fixed { tokens: 64 }, output: LengthDist::Fixed { tokens: 1024 } };

    pub fn shapes(self) -> Vec<Shape> {
        match self {
            Preset::Prefill => vec![Preset::PREFILL],
            Preset::Decode => vec![Preset::DECODE],
            Preset::Mixed => vec![Preset::PREFILL, Preset::DECODE],
        }
    }

    pub fn parse(text: &str) -> Option<Preset> {
        match text {
            "prefill" | "long-prompt" => Some(Preset::Prefill),
            "decode" | "long-completion" => Some(Preset::Decode),
            "mixed" => Some(Preset::Mixed),
            _ => None,
        }
    }
}

impl Synthetic {
    /// Fixed lengths, no shared prefix, the built-in tokenizer.
    pub fn new(input: LengthDist, output: LengthDist) -> Self {
        Synthetic {
            shapes: vec![Shape { input, output }],
            shared_prefix_tokens: 0,
            repeat_prompt: false,
            ignore_eos: true,
            seed: 0,
            tokenizer: Tokenizer::Approximate,
        }
    }

    pub fn preset(preset: Preset) -> Self {
        Synthetic { shapes: preset.shapes(), ..Synthetic::new(LengthDist::fixed(0), LengthDist::fixed(0)) }
    }

    /// The same prompts [`synthetic_prompt`](crate::synthetic_prompt) builds for `workload`.
    pub fn from_workload(workload: &Workload) -> Self {
        Synthetic {
            shapes: vec![Shape {
                input: LengthDist::fixed(workload.prompt_tokens),
                output: LengthDist::fixed(workload.output_tokens),
            }],
            shared_prefix_tokens: workload.shared_prefix_tokens,
            repeat_prompt: workload.repeat_prompt,
            ignore_eos: workload.ignore_eos,
            seed: workload.seed,
            tokenizer: Tokenizer::Approximate,
        }
    }

    fn turn(&self, index: usize) -> Turn {
        let index = if self.repeat_prompt { 0 } else { index };
        let mut rng = SplitMix64::for_stream(self.seed ^ LENGTH_STREAM_MIX, index as u64);
        let shape = match self.shapes.len() {
            0 => Shape { input: LengthDist::fixed(0), output: LengthDist::fixed(0) },
            1 => self.shapes[0],
            n => self.shapes[(rng.next_u64() % n as u64) as usize],
        };
        let input = shape.input.sample(&mut rng);
        let output = shape.output.sample(&mut rng);
        let prompt = self.tokenizer.prompt(self.seed, self.shared_prefix_tokens as usize, input as usize, index);
        Turn { user: prompt, prompt_tokens: input, max_tokens: output }
    }

    pub fn describe(&self) -> String {
        let shapes: Vec<String> = self
            .shapes
            .iter()
            .map(|s| format!("{} prompt / {} completion tokens", s.input.describe(), s.output.describe()))
            .collect();
        let mut text = shapes.join(" | ");
        if self.shapes.len() > 1 {
            text = format!("mixed [{text}]");
        }
        if self.repeat_prompt {
            text.push_str(", repeated prompt");
        }
        if self.shared_prefix_tokens > 0 {
            text.push_str(&format!(", {} shared prefix tokens", self.shared_prefix_tokens));
        }
        if !matches!(self.tokenizer, Tokenizer::Approximate) {
            text.push_str(&format!(", sized with {}", self.tokenizer.describe()));
        }
        text
    }
}

/// One user turn: its new message, its approximate prompt length and `max_tokens`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub user: String,
    /// Approximate tokens of this turn's new text (records keep the server's count when sent).
    pub prompt_tokens: u32,
    pub max_tokens: u32,
}

/// What one conversation sends: its turns in order; `at_ms` schedules it (trace replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub turns: Vec<Turn>,
    pub at_ms: Option<u64>,
}

/// One entry of a JSONL dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetEntry {
    pub prompt: String,
    pub output_tokens: u32,
}

/// One entry of a trace to replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub timestamp_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    pub output_tokens: u32,
}

/// Where the requests of a run come from.
#[derive(Debug, Clone)]
pub enum RequestSource {
    Synthetic(Synthetic),
    /// Conversations of `turns` turns, each turn a synthetic prompt; a turn's messages are the
    /// whole conversation so far, the server's own answers included.
    MultiTurn {
        base: Synthetic,
        turns: u32,
    },
    /// Prompts from a dataset, used in order and cycled.
    Dataset {
        entries: Arc<Vec<DatasetEntry>>,
        name: String,
        ignore_eos: bool,
    },
    /// A trace: each entry is sent at its timestamp (relative to the first), whatever the load says.
    Replay {
        entries: Arc<Vec<TraceEntry>>,
        name: String,
        tokenizer: Tokenizer,
        seed: u64,
        ignore_eos: bool,
    },
}

impl RequestSource {
    /// The source a core [`Workload`] describes.
    pub fn from_workload(workload: &Workload) -> Self {
        RequestSource::Synthetic(Synthetic::from_workload(workload))
    }

    /// Reads a JSONL file: a trace when its first record has `timestamp_ms`, else a dataset whose
    /// lines are `{"prompt": ..., "output_tokens"?: N}` or ShareGPT `{"conversations": [{"from", "value"}]}`
    /// (the first human turn is the prompt; the first answer's length is `output_tokens`).
    /// Lines without an output length use `default_output_tokens`.
    pub fn from_jsonl(path: &Path, tokenizer: Tokenizer, default_output_tokens: u32) -> Result<Self, BenchError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io { path: shown.clone(), source })?;
        RequestSource::from_jsonl_str(&text, &shown, tokenizer, default_output_tokens)
    }

    /// Like [`RequestSource::from_jsonl`], from the file's text; `name` names it in errors.
    pub fn from_jsonl_str(
        text: &str,
        name: &str,
        tokenizer: Tokenizer,
        default_output_tokens: u32,
    ) -> Result<Self, BenchError> {
        let invalid =
            |line: usize, message: String| BenchError::InvalidInput { location: format!("{name}:{line}"), message };
        let mut dataset = Vec::new();
        let mut trace = Vec::new();
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| invalid(number, format!("not a JSON object ({e})")))?;
            if value.get("timestamp_ms").is_some() {
                let entry: TraceEntry = serde_json::from_value(value).map_err(|e| {
                    invalid(number, format!("{e}; a trace line is {{\"timestamp_ms\", \"prompt\" or \"prompt_tokens\", \"output_tokens\"}}"))
                })?;
                if entry.prompt.is_none() && entry.prompt_tokens.is_none() {
                    return Err(invalid(number, "a trace line needs `prompt` or `prompt_tokens`".into()));
                }
                trace.push(entry);
            } else {
                dataset.push(dataset_entry(&value, &tokenizer, default_output_tokens).map_err(|m| invalid(number, m))?);
            }
        }
        match (dataset.is_empty(), trace.is_empty()) {
            (true, true) => {
                Err(BenchError::InvalidInput { location: name.to_string(), message: "has no JSONL records".into() })
            }
            (false, false) => Err(BenchError::InvalidInput {
                location: name.to_string(),
                message: "mixes trace lines (with `timestamp_ms`) and dataset lines; use one kind per file".into(),
            }),
            (false, true) => {
                Ok(RequestSource::Dataset { entries: Arc::new(dataset), name: name.to_string(), ignore_eos: true })
            }
            (true, false) => {
                trace.sort_by_key(|e| e.timestamp_ms);
                Ok(RequestSource::Replay {
                    entries: Arc::new(trace),
                    name: name.to_string(),
                    tokenizer,
                    seed: 0,
                    ignore_eos: true,
                })
            }
        }
    }

    /// Turns per conversation (1 except for multi-turn).
    pub fn turns(&self) -> usize {
        match self {
            RequestSource::MultiTurn { turns, .. } => (*turns).max(1) as usize,
            _ => 1,
        }
    }

    /// Records a replay sends at most (the trace's length); `None` for other sources.
    pub fn len_limit(&self) -> Option<usize> {
        match self {
            RequestSource::Replay { entries, .. } => Some(entries.len()),
            _ => None,
        }
    }

    /// Whether conversations carry their own send times.
    pub fn is_replay(&self) -> bool {
        matches!(self, RequestSource::Replay { .. })
    }

    pub(crate) fn ignore_eos(&self) -> bool {
        match self {
            RequestSource::Synthetic(s) | RequestSource::MultiTurn { base: s, .. } => s.ignore_eos,
            RequestSource::Dataset { ignore_eos, .. } | RequestSource::Replay { ignore_eos, .. } => *ignore_eos,
        }
    }

    /// Overrides `ignore_eos` (fixed output lengths) for every request.
    pub fn with_ignore_eos(mut self, ignore: bool) -> Self {
        match &mut self {
            RequestSource::Synthetic(s) | RequestSource::MultiTurn { base: s, .. } => s.ignore_eos = ignore,
            RequestSource::Dataset { ignore_eos, .. } | RequestSource::Replay { ignore_eos, .. } => {
                *ignore_eos = ignore
            }
        }
        self
    }

    /// Conversation number `index` (its turns' record indices are `index * turns() + t`).
    /// `trial` varies the prompts between trials so no trial hits the cache with another's prompts.
    pub fn conversation(&self, index: usize, trial: u32) -> Conversation {
        let trial_mix = u64::from(trial).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        match self {
            RequestSource::Synthetic(s) => {
                let s = Synthetic { seed: s.seed ^ trial_mix, ..s.clone() };
                Conversation { turns: vec![s.turn(index)], at_ms: None }
            }
            RequestSource::MultiTurn { base, turns } => {
                let s = Synthetic { seed: base.seed ^ trial_mix, ..base.clone() };
                let turns = (*turns).max(1) as usize;
                Conversation { turns: (0..turns).map(|t| s.turn(index * turns + t)).collect(), at_ms: None }
            }
            RequestSource::Dataset { entries, .. } => {
                let entry = &entries[index % entries.len().max(1)];
                let turn = Turn { user: entry.prompt.clone(), prompt_tokens: 0, max_tokens: entry.output_tokens };
                Conversation { turns: vec![turn], at_ms: None }
            }
            RequestSource::Replay { entries, tokenizer, seed, .. } => {
                let first = entries.first().map_or(0, |e| e.timestamp_ms);
                let entry = &entries[index % entries.len().max(1)];
                let (user, prompt_tokens) = match (&entry.prompt, entry.prompt_tokens) {
                    (Some(prompt), tokens) => (prompt.clone(), tokens.unwrap_or_else(|| tokenizer.count(prompt))),
                    (None, tokens) => {
                        let tokens = tokens.unwrap_or(0);
                        (tokenizer.prompt(seed ^ trial_mix, 0, tokens as usize, index), tokens)
                    }
                };
                let turn = Turn { user, prompt_tokens, max_tokens: entry.output_tokens };
                Conversation { turns: vec![turn], at_ms: Some(entry.timestamp_ms - first) }
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            RequestSource::Synthetic(s) => s.describe(),
            RequestSource::MultiTurn { base, turns } => {
                format!("{turns}-turn conversations, each turn {}", base.describe())
            }
            RequestSource::Dataset { entries, name, .. } => {
                format!("dataset {name} ({} prompts)", entries.len())
            }
            RequestSource::Replay { entries, name, .. } => {
                format!("replay of {name} ({} requests)", entries.len())
            }
        }
    }
}

fn dataset_entry(
    value: &serde_json::Value,
    tokenizer: &Tokenizer,
    default_output: u32,
) -> Result<DatasetEntry, String> {
    let output_field = value.get("output_tokens").and_then(|v| v.as_u64()).map(|v| v.min(u64::from(u32::MAX)) as u32);
    if let Some(prompt) = value.get("prompt").and_then(|p| p.as_str()) {
        return Ok(DatasetEntry { prompt: prompt.to_string(), output_tokens: output_field.unwrap_or(default_output) });
    }
    let Some(turns) = value.get("conversations").and_then(|c| c.as_array()) else {
        return Err("expected `prompt` (a string) or ShareGPT `conversations` (a list of {from, value})".into());
    };
    let speaker = |turn: &serde_json::Value| turn.get("from").and_then(|f| f.as_str()).unwrap_or_default().to_string();
    let text = |turn: &serde_json::Value| turn.get("value").and_then(|v| v.as_str()).map(str::to_string);
    let asked = turns.iter().position(|t| matches!(speaker(t).as_str(), "human" | "user"));
    let Some(asked) = asked else {
        return Err("ShareGPT `conversations` has no turn from `human` or `user`".into());
    };
    let prompt = text(&turns[asked]).ok_or("the human turn has no string `value`")?;
    let answer = turns[asked + 1..]
        .iter()
        .find(|t| matches!(speaker(t).as_str(), "gpt" | "assistant" | "chatgpt" | "bard"))
        .and_then(text);
    let output_tokens = output_field.or_else(|| answer.map(|a| tokenizer.count(&a).max(1))).unwrap_or(default_output);
    Ok(DatasetEntry { prompt, output_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_distributions_stay_in_range_and_parse() {
        let mut rng = SplitMix64::new(1);
        let uniform = LengthDist::Uniform { min: 10, max: 20 };
        let draws: Vec<u32> = (0..500).map(|_| uniform.sample(&mut rng)).collect();
        assert!(draws.iter().all(|d| (10..=20).contains(d)));
        assert!(draws.contains(&10) && draws.contains(&20), "both ends drawn");
        let normal = LengthDist::Normal { mean: 100.0, std: 10.0, min: 90, max: 200 };
        let draws: Vec<u32> = (0..2000).map(|_| normal.sample(&mut rng)).collect();
        assert!(draws.iter().all(|d| (90..=200).contains(d)));
        let mean = draws.iter().map(|&d| f64::from(d)).sum::<f64>() / draws.len() as f64;
        assert!((mean - 101.0).abs() < 2.0, "clamping at 90 lifts the mean a little: {mean}");
        assert_eq!(LengthDist::parse("128"), Ok(LengthDist::fixed(128)));
        assert_eq!(LengthDist::parse("10..20"), Ok(uniform));
        assert!(matches!(LengthDist::parse("100+-10"), Ok(LengthDist::Normal { max: 210, .. })));
        assert!(LengthDist::parse("20..10").is_err() && LengthDist::parse("abc").is_err());
    }

    #[test]
    fn synthetic_matches_core_workload_prompts() {
        let mut workload = Workload::new(30, 5);
        workload.shared_prefix_tokens = 10;
        let source = RequestSource::from_workload(&workload);
        for index in [0, 3, 7] {
            let turn = &source.conversation(index, 0).turns[0];
            assert_eq!(turn.user, crate::synthetic_prompt(&workload, index));
            assert_eq!((turn.prompt_tokens, turn.max_tokens), (30, 5));
        }
        assert_ne!(source.conversation(3, 0), source.conversation(3, 1), "trials draw fresh prompts");
    }

    #[test]
    fn mixed_preset_uses_both_shapes() {
        let source = RequestSource::Synthetic(Synthetic::preset(Preset::Mixed));
        let lengths: Vec<u32> = (0..40).map(|i| source.conversation(i, 0).turns[0].max_tokens).collect();
        assert!(lengths.contains(&32) && lengths.contains(&1024), "{lengths:?}");
    }

    #[test]
    fn multi_turn_indices_are_distinct() {
        let source =
            RequestSource::MultiTurn { base: Synthetic::new(LengthDist::fixed(5), LengthDist::fixed(3)), turns: 3 };
        let conversation = source.conversation(2, 0);
        assert_eq!(conversation.turns.len(), 3);
        assert_ne!(conversation.turns[0].user, conversation.turns[1].user);
        assert_eq!(source.turns(), 3);
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let error =
            RequestSource::from_jsonl_str("{\"prompt\":\"a\"}\n{\"foo\":1}\n", "d.jsonl", Tokenizer::Approximate, 8)
                .unwrap_err()
                .to_string();
        assert!(error.starts_with("d.jsonl:2:"), "{error}");
        let error = RequestSource::from_jsonl_str(
            "{\"timestamp_ms\":1,\"output_tokens\":2}",
            "t.jsonl",
            Tokenizer::Approximate,
            8,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("t.jsonl:1") && error.contains("prompt_tokens"), "{error}");
    }
}
