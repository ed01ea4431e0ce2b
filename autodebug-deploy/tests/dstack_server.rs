//! The dstack deployer against a REAL dstack server on loopback.
//!
//! The server is started once per test binary by `scripts/dstack-server.sh` (which installs
//! `dstack[server]` into `~/.cache/autodebug/dstack-venv` when missing) with its state in this
//! binary's own directory, and stopped when the binary exits. No fleet exists, so every run ends
//! `failed: no fleets`: these are the failure-path tests the conformance suite cannot run here
//! (the good spec never becomes ready). The tests are ignored in a plain `cargo test`: they need
//! dstack installed by `bash scripts/dstack-server.sh install` (`.ci/setup.sh` runs it); with
//! `--include-ignored` a missing dstack is a failure naming that command, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use autodebug_core::session::{Session, SessionConfig};
use autodebug_core::{
    BenchPlan, BenchReport, Benchmarker, Deployer, Endpoint, Error, IterationStatus, Load, Objective, Plan, PlanInput,
    Planner, Result, Secret, ServiceSpec, Workload, async_trait,
};
use autodebug_deploy::dstack::{Connection, DstackDeployer, Readiness};

/// Bound on the whole start (a first install takes about a minute; the server ~10 s).
const START_BOUND: Duration = Duration::from_secs(1100);
/// Bound on a run reaching `failed` (the server's background loop runs every few seconds).
const FAIL_BOUND: Duration = Duration::from_secs(120);

struct Server {
    connection: Connection,
    venv_python: PathBuf,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate sits in the workspace").to_path_buf()
}

fn state_dir() -> PathBuf {
    let binary = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()));
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dstack-server-{}", binary.unwrap_or_else(|| "tests".into())))
}

fn script(command: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts/dstack-server.sh"))
        .arg(command)
        .env("AUTODEBUG_DSTACK_STATE", state_dir())
        .env("AUTODEBUG_DSTACK_WAIT_S", "120");
    cmd
}

extern "C" fn stop_server() {
    let _ = script("stop").stdout(Stdio::null()).stderr(Stdio::null()).status();
}

fn venv_dir() -> PathBuf {
    match std::env::var_os("AUTODEBUG_DSTACK_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
            cache.join("autodebug/dstack-venv")
        }
    }
}

const NEEDS_DSTACK: &str =
    "needs dstack: bash scripts/dstack-server.sh install, then cargo test --workspace -- --include-ignored";

/// The shared server; the test fails, naming the setup command, when dstack is not installed.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        // Installing is the setup script's job, not the test's: a missing venv fails here.
        let dstack = venv_dir().join("bin/dstack");
        assert!(dstack.exists(), "{NEEDS_DSTACK} ({} is missing)", dstack.display());
        let started = Instant::now();
        let mut child = script("start").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("bash runs");
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait on the script") {
                break status;
            }
            if started.elapsed() > START_BOUND {
                let _ = child.kill();
                panic!("scripts/dstack-server.sh start took over {START_BOUND:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let output = child.wait_with_output().expect("script output");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(status.success(), "scripts/dstack-server.sh start failed ({status}); {NEEDS_DSTACK}:\n{stderr}");
        // SAFETY: registers a plain extern "C" function with no captured state.
        unsafe { libc::atexit(stop_server) };
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
                .unwrap_or_else(|| panic!("the script printed no {key}:\n{stdout}"))
        };
        eprintln!(
            "dstack server at {} ready after {:.1}s",
            value("DSTACK_SERVER_URL"),
            started.elapsed().as_secs_f64()
        );
        let connection =
            Connection::new(value("DSTACK_SERVER_URL"), value("DSTACK_PROJECT"), Secret::new(value("DSTACK_TOKEN")))
                .expect("the script prints a usable connection");
        Server { connection, venv_python: venv_dir().join("bin/python") }
    })
}

fn deployer(server: &Server) -> DstackDeployer {
    DstackDeployer::builder()
        .connection(server.connection.clone())
        .poll_interval(Duration::from_millis(500))
        .stop_timeout(Duration::from_secs(60))
        .build()
        .expect("deployer builds")
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dstack-service.yml")
}

/// A run name no other test (or earlier run of this binary) uses.
fn spec_named(tag: &str) -> ServiceSpec {
    let mut spec = DstackDeployer::base_spec_from_file(fixture()).expect("the fixture parses");
    spec.name = format!("ad-{tag}-{}", std::process::id() % 100_000);
    spec
}

/// The run as the server itself reports it, read without the deployer.
async fn raw_run(server: &Server, name: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(server.connection.project_url("runs/get"))
        .bearer_auth(server.connection.token.expose())
        .json(&serde_json::json!({ "run_name": name }))
        .send()
        .await
        .expect("server answers")
        .json()
        .await
        .expect("JSON run")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs dstack: bash scripts/dstack-server.sh install, then cargo test --workspace -- --include-ignored"]
async fn a_run_without_fleets_fails_with_dstacks_own_reason() {
    let server = server();
    let deployer = deployer(server);
    assert!(!deployer.server_version().await.unwrap().is_empty());
    let spec = spec_named("nofleet");

    let deployment = deployer.deploy(&spec).await.expect("the server accepts the run");
    assert_eq!((deployment.id.as_str(), deployment.backend.as_str()), (spec.name.as_str(), "dstack"));
    assert!(deployment.details.contains_key("job_submission_id"), "{:?}", deployment.details);
    assert_eq!(deployment.details.get("model").map(String::as_str), Some("Qwen/Qwen1.5-0.5B-Chat"));

    // What the server received is the rendered file, launch flags included.
    let submitted = raw_run(server, &spec.name).await;
    let command = submitted["run_spec"]["configuration"]["commands"][0].as_str().unwrap_or_default().to_string();
    assert!(command.contains("--schedule-policy lpm") && command.contains("--model-path $MODEL_ID"), "{command}");
    assert_eq!(submitted["service"]["url"].as_str(), Some(format!("/proxy/services/main/{}/", spec.name).as_str()));

    let err = deployer.wait_ready(&deployment, FAIL_BOUND).await.expect_err("no fleet, so never ready");
    let message = err.to_string();
    assert!(matches!(err, Error::Deploy { .. }), "{err:?}");
    let run = raw_run(server, &spec.name).await;
    let submission = &run["jobs"][0]["job_submissions"][0];
    let server_message = submission["status_message"].as_str().unwrap();
    assert_eq!(server_message, "no fleets", "the server's own status for a project without fleets");
    assert!(message.contains(&format!("failed: {server_message}")), "{message}");
    assert!(message.contains(submission["termination_reason"].as_str().unwrap()), "{message}");
    assert!(message.contains(&spec.name), "{message}");
    assert!(
        matches!(deployer.readiness(&spec.name).await.unwrap(), Readiness::Failed(r) if r.starts_with("no fleets"))
    );

    // The job never started, so it has no output; reading it still works.
    let logs = deployer.logs(&deployment, None).await.expect("logs/poll answers");
    assert!(logs.iter().all(|l| !l.text.is_empty()));

    deployer.teardown(&deployment).await.expect("teardown");
    deployer.teardown(&deployment).await.expect("a second teardown is fine");
    let status = raw_run(server, &spec.name).await["status"].as_str().unwrap_or_default().to_string();
    assert!(matches!(status.as_str(), "failed" | "terminated"), "run left as {status}");
    let err = deployer.wait_ready(&deployment, Duration::from_secs(30)).await.expect_err("torn down");
    assert!(err.to_string().contains("failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs dstack: bash scripts/dstack-server.sh install, then cargo test --workspace -- --include-ignored"]
async fn teardown_stops_a_submitted_run_and_the_name_can_be_reused() {
    let server = server();
    let deployer = deployer(server);
    let spec = spec_named("reuse");
    let first = deployer.deploy(&spec).await.unwrap();
    // While the first run is active, a second with the same name is refused, by name.
    let status = raw_run(server, &spec.name).await["status"].as_str().unwrap_or_default().to_string();
    if !matches!(status.as_str(), "failed" | "terminated" | "done") {
        let err = deployer.deploy(&spec).await.expect_err("name in use");
        assert!(err.to_string().contains(&format!("dstack stop {}", spec.name)), "{err}");
    }
    deployer.teardown(&first).await.unwrap();
    let status = raw_run(server, &spec.name).await["status"].as_str().unwrap_or_default().to_string();
    assert!(matches!(status.as_str(), "failed" | "terminated"), "run left as {status}");

    let mut changed = spec.clone();
    changed.flags.set("--schedule-policy", Some("fcfs"));
    let second = deployer.deploy(&changed).await.expect("a finished run's name can be used again");
    let command = raw_run(server, &spec.name).await["run_spec"]["configuration"]["commands"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(command.contains("--schedule-policy fcfs"), "{command}");
    deployer.teardown(&second).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs dstack: bash scripts/dstack-server.sh install, then cargo test --workspace -- --include-ignored"]
async fn a_wrong_token_or_project_is_a_configuration_error_naming_what_to_fix() {
    let server = server();
    let wrong_token = DstackDeployer::builder()
        .server_url(server.connection.url.clone())
        .token(Secret::new("not-the-token"))
        .build()
        .unwrap();
    let err = wrong_token.deploy(&spec_named("token")).await.unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("DSTACK_TOKEN") && !err.to_string().contains("not-the-token"), "{err}");

    let wrong_project = DstackDeployer::builder()
        .server_url(server.connection.url.clone())
        .project("no-such-project")
        .token(server.connection.token.clone())
        .build()
        .unwrap();
    let err = wrong_project.deploy(&spec_named("project")).await.unwrap_err();
    assert!(err.to_string().contains("no-such-project"), "{err}");
}

struct NeverBench(Arc<AtomicUsize>);

#[async_trait]
impl Benchmarker for NeverBench {
    fn name(&self) -> &str {
        "never"
    }

    async fn run(&self, _endpoint: &Endpoint, _plan: &BenchPlan) -> Result<BenchReport> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(Error::Bench("no dstack run becomes ready here, so nothing may be benchmarked".into()))
    }
}

/// While nothing has run, the session plans from the failed baseline with the failure's
/// analysis; this planner checks that and proposes no change (there is no fix for "no fleets").
struct NoFixPlanner(Arc<AtomicUsize>);

#[async_trait]
impl Planner for NoFixPlanner {
    fn name(&self) -> &str {
        "no-fix"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let failed = input.history.iterations.last().map(|i| &i.spec);
        if failed != Some(input.current) {
            return Err(Error::Plan("expected to plan from the failed baseline".into()));
        }
        if !input.analysis.findings.iter().any(|f| f.rule == "session.deploy_failed") {
            return Err(Error::Plan("expected the deploy failure among the findings".into()));
        }
        Ok(Plan {
            planner: "no-fix".into(),
            changes: Vec::new(),
            next: input.current.clone(),
            exhausted: false,
            notes: vec!["nothing to change for a missing fleet".into()],
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs dstack: bash scripts/dstack-server.sh install, then cargo test --workspace -- --include-ignored"]
async fn a_session_records_deploy_failed_and_rolls_back() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let benchmarked = Arc::new(AtomicUsize::new(0));
    let planned = Arc::new(AtomicUsize::new(0));
    let config = SessionConfig {
        name: "dstack-no-fleets".into(),
        objective: Objective::minimize("e2e.mean"),
        bench: vec![BenchPlan::new("chat", Workload::new(31, 150), Load::Sequential, 4)],
        max_iterations: 2,
        max_wall: None,
        ready_timeout: FAIL_BOUND,
        sessions_dir: dir.path().to_path_buf(),
        confirm_trials: 0,
    };
    let session = Session::builder()
        .deployer(deployer(server))
        .benchmarker(NeverBench(benchmarked.clone()))
        .planner(NoFixPlanner(planned.clone()))
        .build(config)
        .unwrap();
    let baseline = spec_named("session");
    let outcome = session.run(baseline.clone()).await.expect("the session survives failed deploys");

    assert_eq!(outcome.history.iterations.len(), 2);
    for iteration in &outcome.history.iterations {
        assert_eq!(iteration.status, IterationStatus::DeployFailed, "iteration {}", iteration.number);
        let error = iteration.error.as_deref().unwrap_or_default();
        assert!(error.contains("no fleets"), "iteration {}: {error}", iteration.number);
        assert!(iteration.artifact.as_ref().is_some_and(|a| a.target == "dstack"));
    }
    // Nothing ever ran: the planner saw the failed baseline and its failure, found no fix, and
    // the baseline was deployed again.
    assert_eq!(planned.load(Ordering::SeqCst), 2);
    assert!(outcome.history.iterations.iter().all(|i| i.plan.as_ref().is_some_and(|p| !p.exhausted)));
    assert_eq!(outcome.history.iterations[1].spec.flags, baseline.flags);
    assert_eq!(benchmarked.load(Ordering::SeqCst), 0);
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.iter().filter(|f| f.starts_with("dstack-") && f.ends_with(".yml")).count(), 2, "{files:?}");
    // Both runs were stopped by the session.
    let status = raw_run(server, &baseline.name).await["status"].as_str().unwrap_or_default().to_string();
    assert!(matches!(status.as_str(), "failed" | "terminated"), "run left as {status}");

    // The trail's YAML files pass dstack's own parser.
    let yml: Vec<PathBuf> = files.iter().filter(|f| f.ends_with(".yml")).map(|f| dir.path().join(f)).collect();
    validate(server, &yml, true);
}

/// Runs `scripts/validate-dstack.py` (dstack's `parse_run_configuration`) on `files`.
fn validate(server: &Server, files: &[PathBuf], expect_valid: bool) -> String {
    let output = Command::new(&server.venv_python)
        .arg(workspace_root().join("scripts/validate-dstack.py"))
        .args(files)
        .output()
        .expect("the venv python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.success(),
        expect_valid,
        "validate-dstack.py:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
#[ignore = "needs dstack: bash scripts/dstack-server.sh install, then cargo test --workspace -- --include-ignored"]
fn rendered_configurations_pass_dstacks_own_parser() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let example = workspace_root().join("examples/dstack-baseline.yml");
    let base = DstackDeployer::base_spec_from_file(&example).unwrap();
    let renderer = DstackDeployer::render_only(serde_yaml::Value::Null);

    let mut planned = base.clone();
    planned.flags.set("--schedule-policy", Some("fcfs"));
    planned.flags.set("--chunked-prefill-size", Some("4096"));
    planned.flags.set("--enable-mixed-chunk", None::<&str>);
    planned.resources.gpu = Some("H100:80GB:2".into());
    planned.image = Some("lmsysorg/sglang:v0.4.6".into());
    planned.env.push(("SGLANG_LOG_LEVEL".into(), "info".into()));
    let mut without_base = ServiceSpec::new("sim-vllm", autodebug_core::EngineKind::Vllm, "Qwen/Qwen1.5-0.5B-Chat")
        .with_flag("--max-num-seqs", Some("64"))
        .with_gpu("H100:1");
    without_base.resources.cpu = Some("8".into());
    let llama = ServiceSpec::new("sim-llama", autodebug_core::EngineKind::LlamaCpp, "ggml-org/SmolLM2-135M-GGUF")
        .with_flag("-np", Some("4"));
    // The demo renders simulator specs onto the user's file.
    let onto_example = DstackDeployer::render_only(base.base.clone());
    let sim = ServiceSpec::new("demo-sim", autodebug_core::EngineKind::Sglang, "qwen1.5-0.5b")
        .with_flag("--tp-size", Some("1"));

    let mut files = Vec::new();
    for (name, text) in [
        ("base", renderer.render(&base).unwrap().content),
        ("planned", renderer.render(&planned).unwrap().content),
        ("without-base", renderer.render(&without_base).unwrap().content),
        ("llama", renderer.render(&llama).unwrap().content),
        ("onto-example", onto_example.render(&sim).unwrap().content),
    ] {
        let path = dir.path().join(format!("dstack-{name}.yml"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    files.push(example);
    let report = validate(server, &files, true);
    assert_eq!(report.lines().filter(|l| l.starts_with("ok ")).count(), files.len(), "{report}");

    // The validator does reject what dstack rejects.
    let mut broken = planned.clone();
    broken.resources.gpu = Some("H100:lots".into());
    let path = dir.path().join("dstack-broken.yml");
    std::fs::write(&path, renderer.render(&broken).unwrap().content).unwrap();
    let report = validate(server, &[path], false);
    assert!(report.contains("invalid") && report.contains("gpu"), "{report}");
}
