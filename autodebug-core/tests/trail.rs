//! Tests of the session trail: the debug log's sections and the files written next to it.

use std::collections::BTreeMap;

use autodebug_core::trail::{Trail, config_changes, render_debug_log, render_debug_log_for_session};
use autodebug_core::{
    Analysis, Artifact, BenchSummary, Bottleneck, Change, Distribution, EngineKind, Error, Finding, Iteration,
    IterationStatus, Objective, Plan, ServiceSpec, Severity, Signal, SignalKind,
};

const T0: i128 = 1_774_191_600_000_000_000; // 2026-03-22T15:00:00Z
const CONTEXT: &str = "chat: 512 prompt / 128 completion tokens, concurrency 8, 3 trials, warm cache; http://127.0.0.1:30000 Qwen/Qwen1.5-0.5B-Chat";

fn objective() -> Objective {
    Objective::minimize("chat.e2e.mean").with_constraint("error_rate == 0".parse().expect("valid constraint"))
}

fn spec(policy: &str) -> ServiceSpec {
    ServiceSpec::new("qwen-sglang", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat")
        .with_flag("--schedule-policy", Some(policy))
        .with_flag("--num-continuous-decode-steps", Some("1"))
        .with_gpu("H100:1")
}

fn profile() -> Signal {
    Signal::number("graphsignal", SignalKind::Profile, "sglang.scheduler.Scheduler.run_batch", 435.0, "ms")
        .with_count(405.0)
}

fn attribute() -> Signal {
    Signal::text("graphsignal", SignalKind::SpanAttribute, "sglang.startup.enable_mixed_chunk", "False")
}

fn distribution(p50: f64, mean: f64, p99: f64) -> Distribution {
    Distribution {
        count: 100,
        mean,
        p50,
        p99,
        min: p50 / 2.0,
        max: p99 * 1.5,
        p90: p99 * 0.8,
        p95: p99 * 0.9,
        ..Default::default()
    }
}

fn chat_summary() -> BenchSummary {
    BenchSummary {
        requests: 100,
        succeeded: 100,
        failed: 0,
        duration_s: 12.0,
        ttft_ms: distribution(160.2, 164.0, 190.3),
        tpot_ms: distribution(1.5, 1.51, 1.9),
        itl_ms: distribution(1.49, 1.5, 2.1),
        e2e_ms: distribution(385.0, 390.0, 450.0),
        output_throughput: 664.2,
        ..Default::default()
    }
}

/// Iteration 2 of a session: scheduler overhead found, more decode steps planned.
fn iteration() -> Iteration {
    let metrics: BTreeMap<String, f64> = [
        ("ttft.mean", 164.0),
        ("tpot.mean", 1.51),
        ("e2e.mean", 390.0),
        ("output_throughput", 664.2),
        ("errors", 0.0),
        ("error_rate", 0.0),
        ("chat.e2e.mean", 390.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let queue = Signal::number("prometheus", SignalKind::Metric, "sglang:num_queue_reqs", 3.0, "requests");
    let spec = spec("lpm");
    let mut next = spec.clone();
    next.flags.set("--num-continuous-decode-steps", Some("8"));
    Iteration {
        number: 2,
        artifact: Some(Artifact {
            target: "dstack".to_string(),
            extension: "yml".to_string(),
            content: "type: service\nname: qwen-sglang\ncommands:\n  - python -m sglang.launch_server --schedule-policy lpm\n"
                .to_string(),
        }),
        spec,
        status: IterationStatus::Ok,
        metrics,
        bench: [("chat".to_string(), chat_summary())].into(),
        analysis: Analysis {
            metrics: BTreeMap::new(),
            findings: vec![Finding {
                rule: "sglang.scheduler_overhead".to_string(),
                bottleneck: Bottleneck::SchedulerOverhead,
                severity: Severity::Warning,
                summary: "run_batch costs 1.074 ms per call".to_string(),
                evidence: vec![profile(), queue.clone()],
            }],
            cited: vec![profile(), attribute(), queue],
        },
        plan: Some(Plan {
            planner: "rules".to_string(),
            changes: vec![Change {
                knob: "--num-continuous-decode-steps".to_string(),
                from: Some("1".to_string()),
                to: Some("8".to_string()),
                rule: "sglang.scheduler_overhead".to_string(),
                reason: "run more decode steps per scheduler pass".to_string(),
                evidence: vec![profile()],
            }],
            next,
            exhausted: false,
            notes: Vec::new(),
        }),
        error: None,
        started_ns: T0,
        finished_ns: T0 + 45_000_000_000,
        timings: [("bench".to_string(), 12.0), ("deploy".to_string(), 30.0)].into(),
        round: None,
    }
}

fn previous() -> Iteration {
    let mut previous = iteration();
    previous.number = 1;
    previous.spec = spec("fcfs");
    previous.started_ns = T0 - 60_000_000_000;
    previous
}

fn section<'a>(log: &'a str, heading: &str) -> &'a str {
    let start = log.find(heading).unwrap_or_else(|| panic!("no {heading} in:\n{log}"));
    let rest = &log[start..];
    let end = rest[heading.len()..].find("\n**").map(|i| i + heading.len()).unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn debug_log_has_every_section_in_order() {
    let it = iteration();
    let log = render_debug_log_for_session(Some("demo"), &it, Some(&previous()), &objective(), CONTEXT);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "# debug-2026-03-22T15:00:00Z");
    assert_eq!(
        lines[2],
        "Iteration 2 of session `demo` · status ok · objective: minimize chat.e2e.mean subject to error_rate == 0"
    );
    assert_eq!(lines[3], CONTEXT);

    let headings =
        ["**Metrics**", "**Analysis**", "**Findings**", "**Planned changes**", "**Config changes from previous**"];
    let positions: Vec<usize> =
        headings.iter().map(|h| log.find(h).unwrap_or_else(|| panic!("missing {h} in:\n{log}"))).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "sections out of order: {positions:?}\n{log}");

    let metrics = section(&log, "**Metrics**");
    assert!(
        metrics.starts_with(
            "**Metrics**: TTFT=164.0ms, TBOT=1.51ms, TTLT=390.0ms, Throughput=664 tok/s, Errors=0; chat.e2e.mean=390\n"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("| chat | 160.2 / 190.3 | 1.51 | 2.10 | 390.0 | 664 | 0/100 |"), "{metrics}");

    let analysis = section(&log, "**Analysis**");
    assert!(
        analysis.contains("\n- Profile `sglang.scheduler.Scheduler.run_batch`: 405 calls / 435 ms (1.074 ms/call)\n")
    );
    assert!(analysis.contains("\n- Span attribute `sglang.startup.enable_mixed_chunk`: False\n"));
    assert!(analysis.contains("\n- Prometheus metric `sglang:num_queue_reqs`: 3 requests\n"));
    assert_eq!(analysis.matches("\n- ").count(), it.analysis.cited.len());

    assert!(section(&log, "**Findings**").contains(
        "- [scheduler overhead · warning] run_batch costs 1.074 ms per call (rule `sglang.scheduler_overhead`; \
         evidence: `sglang.scheduler.Scheduler.run_batch`, `sglang:num_queue_reqs`)"
    ));
    assert!(section(&log, "**Planned changes**").contains(
        "- `--num-continuous-decode-steps`: 1 → 8 — run more decode steps per scheduler pass \
         (rule `sglang.scheduler_overhead`; cites `sglang.scheduler.Scheduler.run_batch`)"
    ));
    let diff = section(&log, "**Config changes from previous**");
    assert!(diff.contains("\n- `--schedule-policy`: fcfs → lpm\n"), "{diff}");
    assert_eq!(diff.matches("\n- ").count(), 1, "{diff}");
    assert!(log.contains("**Timings**: total 45.0s (bench 12.0s, deploy 30.0s)"), "{log}");
}

#[test]
fn first_iteration_is_the_baseline_and_the_session_name_is_optional() {
    let log = render_debug_log(&iteration(), None, &objective(), "");
    assert!(log.contains("\nIteration 2 · status ok · objective: minimize chat.e2e.mean"), "{log}");
    assert!(section(&log, "**Config changes from previous**").contains("- none (baseline)"));
}

#[test]
fn an_infeasible_iteration_says_which_constraint_it_breaks() {
    let mut it = iteration();
    it.metrics.insert("error_rate".to_string(), 0.02);
    it.metrics.insert("errors".to_string(), 2.0);
    let log = render_debug_log(&it, None, &objective(), "");
    assert!(log.contains("Errors=2; chat.e2e.mean=390 (infeasible: breaks error_rate == 0)"), "{log}");
}

#[test]
fn failed_deploy_says_so_and_names_the_rollback() {
    let mut failed = iteration();
    failed.number = 4;
    failed.status = IterationStatus::DeployFailed;
    failed.metrics.clear();
    failed.bench.clear();
    failed.analysis = Analysis::default();
    failed.plan = None;
    failed.spec = spec("lpm").with_flag("--mem-fraction-static", Some("0.95"));
    failed.error = Some("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB".to_string());
    let mut last_good = iteration();
    last_good.number = 3;
    let log = render_debug_log(&failed, Some(&last_good), &objective(), CONTEXT);
    assert!(log.contains("status deploy_failed"), "{log}");
    assert!(
        log.contains("**Deploy failed**: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    );
    assert!(log.contains("Rolled back to iteration 3."), "{log}");
    assert!(log.contains("**Metrics**: none (deploy failed)"), "{log}");
    assert!(log.contains("**Planned changes**: none: no plan was made for this iteration"), "{log}");
    assert!(section(&log, "**Config changes from previous**").contains("- `--mem-fraction-static`: (unset) → 0.95"));

    let mut bench_failed = failed.clone();
    bench_failed.status = IterationStatus::BenchFailed;
    bench_failed.error = Some("every request failed: connect refused".to_string());
    let log = render_debug_log(&bench_failed, None, &objective(), "");
    assert!(log.contains("**Benchmark failed**: every request failed: connect refused"), "{log}");
    assert!(log.contains("Nothing to roll back to"), "{log}");
}

#[test]
fn a_plan_without_changes_gives_its_notes() {
    let mut it = iteration();
    let plan = it.plan.as_mut().expect("plan");
    plan.changes.clear();
    plan.exhausted = true;
    plan.notes =
        vec!["every candidate was tried".to_string(), "--enable-torch-compile skipped: quality risk".to_string()];
    let log = render_debug_log(&it, None, &objective(), "");
    assert!(
        log.contains(
            "**Planned changes**: none: every candidate was tried; --enable-torch-compile skipped: quality risk\n"
        ),
        "{log}"
    );
}

#[test]
fn config_diff_covers_switches_resources_and_hides_credential_values() {
    let mut before = spec("fcfs").with_flag("--enable-mixed-chunk", None);
    before.env = vec![("HF_TOKEN".to_string(), "hf_abcdefsecret".to_string()), ("LOG".to_string(), "info".to_string())];
    let mut after = spec("fcfs").with_flag("--disable-radix-cache", None).with_gpu("H100:2");
    after.image = Some("lmsysorg/sglang:v0.4.6".to_string());
    after.env = vec![("HF_TOKEN".to_string(), "hf_othersecret".to_string()), ("LOG".to_string(), "debug".to_string())];
    let lines = config_changes(&after, &before);
    assert_eq!(
        lines,
        [
            "`image`: (unset) → lmsysorg/sglang:v0.4.6",
            "`--enable-mixed-chunk`: on → (unset)",
            "`--disable-radix-cache`: (unset) → on",
            "`resources.gpu`: H100:1 → H100:2",
            "`env.HF_TOKEN`: *** → *** (changed)",
            "`env.LOG`: info → debug",
        ]
    );
    assert!(config_changes(&before, &before).is_empty());
    let mut without_token = before.clone();
    without_token.env.retain(|(k, _)| k != "HF_TOKEN");
    assert_eq!(config_changes(&before, &without_token), ["`env.HF_TOKEN`: (unset) → ***"]);
    assert!(lines.iter().chain(config_changes(&before, &without_token).iter()).all(|l| !l.contains("secret")));
}

#[test]
fn write_iteration_names_files_by_start_time_and_copies_the_artifact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trail = Trail::new(dir.path().join("sessions")).expect("trail").with_session("demo");
    assert!(trail.dir().is_dir());
    let it = iteration();
    let files = trail.write_iteration(&it, Some(&previous()), &objective(), CONTEXT).expect("write");
    assert_eq!(files.debug_log, trail.dir().join("debug-2026-03-22T15:00:00Z.md"));
    let config = files.config.expect("config file");
    assert_eq!(config, trail.dir().join("dstack-2026-03-22T15:00:00Z.yml"));
    let artifact = it.artifact.as_ref().expect("artifact");
    assert_eq!(std::fs::read_to_string(&config).expect("read config"), artifact.content);
    let log = std::fs::read_to_string(&files.debug_log).expect("read log");
    assert_eq!(log, render_debug_log_for_session(Some("demo"), &it, Some(&previous()), &objective(), CONTEXT));

    let mut bare = it.clone();
    bare.artifact = None;
    bare.started_ns = T0 + 1_000_000_000;
    let files = trail.write_iteration(&bare, None, &objective(), "").expect("write without artifact");
    assert_eq!(files.debug_log, trail.dir().join("debug-2026-03-22T15:00:01Z.md"));
    assert_eq!(files.config, None);
}

#[test]
fn name_clashes_get_matching_suffixes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trail = Trail::new(dir.path()).expect("trail");
    let it = iteration();
    let first = trail.write_iteration(&it, None, &objective(), "").expect("first");
    let second = trail.write_iteration(&it, None, &objective(), "").expect("second");
    let third = trail.write_iteration(&it, None, &objective(), "").expect("third");
    assert_eq!(first.debug_log, dir.path().join("debug-2026-03-22T15:00:00Z.md"));
    assert_eq!(second.debug_log, dir.path().join("debug-2026-03-22T15:00:00Z-2.md"));
    assert_eq!(second.config, Some(dir.path().join("dstack-2026-03-22T15:00:00Z-2.yml")));
    assert_eq!(third.debug_log, dir.path().join("debug-2026-03-22T15:00:00Z-3.md"));
    let log = std::fs::read_to_string(&second.debug_log).expect("read");
    assert!(log.starts_with("# debug-2026-03-22T15:00:00Z-2\n"), "{log}");
    // The first files were left as they were.
    assert!(std::fs::read_to_string(&first.debug_log).expect("read").starts_with("# debug-2026-03-22T15:00:00Z\n"));

    // A config file already there (say, copied in by hand) moves the whole pair on.
    let later = T0 + 7_000_000_000;
    std::fs::write(dir.path().join("dstack-2026-03-22T15:00:07Z.yml"), "hand-written").expect("write");
    let mut moved = it.clone();
    moved.started_ns = later;
    let files = trail.write_iteration(&moved, None, &objective(), "").expect("write");
    assert_eq!(files.debug_log, dir.path().join("debug-2026-03-22T15:00:07Z-2.md"));
    assert_eq!(files.config, Some(dir.path().join("dstack-2026-03-22T15:00:07Z-2.yml")));
    assert!(!dir.path().join("debug-2026-03-22T15:00:07Z.md").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dstack-2026-03-22T15:00:07Z.yml")).expect("read"),
        "hand-written"
    );
}

#[test]
fn a_trail_below_a_file_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("plain-file");
    std::fs::write(&blocker, "x").expect("write");
    let target = blocker.join("sessions");
    match Trail::new(&target) {
        Err(Error::Io { path, .. }) => assert_eq!(path, target),
        other => panic!("expected Error::Io, got {other:?}"),
    }
}
