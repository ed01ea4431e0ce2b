//! vLLM `vllm bench serve --save-result` (and `benchmarks/benchmark_serving.py`) result JSON.
//!
//! Field names as written by `vllm/benchmarks/serve.py`: run identity (`date`, `backend`,
//! `label`, `model_id`, `num_prompts`, `request_rate`, `burstiness`, `max_concurrency`), totals
//! (`duration`, `completed`, `failed`, `total_input_tokens`, `total_output_tokens`), throughput
//! (`request_throughput`, `output_throughput`, `total_token_throughput`), and per metric
//! `mean_/median_/std_/p<P>_{ttft,tpot,itl,e2el}_ms` for the metrics and percentiles asked for
//! (`--percentile-metrics`, default `ttft,tpot,itl`; `--metric-percentiles`, default `99`).
//! With `--save-detailed` the per-request lists `ttfts`, `latencies` (seconds), `input_lens`,
//! `output_lens` and `errors` stay in the file and become per-request records.
//! `--append-result` appends one JSON object per line.

use serde_json::Value;

use super::{IngestedRun, engine_from_backend, json_values, number_at, put_serving_stats, text_at};
use autodebug_core::{ErrorClass, RequestRecord};

pub(super) fn parse(text: &str) -> Result<Vec<IngestedRun>, String> {
    json_values(text)?.iter().enumerate().map(|(i, v)| parse_one(v, i)).collect()
}

fn parse_one(value: &Value, index: usize) -> Result<IngestedRun, String> {
    let object = value.as_object().ok_or_else(|| format!("result {}: expected a JSON object", index + 1))?;
    if !object.contains_key("completed") && !object.contains_key("mean_ttft_ms") {
        return Err(format!("result {}: neither `completed` nor `mean_ttft_ms`: not a vLLM serving result", index + 1));
    }
    let backend = text_at(value, &["backend"]).or_else(|| text_at(value, &["endpoint_type"]));
    let mut run = IngestedRun::new(label(value, backend, index));
    run.model = text_at(value, &["model_id"]).map(str::to_string);
    run.engine = backend.and_then(engine_from_backend);
    run.duration_s = number_at(value, &["duration"]);
    put_serving_stats(
        &mut run,
        object,
        &[("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2el", "e2e"), ("client_queue_time", "queue_delay")],
    );
    for (field, metric) in [
        ("request_throughput", "request_throughput"),
        ("output_throughput", "output_throughput"),
        ("total_token_throughput", "total_token_throughput"),
        ("request_goodput", "goodput"),
    ] {
        if let Some(v) = number_at(value, &[field]) {
            run.put(metric, v, field);
        }
    }
    match (number_at(value, &["completed"]), number_at(value, &["failed"])) {
        (Some(completed), failed) => run.put_counts(completed, failed.unwrap_or(0.0), "completed, failed"),
        (None, _) => run.notes.push("no `completed` count: requests and error rate unknown".into()),
    }
    if !object.keys().any(|k| k.ends_with("_e2el_ms")) {
        run.notes.push("no e2e latency (`--percentile-metrics` did not include `e2el`)".into());
    }
    if let Some(date) = text_at(value, &["date"]) {
        run.started_ns = parse_date(date);
        run.notes.push(format!("run date {date} (local time of the benchmark machine)"));
    }
    for key in ["num_prompts", "request_rate", "burstiness", "max_concurrency"] {
        if let Some(v) = value.get(key).filter(|v| !v.is_null()) {
            run.notes.push(format!("{key} {v}"));
        }
    }
    run.records = records(value);
    run.definitions = vec![
        "vLLM TPOT (`*_tpot_ms`): (e2e − TTFT) / (output tokens − 1) per request: autodebug `tpot`".into(),
        "vLLM ITL (`*_itl_ms`): gaps between streamed chunks, pooled over requests: autodebug `itl`".into(),
        "vLLM E2EL (`*_e2el_ms`): request sent to last chunk received, client side: autodebug `e2e`".into(),
    ];
    Ok(run)
}

fn label(value: &Value, backend: Option<&str>, index: usize) -> String {
    let mut parts = vec![text_at(value, &["label"]).or(backend).unwrap_or("vllm").to_string()];
    if let Some(rate) = value.get("request_rate").filter(|v| !v.is_null()) {
        parts.push(format!("rate {}", rate.as_str().map(str::to_string).unwrap_or_else(|| rate.to_string())));
    }
    if let Some(c) = value.get("max_concurrency").and_then(Value::as_u64) {
        parts.push(format!("concurrency {c}"));
    }
    if parts.len() == 1 {
        parts.push(format!("#{}", index + 1));
    }
    parts.join(" ")
}

/// `20250314-101500` (vLLM's `date`), read as UTC.
fn parse_date(date: &str) -> Option<i128> {
    let (day, clock) = date.split_once('-')?;
    if day.len() != 8 || clock.len() != 6 {
        return None;
    }
    let iso =
        format!("{}-{}-{}T{}:{}:{}Z", &day[0..4], &day[4..6], &day[6..8], &clock[0..2], &clock[2..4], &clock[4..6]);
    autodebug_core::TimeWindow::parse_iso(&iso)
}

fn records(value: &Value) -> Vec<RequestRecord> {
    let list = |key: &str| value.get(key).and_then(Value::as_array);
    let (Some(ttfts), Some(latencies)) = (list("ttfts"), list("latencies")) else {
        return Vec::new();
    };
    let errors = list("errors");
    let input_lens = list("input_lens");
    let output_lens = list("output_lens");
    let seconds_to_ns =
        |v: Option<&Value>| v.and_then(Value::as_f64).filter(|s| s.is_finite() && *s > 0.0).map(|s| (s * 1e9) as u64);
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok());
    (0..ttfts.len().min(latencies.len()))
        .map(|i| {
            let error = errors.and_then(|e| e.get(i)).and_then(Value::as_str).filter(|e| !e.is_empty());
            RequestRecord {
                index: i,
                ttft_ns: seconds_to_ns(ttfts.get(i)),
                e2e_ns: seconds_to_ns(latencies.get(i)),
                prompt_tokens: count(input_lens.and_then(|l| l.get(i))),
                output_tokens: count(output_lens.and_then(|l| l.get(i))),
                error: error.map(|_| ErrorClass::ServerError),
                error_message: error.map(str::to_string),
                ..RequestRecord::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_utc() {
        assert_eq!(parse_date("20250314-101500"), autodebug_core::TimeWindow::parse_iso("2025-03-14T10:15:00Z"));
        assert_eq!(parse_date("yesterday"), None);
    }
}
