//! Compose the autodebug loop from the crates: the simulator as the engine, the SSE benchmarker,
//! Prometheus, Graphsignal-shaped and log telemetry, the rule analyzer and planner, three iterations.
//!
//! Run: `cargo run --release -p autodebug-examples --example embed_loop`

use autodebug_bench::SseBenchmarker;
use autodebug_core::rules::{RuleAnalyzer, RulePlanner};
use autodebug_core::session::{Session, SessionConfig};
use autodebug_core::{BenchPlan, EngineKind, Load, Objective, ServiceSpec, Workload};
use autodebug_sim::SimDeployer;
use autodebug_telemetry::{EngineLogSource, GraphsignalSource, PrometheusScrape};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("autodebug-embed-{}", std::process::id()));
    let config = SessionConfig {
        name: "embedded".into(),
        objective: Objective::minimize("e2e.mean").with_constraint("error_rate == 0".parse()?),
        bench: vec![BenchPlan::new(
            "chat",
            Workload { repeat_prompt: true, ..Workload::new(31, 150) },
            Load::Sequential,
            8,
        )],
        max_iterations: 3,
        max_wall: None,
        ready_timeout: std::time::Duration::from_secs(30),
        sessions_dir: dir.clone(),
        confirm_trials: 0,
    };
    let session = Session::builder()
        .deployer(SimDeployer::new()) // the simulated engine, in this process
        .benchmarker(SseBenchmarker::from_env()?)
        .telemetry(PrometheusScrape::from_env()?)
        .telemetry(GraphsignalSource::served_by_endpoint()) // the simulator serves a Graphsignal-shaped context
        .telemetry(EngineLogSource::new())
        .analyzer(RuleAnalyzer::new())
        .planner(RulePlanner::new())
        .build(config)?;

    let baseline = ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat").with_gpu("H100:1");
    let outcome = session.run(baseline).await?;
    for it in &outcome.history.iterations {
        let e2e = it.metrics.get("e2e.mean").map_or("-".to_string(), |v| format!("{v:.1}"));
        println!(
            "iteration {}: {} e2e.mean={e2e} ms  flags: {}",
            it.number,
            it.status.as_str(),
            it.spec.flags.to_command_line()
        );
    }
    let champion = outcome.champion().ok_or("no champion")?;
    println!(
        "champion: iteration {} ({:+.1}% over baseline); trail in {}",
        champion.number,
        outcome.improvement_pct().unwrap_or(0.0),
        dir.display()
    );
    Ok(())
}
