//! The suites against in-memory fakes: a fake that keeps every promise passes, and each
//! broken promise fails with a message that names it.

use async_trait::async_trait;

use super::*;
use crate::{
    BenchContext, BenchPlan, BenchReport, BenchSummary, Benchmarker, Deployment, Endpoint, EngineKind, Error,
    ErrorClass, Load, RequestRecord, Result, ServiceSpec, Signal, SignalKind, Target, TelemetrySnapshot,
    TelemetrySource, TimeWindow, Workload,
};

/// How a fake breaks the promises; `None` keeps them all.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    ForeignSignal,
    NotFinite,
    OtherWindow,
    Hangs,
    ChangesBetweenFetches,
    ErrorWithoutName,
    CountsWarmup,
    FirstTokenAfterEnd,
    WindowEndsEarly,
    SucceedsWithoutListener,
}

struct FakeSource {
    fault: Fault,
    fetches: std::sync::atomic::AtomicUsize,
}

fn source(fault: Fault) -> FakeSource {
    FakeSource { fault, fetches: Default::default() }
}

#[async_trait]
impl TelemetrySource for FakeSource {
    fn name(&self) -> &str {
        "fake"
    }

    async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> Result<TelemetrySnapshot> {
        let nth = self.fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.fault == Fault::Hangs {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if target.endpoint.base_url != SERVING {
            let message = format!("{} refused the connection", target.endpoint.base_url);
            return Err(match self.fault {
                Fault::ErrorWithoutName => Error::Bench(message),
                _ => Error::telemetry("fake", message),
            });
        }
        let answered = if self.fault == Fault::OtherWindow { TimeWindow::new(0, 1) } else { window };
        let mut snapshot = TelemetrySnapshot::new("fake", Some(answered));
        let value = match self.fault {
            Fault::NotFinite => f64::NAN,
            Fault::ChangesBetweenFetches => nth as f64,
            _ => 0.5,
        };
        let origin = if self.fault == Fault::ForeignSignal { "prometheus" } else { "fake" };
        snapshot.signals.push(Signal::number(origin, SignalKind::Metric, "kv_usage", value, "ratio"));
        snapshot.signals.push(Signal::text("fake", SignalKind::SpanAttribute, "engine.gpu", "H100"));
        Ok(snapshot)
    }
}

const SERVING: &str = "http://serving.invalid";

fn deployment() -> Deployment {
    let spec = ServiceSpec::new("svc", EngineKind::Sglang, "m");
    Deployment { id: "d".into(), backend: "fake".into(), spec, started_ns: 0, details: Default::default() }
}

async fn run_telemetry(fault: Fault, recorded: bool) {
    let (deployment, endpoint) = (deployment(), Endpoint::new(SERVING, "m"));
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let limits = TelemetryConformance { call_timeout: Duration::from_millis(200), recorded };
    telemetry_conformance_with(&source(fault), &target, TimeWindow::new(10, 20), limits).await;
}

#[tokio::test]
async fn a_source_that_keeps_its_promises_passes() {
    run_telemetry(Fault::None, true).await;
}

#[tokio::test]
#[should_panic(expected = "fake: fetch gave a signal of another source")]
async fn a_signal_of_another_source_fails() {
    run_telemetry(Fault::ForeignSignal, false).await;
}

#[tokio::test]
#[should_panic(expected = "fake: fetch gave a number that is not finite")]
async fn a_number_that_is_not_finite_fails() {
    run_telemetry(Fault::NotFinite, false).await;
}

#[tokio::test]
#[should_panic(expected = "fake: the snapshot of fetch is for another window")]
async fn a_snapshot_of_another_window_fails() {
    run_telemetry(Fault::OtherWindow, false).await;
}

#[tokio::test]
#[should_panic(expected = "fake: fetch did not return within 200ms")]
async fn a_fetch_that_hangs_fails() {
    run_telemetry(Fault::Hangs, false).await;
}

#[tokio::test]
#[should_panic(expected = "fake: recorded data, yet two fetches of one window differ")]
async fn recorded_data_that_changes_fails() {
    run_telemetry(Fault::ChangesBetweenFetches, true).await;
}

#[tokio::test]
async fn a_live_source_may_change_between_fetches() {
    run_telemetry(Fault::ChangesBetweenFetches, false).await;
}

#[tokio::test]
#[should_panic(expected = "fake: the error of fetch(unreachable endpoint) does not name the source")]
async fn an_error_that_does_not_name_the_source_fails() {
    run_telemetry(Fault::ErrorWithoutName, false).await;
}

struct FakeBench {
    fault: Fault,
}

const MS: i128 = 1_000_000;

#[async_trait]
impl Benchmarker for FakeBench {
    fn name(&self) -> &str {
        "fake-bench"
    }

    async fn run(&self, endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport> {
        if self.fault == Fault::Hangs {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let listening = endpoint.base_url == SERVING || self.fault == Fault::SucceedsWithoutListener;
        let mut count = plan.requests * plan.trials.max(1) as usize;
        if self.fault == Fault::CountsWarmup {
            count += plan.warmup_requests;
        }
        let base = 1_000 * MS;
        let records: Vec<RequestRecord> = (0..count)
            .map(|index| {
                let scheduled_ns = base + index as i128 * 10 * MS;
                let mut record = RequestRecord { index, scheduled_ns, ..Default::default() };
                if listening {
                    let ttft = if self.fault == Fault::FirstTokenAfterEnd { 9 * MS } else { MS };
                    record.ttft_ns = Some(ttft as u64);
                    (record.e2e_ns, record.output_tokens) = (Some(5 * MS as u64), Some(8));
                } else {
                    (record.error, record.error_message) = (Some(ErrorClass::Connect), Some("refused".into()));
                }
                record
            })
            .collect();
        let mut end = base + count as i128 * 10 * MS;
        if self.fault == Fault::WindowEndsEarly {
            end -= 8 * MS;
        }
        Ok(BenchReport {
            plan: plan.clone(),
            context: BenchContext::default(),
            summary: BenchSummary::default(),
            records,
            window: TimeWindow::new(base, end),
            warnings: Vec::new(),
        })
    }
}

async fn run_bench(fault: Fault, plan: BenchPlan) {
    let limits = BenchmarkerConformance { run_timeout: Duration::from_millis(200), ..Default::default() };
    let endpoint = Endpoint::new(SERVING, "m");
    benchmarker_conformance_with(&FakeBench { fault }, &endpoint, &plan, limits).await;
}

fn plan() -> BenchPlan {
    BenchPlan::new("conformance", Workload::new(16, 8), Load::Sequential, 3).with_warmup(2).with_trials(2)
}

#[tokio::test]
async fn a_benchmarker_that_keeps_its_promises_passes() {
    run_bench(Fault::None, plan()).await;
}

#[tokio::test]
#[should_panic(expected = "fake-bench: run reported 8 records; the plan measures 3 requests x 2 trials")]
async fn counting_the_warmup_fails() {
    run_bench(Fault::CountsWarmup, plan()).await;
}

#[tokio::test]
async fn a_plan_with_a_duration_caps_the_records() {
    let mut plan = plan();
    plan.requests = 10;
    plan.duration_ms = Some(1);
    run_bench(Fault::None, plan.clone()).await;
    let outcome = tokio::spawn(run_bench(Fault::CountsWarmup, BenchPlan { requests: 1, ..plan })).await;
    assert!(outcome.is_err(), "more records than requests x trials passed under a duration");
}

#[tokio::test]
#[should_panic(expected = "fake-bench: request 0 has its first token (9000000 ns) after its end (5000000 ns)")]
async fn a_first_token_after_the_end_fails() {
    run_bench(Fault::FirstTokenAfterEnd, plan()).await;
}

#[tokio::test]
#[should_panic(expected = "fake-bench: run: request 5 ended at")]
async fn a_window_that_ends_before_the_last_request_fails() {
    run_bench(Fault::WindowEndsEarly, plan()).await;
}

#[tokio::test]
#[should_panic(expected = "fake-bench: run did not return within 200ms")]
async fn a_run_that_hangs_fails() {
    run_bench(Fault::Hangs, plan()).await;
}

#[tokio::test]
#[should_panic(expected = "(nobody listens) succeeded")]
async fn success_without_a_listener_fails() {
    run_bench(Fault::SucceedsWithoutListener, plan()).await;
}

#[test]
fn the_refused_url_is_loopback_and_nobody_listens() {
    let url = refused_base_url();
    let address = url.strip_prefix("http://").expect("http URL");
    assert!(address.starts_with("127.0.0.1:"), "{url}");
    assert!(std::net::TcpStream::connect(address).is_err(), "something listens on {url}");
}

#[tokio::test]
async fn a_window_recorder_answers_each_window_and_its_clones_share_the_record() {
    let recorder = WindowRecorder::default();
    let (deployment, endpoint) = (deployment(), Endpoint::new(SERVING, "m"));
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let windows = [TimeWindow::new(10, 20), TimeWindow::new(30, 40)];
    for window in windows {
        let snapshot = recorder.clone().fetch(&target, window).await.unwrap();
        assert_eq!((snapshot.source.as_str(), snapshot.window), (recorder.name(), Some(window)));
        assert!(snapshot.signals.is_empty());
    }
    assert_eq!(recorder.fetched(), windows);
}
