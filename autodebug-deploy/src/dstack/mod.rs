//! The dstack deployer: renders the user's dstack service configuration with the planned knobs
//! and applies it through the dstack server's REST API (the API the dstack CLI itself uses).
//!
//! - [`DstackDeployer::base_spec_from_file`] reads a dstack YAML (`type: service`) into a
//!   [`ServiceSpec`]: the engine and launch flags from the command, the whole file as `base`.
//! - `render` writes that file back with only the planned knobs changed (launch flags inside
//!   `commands`, resources, image, env); [`DstackDeployer::render_only`] needs no server.
//! - `deploy` posts `runs/get_plan` then `runs/apply`; `wait_ready` polls `runs/get` until the run
//!   is `running` and every probe's `success_streak >= ready_after`, or fails with dstack's own
//!   reason (`no fleets`, `termination_reason`, `status_message`); `logs` waits (bounded) until
//!   the server has pulled a running job's output from its runner after the call — a pass of the
//!   job pipeline (not the run pipeline's, which pulls nothing) that reached the runner, told by
//!   the job's reachability events — then reads `logs/poll`;
//!   `teardown` posts `runs/stop` and waits (bounded) until the run has finished.
//!
//! # Parallel rounds (`parallel: K`)
//!
//! Each slot's spec is named `<service name>-s<slot>` (1-based), and that name is the dstack run
//! name, so each slot is its own run with its own service URL through the server's proxy
//! (`/proxy/services/<project>/<run name>/`), its own log (`logs/poll` by run name and job
//! submission) and its own teardown. A run name must match `^[a-z][a-z0-9-]{1,40}$`
//! (`validate_dstack_resource_name`, dstack `_internal/core/services/__init__.py`), so a service
//! name used with parallel rounds may have at most 38 characters; `deploy` refuses a longer one
//! before anything is submitted.
//!
//! The template's port is kept as the user wrote it (`port:` and the launch command's `--port`),
//! for every slot: on dstack 0.22.5 two jobs never share a network namespace, so the same
//! container port cannot collide.
//! - A job that takes a whole instance runs with host networking; a job on part of an instance
//!   (the fleet splits it into `blocks`) runs in a bridge network
//!   (`_prepare_job_runtime_data`, dstack `_internal/server/background/pipeline_tasks/
//!   jobs_submitted.py`: host only when `offer.blocks == offer.total_blocks`, whatever
//!   `DSTACK_SERVER_JOB_NETWORK_MODE` says), where the shim publishes each container port on an
//!   ephemeral port of the host's 127.0.0.1 (`bindPorts`, dstack `runner/internal/shim/docker.go`).
//! - A host is one instance of one fleet: an SSH host already in a fleet cannot be added to
//!   another (`_check_ssh_hosts_not_yet_added`, `_internal/server/services/fleets.py`), and a job
//!   on a whole instance keeps it busy until it finishes. Two host-network jobs on one machine
//!   could not run anyway: each one's runner listens on the host's port 10999
//!   (`RunnerHTTPPort`, `runner/internal/common/consts/consts.go`).
//!
//! So K slots need K free job places in the project's fleets: K instances, or instances split
//! with `blocks` (an SSH fleet's `blocks: K`, or per host). Without them a slot's run fails with
//! dstack's `no capacity`, which the iteration records with what to change.
//!
//! Every path tears a slot's run down: the session stops it after its measurement, a failed start
//! or a failed benchmark; a run that `runs/apply` created although the call failed is stopped
//! here when it carries this process's owner mark; and a run left by a killed autodebug is
//! stopped by the next `deploy` of its name.
//!
//! # Benchmarks beside the service (`bench_beside:`)
//!
//! `run_beside` runs the command inside the service's own job container, as a dstack user would
//! reach it: `dstack attach <run>`, then `ssh <run>` (details in the `beside` module's source).
//! It needs the dstack CLI (`cli`, default `dstack` on `PATH`) and `ssh` here, and the program
//! (`autodebug`) inside the container, e.g. on an instance volume the service mounts.
//!
//! Server, project and token come from `DSTACK_SERVER_URL`/`DSTACK_TOKEN`/`DSTACK_PROJECT` or
//! `~/.dstack/config.yml` ([`Connection`]). The token is a [`Secret`]: never logged or rendered.

mod api;
mod beside;
mod command;
pub mod connection;
mod render;
mod status;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autodebug_core::beside::{BesideCommand, BesideOutput};
use autodebug_core::failure::start_failure_kind;
use autodebug_core::secret;
use autodebug_core::{
    Artifact, Deployer, Deployment, Endpoint, Error, ErrorKind, LogLine, Result, Secret, ServiceSpec, TimeWindow,
    async_trait,
};
use base64::Engine as _;
use serde_yaml::Value;

pub use connection::Connection;
pub use render::{DEFAULT_PORT, default_image};
pub use status::Readiness;

use api::Client;

/// Pages of at most this many log events are read per `logs/poll` call.
const LOG_PAGE: u32 = 1000;
/// At most this many pages per `logs` call, so a chatty service cannot stall the loop.
const MAX_LOG_PAGES: usize = 50;
/// How long `deploy` waits for a fleet's busy instance to be offered before applying anyway.
const OFFER_WAIT: Duration = Duration::from_secs(60);
/// How long `logs` waits by default for the server to pull a running job's latest output: it
/// needs two passes of the job pipeline over the job (about one every 12-14 s on an idle server,
/// measured on dstack 0.22.5 here), and a pass that cannot reach the runner pulls nothing, so
/// this allows for a failed pass or two on a loaded machine.
const LOG_CATCH_UP: Duration = Duration::from_secs(90);
/// Said after dstack's `no capacity`: with parallel rounds the cause is usually the fleet's size.
const NO_CAPACITY_HINT: &str = ". No instance of the project's fleets was free: a run takes a whole instance unless the fleet splits it into `blocks`, so `parallel: K` needs K instances or `blocks: K` (an SSH fleet: `blocks` at the top of its configuration or per host) and nothing else running on them";
/// How long `teardown` waits for an aborted run to finish.
const ABORT_WAIT: Duration = Duration::from_secs(60);
/// The dstack CLI `run_beside` uses unless told otherwise: the one on `PATH`.
const DEFAULT_CLI: &str = "dstack";
/// How long ssh may outlast the command's own bound: the container's `timeout` stops it first.
const BESIDE_GRACE: Duration = Duration::from_secs(20);
/// How many of a job's newest events are read to find its latest reachability change.
const JOB_EVENTS: u32 = 100;
/// The events dstack's job pipeline records when a pass cannot reach the runner (that pass pulls
/// no output but still advances `last_processed_at`) and when a later pass reaches it again
/// (`_emit_reachability_change_event`, `server/background/pipeline_tasks/jobs_running.py`).
const UNREACHABLE_EVENT: &str = "Job became unreachable";
const REACHABLE_EVENT: &str = "Job became reachable";

/// Deploys services on dstack. See the [module docs](self).
///
/// ```
/// use autodebug_core::{Deployer, EngineKind, ServiceSpec};
/// use autodebug_deploy::dstack::DstackDeployer;
///
/// # fn main() -> autodebug_core::Result<()> {
/// let base = "type: service\nname: qwen\nimage: lmsysorg/sglang:latest\n\
///             commands:\n  - python3 -m sglang.launch_server --model-path Qwen/Qwen1.5-0.5B-Chat --port 8000\n\
///             port: 8000\nresources:\n  gpu: H100:1\n";
/// let mut spec = DstackDeployer::base_spec_from_yaml(base, "dstack.yml")?;
/// assert_eq!(spec.engine, EngineKind::Sglang);
/// spec.flags.set("--schedule-policy", Some("lpm"));
///
/// let yaml = DstackDeployer::render_only(serde_yaml::Value::Null).render(&spec)?.content;
/// assert!(yaml.contains("--port 8000 --schedule-policy lpm"));
/// assert!(yaml.contains("gpu: H100:1"));
/// # Ok(()) }
/// ```
pub struct DstackDeployer {
    client: Option<Client>,
    default_base: Value,
    poll_interval: Duration,
    stop_timeout: Duration,
    abort_wait: Duration,
    log_catch_up: Duration,
    cli: PathBuf,
}

/// Builds a [`DstackDeployer`].
pub struct DstackDeployerBuilder {
    connection: Option<Connection>,
    url: Option<String>,
    project: Option<String>,
    token: Option<Secret>,
    default_base: Value,
    poll_interval: Duration,
    stop_timeout: Duration,
    log_catch_up: Duration,
    request_timeout: Duration,
    cli: PathBuf,
}

impl DstackDeployerBuilder {
    /// Server base URL, e.g. `http://127.0.0.1:3000`.
    pub fn server_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Project name (default `main`).
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    pub fn token(mut self, token: Secret) -> Self {
        self.token = Some(token);
        self
    }

    /// A complete connection (e.g. from [`Connection::from_config_file`]).
    pub fn connection(mut self, connection: Connection) -> Self {
        self.connection = Some(connection);
        self
    }

    /// Fills in whatever was not set from the environment or `~/.dstack/config.yml`.
    pub fn from_env(mut self) -> Result<Self> {
        if self.connection.is_none() && (self.url.is_none() || self.token.is_none()) {
            let found = Connection::from_env()?;
            self.url = self.url.or(Some(found.url));
            self.project = self.project.or(Some(found.project));
            self.token = self.token.or(Some(found.token));
        }
        Ok(self)
    }

    /// The configuration to render onto for specs that carry no `base` of their own.
    pub fn default_base(mut self, base: Value) -> Self {
        self.default_base = base;
        self
    }

    /// How often `wait_ready` and `teardown` ask the server (default 2 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(50));
        self
    }

    /// How long `teardown` waits for a stopped run to finish before aborting it (default 120 s);
    /// an aborted run gets another 60 s to finish, or `teardown` fails naming it.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// How long `logs` waits for the server to pull a running job's latest output from its runner
    /// before it fails saying so (default 90 s).
    pub fn log_catch_up(mut self, bound: Duration) -> Self {
        self.log_catch_up = bound;
        self
    }

    /// Bound on each HTTP request (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The dstack CLI that `run_beside` attaches to a run with (default `dstack` on `PATH`).
    pub fn cli(mut self, cli: impl Into<PathBuf>) -> Self {
        self.cli = cli.into();
        self
    }

    pub fn build(self) -> Result<DstackDeployer> {
        let connection = match self.connection {
            Some(c) => c,
            None => {
                let url = self.url.ok_or_else(|| {
                    Error::config(
                        connection::env_vars::SERVER_URL,
                        "no dstack server URL: call .server_url(..) or .from_env(), or set DSTACK_SERVER_URL",
                    )
                })?;
                let token = self.token.ok_or_else(|| {
                    Error::config(connection::env_vars::TOKEN, "no dstack token: call .token(..) or set DSTACK_TOKEN")
                })?;
                Connection::new(url, self.project.unwrap_or_else(|| connection::DEFAULT_PROJECT.into()), token)?
            }
        };
        Ok(DstackDeployer {
            client: Some(Client::new(connection, self.request_timeout)?),
            default_base: self.default_base,
            poll_interval: self.poll_interval,
            stop_timeout: self.stop_timeout,
            abort_wait: ABORT_WAIT,
            log_catch_up: self.log_catch_up,
            cli: self.cli,
        })
    }
}

fn rfc3339(ns: i128) -> Option<String> {
    let micros = ns - ns.rem_euclid(1_000);
    time::OffsetDateTime::from_unix_timestamp_nanos(micros)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn parse_time_ns(text: &str) -> Option<i128> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

/// dstack resource names: `^[a-z][a-z0-9-]{1,40}$`.
fn check_run_name(name: &str) -> Result<()> {
    // A parallel round names its slots `<service name>-s<slot>`: say where the tail came from.
    let slot_hint = match name.rsplit_once("-s") {
        Some((service, slot)) if !slot.is_empty() && slot.chars().all(|c| c.is_ascii_digit()) => format!(
            " (`-s{slot}` is the slot of a parallel round: shorten service.name `{service}` to at most {} characters)",
            41 - 2 - slot.len()
        ),
        _ => String::new(),
    };
    let ok = name.len() >= 2
        && name.len() <= 41
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            "service name",
            format!(
                "`{name}` is not a valid dstack run name: use 2-41 lowercase letters, digits and dashes, starting with a letter{slot_hint}"
            ),
        ))
    }
}

/// Stands in for a secret value while a configuration is rendered for the trail.
const SECRET_REF: &str = "AUTODEBUG_SECRET_REF_";

/// The environment entry every run autodebug submits carries: `host:pid` of the autodebug that
/// submitted it. A later start can then tell a run left behind by a killed autodebug on this host
/// (its process is gone: stopped and replaced) from one a live session or someone else owns
/// (refused).
const OWNER_ENV: &str = "AUTODEBUG_OWNER";

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn owner_mark() -> String {
    format!("{}:{}", this_host(), std::process::id())
}

fn mark_owned(configuration: &mut serde_json::Value, owner: &str) {
    match configuration.get_mut("env") {
        Some(serde_json::Value::Array(items)) => items.push(format!("{OWNER_ENV}={owner}").into()),
        Some(serde_json::Value::Object(map)) => {
            map.insert(OWNER_ENV.into(), owner.into());
        }
        _ => configuration["env"] = serde_json::json!([format!("{OWNER_ENV}={owner}")]),
    }
}

/// The owner mark of a run (as `runs/get` or a plan's `current_resource` shows it), if autodebug
/// submitted it.
fn owner_of(run: &serde_json::Value) -> Option<String> {
    match &run["run_spec"]["configuration"]["env"] {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str())
            .find_map(|i| i.strip_prefix(OWNER_ENV)?.strip_prefix('=').map(str::to_string)),
        serde_json::Value::Object(map) => map.get(OWNER_ENV).and_then(|v| v.as_str()).map(str::to_string),
        _ => None,
    }
}

/// Whether `owner` names an autodebug process on `host` that no longer exists.
fn owner_is_gone(owner: &str, host: &str, alive: impl Fn(u32) -> bool) -> bool {
    match owner.rsplit_once(':') {
        Some((owner_host, pid)) if owner_host == host => pid.parse().is_ok_and(|pid| !alive(pid)),
        _ => false,
    }
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The path the service's first HTTP probe polls (`/health` when it names none): the proxy must
/// answer it before the endpoint is handed to the benchmark.
fn readiness_path(configuration: &serde_yaml::Mapping) -> String {
    let probe_url = match configuration.get("probes") {
        Some(Value::Sequence(probes)) => probes
            .iter()
            .find(|p| p.get("type").and_then(Value::as_str).is_none_or(|t| t == "http"))
            .and_then(|p| p.get("url"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    };
    let path = probe_url.unwrap_or_else(|| "/health".into());
    if path.starts_with('/') { path } else { format!("/{path}") }
}

/// Turns the [`SECRET_REF`] stand-ins of a rendered configuration into references: env entries
/// without a value (list form) or `${{ secrets.NAME }}` (mapping form), `"$NAME"` in commands,
/// with an env entry added for each variable a command reads.
fn reference_secrets(configuration: &mut serde_yaml::Mapping) {
    let as_mapping = matches!(configuration.get("env"), Some(Value::Mapping(_)));
    let mut env = render::env_entries(configuration.get("env"));
    let mut read_by_commands = Vec::new();
    if let Some(Value::Sequence(commands)) = configuration.get_mut("commands") {
        for command in commands.iter_mut() {
            if let Value::String(text) = command {
                while let Some(at) = text.find(SECRET_REF) {
                    let rest = &text[at + SECRET_REF.len()..];
                    let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    text.replace_range(at..at + SECRET_REF.len() + name.len(), &format!("\"${name}\""));
                    read_by_commands.push(name);
                }
            }
        }
    }
    for name in &read_by_commands {
        if !env.iter().any(|(n, _)| n == name) {
            env.push((name.clone(), Some(SECRET_REF.to_string())));
        }
    }
    let entries: Vec<(String, Option<String>)> = env
        .into_iter()
        .map(|(name, value)| match value {
            Some(v) if v.starts_with(SECRET_REF) && as_mapping => {
                let reference = format!("${{{{ secrets.{name} }}}}");
                (name, Some(reference))
            }
            Some(v) if v.starts_with(SECRET_REF) => (name, None),
            other => (name, other),
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    let value = if as_mapping {
        Value::Mapping(
            entries.into_iter().map(|(n, v)| (Value::String(n), v.map(Value::String).unwrap_or(Value::Null))).collect(),
        )
    } else {
        Value::Sequence(
            entries
                .into_iter()
                .map(|(n, v)| {
                    Value::String(match v {
                        Some(v) => format!("{n}={v}"),
                        None => n,
                    })
                })
                .collect(),
        )
    };
    configuration.insert(Value::String("env".into()), value);
}

/// Variables listed without a value (`- HF_TOKEN`) are filled from this process's environment,
/// as the dstack CLI does; only the request carries them, never the rendered file.
fn resolve_env(configuration: &mut serde_json::Value, spec_name: &str) -> Result<()> {
    let location = format!("service `{spec_name}`: env");
    let lookup = |name: &str| {
        std::env::var(name).map_err(|_| {
            Error::config(
                &location,
                format!("`{name}` has no value in the configuration and is not set in autodebug's environment; export {name} or give it a value"),
            )
        })
    };
    match configuration.get_mut("env") {
        Some(serde_json::Value::Array(items)) => {
            for item in items.iter_mut() {
                if let Some(name) = item.as_str().filter(|s| !s.contains('=')).map(str::to_string) {
                    *item = serde_json::Value::String(format!("{name}={}", lookup(&name)?));
                }
            }
        }
        Some(serde_json::Value::Object(map)) => {
            for (name, value) in map.iter_mut() {
                if value.is_null() {
                    *value = serde_json::Value::String(lookup(name)?);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

impl DstackDeployer {
    pub fn builder() -> DstackDeployerBuilder {
        DstackDeployerBuilder {
            connection: None,
            url: None,
            project: None,
            token: None,
            default_base: Value::Null,
            poll_interval: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(120),
            log_catch_up: LOG_CATCH_UP,
            request_timeout: Duration::from_secs(30),
            cli: PathBuf::from(DEFAULT_CLI),
        }
    }

    /// A deployer for the server named by the environment or `~/.dstack/config.yml`.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// Renders without a server: `render` works, `deploy` fails saying a server is needed.
    /// `base` is used for specs without their own (`Value::Null`: a built-in service template).
    /// Wrap it in [`DryRun`](crate::DryRun) for a session that only writes files.
    pub fn render_only(base: Value) -> Self {
        DstackDeployer {
            client: None,
            default_base: base,
            poll_interval: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(120),
            abort_wait: ABORT_WAIT,
            log_catch_up: LOG_CATCH_UP,
            cli: PathBuf::from(DEFAULT_CLI),
        }
    }

    /// Reads a dstack service configuration file into a [`ServiceSpec`] (`base` = the whole file).
    pub fn base_spec_from_file(path: impl AsRef<Path>) -> Result<ServiceSpec> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        render::spec_from_yaml(&text, &path.display().to_string())
    }

    /// [`base_spec_from_file`](Self::base_spec_from_file) for text already read; `location` names it in errors.
    pub fn base_spec_from_yaml(text: &str, location: &str) -> Result<ServiceSpec> {
        render::spec_from_yaml(text, location)
    }

    /// The server connection, when this deployer has one.
    pub fn connection(&self) -> Option<&Connection> {
        self.client.as_ref().map(Client::connection)
    }

    /// The dstack server's version (`/api/server/get_info`).
    pub async fn server_version(&self) -> Result<String> {
        self.client()?.server_version().await
    }

    /// The run as dstack judges it now: ready, pending or failed with its reason.
    pub async fn readiness(&self, run_name: &str) -> Result<Readiness> {
        Ok(status::assess(&self.client()?.get_run(run_name).await?))
    }

    fn client(&self) -> Result<&Client> {
        self.client.as_ref().ok_or_else(|| {
            Error::config(
                connection::env_vars::SERVER_URL,
                "this dstack deployer only renders (render_only): build it with DstackDeployer::from_env() or .server_url(..) to deploy",
            )
        })
    }

    fn configuration(&self, spec: &ServiceSpec) -> Result<serde_yaml::Mapping> {
        render::render(spec, &self.default_base)
    }

    /// The served model name: the configuration's `model` (string or `{name}`), else the spec's.
    fn served_model(configuration: &serde_yaml::Mapping, spec: &ServiceSpec) -> String {
        match configuration.get("model") {
            Some(Value::String(name)) => name.clone(),
            Some(Value::Mapping(m)) => m.get("name").and_then(Value::as_str).unwrap_or(&spec.model).to_string(),
            _ => spec.model.clone(),
        }
    }

    /// Stops the run named in `run_spec` if it exists and carries `owner` (this process's mark
    /// on the configuration just applied); a run someone else submitted is left alone.
    async fn stop_if_submitted_here(&self, run_spec: &serde_json::Value, owner: &str, spec: &ServiceSpec) {
        let Ok(client) = self.client() else { return };
        let Ok(plan) = client.get_plan(run_spec).await else { return };
        let ours = owner_of(&plan.current_resource).as_deref() == Some(owner);
        let active = plan
            .current_resource
            .get("status")
            .and_then(|s| s.as_str())
            .is_some_and(|s| !matches!(s, "terminated" | "failed" | "done"));
        if !(ours && active) {
            return;
        }
        tracing::warn!(run = %spec.name, "the apply call failed but the run was created; stopping it");
        let submitted = Deployment {
            id: spec.name.clone(),
            backend: "dstack".into(),
            spec: spec.clone(),
            started_ns: TimeWindow::now_ns(),
            details: Default::default(),
        };
        if let Err(e) = self.teardown(&submitted).await {
            tracing::warn!(run = %spec.name, error = %e, "could not stop the run; stop it with `dstack stop {} -y`", spec.name);
        }
    }

    /// The latest job submission id of a run, for `logs/poll`. For a running job, first waits
    /// (bounded by the builder's `log_catch_up`) until the server has pulled the job's output
    /// from its runner after this call began: dstack pulls a running job's output only when its
    /// pipeline passes over the job, so without the wait the last seconds of a benchmark window
    /// (or, when the server stalls, all of it) would be missing from its logs.
    ///
    /// A job's `last_processed_at` moves for two kinds of pass, and only one of them pulls. The
    /// job pipeline's pass pulls the runner's output and commits its own time. The run
    /// pipeline's pass, every 10 s or so, stamps each job it locked with the time it commits to
    /// the run, and pulls nothing (`_build_active_job_update_rows`, dstack
    /// `_internal/server/background/pipeline_tasks/runs/__init__.py`). So a new job time equal to
    /// the run's `last_processed_at` (in the same answer, or any run time seen during the call)
    /// is the run pipeline's and does not count; counting it let a log be read before the
    /// window's lines were pulled.
    ///
    /// `last_processed_at` is when a pass COMMITTED, not when it pulled: a pass may pull, wait
    /// many seconds (a loaded machine, the database held by another task) and commit after this
    /// call with output from before it. The job pipeline's passes over one job are serialized
    /// (the job's lock is released by the commit, and the next pass is fetched 5 s or more
    /// after it), so the second of them seen to commit during this call pulled after the first
    /// one committed, so after this call and after the runner flushed what the engine printed
    /// before it (the runner hands output on after 0.5 s without output, at the latest every
    /// 3 s: `AnsiStripFlushInterval`/`AnsiStripMaxDelay`, dstack `runner/internal/runner/executor/
    /// executor.go`). No clock is compared.
    ///
    /// That pass counts only if it reached the runner: a pass that cannot (its SSH tunnel's 3 s
    /// connect timeout, the runner's 9 s read timeout) pulls nothing yet commits, with a "Job
    /// became unreachable" event in the same commit. So the job's reachability is read from its
    /// events between two reads of the run that show the same pass. When no such pass comes in
    /// time the call fails, naming why: the caller records a telemetry gap instead of a log that
    /// silently lacks the window.
    async fn latest_submission(&self, run_name: &str) -> Result<Option<String>> {
        let client = self.client()?;
        let started = Instant::now();
        let deadline = started + self.log_catch_up;
        let mut reported = String::new();
        // The job time the previous read showed (`None` before the first read), the run
        // pipeline's times seen, and how many job-pipeline passes committed after the first read.
        let mut last_pass: Option<Option<String>> = None;
        let mut run_passes: Vec<i128> = Vec::new();
        let mut later_passes = 0u32;
        loop {
            let run = client.get_run(run_name).await?;
            let Some(submission) = latest_job_submission(&run) else { return Ok(None) };
            let processed = submission.last_processed_at.clone();
            if let Some(run_pass) = run.last_processed_at.as_deref().and_then(parse_time_ns)
                && !run_passes.contains(&run_pass)
            {
                run_passes.push(run_pass);
            }
            if last_pass.as_ref().is_some_and(|previous| *previous != processed) {
                let by_run_pipeline =
                    processed.as_deref().and_then(parse_time_ns).is_some_and(|t| run_passes.contains(&t));
                if by_run_pipeline {
                    tracing::trace!(run = %run_name, last_processed_at = ?processed, "a pass of the run pipeline, which pulls nothing");
                } else {
                    later_passes += 1;
                }
            }
            last_pass = Some(processed.clone());
            // A job that is not running has no new output to wait for; an older server without
            // `last_processed_at` gives nothing to wait on.
            if submission.status != "running" || processed.is_none() {
                return Ok(Some(submission.id.clone()));
            }
            let waiting_for = if later_passes < 2 {
                format!(
                    "{later_passes} of the 2 passes of the job pipeline needed have committed; the job's last at {}",
                    processed.as_deref().unwrap_or("?")
                )
            } else {
                match client.job_events(&submission.id, JOB_EVENTS).await {
                    Ok(events) => {
                        // The events belong to the pass seen above only if no other pass came
                        // in between (a pass commits its time and its events together).
                        let again = client.get_run(run_name).await?;
                        let same_pass = latest_job_submission(&again)
                            .is_some_and(|s| s.id == submission.id && s.last_processed_at == processed);
                        if !same_pass {
                            "the server passed over the job again while it was checked".to_string()
                        } else if unreachable_now(&events) {
                            format!(
                                "the server's pass at {} could not reach the job's runner (dstack: \"{UNREACHABLE_EVENT}\")",
                                processed.as_deref().unwrap_or("?")
                            )
                        } else {
                            tracing::debug!(run = %run_name, last_processed_at = ?processed, waited_s = started.elapsed().as_secs_f64(), "dstack job output pulled");
                            return Ok(Some(submission.id.clone()));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Transient => {
                        format!(
                            "the job's events, which say whether the pass reached its runner, could not be read: {e}"
                        )
                    }
                    Err(e) => {
                        // A server without the events API (an older dstack, or one that refuses
                        // this request) cannot say whether the pass reached the runner: the pass
                        // is all there is to go on.
                        tracing::debug!(run = %run_name, error = %e, "dstack job events unreadable; taking the server's pass as the pull");
                        return Ok(Some(submission.id.clone()));
                    }
                }
            };
            if waiting_for != reported {
                tracing::debug!(run = %run_name, waited_s = started.elapsed().as_secs_f64(), "waiting for dstack to pull the job's output: {waiting_for}");
                reported.clone_from(&waiting_for);
            }
            if Instant::now() >= deadline {
                return Err(Error::deploy(format!(
                    "dstack has not pulled the output of run `{run_name}` from its runner in the {} s since autodebug asked for its log ({waiting_for}); the log would lack its latest lines, so it is not used. The dstack server's log says `is unreachable` for each pass that could not reach the runner; `dstack logs {run_name}` shows the output once pulled",
                    started.elapsed().as_secs(),
                )));
            }
            tokio::time::sleep(self.poll_interval.min(Duration::from_secs(1))).await;
        }
    }
}

/// The submission `logs/poll` reads: the first job's latest, else the run's latest.
fn latest_job_submission(run: &api::Run) -> Option<&api::JobSubmission> {
    run.jobs.iter().filter_map(|j| j.job_submissions.last()).next().or(run.latest_job_submission.as_ref())
}

/// Whether a job's latest reachability change (its events, newest first) left it unreachable.
fn unreachable_now(events: &[api::Event]) -> bool {
    events
        .iter()
        .find_map(|e| match e.message.trim() {
            UNREACHABLE_EVENT => Some(true),
            REACHABLE_EVENT => Some(false),
            _ => None,
        })
        .unwrap_or(false)
}

#[async_trait]
impl Deployer for DstackDeployer {
    fn name(&self) -> &str {
        "dstack"
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        // The file in the trail never holds a secret: secret env entries and flag values become
        // references that dstack fills at apply time (`- HF_TOKEN` from the client's environment,
        // or `${{ secrets.HF_TOKEN }}` in a mapping), and the command reads them as `$HF_TOKEN`.
        let shown = secret::redact_spec_with(spec, |name| format!("{SECRET_REF}{}", secret::env_name_for(name)));
        let mut configuration = self.configuration(&shown)?;
        reference_secrets(&mut configuration);
        Ok(Artifact {
            target: "dstack".into(),
            extension: "yml".into(),
            // The header comment quotes the command line: its stand-ins read as the variables.
            content: secret::redact(&render::to_yaml(&shown, &configuration)?.replace(SECRET_REF, "$")).into_owned(),
        })
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        let client = self.client()?;
        check_run_name(&spec.name)?;
        let configuration = self.configuration(spec)?;
        let model = Self::served_model(&configuration, spec);
        let mut configuration_json = serde_json::to_value(&configuration)
            .map_err(|e| Error::config(format!("service `{}`", spec.name), format!("cannot encode as JSON: {e}")))?;
        resolve_env(&mut configuration_json, &spec.name)?;
        let owner = owner_mark();
        mark_owned(&mut configuration_json, &owner);
        let run_spec = serde_json::json!({ "run_name": spec.name, "configuration": configuration_json });

        let mut plan = client.get_plan(&run_spec).await?;
        let active = |plan: &api::RunPlan| {
            plan.current_resource
                .get("status")
                .and_then(|s| s.as_str())
                .filter(|s| !matches!(*s, "terminated" | "failed" | "done"))
                .map(str::to_string)
        };
        if let Some(status) = active(&plan)
            && let Some(owner) = owner_of(&plan.current_resource)
            && owner_is_gone(&owner, &this_host(), process_alive)
        {
            // Left behind by an autodebug that was killed before its teardown: ours to stop.
            tracing::warn!(run = %spec.name, %status, %owner, "stopping a run an autodebug that no longer runs left behind");
            let orphan = Deployment {
                id: spec.name.clone(),
                backend: "dstack".into(),
                spec: spec.clone(),
                started_ns: TimeWindow::now_ns(),
                details: Default::default(),
            };
            self.teardown(&orphan).await?;
            plan = client.get_plan(&run_spec).await?;
        }
        if let Some(status) = active(&plan) {
            return Err(Error::infrastructure(format!(
                "a run named `{}` is already {status} in dstack project `{}`; stop it (`dstack stop {} -y`) or rename the service",
                spec.name,
                client.connection().project,
                spec.name
            )));
        }
        let mut offers: u64 = plan.job_plans.iter().map(|j| j.total_offers).sum();
        if offers == 0 && client.fleet_count().await? > 0 {
            // An instance the previous iteration's run just released reads busy for a few
            // seconds more; applying now would fail with "no capacity". With no fleet at all
            // there is nothing to wait for: dstack's own "no fleets" is the answer.
            let deadline = Instant::now() + OFFER_WAIT;
            while offers == 0 && Instant::now() < deadline {
                tokio::time::sleep(self.poll_interval).await;
                plan = client.get_plan(&run_spec).await?;
                offers = plan.job_plans.iter().map(|j| j.total_offers).sum();
            }
            tracing::debug!(run = %spec.name, offers, "waited for the fleet's instances to be free");
        }
        let started_ns = TimeWindow::now_ns();
        let run = match client.apply(&run_spec, &plan.current_resource, false).await {
            Ok(run) => run,
            Err(e) => {
                // A timed-out or dropped answer may come after the server created the run: the
                // session tears down only what `deploy` returned, so stop it here.
                self.stop_if_submitted_here(&run_spec, &owner, spec).await;
                return Err(e);
            }
        };
        tracing::info!(run = %spec.name, project = %client.connection().project, status = %run.status, offers, "dstack run submitted");

        let mut details = std::collections::BTreeMap::new();
        details.insert("server".into(), client.connection().url.clone());
        details.insert("project".into(), client.connection().project.clone());
        details.insert("run_name".into(), spec.name.clone());
        details.insert("model".into(), model);
        details.insert("offers".into(), offers.to_string());
        if let Some(action) = plan.action {
            details.insert("action".into(), action);
        }
        if let Some(submission) =
            run.latest_job_submission.as_ref().or(run.jobs.first().and_then(|j| j.job_submissions.last()))
        {
            details.insert("job_submission_id".into(), submission.id.clone());
        }
        if configuration.get("auth").and_then(Value::as_bool) == Some(false) {
            details.insert("auth".into(), "false".into());
        }
        details.insert("ready_path".into(), readiness_path(&configuration));
        details.insert("port".into(), beside::container_port(&configuration).unwrap_or(DEFAULT_PORT).to_string());
        Ok(Deployment { id: spec.name.clone(), backend: "dstack".into(), spec: spec.clone(), started_ns, details })
    }

    async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint> {
        let client = self.client()?;
        let started = Instant::now();
        let deadline = started + timeout;
        let run_name = &deployment.id;
        let mut last = String::from("no answer yet");
        loop {
            match client.get_run(run_name).await {
                Ok(run) => match status::assess(&run) {
                    Readiness::Ready { service_url } => {
                        let base = status::service_base_url(&client.connection().url, &service_url);
                        let path = deployment.details.get("ready_path").map_or("/health", String::as_str);
                        match client.probe(&format!("{base}{path}")).await {
                            Ok(code) if (200..300).contains(&code) => {}
                            Ok(code) => {
                                last = format!("running; the proxy answers {path} with HTTP {code}");
                                return_if_late(started, deadline, run_name, &last)?;
                                tokio::time::sleep(self.poll_interval).await;
                                continue;
                            }
                            Err(e) => {
                                last = format!("running; the proxy does not answer {path}: {e}");
                                return_if_late(started, deadline, run_name, &last)?;
                                tokio::time::sleep(self.poll_interval).await;
                                continue;
                            }
                        }
                        let mut endpoint = Endpoint::new(
                            base,
                            deployment.details.get("model").cloned().unwrap_or_else(|| deployment.spec.model.clone()),
                        );
                        if deployment.details.get("auth").map(String::as_str) != Some("false") {
                            endpoint.token = Some(client.connection().token.clone());
                        }
                        tracing::info!(run = %run_name, url = %endpoint.base_url, "dstack service ready");
                        return Ok(endpoint);
                    }
                    Readiness::Failed(reason) => {
                        // dstack's reason says the container exited; the engine's own last words
                        // (a rejected flag, a crash) are in the job's output.
                        let (output, kind) = match self.logs(deployment, None).await {
                            Ok(lines) => (quote_tail(&lines), start_failure_kind(&lines)),
                            Err(e) => (format!("  (its output could not be read: {e})"), ErrorKind::Transient),
                        };
                        let hint = if reason.starts_with("no capacity") { NO_CAPACITY_HINT } else { "" };
                        return Err(Error::Deploy {
                            message: format!(
                                "dstack run `{run_name}` in project `{}` failed: {reason}{hint}; its last output:\n{output}",
                                client.connection().project
                            ),
                            kind,
                            source: None,
                        });
                    }
                    Readiness::Pending(what) => {
                        if what != last {
                            tracing::debug!(run = %run_name, status = %what, "waiting for the dstack service");
                        }
                        last = what;
                    }
                },
                Err(e @ Error::Config { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(run = %run_name, error = %e, "could not read the run; retrying");
                    last = e.to_string();
                }
            }
            return_if_late(started, deadline, run_name, &last)?;
            tokio::time::sleep(self.poll_interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
        let client = self.client()?;
        let run_name = &deployment.id;
        let Some(submission) = self.latest_submission(run_name).await? else {
            return Ok(Vec::new());
        };
        // dstack returns events strictly after `start_time`; one microsecond earlier keeps a line
        // stamped exactly `since_ns` (the filter below drops anything older).
        let start_time = since_ns.and_then(|ns| rfc3339(ns - 1_000));
        let mut lines = Vec::new();
        let mut next_token: Option<String> = None;
        for _ in 0..MAX_LOG_PAGES {
            let page =
                client.poll_logs(run_name, &submission, start_time.as_deref(), next_token.as_deref(), LOG_PAGE).await?;
            let empty = page.logs.is_empty();
            lines.extend(decode_events(&page.logs, since_ns));
            next_token = page.next_token;
            if empty || next_token.is_none() {
                break;
            }
        }
        tracing::debug!(run = %run_name, lines = lines.len(), last_ns = lines.last().map(|l| l.time_ns), "dstack logs read");
        Ok(lines)
    }

    async fn teardown(&self, deployment: &Deployment) -> Result<()> {
        let client = self.client()?;
        let run_name = &deployment.id;
        match client.stop(run_name, false).await {
            Ok(()) => {}
            Err(Error::Deploy { message, .. })
                if message.contains("not found") || message.contains("resource_not_exists") =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let mut deadline = Instant::now() + self.stop_timeout;
        let mut aborted = false;
        loop {
            match client.get_run(run_name).await {
                Ok(run) if matches!(run.status.as_str(), "terminated" | "failed" | "done") => {
                    return Ok(());
                }
                Ok(run) => {
                    if Instant::now() >= deadline {
                        if aborted {
                            return Err(Error::infrastructure(format!(
                                "dstack run `{run_name}` is still {} {} s after it was aborted; see `dstack ps -a` and stop it with `dstack stop {run_name} -x -y`",
                                run.status,
                                self.abort_wait.as_secs()
                            )));
                        }
                        // An aborted run still takes a pass or two of the server to finish: the
                        // run is not gone, nor its instance free, until then.
                        tracing::warn!(run = %run_name, status = %run.status, "run did not stop in time; aborting it");
                        client.stop(run_name, true).await?;
                        aborted = true;
                        deadline = Instant::now() + self.abort_wait;
                    }
                }
                Err(Error::Deploy { message, .. })
                    if message.contains("not found") || message.contains("resource_not_exists") =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    /// Inside the run's own job container, over the SSH access dstack gives every run (see the
    /// module docs): `dstack attach`, then `ssh <run>`; the service's URL is the container's loopback
    /// at its `port`. The dstack token is never handed into the container: the command reaches
    /// the service without dstack's proxy, which is all the token is for.
    async fn run_beside(&self, deployment: &Deployment, command: &BesideCommand) -> Result<BesideOutput> {
        let client = self.client()?;
        let run_name = &deployment.id;
        let port = deployment.details.get("port").and_then(|p| p.parse::<u16>().ok()).unwrap_or(DEFAULT_PORT);
        let url = format!("http://127.0.0.1:{port}");
        let dstack_token = client.connection().token.expose();
        let command = if command.env.iter().any(|(_, value)| value.expose() == dstack_token) {
            tracing::info!(run = %run_name, "not handing the dstack token into the job container: the service there is reached without dstack's proxy");
            command.without_token()
        } else {
            command.clone()
        };
        let names: Vec<&str> = command.env.iter().map(|(name, _)| name.as_str()).collect();
        let values: Vec<&str> = command.env.iter().map(|(_, value)| value.expose()).collect();
        let script = beside::remote_script(&command.program, &command.args_for(&url), &names, command.timeout)?;
        let input = beside::input_lines(&values)?;
        let attached = beside::Attached::open(&self.cli, client.connection(), run_name, beside::ATTACH_WAIT).await?;
        tracing::info!(run = %run_name, program = %command.program.display(), url = %url, "running inside the service's container");
        let output = crate::beside::run(
            attached.ssh(&script),
            Path::new("ssh"),
            Some(input),
            command.timeout + BESIDE_GRACE,
            |pid| format!("`ssh {run_name}` into dstack run `{run_name}`'s job container (through `dstack attach`), ssh pid {pid} here"),
        )
        .await;
        attached.close().await;
        let mut output = output?;
        match output.exit_code {
            Some(beside::TIMED_OUT_EXIT) => output.timed_out = true,
            Some(beside::INPUT_MISSING_EXIT) => output.stderr_tail.push(format!(
                "[autodebug: the command's environment did not reach the shell in dstack run `{run_name}`'s container]"
            )),
            // ssh's own failure: its error is the last line of the tail.
            Some(255) => output
                .stderr_tail
                .push(format!("[autodebug: ssh could not run the command in dstack run `{run_name}`'s container]")),
            _ => {}
        }
        Ok(output)
    }
}

/// The last lines of a job's output, quoted for an error message.
fn quote_tail(lines: &[LogLine]) -> String {
    const QUOTED: usize = 20;
    if lines.is_empty() {
        return "  (it printed nothing)".into();
    }
    let tail = &lines[lines.len().saturating_sub(QUOTED)..];
    tail.iter().map(|l| format!("  | {}", l.text)).collect::<Vec<_>>().join("\n")
}

/// `NotReady` once `deadline` has passed, naming what the run was still doing.
fn return_if_late(started: Instant, deadline: Instant, run_name: &str, last: &str) -> Result<()> {
    if Instant::now() < deadline {
        return Ok(());
    }
    Err(Error::NotReady {
        name: run_name.to_string(),
        waited_s: started.elapsed().as_secs_f64(),
        message: format!("dstack run still `{last}`; see `dstack logs {run_name}`"),
    })
}

/// Log events → lines: messages are base64 of raw output, one event may hold several lines.
fn decode_events(events: &[api::LogEvent], since_ns: Option<i128>) -> Vec<LogLine> {
    let mut lines = Vec::new();
    for event in events {
        let time_ns = parse_time_ns(&event.timestamp).unwrap_or_else(TimeWindow::now_ns);
        if since_ns.is_some_and(|since| time_ns < since) {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(event.message.trim())
            .unwrap_or_else(|_| event.message.clone().into_bytes());
        let text = String::from_utf8_lossy(&bytes);
        for line in text.split('\n').map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()) {
            lines.push(LogLine { time_ns, text: line.to_string() });
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_events_decode_into_lines_after_since() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let events: Vec<api::LogEvent> = serde_json::from_value(serde_json::json!([
            {"timestamp": "2025-01-01T00:00:00.000001Z", "log_source": "stdout", "message": b64("old line\n")},
            {"timestamp": "2025-01-01T00:00:02.5Z", "log_source": "stdout", "message": b64("[2025] Prefill batch. #new-seq: 1\r\nDecode batch. #running-req: 3\n")},
        ]))
        .unwrap();
        let since = parse_time_ns("2025-01-01T00:00:01Z");
        let lines = decode_events(&events, since);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["[2025] Prefill batch. #new-seq: 1", "Decode batch. #running-req: 3"]);
        assert_eq!(lines[0].time_ns - since.unwrap(), 1_500_000_000);
    }

    #[test]
    fn a_job_is_unreachable_only_while_its_latest_reachability_event_says_so() {
        let events = |messages: &[&str]| -> Vec<api::Event> {
            messages.iter().map(|m| api::Event { message: m.to_string() }).collect()
        };
        assert!(!unreachable_now(&events(&[])));
        assert!(!unreachable_now(&events(&["Service replica ready to receive requests", "Job created"])));
        assert!(unreachable_now(&events(&["Service replica ready to receive requests", UNREACHABLE_EVENT])));
        assert!(!unreachable_now(&events(&[REACHABLE_EVENT, UNREACHABLE_EVENT])));
        assert!(unreachable_now(&events(&[UNREACHABLE_EVENT, REACHABLE_EVENT, UNREACHABLE_EVENT])));
    }

    /// A fake dstack server with one running job, for the log catch-up. `passes`: when the
    /// server's pipeline passed over the job (seconds after the start) and whether the pass
    /// reached the runner. The job printed a line at the start; a pass that reached the runner
    /// 1 s or more after the start (the runner's flush) pulled it. `events: false` answers the
    /// events API with 404, as a server without it does; `skew_s` sets the server's clock off.
    /// `run_passes`: when the run pipeline passed over the run, stamping the job with the same
    /// time and pulling nothing.
    async fn fake_dstack(passes: Vec<(f64, bool)>, run_passes: Vec<f64>, events: bool, skew_s: f64) -> String {
        let started = Instant::now();
        let start_ns = TimeWindow::now_ns();
        let at = move |s: f64| rfc3339(start_ns + ((s + skew_s) * 1e9) as i128).unwrap();
        let answer = move |path: &str| -> (u16, serde_json::Value) {
            let now = started.elapsed().as_secs_f64();
            let done: Vec<(f64, bool)> = passes.iter().copied().filter(|(t, _)| *t <= now).collect();
            let run_processed = run_passes.iter().copied().filter(|t| *t <= now).fold(-7.0, f64::max);
            let processed = done.last().map_or(-5.0, |(t, _)| *t).max(run_processed);
            if path.ends_with("/runs/get") {
                let submission =
                    serde_json::json!({"id": "job-1", "status": "running", "last_processed_at": at(processed)});
                return (
                    200,
                    serde_json::json!({"status": "running", "last_processed_at": at(run_processed), "jobs": [{"job_spec": {}, "job_submissions": [submission]}]}),
                );
            }
            if path == "/api/events/list" {
                if !events {
                    return (404, serde_json::json!({"detail": "Not Found"}));
                }
                let mut list = vec![serde_json::json!({"message": "Job created", "recorded_at": at(-20.0)})];
                let mut reachable = true;
                for (t, reached) in &done {
                    if *reached != reachable {
                        let message = if *reached { REACHABLE_EVENT } else { UNREACHABLE_EVENT };
                        list.push(serde_json::json!({"message": message, "recorded_at": at(*t)}));
                        reachable = *reached;
                    }
                }
                list.reverse();
                return (200, serde_json::Value::Array(list));
            }
            if path.ends_with("/logs/poll") {
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                let mut logs = vec![serde_json::json!({"timestamp": at(-10.0), "message": b64("listening\n")})];
                if done.iter().any(|(t, reached)| *reached && *t >= 1.0) {
                    logs.push(serde_json::json!({"timestamp": at(0.0), "message": b64("print_timing: late line\n")}));
                }
                return (200, serde_json::json!({"logs": logs, "next_token": null}));
            }
            (404, serde_json::json!({"detail": "Not Found"}))
        };
        serve_json(move |path, _body| answer(path)).await
    }

    /// Serves `answer(path, body)` as JSON over HTTP on a free loopback port; returns its URL.
    async fn serve_json(answer: impl Fn(&str, &str) -> (u16, serde_json::Value) + Send + Sync + 'static) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let answer = std::sync::Arc::new(answer);
        tokio::spawn(async move {
            // Bounded: a test makes far fewer requests than this.
            for _ in 0..10_000 {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = socket.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while request.len() < head_end + length {
                        let Ok(n) = socket.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (status, body) = answer(&path, &String::from_utf8_lossy(&request[head_end..]));
                    let body = body.to_string();
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        format!("http://{address}")
    }

    fn fake_deployer(url: &str, catch_up: Duration) -> DstackDeployer {
        DstackDeployer::builder()
            .server_url(url)
            .token(Secret::new("t"))
            .poll_interval(Duration::from_millis(50))
            .log_catch_up(catch_up)
            .build()
            .unwrap()
    }

    fn fake_deployment() -> Deployment {
        Deployment {
            id: "svc".into(),
            backend: "dstack".into(),
            spec: ServiceSpec::new("svc", autodebug_core::EngineKind::LlamaCpp, "m"),
            started_ns: TimeWindow::now_ns(),
            details: Default::default(),
        }
    }

    #[tokio::test]
    async fn logs_wait_past_a_pass_that_could_not_reach_the_runner() {
        // The first pass after the call comes before the runner's flush; the next one fails to
        // reach the runner (it still advances `last_processed_at`); the third one pulls.
        let url = fake_dstack(vec![(0.5, true), (3.6, false), (4.4, true)], vec![], true, 0.0).await;
        let started = Instant::now();
        let lines = fake_deployer(&url, Duration::from_secs(20)).logs(&fake_deployment(), None).await.unwrap();
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["listening", "print_timing: late line"]);
        assert!(started.elapsed() >= Duration::from_secs_f64(4.4), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn logs_fail_naming_the_unreachable_runner_when_no_pass_pulls_in_time() {
        let url = fake_dstack(vec![(0.5, true), (1.5, false)], vec![], true, 0.0).await;
        let started = Instant::now();
        let err = fake_deployer(&url, Duration::from_secs(3)).logs(&fake_deployment(), None).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`svc`") && text.contains(UNREACHABLE_EVENT), "{text}");
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn passes_of_the_run_pipeline_pull_nothing_and_do_not_count() {
        // The job pipeline's first pass comes before the runner's flush; two passes of the run
        // pipeline then stamp the job without pulling; only the job pipeline's next pass has the line.
        let url = fake_dstack(vec![(0.5, true), (4.0, true)], vec![1.5, 2.5], true, 0.0).await;
        let started = Instant::now();
        let lines = fake_deployer(&url, Duration::from_secs(20)).logs(&fake_deployment(), None).await.unwrap();
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["listening", "print_timing: late line"]);
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "read before the job pipeline pulled: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn without_an_events_api_the_second_pass_counts() {
        let url = fake_dstack(vec![(0.5, true), (1.5, true)], vec![], false, 0.0).await;
        let lines = fake_deployer(&url, Duration::from_secs(20)).logs(&fake_deployment(), None).await.unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
    }

    #[tokio::test]
    async fn a_pass_that_commits_after_the_call_but_pulled_before_it_is_not_enough() {
        // The first pass commits after the call, by any clock (here the server's runs 100 s
        // ahead), with what it pulled before the runner flushed the line: the second one has it.
        for skew_s in [0.0, 100.0, -100.0] {
            let url = fake_dstack(vec![(0.5, true), (1.5, true)], vec![], true, skew_s).await;
            let started = Instant::now();
            let lines = fake_deployer(&url, Duration::from_secs(20)).logs(&fake_deployment(), None).await.unwrap();
            assert_eq!(lines.len(), 2, "skew {skew_s} s: {lines:?}");
            assert!(started.elapsed() >= Duration::from_secs_f64(1.5), "{:?}", started.elapsed());
        }
    }

    /// A fake dstack server whose run stops only when aborted: a graceful stop leaves it
    /// `terminating`; an abort makes it `terminated` after `finish_s` (never, if `None`).
    /// Returns its URL and the `abort` flags of the stop requests it received.
    async fn run_that_stops_only_when_aborted(
        finish_s: Option<f64>,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<bool>>>) {
        let stops = std::sync::Arc::new(std::sync::Mutex::new(Vec::<bool>::new()));
        let aborted_at = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
        let seen = stops.clone();
        let url = serve_json(move |path, body| {
            if path.ends_with("/runs/stop") {
                let abort = serde_json::from_str::<serde_json::Value>(body).unwrap()["abort"].as_bool().unwrap();
                seen.lock().unwrap().push(abort);
                if abort {
                    aborted_at.lock().unwrap().get_or_insert_with(Instant::now);
                }
                return (200, serde_json::json!(null));
            }
            if path.ends_with("/runs/get") {
                let finished = aborted_at
                    .lock()
                    .unwrap()
                    .zip(finish_s)
                    .is_some_and(|(at, after)| at.elapsed().as_secs_f64() >= after);
                let status = if finished { "terminated" } else { "terminating" };
                return (200, serde_json::json!({"status": status, "jobs": []}));
            }
            (404, serde_json::json!({"detail": "Not Found"}))
        })
        .await;
        (url, stops)
    }

    #[tokio::test]
    async fn teardown_aborts_a_run_that_outlives_its_stop_and_waits_until_it_is_gone() {
        let (url, stops) = run_that_stops_only_when_aborted(Some(0.5)).await;
        let mut deployer = fake_deployer(&url, Duration::from_secs(1));
        deployer.stop_timeout = Duration::from_millis(300);
        deployer.abort_wait = Duration::from_secs(10);
        let started = Instant::now();
        deployer.teardown(&fake_deployment()).await.unwrap();
        assert_eq!(*stops.lock().unwrap(), [false, true], "a graceful stop, then one abort");
        // Returning when the abort was sent would leave the run holding its instance.
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "returned before the run was gone: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn teardown_fails_naming_a_run_that_an_abort_did_not_end() {
        let (url, stops) = run_that_stops_only_when_aborted(None).await;
        let mut deployer = fake_deployer(&url, Duration::from_secs(1));
        deployer.stop_timeout = Duration::from_millis(200);
        deployer.abort_wait = Duration::from_millis(400);
        let started = Instant::now();
        let err = deployer.teardown(&fake_deployment()).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`svc`") && text.contains("terminating") && text.contains("dstack stop svc -x"),
            "{text}"
        );
        assert_eq!(*stops.lock().unwrap(), [false, true], "aborted once, not again and again");
        assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn start_time_round_trips_at_microsecond_precision() {
        let ns = parse_time_ns("2025-06-01T12:00:00.123456Z").unwrap() + 789;
        assert_eq!(rfc3339(ns).as_deref(), Some("2025-06-01T12:00:00.123456Z"));
    }

    #[test]
    fn runs_carry_their_owner_in_either_env_shape() {
        for env in [serde_json::json!(["A=1"]), serde_json::json!({"A": "1"}), serde_json::Value::Null] {
            let mut configuration = serde_json::json!({ "type": "service" });
            if !env.is_null() {
                configuration["env"] = env;
            }
            let run = serde_json::json!({ "run_spec": { "configuration": configuration.clone() } });
            assert_eq!(owner_of(&run), None, "{run}");
            mark_owned(&mut configuration, "box:42");
            let run = serde_json::json!({ "run_spec": { "configuration": configuration } });
            assert_eq!(owner_of(&run).as_deref(), Some("box:42"), "{run}");
        }
    }

    #[test]
    fn only_a_run_whose_autodebug_is_gone_from_this_host_is_an_orphan() {
        let alive = |pid| pid == 7;
        assert!(owner_is_gone("box:8", "box", alive));
        assert!(!owner_is_gone("box:7", "box", alive), "a live session's run is not an orphan");
        assert!(!owner_is_gone("other:8", "box", alive), "another host's process cannot be checked");
        assert!(!owner_is_gone("box:not-a-pid", "box", alive));
        assert!(!owner_is_gone(&owner_mark(), &this_host(), process_alive), "this process is alive");
    }

    #[test]
    fn the_proxy_is_polled_on_the_services_own_probe_path() {
        let conf = |yaml: &str| serde_yaml::from_str::<serde_yaml::Mapping>(yaml).unwrap();
        assert_eq!(readiness_path(&conf("type: service")), "/health");
        assert_eq!(readiness_path(&conf("probes: [{type: http, url: /v1/models}]")), "/v1/models");
        assert_eq!(readiness_path(&conf("probes: [{url: ready}]")), "/ready");
    }

    #[test]
    fn run_names_follow_dstack_rules() {
        assert!(check_run_name("qwen-sglang-2").is_ok());
        for bad in ["Qwen", "1abc", "a", "has_underscore"] {
            let err = check_run_name(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && !err.contains("parallel round"), "{err}");
        }
        // A slot's name: the service name plus `-s<slot>`, valid up to 41 characters in all.
        let service = "a".repeat(38);
        assert!(check_run_name(&format!("{service}-s1")).is_ok());
        let err = check_run_name(&format!("{service}x-s1")).unwrap_err().to_string();
        assert!(err.contains("parallel round") && err.contains("at most 38 characters"), "{err}");
        let err = check_run_name(&format!("{service}-s10")).unwrap_err().to_string();
        assert!(err.contains("at most 37 characters"), "{err}");
    }

    #[test]
    fn valueless_env_comes_from_the_environment_or_fails_by_name() {
        let mut conf = serde_json::json!({"env": ["A=1", "AUTODEBUG_TEST_SURELY_UNSET_VAR"]});
        let err = resolve_env(&mut conf, "svc").unwrap_err().to_string();
        assert!(err.contains("AUTODEBUG_TEST_SURELY_UNSET_VAR") && err.contains("svc"), "{err}");
        let mut conf = serde_json::json!({"env": ["A=1", "PATH"]});
        resolve_env(&mut conf, "svc").unwrap();
        assert!(conf["env"][1].as_str().unwrap().starts_with("PATH=/"));
    }

    #[test]
    fn render_only_cannot_deploy_and_says_why() {
        let deployer = DstackDeployer::render_only(Value::Null);
        let spec = ServiceSpec::new("svc", autodebug_core::EngineKind::Sglang, "m");
        let err = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(deployer.deploy(&spec))
            .unwrap_err();
        assert!(err.to_string().contains("render_only"), "{err}");
        assert!(deployer.render(&spec).unwrap().content.contains("sglang.launch_server"));
    }
}
