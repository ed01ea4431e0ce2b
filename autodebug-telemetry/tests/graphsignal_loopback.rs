//! `GraphsignalSource` against a loopback server answering with recorded responses.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use autodebug_core::{
    Deployment, Endpoint, EngineKind, Secret, ServiceSpec, SignalKind, Target, TelemetrySource, TimeWindow, canonical,
};
use autodebug_telemetry::graphsignal::api_key_from_config;
use autodebug_telemetry::{GraphsignalSource, parse_debug_context};
use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn recorded_context() -> String {
    let body: serde_json::Value = serde_json::from_str(&fixture("graphsignal_debug_context_sglang.json")).unwrap();
    body["context"].as_str().unwrap().to_string()
}

type Seen = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// Serves the recorded answers; refuses any key other than `gs-key`.
async fn serve(seen: Seen) -> String {
    let route = |file: &'static str, seen: Seen| {
        get(move |headers: HeaderMap, Query(params): Query<HashMap<String, String>>| {
            let seen = seen.clone();
            async move {
                let mut record = params.clone();
                let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                record.insert("key".to_string(), key.clone());
                seen.lock().unwrap().push(record);
                if key != "gs-key" {
                    return (StatusCode::UNAUTHORIZED, "{\"detail\": \"invalid api key\"}".to_string());
                }
                (StatusCode::OK, fixture(file))
            }
        })
    };
    let router = Router::new()
        .route("/api/v1/debug_context/", route("graphsignal_debug_context_sglang.json", seen.clone()))
        .route("/api/v1/context/signals/", route("graphsignal_context_signals_vllm.json", seen.clone()))
        .route("/api/v1/context/summary/", route("graphsignal_context_summary.json", seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

fn deployment() -> Deployment {
    Deployment {
        id: "d1".to_string(),
        backend: "local".to_string(),
        spec: ServiceSpec::new("test", EngineKind::Sglang, "m"),
        started_ns: 0,
        details: Default::default(),
    }
}

#[tokio::test]
async fn fetch_reads_the_window_with_key_and_tags() {
    let seen: Seen = Arc::default();
    let base = serve(seen.clone()).await;
    let source = GraphsignalSource::builder()
        .api_base(&base)
        .api_key(Secret::new("gs-key"))
        .tag("deployment", "autodebug-sim")
        .tag("model", "qwen")
        .build();
    let deployment = deployment();
    let endpoint = Endpoint::new("http://127.0.0.1:1", "m");
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let window = TimeWindow::new(1_774_384_800_000_000_000, 1_774_384_860_500_000_000);

    let snapshot = source.fetch(&target, window).await.unwrap();
    let request = seen.lock().unwrap()[0].clone();
    assert_eq!(request["start_time_ns"], window.start_ns.to_string());
    assert_eq!(request["end_time_ns"], window.end_ns.to_string());
    assert_eq!(request["tags"], "deployment:autodebug-sim;model:qwen");
    assert_eq!(snapshot.window, Some(window));
    assert_eq!(snapshot.raw.as_deref(), Some(recorded_context().as_str()));
    let run_batch = snapshot.get("sglang.scheduler.Scheduler.run_batch").unwrap();
    assert_eq!(
        run_batch.citation(),
        "Profile `sglang.scheduler.Scheduler.run_batch`: 405 calls / 435 ms (1.074 ms/call)"
    );

    // The newer endpoints.
    let signals = source.context_signals(window).await.unwrap();
    assert!(signals.contains("vllm.engine_core.EngineCore.step"));
    let summary = source.context_summary(window).await.unwrap();
    assert!(summary.starts_with("The scheduler loop"));
}

#[tokio::test]
async fn refused_key_says_what_to_set() {
    let base = serve(Arc::default()).await;
    let source = GraphsignalSource::builder().api_base(&base).api_key(Secret::new("stale-key")).build();
    let window = TimeWindow::new(1, 2);
    let err = source.debug_context(window).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("GRAPHSIGNAL_API_KEY"), "{err}");
    assert!(err.contains(&format!("{base}/api/v1/debug_context/")), "{err}");
    assert!(!err.contains("stale-key"), "the key never appears: {err}");
}

#[test]
fn recorded_context_becomes_cited_signals() {
    let snapshot = parse_debug_context(&recorded_context());
    assert!(snapshot.warnings.is_empty(), "{:?}", snapshot.warnings);

    let profiles: Vec<_> = snapshot.signals.iter().filter(|s| s.kind == SignalKind::Profile).collect();
    assert_eq!(profiles.len(), 3);
    // Calls and cumtime written as strings still read.
    let handler = snapshot.get("sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat.handle_request").unwrap();
    assert_eq!((handler.as_f64(), handler.count), (Some(3900.0), Some(20.0)));

    let overhead = snapshot.canonical(canonical::SCHEDULER_OVERHEAD_SHARE).unwrap();
    assert_eq!(overhead.name, "graphsignal.derived.scheduler_overhead_share");
    assert!((overhead.as_f64().unwrap() - (1.0 - 348.0 / 435.0)).abs() < 1e-9);
    assert!(overhead.detail.as_deref().unwrap().contains("ModelRunner.forward"));
    let step = snapshot.canonical(canonical::SCHEDULER_STEP_MS).unwrap().as_f64().unwrap();
    assert!((step - 435.0 / 405.0).abs() < 1e-9);
    let forward = snapshot.canonical(canonical::FORWARD_MS).unwrap().as_f64().unwrap();
    assert!((forward - 348.0 / 405.0).abs() < 1e-9);

    let ttft = snapshot.get("sglang.latency.time_to_first_token").unwrap();
    assert_eq!(ttft.kind, SignalKind::SpanCounter);
    assert_eq!((ttft.as_f64(), ttft.unit.as_str(), ttft.count), (Some(164_000_000.0), "ns", Some(20.0)));
    assert!(ttft.citation().contains("p95 170 ms"), "{}", ttft.citation());
    assert_eq!(snapshot.canonical(canonical::TTFT_S).unwrap().as_f64(), Some(0.164));
    let prompt = snapshot.get("sglang.usage.prompt_tokens").unwrap();
    assert_eq!((prompt.as_f64(), prompt.unit.as_str()), (Some(620.0), "tokens"));

    let mixed = snapshot.get("sglang.startup.enable_mixed_chunk").unwrap();
    assert_eq!((mixed.kind, mixed.value.as_text()), (SignalKind::SpanAttribute, "False".to_string()));
    assert_eq!(snapshot.get("engine.gpu").unwrap().value.as_text(), "H100");

    assert_eq!(snapshot.canonical(canonical::PREFIX_HIT_RATE).unwrap().as_f64(), Some(0.0));
    assert_eq!(snapshot.canonical(canonical::GEN_THROUGHPUT).unwrap().as_f64(), Some(664.1));
    assert_eq!(snapshot.canonical(canonical::KV_USAGE).unwrap().name, "sglang.token_usage");
    assert_eq!(snapshot.canonical(canonical::QUEUE_LEN).unwrap().name, "sglang.num_queue_reqs");
    assert_eq!(snapshot.canonical(canonical::RUNNING).unwrap().as_f64(), Some(4.0));
    assert!(snapshot.signals.iter().any(|s| s.name == "sglang.inter_token_latency_seconds"
        && s.canonical.as_deref() == Some(canonical::ITL_S)));

    let error = snapshot.canonical(canonical::ENGINE_ERROR).unwrap();
    assert_eq!(error.kind, SignalKind::LogLine);
    assert!(error.value.as_text().contains("graph replay failed"));
}

#[test]
fn vllm_profiles_derive_the_same_shares() {
    let body: serde_json::Value = serde_json::from_str(&fixture("graphsignal_context_signals_vllm.json")).unwrap();
    let snapshot = parse_debug_context(body["context"].as_str().unwrap());
    let share = snapshot.canonical(canonical::SCHEDULER_OVERHEAD_SHARE).unwrap().as_f64().unwrap();
    assert!((share - 0.2).abs() < 1e-9, "{share}");
    assert_eq!(snapshot.canonical(canonical::KV_USAGE).unwrap().as_f64(), Some(0.41));
}

#[test]
fn api_key_comes_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, "api_key: from-file\napi_url: https://api.graphsignal.com\n").unwrap();
    assert_eq!(api_key_from_config(&path).unwrap().unwrap().expose(), "from-file");
    std::fs::write(&path, "other: 1\n").unwrap();
    assert!(api_key_from_config(&path).unwrap().is_none());
    std::fs::write(&path, "api_key: [unclosed\n").unwrap();
    let err = api_key_from_config(&path).unwrap_err().to_string();
    assert!(err.contains("config.yml") && err.contains("api_key"), "{err}");
}
