//! Fault servers: every misbehaviour ends as its own error class, and the run always finishes,
//! through both HTTP clients (the crate's own for `http://`, and reqwest, used for `https://`).

mod common;

use std::time::Duration;

use autodebug_bench::{HttpClient, SseBenchmarker};
use autodebug_core::{BenchReport, ErrorClass, Load};
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use common::*;

const REQUESTS: usize = 3;

const CLIENTS: [HttpClient; 2] = [HttpClient::Auto, HttpClient::Reqwest];

/// Runs REQUESTS sequential requests against `router` with each HTTP client and checks each run
/// ends in bounded time.
async fn run_against(router: Router) -> Vec<BenchReport> {
    let base = serve(router).await;
    let mut reports = Vec::new();
    for client in CLIENTS {
        let bench = SseBenchmarker::builder().http_client(client).build();
        reports.push(run_bounded(&bench, &base, Load::Sequential, REQUESTS).await);
    }
    reports
}

async fn run_bounded(bench: &SseBenchmarker, base: &str, load: Load, requests: usize) -> BenchReport {
    tokio::time::timeout(RUN_LIMIT, bench.run_plan(&endpoint(base), &plan(load, requests)))
        .await
        .expect("the run finished instead of hanging")
        .expect("the run itself succeeded; requests fail individually")
}

fn assert_all_failed_with(reports: &[BenchReport], class: ErrorClass) {
    assert!(!reports.is_empty());
    for report in reports {
        assert_eq!(report.records.len(), REQUESTS);
        for record in &report.records {
            assert_eq!(record.error, Some(class), "record {record:?}");
            assert!(record.error_message.as_deref().is_some_and(|m| !m.is_empty()));
            assert!(record.e2e_ns.is_none(), "failed requests have no e2e");
        }
        assert_eq!(report.summary.failed, REQUESTS as u64);
        assert_eq!(report.summary.errors.get(class.as_str()), Some(&(REQUESTS as u64)));
        assert_eq!(report.summary.ttft_ms.count, 0, "failed requests stay out of latency figures");
        assert!(report.warnings.iter().any(|w| w.contains(class.as_str())), "warnings: {:?}", report.warnings);
    }
}

fn route(handler: axum::routing::MethodRouter) -> Router {
    Router::new().route("/v1/chat/completions", handler)
}

#[tokio::test]
async fn stall_before_first_token_after_headers() {
    let router = route(post(|| async {
        streamed(|sender| async move {
            let role =
                Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n");
            send_all(&sender, vec![role], Duration::ZERO).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
    }));
    assert_all_failed_with(&run_against(router).await, ErrorClass::TimeoutFirstToken);
}

#[tokio::test]
async fn stall_before_headers() {
    let router = route(post(|| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        "never"
    }));
    assert_all_failed_with(&run_against(router).await, ErrorClass::TimeoutFirstToken);
}

#[tokio::test]
async fn stall_mid_stream() {
    let router = route(post(|| async {
        streamed(|sender| async move {
            send_all(&sender, vec![content_event("hello"), content_event(" world")], Duration::from_millis(5)).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
    }));
    let reports = run_against(router).await;
    assert_all_failed_with(&reports, ErrorClass::TimeoutIdle);
    for report in &reports {
        assert!(report.records.iter().all(|r| r.chunks == 2 && r.ttft_ns.is_some()), "partial progress is kept");
    }
}

#[tokio::test]
async fn trickle_past_the_total_timeout() {
    // A token every 100 ms never trips the 400 ms idle timeout but never ends: only `total` can stop it.
    let router = route(post(|| async {
        streamed(|sender| async move {
            for i in 0..10_000 {
                if !send_all(&sender, vec![content_event(&format!(" t{i}"))], Duration::from_millis(100)).await {
                    return;
                }
            }
        })
    }));
    let reports = run_against(router).await;
    assert_all_failed_with(&reports, ErrorClass::TimeoutTotal);
    for report in &reports {
        assert!(report.records.iter().all(|r| r.chunks >= 5), "tokens kept flowing until the total timeout");
    }
}

#[tokio::test]
async fn clean_close_mid_stream() {
    let router = route(post(|| async {
        streamed(|sender| async move {
            send_all(&sender, vec![content_event("a"), content_event(" b"), content_event(" c")], Duration::ZERO).await;
        })
    }));
    assert_all_failed_with(&run_against(router).await, ErrorClass::EarlyClose);
}

#[tokio::test]
async fn aborted_connection_mid_stream() {
    let router = route(post(|| async {
        streamed(|sender| async move {
            send_all(&sender, vec![content_event("a")], Duration::ZERO).await;
            let _ = sender.send(Err(std::io::Error::other("upstream crashed"))).await;
        })
    }));
    assert_all_failed_with(&run_against(router).await, ErrorClass::EarlyClose);
}

#[tokio::test]
async fn garbage_instead_of_sse() {
    let router = route(post(|| async {
        streamed(|sender| async move {
            let garbage = Bytes::from_static(b"<html><body>502 Bad Gateway</body></html>\n\n");
            send_all(&sender, vec![garbage], Duration::ZERO).await;
        })
    }));
    assert_all_failed_with(&run_against(router).await, ErrorClass::MalformedSse);
}

#[tokio::test]
async fn data_that_is_not_json() {
    let router = route(post(|| async {
        streamed(|sender| async move {
            let pieces = vec![content_event("ok"), Bytes::from_static(b"data: {\"choices\": [tru\n\n"), done_event()];
            send_all(&sender, pieces, Duration::ZERO).await;
        })
    }));
    assert_all_failed_with(&run_against(router).await, ErrorClass::MalformedJson);
}

#[tokio::test]
async fn too_many_requests() {
    let router = route(post(|| async { (StatusCode::TOO_MANY_REQUESTS, "rate limited, retry later").into_response() }));
    let reports = run_against(router).await;
    assert_all_failed_with(&reports, ErrorClass::HttpStatus);
    for report in &reports {
        let message = report.records[0].error_message.clone().unwrap_or_default();
        assert!(message.contains("429") && message.contains("rate limited"), "{message}");
    }
}

#[tokio::test]
async fn internal_server_error() {
    let router = route(post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "").into_response() }));
    let reports = run_against(router).await;
    assert_all_failed_with(&reports, ErrorClass::HttpStatus);
    for report in &reports {
        assert!(report.records[0].error_message.as_deref().unwrap_or_default().contains("500"));
    }
}

#[tokio::test]
async fn error_object_in_the_stream() {
    let router = route(post(|| async {
        streamed(|sender| async move {
            let error = Bytes::from_static(b"data: {\"error\":{\"message\":\"KV cache exhausted\",\"code\":503}}\n\n");
            send_all(&sender, vec![content_event("partial"), error], Duration::ZERO).await;
        })
    }));
    let reports = run_against(router).await;
    assert_all_failed_with(&reports, ErrorClass::ServerError);
    for report in &reports {
        assert_eq!(report.records[0].error_message.as_deref(), Some("KV cache exhausted"));
    }
}

#[tokio::test]
async fn nothing_listening() {
    // Bind, note the port, and close it again, so the port is (almost surely) refused.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let mut reports = Vec::new();
    for client in CLIENTS {
        let bench = SseBenchmarker::builder().http_client(client).build();
        reports.push(run_bounded(&bench, &format!("http://{address}"), Load::Sequential, REQUESTS).await);
    }
    assert_all_failed_with(&reports, ErrorClass::Connect);
}

/// Byte soups that are not valid streams: each must end as some failure class, never a panic
/// or a hang, and the run must count every request.
#[tokio::test]
async fn arbitrary_bytes_never_panic_the_client() {
    let soups: Vec<&'static [u8]> = vec![
        b"\xff\xfe\x00\x01binary\n\n",
        b"data: \xff\xfe\n\n",
        b"data: {\"choices\":[{\"delta\":{\"content\":\"\\ud800\"}}]}\n\n",
        b"data: {\"usage\":{\"completion_tokens\":-5}}\n\n",
        b"data: {\"usage\":{\"completion_tokens\":99999999999999}}\n\ndata: [DONE]\n\n",
        b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"completion_tokens\":0}}\n\ndata: [DONE]\n\n",
        b"data: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n\n",
        b"data: \"just a string\"\n\n",
        b"\r\r\r\r\n\n\n:\n",
        b"",
    ];
    let soups: &'static [&'static [u8]] = Vec::leak(soups);
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let router = route(post(move || {
        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % soups.len();
        async move {
            streamed(move |sender| async move {
                send_all(&sender, vec![Bytes::from_static(soups[i])], Duration::ZERO).await;
            })
        }
    }));
    let base = serve(router).await;
    for client in CLIENTS {
        let bench = SseBenchmarker::builder().http_client(client).build();
        let report = run_bounded(&bench, &base, Load::Concurrent { concurrency: 2 }, soups.len()).await;
        assert_eq!(report.records.len(), soups.len());
        assert_eq!(report.summary.succeeded + report.summary.failed, soups.len() as u64);
        assert!(report.summary.failed >= 7, "{client:?}: most soups are failures: {:?}", report.summary.errors);
    }
}

#[tokio::test]
async fn client_timeout_caps_every_request() {
    // The plan allows 3 s in total; the builder's client_timeout of 300 ms ends it first.
    let router = route(post(|| async {
        streamed(|sender| async move {
            for i in 0..10_000 {
                if !send_all(&sender, vec![content_event(&format!(" t{i}"))], Duration::from_millis(50)).await {
                    return;
                }
            }
        })
    }));
    let base = serve(router).await;
    let mut reports = Vec::new();
    for client in CLIENTS {
        let bench = SseBenchmarker::builder().http_client(client).client_timeout(Duration::from_millis(300)).build();
        reports.push(run_bounded(&bench, &base, Load::Sequential, REQUESTS).await);
    }
    assert_all_failed_with(&reports, ErrorClass::TimeoutTotal);
    for report in &reports {
        let streamed_ns: Vec<u64> = report.records.iter().map(|r| r.chunk_gaps_ns.iter().sum::<u64>()).collect();
        assert!(
            streamed_ns.iter().all(|&ns| ns < 1_500_000_000),
            "stopped well before the plan's 3 s total: {streamed_ns:?}"
        );
    }
}
