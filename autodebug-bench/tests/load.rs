//! Load shapes, request bodies, tokens and the report, against loopback servers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autodebug_bench::{CLIENT, SseBenchmarker, synthetic_prompt};
use autodebug_core::{Arrival, BenchPlan, Benchmarker, ErrorClass, Load, Secret, Workload};
use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::*;

/// A server that records request bodies and answers with `chunks` chunks of `words` words.
#[derive(Clone)]
struct Recorder {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    chunks: usize,
    words: usize,
    gap: Duration,
    required_token: Option<&'static str>,
}

impl Recorder {
    fn new(chunks: usize, words: usize, gap: Duration) -> Self {
        Recorder { bodies: Arc::default(), chunks, words, gap, required_token: None }
    }

    fn router(self) -> Router {
        async fn handle(
            State(recorder): State<Recorder>,
            headers: HeaderMap,
            Json(body): Json<serde_json::Value>,
        ) -> Response {
            if let Some(token) = recorder.required_token {
                let expected = format!("Bearer {token}");
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                    return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
                }
            }
            let text = body["messages"][0]["content"].as_str().or(body["prompt"].as_str()).unwrap_or_default();
            let prompt_tokens = text.split_whitespace().count() as u32;
            recorder.bodies.lock().unwrap().push(body);
            let (chunks, words, gap) = (recorder.chunks, recorder.words, recorder.gap);
            streamed(move |sender| token_stream(sender, chunks, words, gap, prompt_tokens))
        }
        Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/v1/completions", post(handle))
            .with_state(self)
    }
}

async fn run(bench: &SseBenchmarker, base: &str, plan: &BenchPlan) -> autodebug_core::BenchReport {
    tokio::time::timeout(RUN_LIMIT, bench.run_plan(&endpoint(base), plan)).await.expect("finished").expect("ran")
}

#[tokio::test]
async fn multi_token_chunks_give_per_token_itl() {
    let base = serve(Recorder::new(5, 3, Duration::from_millis(20)).router()).await;
    let report = run(&SseBenchmarker::default(), &base, &plan(Load::Sequential, 3)).await;
    let s = &report.summary;
    assert_eq!(s.succeeded, 3, "{:?}", report.records.iter().map(|r| &r.error_message).collect::<Vec<_>>());
    for record in &report.records {
        assert_eq!(record.output_tokens, Some(15));
        assert_eq!(record.chunk_tokens, vec![3, 3, 3, 3]);
        assert_eq!(record.ttst_ns, record.ttft_ns, "the first chunk already carries a second token");
        let tpot = (record.e2e_ns.unwrap() - record.ttft_ns.unwrap()) as f64 / 14.0;
        assert!((record.tpot_ns().unwrap() - tpot).abs() < 1.0);
    }
    // 4 gaps per request, each split over 3 tokens.
    assert_eq!(s.inter_chunk_ms.count, 12);
    assert_eq!(s.itl_ms.count, 36);
    assert!(
        (s.itl_ms.mean * 3.0 - s.inter_chunk_ms.mean).abs() < 1e-6,
        "itl {:?} chunks {:?}",
        s.itl_ms,
        s.inter_chunk_ms
    );
    assert!((s.itl_ms.max * 3.0 - s.inter_chunk_ms.max).abs() < 1e-6);
    assert_eq!(s.output_tokens, 45);
    assert_eq!(s.cached_token_ratio, Some(8.0 / 16.0), "the server reports half the prompt as cached");
}

#[tokio::test]
async fn request_body_context_warmup_and_window() {
    let recorder = Recorder::new(2, 1, Duration::from_millis(1));
    let bodies = Arc::clone(&recorder.bodies);
    let base = serve(recorder.router()).await;
    let mut workload = Workload::new(24, 2);
    workload.shared_prefix_tokens = 10;
    workload.seed = 9;
    let mut plan = BenchPlan::new("ctx", workload.clone(), Load::Concurrent { concurrency: 2 }, 4).with_warmup(3);
    plan.timeouts = short_timeouts();
    let before = autodebug_core::TimeWindow::now_ns();
    let report = run(&SseBenchmarker::default(), &base, &plan).await;
    let after = autodebug_core::TimeWindow::now_ns();

    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 7, "3 warmup + 4 measured requests reached the server");
    assert_eq!(report.records.len(), 4, "warmup is left out");
    assert_eq!(report.records.iter().map(|r| r.index).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    for body in &bodies {
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["max_tokens"], 2);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["ignore_eos"], true);
        assert_eq!(body["temperature"], 0.0);
    }
    let prompts: Vec<String> =
        bodies.iter().map(|b| b["messages"][0]["content"].as_str().unwrap().to_string()).collect();
    for index in 0..4 {
        assert!(prompts.contains(&synthetic_prompt(&workload, index)), "measured prompt {index} was sent");
    }
    let distinct: std::collections::BTreeSet<&String> = prompts.iter().collect();
    assert_eq!(distinct.len(), 7, "warmup prompts differ from the measured ones");

    assert_eq!(report.context.endpoint, base);
    assert_eq!(report.context.model, "test-model");
    assert_eq!(report.context.workload, workload.describe());
    assert_eq!(report.context.load, "concurrency 2, 4 requests after 3 warmup");
    assert_eq!(report.context.trials, 1);
    assert_eq!(report.context.cache_state, "warm", "shared prefix + warmup");
    assert_eq!(report.context.client, CLIENT);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let window = report.window;
    assert!(before <= window.start_ns && window.start_ns < window.end_ns && window.end_ns <= after, "{window:?}");
    for record in &report.records {
        assert!(window.contains(record.scheduled_ns), "measured requests start inside the window");
        assert!(record.scheduled_ns + record.e2e_ns.unwrap() as i128 <= window.end_ns);
    }
    assert!((report.summary.duration_s - window.duration().as_secs_f64()).abs() < 1e-9);
}

#[tokio::test]
async fn completions_endpoint_cold_cache_and_steady_state_warning() {
    let recorder = Recorder::new(3, 2, Duration::from_millis(1));
    let bodies = Arc::clone(&recorder.bodies);
    let base = serve(recorder.router()).await;
    let mut plan = plan(Load::Concurrent { concurrency: 4 }, 5);
    plan.chat = false;
    plan.workload.ignore_eos = false;
    let report = run(&SseBenchmarker::default(), &base, &plan).await;
    assert_eq!(report.summary.succeeded, 5);
    let bodies = bodies.lock().unwrap();
    assert!(
        bodies.iter().all(|b| b["prompt"].is_string() && b.get("messages").is_none() && b.get("ignore_eos").is_none())
    );
    assert_eq!(report.context.cache_state, "cold");
    assert!(
        report.warnings.iter().any(|w| w.contains("fewer than 2x concurrency")),
        "5 requests at concurrency 4 is not steady state: {:?}",
        report.warnings
    );
}

#[tokio::test]
async fn bearer_token_from_endpoint_or_builder_never_printed() {
    let mut recorder = Recorder::new(2, 1, Duration::from_millis(1));
    recorder.required_token = Some("s3cret-token");
    let base = serve(recorder.router()).await;
    let plan = plan(Load::Sequential, 2);

    let without = run(&SseBenchmarker::default(), &base, &plan).await;
    assert!(without.records.iter().all(|r| r.error == Some(ErrorClass::HttpStatus)));
    assert!(without.records[0].error_message.as_deref().unwrap_or_default().contains("401"));

    let mut with_token = endpoint(&base);
    with_token.token = Some(Secret::new("s3cret-token"));
    let report = SseBenchmarker::default().run(&with_token, &plan).await.expect("ran");
    assert_eq!(report.summary.succeeded, 2);

    let bench = SseBenchmarker::builder().token(Secret::new("s3cret-token")).build();
    assert!(bench.has_default_token());
    assert!(!format!("{bench:?}").contains("s3cret"), "the token never prints");
    let report = run(&bench, &base, &plan).await;
    assert_eq!(report.summary.succeeded, 2);
    let serialized = serde_json::to_string(&report).expect("report serializes");
    assert!(!serialized.contains("s3cret"));
}

/// Counts streams open at once; each waits (bounded) until the target was reached once, so the
/// peak shows what the client really keeps in flight.
#[tokio::test]
async fn concurrency_above_100_is_not_capped() {
    const CONCURRENCY: usize = 150;
    #[derive(Clone, Default)]
    struct Counter {
        open: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }
    struct OpenGuard(Arc<AtomicUsize>);
    impl Drop for OpenGuard {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    async fn handle(State(counter): State<Counter>) -> Response {
        let now_open = counter.open.fetch_add(1, Ordering::SeqCst) + 1;
        counter.peak.fetch_max(now_open, Ordering::SeqCst);
        let guard = OpenGuard(Arc::clone(&counter.open));
        streamed(move |sender| async move {
            let _guard = guard;
            if !send_all(&sender, vec![content_event("first")], Duration::ZERO).await {
                return;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while counter.peak.load(Ordering::SeqCst) < CONCURRENCY && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            send_all(&sender, vec![content_event(" second"), usage_event(16, 2, None), done_event()], Duration::ZERO)
                .await;
        })
    }
    let counter = Counter::default();
    let peak = Arc::clone(&counter.peak);
    let base = serve(Router::new().route("/v1/chat/completions", post(handle)).with_state(counter)).await;
    let mut plan = plan(Load::Concurrent { concurrency: CONCURRENCY }, 2 * CONCURRENCY);
    plan.timeouts.first_token = Duration::from_secs(20);
    plan.timeouts.idle_between_chunks = Duration::from_secs(20);
    plan.timeouts.total = Duration::from_secs(30);
    let report = run(&SseBenchmarker::default(), &base, &plan).await;
    assert_eq!(report.summary.succeeded, 2 * CONCURRENCY as u64, "{:?}", report.summary.errors);
    assert_eq!(peak.load(Ordering::SeqCst), CONCURRENCY, "the server saw every requested stream at once");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

/// Open loop above capacity: 50 req/s offered, 2 slots of ~100 ms each (20 req/s) -> the
/// client queue grows, and it shows in queue delay and in TTFT measured from the schedule.
#[tokio::test]
async fn open_loop_above_capacity_shows_growing_queue_delay() {
    let base = serve(Recorder::new(5, 1, Duration::from_millis(20)).router()).await;
    let bench = SseBenchmarker::builder().max_in_flight(2).build();
    let requests = 20;
    let plan = plan(Load::Rate { requests_per_s: 50.0, arrival: Arrival::Constant }, requests);
    let report = run(&bench, &base, &plan).await;
    assert_eq!(report.summary.succeeded, requests as u64, "{:?}", report.summary.errors);
    let delays: Vec<u64> = report.records.iter().map(|r| r.queue_delay_ns).collect();
    let mean = |slice: &[u64]| slice.iter().sum::<u64>() as f64 / slice.len() as f64 / 1e6;
    let (early, late) = (mean(&delays[..5]), mean(&delays[15..]));
    assert!(late > early + 100.0, "queue delay grows: first five {early:.1} ms, last five {late:.1} ms");
    for record in &report.records {
        assert!(record.ttft_ns.unwrap() >= record.queue_delay_ns, "latency counts from the scheduled time");
    }
    // Scheduled times follow the constant rate (20 ms apart), whatever the server did.
    let first = report.records[0].scheduled_ns;
    let last = report.records[requests - 1].scheduled_ns;
    assert!(((last - first) - 19 * 20_000_000).abs() < 1_000, "constant arrivals are 20 ms apart: {}", last - first);
    assert!(report.warnings.iter().any(|w| w.contains("in-flight slots")), "{:?}", report.warnings);
    assert!(report.summary.queue_delay_ms.max > report.summary.queue_delay_ms.min);
}

#[tokio::test]
async fn poisson_and_gamma_arrivals_run_and_are_reproducible() {
    let base = serve(Recorder::new(2, 1, Duration::from_millis(1)).router()).await;
    for arrival in [Arrival::Poisson, Arrival::Gamma { burstiness: 0.5 }] {
        let plan = plan(Load::Rate { requests_per_s: 200.0, arrival }, 10);
        let schedule = |report: &autodebug_core::BenchReport| {
            let first = report.records[0].scheduled_ns;
            report.records.iter().map(|r| (r.scheduled_ns - first) / 1_000_000).collect::<Vec<_>>()
        };
        let a = run(&SseBenchmarker::default(), &base, &plan).await;
        let b = run(&SseBenchmarker::default(), &base, &plan).await;
        assert_eq!(a.summary.succeeded, 10);
        let (sa, sb) = (schedule(&a), schedule(&b));
        assert!(sa.windows(2).all(|w| w[0] <= w[1]));
        // Same seed, same schedule (to the ms; the clock mapping may differ by rounding).
        assert!(sa.iter().zip(&sb).all(|(x, y)| (x - y).abs() <= 1), "{arrival:?}: {sa:?} vs {sb:?}");
    }
}

#[tokio::test]
async fn unusable_plans_are_refused_with_the_field_named() {
    let bench = SseBenchmarker::default();
    let ep = endpoint("http://127.0.0.1:9");
    let cases: Vec<(BenchPlan, &str)> = vec![
        (plan(Load::Sequential, 0), "requests"),
        (plan(Load::Concurrent { concurrency: 0 }, 3), "load.concurrency"),
        (plan(Load::Rate { requests_per_s: 0.0, arrival: Arrival::Poisson }, 3), "load.requests_per_s"),
        (plan(Load::Rate { requests_per_s: 5.0, arrival: Arrival::Gamma { burstiness: f64::NAN } }, 3), "burstiness"),
        (
            {
                let mut p = plan(Load::Sequential, 1);
                p.timeouts.idle_between_chunks = Duration::ZERO;
                p
            },
            "timeouts.idle_between_chunks",
        ),
    ];
    for (plan, field) in cases {
        let error = bench.run(&ep, &plan).await.expect_err("refused");
        assert!(error.to_string().contains(field), "{error} should name {field}");
    }
    let error = bench.run(&endpoint("not a url"), &plan(Load::Sequential, 1)).await.expect_err("refused");
    assert!(error.to_string().contains("endpoint.base_url"), "{error}");
}
