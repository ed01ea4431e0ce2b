//! `bench_client`: performance figures of autodebug-bench's streaming client.
//!
//! 1. Parse-only: SSE events per second through the client's exact per-chunk path
//!    (`self_check::replay_sse`: SSE parser, chunk JSON, stream accounting) on recorded bytes —
//!    a real llama.cpp stream and a simulator stream recorded at start-up — fed as one read per
//!    event (how a live stream arrives) and as one read for the whole body.
//! 2. The self-check (`autodebug bench --self-check`): client CPU per chunk, chunks per CPU
//!    second, streams held, TTFT error at two concurrencies, against the in-process simulator.
//!
//! Each figure is the median of `--runs N` (default 3). Usage:
//!
//! ```text
//! cargo run --release -p autodebug-benches --bin bench_client -- [--runs N] [--quick] [--parse-only] [--json]
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use autodebug_bench::self_check::{
    self, ReplayEnd, SERVED_MODEL, SelfCheckOptions, SelfCheckReport, SimulatorHost, TtftLegs, replay_sse,
};
use autodebug_benches::{median, per_event_reads};
use autodebug_sim::server::{ServeOptions, serve, serve_reference};
use autodebug_sim::{EngineKind, SimConfig};

const LLAMACPP_STREAM: &[u8] = include_bytes!("fixtures/llamacpp_smollm2_chat_stream.sse");

struct Args {
    runs: usize,
    quick: bool,
    parse_only: bool,
    json: bool,
    /// An `autodebug` executable to run the simulators as `sim serve` children.
    simulator: Option<std::path::PathBuf>,
}

/// `autodebug` in this program's own directory (`target/release` after a release build).
fn sibling_autodebug() -> Option<std::path::PathBuf> {
    let program = std::env::current_exe().ok()?.with_file_name("autodebug");
    program.is_file().then_some(program)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { runs: 3, quick: false, parse_only: false, json: false, simulator: sibling_autodebug() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => {
                let value = it.next().ok_or("--runs needs a number, e.g. --runs 5")?;
                args.runs = value.parse().map_err(|_| format!("--runs: `{value}` is not a whole number"))?;
                if args.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            "--quick" => args.quick = true,
            "--parse-only" => args.parse_only = true,
            "--json" => args.json = true,
            "--simulator" => {
                let value = it.next().ok_or("--simulator needs the path of an autodebug executable")?;
                args.simulator = Some(value.into());
            }
            "--in-process" => args.simulator = None,
            "-h" | "--help" => {
                return Err("usage: bench_client [--runs N] [--quick] [--parse-only] [--json] [--simulator PATH | --in-process]\n(default: the simulators run as children of the `autodebug` built next to this program, else in-process)".into());
            }
            other => return Err(format!("unknown argument `{other}`; see --help")),
        }
    }
    Ok(args)
}

/// SSE events per second replaying `reads` repeatedly for about `budget`; median of `runs`.
fn parse_rate(reads: &[&[u8]], runs: usize, budget: Duration) -> Result<(f64, u64), String> {
    let check = replay_sse(reads.iter().copied());
    if check.end != ReplayEnd::Done {
        return Err(format!("recorded stream does not replay to [DONE]: {check:?}"));
    }
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let mut events = 0u64;
        while started.elapsed() < budget {
            for _ in 0..16 {
                events += std::hint::black_box(replay_sse(std::hint::black_box(reads).iter().copied())).events;
            }
        }
        rates.push(events as f64 / started.elapsed().as_secs_f64());
    }
    Ok((median(&mut rates).unwrap_or(0.0), check.events))
}

/// One real response of the in-process simulator (fast mode), as the raw bytes it sent.
async fn record_simulator_stream(tokens: u32) -> Result<Vec<u8>, String> {
    let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &[]).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let options = ServeOptions { fast: true, quiet: true, model_name: Some("rec".into()), ..ServeOptions::default() };
    let server = tokio::spawn(serve(config, listener, options));
    let body = serde_json::json!({"model": "rec", "messages": [{"role": "user", "content": "record one stream"}],
        "max_tokens": tokens, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}});
    let response = reqwest::Client::new()
        .post(format!("http://{address}/v1/chat/completions"))
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| format!("recording a simulator stream from {address}: {e}"))?;
    let bytes = response.bytes().await.map_err(|e| format!("reading the simulator stream: {e}"))?;
    server.abort();
    Ok(bytes.to_vec())
}

struct ParseFigures {
    name: &'static str,
    events: u64,
    per_event_reads_events_per_s: f64,
    one_read_events_per_s: f64,
}

fn run_parse_benchmarks(sim_stream: &[u8], runs: usize, budget: Duration) -> Result<Vec<ParseFigures>, String> {
    let mut figures = Vec::new();
    for (name, body) in [("llama.cpp fixture", LLAMACPP_STREAM), ("simulator (sglang)", sim_stream)] {
        let reads = per_event_reads(body);
        let (per_event, events) = parse_rate(&reads, runs, budget)?;
        let (one_read, _) = parse_rate(&[body], runs, budget)?;
        figures.push(ParseFigures {
            name,
            events,
            per_event_reads_events_per_s: per_event,
            one_read_events_per_s: one_read,
        });
    }
    Ok(figures)
}

fn median_report(mut reports: Vec<SelfCheckReport>) -> Option<SelfCheckReport> {
    let pick = |reports: &[SelfCheckReport], f: fn(&SelfCheckReport) -> f64| {
        let mut values: Vec<f64> = reports.iter().map(f).collect();
        median(&mut values).unwrap_or(0.0)
    };
    let mut base = reports.first()?.clone();
    base.cpu_us_per_chunk = pick(&reports, |r| r.cpu_us_per_chunk);
    base.floor_cpu_us_per_chunk = pick(&reports, |r| r.floor_cpu_us_per_chunk);
    // The median of the per-run ratios: each run's client and floor shared that run's machine.
    base.cpu_ratio_to_floor = pick(&reports, |r| r.cpu_ratio_to_floor);
    base.chunks_per_sec = pick(&reports, |r| r.chunks_per_sec);
    base.chunks_per_sec_wall = pick(&reports, |r| r.chunks_per_sec_wall);
    base.streams_held = pick(&reports, |r| r.streams_held as f64) as usize;
    base.ttft_err_mean_ms_c8 = pick(&reports, |r| r.ttft_err_mean_ms_c8);
    base.ttft_err_p99_ms_c8 = pick(&reports, |r| r.ttft_err_p99_ms_c8);
    base.ttft_err_mean_ms_c1000 = pick(&reports, |r| r.ttft_err_mean_ms_c1000);
    base.ttft_err_p99_ms_c1000 = pick(&reports, |r| r.ttft_err_p99_ms_c1000);
    base.ttft_legs_c8 = median_legs(&reports, |r| &r.ttft_legs_c8);
    base.ttft_legs_c1000 = median_legs(&reports, |r| &r.ttft_legs_c1000);
    base.chunks_measured = reports.iter().map(|r| r.chunks_measured).sum();
    base.floor_chunks_measured = reports.iter().map(|r| r.floor_chunks_measured).sum();
    base.mode = format!("{} (median of {} runs)", base.mode, reports.len());
    for report in reports.drain(1..) {
        for (class, count) in report.errors {
            *base.errors.entry(class).or_default() += count;
        }
    }
    Some(base)
}

/// Each figure of the legs, median over the reports.
fn median_legs(reports: &[SelfCheckReport], legs: fn(&SelfCheckReport) -> &TtftLegs) -> TtftLegs {
    let pick = |figure: fn(&TtftLegs) -> f64| {
        let mut values: Vec<f64> = reports.iter().map(|r| figure(legs(r))).collect();
        median(&mut values).unwrap_or(0.0)
    };
    TtftLegs {
        request_mean_ms: pick(|l| l.request_mean_ms),
        request_p99_ms: pick(|l| l.request_p99_ms),
        response_mean_ms: pick(|l| l.response_mean_ms),
        response_p99_ms: pick(|l| l.response_p99_ms),
        read_lag_mean_ms: pick(|l| l.read_lag_mean_ms),
        read_lag_p99_ms: pick(|l| l.read_lag_p99_ms),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let sim_stream = match record_simulator_stream(2_000).await {
        Ok(bytes) => bytes,
        Err(message) => {
            eprintln!("bench_client: {message}");
            return ExitCode::FAILURE;
        }
    };
    let budget = if args.quick { Duration::from_millis(200) } else { Duration::from_secs(1) };
    let parse = match run_parse_benchmarks(&sim_stream, args.runs, budget) {
        Ok(figures) => figures,
        Err(message) => {
            eprintln!("bench_client: {message}");
            return ExitCode::FAILURE;
        }
    };

    let mut reports = Vec::new();
    if !args.parse_only {
        for run in 0..args.runs {
            let options = if args.quick { SelfCheckOptions::quick() } else { SelfCheckOptions::default() };
            let simulator = match &args.simulator {
                Some(program) => {
                    SimulatorHost::Child { program: program.clone(), args: vec!["sim".into(), "serve".into()] }
                }
                None => SimulatorHost::in_process(|listener, fast| async move {
                    serve_reference(listener, fast, SERVED_MODEL.into()).await.map_err(|e| e.to_string())
                }),
            };
            let options = SelfCheckOptions { simulator, ..options };
            match self_check::run(options).await {
                Ok(report) => reports.push(report),
                Err(error) => {
                    eprintln!("bench_client: self-check run {} failed: {error}", run + 1);
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let report = median_report(reports);

    if args.json {
        let parse_json: Vec<_> = parse
            .iter()
            .map(|p| {
                serde_json::json!({"stream": p.name, "events": p.events,
                    "per_event_reads_events_per_s": p.per_event_reads_events_per_s,
                    "one_read_events_per_s": p.one_read_events_per_s})
            })
            .collect();
        let out = serde_json::json!({"runs": args.runs, "parse_only": parse_json, "self_check": report});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("parse-only (SSE parser + chunk JSON + accounting, one thread), median of {} runs:", args.runs);
        println!(
            "{:<22} {:>7} {:>22} {:>22}",
            "recorded stream", "events", "events/s (read/event)", "events/s (one read)"
        );
        for p in &parse {
            println!(
                "{:<22} {:>7} {:>22.0} {:>22.0}",
                p.name, p.events, p.per_event_reads_events_per_s, p.one_read_events_per_s
            );
        }
        if let Some(report) = &report {
            println!();
            print!("{}", report.to_table());
        }
    }
    ExitCode::SUCCESS
}
