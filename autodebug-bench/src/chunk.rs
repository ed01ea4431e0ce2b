//! The few fields of an OpenAI-style stream chunk the benchmark needs, read by borrowing.
//!
//! Only `choices[].delta.content` (chat), `choices[].text` (completions),
//! `choices[].finish_reason`, `usage` and `error` are looked at; everything else a server adds
//! (llama.cpp `timings`, ids, fingerprints) is skipped without being built.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};

/// Token counts from a chunk's `usage` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// `usage.prompt_tokens_details.cached_tokens`, when the server reports details.
    pub cached_tokens: Option<u32>,
}

/// What one `data:` event said.
#[derive(Debug, Default)]
pub(crate) struct Chunk<'a> {
    /// Generated text in this chunk (all choices together); `None` or empty when none.
    pub text: Option<Cow<'a, str>>,
    /// Some choice carried a non-null `finish_reason`.
    pub finished: bool,
    pub usage: Option<Usage>,
    /// The server reported an error inside the stream (`{"error": ...}`): its message.
    pub error: Option<String>,
}

#[cfg(test)]
impl Chunk<'_> {
    pub(crate) fn has_text(&self) -> bool {
        self.text.as_deref().is_some_and(|t| !t.is_empty())
    }
}

/// Parses one event's data. Anything that is not a JSON object is an error.
pub(crate) fn parse_chunk(data: &[u8]) -> Result<Chunk<'_>, serde_json::Error> {
    let raw: RawChunk<'_> = serde_json::from_slice(data)?;
    let error = raw.error.and_then(|e| error_message(&e));
    let usage = raw.usage.map(|u| Usage {
        prompt_tokens: u.prompt_tokens.map(clamp_u32),
        completion_tokens: u.completion_tokens.map(clamp_u32),
        cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens).map(clamp_u32),
    });
    let choices = raw.choices.unwrap_or_default();
    Ok(Chunk { text: choices.text, finished: choices.finished, usage, error })
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn error_message(error: &serde_json::Value) -> Option<String> {
    let text = match error {
        serde_json::Value::Null => return None,
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) => match map.get("message") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => error.to_string(),
        },
        other => other.to_string(),
    };
    Some(text.chars().take(300).collect())
}

#[derive(Deserialize)]
struct RawChunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Choices<'a>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<RawPromptDetails>,
}

#[derive(Deserialize)]
struct RawPromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct RawChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<RawDelta<'a>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawDelta<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    content: Option<Cow<'a, str>>,
}

/// An optional string that borrows from the input when it has no escapes. Serde's own
/// `Option<Cow<str>>` always copies; this keeps the per-chunk path allocation-free.
fn borrowed_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct TextVisitor;

    impl<'de> Visitor<'de> for TextVisitor {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or null")
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_str(self)
        }

        fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(text)))
        }

        fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(text.to_owned())))
        }

        fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(text)))
        }
    }

    deserializer.deserialize_option(TextVisitor)
}

/// The `choices` array folded while it is read, so no `Vec` is built per chunk.
#[derive(Default)]
struct Choices<'a> {
    text: Option<Cow<'a, str>>,
    finished: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoicesVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for ChoicesVisitor<'a> {
            type Value = Choices<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of choices")
            }

            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Choices::default())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Choices::default();
                while let Some(choice) = seq.next_element::<RawChoice<'de>>()? {
                    out.finished |= choice.finish_reason.is_some();
                    let piece = choice.delta.and_then(|d| d.content).or(choice.text);
                    out.text = match (out.text.take(), piece) {
                        (None, piece) => piece,
                        (Some(text), None) => Some(text),
                        // n > 1 choices: rare, so joining them may allocate.
                        (Some(text), Some(piece)) => Some(Cow::Owned(format!("{text}{piece}"))),
                    };
                }
                Ok(out)
            }
        }

        deserializer.deserialize_any(ChoicesVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_delta_completion_text_usage_and_finish() {
        let c = parse_chunk(br#"{"choices":[{"index":0,"delta":{"content":"Hi there"}}],"id":"x"}"#).unwrap();
        assert_eq!(c.text.as_deref(), Some("Hi there"));
        assert!(matches!(c.text, Some(Cow::Borrowed(_))), "plain strings are borrowed, not copied");
        assert!(!c.finished);
        let c = parse_chunk(br#"{"choices":[{"text":"a\nb","finish_reason":"length"}]}"#).unwrap();
        assert_eq!(c.text.as_deref(), Some("a\nb"));
        assert!(c.finished);
        let c = parse_chunk(
            br#"{"choices":[],"usage":{"completion_tokens":128,"prompt_tokens":38,"prompt_tokens_details":{"cached_tokens":7}}}"#,
        )
        .unwrap();
        assert!(!c.has_text());
        assert_eq!(
            c.usage,
            Some(Usage { prompt_tokens: Some(38), completion_tokens: Some(128), cached_tokens: Some(7) })
        );
    }

    #[test]
    fn role_chunk_with_null_content_and_null_fields() {
        let c = parse_chunk(
            br#"{"choices":[{"delta":{"role":"assistant","content":null},"finish_reason":null}],"usage":null}"#,
        )
        .unwrap();
        assert!(!c.has_text());
        assert!(!c.finished);
        assert!(c.usage.is_none());
        let c = parse_chunk(br#"{"choices":null}"#).unwrap();
        assert!(!c.has_text());
    }

    #[test]
    fn errors_in_the_stream_and_non_objects() {
        let c = parse_chunk(br#"{"error":{"message":"KV cache full","code":503}}"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("KV cache full"));
        let c = parse_chunk(br#"{"error":"boom"}"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("boom"));
        assert!(parse_chunk(b"not json").is_err());
        assert!(parse_chunk(b"[1,2]").is_err());
        assert!(parse_chunk(br#"{"choices":[{"delta":{"content":5}}]}"#).is_err());
    }
}
