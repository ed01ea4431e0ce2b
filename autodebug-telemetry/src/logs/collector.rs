//! Gathers facts from log lines into signals: startup facts keep their last value, per-window
//! observations become a mean, max or sum, and every signal quotes a line it came from.

use std::collections::BTreeMap;

use autodebug_core::{Signal, SignalKind, format_number};

use super::SOURCE;

/// The longest part of a log line a citation quotes.
const QUOTE_CHARS: usize = 240;

/// How the observations of one window statistic combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reduce {
    Mean,
    Max,
    Sum,
    /// Occurrences of a line (the value passed is ignored).
    Count,
}

#[derive(Debug, Clone)]
struct Observed {
    unit: &'static str,
    canonical: Option<&'static str>,
    reduce: Reduce,
    sum: f64,
    max: f64,
    n: u64,
    /// The line that set the max (for Max) or the last line (otherwise).
    quoted: String,
    /// For a weighted mean: the weights' sum (0 when unweighted).
    weight: f64,
    /// Counted over the whole log (startup included), not only the window.
    whole_log: bool,
}

/// Collects signals in first-seen order.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    order: Vec<String>,
    startup: BTreeMap<String, Signal>,
    observed: BTreeMap<String, Observed>,
    errors: BTreeMap<String, (Signal, u64)>,
    /// The server was asked to stop; errors after that are the stop's doing.
    pub(crate) shutting_down: bool,
}

pub(crate) fn quote(line: &str) -> String {
    let line = line.trim();
    if line.chars().count() <= QUOTE_CHARS {
        return line.to_string();
    }
    let cut: String = line.chars().take(QUOTE_CHARS).collect();
    format!("{cut}…")
}

impl Collector {
    fn remember(&mut self, name: &str) {
        if !self.order.iter().any(|n| n == name) {
            self.order.push(name.to_string());
        }
    }

    /// A fact printed once (at startup); a later line with the same fact replaces it.
    pub(crate) fn startup(&mut self, name: &str, value: f64, unit: &str, canonical: Option<&str>, line: &str) {
        self.remember(name);
        let mut signal = Signal::number(SOURCE, SignalKind::LogLine, name, value, unit)
            .with_detail(format!("{} {unit} from «{}»", format_number(value), quote(line)).replace("  ", " "));
        if let Some(canonical) = canonical {
            signal = signal.with_canonical(canonical);
        }
        self.startup.insert(name.to_string(), signal);
    }

    /// A text fact printed once (`cuda graph: True`).
    pub(crate) fn startup_text(&mut self, name: &str, value: &str, line: &str) {
        self.remember(name);
        let signal = Signal::text(SOURCE, SignalKind::LogLine, name, value)
            .with_detail(format!("{value} from «{}»", quote(line)));
        self.startup.insert(name.to_string(), signal);
    }

    /// A setting the engine reports at startup (`vllm.startup.max_num_seqs`), as a span attribute
    /// the way Graphsignal reports SGLang's `sglang.startup.*`.
    pub(crate) fn startup_attribute(&mut self, name: &str, value: &str, line: &str) {
        self.remember(name);
        let signal = Signal::text(SOURCE, SignalKind::SpanAttribute, name, value)
            .with_detail(format!("{value} from «{}»", quote(line)));
        self.startup.insert(name.to_string(), signal);
    }

    /// One observation of a window statistic.
    pub(crate) fn observe(
        &mut self,
        name: &str,
        value: f64,
        unit: &'static str,
        reduce: Reduce,
        canonical: Option<&'static str>,
        line: &str,
    ) {
        self.observe_weighted(name, value, 0.0, unit, reduce, canonical, line);
    }

    /// An observation weighted by `weight` (e.g. ms per token weighted by tokens) for a mean.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn observe_weighted(
        &mut self,
        name: &str,
        value: f64,
        weight: f64,
        unit: &'static str,
        reduce: Reduce,
        canonical: Option<&'static str>,
        line: &str,
    ) {
        if !value.is_finite() {
            return;
        }
        self.remember(name);
        let entry = self.observed.entry(name.to_string()).or_insert_with(|| Observed {
            unit,
            canonical,
            reduce,
            sum: 0.0,
            max: f64::NEG_INFINITY,
            n: 0,
            quoted: String::new(),
            weight: 0.0,
            whole_log: false,
        });
        let weighted = weight > 0.0;
        entry.sum += if weighted { value * weight } else { value };
        entry.weight += weight.max(0.0);
        entry.n += 1;
        if value > entry.max || entry.reduce != Reduce::Max {
            entry.quoted = quote(line);
        }
        entry.max = entry.max.max(value);
    }

    /// One occurrence of a line that counts over the whole log, window or not (a warning printed
    /// at startup that holds for every step served).
    pub(crate) fn count_whole_log(
        &mut self,
        name: &str,
        unit: &'static str,
        canonical: Option<&'static str>,
        line: &str,
    ) {
        self.observe(name, 1.0, unit, Reduce::Count, canonical, line);
        if let Some(entry) = self.observed.get_mut(name) {
            entry.whole_log = true;
        }
    }

    /// An error line; repeats of the same message are counted, not repeated.
    pub(crate) fn error(&mut self, class: &str, line: &str, canonical: &str) {
        let name = format!("engine.error.{class}");
        let message = quote(line);
        let key = format!("{name}\u{0}{message}");
        self.remember(&key);
        let entry = self.errors.entry(key).or_insert_with(|| {
            (Signal::text(SOURCE, SignalKind::LogLine, &name, message.clone()).with_canonical(canonical), 0)
        });
        entry.1 += 1;
    }

    pub(crate) fn finish(mut self) -> Vec<Signal> {
        let mut signals = Vec::new();
        for name in &self.order {
            if let Some(signal) = self.startup.remove(name) {
                signals.push(signal);
            } else if let Some(observed) = self.observed.remove(name) {
                signals.push(observed.into_signal(name));
            } else if let Some((signal, count)) = self.errors.remove(name) {
                let message = signal.value.as_text();
                let times = if count > 1 { format!(" ({count} times)") } else { String::new() };
                signals.push(signal.with_count(count as f64).with_detail(format!("«{message}»{times}")));
            }
        }
        signals
    }
}

impl Observed {
    fn into_signal(self, name: &str) -> Signal {
        let (value, how) = match self.reduce {
            Reduce::Mean if self.weight > 0.0 => (self.sum / self.weight, "weighted mean"),
            Reduce::Mean => (self.sum / self.n.max(1) as f64, "mean"),
            Reduce::Max => (self.max, "max"),
            Reduce::Sum => (self.sum, "sum"),
            Reduce::Count => (self.n as f64, "count"),
        };
        let lines = if self.n == 1 { "1 line".to_string() } else { format!("{} lines", self.n) };
        let example = match self.reduce {
            Reduce::Max => "the max from",
            _ => "last",
        };
        let mut signal =
            Signal::number(SOURCE, SignalKind::LogLine, name, value, self.unit).with_count(self.n as f64).with_detail(
                format!(
                    "{how} {} {} over {lines} in the {}; {example} «{}»",
                    format_number(value),
                    self.unit,
                    if self.whole_log { "whole log" } else { "window" },
                    self.quoted
                )
                .replace("  ", " "),
            );
        if let Some(canonical) = self.canonical {
            signal = signal.with_canonical(canonical);
        }
        signal
    }
}
