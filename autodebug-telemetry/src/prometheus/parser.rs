//! A parser for the Prometheus text exposition format (0.0.4) and OpenMetrics 1.0.
//!
//! Engines expose metrics through different client libraries and layouts: prometheus_client in
//! single-process mode (`_created` series declared as their own gauges), in multiprocess mode
//! (`_sum` before `_bucket`, no `_created`), OpenMetrics (`# TYPE foo counter` with `foo_total`
//! samples, `# EOF`), and C++ servers such as llama.cpp. The parser accepts all of them and
//! groups every sample under the family it belongs to.

use std::collections::HashMap;
use std::fmt;

/// The type a `# TYPE` line declares (`untyped` and `unknown` both map to [`MetricType::Unknown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl MetricType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "untyped" | "unknown" => MetricType::Unknown,
            _ => return None,
        })
    }

    /// The sample-name suffixes a family of this type may use besides its bare name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            MetricType::Summary => &["_sum", "_count", "_created"],
            MetricType::Info => &["_info"],
            MetricType::Gauge | MetricType::StateSet | MetricType::Unknown => &[],
        }
    }
}

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The full sample name as written, e.g. `vllm:time_to_first_token_seconds_bucket`.
    pub name: String,
    /// Labels in the order written (`le` and `quantile` included).
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// The timestamp as written: milliseconds in the text format, seconds in OpenMetrics.
    pub timestamp: Option<f64>,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// All samples of one metric, with its declared type and help.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// The name from the `# TYPE` line (or the sample name when the metric is undeclared).
    pub name: String,
    pub metric_type: MetricType,
    pub help: Option<String>,
    /// OpenMetrics `# UNIT`, when given.
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

/// A line the parser could not read; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses a whole scrape into metric families, in the order they first appear.
///
/// ```
/// use autodebug_telemetry::prometheus::{parse_exposition, MetricType};
/// let text = "# TYPE sglang:token_usage gauge\nsglang:token_usage{model_name=\"m\"} 0.28\n";
/// let families = parse_exposition(text).unwrap();
/// assert_eq!(families[0].metric_type, MetricType::Gauge);
/// assert_eq!(families[0].samples[0].value, 0.28);
/// ```
pub fn parse_exposition(text: &str) -> Result<Vec<MetricFamily>, ParseError> {
    let mut parser = FamilyBuilder::default();
    for (index, raw_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw_line.trim_end_matches('\r');
        let err = |message: String| ParseError { line: line_no, message };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if comment == "EOF" {
                break;
            }
            parser.comment(comment).map_err(err)?;
            continue;
        }
        let sample = parse_sample(line).map_err(err)?;
        parser.sample(sample);
    }
    Ok(parser.finish())
}

#[derive(Default)]
struct FamilyBuilder {
    families: Vec<MetricFamily>,
    by_name: HashMap<String, usize>,
}

impl FamilyBuilder {
    fn comment(&mut self, comment: &str) -> Result<(), String> {
        let (keyword, rest) = split_word(comment);
        match keyword {
            "HELP" | "TYPE" | "UNIT" => {}
            // Any other comment is free text.
            _ => return Ok(()),
        }
        let (name, rest) = split_word(rest);
        let name = unquote_name(name);
        if name.is_empty() {
            return Err(format!("# {keyword} without a metric name"));
        }
        // prometheus_client declares `foo_created` as a gauge of its own (HELP and TYPE) right
        // after the counter/histogram `foo`; fold it into its parent family.
        if self.created_parent(&name).is_some() && !self.by_name.contains_key(&name) {
            let declares_gauge = keyword != "TYPE" || rest.trim() == "gauge";
            if declares_gauge {
                return Ok(());
            }
        }
        match keyword {
            "HELP" => {
                let index = self.family_for_declaration(&name, None);
                self.families[index].help = Some(unescape(rest, false));
            }
            "UNIT" => {
                let index = self.family_for_declaration(&name, None);
                self.families[index].unit = Some(rest.trim().to_string());
            }
            _ => {
                let type_name = rest.trim();
                let metric_type = MetricType::parse(type_name).ok_or_else(|| {
                    format!("unknown metric type {type_name:?} for {name} (expected counter, gauge, histogram, summary, untyped...)")
                })?;
                let index = self.family_for_declaration(&name, Some(metric_type));
                self.families[index].metric_type = metric_type;
            }
        }
        Ok(())
    }

    /// The family a HELP/TYPE/UNIT line names; a new one unless it was seen before.
    fn family_for_declaration(&mut self, name: &str, metric_type: Option<MetricType>) -> usize {
        if let Some(&index) = self.by_name.get(name) {
            return index;
        }
        self.families.push(MetricFamily {
            name: name.to_string(),
            metric_type: metric_type.unwrap_or(MetricType::Unknown),
            help: None,
            unit: None,
            samples: Vec::new(),
        });
        let index = self.families.len() - 1;
        self.by_name.insert(name.to_string(), index);
        index
    }

    /// For `foo_created`, the counter (`foo_total` or `foo`), histogram or summary `foo` it belongs to.
    fn created_parent(&self, name: &str) -> Option<usize> {
        let base = name.strip_suffix("_created")?;
        [format!("{base}_total"), base.to_string()].iter().find_map(|candidate| {
            let &index = self.by_name.get(candidate)?;
            matches!(
                self.families[index].metric_type,
                MetricType::Counter | MetricType::Histogram | MetricType::Summary
            )
            .then_some(index)
        })
    }

    fn sample(&mut self, sample: Sample) {
        let index = self.owner_of(&sample.name).unwrap_or_else(|| {
            self.families.push(MetricFamily {
                name: sample.name.clone(),
                metric_type: MetricType::Unknown,
                help: None,
                unit: None,
                samples: Vec::new(),
            });
            let index = self.families.len() - 1;
            self.by_name.insert(sample.name.clone(), index);
            index
        });
        self.families[index].samples.push(sample);
    }

    fn owner_of(&self, sample_name: &str) -> Option<usize> {
        if let Some(&index) = self.by_name.get(sample_name) {
            return Some(index);
        }
        for suffix in ["_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount", "_info"] {
            let Some(base) = sample_name.strip_suffix(suffix) else { continue };
            if let Some(&index) = self.by_name.get(base)
                && self.families[index].metric_type.suffixes().contains(&suffix)
            {
                return Some(index);
            }
            if suffix == "_created"
                && let Some(index) = self.created_parent(sample_name)
            {
                return Some(index);
            }
        }
        None
    }

    fn finish(self) -> Vec<MetricFamily> {
        // HELP-only declarations without samples are kept: an engine that has seen no traffic
        // still tells the reader which metrics exist.
        self.families
    }
}

fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    if text.starts_with('"') {
        // A quoted (UTF-8) metric name: up to the closing unescaped quote.
        let mut escaped = false;
        for (i, c) in text.char_indices().skip(1) {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => return (&text[..=i], &text[i + 1..]),
                _ => escaped = false,
            }
        }
        return (text, "");
    }
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    }
}

fn unquote_name(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(inner) => unescape(inner, true),
        None => name.to_string(),
    }
}

/// Undoes `\\`, `\n` and (in label values) `\"`; an unknown escape is kept as written.
fn unescape(text: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let line = line.trim_start();
    let mut name = String::new();
    let mut rest = line;
    if !line.starts_with('{') {
        let end = line.char_indices().find(|&(i, c)| !is_name_char(c, i == 0)).map(|(i, _)| i).unwrap_or(line.len());
        if end == 0 {
            return Err(format!("expected a metric name at the start of {line:?}"));
        }
        name = line[..end].to_string();
        rest = &line[end..];
    }
    let mut labels = Vec::new();
    let rest_trimmed = rest.trim_start();
    if let Some(after_brace) = rest_trimmed.strip_prefix('{') {
        let (parsed, quoted_name, after) = parse_labels(after_brace)?;
        labels = parsed;
        if let Some(quoted) = quoted_name {
            if !name.is_empty() {
                return Err(format!("metric {name} also has a quoted name {quoted:?} inside its braces"));
            }
            name = quoted;
        }
        rest = after;
    }
    if name.is_empty() {
        return Err("sample without a metric name".to_string());
    }
    if !rest.starts_with(char::is_whitespace) {
        return Err(format!("expected a space and a value after {name}"));
    }
    // OpenMetrics exemplars follow ` # `; they are not part of the sample.
    let rest = match rest.find(" # ") {
        Some(i) => &rest[..i],
        None => rest,
    };
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or_else(|| format!("metric {name} has no value"))?;
    let value =
        parse_float(value_text).ok_or_else(|| format!("metric {name}: value {value_text:?} is not a number"))?;
    let timestamp = match fields.next() {
        Some(t) => Some(parse_float(t).ok_or_else(|| format!("metric {name}: timestamp {t:?} is not a number"))?),
        None => None,
    };
    if let Some(extra) = fields.next() {
        return Err(format!("metric {name}: unexpected {extra:?} after the timestamp"));
    }
    Ok(Sample { name, labels, value, timestamp })
}

/// Parses labels after the opening brace; returns the labels, a quoted metric name if the braces
/// held one (`{"my.metric", a="b"}`), and the text after the closing brace.
#[allow(clippy::type_complexity)]
fn parse_labels(mut text: &str) -> Result<(Vec<(String, String)>, Option<String>, &str), String> {
    let mut labels = Vec::new();
    let mut quoted_name = None;
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, quoted_name, after));
        }
        let label_name = if text.starts_with('"') {
            let (value, after) = parse_quoted(&text[1..])?;
            text = after.trim_start();
            value
        } else {
            let end = text
                .char_indices()
                .find(|&(i, c)| !(is_name_char(c, i == 0) && c != ':'))
                .map(|(i, _)| i)
                .unwrap_or(text.len());
            if end == 0 {
                return Err(format!("expected a label name or '}}' at {:?}", preview(text)));
            }
            let name = text[..end].to_string();
            text = text[end..].trim_start();
            name
        };
        if let Some(after) = text.strip_prefix('=') {
            let after = after.trim_start();
            let Some(after_quote) = after.strip_prefix('"') else {
                return Err(format!("label {label_name}: value must be in double quotes"));
            };
            let (value, after) = parse_quoted(after_quote).map_err(|e| format!("label {label_name}: {e}"))?;
            labels.push((label_name, value));
            text = after;
        } else if quoted_name.is_none() && labels.is_empty() {
            quoted_name = Some(label_name);
        } else {
            return Err(format!("label {label_name}: expected '='"));
        }
        text = text.trim_start();
        if let Some(after) = text.strip_prefix(',') {
            text = after;
        } else if !text.starts_with('}') {
            return Err(format!("expected ',' or '}}' at {:?}", preview(text)));
        }
    }
}

/// Reads a quoted string whose opening quote was consumed; returns it unescaped and the rest.
fn parse_quoted(text: &str) -> Result<(String, &str), String> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Ok((unescape(&text[..i], true), &text[i + 1..])),
            _ => escaped = false,
        }
    }
    Err("unterminated quoted string".to_string())
}

fn preview(text: &str) -> String {
    text.chars().take(24).collect()
}

/// Parses a value the way Prometheus writes them: `1.5e+06`, `+Inf`, `-Inf`, `NaN`.
pub(crate) fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            // Rust also reads "infinity" and friends; the format does not allow those.
            if text.chars().any(|c| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E')) {
                return None;
            }
            text.parse().ok()
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_label_values_and_any_label_order() {
        let text = "# TYPE m gauge\nm{b=\"x\\\\y\",a=\"say \\\"hi\\\"\\nbye\",} 1 1700000000000\n";
        let families = parse_exposition(text).unwrap();
        let sample = &families[0].samples[0];
        assert_eq!(sample.label("b"), Some("x\\y"));
        assert_eq!(sample.label("a"), Some("say \"hi\"\nbye"));
        assert_eq!(sample.timestamp, Some(1.7e12));
    }

    #[test]
    fn openmetrics_counter_with_total_created_and_eof() {
        let text = "# TYPE req counter\n# UNIT req requests\nreq_total 5\nreq_created 1.7e9\n# EOF\ngarbage {{{\n";
        let families = parse_exposition(text).unwrap();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].samples.len(), 2);
        assert_eq!(families[0].unit.as_deref(), Some("requests"));
    }

    #[test]
    fn text_format_created_gauge_folds_into_counter() {
        let text = "# HELP c_total n\n# TYPE c_total counter\nc_total 3\n# HELP c_created n\n# TYPE c_created gauge\nc_created 1.7e9\n";
        let families = parse_exposition(text).unwrap();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].samples[1].name, "c_created");
    }

    #[test]
    fn histogram_whose_name_ends_in_total() {
        let text = "# TYPE it_total histogram\nit_total_bucket{le=\"1\"} 1\nit_total_bucket{le=\"+Inf\"} 2\nit_total_sum 3\nit_total_count 2\n";
        let families = parse_exposition(text).unwrap();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].samples.len(), 4);
    }

    #[test]
    fn openmetrics_exemplars_and_float_timestamps() {
        let text = "# TYPE h histogram\nh_bucket{le=\"0.5\"} 3 1700000000.250 # {trace_id=\"abc\"} 0.4 1700000000.1\nh_bucket{le=\"+Inf\"} 4\nh_count 4\nh_sum 1.5\n# EOF\n";
        let families = parse_exposition(text).unwrap();
        assert_eq!(families[0].samples[0].value, 3.0);
        assert_eq!(families[0].samples[0].timestamp, Some(1_700_000_000.25));
        assert_eq!(families[0].series()[0].buckets, vec![(0.5, 3.0), (f64::INFINITY, 4.0)]);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_exposition("# TYPE a gauge\na 1\na{x=\"1} 2\n").unwrap_err();
        assert_eq!(err.line, 3);
        let err = parse_exposition("a one\n").unwrap_err();
        assert!(err.to_string().starts_with("line 1:"), "{err}");
        assert!(parse_exposition("# TYPE a flux\n").is_err());
        assert!(parse_exposition("a 1 2 3\n").is_err());
    }

    #[test]
    fn special_values_and_quoted_names() {
        let families = parse_exposition("a NaN\nb +Inf\nc -Inf\n{\"d.e\", x=\"1\"} 2\n").unwrap();
        assert!(families[0].samples[0].value.is_nan());
        assert_eq!(families[1].samples[0].value, f64::INFINITY);
        assert_eq!(families[2].samples[0].value, f64::NEG_INFINITY);
        assert_eq!(families[3].name, "d.e");
        assert!(parse_float("infinity").is_none());
    }
}
