//! Every `TelemetrySource` of this crate runs the shared conformance suite
//! (`autodebug_core::testing::telemetry_conformance`). The HTTP sources read loopback servers
//! answering with recorded responses (tests/fixtures/SOURCES.md: real scrapes of SGLang and
//! llama.cpp, metric files generated from the vLLM and SGLang wheels, answers in the documented
//! Prometheus and Graphsignal API shapes); the file sources read recorded traces and logs.

use std::path::PathBuf;

use autodebug_core::testing::{TelemetryConformance, telemetry_conformance, telemetry_conformance_with};
use autodebug_core::{Deployment, Endpoint, EngineKind, LogLine, Secret, ServiceSpec, Target, TimeWindow};
use autodebug_telemetry::prometheus::{PromQuery, PrometheusScrape, PrometheusServer};
use autodebug_telemetry::trace::{TraceSource, analyze_file};
use autodebug_telemetry::{EngineLogSource, GraphsignalSource, iso_to_ns};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn fixture(name: &str) -> String {
    let path = fixture_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Serves `router` on a loopback port chosen at run time; returns the base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}")
}

/// Serves one fixture's text at `path`.
async fn serve_fixture(path: &str, name: &'static str) -> String {
    serve(Router::new().route(path, get(move || async move { fixture(name) }))).await
}

fn deployment(engine: EngineKind) -> Deployment {
    Deployment {
        id: "conformance-1".to_string(),
        backend: "local".to_string(),
        spec: ServiceSpec::new("conformance", engine, "m"),
        started_ns: 0,
        details: Default::default(),
    }
}

/// The last minute, for sources that read the live service.
fn last_minute() -> TimeWindow {
    let now = TimeWindow::now_ns();
    TimeWindow::new(now - 60_000_000_000, now)
}

fn recorded() -> TelemetryConformance {
    TelemetryConformance { recorded: true, ..TelemetryConformance::default() }
}

#[tokio::test]
async fn prometheus_scrape_of_recorded_engine_metrics_conforms() {
    for file in [
        "sglang_docs_production_metrics_llama31_8b_busy.prom",
        "generated_sglang_0.5.23_multiproc.prom",
        "generated_vllm_0.33.0_single.prom",
        "llamacpp_smollm2_metrics.prom",
    ] {
        let base = serve_fixture("/metrics", file).await;
        let (deployment, endpoint) = (deployment(EngineKind::Sglang), Endpoint::new(&base, "m"));
        let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
        eprintln!("scraping {file}");
        // A live source: a second scrape may differ, so the window is not declared recorded.
        telemetry_conformance(&PrometheusScrape::default(), &target, last_minute()).await;
    }
}

#[tokio::test]
async fn prometheus_server_over_a_recorded_range_answer_conforms() {
    let handler = |headers: HeaderMap| async move {
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some("Bearer prom-secret") => (StatusCode::OK, fixture("prometheus_query_range_matrix.json")),
            _ => {
                let refusal = r#"{"status":"error","errorType":"unauthorized","error":"bad token"}"#;
                (StatusCode::UNAUTHORIZED, refusal.to_string())
            }
        }
    };
    let base = serve(Router::new().route("/api/v1/query_range", get(handler))).await;
    let mut builder = PrometheusServer::builder(&base).bearer_token(Secret::new("prom-secret"));
    for query in PromQuery::defaults_for(EngineKind::Vllm) {
        builder = builder.query(query);
    }
    let (deployment, endpoint) = (deployment(EngineKind::Vllm), Endpoint::new("http://127.0.0.1:1", "m"));
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let window = TimeWindow::new(1_774_384_800_000_000_000, 1_774_384_860_000_000_000);
    telemetry_conformance_with(&builder.build(), &target, window, recorded()).await;
}

#[tokio::test]
async fn graphsignal_over_a_recorded_debug_context_conforms() {
    let handler = |headers: HeaderMap| async move {
        match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            Some("gs-key") => (StatusCode::OK, fixture("graphsignal_debug_context_sglang.json")),
            _ => (StatusCode::UNAUTHORIZED, r#"{"detail": "invalid api key"}"#.to_string()),
        }
    };
    let base = serve(Router::new().route("/api/v1/debug_context/", get(handler))).await;
    let (deployment, endpoint) = (deployment(EngineKind::Sglang), Endpoint::new(&base, "m"));
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let window = TimeWindow::new(1_774_384_800_000_000_000, 1_774_384_860_500_000_000);

    // The API at a fixed base, and the context served by the endpoint under test itself (then the
    // suite's refused endpoint is the API, and the fetch must fail naming the source).
    let api = GraphsignalSource::builder().api_base(&base).api_key(Secret::new("gs-key")).build();
    telemetry_conformance_with(&api, &target, window, recorded()).await;
    let served = GraphsignalSource::builder().api_base_from_endpoint().api_key(Secret::new("gs-key")).build();
    telemetry_conformance_with(&served, &target, window, recorded()).await;
}

#[tokio::test]
async fn trace_source_over_a_recorded_h100_trace_conforms() {
    let name = "tracelens__h100__bert-small.json.gz";
    let recorded_trace = fixture_path("traces").join(name);
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::copy(&recorded_trace, dir.path().join(name)).expect("copy the trace");
    let analysis = analyze_file(&recorded_trace).expect("the fixture parses");
    let (start, end) = analysis.wall_start_ns.zip(analysis.wall_end_ns).expect("the trace says when it ran");
    let (deployment, endpoint) = (deployment(EngineKind::Sglang), Endpoint::new("http://127.0.0.1:1", "m"));
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let source = TraceSource::new(dir.path());
    telemetry_conformance_with(&source, &target, TimeWindow::new(start as i128, end as i128), recorded()).await;
}

/// `[2026-03-24 20:39:05 TP0] ...` (SGLang) and `INFO 03-24 20:39:01 [file.py:1] ...` (vLLM).
fn stamped(engine: EngineKind, text: &str) -> Vec<LogLine> {
    text.lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let stamp = match engine {
                EngineKind::Vllm => format!("2026-{}T{}Z", words[1], words[2]),
                _ => format!("{}T{}Z", &words[0][1..], words[1].trim_end_matches(']')),
            };
            let time_ns = iso_to_ns(&stamp).unwrap_or_else(|e| panic!("{stamp}: {e}"));
            LogLine { time_ns, text: line.to_string() }
        })
        .collect()
}

/// llama.cpp stamps lines `M.SS.mmm.uuu` since the server started.
fn llamacpp_lines() -> Vec<LogLine> {
    fixture("llamacpp_smollm2_server.log")
        .lines()
        .map(|line| {
            let stamp = line.split_whitespace().next().unwrap_or_default();
            let parts: Vec<i128> = stamp.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            assert_eq!(parts.len(), 4, "not a llama.cpp stamp: {line}");
            let micros = ((parts[0] * 60 + parts[1]) * 1000 + parts[2]) * 1000 + parts[3];
            LogLine { time_ns: micros * 1000, text: line.to_string() }
        })
        .collect()
}

#[tokio::test]
async fn engine_log_source_over_recorded_logs_conforms() {
    let stamp = |iso: &str| iso_to_ns(iso).unwrap_or_else(|e| panic!("{iso}: {e}"));
    let minute = TimeWindow::new(stamp("2026-03-24T20:40:00Z"), stamp("2026-03-24T20:41:00Z"));
    let llamacpp = llamacpp_lines();
    let whole_llamacpp_log = TimeWindow::new(llamacpp[0].time_ns, llamacpp[llamacpp.len() - 1].time_ns);
    let cases = [
        (EngineKind::Sglang, stamped(EngineKind::Sglang, &fixture("sglang_server.log")), minute),
        (EngineKind::Vllm, stamped(EngineKind::Vllm, &fixture("vllm_server.log")), minute),
        (EngineKind::LlamaCpp, llamacpp, whole_llamacpp_log),
    ];
    for (engine, lines, window) in cases {
        let deployment = deployment(engine);
        let endpoint = Endpoint::new("http://127.0.0.1:1", "m");
        let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &lines };
        eprintln!("reading the {engine} log");
        telemetry_conformance_with(&EngineLogSource::new(), &target, window, recorded()).await;
    }
}
