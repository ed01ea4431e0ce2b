//! What deploying through dstack costs the loop: deploy-to-healthy and teardown of the same engine
//! with the same flags, through the local deployer (a child process) and through a real dstack
//! fleet (apply → provisioning → running → healthy through the server's proxy; stop → finished),
//! interleaved round by round so both sides see the same machine. Prints per-round times, the
//! medians, and dstack's overhead per iteration (the difference of the medians).
//!
//! ```text
//! bash scripts/llama-server.sh && eval "$(bash scripts/dstack-fleet.sh env)"
//! cargo build --release -p autodebug-benches --bin deploy_overhead
//! ./target/release/deploy_overhead --rounds 5 [--json FILE]
//! ```
//!
//! The dstack side deploys `examples/dstack-llamacpp.dstack.yml`; the local side runs the same
//! `llama-server` binary and model (from `~/.cache/autodebug`) with the same flags.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use autodebug_benches::median;
use autodebug_core::{Deployer, EngineKind, ServiceSpec};
use autodebug_deploy::dstack::DstackDeployer;
use autodebug_deploy::local::LocalDeployer;
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(300);

struct Sample {
    ready_s: f64,
    teardown_s: f64,
}

async fn measure(deployer: &dyn Deployer, spec: &ServiceSpec) -> Result<Sample, String> {
    let started = Instant::now();
    let deployment = deployer.deploy(spec).await.map_err(|e| format!("{}: deploy: {e}", deployer.name()))?;
    let ready = deployer.wait_ready(&deployment, READY_TIMEOUT).await;
    let ready_s = started.elapsed().as_secs_f64();
    let stopping = Instant::now();
    let stopped = deployer.teardown(&deployment).await;
    let teardown_s = stopping.elapsed().as_secs_f64();
    ready.map_err(|e| format!("{}: wait_ready: {e}", deployer.name()))?;
    stopped.map_err(|e| format!("{}: teardown: {e}", deployer.name()))?;
    Ok(Sample { ready_s, teardown_s })
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("autodebug")
}

#[tokio::main]
async fn main() {
    let mut rounds = 5usize;
    let mut json_out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--rounds", Some(v)) => rounds = v.parse().expect("--rounds takes a number"),
            ("--json", Some(v)) => json_out = Some(v.into()),
            _ => {
                eprintln!("usage: deploy_overhead [--rounds 5] [--json FILE]");
                std::process::exit(2);
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let base = root.join("examples/dstack-llamacpp.dstack.yml");
    let dstack_spec = DstackDeployer::base_spec_from_file(&base).unwrap_or_else(|e| panic!("{e}"));
    let dstack = DstackDeployer::builder()
        .from_env()
        .and_then(|b| b.poll_interval(Duration::from_millis(500)).build())
        .unwrap_or_else(|e| panic!("{e}; set up the fleet: eval \"$(bash scripts/dstack-fleet.sh env)\""));

    let cache = cache_dir();
    let program = cache.join("llama-server");
    let model = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        program.exists() && model.exists(),
        "run scripts/llama-server.sh first ({} / {})",
        program.display(),
        model.display()
    );
    let local = LocalDeployer::llama_server(program);
    let mut local_spec = ServiceSpec::new("deploy-overhead", EngineKind::LlamaCpp, model.display().to_string());
    // The same launch flags as the dstack service, less the ones each deployer sets itself.
    for (flag, value) in dstack_spec.flags.iter() {
        if !matches!(flag, "-m" | "--model" | "--host" | "--port") {
            local_spec.flags.set(flag, value);
        }
    }

    println!(
        "deploy-to-healthy and teardown, {rounds} interleaved rounds; same llama-server, model and flags ({})",
        local_spec.flags.to_args().join(" ")
    );
    let mut local_samples = Vec::new();
    let mut dstack_samples = Vec::new();
    for round in 1..=rounds {
        for (name, deployer, spec, samples) in [
            ("local", &local as &dyn Deployer, &local_spec, &mut local_samples),
            ("dstack", &dstack as &dyn Deployer, &dstack_spec, &mut dstack_samples),
        ] {
            match measure(deployer, spec).await {
                Ok(s) => {
                    println!("round {round} {name:>6}: ready {:6.2} s, teardown {:5.2} s", s.ready_s, s.teardown_s);
                    samples.push(s);
                }
                Err(e) => println!("round {round} {name:>6}: FAILED {e}"),
            }
        }
    }
    let summary = |samples: &[Sample]| {
        let mut ready: Vec<f64> = samples.iter().map(|s| s.ready_s).collect();
        let mut teardown: Vec<f64> = samples.iter().map(|s| s.teardown_s).collect();
        (median(&mut ready).unwrap_or(f64::NAN), median(&mut teardown).unwrap_or(f64::NAN))
    };
    let (local_ready, local_teardown) = summary(&local_samples);
    let (dstack_ready, dstack_teardown) = summary(&dstack_samples);
    let overhead = (dstack_ready + dstack_teardown) - (local_ready + local_teardown);
    println!("median local : ready {local_ready:.2} s, teardown {local_teardown:.2} s");
    println!("median dstack: ready {dstack_ready:.2} s, teardown {dstack_teardown:.2} s");
    println!(
        "dstack costs {overhead:.1} s per iteration ({:.1}x the local deploy+teardown)",
        (dstack_ready + dstack_teardown) / (local_ready + local_teardown)
    );
    if let Some(path) = json_out {
        let report = json!({
            "rounds": rounds,
            "local": {"ready_s": local_samples.iter().map(|s| s.ready_s).collect::<Vec<_>>(),
                      "teardown_s": local_samples.iter().map(|s| s.teardown_s).collect::<Vec<_>>(),
                      "median_ready_s": local_ready, "median_teardown_s": local_teardown},
            "dstack": {"ready_s": dstack_samples.iter().map(|s| s.ready_s).collect::<Vec<_>>(),
                       "teardown_s": dstack_samples.iter().map(|s| s.teardown_s).collect::<Vec<_>>(),
                       "median_ready_s": dstack_ready, "median_teardown_s": dstack_teardown},
            "overhead_per_iteration_s": overhead,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).expect("write --json");
    }
}
