//! Load generation beside the service (`bench_beside:`), for real: the simulator as a local engine
//! over loopback, each benchmark plan run as `autodebug bench --plan-json PLAN --json` in a child
//! process next to it and its report read back. The reports the loop uses came from those
//! processes (their pids and the commands they got), their windows are the ones telemetry was
//! fetched for, the service's key reached them in their environment and never on their argument
//! list or in any output, and a run that fails is a failed benchmark the session goes on from.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autodebug_core::beside::BenchBeside;
use autodebug_core::session::{Session, SessionConfig, SessionOutcome};
use autodebug_core::store::Store;
use autodebug_core::testing::{NoLocalBenchmark, Unchanged, WindowRecorder};
use autodebug_core::{
    Analysis, Analyzer, BenchPlan, EngineKind, Evidence, Finding, Iteration, IterationStatus, Load, Objective, Result,
    ServiceSpec, TimeWindow, Workload, async_trait,
};
use autodebug_deploy::LocalDeployer;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");
const KEY_CANARY: &str = "canary-beside-key-61d0e3";

/// A stand-in for `autodebug` beside the service that appends its argument list, and whether the
/// token variable reached it, to `log`, then runs the real binary; with `fail_once`, its first
/// run fails instead, saying why on stderr.
fn wrapper(dir: &Path, log: &Path, fail_once: bool) -> PathBuf {
    let path = dir.join(if fail_once { "flaky-autodebug.sh" } else { "autodebug-beside.sh" });
    let first = if fail_once {
        format!(
            "if [ ! -e '{0}.failed' ]; then touch '{0}.failed'; echo 'boom: no route to the service' >&2; exit 3; fi\n",
            log.display()
        )
    } else {
        String::new()
    };
    let script = format!(
        "#!/bin/sh\n{first}printf 'argv: %s\\n' \"$*\" >> '{log}'\nif [ -n \"$AUTODEBUG_BENCH_TOKEN\" ]; then echo 'token in env' >> '{log}'; fi\nexec '{BIN}' \"$@\"\n",
        log = log.display()
    );
    std::fs::write(&path, script).unwrap();
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).unwrap();
    path
}

fn assert_no_canary(what: &str, bytes: &[u8]) {
    support::assert_no_canaries(what, bytes, &[KEY_CANARY]);
}

fn beside_finding(iteration: &Iteration) -> &Finding {
    iteration.analysis.findings.iter().find(|f| f.rule == "session.bench_beside").unwrap_or_else(|| {
        panic!("iteration {} has no bench_beside finding: {:?}", iteration.number, iteration.analysis.findings)
    })
}

#[test]
fn a_configured_session_benchmarks_beside_the_simulator_with_the_key_in_the_environment_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("beside.log");
    let program = wrapper(dir.path(), &log, false);
    let config = dir.path().join("autodebug.yaml");
    std::fs::write(
        &config,
        format!(
            r#"session: beside
sessions_dir: {sessions}
deployer:
  kind: simulator
service:
  name: beside-sim
  engine: sglang
  model: Qwen/Qwen1.5-0.5B-Chat
  gpu: H100:1
  flags:
    --api-key: {KEY_CANARY}
bench:
  - name: chat
    prompt_tokens: 16
    output_tokens: 16
    requests: 4
  - name: burst
    prompt_tokens: 32
    output_tokens: 8
    concurrency: 4
    requests: 8
objective:
  minimize: e2e.mean
telemetry: [prometheus, logs]
planner: rules
budget:
  iterations: 2
bench_beside:
  program: {program}
"#,
            sessions = dir.path().join("sessions").display(),
            program = program.display(),
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "-vv", "--json", "-c"])
        .arg(&config)
        .env_remove("AUTODEBUG_BENCH_TOKEN")
        .env_remove("OPENAI_API_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let session_pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_no_canary("the session's stdout", &output.stdout);
    assert_no_canary("the session's log (-vv)", &output.stderr);

    let store = Store::open(&dir.path().join("sessions").join("autodebug.db")).unwrap();
    let session = store.session_by_name("beside").unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    let first = &history.iterations[0];
    // The simulator answers only requests with its key: a measurement proves the key got there.
    assert_eq!(first.status, IterationStatus::Ok, "{:?}", first.error);
    let measured: Vec<&Iteration> = history.iterations.iter().filter(|i| i.is_ok()).collect();
    for iteration in &measured {
        let finding = beside_finding(iteration);
        assert_eq!(finding.evidence.len(), 2, "one run per plan: {}", finding.summary);
        for signal in &finding.evidence {
            let pid: u32 = signal.labels["pid"].parse().unwrap();
            assert_ne!(pid, session_pid, "the report came from the session's own process");
            assert_eq!(signal.labels["within_local_clock"], "true", "{}", finding.summary);
            let window = TimeWindow::new(
                signal.labels["window_start_ns"].parse().unwrap(),
                signal.labels["window_end_ns"].parse().unwrap(),
            );
            let plan = &signal.labels["plan"];
            let records = store.bench_records(session.id, iteration.number, plan).unwrap();
            assert!(!records.is_empty(), "iteration {} plan {plan}: no records stored", iteration.number);
            for record in records {
                assert!(window.contains(record.scheduled_ns), "a stored record is outside the beside run's window");
            }
        }
    }
    let log = std::fs::read_to_string(&log).unwrap();
    let runs: Vec<&str> = log.lines().filter(|l| l.starts_with("argv: bench --json --url http://127.0.0.1:")).collect();
    assert_eq!(runs.len(), 2 * measured.len(), "{log}");
    assert!(runs.iter().all(|r| r.contains("--plan-json") && r.contains("--token-env AUTODEBUG_BENCH_TOKEN")), "{log}");
    assert_eq!(log.lines().filter(|l| *l == "token in env").count(), runs.len(), "{log}");
    assert_no_canary("the argument lists of the runs beside the service", log.as_bytes());
    let files = support::files_under(&dir.path().join("sessions"));
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        assert_no_canary(&file.display().to_string(), &std::fs::read(&file).unwrap());
    }
}

/// What telemetry and the analysis were given, per iteration.
#[derive(Default)]
struct Seen {
    fetched: Vec<TimeWindow>,
    reports: Vec<Vec<(String, TimeWindow, usize)>>,
}

struct Reports(Arc<Mutex<Seen>>);

#[async_trait]
impl Analyzer for Reports {
    fn name(&self) -> &str {
        "reports"
    }

    async fn analyze(&self, evidence: &Evidence<'_>) -> Result<Analysis> {
        let reports = evidence.bench.iter().map(|r| (r.context.client.clone(), r.window, r.records.len())).collect();
        self.0.lock().unwrap().reports.push(reports);
        Ok(Analysis::default())
    }
}

async fn session_beside(dir: &Path, program: PathBuf, iterations: u32) -> (SessionOutcome, Seen) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let config = SessionConfig {
        name: "beside".into(),
        objective: Objective::minimize("e2e.mean"),
        bench: vec![
            BenchPlan::new("chat", Workload::new(16, 8), Load::Sequential, 3),
            BenchPlan::new("burst", Workload::new(32, 8), Load::Concurrent { concurrency: 3 }, 6),
        ],
        max_iterations: iterations,
        max_wall: None,
        ready_timeout: Duration::from_secs(60),
        sessions_dir: dir.join("sessions"),
        confirm_trials: 0,
    };
    let telemetry = WindowRecorder::default();
    let session = Session::builder()
        .deployer(LocalDeployer::simulator(BIN.into()))
        .benchmarker(NoLocalBenchmark)
        .telemetry(telemetry.clone())
        .analyzer(Reports(seen.clone()))
        .planner(Unchanged)
        .bench_beside(BenchBeside::new(program))
        .build(config)
        .unwrap();
    let spec = ServiceSpec::new("beside-sim", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat").with_gpu("H100:1");
    let outcome = session.run(spec).await.unwrap();
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    seen.fetched = telemetry.fetched();
    (outcome, seen)
}

#[tokio::test]
async fn telemetry_is_fetched_for_the_windows_the_runs_beside_the_service_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, seen) = session_beside(dir.path(), BIN.into(), 2).await;
    assert_eq!(outcome.history.iterations.len(), 2);
    assert_eq!(seen.fetched.len(), 2);
    for (i, iteration) in outcome.history.iterations.iter().enumerate() {
        assert!(iteration.is_ok(), "iteration {}: {:?}", iteration.number, iteration.error);
        let reports = &seen.reports[i];
        assert_eq!(reports.len(), 2);
        assert!(reports.iter().all(|(client, _, records)| client.starts_with("autodebug-bench/") && *records > 0));
        let union = TimeWindow::new(
            reports.iter().map(|(_, w, _)| w.start_ns).min().unwrap(),
            reports.iter().map(|(_, w, _)| w.end_ns).max().unwrap(),
        );
        assert_eq!(seen.fetched[i], union, "iteration {}: telemetry read another window", iteration.number);
        assert!(iteration.started_ns <= union.start_ns && union.end_ns <= iteration.finished_ns);
        let finding = beside_finding(iteration);
        for ((signal, (_, window, _)), plan) in finding.evidence.iter().zip(reports).zip(["chat", "burst"]) {
            assert_eq!(signal.labels["plan"], plan);
            assert_eq!(signal.labels["window_start_ns"], window.start_ns.to_string());
            assert_ne!(signal.labels["pid"], std::process::id().to_string(), "the report came from this process");
        }
        assert!(finding.summary.contains("child pid"), "{}", finding.summary);
    }
}

#[tokio::test]
async fn a_run_beside_the_service_that_fails_is_a_failed_benchmark_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flaky.log");
    let (outcome, _) = session_beside(dir.path(), wrapper(dir.path(), &log, true), 2).await;
    let (first, second) = (&outcome.history.iterations[0], &outcome.history.iterations[1]);
    assert_eq!(first.status, IterationStatus::BenchFailed);
    let error = first.error.clone().unwrap_or_default();
    assert!(error.contains("exit code 3") && error.contains("| boom: no route to the service"), "{error}");
    assert!(second.is_ok(), "the session did not go on: {:?}", second.error);
    let files = support::files_under(&dir.path().join("sessions"));
    let trail: String = files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(trail.contains("boom: no route to the service"), "the stderr tail is not in the trail");

    // A path that is nothing on the service's machine: every iteration's benchmark fails, saying so.
    let dir = tempfile::tempdir().unwrap();
    let (outcome, seen) = session_beside(dir.path(), "/nonexistent/bin/autodebug".into(), 2).await;
    assert_eq!(outcome.history.iterations.len(), 2, "the session stopped at the first failure");
    for iteration in &outcome.history.iterations {
        assert_eq!(iteration.status, IterationStatus::BenchFailed);
        let error = iteration.error.clone().unwrap_or_default();
        assert!(error.contains("/nonexistent/bin/autodebug") && error.contains("full path"), "{error}");
    }
    assert!(seen.fetched.is_empty(), "telemetry was read for a benchmark that never ran");
}

#[test]
fn bench_plan_json_refuses_a_plan_it_cannot_read_and_flags_that_would_reshape_it() {
    let plan = serde_json::to_string(&BenchPlan::new("chat", Workload::new(8, 8), Load::Sequential, 2)).unwrap();
    let bench = |extra: &[&str]| {
        Command::new(BIN).args(["bench", "--url", "http://127.0.0.1:9", "--json"]).args(extra).output().unwrap()
    };
    let unreadable = bench(&["--plan-json", r#"{"name": 1}"#]);
    let stderr = String::from_utf8_lossy(&unreadable.stderr);
    assert!(
        !unreadable.status.success() && stderr.contains("--plan-json") && stderr.contains("not a benchmark plan"),
        "{stderr}"
    );
    let reshaped = bench(&["--plan-json", &plan, "--concurrency", "4"]);
    assert_eq!(reshaped.status.code(), Some(2), "{}", String::from_utf8_lossy(&reshaped.stderr));
    assert!(String::from_utf8_lossy(&reshaped.stderr).contains("cannot be used with"));
}
