//! [`LocalDeployer`]: runs any engine command as a child process of this program.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autodebug_core::beside::{BesideCommand, BesideOutput};
use autodebug_core::failure::start_failure_kind;
use autodebug_core::{
    Artifact, Deployer, Deployment, Endpoint, Error, ErrorKind, LogLine, Result, Secret, ServiceSpec, TimeWindow,
    async_trait,
};

use crate::health::{Probe, probe};
use crate::logbuf::DEFAULT_LOG_CAPACITY;
use crate::process::{ManagedProcess, lock};
use crate::template::{CommandTemplate, EnvVar, is_env_name, looks_secret, render_script, split_shell_words};

/// The backend name, also used as `Deployment.backend` and the trail file prefix.
pub const BACKEND: &str = "local";

/// How often `wait_ready` asks the health endpoint.
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long one health request may take before it counts as "not ready yet".
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Log lines quoted in an error about a failed start.
pub const QUOTED_LOG_LINES: usize = 20;

/// Default wait between SIGTERM and SIGKILL on teardown.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// Finished deployments whose logs stay readable after teardown; older ones are forgotten.
pub const DEFAULT_RETAINED_FINISHED: usize = 16;

/// Environment variables read by [`LocalDeployer::from_env`].
pub mod env_vars {
    /// `simulator` or `llama-server`: start from that preset.
    pub const PRESET: &str = "AUTODEBUG_LOCAL_PRESET";
    /// The engine executable.
    pub const PROGRAM: &str = "AUTODEBUG_LOCAL_PROGRAM";
    /// Argument templates as one shell-quoted line, e.g. `serve --port {port} {flags}`.
    pub const ARGS: &str = "AUTODEBUG_LOCAL_ARGS";
    pub const HOST: &str = "AUTODEBUG_LOCAL_HOST";
    pub const HEALTH_PATH: &str = "AUTODEBUG_LOCAL_HEALTH_PATH";
    pub const WORKING_DIR: &str = "AUTODEBUG_LOCAL_WORKDIR";
    pub const LOG_FILE: &str = "AUTODEBUG_LOCAL_LOG_FILE";
    /// Seconds between SIGTERM and SIGKILL on teardown.
    pub const STOP_GRACE_S: &str = "AUTODEBUG_LOCAL_STOP_GRACE_S";
}

#[derive(Debug)]
struct Config {
    template: CommandTemplate,
    health_path: String,
    host: String,
    env: Vec<EnvVar>,
    working_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    log_capacity: usize,
    stop_grace: Duration,
    retained_finished: usize,
}

/// Builds a [`LocalDeployer`]; see [`LocalDeployer::builder`].
#[derive(Debug, Clone)]
pub struct LocalDeployerBuilder {
    program: Option<PathBuf>,
    args: Vec<String>,
    health_path: String,
    host: String,
    env: Vec<EnvVar>,
    working_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    log_capacity: usize,
    stop_grace: Duration,
    retained_finished: usize,
    /// Where the settings came from, for error messages.
    source: String,
}

impl Default for LocalDeployerBuilder {
    fn default() -> Self {
        LocalDeployerBuilder {
            program: None,
            args: Vec::new(),
            health_path: "/health".into(),
            host: "127.0.0.1".into(),
            env: Vec::new(),
            working_dir: None,
            log_file: None,
            log_capacity: DEFAULT_LOG_CAPACITY,
            stop_grace: DEFAULT_STOP_GRACE,
            retained_finished: DEFAULT_RETAINED_FINISHED,
            source: "LocalDeployer::builder()".into(),
        }
    }
}

impl LocalDeployerBuilder {
    /// The engine executable (a path, or a name looked up on `PATH`).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Argument templates; see [`CommandTemplate`] for the placeholders.
    pub fn args_template<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Path polled for HTTP 200 by `wait_ready` (default `/health`).
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.health_path = if path.starts_with('/') { path } else { format!("/{path}") };
        self
    }

    /// Address the engine is told to listen on (default `127.0.0.1`).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// An environment variable for the engine (on top of this process's environment and
    /// `spec.env`). Names that look like credentials are kept out of rendered scripts.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        let secret = looks_secret(&name);
        let value = if secret { Secret::new(value.into()) } else { Secret::not_secret(value.into()) };
        self.env.push(EnvVar { name, value, secret });
        self
    }

    /// A credential for the engine's environment: passed to the process, never rendered or logged.
    pub fn secret_env(mut self, name: impl Into<String>, value: Secret) -> Self {
        self.env.push(EnvVar { name: name.into(), value, secret: true });
        self
    }

    /// Directory the engine runs in (default: this process's).
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Also append every output line to this file (created if missing).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Output lines kept in memory per deployment (default 50 000).
    pub fn log_capacity(mut self, lines: usize) -> Self {
        self.log_capacity = lines.max(1);
        self
    }

    /// Wait between SIGTERM and SIGKILL on teardown (default 5 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Torn-down deployments whose logs stay readable (default 16).
    pub fn retained_finished(mut self, count: usize) -> Self {
        self.retained_finished = count;
        self
    }

    /// The autodebug simulator: `sim serve --engine {engine} --gpu {gpu} --model {model}
    /// --host {host} --port {port} -- {flags}`.
    ///
    /// `program` is the `autodebug` binary; when its file name is `autodebug-sim` (the
    /// simulator's own binary) the `sim serve` subcommand is left out.
    pub fn simulator_preset(self, program: impl Into<PathBuf>) -> Self {
        let program = program.into();
        let args = crate::template::simulator_command(&program);
        self.program(program).args_template(args).health_path("/health")
    }

    /// llama.cpp's `llama-server -m {model} --host {host} --port {port} --metrics {flags}`.
    pub fn llama_server_preset(self, program: impl Into<PathBuf>) -> Self {
        self.program(program)
            .args_template(["-m", "{model}", "--host", "{host}", "--port", "{port}", "--metrics", "{flags}"])
            .health_path("/health")
    }

    /// Checks the settings and builds the deployer.
    pub fn build(self) -> Result<LocalDeployer> {
        let program = self.program.clone().ok_or_else(|| {
            Error::config(&self.source, format!("no engine program: call .program(path) or set {}", env_vars::PROGRAM))
        })?;
        let template = CommandTemplate::new(program, self.args.clone(), &self.source)?;
        if self.host.trim().is_empty() {
            return Err(Error::config(format!("{}: host", self.source), "empty host; use 127.0.0.1"));
        }
        if let Some(bad) = self.env.iter().find(|v| !is_env_name(&v.name)) {
            return Err(Error::config(
                format!("{}: env {}", self.source, bad.name),
                "not a valid environment variable name (letters, digits and `_`, not starting with a digit)",
            ));
        }
        Ok(self.finish(template))
    }

    fn finish(self, template: CommandTemplate) -> LocalDeployer {
        LocalDeployer {
            config: Arc::new(Config {
                template,
                health_path: self.health_path,
                host: self.host,
                env: self.env,
                working_dir: self.working_dir,
                log_file: self.log_file,
                log_capacity: self.log_capacity,
                stop_grace: self.stop_grace,
                retained_finished: self.retained_finished,
            }),
            registry: Mutex::new(Registry::default()),
        }
    }

    /// Reads the settings from `lookup` (the environment in [`LocalDeployer::from_env`]).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut builder = LocalDeployerBuilder { source: "environment".into(), ..Default::default() };
        let program = get(env_vars::PROGRAM);
        if let Some(preset) = get(env_vars::PRESET) {
            let program = program.clone().ok_or_else(|| {
                Error::config(env_vars::PROGRAM, format!("{}={preset} needs the program path too", env_vars::PRESET))
            })?;
            builder = match preset.trim() {
                "simulator" | "sim" => builder.simulator_preset(program),
                "llama-server" | "llama_server" | "llamacpp" => builder.llama_server_preset(program),
                other => {
                    return Err(Error::config(
                        env_vars::PRESET,
                        format!("unknown preset `{other}`: use `simulator` or `llama-server`, or leave it unset"),
                    ));
                }
            };
        } else if let Some(program) = program {
            builder = builder.program(program);
        }
        if let Some(args) = get(env_vars::ARGS) {
            let words = split_shell_words(&args).map_err(|why| Error::config(env_vars::ARGS, why))?;
            builder = builder.args_template(words);
        }
        if let Some(host) = get(env_vars::HOST) {
            builder = builder.host(host.trim());
        }
        if let Some(path) = get(env_vars::HEALTH_PATH) {
            builder = builder.health_path(path.trim());
        }
        if let Some(dir) = get(env_vars::WORKING_DIR) {
            builder = builder.working_dir(dir);
        }
        if let Some(file) = get(env_vars::LOG_FILE) {
            builder = builder.log_file(file);
        }
        if let Some(grace) = get(env_vars::STOP_GRACE_S) {
            let seconds: f64 =
                grace.trim().parse().ok().filter(|s: &f64| s.is_finite() && *s >= 0.0).ok_or_else(|| {
                    Error::config(env_vars::STOP_GRACE_S, format!("`{grace}` is not a number of seconds"))
                })?;
            builder = builder.stop_grace(Duration::from_secs_f64(seconds));
        }
        Ok(builder)
    }
}

/// One deployment this deployer started.
struct Entry {
    process: Arc<ManagedProcess>,
    /// The host `wait_ready` connects to (a wildcard listen address becomes loopback).
    connect_host: String,
    port: u16,
    command: String,
    served_model: String,
    torn_down: bool,
}

#[derive(Default)]
struct Registry {
    entries: HashMap<String, Arc<Mutex<Entry>>>,
    /// Torn-down deployment ids, oldest first.
    finished: VecDeque<String>,
}

/// Runs an engine as a child process on this machine.
///
/// Each child gets its own process group and `PR_SET_PDEATHSIG = SIGKILL`, so it dies with
/// this process even when this process is SIGKILLed; teardown signals the whole group
/// (SIGTERM, a grace period, SIGKILL) and reaps it; dropping the deployer stops every child
/// it still owns. Output lines are kept (bounded) for [`Deployer::logs`] and optionally
/// appended to a log file.
///
/// Not covered: grandchildren that leave the process group (`setsid`) outlive a SIGKILL of
/// this process unless the engine itself ties them to their parent (SGLang and vLLM do).
pub struct LocalDeployer {
    config: Arc<Config>,
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for LocalDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = lock(&self.registry).entries.len();
        f.debug_struct("LocalDeployer").field("config", &self.config).field("deployments", &live).finish()
    }
}

impl LocalDeployer {
    pub fn builder() -> LocalDeployerBuilder {
        LocalDeployerBuilder::default()
    }

    /// The settings from `AUTODEBUG_LOCAL_*` environment variables (see [`env_vars`]).
    pub fn from_env() -> Result<Self> {
        LocalDeployerBuilder::from_lookup(|name| std::env::var(name).ok())?.build()
    }

    /// The simulator preset (see [`LocalDeployerBuilder::simulator_preset`]).
    pub fn simulator(program: PathBuf) -> Self {
        let builder = Self::builder().simulator_preset(program);
        let template =
            CommandTemplate { program: builder.program.clone().unwrap_or_default(), args: builder.args.clone() };
        builder.finish(template)
    }

    /// The llama.cpp `llama-server` preset (see [`LocalDeployerBuilder::llama_server_preset`]).
    pub fn llama_server(program: PathBuf) -> Self {
        let builder = Self::builder().llama_server_preset(program);
        let template =
            CommandTemplate { program: builder.program.clone().unwrap_or_default(), args: builder.args.clone() };
        builder.finish(template)
    }

    /// The command this deployer would run for `spec` on `port` (shell-quoted, for display).
    pub fn command_line(&self, spec: &ServiceSpec, port: u16) -> String {
        redacted_command(&self.config.template.program, &self.config.template.expand(spec, &self.config.host, port))
    }

    /// Process ids of deployments not yet torn down.
    pub fn running_pids(&self) -> Vec<u32> {
        let entries: Vec<_> = lock(&self.registry).entries.values().cloned().collect();
        entries
            .iter()
            .filter_map(|e| {
                let e = lock(e);
                (!e.torn_down).then(|| e.process.pid())
            })
            .collect()
    }

    /// Tears down every deployment this deployer still runs, concurrently.
    pub async fn teardown_all(&self) {
        let live: Vec<Arc<Mutex<Entry>>> = lock(&self.registry).entries.values().cloned().collect();
        let mut stops = tokio::task::JoinSet::new();
        for entry in live {
            let process = {
                let mut e = lock(&entry);
                if e.torn_down {
                    continue;
                }
                e.torn_down = true;
                e.process.clone()
            };
            let grace = self.config.stop_grace;
            stops.spawn(async move { process.stop(grace).await });
        }
        while let Some(joined) = stops.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "a teardown task failed");
            }
        }
        let ids: Vec<String> = lock(&self.registry).entries.keys().cloned().collect();
        for id in ids {
            self.mark_finished(&id);
        }
    }

    fn entry(&self, deployment: &Deployment) -> Option<Arc<Mutex<Entry>>> {
        lock(&self.registry).entries.get(&deployment.id).cloned()
    }

    fn unknown(&self, deployment: &Deployment, what: &str) -> Error {
        Error::infrastructure(format!(
            "{what}: deployment {} (service `{}`) is not one this local deployer runs; it keeps the logs of \
             only the last {} torn-down deployments (set a log file to keep all output)",
            deployment.id, deployment.spec.name, self.config.retained_finished
        ))
    }

    fn mark_finished(&self, id: &str) {
        let mut registry = lock(&self.registry);
        if !registry.finished.iter().any(|f| f == id) {
            registry.finished.push_back(id.to_string());
        }
        while registry.finished.len() > self.config.retained_finished {
            if let Some(old) = registry.finished.pop_front() {
                registry.entries.remove(&old);
            }
        }
    }

    fn open_log_file(&self) -> Result<Option<Arc<Mutex<File>>>> {
        let Some(path) = &self.config.log_file else { return Ok(None) };
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(Some(Arc::new(Mutex::new(file))))
    }
}

/// Picks a port that is free right now on `host` (bind to port 0, read it, release it).
fn free_port(host: &str) -> Result<u16> {
    let listener = std::net::TcpListener::bind((host, 0)).map_err(|e| {
        Error::deploy(format!("could not find a free port on host `{host}`: {e}; check the deployer's host setting"))
            .caused_by(e)
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::deploy(format!("could not read the free port on `{host}`: {e}")).caused_by(e))
}

/// Where to connect to reach an engine listening on `host`.
fn connect_host(host: &str) -> String {
    match host {
        "0.0.0.0" | "" => "127.0.0.1".into(),
        "::" | "[::]" => "::1".into(),
        other => other.trim_start_matches('[').trim_end_matches(']').to_string(),
    }
}

fn base_url(host: &str, port: u16) -> String {
    if host.contains(':') { format!("http://[{host}]:{port}") } else { format!("http://{host}:{port}") }
}

/// The command for display, with values of secret flags (`--api-key`) and registered secret values
/// replaced; knob values (`--max-num-batched-tokens 4096`) stay readable.
fn redacted_command(program: &Path, args: &[String]) -> String {
    CommandTemplate::display(program, &autodebug_core::secret::redact_args(args))
}

fn quote_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        "(it printed nothing)".into()
    } else {
        lines.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
    }
}

#[async_trait]
impl Deployer for LocalDeployer {
    fn name(&self) -> &str {
        BACKEND
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        render_script(
            &self.config.template,
            spec,
            &self.config.host,
            &self.config.env,
            self.config.working_dir.as_deref(),
        )
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        let config = &self.config;
        let port = free_port(&config.host)?;
        let args = config.template.expand(spec, &config.host, port);
        let shown = redacted_command(&config.template.program, &args);
        let mut command = Command::new(&config.template.program);
        command.args(&args);
        for (name, value) in &spec.launch_env() {
            command.env(name, value);
        }
        for var in &config.env {
            command.env(&var.name, var.value.expose());
        }
        if let Some(dir) = &config.working_dir {
            command.current_dir(dir);
        }
        let log_file = self.open_log_file()?;
        if let Some(file) = &log_file {
            use std::io::Write;
            let header = format!(
                "==> autodebug-deploy: starting `{}` at {}: {shown}",
                spec.name,
                TimeWindow::format_iso(TimeWindow::now_ns())
            );
            if let Err(e) = writeln!(lock(file), "{header}") {
                tracing::warn!(error = %e, "could not write to the log file");
            }
        }
        let started_ns = TimeWindow::now_ns();
        let process = ManagedProcess::spawn(command, config.log_capacity, log_file).map_err(|e| {
            let program = config.template.program.display();
            let (hint, kind) = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    (" (no such program: give its full path, or put it on PATH)", ErrorKind::Infrastructure)
                }
                std::io::ErrorKind::PermissionDenied => {
                    (" (not executable: check its permissions)", ErrorKind::Infrastructure)
                }
                _ => ("", ErrorKind::Transient),
            };
            let dir = config.working_dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default();
            let message = format!("could not start `{program}`{dir}: {e}{hint}");
            Error::Deploy { message, kind, source: Some(e.into()) }
        })?;
        let pid = process.pid();
        tracing::info!(pid, port, service = %spec.name, command = %shown, "started engine");
        let host = connect_host(&config.host);
        let health_url = format!("{}{}", base_url(&host, port), config.health_path);
        let mut details = BTreeMap::new();
        details.insert("pid".into(), pid.to_string());
        details.insert("port".into(), port.to_string());
        details.insert("host".into(), config.host.clone());
        details.insert("command".into(), shown.clone());
        details.insert("health_url".into(), health_url);
        if let Some(path) = &config.log_file {
            details.insert("log_file".into(), path.display().to_string());
        }
        let id = pid.to_string();
        let entry = Entry {
            process,
            connect_host: host,
            port,
            command: shown,
            served_model: spec.served_model_name().to_string(),
            torn_down: false,
        };
        {
            let mut registry = lock(&self.registry);
            // A reused pid replaces a long-finished deployment's record.
            registry.finished.retain(|f| f != &id);
            registry.entries.insert(id.clone(), Arc::new(Mutex::new(entry)));
        }
        Ok(Deployment { id, backend: BACKEND.into(), spec: spec.clone(), started_ns, details })
    }

    async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint> {
        let entry = self.entry(deployment).ok_or_else(|| self.unknown(deployment, "cannot wait for readiness"))?;
        let (process, host, port, command, served_model, torn_down) = {
            let e = lock(&entry);
            (e.process.clone(), e.connect_host.clone(), e.port, e.command.clone(), e.served_model.clone(), e.torn_down)
        };
        let url = format!("{}{}", base_url(&host, port), self.config.health_path);
        if torn_down {
            return Err(Error::infrastructure(format!(
                "deployment {} (`{}`) was torn down; deploy it again",
                deployment.id, deployment.spec.name
            )));
        }
        let started = Instant::now();
        let deadline = started + timeout;
        let mut last_probe;
        // Bounded by the deadline: each round sleeps HEALTH_POLL_INTERVAL or less.
        loop {
            if let Some(status) = process.exit_status() {
                process.drain_output(Duration::from_secs(1)).await;
                let why = if process.is_stopping() { "was torn down" } else { "exited" };
                let tail = process.log_tail(QUOTED_LOG_LINES);
                // The root cause can sit well above the traceback's last lines.
                let logs: Vec<LogLine> =
                    process.log_tail(500).into_iter().map(|text| LogLine { time_ns: 0, text }).collect();
                return Err(Error::Deploy {
                    message: format!(
                        "`{command}` (pid {}) {why} with {status} before {url} answered 200, after {:.1}s; its last output:\n{}",
                        process.pid(),
                        started.elapsed().as_secs_f64(),
                        quote_tail(&tail)
                    ),
                    kind: start_failure_kind(&logs),
                    source: None,
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            last_probe = probe(&host, port, &self.config.health_path, remaining.min(HEALTH_REQUEST_TIMEOUT)).await;
            if last_probe == Probe::Status(200) {
                tracing::info!(pid = process.pid(), port, waited_s = started.elapsed().as_secs_f64(), "engine ready");
                return Ok(Endpoint::new(base_url(&host, port), served_model));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            tokio::time::sleep(remaining.min(HEALTH_POLL_INTERVAL)).await;
        }
        Err(Error::NotReady {
            name: deployment.spec.name.clone(),
            waited_s: started.elapsed().as_secs_f64(),
            message: format!(
                "GET {url} last {last_probe}; `{command}` (pid {}) is still running (tear it down, or wait longer); its last output:\n{}",
                process.pid(),
                quote_tail(&process.log_tail(QUOTED_LOG_LINES))
            ),
        })
    }

    async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
        let entry = self.entry(deployment).ok_or_else(|| self.unknown(deployment, "no logs"))?;
        let process = lock(&entry).process.clone();
        Ok(process.logs_since(since_ns))
    }

    async fn teardown(&self, deployment: &Deployment) -> Result<()> {
        let Some(entry) = self.entry(deployment) else {
            tracing::debug!(id = %deployment.id, "teardown of a deployment this deployer no longer tracks: nothing to do");
            return Ok(());
        };
        let process = {
            let mut e = lock(&entry);
            e.torn_down = true;
            e.process.clone()
        };
        process.stop(self.config.stop_grace).await;
        process.drain_output(Duration::from_secs(1)).await;
        tracing::info!(
            pid = process.pid(),
            status = ?process.exit_status(),
            dropped_lines = process.dropped_lines(),
            "engine stopped"
        );
        self.mark_finished(&deployment.id);
        Ok(())
    }

    /// A child process of this program, on this machine: the engine's own machine. It gets this
    /// process's environment plus the command's, and the engine's URL on loopback.
    async fn run_beside(&self, deployment: &Deployment, command: &BesideCommand) -> Result<BesideOutput> {
        let entry = self.entry(deployment).ok_or_else(|| self.unknown(deployment, "cannot run beside it"))?;
        let (url, engine_pid, torn_down) = {
            let e = lock(&entry);
            (base_url(&e.connect_host, e.port), e.process.pid(), e.torn_down)
        };
        if torn_down {
            return Err(Error::infrastructure(format!(
                "deployment {} (`{}`) was torn down; nothing runs to benchmark beside",
                deployment.id, deployment.spec.name
            )));
        }
        let mut child = Command::new(&command.program);
        child.args(command.args_for(&url));
        for (name, value) in &command.env {
            child.env(name, value.expose());
        }
        let program = command.program.display().to_string();
        tracing::info!(program = %program, engine_pid, url = %url, "running beside the engine");
        crate::beside::run(child, &command.program, None, command.timeout, |pid| {
            format!("child pid {pid} on this machine, beside engine pid {engine_pid}")
        })
        .await
    }
}

impl Drop for LocalDeployer {
    /// Stops every child still running: SIGTERM to all groups, one shared grace period
    /// (at most 5 s, because this runs on Ctrl-C), then SIGKILL and reap.
    fn drop(&mut self) {
        let registry = std::mem::take(&mut *lock(&self.registry));
        let live: Vec<Arc<ManagedProcess>> =
            registry.entries.values().map(|e| lock(e).process.clone()).filter(|p| p.exit_status().is_none()).collect();
        if live.is_empty() {
            return;
        }
        tracing::info!(count = live.len(), "stopping engines still running");
        for process in &live {
            process.request_stop();
        }
        let deadline = Instant::now() + self.config.stop_grace.min(DEFAULT_STOP_GRACE);
        for process in &live {
            process.finish_blocking(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use autodebug_core::EngineKind;

    use super::*;

    #[test]
    fn builder_refuses_missing_program_and_bad_env() {
        let err = LocalDeployer::builder().build().unwrap_err().to_string();
        assert!(err.contains(env_vars::PROGRAM), "{err}");
        let err = LocalDeployer::builder().program("x").env("A B", "1").build().unwrap_err().to_string();
        assert!(err.contains("A B"), "{err}");
    }

    #[test]
    fn from_lookup_reads_every_setting() {
        let vars: HashMap<&str, &str> = [
            (env_vars::PROGRAM, "/usr/bin/engine"),
            (env_vars::ARGS, "serve --port {port} --name 'my model' {flags}"),
            (env_vars::HOST, "0.0.0.0"),
            (env_vars::HEALTH_PATH, "ready"),
            (env_vars::STOP_GRACE_S, "1.5"),
            (env_vars::LOG_FILE, "/tmp/engine.log"),
        ]
        .into();
        let b = LocalDeployerBuilder::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(b.program.as_deref(), Some(Path::new("/usr/bin/engine")));
        assert_eq!(b.args, ["serve", "--port", "{port}", "--name", "my model", "{flags}"]);
        assert_eq!(b.host, "0.0.0.0");
        assert_eq!(b.health_path, "/ready");
        assert_eq!(b.stop_grace, Duration::from_millis(1500));
        assert_eq!(b.log_file.as_deref(), Some(Path::new("/tmp/engine.log")));
    }

    #[test]
    fn from_lookup_names_the_bad_variable() {
        let check = |vars: &[(&str, &str)], expect: &str| {
            let map: HashMap<&str, &str> = vars.iter().copied().collect();
            let err = LocalDeployerBuilder::from_lookup(|k| map.get(k).map(|v| v.to_string()))
                .and_then(|b| b.build())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "expected `{expect}` in: {err}");
        };
        check(&[], env_vars::PROGRAM);
        check(&[(env_vars::PRESET, "simulator")], env_vars::PROGRAM);
        check(&[(env_vars::PROGRAM, "x"), (env_vars::PRESET, "tgi")], env_vars::PRESET);
        check(&[(env_vars::PROGRAM, "x"), (env_vars::ARGS, "'open")], env_vars::ARGS);
        check(&[(env_vars::PROGRAM, "x"), (env_vars::STOP_GRACE_S, "soon")], env_vars::STOP_GRACE_S);
    }

    #[test]
    fn presets_build_the_documented_commands() {
        let spec = ServiceSpec::new("s", EngineKind::Sglang, "qwen1.5-0.5b")
            .with_gpu("A100:2")
            .with_flag("--schedule-policy", Some("lpm"));
        let sim = LocalDeployer::simulator("/bin/autodebug".into());
        assert_eq!(
            sim.command_line(&spec, 4000),
            "/bin/autodebug sim serve --engine sglang --gpu A100 --model qwen1.5-0.5b --host 127.0.0.1 --port 4000 -- --schedule-policy lpm"
        );
        let standalone = LocalDeployer::simulator("/t/autodebug-sim".into());
        assert!(standalone.command_line(&spec, 1).starts_with("/t/autodebug-sim --engine sglang"));
        let llama = LocalDeployer::llama_server("llama-server".into());
        assert_eq!(
            llama.command_line(&spec, 5),
            "llama-server -m qwen1.5-0.5b --host 127.0.0.1 --port 5 --metrics --schedule-policy lpm"
        );
    }

    #[test]
    fn secret_flag_values_are_redacted() {
        let shown = redacted_command(
            Path::new("e"),
            &["--api-key".into(), "sk-1".into(), "--hf-token=abc".into(), "--port".into(), "1".into()],
        );
        assert_eq!(shown, "e --api-key '***' '--hf-token=***' --port 1");
        let knob = redacted_command(Path::new("e"), &["--max-num-batched-tokens".into(), "4096".into()]);
        assert_eq!(knob, "e --max-num-batched-tokens 4096", "a knob counting tokens is not a secret");
    }

    #[test]
    fn wildcard_hosts_are_reached_on_loopback() {
        assert_eq!(connect_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(base_url(&connect_host("::"), 8), "http://[::1]:8");
        assert_eq!(base_url("localhost", 8), "http://localhost:8");
    }
}
