//! `autodebug init`: writes a commented starter `autodebug.yaml` for a deployment target.
//!
//! Every file it writes loads with `RunConfig::load` (a test checks each target), so a user
//! can start with `autodebug run` straight away and edit from there.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use autodebug_core::Error;

use crate::config::RunConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The built-in simulated engine (no GPU needed).
    Simulator,
    /// An engine command started on this machine.
    Local,
    /// A dstack service applied through the dstack server.
    Dstack,
    /// Kubernetes manifests applied to the cluster of your kubeconfig.
    Kubernetes,
    /// A Slurm batch job.
    Slurm,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Simulator => "simulator",
            Target::Local => "local",
            Target::Dstack => "dstack",
            Target::Kubernetes => "kubernetes",
            Target::Slurm => "slurm",
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Where the service will run.
    #[arg(long, value_enum, default_value = "simulator")]
    target: Target,
    /// The file to write; `-` prints it instead.
    #[arg(long, short, default_value = "autodebug.yaml")]
    out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

pub async fn run(args: Args, global: &crate::Global) -> autodebug_core::Result<ExitCode> {
    let text = template(args.target);
    if args.out.as_os_str() == "-" {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.out.exists() && !args.force {
        return Err(Error::config(
            args.out.display().to_string(),
            "the file exists; pass --force to replace it, or --out another path",
        ));
    }
    write(&args.out, &text)?;
    // The templates are fixed text: a file that does not load is a bug in this command.
    RunConfig::load(&args.out)?;
    if !global.quiet {
        eprintln!(
            "wrote {} ({} target); edit it, then run `autodebug run -c {}`",
            args.out.display(),
            args.target.as_str(),
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, text: &str) -> autodebug_core::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// The starter file for a target.
pub fn template(target: Target) -> String {
    let header = format!(
        "# autodebug.yaml: one tuning session, written by `autodebug init --target {}`.\n\
         # Every key is documented in docs/config-reference.md (`autodebug config-reference`).\n\
         # Run it with: autodebug run -c autodebug.yaml\n\n",
        target.as_str()
    );
    let deployer = match target {
        Target::Simulator => SIMULATOR_DEPLOYER.to_string(),
        Target::Local => LOCAL_DEPLOYER.to_string(),
        Target::Dstack => DSTACK_DEPLOYER.to_string(),
        Target::Kubernetes => KUBERNETES_DEPLOYER.to_string(),
        Target::Slurm => SLURM_DEPLOYER.to_string(),
    };
    format!("{header}{COMMON_HEAD}{deployer}{COMMON_TAIL}")
}

const COMMON_HEAD: &str = "\
# Session name in the store; default `<engine>-<ISO time>`.
# session: qwen-tuning

# Where the experiment store (autodebug.db) and the session trail (debug-*.md) go.
sessions_dir: sessions

";

const SIMULATOR_DEPLOYER: &str = "\
# Where the service runs. `simulator`: the built-in simulated SGLang/vLLM engine, started as a
# local process with the engine's real flag names, /metrics and log lines; no GPU needed.
deployer:
  kind: simulator
  ready_timeout_s: 60

";

const LOCAL_DEPLOYER: &str = "\
# Where the service runs. `local`: an engine command started on this machine. `args` may use
# {port}, {host}, {model} and {flags} (the launch flags of the iteration, as separate arguments).
deployer:
  kind: local
  program: python3
  args: [\"-m\", \"sglang.launch_server\", \"--model-path\", \"{model}\", \"--host\", \"{host}\", \"--port\", \"{port}\", \"{flags}\"]
  # llama.cpp instead: program: llama-server, args: [\"-m\", \"{model}\", \"--host\", \"{host}\", \"--port\", \"{port}\", \"--metrics\", \"{flags}\"]
  health_path: /health
  # Large models take minutes to load.
  ready_timeout_s: 600

";

const DSTACK_DEPLOYER: &str = "\
# Where the service runs. `dstack`: a dstack service applied through the dstack server's REST API;
# server URL, project and token come from ~/.dstack/config.yml (after `dstack login`) or from
# DSTACK_SERVER_URL, DSTACK_TOKEN and DSTACK_PROJECT. Each iteration's complete service file is
# written to sessions/dstack-<ISO>.yml.
deployer:
  kind: dstack
  # Your own service file (see examples/dstack-baseline.yml): kept intact except for the launch
  # flags, resources, image and env a plan changes. Without it, a standard service is rendered.
  # base_file: dstack-baseline.yml
  # Provisioning a GPU and pulling the image take a while.
  ready_timeout_s: 1800

";

const KUBERNETES_DEPLOYER: &str = "\
# Where the service runs. `kubernetes`: a Deployment + Service applied server-side to the cluster
# of your kubeconfig (found the way kubectl finds it), GPUs as nvidia.com/gpu limits.
deployer:
  kind: kubernetes
  # namespace: default
  # Your own manifests (multi-document YAML, see examples/kubernetes-base.yaml): kept intact
  # except for the knobs a plan changes.
  # base_file: kubernetes-base.yaml
  # How to reach the service from here; default is the Service's cluster DNS name, so run
  # autodebug inside the cluster or behind `kubectl port-forward svc/<name> 8000:8000`:
  # base_url: http://127.0.0.1:8000
  ready_timeout_s: 1800

";

const SLURM_DEPLOYER: &str = "\
# Where the service runs. `slurm`: an sbatch job running the engine; `sbatch`, `scontrol` and
# `scancel` must be on PATH, the job's node reachable from here and `output_dir` shared.
deployer:
  kind: slurm
  # partition: gpu
  # time_limit: \"02:00:00\"
  # cpus_per_task: 8
  # mem: 64G
  # Ask for the service's GPUs with --gres=gpu:<name>:<count>.
  gres: true
  # output_dir: /shared/autodebug
  ready_timeout_s: 1800

";

const COMMON_TAIL: &str = "\
# The service to tune, as it runs today: the baseline every iteration is compared against.
service:
  name: qwen-sglang
  # sglang | vllm | llamacpp
  engine: sglang
  model: Qwen/Qwen1.5-0.5B-Chat
  # NAME[:MEMORY]:COUNT, e.g. H100:1 or A100:80GB:4
  gpu: \"H100:1\"
  # image: lmsysorg/sglang:latest
  # Launch flags of the baseline (`--flag: value`, `--switch: null`); empty = engine defaults.
  flags: {}
  # flags:
  #   --schedule-policy: lpm
  #   --enable-mixed-chunk: null

# Benchmarks run every iteration; the first is the primary one (its metrics also appear without
# the plan prefix, e.g. `e2e.mean` next to `chat.e2e.mean`).
bench:
  - name: chat
    prompt_tokens: 31
    output_tokens: 150
    # The same prompt every time (the prefix cache is warm after the first request).
    repeat_prompt: true
    # 1 = sequential.
    concurrency: 1
    requests: 12
    warmup: 1
  - name: concurrent
    prompt_tokens: 256
    output_tokens: 128
    concurrency: 8
    requests: 32
    # Open-loop Poisson arrivals (requests/s) instead of a closed loop:
    # rate: 4.0
    # Tokens shared by every prompt (system prompt), for prefix-cache effects:
    # shared_prefix_tokens: 0

# What to optimize: exactly one of `minimize` / `maximize`, a metric `[<plan>.]<metric>.<stat>`
# (chat.e2e.mean, concurrent.output_throughput, ttft.p99, ...), subject to constraints.
objective:
  minimize: chat.e2e.mean
  # maximize: concurrent.output_throughput
  constraints:
    - chat.error_rate == 0
    - concurrent.error_rate == 0
    # - concurrent.ttft.p99 <= 200ms

# How the next configuration is chosen: hybrid (the default), rules, bayes, grid, random, oat, or
# llm with an `llm:` section (see examples/llm-planner.yaml; the key comes from the environment).
# planner: rules
# Your own YAML rules, added to the shipped knowledge base (paths relative to this file).
# rules: [my-rules.yaml]

# When to stop.
budget:
  iterations: 5
  # wall_time_s: 3600

# Telemetry read each iteration: prometheus (the engine's /metrics), graphsignal (a debug
# context; the simulator serves its own), logs (the engine's log lines).
telemetry: [prometheus, graphsignal, logs]
";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_target_loads_with_its_own_deployer() {
        use crate::config::DeployerConfig;
        let dir = tempfile::tempdir().unwrap();
        for target in Target::value_variants() {
            let path = dir.path().join(format!("{}.yaml", target.as_str()));
            std::fs::write(&path, template(*target)).unwrap();
            let config =
                RunConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}\n{}", target.as_str(), template(*target)));
            assert_eq!(config.bench.len(), 2);
            let kind = match config.deployer {
                DeployerConfig::Simulator { .. } => "simulator",
                DeployerConfig::Local { .. } => "local",
                DeployerConfig::Dstack { .. } => "dstack",
                DeployerConfig::Slurm { .. } => "slurm",
                DeployerConfig::Kubernetes { .. } => "kubernetes",
            };
            assert_eq!(kind, target.as_str());
        }
    }
}
