//! `autodebug sim chaos` end to end: the loop as a real child process, the simulator as real
//! engine processes over loopback HTTP, faults at every stage, SIGKILL and resume, a full disk
//! (RLIMIT_FSIZE) and a corrupt store; the campaign's own invariant checks must all hold.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

fn campaign(args: &[&str], dir: &std::path::Path) -> (std::process::ExitStatus, serde_json::Value, String) {
    let output = Command::new(BIN).args(["sim", "chaos", "--json", "--dir"]).arg(dir).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}\n{stderr}", String::from_utf8_lossy(&output.stdout)));
    (output.status, report, stderr)
}

#[test]
fn a_campaign_with_every_fault_class_loses_leaks_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (status, report, stderr) =
        campaign(&["--iterations", "60", "--faults", "all", "--rate", "0.8", "--seed", "11"], dir.path());
    let invariants = &report["invariants"];
    for name in [
        "iterations_lost",
        "orphans_left",
        "invalid_configs_deployed",
        "secret_leaks",
        "control_bytes_in_outputs",
        "faults_unrecorded",
        "unexpected_exits",
    ] {
        assert_eq!(invariants[name], 0, "{name}: {:#}\n{stderr}", report["details"]);
    }
    assert!(status.success(), "{report:#}\n{stderr}");
    assert!(report["iterations"].as_u64().unwrap() >= 60, "{report:#}");
    let faults = report["faults"].as_object().unwrap();
    for process_fault in ["sigkill", "disk_full", "corrupt_store"] {
        assert!(faults.contains_key(process_fault), "{process_fault} was not injected: {faults:?}");
    }
    assert!(faults.len() >= 14, "only {} fault classes injected: {faults:?}", faults.len());
    // The canary was planted where the loop reads it, and the loop did run with it: the LLM
    // planner was asked, and the trail exists.
    assert!(report["llm_prompts"].as_u64().unwrap() > 0, "{report:#}");
    let trail = std::fs::read_dir(dir.path().join("sessions")).unwrap().count();
    assert!(trail > 60, "{trail} files in the trail");
}

#[test]
fn a_campaign_without_faults_runs_clean_and_a_bad_fault_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (status, report, stderr) = campaign(&["--iterations", "6", "--faults", "none"], dir.path());
    assert!(status.success(), "{report:#}\n{stderr}");
    assert_eq!(report["faults"].as_object().unwrap().len(), 0, "{report:#}");
    // Without faults every iteration measured something.
    assert_eq!(report["iterations"], 6);

    let output = Command::new(BIN).args(["sim", "chaos", "--faults", "stall,bitflip"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`bitflip`") && stderr.contains("stream_cut"), "{stderr}");
}
