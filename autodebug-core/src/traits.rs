use std::time::Duration;

use async_trait::async_trait;

use crate::{
    Analysis, Artifact, BenchPlan, BenchReport, Deployment, Endpoint, Evidence, History, LogLine, Objective, Plan,
    Result, SearchSpace, ServiceSpec, TelemetrySnapshot, TimeWindow,
};

/// Starts, watches and stops an inference service.
#[async_trait]
pub trait Deployer: Send + Sync {
    /// Short backend name (`local`, `dstack`, `slurm`, `kubernetes`).
    fn name(&self) -> &str;

    /// The complete deployable file for `spec`, as written into the session trail.
    fn render(&self, spec: &ServiceSpec) -> Result<Artifact>;

    /// Submits the service; returns as soon as the backend accepted it.
    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment>;

    /// Waits until the service answers health checks, or fails with the backend's reason.
    async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint>;

    /// Service output since `since_ns` (all of it when `None`).
    async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>>;

    /// Stops the service and frees what it held. Safe to call twice.
    async fn teardown(&self, deployment: &Deployment) -> Result<()>;
}

/// Forwards to the boxed deployer, so decorators can wrap a `Box<dyn Deployer>` chosen at run time.
#[async_trait]
impl<T: Deployer + ?Sized> Deployer for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        (**self).render(spec)
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        (**self).deploy(spec).await
    }

    async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint> {
        (**self).wait_ready(deployment, timeout).await
    }

    async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
        (**self).logs(deployment, since_ns).await
    }

    async fn teardown(&self, deployment: &Deployment) -> Result<()> {
        (**self).teardown(deployment).await
    }
}

/// Sends load to an endpoint and measures it.
#[async_trait]
pub trait Benchmarker: Send + Sync {
    fn name(&self) -> &str;

    async fn run(&self, endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport>;
}

/// What a telemetry source may read about the service under test.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub deployment: &'a Deployment,
    pub endpoint: &'a Endpoint,
    /// Service logs read so far, for sources that parse them.
    pub logs: &'a [LogLine],
}

/// Reads telemetry for a time window.
#[async_trait]
pub trait TelemetrySource: Send + Sync {
    fn name(&self) -> &str;

    /// Called right before the benchmark window opens (e.g. to take a first scrape).
    async fn begin(&self, _target: &Target<'_>) -> Result<()> {
        Ok(())
    }

    /// The signals for `window`.
    async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> Result<TelemetrySnapshot>;
}

/// Turns evidence into metrics and findings that cite signals.
#[async_trait]
pub trait Analyzer: Send + Sync {
    fn name(&self) -> &str;

    async fn analyze(&self, evidence: &Evidence<'_>) -> Result<Analysis>;
}

/// What a planner gets to decide the next configuration.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub history: &'a History,
    pub analysis: &'a Analysis,
    pub space: &'a SearchSpace,
    /// The configuration to plan from: the last one that deployed and ran.
    pub current: &'a ServiceSpec,
    pub objective: &'a Objective,
}

/// Proposes the next configuration.
#[async_trait]
pub trait Planner: Send + Sync {
    fn name(&self) -> &str;

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan>;
}
