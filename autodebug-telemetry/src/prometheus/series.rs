//! Groups a family's samples into series: one per label set, with its buckets, sum and count
//! gathered, whatever order the exposition wrote them in.

use std::collections::{BTreeMap, BTreeSet};

use super::parser::{MetricFamily, MetricType};

/// Labels of one series, sorted, without `le` and `quantile`.
pub type SeriesLabels = BTreeMap<String, String>;

/// One time series of a family as of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub labels: SeriesLabels,
    /// Counter, gauge and untyped value (also the sample name it came from, for counters).
    pub value: Option<f64>,
    pub value_name: Option<String>,
    pub sum: Option<f64>,
    pub count: Option<f64>,
    /// `(le, cumulative count)`, sorted by `le`.
    pub buckets: Vec<(f64, f64)>,
    /// `(quantile, value)` of a summary, sorted by quantile.
    pub quantiles: Vec<(f64, f64)>,
    /// Unix seconds when the series was created (`_created`), when exposed.
    pub created: Option<f64>,
}

impl MetricFamily {
    /// The family's series in the order first seen.
    ///
    /// ```
    /// use autodebug_telemetry::prometheus::parse_exposition;
    /// let text = "# TYPE t histogram\nt_sum 3\nt_bucket{le=\"1\"} 1\nt_bucket{le=\"+Inf\"} 2\nt_count 2\n";
    /// let series = parse_exposition(text).unwrap()[0].series();
    /// assert_eq!(series[0].buckets, vec![(1.0, 1.0), (f64::INFINITY, 2.0)]);
    /// assert_eq!(series[0].sum, Some(3.0));
    /// ```
    pub fn series(&self) -> Vec<Series> {
        let mut order: Vec<SeriesLabels> = Vec::new();
        let mut by_labels: BTreeMap<SeriesLabels, Series> = BTreeMap::new();
        for sample in &self.samples {
            let labels: SeriesLabels = sample
                .labels
                .iter()
                .filter(|(k, _)| k != "le" && k != "quantile")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let series = by_labels.entry(labels.clone()).or_insert_with(|| {
                order.push(labels.clone());
                Series { labels, ..Default::default() }
            });
            let suffix = if sample.name == self.name {
                ""
            } else if sample.name.ends_with("_created")
                && matches!(self.metric_type, MetricType::Counter | MetricType::Histogram | MetricType::Summary)
            {
                // Text-format counters are named `foo_total` but their creation time is `foo_created`.
                "_created"
            } else {
                sample.name.strip_prefix(self.name.as_str()).unwrap_or("")
            };
            let is_distribution =
                matches!(self.metric_type, MetricType::Histogram | MetricType::GaugeHistogram | MetricType::Summary);
            match suffix {
                "_created" => series.created = Some(sample.value),
                "_bucket" if is_distribution => {
                    if let Some(le) = sample.label("le").and_then(super::parser::parse_float) {
                        series.buckets.push((le, sample.value));
                    }
                }
                "_sum" | "_gsum" if is_distribution => series.sum = Some(sample.value),
                "_count" | "_gcount" if is_distribution => series.count = Some(sample.value),
                _ if self.metric_type == MetricType::Summary => {
                    if let Some(q) = sample.label("quantile").and_then(super::parser::parse_float) {
                        series.quantiles.push((q, sample.value));
                    }
                }
                _ => {
                    series.value = Some(sample.value);
                    series.value_name = Some(sample.name.clone());
                }
            }
        }
        order
            .into_iter()
            .filter_map(|labels| by_labels.remove(&labels))
            .map(|mut series| {
                series.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                series.quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                series
            })
            .collect()
    }
}

/// The label names whose values differ between the given series: the ones a citation needs to
/// tell them apart (`model_name` or `engine` that every series shares are left out).
pub fn distinguishing_labels(series: &[Series]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let all: BTreeSet<&String> = series.iter().flat_map(|s| s.labels.keys()).collect();
    for name in all {
        let first = series.first().and_then(|s| s.labels.get(name));
        if series.iter().any(|s| s.labels.get(name) != first) {
            names.insert(name.clone());
        }
    }
    names
}
