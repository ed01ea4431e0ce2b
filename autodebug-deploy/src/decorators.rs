//! Deployers that wrap any other [`Deployer`] and implement the same trait, in the manner of
//! object_store's `LimitStore`/`ThrottledStore` and tower's layers: behaviour is added by
//! wrapping, not by flags inside each backend.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autodebug_core::beside::{BesideCommand, BesideOutput};
use autodebug_core::{
    Artifact, Deployer, Deployment, Endpoint, Error, ErrorKind, LogLine, Result, ServiceSpec, TimeWindow, async_trait,
};

use crate::process::lock;

type RetryPredicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// Whether an error may go away on a second try: only a [transient](ErrorKind::Transient) one. A
/// rejected configuration fails again unchanged, broken infrastructure needs a person, and an
/// interruption must not be retried.
pub fn is_retryable(error: &Error) -> bool {
    error.kind() == ErrorKind::Transient
}

/// Retries failed `deploy` and `wait_ready` calls with exponential backoff.
///
/// A `wait_ready` failure tears the failed attempt down and deploys the same spec again;
/// the caller keeps using the [`Deployment`] it first got, and `logs`/`teardown` reach the
/// attempt that is current. Each attempt gets the full `wait_ready` timeout, so the worst
/// case is `(max_retries + 1) × timeout` plus backoff. A deployment the caller tore down is
/// never deployed again.
pub struct Retrying<D> {
    inner: D,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    retry_if: RetryPredicate,
    /// The caller's deployment id → the attempt currently standing in for it.
    current: Mutex<HashMap<String, Deployment>>,
    /// Caller deployment ids torn down on purpose: never brought back by a retry.
    torn_down: Mutex<HashSet<String>>,
}

impl<D: Deployer> Retrying<D> {
    /// Retries each failing call up to `max_retries` times (so `max_retries + 1` attempts).
    pub fn new(inner: D, max_retries: u32) -> Self {
        Retrying {
            inner,
            max_retries,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            retry_if: Arc::new(is_retryable),
            current: Mutex::new(HashMap::new()),
            torn_down: Mutex::new(HashSet::new()),
        }
    }

    /// Waits `initial` before the first retry, doubling up to `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Retries only errors for which `predicate` is true (default: [`is_retryable`]).
    pub fn retry_if(mut self, predicate: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Arc::new(predicate);
        self
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn into_inner(self) -> D {
        self.inner
    }

    fn delay(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    fn current_for(&self, deployment: &Deployment) -> Deployment {
        lock(&self.current).get(&deployment.id).cloned().unwrap_or_else(|| deployment.clone())
    }

    fn gave_up(&self, error: Error, attempts: u32) -> Error {
        if attempts <= 1 {
            return error;
        }
        match error {
            Error::Deploy { message, kind, source } => {
                Error::Deploy { message: format!("{message} (gave up after {attempts} attempts)"), kind, source }
            }
            Error::NotReady { name, waited_s, message } => {
                Error::NotReady { name, waited_s, message: format!("{message} (gave up after {attempts} attempts)") }
            }
            other => other,
        }
    }

    /// Deploys `spec`, retrying; `attempts_used` counts attempts already spent by the caller.
    async fn deploy_counting(&self, spec: &ServiceSpec, attempts_used: &mut u32) -> Result<Deployment> {
        loop {
            *attempts_used += 1;
            match self.inner.deploy(spec).await {
                Ok(deployment) => return Ok(deployment),
                Err(error) => {
                    if *attempts_used > self.max_retries || !(self.retry_if)(&error) {
                        return Err(self.gave_up(error, *attempts_used));
                    }
                    let delay = self.delay(*attempts_used);
                    tracing::warn!(service = %spec.name, attempt = *attempts_used, ?delay, %error, "deploy failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[async_trait]
impl<D: Deployer> Deployer for Retrying<D> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        self.inner.render(spec)
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        let mut attempts = 0;
        self.deploy_counting(spec, &mut attempts).await
    }

    async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint> {
        let mut attempt_deployment = self.current_for(deployment);
        if lock(&self.torn_down).contains(&deployment.id) {
            return self.inner.wait_ready(&attempt_deployment, timeout).await;
        }
        let mut attempts = 1;
        loop {
            let error = match self.inner.wait_ready(&attempt_deployment, timeout).await {
                Ok(endpoint) => return Ok(endpoint),
                Err(error) => error,
            };
            if attempts > self.max_retries || !(self.retry_if)(&error) {
                return Err(self.gave_up(error, attempts));
            }
            tracing::warn!(service = %deployment.spec.name, attempt = attempts, %error, "not ready; tearing down and deploying again");
            if let Err(teardown_error) = self.inner.teardown(&attempt_deployment).await {
                tracing::warn!(id = %attempt_deployment.id, %teardown_error, "could not tear down the failed attempt");
            }
            tokio::time::sleep(self.delay(attempts)).await;
            attempt_deployment = self.deploy_counting(&deployment.spec, &mut attempts).await?;
            lock(&self.current).insert(deployment.id.clone(), attempt_deployment.clone());
        }
    }

    async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
        self.inner.logs(&self.current_for(deployment), since_ns).await
    }

    async fn teardown(&self, deployment: &Deployment) -> Result<()> {
        lock(&self.torn_down).insert(deployment.id.clone());
        self.inner.teardown(&self.current_for(deployment)).await
    }

    /// Beside the attempt that is current, not retried: a failed run is the benchmark's result.
    async fn run_beside(&self, deployment: &Deployment, command: &BesideCommand) -> Result<BesideOutput> {
        self.inner.run_beside(&self.current_for(deployment), command).await
    }
}

/// Renders only: `deploy` starts nothing and returns a placeholder [`Deployment`] whose
/// `wait_ready` fails with a "dry run" error, so a session stops right after writing its
/// first deployable file.
pub struct DryRun<D> {
    inner: D,
    next_id: AtomicU64,
}

impl<D: Deployer> DryRun<D> {
    pub fn new(inner: D) -> Self {
        DryRun { inner, next_id: AtomicU64::new(1) }
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn into_inner(self) -> D {
        self.inner
    }
}

#[async_trait]
impl<D: Deployer> Deployer for DryRun<D> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        self.inner.render(spec)
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        // Rendering surfaces the same spec errors a real deploy would.
        let artifact = self.inner.render(spec)?;
        let id = format!("dry-run-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut details = std::collections::BTreeMap::new();
        details.insert("dry_run".to_string(), "true".to_string());
        details.insert("artifact".to_string(), format!("{}.{}", artifact.target, artifact.extension));
        Ok(Deployment {
            id,
            backend: self.inner.name().to_string(),
            spec: spec.clone(),
            started_ns: TimeWindow::now_ns(),
            details,
        })
    }

    async fn wait_ready(&self, deployment: &Deployment, _timeout: Duration) -> Result<Endpoint> {
        // Not a failure another try could fix: nothing was started on purpose.
        Err(Error::infrastructure(format!(
            "dry run: service `{}` was rendered for the {} backend but not started (deployment {}); run without dry run to deploy it",
            deployment.spec.name,
            self.inner.name(),
            deployment.id
        )))
    }

    async fn logs(&self, _deployment: &Deployment, _since_ns: Option<i128>) -> Result<Vec<LogLine>> {
        Ok(Vec::new())
    }

    async fn teardown(&self, _deployment: &Deployment) -> Result<()> {
        Ok(())
    }

    /// Nothing was started, so nothing can run beside it: the same "dry run" answer as `wait_ready`.
    async fn run_beside(&self, deployment: &Deployment, _command: &BesideCommand) -> Result<BesideOutput> {
        Err(Error::infrastructure(format!(
            "dry run: service `{}` was not started (deployment {}), so nothing runs beside it; run without dry run",
            deployment.spec.name, deployment.id
        )))
    }
}

/// Runs on one deployer and renders with another: the loop measures the simulator while the trail
/// records, for each iteration, the complete file the target platform would apply (e.g. a Slurm
/// sbatch script or a dstack service for the real engine) — a preview of a real campaign.
pub struct RenderAs<D, R> {
    inner: D,
    renderer: R,
}

impl<D: Deployer, R: Deployer> RenderAs<D, R> {
    pub fn new(inner: D, renderer: R) -> Self {
        RenderAs { inner, renderer }
    }
}

#[async_trait]
impl<D: Deployer, R: Deployer> Deployer for RenderAs<D, R> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        self.renderer.render(spec)
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        self.inner.deploy(spec).await
    }

    async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint> {
        self.inner.wait_ready(deployment, timeout).await
    }

    async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
        self.inner.logs(deployment, since_ns).await
    }

    async fn teardown(&self, deployment: &Deployment) -> Result<()> {
        self.inner.teardown(deployment).await
    }

    async fn run_beside(&self, deployment: &Deployment, command: &BesideCommand) -> Result<BesideOutput> {
        self.inner.run_beside(deployment, command).await
    }
}
