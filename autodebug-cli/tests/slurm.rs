//! The loop through a REAL single-node Slurm (`scripts/slurm-up.sh`), the simulator as the batch
//! jobs: a parallel session runs its rounds as jobs side by side, each slot read on its own
//! engine, and leaves no job behind. Ignored in a plain `cargo test`; CI sets Slurm up.

use std::process::Command;

use autodebug_core::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");
const NEEDS_SLURM: &str = "needs Slurm: bash scripts/slurm-up.sh, then cargo test --workspace -- --include-ignored";

fn require_slurm() {
    let output = Command::new("sinfo").args(["-h", "-o", "%T"]).output();
    let states = match &output {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => panic!("{NEEDS_SLURM} (sinfo failed or is missing: {output:?})"),
    };
    assert!(
        states.lines().any(|s| matches!(s.trim(), "idle" | "mixed" | "allocated")),
        "{NEEDS_SLURM} (no node takes jobs: {states})"
    );
}

/// Jobs of `service` still in the queue, once those cancelled have had a bounded while to leave
/// it: `scancel` returns while a job is still COMPLETING.
fn our_jobs(service: &str) -> Vec<String> {
    let queued = || {
        let output = Command::new("squeue").args(["-h", "-o", "%j %T"]).output().expect("squeue");
        String::from_utf8_lossy(&output.stdout).lines().filter(|l| l.contains(service)).map(str::to_string).collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut left: Vec<String> = queued();
    while left.iter().all(|job| job.ends_with("COMPLETING")) && !left.is_empty() && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(250));
        left = queued();
    }
    left
}

/// The `deployer:` and `service:` sections of a session on this Slurm: the simulator as each
/// job's engine, its jobs' files under `jobs`.
fn slurm_service(jobs: &std::path::Path, service: &str) -> String {
    format!(
        r#"deployer:
  kind: slurm
  program: {BIN}
  args: [sim, serve, --engine, "{{engine}}", --gpu, "{{gpu}}", --model, "{{model}}", --host, "{{host}}", --port, "{{port}}", --, "{{flags}}"]
  gres: false
  bind_host: 127.0.0.1
  connect_host: 127.0.0.1
  output_dir: {jobs}
  time_limit: "00:10:00"
  ready_timeout_s: 90
service:
  name: {service}
  engine: sglang
  model: Qwen/Qwen1.5-0.5B-Chat
  gpu: H100:1
"#,
        jobs = jobs.display()
    )
}

#[test]
#[ignore = "needs Slurm: bash scripts/slurm-up.sh, then cargo test --workspace -- --include-ignored"]
fn a_parallel_session_runs_three_slurm_jobs_per_round_and_leaves_none() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let service = format!("par-{}", std::process::id());
    let config = dir.path().join("autodebug.yaml");
    std::fs::write(
        &config,
        format!(
            r#"session: slurm-rounds
sessions_dir: {sessions}
{slurm_service}bench:
  - name: chat
    prompt_tokens: 31
    output_tokens: 64
    requests: 12
objective:
  minimize: e2e.mean
  constraints: ["error_rate == 0"]
telemetry: [prometheus, logs]
planner: random
seed: 3
budget:
  iterations: 6
parallel: 3
"#,
            sessions = dir.path().join("sessions").display(),
            slurm_service = slurm_service(&dir.path().join("jobs"), &service),
        ),
    )
    .unwrap();
    let output = Command::new(BIN).args(["run", "-q", "--json", "-c"]).arg(&config).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let store = Store::open(&dir.path().join("sessions").join("autodebug.db")).unwrap();
    let session = store.session_by_name("slurm-rounds").unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    let by_round = |r: u32| history.iterations.iter().filter(|i| i.round == Some(r)).collect::<Vec<_>>();
    for round in [1, 2] {
        let members = by_round(round);
        assert_eq!(
            members.len(),
            3,
            "round {round}: {:?}",
            history.iterations.iter().map(|i| (i.number, i.round)).collect::<Vec<_>>()
        );
        assert!(
            members.iter().all(|i| i.is_ok()),
            "round {round}: {:?}",
            members.iter().map(|i| &i.error).collect::<Vec<_>>()
        );
        let last_start = members.iter().map(|i| i.started_ns).max().unwrap();
        let first_end = members.iter().map(|i| i.finished_ns).min().unwrap();
        assert!(last_start < first_end, "round {round}'s jobs ran one after another");
    }
    // Each engine's startup line (ServerArgs) is compared with the flags of the iteration that
    // read it: a log or scrape from another slot of the round, whose flags differ, would be a
    // `config.not_applied` finding.
    let flags: std::collections::BTreeSet<String> =
        history.iterations.iter().map(|i| i.spec.flags.to_command_line()).collect();
    assert_eq!(flags.len(), history.iterations.len(), "two iterations ran one configuration");
    for it in &history.iterations {
        assert!(
            !it.analysis.findings.iter().any(|f| f.rule == "config.not_applied"),
            "iteration {} read another job's engine: {:?}",
            it.number,
            it.analysis.findings.iter().map(|f| &f.summary).collect::<Vec<_>>()
        );
    }
    let left = our_jobs(&service);
    assert!(left.is_empty(), "jobs left behind: {left:?}");
}

#[test]
#[ignore = "needs Slurm: bash scripts/slurm-up.sh, then cargo test --workspace -- --include-ignored"]
fn a_session_benchmarks_as_a_step_of_each_service_job_and_leaves_none() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let service = format!("beside-{}", std::process::id());
    let canary = "canary-slurm-beside-8a21c4";
    // Beside the service: this binary, through a wrapper that notes what each step got.
    let log = dir.path().join("steps.log");
    let wrapper = dir.path().join("autodebug-beside.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf 'argv: %s\\n' \"$*\" >> '{log}'\necho \"step=$SLURM_JOB_ID.$SLURM_STEP_ID token=${{AUTODEBUG_BENCH_TOKEN:+set}}\" >> '{log}'\nexec '{BIN}' \"$@\"\n",
            log = log.display()
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&wrapper, permissions).unwrap();
    let config = dir.path().join("autodebug.yaml");
    std::fs::write(
        &config,
        format!(
            r#"session: slurm-beside
sessions_dir: {sessions}
{slurm_service}bench:
  - name: chat
    prompt_tokens: 31
    output_tokens: 32
    requests: 6
  - name: burst
    prompt_tokens: 64
    output_tokens: 16
    concurrency: 4
    requests: 8
objective:
  minimize: e2e.mean
  constraints: ["error_rate == 0"]
telemetry: [prometheus, logs]
planner: rules
budget:
  iterations: 2
bench_beside:
  program: {wrapper}
"#,
            sessions = dir.path().join("sessions").display(),
            slurm_service = slurm_service(&dir.path().join("jobs"), &service),
            wrapper = wrapper.display(),
        ),
    )
    .unwrap();
    // The bench token comes from this environment (as it would for the local benchmarker) and
    // must reach each step through srun's environment only.
    let output = Command::new(BIN)
        .args(["run", "-vv", "--json", "-c"])
        .arg(&config)
        .env("AUTODEBUG_BENCH_TOKEN", canary)
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for (what, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        assert!(!String::from_utf8_lossy(bytes).contains(canary), "the session's {what} shows the token");
    }

    let store = Store::open(&dir.path().join("sessions").join("autodebug.db")).unwrap();
    let session = store.session_by_name("slurm-beside").unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    assert!(history.iterations[0].is_ok(), "{:?}", history.iterations[0].error);
    let mut jobs = std::collections::BTreeSet::new();
    for iteration in history.iterations.iter().filter(|i| i.is_ok()) {
        let finding = iteration.analysis.findings.iter().find(|f| f.rule == "session.bench_beside").unwrap();
        assert_eq!(finding.evidence.len(), 2, "{}", finding.summary);
        for signal in &finding.evidence {
            let step =
                signal.labels.get("slurm_step").unwrap_or_else(|| panic!("not a Slurm step: {}", finding.summary));
            let (job, step_id) = step.split_once('.').unwrap();
            assert!(job.parse::<u64>().is_ok() && step_id.parse::<u64>().is_ok(), "{step}");
            assert!(finding.summary.contains(&format!("of Slurm job {job}")), "{}", finding.summary);
            jobs.insert(job.to_string());
        }
    }
    assert_eq!(jobs.len(), history.iterations.iter().filter(|i| i.is_ok()).count(), "one service job per iteration");
    let steps = std::fs::read_to_string(&log).unwrap();
    assert!(!steps.contains(canary), "a step's argument list shows the token:\n{steps}");
    let noted: Vec<&str> = steps.lines().filter(|l| l.starts_with("step=")).collect();
    assert!(!noted.is_empty() && noted.iter().all(|l| l.ends_with("token=set")), "{steps}");
    let mut files = Vec::new();
    files_under(&dir.path().join("sessions"), &mut files);
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(canary), "{} holds the token", file.display());
    }
    let left = our_jobs(&service);
    assert!(left.is_empty(), "jobs left behind: {left:?}");
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() { files_under(&path, out) } else { out.push(path) }
    }
}
