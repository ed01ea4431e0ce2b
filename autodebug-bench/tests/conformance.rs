//! `SseBenchmarker` runs the shared benchmarker conformance suite
//! (`autodebug_core::testing::benchmarker_conformance`) against the simulated engine's real-time
//! HTTP server on loopback, under each kind of load.

use std::time::Duration;

use autodebug_bench::SseBenchmarker;
use autodebug_core::testing::benchmarker_conformance;
use autodebug_core::{Arrival, BenchPlan, Endpoint, Load, Timeouts, Workload};
use autodebug_sim::server::{ServeOptions, serve};
use autodebug_sim::{EngineKind, SimConfig};

const MODEL: &str = "sim-model";

/// The simulator runs in real time on a small shared machine: one test at a time, so the tests do
/// not become each other's noise.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serves the SGLang-flavoured simulator (Qwen1.5-0.5B on an H100) on a free loopback port.
async fn sim() -> Endpoint {
    let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &[]).expect("valid sim config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let options = ServeOptions { seed: 7, model_name: Some(MODEL.into()), quiet: true, ..ServeOptions::default() };
    tokio::spawn(async move {
        let _ = serve(config, listener, options).await;
    });
    Endpoint::new(base, MODEL)
}

/// Small requests with timeouts short enough that a stuck request fails the run in seconds.
fn plan(load: Load, requests: usize) -> BenchPlan {
    let mut plan = BenchPlan::new("conformance", Workload::new(48, 8), load, requests);
    plan.timeouts = Timeouts {
        connect: Duration::from_secs(2),
        first_token: Duration::from_secs(5),
        idle_between_chunks: Duration::from_secs(5),
        total: Duration::from_secs(10),
    };
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_completions_with_warmup_conform() {
    let _serial = SERIAL.lock().await;
    let endpoint = sim().await;
    let mut plan = plan(Load::Sequential, 4).with_warmup(2);
    plan.chat = false;
    benchmarker_conformance(&SseBenchmarker::default(), &endpoint, &plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chat_over_two_trials_conforms() {
    let _serial = SERIAL.lock().await;
    let endpoint = sim().await;
    let plan = plan(Load::Concurrent { concurrency: 3 }, 6).with_warmup(1).with_trials(2);
    benchmarker_conformance(&SseBenchmarker::default(), &endpoint, &plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_rate_conforms() {
    let _serial = SERIAL.lock().await;
    let endpoint = sim().await;
    let load = Load::Rate { requests_per_s: 40.0, arrival: Arrival::Poisson };
    benchmarker_conformance(&SseBenchmarker::default(), &endpoint, &plan(load, 6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_cut_short_by_its_duration_conforms() {
    let _serial = SERIAL.lock().await;
    let endpoint = sim().await;
    // Far more requests than fit in the duration: `requests` is then only an upper bound.
    let plan = plan(Load::Concurrent { concurrency: 2 }, 1_000).with_duration(Duration::from_millis(200));
    benchmarker_conformance(&SseBenchmarker::default(), &endpoint, &plan).await;
}
