//! Composes a [`Session`] from the crates according to a [`RunConfig`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use autodebug_bench::SseBenchmarker;
use autodebug_core::rules::{RuleAnalyzer, RulePlanner};
use autodebug_core::session::{Session, SessionConfig, SessionEvent};
use autodebug_core::{Error, Result};
use autodebug_deploy::local::LocalDeployer;
use autodebug_telemetry::{EngineLogSource, GraphsignalSource, PrometheusScrape};

use crate::config::{DeployerConfig, PlannerKind, RunConfig, TelemetryKind};

pub fn session(
    config: &RunConfig,
    session_config: SessionConfig,
    stop: Arc<AtomicBool>,
    observer: impl Fn(&SessionEvent) + Send + Sync + 'static,
) -> Result<Session> {
    let deployer = match &config.deployer {
        DeployerConfig::Simulator { .. } => {
            let program = std::env::current_exe()
                .map_err(|e| Error::config("deployer", format!("cannot find the autodebug binary to run the simulator: {e}")))?;
            LocalDeployer::simulator(program)
        }
        DeployerConfig::Local { program, args, health_path, .. } => LocalDeployer::builder()
            .program(program.clone())
            .args_template(args.clone())
            .health_path(health_path.clone())
            .build()?,
    };
    let mut builder = Session::builder()
        .deployer(deployer)
        .benchmarker(SseBenchmarker::from_env())
        .analyzer(RuleAnalyzer::new())
        .stop_flag(stop)
        .observer(observer);
    for kind in &config.telemetry {
        builder = match kind {
            TelemetryKind::Prometheus => builder.telemetry(PrometheusScrape::from_env().map_err(|e| e.into_core("prometheus"))?),
            TelemetryKind::Graphsignal => match &config.deployer {
                // The simulator serves its own Graphsignal-shaped debug context next to its API.
                DeployerConfig::Simulator { .. } => builder.telemetry(GraphsignalSource::served_by_endpoint()),
                DeployerConfig::Local { .. } => builder.telemetry(GraphsignalSource::from_env().map_err(|e| e.into_core("graphsignal"))?.build()),
            },
            TelemetryKind::Logs => builder.telemetry(EngineLogSource::new()),
        };
    }
    builder = match config.planner {
        PlannerKind::Rules => builder.planner(RulePlanner::new()),
    };
    builder.build(session_config)
}
