//! Parses a Graphsignal debug context: markdown with fenced ```json blocks holding profiles,
//! span counters, attributes, metrics and errors. Lenient by design: numbers may arrive as
//! strings, fields may be missing, and unknown keys become warnings, never failures.

use autodebug_core::{Signal, SignalKind, SignalValue, TelemetrySnapshot, canonical, format_number};
use serde_json::{Map, Value};

/// The telemetry source name Graphsignal signals carry.
pub const SOURCE: &str = "graphsignal";

/// Turns a debug context into a snapshot; the whole text goes into `raw`.
///
/// ```
/// use autodebug_telemetry::parse_debug_context;
/// let text = "## Profiles\n```json\n{\"profiles\": [{\"function\": \"sglang.scheduler.Scheduler.run_batch\", \"calls\": 405, \"cumtime_ns\": 435000000}]}\n```\n";
/// let snapshot = parse_debug_context(text);
/// assert_eq!(
///     snapshot.signals[0].citation(),
///     "Profile `sglang.scheduler.Scheduler.run_batch`: 405 calls / 435 ms (1.074 ms/call)"
/// );
/// ```
pub fn parse_debug_context(text: &str) -> TelemetrySnapshot {
    let mut snapshot = TelemetrySnapshot::new(SOURCE, None);
    snapshot.raw = Some(text.to_string());
    let blocks = json_blocks(text);
    if blocks.is_empty() {
        // Some answers are bare JSON rather than markdown.
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(value) => read_block(&value, 1, &mut snapshot),
            Err(_) if text.trim().is_empty() => snapshot.warnings.push("the debug context is empty".to_string()),
            Err(_) => snapshot.warnings.push("the debug context has no ```json block; nothing to read".to_string()),
        }
    }
    for (index, block) in blocks.iter().enumerate() {
        match serde_json::from_str::<Value>(block) {
            Ok(value) => read_block(&value, index + 1, &mut snapshot),
            Err(e) => snapshot.warnings.push(format!("json block {}: not valid JSON ({e}); skipped", index + 1)),
        }
    }
    derive_scheduler_overhead(&mut snapshot);
    snapshot
}

/// The contents of every fenced block tagged `json`.
fn json_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        match &mut current {
            None => {
                if let Some(info) = trimmed.strip_prefix("```")
                    && info.trim().eq_ignore_ascii_case("json")
                {
                    current = Some(String::new());
                }
            }
            Some(block) => {
                if trimmed == "```" {
                    blocks.push(std::mem::take(block));
                    current = None;
                } else {
                    block.push_str(line);
                    block.push('\n');
                }
            }
        }
    }
    // An unterminated block still holds data worth reading.
    if let Some(block) = current {
        blocks.push(block);
    }
    blocks
}

fn read_block(value: &Value, block: usize, snapshot: &mut TelemetrySnapshot) {
    let Some(object) = value.as_object() else {
        snapshot.warnings.push(format!("json block {block}: not an object; skipped"));
        return;
    };
    for (key, value) in object {
        match key.as_str() {
            "profiles" => for_each_item(value, key, block, snapshot, read_profile),
            "span_counters" => for_each_item(value, key, block, snapshot, read_span_counter),
            "metrics" => for_each_item(value, key, block, snapshot, read_metric),
            "errors" => for_each_item(value, key, block, snapshot, read_error),
            "attributes" => read_attributes(value, block, snapshot),
            // Which tags the query could filter on: useful to a human, not a signal.
            "available_tags" => {}
            other => snapshot.warnings.push(format!("json block {block}: unknown section `{other}` kept in raw only")),
        }
    }
}

type ItemReader = fn(&Map<String, Value>, &mut TelemetrySnapshot) -> Result<(), String>;

fn for_each_item(value: &Value, section: &str, block: usize, snapshot: &mut TelemetrySnapshot, read: ItemReader) {
    let Some(items) = value.as_array() else {
        snapshot.warnings.push(format!("json block {block}: `{section}` is not a list; skipped"));
        return;
    };
    for (index, item) in items.iter().enumerate() {
        let result = match item.as_object() {
            Some(object) => read(object, snapshot),
            None => Err("not an object".to_string()),
        };
        if let Err(problem) = result {
            snapshot.warnings.push(format!("json block {block}: {section}[{index}]: {problem}; skipped"));
        }
    }
}

/// A number written as a number or as a string (`"405"`, `"0.5"`); an infinite or NaN one (`"inf"`,
/// `1e309`) is no reading at all, and would poison every comparison made with it.
fn number(object: &Map<String, Value>, key: &str) -> Option<f64> {
    let value = match object.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    };
    value.filter(|v| v.is_finite())
}

fn text<'a>(object: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| object.get(*k).and_then(Value::as_str)).filter(|s| !s.is_empty())
}

fn value_as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn read_profile(object: &Map<String, Value>, snapshot: &mut TelemetrySnapshot) -> Result<(), String> {
    let function = text(object, &["function", "name"]).ok_or("no `function`")?;
    let total_ms = number(object, "cumtime_ns")
        .map(|ns| ns / 1e6)
        .or_else(|| number(object, "cumtime_ms"))
        .or_else(|| number(object, "cumtime_s").map(|s| s * 1e3))
        .ok_or("no `cumtime_ns`")?;
    let mut signal = Signal::number(SOURCE, SignalKind::Profile, function, total_ms, "ms");
    if let Some(calls) = number(object, "calls").or_else(|| number(object, "ncalls")) {
        signal = signal.with_count(calls);
    }
    snapshot.signals.push(signal);
    Ok(())
}

fn read_span_counter(object: &Map<String, Value>, snapshot: &mut TelemetrySnapshot) -> Result<(), String> {
    let name = text(object, &["name"]).ok_or("no `name`")?;
    let count = number(object, "count");
    let (value, unit, stat) = if let Some(avg) = number(object, "avg_ns") {
        (avg, "ns", "avg")
    } else if let (Some(sum), Some(count)) = (number(object, "sum_ns"), count.filter(|c| *c > 0.0)) {
        (sum / count, "ns", "avg")
    } else if let Some(sum) = number(object, "sum") {
        (sum, if name.contains(".usage.") || name.contains("tokens") { "tokens" } else { "" }, "sum")
    } else if let Some(count) = count {
        (count, "", "count")
    } else {
        return Err(format!("{name}: no `avg_ns`, `sum_ns`, `sum` or `count`"));
    };
    let mut parts = Vec::new();
    if let Some(count) = count {
        parts.push(format!("{} spans", format_number(count)));
    }
    for (key, label) in [("avg_ns", "avg"), ("p50_ns", "p50"), ("p95_ns", "p95"), ("p99_ns", "p99"), ("max_ns", "max")]
    {
        if let Some(ns) = number(object, key) {
            parts.push(format!("{label} {} ms", format_number(ns / 1e6)));
        }
    }
    if let Some(sum) = number(object, "sum").filter(|_| unit == "tokens") {
        parts.push(format!("{} tokens in total", format_number(sum)));
    }
    let mut signal = Signal::number(SOURCE, SignalKind::SpanCounter, name, value, unit).with_label("stat", stat);
    if let Some(count) = count {
        signal = signal.with_count(count);
    }
    if !parts.is_empty() {
        signal = signal.with_detail(parts.join(", "));
    }
    if let Some(canonical) = span_canonical(name) {
        if stat == "avg" {
            // Canonical latencies are seconds; the span counter is in ns, so tag a converted copy.
            snapshot.signals.push(signal.clone());
            let seconds = Signal { unit: "s".to_string(), value: SignalValue::Number(value / 1e9), ..signal }
                .with_label("stat", "mean")
                .with_canonical(canonical);
            snapshot.signals.push(seconds);
            return Ok(());
        }
        signal = signal.with_canonical(canonical);
    }
    snapshot.signals.push(signal);
    Ok(())
}

fn span_canonical(name: &str) -> Option<&'static str> {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    Some(match leaf {
        "time_to_first_token" => canonical::TTFT_S,
        "inter_token_latency" | "time_per_output_token" => canonical::ITL_S,
        "e2e_request_latency" | "end_to_end_latency" => canonical::E2E_S,
        "queue_time" | "time_in_queue" => canonical::QUEUE_TIME_S,
        "prompt_tokens" => canonical::PROMPT_TOKENS,
        "completion_tokens" | "generation_tokens" => canonical::GENERATION_TOKENS,
        "cached_tokens" => canonical::CACHED_TOKENS,
        _ => return None,
    })
}

fn read_attributes(value: &Value, block: usize, snapshot: &mut TelemetrySnapshot) {
    match value {
        Value::Object(map) => {
            for (name, value) in map {
                snapshot.signals.push(Signal::text(SOURCE, SignalKind::SpanAttribute, name, value_as_text(value)));
            }
        }
        // Also accept a list of {"name": ..., "value": ...}.
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let name = item.get("name").and_then(Value::as_str);
                match (name, item.get("value")) {
                    (Some(name), Some(value)) => snapshot.signals.push(Signal::text(
                        SOURCE,
                        SignalKind::SpanAttribute,
                        name,
                        value_as_text(value),
                    )),
                    _ => snapshot
                        .warnings
                        .push(format!("json block {block}: attributes[{index}]: no name/value; skipped")),
                }
            }
        }
        _ => snapshot.warnings.push(format!("json block {block}: `attributes` is neither a map nor a list; skipped")),
    }
}

fn read_metric(object: &Map<String, Value>, snapshot: &mut TelemetrySnapshot) -> Result<(), String> {
    let name = text(object, &["name"]).ok_or("no `name`")?;
    let value = number(object, "value").ok_or_else(|| format!("{name}: no numeric `value`"))?;
    let unit = text(object, &["unit"])
        .map(str::to_string)
        .unwrap_or_else(|| crate::prometheus::names::unit_for(name).to_string());
    let mut signal = Signal::number(SOURCE, SignalKind::Metric, name, value, &unit);
    if let Some(canonical) = metric_canonical(name) {
        signal = signal.with_canonical(canonical);
    }
    snapshot.signals.push(signal);
    Ok(())
}

/// Graphsignal writes engine metrics with dots (`sglang.cache_hit_rate`); the leaf matches the
/// Prometheus name of the same metric.
fn metric_canonical(name: &str) -> Option<&'static str> {
    let leaf = name.rsplit(['.', ':']).next().unwrap_or(name);
    Some(match leaf {
        "cache_hit_rate" | "gpu_prefix_cache_hit_rate" | "prefix_cache_hit_rate" => canonical::PREFIX_HIT_RATE,
        "gen_throughput" | "avg_generation_throughput_toks_per_s" | "generation_throughput" => {
            canonical::GEN_THROUGHPUT
        }
        "token_usage" | "kv_cache_usage_perc" | "gpu_cache_usage_perc" => canonical::KV_USAGE,
        "num_queue_reqs" | "num_requests_waiting" => canonical::QUEUE_LEN,
        "num_running_reqs" | "num_requests_running" => canonical::RUNNING,
        "inter_token_latency_seconds" | "time_per_output_token_seconds" => canonical::ITL_S,
        "time_to_first_token_seconds" => canonical::TTFT_S,
        "e2e_request_latency_seconds" => canonical::E2E_S,
        "num_preemptions" | "num_retracted_reqs" => canonical::PREEMPTIONS,
        _ => return None,
    })
}

fn read_error(object: &Map<String, Value>, snapshot: &mut TelemetrySnapshot) -> Result<(), String> {
    let name = text(object, &["name", "type"]).unwrap_or("error");
    let message = text(object, &["message", "text"]).unwrap_or("");
    let count = number(object, "count").unwrap_or(1.0);
    let line = if message.is_empty() { name.to_string() } else { format!("{name}: {message}") };
    let signal = Signal::text(SOURCE, SignalKind::LogLine, name, line.clone())
        .with_count(count)
        .with_canonical(canonical::ENGINE_ERROR)
        .with_detail(format!("{line} ({} times)", format_number(count)));
    snapshot.signals.push(signal);
    Ok(())
}

/// Scheduler-loop and forward profiles: `(suffixes of the loop, suffixes of the forward)`.
const LOOP_PROFILES: &[&str] = &["Scheduler.run_batch", "EngineCore.step"];
const FORWARD_PROFILES: &[&str] = &["ModelRunner.forward", "execute_model"];

/// With both a scheduler-loop and a forward profile, how much of a step is not the model:
/// the share the scheduler's own work (batching, sampling, bookkeeping) takes.
fn derive_scheduler_overhead(snapshot: &mut TelemetrySnapshot) {
    let find = |suffixes: &[&str]| {
        snapshot
            .signals
            .iter()
            .filter(|s| s.kind == SignalKind::Profile && suffixes.iter().any(|x| s.name.ends_with(x)))
            .max_by(|a, b| a.as_f64().unwrap_or(0.0).total_cmp(&b.as_f64().unwrap_or(0.0)))
            .cloned()
    };
    let (Some(run_batch), Some(forward)) = (find(LOOP_PROFILES), find(FORWARD_PROFILES)) else { return };
    let (Some(loop_ms), Some(forward_ms)) = (run_batch.as_f64(), forward.as_f64()) else { return };
    let loop_calls = run_batch.count.filter(|c| *c > 0.0);
    let forward_calls = forward.count.filter(|c| *c > 0.0);
    let prefix = "graphsignal.derived";
    if let Some(calls) = loop_calls {
        snapshot.signals.push(
            Signal::number(SOURCE, SignalKind::Metric, &format!("{prefix}.scheduler_step_ms"), loop_ms / calls, "ms")
                .with_canonical(canonical::SCHEDULER_STEP_MS)
                .with_count(calls)
                .with_detail(format!(
                    "{} ms per step ({} / {} calls of {})",
                    format_number(loop_ms / calls),
                    format_number(loop_ms),
                    format_number(calls),
                    run_batch.name
                )),
        );
    }
    if let Some(calls) = forward_calls {
        snapshot.signals.push(
            Signal::number(SOURCE, SignalKind::Metric, &format!("{prefix}.forward_ms"), forward_ms / calls, "ms")
                .with_canonical(canonical::FORWARD_MS)
                .with_count(calls)
                .with_detail(format!(
                    "{} ms per forward ({} / {} calls of {})",
                    format_number(forward_ms / calls),
                    format_number(forward_ms),
                    format_number(calls),
                    forward.name
                )),
        );
    }
    if loop_ms > 0.0 {
        let share = (1.0 - forward_ms / loop_ms).clamp(0.0, 1.0);
        snapshot.signals.push(
            Signal::number(SOURCE, SignalKind::Metric, &format!("{prefix}.scheduler_overhead_share"), share, "ratio")
                .with_canonical(canonical::SCHEDULER_OVERHEAD_SHARE)
                .with_detail(format!(
                    "{} = 1 - {} ms in {} / {} ms in {}",
                    format_number(share),
                    format_number(forward_ms),
                    forward.name,
                    format_number(loop_ms),
                    run_batch.name
                )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_values_and_unknown_sections() {
        let text = "intro\n```json\n{\"metrics\": [{\"name\": \"sglang.token_usage\", \"value\": \"0.25\"}, {\"name\": \"x\"}], \"weird\": 1}\n```\n```json\nnot json\n```\n";
        let snapshot = parse_debug_context(text);
        let kv = snapshot.canonical(canonical::KV_USAGE).unwrap();
        assert_eq!(kv.as_f64(), Some(0.25));
        assert!(snapshot.warnings.iter().any(|w| w.contains("weird")), "{:?}", snapshot.warnings);
        assert!(snapshot.warnings.iter().any(|w| w.contains("metrics[1]")), "{:?}", snapshot.warnings);
        assert!(snapshot.warnings.iter().any(|w| w.contains("block 2")), "{:?}", snapshot.warnings);
    }

    #[test]
    fn overhead_share_is_clamped() {
        let text = "```json\n{\"profiles\": [{\"function\": \"a.EngineCore.step\", \"calls\": 10, \"cumtime_ns\": 10000000}, {\"function\": \"b.GPUModelRunner.execute_model\", \"calls\": 10, \"cumtime_ns\": 12000000}]}\n```";
        let snapshot = parse_debug_context(text);
        assert_eq!(snapshot.canonical(canonical::SCHEDULER_OVERHEAD_SHARE).unwrap().as_f64(), Some(0.0));
        assert_eq!(snapshot.canonical(canonical::FORWARD_MS).unwrap().as_f64(), Some(1.2));
    }
}
