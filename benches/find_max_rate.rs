//! `--find-max-rate` against a fine sweep on the same simulated engine, both judged by the same
//! statistical rule, side by side.
//!
//! The simulator (`autodebug sim serve`, in real time, as a child process; by default
//! vLLM-flavoured Qwen2.5-7B on one L4) serves both. The capacity search runs first with its
//! defaults. Then a fine sweep, the way a sweep tool finds a capacity, but with the search's own
//! definition of "holds": rates on a grid 2.5% of the found capacity apart; at each rate, full
//! trials (no early cut) of the search's confirming size (`trial_requests`: 408 requests at the
//! default 95% over 3 looks, or 20 s worth if more), fresh prompts and arrivals each, pooled and
//! judged by `CapacitySearch::rate_verdict` (the binomial test on the share of requests over the
//! bound; at most `boundary_trials`, then the point estimate). The sweep starts at the grid rate
//! nearest below 0.75x the found capacity and goes up until the first rate that breaks; if that
//! first rate already breaks, it goes down until one holds. The "true" capacity is the highest
//! sweep rate that held below the first that broke. Rates far below the boundary are not swept:
//! at 408 requests each they would cost hours at low rates and say nothing about the boundary, so
//! the sweep's time is a floor for a sweep from zero, and the time ratio is conservative.
//!
//! `cargo build --release -p autodebug-cli -p autodebug-benches && ./target/release/find_max_rate`
//! (`--engine vllm --gpu L4 --model qwen2.5-7b --isl 256 --osl 32 --ttft-p99-ms 1500` are the
//! defaults; `--quick`: 4 s screening steps, a 5% grid, 80% confidence over 2 looks, for a smoke
//! run).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autodebug_bench::{CapacitySearch, CapacitySlo, Decided, RequestSource, SloCounts, SseBenchmarker};
use autodebug_core::{BenchPlan, Endpoint, Load, Workload};

const MODEL: &str = "sim-model";

struct Simulator(Child);

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_simulator(engine: &str, gpu: &str, model: &str) -> (Simulator, Endpoint) {
    let program = std::env::current_exe().expect("own path").with_file_name("autodebug");
    assert!(
        program.is_file(),
        "{} not found: build it with `cargo build --release -p autodebug-cli`",
        program.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("address").port();
    let child = Command::new(&program)
        .args(["sim", "serve", "--engine", engine, "--gpu", gpu, "--model", model, "--seed", "5", "--quiet"])
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--", "--served-model-name", MODEL])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the simulator");
    let simulator = Simulator(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the simulator did not listen on port {port} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (simulator, Endpoint::new(format!("http://127.0.0.1:{port}"), MODEL))
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> T {
    arg(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number, got {v}")))
}

/// The sweep's verdict at one rate: full trials pooled until the search's rule decides.
struct SweepPoint {
    rate: f64,
    holds: bool,
    decided: Decided,
    trials: u32,
    counts: SloCounts,
}

struct Sweep<'a> {
    bench: &'a SseBenchmarker,
    endpoint: &'a Endpoint,
    plan: &'a BenchPlan,
    search: &'a CapacitySearch,
    seed: u64,
    requests: u64,
    trials: u32,
}

impl Sweep<'_> {
    /// Full trials at `rate`, pooled until the search's rule decides.
    async fn at(&mut self, rate: f64) -> SweepPoint {
        let mut point =
            SweepPoint { rate, holds: false, decided: Decided::Provisional, trials: 0, counts: SloCounts::default() };
        // Bounded: `rate_verdict` decides by the estimate at `boundary_trials`.
        while point.decided == Decided::Provisional {
            let mut trial = self.plan.clone();
            trial.name = format!("sweep {rate:.3}");
            trial.load = Load::Rate { requests_per_s: rate, arrival: self.search.arrival };
            trial.requests = self.search.trial_requests(rate);
            trial.duration_ms = Some(self.search.trial_duration().as_millis() as u64);
            trial.warmup_requests = 1;
            // Fresh prompts and arrivals per trial, as the search's trials have: the same prompts
            // again would be answered from the engine's prefix cache.
            self.seed += 1;
            trial.workload.seed = self.seed;
            let source = RequestSource::from_workload(&trial.workload);
            let report = self.bench.run_source(self.endpoint, &trial, &source).await.expect("sweep trial runs");
            let counts = self.search.slo.count(&report.records);
            self.requests += counts.requests;
            self.trials += 1;
            point.counts += counts;
            point.trials += 1;
            (point.holds, point.decided) = self.search.rate_verdict(&point.counts, point.trials);
            println!(
                "sweep {rate:>8.3} req/s  trial {}  {:>4} of {:>5} over the bound (this trial {} of {}, p99 {:.0} ms)  {}",
                point.trials,
                point.counts.over_ttft,
                point.counts.requests,
                counts.over_ttft,
                counts.requests,
                report.summary.ttft_ms.p99,
                if point.decided == Decided::Provisional {
                    "undecided".to_string()
                } else {
                    format!("{} ({})", if point.holds { "holds" } else { "breaks" }, point.decided.as_str())
                }
            );
        }
        point
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let engine = arg("--engine").unwrap_or_else(|| "vllm".into());
    let gpu = arg("--gpu").unwrap_or_else(|| "L4".into());
    let model = arg("--model").unwrap_or_else(|| "qwen2.5-7b".into());
    let (isl, osl): (u32, u32) = (number("--isl", 256), number("--osl", 32));
    let ttft_p99_ms: f64 = number("--ttft-p99-ms", 1500.0);
    let grid = if quick { 0.05 } else { 0.025 };
    println!(
        "profile: {engine} {gpu} {model}, {isl}+{osl} tokens, Poisson, ttft.p99 <= {ttft_p99_ms} ms, started {}",
        String::from_utf8_lossy(
            &Command::new("date").args(["-u", "+%F %T UTC"]).output().map(|o| o.stdout).unwrap_or_default()
        )
        .trim()
    );
    let (_simulator, endpoint) = start_simulator(&engine, &gpu, &model);
    let bench = SseBenchmarker::default();
    let plan = BenchPlan::new("capacity", Workload::new(isl, osl), Load::Sequential, 1);
    let source = RequestSource::from_workload(&plan.workload);
    let slo = CapacitySlo::ttft_p99_ms(ttft_p99_ms);

    let mut search = CapacitySearch::new(plan.clone(), slo);
    if quick {
        search.step = Duration::from_secs(4);
        (search.confidence, search.boundary_trials) = (0.8, 2);
    }
    let capacity = search.run(&bench, &endpoint, &source).await.expect("search runs");
    print!("{}", capacity.to_table());
    let found = capacity.rate.expect("the search found a rate that held");
    let search_requests: u64 = capacity.steps.iter().map(|s| s.requests).sum();

    // The sweep: the search's verdict rule and trial size, full trials, no early cut.
    let spacing = grid * found;
    let sweep_started = Instant::now();
    let mut sweep =
        Sweep { bench: &bench, endpoint: &endpoint, plan: &plan, search: &search, seed: 1000, requests: 0, trials: 0 };
    let first_k = ((0.75 / grid).floor() as u64).max(1);
    let first = sweep.at(spacing * first_k as f64).await;
    let (truth, first_break, truth_point, break_point) = if first.holds {
        let mut held = first;
        let mut k = first_k + 1;
        loop {
            assert!(k < 4 * first_k, "the sweep held up to 3x the found capacity without breaking");
            let point = sweep.at(spacing * k as f64).await;
            if !point.holds {
                break (held.rate, point.rate, held, point);
            }
            held = point;
            k += 1;
        }
    } else {
        let mut broke = first;
        let mut k = first_k - 1;
        loop {
            assert!(k >= 1, "the sweep broke down to its lowest grid rate");
            let point = sweep.at(spacing * k as f64).await;
            if point.holds {
                break (point.rate, broke.rate, point, broke);
            }
            broke = point;
            k -= 1;
        }
    };
    let sweep_seconds = sweep_started.elapsed().as_secs_f64();
    let error = found / truth - 1.0;
    let describe = |p: &SweepPoint| {
        format!(
            "{} of {} over in {} trial{} ({})",
            p.counts.over_ttft,
            p.counts.requests,
            p.trials,
            if p.trials == 1 { "" } else { "s" },
            p.decided.as_str()
        )
    };
    println!(
        "\nsearch: {found:.3} req/s, broke at {} in {:.0} s ({} steps, {search_requests} requests)\n\
         sweep: {truth:.3} req/s [{}], first break {first_break:.3} [{}], in {sweep_seconds:.0} s ({} trials, \
         {} requests, grid {:.1}% of the found capacity from {:.3})",
        capacity.broke_at.map_or("-".into(), |b| format!("{b:.3}")),
        capacity.bench_seconds,
        capacity.steps.len(),
        describe(&truth_point),
        describe(&break_point),
        sweep.trials,
        sweep.requests,
        100.0 * grid,
        spacing * first_k as f64,
    );
    println!(
        "search vs sweep capacity: {:+.1}% (target within 5%); time ratio {:.2} (target <= 0.33); finished {}",
        100.0 * error,
        capacity.bench_seconds / sweep_seconds,
        String::from_utf8_lossy(
            &Command::new("date").args(["-u", "+%F %T UTC"]).output().map(|o| o.stdout).unwrap_or_default()
        )
        .trim()
    );
}
