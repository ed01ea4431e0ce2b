//! Engine log parsing on a real llama.cpp log and on SGLang / vLLM lines in their formats.

use std::path::PathBuf;

use autodebug_core::{
    Deployment, Endpoint, EngineKind, LogLine, ServiceSpec, SignalKind, Target, TelemetrySnapshot, TelemetrySource,
    TimeWindow, canonical,
};
use autodebug_telemetry::{EngineLogSource, iso_to_ns, parse_engine_logs};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// llama.cpp stamps lines `M.SS.mmm.uuu` since the server started.
fn llamacpp_lines() -> Vec<LogLine> {
    fixture("llamacpp_smollm2_server.log")
        .lines()
        .map(|line| {
            let stamp = line.split_whitespace().next().unwrap();
            let parts: Vec<i128> = stamp.split('.').map(|p| p.parse().unwrap()).collect();
            let micros = ((parts[0] * 60 + parts[1]) * 1000 + parts[2]) * 1000 + parts[3];
            LogLine { time_ns: micros * 1000, text: line.to_string() }
        })
        .collect()
}

/// `(ms, tokens)` of each `eval time` (or `prompt eval time`) line in the window, read with
/// plain word splitting rather than the parser under test.
fn timings(lines: &[LogLine], prompt: bool, window: Option<TimeWindow>) -> Vec<(f64, f64)> {
    lines
        .iter()
        .filter(|l| window.is_none_or(|w| w.contains(l.time_ns)))
        .filter(|l| {
            l.text.contains("print_timing") && l.text.contains("eval time") && l.text.contains("prompt eval") == prompt
        })
        .map(|l| {
            let words: Vec<&str> = l.text.split_whitespace().collect();
            let eq = words.iter().position(|w| *w == "=").unwrap();
            (words[eq + 1].parse().unwrap(), words[eq + 4].parse().unwrap())
        })
        .collect()
}

fn value(snapshot: &TelemetrySnapshot, canonical_name: &str) -> f64 {
    snapshot.canonical(canonical_name).unwrap_or_else(|| panic!("no {canonical_name}")).as_f64().unwrap()
}

#[test]
fn llamacpp_print_timing_over_the_whole_log() {
    let lines = llamacpp_lines();
    let snapshot = parse_engine_logs(EngineKind::LlamaCpp, &lines, None);
    let eval = timings(&lines, false, None);
    let prompt = timings(&lines, true, None);
    assert!(eval.len() > 10, "the fixture has many requests");
    let eval_tokens: f64 = eval.iter().map(|t| t.1).sum();
    let eval_ms: f64 = eval.iter().map(|t| t.0).sum();
    assert_eq!(value(&snapshot, canonical::GENERATION_TOKENS), eval_tokens);
    assert_eq!(value(&snapshot, canonical::PROMPT_TOKENS), prompt.iter().map(|t| t.1).sum::<f64>());
    let itl = value(&snapshot, canonical::ITL_S);
    assert!((itl - eval_ms / eval_tokens / 1e3).abs() < 1e-12, "{itl}");
    let requests = snapshot.get("llamacpp.log.eval.requests").unwrap();
    assert_eq!(requests.as_f64(), Some(eval.len() as f64));
    assert_eq!(snapshot.get("llamacpp.log.n_slots").unwrap().as_f64(), Some(2.0));
    assert_eq!(snapshot.get("llamacpp.log.n_ctx_slot").unwrap().as_f64(), Some(2048.0));
    // `-t 2` in the fixture's command line, as the threadpool line reports it.
    let threads = snapshot.canonical(canonical::ENGINE_THREADS).expect("the threadpool line");
    assert_eq!((threads.name.as_str(), threads.as_f64()), ("llamacpp.log.n_threads", Some(2.0)));
    for signal in &snapshot.signals {
        assert_eq!(signal.kind, SignalKind::LogLine);
        assert!(signal.detail.as_deref().is_some_and(|d| d.contains('«')), "{} quotes its line", signal.name);
    }
    assert!(snapshot.canonical(canonical::ENGINE_ERROR).is_none(), "a clean run has no errors");
}

#[test]
fn llamacpp_window_keeps_startup_facts_and_only_the_window_requests() {
    let lines = llamacpp_lines();
    // The second half of the run, by time.
    let first = lines.first().unwrap().time_ns;
    let last = lines.last().unwrap().time_ns;
    let window = TimeWindow::new(first + (last - first) / 2, last);
    let snapshot = parse_engine_logs(EngineKind::LlamaCpp, &lines, Some(window));
    let eval = timings(&lines, false, Some(window));
    assert!(!eval.is_empty() && eval.len() < timings(&lines, false, None).len());
    assert_eq!(value(&snapshot, canonical::GENERATION_TOKENS), eval.iter().map(|t| t.1).sum::<f64>());
    assert_eq!(snapshot.get("llamacpp.log.eval.requests").unwrap().as_f64(), Some(eval.len() as f64));
    assert!(snapshot.get("llamacpp.log.n_slots").is_some(), "startup lines count regardless of the window");
}

/// SGLang prefixes lines with `[YYYY-MM-DD HH:MM:SS( TPn)?]`.
fn sglang_lines() -> Vec<LogLine> {
    fixture("sglang_server.log")
        .lines()
        .map(|line| {
            let stamp = &line[1..20];
            LogLine { time_ns: iso_to_ns(&stamp.replace(' ', "T")).unwrap(), text: line.to_string() }
        })
        .collect()
}

#[test]
fn sglang_startup_and_batch_lines() {
    let lines = sglang_lines();
    let window =
        TimeWindow::new(iso_to_ns("2026-03-24T20:40:00Z").unwrap(), iso_to_ns("2026-03-24T20:41:00Z").unwrap());
    let snapshot = parse_engine_logs(EngineKind::Sglang, &lines, Some(window));

    assert_eq!(value(&snapshot, canonical::MAX_TOTAL_TOKENS), 5_878_852.0);
    assert_eq!(value(&snapshot, canonical::AVAILABLE_GPU_MEM_GB), 8.83);
    assert_eq!(snapshot.get("sglang.log.max_running_requests").unwrap().as_f64(), Some(4097.0));
    assert_eq!(snapshot.get("sglang.log.load_weight.avail_mem_gb").unwrap().as_f64(), Some(77.5));
    assert_eq!(snapshot.get("sglang.log.cuda_graph.capture_s").unwrap().as_f64(), Some(12.41));

    // In the window: two prefill batches (30 cached of 31, then 0 of 96), three decode batches.
    assert_eq!(value(&snapshot, canonical::CACHED_TOKENS), 30.0);
    assert_eq!(snapshot.get("sglang.log.prefill.new_tokens").unwrap().as_f64(), Some(97.0));
    let ratio = value(&snapshot, canonical::PREFIX_HIT_RATE);
    assert!((ratio - 30.0 / 127.0).abs() < 1e-12, "{ratio}");
    let throughput = value(&snapshot, canonical::GEN_THROUGHPUT);
    assert!((throughput - (664.12 + 701.88 + 612.0) / 3.0).abs() < 1e-9, "{throughput}");
    assert_eq!(value(&snapshot, canonical::QUEUE_LEN), 3.0, "the 40-deep queue after the window is left out");
    assert_eq!(value(&snapshot, canonical::KV_USAGE), 0.05);
    assert_eq!(value(&snapshot, canonical::RUNNING), 4.0);
    assert_eq!(value(&snapshot, canonical::PREEMPTIONS), 2.0);
    let queue = snapshot.canonical(canonical::QUEUE_LEN).unwrap();
    assert!(queue.citation().contains("#queue-req: 3"), "cites the line with the max: {}", queue.citation());
}

fn vllm_lines() -> Vec<LogLine> {
    fixture("vllm_server.log")
        .lines()
        .map(|line| {
            // `INFO 03-24 20:39:01 [file.py:1] ...`: month-day and time, no year.
            let words: Vec<&str> = line.split_whitespace().collect();
            let stamp = format!("2026-{}T{}Z", words[1], words[2]);
            LogLine { time_ns: iso_to_ns(&stamp).unwrap(), text: line.to_string() }
        })
        .collect()
}

#[tokio::test]
async fn vllm_lines_through_the_source() {
    let lines = vllm_lines();
    let deployment = Deployment {
        id: "d1".to_string(),
        backend: "local".to_string(),
        spec: ServiceSpec::new("test", EngineKind::Vllm, "m"),
        started_ns: 0,
        details: Default::default(),
    };
    let endpoint = Endpoint::new("http://127.0.0.1:1", "m");
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &lines };
    let window =
        TimeWindow::new(iso_to_ns("2026-03-24T20:40:00Z").unwrap(), iso_to_ns("2026-03-24T20:41:00Z").unwrap());
    let snapshot = EngineLogSource::new().fetch(&target, window).await.unwrap();

    assert_eq!(value(&snapshot, canonical::MAX_TOTAL_TOKENS), 5_364_512.0);
    assert_eq!(snapshot.get("vllm.log.model_loading.memory_gib").unwrap().as_f64(), Some(0.9277));
    assert_eq!(snapshot.get("vllm.log.model_loading.seconds").unwrap().as_f64(), Some(3.412817));
    assert_eq!(snapshot.get("vllm.log.available_kv_cache_memory_gib").unwrap().as_f64(), Some(61.39));
    assert_eq!(snapshot.get("vllm.log.maximum_concurrency").unwrap().as_f64(), Some(163.71));
    assert_eq!(snapshot.get("vllm.log.cuda_graph.capture_s").unwrap().as_f64(), Some(12.0));
    // Two stats lines inside the window.
    assert_eq!(value(&snapshot, canonical::GEN_THROUGHPUT), 2500.0);
    assert_eq!(value(&snapshot, canonical::RUNNING), 32.0);
    assert_eq!(value(&snapshot, canonical::QUEUE_LEN), 9.0);
    assert!((value(&snapshot, canonical::KV_USAGE) - 0.55).abs() < 1e-12);
    assert!((value(&snapshot, canonical::PREFIX_HIT_RATE) - 0.65).abs() < 1e-12);
    assert_eq!(value(&snapshot, canonical::PREEMPTIONS), 1.0);
    // The OOM after the window still ends the run: errors count regardless of the window.
    let oom = snapshot.canonical(canonical::ENGINE_ERROR).unwrap();
    assert_eq!(oom.name, "engine.error.out_of_memory");
    assert!(oom.value.as_text().contains("Tried to allocate 2.00 GiB"));
}

#[test]
fn fatal_lines_become_engine_errors() {
    let lines: Vec<LogLine> = [
        "usage: launch_server.py [-h] [--model-path MODEL_PATH]",
        "launch_server.py: error: unrecognized arguments: --enable-magic",
        "RuntimeError: CUDA error: an illegal memory access was encountered",
        "RuntimeError: CUDA error: an illegal memory access was encountered",
    ]
    .iter()
    .map(|t| LogLine { time_ns: 0, text: t.to_string() })
    .collect();
    let snapshot = parse_engine_logs(EngineKind::Sglang, &lines, Some(TimeWindow::new(10, 20)));
    let errors: Vec<_> =
        snapshot.signals.iter().filter(|s| s.canonical.as_deref() == Some(canonical::ENGINE_ERROR)).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].name, "engine.error.unknown_flag");
    assert!(errors[0].value.as_text().contains("--enable-magic"));
    assert_eq!(errors[1].name, "engine.error.crashed");
    assert_eq!(errors[1].count, Some(2.0));
}
