//! Tests of the SQLite experiment store against real database files in temporary directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autodebug_core::store::{DEFAULT_FILE_NAME, SCHEMA_VERSION, Store};
use autodebug_core::{
    Analysis, Artifact, BenchSummary, Bottleneck, Change, Distribution, Endpoint, EngineKind, Error, ErrorClass,
    Finding, Iteration, IterationStatus, Objective, Plan, RequestRecord, Secret, ServiceSpec, Severity, Signal,
    SignalKind,
};

const CHILD_DB_VAR: &str = "AUTODEBUG_STORE_TEST_CHILD_DB";
const T0: i128 = 1_774_191_600_000_000_000; // 2026-03-22T15:00:00Z

fn objective() -> Objective {
    Objective::minimize("chat.e2e.mean").with_constraint("error_rate == 0".parse().expect("valid constraint"))
}

fn spec(decode_steps: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::new("qwen-sglang", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat")
        .with_flag("--schedule-policy", Some("lpm"))
        .with_flag("--num-continuous-decode-steps", Some(decode_steps))
        .with_flag("--enable-mixed-chunk", None)
        .with_gpu("H100:1");
    spec.image = Some("lmsysorg/sglang:v0.4.6".to_string());
    spec.env = vec![("SGLANG_LOG_LEVEL".to_string(), "info".to_string())];
    spec.base = serde_yaml::from_str("type: service\nport: 30000\nreplicas: 1\ncommands: [echo hi]\n").expect("yaml");
    spec
}

fn distribution(base: f64, count: u64) -> Distribution {
    Distribution {
        count,
        mean: base * 1.1,
        std: base * 0.2,
        min: base * 0.5,
        p50: base,
        p90: base * 1.5,
        p95: base * 1.7,
        p99: base * 2.0,
        p999: base * 2.5,
        max: base * 3.0,
    }
}

fn summary(e2e_ms: f64, failed: u64) -> BenchSummary {
    let mut summary = BenchSummary {
        requests: 100,
        succeeded: 100 - failed,
        failed,
        duration_s: 12.5,
        ttft_ms: distribution(164.0, 100),
        ttst_ms: distribution(2.0, 100),
        tpot_ms: distribution(1.51, 100),
        itl_ms: distribution(1.49, 12_700),
        inter_chunk_ms: distribution(1.5, 12_700),
        e2e_ms: distribution(e2e_ms, 100),
        queue_delay_ms: distribution(0.05, 100),
        request_throughput: 8.0,
        output_throughput: 664.0,
        total_token_throughput: 1500.0,
        prompt_tokens: 51_200,
        output_tokens: 12_800,
        cached_token_ratio: Some(0.25),
        output_ngram_predictability: Some(0.125),
        errors: BTreeMap::new(),
        capacity: None,
    };
    if failed > 0 {
        summary.errors.insert(ErrorClass::TimeoutFirstToken.as_str().to_string(), failed);
    }
    summary
}

fn profile_signal() -> Signal {
    Signal::number("graphsignal", SignalKind::Profile, "sglang.scheduler.Scheduler.run_batch", 435.0, "ms")
        .with_count(405.0)
        .with_canonical("scheduler_step_ms")
}

/// A finished iteration with every field filled, so a round trip exercises all columns.
fn full_iteration(number: u32, e2e_ms: f64, failed: u64) -> Iteration {
    let spec = spec("1");
    let chat = summary(e2e_ms, failed);
    let mut metrics = BTreeMap::new();
    for (name, value) in chat.metrics() {
        metrics.insert(format!("chat.{name}"), value);
        metrics.insert(name, value);
    }
    let attribute =
        Signal::text("graphsignal", SignalKind::SpanAttribute, "sglang.startup.enable_mixed_chunk", "False");
    let queue = Signal::number("prometheus", SignalKind::Metric, "sglang:num_queue_reqs", 3.0, "requests")
        .with_label("model_name", "Qwen/Qwen1.5-0.5B-Chat");
    let finding = Finding {
        rule: "sglang.scheduler_overhead".to_string(),
        bottleneck: Bottleneck::SchedulerOverhead,
        severity: Severity::Warning,
        summary: "run_batch takes 1.074 ms per call, 30% of each decode step".to_string(),
        evidence: vec![profile_signal(), queue.clone()],
    };
    let mut next = spec.clone();
    next.flags.set("--num-continuous-decode-steps", Some("8"));
    let plan = Plan {
        planner: "rules".to_string(),
        changes: vec![Change {
            knob: "--num-continuous-decode-steps".to_string(),
            from: Some("1".to_string()),
            to: Some("8".to_string()),
            rule: "sglang.scheduler_overhead".to_string(),
            reason: "amortize scheduler overhead over more decode steps".to_string(),
            evidence: vec![profile_signal()],
        }],
        next,
        exhausted: false,
        notes: vec!["skipped --enable-torch-compile: quality risk".to_string()],
    };
    Iteration {
        number,
        artifact: Some(Artifact {
            target: "dstack".to_string(),
            extension: "yml".to_string(),
            content: "type: service\nname: qwen-sglang\ncommands:\n  - python -m sglang.launch_server\n".to_string(),
        }),
        spec,
        status: IterationStatus::Ok,
        metrics,
        bench: [("chat".to_string(), chat)].into(),
        analysis: Analysis {
            metrics: [("scheduler_overhead_share".to_string(), 0.3)].into(),
            findings: vec![finding],
            cited: vec![profile_signal(), attribute, queue],
        },
        plan: Some(plan),
        error: None,
        started_ns: T0 + i128::from(number) * 60_000_000_000,
        finished_ns: T0 + i128::from(number) * 60_000_000_000 + 45_000_000_000,
        timings: [("deploy".to_string(), 20.5), ("bench".to_string(), 12.5), ("plan".to_string(), 0.01)].into(),
        round: None,
    }
}

fn records(count: usize) -> Vec<RequestRecord> {
    (0..count)
        .map(|index| {
            let failed = index % 7 == 3;
            RequestRecord {
                index,
                scheduled_ns: T0 + index as i128 * 125_000_000,
                queue_delay_ns: 50_000 + index as u64,
                ttft_ns: (!failed).then_some(160_000_000 + index as u64 * 1_000),
                ttst_ns: (!failed).then_some(161_500_000),
                e2e_ns: (!failed).then_some(390_000_000 + index as u64 * 3_000),
                prompt_tokens: Some(512),
                output_tokens: (!failed).then_some(128),
                cached_tokens: Some(128),
                chunks: if failed { 0 } else { 128 },
                chunk_gaps_ns: if failed { vec![] } else { vec![1_500_000, 1_490_000, 1_510_000] },
                chunk_tokens: if failed { vec![] } else { vec![1, 1, 1] },
                error: failed.then_some(ErrorClass::TimeoutFirstToken),
                error_message: failed.then(|| format!("no first token after 120 s (request {index})")),
                ngram_predicted: (!failed).then_some((3, 8)),
            }
        })
        .collect()
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("sessions").join(DEFAULT_FILE_NAME)
}

fn store_error(result: Result<Store, Error>) -> (PathBuf, String) {
    match result {
        Err(Error::Store { path, message }) => (path, message),
        Err(other) => panic!("expected Error::Store, got {other}"),
        Ok(store) => panic!("expected an error, opened {}", store.path().display()),
    }
}

#[test]
fn full_iteration_round_trips_through_a_database_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let iteration = full_iteration(1, 390.0, 0);
    let session_id = {
        let store = Store::open(&path).expect("open store");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        let session = store
            .create_session("demo", "dstack", "sglang", &objective(), &serde_json::json!({"trials": 3}), T0)
            .expect("create session");
        store
            .begin_iteration(session.id, 1, &iteration.spec, iteration.artifact.as_ref(), iteration.started_ns)
            .expect("begin");
        store.finish_iteration(session.id, &iteration).expect("finish");
        session.id
    };

    // A fresh connection proves the data reached the file, not just a cache.
    let store = Store::open(&path).expect("reopen store");
    let history = store.history(session_id).expect("history");
    assert_eq!(history.iterations, vec![iteration.clone()]);
    assert_eq!(store.iteration(session_id, 1).expect("iteration"), Some(iteration.clone()));
    assert_eq!(store.champion(session_id).expect("champion").map(|i| i.number), Some(1));

    // The plain columns people query agree with the JSON.
    let conn = rusqlite::Connection::open(&path).expect("raw connection");
    let (status, value, feasible, flags, gpu, started_at): (String, f64, bool, String, String, String) = conn
        .query_row(
            "SELECT status, objective_value, feasible, flags, gpu, started_at FROM iterations WHERE session_id = ?1 AND number = 1",
            [session_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .expect("iteration row");
    assert_eq!(status, "ok");
    assert_eq!(value, iteration.metrics["chat.e2e.mean"]);
    assert!(feasible);
    assert_eq!(flags, iteration.spec.flags.to_command_line());
    assert_eq!(gpu, "H100:1");
    assert_eq!(started_at, "2026-03-22T15:01:00Z");
    let metric_rows: i64 = conn
        .query_row("SELECT count(*) FROM iteration_metrics WHERE session_id = ?1", [session_id], |r| r.get(0))
        .expect("metric count");
    assert_eq!(metric_rows as usize, iteration.metrics.len());
    let (rule, severity, evidence): (String, String, String) = conn
        .query_row("SELECT rule, severity, evidence_json FROM findings WHERE session_id = ?1", [session_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("finding row");
    assert_eq!((rule.as_str(), severity.as_str()), ("sglang.scheduler_overhead", "warning"));
    assert!(evidence.contains("sglang.scheduler.Scheduler.run_batch"));
    let (knob, from, to): (String, String, String) = conn
        .query_row("SELECT knob, from_value, to_value FROM changes WHERE session_id = ?1", [session_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("change row");
    assert_eq!((knob.as_str(), from.as_str(), to.as_str()), ("--num-continuous-decode-steps", "1", "8"));
    let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("journal mode");
    assert_eq!(journal, "wal");
}

#[test]
fn failed_iteration_round_trips_and_is_not_feasible() {
    let store = Store::open_in_memory().expect("open");
    let session =
        store.create_session("failures", "local", "vllm", &objective(), &serde_json::Value::Null, T0).expect("session");
    let mut failed = full_iteration(1, 390.0, 0);
    failed.status = IterationStatus::DeployFailed;
    failed.metrics.clear();
    failed.bench.clear();
    failed.analysis = Analysis::default();
    failed.plan = None;
    failed.artifact = None;
    failed.error = Some("engine exited: CUDA out of memory (tried to allocate 2.0 GiB)".to_string());
    store.finish_iteration(session.id, &failed).expect("finish without begin");
    assert_eq!(store.history(session.id).expect("history").iterations, vec![failed]);
    assert_eq!(store.champion(session.id).expect("champion"), None);
}

#[test]
fn two_sessions_share_one_database_without_mixing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&db_path(&dir)).expect("open");
    let first = store
        .create_session("first", "local", "sglang", &objective(), &serde_json::json!({"n": 1}), T0)
        .expect("first");
    let maximize = Objective::maximize("output_throughput");
    let second = store
        .create_session("second", "slurm", "vllm", &maximize, &serde_json::json!({"n": 2}), T0 + 1_000)
        .expect("second");
    assert_ne!(first.id, second.id);

    for (session, n, e2e) in [(first.id, 1, 400.0), (first.id, 2, 350.0), (second.id, 1, 500.0)] {
        let it = full_iteration(n, e2e, 0);
        store.begin_iteration(session, n, &it.spec, None, it.started_ns).expect("begin");
        store.finish_iteration(session, &it).expect("finish");
    }
    let first_history = store.history(first.id).expect("first history");
    let second_history = store.history(second.id).expect("second history");
    assert_eq!(first_history.iterations.iter().map(|i| i.number).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(second_history.iterations.len(), 1);
    assert_eq!(second_history.iterations[0].metrics["e2e.mean"], full_iteration(1, 500.0, 0).metrics["e2e.mean"]);
    assert_eq!(store.champion(first.id).expect("champion").map(|i| i.number), Some(2));

    assert_eq!(
        store.sessions().expect("sessions").iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["first", "second"]
    );
    assert_eq!(store.latest_session().expect("latest").map(|s| s.id), Some(second.id));
    let by_name = store.session_by_name("second").expect("by name").expect("exists");
    assert_eq!(by_name, second);
    assert_eq!(by_name.objective, maximize);
    assert_eq!(by_name.config, serde_json::json!({"n": 2}));
    assert_eq!(store.session_by_name("third").expect("lookup"), None);

    store.finish_session(first.id, T0 + 9_000, "budget").expect("finish session");
    let finished = store.session(first.id).expect("session").expect("exists");
    assert_eq!((finished.finished_ns, finished.stop_reason.as_deref()), (Some(T0 + 9_000), Some("budget")));
    assert_eq!(store.session(second.id).expect("session").expect("exists").finished_ns, None);

    let err = store.create_session("first", "local", "sglang", &objective(), &serde_json::Value::Null, T0).unwrap_err();
    assert!(err.to_string().contains("`first` already exists"), "{err}");
    let err = store.finish_session(999, T0, "budget").unwrap_err();
    assert!(err.to_string().contains("no session with id 999"), "{err}");
}

#[test]
fn history_leaves_out_running_iterations() {
    let store = Store::open_in_memory().expect("open");
    let session =
        store.create_session("resume", "local", "sglang", &objective(), &serde_json::json!({}), T0).expect("session");
    let one = full_iteration(1, 390.0, 0);
    store.begin_iteration(session.id, 1, &one.spec, one.artifact.as_ref(), one.started_ns).expect("begin 1");
    store.finish_iteration(session.id, &one).expect("finish 1");
    let two = full_iteration(2, 380.0, 0);
    let two_spec = spec("8");
    store.begin_iteration(session.id, 2, &two_spec, two.artifact.as_ref(), two.started_ns).expect("begin 2");

    assert_eq!(store.history(session.id).expect("history").iterations, vec![one]);
    assert_eq!(store.unfinished(session.id).expect("unfinished"), vec![2]);
    let running = store.iteration(session.id, 2).expect("read").expect("row exists");
    assert_eq!(running.status, IterationStatus::Running);
    assert_eq!(running.spec, two_spec);
    assert_eq!(running.artifact, two.artifact);

    // A finished iteration is not restarted by accident.
    let err = store.begin_iteration(session.id, 1, &two_spec, None, T0).unwrap_err();
    assert!(err.to_string().contains("iteration 1 of session"), "{err}");
}

#[test]
fn restarting_a_running_iteration_replaces_it_and_its_bench_records() {
    let store = Store::open_in_memory().expect("open");
    let session =
        store.create_session("redo", "local", "sglang", &objective(), &serde_json::json!({}), T0).expect("session");
    store.begin_iteration(session.id, 1, &spec("1"), None, T0).expect("begin");
    store.save_bench_records(session.id, 1, "chat", &records(5)).expect("save");
    store.begin_iteration(session.id, 1, &spec("4"), None, T0 + 5).expect("begin again");
    assert_eq!(store.bench_records(session.id, 1, "chat").expect("records"), Vec::<RequestRecord>::new());
    let running = store.iteration(session.id, 1).expect("read").expect("exists");
    assert_eq!((running.spec, running.started_ns), (spec("4"), T0 + 5));
    assert_eq!(store.unfinished(session.id).expect("unfinished"), vec![1]);
}

#[test]
fn bench_records_round_trip_per_plan() {
    let store = Store::open_in_memory().expect("open");
    let session =
        store.create_session("cdf", "local", "sglang", &objective(), &serde_json::json!({}), T0).expect("session");
    let chat = records(40);
    let long = records(3);
    store.save_bench_records(session.id, 1, "chat", &chat).expect("save chat");
    store.save_bench_records(session.id, 1, "long_prompt", &long).expect("save long");
    assert_eq!(store.bench_records(session.id, 1, "chat").expect("chat"), chat);
    assert_eq!(store.bench_records(session.id, 1, "long_prompt").expect("long"), long);
    assert!(store.bench_records(session.id, 2, "chat").expect("other iteration").is_empty());
    assert_eq!(store.bench_plans(session.id, 1).expect("plans"), ["chat", "long_prompt"]);

    // Saving again under the same plan name replaces the row.
    let fewer = records(2);
    store.save_bench_records(session.id, 1, "chat", &fewer).expect("save again");
    assert_eq!(store.bench_records(session.id, 1, "chat").expect("chat"), fewer);

    // Records survive the iteration finishing.
    store.finish_iteration(session.id, &full_iteration(1, 390.0, 0)).expect("finish");
    assert_eq!(store.bench_records(session.id, 1, "long_prompt").expect("long"), long);

    let err = store.save_bench_records(4242, 1, "chat", &fewer).unwrap_err();
    assert!(err.to_string().contains("no session with id 4242"), "{err}");
}

#[test]
fn secrets_reach_the_database_only_as_stars() {
    let secret = "sk-live-3f9a8c7e1d2b4a6f";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let mut endpoint = Endpoint::new("http://127.0.0.1:30000", "Qwen/Qwen1.5-0.5B-Chat");
    endpoint.token = Some(Secret::new(secret));
    let config = serde_json::json!({ "endpoint": serde_json::to_value(&endpoint).expect("endpoint json") });
    let session_id = {
        let store = Store::open(&path).expect("open");
        let session = store.create_session("secret", "local", "sglang", &objective(), &config, T0).expect("session");
        let mut iteration = full_iteration(1, 390.0, 0);
        iteration.error = Some(format!("bench against {endpoint:?} had warnings"));
        iteration.analysis.cited.push(Signal::text("config", SignalKind::LogLine, "endpoint", format!("{endpoint:?}")));
        store.finish_iteration(session.id, &iteration).expect("finish");
        session.id
    };

    let conn = rusqlite::Connection::open(&path).expect("raw connection");
    let token: String = conn
        .query_row(
            "SELECT json_extract(config_json, '$.endpoint.token') FROM sessions WHERE id = ?1",
            [session_id],
            |r| r.get(0),
        )
        .expect("token column");
    assert_eq!(token, "***");
    let error: String = conn
        .query_row("SELECT error FROM iterations WHERE session_id = ?1", [session_id], |r| r.get(0))
        .expect("error column");
    assert!(error.contains("token: Some(***)"), "{error}");
    drop(conn);

    // Not in any page, WAL frame or journal the database left behind.
    for entry in std::fs::read_dir(path.parent().expect("parent")).expect("read dir") {
        let file = entry.expect("entry").path();
        let bytes = std::fs::read(&file).expect("read file");
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "secret found in {}", file.display());
    }
}

#[test]
fn non_finite_numbers_are_stored_in_a_form_json_can_hold() {
    let store = Store::open_in_memory().expect("open");
    let session =
        store.create_session("nan", "local", "sglang", &objective(), &serde_json::json!({}), T0).expect("session");
    let mut iteration = full_iteration(1, 390.0, 0);
    iteration.metrics.insert("chat.e2e.mean".to_string(), f64::NAN);
    iteration.metrics.insert("kv_usage".to_string(), f64::INFINITY);
    iteration.bench.get_mut("chat").expect("chat plan").ttft_ms.p999 = f64::NAN;
    iteration.analysis.cited.push(Signal::number(
        "prometheus",
        SignalKind::Metric,
        "sglang:gen_throughput",
        f64::NAN,
        "tok/s",
    ));
    store.finish_iteration(session.id, &iteration).expect("finish");

    let stored = store.history(session.id).expect("history").iterations.remove(0);
    assert!(!stored.metrics.contains_key("chat.e2e.mean"));
    assert!(!stored.metrics.contains_key("kv_usage"));
    assert_eq!(stored.metrics["ttft.mean"], iteration.metrics["ttft.mean"]);
    assert_eq!(stored.bench["chat"].ttft_ms.p999, 0.0);
    assert!(stored.analysis.cited.last().and_then(|s| s.as_f64()).is_some_and(f64::is_nan));
    // Without its objective metric, the iteration cannot be champion.
    assert_eq!(store.champion(session.id).expect("champion"), None);
}

#[test]
fn finishing_an_iteration_of_an_unknown_session_fails_with_a_clear_error() {
    let store = Store::open_in_memory().expect("open");
    let err = store.finish_iteration(77, &full_iteration(1, 390.0, 0)).unwrap_err();
    assert!(matches!(&err, Error::Store { path, .. } if path == Path::new(":memory:")), "{err:?}");
    assert!(err.to_string().contains("no session with id 77"), "{err}");
    let err = store.begin_iteration(77, 1, &spec("1"), None, T0).unwrap_err();
    assert!(err.to_string().contains("no session with id 77"), "{err}");
}

#[test]
fn opening_below_a_file_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "a file where the sessions directory should be").expect("write blocker");
    let path = blocker.join(DEFAULT_FILE_NAME);
    let (err_path, message) = store_error(Store::open(&path));
    assert_eq!(err_path, path);
    assert!(message.contains("writable"), "{message}");
    let shown = Store::open(&path).unwrap_err().to_string();
    assert!(shown.contains(&path.display().to_string()), "{shown}");
}

/// Set in the unprivileged re-run of `opening_a_read_only_directory_names_the_path_as_non_root`.
const UNPRIVILEGED_RERUN_VAR: &str = "AUTODEBUG_STORE_TEST_UNPRIVILEGED";
/// `nobody` on Debian and most distributions.
const NOBODY: u32 = 65_534;

#[test]
#[ignore = "needs a non-root user (as root it re-runs itself as uid 65534): cargo test --workspace -- --include-ignored"]
fn opening_a_read_only_directory_names_the_path_as_non_root() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    if std::fs::write(locked.join("probe"), "x").is_ok() {
        // This user ignores permissions (root): nothing to observe here, so the test runs again
        // in a child process as an unprivileged user, and fails if that is not possible.
        assert!(
            std::env::var_os(UNPRIVILEGED_RERUN_VAR).is_none(),
            "needs a non-root user: uid {NOBODY} can still write into a read-only directory"
        );
        let name = "opening_a_read_only_directory_names_the_path_as_non_root";
        let output = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--ignored", "--exact", name, "--test-threads=1"])
            .env(UNPRIVILEGED_RERUN_VAR, "1")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .expect("run the test binary as an unprivileged user");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "needs a non-root user: the re-run as uid {NOBODY} failed ({}); run the tests as a non-root user \
             (the test binary must be readable by it):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let path = locked.join(DEFAULT_FILE_NAME);
    let (err_path, message) = store_error(Store::open(&path));
    assert_eq!(err_path, path);
    assert!(message.contains("writable"), "{message}");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
}

#[test]
fn opening_a_file_that_is_not_a_database_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.db");
    std::fs::write(&path, "# these are markdown notes, not a SQLite database\n".repeat(200)).expect("write");
    let (err_path, message) = store_error(Store::open(&path));
    assert_eq!(err_path, path);
    assert!(message.contains("not a database") || message.contains("SQLite"), "{message}");
}

#[test]
fn a_database_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    drop(Store::open(&path).expect("create"));
    let conn = rusqlite::Connection::open(&path).expect("raw connection");
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).expect("bump version");
    drop(conn);
    let (err_path, message) = store_error(Store::open(&path));
    assert_eq!(err_path, path);
    assert!(message.contains("newer"), "{message}");
}

/// Runs inside the child process of `a_killed_process_leaves_a_running_row_that_resume_finds`:
/// records one finished iteration, starts a second, then waits to be killed.
#[test]
#[ignore = "helper run as a child process by a_killed_process_leaves_a_running_row_that_resume_finds"]
fn child_records_then_waits_to_be_killed() {
    let Some(path) = std::env::var_os(CHILD_DB_VAR).map(PathBuf::from) else {
        return;
    };
    let store = Store::open(&path).expect("child: open");
    let session = store
        .create_session("killed", "local", "sglang", &objective(), &serde_json::json!({}), T0)
        .expect("child: session");
    let one = full_iteration(1, 390.0, 0);
    store.begin_iteration(session.id, 1, &one.spec, one.artifact.as_ref(), one.started_ns).expect("child: begin 1");
    store.save_bench_records(session.id, 1, "chat", &records(10)).expect("child: records 1");
    store.finish_iteration(session.id, &one).expect("child: finish 1");
    store.begin_iteration(session.id, 2, &spec("8"), None, T0 + 120_000_000_000).expect("child: begin 2");
    store.save_bench_records(session.id, 2, "chat", &records(4)).expect("child: records 2");
    std::fs::write(path.with_extension("ready"), "ready").expect("child: ready marker");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_process_leaves_a_running_row_that_resume_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "child_records_then_waits_to_be_killed", "--test-threads=1"])
        .env(CHILD_DB_VAR, &path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let ready = path.with_extension("ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if let Some(status) = child.try_wait().expect("poll child") {
            let output = child.wait_with_output().expect("child output");
            panic!("child exited early ({status}): {}", String::from_utf8_lossy(&output.stderr));
        }
        assert!(Instant::now() < deadline, "child did not get ready within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap child");

    let store = Store::open(&path).expect("reopen after kill");
    let session = store.session_by_name("killed").expect("lookup").expect("session survived the kill");
    assert_eq!(session.finished_ns, None);
    let history = store.history(session.id).expect("history");
    assert_eq!(history.iterations, vec![full_iteration(1, 390.0, 0)]);
    assert_eq!(store.unfinished(session.id).expect("unfinished"), vec![2]);
    assert_eq!(store.bench_records(session.id, 1, "chat").expect("records 1"), records(10));
    assert_eq!(store.bench_records(session.id, 2, "chat").expect("records 2"), records(4));

    // Resume finishes the interrupted iteration; its Running row is replaced.
    let mut two = full_iteration(2, 350.0, 0);
    two.spec = spec("8");
    store.finish_iteration(session.id, &two).expect("finish 2");
    assert!(store.unfinished(session.id).expect("unfinished").is_empty());
    assert_eq!(store.history(session.id).expect("history").iterations.len(), 2);
    assert_eq!(store.champion(session.id).expect("champion").map(|i| i.number), Some(2));
}

#[test]
fn store_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
}

#[test]
fn two_connections_to_one_file_see_each_others_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let writer = Store::open(&path).expect("writer");
    let reader = Store::open(&path).expect("reader");
    let session =
        writer.create_session("shared", "local", "sglang", &objective(), &serde_json::json!({}), T0).expect("session");
    let one = full_iteration(1, 390.0, 0);
    writer.begin_iteration(session.id, 1, &one.spec, None, one.started_ns).expect("begin");
    assert_eq!(reader.unfinished(session.id).expect("unfinished"), vec![1]);
    writer.finish_iteration(session.id, &one).expect("finish");
    assert_eq!(reader.history(session.id).expect("history").iterations, vec![one]);
    assert_eq!(reader.latest_session().expect("latest").map(|s| s.name), Some("shared".to_string()));
}
