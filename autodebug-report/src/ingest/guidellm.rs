//! guidellm `benchmarks.json` (`--output-path`): a report whose `benchmarks` list holds one
//! generative benchmark per strategy or rate of a sweep.
//!
//! Per benchmark, `metrics` holds status distribution summaries (`successful`, `incomplete`,
//! `errored`, `total`), each `{mean, median, mode, variance, std_dev, min, max, count, total_sum,
//! percentiles: {p001, p01, p05, p10, p25, p50, p75, p90, p95, p99, p999}}`
//! (`guidellm/schemas/statistics.py`), under the names of `GenerativeMetrics`
//! (`guidellm/benchmark/schemas/generative/metrics.py`): `requests_per_second`,
//! `request_concurrency`, `request_latency` (seconds), `time_to_first_token_ms`,
//! `time_per_output_token_ms`, `inter_token_latency_ms`, `output_tokens_per_second`,
//! `tokens_per_second`, and `request_totals` (`successful`, `incomplete`, `errored`, `total`;
//! at the benchmark level in older versions). Successful requests are read.
//!
//! Definitions (`guidellm/schemas/request_stats.py`): `time_per_output_token_ms` is
//! (last token − request start) / output tokens, so it INCLUDES the wait for the first token;
//! `inter_token_latency_ms` is (last token − first token) / (output tokens − 1), which is vLLM's
//! TPOT. The first is kept as `tpot_incl_ttft.*`, the second becomes autodebug `tpot.*`.

use serde_json::Value;

use super::{IngestedRun, json_values, number_at, statistic, text_at};

pub(super) fn parse(text: &str) -> Result<Vec<IngestedRun>, String> {
    let values = json_values(text)?;
    let root = values.first().ok_or("the file is empty")?;
    let benchmarks = root.get("benchmarks").and_then(Value::as_array).ok_or("no `benchmarks` list")?;
    benchmarks.iter().enumerate().map(|(i, b)| parse_one(root, b, i)).collect()
}

fn parse_one(root: &Value, benchmark: &Value, index: usize) -> Result<IngestedRun, String> {
    let metrics = benchmark.get("metrics").ok_or_else(|| format!("benchmark {}: no `metrics`", index + 1))?;
    let mut run = IngestedRun::new(label(benchmark, index));
    run.model = [&["args", "model"][..], &["metadata", "model"], &["args", "backend_kwargs", "model"]]
        .iter()
        .find_map(|path| text_at(root, path))
        .or_else(|| text_at(benchmark, &["config", "requests", "model"]))
        .map(str::to_string);
    for (name, metric, scale) in [
        ("time_to_first_token_ms", "ttft", 1.0),
        ("inter_token_latency_ms", "tpot", 1.0),
        ("time_per_output_token_ms", "tpot_incl_ttft", 1.0),
        ("request_latency", "e2e", 1000.0),
    ] {
        let Some(summary) = metrics.get(name).and_then(|m| m.get("successful")) else {
            continue;
        };
        put_distribution(&mut run, summary, metric, scale, &format!("metrics.{name}.successful"));
    }
    for (name, metric) in [
        ("output_tokens_per_second", "output_throughput"),
        ("requests_per_second", "request_throughput"),
        ("tokens_per_second", "total_token_throughput"),
        ("request_concurrency", "concurrency"),
    ] {
        if let Some(v) = number_at(metrics, &[name, "successful", "mean"]) {
            run.put(metric, v, format!("metrics.{name}.successful.mean"));
        }
    }
    let totals = metrics.get("request_totals").or_else(|| benchmark.get("request_totals"));
    match totals {
        Some(totals) => {
            let count = |k: &str| number_at(totals, &[k]).unwrap_or(0.0);
            run.put_counts(count("successful") + count("incomplete"), count("errored"), "request_totals");
            if count("incomplete") > 0.0 {
                run.notes.push(format!(
                    "{} requests incomplete (cut off at the end of the run), counted as not failed",
                    count("incomplete")
                ));
            }
        }
        None => run.notes.push("no `request_totals`: requests and error rate unknown".into()),
    }
    run.duration_s = number_at(benchmark, &["duration"]);
    run.started_ns = number_at(benchmark, &["start_time"]).filter(|t| *t > 0.0).map(|t| (t * 1e9) as i128);
    run.definitions = vec![
        "guidellm time_per_output_token_ms: (last token − request start) / output tokens, includes TTFT: stored as `tpot_incl_ttft`, not `tpot`".into(),
        "guidellm inter_token_latency_ms: (last token − first token) / (output tokens − 1), i.e. vLLM's TPOT: stored as autodebug `tpot`".into(),
        "guidellm request_latency is in seconds: stored as `e2e` in ms; throughputs are the means of guidellm's rate distributions over the measured window".into(),
    ];
    Ok(run)
}

fn put_distribution(run: &mut IngestedRun, summary: &Value, metric: &str, scale: f64, field: &str) {
    if number_at(summary, &["count"]) == Some(0.0) {
        return;
    }
    for stat in ["mean", "median", "std_dev", "min", "max"] {
        if let (Some(name), Some(v)) = (statistic(stat), number_at(summary, &[stat])) {
            run.put(format!("{metric}.{name}"), v * scale, format!("{field}.{stat}"));
        }
    }
    if let Some(percentiles) = summary.get("percentiles").and_then(Value::as_object) {
        for (key, value) in percentiles {
            if let (Some(name), Some(v)) = (statistic(key), value.as_f64()) {
                run.put(format!("{metric}.{name}"), v * scale, format!("{field}.percentiles.{key}"));
            }
        }
    }
}

fn label(benchmark: &Value, index: usize) -> String {
    let strategy = benchmark
        .get("config")
        .and_then(|c| c.get("strategy"))
        .or_else(|| benchmark.get("args").and_then(|a| a.get("strategy")));
    let Some(strategy) = strategy else {
        return format!("guidellm benchmark {}", index + 1);
    };
    let kind = text_at(strategy, &["type_"]).unwrap_or("strategy");
    let mut text = format!("guidellm {kind}");
    for key in ["streams", "rate", "max_concurrency"] {
        if let Some(v) = strategy.get(key).filter(|v| !v.is_null()) {
            text.push_str(&format!(" {key}={v}"));
        }
    }
    text
}
