//! Loopback test servers: real axum HTTP servers on 127.0.0.1 with a port chosen at run time.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::time::Duration;

use autodebug_core::{BenchPlan, Endpoint, Load, Timeouts, Workload};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use tokio::sync::mpsc;

/// Every test run is wrapped in this: a hung client fails the test instead of hanging it.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Serves `router` on a fresh loopback port; returns the base URL. The server lives as long as
/// the test's runtime.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    // As the engines' servers do: small token writes go out at once, not after a delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}")
}

pub fn endpoint(base_url: &str) -> Endpoint {
    Endpoint::new(base_url, "test-model")
}

/// Short timeouts so fault tests end quickly.
pub fn short_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        first_token: Duration::from_millis(400),
        idle_between_chunks: Duration::from_millis(400),
        total: Duration::from_secs(3),
    }
}

pub fn plan(load: Load, requests: usize) -> BenchPlan {
    let mut plan = BenchPlan::new("test", Workload::new(16, 8), load, requests);
    plan.timeouts = short_timeouts();
    plan
}

/// A sender for raw body pieces; a failed send means the client went away.
pub type Pieces = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A 200 `text/event-stream` response whose body `produce` writes piece by piece.
pub fn streamed<F, Fut>(produce: F) -> Response
where
    F: FnOnce(Pieces) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(produce(sender));
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(body))
        .expect("valid response")
}

/// `data: <json>\n\n` for a chat content chunk.
pub fn content_event(text: &str) -> Bytes {
    let json = serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    Bytes::from(format!("data: {json}\n\n"))
}

pub fn usage_event(prompt: u32, completion: u32, cached: Option<u32>) -> Bytes {
    let mut usage = serde_json::json!({"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion});
    if let Some(cached) = cached {
        usage["prompt_tokens_details"] = serde_json::json!({"cached_tokens": cached});
    }
    let json = serde_json::json!({"choices": [], "usage": usage});
    Bytes::from(format!("data: {json}\n\n"))
}

pub fn done_event() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// Sends `pieces` in order, sleeping `gap` before each; stops quietly when the client left.
pub async fn send_all(sender: &Pieces, pieces: Vec<Bytes>, gap: Duration) -> bool {
    for piece in pieces {
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        if sender.send(Ok(piece)).await.is_err() {
            return false;
        }
    }
    true
}

/// A well-behaved stream: `chunks` content chunks of `words_per_chunk` words each, `gap` apart,
/// then usage and `[DONE]`.
pub async fn token_stream(sender: Pieces, chunks: usize, words_per_chunk: usize, gap: Duration, prompt_tokens: u32) {
    let role = Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n");
    if !send_all(&sender, vec![role], Duration::ZERO).await {
        return;
    }
    for chunk in 0..chunks {
        let text: Vec<String> = (0..words_per_chunk).map(|w| format!(" w{chunk}_{w}")).collect();
        let wait = if chunk == 0 { Duration::from_millis(5) } else { gap };
        if !send_all(&sender, vec![content_event(&text.concat())], wait).await {
            return;
        }
    }
    let completion = (chunks * words_per_chunk) as u32;
    send_all(
        &sender,
        vec![usage_event(prompt_tokens, completion, Some(prompt_tokens / 2)), done_event()],
        Duration::ZERO,
    )
    .await;
}
