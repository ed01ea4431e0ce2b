//! Evaluates knowledge-base conditions against what the loop knows: signals, logs, a spec.

use std::collections::BTreeMap;

use crate::{Comparison, LogLine, Objective, SearchSpace, ServiceSpec, Signal, SignalKind, SignalValue, format_number};

use super::kb::{Condition, Op, scalar_text};

/// What a condition may read.
pub(crate) struct Facts<'a> {
    pub signals: Vec<&'a Signal>,
    pub logs: &'a [LogLine],
    pub spec: &'a ServiceSpec,
    pub space: &'a SearchSpace,
    /// The objective and what the configuration planned from measured, for `slo` conditions
    /// (`None` in the analyzer, which does not know the objective).
    pub slo: Option<(&'a Objective, &'a BTreeMap<String, f64>)>,
}

/// What a selector read: a value, and the signal to cite when there is one.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    pub value: SignalValue,
    pub signal: Option<Signal>,
}

impl Facts<'_> {
    pub fn read(&self, cond: &Condition) -> Option<Reading> {
        let cite = |s: &Signal| Reading { value: s.value.clone(), signal: Some(s.clone()) };
        if let Some(name) = &cond.signal {
            return self
                .signals
                .iter()
                .filter(|s| s.canonical.as_deref() == Some(name.as_str()) && s.as_f64().is_some())
                .max_by(|a, b| a.as_f64().unwrap_or(0.0).total_cmp(&b.as_f64().unwrap_or(0.0)))
                .or_else(|| self.signals.iter().find(|s| s.canonical.as_deref() == Some(name.as_str())))
                .map(|s| cite(s));
        }
        if let Some(name) = &cond.name {
            return self.signals.iter().find(|s| s.name == *name).map(|s| cite(s));
        }
        if !cond.profile.is_empty() {
            return self
                .signals
                .iter()
                .find(|s| s.kind == SignalKind::Profile && cond.profile.iter().any(|x| s.name.ends_with(x.as_str())))
                .map(|s| cite(s));
        }
        if let Some(key) = &cond.attribute {
            return startup_attribute(&self.signals, key).map(cite);
        }
        if let Some(flag) = &cond.flag {
            return self
                .space
                .effective(&self.spec.flags, flag)
                .map(|v| Reading { value: SignalValue::Text(v), signal: None });
        }
        if let Some(prefix) = &cond.slo {
            let (objective, metrics) = self.slo?;
            return objective
                .constraints
                .iter()
                .filter(|c| c.metric == *prefix || c.metric.starts_with(&format!("{prefix}.")))
                .filter(|c| c.bound.is_finite() && c.bound > 0.0)
                .filter_map(|c| {
                    let measured = *metrics.get(&c.metric).filter(|v| v.is_finite())?;
                    let ratio = match c.op {
                        Comparison::AtMost => measured / c.bound,
                        Comparison::AtLeast => c.bound / measured.max(f64::MIN_POSITIVE),
                        Comparison::Equal => return None,
                    };
                    Some((c, measured, ratio))
                })
                .max_by(|a, b| a.2.total_cmp(&b.2))
                .map(|(c, measured, ratio)| {
                    let signal =
                        Signal::number("objective", SignalKind::Bench, &format!("slo.{}", c.metric), ratio, "x bound")
                            .with_detail(format!(
                                "{} measured {} against the objective's `{c}` ({ratio:.2}x the bound)",
                                c.metric,
                                format_number(measured)
                            ));
                    Reading { value: SignalValue::Number(ratio), signal: Some(signal) }
                });
        }
        if let Some(text) = &cond.log {
            let needle = text.to_ascii_lowercase();
            let lines: Vec<&LogLine> =
                self.logs.iter().filter(|l| l.text.to_ascii_lowercase().contains(&needle)).collect();
            let last = lines.last()?;
            let signal = Signal::number("logs", SignalKind::LogLine, "engine.log", lines.len() as f64, "lines")
                .with_detail(format!("{} line(s) like: {}", lines.len(), last.text.trim()));
            return Some(Reading { value: SignalValue::Number(lines.len() as f64), signal: Some(signal) });
        }
        None
    }

    /// Whether the condition holds, and what it read.
    pub fn check(&self, cond: &Condition) -> (bool, Option<Reading>) {
        let reading = self.read(cond);
        let holds = match (&reading, cond.op) {
            (None, _) => cond.missing,
            (Some(_), None) => !cond.missing,
            (Some(_), Some(Op::Exists)) => true,
            (Some(r), Some(op)) => {
                let wanted = cond.value.as_ref().and_then(scalar_text).unwrap_or_default();
                compare(&r.value, op, &wanted)
            }
        };
        (holds, reading)
    }
}

/// A startup attribute (`sglang.startup.<key>`, `vllm.startup.<key>`), from any source.
pub(crate) fn startup_attribute<'a>(signals: &[&'a Signal], key: &str) -> Option<&'a Signal> {
    let suffix = format!(".startup.{key}");
    signals.iter().copied().find(|s| s.kind == SignalKind::SpanAttribute && s.name.ends_with(&suffix))
}

/// Normalizes booleans the way engines print them (`True`, `1`, `on`) and strips quotes.
pub(crate) fn normalize(v: &str) -> String {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => "true".to_string(),
        "false" | "0" | "no" | "off" | "none" => "false".to_string(),
        other => other.trim_matches(|c| c == '"' || c == '\'').to_string(),
    }
}

/// Whether two settings say the same thing (numbers within rounding, booleans normalized).
pub(crate) fn same_setting(a: &str, b: &str) -> bool {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ if is_structured(a) && is_structured(b) => structured_text(a) == structured_text(b),
        _ => normalize(a).eq_ignore_ascii_case(&normalize(b)),
    }
}

fn is_structured(v: &str) -> bool {
    let v = v.trim();
    (v.starts_with('{') && v.ends_with('}')) || (v.starts_with('[') && v.ends_with(']'))
}

/// A JSON flag value and the engine's Python echo of it (`{"method":"ngram"}` and
/// `{'method': 'ngram'}`, `true` and `True`) as one text: no quotes, no spaces, lower-case.
fn structured_text(v: &str) -> String {
    v.chars().filter(|c| !c.is_whitespace() && *c != '"' && *c != '\'').collect::<String>().to_ascii_lowercase()
}

fn compare(value: &SignalValue, op: Op, wanted: &str) -> bool {
    let number = value.as_f64().zip(wanted.trim().parse::<f64>().ok());
    match (op, number) {
        (Op::Gt, Some((a, b))) => a > b,
        (Op::Ge, Some((a, b))) => a >= b,
        (Op::Lt, Some((a, b))) => a < b,
        (Op::Le, Some((a, b))) => a <= b,
        (Op::Gt | Op::Ge | Op::Lt | Op::Le, None) => false,
        (Op::Eq, _) => same_setting(&value.as_text(), wanted),
        (Op::Ne, _) => !same_setting(&value.as_text(), wanted),
        (Op::Exists, _) => true,
    }
}

/// Fills `{selector}` / `{selector|pct}` placeholders from what the conditions read.
pub(crate) fn render(template: &str, readings: &[(String, SignalValue)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else { break };
        out.push_str(&rest[..open]);
        let inner = &rest[open + 1..close];
        let (key, format) = inner.split_once('|').unwrap_or((inner, ""));
        match readings.iter().find(|(k, _)| k == key) {
            Some((_, v)) if format == "pct" => match v.as_f64() {
                Some(x) => out.push_str(&format!("{:.0}%", x * 100.0)),
                None => out.push_str(&v.as_text()),
            },
            Some((_, v)) => out.push_str(&v.as_text()),
            None => out.push_str(&rest[open..=close]),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::same_setting;

    #[test]
    fn a_json_flag_and_the_engines_python_echo_of_it_are_the_same_setting() {
        let asked = r#"{"method":"ngram","num_speculative_tokens":3,"prompt_lookup_max":4}"#;
        let echoed = "{'method': 'ngram', 'num_speculative_tokens': 3, 'prompt_lookup_max': 4}";
        assert!(same_setting(asked, echoed));
        assert!(!same_setting(asked, "{'method': 'ngram', 'num_speculative_tokens': 5, 'prompt_lookup_max': 4}"));
    }
}
