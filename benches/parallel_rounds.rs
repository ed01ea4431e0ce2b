//! Parallel rounds against the serial loop, side by side: the same simulated service, planner,
//! seed and budget of evaluations, run once serially and once with `--parallel K`.
//!
//! The service is the demo's (SGLang, Qwen1.5-0.5B-Chat, one H100, simulated in real time by
//! `autodebug sim serve` children; objective: chat e2e mean, no errors). For each planner the "best
//! configuration" is the best objective any of its runs measured; a run reaches it at the first
//! evaluation within 2% of that best, and the figures are the wall time from the session's first
//! start to that evaluation's end, and that evaluation's number (its place in the run's order).
//!
//! `cargo build --release -p autodebug-cli -p autodebug-benches && ./target/release/parallel_rounds`
//! (`--k 4 --budget 16 --seeds 1,2 --planners hybrid,random`).

use std::path::Path;
use std::process::Command;

/// One measured run: (evaluation number, seconds from the session's first start to its end, objective).
type Run = Vec<(u32, f64, Option<f64>)>;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.into())
}

fn config(dir: &Path, planner: &str, seed: u64, budget: u32, parallel: u32) -> std::path::PathBuf {
    let path = dir.join(format!("{planner}-{seed}-{parallel}.yaml"));
    let text = format!(
        r#"session: {planner}-{seed}-k{parallel}
sessions_dir: {dir}
deployer:
  kind: simulator
service:
  engine: sglang
  model: Qwen/Qwen1.5-0.5B-Chat
  gpu: H100:1
bench:
  - name: chat
    prompt_tokens: 31
    output_tokens: 150
    repeat_prompt: true
    requests: 12
    warmup: 1
  - name: concurrent
    prompt_tokens: 256
    output_tokens: 128
    concurrency: 8
    requests: 32
objective:
  minimize: chat.e2e.mean
  constraints: ["chat.error_rate == 0", "concurrent.error_rate == 0"]
planner: {planner}
seed: {seed}
budget:
  iterations: {budget}
parallel: {parallel}
"#,
        dir = dir.join("sessions").display()
    );
    std::fs::write(&path, text).expect("write the config");
    path
}

fn run(program: &Path, config: &Path) -> (Run, f64) {
    let started = std::time::Instant::now();
    let output = Command::new(program).args(["run", "-q", "--json", "-c"]).arg(config).output().expect("run autodebug");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let wall = started.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON outcome");
    let iterations = report["iterations"].as_array().expect("iterations");
    let ns = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<i128>().ok()).unwrap_or(0);
    let start = iterations.iter().map(|i| ns(&i["started_ns"])).min().unwrap_or(0);
    let run = iterations
        .iter()
        .map(|i| {
            let value = (i["status"] == "ok" && i["feasible"] == true).then(|| i["objective_value"].as_f64()).flatten();
            (i["number"].as_u64().unwrap_or(0) as u32, (ns(&i["finished_ns"]) - start) as f64 / 1e9, value)
        })
        .collect();
    (run, wall)
}

/// When a run first measured within 2% of `best` (minimized): (evaluations, seconds).
fn reached(run: &Run, best: f64) -> Option<(u32, f64)> {
    let mut hits: Vec<(u32, f64)> =
        run.iter().filter(|(_, _, v)| v.is_some_and(|v| v <= best * 1.02)).map(|(n, t, _)| (*n, *t)).collect();
    // Slots of one round finish in any order: the first to get there is the earliest in time.
    hits.sort_by(|a, b| a.1.total_cmp(&b.1));
    hits.first().copied()
}

fn main() {
    let program = std::env::current_exe().expect("own path").with_file_name("autodebug");
    assert!(
        program.is_file(),
        "{} not found: build it with `cargo build --release -p autodebug-cli`",
        program.display()
    );
    let k: u32 = arg("--k", "4").parse().expect("--k");
    let budget: u32 = arg("--budget", "16").parse().expect("--budget");
    let seeds: Vec<u64> = arg("--seeds", "1,2").split(',').map(|s| s.parse().expect("--seeds")).collect();
    let planners = arg("--planners", "hybrid,random");
    let dir = std::env::temp_dir().join(format!("parallel-rounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    println!(
        "K = {k}, budget {budget} evaluations, seeds {seeds:?}; minutes:seconds are wall time to within 2% of the best any run of the planner measured\n"
    );
    println!(
        "| planner | seed | serial: evals, s to 2% | K={k}: evals, s to 2% | time ratio | evals ratio | whole run s (serial / K={k}) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for planner in planners.split(',') {
        let mut pairs = Vec::new();
        for &seed in &seeds {
            let serial = run(&program, &config(&dir, planner, seed, budget, 1));
            let parallel = run(&program, &config(&dir, planner, seed, budget, k));
            pairs.push((seed, serial, parallel));
        }
        let best = pairs
            .iter()
            .flat_map(|(_, s, p)| s.0.iter().chain(p.0.iter()))
            .filter_map(|(_, _, v)| *v)
            .fold(f64::INFINITY, f64::min);
        let (mut time_ratios, mut eval_ratios) = (Vec::new(), Vec::new());
        for (seed, serial, parallel) in &pairs {
            let (s, p) = (reached(&serial.0, best), reached(&parallel.0, best));
            let show = |r: Option<(u32, f64)>| r.map_or("not reached".into(), |(n, t)| format!("{n}, {t:.1}"));
            let (time, evals) = match (s, p) {
                (Some(s), Some(p)) => {
                    time_ratios.push(p.1 / s.1);
                    eval_ratios.push(p.0 as f64 / s.0 as f64);
                    (format!("{:.2}", p.1 / s.1), format!("{:.2}", p.0 as f64 / s.0 as f64))
                }
                _ => ("-".into(), "-".into()),
            };
            println!(
                "| {planner} | {seed} | {} | {} | {time} | {evals} | {:.0} / {:.0} |",
                show(s),
                show(p),
                serial.1,
                parallel.1
            );
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        println!(
            "| {planner} | median | | | {} | {} | best measured {best:.2} ms |",
            median(&mut time_ratios).map_or("-".into(), |r| format!("{r:.2}")),
            median(&mut eval_ratios).map_or("-".into(), |r| format!("{r:.2}"))
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
