//! Shared helpers of the server tests: start a simulator on a loopback port chosen at run time,
//! read SSE streams with the time each event arrived.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use autodebug_sim::server::{ServeOptions, serve};
use autodebug_sim::{EngineKind, SimConfig};
use futures_util::StreamExt;
use serde_json::Value;

/// Upper bound for any single request in these tests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a simulated server on 127.0.0.1:<free port> and returns its address.
pub async fn start(engine: EngineKind, flags: &[&str], options: ServeOptions) -> SocketAddr {
    let args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    let config = SimConfig::from_args(engine, "H100", "qwen1.5-0.5b", &args).expect("valid simulator flags");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        if let Err(error) = serve(config, listener, options).await {
            panic!("server failed: {error}");
        }
    });
    address
}

pub fn quiet(seed: u64) -> ServeOptions {
    ServeOptions { seed, quiet: true, ..ServeOptions::default() }
}

/// A prompt of exactly `words` distinct words (one token each).
pub fn prompt(words: usize, salt: &str) -> String {
    (0..words).map(|i| format!("{salt}{i}")).collect::<Vec<_>>().join(" ")
}

pub fn chat_body(model: &str, prompt: &str, max_tokens: u32, stream: bool) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

/// One SSE event and when the client received it.
#[derive(Debug, Clone)]
pub struct Event {
    pub received: Instant,
    /// `None` for `data: [DONE]`.
    pub json: Option<Value>,
}

/// Posts `body` to `url` and reads the whole SSE stream, bounded by [`REQUEST_TIMEOUT`].
pub async fn stream(client: &reqwest::Client, url: &str, body: &Value, bearer: Option<&str>) -> Vec<Event> {
    let read = async {
        let mut request = client.post(url).json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), 200, "streaming request failed");
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(content_type.starts_with("text/event-stream"), "content-type was {content_type}");
        let mut bytes = response.bytes_stream();
        let mut buffer = String::new();
        let mut events = Vec::new();
        while let Some(piece) = bytes.next().await {
            let received = Instant::now();
            buffer.push_str(std::str::from_utf8(&piece.expect("body chunk")).expect("utf-8"));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data = event.trim().strip_prefix("data: ").expect("every event is a data line").to_string();
                let json =
                    if data == "[DONE]" { None } else { Some(serde_json::from_str(&data).expect("chunk is JSON")) };
                events.push(Event { received, json });
            }
        }
        assert!(buffer.trim().is_empty(), "stream ended mid-event: {buffer:?}");
        events
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read).await.expect("stream finished in time")
}

/// The content chunks (chat `delta.content` or completion `text`, non-empty).
pub fn content_events(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| {
            e.json.as_ref().and_then(|j| j["choices"].get(0)).is_some_and(|choice| {
                let text = choice["delta"]["content"].as_str().or_else(|| choice["text"].as_str()).unwrap_or("");
                !text.is_empty()
            })
        })
        .collect()
}

pub fn content_text(event: &Event) -> String {
    let choice = &event.json.as_ref().expect("json chunk")["choices"][0];
    choice["delta"]["content"].as_str().or_else(|| choice["text"].as_str()).unwrap_or("").to_string()
}

/// The usage of the final usage-only chunk.
pub fn usage(events: &[Event]) -> Value {
    events
        .iter()
        .filter_map(|e| e.json.as_ref())
        .find(|j| j["choices"].as_array().is_some_and(|c| c.is_empty()) && j.get("usage").is_some())
        .map(|j| j["usage"].clone())
        .expect("a usage chunk")
}
