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
const RUN_NAMES: [&str; 8] = [
    "adbg-conformance",
    "adbg-beside",
    "adbg-never-healthy",
    "adbg-loop",
    "adbg-bad-flag",
    "adbg-killed",
    "adbg-par-s1",
    "adbg-par-s2",
];

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
    // How the deployer waited for dstack to pull each window's output, for a failure to show.
    cmd.env("RUST_LOG", "info,autodebug_deploy::dstack=debug");
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
    // Shown only when an assertion below fails.
    eprintln!("autodebug's stderr:\n{stderr}");
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
    // over the job may commit after the read began with output it pulled before, reach no runner
    // and pull nothing, or be the run pipeline's, which stamps the job and pulls nothing; the
    // deployer waits for a later pass of the job pipeline that reached the runner).
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

/// The fleet's folder (`AUTODEBUG_DSTACK_FLEET_DIR` of `scripts/dstack-fleet.sh`): the parent of
/// the volume folder it prints.
fn fleet_dir() -> PathBuf {
    Path::new(&fleet_value("AUTODEBUG_DSTACK_VOLUME")).parent().expect("the volume folder has a parent").to_path_buf()
}

/// `(status, total_blocks)` of each instance of the script's fleet.
async fn fleet_instances() -> Vec<(String, u64)> {
    let answer = reqwest::Client::new()
        .post(format!("{}/api/project/{}/fleets/get", fleet_value("DSTACK_SERVER_URL"), fleet_value("DSTACK_PROJECT")))
        .bearer_auth(fleet_value("DSTACK_TOKEN"))
        .json(&serde_json::json!({ "name": fleet_value("DSTACK_FLEET") }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "fleets/get answered {}", answer.status());
    let fleet: serde_json::Value = answer.json().await.unwrap();
    fleet["instances"]
        .as_array()
        .map(|instances| {
            instances
                .iter()
                .map(|i| (i["status"].as_str().unwrap_or("?").to_string(), i["total_blocks"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Applies the fleet `scripts/dstack-fleet.sh up` applied, with its one host split into `blocks`
/// job places (`None`: as the script wrote it), through the dstack CLI the script uses, and waits
/// (bounded) until the instance is idle with that many blocks. dstack cannot change `blocks` in
/// place: it re-creates the fleet (~15 s here).
async fn apply_fleet(blocks: Option<u64>) {
    // A fleet in use cannot be re-created: let a run of a failed test finish first (bounded).
    let deadline = Instant::now() + Duration::from_secs(180);
    while !active_runs().await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let dir = fleet_dir();
    let original = std::fs::read_to_string(dir.join("state/fleet.dstack.yml")).unwrap();
    let text = match blocks {
        Some(n) => format!("{original}blocks: {n}\n"),
        None => original,
    };
    // The CLI wants the file under its working directory.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("fleet.dstack.yml"), text).unwrap();
    let cli = std::env::var_os("AUTODEBUG_DSTACK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::engine_cache().join("dstack-venv"))
        .join("bin/dstack");
    let out = Command::new(&cli)
        .args(["apply", "-f", "fleet.dstack.yml", "-y", "--detach"])
        .current_dir(work.path())
        .env("HOME", dir.join("server/home"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", cli.display()));
    assert!(
        out.status.success(),
        "dstack apply of the fleet with blocks {blocks:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let want = blocks.unwrap_or(1);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let instances = fleet_instances().await;
        if !instances.is_empty() && instances.iter().all(|(status, total)| status == "idle" && *total == want) {
            return;
        }
        assert!(Instant::now() < deadline, "the fleet did not come back idle with {want} blocks: {instances:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The fleet's host split into blocks while this lives, so runs share it; put back as the
/// script left it by [`SplitFleet::restore`], or on drop when a test failed half-way.
struct SplitFleet {
    restored: bool,
}

impl SplitFleet {
    async fn into_blocks(blocks: u64) -> SplitFleet {
        apply_fleet(Some(blocks)).await;
        SplitFleet { restored: false }
    }

    async fn restore(mut self) {
        self.restored = true;
        apply_fleet(None).await;
    }
}

impl Drop for SplitFleet {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        // Inside the test's runtime: restore from a thread with a runtime of its own.
        let restored = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(apply_fleet(None))
        })
        .join();
        if restored.is_err() {
            eprintln!("the fleet is still split into blocks: run `bash scripts/dstack-fleet.sh down` and `up`");
        }
    }
}

/// Runs of the project dstack still counts as active.
async fn active_runs() -> Vec<String> {
    let answer = reqwest::Client::new()
        .post(format!("{}/api/runs/list", fleet_value("DSTACK_SERVER_URL")))
        .bearer_auth(fleet_value("DSTACK_TOKEN"))
        .json(&serde_json::json!({ "project_name": fleet_value("DSTACK_PROJECT"), "only_active": true, "limit": 100 }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "runs/list answered {}", answer.status());
    let runs: Vec<serde_json::Value> = answer.json().await.unwrap();
    runs.iter().filter_map(|r| r["run_spec"]["run_name"].as_str().map(str::to_string)).collect()
}

/// The line a log signal quotes (`… last «LINE»`), whitespace runs collapsed, a cut's `…` dropped.
fn quoted_line(detail: &str) -> Option<String> {
    let start = detail.rfind('«')? + '«'.len_utf8();
    let end = detail.rfind('»')?;
    let quote = detail.get(start..end)?.trim_end_matches('…');
    Some(quote.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn collapsed(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a dstack fleet: bash scripts/dstack-fleet.sh up (root), then cargo test --workspace -- --include-ignored"]
async fn parallel_rounds_run_each_slot_as_its_own_dstack_run_and_leave_none_running() {
    let _turn = take_turn().await;
    // Two runs at once need two job places: the script's fleet has one host of one block.
    let fleet = SplitFleet::into_blocks(2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "adbg-par", "flags: {}");
    let mut text = std::fs::read_to_string(&path).unwrap();
    // A search planner proposes a second candidate for round 1 (rules have no evidence yet).
    text.push_str("parallel: 2\nplanner: random\nseed: 3\n");
    std::fs::write(&path, text).unwrap();
    let out = autodebug(&path, 4, "parallel").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed:\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout));

    let history = history(dir.path());
    for it in &history.iterations {
        eprintln!("iteration {} (round {:?}): {:?} {:?}", it.number, it.round, it.status, it.timings);
    }
    let summary: Vec<_> = history.iterations.iter().map(|i| (i.number, i.round, i.status, i.error.clone())).collect();
    assert_eq!(history.iterations.len(), 4, "{summary:?}");
    // `iteration N: ready at URL`, one per deployed iteration.
    let ready_at = |number: u32| -> String {
        let prefix = format!("iteration {number}: ready at ");
        let urls: Vec<&str> = stderr.lines().filter_map(|l| l.split_once(&prefix).map(|(_, url)| url.trim())).collect();
        assert_eq!(urls.len(), 1, "iteration {number} was not reported ready once:\n{stderr}");
        urls[0].to_string()
    };
    let project = fleet_value("DSTACK_PROJECT");
    // Requests the benchmark sends to one iteration (warmups included): `concurrent` 8 + 1,
    // `stream` 4 + 1. A window that also held the other slot's lines would count up to twice that.
    const SENT: f64 = 14.0;
    let mut round_two = Vec::new();
    for round in [1, 2] {
        let mut members: Vec<_> = history.iterations.iter().filter(|i| i.round == Some(round)).collect();
        members.sort_by_key(|i| i.number);
        assert_eq!(members.len(), 2, "round {round}: {summary:?}");
        let last_start = members.iter().map(|i| i.started_ns).max().unwrap();
        let first_end = members.iter().map(|i| i.finished_ns).min().unwrap();
        assert!(last_start < first_end, "round {round}'s slots ran one after another: {summary:?}");
        assert_ne!(members[0].spec.flags, members[1].spec.flags, "round {round} measured one configuration twice");
        for (index, it) in members.iter().enumerate() {
            support::assert_real_llamacpp_evidence(it);
            // Its own run, through the proxy: `<service>-s<slot>`.
            let url = ready_at(it.number);
            let run = format!("adbg-par-s{}", index + 1);
            assert!(
                url.starts_with("http://127.0.0.1:") && url.ends_with(&format!("/proxy/services/{project}/{run}")),
                "iteration {} (round {round}, slot {}) was not benchmarked on its own run's endpoint: {url}",
                it.number,
                index + 1
            );
            let window: Vec<_> = it
                .analysis
                .cited
                .iter()
                .filter(|s| {
                    s.kind == SignalKind::LogLine
                        && s.source == "logs"
                        && (s.name.starts_with("llamacpp.log.eval.") || s.name.starts_with("llamacpp.log.prompt_eval."))
                })
                .collect();
            assert!(!window.is_empty(), "iteration {} cited no engine log line from its window", it.number);
            for signal in &window {
                let lines = signal.count.unwrap_or(0.0);
                assert!(
                    (1.0..=SENT).contains(&lines),
                    "iteration {}: `{}` rests on {lines} lines, its own run served at most {SENT}: {:?}",
                    it.number,
                    signal.name,
                    signal.detail
                );
            }
            assert!(
                !it.analysis.findings.iter().any(|f| f.rule == "config.not_applied"),
                "iteration {} read an engine started with other flags: {:?}",
                it.number,
                it.analysis.findings.iter().map(|f| &f.summary).collect::<Vec<_>>()
            );
            if round == 2 {
                round_two.push((
                    run,
                    window.iter().filter_map(|s| s.detail.as_deref().and_then(quoted_line)).collect::<Vec<_>>(),
                ));
            }
        }
    }
    // Round 2's runs are the last of their names, so dstack still serves their logs: each
    // iteration's quoted window lines are its own run's.
    let deployer = deployer();
    let mut logs = Vec::new();
    for (run, _) in &round_two {
        let lines = deployer.logs(&deployment(run), None).await.unwrap_or_else(|e| panic!("logs of {run}: {e}"));
        logs.push(lines.iter().map(|l| collapsed(&l.text)).collect::<Vec<_>>());
    }
    let mut told_apart = false;
    for (slot, (run, quotes)) in round_two.iter().enumerate() {
        assert!(!quotes.is_empty(), "{run}: no quoted line");
        for quote in quotes {
            assert!(
                logs[slot].iter().any(|l| l.contains(quote.as_str())),
                "{run}'s log lacks its iteration's line «{quote}»"
            );
            told_apart |= !logs[1 - slot].iter().any(|l| l.contains(quote.as_str()));
        }
    }
    assert!(told_apart, "every quoted line is in both runs' logs, so they prove nothing: {round_two:?}");

    // Nothing of the session is left running on the server.
    let left: Vec<String> = active_runs().await.into_iter().filter(|r| r.starts_with("adbg-par")).collect();
    assert!(left.is_empty(), "runs of the session still active: {left:?}\n{stderr}");
    for run in ["adbg-par-s1", "adbg-par-s2"] {
        assert_nothing_left(run).await;
    }
    fleet.restore().await;
}

/// A folder removed when the test ends, however it ends.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `bench_beside` on dstack: each benchmark is `autodebug bench` inside the service's own job
/// container, reached through `dstack attach` and `ssh`. On a fleet split into blocks the
/// container has a network of its own, so the URL it benchmarked (the container's loopback) is
/// not this machine's, and its host name is the container's.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a dstack fleet: bash scripts/dstack-fleet.sh up (root), then cargo test --workspace -- --include-ignored"]
async fn bench_beside_runs_inside_the_service_container_through_dstack_attach() {
    let _turn = take_turn().await;
    let fleet = SplitFleet::into_blocks(2).await;
    let dir = tempfile::tempdir().unwrap();
    // The binary under test, where the service's volume shows it in the container (`/opt/autodebug`).
    let drop_in_name = format!("adbg-beside-{}", std::process::id());
    let drop_in = RemovedOnDrop(PathBuf::from(fleet_value("AUTODEBUG_DSTACK_VOLUME")).join(&drop_in_name));
    std::fs::create_dir_all(&drop_in.0).unwrap();
    std::fs::copy(BIN, drop_in.0.join("autodebug")).unwrap();
    let path = config(dir.path(), "adbg-beside", "flags: {}");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "  kind: dstack\n",
        &format!("  kind: dstack\n  cli: {}\n", fleet_value("AUTODEBUG_DSTACK_CLI")),
        1,
    );
    assert!(text.contains("  cli: "), "the example's deployer section changed:\n{text}");
    std::fs::write(&path, format!("{text}bench_beside:\n  program: /opt/autodebug/{drop_in_name}/autodebug\n"))
        .unwrap();
    let out = autodebug(&path, 1, "beside").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed:\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    eprintln!("autodebug's stderr:\n{stderr}");

    let history = history(dir.path());
    let first = &history.iterations[0];
    support::assert_real_llamacpp_evidence(first);
    let finding = first
        .analysis
        .findings
        .iter()
        .find(|f| f.rule == "session.bench_beside")
        .unwrap_or_else(|| panic!("no bench_beside finding: {:?}", first.analysis.findings));
    let plans = first.bench.len();
    assert!(plans >= 1 && finding.evidence.len() == plans, "{}", finding.summary);
    let this_host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    for signal in &finding.evidence {
        let said = signal.value.as_text();
        assert!(said.contains("into dstack run `adbg-beside`'s job container"), "{said}");
        let host = &signal.labels["host"];
        assert_ne!(host, &this_host, "the benchmark ran on this machine's host name, not in the container: {said}");
    }
    // Its URL was the container's loopback: the step quoted it, and nothing here answers there.
    assert!(stderr.contains("running inside the service's container"), "{stderr}");
    let port = 18080;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something on this machine serves 127.0.0.1:{port}, so the URL proves nothing"
    );
    // What `dstack attach` set up is gone: its folder (the user's key) and its SSH master.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("adbg-") && e.path().join(".dstack").exists())
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "attach folders left behind: {left:?}");
    let masters: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("adbg-beside.control.sock"))
        .collect();
    assert!(masters.is_empty(), "an SSH master of `dstack attach` is still running: {masters:?}");
    assert!(
        !std::fs::read_to_string(&trail_files(dir.path(), "debug-")[0]).unwrap().contains(&fleet_value("DSTACK_TOKEN"))
    );
    assert_nothing_left("adbg-beside").await;
    fleet.restore().await;
}
