//! Conformance suites that every implementation of the loop's traits runs, after
//! object_store's `integration.rs`: one shared set of checks, so a new backend proves it
//! behaves like the others by calling one function from its own tests.
//!
//! These are test support: they panic with a message naming the backend and the broken
//! promise, and bound every call in time so a hang fails instead of stalling. Run them against
//! the simulator (or any real engine, metrics server or recorded data) in an async test:
//!
//! ```no_run
//! # async fn demo(
//! #     deployer: &dyn autodebug_core::Deployer,
//! #     bench: &dyn autodebug_core::Benchmarker,
//! #     source: &dyn autodebug_core::TelemetrySource,
//! #     target: &autodebug_core::Target<'_>,
//! # ) {
//! use autodebug_core::testing::{benchmarker_conformance, deployer_conformance, telemetry_conformance};
//! use autodebug_core::{BenchPlan, EngineKind, Load, ServiceSpec, TimeWindow, Workload};
//! let good = ServiceSpec::new("sim", EngineKind::Sglang, "qwen1.5-0.5b").with_flag("--schedule-policy", Some("lpm"));
//! let bad = good.clone().with_flag("--bogus-flag", None);
//! deployer_conformance(deployer, &good, &bad).await;
//!
//! let plan = BenchPlan::new("conformance", Workload::new(32, 8), Load::Sequential, 4).with_warmup(1);
//! benchmarker_conformance(bench, target.endpoint, &plan).await;
//!
//! // A window the source has data for: the suite wants at least one signal from it.
//! let window = TimeWindow::new(TimeWindow::now_ns() - 60_000_000_000, TimeWindow::now_ns());
//! telemetry_conformance(source, target, window).await;
//! # }
//! ```
//!
//! A panic in the middle of a suite may leave a deployment running; backends are expected
//! to stop what they own when dropped (the local deployer does).

mod benchmarker;
mod deployer;
mod telemetry;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::TimeWindow;

pub use benchmarker::{BenchmarkerConformance, benchmarker_conformance, benchmarker_conformance_with};
pub use deployer::{DeployerConformance, deployer_conformance, deployer_conformance_with};
pub use telemetry::{TelemetryConformance, telemetry_conformance, telemetry_conformance_with};

/// A planner that proposes the configuration it was given, unchanged: for tests of the loop
/// (deploy, benchmark, telemetry, store) in which planning is beside the point.
pub struct Unchanged;

#[async_trait::async_trait]
impl crate::Planner for Unchanged {
    fn name(&self) -> &str {
        "unchanged"
    }

    async fn plan(&self, input: crate::PlanInput<'_>) -> crate::Result<crate::Plan> {
        Ok(crate::Plan {
            planner: "unchanged".into(),
            changes: vec![],
            next: input.current.clone(),
            exhausted: false,
            notes: vec![],
        })
    }
}

/// A telemetry source that records the window of every fetch and answers each with an empty
/// snapshot: for tests of which window the loop reads telemetry for. Clones share one record,
/// so a test keeps a clone to read it after giving the source to a session.
#[derive(Clone, Default)]
pub struct WindowRecorder {
    fetched: Arc<Mutex<Vec<TimeWindow>>>,
}

impl WindowRecorder {
    /// The windows fetched so far, in the order they were asked for.
    pub fn fetched(&self) -> Vec<TimeWindow> {
        self.fetched.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl crate::TelemetrySource for WindowRecorder {
    fn name(&self) -> &str {
        "window-recorder"
    }

    async fn fetch(&self, _target: &crate::Target<'_>, window: TimeWindow) -> crate::Result<crate::TelemetrySnapshot> {
        self.fetched.lock().unwrap_or_else(|e| e.into_inner()).push(window);
        Ok(crate::TelemetrySnapshot::new(self.name(), Some(window)))
    }
}

/// A benchmarker whose every run fails: for sessions whose benchmarks must not run locally (they
/// run beside the service), so that a local run shows as a failed benchmark naming the mistake.
pub struct NoLocalBenchmark;

#[async_trait::async_trait]
impl crate::Benchmarker for NoLocalBenchmark {
    fn name(&self) -> &str {
        "no-local-benchmark"
    }

    async fn run(&self, _endpoint: &crate::Endpoint, _plan: &crate::BenchPlan) -> crate::Result<crate::BenchReport> {
        Err(crate::Error::Bench("the local benchmarker ran although the benchmarks run beside the service".into()))
    }
}

/// One call of the suite, failed with a clear message when it does not return in time.
struct Bounded {
    backend: String,
    what: String,
    bound: Duration,
}

impl Bounded {
    async fn run<T>(&self, call: impl Future<Output = T>) -> T {
        let outcome = {
            let _blame = BlameOnPanic(self);
            tokio::time::timeout(self.bound, call).await
        };
        match outcome {
            Ok(value) => value,
            Err(_) => panic!("{}: {} did not return within {:?}", self.backend, self.what, self.bound),
        }
    }
}

/// Names the call a backend panicked in: the backend's own panic message rarely says which
/// promise of the suite it broke.
struct BlameOnPanic<'a>(&'a Bounded);

impl Drop for BlameOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}: panicked during {}", self.0.backend, self.0.what);
        }
    }
}

/// The base URL of a loopback port that was free a moment ago: nothing listens there, so
/// connections to it are refused at once.
fn refused_base_url() -> String {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()) {
        Ok(address) => format!("http://{address}"),
        Err(e) => panic!("cannot bind a loopback port to find one nobody listens on: {e}"),
    }
}
