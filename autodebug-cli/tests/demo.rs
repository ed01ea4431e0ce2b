//! The `autodebug` binary end to end, on the simulator as a real child process over real HTTP on
//! loopback: the demo's trail, store and improvement; SIGKILL mid-iteration then `--resume`; bad input.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autodebug_core::store::Store;
use autodebug_core::{IterationStatus, SignalKind};

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.retain(|n| n.starts_with(prefix));
    names.sort();
    names
}

#[test]
fn demo_writes_the_trail_and_its_champion_beats_the_baseline_citing_telemetry() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["demo", "--iterations", "4", "--json", "--out"])
        .arg(out.path())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "demo failed: {}", String::from_utf8_lossy(&output.stdout));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");

    assert_eq!(files_with_prefix(out.path(), "debug-").len(), 4);
    assert_eq!(files_with_prefix(out.path(), "local-").len(), 4, "one deployable config per iteration");
    assert_eq!(report["iterations"].as_array().unwrap().len(), 4);
    for key in ["baseline", "champion"] {
        assert_eq!(report[key]["metric"], "chat.e2e.mean", "{key}: {}", report[key]);
        assert!(report[key]["value"].as_f64().unwrap() > 0.0);
    }
    // The published run's second iteration cut TBOT 6% (1.51 -> 1.42 ms): a gain of that order, no
    // more is claimed (speculation is no longer proposed without predictable output).
    let improvement = report["improvement_pct"].as_f64().unwrap();
    assert!(improvement >= 3.0, "champion improves only {improvement:.1}% on the baseline");

    // The chat objective is bounded by the concurrent plan (1.2x the baseline's mean e2e as the
    // simulator predicts it): the measured baseline meets the bound, so the prediction it rests on
    // holds, and the champion does not buy its chat latency with the concurrent plan. The 1.25 is
    // the bound's 1.2 plus room for a measured baseline a few percent under the prediction.
    let objective = report["objective"].as_str().unwrap();
    assert!(objective.contains("concurrent.e2e.mean <="), "{objective}");
    let iterations = report["iterations"].as_array().unwrap();
    assert_eq!(iterations[0]["feasible"], true, "the baseline breaks its own bound: {}", iterations[0]["metrics"]);
    let concurrent = |key: &str| {
        let number = report[key]["iteration"].as_u64().unwrap() as usize;
        iterations[number - 1]["metrics"]["concurrent.e2e.mean"].as_f64().unwrap()
    };
    let (base, best) = (concurrent("baseline"), concurrent("champion"));
    assert!(best <= base * 1.25, "the champion's concurrent e2e is {best:.1} ms against the baseline's {base:.1} ms");

    // Every planned change cites at least one signal from that iteration's telemetry (not only
    // the client's own figures), and that signal is in the iteration's Analysis section.
    let store = Store::open(&out.path().join("autodebug.db")).unwrap();
    let session = store.latest_session().unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    assert_eq!(history.iterations.len(), 4);
    for it in &history.iterations {
        assert_eq!(it.status, IterationStatus::Ok);
        let plan = it.plan.as_ref().expect("every iteration plans the next one");
        for change in &plan.changes {
            let telemetry: Vec<_> = change.evidence.iter().filter(|s| s.kind != SignalKind::Bench).collect();
            assert!(!telemetry.is_empty(), "iteration {}: change {} cites no telemetry", it.number, change.knob);
            for signal in telemetry {
                assert!(
                    it.analysis.cited.iter().any(|c| c.key() == signal.key()),
                    "iteration {}: {} is cited by a change but not in the analysis",
                    it.number,
                    signal.name
                );
            }
        }
    }
    // The published first step: continuous decode steps, mixed chunk and lpm from the baseline.
    let first: Vec<&str> =
        history.iterations[0].plan.as_ref().unwrap().changes.iter().map(|c| c.knob.as_str()).collect();
    for knob in ["--num-continuous-decode-steps", "--enable-mixed-chunk", "--schedule-policy"] {
        assert!(first.contains(&knob), "first plan {first:?} lacks {knob}");
    }
    let log = std::fs::read_to_string(out.path().join(&files_with_prefix(out.path(), "debug-")[0])).unwrap();
    for section in
        ["**Metrics**", "**Analysis**", "**Findings**", "**Planned changes**", "**Config changes from previous**"]
    {
        assert!(log.contains(section), "debug log lacks {section}");
    }
    assert!(log.contains("Profile `sglang.scheduler.Scheduler.run_batch`"), "{log}");
}

fn write_config(dir: &Path, iterations: u32) -> std::path::PathBuf {
    write_config_with(dir, iterations, 40, "")
}

/// The simulator session of these tests, `requests` per iteration, with `extra` top-level YAML.
fn write_config_with(dir: &Path, iterations: u32, requests: u32, extra: &str) -> std::path::PathBuf {
    let path = dir.join("autodebug.yaml");
    let text = format!(
        r#"session: killed
sessions_dir: {}
deployer:
  kind: simulator
service:
  engine: sglang
  model: Qwen/Qwen1.5-0.5B-Chat
  gpu: H100:1
bench:
  - name: chat
    prompt_tokens: 31
    output_tokens: 150
    repeat_prompt: true
    requests: {requests}
objective:
  minimize: e2e.mean
  constraints: ["error_rate == 0"]
budget:
  iterations: {iterations}
{extra}"#,
        dir.join("sessions").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push(child);
        }
    }
    children
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
}

#[test]
fn sigkill_mid_iteration_loses_no_finished_iteration_leaves_no_engine_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 5);
    let sessions = dir.path().join("sessions");
    let mut child = Command::new(BIN)
        .args(["run", "-q", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Wait until iteration 1 is recorded and iteration 2's engine is up.
    let deadline = Instant::now() + Duration::from_secs(120);
    let engines = loop {
        assert!(Instant::now() < deadline, "iteration 2 never started");
        assert!(child.try_wait().unwrap().is_none(), "autodebug exited early");
        let engines = children_of(child.id());
        if files_with_prefix(&sessions, "debug-").len() == 1 && !engines.is_empty() {
            break engines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while engines.iter().any(|&pid| alive(pid)) {
        assert!(Instant::now() < deadline, "engine processes {engines:?} outlived autodebug");
        std::thread::sleep(Duration::from_millis(50));
    }

    let store = Store::open(&sessions.join("autodebug.db")).unwrap();
    let session = store.session_by_name("killed").unwrap().unwrap();
    let before = store.history(session.id).unwrap();
    assert_eq!(before.iterations.len(), 1, "the finished iteration survived the kill");
    drop(store);

    let output =
        Command::new(BIN).args(["run", "-q", "--resume", "--iterations", "1", "-c"]).arg(&config).output().unwrap();
    assert!(output.status.success(), "resume failed: {}", String::from_utf8_lossy(&output.stderr));
    let store = Store::open(&sessions.join("autodebug.db")).unwrap();
    let after = store.history(session.id).unwrap();
    let numbers: Vec<u32> = after.iterations.iter().map(|i| i.number).collect();
    assert_eq!(numbers, [1, 2], "iteration 2 was redone after the kill");
    assert_eq!(after.iterations[0], before.iterations[0], "iteration 1 is untouched");
    assert!(store.unfinished(session.id).unwrap().is_empty());
}

#[test]
fn bad_input_gets_a_clear_error_naming_the_file_or_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1);
    let text = std::fs::read_to_string(&config).unwrap().replace("budget:", "budgte:");
    std::fs::write(&config, text).unwrap();
    let output = Command::new(BIN).args(["run", "-c"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("autodebug.yaml") && stderr.contains("budgte"), "{stderr}");

    let config = write_config(dir.path(), 1);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("  gpu: H100:1\n", "  gpu: H100:1\n  flags:\n    --rm-rf: /\n");
    std::fs::write(&config, text).unwrap();
    let output = Command::new(BIN).args(["run", "-c"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--rm-rf"), "{stderr}");
    assert!(
        !dir.path().join("sessions").join("autodebug.db").exists()
            || files_with_prefix(&dir.path().join("sessions"), "debug-").is_empty()
    );
}

#[test]
fn ctrl_c_finishes_the_current_step_records_it_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 10);
    let sessions = dir.path().join("sessions");
    let mut child = Command::new(BIN)
        .args(["run", "-q", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Interrupt while iteration 1's engine is up.
    let deadline = Instant::now() + Duration::from_secs(120);
    let engines = loop {
        assert!(Instant::now() < deadline, "the engine never started");
        let engines = children_of(child.id());
        if !engines.is_empty() {
            break engines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "autodebug did not exit after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(engines.iter().all(|&pid| !alive(pid)), "engine left behind after Ctrl-C");

    let store = Store::open(&sessions.join("autodebug.db")).unwrap();
    let session = store.session_by_name("killed").unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    assert_eq!(history.iterations.len(), 1, "the interrupted iteration is recorded, nothing after it");
    assert!(store.unfinished(session.id).unwrap().is_empty());
    assert_eq!(files_with_prefix(&sessions, "debug-").len(), 1, "its log is written");
}

/// The iterations of each round, by round number.
fn rounds(history: &autodebug_core::History) -> std::collections::BTreeMap<u32, Vec<&autodebug_core::Iteration>> {
    let mut rounds = std::collections::BTreeMap::new();
    for it in &history.iterations {
        let round = it.round.unwrap_or_else(|| panic!("iteration {} of a parallel session has no round", it.number));
        rounds.entry(round).or_insert_with(Vec::new).push(it);
    }
    rounds
}

#[test]
fn parallel_rounds_run_side_by_side_each_reading_its_own_engine() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), 7, 12, "parallel: 3\n");
    let output = Command::new(BIN).args(["run", "-q", "--json", "-c"]).arg(&config).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let store = Store::open(&dir.path().join("sessions").join("autodebug.db")).unwrap();
    let session = store.session_by_name("killed").unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    let numbers: Vec<u32> = history.iterations.iter().map(|i| i.number).collect();
    assert_eq!(numbers, (1..=7).collect::<Vec<_>>());
    let rounds = rounds(&history);
    assert!(rounds.values().all(|r| r.len() <= 3), "a round has more slots than `parallel`");
    assert!(rounds.values().any(|r| r.len() == 3), "no round filled its 3 slots: {:?}", rounds.keys());
    for (round, members) in &rounds {
        let flags: std::collections::BTreeSet<String> =
            members.iter().map(|i| i.spec.flags.to_command_line()).collect();
        assert_eq!(flags.len(), members.len(), "round {round} measured one configuration twice");
        if members.len() > 1 {
            // Side by side: every slot started before any slot of its round finished.
            let last_start = members.iter().map(|i| i.started_ns).max().unwrap();
            let first_end = members.iter().map(|i| i.finished_ns).min().unwrap();
            assert!(last_start < first_end, "round {round} ran its slots one after another");
            // Each slot's artifact is what that slot deployed, under its own name.
            let services: std::collections::BTreeSet<String> = members
                .iter()
                .map(|i| {
                    let artifact = i.artifact.as_ref().map(|a| a.content.clone()).unwrap_or_default();
                    let service = artifact.split('`').nth(1).unwrap_or_default().to_string();
                    assert!(service.contains("-s"), "iteration {}: {artifact}", i.number);
                    service
                })
                .collect();
            assert_eq!(services.len(), members.len(), "round {round}: {services:?}");
        }
    }
    let mut own_setting_seen = 0;
    for it in history.iterations.iter().filter(|i| i.is_ok()) {
        assert!(
            !it.analysis.findings.iter().any(|f| f.rule == "config.not_applied"),
            "iteration {} read another slot's engine: {:?}",
            it.number,
            it.analysis.findings
        );
        // The engine it measured reports this iteration's own setting.
        let reported = it.analysis.cited.iter().find(|s| s.name == "sglang.startup.num_continuous_decode_steps");
        if let (Some(Some(steps)), Some(reported)) = (it.spec.flags.get("--num-continuous-decode-steps"), reported) {
            assert_eq!(reported.value.as_text(), steps, "iteration {}", it.number);
            own_setting_seen += 1;
        }
    }
    assert!(own_setting_seen > 0, "no iteration cited its engine's own decode-steps setting");
}

#[test]
fn sigkill_in_a_parallel_round_keeps_finished_rounds_and_resume_completes_the_open_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), 9, 40, "parallel: 3\n");
    let sessions = dir.path().join("sessions");
    let mut child = Command::new(BIN)
        .args(["run", "-q", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Round 1 is recorded (its trail is written when it closes) and round 2's engines are up.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "round 2 never started");
        assert!(child.try_wait().unwrap().is_none(), "autodebug exited early");
        if !files_with_prefix(&sessions, "debug-").is_empty() && children_of(child.id()).len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();

    let store = Store::open(&sessions.join("autodebug.db")).unwrap();
    let session = store.session_by_name("killed").unwrap().unwrap();
    let before = store.history(session.id).unwrap();
    let running = store.unfinished(session.id).unwrap();
    assert!(!before.iterations.is_empty() && !running.is_empty(), "the kill missed the round: {running:?}");
    drop(store);

    let output =
        Command::new(BIN).args(["run", "-q", "--resume", "--iterations", "3", "-c"]).arg(&config).output().unwrap();
    assert!(output.status.success(), "resume failed: {}", String::from_utf8_lossy(&output.stderr));
    let store = Store::open(&sessions.join("autodebug.db")).unwrap();
    let after = store.history(session.id).unwrap();
    assert!(store.unfinished(session.id).unwrap().is_empty());
    for old in &before.iterations {
        let now = after.iterations.iter().find(|i| i.number == old.number).unwrap();
        assert_eq!(now, old, "finished iteration {} was redone", old.number);
    }
    for number in &running {
        assert!(after.iterations.iter().any(|i| i.number == *number), "slot {number} was not completed");
    }
    let numbers: Vec<u32> = after.iterations.iter().map(|i| i.number).collect();
    assert_eq!(numbers, (1..=numbers.len() as u32).collect::<Vec<_>>(), "numbers skipped or repeated");
    rounds(&after);
}
