//! AIPerf `profile_export_aiperf.json`: one JSON object whose top-level metric entries are
//! stats blocks `{"unit", "avg", "min", "max", "p1".."p99", "std", "count", "sum"}`
//! (`JsonMetricResult` in `aiperf/common/models/export_models.py`; older exports nest the same
//! blocks under `records`). Record metrics (latencies) carry the distribution; derived and
//! aggregate ones (throughputs, counts) only `unit` and `avg`. `unit` is authoritative.
//!
//! Tags read: `time_to_first_token`, `time_to_second_token`, `inter_token_latency`,
//! `inter_chunk_latency`, `request_latency`, `output_token_throughput`, `request_throughput`,
//! `total_token_throughput`, `request_count`, `error_request_count`, `benchmark_duration`.

use serde_json::Value;

use super::{IngestedRun, json_values, number_at, statistic, text_at};

pub(super) fn parse(text: &str) -> Result<Vec<IngestedRun>, String> {
    let values = json_values(text)?;
    let root = values.first().ok_or("the file is empty")?;
    let blocks = root.get("records").filter(|r| r.is_object()).unwrap_or(root);
    if !blocks.as_object().is_some_and(|o| o.values().any(|v| v.get("unit").is_some())) {
        return Err("no metric blocks with a `unit` (expected e.g. `time_to_first_token: {unit, avg, p99}`)".into());
    }
    let label = text_at(root, &["run_info", "run_label"])
        .or_else(|| text_at(root, &["run_info", "variation_label"]))
        .or_else(|| text_at(root, &["benchmark_id"]))
        .map(|l| format!("aiperf {l}"))
        .unwrap_or_else(|| "aiperf".into());
    let mut run = IngestedRun::new(label);
    run.model = model(root);
    for (tag, metric) in [
        ("time_to_first_token", "ttft"),
        ("time_to_second_token", "ttst"),
        ("inter_token_latency", "tpot"),
        ("inter_chunk_latency", "inter_chunk"),
        ("request_latency", "e2e"),
    ] {
        let Some(block) = blocks.get(tag) else {
            continue;
        };
        let scale = ms_scale(block).map_err(|unit| format!("`{tag}`: unit `{unit}` is not a time unit"))?;
        for (stat, value) in block.as_object().into_iter().flatten() {
            if let (Some(stat), Some(v)) = (statistic(stat), value.as_f64()) {
                run.put(format!("{metric}.{stat}"), v * scale, format!("{tag}.{}", original_stat(&stat)));
            }
        }
    }
    for (tag, metric) in [
        ("output_token_throughput", "output_throughput"),
        ("request_throughput", "request_throughput"),
        ("total_token_throughput", "total_token_throughput"),
    ] {
        if let Some(v) = number_at(blocks, &[tag, "avg"]) {
            run.put(metric, v, format!("{tag}.avg"));
        }
    }
    let succeeded = number_at(blocks, &["request_count", "avg"]);
    let failed = number_at(blocks, &["error_request_count", "avg"]).or_else(|| error_summary_count(root));
    match (succeeded, failed) {
        (Some(ok), Some(failed)) => run.put_counts(ok, failed, "request_count.avg, error_request_count.avg"),
        (Some(ok), None) => {
            run.put_counts(ok, 0.0, "request_count.avg");
            run.notes.push("no `error_request_count` or `error_summary` entry: no failed requests recorded".into());
        }
        (None, _) => run.notes.push("no `request_count`: requests and error rate unknown".into()),
    }
    run.duration_s = number_at(blocks, &["benchmark_duration", "avg"]).map(|v| {
        match text_at(blocks, &["benchmark_duration", "unit"]) {
            Some("ms") => v / 1e3,
            Some("ns") => v / 1e9,
            _ => v,
        }
    });
    run.started_ns = text_at(root, &["start_time"]).and_then(autodebug_core::TimeWindow::parse_iso);
    if root.get("was_cancelled").and_then(Value::as_bool) == Some(true) {
        run.notes.push("the run was cancelled before it finished (`was_cancelled`)".into());
    }
    if let Some(version) = text_at(root, &["schema_version"]) {
        run.notes.push(format!("schema {version}"));
    }
    run.definitions = vec![
        "AIPerf inter_token_latency: (request latency − TTFT) / (output tokens − 1) per request, i.e. vLLM's TPOT: stored as autodebug `tpot`, not `itl`".into(),
        "AIPerf inter_chunk_latency: gaps between streamed chunks: autodebug `inter_chunk`".into(),
        "AIPerf request_count counts successful requests; errors are `error_request_count`".into(),
    ];
    Ok(vec![run])
}

/// The factor from the block's unit to milliseconds; `Err(unit)` when it is not a time unit.
fn ms_scale(block: &Value) -> Result<f64, String> {
    match text_at(block, &["unit"]).unwrap_or("ms") {
        "ms" => Ok(1.0),
        "ns" => Ok(1e-6),
        "us" | "µs" => Ok(1e-3),
        "s" | "sec" | "seconds" => Ok(1e3),
        other => Err(other.to_string()),
    }
}

fn original_stat(stat: &str) -> &str {
    match stat {
        "mean" => "avg",
        other => other,
    }
}

fn model(root: &Value) -> Option<String> {
    let candidates: [&[&str]; 3] =
        [&["input_config", "endpoint", "model_names"], &["input_config", "model_names"], &["input_config", "models"]];
    candidates.iter().find_map(|path| {
        let v = path.iter().try_fold(root, |v, key| v.get(*key))?;
        v.as_array().and_then(|a| a.first()).and_then(Value::as_str).or_else(|| v.as_str()).map(str::to_string)
    })
}

fn error_summary_count(root: &Value) -> Option<f64> {
    let entries = root.get("error_summary")?.as_array()?;
    Some(entries.iter().filter_map(|e| e.get("count").and_then(Value::as_f64)).sum())
}
