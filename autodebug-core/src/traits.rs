use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::beside::{BesideCommand, BesideOutput};
use crate::{
    Analysis, Artifact, BenchPlan, BenchReport, Deployment, Endpoint, Evidence, History, LogLine, Objective, Plan,
    Result, SearchSpace, ServiceSpec, TelemetrySnapshot, TimeWindow,
};

/// Implements a trait for `Box<T>` and `Arc<T>` by forwarding to `T`, so a `Box<dyn Trait>` or
/// `Arc<dyn Trait>` chosen at run time goes wherever an `impl Trait` is wanted (decorators,
/// builders). Every method must be listed, provided ones too: one left out would run the trait's
/// default and silently drop the pointee's override.
macro_rules! forward_through_pointers {
    ($trait:ident { $($methods:tt)* }) => {
        #[doc = concat!("Forwards every method to the boxed [`", stringify!($trait), "`].")]
        #[async_trait]
        impl<T: $trait + ?Sized> $trait for Box<T> {
            $($methods)*
        }

        #[doc = concat!("Forwards every method to the shared [`", stringify!($trait), "`].")]
        #[async_trait]
        impl<T: $trait + ?Sized> $trait for Arc<T> {
            $($methods)*
        }
    };
}

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

    /// Runs `command` beside a ready deployment (on its machine, as a job of the same engine:
    /// a child process, a Slurm job step inside the service's job), with
    /// [`SERVICE_URL`](crate::beside::SERVICE_URL) in its arguments replaced by the service's URL
    /// as seen from there and [`env`](BesideCommand::env) in its environment only, and returns
    /// what it printed once it exits or its timeout stops it. An error means it could not be
    /// started at all; a command that ran and failed is an output with its exit code.
    ///
    /// The default refuses: a backend that cannot run anything beside its service says so, as
    /// a rejected configuration (the same setting fails again).
    async fn run_beside(&self, deployment: &Deployment, command: &BesideCommand) -> Result<BesideOutput> {
        let _ = (deployment, command);
        Err(crate::Error::config(
            format!("deployer {}", self.name()),
            "this deployer cannot run a benchmark beside its service; remove `bench_beside` from the configuration, or use the local, slurm or dstack deployer",
        ))
    }
}

forward_through_pointers!(Deployer {
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

    async fn run_beside(&self, deployment: &Deployment, command: &BesideCommand) -> Result<BesideOutput> {
        (**self).run_beside(deployment, command).await
    }
});

/// Sends load to an endpoint and measures it.
#[async_trait]
pub trait Benchmarker: Send + Sync {
    /// Short, non-empty name of the load generator (`sse`).
    fn name(&self) -> &str;

    /// Runs `plan`. The report has one record per measured request (`plan.requests` per trial,
    /// warmup left out; at most that many with `plan.duration_ms`), and its window holds every
    /// record's send (`scheduled_ns + queue_delay_ns`) and end (`scheduled_ns + e2e_ns`). A request
    /// that succeeded has a TTFT no later than its e2e and at least one output token. A request
    /// that fails, even for an endpoint nobody listens on, is a record with its error class, or
    /// the whole run fails with a message, within the plan's timeouts.
    async fn run(&self, endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport>;
}

forward_through_pointers!(Benchmarker {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn run(&self, endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport> {
        (**self).run(endpoint, plan).await
    }
});

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
    /// Short, non-empty source name; snapshots and their signals carry it as their `source`.
    fn name(&self) -> &str;

    /// Called right before the benchmark window opens (e.g. to take a first scrape).
    async fn begin(&self, _target: &Target<'_>) -> Result<()> {
        Ok(())
    }

    /// The signals for `window`: the snapshot's window, when set, is `window`; every signal has a
    /// name, and its value, when a number, is finite. A source that reads recorded data (a metrics server's
    /// history, trace files, logs) gives the same signals for the same target and window. An empty
    /// window or an endpoint that does not answer gives a snapshot or an error, within the
    /// source's own timeouts; an error names the source.
    async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> Result<TelemetrySnapshot>;
}

forward_through_pointers!(TelemetrySource {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn begin(&self, target: &Target<'_>) -> Result<()> {
        (**self).begin(target).await
    }

    async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> Result<TelemetrySnapshot> {
        (**self).fetch(target, window).await
    }
});

/// Turns evidence into metrics and findings that cite signals.
#[async_trait]
pub trait Analyzer: Send + Sync {
    fn name(&self) -> &str;

    async fn analyze(&self, evidence: &Evidence<'_>) -> Result<Analysis>;
}

forward_through_pointers!(Analyzer {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn analyze(&self, evidence: &Evidence<'_>) -> Result<Analysis> {
        (**self).analyze(evidence).await
    }
});

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

    /// Up to `k` distinct candidates for the next round of a parallel session.
    ///
    /// The default asks [`plan`](Self::plan) again for each slot with the candidates so far in
    /// the history as if each had measured what the champion did (the "constant liar" of batch
    /// Bayesian optimization), so a search planner spreads its batch instead of proposing one
    /// point `k` times; a planner that repeats itself or is exhausted ends the batch early.
    async fn plan_batch(&self, input: PlanInput<'_>, k: usize) -> Result<Vec<Plan>> {
        let mut history = input.history.clone();
        let liar = history.champion(input.objective).or_else(|| history.last_ok()).cloned();
        let mut plans: Vec<Plan> = Vec::new();
        for _ in 0..k.max(1) * 2 {
            if plans.len() >= k.max(1) {
                break;
            }
            let plan = self.plan(PlanInput { history: &history, ..input }).await?;
            let repeated = plans.iter().any(|p| p.next.flags == plan.next.flags);
            if repeated || (plan.exhausted && !plans.is_empty()) {
                break;
            }
            let exhausted = plan.exhausted;
            let number = history.iterations.iter().map(|i| i.number).max().unwrap_or(0) + 1;
            // Nothing measured yet to lie with: the candidate stands in as still running.
            let pretend = match &liar {
                Some(liar) => crate::Iteration { number, spec: plan.next.clone(), plan: None, ..liar.clone() },
                None => crate::Iteration {
                    number,
                    spec: plan.next.clone(),
                    artifact: None,
                    status: crate::IterationStatus::Running,
                    metrics: Default::default(),
                    bench: Default::default(),
                    analysis: Default::default(),
                    plan: None,
                    error: None,
                    started_ns: 0,
                    finished_ns: 0,
                    timings: Default::default(),
                    round: None,
                },
            };
            history.iterations.push(pretend);
            plans.push(plan);
            if exhausted {
                break;
            }
        }
        Ok(plans)
    }
}

forward_through_pointers!(Planner {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        (**self).plan(input).await
    }

    async fn plan_batch(&self, input: PlanInput<'_>, k: usize) -> Result<Vec<Plan>> {
        (**self).plan_batch(input, k).await
    }
});

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{EngineKind, Load, Workload};

    /// Answers every call with something that depends on its arguments, so a forwarder that drops
    /// or swaps an argument fails; counts the calls whose answer carries nothing.
    #[derive(Default)]
    struct Probe {
        calls: Arc<AtomicUsize>,
    }

    fn spec() -> ServiceSpec {
        ServiceSpec::new("svc", EngineKind::Sglang, "m")
    }

    fn deployment() -> Deployment {
        let details = Default::default();
        Deployment { id: "probe-1".into(), backend: "probe".into(), spec: spec(), started_ns: 7, details }
    }

    fn endpoint() -> Endpoint {
        Endpoint::new("http://probe.invalid", "m")
    }

    #[async_trait]
    impl Deployer for Probe {
        fn name(&self) -> &str {
            "probe"
        }

        fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
            Ok(Artifact { target: "probe".into(), extension: "sh".into(), content: spec.name.clone() })
        }

        async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
            Ok(Deployment { spec: spec.clone(), ..deployment() })
        }

        async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint> {
            Ok(Endpoint::new(format!("http://{}.invalid:{}", deployment.id, timeout.as_secs()), "m"))
        }

        async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
            Ok(vec![LogLine { time_ns: since_ns.unwrap_or(-1), text: deployment.id.clone() }])
        }

        async fn teardown(&self, _deployment: &Deployment) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        async fn run_beside(&self, deployment: &Deployment, command: &BesideCommand) -> Result<BesideOutput> {
            let args = command.args_for(&format!("http://{}.local", deployment.id));
            Ok(BesideOutput { stdout: args.join(" "), exit_code: Some(0), ..Default::default() })
        }
    }

    #[async_trait]
    impl Benchmarker for Probe {
        fn name(&self) -> &str {
            "probe"
        }

        async fn run(&self, endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport> {
            Ok(BenchReport {
                plan: plan.clone(),
                context: Default::default(),
                summary: Default::default(),
                records: Vec::new(),
                window: TimeWindow::new(0, 1),
                warnings: vec![endpoint.base_url.clone()],
            })
        }
    }

    #[async_trait]
    impl TelemetrySource for Probe {
        fn name(&self) -> &str {
            "probe"
        }

        async fn begin(&self, _target: &Target<'_>) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> Result<TelemetrySnapshot> {
            let mut snapshot = TelemetrySnapshot::new("probe", Some(window));
            snapshot.warnings.push(target.deployment.id.clone());
            Ok(snapshot)
        }
    }

    #[async_trait]
    impl Analyzer for Probe {
        fn name(&self) -> &str {
            "probe"
        }

        async fn analyze(&self, evidence: &Evidence<'_>) -> Result<Analysis> {
            let mut analysis = Analysis::default();
            analysis.metrics.insert("logs".into(), evidence.logs.len() as f64);
            Ok(analysis)
        }
    }

    #[async_trait]
    impl Planner for Probe {
        fn name(&self) -> &str {
            "probe"
        }

        async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
            Ok(Plan {
                planner: input.objective.metric.clone(),
                changes: Vec::new(),
                next: input.current.clone(),
                exhausted: true,
                notes: Vec::new(),
            })
        }
    }

    /// A `Box<dyn Trait>` and an `Arc<dyn Trait>` around one fresh probe each, and their call counters.
    macro_rules! pointers_to_probe {
        ($trait:ident) => {{
            let (boxed, shared) = (Probe::default(), Probe::default());
            let counters = [boxed.calls.clone(), shared.calls.clone()];
            let boxed: Box<dyn $trait> = Box::new(boxed);
            let shared: Arc<dyn $trait> = Arc::new(shared);
            (boxed, shared, counters)
        }};
    }

    async fn drive_deployer(deployer: impl Deployer, calls: &AtomicUsize) {
        assert_eq!(deployer.name(), "probe");
        assert_eq!(deployer.render(&spec()).unwrap().content, "svc");
        let deployed = deployer.deploy(&spec()).await.unwrap();
        assert_eq!(deployed.spec, spec());
        let ready = deployer.wait_ready(&deployed, Duration::from_secs(9)).await.unwrap();
        assert_eq!(ready.base_url, "http://probe-1.invalid:9");
        let logs = deployer.logs(&deployed, Some(42)).await.unwrap();
        assert_eq!((logs[0].time_ns, logs[0].text.as_str()), (42, "probe-1"));
        deployer.teardown(&deployed).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // `run_beside` has a default that refuses; only the probe's own override answers.
        let command = BesideCommand {
            program: "autodebug".into(),
            args: vec!["--url".into(), crate::beside::SERVICE_URL.into()],
            env: Vec::new(),
            timeout: Duration::from_secs(1),
        };
        let output =
            deployer.run_beside(&deployed, &command).await.expect("the pointee's `run_beside` was not forwarded");
        assert_eq!(output.stdout, "--url http://probe-1.local");
    }

    /// A deployer that keeps every provided method's default.
    struct Plain;

    #[async_trait]
    impl Deployer for Plain {
        fn name(&self) -> &str {
            "plain"
        }

        fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
            Probe::default().render(spec)
        }

        async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
            Probe::default().deploy(spec).await
        }

        async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint> {
            Probe::default().wait_ready(deployment, timeout).await
        }

        async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
            Probe::default().logs(deployment, since_ns).await
        }

        async fn teardown(&self, _deployment: &Deployment) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_deployer_that_cannot_run_beside_its_service_refuses_as_a_rejected_configuration() {
        let command =
            BesideCommand { program: "autodebug".into(), args: Vec::new(), env: Vec::new(), timeout: Duration::ZERO };
        let error = Plain.run_beside(&deployment(), &command).await.unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::RejectedConfig);
        let text = error.to_string();
        assert!(text.contains("deployer plain") && text.contains("bench_beside"), "{text}");
    }

    #[tokio::test]
    async fn box_and_arc_are_deployers() {
        let (boxed, shared, [boxed_calls, shared_calls]) = pointers_to_probe!(Deployer);
        drive_deployer(boxed, &boxed_calls).await;
        drive_deployer(shared, &shared_calls).await;
    }

    async fn drive_benchmarker(benchmarker: impl Benchmarker) {
        assert_eq!(benchmarker.name(), "probe");
        let plan = BenchPlan::new("chat", Workload::new(31, 150), Load::Sequential, 3);
        let report = benchmarker.run(&endpoint(), &plan).await.unwrap();
        assert_eq!((report.plan, report.warnings), (plan, vec!["http://probe.invalid".to_string()]));
    }

    #[tokio::test]
    async fn box_and_arc_are_benchmarkers() {
        let (boxed, shared, _) = pointers_to_probe!(Benchmarker);
        drive_benchmarker(boxed).await;
        drive_benchmarker(shared).await;
    }

    async fn drive_telemetry(source: impl TelemetrySource, calls: &AtomicUsize) {
        let (deployment, endpoint) = (deployment(), endpoint());
        let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
        assert_eq!(source.name(), "probe");
        // `begin` has a default that does nothing; only the probe's own override counts.
        source.begin(&target).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the pointee's `begin` override was not forwarded");
        let snapshot = source.fetch(&target, TimeWindow::new(5, 6)).await.unwrap();
        assert_eq!((snapshot.window, snapshot.warnings), (Some(TimeWindow::new(5, 6)), vec!["probe-1".to_string()]));
    }

    #[tokio::test]
    async fn box_and_arc_are_telemetry_sources_and_keep_overrides() {
        let (boxed, shared, [boxed_calls, shared_calls]) = pointers_to_probe!(TelemetrySource);
        drive_telemetry(boxed, &boxed_calls).await;
        drive_telemetry(shared, &shared_calls).await;
    }

    async fn drive_analyzer(analyzer: impl Analyzer) {
        let (spec, history) = (spec(), History::default());
        let logs = [LogLine { time_ns: 0, text: "a".into() }, LogLine { time_ns: 1, text: "b".into() }];
        let evidence = Evidence { spec: &spec, bench: &[], logs: &logs, telemetry: &[], history: &history };
        assert_eq!(analyzer.name(), "probe");
        assert_eq!(analyzer.analyze(&evidence).await.unwrap().metrics.get("logs"), Some(&2.0));
    }

    #[tokio::test]
    async fn box_and_arc_are_analyzers() {
        let (boxed, shared, _) = pointers_to_probe!(Analyzer);
        drive_analyzer(boxed).await;
        drive_analyzer(shared).await;
    }

    async fn drive_planner(planner: impl Planner) {
        let (history, analysis) = (History::default(), Analysis::default());
        let (space, current) = (SearchSpace::for_engine(EngineKind::Sglang), spec());
        let objective = Objective::minimize("chat.e2e.mean");
        let objective = &objective;
        let input = PlanInput { history: &history, analysis: &analysis, space: &space, current: &current, objective };
        assert_eq!(planner.name(), "probe");
        let plan = planner.plan(input).await.unwrap();
        assert_eq!((plan.planner.as_str(), plan.next), ("chat.e2e.mean", current));
    }

    #[tokio::test]
    async fn box_and_arc_are_planners() {
        let (boxed, shared, _) = pointers_to_probe!(Planner);
        drive_planner(boxed).await;
        drive_planner(shared).await;
    }
}
