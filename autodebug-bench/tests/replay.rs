//! Replays a real llama.cpp stream (tests/fixtures/llamacpp_smollm2_chat_stream.sse) over HTTP.

mod common;

use std::time::Duration;

use autodebug_bench::SseBenchmarker;
use autodebug_core::{Benchmarker, Load};
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use common::*;

const FIXTURE: &str = include_str!("fixtures/llamacpp_smollm2_chat_stream.sse");

/// The fixture's events (the text between blank lines), as the server sent them.
fn fixture_events() -> Vec<String> {
    FIXTURE.split("\n\n").filter(|e| !e.trim().is_empty()).map(|e| format!("{e}\n\n")).collect()
}

/// What the fixture says, read independently of the crate: content pieces and the final usage.
fn fixture_facts() -> (usize, u64, u64, u64) {
    let (mut content_chunks, mut usage) = (0, serde_json::Value::Null);
    for event in fixture_events() {
        let data = event.trim().trim_start_matches("data: ");
        if data == "[DONE]" {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(data).expect("fixture is JSON");
        if json["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()) {
            content_chunks += 1;
        }
        if json["usage"].is_object() {
            usage = json["usage"].clone();
        }
    }
    let field = |v: &serde_json::Value| v.as_u64().expect("usage field");
    (
        content_chunks,
        field(&usage["prompt_tokens"]),
        field(&usage["completion_tokens"]),
        field(&usage["prompt_tokens_details"]["cached_tokens"]),
    )
}

/// Serves the fixture event by event, `gap` apart; with `None`, as one single write.
async fn replay(gap: Option<Duration>) -> autodebug_core::BenchReport {
    let router = Router::new().route(
        "/v1/chat/completions",
        post(move || async move {
            streamed(move |sender| async move {
                match gap {
                    Some(gap) => send_all(&sender, fixture_events().into_iter().map(Bytes::from).collect(), gap).await,
                    None => send_all(&sender, vec![Bytes::from_static(FIXTURE.as_bytes())], Duration::ZERO).await,
                };
            })
        }),
    );
    let base = serve(router).await;
    let plan = plan(Load::Sequential, 2);
    tokio::time::timeout(RUN_LIMIT, SseBenchmarker::default().run(&endpoint(&base), &plan))
        .await
        .expect("finished")
        .expect("ran")
}

#[tokio::test]
async fn llamacpp_stream_tokens_and_usage() {
    let (content_chunks, prompt, completion, cached) = fixture_facts();
    assert_eq!((content_chunks, prompt, completion), (128, 38, 128), "the fixture is the one described in SOURCES.md");
    let report = replay(Some(Duration::from_millis(1))).await;
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.summary.succeeded, 2);
    for record in &report.records {
        assert_eq!(record.error, None, "{:?}", record.error_message);
        assert_eq!(record.chunks as usize, content_chunks, "the role chunk with content null is not a token");
        assert_eq!(record.prompt_tokens, Some(prompt as u32), "prompt tokens come from the server's usage");
        assert_eq!(record.output_tokens, Some(completion as u32));
        assert_eq!(record.cached_tokens, Some(cached as u32));
        assert_eq!(record.chunk_gaps_ns.len(), content_chunks - 1);
        assert_eq!(record.chunk_tokens.len(), content_chunks - 1);
        // One token per chunk in this stream: after rescaling to usage, every chunk carries one.
        assert!(record.chunk_tokens.iter().all(|&k| k == 1), "{:?}", record.chunk_tokens);
        let (ttft, ttst, e2e) = (record.ttft_ns.unwrap(), record.ttst_ns.unwrap(), record.e2e_ns.unwrap());
        assert!(ttft < ttst && ttst <= e2e, "ttft {ttft} ttst {ttst} e2e {e2e}");
        let gaps: u64 = record.chunk_gaps_ns.iter().sum();
        assert!(ttft + gaps <= e2e, "gaps fit between the first token and the end");
    }
    let summary = &report.summary;
    assert_eq!(summary.output_tokens, 2 * completion);
    assert_eq!(summary.prompt_tokens, 2 * prompt);
    assert_eq!(summary.cached_token_ratio, Some(0.0));
    assert_eq!(summary.itl_ms.count, 2 * 127);
    // With one token per chunk, per-token ITL and inter-chunk latency are the same samples.
    assert!((summary.itl_ms.mean - summary.inter_chunk_ms.mean).abs() < 1e-9);
    assert_eq!(summary.tpot_ms.count, 2);
    let window_ns = report.window.end_ns - report.window.start_ns;
    let e2e_sum: u64 = report.records.iter().map(|r| r.e2e_ns.unwrap()).sum();
    assert!(window_ns as u64 >= e2e_sum, "sequential requests fit inside the window");
}

#[tokio::test]
async fn llamacpp_stream_in_one_write() {
    // One 38 kB write reaches the client in a few reads; events of one read share its arrival
    // time, so nearly every gap is exactly 0.
    let report = replay(None).await;
    let record = &report.records[0];
    assert_eq!(record.error, None, "{:?}", record.error_message);
    assert_eq!(record.output_tokens, Some(128));
    assert_eq!(record.chunks, 128);
    let zero_gaps = record.chunk_gaps_ns.iter().filter(|&&g| g == 0).count();
    assert!(zero_gaps >= 100, "events of one read share its arrival time; zero gaps: {zero_gaps} of 127");
}
