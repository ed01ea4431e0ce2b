//! [`SlurmDeployer`]: runs the engine as a Slurm batch job.
//!
//! `render` writes a complete sbatch script (resources, GPUs via `--gres`, the engine command,
//! optionally a container through pyxis' `--container-image`); `deploy` submits it with
//! `sbatch --parsable`; the job picks a free port on its node and prints one
//! `AUTODEBUG_ENDPOINT host=<node> port=<port>` line, which `wait_ready` reads from the job's output
//! file (Slurm clusters share the file system the job writes to) before polling the health path;
//! `logs` is that output file; `teardown` is `scancel`. `run_beside` runs a command as a job step
//! inside the service's job (`srun --jobid=<job> --overlap`), on the service's node, next to the
//! engine; the step gets only the variables it is given (`--export`), so a token reaches it through
//! srun's environment and never appears on an argument list or in Slurm's records.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use autodebug_core::beside::{BesideCommand, BesideOutput};
use autodebug_core::failure::start_failure_kind;
use autodebug_core::secret;
use autodebug_core::{
    Artifact, Deployer, Deployment, Endpoint, Error, LogLine, Result, ServiceSpec, TimeWindow, async_trait, shell_quote,
};
use tokio::process::Command;

use crate::health::{Probe, probe};
use crate::template::CommandTemplate;

/// The line a job prints once it knows where it serves.
const ENDPOINT_MARKER: &str = "AUTODEBUG_ENDPOINT";

/// Lines kept from the start of a job's output (the endpoint line and the engine's startup) and
/// from its end (the latest log): an engine that prints gigabytes costs bounded memory here.
const OUTPUT_HEAD_LINES: usize = 500;
const OUTPUT_TAIL_LINES: usize = 5_000;

/// A job's output file as lines, each at most [`crate::MAX_LINE_BYTES`], the first
/// [`OUTPUT_HEAD_LINES`] and the last [`OUTPUT_TAIL_LINES`] of it (a marker line stands for what
/// was skipped between them); empty when it cannot be read yet.
fn read_output_file(path: &std::path::Path) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else { return Vec::new() };
    let mut reader = std::io::BufReader::new(file);
    let mut raw = Vec::new();
    let mut head = Vec::new();
    let mut tail = std::collections::VecDeque::new();
    let mut skipped = 0usize;
    while let Ok(Some(line)) = crate::logbuf::read_line(&mut reader, &mut raw) {
        if head.len() < OUTPUT_HEAD_LINES {
            head.push(line);
            continue;
        }
        tail.push_back(line);
        if tail.len() > OUTPUT_TAIL_LINES {
            tail.pop_front();
            skipped += 1;
        }
    }
    if skipped > 0 {
        head.push(format!("[... {skipped} lines of job output skipped]"));
    }
    head.extend(tail);
    head
}

/// Job states after which a job will never become ready.
const FINAL_STATES: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
];

/// Configures a [`SlurmDeployer`].
#[derive(Debug, Clone)]
pub struct SlurmDeployerBuilder {
    program: Option<PathBuf>,
    args: Vec<String>,
    health_path: String,
    partition: Option<String>,
    time_limit: String,
    cpus_per_task: u32,
    mem: Option<String>,
    gres: bool,
    container: bool,
    bind_host: String,
    connect_host: Option<String>,
    output_dir: PathBuf,
    extra_directives: Vec<String>,
}

impl Default for SlurmDeployerBuilder {
    fn default() -> Self {
        SlurmDeployerBuilder {
            program: None,
            args: Vec::new(),
            health_path: "/health".into(),
            partition: None,
            time_limit: "02:00:00".into(),
            cpus_per_task: 1,
            mem: None,
            gres: true,
            container: false,
            bind_host: "0.0.0.0".into(),
            connect_host: None,
            output_dir: std::env::temp_dir().join("autodebug-slurm"),
            extra_directives: Vec::new(),
        }
    }
}

impl SlurmDeployerBuilder {
    /// The engine executable on the compute node.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Argument templates (`{port}`, `{host}`, `{model}`, `{flags}`, `{gpu}`, ...), as for the local deployer.
    pub fn args_template<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// The simulator as the job: `<program> sim serve --engine ... -- <flags>`.
    pub fn simulator_preset(self, program: impl Into<PathBuf>) -> Self {
        let program = program.into();
        let args = crate::template::simulator_command(&program);
        self.program(program).args_template(args)
    }

    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = path.into();
        self
    }

    pub fn partition(mut self, partition: impl Into<String>) -> Self {
        self.partition = Some(partition.into());
        self
    }

    /// `--time` of the job, e.g. `02:00:00`.
    pub fn time_limit(mut self, limit: impl Into<String>) -> Self {
        self.time_limit = limit.into();
        self
    }

    pub fn cpus_per_task(mut self, cpus: u32) -> Self {
        self.cpus_per_task = cpus.max(1);
        self
    }

    /// `--mem`, e.g. `64G`.
    pub fn mem(mut self, mem: impl Into<String>) -> Self {
        self.mem = Some(mem.into());
        self
    }

    /// Ask for the spec's GPUs with `--gres=gpu:<name>:<count>` (default on; off for CPU-only nodes).
    pub fn gres(mut self, on: bool) -> Self {
        self.gres = on;
        self
    }

    /// Run the spec's image through pyxis (`--container-image`).
    pub fn container(mut self, on: bool) -> Self {
        self.container = on;
        self
    }

    /// The address the engine binds on its node (default `0.0.0.0`).
    pub fn bind_host(mut self, host: impl Into<String>) -> Self {
        self.bind_host = host.into();
        self
    }

    /// Reach the job at this host instead of the node name it reports (e.g. through a tunnel).
    pub fn connect_host(mut self, host: impl Into<String>) -> Self {
        self.connect_host = Some(host.into());
        self
    }

    /// Where job scripts and output files go; must be visible from the compute nodes.
    pub fn output_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.output_dir = dir.into();
        self
    }

    /// Extra `#SBATCH` lines, e.g. `--account=ml`.
    pub fn directive(mut self, directive: impl Into<String>) -> Self {
        self.extra_directives.push(directive.into());
        self
    }

    pub fn build(self) -> Result<SlurmDeployer> {
        let program = self.program.clone().unwrap_or_default();
        let template = CommandTemplate::new(program, self.args.clone(), "slurm deployer")?;
        Ok(SlurmDeployer { template, config: self })
    }
}

/// Deploys the engine as a Slurm job; see the [module docs](self).
///
/// ```
/// use autodebug_core::{Deployer, EngineKind, ServiceSpec};
/// let slurm = autodebug_deploy::SlurmDeployer::builder()
///     .program("python3")
///     .args_template(["-m", "sglang.launch_server", "--model-path", "{model}", "--host", "{host}", "--port", "{port}", "{flags}"])
///     .partition("gpu")
///     .build()
///     .unwrap();
/// let spec = ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat").with_gpu("H100:1");
/// let script = slurm.render(&spec).unwrap().content;
/// assert!(script.contains("#SBATCH --gres=gpu:h100:1"));
/// ```
pub struct SlurmDeployer {
    template: CommandTemplate,
    config: SlurmDeployerBuilder,
}

async fn run(program: &str, args: &[&str]) -> Result<String> {
    run_with(Command::new(program), program, args).await
}

/// `sbatch` hands its own environment to the job (and slurmctld keeps it with the job): it gets
/// the job's secrets (`env`) and none of the other secrets this process holds (an LLM key, a bench
/// token, another cluster's token).
async fn submit(args: &[&str], env: &[(String, String)]) -> Result<String> {
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    run_with(sbatch_command(env, names), "sbatch", args).await
}

/// `sbatch` with `env` set and every other secret-named variable of `inherited` removed.
fn sbatch_command(env: &[(String, String)], inherited: impl Iterator<Item = String>) -> Command {
    let mut command = Command::new("sbatch");
    for name in inherited {
        if secret::is_secret_name(&name) && !env.iter().any(|(n, _)| *n == name) {
            command.env_remove(&name);
        }
    }
    command.envs(env.iter().map(|(n, v)| (n, v)));
    command
}

async fn run_with(mut command: Command, program: &str, args: &[&str]) -> Result<String> {
    let output = command.args(args).stdin(Stdio::null()).output().await.map_err(|e| {
        Error::infrastructure(format!("cannot run `{program}`: {e}; is Slurm installed and on PATH?")).caused_by(e)
    })?;
    if !output.status.success() {
        return Err(Error::deploy(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The first field of `spec` that is not secret-named but that redaction changed in `shown`: its
/// value holds a registered secret's value.
fn plain_field_holding_a_secret(spec: &ServiceSpec, shown: &ServiceSpec) -> Option<String> {
    let env = spec
        .env
        .iter()
        .zip(&shown.env)
        .find(|((name, value), (_, masked))| !secret::is_secret_name(name) && value != masked);
    if let Some(((name, _), _)) = env {
        return Some(format!("env {name}"));
    }
    let flag = spec.flags.iter().find(|(name, value)| {
        !secret::is_secret_name(name) && value.is_some() && shown.flags.get(name).flatten() != *value
    });
    if let Some((name, _)) = flag {
        return Some(format!("flag {name}"));
    }
    if spec.model != shown.model {
        return Some("model".into());
    }
    (spec.image != shown.image).then(|| "image".into())
}

/// The secret values `spec` launches with, under the environment names its script reads them from:
/// secret env entries under their own name, secret flags as [`secret::env_name_for`] names them.
fn job_secrets(spec: &ServiceSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        spec.launch_env().into_iter().filter(|(name, _)| secret::is_secret_name(name)).collect();
    for (name, value) in spec.flags.iter() {
        if let Some(value) = value.filter(|_| secret::is_secret_name(name)) {
            env.push((secret::env_name_for(name), value.to_string()));
        }
    }
    env
}

impl SlurmDeployer {
    pub fn builder() -> SlurmDeployerBuilder {
        SlurmDeployerBuilder::default()
    }

    fn output_path(&self, job_id: &str) -> PathBuf {
        self.config.output_dir.join(format!("autodebug-{job_id}.out"))
    }

    /// The job's state from `scontrol show job` (kept by slurmctld for MinJobAge after the end).
    async fn job_state(&self, job_id: &str) -> Result<String> {
        let text = run("scontrol", &["show", "job", job_id]).await?;
        text.split_whitespace()
            .find_map(|field| field.strip_prefix("JobState="))
            .map(str::to_string)
            .ok_or_else(|| Error::infrastructure(format!("scontrol shows no JobState for job {job_id}")))
    }

    fn read_output(&self, job_id: &str) -> Vec<String> {
        read_output_file(&self.output_path(job_id))
    }

    fn endpoint_line(lines: &[String]) -> Option<(String, u16)> {
        let line = lines.iter().find(|l| l.starts_with(ENDPOINT_MARKER))?;
        let mut host = None;
        let mut port = None;
        for field in line.split_whitespace().skip(1) {
            match field.split_once('=') {
                Some(("host", h)) => host = Some(h.to_string()),
                Some(("port", p)) => port = p.parse().ok(),
                _ => {}
            }
        }
        Some((host?, port?))
    }

    /// The service's URL on its own node: where the engine listens, a wildcard address as loopback.
    fn node_local_url(&self, port: u16) -> String {
        match self.config.bind_host.trim() {
            "" | "0.0.0.0" => format!("http://127.0.0.1:{port}"),
            "::" | "[::]" => format!("http://[::1]:{port}"),
            host if host.contains(':') && !host.starts_with('[') => format!("http://[{host}]:{port}"),
            host => format!("http://{host}:{port}"),
        }
    }

    /// The `srun` arguments that run `command` as a step of job `job` named `step_name`, the
    /// service at `url`: one task on the job's node, sharing the job's CPUs with the engine
    /// (`--overlap`), with no variable but `PATH`, `HOME` and the command's own (whose values
    /// stay in srun's environment).
    fn step_args(&self, job: &str, step_name: &str, command: &BesideCommand, url: &str) -> Vec<String> {
        let mut exported = vec!["PATH".to_string(), "HOME".to_string()];
        exported.extend(command.env.iter().map(|(name, _)| name.clone()));
        let mut args = vec![
            format!("--jobid={job}"),
            "--overlap".into(),
            "--nodes=1".into(),
            "--ntasks=1".into(),
            format!("--job-name={step_name}"),
            format!("--export={}", exported.join(",")),
            format!("--chdir={}", self.config.output_dir.display()),
            "--".into(),
            command.program.to_string_lossy().into_owned(),
        ];
        args.extend(command.args_for(url));
        args
    }

    /// Cancels the steps of `job` named `step_name` still running (a timed-out run's): the job,
    /// the service, goes on.
    async fn cancel_steps(&self, job: &str, step_name: &str) {
        let steps = match run("squeue", &["-h", "-s", "-j", job, "-o", "%i %j"]).await {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(job, error = %e, "could not list the job's steps to cancel a timed-out one");
                return;
            }
        };
        for line in steps.lines() {
            let mut fields = line.split_whitespace();
            if let (Some(step), Some(name)) = (fields.next(), fields.next())
                && name == step_name
                && let Err(e) = run("scancel", &[step]).await
            {
                tracing::warn!(step, error = %e, "could not cancel a timed-out step");
            }
        }
    }

    fn tail(lines: &[String], n: usize) -> String {
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The sbatch script for `spec`: secret values are never in it, the job reads them from its
    /// environment (see [`job_secrets`]), so the file submitted and the artifact in the trail are
    /// the same.
    fn script(&self, spec: &ServiceSpec) -> Result<Artifact> {
        let c = &self.config;
        let mut lines = vec![
            "#!/usr/bin/env bash".to_string(),
            format!("#SBATCH --job-name={}", shell_quote(&format!("autodebug-{}", spec.name))),
            format!("#SBATCH --output={}", c.output_dir.join("autodebug-%j.out").display()),
            "#SBATCH --nodes=1".into(),
            "#SBATCH --ntasks=1".into(),
            format!("#SBATCH --cpus-per-task={}", c.cpus_per_task),
            format!("#SBATCH --time={}", c.time_limit),
        ];
        if let Some(p) = &c.partition {
            lines.push(format!("#SBATCH --partition={p}"));
        }
        if let Some(m) = &c.mem {
            lines.push(format!("#SBATCH --mem={m}"));
        }
        if c.gres
            && let Some((gpu, count)) = spec.resources.gpu_name_and_count()
        {
            lines.push(format!("#SBATCH --gres=gpu:{}:{count}", gpu.to_ascii_lowercase()));
        }
        if c.container
            && let Some(image) = &spec.image
        {
            lines.push(format!("#SBATCH --container-image={image}"));
        }
        lines.extend(c.extra_directives.iter().map(|d| format!("#SBATCH {d}")));
        lines.push("set -euo pipefail".into());
        for (k, v) in &spec.launch_env() {
            if !secret::is_secret_name(k) {
                lines.push(format!("export {k}={}", shell_quote(v)));
            } else {
                lines.push(format!(
                    "export {k}=\"${{{k}:?set {k} in the environment; its value is a secret and is not written here}}\""
                ));
            }
        }
        lines.push("# A free port on this node; the deployer reads it from the line below.".into());
        lines.push(
            "PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind((\"\", 0)); print(s.getsockname()[1])')}".into(),
        );
        lines.push(format!("echo \"{ENDPOINT_MARKER} host=$(hostname) port=$PORT job=${{SLURM_JOB_ID:-none}}\""));
        const SECRET_MARK: &str = "__AUTODEBUG_SECRET__";
        let shown = secret::redact_spec_with(spec, |name| format!("{SECRET_MARK}{}", secret::env_name_for(name)));
        if let Some(field) = plain_field_holding_a_secret(spec, &shown) {
            // Masking it would submit a job that runs with `***` in its command; writing it would
            // put a secret in a file on the cluster. Neither is acceptable, so the user decides.
            return Err(Error::config(
                field.clone(),
                format!(
                    "{field} contains the value of a secret, and the sbatch file is written to disk: pass that \
                     value through a secret-named environment variable (e.g. `HF_TOKEN`) or flag instead"
                ),
            ));
        }
        let args = self.template.expand_with(&shown, &c.bind_host, "__AUTODEBUG_PORT__");
        let mut command =
            CommandTemplate::display(&self.template.program, &args).replace("__AUTODEBUG_PORT__", "\"$PORT\"");
        // A secret flag's value comes from the job's environment (sbatch exports the submitter's).
        while let Some(at) = command.find(SECRET_MARK) {
            let rest = &command[at + SECRET_MARK.len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let reference = format!("\"${{{name}:?set {name} in the environment; its value is a secret}}\"");
            command.replace_range(at..at + SECRET_MARK.len() + name.len(), &reference);
        }
        lines.push(format!("exec {command}"));
        Ok(Artifact { target: "slurm".into(), extension: "sbatch".into(), content: lines.join("\n") + "\n" })
    }
}

#[async_trait]
impl Deployer for SlurmDeployer {
    fn name(&self) -> &str {
        "slurm"
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        self.script(spec)
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        let dir = &self.config.output_dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let script = self.script(spec)?;
        let started_ns = TimeWindow::now_ns();
        let path = dir.join(format!("autodebug-{}-{started_ns}.sbatch", spec.name));
        std::fs::write(&path, &script.content).map_err(|e| Error::io(&path, e))?;
        let path_text = path.to_string_lossy().into_owned();
        let out = submit(&["--parsable", &path_text], &job_secrets(spec)).await?;
        let job_id = out.trim().split(';').next().unwrap_or_default().to_string();
        if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return Err(Error::infrastructure(format!("sbatch printed no job id: `{}`", out.trim())));
        }
        let mut details = BTreeMap::new();
        details.insert("script".to_string(), path_text);
        details.insert("output".to_string(), self.output_path(&job_id).to_string_lossy().into_owned());
        Ok(Deployment { id: job_id, backend: "slurm".into(), spec: spec.clone(), started_ns, details })
    }

    async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint> {
        let started = Instant::now();
        let job = &deployment.id;
        let mut last: String;
        loop {
            let state = self.job_state(job).await?;
            let lines = self.read_output(job);
            if FINAL_STATES.iter().any(|s| state.starts_with(s)) {
                let logs: Vec<LogLine> = lines.iter().map(|text| LogLine { time_ns: 0, text: text.clone() }).collect();
                return Err(Error::Deploy {
                    message: format!(
                        "Slurm job {job} ended ({state}) before it was healthy; last output:\n{}",
                        Self::tail(&lines, 20)
                    ),
                    kind: start_failure_kind(&logs),
                    source: None,
                });
            }
            if state.starts_with("RUNNING")
                && let Some((node, port)) = Self::endpoint_line(&lines)
            {
                let host = self.config.connect_host.clone().unwrap_or(node);
                match probe(&host, port, &self.config.health_path, Duration::from_secs(2)).await {
                    Probe::Status(200) => {
                        let model = deployment.spec.served_model_name();
                        return Ok(Endpoint::new(format!("http://{host}:{port}"), model));
                    }
                    other => last = format!("job {job} on {host}:{port} {other}"),
                }
            } else {
                last = format!("job {job} is {state}");
            }
            if started.elapsed() >= timeout {
                return Err(Error::NotReady {
                    name: deployment.spec.name.clone(),
                    waited_s: started.elapsed().as_secs_f64(),
                    message: last,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
        // The output file carries no per-line times: every line is stamped with the read time,
        // so `since` keeps all of them once the job started after it.
        let now = TimeWindow::now_ns();
        if since_ns.is_some_and(|t| t > now) {
            return Ok(Vec::new());
        }
        Ok(self.read_output(&deployment.id).into_iter().map(|text| LogLine { time_ns: now, text }).collect())
    }

    /// A step of the service's own job, on its node: `srun --jobid=<job> --overlap --ntasks=1
    /// --export=PATH,HOME,<the command's variables> -- <program> <args>`, the URL on the node's
    /// loopback (or the address the engine binds). A step still running at the timeout is cancelled.
    async fn run_beside(&self, deployment: &Deployment, command: &BesideCommand) -> Result<BesideOutput> {
        let job = &deployment.id;
        let lines = self.read_output(job);
        let Some((node, port)) = Self::endpoint_line(&lines) else {
            return Err(Error::infrastructure(format!(
                "Slurm job {job} has not said where it serves (no {ENDPOINT_MARKER} line in {}); wait until it is ready",
                self.output_path(job).display()
            )));
        };
        let url = self.node_local_url(port);
        let step_name = format!("autodebug-bench-{job}-{}", TimeWindow::now_ns());
        let mut srun = std::process::Command::new("srun");
        srun.args(self.step_args(job, &step_name, command, &url));
        for (name, value) in &command.env {
            srun.env(name, value.expose());
        }
        tracing::info!(job, node = %node, step = %step_name, program = %command.program.display(), "running a step beside the engine");
        let described = format!("step `{step_name}` of Slurm job {job} on {node}");
        let output = crate::beside::run(srun, std::path::Path::new("srun"), None, command.timeout, |pid| {
            format!("{described} (`srun --overlap`, pid {pid} here)")
        })
        .await?;
        if output.timed_out {
            self.cancel_steps(job, &step_name).await;
        }
        Ok(output)
    }

    async fn teardown(&self, deployment: &Deployment) -> Result<()> {
        match run("scancel", &[&deployment.id]).await {
            Ok(_) => Ok(()),
            // A job that already ended needs no cancelling: teardown stays idempotent.
            Err(e) => match self.job_state(&deployment.id).await {
                Ok(state) if FINAL_STATES.iter().any(|s| state.starts_with(s)) => Ok(()),
                _ => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The job gets its own secrets through sbatch's environment and none of the others this
    /// process holds; what is not secret is inherited as before.
    #[test]
    fn sbatch_hands_the_job_its_secrets_and_no_other() {
        let mut spec = ServiceSpec::new("s", autodebug_core::EngineKind::Vllm, "m")
            .with_flag("--api-key", Some("canary-engine-key"))
            .with_flag("--max-num-seqs", Some("8"));
        spec.env = vec![("HF_TOKEN".into(), "canary-hf".into()), ("OMP_NUM_THREADS".into(), "2".into())];
        let secrets = job_secrets(&spec);
        assert_eq!(
            secrets,
            vec![("HF_TOKEN".to_string(), "canary-hf".to_string()), ("API_KEY".into(), "canary-engine-key".into())]
        );
        let inherited = ["PATH", "OPENAI_API_KEY", "AUTODEBUG_BENCH_TOKEN", "HF_TOKEN", "HOME"].map(String::from);
        let command = sbatch_command(&secrets, inherited.into_iter());
        let envs: std::collections::BTreeMap<String, Option<String>> = command
            .as_std()
            .get_envs()
            .map(|(n, v)| (n.to_string_lossy().into_owned(), v.map(|v| v.to_string_lossy().into_owned())))
            .collect();
        assert_eq!(envs["OPENAI_API_KEY"], None, "another secret of this process is removed");
        assert_eq!(envs["AUTODEBUG_BENCH_TOKEN"], None);
        assert_eq!(envs["HF_TOKEN"].as_deref(), Some("canary-hf"));
        assert_eq!(envs["API_KEY"].as_deref(), Some("canary-engine-key"));
        assert!(!envs.contains_key("PATH") && !envs.contains_key("HOME"), "the rest is inherited untouched");
        let slurm = SlurmDeployer::builder().program("engine").args_template(["{flags}"]).build().unwrap();
        let script = slurm.script(&spec).unwrap().content;
        assert!(!script.contains("canary"), "the submitted script holds no secret value:\n{script}");
        assert!(script.contains("${API_KEY:?") && script.contains("${HF_TOKEN:?"), "{script}");
    }

    /// A secret's value inside a plain field can be neither masked (the job would run with `***`)
    /// nor written (the file is on disk): the render is refused, naming the field.
    #[test]
    fn a_plain_flag_holding_a_secret_value_is_refused_not_masked() {
        let canary = "canary-slurm-plain-7d21";
        let slurm = SlurmDeployer::builder().program("engine").args_template(["{flags}"]).build().unwrap();
        let spec = ServiceSpec::new("s", autodebug_core::EngineKind::Vllm, "m")
            .with_flag("--api-key", Some(canary))
            .with_flag("--served-model-name", Some(&format!("team-{canary}")));
        let error = slurm.script(&spec).unwrap_err().to_string();
        assert!(error.contains("flag --served-model-name") && error.contains("secret"), "{error}");
        assert!(!error.contains(canary), "{error}");
        let clean = ServiceSpec::new("s", autodebug_core::EngineKind::Vllm, "m")
            .with_flag("--api-key", Some(canary))
            .with_flag("--served-model-name", Some("team"));
        let script = slurm.script(&clean).unwrap().content;
        assert!(script.contains("team") && !script.contains("***"), "{script}");
    }

    #[test]
    fn a_step_beside_the_service_shares_its_job_and_names_only_the_token_variable() {
        use autodebug_core::Secret;
        let canary = "canary-srun-5e1a77";
        let slurm = SlurmDeployer::builder().program("engine").output_dir("/shared/jobs").build().unwrap();
        let command = BesideCommand {
            program: "/shared/bin/autodebug".into(),
            args: vec!["bench".into(), "--url".into(), autodebug_core::beside::SERVICE_URL.into()],
            env: vec![("AUTODEBUG_BENCH_TOKEN".into(), Secret::new(canary))],
            timeout: Duration::from_secs(5),
        };
        let args = slurm.step_args("17", "autodebug-bench-17-1", &command, &slurm.node_local_url(8000));
        assert_eq!(
            args.join(" "),
            "--jobid=17 --overlap --nodes=1 --ntasks=1 --job-name=autodebug-bench-17-1 \
             --export=PATH,HOME,AUTODEBUG_BENCH_TOKEN --chdir=/shared/jobs -- /shared/bin/autodebug bench --url http://127.0.0.1:8000"
        );
        assert!(!args.iter().any(|a| a.contains(canary)));
        let bound = SlurmDeployer::builder().program("engine").bind_host("10.0.0.7").build().unwrap();
        assert_eq!(bound.node_local_url(9), "http://10.0.0.7:9");
        let v6 = SlurmDeployer::builder().program("engine").bind_host("::").build().unwrap();
        assert_eq!(v6.node_local_url(9), "http://[::1]:9");
    }

    #[test]
    fn a_job_output_of_endless_lines_and_an_endless_line_is_read_in_bounded_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slurm-1.out");
        let mut text = format!("{ENDPOINT_MARKER} host=n1 port=5\n");
        for i in 0..20_000 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str(&"x".repeat(crate::MAX_LINE_BYTES * 8));
        std::fs::write(&path, text).unwrap();
        let lines = read_output_file(&path);
        assert_eq!(lines.len(), OUTPUT_HEAD_LINES + 1 + OUTPUT_TAIL_LINES);
        assert_eq!(SlurmDeployer::endpoint_line(&lines), Some(("n1".to_string(), 5)));
        assert!(lines[OUTPUT_HEAD_LINES].contains("lines of job output skipped"), "{}", lines[OUTPUT_HEAD_LINES]);
        assert_eq!(lines[lines.len() - 2], "line 19999");
        let last = lines.last().unwrap();
        assert!(last.len() < crate::MAX_LINE_BYTES + 64 && last.contains("more bytes cut"), "{}", last.len());
        assert!(read_output_file(&dir.path().join("missing.out")).is_empty());
    }
}
