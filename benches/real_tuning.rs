//! Planners measured on a REAL engine with the same deploy budget, from the engine's defaults: each
//! planner runs `autodebug run` on the same configuration file (its own sessions folder, its own
//! seed per repetition), and the table says, per planner, how much it improved on the defaults
//! (confirmed by interleaved re-runs when the file asks for them), how many deploys it needed to get
//! within 2% (and, for scale against run-to-run noise, 10%) of the best configuration ANY run
//! measured, how many deploys failed, and its wall time.
//!
//! ```text
//! cargo build --release -p autodebug-cli -p autodebug-benches
//! ./target/release/real_tuning --config examples/llamacpp-local.yaml --planners hybrid,rules,random \
//!     --deploys 10 --reps 2 --json /tmp/llamacpp-tuning.json
//! # the table again from a saved run, without an engine:
//! ./target/release/real_tuning --config examples/llamacpp-local.yaml --from /tmp/llamacpp-tuning.json
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use autodebug_benches::median;

use serde_json::{Value, json};

struct Options {
    config: PathBuf,
    planners: Vec<String>,
    deploys: u32,
    reps: u32,
    confirm_trials: u32,
    autodebug: PathBuf,
    out: PathBuf,
    json: Option<PathBuf>,
    from: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: real_tuning --config FILE [--planners hybrid,rules,random] [--deploys 10] [--reps 2] \
         [--confirm-trials 0] [--autodebug PATH] [--out DIR] [--json FILE] [--from SAVED_JSON]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let mut o = Options {
        config: PathBuf::new(),
        planners: vec!["hybrid".into(), "rules".into(), "random".into()],
        deploys: 10,
        reps: 2,
        confirm_trials: 0,
        autodebug: exe_dir.join("autodebug"),
        out: std::env::temp_dir().join("autodebug-real-tuning"),
        json: None,
        from: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--config" => o.config = value().into(),
            "--planners" => o.planners = value().split(',').map(str::to_string).collect(),
            "--deploys" => o.deploys = value().parse().unwrap_or_else(|_| usage()),
            "--reps" => o.reps = value().parse().unwrap_or_else(|_| usage()),
            "--confirm-trials" => o.confirm_trials = value().parse().unwrap_or_else(|_| usage()),
            "--autodebug" => o.autodebug = value().into(),
            "--out" => o.out = value().into(),
            "--json" => o.json = Some(value().into()),
            "--from" => o.from = Some(value().into()),
            _ => usage(),
        }
    }
    if o.config.as_os_str().is_empty() {
        usage()
    }
    o
}

/// One `autodebug run` of one planner.
struct Run {
    planner: String,
    rep: u32,
    report: Value,
    wall_s: f64,
}

impl Run {
    fn iterations(&self) -> Vec<&Value> {
        self.report["iterations"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
    }

    /// Objective values of the search's feasible iterations (confirmation re-runs left out), in order.
    fn searched(&self, deploys: u32) -> Vec<Option<f64>> {
        self.iterations()
            .into_iter()
            .take(deploys as usize)
            .map(|it| {
                let ok = it["status"] == "ok" && it["feasible"] == true;
                ok.then(|| it["objective_value"].as_f64()).flatten()
            })
            .collect()
    }

    fn failed(&self, deploys: u32) -> usize {
        self.iterations().into_iter().take(deploys as usize).filter(|it| it["status"] != "ok").count()
    }
}

fn run_one(o: &Options, template: &str, planner: &str, rep: u32) -> Result<Run, String> {
    let dir = o.out.join(format!("{planner}-{rep}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config: String = template
        .lines()
        .map(|l| {
            if l.starts_with("sessions_dir:") {
                format!("sessions_dir: {}", dir.join("sessions").display())
            } else if l.trim_start().starts_with("confirm_trials:") {
                format!("  confirm_trials: {}", o.confirm_trials)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = if config.contains("confirm_trials:") || o.confirm_trials == 0 {
        config
    } else {
        config.replace("budget:\n", &format!("budget:\n  confirm_trials: {}\n", o.confirm_trials))
    };
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let started = Instant::now();
    let output = Command::new(&o.autodebug)
        .args(["run", "-q", "--json", "--planner", planner, "--iterations", &o.deploys.to_string()])
        .args(["--seed", &(0x5EED + u64::from(rep)).to_string(), "--session", &format!("{planner}-{rep}"), "-c"])
        .arg(&path)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", o.autodebug.display()))?;
    let wall_s = started.elapsed().as_secs_f64();
    std::fs::write(dir.join("stderr.txt"), &output.stderr).ok();
    if !output.status.success() {
        return Err(format!(
            "{planner} rep {rep}: autodebug exited {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let report: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("{planner} rep {rep}: not JSON: {e}"))?;
    Ok(Run { planner: planner.to_string(), rep, report, wall_s })
}

fn main() {
    let o = options();
    let template = std::fs::read_to_string(&o.config).unwrap_or_else(|e| {
        eprintln!("{}: {e}", o.config.display());
        std::process::exit(1)
    });
    let maximize = template.lines().any(|l| l.trim_start().starts_with("maximize:"));
    let mut runs = Vec::new();
    let mut o = o;
    if let Some(path) = &o.from {
        let saved: Value =
            std::fs::read_to_string(path).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_else(|| {
                eprintln!("{}: not a JSON file written by `real_tuning --json`", path.display());
                std::process::exit(1)
            });
        o.deploys = saved["deploys"].as_u64().map_or(o.deploys, |d| d as u32);
        for run in saved["runs"].as_array().into_iter().flatten() {
            runs.push(Run {
                planner: run["planner"].as_str().unwrap_or_default().to_string(),
                rep: run["rep"].as_u64().unwrap_or_default() as u32,
                report: run["report"].clone(),
                wall_s: run["wall_s"].as_f64().unwrap_or_default(),
            });
        }
        let mut planners: Vec<String> = Vec::new();
        for run in &runs {
            if !planners.contains(&run.planner) {
                planners.push(run.planner.clone());
            }
        }
        o.planners = planners;
    }
    // Planners take turns within a repetition, so drift over the hours hits each alike.
    for rep in (0..o.reps).filter(|_| o.from.is_none()) {
        for planner in &o.planners {
            eprintln!("== {planner}, repetition {} of {} ==", rep + 1, o.reps);
            match run_one(&o, &template, planner, rep) {
                Ok(run) => runs.push(run),
                Err(e) => eprintln!("{e}"),
            }
        }
    }
    let better = |a: f64, b: f64| if maximize { a > b } else { a < b };
    let best = runs.iter().flat_map(|r| r.searched(o.deploys)).flatten().fold(None::<f64>, |acc, v| match acc {
        Some(a) if !better(v, a) => Some(a),
        _ => Some(v),
    });
    let within =
        |v: f64, best: f64, share: f64| if maximize { v >= best * (1.0 - share) } else { v <= best * (1.0 + share) };
    // Not reached within the budget counts as the budget plus one.
    let deploys_to = |searched: &[Option<f64>], share: f64| {
        let reached = best.and_then(|b| searched.iter().position(|v| v.is_some_and(|v| within(v, b, share))));
        reached.map_or(f64::from(o.deploys) + 1.0, |i| (i + 1) as f64)
    };
    let mut rows = Vec::new();
    for planner in &o.planners {
        let mine: Vec<&Run> = runs.iter().filter(|r| &r.planner == planner).collect();
        let mut improvements = Vec::new();
        let mut confirmed = 0;
        let mut to_within = Vec::new();
        let mut to_within_10 = Vec::new();
        let mut failed = 0;
        let mut wall = Vec::new();
        for run in &mine {
            let searched = run.searched(o.deploys);
            failed += run.failed(o.deploys);
            wall.push(run.wall_s);
            if let Some(c) = run.report.get("confirmation").filter(|c| !c.is_null()) {
                improvements.push(100.0 * (c["ratio"].as_f64().unwrap_or(1.0) - 1.0));
                confirmed += usize::from(c["confirmed"] == true);
            } else if let Some(p) = run.report["improvement_pct"].as_f64() {
                improvements.push(p);
            }
            to_within.push(deploys_to(&searched, 0.02));
            to_within_10.push(deploys_to(&searched, 0.10));
        }
        rows.push(json!({
            "planner": planner,
            "runs": mine.len(),
            "median_improvement_pct": median(&mut improvements.clone()),
            "improvements_pct": improvements,
            "confirmed_runs": confirmed,
            "median_deploys_to_within_2pct": median(&mut to_within.clone()),
            "deploys_to_within_2pct": to_within,
            "median_deploys_to_within_10pct": median(&mut to_within_10.clone()),
            "deploys_to_within_10pct": to_within_10,
            "failed_deploys": failed,
            "median_wall_s": median(&mut wall),
        }));
    }
    println!("best objective any run measured: {}", best.map_or("none".to_string(), |b| format!("{b:.2}")));
    println!(
        "{:<8} {:>4}  {:>22}  {:>10}  {:>26}  {:>26}  {:>7}  {:>10}",
        "planner",
        "runs",
        "improvement (median)",
        "confirmed",
        "deploys to within 2%",
        "deploys to within 10%",
        "failed",
        "wall (s)"
    );
    for row in &rows {
        println!(
            "{:<8} {:>4}  {:>22}  {:>10}  {:>26}  {:>26}  {:>7}  {:>10}",
            row["planner"].as_str().unwrap_or(""),
            row["runs"],
            row["median_improvement_pct"].as_f64().map_or("-".into(), |v| format!("{v:+.1}%")),
            format!("{}/{}", row["confirmed_runs"], row["runs"]),
            format!("{} {}", row["median_deploys_to_within_2pct"], row["deploys_to_within_2pct"]),
            format!("{} {}", row["median_deploys_to_within_10pct"], row["deploys_to_within_10pct"]),
            row["failed_deploys"],
            row["median_wall_s"].as_f64().map_or("-".into(), |v| format!("{v:.0}")),
        );
    }
    if let Some(path) = &o.json {
        let out = json!({
            "config": o.config,
            "deploys": o.deploys,
            "reps": o.reps,
            "confirm_trials": o.confirm_trials,
            "best": best,
            "rows": rows,
            "runs": runs.iter().map(|r| json!({"planner": r.planner, "rep": r.rep, "wall_s": r.wall_s, "report": r.report})).collect::<Vec<_>>(),
        });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&out).unwrap_or_default()) {
            eprintln!("{}: {e}", path.display());
        }
    }
}
