//! `autodebug demo` and `autodebug run`: the loop itself.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use autodebug_core::ServiceSpec;

use crate::config::RunConfig;
use crate::{compose, output};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Iterations to run.
    #[arg(long, default_value_t = 4)]
    iterations: u32,
    /// Directory for the session trail and the store.
    #[arg(long, default_value = "sessions")]
    out: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Write each iteration's config as this platform's deployable file for the real engine
    /// (the loop still measures the simulator).
    #[arg(long, value_enum)]
    render_as: Option<crate::config::RenderTarget>,
    /// Candidates per round, each on its own simulated engine at the same time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    parallel: u32,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The session configuration file.
    #[arg(short, long, default_value = "autodebug.yaml")]
    config: PathBuf,
    /// Iterations to run (overrides the file's budget).
    #[arg(long)]
    iterations: Option<u32>,
    /// Continue the latest session (or --session NAME) from the store.
    #[arg(long)]
    resume: bool,
    /// Session name (new) or the session to resume.
    #[arg(long)]
    session: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Plan with this planner instead of the file's `planner` (`llm` reads the file's `llm:` section).
    #[arg(long, value_enum)]
    planner: Option<crate::config::PlannerKind>,
    /// Seed of the search planners instead of the file's `seed` (repeated runs of one planner).
    #[arg(long)]
    seed: Option<u64>,
    /// Start from the champion of the latest finished session on the same model and GPU type in
    /// this store (the known-good config) instead of the file's baseline, when there is one.
    #[arg(long, conflicts_with = "resume")]
    from_known_good: bool,
    /// Candidates per round, deployed and measured side by side, instead of the file's `parallel`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    parallel: Option<u32>,
}

pub async fn demo(args: DemoArgs, global: &crate::Global) -> autodebug_core::Result<ExitCode> {
    let mut config = RunConfig::demo(&args.out, args.iterations);
    config.render_as = args.render_as;
    config.parallel = args.parallel;
    run_session(config, None, Start::Baseline, None, args.json, global.quiet).await
}

/// Where a session's first iteration comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    Baseline,
    KnownGood,
    Resume,
}

pub async fn run(args: RunArgs, global: &crate::Global) -> autodebug_core::Result<ExitCode> {
    let mut config = RunConfig::load(&args.config)?;
    if let Some(planner) = args.planner {
        config.planner = planner;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(parallel) = args.parallel {
        config.parallel = parallel;
    }
    let start = match (args.resume, args.from_known_good) {
        (true, _) => Start::Resume,
        (false, true) => Start::KnownGood,
        (false, false) => Start::Baseline,
    };
    run_session(config, args.session, start, args.iterations, args.json, global.quiet).await
}

/// The file's baseline, or the known-good config of an earlier session on the same model and GPU
/// type (its name kept from the file); says on stderr which it is.
fn first_spec(config: &RunConfig, start: Start) -> autodebug_core::Result<ServiceSpec> {
    let baseline = config.baseline()?;
    if start != Start::KnownGood {
        return Ok(baseline);
    }
    let db = config.sessions_dir.join("autodebug.db");
    let gpu = baseline.resources.gpu_name_and_count().map(|(name, _)| name).unwrap_or_default();
    let known =
        if db.exists() { autodebug_core::store::Store::open(&db)?.known_good(&baseline.model, &gpu)? } else { None };
    match known {
        Some(spec) => {
            eprintln!(
                "starting from the known-good config of an earlier session on {} / {gpu}: {}",
                baseline.model,
                spec.flags.to_command_line()
            );
            Ok(ServiceSpec { name: baseline.name, ..spec })
        }
        None => {
            eprintln!(
                "no finished session on {} / {gpu} in {}; starting from the file's baseline",
                baseline.model,
                db.display()
            );
            Ok(baseline)
        }
    }
}

async fn run_session(
    config: RunConfig,
    session: Option<String>,
    start: Start,
    iterations: Option<u32>,
    json: bool,
    quiet: bool,
) -> autodebug_core::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    spawn_ctrl_c_handler(stop.clone());
    let given_name = session.or_else(|| config.session.clone());
    let name = given_name.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            config.service.engine,
            autodebug_core::TimeWindow::format_iso(autodebug_core::TimeWindow::now_ns())
        )
    });
    let progress = output::Progress::new(quiet || json);
    let session_config = config.session_config(name, iterations)?;
    let session = compose::session(&config, session_config, stop, progress.observer())?;
    let outcome = match start {
        Start::Resume => session.resume_with(given_name.as_deref(), Some(&config.baseline()?)).await?,
        Start::Baseline | Start::KnownGood => session.run(first_spec(&config, start)?).await?,
    };
    progress.finish();
    if json {
        println!("{}", output::outcome_json(&outcome, &config.sessions_dir));
    } else {
        print!("{}", output::outcome_table(&outcome, &config.sessions_dir));
    }
    Ok(ExitCode::SUCCESS)
}

/// First Ctrl-C: finish the current step, record it and stop. Second: leave at once (children
/// die with us: the local deployer sets PDEATHSIG).
fn spawn_ctrl_c_handler(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping after the current step (Ctrl-C again to quit now)");
            stop.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
}
