//! Ingesting the peer tools' reports (format-true samples in `tests/fixtures/ingest/`, provenance
//! in its SOURCES.md): detection, the mapping onto autodebug's metrics and definitions, and the
//! iterations they become in a real store.

use std::path::PathBuf;

use autodebug_core::store::Store;
use autodebug_core::{EngineKind, IterationStatus};
use autodebug_report::diff;
use autodebug_report::ingest::{self, Format, IngestOptions};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ingest").join(name)
}

fn text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

fn raw(name: &str) -> serde_json::Value {
    serde_json::from_str(&text(name)).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn each_sample_is_detected_as_its_format() {
    for (name, format) in [
        ("vllm_bench_serve.json", Format::Vllm),
        ("vllm_bench_serve_detailed.json", Format::Vllm),
        ("sglang_bench_serving.jsonl", Format::Sglang),
        ("profile_export_aiperf.json", Format::Aiperf),
        ("guidellm_benchmarks.json", Format::Guidellm),
    ] {
        assert_eq!(ingest::detect(&text(name)), Some(format), "{name}");
    }
}

#[test]
fn vllm_fields_map_onto_autodebug_metrics() {
    let source = raw("vllm_bench_serve.json");
    let runs = ingest::parse(&text("vllm_bench_serve.json"), Format::Vllm).unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    for (metric, field) in [
        ("ttft.mean", "mean_ttft_ms"),
        ("ttft.p50", "median_ttft_ms"),
        ("ttft.p90", "p90_ttft_ms"),
        ("ttft.p99", "p99_ttft_ms"),
        ("tpot.mean", "mean_tpot_ms"),
        ("itl.p99", "p99_itl_ms"),
        ("e2e.mean", "mean_e2el_ms"),
        ("e2e.p99", "p99_e2el_ms"),
        ("output_throughput", "output_throughput"),
        ("request_throughput", "request_throughput"),
        ("total_token_throughput", "total_token_throughput"),
    ] {
        assert!(close(run.metrics[metric], source[field].as_f64().unwrap()), "{metric} <- {field}");
    }
    let (completed, failed) = (source["completed"].as_f64().unwrap(), source["failed"].as_f64().unwrap());
    assert_eq!(run.metrics["requests"], completed + failed);
    assert!(close(run.metrics["error_rate"], failed / (completed + failed)));
    assert!(!run.metrics.contains_key("goodput"), "a null request_goodput is not a metric");
    assert_eq!(run.engine, Some(EngineKind::Vllm));
    assert_eq!(run.model.as_deref(), source["model_id"].as_str());
    assert_eq!(run.started_ns, autodebug_core::TimeWindow::parse_iso("2026-03-12T14:15:02Z"));
    assert!(run.label.contains("concurrency 16"), "{}", run.label);
    assert!(run.records.is_empty(), "no per-request lists without --save-detailed");
}

#[test]
fn vllm_detailed_results_become_per_request_records() {
    let source = raw("vllm_bench_serve_detailed.json");
    let run = &ingest::parse(&text("vllm_bench_serve_detailed.json"), Format::Vllm).unwrap()[0];
    let ttfts = source["ttfts"].as_array().unwrap();
    assert_eq!(run.records.len(), ttfts.len());
    assert_eq!(run.records[1].ttft_ns, Some((ttfts[1].as_f64().unwrap() * 1e9) as u64));
    assert_eq!(run.records[1].e2e_ns, Some((source["latencies"][1].as_f64().unwrap() * 1e9) as u64));
    assert_eq!(run.records[1].output_tokens, Some(128));
    let failed: Vec<usize> = run.records.iter().filter(|r| r.error.is_some()).map(|r| r.index).collect();
    assert_eq!(failed, [5], "the request with an error message failed");
    assert_eq!(run.records[5].error_message.as_deref(), Some("Bad Request"));
    assert_eq!(run.engine, None, "openai-chat does not say which engine served it");
    assert!(run.notes.iter().any(|n| n.contains("no e2e latency")), "{:?}", run.notes);
}

#[test]
fn sglang_lines_become_one_run_each_and_keep_their_own_names() {
    let lines: Vec<serde_json::Value> =
        text("sglang_bench_serving.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let runs = ingest::parse(&text("sglang_bench_serving.jsonl"), Format::Sglang).unwrap();
    assert_eq!(runs.len(), lines.len());
    for (run, source) in runs.iter().zip(&lines) {
        for (metric, field) in [
            ("e2e.mean", "mean_e2e_latency_ms"),
            ("e2e.p50", "median_e2e_latency_ms"),
            ("e2e.p99", "p99_e2e_latency_ms"),
            ("ttft.p99", "p99_ttft_ms"),
            ("tpot.mean", "mean_tpot_ms"),
            ("itl.p95", "p95_itl_ms"),
            ("output_throughput", "output_throughput"),
            ("concurrency", "concurrency"),
        ] {
            assert!(close(run.metrics[metric], source[field].as_f64().unwrap()), "{metric} <- {field}");
        }
        let total = source["input_throughput"].as_f64().unwrap() + source["output_throughput"].as_f64().unwrap();
        assert!(close(run.metrics["total_token_throughput"], total));
        assert_eq!(run.metrics["requests"], source["completed"].as_f64().unwrap());
        assert!(!run.metrics.contains_key("error_rate"), "SGLang's summary line has no failure count");
        assert!(!run.metrics.contains_key("accept_length"), "null accept_length is left out");
        assert_eq!(run.engine, Some(EngineKind::Sglang));
    }
    assert_ne!(runs[0].label, runs[1].label);
}

#[test]
fn aiperf_inter_token_latency_is_autodebug_tpot() {
    let source = raw("profile_export_aiperf.json");
    let run = &ingest::parse(&text("profile_export_aiperf.json"), Format::Aiperf).unwrap()[0];
    for (metric, tag, stat) in [
        ("ttft.mean", "time_to_first_token", "avg"),
        ("ttft.p99", "time_to_first_token", "p99"),
        ("ttft.p50", "time_to_first_token", "p50"),
        ("tpot.mean", "inter_token_latency", "avg"),
        ("tpot.p95", "inter_token_latency", "p95"),
        ("ttst.p90", "time_to_second_token", "p90"),
        ("inter_chunk.p99", "inter_chunk_latency", "p99"),
        ("e2e.mean", "request_latency", "avg"),
        ("e2e.std", "request_latency", "std"),
        ("output_throughput", "output_token_throughput", "avg"),
        ("request_throughput", "request_throughput", "avg"),
    ] {
        assert!(close(run.metrics[metric], source[tag][stat].as_f64().unwrap()), "{metric} <- {tag}.{stat}");
    }
    assert!(!run.metrics.contains_key("itl.mean"), "AIPerf's ITL is per request, not per token gap");
    let ok = source["request_count"]["avg"].as_f64().unwrap();
    let errors = source["error_request_count"]["avg"].as_f64().unwrap();
    assert_eq!(run.metrics["requests"], ok + errors);
    assert!(close(run.metrics["error_rate"], errors / (ok + errors)));
    assert_eq!(run.model.as_deref(), Some("meta-llama/Llama-3.1-8B-Instruct"));
    assert_eq!(run.duration_s, source["benchmark_duration"]["avg"].as_f64());
    assert!(run.label.contains("concurrency_10"));
    assert!(run.definitions.iter().any(|d| d.contains("inter_token_latency") && d.contains("tpot")));
}

#[test]
fn aiperf_units_are_authoritative() {
    let mut source = raw("profile_export_aiperf.json");
    source["time_to_first_token"]["unit"] = "s".into();
    source["time_to_first_token"]["p99"] = 0.25.into();
    let run = &ingest::parse(&source.to_string(), Format::Aiperf).unwrap()[0];
    assert!(close(run.metrics["ttft.p99"], 250.0));
    source["request_latency"]["unit"] = "tokens".into();
    let err = ingest::parse(&source.to_string(), Format::Aiperf).unwrap_err();
    assert!(err.contains("request_latency") && err.contains("tokens"), "{err}");
}

#[test]
fn guidellm_tpot_includes_ttft_so_its_itl_becomes_tpot() {
    let source = raw("guidellm_benchmarks.json");
    let runs = ingest::parse(&text("guidellm_benchmarks.json"), Format::Guidellm).unwrap();
    let benchmarks = source["benchmarks"].as_array().unwrap();
    assert_eq!(runs.len(), benchmarks.len());
    for (run, benchmark) in runs.iter().zip(benchmarks) {
        let m = &benchmark["metrics"];
        let ok = |name: &str| &m[name]["successful"];
        assert!(close(run.metrics["tpot.mean"], ok("inter_token_latency_ms")["mean"].as_f64().unwrap()));
        assert!(close(run.metrics["tpot.p99"], ok("inter_token_latency_ms")["percentiles"]["p99"].as_f64().unwrap()));
        assert!(close(run.metrics["tpot_incl_ttft.mean"], ok("time_per_output_token_ms")["mean"].as_f64().unwrap()));
        assert!(run.metrics["tpot_incl_ttft.mean"] > run.metrics["tpot.mean"], "TPOT with TTFT is the larger one");
        assert!(close(run.metrics["ttft.p50"], ok("time_to_first_token_ms")["median"].as_f64().unwrap()));
        assert!(close(run.metrics["ttft.p999"], ok("time_to_first_token_ms")["percentiles"]["p999"].as_f64().unwrap()));
        assert!(close(run.metrics["ttft.std"], ok("time_to_first_token_ms")["std_dev"].as_f64().unwrap()));
        assert!(
            close(run.metrics["e2e.p99"], ok("request_latency")["percentiles"]["p99"].as_f64().unwrap() * 1000.0),
            "s -> ms"
        );
        assert!(close(run.metrics["output_throughput"], ok("output_tokens_per_second")["mean"].as_f64().unwrap()));
        assert!(!run.metrics.contains_key("ttft.p001") && !run.metrics.contains_key("ttft.p1"));
        let totals = &m["request_totals"];
        assert_eq!(run.metrics["requests"], totals["total"].as_f64().unwrap());
        assert_eq!(run.metrics["errors"], totals["errored"].as_f64().unwrap());
        assert_eq!(run.model.as_deref(), source["args"]["model"].as_str());
    }
    assert_eq!(runs[0].label, "guidellm synchronous");
    assert_eq!(runs[1].label, "guidellm concurrent streams=8");
}

#[test]
fn ingesting_files_appends_ok_iterations_that_name_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(dir.path()).unwrap();
    let options = IngestOptions::new(ingest::DEFAULT_SESSION);
    let first = ingest::ingest(&store, &fixture("guidellm_benchmarks.json"), &options).unwrap();
    assert!(first.session_created);
    assert_eq!(first.iterations, [1, 2]);
    let second = ingest::ingest(&store, &fixture("vllm_bench_serve_detailed.json"), &options).unwrap();
    assert!(!second.session_created);
    assert_eq!(second.iterations, [3]);
    assert_eq!(second.format, Format::Vllm);

    let session = store.session_by_name("ingested").unwrap().unwrap();
    assert_eq!(session.target, "ingested");
    assert_eq!(session.objective.metric, "output_throughput");
    let history = store.history(session.id).unwrap();
    assert_eq!(history.iterations.len(), 3);
    for it in &history.iterations {
        assert_eq!(it.status, IterationStatus::Ok);
        let source = ingest::source_finding(it).expect("source finding");
        assert!(!source.evidence.is_empty(), "each metric cites its original field");
    }
    let guidellm = &history.iterations[0];
    assert!(ingest::source_finding(guidellm).unwrap().summary.contains("guidellm_benchmarks.json"));
    assert!(
        guidellm
            .analysis
            .findings
            .iter()
            .any(|f| f.rule == ingest::DEFINITION_RULE && f.summary.contains("includes TTFT"))
    );
    let vllm = &history.iterations[2];
    assert_eq!(vllm.spec.engine, EngineKind::Vllm);
    assert!(ingest::source_finding(vllm).unwrap().summary.contains("vllm assumed"));
    assert_eq!(store.bench_records(session.id, 3, ingest::PLAN_NAME).unwrap().len(), 6);
    // The sweep's champion under the session's objective is the faster-throughput benchmark.
    assert!(store.champion(session.id).unwrap().is_some());

    // Per-request records make a diff between ingested runs testable.
    let records = store.bench_records(session.id, 3, ingest::PLAN_NAME).unwrap();
    let comparisons = diff::compare_records("ingested", &records, &records);
    assert!(comparisons.iter().all(|c| !c.significant && c.n_a == 5), "{comparisons:?}");
}

#[test]
fn a_file_that_is_not_a_report_gets_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.json");
    std::fs::write(&path, "{\"hello\": \"world\"}").unwrap();
    let store = Store::open_in_memory().unwrap();
    let err = ingest::ingest(&store, &path, &IngestOptions::new("x")).unwrap_err().to_string();
    assert!(err.contains("notes.json") && err.contains("--format"), "{err}");
    let mut forced = IngestOptions::new("x");
    forced.format = Some(Format::Guidellm);
    let err = ingest::ingest(&store, &path, &forced).unwrap_err().to_string();
    assert!(err.contains("notes.json") && err.contains("benchmarks"), "{err}");
    assert!(store.session_by_name("x").unwrap().is_none(), "nothing written on error");
}
