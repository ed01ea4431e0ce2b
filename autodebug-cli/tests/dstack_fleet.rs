//! The dstack deployer and the whole loop against a REAL dstack fleet on this machine: a dstack
//! server, an SSH fleet on 127.0.0.1 and llama.cpp's `llama-server` with SmolLM2 inside a dstack
//! service (`examples/dstack-llamacpp.dstack.yml`), reached through the server's proxy with its
//! token. Ignored in a plain `cargo test`: the fleet is set up by `scripts/dstack-fleet.sh up`
//! (root; it says what it changes on the machine and `down` undoes it), which `.ci/setup.sh` runs.
//! With `--include-ignored` a missing fleet is a failure naming that command, never a skip.
//!
//! The fleet has one instance that takes one run at a time, so the tests here take turns.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use autodebug_core::store::Store;
use autodebug_core::testing::{DeployerConformance, deployer_conformance_with};
use autodebug_core::{Deployer, Deployment, Error, IterationStatus, ServiceSpec, SignalKind, TimeWindow};
use autodebug_deploy::dstack::{Connection, DstackDeployer};

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");
const NEEDS: &str = "needs a dstack fleet: bash scripts/llama-server.sh && bash scripts/dstack-fleet.sh up (root), then cargo test --workspace -- --include-ignored";
/// Every run name the tests use: each test starts by stopping all of them, so a test that failed
/// half-way cannot keep the fleet's one instance busy for the next.
const RUN_NAMES: [&str; 5] = ["adbg-conformance", "adbg-never-healthy", "adbg-loop", "adbg-bad-flag", "adbg-killed"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The fleet's `KEY=value` lines from `scripts/dstack-fleet.sh status`.
fn fleet() -> &'static Vec<(String, String)> {
    static LINES: OnceLock<Vec<(String, String)>> = OnceLock::new();
    LINES.get_or_init(|| {
        let out = Command::new("bash")
            .arg(workspace_root().join("scripts/dstack-fleet.sh"))
            .arg("status")
            .output()
            .expect("bash runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{NEEDS}\n(no fleet is up: {})", String::from_utf8_lossy(&out.stderr));
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    })
}

fn fleet_value(key: &str) -> String {
    fleet()
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("the fleet did not print {key}"))
}

fn deployer() -> DstackDeployer {
    let connection = Connection::new(
        fleet_value("DSTACK_SERVER_URL"),
        fleet_value("DSTACK_PROJECT"),
        autodebug_core::Secret::new(fleet_value("DSTACK_TOKEN")),
    )
    .unwrap();
    DstackDeployer::builder().connection(connection).poll_interval(Duration::from_millis(500)).build().unwrap()
}

/// The example service file, named `name`, mounting the fleet's own volume folder.
fn service_yaml(name: &str) -> String {
    let example = std::fs::read_to_string(workspace_root().join("examples/dstack-llamacpp.dstack.yml")).unwrap();
    example
        .replace("name: autodebug-smollm2", &format!("name: {name}"))
        .replace("/root/.cache/autodebug/dstack-fleet/volume", &fleet_value("AUTODEBUG_DSTACK_VOLUME"))
}

fn spec(name: &str) -> ServiceSpec {
    DstackDeployer::base_spec_from_yaml(&service_yaml(name), "dstack-llamacpp.dstack.yml").unwrap()
}

/// One test at a time on the fleet; stops whatever an earlier test left running.
async fn take_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = TURN.lock().await;
    let deployer = deployer();
    for name in RUN_NAMES {
        deployer.teardown(&deployment(name)).await.unwrap_or_else(|e| panic!("stopping {name}: {e}"));
    }
    guard
}

fn deployment(name: &str) -> Deployment {
    Deployment {
        id: name.into(),
        backend: "dstack".into(),
        spec: spec(name),
        started_ns: TimeWindow::now_ns(),
        details: Default::default(),
    }
}

/// The run's status as the server reports it (`None`: no such run).
async fn run_status(name: &str) -> Option<String> {
    let answer = reqwest::Client::new()
        .post(format!("{}/api/project/{}/runs/get", fleet_value("DSTACK_SERVER_URL"), fleet_value("DSTACK_PROJECT")))
        .bearer_auth(fleet_value("DSTACK_TOKEN"))
        .json(&serde_json::json!({ "run_name": name }))
        .send()
        .await
        .unwrap();
    if !answer.status().is_success() {
        return None;
    }
    let run: serde_json::Value = answer.json().await.unwrap();
    run["status"].as_str().map(str::to_string)
}

fn is_finished(status: Option<&str>) -> bool {
    matches!(status, None | Some("terminated" | "failed" | "done"))
}

/// Containers of the run (dstack names them `<run>-<replica>-<job>-<id>`), running or not.
fn containers_of(name: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!("name=^{name}-"))
        .output()
        .expect("docker runs");
    assert!(out.status.success(), "docker ps failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Nothing of the run is left: dstack reports it finished and docker has no container of it.
/// dstack removes the container shortly after the run finishes: bounded wait.
async fn assert_nothing_left(name: &str) {
    let status = run_status(name).await;
    assert!(is_finished(status.as_deref()), "run {name} left as {status:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = containers_of(name);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "containers of {name} left after its run finished: {left:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a dstack fleet: bash scripts/dstack-fleet.sh up (root), then cargo test --workspace -- --include-ignored"]
async fn the_deployer_conformance_suite_passes_on_a_real_fleet() {
    let _turn = take_turn().await;
    let good = spec("adbg-conformance");
    let bad = good.clone().with_flag("--bogus-flag", None);
    let limits =
        DeployerConformance { ready_timeout: Duration::from_secs(240), call_timeout: Duration::from_secs(150) };
    deployer_conformance_with(&deployer(), &good, &bad, limits).await;
    assert_nothing_left("adbg-conformance").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a dstack fleet: bash scripts/dstack-fleet.sh up (root), then cargo test --workspace -- --include-ignored"]
async fn a_service_that_never_gets_healthy_is_reported_at_its_timeout_and_stopped() {
    let _turn = take_turn().await;
    let deployer = deployer();
    // llama-server answers 404 on this path, so dstack's probe never passes.
    let yaml = service_yaml("adbg-never-healthy").replace("url: /health", "url: /no-such-health-path");
    let spec = DstackDeployer::base_spec_from_yaml(&yaml, "never-healthy.dstack.yml").unwrap();
    let deployment = deployer.deploy(&spec).await.unwrap();
    let started = Instant::now();
    let err = deployer.wait_ready(&deployment, Duration::from_secs(45)).await.unwrap_err();
    assert!(matches!(err, Error::NotReady { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(75), "wait_ready overran its timeout: {:?}", started.elapsed());
    assert!(err.to_string().contains("adbg-never-healthy"), "{err}");
    // What the session does next: read the logs and stop it.
    let logs = deployer.logs(&deployment, None).await.unwrap();
    assert!(
        logs.iter().any(|l| l.text.contains("listening")),
        "the engine's startup lines are not in the logs: {logs:?}"
    );
    deployer.teardown(&deployment).await.unwrap();
    assert_nothing_left("adbg-never-healthy").await;
}

/// Writes a session configuration over the example, with its own run name and sessions folder.
fn config(dir: &Path, run_name: &str, extra_flags: &str) -> PathBuf {
    let base = dir.join("service.dstack.yml");
    std::fs::write(&base, service_yaml(run_name)).unwrap();
    let example = std::fs::read_to_string(workspace_root().join("examples/dstack-llamacpp.yaml")).unwrap();
    let text = example
        .replace("base_file: dstack-llamacpp.dstack.yml", &format!("base_file: {}", base.display()))
        .replace("name: autodebug-smollm2", &format!("name: {run_name}"))
        .replace("sessions/dstack-llamacpp", &dir.join("sessions").to_string_lossy())
        .replace("requests: 12", "requests: 8")
        .replace("flags: {}", extra_flags);
    let path = dir.join("autodebug.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn autodebug(config: &Path, iterations: u32, session: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--session", session, "--iterations", &iterations.to_string(), "-c"]).arg(config);
    for key in ["DSTACK_SERVER_URL", "DSTACK_TOKEN", "DSTACK_PROJECT"] {
        cmd.env(key, fleet_value(key));
    }
    cmd
}

fn history(dir: &Path) -> autodebug_core::History {
    let store = Store::open(&dir.join("sessions").join("autodebug.db")).unwrap();
    let session = store.latest_session().unwrap().unwrap();
    store.history(session.id).unwrap()
}

fn trail_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("sessions"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect();
    files.sort();
    files
}

/// dstack's own parser (`scripts/validate-dstack.py`) on the rendered files.
fn assert_dstack_parses(files: &[PathBuf]) {
    let python = support::engine_cache().join("dstack-venv/bin/python");
    let out = Command::new(&python)
        .arg(workspace_root().join("scripts/validate-dstack.py"))
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        out.status.success(),
        "dstack rejects the rendered files:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

mod support;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a dstack fleet: bash scripts/dstack-fleet.sh up (root), then cargo test --workspace -- --include-ignored"]
async fn the_original_loop_deploys_benchmarks_reads_and_redeploys_through_dstack() {
    let _turn = take_turn().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "adbg-loop", "flags: {}");
    let out = autodebug(&path, 2, "loop").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed:\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(
        stderr.contains("ready at http://127.0.0.1:") && stderr.contains("/proxy/services/main/adbg-loop"),
        "not benchmarked through dstack's proxy:\n{stderr}"
    );

    let history = history(dir.path());
    assert_eq!(history.iterations.len(), 2);
    let first = &history.iterations[0];
    // The engine's metrics came through the proxy with the token, its log lines through dstack's
    // API, in EVERY iteration: each window's own per-request lines (`print_timing`), which a log
    // read before dstack pulled the window's output from the runner lacks (a pass of dstack's server
    // over the job may commit after the read began with output it pulled before, or reach no runner
    // and pull nothing; the deployer waits for a later pass that reached the runner).
    for it in &history.iterations {
        support::assert_real_llamacpp_evidence(it);
        let findings: Vec<&str> = it.analysis.findings.iter().map(|f| f.summary.as_str()).collect();
        let from_window = it.analysis.cited.iter().any(|s| {
            s.kind == SignalKind::LogLine
                && s.source == "logs"
                && (s.name.starts_with("llamacpp.log.eval.") || s.name.starts_with("llamacpp.log.prompt_eval."))
        });
        assert!(from_window, "iteration {} cited no engine log line from its window: {findings:?}", it.number);
    }
    // Each iteration wrote a complete dstack file that dstack's parser accepts, and the second one
    // deployed what the first planned.
    let rendered = trail_files(dir.path(), "dstack-");
    assert_eq!(rendered.len(), 2, "{rendered:?}");
    assert_dstack_parses(&rendered);
    let plan = first.plan.as_ref().expect("the first iteration planned");
    assert_eq!(history.iterations[1].spec.flags, plan.next.flags);
    let second_file = std::fs::read_to_string(&rendered[1]).unwrap();
    assert!(!plan.changes.is_empty(), "{:?}", plan.notes);
    for arg in history.iterations[1].spec.flags.to_args() {
        assert!(second_file.contains(&arg), "`{arg}` is not in the second deploy's file:\n{second_file}");
    }
    assert!(!second_file.contains(&fleet_value("DSTACK_TOKEN")), "the token leaked into {}", rendered[1].display());
    assert_nothing_left("adbg-loop").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a dstack fleet: bash scripts/dstack-fleet.sh up (root), then cargo test --workspace -- --include-ignored"]
async fn a_flag_the_engine_rejects_fails_the_run_and_the_trail_quotes_the_engines_own_error() {
    let _turn = take_turn().await;
    let dir = tempfile::tempdir().unwrap();
    // A setting llama-server refuses at startup: its arguments also come from `LLAMA_ARG_*`
    // variables, which the service passes through as the user wrote them.
    let path = config(dir.path(), "adbg-bad-flag", "flags: {}\n  env: {LLAMA_ARG_CTX_SIZE: not-a-number}");
    let out = autodebug(&path, 1, "bad-flag").output().unwrap();
    assert!(out.status.success(), "the loop must survive a failed deploy:\n{}", String::from_utf8_lossy(&out.stderr));
    let history = history(dir.path());
    let first = &history.iterations[0];
    assert_eq!(first.status, IterationStatus::DeployFailed);
    let error = first.error.as_deref().unwrap_or_default();
    // llama-server's own line: `error while handling environment variable "LLAMA_ARG_CTX_SIZE": stoi`.
    assert!(
        error.contains("adbg-bad-flag")
            && error.contains("error while handling environment variable \"LLAMA_ARG_CTX_SIZE\""),
        "the engine's own line is missing: {error}"
    );
    let trail = std::fs::read_to_string(&trail_files(dir.path(), "debug-")[0]).unwrap();
    assert!(
        trail.contains("error while handling environment variable"),
        "the trail lacks the engine's error line:\n{trail}"
    );
    assert_nothing_left("adbg-bad-flag").await;
}

/// Starts `autodebug run` and returns once it printed that the service is ready.
fn start_until_ready(path: &Path, session: &str) -> Child {
    // Progress lines go to stderr when it is not a terminal.
    let mut child = autodebug(path, 3, session).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            let ready = line.contains("ready at");
            let _ = tx.send((ready, line));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((true, _)) => return child,
            Ok((false, line)) => seen.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("autodebug did not report the service ready ({e}); it printed:\n{}", seen.join("\n"));
            }
        }
    }
}

fn wait_exit(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("autodebug did not exit within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a dstack fleet: bash scripts/dstack-fleet.sh up (root), then cargo test --workspace -- --include-ignored"]
async fn ctrl_c_stops_the_run_and_after_a_sigkill_the_next_start_stops_the_orphan() {
    let _turn = take_turn().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "adbg-killed", "flags: {}");

    // Ctrl-C: the session finishes its step, tears the run down and exits.
    let mut child = start_until_ready(&path, "ctrl-c");
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    wait_exit(&mut child, Duration::from_secs(180));
    assert_nothing_left("adbg-killed").await;

    // SIGKILL: nothing can tear down, so the run is left behind...
    let mut child = start_until_ready(&path, "killed");
    child.kill().unwrap();
    child.wait().unwrap();
    let status = run_status("adbg-killed").await;
    assert!(!is_finished(status.as_deref()), "the killed session's run should still be up, is {status:?}");
    // ...until the next start finds it by its owner mark, stops it and deploys its own.
    let out = autodebug(&path, 1, "after-kill").output().unwrap();
    assert!(out.status.success(), "the next start failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let history = history(dir.path());
    let last = history.iterations.last().unwrap();
    assert_eq!(last.status, IterationStatus::Ok, "{:?}", last.error);
    assert_nothing_left("adbg-killed").await;
}
