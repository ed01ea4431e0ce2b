use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{BenchReport, History, LogLine, ServiceSpec, Signal, TelemetrySnapshot};

/// The part of the serving path a finding blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bottleneck {
    Prefill,
    Decode,
    SchedulerOverhead,
    Queueing,
    KvCapacity,
    CacheMisses,
    Errors,
    Client,
    Config,
    /// Not a bottleneck of the service: evidence the analysis had to go without.
    Telemetry,
}

impl Bottleneck {
    pub fn as_str(self) -> &'static str {
        match self {
            Bottleneck::Prefill => "prefill",
            Bottleneck::Decode => "decode",
            Bottleneck::SchedulerOverhead => "scheduler overhead",
            Bottleneck::Queueing => "queueing",
            Bottleneck::KvCapacity => "KV capacity",
            Bottleneck::CacheMisses => "prefix-cache misses",
            Bottleneck::Errors => "errors",
            Bottleneck::Client => "client",
            Bottleneck::Config => "configuration",
            Bottleneck::Telemetry => "telemetry gaps",
        }
    }
}

impl fmt::Display for Bottleneck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// A diagnosis, with the signals it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule or analyzer that produced it, e.g. `sglang.scheduler_overhead`.
    pub rule: String,
    pub bottleneck: Bottleneck,
    pub severity: Severity,
    pub summary: String,
    pub evidence: Vec<Signal>,
}

/// Everything an analyzer may look at for one iteration.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub spec: &'a ServiceSpec,
    pub bench: &'a [BenchReport],
    pub logs: &'a [LogLine],
    pub telemetry: &'a [TelemetrySnapshot],
    pub history: &'a History,
}

impl Evidence<'_> {
    /// Every telemetry signal of the iteration, across sources.
    pub fn signals(&self) -> impl Iterator<Item = &Signal> {
        self.telemetry.iter().flat_map(|t| t.signals.iter())
    }
}

/// What analyzers concluded: flat metrics plus findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Metrics by name (`ttft.p99`, `chat.e2e.mean`, ...).
    pub metrics: BTreeMap<String, f64>,
    pub findings: Vec<Finding>,
    /// Signals cited in the session log's Analysis section.
    pub cited: Vec<Signal>,
}

impl Analysis {
    /// Merges another analyzer's result into this one (findings appended, citations deduplicated).
    pub fn merge(&mut self, other: Analysis) {
        self.metrics.extend(other.metrics);
        self.findings.extend(other.findings);
        for s in other.cited {
            self.cite(s);
        }
    }

    /// Adds a signal to the cited list unless an identical one is there.
    pub fn cite(&mut self, signal: Signal) {
        if !self.cited.iter().any(|c| c.key() == signal.key()) {
            self.cited.push(signal);
        }
    }

    pub fn has_finding(&self, rule: &str) -> bool {
        self.findings.iter().any(|f| f.rule == rule)
    }
}
