//! A Graphsignal-shaped debug context for the server's own run:
//! `GET /api/v1/debug_context/?start_time_ns=..&end_time_ns=..[&tags=k:v;k:v]` returns
//! `{"context": "<markdown>"}` whose one fenced JSON block holds the profiles, span counters,
//! startup attributes and metrics of the activity inside the window.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::EngineKind;
use super::telemetry::{FinishedRequest, StepPhase, Telemetry};

/// The deployment tag the simulator reports.
pub const DEPLOYMENT_TAG: &str = "autodebug-sim";

/// A parsed debug-context query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextQuery {
    pub start_ns: u64,
    pub end_ns: u64,
    pub tags: Vec<(String, String)>,
}

/// Parses the query parameters; the error names the parameter and what it expects.
pub fn parse_query(
    start: Option<&str>,
    end: Option<&str>,
    tags: Option<&str>,
    server_started_ns: u64,
    now_ns: u64,
) -> Result<ContextQuery, String> {
    let number = |name: &str, text: Option<&str>, default: u64| -> Result<u64, String> {
        match text {
            None | Some("") => Ok(default),
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("query parameter `{name}` must be Unix time in nanoseconds, got `{text}`")),
        }
    };
    let start_ns = number("start_time_ns", start, server_started_ns)?;
    let end_ns = number("end_time_ns", end, now_ns)?;
    if end_ns < start_ns {
        return Err(format!("`end_time_ns` ({end_ns}) is before `start_time_ns` ({start_ns}): swap them"));
    }
    let tags = tags
        .unwrap_or_default()
        .split(';')
        .filter(|tag| !tag.trim().is_empty())
        .map(|tag| {
            tag.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("tag `{tag}` in `tags` must read `key:value` (separate tags with `;`)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ContextQuery { start_ns, end_ns, tags })
}

/// What the debug context describes besides the telemetry: the engine's identity and flags.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    pub engine: EngineKind,
    pub gpu: String,
    pub gpu_count: u32,
    pub model: String,
    pub startup_attributes: Vec<(String, String)>,
}

struct Names {
    prefix: &'static str,
    run_batch: &'static str,
    forward: &'static str,
    handle_request: &'static str,
}

fn names(engine: EngineKind) -> Names {
    match engine {
        EngineKind::Vllm => Names {
            prefix: "vllm",
            run_batch: "vllm.engine_core.EngineCore.step",
            forward: "vllm.v1.worker.gpu_model_runner.GPUModelRunner.execute_model",
            handle_request: "vllm.entrypoints.openai.serving_chat.OpenAIServingChat.create_chat_completion",
        },
        _ => Names {
            prefix: "sglang",
            run_batch: "sglang.scheduler.Scheduler.run_batch",
            forward: "sglang.model_executor.model_runner.ModelRunner.forward",
            handle_request: "sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat.handle_request",
        },
    }
}

/// Builds the JSON payload of the context for a window.
pub fn context_json(telemetry: &Telemetry, identity: &ServerIdentity, query: &ContextQuery) -> Value {
    let n = names(identity.engine);
    let matches_us = query.tags.iter().all(|(key, value)| key != "deployment" || value == DEPLOYMENT_TAG);
    let (start, end) = if matches_us { (query.start_ns, query.end_ns) } else { (1, 0) };

    let mut run_batch = (0u64, 0u64);
    let mut forward = (0u64, 0u64);
    let mut prefill_forward_ns: Vec<f64> = Vec::new();
    let mut generated = 0u64;
    let mut last_step = None;
    let mut active = (u64::MAX, 0u64);
    for step in telemetry.steps_in(start, end) {
        run_batch.0 += 1;
        run_batch.1 += step.run_batch_ns;
        forward.0 += u64::from(step.forward_passes);
        forward.1 += step.forward_ns;
        if matches!(step.phase, StepPhase::Prefill | StepPhase::Mixed) {
            prefill_forward_ns.push(step.forward_ns as f64);
        }
        generated += step.new_tokens;
        active = (active.0.min(step.start_unix_ns), active.1.max(step.end_unix_ns));
        last_step = Some(*step);
    }
    let requests: Vec<&FinishedRequest> = telemetry.requests_in(start, end).collect();
    let ttft_ns: Vec<f64> = requests.iter().filter_map(|r| r.ttft_s).map(|s| s * 1e9).collect();
    let itl_ns: Vec<f64> = requests.iter().filter_map(|r| r.tpot_s).map(|s| s * 1e9).collect();
    let e2e_ns: u64 = requests.iter().map(|r| (r.e2e_s * 1e9) as u64).sum();
    let prompt: u64 = requests.iter().map(|r| u64::from(r.prompt_tokens)).sum();
    let cached: u64 = requests.iter().map(|r| u64::from(r.cached_tokens)).sum();

    let profiles = json!([
        {"function": n.run_batch, "calls": run_batch.0, "cumtime_ns": run_batch.1},
        {"function": n.forward, "calls": forward.0, "cumtime_ns": forward.1},
        {"function": n.handle_request, "calls": requests.len(), "cumtime_ns": e2e_ns},
    ]);
    let usage = |name: &str, values: Vec<u64>| json!({"name": format!("{}.usage.{name}", n.prefix), "count": values.len(), "sum": values.iter().sum::<u64>()});
    let span_counters = json!([
        latency_counter(&format!("{}.latency.time_to_first_token", n.prefix), &ttft_ns),
        latency_counter(&format!("{}.latency.time_in_model_prefill", n.prefix), &prefill_forward_ns),
        latency_counter(&format!("{}.latency.inter_token_latency", n.prefix), &itl_ns),
        usage("prompt_tokens", requests.iter().map(|r| u64::from(r.prompt_tokens)).collect()),
        usage("cached_tokens", requests.iter().map(|r| u64::from(r.cached_tokens)).collect()),
        usage("completion_tokens", requests.iter().map(|r| u64::from(r.completion_tokens)).collect()),
    ]);

    let mut attributes = serde_json::Map::new();
    for (key, value) in &identity.startup_attributes {
        attributes.insert(format!("{}.startup.{key}", n.prefix), Value::String(value.clone()));
    }
    attributes.insert("engine.name".into(), Value::String(identity.engine.as_str().into()));
    attributes.insert("engine.gpu".into(), Value::String(identity.gpu.clone()));
    attributes.insert("engine.gpu_count".into(), Value::String(identity.gpu_count.to_string()));
    attributes.insert("engine.model".into(), Value::String(identity.model.clone()));

    let hit_rate = if prompt == 0 { 0.0 } else { cached as f64 / prompt as f64 };
    let active_s = if active.1 > active.0 { (active.1 - active.0) as f64 / 1e9 } else { 0.0 };
    let gen_throughput = if active_s > 0.0 { generated as f64 / active_s } else { 0.0 };
    let itl_s = if itl_ns.is_empty() { 0.0 } else { itl_ns.iter().sum::<f64>() / itl_ns.len() as f64 / 1e9 };
    let (running, queued, usage_now) =
        last_step.map(|s| (f64::from(s.running), f64::from(s.queued), s.token_usage)).unwrap_or((0.0, 0.0, 0.0));
    let metric = |name: &str, value: f64| json!({"name": name, "value": value});
    let metrics = match identity.engine {
        EngineKind::Vllm => json!([
            metric("vllm.prefix_cache_hit_rate", hit_rate),
            metric("vllm.generation_throughput", gen_throughput),
            metric("vllm.kv_cache_usage_perc", usage_now),
            metric("vllm.num_requests_running", running),
            metric("vllm.num_requests_waiting", queued),
            metric("vllm.inter_token_latency_seconds", itl_s),
        ]),
        _ => json!([
            metric("sglang.cache_hit_rate", hit_rate),
            metric("sglang.gen_throughput", gen_throughput),
            metric("sglang.token_usage", usage_now),
            metric("sglang.num_running_reqs", running),
            metric("sglang.num_queue_reqs", queued),
            metric("sglang.inter_token_latency_seconds", itl_s),
        ]),
    };
    let aborted = requests.iter().filter(|r| r.finish_reason == "abort").count();
    let errors: Vec<Value> = if aborted == 0 {
        Vec::new()
    } else {
        vec![json!({"name": format!("{}.request.aborted", n.prefix), "count": aborted,
                     "message": "client disconnected before the request finished"})]
    };
    json!({
        "profiles": profiles,
        "span_counters": span_counters,
        "attributes": attributes,
        "metrics": metrics,
        "errors": errors,
        "available_tags": {"deployment": [DEPLOYMENT_TAG]},
    })
}

fn latency_counter(name: &str, values_ns: &[f64]) -> Value {
    let count = values_ns.len();
    let sum: f64 = values_ns.iter().sum();
    let avg = if count == 0 { 0.0 } else { sum / count as f64 };
    json!({"name": name, "count": count, "sum_ns": sum.round() as u64, "avg_ns": avg.round() as u64,
           "p95_ns": percentile(values_ns, 95.0).round() as u64})
}

/// Nearest-rank percentile; 0 for no values.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The markdown text: a short description of each section, then the one JSON block.
pub fn context_markdown(payload: &Value, identity: &ServerIdentity, query: &ContextQuery) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Debug context: {} on {}x {} serving {}\n",
        identity.engine, identity.gpu_count, identity.gpu, identity.model
    );
    let _ = writeln!(
        text,
        "Window: {} .. {} ns (Unix time, {:.3} s), deployment `{DEPLOYMENT_TAG}`.\n",
        query.start_ns,
        query.end_ns,
        (query.end_ns - query.start_ns) as f64 / 1e9
    );
    text.push_str(
        "- `profiles`: function-level CPU profile of the serving loop in the window: calls and cumulative time \
         (`cumtime_ns`) of the scheduler step, the model forward and the request handler.\n\
         - `span_counters`: per-request latency spans (count, sum, average and p95 in ns) and token usage \
         counts (prompt, cached, completion).\n\
         - `attributes`: the engine's effective startup options and its identity (engine, GPU, model).\n\
         - `metrics`: engine gauges over the window (prefix-cache hit rate, generation throughput, KV usage, \
         running and queued requests, mean inter-token latency).\n\
         - `errors`: errors seen in the window.\n\n",
    );
    let body = serde_json::to_string_pretty(payload).unwrap_or_else(|_| "{}".into());
    let _ = writeln!(text, "```json\n{body}\n```");
    text
}
