use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::TimeWindow;

/// What kind of telemetry a [`Signal`] is; it decides how a session log cites it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SignalKind {
    /// A Prometheus metric (counter increase, gauge, histogram quantile) or a derived number.
    Metric,
    /// A per-function profile (calls, cumulative time).
    Profile,
    /// A span counter such as `sglang.latency.time_to_first_token`.
    SpanCounter,
    /// A span or startup attribute such as `sglang.startup.enable_mixed_chunk`.
    SpanAttribute,
    /// A fact read from the service's log.
    LogLine,
    /// A GPU kernel class or kernel from a profiler trace.
    Kernel,
    /// A figure measured by the benchmark client itself.
    Bench,
}

impl SignalKind {
    /// The words a session log puts in front of the signal name.
    pub fn label(self) -> &'static str {
        match self {
            SignalKind::Metric => "Prometheus metric",
            SignalKind::Profile => "Profile",
            SignalKind::SpanCounter => "Span counter",
            SignalKind::SpanAttribute => "Span attribute",
            SignalKind::LogLine => "Log",
            SignalKind::Kernel => "Kernel",
            SignalKind::Bench => "Benchmark",
        }
    }
}

/// The value of a signal: a number, or text for attributes and log facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SignalValue {
    Number(f64),
    Text(String),
}

impl SignalValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            SignalValue::Number(v) => Some(*v),
            SignalValue::Text(t) => t.trim().parse().ok(),
        }
    }

    pub fn as_text(&self) -> String {
        match self {
            SignalValue::Number(v) => format_number(*v),
            SignalValue::Text(t) => t.clone(),
        }
    }
}

/// Prints a number the way a human reads it: integers without a fraction, others with
/// three significant decimals.
pub fn format_number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

/// One citable piece of telemetry.
///
/// ```
/// use autodebug_core::{Signal, SignalKind};
/// let s = Signal::number("prometheus", SignalKind::Metric, "sglang:cache_hit_rate", 0.0, "ratio");
/// assert_eq!(s.citation(), "Prometheus metric `sglang:cache_hit_rate`: 0 ratio");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The telemetry source that produced it (`prometheus`, `graphsignal`, `logs`, `bench`).
    pub source: String,
    pub kind: SignalKind,
    pub name: String,
    pub value: SignalValue,
    /// Unit of `value` (`ms`, `tok/s`, `ratio`, `calls`, ...), empty when none.
    #[serde(default)]
    pub unit: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-text detail that belongs in the citation, e.g. `405 calls / 435 ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Observations behind the value (profile calls, histogram samples), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<f64>,
    /// The engine-independent name this signal maps onto (`ttft_s`, `kv_usage`, `queue_len`,
    /// `running`, `prefix_hit_rate`, `preemptions`, `gen_throughput`...), so analyzers can
    /// read any engine; see [`canonical`](crate::canonical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical: Option<String>,
}

impl Signal {
    pub fn number(source: &str, kind: SignalKind, name: &str, value: f64, unit: &str) -> Self {
        Signal {
            source: source.to_string(),
            kind,
            name: name.to_string(),
            value: SignalValue::Number(value),
            unit: unit.to_string(),
            labels: BTreeMap::new(),
            detail: None,
            count: None,
            canonical: None,
        }
    }

    pub fn text(source: &str, kind: SignalKind, name: &str, value: impl Into<String>) -> Self {
        Signal {
            source: source.to_string(),
            kind,
            name: name.to_string(),
            value: SignalValue::Text(value.into()),
            unit: String::new(),
            labels: BTreeMap::new(),
            detail: None,
            count: None,
            canonical: None,
        }
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_count(mut self, count: f64) -> Self {
        self.count = Some(count);
        self
    }

    pub fn with_canonical(mut self, canonical: &str) -> Self {
        self.canonical = Some(canonical.to_string());
        self
    }

    pub fn as_f64(&self) -> Option<f64> {
        self.value.as_f64()
    }

    /// The signal as one session-log bullet, e.g.
    /// ``Profile `sglang.scheduler.Scheduler.run_batch`: 405 calls / 435 ms``.
    pub fn citation(&self) -> String {
        let value = match &self.detail {
            Some(detail) => detail.clone(),
            None if self.kind == SignalKind::Profile && self.count.is_some_and(|c| c > 0.0) => {
                let calls = self.count.unwrap_or(0.0);
                let total = self.as_f64().unwrap_or(0.0);
                format!(
                    "{} calls / {} {} ({} {}/call)",
                    format_number(calls),
                    format_number(total),
                    self.unit,
                    format_number(total / calls),
                    self.unit
                )
            }
            None if self.unit.is_empty() => self.value.as_text(),
            None => format!("{} {}", self.value.as_text(), self.unit),
        };
        let labels = if self.labels.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{{{}}}", parts.join(","))
        };
        format!("{} `{}{}`: {}", self.kind.label(), self.name, labels, value)
    }

    /// A key that identifies the signal within a snapshot (source, name and labels).
    pub fn key(&self) -> String {
        let mut key = format!("{}:{}", self.source, self.name);
        for (k, v) in &self.labels {
            key.push_str(&format!(",{k}={v}"));
        }
        key
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.citation())
    }
}

/// What one telemetry source returned for one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySnapshot {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeWindow>,
    pub signals: Vec<Signal>,
    /// The raw text the signals were parsed from, kept so a citation can point at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Problems met while reading the source that did not stop it (unknown sections, gaps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl TelemetrySnapshot {
    pub fn new(source: &str, window: Option<TimeWindow>) -> Self {
        TelemetrySnapshot { source: source.to_string(), window, ..Default::default() }
    }

    /// The first signal with this exact name.
    pub fn get(&self, name: &str) -> Option<&Signal> {
        self.signals.iter().find(|s| s.name == name)
    }

    /// The first signal mapped onto this canonical name.
    pub fn canonical(&self, canonical: &str) -> Option<&Signal> {
        self.signals.iter().find(|s| s.canonical.as_deref() == Some(canonical))
    }
}
