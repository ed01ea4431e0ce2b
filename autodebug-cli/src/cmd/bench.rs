//! `autodebug bench`: benchmark an OpenAI-compatible endpoint (one plan, a sweep, an A/B
//! comparison, or the capacity under an SLO) and print a table, or write the versioned JSON report
//! and per-request JSONL.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use autodebug_bench::{
    AbTest, CapacitySearch, CapacitySlo, LengthDist, PointReport, Preset, ReportFile, RequestSource, Slo,
    SseBenchmarker, Sweep, SweepAxis, Synthetic, Tokenizer, TrialRun, write_jsonl,
};
use autodebug_core::{Arrival, BenchPlan, Endpoint, Error, Load, Secret, Workload};

/// Confidence of the trial intervals and the A/B verdict.
const CONFIDENCE: f64 = 0.95;

#[derive(clap::Args)]
pub struct Args {
    /// Base URL of the server (`http://host:port`; `/v1/...` is appended).
    #[arg(long, required_unless_present = "self_check")]
    url: Option<String>,
    /// Model name to send.
    #[arg(long, default_value = "default")]
    model: String,
    /// Closed loop: requests in flight at all times (default 1, sequential).
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Inter-arrival distribution for --rate.
    #[arg(long, value_parser = ["poisson", "constant", "gamma"], default_value = "poisson")]
    arrival: String,
    /// Gamma shape for --arrival gamma (below 1 is burstier than Poisson).
    #[arg(long, default_value_t = 1.0)]
    burstiness: f64,
    /// Measured requests per trial (with --duration: an upper bound).
    #[arg(long)]
    requests: Option<usize>,
    /// Stop starting requests after this long: `90`, `90s`, `2m`, `500ms`.
    #[arg(long, value_parser = autodebug_core::parse_duration)]
    duration: Option<Duration>,
    /// Warmup requests per trial, left out of the results.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Closed loop: grow concurrency to its target over this long.
    #[arg(long, value_parser = autodebug_core::parse_duration)]
    ramp_up: Option<Duration>,
    /// Input (prompt) tokens: `N`, `MIN..MAX` (uniform) or `MEAN+-STD` (normal).
    #[arg(long, default_value = "128")]
    isl: String,
    /// Output tokens (`max_tokens`, fixed with ignore_eos): same forms as --isl.
    #[arg(long, default_value = "128")]
    osl: String,
    /// A named shape instead of --isl/--osl: prefill (long prompts), decode (long answers), mixed.
    #[arg(long, value_parser = ["prefill", "decode", "mixed"])]
    preset: Option<String>,
    /// Tokens of a prefix shared by every prompt (prefix-cache workloads; warm with --warmup).
    #[arg(long, default_value_t = 0)]
    shared_prefix: u32,
    /// Multi-turn conversations of this many turns; each turn resends the history with the answers.
    #[arg(long, default_value_t = 1)]
    turns: u32,
    /// Prompts from a JSONL file: `{"prompt", "output_tokens"?}`, ShareGPT `{"conversations"}`,
    /// or a trace `{"timestamp_ms", "prompt"|"prompt_tokens", "output_tokens"}` replayed on its timestamps.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Size prompts with this Hugging Face tokenizer.json instead of the word approximation.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Let the server stop at end-of-sequence (output lengths then vary).
    #[arg(long)]
    no_ignore_eos: bool,
    /// Use /v1/completions instead of /v1/chat/completions.
    #[arg(long)]
    completions: bool,
    /// Repeat the whole run this many times (mean ± std and a bootstrap CI per metric).
    #[arg(long, default_value_t = 1)]
    trials: u32,
    /// Seed for prompts, lengths, arrivals and the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run one plan per concurrency, e.g. `1,2,4,8`.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["sweep_rate", "compare_url"])]
    sweep_concurrency: Vec<usize>,
    /// Run one plan per rate (req/s), e.g. `1,2,5`.
    #[arg(long, value_delimiter = ',', conflicts_with = "compare_url")]
    sweep_rate: Vec<f64>,
    /// A/B: compare this second endpoint (B) with --url (A), trials interleaved.
    #[arg(long)]
    compare_url: Option<String>,
    /// A/B: the metric to compare (e.g. `output_throughput`, `ttft.p50`, `tpot.mean`).
    #[arg(long, default_value = "output_throughput")]
    metric: String,
    /// A/B: smallest relative difference reported as better/worse.
    #[arg(long, default_value_t = 0.02)]
    min_effect: f64,
    /// Goodput SLO: time to first token, ms.
    #[arg(long)]
    slo_ttft_ms: Option<f64>,
    /// Goodput SLO: time per output token, ms (with --find-max-rate: bound on the p99 of per-request TPOT).
    #[arg(long)]
    slo_tpot_ms: Option<f64>,
    /// Find the highest open-loop rate that holds --slo-ttft-p99-ms (and --slo-tpot-ms) with
    /// --confidence: bracket and bisect with screening steps of --duration (default 20s), then
    /// confirm the bracket's ends by pooling trials until a binomial test on the share of requests
    /// over each bound decides (at most --boundary-trials); a step ends early once it can only break.
    #[arg(long, requires = "slo_ttft_p99_ms", conflicts_with_all = ["compare_url", "sweep_rate", "sweep_concurrency", "rate", "concurrency"])]
    find_max_rate: bool,
    /// With --find-max-rate: bound on the p99 of time to first token, ms (queueing included).
    #[arg(long)]
    slo_ttft_p99_ms: Option<f64>,
    /// With --find-max-rate: the first rate tried, req/s.
    #[arg(long, default_value_t = 1.0)]
    start_rate: f64,
    /// With --find-max-rate: the highest rate tried, req/s.
    #[arg(long, default_value_t = 1000.0)]
    max_rate: f64,
    /// With --find-max-rate: stop when the rate that broke the SLO is within this share above the one that held.
    #[arg(long, default_value_t = 0.05)]
    tolerance: f64,
    /// With --find-max-rate: most trials pooled at one rate before its point estimate decides.
    #[arg(long, default_value_t = 3)]
    boundary_trials: u32,
    /// With --find-max-rate: confidence of a decided verdict (that a rate holds, or breaks).
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    /// With --find-max-rate: largest share of failed requests a rate may have.
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
    /// Goodput SLO: end-to-end latency, ms.
    #[arg(long)]
    slo_e2e_ms: Option<f64>,
    /// Per-request timeout for the first token, seconds.
    #[arg(long)]
    timeout_first_token: Option<f64>,
    /// Per-request total timeout, seconds.
    #[arg(long)]
    timeout_total: Option<f64>,
    /// Read the bearer token from this environment variable (default: AUTODEBUG_BENCH_TOKEN, then OPENAI_API_KEY).
    #[arg(long)]
    token_env: Option<String>,
    /// Read the bearer token from this file (first line).
    #[arg(long, conflicts_with = "token_env")]
    token_file: Option<PathBuf>,
    /// Write the JSON report to FILE; without FILE (or `-`), print it instead of the table.
    #[arg(long, num_args = 0..=1, default_missing_value = "-", value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write one JSON line per request to FILE.
    #[arg(long, value_name = "FILE")]
    jsonl: Option<PathBuf>,
    /// Measure this client's own overhead and accuracy against the built-in simulator.
    #[arg(long)]
    self_check: bool,
    /// With --self-check: a seconds-long reduced run with the same phases (noisier figures).
    #[arg(long, requires = "self_check")]
    quick: bool,
    /// Run this whole plan (a BenchPlan as JSON, as a session sends it to a benchmark beside the
    /// service) instead of one built from the flags; with --json the report also carries the
    /// plan's full report (`reports`, every request's record) and who ran it (`runner`).
    #[arg(
        long,
        value_name = "JSON",
        conflicts_with_all = [
            "concurrency", "rate", "arrival", "burstiness", "requests", "duration", "warmup", "ramp_up", "isl",
            "osl", "preset", "shared_prefix", "turns", "dataset", "tokenizer", "no_ignore_eos", "completions",
            "trials", "seed", "sweep_concurrency", "sweep_rate", "compare_url", "find_max_rate",
            "timeout_first_token", "timeout_total", "self_check",
        ]
    )]
    plan_json: Option<String>,
}

pub async fn run(args: Args, global: &crate::Global) -> autodebug_core::Result<ExitCode> {
    if args.self_check {
        return self_check(args.quick, args.json.as_deref()).await;
    }
    let url = args.url.clone().unwrap_or_default();
    let token = token(&args)?;
    let endpoint = Endpoint { token: token.clone(), ..Endpoint::new(&url, &args.model) };
    if let Some(plan) = &args.plan_json {
        return run_whole_plan(&args, plan, &endpoint, global).await;
    }
    let source = source(&args)?;
    let plan = plan(&args, &source)?;
    let bench = SseBenchmarker::builder().build();
    if args.find_max_rate {
        return find_max_rate(&args, plan, &bench, &endpoint, &source, global).await;
    }
    let slo = Slo { ttft_ms: args.slo_ttft_ms, tpot_ms: args.slo_tpot_ms, e2e_ms: args.slo_e2e_ms };
    let point = |run: &TrialRun| PointReport::from_run(run, Some(slo), CONFIDENCE, args.seed);

    let (runs, comparison) = if let Some(b_url) = &args.compare_url {
        let b = Endpoint { token, ..Endpoint::new(b_url, &args.model) };
        let test = AbTest { min_relative_effect: args.min_effect, seed: args.seed, ..AbTest::new(plan, &args.metric) };
        let outcome = test.run(&bench, &endpoint, &b, &source).await?;
        let (mut a_run, mut b_run) = (outcome.a, outcome.b);
        a_run.report.plan.name = format!("A {}", a_run.report.plan.name);
        b_run.report.plan.name = format!("B {}", b_run.report.plan.name);
        (vec![a_run, b_run], Some(outcome.comparison))
    } else if !args.sweep_concurrency.is_empty() || !args.sweep_rate.is_empty() {
        let axis = if args.sweep_rate.is_empty() {
            SweepAxis::Concurrency { values: args.sweep_concurrency.clone() }
        } else {
            SweepAxis::Rate { values: args.sweep_rate.clone(), arrival: arrival(&args)? }
        };
        (Sweep { plan, axis }.run(&bench, &endpoint, &source).await?, None)
    } else {
        (vec![bench.run_trials(&endpoint, &plan, &source).await?], None)
    };

    let report = ReportFile::new(runs.iter().map(point).collect(), comparison);
    if let Some(path) = &args.jsonl {
        let lines = write_jsonl(path, &runs.iter().collect::<Vec<_>>())?;
        tracing::info!(path = %path.display(), lines, "per-request records written");
    }
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => {
            println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::Bench(e.to_string()))?);
        }
        Some(path) => {
            report.write_json(path)?;
            if !global.quiet {
                print!("{}", report.to_table());
            }
        }
        None => print!("{}", report.to_table()),
    }
    let failed = runs.iter().all(|r| r.report.summary.succeeded == 0);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `--plan-json`: the plan run exactly as a session's own benchmarker runs it
/// ([`Benchmarker::run`](autodebug_core::Benchmarker::run)), and, with `--json`, its whole report
/// and this process beside the point.
async fn run_whole_plan(
    args: &Args,
    plan: &str,
    endpoint: &Endpoint,
    global: &crate::Global,
) -> autodebug_core::Result<ExitCode> {
    use autodebug_core::Benchmarker;
    use autodebug_core::beside::{BenchRunner, BesideBenchOutput};
    let plan: BenchPlan = serde_json::from_str(plan)
        .map_err(|e| Error::config("--plan-json", format!("not a benchmark plan ({e}); give a BenchPlan as JSON")))?;
    let bench = SseBenchmarker::builder().build();
    let measured = bench.run(endpoint, &plan).await?;
    // The report holds every trial's records together; the point shows them as one run.
    let run = TrialRun { report: measured.clone(), trials: vec![measured] };
    let point = PointReport::from_run(&run, None, CONFIDENCE, plan.workload.seed);
    let failed = run.report.summary.succeeded == 0;
    let report = ReportFile::new(vec![point], None);
    if let Some(path) = &args.jsonl {
        let lines = write_jsonl(path, &[&run])?;
        tracing::info!(path = %path.display(), lines, "per-request records written");
    }
    let Some(path) = args.json.as_deref() else {
        print!("{}", report.to_table());
        return Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS });
    };
    let beside = BesideBenchOutput { reports: vec![run.report], runner: BenchRunner::this_process() };
    let json_error = |e: serde_json::Error| Error::Bench(format!("cannot write the report as JSON: {e}"));
    let mut value = serde_json::to_value(&report).map_err(json_error)?;
    if let (Some(object), serde_json::Value::Object(extra)) =
        (value.as_object_mut(), serde_json::to_value(&beside).map_err(json_error)?)
    {
        object.extend(extra);
    }
    let text = serde_json::to_string_pretty(&value).map_err(json_error)?;
    if path.as_os_str() == "-" {
        println!("{text}");
    } else {
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))?;
        if !global.quiet {
            print!("{}", report.to_table());
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn self_check(quick: bool, json: Option<&std::path::Path>) -> autodebug_core::Result<ExitCode> {
    use autodebug_bench::self_check::{SelfCheckOptions, SimulatorHost, run};
    // The simulators run as `autodebug sim serve` children: the client then holds only its own
    // sockets and shares no runtime with the server, as against a real engine.
    let simulator = match std::env::current_exe() {
        Ok(program) => SimulatorHost::Child { program, args: vec!["sim".into(), "serve".into()] },
        Err(_) => SimulatorHost::autodebug_on_path(),
    };
    let options = if quick { SelfCheckOptions::quick() } else { SelfCheckOptions::default() };
    let report = run(SelfCheckOptions { simulator, ..options }).await?;
    let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Bench(e.to_string()))?;
    match json {
        Some(path) if path != std::path::Path::new("-") => {
            std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))?;
            print!("{}", report.to_table());
        }
        Some(_) => println!("{text}"),
        None => print!("{}", report.to_table()),
    }
    Ok(ExitCode::SUCCESS)
}

fn token(args: &Args) -> autodebug_core::Result<Option<Secret>> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let token = text.lines().next().unwrap_or_default().trim().to_string();
        if token.is_empty() {
            return Err(Error::config(
                path.display().to_string(),
                "the token file is empty; put the bearer token on its first line",
            ));
        }
        return Ok(Some(Secret::new(token)));
    }
    if let Some(var) = &args.token_env {
        return match Secret::from_env(var) {
            Some(token) => Ok(Some(token)),
            None => Err(Error::config(
                format!("--token-env {var}"),
                format!("the environment variable {var} is not set or empty"),
            )),
        };
    }
    Ok(autodebug_bench::TOKEN_ENV_VARS.iter().find_map(|var| Secret::from_env(var)))
}

fn length(flag: &str, text: &str) -> autodebug_core::Result<LengthDist> {
    LengthDist::parse(text).map_err(|message| Error::config(flag, message))
}

fn source(args: &Args) -> autodebug_core::Result<RequestSource> {
    let tokenizer = match &args.tokenizer {
        Some(path) => Tokenizer::from_tokenizer_json(path)?,
        None => Tokenizer::Approximate,
    };
    let output = length("--osl", &args.osl)?;
    let source = if let Some(path) = &args.dataset {
        let default_output = match output {
            LengthDist::Fixed { tokens } => tokens,
            other => other.mean().round() as u32,
        };
        RequestSource::from_jsonl(path, tokenizer, default_output)?
    } else {
        let mut synthetic = match args.preset.as_deref().and_then(Preset::parse) {
            Some(preset) => Synthetic::preset(preset),
            None => Synthetic::new(length("--isl", &args.isl)?, output),
        };
        synthetic.shared_prefix_tokens = args.shared_prefix;
        synthetic.seed = args.seed;
        synthetic.tokenizer = tokenizer;
        if args.turns > 1 {
            RequestSource::MultiTurn { base: synthetic, turns: args.turns }
        } else {
            RequestSource::Synthetic(synthetic)
        }
    };
    Ok(source.with_ignore_eos(!args.no_ignore_eos))
}

async fn find_max_rate(
    args: &Args,
    plan: BenchPlan,
    bench: &SseBenchmarker,
    endpoint: &Endpoint,
    source: &RequestSource,
    global: &crate::Global,
) -> autodebug_core::Result<ExitCode> {
    let slo = CapacitySlo {
        ttft_p99_ms: args.slo_ttft_p99_ms.unwrap_or_default(),
        tpot_p99_ms: args.slo_tpot_ms,
        max_error_rate: args.max_error_rate,
    };
    let mut search = CapacitySearch::new(plan, slo);
    search.arrival = arrival(args)?;
    search.start_rate = args.start_rate;
    search.min_rate = search.min_rate.min(args.start_rate);
    search.max_rate = args.max_rate;
    search.tolerance = args.tolerance;
    search.boundary_trials = args.boundary_trials;
    search.confidence = args.confidence;
    if let Some(step) = args.duration {
        search.step = step;
    }
    let capacity = search.run(bench, endpoint, source).await?;
    let json = || serde_json::to_string_pretty(&capacity).map_err(|e| Error::Bench(e.to_string()));
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => println!("{}", json()?),
        Some(path) => {
            std::fs::write(path, json()? + "\n").map_err(|e| Error::io(path, e))?;
            if !global.quiet {
                print!("{}", capacity.to_table());
            }
        }
        None => print!("{}", capacity.to_table()),
    }
    Ok(if capacity.rate.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn arrival(args: &Args) -> autodebug_core::Result<Arrival> {
    Ok(match args.arrival.as_str() {
        "constant" => Arrival::Constant,
        "gamma" => Arrival::Gamma { burstiness: args.burstiness },
        _ => Arrival::Poisson,
    })
}

fn plan(args: &Args, source: &RequestSource) -> autodebug_core::Result<BenchPlan> {
    let load = match (args.rate, args.concurrency) {
        (Some(rate), _) => Load::Rate { requests_per_s: rate, arrival: arrival(args)? },
        (None, Some(c)) if c > 1 => Load::Concurrent { concurrency: c },
        (None, Some(0)) => return Err(Error::config("--concurrency", "must be at least 1")),
        _ => Load::Sequential,
    };
    let requests = match (args.requests, args.duration, source.len_limit()) {
        (Some(n), _, _) => n,
        (None, Some(_), _) => 1_000_000,
        (None, None, Some(trace_len)) => trace_len,
        (None, None, None) => (2 * load.concurrency().max(1)).max(16) * args.turns.max(1) as usize,
    };
    let mut workload = Workload::new(128, 128);
    workload.seed = args.seed;
    let mut plan = BenchPlan::new("bench", workload, load, requests).with_warmup(args.warmup).with_trials(args.trials);
    plan.chat = !args.completions;
    if let Some(d) = args.duration {
        plan = plan.with_duration(d);
    }
    if let Some(r) = args.ramp_up {
        plan = plan.with_ramp_up(r);
    }
    let seconds = |flag: &str, s: f64| {
        if s.is_finite() && s > 0.0 {
            Ok(Duration::from_secs_f64(s))
        } else {
            Err(Error::config(flag, format!("must be a positive number of seconds, got {s}")))
        }
    };
    if let Some(s) = args.timeout_first_token {
        plan.timeouts.first_token = seconds("--timeout-first-token", s)?;
    }
    if let Some(s) = args.timeout_total {
        plan.timeouts.total = seconds("--timeout-total", s)?;
    }
    Ok(plan)
}
