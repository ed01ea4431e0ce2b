//! Per-request accounting of a token stream: what arrived when, and how many tokens it carried.
//!
//! Times are ns since the request's scheduled start; the caller stamps each network read once,
//! so every event in one read shares its arrival time (that is when the client could see it).

use std::ops::ControlFlow;

use autodebug_core::{ErrorClass, RequestRecord};

use crate::chunk::{Usage, parse_chunk};

/// Why a stream stopped before its natural end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stop {
    /// `data: [DONE]` arrived.
    Done,
    Failed(ErrorClass, String),
}

/// Accumulates one stream's content chunks and usage.
#[derive(Debug, Default)]
pub(crate) struct StreamAccount {
    /// Arrival of each content chunk (non-empty text), ns since the scheduled start.
    chunk_at_ns: Vec<u64>,
    /// Whitespace words in each content chunk, at least 1 (a chunk with text carries a token).
    chunk_words: Vec<u32>,
    /// Cumulative `usage.completion_tokens` on each content chunk, while every chunk has one.
    chunk_cumulative: Vec<u32>,
    per_chunk_usage: bool,
    usage: Usage,
    saw_usage: bool,
    finished: bool,
    /// The generated text, kept only when a later turn of a conversation needs it.
    answer: Option<String>,
    predictor: NgramPredictor,
}

/// Counts the content chunks an n-gram lookup over the answer so far would have predicted: the
/// three chunks before one occurred earlier and were followed there by the same chunk. Chunks are
/// kept as hashes, so the cost is one hash and one map probe per chunk.
#[derive(Debug, Default)]
struct NgramPredictor {
    history: Vec<u64>,
    next_after: std::collections::HashMap<(u64, u64, u64), u64>,
    predicted: u32,
    considered: u32,
}

impl NgramPredictor {
    const N: usize = 3;

    fn push(&mut self, text: &str) {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        let token = hasher.finish();
        let n = self.history.len();
        if n >= Self::N {
            let key = (self.history[n - 3], self.history[n - 2], self.history[n - 1]);
            self.considered += 1;
            if self.next_after.get(&key) == Some(&token) {
                self.predicted += 1;
            }
            self.next_after.insert(key, token);
        }
        self.history.push(token);
    }

    fn counts(&self) -> Option<(u32, u32)> {
        (self.considered > 0).then_some((self.predicted, self.considered))
    }
}

/// The token split of a finished stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenSplit {
    /// Tokens per content chunk, first chunk included.
    pub per_chunk: Vec<u32>,
    pub output_tokens: u32,
}

impl StreamAccount {
    pub(crate) fn new() -> Self {
        StreamAccount { per_chunk_usage: true, ..StreamAccount::default() }
    }

    /// Also keeps the generated text (see [`StreamAccount::take_answer`]).
    pub(crate) fn keeping_answer() -> Self {
        StreamAccount { answer: Some(String::new()), ..StreamAccount::new() }
    }

    /// The generated text, when kept.
    pub(crate) fn take_answer(&mut self) -> Option<String> {
        self.answer.take()
    }

    /// Handles one SSE event's data that arrived at `now_ns`.
    pub(crate) fn on_event(&mut self, data: &[u8], now_ns: u64) -> ControlFlow<Stop> {
        if data.trim_ascii() == b"[DONE]" {
            return ControlFlow::Break(Stop::Done);
        }
        let chunk = match parse_chunk(data) {
            Ok(chunk) => chunk,
            Err(e) => {
                let shown = String::from_utf8_lossy(&data[..data.len().min(80)]).into_owned();
                return ControlFlow::Break(Stop::Failed(ErrorClass::MalformedJson, format!("{e} in chunk {shown:?}")));
            }
        };
        if let Some(message) = chunk.error {
            return ControlFlow::Break(Stop::Failed(ErrorClass::ServerError, message));
        }
        self.finished |= chunk.finished;
        if let Some(usage) = chunk.usage {
            self.saw_usage = true;
            self.usage.prompt_tokens = usage.prompt_tokens.or(self.usage.prompt_tokens);
            self.usage.completion_tokens = usage.completion_tokens.or(self.usage.completion_tokens);
            self.usage.cached_tokens = usage.cached_tokens.or(self.usage.cached_tokens);
        }
        if let Some(text) = chunk.text.as_deref().filter(|t| !t.is_empty()) {
            self.chunk_at_ns.push(now_ns);
            self.predictor.push(text);
            if let Some(answer) = &mut self.answer {
                answer.push_str(text);
            }
            self.chunk_words.push((text.split_whitespace().count() as u32).max(1));
            match chunk.usage.and_then(|u| u.completion_tokens) {
                Some(cumulative) if self.per_chunk_usage => self.chunk_cumulative.push(cumulative),
                _ => self.per_chunk_usage = false,
            }
        }
        ControlFlow::Continue(())
    }

    pub(crate) fn has_content(&self) -> bool {
        !self.chunk_at_ns.is_empty()
    }

    /// When the first content chunk arrived, ns after the request was due.
    pub(crate) fn first_content_ns(&self) -> Option<u64> {
        self.chunk_at_ns.first().copied()
    }

    pub(crate) fn content_chunks(&self) -> usize {
        self.chunk_at_ns.len()
    }

    /// A choice said why it finished (a complete answer even without `[DONE]`).
    pub(crate) fn saw_finish_reason(&self) -> bool {
        self.finished
    }

    /// Tokens per chunk: the server's per-chunk usage when every chunk had one; otherwise
    /// whitespace words, rescaled (keeping the total exact) to the final `completion_tokens`.
    pub(crate) fn token_split(&self) -> TokenSplit {
        let chunks = self.chunk_at_ns.len();
        if self.per_chunk_usage && chunks > 0 && self.chunk_cumulative.len() == chunks {
            let mut previous = 0u32;
            let per_chunk: Vec<u32> = self
                .chunk_cumulative
                .iter()
                .map(|&c| {
                    let tokens = c.saturating_sub(previous);
                    previous = previous.max(c);
                    tokens
                })
                .collect();
            let counted: u32 = per_chunk.iter().sum();
            return TokenSplit {
                output_tokens: self.usage.completion_tokens.unwrap_or(counted).max(counted),
                per_chunk,
            };
        }
        let words: u64 = self.chunk_words.iter().map(|&w| u64::from(w)).sum();
        match self.usage.completion_tokens {
            Some(target) if words > 0 && u64::from(target) != words => {
                TokenSplit { per_chunk: rescale(&self.chunk_words, words, u64::from(target)), output_tokens: target }
            }
            Some(target) => TokenSplit { per_chunk: self.chunk_words.clone(), output_tokens: target },
            None => {
                TokenSplit { per_chunk: self.chunk_words.clone(), output_tokens: words.min(u64::from(u32::MAX)) as u32 }
            }
        }
    }

    /// Fills the stream-derived fields of `record` (ttft, ttst, tokens, chunks, gaps).
    /// `e2e_ns` and errors are the caller's, who knows how the stream ended.
    pub(crate) fn fill(&self, record: &mut RequestRecord) {
        let split = self.token_split();
        record.output_tokens = Some(split.output_tokens);
        if let Some(prompt) = self.usage.prompt_tokens {
            record.prompt_tokens = Some(prompt);
        }
        record.cached_tokens = self.usage.cached_tokens;
        record.chunks = self.chunk_at_ns.len() as u32;
        record.ngram_predicted = self.predictor.counts();
        let Some(&first) = self.chunk_at_ns.first() else {
            return;
        };
        record.ttft_ns = Some(first);
        record.ttst_ns = if split.per_chunk[0] >= 2 {
            Some(first)
        } else {
            self.chunk_at_ns.iter().zip(&split.per_chunk).skip(1).find(|(_, tokens)| **tokens > 0).map(|(at, _)| *at)
        };
        record.chunk_gaps_ns = self.chunk_at_ns.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
        record.chunk_tokens = split.per_chunk[1..].to_vec();
    }

    #[cfg(test)]
    pub(crate) fn saw_usage(&self) -> bool {
        self.saw_usage
    }
}

/// Scales integer weights (summing to `from`) so they sum to exactly `to`, rounding the running
/// total so no chunk's error exceeds one token.
fn rescale(weights: &[u32], from: u64, to: u64) -> Vec<u32> {
    let mut cumulative_weight = 0u64;
    let mut assigned = 0u64;
    weights
        .iter()
        .map(|&w| {
            cumulative_weight += u64::from(w);
            let target = (u128::from(to) * u128::from(cumulative_weight) + u128::from(from) / 2) / u128::from(from);
            let tokens = target as u64 - assigned;
            assigned = target as u64;
            tokens.min(u64::from(u32::MAX)) as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(account: &mut StreamAccount, events: &[(&str, u64)]) -> Option<Stop> {
        for (data, at) in events {
            if let ControlFlow::Break(stop) = account.on_event(data.as_bytes(), *at) {
                return Some(stop);
            }
        }
        None
    }

    #[test]
    fn words_are_rescaled_to_the_final_usage() {
        let mut account = StreamAccount::new();
        let stop = feed(
            &mut account,
            &[
                (r#"{"choices":[{"delta":{"role":"assistant","content":null}}]}"#, 5),
                (r#"{"choices":[{"delta":{"content":"one two"}}]}"#, 10),
                (r#"{"choices":[{"delta":{"content":" three"}}]}"#, 20),
                (r#"{"choices":[{"delta":{"content":" four five six"}}]}"#, 40),
                (r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12}}"#, 41),
                ("[DONE]", 42),
            ],
        );
        assert_eq!(stop, Some(Stop::Done));
        assert!(account.saw_usage());
        // words 2,1,3 (sum 6) scaled x2 to the server's 12
        assert_eq!(account.token_split(), TokenSplit { per_chunk: vec![4, 2, 6], output_tokens: 12 });
        let mut record = RequestRecord::default();
        account.fill(&mut record);
        assert_eq!((record.ttft_ns, record.ttst_ns), (Some(10), Some(10)), "first chunk has 4 tokens");
        assert_eq!(record.chunk_gaps_ns, vec![10, 20]);
        assert_eq!(record.chunk_tokens, vec![2, 6]);
        assert_eq!((record.prompt_tokens, record.output_tokens, record.chunks), (Some(9), Some(12), 3));
    }

    #[test]
    fn per_chunk_usage_wins_over_words() {
        let mut account = StreamAccount::new();
        feed(
            &mut account,
            &[
                (r#"{"choices":[{"delta":{"content":"x"}}],"usage":{"completion_tokens":1}}"#, 10),
                (r#"{"choices":[{"delta":{"content":"yz"}}],"usage":{"completion_tokens":4}}"#, 30),
                (r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#, 31),
            ],
        );
        assert_eq!(account.token_split(), TokenSplit { per_chunk: vec![1, 3], output_tokens: 4 });
        let mut record = RequestRecord::default();
        account.fill(&mut record);
        assert_eq!(record.ttst_ns, Some(30));
    }

    #[test]
    fn rescale_keeps_total_and_may_leave_chunks_empty() {
        assert_eq!(rescale(&[1, 1, 1, 1], 4, 2).iter().sum::<u32>(), 2);
        assert_eq!(rescale(&[1, 1, 1], 3, 7), vec![2, 3, 2]);
        let mut account = StreamAccount::new();
        feed(
            &mut account,
            &[
                (r#"{"choices":[{"text":"a"}]}"#, 1),
                (r#"{"choices":[{"text":"b"}]}"#, 2),
                (r#"{"choices":[{"text":"c"}]}"#, 3),
                (r#"{"choices":[{"text":"d"}]}"#, 4),
                (r#"{"usage":{"completion_tokens":2}}"#, 5),
            ],
        );
        let split = account.token_split();
        assert_eq!(split.output_tokens, 2);
        assert_eq!(split.per_chunk.iter().sum::<u32>(), 2);
    }

    #[test]
    fn bad_json_and_server_errors_stop_with_their_class() {
        let mut account = StreamAccount::new();
        assert!(matches!(feed(&mut account, &[("{oops", 1)]), Some(Stop::Failed(ErrorClass::MalformedJson, _))));
        let mut account = StreamAccount::new();
        let stop = feed(&mut account, &[(r#"{"error":{"message":"out of memory"}}"#, 1)]);
        assert_eq!(stop, Some(Stop::Failed(ErrorClass::ServerError, "out of memory".into())));
    }

    #[test]
    fn a_repeating_answer_is_predictable_and_a_varied_one_is_not() {
        let feed = |words: &[&str]| {
            let mut account = StreamAccount::new();
            for (i, w) in words.iter().enumerate() {
                let data = format!(r#"{{"choices":[{{"index":0,"delta":{{"content":"{w} "}}}}]}}"#);
                let _ = account.on_event(data.as_bytes(), i as u64);
            }
            let mut record = RequestRecord::default();
            account.fill(&mut record);
            record.ngram_predicted.unwrap()
        };
        let looping: Vec<&str> = ["a", "b", "c", "d"].iter().cycle().take(40).copied().collect();
        let (hit, seen) = feed(&looping);
        assert!(f64::from(hit) / f64::from(seen) > 0.8, "{hit}/{seen}");
        let varied: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        let varied: Vec<&str> = varied.iter().map(String::as_str).collect();
        assert_eq!(feed(&varied).0, 0);
    }
}
