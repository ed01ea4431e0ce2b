//! A REAL vLLM 0.32.0 CPU server (recorded; see tests/fixtures/vllm_cpu/SOURCES.md): its
//! `/metrics` scrape through the window computation, and its startup, serving and failure logs
//! through the log parser. No engine runs here.

use std::path::PathBuf;
use std::time::Duration;

use autodebug_core::{EngineKind, LogLine, Signal, SignalKind, TelemetrySnapshot, TimeWindow, canonical};
use autodebug_telemetry::parse_engine_logs;
use autodebug_telemetry::prometheus::{GaugeTracker, parse_exposition, window_signals};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vllm_cpu").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn lines(text: &str) -> Vec<LogLine> {
    text.lines().enumerate().map(|(i, t)| LogLine { time_ns: i as i128, text: t.to_string() }).collect()
}

/// The one signal carrying `canonical_name` at `stat`.
fn tagged<'a>(signals: &'a [Signal], canonical_name: &str, stat: &str) -> &'a Signal {
    let found: Vec<&Signal> = signals
        .iter()
        .filter(|s| {
            s.canonical.as_deref() == Some(canonical_name) && s.labels.get("stat").map(String::as_str) == Some(stat)
        })
        .collect();
    assert_eq!(found.len(), 1, "{canonical_name} {stat}: {found:?}");
    found[0]
}

/// The value of a sample line `name{...} value` of the scrape, read without the parser under test.
fn sample(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no sample {name}"));
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

const SCRAPE: &str = "vllm_0.32.0_cpu_metrics.prom";

#[test]
fn the_real_scrape_maps_onto_every_canonical_the_loop_reads() {
    let text = fixture(SCRAPE);
    let end = parse_exposition(&text).unwrap();
    // One scrape: counters and histograms count from the server's start (one streamed request).
    let out = window_signals(None, &GaugeTracker::default(), &end, Duration::from_secs(10));
    let s = &out.signals;

    let per_step = tagged(s, canonical::TOKENS_PER_STEP, "mean");
    assert_eq!(per_step.name, "vllm:iteration_tokens_total");
    let expected =
        sample(&text, "vllm:iteration_tokens_total_sum") / sample(&text, "vllm:iteration_tokens_total_count");
    assert!((per_step.as_f64().unwrap() - expected).abs() < 1e-12, "{per_step:?}");
    assert!(expected > 1.0 && expected < 16.0, "tokens per step {expected}: between one token and the batch");
    // Only the mean carries it: quantiles of a step's token count are not the batch fill.
    assert!(s.iter().filter(|x| x.canonical.as_deref() == Some(canonical::TOKENS_PER_STEP)).count() == 1);

    for (canonical_name, metric) in [
        (canonical::PREFILL_TIME_S, "vllm:request_prefill_time_seconds"),
        (canonical::DECODE_TIME_S, "vllm:request_decode_time_seconds"),
        (canonical::INFERENCE_TIME_S, "vllm:request_inference_time_seconds"),
        (canonical::QUEUE_TIME_S, "vllm:request_queue_time_seconds"),
        (canonical::TTFT_S, "vllm:time_to_first_token_seconds"),
    ] {
        let mean = tagged(s, canonical_name, "mean");
        assert_eq!(mean.name, metric);
        let expected = sample(&text, &format!("{metric}_sum")) / sample(&text, &format!("{metric}_count"));
        assert!((mean.as_f64().unwrap() - expected).abs() < 1e-12, "{canonical_name}");
        assert!(tagged(s, canonical_name, "p99").as_f64().unwrap() >= 0.0);
    }
    // Prefill and decode are parts of the request's running time.
    let part = |c| tagged(s, c, "mean").as_f64().unwrap();
    assert!(part(canonical::PREFILL_TIME_S) + part(canonical::DECODE_TIME_S) <= part(canonical::INFERENCE_TIME_S));

    assert_eq!(tagged(s, canonical::RUNNING, "last").as_f64(), Some(0.0));
    assert_eq!(tagged(s, canonical::QUEUE_LEN, "last").as_f64(), Some(0.0));
    assert_eq!(tagged(s, canonical::KV_USAGE, "max").name, "vllm:kv_cache_usage_perc");
    assert_eq!(tagged(s, canonical::PREEMPTIONS, "increase").as_f64(), Some(0.0));
    assert_eq!(tagged(s, canonical::GENERATION_TOKENS, "increase").as_f64(), Some(16.0));
    assert_eq!(tagged(s, canonical::PROMPT_TOKENS, "increase").as_f64(), Some(15.0));
    let hit_rate = tagged(s, canonical::PREFIX_HIT_RATE, "window");
    assert_eq!(hit_rate.name, "vllm:prefix_cache_hits_total/vllm:prefix_cache_queries_total");
    assert_eq!((hit_rate.as_f64(), hit_rate.count), (Some(0.0), Some(15.0)));
}

#[test]
fn cache_config_info_keeps_every_label_for_the_did_it_take_effect_check() {
    let end = parse_exposition(&fixture(SCRAPE)).unwrap();
    let out = window_signals(None, &GaugeTracker::default(), &end, Duration::from_secs(10));
    let infos: Vec<&Signal> = out.signals.iter().filter(|s| s.name.ends_with("cache_config_info")).collect();
    assert_eq!(infos.len(), 1, "one signal, not one per gauge statistic");
    let info = infos[0];
    assert_eq!(info.name, "vllm:cache_config_info");
    assert_eq!(info.labels["stat"], "info");
    assert_eq!(info.labels["enable_prefix_caching"], "True");
    assert_eq!(info.labels["block_size"], "128");
    assert_eq!(info.labels["cache_dtype"], "auto");
    assert_eq!(info.labels["kv_cache_size_tokens"], "524288");
    assert_eq!(info.labels["kv_cache_memory_bytes"], "2147483648");
    assert!(info.detail.as_deref().is_some_and(|d| d.contains("enable_prefix_caching=True")), "{info:?}");
}

/// Two scrapes: the start is the recorded one, the end adds a known window (10 engine steps of
/// 40 tokens, 2 preemptions, 60 of 100 queried prefix tokens hit, requests running and waiting).
#[test]
fn a_window_between_two_scrapes_counts_only_its_own_steps() {
    let text = fixture(SCRAPE);
    let bump = |text: &str, name: &str, by: f64| -> String {
        text.lines()
            .map(|l| match l.strip_prefix(name) {
                Some(rest) if rest.starts_with('{') || rest.starts_with(' ') => {
                    let (head, v) = l.rsplit_once(' ').unwrap();
                    format!("{head} {}", v.parse::<f64>().unwrap() + by)
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut later = text.clone();
    for (name, by) in [
        ("vllm:iteration_tokens_total_count", 10.0),
        ("vllm:iteration_tokens_total_sum", 400.0),
        ("vllm:iteration_tokens_total_bucket", 10.0),
        ("vllm:num_preemptions_total", 2.0),
        ("vllm:prefix_cache_hits_total", 60.0),
        ("vllm:prefix_cache_queries_total", 100.0),
        ("vllm:num_requests_running", 12.0),
        ("vllm:num_requests_waiting", 3.0),
        ("vllm:kv_cache_usage_perc", 0.25),
    ] {
        later = bump(&later, name, by);
    }
    let start = parse_exposition(&text).unwrap();
    let end = parse_exposition(&later).unwrap();
    let mut gauges = GaugeTracker::default();
    gauges.observe(&start);
    gauges.observe(&end);
    let out = window_signals(Some(&start), &gauges, &end, Duration::from_secs(20));
    let s = &out.signals;
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(tagged(s, canonical::TOKENS_PER_STEP, "mean").as_f64(), Some(40.0));
    assert_eq!(tagged(s, canonical::TOKENS_PER_STEP, "mean").count, Some(10.0));
    assert_eq!(tagged(s, canonical::PREEMPTIONS, "increase").as_f64(), Some(2.0));
    assert_eq!(tagged(s, canonical::PREFIX_HIT_RATE, "window").as_f64(), Some(0.6));
    assert_eq!(tagged(s, canonical::RUNNING, "max").as_f64(), Some(12.0));
    assert_eq!(tagged(s, canonical::QUEUE_LEN, "mean").as_f64(), Some(1.5));
    assert_eq!(tagged(s, canonical::KV_USAGE, "max").as_f64(), Some(0.25));
    // No request finished in the window: no prefill time observation.
    let prefills =
        s.iter().find(|x| x.name == "vllm:request_prefill_time_seconds" && x.labels["stat"] == "count").unwrap();
    assert_eq!(prefills.as_f64(), Some(0.0));
}

fn number(snapshot: &TelemetrySnapshot, name: &str) -> f64 {
    snapshot.get(name).unwrap_or_else(|| panic!("no {name}")).as_f64().unwrap_or_else(|| panic!("{name} not a number"))
}

fn attribute(snapshot: &TelemetrySnapshot, key: &str) -> String {
    let name = format!("vllm.startup.{key}");
    let signal = snapshot.get(&name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(signal.kind, SignalKind::SpanAttribute, "{name}");
    signal.value.as_text()
}

#[test]
fn startup_log_facts_of_a_real_cpu_server() {
    let snapshot = parse_engine_logs(EngineKind::Vllm, &lines(&fixture("vllm_0.32.0_cpu_startup.log")), None);
    let kv = snapshot.canonical(canonical::MAX_TOTAL_TOKENS).unwrap();
    assert_eq!((kv.name.as_str(), kv.as_f64()), ("vllm.log.kv_cache_tokens", Some(524_288.0)));
    assert_eq!(number(&snapshot, "vllm.log.maximum_concurrency"), 512.0);
    assert_eq!(number(&snapshot, "vllm.log.cpu_kv_cache_space_gib"), 2.0);
    assert_eq!(number(&snapshot, "vllm.log.init_engine_s"), 69.6);
    assert_eq!(number(&snapshot, "vllm.log.loading_weights_s"), 0.07);
    assert_eq!(number(&snapshot, "vllm.log.initializing_model_s"), 0.285944);
    assert_eq!(number(&snapshot, "vllm.log.checkpoint_size_gib"), 0.02);
    assert_eq!(number(&snapshot, "vllm.log.available_ram_gib"), 20.54);
    assert_eq!(number(&snapshot, "vllm.log.warmup_s"), 2.19);
    assert_eq!(number(&snapshot, "vllm.log.max_model_len"), 1024.0);
    assert_eq!(number(&snapshot, "vllm.log.torch_threads"), 1.0);

    // The bf16 finding: weights downcast to bf16 and oneDNN falling back on a CPU without bf16.
    let fallback = snapshot.canonical(canonical::CPU_KERNEL_FALLBACKS).unwrap();
    assert_eq!((fallback.name.as_str(), fallback.as_f64()), ("vllm.log.onednn_fallback", Some(1.0)));
    let detail = fallback.detail.as_deref().unwrap();
    assert!(
        detail.contains("Failed to create oneDNN linear, fallback to torch linear") && detail.contains("whole log")
    );
    assert_eq!(number(&snapshot, "vllm.log.downcast_to_bf16"), 1.0);

    // The settings it reports, non-default args first, then the engine config.
    assert_eq!(attribute(&snapshot, "max_model_len"), "1024");
    assert_eq!(attribute(&snapshot, "port"), "8011");
    assert_eq!(attribute(&snapshot, "model"), "/tmp/vllmcpu/tiny-llama");
    assert_eq!(attribute(&snapshot, "version"), "0.32.0");
    assert_eq!(attribute(&snapshot, "dtype"), "bfloat16");
    assert_eq!(attribute(&snapshot, "tensor_parallel_size"), "1");
    assert_eq!(attribute(&snapshot, "enable_prefix_caching"), "True");
    assert_eq!(attribute(&snapshot, "enable_chunked_prefill"), "True");
    assert_eq!(attribute(&snapshot, "max_seq_len"), "1024");
    assert_eq!(attribute(&snapshot, "device_config"), "cpu");
    assert_eq!(attribute(&snapshot, "kv_cache_dtype"), "auto");
    // Only the tuning-relevant keys of the long config line, not its nested dicts.
    assert!(snapshot.get("vllm.startup.compilation_config").is_none());
    // A healthy start: no engine error.
    assert!(snapshot.canonical(canonical::ENGINE_ERROR).is_none(), "{:?}", snapshot.canonical(canonical::ENGINE_ERROR));
}

#[test]
fn serving_log_reports_its_own_max_num_seqs_and_no_error_at_the_requested_shutdown() {
    let log = lines(&fixture("vllm_0.32.0_cpu_serving_seqs16.log"));
    let snapshot = parse_engine_logs(EngineKind::Vllm, &log, Some(TimeWindow::new(0, log.len() as i128)));
    assert_eq!(attribute(&snapshot, "max_num_seqs"), "16");
    assert_eq!(number(&snapshot, "vllm.log.init_engine_s"), 34.09);
    assert_eq!(snapshot.canonical(canonical::CPU_KERNEL_FALLBACKS).unwrap().as_f64(), Some(1.0));
    // The EngineDeadError after `shutdown triggered` is the stop's doing.
    assert!(log.iter().any(|l| l.text.contains("EngineDeadError")), "the fixture has it");
    assert!(snapshot.canonical(canonical::ENGINE_ERROR).is_none(), "{:?}", snapshot.canonical(canonical::ENGINE_ERROR));
}

/// The fixture's serving log has no stats line (no chat request reached it), so this line is
/// built from vLLM's format string (`Engine %03d: Avg prompt throughput: %.1f tokens/s, …`).
#[test]
fn periodic_stats_line_in_the_v1_format() {
    let line = "(APIServer pid=22136) INFO 12-06 12:28:33 [loggers.py:259] Engine 000: Avg prompt throughput: 30.4 tokens/s, Avg generation throughput: 210.7 tokens/s, Running: 16 reqs, Waiting: 3 reqs, GPU KV cache usage: 0.4%, Prefix cache hit rate: 42.0%";
    let snapshot = parse_engine_logs(EngineKind::Vllm, &lines(line), Some(TimeWindow::new(0, 1)));
    assert_eq!(snapshot.canonical(canonical::RUNNING).unwrap().as_f64(), Some(16.0));
    assert_eq!(snapshot.canonical(canonical::QUEUE_LEN).unwrap().as_f64(), Some(3.0));
    assert_eq!(snapshot.canonical(canonical::GEN_THROUGHPUT).unwrap().as_f64(), Some(210.7));
    assert!((snapshot.canonical(canonical::KV_USAGE).unwrap().as_f64().unwrap() - 0.004).abs() < 1e-12);
    assert!((snapshot.canonical(canonical::PREFIX_HIT_RATE).unwrap().as_f64().unwrap() - 0.42).abs() < 1e-12);
    assert_eq!(number(&snapshot, "vllm.log.avg_prompt_throughput"), 30.4);
}

#[test]
fn failure_logs_become_classified_engine_errors() {
    let numa = parse_engine_logs(EngineKind::Vllm, &lines(&fixture("vllm_0.32.0_error_tp2_numa.log")), None);
    let errors: Vec<&Signal> =
        numa.signals.iter().filter(|s| s.canonical.as_deref() == Some(canonical::ENGINE_ERROR)).collect();
    assert_eq!(errors[0].name, "engine.error.hardware", "{errors:?}");
    assert!(errors[0].value.as_text().contains("Not enough allowed NUMA nodes"));
    assert!(
        errors.iter().any(|e| e.name == "engine.error.crashed" && e.value.as_text().contains("See root cause above"))
    );
    let unknown = parse_engine_logs(EngineKind::Vllm, &lines(&fixture("vllm_0.32.0_error_unknown.log")), None);
    let error = unknown.canonical(canonical::ENGINE_ERROR).unwrap();
    assert_eq!(error.name, "engine.error.unknown_flag");
    assert!(error.value.as_text().contains("--frobnicate-widgets"));
}

#[test]
fn capacity_plan_of_a_real_cpu_server() {
    use autodebug_telemetry::logs::capacity::{capacity_plan, guess_engine};
    let log = lines(&fixture("vllm_0.32.0_cpu_startup.log"));
    assert_eq!(guess_engine(&log), Some(EngineKind::Vllm));
    let snapshot = parse_engine_logs(EngineKind::Vllm, &log, None);
    let plan = capacity_plan(EngineKind::Vllm, &snapshot, None);
    assert_eq!(plan.kv_tokens, Some(524_288.0));
    assert_eq!(plan.context_len, Some(1024.0));
    // VLLM_CPU_KVCACHE_SPACE=2 GiB, in GB.
    assert!((plan.kv_pool_gb.unwrap() - 2.0 * 1.073_741_824).abs() < 1e-9, "{:?}", plan.kv_pool_gb);
    // 2 GiB / 524,288 tokens = 4096 bytes per token.
    assert!((plan.kv_bytes_per_token.unwrap() - 4096.0).abs() < 1e-6, "{:?}", plan.kv_bytes_per_token);
}
