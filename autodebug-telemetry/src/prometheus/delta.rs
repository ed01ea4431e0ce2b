//! Turns two scrapes (window start and end) plus gauge samples taken in between into signals:
//! counters as increase and rate, gauges as last/min/max/mean, histograms as the histogram of
//! only the window's observations with quantiles and mean.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use autodebug_core::{Signal, SignalKind, canonical, format_number};

use super::names::{self, Combine, HIT_RATE_PAIRS, TaggedStat};
use super::parser::{MetricFamily, MetricType};
use super::quantile::histogram_quantile;
use super::series::{Series, SeriesLabels, distinguishing_labels};

/// The telemetry source name Prometheus signals carry.
pub const SOURCE: &str = "prometheus";

/// A series' identity across scrapes.
type SeriesKey = (String, SeriesLabels);

/// Running statistics of one gauge over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct GaugeStats {
    min: f64,
    max: f64,
    sum: f64,
    samples: u64,
    last: f64,
}

impl GaugeStats {
    fn new(value: f64) -> Self {
        GaugeStats { min: value, max: value, sum: value, samples: 1, last: value }
    }

    fn observe(&mut self, value: f64) {
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += value;
        self.samples += 1;
        self.last = value;
    }
}

/// Statistics of every gauge seen across the scrapes of one window; memory grows with the
/// number of series, not with the number of samples, so a long window stays cheap.
///
/// ```
/// use autodebug_telemetry::prometheus::{parse_exposition, GaugeTracker};
/// let mut tracker = GaugeTracker::default();
/// for v in ["3", "1", "2"] {
///     tracker.observe(&parse_exposition(&format!("# TYPE q gauge\nq {v}\n")).unwrap());
/// }
/// assert_eq!(tracker.samples(), 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct GaugeTracker {
    stats: HashMap<SeriesKey, GaugeStats>,
    /// Per family, the sum and the mean over its series at each sample.
    combined: HashMap<(String, Combine), GaugeStats>,
    samples: u64,
}

impl GaugeTracker {
    /// Records the gauges of one scrape (other metric types are ignored).
    pub fn observe(&mut self, families: &[MetricFamily]) {
        self.samples += 1;
        for family in families.iter().filter(|f| is_gauge_like(f.metric_type)) {
            let series = family.series();
            let values: Vec<f64> = series.iter().filter_map(|s| s.value).filter(|v| !v.is_nan()).collect();
            for s in &series {
                let Some(value) = s.value.filter(|v| !v.is_nan()) else { continue };
                self.stats
                    .entry((family.name.clone(), s.labels.clone()))
                    .and_modify(|st| st.observe(value))
                    .or_insert_with(|| GaugeStats::new(value));
            }
            if values.len() > 1 {
                let sum: f64 = values.iter().sum();
                for (combine, value) in [(Combine::Sum, sum), (Combine::Mean, sum / values.len() as f64)] {
                    self.combined
                        .entry((family.name.clone(), combine))
                        .and_modify(|st| st.observe(value))
                        .or_insert_with(|| GaugeStats::new(value));
                }
            }
        }
    }

    /// How many scrapes were observed.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

fn is_gauge_like(metric_type: MetricType) -> bool {
    matches!(metric_type, MetricType::Gauge | MetricType::Unknown | MetricType::Info | MetricType::StateSet)
}

/// The signals of one window and what got in the way of computing some of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowSignals {
    pub signals: Vec<Signal>,
    pub warnings: Vec<String>,
}

/// Computes the window's signals from the scrape at its start (`None` when there was none: the
/// end scrape's counters then count from the server's start, and a warning says so), the
/// gauges observed during it (the start and end scrapes included), the scrape at its end, and
/// the time between the two scrapes.
///
/// ```
/// use std::time::Duration;
/// use autodebug_telemetry::prometheus::{parse_exposition, window_signals, GaugeTracker};
/// let start = parse_exposition("# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total 100\n").unwrap();
/// let end = parse_exposition("# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total 600\n").unwrap();
/// let out = window_signals(Some(&start), &GaugeTracker::default(), &end, Duration::from_secs(10));
/// let increase = out.signals.iter().find(|s| s.canonical.as_deref() == Some("prompt_tokens")).unwrap();
/// assert_eq!(increase.as_f64(), Some(500.0));
/// assert_eq!(increase.labels["stat"], "increase");
/// ```
pub fn window_signals(
    start: Option<&[MetricFamily]>,
    gauges: &GaugeTracker,
    end: &[MetricFamily],
    elapsed: Duration,
) -> WindowSignals {
    let mut out = WindowSignals::default();
    let elapsed_s = elapsed.as_secs_f64();
    if start.is_none() {
        out.warnings.push(
            "no scrape at the window's start (begin() was not called for this deployment): counters and \
             histograms count from the server's start, not from the window's"
                .to_string(),
        );
    }
    let start_series: HashMap<SeriesKey, Series> = start
        .unwrap_or(&[])
        .iter()
        .flat_map(|f| f.series().into_iter().map(move |s| ((f.name.clone(), s.labels.clone()), s)))
        .collect();
    let mut increases: HashMap<String, f64> = HashMap::new();

    for family in end {
        let series = family.series();
        if series.is_empty() {
            continue;
        }
        let shown = distinguishing_labels(&series);
        let emit = Emitter { family, shown: &shown, several: series.len() > 1 };
        match family.metric_type {
            MetricType::Counter => {
                let mut total = 0.0;
                let mut name = family.name.clone();
                for s in &series {
                    let Some(end_value) = s.value else { continue };
                    name = s.value_name.clone().unwrap_or_else(|| family.name.clone());
                    let before = start_series.get(&(family.name.clone(), s.labels.clone()));
                    let increase = counter_increase(before.and_then(|b| b.value), end_value, before, s);
                    total += increase;
                    emit.counter(&mut out.signals, &name, &s.labels, increase, elapsed_s, !emit.several);
                }
                if emit.several {
                    emit.counter(&mut out.signals, &name, &BTreeMap::new(), total, elapsed_s, true);
                }
                increases.insert(name, total);
            }
            MetricType::Histogram | MetricType::GaugeHistogram | MetricType::Summary => {
                let mut combined: Option<Series> = Some(Series::default());
                for s in &series {
                    let before = if family.metric_type == MetricType::GaugeHistogram {
                        None
                    } else {
                        start_series.get(&(family.name.clone(), s.labels.clone()))
                    };
                    let delta = distribution_delta(before, s);
                    emit.distribution(&mut out.signals, &s.labels, &delta, !emit.several);
                    combined = combined.and_then(|c| add_distributions(c, &delta));
                }
                if emit.several {
                    match combined {
                        Some(c) => emit.distribution(&mut out.signals, &BTreeMap::new(), &c, true),
                        None => out
                            .warnings
                            .push(format!("{}: series have different buckets; no combined quantiles", family.name)),
                    }
                }
            }
            _ if family.metric_type == MetricType::Info || names::is_info_metric(&family.name) => {
                for s in &series {
                    emit.info(&mut out.signals, s);
                }
            }
            _ => {
                for s in &series {
                    let key = (family.name.clone(), s.labels.clone());
                    let stats = gauges.stats.get(&key).copied().or_else(|| s.value.map(GaugeStats::new));
                    if let Some(stats) = stats {
                        emit.gauge(&mut out.signals, &s.labels, &stats, Combine::Sum, !emit.several);
                    }
                }
                if emit.several {
                    for mapping in names::mappings_for(&family.name) {
                        if let Some(stats) = gauges.combined.get(&(family.name.clone(), mapping.combine)) {
                            emit.gauge(&mut out.signals, &BTreeMap::new(), stats, mapping.combine, true);
                        }
                    }
                }
            }
        }
    }

    for (hits_name, queries_name) in HIT_RATE_PAIRS {
        let (Some(hits), Some(queries)) = (increases.get(*hits_name), increases.get(*queries_name)) else { continue };
        if *queries > 0.0 {
            out.signals.push(
                Signal::number(
                    SOURCE,
                    SignalKind::Metric,
                    &format!("{hits_name}/{queries_name}"),
                    hits / queries,
                    "ratio",
                )
                .with_label("stat", "window")
                .with_canonical(canonical::PREFIX_HIT_RATE)
                .with_count(*queries)
                .with_detail(format!(
                    "{} ({} hits / {} queried tokens in the window)",
                    format_number(hits / queries),
                    format_number(*hits),
                    format_number(*queries)
                )),
            );
        } else {
            out.warnings.push(format!("{queries_name} did not grow in the window; no prefix hit rate"));
        }
    }
    out
}

/// A counter's increase; a drop means the server restarted, so the end value is all of it.
fn counter_increase(start: Option<f64>, end: f64, before: Option<&Series>, after: &Series) -> f64 {
    let restarted = match (before.and_then(|b| b.created), after.created) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    match start {
        Some(start) if !restarted && end >= start => end - start,
        _ => end,
    }
}

/// The distribution of only the window's observations.
fn distribution_delta(before: Option<&Series>, after: &Series) -> Series {
    let Some(before) = before else { return after.clone() };
    let restarted = after.count.unwrap_or(0.0) < before.count.unwrap_or(0.0)
        || matches!((before.created, after.created), (Some(a), Some(b)) if a != b);
    if restarted {
        return after.clone();
    }
    let earlier: HashMap<u64, f64> = before.buckets.iter().map(|(le, c)| (le.to_bits(), *c)).collect();
    Series {
        labels: after.labels.clone(),
        sum: after.sum.map(|s| s - before.sum.unwrap_or(0.0)),
        count: after.count.map(|c| c - before.count.unwrap_or(0.0)),
        buckets: after
            .buckets
            .iter()
            .map(|(le, c)| (*le, (c - earlier.get(&le.to_bits()).copied().unwrap_or(0.0)).max(0.0)))
            .collect(),
        // Summary quantiles are the engine's own sliding window; they cannot be subtracted.
        quantiles: after.quantiles.clone(),
        ..Default::default()
    }
}

/// Sums two window distributions bucket by bucket; `None` when their bucket bounds differ.
fn add_distributions(mut total: Series, other: &Series) -> Option<Series> {
    if total.buckets.is_empty() && total.count.is_none() {
        return Some(Series { labels: BTreeMap::new(), ..other.clone() });
    }
    if total.buckets.len() != other.buckets.len() || total.buckets.iter().zip(&other.buckets).any(|(a, b)| a.0 != b.0) {
        return None;
    }
    for (mine, theirs) in total.buckets.iter_mut().zip(&other.buckets) {
        mine.1 += theirs.1;
    }
    total.sum = Some(total.sum.unwrap_or(0.0) + other.sum.unwrap_or(0.0));
    total.count = Some(total.count.unwrap_or(0.0) + other.count.unwrap_or(0.0));
    // Quantiles of different summaries do not combine.
    total.quantiles.clear();
    Some(total)
}

/// Builds the signals of one family with consistent names, labels and canonical tags.
struct Emitter<'a> {
    family: &'a MetricFamily,
    shown: &'a std::collections::BTreeSet<String>,
    /// The family has several series; the canonical tag goes on their combination only.
    several: bool,
}

impl Emitter<'_> {
    fn signal(&self, name: &str, labels: &SeriesLabels, stat: &str, value: f64, unit: &str) -> Signal {
        let mut signal = Signal::number(SOURCE, SignalKind::Metric, name, value, unit);
        for (k, v) in labels.iter().filter(|(k, _)| self.shown.contains(*k)) {
            signal = signal.with_label(k, v);
        }
        signal.with_label("stat", stat)
    }

    fn tag(&self, signal: Signal, metric: &str, stat: &str, tagged: bool) -> Signal {
        if !tagged {
            return signal;
        }
        let mapping = names::mappings_for(metric).into_iter().find(|m| match m.stat {
            TaggedStat::All => true,
            TaggedStat::Increase => stat == "increase",
            TaggedStat::Rate => stat == "rate",
            TaggedStat::Mean => stat == "mean",
        });
        match mapping {
            Some(m) => signal.with_canonical(m.canonical),
            None => signal,
        }
    }

    fn counter(
        &self,
        out: &mut Vec<Signal>,
        name: &str,
        labels: &SeriesLabels,
        increase: f64,
        elapsed_s: f64,
        tagged: bool,
    ) {
        let unit = names::unit_for(name);
        let increase_signal = self.signal(name, labels, "increase", increase, unit).with_detail(
            format!("{} {unit} in the window ({elapsed_s:.1} s between scrapes)", format_number(increase))
                .replace("  ", " "),
        );
        out.push(self.tag(increase_signal, name, "increase", tagged));
        if elapsed_s > 0.0 {
            let rate_unit = match unit {
                "" => "1/s".to_string(),
                u => format!("{u}/s"),
            };
            let rate = self.signal(name, labels, "rate", increase / elapsed_s, &rate_unit).with_detail(format!(
                "{} {rate_unit} ({} over {:.1} s)",
                format_number(increase / elapsed_s),
                format_number(increase),
                elapsed_s
            ));
            out.push(self.tag(rate, name, "rate", tagged));
        }
    }

    fn gauge(&self, out: &mut Vec<Signal>, labels: &SeriesLabels, stats: &GaugeStats, combine: Combine, tagged: bool) {
        let name = &self.family.name;
        let unit = names::unit_for(name);
        let how = if labels.is_empty() && self.several {
            match combine {
                Combine::Sum => ", summed over series",
                Combine::Mean => ", averaged over series",
            }
        } else {
            ""
        };
        let samples = if stats.samples == 1 { "1 sample".to_string() } else { format!("{} samples", stats.samples) };
        let detail_tail = format!("over {samples} in the window{how}");
        for (stat, value) in [
            ("mean", stats.sum / stats.samples.max(1) as f64),
            ("max", stats.max),
            ("min", stats.min),
            ("last", stats.last),
        ] {
            let signal = self
                .signal(name, labels, stat, value, unit)
                .with_count(stats.samples as f64)
                .with_detail(format!("{stat} {} {unit} {detail_tail}", format_number(value)).replace("  ", " "));
            out.push(self.tag(signal, name, stat, tagged));
        }
    }

    /// A settings report such as `vllm:cache_config_info`: one signal with every label, so a
    /// reader can look a setting up by its key (`enable_prefix_caching`, `block_size`).
    fn info(&self, out: &mut Vec<Signal>, series: &Series) {
        let name = match self.family.metric_type {
            // OpenMetrics names the family `foo` and its sample `foo_info`.
            MetricType::Info if !self.family.name.ends_with("_info") => format!("{}_info", self.family.name),
            _ => self.family.name.clone(),
        };
        let mut signal = Signal::number(SOURCE, SignalKind::Metric, &name, series.value.unwrap_or(1.0), "");
        for (k, v) in &series.labels {
            signal = signal.with_label(k, v);
        }
        let shown: Vec<String> = series
            .labels
            .iter()
            .filter(|(k, v)| !k.starts_with('_') && !matches!(v.as_str(), "None" | "[]" | ""))
            .take(12)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let more = series.labels.len().saturating_sub(shown.len());
        let tail = if more > 0 { format!(" (+{more} more labels)") } else { String::new() };
        out.push(signal.with_label("stat", "info").with_detail(format!("{}{tail}", shown.join(", "))));
    }

    fn distribution(&self, out: &mut Vec<Signal>, labels: &SeriesLabels, delta: &Series, tagged: bool) {
        let name = &self.family.name;
        let unit = names::unit_for(name);
        let count = delta.count.or_else(|| delta.buckets.last().map(|b| b.1)).unwrap_or(0.0);
        let observations = format!("{} observations in the window", format_number(count));
        if count > 0.0
            && let Some(sum) = delta.sum
        {
            let mean = sum / count;
            let signal = self
                .signal(name, labels, "mean", mean, unit)
                .with_count(count)
                .with_detail(format!("mean {} {unit} (Δsum/Δcount, {observations})", format_number(mean)));
            out.push(self.tag(signal, name, "mean", tagged));
        }
        if !delta.buckets.is_empty() {
            for (stat, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
                let Some(value) = histogram_quantile(q, &delta.buckets) else { continue };
                let signal = self
                    .signal(name, labels, stat, value, unit)
                    .with_count(count)
                    .with_detail(format!("{stat} {} {unit} (from buckets, {observations})", format_number(value)));
                out.push(self.tag(signal, name, stat, tagged));
            }
        }
        for (q, value) in &delta.quantiles {
            if value.is_nan() {
                continue;
            }
            let stat = quantile_stat(*q);
            let signal = self
                .signal(name, labels, &stat, *value, unit)
                .with_detail(format!("{stat} {} {unit} (the engine's own summary quantile)", format_number(*value)));
            out.push(self.tag(signal, name, &stat, tagged));
        }
        let count_signal = self.signal(name, labels, "count", count, "").with_count(count);
        out.push(count_signal);
    }
}

/// `0.99` → `p99`, `0.999` → `p99.9`.
fn quantile_stat(q: f64) -> String {
    let percent = q * 100.0;
    let text = format!("{percent:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("p{text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::parse_exposition;

    fn by<'a>(signals: &'a [Signal], name: &str, stat: &str) -> Option<&'a Signal> {
        signals.iter().find(|s| s.name == name && s.labels.get("stat").map(String::as_str) == Some(stat))
    }

    #[test]
    fn histogram_delta_quantiles_use_only_window_observations() {
        // Before the window: 100 slow requests (all in (1, 2]). In the window: 10 fast ones.
        let start = "# TYPE t histogram\nt_bucket{le=\"0.1\"} 0\nt_bucket{le=\"1\"} 0\nt_bucket{le=\"2\"} 100\nt_bucket{le=\"+Inf\"} 100\nt_sum 150\nt_count 100\n";
        let end = "# TYPE t histogram\nt_sum 150.5\nt_bucket{le=\"0.1\"} 10\nt_bucket{le=\"1\"} 10\nt_bucket{le=\"2\"} 100\nt_bucket{le=\"+Inf\"} 110\nt_count 110\n";
        let start = parse_exposition(start).unwrap();
        let end = parse_exposition(end).unwrap();
        let out = window_signals(Some(&start), &GaugeTracker::default(), &end, Duration::from_secs(5));
        let p99 = by(&out.signals, "t", "p99").unwrap().as_f64().unwrap();
        assert!(p99 <= 0.1, "p99 {p99} must come from the window's fast requests only");
        let mean = by(&out.signals, "t", "mean").unwrap().as_f64().unwrap();
        assert!((mean - 0.05).abs() < 1e-9, "{mean}");
        assert_eq!(by(&out.signals, "t", "count").unwrap().as_f64(), Some(10.0));
    }

    #[test]
    fn counter_reset_counts_the_end_value() {
        let start = parse_exposition("# TYPE c counter\nc_total 500\n").unwrap();
        let end = parse_exposition("# TYPE c counter\nc_total 20\n").unwrap();
        let out = window_signals(Some(&start), &GaugeTracker::default(), &end, Duration::from_secs(4));
        assert_eq!(by(&out.signals, "c_total", "increase").unwrap().as_f64(), Some(20.0));
        assert_eq!(by(&out.signals, "c_total", "rate").unwrap().as_f64(), Some(5.0));
    }

    #[test]
    fn gauge_statistics_span_every_sample() {
        let mut tracker = GaugeTracker::default();
        let mut last = Vec::new();
        for v in [0.2, 0.9, 0.4] {
            last = parse_exposition(&format!(
                "# TYPE sglang:token_usage gauge\nsglang:token_usage{{model_name=\"m\"}} {v}\n"
            ))
            .unwrap();
            tracker.observe(&last);
        }
        let out = window_signals(Some(&last), &tracker, &last, Duration::from_secs(1));
        let max = by(&out.signals, "sglang:token_usage", "max").unwrap();
        assert_eq!(max.as_f64(), Some(0.9));
        assert_eq!(max.canonical.as_deref(), Some(canonical::KV_USAGE));
        assert!(!max.labels.contains_key("model_name"), "a label shared by every series stays out");
        let mean = by(&out.signals, "sglang:token_usage", "mean").unwrap().as_f64().unwrap();
        assert!((mean - 0.5).abs() < 1e-9);
        assert_eq!(by(&out.signals, "sglang:token_usage", "last").unwrap().as_f64(), Some(0.4));
    }

    #[test]
    fn several_series_keep_their_distinguishing_label_and_combine_for_the_canonical() {
        let text = |a: u32, b: u32| {
            format!(
                "# TYPE sglang:prompt_tokens_total counter\nsglang:prompt_tokens_total{{is_streaming=\"true\",model_name=\"m\"}} {a}\nsglang:prompt_tokens_total{{is_streaming=\"false\",model_name=\"m\"}} {b}\n"
            )
        };
        let start = parse_exposition(&text(10, 5)).unwrap();
        let end = parse_exposition(&text(40, 25)).unwrap();
        let out = window_signals(Some(&start), &GaugeTracker::default(), &end, Duration::from_secs(10));
        let tagged: Vec<&Signal> =
            out.signals.iter().filter(|s| s.canonical.as_deref() == Some(canonical::PROMPT_TOKENS)).collect();
        assert_eq!(tagged.len(), 1);
        assert_eq!(tagged[0].as_f64(), Some(50.0));
        let streaming = out
            .signals
            .iter()
            .find(|s| {
                s.labels.get("is_streaming").map(String::as_str) == Some("true") && s.labels["stat"] == "increase"
            })
            .unwrap();
        assert_eq!(streaming.as_f64(), Some(30.0));
        assert!(!streaming.labels.contains_key("model_name"));
    }

    #[test]
    fn summaries_report_their_quantiles_and_window_mean() {
        let text = |sum: f64, count: f64| {
            format!(
                "# TYPE rpc summary\nrpc{{quantile=\"0.5\"}} 0.2\nrpc{{quantile=\"0.99\"}} 0.9\nrpc_sum {sum}\nrpc_count {count}\n"
            )
        };
        let start = parse_exposition(&text(10.0, 100.0)).unwrap();
        let end = parse_exposition(&text(13.0, 110.0)).unwrap();
        let out = window_signals(Some(&start), &GaugeTracker::default(), &end, Duration::from_secs(1));
        assert_eq!(by(&out.signals, "rpc", "p99").unwrap().as_f64(), Some(0.9));
        let mean = by(&out.signals, "rpc", "mean").unwrap().as_f64().unwrap();
        assert!((mean - 0.3).abs() < 1e-9, "{mean}");
    }

    #[test]
    fn quantile_stat_names() {
        assert_eq!(quantile_stat(0.5), "p50");
        assert_eq!(quantile_stat(0.99), "p99");
        assert_eq!(quantile_stat(0.999), "p99.9");
    }
}
