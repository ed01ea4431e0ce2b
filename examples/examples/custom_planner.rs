//! A planner written against the `Planner` trait: it doubles `--max-running-requests` while the
//! server's queue is non-empty, and stops when the queue stays empty. It runs in the same loop as the
//! built-in planners, on the simulator, under a concurrent workload.
//!
//! Run: `cargo run --release -p autodebug-examples --example custom_planner`

use autodebug_bench::SseBenchmarker;
use autodebug_core::rules::RuleAnalyzer;
use autodebug_core::session::{Session, SessionConfig};
use autodebug_core::{
    BenchPlan, Change, EngineKind, Load, Objective, Plan, PlanInput, Planner, Result, ServiceSpec, Workload,
    async_trait, canonical,
};
use autodebug_sim::SimDeployer;
use autodebug_telemetry::PrometheusScrape;

/// Doubles the running-request cap while requests wait in the queue.
struct QueueDrainer;

#[async_trait]
impl Planner for QueueDrainer {
    fn name(&self) -> &str {
        "queue-drainer"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        let queued = input
            .analysis
            .cited
            .iter()
            .chain(input.history.iterations.last().into_iter().flat_map(|i| i.analysis.cited.iter()));
        let queue = queued
            .filter(|s| s.canonical.as_deref() == Some(canonical::QUEUE_LEN))
            .find(|s| s.as_f64().is_some_and(|v| v > 0.0));
        let current = input
            .space
            .effective(&input.current.flags, "--max-running-requests")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(4);
        let Some(signal) = queue else {
            return Ok(Plan {
                planner: self.name().into(),
                changes: vec![],
                next: input.current.clone(),
                exhausted: true,
                notes: vec!["queue is empty".into()],
            });
        };
        let mut next = input.current.clone();
        let to = (current * 2).to_string();
        input.space.apply(&mut next.flags, "--max-running-requests", Some(&to))?;
        Ok(Plan {
            planner: self.name().into(),
            changes: vec![Change {
                knob: "--max-running-requests".into(),
                from: Some(current.to_string()),
                to: Some(to),
                rule: "queue-drainer".into(),
                reason: "requests are queued: let more run at once".into(),
                evidence: vec![signal.clone()],
            }],
            next,
            exhausted: false,
            notes: vec![],
        })
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("autodebug-custom-planner-{}", std::process::id()));
    let config = SessionConfig {
        name: "custom-planner".into(),
        objective: Objective::maximize("output_throughput").with_constraint("error_rate == 0".parse()?),
        bench: vec![BenchPlan::new("load", Workload::new(128, 64), Load::Concurrent { concurrency: 16 }, 48)],
        max_iterations: 3,
        max_wall: None,
        ready_timeout: std::time::Duration::from_secs(30),
        sessions_dir: dir.clone(),
        confirm_trials: 0,
    };
    let session = Session::builder()
        .deployer(SimDeployer::new())
        .benchmarker(SseBenchmarker::from_env()?)
        .telemetry(PrometheusScrape::from_env()?)
        .analyzer(RuleAnalyzer::new())
        .planner(QueueDrainer)
        .build(config)?;
    let baseline = ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat")
        .with_gpu("H100:1")
        .with_flag("--max-running-requests", Some("4"));
    let outcome = session.run(baseline).await?;
    for it in &outcome.history.iterations {
        let throughput = it.metrics.get("output_throughput").map_or("-".to_string(), |v| format!("{v:.0}"));
        println!(
            "iteration {}: output_throughput={throughput} tok/s  flags: {}",
            it.number,
            it.spec.flags.to_command_line()
        );
    }
    println!("stopped: {}; trail in {}", outcome.stop_reason.as_str(), dir.display());
    Ok(())
}
