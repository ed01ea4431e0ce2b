//! `/metrics` (Prometheus text under the engines' real names) and the Graphsignal-shaped
//! debug context, over real loopback HTTP.

mod server_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use autodebug_sim::EngineKind;
use serde_json::Value;
use server_support::*;

const MODEL: &str = "Qwen/Qwen1.5-0.5B-Chat";

/// One parsed sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the exposition text line by line; panics on any malformed line.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, (String, String)>) {
    let mut samples = Vec::new();
    let mut families: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            families.entry(name.to_string()).or_default().0 = help.to_string();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            families.entry(name.to_string()).or_default().1 = kind.to_string();
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "unexpected line {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        samples.push(Sample { name, labels, value });
    }
    (samples, families)
}

/// The distinct sets of label names the samples of one family carry.
fn label_sets(
    samples: &[Sample],
    families: &BTreeMap<String, (String, String)>,
    family: &str,
) -> BTreeSet<BTreeSet<String>> {
    samples
        .iter()
        .filter(|s| family_of(&s.name, families) == Some(family))
        .map(|s| s.labels.keys().cloned().collect())
        .collect()
}

fn family_of<'a>(sample: &str, families: &'a BTreeMap<String, (String, String)>) -> Option<&'a str> {
    if families.contains_key(sample) {
        return families.get_key_value(sample).map(|(k, _)| k.as_str());
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| sample.strip_suffix(suffix))
        .find(|base| families.get(*base).is_some_and(|f| f.1 == "histogram"))
        .and_then(|base| families.get_key_value(base).map(|(k, _)| k.as_str()))
}

fn sum_of(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v)))
        .map(|s| s.value)
        .sum()
}

async fn scrape(client: &reqwest::Client, base: &str) -> String {
    let response = client.get(format!("{base}/metrics")).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

/// Every histogram: buckets non-decreasing and `+Inf` equal to `_count`.
fn check_histograms(samples: &[Sample], families: &BTreeMap<String, (String, String)>) {
    for (name, _) in families.iter().filter(|(_, f)| f.1 == "histogram") {
        let mut per_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for sample in samples.iter().filter(|s| s.name == format!("{name}_bucket")) {
            let mut key = sample.labels.clone();
            let le = key.remove("le").expect("le label");
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("numeric le") };
            per_series.entry(format!("{key:?}")).or_default().push((le, sample.value));
        }
        assert!(!per_series.is_empty(), "histogram {name} has no buckets");
        for (key, buckets) in per_series {
            assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{name}{key} not cumulative");
            let count = samples
                .iter()
                .find(|s| s.name == format!("{name}_count") && format!("{:?}", s.labels) == key)
                .map(|s| s.value);
            assert_eq!(Some(buckets.last().map(|b| b.1).unwrap_or(-1.0)), count, "{name}{key}: +Inf != _count");
        }
    }
}

/// Our HELP/TYPE of each family and our bucket bounds are the real engine's (from the fixture).
fn check_against_fixture(ours: &str, fixture: &str) {
    let (our_samples, our_families) = parse(ours);
    let (real_samples, real_families) = parse(fixture);
    for (name, (help, kind)) in &our_families {
        let real = real_families.get(name).unwrap_or_else(|| panic!("{name} is not a metric of the real engine"));
        assert_eq!(&real.0, help, "HELP of {name}");
        assert_eq!(&real.1, kind, "TYPE of {name}");
        let bounds = |samples: &[Sample]| -> BTreeSet<String> {
            samples
                .iter()
                .filter(|s| s.name == format!("{name}_bucket"))
                .filter_map(|s| s.labels.get("le").cloned())
                .collect()
        };
        if kind == "histogram" {
            assert_eq!(bounds(&our_samples), bounds(&real_samples), "bucket bounds of {name}");
        }
        assert_eq!(
            label_sets(&our_samples, &our_families, name),
            label_sets(&real_samples, &real_families, name),
            "label names of {name}"
        );
    }
    for sample in &our_samples {
        assert!(family_of(&sample.name, &our_families).is_some(), "{} has no HELP/TYPE", sample.name);
    }
}

#[tokio::test]
async fn sglang_metrics_use_the_real_names_and_counters_grow() {
    let address = start(EngineKind::Sglang, &[], quiet(11)).await;
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    let before = scrape(&client, &base).await;
    check_against_fixture(&before, include_str!("fixtures/generated_sglang_0.5.23_multiproc.prom"));
    let (before_samples, _) = parse(&before);

    let body = chat_body(MODEL, &prompt(31, "metrics"), 12, true);
    for _ in 0..3 {
        stream(&client, &format!("{base}/v1/chat/completions"), &body, None).await;
    }
    // A request's counters are recorded as its stream ends, which the client can see a moment
    // before the server's bookkeeping does under load: wait (bounded) until all three are in.
    let streaming_requests =
        |text: &str| sum_of(&parse(text).0, "sglang:num_requests_total", Some(("is_streaming", "true")));
    let expected = streaming_requests(&before) + 3.0;
    let mut after = scrape(&client, &base).await;
    for _ in 0..100 {
        if streaming_requests(&after) >= expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        after = scrape(&client, &base).await;
    }
    check_against_fixture(&after, include_str!("fixtures/generated_sglang_0.5.23_multiproc.prom"));
    let (samples, families) = parse(&after);
    check_histograms(&samples, &families);
    for required in [
        "sglang:prompt_tokens_total",
        "sglang:generation_tokens_total",
        "sglang:num_requests_total",
        "sglang:cached_tokens_total",
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:token_usage",
        "sglang:cache_hit_rate",
        "sglang:gen_throughput",
        "sglang:num_retracted_reqs",
        "sglang:time_to_first_token_seconds",
        "sglang:inter_token_latency_seconds",
        "sglang:e2e_request_latency_seconds",
        "sglang:queue_time_seconds",
    ] {
        assert!(families.contains_key(required), "missing {required}");
    }
    let streaming = Some(("is_streaming", "true"));
    let grew = |name: &str, by: f64| {
        let delta = sum_of(&samples, name, streaming) - sum_of(&before_samples, name, streaming);
        assert_eq!(delta, by, "{name} grew by {delta}");
    };
    grew("sglang:prompt_tokens_total", 93.0);
    grew("sglang:generation_tokens_total", 36.0);
    grew("sglang:num_requests_total", 3.0);
    grew("sglang:time_to_first_token_seconds_count", 3.0);
    grew("sglang:e2e_request_latency_seconds_count", 3.0);
    assert!(
        sum_of(&samples, "sglang:cached_tokens_total", Some(("cache_source", "device"))) > 0.0,
        "repeated prompt hit the cache"
    );
    assert!(sum_of(&samples, "sglang:inter_token_latency_seconds_count", None) >= 3.0 * 11.0 - 0.5);
    let ttft_sum = sum_of(&samples, "sglang:time_to_first_token_seconds_sum", streaming);
    assert!(ttft_sum > 0.0 && ttft_sum < 30.0, "ttft sum {ttft_sum}");
    assert_eq!(sum_of(&samples, "sglang:num_running_reqs", None), 0.0);
}

#[tokio::test]
async fn vllm_metrics_use_the_real_names_and_counters_grow() {
    let address = start(EngineKind::Vllm, &[], quiet(12)).await;
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    let fixture = include_str!("fixtures/generated_vllm_0.33.0_single.prom");
    let before = scrape(&client, &base).await;
    check_against_fixture(&before, fixture);
    let (before_samples, _) = parse(&before);
    let body = chat_body(MODEL, &prompt(20, "vllm"), 10, true);
    for _ in 0..2 {
        stream(&client, &format!("{base}/v1/chat/completions"), &body, None).await;
    }
    let after = scrape(&client, &base).await;
    check_against_fixture(&after, fixture);
    let (samples, families) = parse(&after);
    check_histograms(&samples, &families);
    for required in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
    ] {
        assert!(families.contains_key(required), "missing {required}");
    }
    let delta = |name: &str| sum_of(&samples, name, None) - sum_of(&before_samples, name, None);
    assert_eq!(delta("vllm:prompt_tokens_total"), 40.0);
    assert_eq!(delta("vllm:generation_tokens_total"), 20.0);
    assert_eq!(delta("vllm:e2e_request_latency_seconds_count"), 2.0);
    assert_eq!(sum_of(&samples, "vllm:request_success_total", Some(("finished_reason", "length"))), 2.0);
    assert!(delta("vllm:prefix_cache_hits_total") > 0.0);
}

/// A llama.cpp twin served over loopback speaks llama-server's `/metrics`: the same families, HELP
/// and TYPE lines as a real scrape (every family, no more), counters that grow with the requests it
/// served, and per-slot throughput gauges that follow from its own timers.
#[tokio::test]
async fn a_llamacpp_twin_exports_exactly_the_real_llama_server_families() {
    use autodebug_core::Platform;
    use autodebug_sim::server::{ServeOptions, serve_twin};
    use autodebug_sim::twin::{StepCosts, Twin};

    let cpu = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
    let mut twin = Twin::new(EngineKind::LlamaCpp, "smollm2", Twin::defaults_for(EngineKind::LlamaCpp, &cpu));
    twin.costs = StepCosts {
        step_us: 2000.0,
        prefill_token_us: 50.0,
        decode_seq_us: 300.0,
        context_token_ns: 5.0,
        request_ms: 1.0,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local address"));
    let flags = vec!["--parallel".to_string(), "2".to_string()];
    tokio::spawn(async move {
        let options = ServeOptions { quiet: true, model_name: Some("smollm2".into()), ..ServeOptions::default() };
        if let Err(error) = serve_twin(&twin, &flags, listener, options).await {
            panic!("the twin's server failed: {error}");
        }
    });
    let client = reqwest::Client::new();
    let fixture = include_str!("fixtures/llamacpp_smollm2_metrics.prom");
    let before = scrape(&client, &base).await;
    check_against_fixture(&before, fixture);
    let (_, real_families) = parse(fixture);
    let (before_samples, our_families) = parse(&before);
    assert_eq!(
        our_families.keys().collect::<Vec<_>>(),
        real_families.keys().collect::<Vec<_>>(),
        "the families of a real llama-server scrape"
    );
    let body = chat_body("smollm2", &prompt(20, "llama"), 10, true);
    let url = format!("{base}/v1/chat/completions");
    let (one, two) = tokio::join!(stream(&client, &url, &body, None), stream(&client, &url, &body, None));
    assert!(!content_events(&one).is_empty() && !content_events(&two).is_empty());
    let after = scrape(&client, &base).await;
    check_against_fixture(&after, fixture);
    let (samples, _) = parse(&after);
    let value = |name: &str| sum_of(&samples, name, None);
    let delta = |name: &str| value(name) - sum_of(&before_samples, name, None);
    assert_eq!(delta("llamacpp:tokens_predicted_total"), 20.0);
    let prompt_tokens = delta("llamacpp:prompt_tokens_total") + delta("llamacpp:prompt_tokens_cached_total");
    assert!(prompt_tokens >= 40.0, "two 20-word prompts counted {prompt_tokens} tokens");
    assert!(delta("llamacpp:n_decode_total") >= 10.0, "10 tokens each take at least 10 decode calls");
    assert!(value("llamacpp:n_tokens_max") >= 30.0, "{}", value("llamacpp:n_tokens_max"));
    for (gauge, seconds, tokens) in [
        (
            "llamacpp:predicted_tokens_seconds",
            "llamacpp:tokens_predicted_seconds_total",
            "llamacpp:tokens_predicted_total",
        ),
        ("llamacpp:prompt_tokens_seconds", "llamacpp:prompt_seconds_total", "llamacpp:prompt_tokens_total"),
    ] {
        assert!(value(seconds) > 0.0, "{seconds} did not grow");
        let expected = value(tokens) / value(seconds);
        assert!((value(gauge) - expected).abs() <= 1e-6 * expected.max(1.0), "{gauge} is tokens over its timer");
    }
    let busy = value("llamacpp:n_busy_slots_per_decode");
    assert!((1.0..=2.0).contains(&busy), "2 slots serve 2 streams: {busy} busy per decode");
    assert_eq!(value("llamacpp:requests_processing"), 0.0);
    assert_eq!(value("llamacpp:requests_deferred"), 0.0);
}

fn unix_ns_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

async fn debug_context(client: &reqwest::Client, base: &str, query: &str) -> (String, Value) {
    let response = client
        .get(format!("{base}/api/v1/debug_context/?{query}"))
        .header("X-API-KEY", "anything")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let text = body["context"].as_str().expect("context text").to_string();
    assert_eq!(text.matches("```json").count(), 1, "exactly one JSON block");
    let block = text.split("```json").nth(1).and_then(|rest| rest.split("```").next()).expect("fenced block");
    (text.clone(), serde_json::from_str(block).expect("block is JSON"))
}

#[tokio::test]
async fn the_debug_context_covers_the_window_with_profiles_and_startup_attributes() {
    let address = start(EngineKind::Sglang, &["--enable-mixed-chunk"], quiet(13)).await;
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    let start_ns = unix_ns_now();
    let body = chat_body(MODEL, &prompt(31, "ctx"), 15, true);
    for _ in 0..2 {
        stream(&client, &format!("{base}/v1/chat/completions"), &body, None).await;
    }
    let end_ns = unix_ns_now();
    let (text, context) =
        debug_context(&client, &base, &format!("start_time_ns={start_ns}&end_time_ns={end_ns}")).await;
    assert!(text.contains("profiles"), "the markdown describes the sections");

    let profile = |name: &str| {
        context["profiles"].as_array().and_then(|p| p.iter().find(|p| p["function"] == name)).cloned().expect(name)
    };
    let run_batch = profile("sglang.scheduler.Scheduler.run_batch");
    let calls = run_batch["calls"].as_u64().unwrap_or(0);
    assert!(calls >= 15, "two 15-token requests take at least 15 steps, saw {calls}");
    assert!(run_batch["cumtime_ns"].as_u64().unwrap_or(0) > 0);
    let forward = profile("sglang.model_executor.model_runner.ModelRunner.forward");
    assert!(forward["calls"].as_u64().unwrap_or(0) >= calls / 2);
    assert_eq!(profile("sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat.handle_request")["calls"], 2);

    let attributes = &context["attributes"];
    assert_eq!(attributes["sglang.startup.enable_mixed_chunk"], "True");
    assert!(attributes["sglang.startup.num_continuous_decode_steps"].is_string());
    assert_eq!(attributes["engine.name"], "sglang");
    assert_eq!(attributes["engine.model"], MODEL);
    assert_eq!(attributes["engine.gpu_count"], "1");
    let counter = |name: &str| {
        context["span_counters"].as_array().and_then(|c| c.iter().find(|c| c["name"] == name)).cloned().expect(name)
    };
    assert_eq!(counter("sglang.latency.time_to_first_token")["count"], 2);
    assert_eq!(counter("sglang.usage.prompt_tokens")["sum"], 62);
    assert_eq!(counter("sglang.usage.completion_tokens")["sum"], 30);
    let metric_names: Vec<&str> =
        context["metrics"].as_array().expect("metrics").iter().filter_map(|m| m["name"].as_str()).collect();
    for name in ["sglang.cache_hit_rate", "sglang.gen_throughput", "sglang.token_usage", "sglang.num_running_reqs"] {
        assert!(metric_names.contains(&name), "missing metric {name}");
    }
    assert_eq!(context["available_tags"]["deployment"][0], "autodebug-sim");
    assert!(context["errors"].as_array().is_some_and(|e| e.is_empty()));

    // A window before the requests holds none of them; another deployment's tag matches nothing.
    let (_, empty) = debug_context(
        &client,
        &base,
        &format!("start_time_ns={}&end_time_ns={}", start_ns - 2_000_000_000, start_ns - 1),
    )
    .await;
    assert_eq!(empty["profiles"][0]["calls"], 0);
    let (_, other) = debug_context(
        &client,
        &base,
        &format!("start_time_ns={start_ns}&end_time_ns={end_ns}&tags=deployment:elsewhere;env:prod"),
    )
    .await;
    assert_eq!(other["profiles"][0]["calls"], 0);
    let bad = client.get(format!("{base}/api/v1/debug_context/?start_time_ns=yesterday")).send().await.expect("send");
    assert_eq!(bad.status(), 400);
}
