//! `autodebug export` (CSV, JSON, markdown issue / PR) on a store filled by a real `autodebug demo` run.

mod support;

use std::process::{Command, Output};

use autodebug_core::store::Store;
use serde_json::Value;
use support::demo_db;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

fn export(args: &[&str]) -> Output {
    let out = Command::new(BIN).arg("export").args(args).arg("--db").arg(demo_db()).output().unwrap();
    assert!(out.status.success() || args.contains(&"--template"), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn session() -> (autodebug_core::store::SessionRecord, autodebug_core::History, u32) {
    let store = Store::open(demo_db()).unwrap();
    let session = store.latest_session().unwrap().unwrap();
    let champion = store.champion(session.id).unwrap().unwrap().number;
    let history = store.history(session.id).unwrap();
    (session, history, champion)
}

#[test]
fn csv_has_one_row_per_iteration_and_a_column_per_metric() {
    let (session, history, champion) = session();
    let text = String::from_utf8(export(&["--format", "csv"]).stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + history.iterations.len());
    let header: Vec<&str> = lines[0].split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"));
    let metric = column(&session.objective.metric);
    let champion_column = column("champion");
    for (line, it) in lines[1..].iter().zip(&history.iterations) {
        // The demo's flags hold no commas or quotes, so a plain split is exact.
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{line}");
        assert_eq!(cells[metric].parse::<f64>().unwrap(), it.metrics[&session.objective.metric]);
        assert_eq!(cells[champion_column], (it.number == champion).to_string());
    }
}

#[test]
fn json_holds_the_iterations_and_the_champion() {
    let (_, history, champion) = session();
    let value: Value = serde_json::from_slice(&export(&["--json"]).stdout).unwrap();
    assert_eq!(value["iterations"].as_array().unwrap().len(), history.iterations.len());
    assert_eq!(value["champion"]["iteration"], champion);
    assert_eq!(value["baseline"]["iteration"], history.iterations[0].number);
    assert!(value["improvement_pct"].as_f64().unwrap() > 0.0);
}

#[test]
fn markdown_templates_are_shaped_as_an_issue_and_a_pull_request() {
    let (_, history, champion) = session();
    let best = history.iterations.iter().find(|i| i.number == champion).unwrap();
    let base = &history.iterations[0];
    let issue = String::from_utf8(export(&["--format", "markdown", "--template", "issue"]).stdout).unwrap();
    for section in ["## Context", "## Results", "## Champion", "## Changes tried", "## How to reproduce"] {
        assert!(issue.contains(section), "issue lacks {section}");
    }
    assert!(issue.contains(&best.spec.flags.to_command_line()));
    assert_eq!(
        issue.lines().filter(|l| l.starts_with("| ")).count(),
        1 + history.iterations.len(),
        "header + one row per iteration"
    );

    let pr = String::from_utf8(export(&["--format", "markdown", "--template", "pr"]).stdout).unwrap();
    for section in [
        "## Summary",
        "## Configuration changes",
        "## Results (baseline vs proposed)",
        "## Evidence",
        "## How to reproduce",
    ] {
        assert!(pr.contains(section), "pr lacks {section}");
    }
    for (flag, _) in best.spec.flags.iter().filter(|(f, _)| !base.spec.flags.contains(f)) {
        assert!(pr.contains(&format!("`{flag}`")), "pr lacks the changed flag {flag}");
    }
}

#[test]
fn out_writes_a_file_and_templates_need_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reports/results.csv");
    let out = export(&["--format", "csv", "--out", path.to_str().unwrap()]);
    assert!(out.stdout.is_empty());
    assert!(std::fs::read_to_string(&path).unwrap().starts_with("session,iteration,status"));

    let bad = export(&["--format", "csv", "--template", "pr"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--template"));
}
