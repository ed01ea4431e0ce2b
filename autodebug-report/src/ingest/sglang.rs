//! SGLang `python -m sglang.bench_serving --output-file FILE` results: one JSON object per line,
//! appended per run.
//!
//! Field names as written by `python/sglang/bench_serving.py`: arguments (`backend`,
//! `dataset_name`, `request_rate`, `max_concurrency`, `random_input_len`, `random_output_len`, ...),
//! results (`duration`, `completed`, `total_input_tokens`, `total_output_tokens`,
//! `request_throughput`, `input_throughput`, `output_throughput`, `mean_/median_/std_/p99_e2e_latency_ms`,
//! `mean_/median_/std_/p99_ttft_ms`, `..._tpot_ms`, `mean_/median_/std_/p95_/p99_itl_ms`,
//! `concurrency`, `accept_length`) and with `--output-details` the per-request lists.
//! `completed` counts successful requests only: the file has no failure count, so the error
//! rate is set only when the detailed `errors` list is there.

use serde_json::Value;

use super::{IngestedRun, engine_from_backend, json_values, number_at, put_serving_stats, text_at};

pub(super) fn parse(text: &str) -> Result<Vec<IngestedRun>, String> {
    json_values(text)?.iter().enumerate().map(|(i, v)| parse_one(v, i)).collect()
}

fn parse_one(value: &Value, index: usize) -> Result<IngestedRun, String> {
    let object = value.as_object().ok_or_else(|| format!("line {}: expected a JSON object", index + 1))?;
    if !object.contains_key("completed") && !object.contains_key("mean_ttft_ms") {
        return Err(format!(
            "line {}: neither `completed` nor `mean_ttft_ms`: not an SGLang bench_serving result",
            index + 1
        ));
    }
    let backend = text_at(value, &["backend"]);
    let mut run = IngestedRun::new(label(value, backend, index));
    run.engine = backend.and_then(engine_from_backend);
    run.model = text_at(value, &["model_id"]).or_else(|| text_at(value, &["model"])).map(str::to_string);
    run.duration_s = number_at(value, &["duration"]);
    put_serving_stats(&mut run, object, &[("e2e_latency", "e2e"), ("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl")]);
    for (field, metric) in [
        ("request_throughput", "request_throughput"),
        ("output_throughput", "output_throughput"),
        ("input_throughput", "input_throughput"),
        ("total_throughput", "total_token_throughput"),
        ("concurrency", "concurrency"),
        ("accept_length", "accept_length"),
    ] {
        if let Some(v) = number_at(value, &[field]) {
            run.put(metric, v, field);
        }
    }
    let completed = number_at(value, &["completed"]);
    let errors = value.get("errors").and_then(Value::as_array);
    match (completed, errors) {
        (Some(completed), Some(errors)) => {
            let failed = errors.iter().filter(|e| e.as_str().is_some_and(|s| !s.is_empty())).count() as f64;
            run.put_counts(completed, failed, "completed, errors");
        }
        (Some(completed), None) => {
            run.put("requests", completed, "completed");
            run.notes
                .push("the file records no failed-request count (no `--output-details`): error_rate not set".into());
        }
        (None, _) => run.notes.push("no `completed` count".into()),
    }
    if let (None, Some(input), Some(output)) = (
        number_at(value, &["total_throughput"]),
        number_at(value, &["input_throughput"]),
        number_at(value, &["output_throughput"]),
    ) {
        run.put("total_token_throughput", input + output, "input_throughput + output_throughput");
    }
    for key in ["dataset_name", "request_rate", "max_concurrency", "random_input_len", "random_output_len"] {
        if let Some(v) = value.get(key).filter(|v| !v.is_null()) {
            run.notes.push(format!("{key} {v}"));
        }
    }
    run.definitions = vec![
        "SGLang TPOT (`*_tpot_ms`): (latency − TTFT) / (output tokens − 1) per request: autodebug `tpot`".into(),
        "SGLang ITL (`*_itl_ms`): gaps between streamed chunks, pooled over requests: autodebug `itl`".into(),
        "SGLang E2E latency (`*_e2e_latency_ms`): request sent to last chunk, client side: autodebug `e2e`".into(),
    ];
    Ok(run)
}

fn label(value: &Value, backend: Option<&str>, index: usize) -> String {
    let mut parts = vec![backend.unwrap_or("sglang").to_string()];
    if let Some(rate) = value.get("request_rate").filter(|v| !v.is_null()) {
        parts.push(format!("rate {rate}"));
    }
    if let Some(c) = value.get("max_concurrency").and_then(Value::as_u64) {
        parts.push(format!("concurrency {c}"));
    }
    parts.push(format!("#{}", index + 1));
    parts.join(" ")
}
