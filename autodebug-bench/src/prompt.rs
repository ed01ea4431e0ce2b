//! Synthetic prompts sized in approximate tokens, and the JSON request body.
//!
//! One token is one whitespace-separated word, the same count the simulator uses, so a
//! workload of 512 prompt tokens sends 512 words. Real tokenizers split differently; the
//! server's `usage.prompt_tokens` (when it sends one) is what the records keep.

use autodebug_core::Workload;
use autodebug_core::rng::SplitMix64;
use serde::Serialize;

/// Short common words: each is one token in most BPE vocabularies too, so the approximation
/// stays close for real engines.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "was", "that", "for", "on", "are", "with", "as", "at", "be", "this",
    "have", "from", "or", "one", "had", "by", "word", "but", "not", "what", "all", "were", "we", "when",
    "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will",
    "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make",
    "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no", "way",
    "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now", "find",
    "long", "down", "day", "did", "get", "come", "made", "may", "part", "over", "new", "sound", "take",
    "only", "little", "work", "know", "place", "year", "live", "me", "back", "give", "most", "very", "after",
    "thing", "our", "just", "name", "good", "sentence", "man", "think", "say", "great", "where", "help",
    "through", "much", "before", "line", "right", "too", "mean", "old", "any", "same", "tell", "boy",
    "follow", "came", "want", "show", "also", "around", "form", "three", "small", "set", "put", "end", "does",
    "another", "well", "large", "must", "big", "even", "such", "because", "turn", "here", "why", "ask",
    "went", "men", "read", "need", "land", "different", "home", "us", "move", "try", "kind", "hand",
    "picture", "again", "change", "off", "play", "spell", "air", "away", "animal", "house", "point", "page",
    "letter", "mother", "answer", "found", "study", "still", "learn", "should", "world", "high", "every",
    "near", "add", "food", "between", "own", "below", "country", "plant", "last", "school", "father", "keep",
    "tree", "never", "start", "city", "earth", "eye", "light", "thought", "head", "under", "story", "saw",
    "left", "few", "while", "along", "might", "close", "something", "seem", "next", "hard", "open", "example",
    "begin", "life", "always", "those", "both", "paper", "together", "got", "group", "often", "run",
    "important", "until", "children", "side", "feet", "car", "mile", "night", "walk", "white", "sea", "began",
    "grow",
];

/// The random stream that draws the shared prefix (request streams use their index).
const PREFIX_STREAM: u64 = u64::MAX;

/// The prompt for request `index` of `workload`: exactly `workload.prompt_tokens` words.
///
/// Deterministic in (`workload.seed`, `index`): two arms of a comparison send the same text.
/// The first `shared_prefix_tokens` words are the same for every index; with `repeat_prompt`
/// every index gets the prompt of index 0.
///
/// ```
/// use autodebug_bench::synthetic_prompt;
/// use autodebug_core::Workload;
///
/// let mut workload = Workload::new(8, 16);
/// workload.shared_prefix_tokens = 3;
/// let (a, b) = (synthetic_prompt(&workload, 0), synthetic_prompt(&workload, 1));
/// assert_eq!(a.split_whitespace().count(), 8);
/// assert_ne!(a, b);
/// let prefix = |p: &str| p.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
/// assert_eq!(prefix(&a), prefix(&b));
/// ```
pub fn synthetic_prompt(workload: &Workload, index: usize) -> String {
    let index = if workload.repeat_prompt { 0 } else { index };
    prompt_from_words(
        WORDS,
        workload.seed,
        workload.shared_prefix_tokens as usize,
        workload.prompt_tokens as usize,
        index,
    )
}

/// The built-in word list: each word is one token of the approximate tokenizer.
pub(crate) fn builtin_words() -> &'static [&'static str] {
    WORDS
}

/// `total` words drawn from `words`: the first `prefix` from the shared stream of `seed`, the
/// rest from the stream of `index`.
pub(crate) fn prompt_from_words<W: AsRef<str>>(
    words: &[W],
    seed: u64,
    prefix: usize,
    total: usize,
    index: usize,
) -> String {
    let prefix = prefix.min(total);
    let mut prompt = String::with_capacity(total * 7);
    if words.is_empty() {
        return prompt;
    }
    let mut push_words = |rng: &mut SplitMix64, count: usize| {
        for _ in 0..count {
            if !prompt.is_empty() {
                prompt.push(' ');
            }
            prompt.push_str(words[(rng.next_u64() % words.len() as u64) as usize].as_ref());
        }
    };
    push_words(&mut SplitMix64::for_stream(seed, PREFIX_STREAM), prefix);
    push_words(&mut SplitMix64::for_stream(seed, index as u64), total - prefix);
    prompt
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct RequestBody<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<[ChatMessage<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    max_tokens: u32,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignore_eos: Option<bool>,
    temperature: f64,
}

/// One message of a chat conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Message { role: "user".into(), content: content.into() }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Message { role: "assistant".into(), content: content.into() }
    }
}

#[derive(Serialize)]
struct ConversationBody<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a [Message]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    max_tokens: u32,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignore_eos: Option<bool>,
    temperature: f64,
}

/// The JSON body for a conversation so far. For `/v1/completions` (`chat == false`) the
/// messages' contents are joined with blank lines into one prompt.
pub(crate) fn conversation_body(
    model: &str,
    messages: &[Message],
    max_tokens: u32,
    ignore_eos: bool,
    chat: bool,
) -> Vec<u8> {
    let prompt = (!chat).then(|| messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n\n"));
    let body = ConversationBody {
        model,
        messages: chat.then_some(messages),
        prompt,
        max_tokens,
        stream: true,
        stream_options: StreamOptions { include_usage: true },
        ignore_eos: ignore_eos.then_some(true),
        temperature: 0.0,
    };
    // Serializing plain strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The JSON body for one streaming request (`/v1/chat/completions` when `chat`, else `/v1/completions`).
#[allow(dead_code)] // kept for the parse-path benchmarks and tests
pub(crate) fn request_body(model: &str, workload: &Workload, prompt: &str, chat: bool) -> Vec<u8> {
    let body = RequestBody {
        model,
        messages: chat.then_some([ChatMessage { role: "user", content: prompt }]),
        prompt: (!chat).then_some(prompt),
        max_tokens: workload.output_tokens,
        stream: true,
        stream_options: StreamOptions { include_usage: true },
        ignore_eos: workload.ignore_eos.then_some(true),
        temperature: 0.0,
    };
    // Serializing plain strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_exact_word_count_and_depends_on_seed_and_index() {
        let mut w = Workload::new(100, 10);
        let a = synthetic_prompt(&w, 5);
        assert_eq!(a.split_whitespace().count(), 100);
        assert_eq!(a, synthetic_prompt(&w, 5));
        assert_ne!(a, synthetic_prompt(&w, 6));
        w.seed = 1;
        assert_ne!(a, synthetic_prompt(&w, 5));
        w.prompt_tokens = 0;
        assert_eq!(synthetic_prompt(&w, 5), "");
    }

    #[test]
    fn repeat_prompt_and_shared_prefix() {
        let mut w = Workload::new(40, 10);
        w.repeat_prompt = true;
        assert_eq!(synthetic_prompt(&w, 0), synthetic_prompt(&w, 99));
        w.repeat_prompt = false;
        w.shared_prefix_tokens = 30;
        let (a, b) = (synthetic_prompt(&w, 1), synthetic_prompt(&w, 2));
        let words = |p: &str| p.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(words(&a)[..30], words(&b)[..30]);
        assert_ne!(words(&a)[30..], words(&b)[30..]);
        // A prefix longer than the prompt is clamped, not an error.
        w.shared_prefix_tokens = 100;
        assert_eq!(synthetic_prompt(&w, 1), synthetic_prompt(&w, 2));
        assert_eq!(synthetic_prompt(&w, 1).split_whitespace().count(), 40);
    }

    #[test]
    fn body_has_the_openai_streaming_fields() {
        let w = Workload::new(3, 7);
        let chat: serde_json::Value = serde_json::from_slice(&request_body("m", &w, "a b c", true)).unwrap();
        assert_eq!(chat["model"], "m");
        assert_eq!(chat["messages"][0]["role"], "user");
        assert_eq!(chat["messages"][0]["content"], "a b c");
        assert_eq!(chat["max_tokens"], 7);
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert_eq!(chat["ignore_eos"], true);
        assert_eq!(chat["temperature"], 0.0);
        assert!(chat.get("prompt").is_none());
        let mut w = w;
        w.ignore_eos = false;
        let completion: serde_json::Value = serde_json::from_slice(&request_body("m", &w, "a b c", false)).unwrap();
        assert_eq!(completion["prompt"], "a b c");
        assert!(completion.get("messages").is_none());
        assert!(completion.get("ignore_eos").is_none());
    }
}
