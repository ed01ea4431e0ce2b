//! End to end against the simulated engine's real-time HTTP server: a concurrency sweep raises
//! throughput, and A/B comparisons tell a slower config from a faster one and a config from itself.

use std::time::Duration;

use autodebug_bench::{AbTest, RequestSource, SseBenchmarker, Sweep, SweepAxis, Verdict};
use autodebug_core::{BenchPlan, Endpoint, Load, Workload};
use autodebug_sim::server::{ServeOptions, serve};
use autodebug_sim::{EngineKind, SimConfig};

const MODEL: &str = "sim-model";
const LIMIT: Duration = Duration::from_secs(120);

/// The simulators run in real time on a small shared machine: one test at a time, so the tests
/// do not become each other's noise.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serves the SGLang-flavoured simulator (Qwen1.5-0.5B on an H100) with `flags` on a free port.
async fn sim(flags: &[&str], seed: u64) -> Endpoint {
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &flags).expect("valid sim config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let options = ServeOptions { seed, model_name: Some(MODEL.into()), quiet: true, ..ServeOptions::default() };
    tokio::spawn(async move {
        let _ = serve(config, listener, options).await;
    });
    Endpoint::new(base, MODEL)
}

fn plan(requests: usize) -> BenchPlan {
    BenchPlan::new("sim", Workload::new(64, 32), Load::Sequential, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_sweep_raises_throughput_on_the_simulator() {
    let _serial = SERIAL.lock().await;
    let endpoint = sim(&[], 1).await;
    let sweep = Sweep { plan: plan(16), axis: SweepAxis::Concurrency { values: vec![1, 4, 8] } };
    let source = RequestSource::from_workload(&sweep.plan.workload);
    let runs = tokio::time::timeout(LIMIT, sweep.run(&SseBenchmarker::default(), &endpoint, &source))
        .await
        .expect("sweep within the limit")
        .expect("sweep runs");
    let throughput: Vec<f64> = runs.iter().map(|r| r.report.summary.output_throughput).collect();
    for run in &runs {
        assert_eq!(run.report.summary.failed, 0, "{:?}", run.report.summary.errors);
        assert_eq!(run.report.summary.output_tokens, 16 * 32, "ignore_eos fixes the length");
    }
    assert_eq!(runs[1].report.context.load, "concurrency 4, 16 requests");
    assert!(throughput[0] < throughput[1] && throughput[1] < throughput[2], "tok/s at c1, c4, c8: {throughput:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_compare_tells_cuda_graphs_from_eager_and_a_config_from_itself() {
    let _serial = SERIAL.lock().await;
    let default = sim(&[], 3).await;
    let eager = sim(&["--disable-cuda-graph"], 3).await;
    let same = sim(&[], 3).await;
    let mut test = AbTest::new(plan(8).with_trials(5), "tpot.p50");
    test.plan.load = Load::Concurrent { concurrency: 4 };
    // Eager decoding costs the simulated 0.5B model about 50% per step; a neighbour on this
    // shared 2-core machine can move a trial by 20-30%, so only effects above 20% count here.
    test.min_relative_effect = 0.2;
    let source = RequestSource::from_workload(&test.plan.workload);
    let bench = SseBenchmarker::default();

    let outcome = tokio::time::timeout(LIMIT, test.run(&bench, &default, &eager, &source)).await.unwrap().unwrap();
    let c = &outcome.comparison;
    assert_eq!(c.verdict, Verdict::Worse, "eager decoding has slower steps: {c:?}");
    assert!(c.difference > 0.0 && c.ci_low > 0.0, "{c:?}");
    assert_eq!(outcome.a.trials.len(), 5);
    assert_eq!(outcome.b.report.context.trials, 5);

    let reverse = tokio::time::timeout(LIMIT, test.run(&bench, &eager, &default, &source)).await.unwrap().unwrap();
    assert_eq!(reverse.comparison.verdict, Verdict::Better, "{:?}", reverse.comparison);

    let itself = tokio::time::timeout(LIMIT, test.run(&bench, &default, &same, &source)).await.unwrap().unwrap();
    assert_eq!(itself.comparison.verdict, Verdict::WithinNoise, "{:?}", itself.comparison);
}
