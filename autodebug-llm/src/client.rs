//! One request to the model, in either API dialect.

use crate::{Prompt, estimate_tokens};
use serde_json::{Value, json};

use crate::config::{LlmConfig, Provider};

/// Why a call produced no text.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{url} answered HTTP {status}: {body}")]
    Http { url: String, status: u16, body: String },
    #[error("{url} did not answer within {seconds:.1}s; raise the LLM timeout or check the server")]
    Timeout { url: String, seconds: f64 },
    #[error("could not reach {url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url} answered something that is not a chat reply: {message}")]
    BadResponse { url: String, message: String },
}

/// The largest answer read from the model's API. A plan is a few KB (the reply is capped at the
/// budget's `max_tokens_per_call`), so a bigger answer is a broken or hostile server, refused
/// before it can grow memory without bound.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// The model's text and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

fn body_of(config: &LlmConfig, prompt: &Prompt) -> Value {
    let max_tokens = config.budget.max_tokens_per_call;
    // The last gate before the provider: registered secret values (the LLM key included) are masked.
    let redacted = Prompt {
        system: autodebug_core::secret::redact(&prompt.system).into_owned(),
        user: autodebug_core::secret::redact(&prompt.user).into_owned(),
    };
    let prompt = &redacted;
    match config.provider {
        Provider::OpenAi => json!({
            "model": config.model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": false,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
        }),
        Provider::Anthropic => json!({
            "model": config.model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "system": prompt.system,
            "messages": [{"role": "user", "content": prompt.user}],
        }),
    }
}

fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

pub(crate) async fn complete(
    client: &reqwest::Client,
    config: &LlmConfig,
    prompt: &Prompt,
) -> Result<Completion, LlmError> {
    let url = config.url();
    let mut request = client.post(&url).timeout(config.timeout).json(&body_of(config, prompt));
    request = match (config.provider, &config.api_key) {
        (Provider::OpenAi, Some(key)) => request.bearer_auth(key.expose()),
        (Provider::Anthropic, Some(key)) => {
            request.header("x-api-key", key.expose()).header("anthropic-version", "2023-06-01")
        }
        (Provider::Anthropic, None) => request.header("anthropic-version", "2023-06-01"),
        (Provider::OpenAi, None) => request,
    };
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            LlmError::Timeout { url: url.clone(), seconds: config.timeout.as_secs_f64() }
        } else {
            LlmError::Transport { url: url.clone(), message: e.to_string() }
        }
    };
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status();
    let too_large = || LlmError::BadResponse {
        url: url.clone(),
        message: format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes (a plan is a few KB); refused"),
    };
    if response.content_length().is_some_and(|declared| declared > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    if !status.is_success() {
        return Err(LlmError::Http { url, status: status.as_u16(), body: short(&text) });
    }
    let bad = |message: String| LlmError::BadResponse { url: url.clone(), message };
    let value: Value = serde_json::from_str(&text).map_err(|e| bad(format!("{e}: {}", short(&text))))?;
    let (content, input, output) = match config.provider {
        Provider::OpenAi => (
            value.pointer("/choices/0/message/content").and_then(Value::as_str).map(str::to_string),
            value.pointer("/usage/prompt_tokens").and_then(Value::as_u64),
            value.pointer("/usage/completion_tokens").and_then(Value::as_u64),
        ),
        Provider::Anthropic => (
            value.get("content").and_then(Value::as_array).map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("")
            }),
            value.pointer("/usage/input_tokens").and_then(Value::as_u64),
            value.pointer("/usage/output_tokens").and_then(Value::as_u64),
        ),
    };
    let content = content.ok_or_else(|| bad(format!("no message content in {}", short(&text))))?;
    let input_tokens = input.unwrap_or_else(|| estimate_tokens(&prompt.system) + estimate_tokens(&prompt.user));
    let output_tokens = output.unwrap_or_else(|| estimate_tokens(&content));
    Ok(Completion { text: content, input_tokens, output_tokens })
}
