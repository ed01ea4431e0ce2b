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
}

impl Iteration {
    pub fn is_ok(&self) -> bool {
        self.status == IterationStatus::Ok
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
    /// failed iterations' root-cause citations (see [`session::ROOT_CAUSE_SIGNAL`](crate::session::ROOT_CAUSE_SIGNAL)).
    pub fn blamed_settings(&self) -> Vec<BlamedSetting> {
        let mut out: Vec<BlamedSetting> = Vec::new();
        for it in self.iterations.iter().filter(|i| !i.is_ok()) {
            let causes = it.analysis.findings.iter().flat_map(|f| f.evidence.iter());
            for signal in causes.filter(|s| s.name == crate::session::ROOT_CAUSE_SIGNAL) {
                let label = |k: &str| signal.labels.get(k).cloned();
                let (Some(flag), Some(value)) = (label("flag"), label("value")) else { continue };
                if label("deterministic").as_deref() != Some("true") || out.iter().any(|b| b.flag == flag && b.value == value) {
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

    /// Whether a configuration with exactly these flags was already tried.
    pub fn tried(&self, spec: &ServiceSpec) -> bool {
        self.iterations.iter().any(|i| i.spec.flags == spec.flags && i.spec.resources == spec.resources)
    }
}
