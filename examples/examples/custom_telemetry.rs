//! A telemetry source written against the `TelemetrySource` trait: it reads SGLang's
//! `/get_server_info` JSON (the simulator serves it too) and reports the size of the KV pool
//! under the canonical name `max_total_tokens`. The rule analyzer knows that name, so it cites
//! this source's figure in the session trail next to what the other sources say about it.
//!
//! Run: `cargo run -p autodebug-examples --example custom_telemetry`

use autodebug_bench::SseBenchmarker;
use autodebug_core::rules::{RuleAnalyzer, RulePlanner};
use autodebug_core::session::{Session, SessionConfig};
use autodebug_core::{
    BenchPlan, EngineKind, Error, Load, Objective, Result, ServiceSpec, Signal, SignalKind, Target, TelemetrySnapshot,
    TelemetrySource, TimeWindow, Workload, async_trait, canonical,
};
use autodebug_sim::SimDeployer;
use autodebug_telemetry::EngineLogSource;
use serde_json::Value;

const SOURCE: &str = "server-info";

/// The engine's own account of its KV pool, read once per iteration.
struct ServerInfoSource {
    client: reqwest::Client,
}

#[async_trait]
impl TelemetrySource for ServerInfoSource {
    fn name(&self) -> &str {
        SOURCE
    }

    // No `begin`: the figure is fixed at startup, so there is nothing to take a first reading of.
    async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> Result<TelemetrySnapshot> {
        let url = target.endpoint.url("/get_server_info");
        let failed = |why: String| Error::telemetry(SOURCE, format!("{url}: {why}"));
        let mut request = self.client.get(&url);
        if let Some(token) = &target.endpoint.token {
            request = request.bearer_auth(token.expose());
        }
        let response = request.send().await.map_err(|e| failed(e.to_string()))?;
        let info: Value = response
            .error_for_status()
            .map_err(|e| failed(format!("{e} (only SGLang serves this endpoint)")))?
            .json()
            .await
            .map_err(|e| failed(format!("not JSON: {e}")))?;
        let tokens = info
            .get("max_total_num_tokens")
            .and_then(Value::as_f64)
            .ok_or_else(|| failed("no numeric `max_total_num_tokens` in the answer".into()))?;
        let mut snapshot = TelemetrySnapshot::new(SOURCE, Some(window));
        snapshot.signals.push(
            Signal::number(SOURCE, SignalKind::Metric, "max_total_num_tokens", tokens, "tokens")
                .with_canonical(canonical::MAX_TOTAL_TOKENS)
                // The trail cites the number with where it was read, as it does a log line.
                .with_detail(format!("{tokens} tokens from {url}")),
        );
        snapshot.raw = Some(info.to_string());
        Ok(snapshot)
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("autodebug-custom-telemetry-{}", std::process::id()));
    let config = SessionConfig {
        name: "custom-telemetry".into(),
        objective: Objective::minimize("e2e.mean").with_constraint("error_rate == 0".parse()?),
        bench: vec![BenchPlan::new("chat", Workload::new(64, 32), Load::Sequential, 4)],
        max_iterations: 2,
        max_wall: None,
        ready_timeout: std::time::Duration::from_secs(30),
        sessions_dir: dir.clone(),
        confirm_trials: 0,
    };
    let session = Session::builder()
        .deployer(SimDeployer::new())
        .benchmarker(SseBenchmarker::from_env()?)
        .telemetry(ServerInfoSource { client: reqwest::Client::new() })
        .telemetry(EngineLogSource::new()) // the engine's startup log states the same figure
        .analyzer(RuleAnalyzer::new())
        .planner(RulePlanner::new())
        .build(config)?;

    let baseline = ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat").with_gpu("H100:1");
    let outcome = session.run(baseline).await?;
    let mut ours = 0;
    for it in &outcome.history.iterations {
        println!("iteration {}: {}  flags: {}", it.number, it.status.as_str(), it.spec.flags.to_command_line());
        for signal in it.analysis.cited.iter().filter(|s| s.canonical.as_deref() == Some(canonical::MAX_TOTAL_TOKENS)) {
            println!("  cited from {}: {}", signal.source, signal.citation());
            ours += usize::from(signal.source == SOURCE);
        }
    }
    println!("trail in {}", dir.display());
    if ours == 0 {
        return Err(format!("no iteration cited the `{SOURCE}` source").into());
    }
    Ok(())
}
