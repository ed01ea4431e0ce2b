//! The Slurm deployer against a REAL single-node Slurm (munge, slurmctld, slurmd from Debian's
//! packages), running the simulator as the batch job. Those tests are ignored in a plain
//! `cargo test`: the cluster is installed and started by `scripts/slurm-up.sh` (root; it writes
//! /etc/slurm/slurm.conf), which `.ci/setup.sh` runs. With `--include-ignored` a cluster that is not
//! up is a failure that says which command starts it.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use autodebug_core::testing::deployer_conformance;
use autodebug_core::{Deployer, EngineKind, ServiceSpec};
use autodebug_deploy::SlurmDeployer;

const NEEDS_SLURM: &str = "needs Slurm: bash scripts/slurm-up.sh, then cargo test --workspace -- --include-ignored";

/// Fails (naming the setup command) unless `sinfo` shows a node ready to take jobs.
fn require_slurm() {
    let output = std::process::Command::new("sinfo").args(["-h", "-o", "%T"]).output();
    let states = match &output {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => panic!("{NEEDS_SLURM} (sinfo failed: {})", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => panic!("{NEEDS_SLURM} (cannot run sinfo: {e})"),
    };
    let ready = states.lines().any(|state| matches!(state.trim(), "idle" | "mixed" | "allocated"));
    assert!(ready, "{NEEDS_SLURM} (no node is idle, mixed or allocated; sinfo says: {})", states.trim());
}

fn deployer(sim: PathBuf, dir: &std::path::Path) -> SlurmDeployer {
    SlurmDeployer::builder()
        .simulator_preset(sim)
        .gres(false) // this node has no GPU; the simulator models it
        .bind_host("127.0.0.1")
        .connect_host("127.0.0.1")
        .output_dir(dir)
        .time_limit("00:10:00")
        .build()
        .unwrap()
}

fn spec() -> ServiceSpec {
    ServiceSpec::new("slurm-sim", EngineKind::Sglang, "qwen1.5-0.5b")
        .with_gpu("H100:1")
        .with_flag("--schedule-policy", Some("lpm"))
}

#[tokio::test]
#[ignore = "needs Slurm: bash scripts/slurm-up.sh, then cargo test --workspace -- --include-ignored"]
async fn slurm_job_running_the_simulator_passes_the_conformance_suite() {
    require_slurm();
    let sim = support::simulator();
    let dir = tempfile::tempdir().unwrap();
    let slurm = deployer(sim, dir.path());
    let bad = spec().with_flag("--bogus-flag", None);
    deployer_conformance(&slurm, &spec(), &bad).await;
}

#[tokio::test]
#[ignore = "needs Slurm: bash scripts/slurm-up.sh, then cargo test --workspace -- --include-ignored"]
async fn a_job_that_fails_is_reported_with_its_output_and_leaves_nothing_queued() {
    require_slurm();
    let sim = support::simulator();
    let dir = tempfile::tempdir().unwrap();
    let slurm = deployer(sim, dir.path());
    let deployment = slurm.deploy(&spec().with_flag("--mem-fraction-static", Some("0.98"))).await.unwrap();
    let err = slurm.wait_ready(&deployment, Duration::from_secs(120)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("Slurm job {}", deployment.id)) && text.contains("FAILED"), "{text}");
    assert!(text.to_lowercase().contains("memory"), "the engine's OOM line is quoted: {text}");
    slurm.teardown(&deployment).await.unwrap();
    let queue = std::process::Command::new("squeue").args(["-h", "-j", &deployment.id]).output().unwrap();
    assert!(String::from_utf8_lossy(&queue.stdout).trim().is_empty(), "job still queued");
}

#[test]
fn the_rendered_sbatch_script_is_valid_bash_with_gres_and_the_engine_command() {
    let slurm = SlurmDeployer::builder()
        .program("python3")
        .args_template([
            "-m",
            "sglang.launch_server",
            "--model-path",
            "{model}",
            "--host",
            "{host}",
            "--port",
            "{port}",
            "{flags}",
        ])
        .partition("gpu")
        .mem("64G")
        .build()
        .unwrap();
    let script = slurm.render(&spec().with_flag("--tp-size", Some("2")).with_gpu("H100:2")).unwrap().content;
    assert!(script.contains("#SBATCH --gres=gpu:h100:2"), "{script}");
    assert!(script.contains("#SBATCH --partition=gpu") && script.contains("#SBATCH --mem=64G"));
    assert!(script.contains("--tp-size 2") && script.contains("--port \"$PORT\""), "{script}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.sbatch");
    std::fs::write(&path, &script).unwrap();
    let check = std::process::Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(check.success(), "bash -n rejected:\n{script}");
}

/// The step's own view: its job and step ids, whether the token and a variable of ours that was
/// not passed reached it, and the engine's health through the URL it was given.
fn step_probe(timeout: Duration, token: &str) -> autodebug_core::beside::BesideCommand {
    let script = r#"echo "step=$SLURM_JOB_ID.$SLURM_STEP_ID"; echo "token=${AUTODEBUG_BENCH_TOKEN:+set}"; echo "unpassed=${CARGO_MANIFEST_DIR:-absent}"; python3 -c 'import sys, urllib.request; print("health", urllib.request.urlopen(sys.argv[1] + "/health", timeout=10).status)' "$1""#;
    autodebug_core::beside::BesideCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into(), "probe".into(), autodebug_core::beside::SERVICE_URL.into()],
        env: vec![("AUTODEBUG_BENCH_TOKEN".into(), autodebug_core::Secret::new(token))],
        timeout,
    }
}

fn steps_of(job: &str) -> String {
    let out = std::process::Command::new("squeue").args(["-h", "-s", "-j", job, "-o", "%i %j"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
#[ignore = "needs Slurm: bash scripts/slurm-up.sh, then cargo test --workspace -- --include-ignored"]
async fn a_command_runs_as_a_step_of_the_service_job_and_one_past_its_timeout_is_cancelled() {
    require_slurm();
    let sim = support::simulator();
    let dir = tempfile::tempdir().unwrap();
    let slurm = deployer(sim, dir.path());
    let deployment = slurm.deploy(&spec()).await.unwrap();
    slurm.wait_ready(&deployment, Duration::from_secs(120)).await.unwrap();
    let job = deployment.id.clone();

    let canary = "canary-srun-step-0d4f2b";
    let output = slurm.run_beside(&deployment, &step_probe(Duration::from_secs(60), canary)).await.unwrap();
    assert_eq!(output.exit_code, Some(0), "{output:?}");
    assert!(output.stdout.contains(&format!("step={job}.")), "not a step of the service's job: {}", output.stdout);
    assert!(output.stdout.contains("token=set"), "the token did not reach the step: {}", output.stdout);
    assert!(!output.stdout.contains(canary));
    if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
        assert!(output.stdout.contains("unpassed=absent"), "the step got more than it was given: {}", output.stdout);
    }
    assert!(output.stdout.contains("health 200"), "the node-local URL does not reach the engine: {output:?}");
    assert!(output.ran_as.contains(&format!("Slurm job {job}")), "{}", output.ran_as);

    let sleeper = autodebug_core::beside::BesideCommand {
        program: "/bin/sleep".into(),
        args: vec!["300".into()],
        env: Vec::new(),
        timeout: Duration::from_secs(3),
    };
    let output = slurm.run_beside(&deployment, &sleeper).await.unwrap();
    assert!(output.timed_out, "{output:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while steps_of(&job).contains("autodebug-bench-") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!steps_of(&job).contains("autodebug-bench-"), "a timed-out step is left: {}", steps_of(&job));
    let state = std::process::Command::new("squeue").args(["-h", "-j", &job, "-o", "%T"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "RUNNING", "the service's job must go on");

    // A program that is not there: the step fails, and says so on its stderr.
    let missing = autodebug_core::beside::BesideCommand {
        program: "/nonexistent/bin/autodebug".into(),
        args: Vec::new(),
        env: Vec::new(),
        timeout: Duration::from_secs(60),
    };
    let output = slurm.run_beside(&deployment, &missing).await.unwrap();
    assert!(output.exit_code != Some(0) && !output.timed_out, "{output:?}");
    assert!(output.stderr_tail.join("\n").contains("/nonexistent/bin/autodebug"), "{output:?}");

    slurm.teardown(&deployment).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let queued = || {
        let out = std::process::Command::new("squeue").args(["-h", "-j", &job]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    while !queued().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(queued().is_empty(), "job still queued: {}", queued());
}

/// `GET path` on `base` (`http://host:port`) with an optional bearer key; the status code.
fn status_of(base: &str, path: &str, key: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the engine");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("a status line");
    String::from_utf8_lossy(&head[9..12]).parse().expect("a status code")
}

#[tokio::test]
#[ignore = "needs Slurm: bash scripts/slurm-up.sh, then cargo test --workspace -- --include-ignored"]
async fn the_engine_gets_its_key_from_the_jobs_environment_and_no_file_holds_it() {
    require_slurm();
    let sim = support::simulator();
    let dir = tempfile::tempdir().unwrap();
    let slurm = deployer(sim, dir.path());
    let key = "canary-slurm-engine-key-5e17";
    let deployment = slurm.deploy(&spec().with_flag("--api-key", Some(key))).await.unwrap();
    let ready = slurm.wait_ready(&deployment, Duration::from_secs(120)).await;
    let statuses = ready.as_ref().map(|endpoint| {
        let with_key = status_of(&endpoint.base_url, "/v1/models", Some(key));
        (endpoint.base_url.clone(), with_key, status_of(&endpoint.base_url, "/v1/models", None))
    });
    slurm.teardown(&deployment).await.unwrap();
    let (base_url, with_key, without) = statuses.unwrap();
    assert_eq!((with_key, without), (200, 401), "the engine at {base_url} answers its key only");
    // The submitted script and the job's output (what Slurm keeps as files) hold no key.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.contains(key), "{} holds the engine's key", path.display());
    }
}
