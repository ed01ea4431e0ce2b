//! `autodebug history` on a store filled by a real `autodebug demo` run (simulator over loopback).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use autodebug_core::store::Store;
use autodebug_core::{History, Objective};
use serde_json::Value;
use support::demo_db;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

fn autodebug(args: &[&str], db: &Path) -> Output {
    Command::new(BIN).args(args).arg("--db").arg(db).output().unwrap()
}

fn json_of(args: &[&str]) -> Value {
    let out = autodebug(args, demo_db());
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn history() -> (autodebug_core::store::SessionRecord, History, Store) {
    let store = Store::open(demo_db()).unwrap();
    let session = store.latest_session().unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    (session, history, store)
}

#[test]
fn list_shows_the_sessions_then_the_iterations_of_one() {
    let (session, history, store) = history();
    let sessions = json_of(&["history", "list", "--json"]);
    let listed = sessions["sessions"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], session.name);
    assert_eq!(listed[0]["iterations"], 3);
    let champion = store.champion(session.id).unwrap().unwrap();
    assert_eq!(listed[0]["champion"]["iteration"], champion.number);

    let iterations = json_of(&["history", "list", "--session", &session.name, "--json"]);
    let rows = iterations["iterations"].as_array().unwrap();
    assert_eq!(rows.len(), history.iterations.len());
    for (row, it) in rows.iter().zip(&history.iterations) {
        assert_eq!(row["number"], it.number);
        assert_eq!(row["objective_value"].as_f64(), session.objective.value(&it.metrics));
        assert_eq!(row["champion"], it.number == champion.number);
    }

    let text = autodebug(&["history", "list", "--session", &session.name], demo_db());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("{}*", champion.number)), "{text}");
}

#[test]
fn show_prints_one_iteration_and_names_the_ones_there_are() {
    let (_, history, _) = history();
    let shown = json_of(&["history", "show", "2", "--json"]);
    let it = &history.iterations[1];
    assert_eq!(shown["iteration"]["number"], 2);
    assert_eq!(shown["iteration"]["metrics"]["chat.e2e.mean"].as_f64(), it.metrics.get("chat.e2e.mean").copied());

    let text = String::from_utf8_lossy(&autodebug(&["history", "show", "2"], demo_db()).stdout).to_string();
    for part in ["iteration 2", "findings:", "planned next", &it.spec.flags.to_command_line()] {
        assert!(text.contains(part), "show lacks {part}: {text}");
    }

    let missing = autodebug(&["history", "show", "9"], demo_db());
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no finished iteration 9") && stderr.contains("1, 2, 3"), "{stderr}");
}

#[test]
fn diff_reports_config_metric_changes_and_per_request_tests() {
    let (session, history, store) = history();
    let (a, b) = (&history.iterations[0], &history.iterations[2]);
    let result = json_of(&["history", "diff", "1", "3", "--json"]);
    let diff = &result["diff"];
    let knobs: Vec<&str> = diff["config"].as_array().unwrap().iter().map(|c| c["knob"].as_str().unwrap()).collect();
    for (flag, _) in b.spec.flags.iter().filter(|(f, v)| a.spec.flags.get(f) != Some(*v)) {
        assert!(knobs.contains(&flag), "{flag} missing from {knobs:?}");
    }
    let metric = &session.objective.metric;
    let row =
        diff["metrics"].as_array().unwrap().iter().find(|m| m["name"] == *metric).expect("objective metric compared");
    let expected = (b.metrics[metric] - a.metrics[metric]) / a.metrics[metric] * 100.0;
    assert!((row["change_pct"].as_f64().unwrap() - expected).abs() < 1e-9);
    assert_eq!(row["outside_noise"], expected.abs() > session.objective.noise_pct);

    // Both demo plans saved per-request records, so each gets e2e and TTFT tests.
    let samples = diff["samples"].as_array().unwrap();
    for plan in store.bench_plans(session.id, 1).unwrap() {
        let records = store.bench_records(session.id, 1, &plan).unwrap();
        let ok = records.iter().filter(|r| r.error.is_none() && r.e2e_ns.is_some()).count();
        let e2e =
            samples.iter().find(|s| s["plan"] == plan.as_str() && s["metric"] == "e2e").expect("e2e test per plan");
        assert_eq!(e2e["n_a"], ok);
        let p = e2e["mann_whitney_p"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
    }

    let all = json_of(&["history", "diff", "1", "3", "--all", "--json"]);
    assert!(all["diff"]["metrics"].as_array().unwrap().len() > diff["metrics"].as_array().unwrap().len());
}

#[test]
fn best_uses_the_session_objective_or_the_one_given() {
    let (session, history, store) = history();
    let best = json_of(&["history", "best", "--json"]);
    assert_eq!(best["champion"]["iteration"], store.champion(session.id).unwrap().unwrap().number);

    let best = json_of(&["history", "best", "--objective", "maximize concurrent.output_throughput", "--json"]);
    let mut objective = Objective::maximize("concurrent.output_throughput");
    objective.constraints = session.objective.constraints.clone();
    let expected = history.champion(&objective).unwrap();
    assert_eq!(best["champion"]["iteration"], expected.number);
    let values: Vec<f64> = best["ranking"].as_array().unwrap().iter().map(|r| r["value"].as_f64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "ranking best first: {values:?}");

    let bad = autodebug(&["history", "best", "--objective", "shrink ttft"], demo_db());
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--objective"));
}

#[test]
fn pareto_front_points_are_not_dominated_and_the_others_are() {
    let (_, history, _) = history();
    let result = json_of(&["history", "pareto", "--x", "ttft.p99", "--y", "output_throughput", "--json"]);
    let points = result["pareto"]["points"].as_array().unwrap();
    assert_eq!(points.len(), history.iterations.len());
    let value = |n: u64, m: &str| history.iterations.iter().find(|i| i.number as u64 == n).unwrap().metrics[m];
    // ttft.p99 minimized, output_throughput maximized.
    let dominates = |p: u64, q: u64| {
        let (px, py, qx, qy) =
            (value(p, "ttft.p99"), value(p, "output_throughput"), value(q, "ttft.p99"), value(q, "output_throughput"));
        px <= qx && py >= qy && (px != qx || py != qy)
    };
    for point in points {
        let n = point["iteration"].as_u64().unwrap();
        let others: Vec<u64> = history.iterations.iter().map(|i| i.number as u64).filter(|m| *m != n).collect();
        if point["on_front"].as_bool().unwrap() {
            assert!(others.iter().all(|m| !dominates(*m, n)), "{n} is dominated yet on the front");
        } else {
            assert!(dominates(point["dominated_by"].as_u64().unwrap(), n));
        }
    }
    // Flipping y's direction changes what "dominated" means.
    let flipped =
        json_of(&["history", "pareto", "--x", "ttft.p99", "--y", "output_throughput", "--y-dir", "min", "--json"]);
    assert_eq!(flipped["pareto"]["y"]["direction"], "minimize");
}

#[test]
fn a_missing_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("nope.db");
    let out = autodebug(&["history", "list"], &db);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nope.db") && stderr.contains("autodebug demo"), "{stderr}");
    assert!(!db.exists(), "reading never creates a store");
}
