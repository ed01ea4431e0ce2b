//! Sizing prompts in tokens: the built-in approximation (one word, one token) or the vocabulary
//! of a local Hugging Face `tokenizer.json`.
//!
//! Neither is the model's exact tokenizer (no merges are applied, no chat template is added), so
//! results always prefer the server's `usage.prompt_tokens`; the tokenizer only decides what to send.

use std::collections::HashSet;
use std::path::Path;

use crate::error::BenchError;
use crate::prompt::{builtin_words, prompt_from_words};

/// Prefixes that mark "a space before this token" in common vocabularies: byte-level BPE (GPT-2,
/// Llama 3, Qwen) and SentencePiece (Llama 2, Mistral).
const SPACE_MARKERS: [char; 2] = ['\u{0120}', '\u{2581}'];

/// Fewer whole-word tokens than this and prompts would repeat too much to be realistic.
const MIN_WORDS: usize = 32;

/// How prompt lengths are counted and prompts are built.
#[derive(Debug, Clone, Default)]
pub enum Tokenizer {
    /// One whitespace-separated word is one token (the simulator counts the same way).
    #[default]
    Approximate,
    /// Whole-word tokens of a real vocabulary.
    Vocabulary(VocabTokenizer),
}

/// A vocabulary read from `tokenizer.json`: prompts are built from words that are one token each
/// (with their leading-space marker), and text is counted by greedy longest match per word.
#[derive(Debug, Clone)]
pub struct VocabTokenizer {
    source: String,
    pieces: HashSet<String>,
    words: Vec<String>,
    /// The leading-space marker this vocabulary uses, if any.
    marker: Option<char>,
    /// WordPiece's continuation prefix (`##`), if the model is WordPiece.
    continuation: Option<String>,
    longest_piece: usize,
}

impl Tokenizer {
    /// Reads the vocabulary of a Hugging Face `tokenizer.json` (`model.vocab` as a map of BPE or
    /// WordPiece pieces, or a Unigram list of `[piece, score]`).
    pub fn from_tokenizer_json(path: &Path) -> Result<Tokenizer, BenchError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io { path: shown.clone(), source })?;
        Tokenizer::from_tokenizer_json_str(&text, &shown)
    }

    /// Like [`Tokenizer::from_tokenizer_json`], from the file's text; `source` names it in errors.
    pub fn from_tokenizer_json_str(text: &str, source: &str) -> Result<Tokenizer, BenchError> {
        let invalid = |message: String| BenchError::InvalidInput { location: source.to_string(), message };
        let json: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| invalid(format!("not JSON ({e}); expected a Hugging Face tokenizer.json")))?;
        let model = &json["model"];
        let pieces: Vec<String> = match &model["vocab"] {
            serde_json::Value::Object(map) => map.keys().cloned().collect(),
            serde_json::Value::Array(list) => {
                list.iter().filter_map(|entry| entry.get(0).and_then(|p| p.as_str()).map(str::to_string)).collect()
            }
            _ => {
                return Err(invalid("has no `model.vocab` map or list; is it a Hugging Face tokenizer.json?".into()));
            }
        };
        let continuation = (model["type"].as_str() == Some("WordPiece"))
            .then(|| model["continuing_subword_prefix"].as_str().unwrap_or("##").to_string());
        let marker = SPACE_MARKERS
            .into_iter()
            .max_by_key(|m| pieces.iter().filter(|p| p.starts_with(*m)).count())
            .filter(|m| pieces.iter().any(|p| p.starts_with(*m)));
        let mut words: Vec<String> = pieces
            .iter()
            .filter_map(|piece| {
                let word = match marker {
                    Some(m) => piece.strip_prefix(m)?,
                    None => piece.as_str(),
                };
                let plain = (2..=12).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_lowercase());
                plain.then(|| word.to_string())
            })
            .collect();
        words.sort();
        words.dedup();
        if words.len() < MIN_WORDS {
            return Err(invalid(format!(
                "the vocabulary has only {} whole-word tokens (need {MIN_WORDS}) to build prompts from; \
                 leave out the tokenizer to use the built-in approximation",
                words.len()
            )));
        }
        let longest_piece = pieces.iter().map(|p| p.chars().count()).max().unwrap_or(1);
        Ok(Tokenizer::Vocabulary(VocabTokenizer {
            source: source.to_string(),
            pieces: pieces.into_iter().collect(),
            words,
            marker,
            continuation,
            longest_piece,
        }))
    }

    /// Where the vocabulary came from (`approximate` for the built-in one).
    pub fn describe(&self) -> String {
        match self {
            Tokenizer::Approximate => "approximate (1 word = 1 token)".to_string(),
            Tokenizer::Vocabulary(v) => {
                format!("{} ({} whole-word tokens)", v.source, v.words.len())
            }
        }
    }

    /// Approximate token count of `text`.
    pub fn count(&self, text: &str) -> u32 {
        let count = match self {
            Tokenizer::Approximate => text.split_whitespace().count(),
            Tokenizer::Vocabulary(v) => text.split_whitespace().map(|word| v.count_word(word)).sum(),
        };
        count.min(u32::MAX as usize) as u32
    }

    /// A prompt of `total` tokens whose first `prefix` tokens depend on `seed` only and the rest
    /// on (`seed`, `index`).
    pub fn prompt(&self, seed: u64, prefix: usize, total: usize, index: usize) -> String {
        match self {
            Tokenizer::Approximate => prompt_from_words(builtin_words(), seed, prefix, total, index),
            Tokenizer::Vocabulary(v) => prompt_from_words(&v.words, seed, prefix, total, index),
        }
    }
}

impl VocabTokenizer {
    /// Greedy longest match of one whitespace-free word; a character no piece covers counts one.
    fn count_word(&self, word: &str) -> usize {
        let mut rest: String = match self.marker {
            Some(m) => std::iter::once(m).chain(word.chars()).collect(),
            None => word.to_string(),
        };
        let mut tokens = 0;
        let mut first = true;
        // Each round consumes at least one character, so this ends within the word's length.
        while !rest.is_empty() {
            let chars: Vec<(usize, char)> = rest.char_indices().collect();
            let mut taken = 1;
            for len in (1..=chars.len().min(self.longest_piece)).rev() {
                let end = chars.get(len).map_or(rest.len(), |(i, _)| *i);
                let candidate = &rest[..end];
                let found = match (&self.continuation, first) {
                    (Some(prefix), false) => self.pieces.contains(&format!("{prefix}{candidate}")),
                    _ => self.pieces.contains(candidate),
                };
                if found {
                    taken = len;
                    break;
                }
            }
            let end = chars.get(taken).map_or(rest.len(), |(i, _)| *i);
            rest.drain(..end);
            tokens += 1;
            first = false;
        }
        tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpe_json(extra: &[&str]) -> String {
        let mut vocab = serde_json::Map::new();
        let words = builtin_words().iter().filter(|w| w.len() >= 2).take(60);
        for (id, piece) in words.map(|w| format!("\u{0120}{w}")).chain(extra.iter().map(|s| s.to_string())).enumerate()
        {
            vocab.insert(piece, id.into());
        }
        serde_json::json!({"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []}}).to_string()
    }

    #[test]
    fn approximate_counts_words() {
        assert_eq!(Tokenizer::Approximate.count("  one two\tthree\n"), 3);
        let prompt = Tokenizer::Approximate.prompt(1, 2, 10, 3);
        assert_eq!(Tokenizer::Approximate.count(&prompt), 10);
    }

    #[test]
    fn vocabulary_prompts_count_exactly_and_unknown_words_split() {
        let tokenizer = Tokenizer::from_tokenizer_json_str(&bpe_json(&["\u{0120}x", "y", "z"]), "t.json").unwrap();
        let prompt = tokenizer.prompt(3, 4, 25, 1);
        assert_eq!(tokenizer.count(&prompt), 25);
        assert_eq!(prompt.split_whitespace().count(), 25);
        // "xyzq": Ġx, y, z are pieces; q is not, so it counts one on its own.
        assert_eq!(tokenizer.count("xyzq"), 4);
    }

    #[test]
    fn too_small_or_malformed_vocabularies_are_refused_with_the_file_named() {
        let small = serde_json::json!({"model": {"type": "BPE", "vocab": {"\u{0120}the": 0}}}).to_string();
        let error = Tokenizer::from_tokenizer_json_str(&small, "small.json").unwrap_err().to_string();
        assert!(error.contains("small.json") && error.contains("whole-word"), "{error}");
        let error = Tokenizer::from_tokenizer_json_str("{", "bad.json").unwrap_err().to_string();
        assert!(error.contains("bad.json") && error.contains("not JSON"), "{error}");
    }
}
