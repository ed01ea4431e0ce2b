//! Trace analysis against real PyTorch-profiler traces (see tests/fixtures/traces/SOURCES.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autodebug_core::{Deployment, Endpoint, EngineKind, ServiceSpec, Target, TelemetrySource, TimeWindow};
use autodebug_telemetry::trace::{
    KernelCategory, TraceAnalysis, TraceSource, analysis_signals, analyze_file, read_trace_file,
};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces")
}

fn fixture(name: &str) -> PathBuf {
    fixture_dir().join(name)
}

fn all_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    files.sort();
    assert!(files.len() >= 14, "fixtures missing: {files:?}");
    files
}

/// The figures recomputed a second way: a whole-document `serde_json::Value`, f64 microseconds,
/// kernels told from copies by the trace's own category alone (none of the fixtures named in
/// `totals_match_an_independent_value_pass` has a copy kernel under `kernel`).
struct Independent {
    gpu_events: u64,
    kernel_total_us: f64,
    memcpy: (u64, f64),
    memset: (u64, f64),
    busy_us: f64,
    span_us: f64,
    per_kernel_name: BTreeMap<String, (u64, f64)>,
}

fn independent(path: &Path) -> Independent {
    let doc: Value = serde_json::from_slice(&read_trace_file(path).unwrap()).unwrap();
    let events = doc.get("traceEvents").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut per_device: BTreeMap<i64, Vec<(f64, f64)>> = BTreeMap::new();
    let mut per_kernel_name: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let (mut memcpy, mut memset) = ((0u64, 0.0f64), (0u64, 0.0f64));
    let (mut count, mut kernel_total) = (0u64, 0.0f64);
    for e in &events {
        let cat = e["cat"].as_str().unwrap_or("");
        if e["ph"] != "X" || !["kernel", "gpu_memcpy", "gpu_memset", "Kernel", "Memcpy", "Memset"].contains(&cat) {
            continue;
        }
        let ts = e["ts"].as_f64().unwrap();
        let dur = e["dur"].as_f64().unwrap_or(0.0);
        let device = e["args"]["device"].as_i64().or_else(|| e["pid"].as_i64()).unwrap_or(0);
        per_device.entry(device).or_default().push((ts, ts + dur));
        let entry = match cat {
            "gpu_memcpy" | "Memcpy" => &mut memcpy,
            "gpu_memset" | "Memset" => &mut memset,
            _ => {
                kernel_total += dur;
                per_kernel_name.entry(e["name"].as_str().unwrap_or("").to_string()).or_default()
            }
        };
        entry.0 += 1;
        entry.1 += dur;
        count += 1;
    }
    let (mut busy, mut span) = (0.0, 0.0);
    for (_, mut spans) in per_device {
        spans.sort_by(|a, b| a.partial_cmp(b).unwrap());
        span += spans.iter().map(|s| s.1).fold(f64::MIN, f64::max) - spans[0].0;
        let mut current = spans[0];
        for s in spans.into_iter().skip(1) {
            if s.0 <= current.1 {
                current.1 = current.1.max(s.1);
            } else {
                busy += current.1 - current.0;
                current = s;
            }
        }
        busy += current.1 - current.0;
    }
    Independent {
        gpu_events: count,
        kernel_total_us: kernel_total,
        memcpy,
        memset,
        busy_us: busy,
        span_us: span,
        per_kernel_name,
    }
}

fn close(a: f64, b: f64, what: &str, file: &Path) {
    // ns rounding of each event accumulates at most 0.5 ns per event.
    let tolerance = 1e-6 * a.abs().max(b.abs()) + 0.01;
    assert!((a - b).abs() <= tolerance, "{}: {what}: streamed {a} vs independent {b}", file.display());
}

#[test]
fn every_fixture_parses_and_adds_up() {
    for path in all_fixtures() {
        let a = analyze_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(a.events > 0, "{}", path.display());
        close(a.gpu_busy_us + a.gpu_idle_us, a.span_us, "busy + idle = span", &path);
        close(a.idle_host_bound_us + a.idle_launch_gap_us, a.gpu_idle_us, "idle split", &path);
        let gpu_total_us = a.kernel_total_us + a.memcpy_us + a.memset_us;
        assert!(a.gpu_busy_us <= gpu_total_us + 0.01, "{}: busy above the GPU event sum", path.display());
        assert_eq!(a.kernel_count + a.memcpy_count + a.memset_count, a.gpu_events, "{}", path.display());
        assert!(a.kernels.iter().all(|k| k.category.is_kernel()), "{}: a copy in the kernel list", path.display());
        assert!(a.categories.iter().all(|c| c.category.is_kernel()), "{}: a copy class", path.display());
        if a.kernel_count > 0 {
            let shares: f64 = a.categories.iter().map(|c| c.share).sum();
            assert!((shares - 1.0).abs() < 1e-9, "{}: category shares sum to {shares}", path.display());
            let kernel_count: u64 = a.kernels.iter().map(|k| k.count).sum();
            assert_eq!(kernel_count, a.kernel_count);
            assert!(a.kernels.windows(2).all(|w| w[0].total_us >= w[1].total_us), "kernels sorted by time");
            for k in &a.kernels {
                assert!(k.p50_us <= k.max_us && k.mean_us <= k.max_us + 1e-9, "{}: {k:?}", path.display());
            }
        }
    }
}

#[test]
fn totals_match_an_independent_value_pass() {
    for name in [
        "nccl_parser_config__nccl_data.json.gz",
        "trace_file_list__inference_rank_1.json.gz",
        "amd_trace__mi250_minitoy_train_ROCm6_2_kineto.json.gz",
        "critical_path__alexnet__benchmark_result_2869224_1695835535_trace.json.gz",
        "timeline_analysis__sampled_rank-0.json.gz",
        "tracelens__h100__bert-small.json.gz",
        "triton_example__triton_example.json.gz",
    ] {
        let path = fixture(name);
        let a = analyze_file(&path).unwrap();
        let b = independent(&path);
        assert_eq!(a.gpu_events, b.gpu_events, "{name}");
        assert!(b.gpu_events > 0, "{name} should have GPU events");
        close(a.kernel_total_us, b.kernel_total_us, "kernel_total_us", &path);
        assert_eq!((a.memcpy_count, a.memset_count), (b.memcpy.0, b.memset.0), "{name}");
        close(a.memcpy_us, b.memcpy.1, "memcpy_us", &path);
        close(a.memset_us, b.memset.1, "memset_us", &path);
        close(a.gpu_busy_us, b.busy_us, "gpu_busy_us", &path);
        close(a.span_us, b.span_us, "span_us", &path);
        assert_eq!(a.kernels.len(), b.per_kernel_name.len(), "{name}");
        for k in &a.kernels {
            let (count, total) = b.per_kernel_name[&k.name];
            assert_eq!(k.count, count, "{name}: {}", k.name);
            close(k.total_us, total, &k.name, &path);
        }
    }
}

#[test]
fn formats_and_platforms_are_told_apart() {
    let legacy = analyze_file(&fixture("trace_file_list__inference_rank_1.json.gz")).unwrap();
    assert_eq!(legacy.format, "legacy");
    assert_eq!(legacy.distributed.as_ref().and_then(|d| d.rank), Some(1));
    let rocm = analyze_file(&fixture("tracelens__sglang_Qwen3-8B_prefilldecode.json.gz")).unwrap();
    assert_eq!((rocm.format.as_str(), rocm.platform.as_str()), ("kineto", "rocm"));
    let cpu = analyze_file(&fixture("cpu_only__rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz")).unwrap();
    assert_eq!(cpu.platform, "cpu");
    assert_eq!(cpu.gpu_events, 0);
    assert!(cpu.warnings.iter().any(|w| w.contains("no GPU events")));
    let cuda =
        analyze_file(&fixture("critical_path__alexnet__benchmark_result_2869224_1695835535_trace.json.gz")).unwrap();
    assert_eq!(cuda.platform, "cuda");
    assert!(cuda.categories.iter().any(|c| c.category == KernelCategory::Gemm));
}

#[test]
fn legacy_2021_trace_links_kernels_to_operators_and_steps() {
    let a = analyze_file(&fixture("kineto_tb__resnet50_worker0.pt.trace.json.gz")).unwrap();
    assert_eq!(a.format, "legacy");
    // Epoch microseconds in 2021.
    let start = a.wall_start_ns.unwrap();
    assert!(start > 1_600_000_000_000_000_000 && start < 1_700_000_000_000_000_000, "{start}");
    assert!(a.links.flow_events > 0);
    assert!(a.links.gpu_events_with_launch as f64 > 0.9 * a.gpu_events as f64, "{:?}", a.links);
    assert!(a.links.gpu_events_with_operator as f64 > 0.9 * a.gpu_events as f64, "{:?}", a.links);
    let conv = a.operators.iter().find(|o| o.name.contains("conv")).expect("a convolution operator");
    assert!(conv.kernels > 0 && conv.gpu_us > 0.0, "{conv:?}");
    let steps: Vec<_> = a.steps.iter().filter(|s| s.name.starts_with("ProfilerStep#")).collect();
    assert!(!steps.is_empty());
    let step_gpu: f64 = steps.iter().map(|s| s.gpu_us).sum();
    // A step's GPU time is everything it launched, copies included.
    assert!(step_gpu > 0.0 && step_gpu <= a.kernel_total_us + a.memcpy_us + a.memset_us + 0.01);
    assert!(a.memcpy_count > 0 && a.memset_count > 0, "the 2021 format's Memcpy/Memset are copies too");
    // Streams come from string tids such as "stream 7".
    assert!(a.streams.iter().any(|s| s.stream == 7), "{:?}", a.streams);
}

#[test]
fn nccl_trace_reports_communication_overlap() {
    let a = analyze_file(&fixture("nccl_parser_config__nccl_data.json.gz")).unwrap();
    let comm = a.categories.iter().find(|c| c.category == KernelCategory::Communication).expect("NCCL kernels");
    assert!(comm.count > 0 && comm.share > 0.0 && comm.share < 1.0);
    let device = &a.devices[0];
    assert!(device.comm_us > 0.0 && device.comm_overlap_us <= device.comm_us + 1e-9, "{device:?}");
    let comm_streams: Vec<_> = a.streams.iter().filter(|s| s.comm_us > 0.0).collect();
    assert!(!comm_streams.is_empty());
    let stream_overlap: f64 = comm_streams.iter().map(|s| s.comm_overlap_us).sum();
    assert!(
        stream_overlap >= device.comm_overlap_us - 0.01,
        "streams {stream_overlap} device {}",
        device.comm_overlap_us
    );
    assert!(a.wall_start_ns.is_some(), "baseTimeNanoseconds gives wall-clock time");
    assert_eq!(a.distributed.as_ref().and_then(|d| d.world_size), Some(2));
}

#[test]
fn sglang_steps_are_annotated() {
    let a = analyze_file(&fixture("tracelens__sglang_Qwen3-8B_prefilldecode.json.gz")).unwrap();
    let decode: Vec<_> = a.steps.iter().filter(|s| s.name.starts_with("step[")).collect();
    assert!(!decode.is_empty(), "{:?}", a.steps.iter().map(|s| &s.name).collect::<Vec<_>>());
    assert!(decode.iter().any(|s| s.kernels > 0 && s.gpu_us > 0.0));
    assert!(a.steps.iter().any(|s| s.name.starts_with("execute_")));
    assert!(a.categories.iter().any(|c| c.category == KernelCategory::Attention));
}

#[test]
fn memcpy_and_memset_are_not_kernel_time() {
    let a = analyze_file(&fixture_dir().join("../kernels_memcpy_memset.trace.json")).unwrap();
    // Kernels: gemm 60 + norm 20. With the copies (100 + 5) and the memset (10) it would be 195.
    assert_eq!((a.kernel_total_us, a.kernel_count), (80.0, 2));
    assert_eq!((a.memcpy_us, a.memcpy_count), (105.0, 2), "the copyBuffer kernel is a copy");
    assert_eq!((a.memset_us, a.memset_count), (10.0, 1));
    assert_eq!(a.gpu_events, 5);
    let names: Vec<&str> = a.kernels.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn", "rms_norm_kernel"]);
    assert_eq!(a.kernels[0].share, 0.75);
    let classes: Vec<(KernelCategory, f64)> = a.categories.iter().map(|c| (c.category, c.share)).collect();
    assert_eq!(classes, [(KernelCategory::Gemm, 0.75), (KernelCategory::Norm, 0.25)]);
    // Busy is the union of all GPU activity: [0, 100] (memcpy under the gemm), [110, 140], [150, 155].
    assert_eq!((a.span_us, a.gpu_busy_us, a.gpu_idle_us), (155.0, 135.0, 20.0));
    assert_eq!(a.streams.iter().map(|s| s.count).sum::<u64>(), 5, "streams count every GPU event");

    let signals = analysis_signals(std::slice::from_ref(&a), 10);
    let value = |name: &str| signals.iter().find(|s| s.name == name).and_then(|s| s.as_f64());
    assert_eq!(value("gpu.compute.gemm"), Some(0.75));
    assert_eq!(value("gpu.compute.memcpy"), None);
    assert_eq!(value("gpu.compute.memset"), None);
    assert_eq!(value("gpu.memcpy_share"), Some(105.0 / 155.0));
    assert_eq!(value("gpu.memset_share"), Some(10.0 / 155.0));
    assert_eq!(value("gpu.busy_share"), Some(135.0 / 155.0));
    let kernels: Vec<_> = signals.iter().filter(|s| s.name == "gpu.kernel").collect();
    assert_eq!(kernels.len(), 2, "copies are not listed as kernels");
    assert!(kernels[0].citation().contains("75% of GPU kernel time"), "{}", kernels[0].citation());
}

#[test]
fn copies_alone_still_give_busy_and_copy_signals() {
    let a = autodebug_telemetry::trace::analyze_bytes(
        br#"[{"ph":"X","cat":"gpu_memcpy","name":"Memcpy DtoH","pid":0,"tid":7,"ts":0,"dur":40},
             {"ph":"X","cat":"gpu_memset","name":"Memset (Device)","pid":0,"tid":7,"ts":50,"dur":10}]"#,
    )
    .unwrap();
    assert_eq!((a.kernel_total_us, a.kernel_count, a.gpu_events), (0.0, 0, 2));
    assert!(a.kernels.is_empty() && a.categories.is_empty());
    let signals = analysis_signals(&[a], 10);
    let names: Vec<&str> = signals.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"gpu.busy_share") && names.contains(&"gpu.memcpy_share"), "{names:?}");
    assert!(signals.iter().all(|s| s.as_f64().is_some_and(f64::is_finite)), "{signals:?}");
}

#[test]
fn a_broken_file_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, r#"{"traceEvents": [{"ph": "X", "ts": 1}, "#).unwrap();
    let err = analyze_file(&path).unwrap_err().to_string();
    assert!(err.contains("broken.json") && err.contains("traceEvents"), "{err}");
}

fn window_of(a: &TraceAnalysis) -> TimeWindow {
    TimeWindow::new(a.wall_start_ns.unwrap() as i128, a.wall_end_ns.unwrap() as i128)
}

#[tokio::test]
async fn trace_source_reads_the_files_of_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let name = "nccl_parser_config__nccl_data.json.gz";
    std::fs::copy(fixture(name), dir.path().join(name)).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a trace").unwrap();
    let analysis = analyze_file(&fixture(name)).unwrap();
    let trace_window = window_of(&analysis);

    let spec = ServiceSpec::new("svc", EngineKind::Sglang, "m");
    let deployment =
        Deployment { id: "d".into(), backend: "local".into(), spec, started_ns: 0, details: Default::default() };
    let endpoint = Endpoint::new("http://127.0.0.1:1", "m");
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let source = TraceSource::new(dir.path()).top_kernels(3);

    let inside = TimeWindow::new(trace_window.start_ns + 1_000, trace_window.end_ns - 1_000);
    let snapshot = source.fetch(&target, inside).await.unwrap();
    let comm = snapshot.get("gpu.compute.communication").expect("communication share");
    let expected = analysis.categories.iter().find(|c| c.category == KernelCategory::Communication).unwrap().share;
    assert!((comm.as_f64().unwrap() - expected).abs() < 1e-9);
    assert_eq!(snapshot.signals.iter().filter(|s| s.name == "gpu.kernel").count(), 3);
    assert!(snapshot.get("gpu.busy_share").is_some());
    assert!(comm.citation().starts_with("Kernel `gpu.compute.communication`: "), "{}", comm.citation());

    let before = TimeWindow::new(trace_window.start_ns - 10_000_000_000, trace_window.start_ns - 5_000_000_000);
    let snapshot = source.fetch(&target, before).await.unwrap();
    assert!(snapshot.signals.is_empty());
    assert!(snapshot.warnings.iter().any(|w| w.contains("overlaps")), "{:?}", snapshot.warnings);

    let missing = TraceSource::new(dir.path().join("absent"));
    let err = missing.fetch(&target, inside).await.unwrap_err().to_string();
    assert!(err.contains("absent"), "{err}");
}
