//! `SseBenchmarker::from_env` reads the bearer token from the environment.
//! Its own test binary: it sets environment variables, which no other test may see mid-change.

mod common;

use std::time::Duration;

use autodebug_bench::SseBenchmarker;
use autodebug_core::{Benchmarker, ErrorClass, Load};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::*;

async fn guarded(headers: HeaderMap) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer from-the-env") {
        return (StatusCode::UNAUTHORIZED, "wrong token").into_response();
    }
    streamed(|sender| token_stream(sender, 2, 1, Duration::from_millis(1), 16))
}

#[tokio::test]
async fn token_comes_from_the_environment_when_the_endpoint_has_none() {
    let base = serve(Router::new().route("/v1/chat/completions", post(guarded))).await;
    let plan = plan(Load::Sequential, 1);
    // SAFETY: this binary's only test; nothing else reads the environment concurrently.
    unsafe {
        std::env::remove_var("AUTODEBUG_BENCH_TOKEN");
        std::env::remove_var("OPENAI_API_KEY");
    }
    let report = SseBenchmarker::from_env().expect("nothing required").run(&endpoint(&base), &plan).await.expect("ran");
    assert_eq!(report.records[0].error, Some(ErrorClass::HttpStatus), "no token anywhere: 401");

    unsafe { std::env::set_var("OPENAI_API_KEY", "from-the-env") };
    let report = SseBenchmarker::from_env().expect("nothing required").run(&endpoint(&base), &plan).await.expect("ran");
    assert_eq!(report.summary.succeeded, 1, "{:?}", report.records[0].error_message);

    // AUTODEBUG_BENCH_TOKEN wins over OPENAI_API_KEY.
    unsafe { std::env::set_var("AUTODEBUG_BENCH_TOKEN", "wrong") };
    let report = SseBenchmarker::from_env().expect("nothing required").run(&endpoint(&base), &plan).await.expect("ran");
    assert_eq!(report.records[0].error, Some(ErrorClass::HttpStatus));
    unsafe {
        std::env::remove_var("AUTODEBUG_BENCH_TOKEN");
        std::env::remove_var("OPENAI_API_KEY");
    }
}
