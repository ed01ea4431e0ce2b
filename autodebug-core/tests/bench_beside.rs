//! The session with its benchmarks run beside the service ([`SessionBuilder::bench_beside`]),
//! driven by an in-process stand-in deployer that answers `run_beside` the way `autodebug bench
//! --plan-json PLAN --json` does: its reports are used as local ones and their windows are the
//! ones telemetry is fetched for, a window off the local clock is kept with a warning, a failed
//! run is a failed benchmark the session goes on from, and the endpoint's token travels in the
//! command's environment only. The real processes (a child beside the simulator, a Slurm step)
//! are exercised by `autodebug-deploy` and `autodebug-cli`.
//!
//! [`SessionBuilder::bench_beside`]: autodebug_core::session::SessionBuilder::bench_beside

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autodebug_core::beside::{BenchBeside, BenchRunner, BesideBenchOutput, BesideCommand, BesideOutput, TOKEN_ENV};
use autodebug_core::session::{Session, SessionConfig};
use autodebug_core::store::Store;
use autodebug_core::testing::{NoLocalBenchmark, Unchanged, WindowRecorder};
use autodebug_core::*;

const CANARY: &str = "canary-beside-session-4b7f";

/// How the stand-in answers one `run_beside` call.
#[derive(Clone)]
enum Beside {
    /// A report whose window is shifted by this many ns from the stand-in's own clock.
    Report { shift_ns: i128 },
    /// The command ran and failed.
    Exit { code: i32, stderr: &'static str },
}

/// A command's arguments and environment, as the stand-in got them.
type SeenCommand = (Vec<String>, Vec<(String, String)>);

/// What the stand-in saw and gave, and the windows telemetry was fetched for.
#[derive(Default)]
struct Seen {
    commands: Vec<SeenCommand>,
    windows: Vec<TimeWindow>,
    fetched: Vec<TimeWindow>,
}

/// Deploys nothing; `run_beside` answers from its script (`None`: the trait's default, refusing).
struct StandIn {
    script: Option<Mutex<VecDeque<Beside>>>,
    seen: Arc<Mutex<Seen>>,
}

#[async_trait]
impl Deployer for StandIn {
    fn name(&self) -> &str {
        "standin"
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        Ok(Artifact { target: "standin".into(), extension: "sh".into(), content: spec.flags.to_command_line() })
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        Ok(Deployment {
            id: "7".into(),
            backend: "standin".into(),
            spec: spec.clone(),
            started_ns: TimeWindow::now_ns(),
            details: Default::default(),
        })
    }

    async fn wait_ready(&self, _deployment: &Deployment, _timeout: Duration) -> Result<Endpoint> {
        Ok(Endpoint::new("http://gpu-7.cluster:30000", "m"))
    }

    async fn logs(&self, _deployment: &Deployment, _since: Option<i128>) -> Result<Vec<LogLine>> {
        Ok(Vec::new())
    }

    async fn teardown(&self, _deployment: &Deployment) -> Result<()> {
        Ok(())
    }

    async fn run_beside(&self, deployment: &Deployment, command: &BesideCommand) -> Result<BesideOutput> {
        let Some(script) = &self.script else {
            return Err(Error::config("deployer standin", "this deployer cannot run a benchmark beside its service"));
        };
        let step = script.lock().unwrap().pop_front().expect("the script covers every call");
        let args = command.args_for("http://127.0.0.1:30000");
        let env = command.env.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect();
        self.seen.lock().unwrap().commands.push((args.clone(), env));
        let ran_as = format!("stand-in step beside deployment {}", deployment.id);
        match step {
            Beside::Exit { code, stderr } => Ok(BesideOutput {
                stderr_tail: vec![stderr.to_string()],
                exit_code: Some(code),
                ran_as,
                ..Default::default()
            }),
            Beside::Report { shift_ns } => {
                let plan_at = args.iter().position(|a| a == "--plan-json").expect("the plan is passed");
                let plan: BenchPlan = serde_json::from_str(&args[plan_at + 1]).unwrap();
                let start = TimeWindow::now_ns();
                tokio::time::sleep(Duration::from_millis(2)).await;
                let window = TimeWindow::new(start + shift_ns, TimeWindow::now_ns() + shift_ns);
                self.seen.lock().unwrap().windows.push(window);
                let e2e = 100.0;
                let summary = BenchSummary {
                    requests: 1,
                    succeeded: 1,
                    e2e_ms: Distribution {
                        count: 1,
                        mean: e2e,
                        p50: e2e,
                        p99: e2e,
                        max: e2e,
                        min: e2e,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let record = RequestRecord {
                    index: 0,
                    scheduled_ns: window.start_ns,
                    e2e_ns: Some(1_000_000),
                    ttft_ns: Some(500_000),
                    output_tokens: Some(4),
                    ..Default::default()
                };
                let report = BenchReport {
                    plan,
                    context: BenchContext { client: "stand-in beside".into(), ..Default::default() },
                    summary,
                    records: vec![record],
                    window,
                    warnings: Vec::new(),
                };
                let runner = BenchRunner { pid: 4242, host: "gpu-7".into(), slurm_step: Some("7.1".into()) };
                let mut json = serde_json::json!({"schema_version": 1, "points": []});
                let beside = serde_json::to_value(BesideBenchOutput { reports: vec![report], runner }).unwrap();
                json.as_object_mut().unwrap().extend(beside.as_object().unwrap().clone());
                Ok(BesideOutput { stdout: json.to_string(), exit_code: Some(0), ran_as, ..Default::default() })
            }
        }
    }
}

fn run_session(dir: &std::path::Path, script: Option<Vec<Beside>>, iterations: u32) -> (session::SessionOutcome, Seen) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let deployer = StandIn { script: script.map(|s| Mutex::new(s.into())), seen: seen.clone() };
    let config = SessionConfig {
        name: "beside".into(),
        objective: Objective::minimize("e2e.mean"),
        bench: vec![
            BenchPlan::new("chat", Workload::new(31, 64), Load::Sequential, 4),
            BenchPlan::new("burst", Workload::new(64, 16), Load::Concurrent { concurrency: 4 }, 8),
        ],
        max_iterations: iterations,
        max_wall: None,
        ready_timeout: Duration::from_secs(5),
        sessions_dir: dir.to_path_buf(),
        confirm_trials: 0,
    };
    let telemetry = WindowRecorder::default();
    let session = Session::builder()
        .deployer(deployer)
        .benchmarker(NoLocalBenchmark)
        .telemetry(telemetry.clone())
        .planner(Unchanged)
        .bench_beside(BenchBeside::new("/shared/bin/autodebug"))
        .build(config)
        .unwrap();
    let baseline = ServiceSpec::new("svc", EngineKind::Sglang, "m").with_flag("--api-key", Some(CANARY));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let outcome = runtime.block_on(session.run(baseline)).unwrap();
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    seen.fetched = telemetry.fetched();
    (outcome, seen)
}

fn beside_finding(iteration: &Iteration) -> &Finding {
    iteration.analysis.findings.iter().find(|f| f.rule == "session.bench_beside").unwrap_or_else(|| {
        panic!("iteration {} has no bench_beside finding: {:?}", iteration.number, iteration.analysis.findings)
    })
}

/// Every file under `dir`, as bytes, must be free of the canary.
fn assert_no_canary_under(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_canary_under(&path);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(CANARY), "{} holds the token", path.display());
    }
}

#[test]
fn reports_from_beside_the_service_are_used_as_local_ones_and_telemetry_reads_their_window() {
    let dir = tempfile::tempdir().unwrap();
    let script = vec![Beside::Report { shift_ns: 0 }; 4];
    let (outcome, seen) = run_session(dir.path(), Some(script), 2);
    assert_eq!(outcome.history.iterations.len(), 2);
    for (i, iteration) in outcome.history.iterations.iter().enumerate() {
        assert!(iteration.is_ok(), "iteration {}: {:?}", iteration.number, iteration.error);
        assert_eq!(iteration.metrics.get("e2e.mean"), Some(&100.0));
        let windows = &seen.windows[2 * i..2 * i + 2];
        let union =
            TimeWindow::new(windows[0].start_ns.min(windows[1].start_ns), windows[0].end_ns.max(windows[1].end_ns));
        assert_eq!(seen.fetched[i], union, "telemetry of iteration {} read another window", iteration.number);
        let finding = beside_finding(iteration);
        assert_eq!(finding.severity, Severity::Info, "{}", finding.summary);
        assert_eq!(finding.evidence.len(), 2);
        for (signal, window) in finding.evidence.iter().zip(windows) {
            assert_eq!(signal.labels["window_start_ns"], window.start_ns.to_string());
            assert_eq!(signal.labels["slurm_step"], "7.1");
            assert_eq!(signal.labels["within_local_clock"], "true");
        }
        assert!(finding.summary.contains("stand-in step beside deployment 7"), "{}", finding.summary);
    }
    let store = Store::open(&dir.path().join("autodebug.db")).unwrap();
    assert_eq!(store.bench_records(outcome.session.id, 1, "burst").unwrap().len(), 1, "the beside report's records");

    // The token went in the environment of each run, never on its argument list, and nowhere else.
    assert_eq!(seen.commands.len(), 4);
    for (args, env) in &seen.commands {
        assert!(!args.iter().any(|a| a.contains(CANARY)), "{args:?}");
        assert_eq!(env, &vec![(TOKEN_ENV.to_string(), CANARY.to_string())]);
        assert!(args.windows(2).any(|w| w[0] == "--url" && w[1] == "http://127.0.0.1:30000"), "{args:?}");
    }
    assert_no_canary_under(dir.path());
    let trail = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.path());
    let logs: Vec<String> = trail
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(logs.iter().all(|l| l.contains("beside the service")), "the trail says where the load came from");
}

#[test]
fn a_window_off_the_local_clock_is_kept_and_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let skew = 30_000_000_000;
    let script = vec![Beside::Report { shift_ns: skew }, Beside::Report { shift_ns: 0 }];
    let (outcome, seen) = run_session(dir.path(), Some(script), 1);
    let iteration = &outcome.history.iterations[0];
    assert!(iteration.is_ok(), "{:?}", iteration.error);
    let union = TimeWindow::new(seen.windows[1].start_ns, seen.windows[0].end_ns);
    assert_eq!(seen.fetched, vec![union], "telemetry is fetched for the reported windows, skew and all");
    let finding = beside_finding(iteration);
    assert_eq!(finding.severity, Severity::Warning);
    assert!(finding.summary.contains("clock skew") && finding.summary.contains("`chat`"), "{}", finding.summary);
    assert_eq!(finding.evidence[0].labels["within_local_clock"], "false");
    assert_eq!(finding.evidence[1].labels["within_local_clock"], "true");
}

#[test]
fn a_failed_run_beside_the_service_is_a_failed_benchmark_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // The run echoes the token on its stderr: the trail and the store must still not hold it.
    let stderr = "error: http://127.0.0.1:30000 refused the key canary-beside-session-4b7f";
    let script = vec![Beside::Exit { code: 2, stderr }, Beside::Report { shift_ns: 0 }, Beside::Report { shift_ns: 0 }];
    let (outcome, _) = run_session(dir.path(), Some(script), 2);
    let (first, second) = (&outcome.history.iterations[0], &outcome.history.iterations[1]);
    assert_eq!(first.status, IterationStatus::BenchFailed);
    let error = first.error.clone().unwrap();
    assert!(error.contains("benchmark `chat`") && error.contains("exit code 2"), "{error}");
    assert!(error.contains("| error: http://127.0.0.1:30000 refused the key ***"), "{error}");
    assert!(second.is_ok(), "the session did not go on: {:?}", second.error);
    let md: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(md.iter().any(|m| m.contains("refused the key ***")), "the stderr tail is in the trail");
    assert_no_canary_under(dir.path());
}

#[test]
fn a_deployer_that_cannot_run_beside_its_service_fails_the_benchmark_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, seen) = run_session(dir.path(), None, 1);
    let iteration = &outcome.history.iterations[0];
    assert_eq!(iteration.status, IterationStatus::BenchFailed);
    let error = iteration.error.clone().unwrap();
    assert!(error.contains("cannot run a benchmark beside its service"), "{error}");
    assert!(seen.fetched.is_empty());
}
