//! The self-check end to end in a reduced mode: it starts the simulator in-process on loopback,
//! runs every phase and reports sane, non-zero figures. No speed is asserted (the machine is
//! shared); the figures' consistency is.

use std::time::Duration;

use autodebug_bench::self_check::{SERVED_MODEL, SelfCheckOptions, SelfCheckReport, SimulatorHost, run};

fn tiny() -> SelfCheckOptions {
    SelfCheckOptions {
        cpu_tokens: 2_000,
        cpu_streams: 2,
        cpu_tokens_per_request: 500,
        streams_to_hold: 64,
        hold_for: Duration::from_millis(50),
        ttft_requests_low: 16,
        ttft_concurrency_low: 4,
        ttft_requests_high: 48,
        ttft_concurrency_high: 16,
        request_timeout: Duration::from_secs(20),
        phase_limit: Duration::from_secs(40),
        ttft_paced: true,
        simulator: SimulatorHost::in_process(|listener, fast| async move {
            autodebug_sim::server::serve_reference(listener, fast, SERVED_MODEL.into()).await.map_err(|e| e.to_string())
        }),
        label: "test".into(),
    }
}

async fn run_bounded(options: SelfCheckOptions) -> SelfCheckReport {
    tokio::time::timeout(Duration::from_secs(120), run(options))
        .await
        .expect("the self-check ends within its phase limits")
        .expect("the self-check runs")
}

#[tokio::test]
async fn reduced_self_check_measures_every_phase() {
    let options = tiny();
    let report = run_bounded(options.clone()).await;
    assert!(report.errors.is_empty(), "no request may fail against the simulator: {:?}", report.errors);

    // CPU phase: streams of 64, 128, 256, 500 (capped), 64, ... tokens, the last one cut, adding up
    // to 2,000 tokens: 10 requests. Each content chunk is one SSE event, plus the role, finish and
    // usage chunks and [DONE] of every request.
    assert_eq!(report.content_chunks_measured, 2_000);
    assert!(report.chunks_measured >= report.content_chunks_measured + 10 * 3, "{report:?}");
    assert!(report.cpu_us_per_chunk > 0.0 && report.cpu_us_per_chunk.is_finite());
    // Whole-process CPU (the in-process server included) cannot outrun the cores for long.
    let cores = report.machine_cores as f64;
    assert!(report.cpu_phase_cpu_s > 0.0 && report.cpu_phase_cpu_s <= report.cpu_phase_wall_s * cores * 1.1 + 0.05);
    // The floor read the same streams: as many events, by counting `\n\n` boundaries alone.
    assert_eq!(report.floor_chunks_measured, report.chunks_measured, "{report:?}");
    assert!(report.floor_cpu_s > 0.0 && report.floor_cpu_s.is_finite());
    let floor = report.floor_cpu_s * 1e6 / report.floor_chunks_measured as f64;
    assert!((report.floor_cpu_us_per_chunk - floor).abs() <= floor * 1e-9, "{report:?}");
    assert!(report.floor_cpu_us_per_chunk > 0.0);
    let ratio = report.cpu_us_per_chunk / report.floor_cpu_us_per_chunk;
    assert!((report.cpu_ratio_to_floor - ratio).abs() <= ratio * 1e-9, "{report:?}");
    // Both rates come from the same counts.
    let per_cpu_second = report.chunks_measured as f64 / report.cpu_phase_cpu_s;
    assert!((report.chunks_per_sec - per_cpu_second).abs() <= per_cpu_second * 1e-9);
    assert!((report.cpu_us_per_chunk * report.chunks_per_sec - 1e6).abs() < 1.0);
    assert!(report.chunks_per_sec_wall > 0.0);

    // Hold phase: all 64 open at once and read to the end.
    assert_eq!(report.streams_requested, 64);
    assert_eq!(report.streams_held, 64, "{:?}", report.streams_note);
    assert!(report.fd_limit >= 2 * 64);

    // TTFT phases: one sample per measured request; the client's TTFT contains the server's.
    assert_eq!((report.ttft_samples_c8, report.ttft_samples_c1000), (16, 48));
    assert_eq!((report.ttft_concurrency_low, report.ttft_concurrency_high), (4, 16));
    for (mean, p99) in [
        (report.ttft_err_mean_ms_c8, report.ttft_err_p99_ms_c8),
        (report.ttft_err_mean_ms_c1000, report.ttft_err_p99_ms_c1000),
    ] {
        assert!(mean > 0.0 && mean.is_finite(), "{report:?}");
        assert!(p99 >= mean * 0.5 && p99.is_finite(), "{report:?}");
    }

    // Context and output.
    assert!(report.machine_cores >= 1);
    assert!(report.client_version.starts_with("autodebug-bench/"));
    assert!(report.mode.starts_with("test:"));
    assert_eq!(report.ttft_server_mode, "paced");
    let table = report.to_table();
    assert_eq!(table.matches("pass").count() + table.matches("FAIL").count(), 7, "{table}");
    assert!(table.contains("concurrent streams held"));
    assert!(table.contains(&format!("{:.2}x", report.cpu_ratio_to_floor)), "{table}");
    assert!(report.mode.contains("RUSAGE_SELF"), "{}", report.mode);
    let json = serde_json::to_value(&report).expect("serializes");
    for field in [
        "cpu_us_per_chunk",
        "floor_cpu_us_per_chunk",
        "cpu_ratio_to_floor",
        "chunks_per_sec",
        "streams_held",
        "ttft_err_mean_ms_c8",
        "ttft_err_p99_ms_c8",
        "ttft_err_p99_ms_c1000",
        "machine_cores",
        "client_version",
        "chunks_measured",
        "mode",
    ] {
        assert!(json.get(field).is_some(), "JSON field {field} missing: {json}");
    }
    let back: SelfCheckReport = serde_json::from_value(json).expect("round-trips");
    assert_eq!(back, report);
}

#[tokio::test]
async fn unusable_options_are_refused_naming_the_field() {
    let options = SelfCheckOptions { cpu_tokens_per_request: 100_000, ..tiny() };
    let error = run(options).await.expect_err("beyond the model's context");
    assert!(error.to_string().contains("cpu_tokens_per_request"), "{error}");
    let options = SelfCheckOptions { cpu_streams: 0, ..tiny() };
    assert!(run(options).await.is_err());
}
