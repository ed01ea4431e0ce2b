//! `PrometheusScrape` and `PrometheusServer` against loopback HTTP servers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autodebug_core::{
    Deployment, Endpoint, EngineKind, Secret, ServiceSpec, Signal, Target, TelemetrySource, TimeWindow, canonical,
};
use autodebug_telemetry::prometheus::{PromQuery, PrometheusScrape, PrometheusServer};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;

/// What the fake engine exposes; tests change it between scrapes.
#[derive(Debug, Default)]
struct Engine {
    prompt_tokens: f64,
    token_usage: f64,
    /// TTFT observations so far (seconds).
    ttft: Vec<f64>,
    scrapes: u64,
}

const BOUNDS: [f64; 4] = [0.05, 0.1, 0.5, 1.0];

impl Engine {
    fn exposition(&self) -> String {
        let mut text = String::new();
        text.push_str("# HELP sglang:prompt_tokens_total Number of prefill tokens processed.\n");
        text.push_str("# TYPE sglang:prompt_tokens_total counter\n");
        text.push_str(&format!("sglang:prompt_tokens_total{{model_name=\"m\"}} {}\n", self.prompt_tokens));
        text.push_str("# TYPE sglang:token_usage gauge\n");
        text.push_str(&format!("sglang:token_usage{{model_name=\"m\"}} {}\n", self.token_usage));
        text.push_str("# TYPE sglang:time_to_first_token_seconds histogram\n");
        // Multiprocess layout: sum first.
        text.push_str(&format!(
            "sglang:time_to_first_token_seconds_sum{{model_name=\"m\"}} {}\n",
            self.ttft.iter().sum::<f64>()
        ));
        for le in BOUNDS {
            let count = self.ttft.iter().filter(|v| **v <= le).count();
            text.push_str(&format!(
                "sglang:time_to_first_token_seconds_bucket{{le=\"{le}\",model_name=\"m\"}} {count}\n"
            ));
        }
        text.push_str(&format!(
            "sglang:time_to_first_token_seconds_bucket{{le=\"+Inf\",model_name=\"m\"}} {}\n",
            self.ttft.len()
        ));
        text.push_str(&format!("sglang:time_to_first_token_seconds_count{{model_name=\"m\"}} {}\n", self.ttft.len()));
        text
    }
}

type Shared = Arc<Mutex<Engine>>;

async fn metrics(State(engine): State<Shared>) -> String {
    let mut engine = engine.lock().unwrap();
    engine.scrapes += 1;
    engine.exposition()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

fn deployment(id: &str) -> Deployment {
    Deployment {
        id: id.to_string(),
        backend: "local".to_string(),
        spec: ServiceSpec::new("test", EngineKind::Sglang, "m"),
        started_ns: 0,
        details: Default::default(),
    }
}

fn scrapes(engine: &Shared) -> u64 {
    engine.lock().unwrap().scrapes
}

/// Waits (bounded: 5 s) until the server has answered `target` scrapes.
async fn wait_for_scrapes(engine: &Shared, target: u64) {
    for _ in 0..500 {
        if scrapes(engine) >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the sampler did not scrape {target} times within 5 s (got {})", scrapes(engine));
}

fn find<'a>(signals: &'a [Signal], name: &str, stat: &str) -> &'a Signal {
    signals
        .iter()
        .find(|s| s.name == name && s.labels.get("stat").map(String::as_str) == Some(stat))
        .unwrap_or_else(|| panic!("no {name} {stat}"))
}

#[tokio::test]
async fn scrape_reports_the_window_between_begin_and_fetch() {
    let engine: Shared = Arc::new(Mutex::new(Engine {
        prompt_tokens: 1000.0,
        token_usage: 0.2,
        ttft: vec![0.8; 50], // slow requests before the window
        scrapes: 0,
    }));
    let base = serve(Router::new().route("/metrics", get(metrics)).with_state(engine.clone())).await;
    let endpoint = Endpoint::new(&base, "m");
    let deployment = deployment("d1");
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let source = PrometheusScrape::builder().sample_interval(Duration::from_millis(20)).build();

    let start_ns = TimeWindow::now_ns();
    source.begin(&target).await.unwrap();
    let after_begin = scrapes(&engine);
    // A spike only the background sampler can see: gone again before fetch.
    engine.lock().unwrap().token_usage = 0.9;
    wait_for_scrapes(&engine, after_begin + 2).await;
    {
        let mut e = engine.lock().unwrap();
        e.token_usage = 0.3;
        e.prompt_tokens += 640.0;
        e.ttft.extend([0.02, 0.03, 0.04, 0.07]);
    }
    let window = TimeWindow::new(start_ns, TimeWindow::now_ns());
    let snapshot = source.fetch(&target, window).await.unwrap();

    assert_eq!(snapshot.window, Some(window));
    assert!(snapshot.raw.as_deref().is_some_and(|r| r.contains("sglang:token_usage")));
    assert_eq!(find(&snapshot.signals, "sglang:prompt_tokens_total", "increase").as_f64(), Some(640.0));
    assert_eq!(find(&snapshot.signals, "sglang:token_usage", "max").as_f64(), Some(0.9));
    assert_eq!(find(&snapshot.signals, "sglang:token_usage", "last").as_f64(), Some(0.3));
    assert_eq!(find(&snapshot.signals, "sglang:token_usage", "min").as_f64(), Some(0.2));
    // Only the window's four fast requests count, not the 50 slow ones before it.
    let p99 = find(&snapshot.signals, "sglang:time_to_first_token_seconds", "p99");
    assert!(p99.as_f64().unwrap() <= 0.1, "{}", p99.citation());
    assert_eq!(p99.canonical.as_deref(), Some(canonical::TTFT_S));
    assert_eq!(p99.count, Some(4.0));
    let mean = find(&snapshot.signals, "sglang:time_to_first_token_seconds", "mean").as_f64().unwrap();
    assert!((mean - 0.04).abs() < 1e-9, "{mean}");

    // fetch stopped the sampler.
    let after_fetch = scrapes(&engine);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(scrapes(&engine), after_fetch, "no scrapes after fetch");
}

#[tokio::test]
async fn fetch_without_begin_warns_and_missing_metrics_name_the_url() {
    let engine: Shared = Arc::new(Mutex::new(Engine { prompt_tokens: 5.0, ..Default::default() }));
    let base = serve(Router::new().route("/metrics", get(metrics)).with_state(engine.clone())).await;
    let endpoint = Endpoint::new(&base, "m");
    let deployment = deployment("d2");
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let window = TimeWindow::new(0, 1_000_000_000);

    let snapshot = PrometheusScrape::default().fetch(&target, window).await.unwrap();
    assert!(snapshot.warnings.iter().any(|w| w.contains("begin()")), "{:?}", snapshot.warnings);

    let wrong = PrometheusScrape::builder().path("/nope").build();
    let err = wrong.fetch(&target, window).await.unwrap_err().to_string();
    assert!(err.contains(&format!("{base}/nope")) && err.contains("404"), "{err}");
}

#[derive(serde::Deserialize)]
struct RangeParams {
    query: String,
    start: f64,
    end: f64,
    step: f64,
}

fn recorded_matrix() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prometheus_query_range_matrix.json");
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn server_source_runs_promql_with_bearer_auth() {
    let seen: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
    let seen_by_handler = seen.clone();
    let handler = move |headers: HeaderMap, Query(params): Query<RangeParams>| {
        let seen = seen_by_handler.clone();
        async move {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            seen.lock().unwrap().push(HashMap::from([
                ("query".to_string(), params.query.clone()),
                ("auth".to_string(), auth.clone()),
                ("span".to_string(), format!("{}", params.end - params.start)),
                ("step".to_string(), format!("{}", params.step)),
            ]));
            if auth != "Bearer prom-secret" {
                return (
                    StatusCode::UNAUTHORIZED,
                    r#"{"status":"error","errorType":"unauthorized","error":"bad token"}"#.to_string(),
                );
            }
            (StatusCode::OK, recorded_matrix())
        }
    };
    let base = serve(Router::new().route("/api/v1/query_range", get(handler))).await;
    let endpoint = Endpoint::new("http://127.0.0.1:1", "Qwen/Qwen3-0.6B");
    let deployment = deployment("run-7");
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let window = TimeWindow::new(1_774_384_800_000_000_000, 1_774_384_860_000_000_000);
    let query = PromQuery::new(
        "ttft_p99",
        "histogram_quantile(0.99, rate(vllm:time_to_first_token_seconds_bucket{deployment=\"$deployment\"}[30s]))",
    )
    .with_unit("s")
    .with_canonical(canonical::TTFT_S);

    let source = PrometheusServer::builder(&base).bearer_token(Secret::new("prom-secret")).query(query.clone()).build();
    let snapshot = source.fetch(&target, window).await.unwrap();
    {
        let seen = seen.lock().unwrap();
        assert!(seen[0]["query"].contains("deployment=\"run-7\""), "{}", seen[0]["query"]);
        assert_eq!(seen[0]["span"], "60");
        assert_eq!(seen[0]["step"], "1");
    }
    // Two series differ by `engine`: that label stays, the shared ones go.
    let engine0_max = snapshot
        .signals
        .iter()
        .find(|s| s.labels.get("engine").map(String::as_str) == Some("0") && s.labels["stat"] == "max")
        .unwrap();
    assert_eq!(engine0_max.as_f64(), Some(0.18));
    assert!(!engine0_max.labels.contains_key("model_name"));
    let engine0_mean = snapshot
        .signals
        .iter()
        .find(|s| s.labels.get("engine").map(String::as_str) == Some("0") && s.labels["stat"] == "mean")
        .unwrap();
    assert!((engine0_mean.as_f64().unwrap() - 0.15).abs() < 1e-9, "NaN points are skipped");
    assert!(snapshot.raw.as_deref().is_some_and(|r| r.contains("\"matrix\"")));

    let refused = PrometheusServer::builder(&base).bearer_token(Secret::new("wrong")).query(query).build();
    let err = refused.fetch(&target, window).await.unwrap_err().to_string();
    assert!(err.contains("401") && err.contains("PROMETHEUS_TOKEN") && err.contains("/api/v1/query_range"), "{err}");
    assert!(!err.contains("wrong"), "the token never appears in errors: {err}");
}
