//! Composes a [`Session`] from the crates according to a [`RunConfig`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use autodebug_bench::SseBenchmarker;
use autodebug_core::Deployer;
use autodebug_core::Planner;
use autodebug_core::beside::BenchBeside;
use autodebug_core::rules::{KnowledgeBase, RuleAnalyzer, RulePlanner};
use autodebug_core::search::{BayesPlanner, GridPlanner, HybridPlanner, OneKnobPlanner, RandomPlanner};
use autodebug_core::session::{Session, SessionConfig, SessionEvent};
use autodebug_core::{EngineArgs, EngineKind, Error, Platform, Result, SearchSpace, Secret};
use autodebug_deploy::dstack::DstackDeployer;
use autodebug_deploy::engine_args::{default_cache_dir, probe};
use autodebug_deploy::local::LocalDeployer;
use autodebug_deploy::template::engine_command;
use autodebug_deploy::{KubernetesDeployer, RenderAs, SlurmDeployer};
use autodebug_llm::LlmPlanner;
use autodebug_sim::twin::{Twin, TwinPlanner, TwinSearch};
use autodebug_telemetry::{EngineLogSource, GraphsignalSource, PrometheusScrape};

use crate::config::{BenchBesideConfig, DeployerConfig, PlannerKind, RenderTarget, RunConfig, TelemetryKind};

pub fn session(
    config: &RunConfig,
    session_config: SessionConfig,
    stop: Arc<AtomicBool>,
    observer: impl Fn(&SessionEvent) + Send + Sync + 'static,
) -> Result<Session> {
    let deployer: Box<dyn Deployer> = match &config.deployer {
        DeployerConfig::Simulator { .. } => {
            let program = std::env::current_exe().map_err(|e| {
                Error::config("deployer", format!("cannot find the autodebug binary to run the simulator: {e}"))
            })?;
            Box::new(LocalDeployer::simulator(program))
        }
        DeployerConfig::Local { program, args, health_path, .. } => Box::new(
            LocalDeployer::builder()
                .program(program.clone())
                .args_template(args.clone())
                .health_path(health_path.clone())
                .build()?,
        ),
        DeployerConfig::Dstack { cli, .. } => {
            let mut dstack = DstackDeployer::builder().from_env()?;
            if let Some(cli) = cli {
                dstack = dstack.cli(cli.clone());
            }
            Box::new(dstack.build()?)
        }
        DeployerConfig::Slurm {
            program,
            args,
            partition,
            time_limit,
            cpus_per_task,
            mem,
            gres,
            output_dir,
            bind_host,
            connect_host,
            ..
        } => {
            let (default_program, default_args) = engine_command(config.service.engine);
            let mut slurm = SlurmDeployer::builder()
                .program(program.clone().unwrap_or_else(|| default_program.into()))
                .args_template(if args.is_empty() {
                    default_args.iter().map(|a| a.to_string()).collect()
                } else {
                    args.clone()
                })
                .gres(*gres);
            if let Some(p) = partition {
                slurm = slurm.partition(p.clone());
            }
            if let Some(t) = time_limit {
                slurm = slurm.time_limit(t.clone());
            }
            if let Some(c) = cpus_per_task {
                slurm = slurm.cpus_per_task(*c);
            }
            if let Some(m) = mem {
                slurm = slurm.mem(m.clone());
            }
            if let Some(d) = output_dir {
                slurm = slurm.output_dir(d.clone());
            }
            if let Some(h) = bind_host {
                slurm = slurm.bind_host(h.clone());
            }
            if let Some(h) = connect_host {
                slurm = slurm.connect_host(h.clone());
            }
            Box::new(slurm.build()?)
        }
        DeployerConfig::Kubernetes { namespace, base_url, .. } => {
            let mut k8s = KubernetesDeployer::builder().from_env()?;
            if let Some(ns) = namespace {
                k8s = k8s.namespace(ns.clone());
            }
            if let Some(url) = base_url {
                k8s = k8s.base_url(url.clone());
            }
            Box::new(k8s.build()?)
        }
    };
    let deployer: Box<dyn Deployer> = match config.render_as {
        None => Box::new(deployer),
        Some(target) => Box::new(RenderAs::new(deployer, renderer(target, config)?)),
    };
    // Built before anything is deployed, so a broken rules file or a missing key stops the run early.
    let kb = config.knowledge_base()?;
    let planner = planner(config.planner, config, &kb)?;
    let baseline = config.baseline()?;
    let platform = Platform::of(&baseline);
    let space = SearchSpace::for_platform(baseline.engine, &platform).with_launch_flags(config.template_flags());
    let mut builder = Session::builder()
        .search_space(space.clone())
        .deployer_boxed(deployer)
        .benchmarker(SseBenchmarker::from_env().map_err(|e| Error::Bench(e.to_string()))?)
        .analyzer(RuleAnalyzer::from_kb(kb.clone()).with_space(space))
        .stop_flag(stop)
        .observer(observer);
    for kind in &config.telemetry {
        builder = match kind {
            TelemetryKind::Prometheus => {
                builder.telemetry(PrometheusScrape::from_env().map_err(|e| e.into_core("prometheus"))?)
            }
            TelemetryKind::Graphsignal => match &config.deployer {
                // The simulator serves its own Graphsignal-shaped debug context next to its API.
                DeployerConfig::Simulator { .. } => builder.telemetry(GraphsignalSource::served_by_endpoint()),
                _ => builder.telemetry(GraphsignalSource::from_env().map_err(|e| e.into_core("graphsignal"))?),
            },
            TelemetryKind::Logs => builder.telemetry(EngineLogSource::new()),
        };
    }
    if let Some(args) = installed_engine_args(config) {
        builder = builder.engine_args(args);
    }
    let slot_env =
        config.slot_env.iter().map(|env| env.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).collect();
    builder = builder.planner_boxed(planner).parallel(config.parallel as usize).slot_env(slot_env);
    if let Some(beside) = &config.bench_beside {
        builder = builder.bench_beside(bench_beside(beside)?);
    }
    builder.build(session_config)
}

/// The session's `bench_beside` from the configuration's: the program defaults to this binary,
/// and the token falls back to what the local benchmarker would send (its environment variables).
fn bench_beside(config: &BenchBesideConfig) -> Result<BenchBeside> {
    let program = match &config.program {
        Some(program) => program.clone(),
        None => std::env::current_exe().map_err(|e| {
            Error::config("bench_beside.program", format!("cannot find this autodebug binary ({e}); give its path"))
        })?,
    };
    Ok(BenchBeside {
        program,
        timeout: config.timeout_s.map(Duration::from_secs_f64),
        fallback_token: autodebug_bench::TOKEN_ENV_VARS.iter().find_map(|var| Secret::from_env(var)),
    })
}

/// The local engine's own argument list (its help, cached), so plans are checked against the
/// installed version before any deploy. `None` (with a warning) when the help cannot be read:
/// the deploy then says what is wrong.
fn installed_engine_args(config: &RunConfig) -> Option<EngineArgs> {
    let DeployerConfig::Local { program, args, .. } = &config.deployer else { return None };
    if config.service.engine == EngineKind::Sglang {
        return None;
    }
    match probe(config.service.engine, program, args, default_cache_dir().as_deref()) {
        Ok(installed) => {
            tracing::info!(
                engine = %config.service.engine,
                version = installed.version.as_deref().unwrap_or("unknown"),
                "plans are checked against the installed engine's arguments"
            );
            Some(installed)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the installed engine's arguments could not be read; plans are checked against the catalog only");
            None
        }
    }
}

/// The planner `kind` names, its rules drawn from `kb` (the shipped rules plus the user's).
fn planner(kind: PlannerKind, config: &RunConfig, kb: &KnowledgeBase) -> Result<Box<dyn Planner>> {
    let seed = config.seed;
    let rules = || RulePlanner::from_kb(kb.clone());
    let hybrid = || HybridPlanner::new(seed).with_rules(rules());
    let twin = || -> Result<TwinPlanner<HybridPlanner>> {
        let baseline = config.baseline()?;
        let defaults = Twin::defaults_for(baseline.engine, &Platform::of(&baseline));
        let base = Twin::new(baseline.engine, baseline.model.clone(), defaults);
        Ok(TwinPlanner::new(hybrid(), config.loop_bench_plans()?, base)
            .with_search(TwinSearch { seed, ..TwinSearch::default() }))
    };
    Ok(match kind {
        PlannerKind::Rules => Box::new(rules()),
        PlannerKind::Hybrid => Box::new(hybrid()),
        PlannerKind::Bayes => Box::new(BayesPlanner::new(seed)),
        PlannerKind::Grid => Box::new(GridPlanner::new()),
        PlannerKind::Random => Box::new(RandomPlanner::new(seed)),
        PlannerKind::Oat => Box::new(OneKnobPlanner::new()),
        PlannerKind::Twin => Box::new(twin()?),
        PlannerKind::Llm => {
            let llm_config = config.llm_config()?;
            tracing::info!(
                target: "autodebug::llm",
                "planner: {} at {}, falling back to {}",
                llm_config.model,
                llm_config.url(),
                config.llm_fallback().as_str()
            );
            let llm = LlmPlanner::new(llm_config)?;
            Box::new(match config.llm_fallback() {
                PlannerKind::Rules | PlannerKind::Llm => llm.with_fallback(rules()),
                PlannerKind::Hybrid => llm.with_fallback(hybrid()),
                PlannerKind::Bayes => llm.with_fallback(BayesPlanner::new(seed)),
                PlannerKind::Grid => llm.with_fallback(GridPlanner::new()),
                PlannerKind::Random => llm.with_fallback(RandomPlanner::new(seed)),
                PlannerKind::Oat => llm.with_fallback(OneKnobPlanner::new()),
                PlannerKind::Twin => llm.with_fallback(twin()?),
            })
        }
    })
}

/// The deployer whose `render` writes the trail's files for `target`, running the real engine.
fn renderer(target: RenderTarget, config: &RunConfig) -> Result<Box<dyn Deployer>> {
    let (program, args) = engine_command(config.service.engine);
    Ok(match target {
        RenderTarget::Local => Box::new(LocalDeployer::builder().program(program).args_template(args).build()?),
        RenderTarget::Slurm => Box::new(SlurmDeployer::builder().program(program).args_template(args).build()?),
        RenderTarget::Dstack => Box::new(DstackDeployer::render_only(serde_yaml::Value::Null)),
        RenderTarget::Kubernetes => Box::new(autodebug_deploy::KubernetesDeployer::render_only()),
    })
}
