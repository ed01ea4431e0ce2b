use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Analysis, Artifact, BenchSummary, Objective, Plan, ServiceSpec};

/// How an iteration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IterationStatus {
    /// Deployed, benchmarked and analyzed.
    Ok,
    /// The deploy failed or the service never became healthy; the session rolled back.
    DeployFailed,
    /// The service came up but the benchmark could not run at all.
    BenchFailed,
    /// Started but not finished (a killed process leaves this behind; resume retries it).
    Running,
    /// Stopped by the user (Ctrl-C) before the iteration could finish.
    Interrupted,
}

impl IterationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IterationStatus::Ok => "ok",
            IterationStatus::DeployFailed => "deploy_failed",
            IterationStatus::BenchFailed => "bench_failed",
            IterationStatus::Running => "running",
            IterationStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ok" => IterationStatus::Ok,
            "deploy_failed" => IterationStatus::DeployFailed,
            "bench_failed" => IterationStatus::BenchFailed,
            "running" => IterationStatus::Running,
            "interrupted" => IterationStatus::Interrupted,
            _ => return None,
        })
    }
}

/// Name of the signal a failure finding cites for the error itself; its `kind` label is the
/// [`ErrorKind`](crate::ErrorKind) when the error said.
pub const ERROR_SIGNAL: &str = "iteration.error";

/// Name of the signal a failure finding cites for its root cause; its labels carry `class`,
/// `deterministic`, and the `flag` and `value` it blames when the configuration set that flag.
pub const ROOT_CAUSE_SIGNAL: &str = "engine.root_cause";

/// One pass of the loop, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Iteration {
    /// 1-based number within the session.
    pub number: u32,
    pub spec: ServiceSpec,
    pub artifact: Option<Artifact>,
    pub status: IterationStatus,
    /// Flat metrics of every bench plan (`<plan>.<metric>`) and of the primary plan unprefixed.
    pub metrics: BTreeMap<String, f64>,
    /// Summaries by bench plan name.
    pub bench: BTreeMap<String, BenchSummary>,
    pub analysis: Analysis,
    pub plan: Option<Plan>,
    /// Failure message when `status` is not `Ok`.
    pub error: Option<String>,
    pub started_ns: i128,
    pub finished_ns: i128,
    /// Seconds spent per step (`deploy`, `bench`, `telemetry`, `analyze`, `plan`).
    pub timings: BTreeMap<String, f64>,
    /// The round of a parallel session this iteration ran in (its slots ran side by side);
    /// `None` in a serial session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
}

impl Iteration {
    pub fn is_ok(&self) -> bool {
        self.status == IterationStatus::Ok
    }

    /// What kind of failure ended this iteration, as the session recorded it (the `kind` label of
    /// its `iteration.error` signal); `None` for a success or a failure of unknown kind.
    pub fn failure_kind(&self) -> Option<crate::ErrorKind> {
        let kind = self
            .analysis
            .findings
            .iter()
            .flat_map(|f| f.evidence.iter())
            .find(|s| s.name == ERROR_SIGNAL)?
            .labels
            .get("kind")?;
        crate::ErrorKind::parse(kind)
    }
}

/// A flag value that made a start fail for a reason that still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlamedSetting {
    pub flag: String,
    /// The value as set (`true` for a switch).
    pub value: String,
    /// The iteration that failed with it.
    pub iteration: u32,
    /// Its failure class (`hardware`, `invalid_value`, ...).
    pub class: String,
    /// The engine's own line that says why.
    pub line: String,
}

/// Everything a planner may learn from earlier iterations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub iterations: Vec<Iteration>,
}

impl History {
    pub fn last_ok(&self) -> Option<&Iteration> {
        self.iterations.iter().rev().find(|i| i.is_ok())
    }

    /// The first successful iteration: what every later one is compared with.
    pub fn baseline(&self) -> Option<&Iteration> {
        self.iterations.iter().find(|i| i.is_ok())
    }

    /// Champion over baseline under `objective`, in percent of the baseline (positive = better).
    pub fn improvement_pct(&self, objective: &Objective) -> Option<f64> {
        let base = objective.value(&self.baseline()?.metrics)?;
        let best = objective.value(&self.champion(objective)?.metrics)?;
        Some(objective.improvement_pct(base, best))
    }

    /// The successful iterations that meet `objective`'s constraints, best value first (ties keep
    /// their order). The first is not always the champion: a challenger must win outside the
    /// noise margin to take over.
    pub fn ranking(&self, objective: &Objective) -> Vec<&Iteration> {
        let mut ranked: Vec<&Iteration> =
            self.iterations.iter().filter(|i| i.is_ok() && objective.is_feasible(&i.metrics)).collect();
        let value = |i: &Iteration| objective.value(&i.metrics).unwrap_or(f64::NAN);
        ranked.sort_by(|x, y| {
            let order = value(x).total_cmp(&value(y));
            if objective.better_value(1.0, 0.0) { order.reverse() } else { order }
        });
        ranked
    }

    /// The champion under `objective`: the first feasible iteration, replaced in order by each
    /// later one that beats it outside the objective's noise margin.
    pub fn champion(&self, objective: &Objective) -> Option<&Iteration> {
        let mut best: Option<&Iteration> = None;
        for it in self.iterations.iter().filter(|i| i.is_ok() && objective.is_feasible(&i.metrics)) {
            match best {
                Some(b) if !objective.beats_outside_noise(&it.metrics, &b.metrics) => {}
                _ => best = Some(it),
            }
        }
        best
    }

    /// Settings that made a start fail for a reason that holds whatever else changes, read from the
    /// failed iterations' root-cause citations (`session::ROOT_CAUSE_SIGNAL`).
    pub fn blamed_settings(&self) -> Vec<BlamedSetting> {
        let mut out: Vec<BlamedSetting> = Vec::new();
        for it in self.iterations.iter().filter(|i| !i.is_ok()) {
            let causes = it.analysis.findings.iter().flat_map(|f| f.evidence.iter());
            for signal in causes.filter(|s| s.name == ROOT_CAUSE_SIGNAL) {
                let label = |k: &str| signal.labels.get(k).cloned();
                let (Some(flag), Some(value)) = (label("flag"), label("value")) else { continue };
                if label("deterministic").as_deref() != Some("true")
                    || out.iter().any(|b| b.flag == flag && b.value == value)
                {
                    continue;
                }
                out.push(BlamedSetting {
                    flag,
                    value,
                    iteration: it.number,
                    class: label("class").unwrap_or_default(),
                    line: signal.value.as_text(),
                });
            }
        }
        out
    }

    /// Whether a configuration with exactly these flags was already tried: measured, or failed
    /// for a reason that holds. A single [transient](crate::ErrorKind::Transient) failure (a
    /// dropped connection, a crash its log does not explain) did not judge the configuration, so it
    /// may be proposed once more; a second one counts.
    pub fn tried(&self, spec: &ServiceSpec) -> bool {
        let mut transient = 0;
        for it in self.iterations.iter().filter(|i| i.spec.flags == spec.flags && i.spec.resources == spec.resources) {
            if it.is_ok() || it.failure_kind() != Some(crate::ErrorKind::Transient) {
                return true;
            }
            transient += 1;
        }
        transient >= 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineKind, ErrorKind, Objective};

    fn iteration(number: u32, status: IterationStatus, throughput: f64, ttft_p99: f64) -> Iteration {
        Iteration {
            number,
            spec: ServiceSpec::new("s", EngineKind::Vllm, "m"),
            artifact: None,
            status,
            metrics: BTreeMap::from([("output_throughput".into(), throughput), ("ttft.p99".into(), ttft_p99)]),
            bench: BTreeMap::new(),
            analysis: Analysis::default(),
            plan: None,
            error: None,
            started_ns: 0,
            finished_ns: 0,
            timings: BTreeMap::new(),
            round: None,
        }
    }

    #[test]
    fn ranking_is_feasible_successes_best_first_and_improvement_is_champion_over_baseline() {
        let history = History {
            iterations: vec![
                iteration(1, IterationStatus::Ok, 100.0, 900.0),
                iteration(2, IterationStatus::Ok, 300.0, 5_000.0), // breaks the latency constraint
                iteration(3, IterationStatus::DeployFailed, 999.0, 1.0),
                iteration(4, IterationStatus::Ok, 150.0, 800.0),
                iteration(5, IterationStatus::Ok, 120.0, 700.0),
            ],
        };
        let objective =
            Objective::maximize("output_throughput").with_constraint("ttft.p99 <= 1000".parse().expect("constraint"));
        let ranked: Vec<u32> = history.ranking(&objective).iter().map(|i| i.number).collect();
        assert_eq!(ranked, [4, 5, 1]);
        assert_eq!(history.baseline().map(|i| i.number), Some(1));
        assert_eq!(history.champion(&objective).map(|i| i.number), Some(4));
        assert!((history.improvement_pct(&objective).expect("both measured") - 50.0).abs() < 1e-9);

        let latency = Objective::minimize("ttft.p99");
        let ranked: Vec<u32> = history.ranking(&latency).iter().map(|i| i.number).collect();
        assert_eq!(ranked, [5, 4, 1, 2], "smaller is better, failed runs left out");
    }

    fn failed(number: u32, kind: ErrorKind) -> Iteration {
        let mut it = iteration(number, IterationStatus::DeployFailed, 0.0, 0.0);
        let error = crate::Signal::text("session", crate::SignalKind::LogLine, ERROR_SIGNAL, "deploy failed")
            .with_label("kind", kind.as_str());
        it.analysis.findings.push(crate::Finding {
            rule: "session.deploy_failed".into(),
            bottleneck: crate::Bottleneck::Errors,
            severity: crate::Severity::Critical,
            summary: "deploy failed".into(),
            evidence: vec![error],
        });
        it
    }

    #[test]
    fn a_configuration_that_failed_once_transiently_may_be_tried_again_but_not_one_that_was_refused() {
        let spec = ServiceSpec::new("s", EngineKind::Vllm, "m");
        let once = History { iterations: vec![failed(1, ErrorKind::Transient)] };
        assert_eq!(once.iterations[0].failure_kind(), Some(ErrorKind::Transient));
        assert!(!once.tried(&spec), "one transient failure did not judge the configuration");
        let twice = History { iterations: vec![failed(1, ErrorKind::Transient), failed(2, ErrorKind::Transient)] };
        assert!(twice.tried(&spec), "a second transient failure counts");
        let refused = History { iterations: vec![failed(1, ErrorKind::RejectedConfig)] };
        assert!(refused.tried(&spec));
        let measured = History { iterations: vec![iteration(1, IterationStatus::Ok, 1.0, 1.0)] };
        assert!(measured.tried(&spec));
        let mut unknown = iteration(1, IterationStatus::DeployFailed, 0.0, 0.0);
        unknown.analysis = Analysis::default();
        assert!(History { iterations: vec![unknown] }.tried(&spec), "a failure of unknown kind counts, as before");
    }
}
