//! The capacity search against the simulated engine's real-time HTTP server (a GPU engine cannot
//! run here): it brackets a capacity, stops overloaded steps early, and refuses bad settings.

use std::time::Duration;

use autodebug_bench::{CapacitySearch, CapacitySlo, RequestSource, SseBenchmarker};
use autodebug_core::{BenchPlan, Endpoint, Load, Workload};
use autodebug_sim::server::{ServeOptions, serve};
use autodebug_sim::{EngineKind, SimConfig};

const MODEL: &str = "sim-model";

/// Qwen2.5-7B on one L4 with long prompts: a capacity of a few requests per second, well
/// below what the client on this machine can offer.
async fn slow_sim() -> Endpoint {
    let config = SimConfig::from_args(EngineKind::Vllm, "L4", "qwen2.5-7b", &[]).expect("valid sim config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let options = ServeOptions { seed: 5, model_name: Some(MODEL.into()), quiet: true, ..ServeOptions::default() };
    tokio::spawn(async move {
        let _ = serve(config, listener, options).await;
    });
    Endpoint::new(base, MODEL)
}

fn search() -> CapacitySearch {
    let plan = BenchPlan::new("capacity", Workload::new(1024, 32), Load::Sequential, 1);
    let mut search = CapacitySearch::new(plan, CapacitySlo::ttft_p99_ms(1500.0));
    search.step = Duration::from_secs(3);
    search.tolerance = 0.2;
    search.max_steps = 14;
    // One trial per rate: a confirming trial stops sending after ten steps (30 s), so the test
    // stays in minutes; its verdict is then the point estimate, as the bound says.
    search.boundary_trials = 1;
    search
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_brackets_the_simulators_capacity_and_cuts_overloaded_steps_short() {
    let endpoint = slow_sim().await;
    let search = search();
    let source = RequestSource::from_workload(&search.plan.workload);
    let capacity =
        tokio::time::timeout(Duration::from_secs(240), search.run(&SseBenchmarker::default(), &endpoint, &source))
            .await
            .expect("search within its time limit")
            .expect("search runs");
    println!("{}", capacity.to_table());
    let (rate, broke) = (capacity.rate.expect("a rate held"), capacity.broke_at.expect("a rate broke"));
    assert!(broke > rate, "{capacity:?}");
    assert!(broke / rate <= 1.0 + search.tolerance + 1e-9 || capacity.steps.len() == search.max_steps, "{capacity:?}");
    assert!(capacity.trials_at_rate >= 1);
    let held = capacity.held.as_ref().expect("the held rate's pooled trials");
    assert!(held.holds && held.rate == rate && held.counts.failed == 0, "{held:?}");
    // Held by its pooled share: at most 1% of its requests over the bound.
    assert!(held.counts.over_ttft as f64 <= 0.01 * held.counts.requests as f64, "{held:?}");
    // The ends of the bracket are decided (confident, overloaded or at the trial bound), not one screen.
    for end in [&capacity.held, &capacity.broke] {
        let end = end.as_ref().expect("both ends");
        assert_ne!(end.decided, autodebug_bench::Decided::Provisional, "{end:?}");
    }
    // Overload is cut short: a step stopped early sent fewer requests than any trial plans.
    let stopped: Vec<_> = capacity.steps.iter().filter(|s| s.stopped_early.is_some()).collect();
    assert!(!stopped.is_empty(), "no step was stopped early: {capacity:?}");
    for s in stopped {
        assert!(!s.holds && s.requests < search.trial_requests(s.rate) as u64, "{s:?}");
    }
}

#[tokio::test]
async fn bad_settings_are_refused_with_the_field_named() {
    let endpoint = Endpoint::new("http://127.0.0.1:9", MODEL);
    let source = RequestSource::from_workload(&Workload::new(8, 8));
    let mut bad = search();
    bad.start_rate = 0.0;
    let error = bad.run(&SseBenchmarker::default(), &endpoint, &source).await.unwrap_err().to_string();
    assert!(error.contains("start_rate") && error.contains("min"), "{error}");
    let mut bad = search();
    bad.slo.ttft_p99_ms = f64::NAN;
    let error = bad.run(&SseBenchmarker::default(), &endpoint, &source).await.unwrap_err().to_string();
    assert!(error.contains("slo.ttft_p99_ms"), "{error}");
    let mut bad = search();
    bad.confidence = 1.0;
    let error = bad.run(&SseBenchmarker::default(), &endpoint, &source).await.unwrap_err().to_string();
    assert!(error.contains("confidence") && error.contains("0.95"), "{error}");
}

/// A server that refuses every request (here: a model name it does not serve) is not a busy one:
/// the search ends with no capacity and does not spend its settling time asking it again and again.
#[tokio::test]
async fn a_server_that_refuses_every_request_is_not_hammered_while_settling() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (axum::http::StatusCode::NOT_FOUND, "The model `no-such-model` does not exist.")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let endpoint = Endpoint::new(base, "no-such-model");
    let mut search = search();
    search.step = Duration::from_millis(500);
    (search.min_rate, search.start_rate, search.max_steps) = (0.5, 2.0, 4);
    let source = RequestSource::from_workload(&search.plan.workload);
    let capacity =
        tokio::time::timeout(Duration::from_secs(120), search.run(&SseBenchmarker::default(), &endpoint, &source))
            .await
            .expect("the search ends")
            .expect("a refused request is a failed one, not an error of the search");
    assert_eq!(capacity.rate, None, "no rate held: {capacity:?}");
    // Every step sends its warmup and a handful of requests; settling after each adds one.
    let sent = hits.load(Ordering::SeqCst);
    assert!(sent < 100, "{sent} requests sent to a server that refused them all");
}
