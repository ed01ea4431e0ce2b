//! The local deployer and the decorators against real child processes: the stand-in engine
//! (`examples/fake_engine.rs`) and ordinary commands (`sh`, `sleep`, `cat`).

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use autodebug_core::testing::{DeployerConformance, deployer_conformance, deployer_conformance_with};
use autodebug_core::{
    Artifact, Deployer, Deployment, Endpoint, EngineKind, Error, ErrorKind, LogLine, ServiceSpec, async_trait,
};
use autodebug_deploy::{DryRun, LocalDeployer, Retrying};
use support::{bad_spec, good_spec, process_gone, wait_gone};

fn fake_deployer() -> LocalDeployer {
    LocalDeployer::builder()
        .program(support::fake_engine())
        .args_template(["--host", "{host}", "--port", "{port}", "--model", "{model}", "{flags}"])
        .stop_grace(Duration::from_secs(2))
        .build()
        .expect("a valid fake engine deployer")
}

/// A deployer running `sh -c SCRIPT`: a real process with whatever output and exit the test needs.
fn shell_deployer(script: &str) -> LocalDeployer {
    LocalDeployer::builder()
        .program("sh")
        .args_template(["-c", script])
        .stop_grace(Duration::from_millis(500))
        .build()
        .expect("a valid shell deployer")
}

fn spec(name: &str) -> ServiceSpec {
    ServiceSpec::new(name, EngineKind::LlamaCpp, "model.gguf")
}

fn pid_of(deployment: &Deployment) -> u32 {
    deployment.id.parse().expect("local deployment ids are pids")
}

#[tokio::test]
async fn fake_engine_passes_the_conformance_suite() {
    let deployer = fake_deployer();
    deployer_conformance(&deployer, &good_spec(), &bad_spec()).await;
    assert!(deployer.running_pids().is_empty(), "the suite tore everything down");
}

#[tokio::test]
async fn retrying_fake_engine_passes_the_conformance_suite() {
    let deployer = Retrying::new(fake_deployer(), 1).backoff(Duration::from_millis(10), Duration::from_millis(10));
    deployer_conformance_with(&deployer, &good_spec(), &bad_spec(), DeployerConformance::default()).await;
    assert!(deployer.inner().running_pids().is_empty());
}

#[tokio::test]
async fn ready_endpoint_answers_and_details_describe_the_process() {
    let deployer = fake_deployer();
    let spec = good_spec().with_flag("--served-model-name", Some("qwen-small"));
    let deployment = deployer.deploy(&spec).await.unwrap();
    let endpoint = deployer.wait_ready(&deployment, Duration::from_secs(60)).await.unwrap();
    let port: u16 = deployment.details["port"].parse().unwrap();
    assert_eq!(endpoint.base_url, format!("http://127.0.0.1:{port}"));
    assert_eq!(endpoint.model, "qwen-small");
    assert_eq!(support::http_status(port, "/health"), Some(200));
    assert_eq!(deployment.details["pid"], deployment.id);
    assert!(deployment.details["command"].contains("--schedule-policy lpm"), "{:?}", deployment.details);
    let logs = deployer.logs(&deployment, None).await.unwrap();
    assert!(logs.iter().any(|l| l.text.contains(&format!("listening on http://127.0.0.1:{port}"))), "{logs:?}");
    assert!(logs.windows(2).all(|w| w[0].time_ns <= w[1].time_ns), "stamps go back: {logs:?}");
    deployer.teardown(&deployment).await.unwrap();
    assert!(process_gone(pid_of(&deployment)));
    assert_eq!(support::http_status(port, "/health"), None, "nothing listens after teardown");
}

#[tokio::test]
async fn rejected_flag_fails_at_once_quoting_the_engine() {
    let deployer = fake_deployer();
    let deployment = deployer.deploy(&bad_spec()).await.unwrap();
    // A long timeout: the failure must come from the exit, not from waiting it out.
    let err = deployer.wait_ready(&deployment, Duration::from_secs(300)).await.unwrap_err();
    let Error::Deploy { message, kind, .. } = &err else { panic!("expected Error::Deploy, got {err:?}") };
    assert!(message.contains("error: unrecognized arguments: --bogus-flag"), "{message}");
    assert_eq!(*kind, ErrorKind::RejectedConfig, "the engine's own line says the flag is refused: {message}");
    assert!(message.contains("exit status: 2"), "{message}");
    deployer.teardown(&deployment).await.unwrap();
}

#[tokio::test]
async fn command_that_exits_at_once_is_reported_with_its_output() {
    let deployer =
        shell_deployer("echo loading weights; echo 'torch.OutOfMemoryError: CUDA out of memory' >&2; exit 3");
    let deployment = deployer.deploy(&spec("oom")).await.unwrap();
    let err = deployer.wait_ready(&deployment, Duration::from_secs(300)).await.unwrap_err();
    let Error::Deploy { message, kind, .. } = &err else { panic!("expected Error::Deploy, got {err:?}") };
    assert!(message.contains("exit status: 3"), "{message}");
    assert_eq!(*kind, ErrorKind::RejectedConfig, "out of memory fails again as configured: {message}");
    assert!(message.contains("loading weights") && message.contains("CUDA out of memory"), "{message}");
    let logs = deployer.logs(&deployment, None).await.unwrap();
    assert_eq!(logs.len(), 2, "{logs:?}");
}

#[tokio::test]
async fn never_healthy_times_out_and_teardown_leaves_nothing() {
    let deployer = LocalDeployer::builder().program("sleep").args_template(["600"]).build().unwrap();
    let deployment = deployer.deploy(&spec("sleeper")).await.unwrap();
    let pid = pid_of(&deployment);
    let err = deployer.wait_ready(&deployment, Duration::from_millis(700)).await.unwrap_err();
    match &err {
        Error::NotReady { name, waited_s, message } => {
            assert_eq!(name, "sleeper");
            assert!(*waited_s >= 0.7, "{waited_s}");
            assert!(message.contains("could not connect") && message.contains("still running"), "{message}");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(!process_gone(pid), "the process runs until the caller tears it down");
    deployer.teardown(&deployment).await.unwrap();
    assert!(process_gone(pid), "pid {pid} survived teardown");
    // SAFETY: kill with signal 0 only checks for existence.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, 0) }, -1, "kill(pid, 0) still finds {pid}");
    deployer.teardown(&deployment).await.unwrap();
}

#[tokio::test]
async fn teardown_escalates_to_sigkill() {
    let deployer = LocalDeployer::builder()
        .program(support::fake_engine())
        .args_template(["--port", "{port}", "--ignore-sigterm"])
        .stop_grace(Duration::from_millis(300))
        .build()
        .unwrap();
    let deployment = deployer.deploy(&spec("stubborn")).await.unwrap();
    deployer.wait_ready(&deployment, Duration::from_secs(60)).await.unwrap();
    deployer.teardown(&deployment).await.unwrap();
    assert!(process_gone(pid_of(&deployment)));
    let err = deployer.wait_ready(&deployment, Duration::from_secs(1)).await.unwrap_err();
    assert!(err.to_string().contains("torn down"), "{err}");
}

#[tokio::test]
async fn teardown_stops_the_whole_process_group() {
    let deployer = shell_deployer("sleep 600 & echo helper=$!; wait");
    let deployment = deployer.deploy(&spec("group")).await.unwrap();
    let mut helper = None;
    for _ in 0..100 {
        let logs = deployer.logs(&deployment, None).await.unwrap();
        helper = logs.iter().find_map(|l| l.text.strip_prefix("helper=").and_then(|p| p.parse::<u32>().ok()));
        if helper.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let helper = helper.expect("the shell printed its helper's pid");
    assert!(!process_gone(helper));
    deployer.teardown(&deployment).await.unwrap();
    assert!(wait_gone(helper, Duration::from_secs(5)), "grandchild {helper} outlived teardown");
}

#[test]
fn dropping_the_deployer_kills_its_children() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deployer = fake_deployer();
    let (first, second) = runtime.block_on(async {
        let a = deployer.deploy(&good_spec()).await.unwrap();
        deployer.wait_ready(&a, Duration::from_secs(60)).await.unwrap();
        let b = deployer.deploy(&good_spec()).await.unwrap();
        (pid_of(&a), pid_of(&b))
    });
    assert!(!process_gone(first) && !process_gone(second));
    assert_eq!(deployer.running_pids().len(), 2);
    drop(deployer);
    assert!(process_gone(first) && process_gone(second), "children outlived the deployer");
}

#[test]
fn children_outlive_the_thread_that_deployed_them() {
    // PR_SET_PDEATHSIG fires on the death of the forking *thread*; deploy from one that ends.
    let deployer =
        std::sync::Arc::new(LocalDeployer::builder().program("sleep").args_template(["600"]).build().unwrap());
    let from_thread = deployer.clone();
    let pid = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async { pid_of(&from_thread.deploy(&spec("t")).await.unwrap()) })
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!process_gone(pid), "the child died with the thread that spawned it");
    drop(deployer);
    assert!(process_gone(pid));
}

/// Not a test on its own: `children_die_when_the_parent_is_sigkilled` runs this in a child
/// process, which it then SIGKILLs.
#[tokio::test]
#[ignore = "helper process for children_die_when_the_parent_is_sigkilled"]
async fn pdeathsig_helper() {
    let Some(pid_file) = std::env::var_os("AUTODEBUG_DEPLOY_PDEATHSIG_PIDFILE") else { return };
    let deployer = LocalDeployer::builder().program("sleep").args_template(["600"]).build().unwrap();
    let deployment = deployer.deploy(&spec("orphan")).await.unwrap();
    std::fs::write(&pid_file, &deployment.id).unwrap();
    // Bounded: the parent test kills us long before this ends.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[test]
fn children_die_when_the_parent_is_sigkilled() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let mut parent = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pdeathsig_helper", "--ignored", "--nocapture", "--test-threads=1"])
        .env("AUTODEBUG_DEPLOY_PDEATHSIG_PIDFILE", &pid_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let child_pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
            break pid;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = parent.kill();
            let _ = parent.wait();
            panic!("the helper never reported its child's pid");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!process_gone(child_pid));
    parent.kill().unwrap(); // SIGKILL: no destructor runs in the parent
    parent.wait().unwrap();
    assert!(wait_gone(child_pid, Duration::from_secs(10)), "child {child_pid} outlived its SIGKILLed parent");
}

#[tokio::test]
async fn output_is_captured_in_order_and_appended_to_the_log_file() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llamacpp_smollm2_server.log");
    let expected: Vec<String> = std::fs::read_to_string(&fixture).unwrap().lines().map(String::from).collect();
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("engine.log");
    let deployer = LocalDeployer::builder()
        .program("sh")
        .args_template(["-c", "cat \"$1\"; exec sleep 600", "sh", "{model}"])
        .log_file(&log_file)
        .build()
        .unwrap();
    let deployment =
        deployer.deploy(&ServiceSpec::new("cat", EngineKind::LlamaCpp, fixture.to_string_lossy())).await.unwrap();
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = deployer.logs(&deployment, None).await.unwrap();
        if lines.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, expected);
    let since = lines[10].time_ns;
    let later = deployer.logs(&deployment, Some(since)).await.unwrap();
    assert!(later.iter().all(|l| l.time_ns >= since) && later.len() <= lines.len() - 10);
    deployer.teardown(&deployment).await.unwrap();
    let written = std::fs::read_to_string(&log_file).unwrap();
    let mut written_lines = written.lines();
    let header = written_lines.next().unwrap();
    assert!(header.contains("starting `cat`"), "{header}");
    assert_eq!(written_lines.collect::<Vec<_>>(), expected);
    assert_eq!(
        deployer.logs(&deployment, None).await.unwrap().len(),
        expected.len(),
        "logs stay readable after teardown"
    );
}

#[tokio::test]
async fn log_buffer_keeps_only_the_newest_lines() {
    let deployer = LocalDeployer::builder()
        .program("sh")
        .args_template(["-c", "i=0; while [ $i -lt 500 ]; do echo line $i; i=$((i+1)); done"])
        .log_capacity(100)
        .build()
        .unwrap();
    let deployment = deployer.deploy(&spec("chatty")).await.unwrap();
    let _ = deployer.wait_ready(&deployment, Duration::from_secs(60)).await.unwrap_err();
    let logs = deployer.logs(&deployment, None).await.unwrap();
    assert_eq!(logs.len(), 100);
    assert_eq!(logs.first().map(|l| l.text.as_str()), Some("line 400"));
    assert_eq!(logs.last().map(|l| l.text.as_str()), Some("line 499"));
}

#[tokio::test]
async fn missing_program_is_named() {
    let deployer = LocalDeployer::builder().program("/nonexistent/engine-serve").build().unwrap();
    let err = deployer.deploy(&spec("none")).await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/engine-serve") && err.contains("no such program"), "{err}");
}

#[tokio::test]
async fn unknown_deployment_is_refused_but_teardown_is_harmless() {
    let deployer = shell_deployer("exit 0");
    let stranger = Deployment {
        id: "999999999".into(),
        backend: "local".into(),
        spec: spec("stranger"),
        started_ns: 0,
        details: Default::default(),
    };
    let err = deployer.wait_ready(&stranger, Duration::from_secs(1)).await.unwrap_err().to_string();
    assert!(err.contains("999999999") && err.contains("stranger"), "{err}");
    assert!(deployer.logs(&stranger, None).await.is_err());
    deployer.teardown(&stranger).await.unwrap();
}

#[tokio::test]
async fn teardown_all_stops_everything() {
    let deployer = LocalDeployer::builder().program("sleep").args_template(["600"]).build().unwrap();
    let mut pids = Vec::new();
    for i in 0..3 {
        pids.push(pid_of(&deployer.deploy(&spec(&format!("s{i}"))).await.unwrap()));
    }
    assert_eq!(deployer.running_pids().len(), 3);
    deployer.teardown_all().await;
    assert!(deployer.running_pids().is_empty());
    assert!(pids.iter().all(|&p| process_gone(p)), "{pids:?}");
}

#[test]
fn rendered_script_is_valid_bash_and_serves_when_run() {
    let deployer = LocalDeployer::builder()
        .program(support::fake_engine())
        .args_template(["--host", "{host}", "--port", "{port}", "--model", "{model}", "{flags}"])
        .env("FAKE_ENGINE_MODE", "it's quoted")
        .secret_env("HF_TOKEN", autodebug_core::Secret::new("hf_do_not_print"))
        .build()
        .unwrap();
    let spec = good_spec().with_flag("--served-model-name", Some("name with spaces"));
    let artifact = deployer.render(&spec).unwrap();
    assert_eq!((artifact.target.as_str(), artifact.extension.as_str()), ("local", "sh"));
    assert!(!artifact.content.contains("hf_do_not_print"), "{}", artifact.content);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("serve.sh");
    std::fs::write(&script, &artifact.content).unwrap();
    let syntax = std::process::Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {}\n{}", String::from_utf8_lossy(&syntax.stderr), artifact.content);

    // Without the secret in the environment the script refuses to start, naming it.
    let refused = std::process::Command::new("bash").arg(&script).env_remove("HF_TOKEN").output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("HF_TOKEN"));

    let port = support::free_port();
    let mut served = std::process::Command::new("bash")
        .arg(&script)
        .env("PORT", port.to_string())
        .env("HF_TOKEN", "x")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut status = None;
    while status.is_none() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
        status = support::http_status(port, "/health");
    }
    served.kill().unwrap();
    served.wait().unwrap();
    assert_eq!(status, Some(200), "the rendered script did not serve on PORT={port}:\n{}", artifact.content);
}

/// Counts deploys and fails each (or only the first `fail_first`) one.
struct FlakyDeployer {
    calls: AtomicU32,
    fail_first: u32,
    error: fn() -> Error,
}

#[async_trait]
impl Deployer for FlakyDeployer {
    fn name(&self) -> &str {
        "flaky"
    }
    fn render(&self, _spec: &ServiceSpec) -> autodebug_core::Result<Artifact> {
        Ok(Artifact { target: "flaky".into(), extension: "txt".into(), content: "x".into() })
    }
    async fn deploy(&self, spec: &ServiceSpec) -> autodebug_core::Result<Deployment> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= self.fail_first {
            return Err((self.error)());
        }
        Ok(Deployment {
            id: format!("d{call}"),
            backend: "flaky".into(),
            spec: spec.clone(),
            started_ns: 0,
            details: Default::default(),
        })
    }
    async fn wait_ready(&self, d: &Deployment, _t: Duration) -> autodebug_core::Result<Endpoint> {
        Ok(Endpoint::new(format!("http://{}", d.id), "m"))
    }
    async fn logs(&self, _d: &Deployment, _s: Option<i128>) -> autodebug_core::Result<Vec<LogLine>> {
        Ok(vec![])
    }
    async fn teardown(&self, _d: &Deployment) -> autodebug_core::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn retrying_retries_a_failing_deploy_n_times() {
    let always =
        FlakyDeployer { calls: AtomicU32::new(0), fail_first: u32::MAX, error: || Error::deploy("port taken") };
    let retrying = Retrying::new(always, 3).backoff(Duration::from_millis(1), Duration::from_millis(4));
    let err = retrying.deploy(&spec("r")).await.unwrap_err().to_string();
    assert_eq!(retrying.inner().calls.load(Ordering::SeqCst), 4);
    assert!(err.contains("port taken") && err.contains("gave up after 4 attempts"), "{err}");

    let twice = FlakyDeployer { calls: AtomicU32::new(0), fail_first: 2, error: || Error::deploy("flaky") };
    let retrying = Retrying::new(twice, 3).backoff(Duration::from_millis(1), Duration::from_millis(4));
    assert_eq!(retrying.deploy(&spec("r")).await.unwrap().id, "d3");

    let config = FlakyDeployer {
        calls: AtomicU32::new(0),
        fail_first: u32::MAX,
        error: || Error::config("spec.yml: model", "missing"),
    };
    let retrying = Retrying::new(config, 3).backoff(Duration::from_millis(1), Duration::from_millis(4));
    assert!(retrying.deploy(&spec("r")).await.is_err());
    assert_eq!(retrying.inner().calls.load(Ordering::SeqCst), 1, "configuration errors are not retried");

    type MakeError = fn() -> Error;
    let kinds: [(MakeError, &str); 2] = [
        (|| Error::rejected("unrecognized arguments: --x"), "a refused configuration fails again"),
        (|| Error::infrastructure("sbatch: command not found"), "broken infrastructure needs a person"),
    ];
    for (error, why) in kinds {
        let failing = FlakyDeployer { calls: AtomicU32::new(0), fail_first: u32::MAX, error };
        let retrying = Retrying::new(failing, 3).backoff(Duration::from_millis(1), Duration::from_millis(4));
        assert!(retrying.deploy(&spec("r")).await.is_err());
        assert_eq!(retrying.inner().calls.load(Ordering::SeqCst), 1, "{why}: not retried");
    }
}

#[tokio::test]
async fn an_engine_crash_its_log_does_not_explain_is_transient() {
    let deployer = shell_deployer("echo loading weights; echo 'Segmentation fault (core dumped)' >&2; exit 139");
    let deployment = deployer.deploy(&spec("crash")).await.unwrap();
    let err = deployer.wait_ready(&deployment, Duration::from_secs(300)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    deployer.teardown(&deployment).await.unwrap();
}

#[tokio::test]
async fn retrying_redeploys_when_a_start_fails() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("failed-once");
    let local = LocalDeployer::builder()
        .program(support::fake_engine())
        .args_template(["--port", "{port}", "{flags}"])
        .build()
        .unwrap();
    let retrying = Retrying::new(local, 2).backoff(Duration::from_millis(10), Duration::from_millis(10));
    let spec = spec("flaky").with_flag("--fail-first-run", Some(&marker.to_string_lossy()));
    let first = retrying.deploy(&spec).await.unwrap();
    let endpoint = retrying.wait_ready(&first, Duration::from_secs(60)).await.unwrap();
    assert!(marker.exists(), "the first run failed as planned");
    let running = retrying.inner().running_pids();
    assert_eq!(running.len(), 1);
    assert_ne!(running[0], pid_of(&first), "a new process stands in for the failed one");
    assert!(endpoint.base_url.starts_with("http://127.0.0.1:"));
    // The caller's handle reaches the process that is current.
    let logs = retrying.logs(&first, None).await.unwrap();
    assert!(logs.iter().any(|l| l.text.contains("listening on")), "{logs:?}");
    retrying.teardown(&first).await.unwrap();
    assert!(retrying.inner().running_pids().is_empty());
    assert!(process_gone(running[0]));
}

#[tokio::test]
async fn dry_run_starts_nothing() {
    let dry = DryRun::new(fake_deployer());
    let artifact = dry.render(&good_spec()).unwrap();
    let deployment = dry.deploy(&good_spec()).await.unwrap();
    assert!(dry.inner().running_pids().is_empty(), "a dry run started a process");
    assert_eq!(deployment.details["dry_run"], "true");
    let err = dry.wait_ready(&deployment, Duration::from_secs(5)).await.unwrap_err().to_string();
    assert!(err.contains("dry run") && err.contains("fake"), "{err}");
    assert!(dry.logs(&deployment, None).await.unwrap().is_empty());
    dry.teardown(&deployment).await.unwrap();
    assert_eq!(artifact, dry.inner().render(&good_spec()).unwrap());
}

/// A command that reports, from beside the engine, its own argument list, whether the token
/// reached its environment, and the engine's health through the URL it was given.
fn beside_probe(timeout: Duration, token: &str) -> autodebug_core::beside::BesideCommand {
    let script = r#"echo "argv: $*"; echo "token: ${AUTODEBUG_BENCH_TOKEN:-missing}" | sed 's/canary-[a-z0-9-]*/<the canary>/'; echo "url: $1"; echo "to stderr" >&2"#;
    autodebug_core::beside::BesideCommand {
        program: "sh".into(),
        args: vec!["-c".into(), script.into(), "probe".into(), autodebug_core::beside::SERVICE_URL.into()],
        env: vec![("AUTODEBUG_BENCH_TOKEN".into(), autodebug_core::Secret::new(token))],
        timeout,
    }
}

#[tokio::test]
async fn a_command_runs_beside_the_engine_with_its_url_and_the_token_in_its_environment_only() {
    let canary = "canary-beside-local-9c2e";
    let deployer = fake_deployer();
    let deployment = deployer.deploy(&good_spec()).await.unwrap();
    let endpoint = deployer.wait_ready(&deployment, Duration::from_secs(60)).await.unwrap();
    let output = deployer.run_beside(&deployment, &beside_probe(Duration::from_secs(30), canary)).await.unwrap();
    assert_eq!(output.exit_code, Some(0), "{output:?}");
    assert!(!output.timed_out);
    assert!(output.stdout.contains(&format!("url: {}", endpoint.base_url)), "{}", output.stdout);
    assert!(output.stdout.contains("token: <the canary>"), "the token did not reach it: {}", output.stdout);
    let argv = output.stdout.lines().find(|l| l.starts_with("argv:")).unwrap();
    assert!(!argv.contains(canary), "the token is on the argument list: {argv}");
    assert_eq!(output.stderr_tail, vec!["to stderr".to_string()]);
    assert!(output.ran_as.contains(&format!("beside engine pid {}", deployment.id)), "{}", output.ran_as);

    // Through the decorators: Retrying and RenderAs forward to the deployment they hold.
    let retrying = Retrying::new(fake_deployer(), 1);
    let held = retrying.deploy(&good_spec()).await.unwrap();
    retrying.wait_ready(&held, Duration::from_secs(60)).await.unwrap();
    let output = retrying.run_beside(&held, &beside_probe(Duration::from_secs(30), canary)).await.unwrap();
    assert_eq!(output.exit_code, Some(0), "{output:?}");
    retrying.teardown(&held).await.unwrap();
    let render_as = autodebug_deploy::RenderAs::new(fake_deployer(), fake_deployer());
    let held = render_as.deploy(&good_spec()).await.unwrap();
    render_as.wait_ready(&held, Duration::from_secs(60)).await.unwrap();
    let output = render_as.run_beside(&held, &beside_probe(Duration::from_secs(30), canary)).await.unwrap();
    assert_eq!(output.exit_code, Some(0), "{output:?}");
    render_as.teardown(&held).await.unwrap();

    deployer.teardown(&deployment).await.unwrap();
    let error = deployer.run_beside(&deployment, &beside_probe(Duration::from_secs(30), canary)).await.unwrap_err();
    assert!(error.to_string().contains("torn down"), "{error}");
}

#[tokio::test]
async fn a_command_beside_the_engine_that_runs_too_long_is_stopped_with_its_children() {
    let deployer = fake_deployer();
    let deployment = deployer.deploy(&good_spec()).await.unwrap();
    deployer.wait_ready(&deployment, Duration::from_secs(60)).await.unwrap();
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    let command = autodebug_core::beside::BesideCommand {
        program: "sh".into(),
        // A grandchild that ignores SIGTERM and holds the output pipes open.
        args: vec![
            "-c".into(),
            format!("(trap '' TERM; sleep 300) & echo $! > {}; echo started; wait", pid_file.path().display()),
        ],
        env: Vec::new(),
        timeout: Duration::from_millis(500),
    };
    let started = Instant::now();
    let output = deployer.run_beside(&deployment, &command).await.unwrap();
    assert!(output.timed_out && output.exit_code.is_none(), "{output:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert_eq!(output.stdout.trim(), "started");
    let grandchild: u32 = std::fs::read_to_string(pid_file.path()).unwrap().trim().parse().unwrap();
    assert!(wait_gone(grandchild, Duration::from_secs(5)), "the grandchild outlived the timeout");
    assert!(!process_gone(pid_of(&deployment)), "the engine itself must keep running");
    deployer.teardown(&deployment).await.unwrap();
}

#[tokio::test]
async fn a_missing_program_beside_the_engine_is_an_infrastructure_error_naming_it() {
    let deployer = fake_deployer();
    let deployment = deployer.deploy(&good_spec()).await.unwrap();
    deployer.wait_ready(&deployment, Duration::from_secs(60)).await.unwrap();
    let command = autodebug_core::beside::BesideCommand {
        program: "/nonexistent/autodebug".into(),
        args: Vec::new(),
        env: Vec::new(),
        timeout: Duration::from_secs(5),
    };
    let error = deployer.run_beside(&deployment, &command).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Infrastructure);
    assert!(error.to_string().contains("/nonexistent/autodebug") && error.to_string().contains("full path"), "{error}");
    // A dry run started nothing, so nothing runs beside it.
    let dry = DryRun::new(fake_deployer());
    let placeholder = dry.deploy(&good_spec()).await.unwrap();
    let error = dry.run_beside(&placeholder, &command).await.unwrap_err();
    assert!(error.to_string().contains("dry run"), "{error}");
    deployer.teardown(&deployment).await.unwrap();
}
