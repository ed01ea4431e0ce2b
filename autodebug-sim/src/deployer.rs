//! [`SimDeployer`]: the simulated engine deployed inside the calling process, for examples, tests and
//! embedding (no binary to find, no child process). The `autodebug` binary deploys the same engine
//! as a real child process through `autodebug-deploy`'s local deployer instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use autodebug_core::{
    Artifact, Deployer, Deployment, Endpoint, Error, LogLine, Result, ServiceSpec, TimeWindow, async_trait, shell_quote,
};

use crate::SimConfig;
use crate::server::{self, Level, ServeOptions};

/// One engine served by this process.
struct Served {
    task: tokio::task::JoinHandle<()>,
    base_url: String,
    model_name: String,
    logs: Vec<LogLine>,
    stopped: bool,
}

/// Deploys the simulator in-process: each deployment is an engine thread plus an HTTP server task
/// on a free loopback port. The GPU comes from `resources.gpu` (default `H100`), engine flags from
/// the spec. A bad flag or a startup OOM fails `deploy` with the engine's own message.
///
/// ```no_run
/// # async fn demo() -> autodebug_core::Result<()> {
/// use autodebug_core::{Deployer, EngineKind, ServiceSpec};
/// let deployer = autodebug_sim::SimDeployer::new();
/// let spec = ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat").with_gpu("H100:1");
/// let deployment = deployer.deploy(&spec).await?;
/// let endpoint = deployer.wait_ready(&deployment, std::time::Duration::from_secs(5)).await?;
/// println!("serving at {}", endpoint.base_url);
/// deployer.teardown(&deployment).await?;
/// # Ok(()) }
/// ```
pub struct SimDeployer {
    seed: u64,
    next_id: AtomicU64,
    served: Mutex<HashMap<String, Served>>,
}

impl Default for SimDeployer {
    fn default() -> Self {
        Self::new()
    }
}

impl SimDeployer {
    pub fn new() -> Self {
        SimDeployer { seed: 0, next_id: AtomicU64::new(1), served: Mutex::new(HashMap::new()) }
    }

    /// Seeds the engine's noise, so two runs of a test see the same figures.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn config(spec: &ServiceSpec) -> Result<SimConfig> {
        let (gpu, count) = spec.resources.gpu_name_and_count().unwrap_or_else(|| ("H100".to_string(), 1));
        let gpu = if count > 1 { format!("{gpu}:{count}") } else { gpu };
        SimConfig::from_args(spec.engine, &gpu, &spec.model, &spec.flags.to_args())
            .map_err(|e| Error::rejected(e.to_string()))
    }

    fn served(&self) -> std::sync::MutexGuard<'_, HashMap<String, Served>> {
        self.served.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for SimDeployer {
    fn drop(&mut self) {
        for (_, served) in self.served().drain() {
            served.task.abort();
        }
    }
}

#[async_trait]
impl Deployer for SimDeployer {
    fn name(&self) -> &str {
        "sim"
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        let gpu = spec.resources.gpu.clone().unwrap_or_else(|| "H100:1".to_string());
        let mut command = vec![
            "autodebug".to_string(),
            "sim".into(),
            "serve".into(),
            "--engine".into(),
            spec.engine.as_str().into(),
            "--gpu".into(),
            gpu,
            "--model".into(),
            spec.model.clone(),
            "--port".into(),
            "${PORT:-30000}".into(),
            "--".into(),
        ];
        command.extend(spec.flags.to_args());
        let line: Vec<String> =
            command.iter().map(|a| if a.starts_with("${") { format!("\"{a}\"") } else { shell_quote(a) }).collect();
        Ok(Artifact {
            target: "sim".into(),
            extension: "sh".into(),
            content: format!(
                "#!/usr/bin/env bash\n# {}: the simulated engine\nset -euo pipefail\nexec {}\n",
                spec.name,
                line.join(" ")
            ),
        })
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        let config = Self::config(spec)?;
        let engine_kind = config.engine;
        let started_ns = TimeWindow::now_ns();
        let engine = server::start_engine(config, self.seed, true).map_err(|e| Error::rejected(e.to_string()))?;
        let logs = engine
            .startup_log()
            .iter()
            .map(|line| LogLine { time_ns: started_ns, text: server::format_line(engine_kind, Level::Info, line) })
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::deploy(format!("cannot bind a loopback port for the simulator: {e}")).caused_by(e))?;
        let address = listener.local_addr().map_err(|e| Error::deploy(e.to_string()).caused_by(e))?;
        let model_name = spec.flags.get("--served-model-name").flatten().unwrap_or(&spec.model).to_string();
        let options =
            ServeOptions { seed: self.seed, model_name: Some(model_name.clone()), quiet: true, ..Default::default() };
        let task = tokio::spawn(async move {
            if let Err(e) = server::serve_engine(engine, listener, options).await {
                tracing::warn!(error = %e, "simulator server stopped");
            }
        });
        let id = format!("sim-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let base_url = format!("http://{address}");
        self.served().insert(id.clone(), Served { task, base_url: base_url.clone(), model_name, logs, stopped: false });
        let mut details = std::collections::BTreeMap::new();
        details.insert("base_url".to_string(), base_url);
        Ok(Deployment { id, backend: "sim".into(), spec: spec.clone(), started_ns, details })
    }

    async fn wait_ready(&self, deployment: &Deployment, _timeout: Duration) -> Result<Endpoint> {
        let served = self.served();
        match served.get(&deployment.id) {
            Some(s) if !s.stopped && !s.task.is_finished() => {
                Ok(Endpoint::new(s.base_url.clone(), s.model_name.clone()))
            }
            Some(_) => Err(Error::deploy(format!("simulator {} stopped serving", deployment.id))),
            None => Err(Error::infrastructure(format!("no running simulator {} (already torn down?)", deployment.id))),
        }
    }

    async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
        let served = self.served();
        let logs = served.get(&deployment.id).map(|s| s.logs.clone()).unwrap_or_default();
        Ok(logs.into_iter().filter(|l| since_ns.is_none_or(|t| l.time_ns >= t)).collect())
    }

    async fn teardown(&self, deployment: &Deployment) -> Result<()> {
        if let Some(served) = self.served().get_mut(&deployment.id) {
            served.task.abort();
            served.stopped = true;
        }
        Ok(())
    }
}
