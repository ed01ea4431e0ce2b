//! The telemetry suite: signals named and attributed, finite, in the window asked for.

use std::time::Duration;

use super::{Bounded, refused_base_url};
use crate::{Endpoint, Error, SignalValue, Target, TelemetrySnapshot, TelemetrySource, TimeWindow};

/// Limits used by [`telemetry_conformance_with`], and what the caller declares about its source.
#[derive(Debug, Clone, Copy)]
pub struct TelemetryConformance {
    /// Bound on every `begin` and `fetch`, so a hang fails the suite.
    pub call_timeout: Duration,
    /// The source reads recorded data (a metrics server's history, trace files, logs), not the
    /// live service: two fetches of one window must then give the same signals.
    pub recorded: bool,
}

impl Default for TelemetryConformance {
    fn default() -> Self {
        TelemetryConformance { call_timeout: Duration::from_secs(30), recorded: false }
    }
}

/// Runs [`telemetry_conformance_with`] with the default limits (a live source).
pub async fn telemetry_conformance(source: &dyn TelemetrySource, target: &Target<'_>, window: TimeWindow) {
    telemetry_conformance_with(source, target, window, TelemetryConformance::default()).await
}

/// Checks the promises of [`TelemetrySource`] on a `target` and `window` the source has data for:
///
/// - `name()` is non-empty;
/// - `begin` then `fetch(window)` succeed, and the snapshot has at least one signal;
/// - every snapshot the suite gets carries `name()` as its source, as does each of its signals;
///   its window, when set, is the one asked for; each signal has a name, and each number is finite;
/// - with [`TelemetryConformance::recorded`], `begin` and `fetch` of the same window again give the
///   same signals (in any order);
/// - an empty window (start = end), and an endpoint that refuses connections, give a snapshot as
///   above or an error whose message names the source; so does a `begin` against that endpoint;
/// - every call returns within [`TelemetryConformance::call_timeout`].
pub async fn telemetry_conformance_with(
    source: &dyn TelemetrySource,
    target: &Target<'_>,
    window: TimeWindow,
    limits: TelemetryConformance,
) {
    let backend = source.name().to_string();
    assert!(!backend.trim().is_empty(), "TelemetrySource::name() is empty");
    assert!(window.start_ns <= window.end_ns, "{backend}: the suite was given an inverted window {window:?}");
    let bounded = |what: &str| Bounded { backend: backend.clone(), what: what.to_string(), bound: limits.call_timeout };

    bounded("begin").run(source.begin(target)).await.unwrap_or_else(|e| panic!("{backend}: begin failed: {e}"));
    let snapshot = bounded("fetch")
        .run(source.fetch(target, window))
        .await
        .unwrap_or_else(|e| panic!("{backend}: fetch of a window with data failed: {e}"));
    check_snapshot(&backend, "fetch", &snapshot, window);
    assert!(
        !snapshot.signals.is_empty(),
        "{backend}: fetch of a window with data gave no signals (warnings: {:?})",
        snapshot.warnings
    );

    if limits.recorded {
        bounded("second begin")
            .run(source.begin(target))
            .await
            .unwrap_or_else(|e| panic!("{backend}: second begin failed: {e}"));
        let again = bounded("second fetch of the same window")
            .run(source.fetch(target, window))
            .await
            .unwrap_or_else(|e| panic!("{backend}: a second fetch of the same window failed: {e}"));
        check_snapshot(&backend, "second fetch", &again, window);
        let (first, second) = (sorted_signals(&snapshot), sorted_signals(&again));
        if first != second {
            let only_first: Vec<&String> = first.iter().filter(|s| !second.contains(s)).take(3).collect();
            let only_second: Vec<&String> = second.iter().filter(|s| !first.contains(s)).take(3).collect();
            panic!(
                "{backend}: recorded data, yet two fetches of one window differ ({} vs {} signals); \
                 first only: {only_first:?}; second only: {only_second:?}",
                first.len(),
                second.len()
            );
        }
    }

    let empty = TimeWindow::new(window.start_ns, window.start_ns);
    match bounded("fetch(empty window)").run(source.fetch(target, empty)).await {
        Ok(snapshot) => check_snapshot(&backend, "fetch(empty window)", &snapshot, empty),
        Err(error) => check_telemetry_error(&backend, "fetch(empty window)", &error),
    }

    let refused = Endpoint { base_url: refused_base_url(), ..target.endpoint.clone() };
    let unreachable = Target { endpoint: &refused, ..*target };
    if let Err(error) = bounded("begin(unreachable endpoint)").run(source.begin(&unreachable)).await {
        check_telemetry_error(&backend, "begin(unreachable endpoint)", &error);
    }
    match bounded("fetch(unreachable endpoint)").run(source.fetch(&unreachable, window)).await {
        Ok(snapshot) => check_snapshot(&backend, "fetch(unreachable endpoint)", &snapshot, window),
        Err(error) => check_telemetry_error(&backend, "fetch(unreachable endpoint)", &error),
    }
}

fn check_snapshot(backend: &str, stage: &str, snapshot: &TelemetrySnapshot, window: TimeWindow) {
    assert_eq!(snapshot.source, backend, "{backend}: the snapshot of {stage} names another source");
    if let Some(theirs) = snapshot.window {
        assert_eq!(theirs, window, "{backend}: the snapshot of {stage} is for another window than asked");
    }
    for signal in &snapshot.signals {
        assert!(!signal.name.trim().is_empty(), "{backend}: {stage} gave a signal without a name: {signal:?}");
        assert_eq!(signal.source, backend, "{backend}: {stage} gave a signal of another source: {signal:?}");
        if let SignalValue::Number(value) = signal.value {
            assert!(value.is_finite(), "{backend}: {stage} gave a number that is not finite: {}", signal.citation());
        }
    }
}

fn check_telemetry_error(backend: &str, stage: &str, error: &Error) {
    let message = error.to_string();
    assert!(message.contains(backend), "{backend}: the error of {stage} does not name the source: {message}");
}

/// A snapshot's signals in a fixed order, for comparing two fetches whose order is not promised.
fn sorted_signals(snapshot: &TelemetrySnapshot) -> Vec<String> {
    let mut signals: Vec<String> = snapshot.signals.iter().map(|s| format!("{s:?}")).collect();
    signals.sort();
    signals
}
