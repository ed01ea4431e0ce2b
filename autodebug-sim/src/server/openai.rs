//! The OpenAI-compatible API: `POST /v1/chat/completions`, `POST /v1/completions` (streaming SSE
//! and non-streaming) and `GET /v1/models`, shaped like SGLang's and vLLM's responses.
//!
//! Every chunk carries extra Unix-nanosecond stamps so a benchmark client can measure its own
//! timing error: `sim_ts_ns`, when the chunk's tokens were produced (the engine step's end);
//! `sim_sent_ns`, when the chunk was serialized for the wire (after any queueing in this server's
//! HTTP layer, so a client compares its receive time with the moment the bytes left); and
//! `sim_arrival_ns`, when the request's first bytes reached this host (the kernel's receive stamp,
//! see `rx_stamp`; else when the handler saw it).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use autodebug_core::rng::splitmix64;
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::clock::{Delivery, DeliveryReceiver, EngineHandle, Submission};
use super::rx_stamp::RxStamp;
use super::{AppState, EngineKind, SimRequest, tokenize};

/// Output words; a response of N tokens is N of these, so `tokenize` counts it back as N tokens.
const WORDS: &[&str] = &[
    "the",
    "model",
    "answers",
    "with",
    "a",
    "short",
    "and",
    "steady",
    "stream",
    "of",
    "plain",
    "words",
    "that",
    "mean",
    "little",
    "but",
    "count",
    "exactly",
    "one",
    "token",
    "each",
    "so",
    "clients",
    "can",
    "measure",
    "latency",
    "without",
    "guessing",
    "how",
    "text",
    "splits",
    "into",
    "pieces",
    "when",
    "it",
    "arrives",
    "over",
    "network",
    "from",
    "simulated",
    "engine",
    "running",
    "on",
    "an",
    "imaginary",
    "GPU",
    "in",
    "real",
    "time",
    "while",
    "scheduler",
    "batches",
    "requests",
    "together",
    "then",
    "decodes",
    "them",
    "step",
    "by",
    "until",
    "they",
    "finish",
    "or",
    "stop",
];

/// Shortest and longest answer when the client lets the model stop on its own (no `ignore_eos`).
/// Keeps the words' stream apart from the stop point's, which mixes the same prompt hash.
const WORD_SALT: u64 = 0x776f_7264_7321;
const NATURAL_MIN_TOKENS: u64 = 16;
const NATURAL_MAX_TOKENS: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completion,
}

/// An OpenAI-style error response.
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "BadRequestError", param }
    }

    pub fn not_found(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into(), kind: "NotFoundError", param }
    }

    fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Unauthorized: send the server's API key as `Authorization: Bearer <key>`".into(),
            kind: "AuthenticationError",
            param: None,
        }
    }

    fn unavailable() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the engine has stopped; restart the server".into(),
            kind: "ServiceUnavailableError",
            param: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status.as_u16()}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// Checks `Authorization: Bearer <key>` when the server has an API key.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = state.api_key.as_deref() else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim);
    match presented {
        Some(key) if constant_time_eq(key.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

pub async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(error) = authorize(&state, &headers) {
        return error.into_response();
    }
    let owner = match state.identity.engine {
        EngineKind::Vllm => "vllm",
        EngineKind::LlamaCpp => "llamacpp",
        EngineKind::Sglang => "sglang",
    };
    axum::Json(json!({
        "object": "list",
        "data": [{"id": state.served_model_name, "object": "model", "created": state.created_unix_s,
                  "owned_by": owner, "root": state.hf_id, "max_model_len": state.max_context}],
    }))
    .into_response()
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    rx: Option<Extension<ConnectInfo<RxStamp>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_unix_ns = rx.and_then(|Extension(ConnectInfo(stamp))| stamp.take());
    generate(state, received_unix_ns, headers, body, Api::Chat).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    rx: Option<Extension<ConnectInfo<RxStamp>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_unix_ns = rx.and_then(|Extension(ConnectInfo(stamp))| stamp.take());
    generate(state, received_unix_ns, headers, body, Api::Completion).await.unwrap_or_else(IntoResponse::into_response)
}

/// A validated generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u32>,
    pub ignore_eos: bool,
}

/// Reads the fields the simulator honours; unknown fields (temperature, top_p...) are accepted
/// and ignored like the engines do.
pub fn parse_request(api: Api, body: &Value, served_model_name: &str) -> Result<GenerationRequest, ApiError> {
    let object =
        body.as_object().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object", None))?;
    if let Some(model) = object.get("model") {
        let model = model.as_str().ok_or_else(|| ApiError::bad_request("`model` must be a string", Some("model")))?;
        if model != served_model_name {
            return Err(ApiError::not_found(
                format!("The model `{model}` does not exist. This server serves `{served_model_name}`."),
                Some("model"),
            ));
        }
    }
    let prompt = match api {
        Api::Chat => chat_prompt(object.get("messages"))?,
        Api::Completion => completion_prompt(object.get("prompt"))?,
    };
    if prompt.is_empty() {
        let param = if api == Api::Chat { "messages" } else { "prompt" };
        return Err(ApiError::bad_request(format!("`{param}` holds no text: send at least one word"), Some(param)));
    }
    let flag = |name: &str| -> Result<bool, ApiError> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(value)) => Ok(*value),
            Some(_) => Err(ApiError::bad_request(format!("`{name}` must be true or false"), None)),
        }
    };
    let stream = flag("stream")?;
    let ignore_eos = flag("ignore_eos")?;
    let include_usage = object
        .get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let max_tokens = match (object.get("max_completion_tokens"), object.get("max_tokens")) {
        (Some(value), _) if !value.is_null() => Some(positive(value, "max_completion_tokens")?),
        (_, Some(value)) if !value.is_null() => Some(positive(value, "max_tokens")?),
        _ => None,
    };
    Ok(GenerationRequest { prompt, stream, include_usage, max_tokens, ignore_eos })
}

fn positive(value: &Value, name: &'static str) -> Result<u32, ApiError> {
    value
        .as_u64()
        .filter(|n| *n >= 1)
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
        .ok_or_else(|| ApiError::bad_request(format!("`{name}` must be an integer of at least 1, got {value}"), None))
}

/// The prompt is the messages' text, one token per word; the chat template adds no tokens so a
/// client's "N-word prompt" is exactly N prompt tokens.
fn chat_prompt(messages: Option<&Value>) -> Result<Vec<u32>, ApiError> {
    let messages = messages.and_then(Value::as_array).ok_or_else(|| {
        ApiError::bad_request("`messages` must be a list of {role, content} objects", Some("messages"))
    })?;
    let mut text = String::new();
    for message in messages {
        match message.get("content") {
            Some(Value::String(content)) => {
                text.push(' ');
                text.push_str(content);
            }
            Some(Value::Array(parts)) => {
                for part in parts {
                    if let Some(part_text) = part.get("text").and_then(Value::as_str) {
                        text.push(' ');
                        text.push_str(part_text);
                    }
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "each message's `content` must be a string or a list of {type: text, text} parts",
                    Some("messages"),
                ));
            }
        }
    }
    Ok(tokenize(&text))
}

fn completion_prompt(prompt: Option<&Value>) -> Result<Vec<u32>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "`prompt` must be a string, a one-element list of strings, or a list of token ids",
            Some("prompt"),
        )
    };
    match prompt {
        Some(Value::String(text)) => Ok(tokenize(text)),
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            Ok(tokenize(items[0].as_str().unwrap_or_default()))
        }
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            Ok(items.iter().filter_map(Value::as_u64).map(|id| id as u32).collect())
        }
        _ => Err(invalid()),
    }
}

/// How many tokens the model "wants" to write for this prompt when allowed to stop on its own:
/// fixed by the seed and the prompt, like greedy decoding of the same prompt.
pub fn natural_length(seed: u64, prompt: &[u32]) -> u32 {
    let mixed = splitmix64(seed ^ crate::engine::prompt_hash(prompt));
    (NATURAL_MIN_TOKENS + mixed % (NATURAL_MAX_TOKENS - NATURAL_MIN_TOKENS + 1)) as u32
}

/// Cancels the request in the engine if the response is dropped before it finished (the client
/// went away).
struct CancelOnDrop {
    engine: EngineHandle,
    id: u64,
    done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.done {
            tracing::debug!(request = self.id, "client disconnected; cancelling");
            self.engine.cancel(self.id);
        }
    }
}

/// `received_unix_ns`: the kernel's receive stamp of the request, when the listener has one.
async fn generate(
    state: Arc<AppState>,
    received_unix_ns: Option<u64>,
    headers: HeaderMap,
    body: Bytes,
    api: Api,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    authorize(&state, &headers)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("the request body is not valid JSON: {error}"), None))?;
    let request = parse_request(api, &body, &state.served_model_name)?;
    let prompt_len = request.prompt.len() as u64;
    let context = u64::from(state.max_context);
    if prompt_len >= context {
        return Err(ApiError::bad_request(
            format!(
                "This model's maximum context length is {context} tokens. However, your prompt has {prompt_len} tokens. Shorten the prompt."
            ),
            None,
        ));
    }
    let room = (context - prompt_len) as u32;
    let requested = request.max_tokens.unwrap_or(room);
    if requested > room {
        return Err(ApiError::bad_request(
            format!(
                "This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt_len} in the messages, {requested} in the completion). Reduce max_tokens.",
                prompt_len + u64::from(requested)
            ),
            Some("max_tokens"),
        ));
    }
    let budget =
        if request.ignore_eos { requested } else { requested.min(natural_length(state.seed, &request.prompt)) };

    let answer = crate::engine::prompt_hash(&request.prompt);
    let id = state.next_request_id.fetch_add(1, Ordering::Relaxed);
    let (sink, deliveries) = state.engine.delivery_channel();
    let submitted = state.engine.submit(Submission {
        request: SimRequest {
            id,
            prompt: request.prompt,
            max_tokens: budget,
            // The stop point is decided above (deterministic per seed and prompt), so the model
            // runs exactly `budget` tokens.
            ignore_eos: true,
        },
        requested_max_tokens: requested,
        streaming: request.stream,
        arrived,
        sink,
    });
    if !submitted {
        return Err(ApiError::unavailable());
    }
    let guard = CancelOnDrop { engine: state.engine.clone(), id, done: false };
    let writer = ChunkWriter::new(
        &state,
        api,
        id,
        answer,
        requested,
        request.include_usage,
        arrival_unix_ns(state.clock.unix_ns(arrived), received_unix_ns),
    );
    if request.stream {
        Ok(stream_response(writer, deliveries, guard))
    } else {
        Ok(collect_response(writer, deliveries, guard).await)
    }
}

/// The kernel's stamp when it is plausible (not after the handler saw the request, nor seconds
/// before it), else the handler's own.
fn arrival_unix_ns(handler_unix_ns: u64, received_unix_ns: Option<u64>) -> u64 {
    const PLAUSIBLE_WAIT_NS: u64 = 10_000_000_000;
    match received_unix_ns {
        Some(received) if received <= handler_unix_ns && handler_unix_ns - received < PLAUSIBLE_WAIT_NS => received,
        _ => handler_unix_ns,
    }
}

/// Builds the JSON chunks of one response.
struct ChunkWriter {
    api: Api,
    engine: EngineKind,
    response_id: String,
    created: u64,
    model: String,
    requested_max_tokens: u32,
    include_usage: bool,
    /// When the request arrived (Unix ns), sent as `sim_arrival_ns` so clients can compare TTFTs.
    arrived_unix_ns: u64,
    word_seed: u64,
    text_position: u32,
    role_sent: bool,
    clock: super::clock::Clock,
}

impl ChunkWriter {
    fn new(
        state: &AppState,
        api: Api,
        id: u64,
        answer: u64,
        requested_max_tokens: u32,
        include_usage: bool,
        arrived_unix_ns: u64,
    ) -> ChunkWriter {
        let response_id = match api {
            Api::Chat => format!("chatcmpl-{id}"),
            Api::Completion => format!("cmpl-{id}"),
        };
        ChunkWriter {
            api,
            engine: state.identity.engine,
            response_id,
            created: arrived_unix_ns / 1_000_000_000,
            arrived_unix_ns,
            model: state.served_model_name.clone(),
            requested_max_tokens,
            include_usage,
            // The text depends on the prompt, not on the request: the same prompt gets the same
            // answer, as with greedy decoding, and as the engine's n-gram drafting assumes.
            word_seed: splitmix64(state.seed ^ answer ^ WORD_SALT),
            text_position: 0,
            role_sent: false,
            clock: state.clock,
        }
    }

    fn next_text(&mut self, tokens: u32) -> String {
        let mut text = String::new();
        for _ in 0..tokens {
            if self.text_position > 0 {
                text.push(' ');
            }
            let index = splitmix64(self.word_seed.wrapping_add(u64::from(self.text_position))) % WORDS.len() as u64;
            text.push_str(WORDS[index as usize]);
            self.text_position += 1;
        }
        text
    }

    fn finish_reason(&self, delivery: &Delivery) -> &'static str {
        if delivery.output_tokens < self.requested_max_tokens { "stop" } else { "length" }
    }

    fn object(&self, streaming: bool) -> &'static str {
        match (self.api, streaming) {
            (Api::Chat, true) => "chat.completion.chunk",
            (Api::Chat, false) => "chat.completion",
            (Api::Completion, _) => "text_completion",
        }
    }

    fn chunk(&self, choice: Value, sim_ts_ns: u64) -> Value {
        json!({
            "id": self.response_id, "object": self.object(true), "created": self.created, "model": self.model,
            "system_fingerprint": null, "choices": [choice], "sim_ts_ns": sim_ts_ns,
            "sim_arrival_ns": self.arrived_unix_ns, "sim_sent_ns": self.clock.now_unix_ns(),
        })
    }

    fn role_chunk(&mut self, sim_ts_ns: u64) -> Option<Value> {
        if self.api != Api::Chat || self.role_sent {
            return None;
        }
        self.role_sent = true;
        Some(self.chunk(
            json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
            sim_ts_ns,
        ))
    }

    fn content_choice(&self, text: String, finish_reason: Option<&str>) -> Value {
        match self.api {
            Api::Chat => {
                json!({"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": finish_reason})
            }
            Api::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason})
            }
        }
    }

    fn finish_choice(&self, finish_reason: &str) -> Value {
        match self.api {
            Api::Chat => {
                json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason})
            }
            Api::Completion => {
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish_reason})
            }
        }
    }

    fn usage(delivery: &Delivery) -> Value {
        json!({
            "prompt_tokens": delivery.prompt_tokens,
            "completion_tokens": delivery.output_tokens,
            "total_tokens": delivery.prompt_tokens + delivery.output_tokens,
            "prompt_tokens_details": {"cached_tokens": delivery.cached_tokens},
        })
    }

    /// The chunks one delivery turns into: SGLang sends the role chunk with the first token and
    /// the finish reason in a chunk of its own; vLLM puts the finish reason on the last token.
    fn chunks_for(&mut self, delivery: &Delivery, out: &mut VecDeque<Bytes>) {
        if let Some(role) = self.role_chunk(delivery.produced_unix_ns) {
            out.push_back(sse(&role));
        }
        let text = self.next_text(delivery.new_tokens);
        let reason = delivery.finished.then(|| self.finish_reason(delivery));
        match self.engine {
            EngineKind::Vllm => {
                out.push_back(sse(&self.chunk(self.content_choice(text, reason), delivery.produced_unix_ns)))
            }
            _ => {
                out.push_back(sse(&self.chunk(self.content_choice(text, None), delivery.produced_unix_ns)));
                if let Some(reason) = reason {
                    out.push_back(sse(&self.chunk(self.finish_choice(reason), delivery.produced_unix_ns)));
                }
            }
        }
        if delivery.finished {
            if self.include_usage {
                let usage = json!({
                    "id": self.response_id, "object": self.object(true), "created": self.created, "model": self.model,
                    "system_fingerprint": null, "choices": [], "usage": Self::usage(delivery),
                    "sim_ts_ns": delivery.produced_unix_ns,
                });
                out.push_back(sse(&usage));
            }
            out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        }
    }
}

fn sse(value: &Value) -> Bytes {
    let mut line = Vec::with_capacity(320);
    line.extend_from_slice(b"data: ");
    // Serializing a `Value` cannot fail.
    let _ = serde_json::to_writer(&mut line, value);
    line.extend_from_slice(b"\n\n");
    Bytes::from(line)
}

struct StreamState {
    writer: ChunkWriter,
    deliveries: DeliveryReceiver,
    guard: CancelOnDrop,
    pending: VecDeque<Bytes>,
    ended: bool,
}

fn stream_response(mut writer: ChunkWriter, deliveries: DeliveryReceiver, guard: CancelOnDrop) -> Response {
    let mut pending = VecDeque::new();
    if writer.engine == EngineKind::Vllm {
        // vLLM sends the role chunk as soon as the request is accepted.
        if let Some(role) = writer.role_chunk(writer.clock.now_unix_ns()) {
            pending.push_back(sse(&role));
        }
    }
    let state = StreamState { writer, deliveries, guard, pending, ended: false };
    let chunks = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(chunk) = state.pending.pop_front() {
                return Some((Ok::<Bytes, Infallible>(chunk), state));
            }
            if state.ended {
                return None;
            }
            match state.deliveries.recv().await {
                Some(delivery) => {
                    state.writer.chunks_for(&delivery, &mut state.pending);
                    if delivery.finished {
                        state.guard.done = true;
                        state.ended = true;
                    }
                }
                None => {
                    // The engine dropped the request without finishing it (it stopped).
                    state.guard.done = true;
                    state.ended = true;
                }
            }
        }
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn collect_response(
    mut writer: ChunkWriter,
    mut deliveries: DeliveryReceiver,
    mut guard: CancelOnDrop,
) -> Response {
    let mut text = String::new();
    let mut last: Option<Delivery> = None;
    while let Some(delivery) = deliveries.recv().await {
        let piece = writer.next_text(delivery.new_tokens);
        if !piece.is_empty() && !text.is_empty() {
            text.push(' ');
        }
        text.push_str(piece.trim_start());
        let finished = delivery.finished;
        last = Some(delivery);
        if finished {
            break;
        }
    }
    guard.done = true;
    let Some(last) = last.filter(|d| d.finished) else {
        return ApiError::unavailable().into_response();
    };
    let reason = writer.finish_reason(&last);
    let choice = match writer.api {
        Api::Chat => {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": reason})
        }
        Api::Completion => {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason})
        }
    };
    axum::Json(json!({
        "id": writer.response_id, "object": writer.object(false), "created": writer.created, "model": writer.model,
        "system_fingerprint": null, "choices": [choice], "usage": ChunkWriter::usage(&last), "sim_ts_ns": last.produced_unix_ns,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_length_is_deterministic_and_bounded() {
        let prompt = tokenize("tell me a story about the sea");
        let a = natural_length(7, &prompt);
        assert_eq!(a, natural_length(7, &prompt));
        let lengths: Vec<u32> = (0..64).map(|seed| natural_length(seed, &prompt)).collect();
        assert!(lengths.iter().all(|n| (NATURAL_MIN_TOKENS as u32..=NATURAL_MAX_TOKENS as u32).contains(n)));
        assert!(lengths.iter().any(|n| *n != a), "the seed must change the length");
    }

    #[test]
    fn parse_request_reads_limits_and_rejects_other_models() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "one two three"}],
                          "max_completion_tokens": 5, "max_tokens": 9, "ignore_eos": true, "stream": true,
                          "stream_options": {"include_usage": true}});
        let parsed = parse_request(Api::Chat, &body, "m").ok().expect("valid request");
        assert_eq!(parsed.prompt.len(), 3);
        assert_eq!(parsed.max_tokens, Some(5));
        assert!(parsed.ignore_eos && parsed.stream && parsed.include_usage);
        let wrong = parse_request(Api::Chat, &body, "other").expect_err("model mismatch");
        assert_eq!(wrong.status, StatusCode::NOT_FOUND);
        let zero = json!({"prompt": "a b", "max_tokens": 0});
        assert_eq!(parse_request(Api::Completion, &zero, "m").err().map(|e| e.status), Some(StatusCode::BAD_REQUEST));
    }
}
