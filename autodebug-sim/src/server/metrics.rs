//! `GET /metrics`: Prometheus text exposition under the engines' real metric names, label sets,
//! HELP texts and histogram buckets (SGLang 0.5.23 multiprocess layout, vLLM 0.33.0, llama.cpp's
//! `llama-server --metrics` as scraped in `autodebug-telemetry/tests/fixtures`), so a scraper written
//! against a real engine reads the simulator unchanged.

use std::fmt::Write as _;

use super::EngineKind;
use super::telemetry::{Buckets, Histogram, RequestSeries, Telemetry};

pub const SGLANG_BUCKETS: Buckets = Buckets {
    ttft: &[0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0, 400.0],
    itl: &[
        0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.2, 0.4, 0.6, 0.8,
        1.0, 2.0, 4.0, 6.0, 8.0,
    ],
    tpot: &[
        0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.2, 0.4, 0.6, 0.8,
        1.0, 2.0, 4.0, 6.0, 8.0,
    ],
    e2e: &[
        0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0, 400.0, 600.0,
        1200.0, 1800.0, 2400.0,
    ],
    queue: &[
        0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
        60.0, 70.0, 80.0, 90.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0, 1200.0, 1400.0,
        1600.0, 1800.0, 2000.0, 2500.0, 3000.0,
    ],
};

const VLLM_REQUEST_TIME_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
];
const VLLM_TOKEN_TIME_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];

pub const VLLM_BUCKETS: Buckets = Buckets {
    ttft: &[
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
        160.0, 640.0, 2560.0,
    ],
    itl: VLLM_TOKEN_TIME_BUCKETS,
    tpot: VLLM_TOKEN_TIME_BUCKETS,
    e2e: VLLM_REQUEST_TIME_BUCKETS,
    queue: VLLM_REQUEST_TIME_BUCKETS,
};

pub fn buckets_for(engine: EngineKind) -> &'static Buckets {
    match engine {
        EngineKind::Vllm => &VLLM_BUCKETS,
        _ => &SGLANG_BUCKETS,
    }
}

/// Renders the exposition text for the engine the server plays.
pub fn render(telemetry: &Telemetry) -> String {
    let mut out = Exposition { text: String::with_capacity(16 * 1024) };
    match telemetry.engine {
        EngineKind::Vllm => render_vllm(telemetry, &mut out),
        EngineKind::LlamaCpp => render_llamacpp(telemetry, &mut out),
        EngineKind::Sglang => render_sglang(telemetry, &mut out),
    }
    out.text
}

/// llama-server's families, in its order, unlabelled; its two throughput gauges are per slot
/// (tokens over the summed slot timers), as llama.cpp computes them.
fn render_llamacpp(t: &Telemetry, out: &mut Exposition) {
    let g = &t.gauges;
    let computed_prompt = g.prompt_tokens.saturating_sub(g.cached_prompt_tokens) as f64;
    let ratio = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 0.0 };
    let counter = |out: &mut Exposition, name: &str, help: &str, value: f64| {
        out.family(name, "counter", help);
        out.sample(name, &[], None, value);
    };
    counter(
        out,
        "llamacpp:prompt_tokens_total",
        "Number of prompt tokens processed, excluding cached tokens",
        computed_prompt,
    );
    counter(
        out,
        "llamacpp:prompt_tokens_cached_total",
        "Number of prompt tokens reused from the cache",
        g.cached_prompt_tokens as f64,
    );
    counter(out, "llamacpp:prompt_seconds_total", "Total time spent processing prompts", t.slot_prompt_seconds);
    counter(
        out,
        "llamacpp:tokens_predicted_total",
        "Number of generation tokens processed",
        g.generation_tokens as f64,
    );
    counter(
        out,
        "llamacpp:tokens_predicted_seconds_total",
        "Total time spent generating tokens",
        t.slot_generation_seconds,
    );
    counter(
        out,
        "llamacpp:n_decode_total",
        "Total number of llama_decode() calls, excluding speculative decoding and multimodal decoding",
        g.forward_passes as f64,
    );
    counter(
        out,
        "llamacpp:n_tokens_max",
        "Largest observed sequence length (prompt + generation)",
        f64::from(t.max_sequence_tokens),
    );
    counter(
        out,
        "llamacpp:spec_decode_num_draft_tokens_total",
        "Speculative: Total draft tokens generated",
        g.spec_draft_tokens as f64,
    );
    counter(
        out,
        "llamacpp:spec_decode_num_accepted_tokens_total",
        "Speculative: Total draft tokens accepted by the target model",
        g.spec_accept_tokens as f64,
    );
    counter(
        out,
        "llamacpp:spec_decode_num_drafts_total",
        "Speculative: Total speculative decoding verification steps",
        0.0,
    );
    out.gauge(
        "llamacpp:prompt_tokens_seconds",
        "Average prompt throughput in tokens/s",
        &[],
        ratio(computed_prompt, t.slot_prompt_seconds),
    );
    out.gauge(
        "llamacpp:predicted_tokens_seconds",
        "Average generation throughput in tokens/s",
        &[],
        ratio(g.generation_tokens as f64, t.slot_generation_seconds),
    );
    out.gauge("llamacpp:requests_processing", "Number of requests processing", &[], g.running as f64);
    out.gauge("llamacpp:requests_deferred", "Number of requests deferred", &[], g.queued as f64);
    out.gauge(
        "llamacpp:n_busy_slots_per_decode",
        "Average number of busy slots per llama_decode() call",
        &[],
        ratio(t.busy_slots as f64, t.working_steps as f64),
    );
}

type Labels<'a> = [(&'a str, &'a str)];

struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// Labels are written in name order, as prometheus_client does.
    fn sample(&mut self, name: &str, labels: &Labels<'_>, extra: Option<(&str, &str)>, value: f64) {
        let mut all: Vec<(&str, &str)> = labels.to_vec();
        all.extend(extra);
        all.sort_by(|a, b| a.0.cmp(b.0));
        self.text.push_str(name);
        if !all.is_empty() {
            self.text.push('{');
            for (i, (key, val)) in all.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(val));
            }
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(&format_go_float(value));
        self.text.push('\n');
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &Labels<'_>, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, labels, None, value);
    }

    /// SGLang's multiprocess layout: `_sum`, the buckets, then `_count`.
    fn histogram_multiproc(&mut self, name: &str, help: &str, labels: &Labels<'_>, histogram: &Histogram) {
        self.family(name, "histogram", help);
        self.sample(&format!("{name}_sum"), labels, None, histogram.sum);
        self.buckets(name, labels, histogram);
        self.sample(&format!("{name}_count"), labels, None, histogram.count as f64);
    }

    /// prometheus_client's single-process layout: buckets, `_count`, `_sum`, then a `_created` gauge family.
    fn histogram_single(&mut self, name: &str, help: &str, labels: &Labels<'_>, histogram: &Histogram, created: f64) {
        self.family(name, "histogram", help);
        self.buckets(name, labels, histogram);
        self.sample(&format!("{name}_count"), labels, None, histogram.count as f64);
        self.sample(&format!("{name}_sum"), labels, None, histogram.sum);
        let created_name = format!("{name}_created");
        self.family(&created_name, "gauge", help);
        self.sample(&created_name, labels, None, created);
    }

    fn buckets(&mut self, name: &str, labels: &Labels<'_>, histogram: &Histogram) {
        let bucket_name = format!("{name}_bucket");
        let bounds = histogram.bounds.iter().map(|b| format_go_float(*b)).chain(std::iter::once("+Inf".to_string()));
        for (bound, cumulative) in bounds.zip(histogram.cumulative()) {
            self.sample(&bucket_name, labels, Some(("le", &bound)), cumulative as f64);
        }
    }

    /// A counter as prometheus_client writes it: `<base>_total`, then a `<base>_created` gauge family.
    fn counter_with_created(&mut self, base: &str, help: &str, samples: &[(&Labels<'_>, f64)], created: f64) {
        let total = format!("{base}_total");
        self.family(&total, "counter", help);
        for (labels, value) in samples {
            self.sample(&total, labels, None, *value);
        }
        let created_name = format!("{base}_created");
        self.family(&created_name, "gauge", help);
        for (labels, _) in samples {
            self.sample(&created_name, labels, None, created);
        }
    }
}

fn render_sglang(t: &Telemetry, out: &mut Exposition) {
    let model = t.served_model_name.as_str();
    let rank: &Labels<'_> =
        &[("engine_type", "unified"), ("model_name", model), ("moe_ep_rank", "0"), ("pp_rank", "0"), ("tp_rank", "0")];
    let g = &t.gauges;
    let used_tokens = (g.token_usage * g.max_total_tokens as f64).round();
    out.gauge("sglang:num_running_reqs", "The number of running requests.", rank, g.running as f64);
    out.gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", rank, g.queued as f64);
    out.gauge("sglang:num_grammar_queue_reqs", "The number of requests in the grammar waiting queue.", rank, 0.0);
    out.gauge("sglang:gen_throughput", "The generation throughput (token/s).", rank, t.gen_throughput);
    out.gauge("sglang:cache_hit_rate", "The prefix cache hit rate.", rank, t.last_prefill_hit_rate);
    out.gauge("sglang:token_usage", "The token usage.", rank, g.token_usage);
    out.gauge("sglang:num_used_tokens", "The number of used tokens.", rank, used_tokens);
    out.gauge(
        "sglang:max_total_num_tokens",
        "Maximum total number of tokens in the KV cache pool.",
        rank,
        g.max_total_tokens as f64,
    );
    out.gauge(
        "sglang:kv_available_tokens",
        "Number of free token slots in the KV cache pool.",
        rank,
        (g.max_total_tokens as f64 - used_tokens).max(0.0),
    );
    out.gauge("sglang:kv_used_tokens", "Number of actively used token slots in the KV cache pool.", rank, used_tokens);
    out.gauge(
        "sglang:is_cuda_graph",
        "Whether the batch is using CUDA graph.",
        rank,
        if t.cuda_graph { 1.0 } else { 0.0 },
    );
    let accept_length = if g.spec_draft_tokens == 0 || g.forward_passes == 0 {
        0.0
    } else {
        1.0 + g.spec_accept_tokens as f64 / g.forward_passes as f64
    };
    out.gauge(
        "sglang:spec_accept_length",
        "Mean acceptance length of speculative decoding (accepted drafts + bonus token per forward).",
        rank,
        accept_length,
    );
    out.gauge("sglang:num_retracted_reqs", "The number of retracted requests.", rank, t.retractions_last_step as f64);
    out.family("sglang:num_retracted_requests_total", "counter", "Total number of retracted requests.");
    out.sample("sglang:num_retracted_requests_total", rank, None, g.retractions as f64);
    out.family(
        "sglang:cuda_graph_passes_total",
        "counter",
        "Total number of forward passes categorized by CUDA graph.",
    );
    out.sample("sglang:cuda_graph_passes_total", rank, Some(("mode", "cuda_graph")), t.graph_passes as f64);
    out.sample("sglang:cuda_graph_passes_total", rank, Some(("mode", "none")), t.eager_passes as f64);

    let series: [(&str, &RequestSeries); 2] = [("true", &t.streaming), ("false", &t.non_streaming)];
    let per_stream = |out: &mut Exposition, name: &str, help: &str, value: fn(&RequestSeries) -> f64| {
        out.family(name, "counter", help);
        for (streaming, s) in &series {
            out.sample(
                name,
                &[("engine_type", "unified"), ("is_streaming", streaming), ("model_name", model)],
                None,
                value(s),
            );
        }
    };
    per_stream(out, "sglang:prompt_tokens_total", "Number of prefill tokens processed.", |s| s.prompt_tokens as f64);
    per_stream(out, "sglang:generation_tokens_total", "Number of generation tokens processed.", |s| {
        s.generation_tokens as f64
    });
    per_stream(out, "sglang:num_requests_total", "Number of requests processed.", |s| s.requests as f64);
    out.family(
        "sglang:cached_tokens_total",
        "counter",
        "Number of cached prompt tokens by source (device/host/storage).",
    );
    for (source, value) in [("device", t.cached_tokens), ("host", 0), ("storage", 0)] {
        out.sample(
            "sglang:cached_tokens_total",
            &[("cache_source", source), ("engine_type", "unified"), ("model_name", model)],
            None,
            value as f64,
        );
    }
    out.histogram_multiproc("sglang:queue_time_seconds", "Histogram of queueing time in seconds.", rank, &t.queue_time);
    let streaming_labels =
        |streaming: &'static str| [("engine_type", "unified"), ("is_streaming", streaming), ("model_name", model)];
    out.family("sglang:time_to_first_token_seconds", "histogram", "Histogram of time to first token in seconds.");
    for (streaming, s) in &series {
        histogram_samples(out, "sglang:time_to_first_token_seconds", &streaming_labels(streaming), &s.ttft);
    }
    out.histogram_multiproc(
        "sglang:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        &[("engine_type", "unified"), ("model_name", model)],
        &t.inter_token,
    );
    out.family(
        "sglang:request_time_per_output_token_seconds",
        "histogram",
        "Per-request TPOT in seconds: (finished_time - first_token_time) / (completion_tokens - 1).",
    );
    for (streaming, s) in &series {
        histogram_samples(out, "sglang:request_time_per_output_token_seconds", &streaming_labels(streaming), &s.tpot);
    }
    out.family("sglang:e2e_request_latency_seconds", "histogram", "Histogram of End-to-end request latency in seconds");
    for (streaming, s) in &series {
        histogram_samples(out, "sglang:e2e_request_latency_seconds", &streaming_labels(streaming), &s.e2e);
    }
}

fn histogram_samples(out: &mut Exposition, name: &str, labels: &Labels<'_>, histogram: &Histogram) {
    out.sample(&format!("{name}_sum"), labels, None, histogram.sum);
    out.buckets(name, labels, histogram);
    out.sample(&format!("{name}_count"), labels, None, histogram.count as f64);
}

fn render_vllm(t: &Telemetry, out: &mut Exposition) {
    let model = t.served_model_name.as_str();
    let labels: &Labels<'_> = &[("engine", "0"), ("model_name", model)];
    let created = t.started_unix_ns as f64 / 1e9;
    let g = &t.gauges;
    out.gauge("vllm:num_requests_running", "Number of requests in model execution batches.", labels, g.running as f64);
    out.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels, g.queued as f64);
    out.gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels, g.token_usage);
    out.counter_with_created(
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        &[(labels, g.prompt_tokens as f64)],
        created,
    );
    out.counter_with_created(
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        &[(labels, g.cached_prompt_tokens as f64)],
        created,
    );
    out.counter_with_created(
        "vllm:num_preemptions",
        "Cumulative number of preemption from the engine.",
        &[(labels, g.retractions as f64)],
        created,
    );
    out.counter_with_created(
        "vllm:prompt_tokens",
        "Number of prefill tokens processed.",
        &[(labels, g.prompt_tokens as f64)],
        created,
    );
    out.counter_with_created(
        "vllm:prompt_tokens_cached",
        "Number of cached prompt tokens (local + external).",
        &[(labels, g.cached_prompt_tokens as f64)],
        created,
    );
    out.counter_with_created(
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        &[(labels, g.generation_tokens as f64)],
        created,
    );
    let reason_labels: Vec<[(&str, &str); 3]> = t
        .finish_reasons
        .iter()
        .map(|(reason, _)| [("engine", "0"), ("finished_reason", *reason), ("model_name", model)])
        .collect();
    let success: Vec<(&Labels<'_>, f64)> =
        reason_labels.iter().zip(&t.finish_reasons).map(|(l, (_, count))| (&l[..], *count as f64)).collect();
    out.counter_with_created("vllm:request_success", "Count of successfully processed requests.", &success, created);

    let merged = |pick: fn(&RequestSeries) -> &Histogram| merge(pick(&t.streaming), pick(&t.non_streaming));
    out.histogram_single(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        labels,
        &merged(|s| &s.ttft),
        created,
    );
    out.histogram_single(
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        labels,
        &t.inter_token,
        created,
    );
    out.histogram_single(
        "vllm:request_time_per_output_token_seconds",
        "Histogram of time_per_output_token_seconds per request.",
        labels,
        &merged(|s| &s.tpot),
        created,
    );
    out.histogram_single(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        labels,
        &merged(|s| &s.e2e),
        created,
    );
    out.histogram_single(
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        labels,
        &t.queue_time,
        created,
    );
    out.family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig");
    let blocks = (g.max_total_tokens / 16).to_string();
    let mut config: Vec<(&str, &str)> = vec![("block_size", "16"), ("engine", "0"), ("num_gpu_blocks", &blocks)];
    config.extend(t.cache_config.iter().map(|(k, v)| (*k, v.as_str())));
    out.sample("vllm:cache_config_info", &config, None, 1.0);
}

fn merge(a: &Histogram, b: &Histogram) -> Histogram {
    let mut merged = a.clone();
    for (slot, count) in merged.counts.iter_mut().zip(&b.counts) {
        *slot += count;
    }
    merged.sum += b.sum;
    merged.count += b.count;
    merged
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Formats a float the way prometheus_client does (Python `repr`, with Go's earlier switch to
/// exponent notation above six integer digits), e.g. `12.0`, `0.31`, `1.795356763673102e+09`.
pub fn format_go_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let repr = python_repr(value);
    if value > 0.0
        && let Some(dot) = repr.find('.')
        && dot > 6
        && !repr.contains('e')
    {
        let digits = format!("{}{}", &repr[1..dot], &repr[dot + 1..]);
        let mantissa = format!("{}.{}", &repr[..1], digits);
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e+0{}", dot - 1);
    }
    repr
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` on integral values, exponent
/// notation below 1e-4 and from 1e16 on.
fn python_repr(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let formatted = format!("{value:e}");
        let (mantissa, exponent) = formatted.split_once('e').unwrap_or((&formatted, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let plain = format!("{value}");
    if plain.contains('.') { plain } else { format!("{plain}.0") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_render_like_prometheus_client() {
        assert_eq!(format_go_float(12.0), "12.0");
        assert_eq!(format_go_float(0.31), "0.31");
        assert_eq!(format_go_float(161721.0), "161721.0");
        assert_eq!(format_go_float(4_800_000.0), "4.8e+06");
        assert_eq!(format_go_float(1795356763.673102), "1.795356763673102e+09");
        assert_eq!(format_go_float(0.00001), "1e-05");
        assert_eq!(format_go_float(0.0), "0.0");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_le_inclusive() {
        let mut histogram = Histogram::new(&[0.1, 0.2]);
        histogram.observe(0.1);
        histogram.observe(0.15);
        histogram.observe(5.0);
        assert_eq!(histogram.cumulative().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!((histogram.sum - 5.25).abs() < 1e-9);
    }
}
