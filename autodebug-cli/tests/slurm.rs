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

fn our_jobs(service: &str) -> Vec<String> {
    let output = Command::new("squeue").args(["-h", "-o", "%j %T"]).output().expect("squeue");
    String::from_utf8_lossy(&output.stdout).lines().filter(|l| l.contains(service)).map(str::to_string).collect()
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
deployer:
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
bench:
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
            jobs = dir.path().join("jobs").display(),
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
