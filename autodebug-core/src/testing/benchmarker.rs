//! The benchmarker suite: one record per measured request, inside the report's window.

use std::time::Duration;

use super::{Bounded, refused_base_url};
use crate::{BenchPlan, BenchReport, Benchmarker, Endpoint};

/// Limits used by [`benchmarker_conformance_with`].
#[derive(Debug, Clone, Copy)]
pub struct BenchmarkerConformance {
    /// Bound on each `run`, so a hang fails the suite.
    pub run_timeout: Duration,
    /// How far a record's send or end may fall outside the report's window (clock rounding).
    pub window_slack: Duration,
}

impl Default for BenchmarkerConformance {
    fn default() -> Self {
        BenchmarkerConformance { run_timeout: Duration::from_secs(120), window_slack: Duration::from_millis(1) }
    }
}

/// Runs [`benchmarker_conformance_with`] with the default limits.
pub async fn benchmarker_conformance(bench: &dyn Benchmarker, endpoint: &Endpoint, plan: &BenchPlan) {
    benchmarker_conformance_with(bench, endpoint, plan, BenchmarkerConformance::default()).await
}

/// Checks the promises of [`Benchmarker`] with an `endpoint` that serves `plan`:
///
/// - `name()` is non-empty;
/// - `run` returns a report with one record per measured request: `plan.requests` per trial,
///   warmup left out (at most that many with `plan.duration_ms`);
/// - the report's window runs forwards and holds every record's send
///   (`scheduled_ns + queue_delay_ns`) and, for a finished request, its end (`scheduled_ns + e2e_ns`);
/// - at least one request succeeds, and every request that succeeded has an e2e time, a TTFT no
///   later than it, and at least one output token;
/// - against an endpoint that refuses connections, `run` fails with a message, or reports records
///   as above that all carry an error class;
/// - each `run` returns within [`BenchmarkerConformance::run_timeout`].
pub async fn benchmarker_conformance_with(
    bench: &dyn Benchmarker,
    endpoint: &Endpoint,
    plan: &BenchPlan,
    limits: BenchmarkerConformance,
) {
    let backend = bench.name().to_string();
    assert!(!backend.trim().is_empty(), "Benchmarker::name() is empty");
    assert!(plan.requests > 0, "{backend}: the suite was given a plan without requests");
    let bounded = |what: &str| Bounded { backend: backend.clone(), what: what.to_string(), bound: limits.run_timeout };

    let report = bounded("run")
        .run(bench.run(endpoint, plan))
        .await
        .unwrap_or_else(|e| panic!("{backend}: run against {} failed: {e}", endpoint.base_url));
    check_report(&backend, "run", plan, &report, limits.window_slack);
    let failures: Vec<String> = report
        .records
        .iter()
        .filter_map(|r| Some(format!("{}: {}", r.error?.as_str(), r.error_message.as_deref().unwrap_or(""))))
        .collect();
    let succeeded: Vec<_> = report.records.iter().filter(|r| r.error.is_none()).collect();
    assert!(
        !succeeded.is_empty(),
        "{backend}: no request of the run against {} succeeded; first failures: {:?}",
        endpoint.base_url,
        &failures[..failures.len().min(3)]
    );
    for record in succeeded {
        let index = record.index;
        let e2e = record.e2e_ns.unwrap_or_else(|| panic!("{backend}: request {index} succeeded without an e2e time"));
        let ttft = record.ttft_ns.unwrap_or_else(|| panic!("{backend}: request {index} succeeded without a TTFT"));
        assert!(ttft <= e2e, "{backend}: request {index} has its first token ({ttft} ns) after its end ({e2e} ns)");
        assert!(
            record.output_tokens.is_some_and(|n| n > 0),
            "{backend}: request {index} succeeded with output tokens {:?}",
            record.output_tokens
        );
    }

    let refused = Endpoint { base_url: refused_base_url(), ..endpoint.clone() };
    match bounded("run(unreachable endpoint)").run(bench.run(&refused, plan)).await {
        Err(error) => assert!(
            !error.to_string().trim().is_empty(),
            "{backend}: run against a refused endpoint failed without a message"
        ),
        Ok(report) => {
            check_report(&backend, "run(unreachable endpoint)", plan, &report, limits.window_slack);
            if let Some(record) = report.records.iter().find(|r| r.error.is_none()) {
                let index = record.index;
                panic!("{backend}: request {index} to {} (nobody listens) succeeded: {record:?}", refused.base_url);
            }
        }
    }
}

fn check_report(backend: &str, stage: &str, plan: &BenchPlan, report: &BenchReport, slack: Duration) {
    let expected = plan.requests * plan.trials.max(1) as usize;
    let got = report.records.len();
    if plan.duration_ms.is_some() {
        assert!(got <= expected, "{backend}: {stage} reported {got} records; the plan allows at most {expected}");
    } else {
        assert_eq!(
            got,
            expected,
            "{backend}: {stage} reported {got} records; the plan measures {} requests x {} trials (warmup left out)",
            plan.requests,
            plan.trials.max(1)
        );
    }
    let window = report.window;
    assert!(window.start_ns <= window.end_ns, "{backend}: {stage} reported an inverted window {window:?}");
    let slack = slack.as_nanos() as i128;
    let (earliest, latest) = (window.start_ns - slack, window.end_ns + slack);
    for record in &report.records {
        let sent = record.scheduled_ns + record.queue_delay_ns as i128;
        assert!(
            (earliest..=latest).contains(&sent),
            "{backend}: {stage}: request {} was sent at {sent}, outside the report's window {window:?}",
            record.index
        );
        if let Some(e2e) = record.e2e_ns {
            let end = record.scheduled_ns + e2e as i128;
            assert!(
                end <= latest,
                "{backend}: {stage}: request {} ended at {end}, after the report's window {window:?}",
                record.index
            );
        }
    }
}
