//! `--find-max-rate` against a fine sweep on the same simulated engine, side by side.
//!
//! The simulator (`autodebug sim serve`, vLLM-flavoured Qwen2.5-7B on one L4, in real time, as a
//! child process) serves both. The capacity search runs first with its defaults but a 10 s step;
//! then a fine sweep, the way a sweep tool finds a capacity: open-loop steps of the same length at
//! rates 2.5% of the found capacity apart, from the lowest up to the second failure in a row (the
//! first failure of that pair ends the sweep's answer), each run to its end. The "true" capacity
//! is the highest sweep rate that held before that failure. Reported: both capacities, their
//! relative difference, and the benchmark time of each.
//!
//! `cargo build --release -p autodebug-cli -p autodebug-benches && ./target/release/find_max_rate`
//! (`--quick`: a 4 s step and a coarser 5% sweep grid, for a smoke run; `--ttft-p99-ms N`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autodebug_bench::{CapacitySearch, CapacitySlo, RequestSource, SseBenchmarker};
use autodebug_core::{Arrival, BenchPlan, Endpoint, Load, Workload};

const MODEL: &str = "sim-model";

struct Simulator(Child);

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_simulator() -> (Simulator, Endpoint) {
    let program = std::env::current_exe().expect("own path").with_file_name("autodebug");
    assert!(
        program.is_file(),
        "{} not found: build it with `cargo build --release -p autodebug-cli`",
        program.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("address").port();
    let child = Command::new(&program)
        .args(["sim", "serve", "--engine", "vllm", "--gpu", "L4", "--model", "qwen2.5-7b", "--seed", "5", "--quiet"])
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let ttft_p99_ms: f64 = arg("--ttft-p99-ms").map_or(1500.0, |v| v.parse().expect("--ttft-p99-ms N"));
    let step = Duration::from_secs(if quick { 4 } else { 10 });
    let grid = if quick { 0.05 } else { 0.025 };
    let (_simulator, endpoint) = start_simulator();
    let bench = SseBenchmarker::default();
    let plan = BenchPlan::new("capacity", Workload::new(1024, 32), Load::Sequential, 1);
    let source = RequestSource::from_workload(&plan.workload);
    let slo = CapacitySlo::ttft_p99_ms(ttft_p99_ms);

    let mut search = CapacitySearch::new(plan.clone(), slo);
    search.step = step;
    let capacity = search.run(&bench, &endpoint, &source).await.expect("search runs");
    print!("{}", capacity.to_table());
    let found = capacity.rate.expect("the search found a rate that held");

    // The sweep: full-length steps, no early stop, fresh prompts and arrivals per step.
    let spacing = grid * found;
    let sweep_started = Instant::now();
    let (mut held, mut failures_in_a_row, mut steps, mut first_failure) = (None, 0, 0, None);
    for k in 1.. {
        let rate = spacing * k as f64;
        let mut step_plan = plan.clone();
        step_plan.name = format!("sweep {rate:.3}");
        step_plan.load = Load::Rate { requests_per_s: rate, arrival: Arrival::Poisson };
        step_plan.requests = ((rate * step.as_secs_f64()).ceil() as usize).max(1);
        // Fresh prompts and arrivals per step, as the search's trials have: the same prompts again
        // would be answered from the engine's prefix cache.
        step_plan.workload.seed = 1000 + k as u64;
        let step_source = RequestSource::from_workload(&step_plan.workload);
        let report = bench.run_source(&endpoint, &step_plan, &step_source).await.expect("sweep step runs");
        steps += 1;
        let s = &report.summary;
        let holds = s.succeeded > 0
            && s.ttft_ms.p99 <= ttft_p99_ms
            && (s.failed as f64) <= slo.max_error_rate * s.requests as f64;
        println!(
            "sweep {rate:>8.3} req/s  ttft.p99 {:>8.1} ms  {}",
            s.ttft_ms.p99,
            if holds { "holds" } else { "breaks" }
        );
        if holds {
            if first_failure.is_none() {
                held = Some(rate);
            }
            failures_in_a_row = 0;
        } else {
            first_failure.get_or_insert(rate);
            failures_in_a_row += 1;
            if failures_in_a_row == 2 {
                break;
            }
        }
        assert!(k < 400, "the sweep never broke the SLO");
    }
    let sweep_seconds = sweep_started.elapsed().as_secs_f64();
    let truth = held.expect("the sweep held at its lowest rate");
    let error = found / truth - 1.0;
    println!(
        "\nsearch: {found:.3} req/s in {:.0} s ({} steps); sweep: {truth:.3} req/s in {sweep_seconds:.0} s ({steps} steps, \
         grid {:.1}% of the found capacity, first break {:.3})",
        capacity.bench_seconds,
        capacity.steps.len(),
        100.0 * grid,
        first_failure.unwrap_or(f64::NAN)
    );
    println!(
        "search vs sweep capacity: {:+.1}% (target within 5%); time ratio {:.2} (target <= 0.33)",
        100.0 * error,
        capacity.bench_seconds / sweep_seconds
    );
}
