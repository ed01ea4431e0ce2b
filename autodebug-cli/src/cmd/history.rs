//! `autodebug history list|show|diff|best|pareto`: the experiment store read back.
//!
//! Also home of the store and session helpers the other read commands (`check`, `export`) share.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use autodebug_core::store::{SessionRecord, Store};
use autodebug_core::{Error, History, Iteration, Result, TimeWindow, format_number};
use autodebug_report::ingest;
use autodebug_report::{diff, export, pareto};
use serde_json::json;

/// Where the store is and which session to read.
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// The experiment store (written by `autodebug run`/`demo` into their sessions directory).
    #[arg(long, default_value = "sessions/autodebug.db", value_name = "PATH")]
    pub db: PathBuf,
    /// Session name (default: the most recently started session).
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Sessions in the store, or with --session the iterations of one session.
    #[command(after_help = "Examples:\n  autodebug history list\n  autodebug history list --session demo --json")]
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One iteration: configuration, metrics, findings, planned changes, timings.
    #[command(after_help = "Examples:\n  autodebug history show 3\n  autodebug history show 3 --all --session demo")]
    Show {
        /// Iteration number.
        number: u32,
        #[command(flatten)]
        store: StoreArgs,
        /// Every metric, not only the headline ones.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What changed from iteration A to iteration B: flags, metrics (percent change, outside the
    /// objective's noise margin or not) and, from per-request records, Mann-Whitney U and
    /// bootstrap tests on e2e latency and TTFT.
    #[command(
        after_help = "Examples:\n  autodebug history diff 1 3\n  autodebug history diff 2 1 --session-b baseline-run --all --json"
    )]
    Diff {
        /// The earlier (reference) iteration.
        a: u32,
        /// The iteration compared with A.
        b: u32,
        #[command(flatten)]
        store: StoreArgs,
        /// Session of B when it is not A's session.
        #[arg(long, value_name = "NAME")]
        session_b: Option<String>,
        /// Every metric, not only the headline ones.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The champion under the session's objective or another one.
    #[command(
        after_help = "Examples:\n  autodebug history best\n  autodebug history best --objective \"minimize ttft.p99\" --constraint \"error_rate == 0\""
    )]
    Best {
        #[command(flatten)]
        store: StoreArgs,
        /// `minimize METRIC` or `maximize METRIC` (default: the session's objective).
        #[arg(long)]
        objective: Option<String>,
        /// A constraint such as `ttft.p99 <= 200ms` (repeatable; replaces the session's constraints).
        #[arg(long = "constraint", value_name = "CONSTRAINT")]
        constraints: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The Pareto front of two metrics (latency-like minimized, throughput-like maximized).
    #[command(
        after_help = "Examples:\n  autodebug history pareto --x ttft.p99 --y output_throughput\n  autodebug history pareto --x e2e.mean --y concurrent.output_throughput --json"
    )]
    Pareto {
        #[command(flatten)]
        store: StoreArgs,
        /// Metric on the x axis.
        #[arg(long, default_value = "ttft.p99")]
        x: String,
        /// Metric on the y axis.
        #[arg(long, default_value = "output_throughput")]
        y: String,
        /// `min` or `max` for x (default from the metric's name).
        #[arg(long, value_name = "min|max")]
        x_dir: Option<String>,
        /// `min` or `max` for y (default from the metric's name).
        #[arg(long, value_name = "min|max")]
        y_dir: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args, _global: &crate::Global) -> Result<ExitCode> {
    match args.command {
        Command::List { store, json } => list(&store, json),
        Command::Show { number, store, all, json } => show(&store, number, all, json),
        Command::Diff { a, b, store, session_b, all, json } => {
            diff_command(&store, a, b, session_b.as_deref(), all, json)
        }
        Command::Best { store, objective, constraints, json } => best(&store, objective.as_deref(), &constraints, json),
        Command::Pareto { store, x, y, x_dir, y_dir, json } => {
            pareto_command(&store, &x, &y, x_dir.as_deref(), y_dir.as_deref(), json)
        }
    }?;
    Ok(ExitCode::SUCCESS)
}

// ---- shared with `check` and `export` ----

/// Opens an existing store; a missing file is an error that says how to make one.
pub fn open_store(db: &Path) -> Result<Store> {
    if !db.exists() {
        return Err(Error::Store {
            path: db.to_path_buf(),
            message: "no experiment store here; run `autodebug demo` or `autodebug run` first, or pass --db PATH"
                .into(),
        });
    }
    Store::open(db)
}

/// The session and its finished iterations.
pub fn load(args: &StoreArgs) -> Result<(Store, SessionRecord, History)> {
    let store = open_store(&args.db)?;
    let session = store.find_session(args.session.as_deref())?;
    let history = store.history(session.id)?;
    Ok((store, session, history))
}

/// An iteration of a history, or an error listing the numbers there are.
pub fn find_iteration<'a>(history: &'a History, session: &SessionRecord, number: u32) -> Result<&'a Iteration> {
    history.iterations.iter().find(|i| i.number == number).ok_or_else(|| {
        let numbers: Vec<String> = history.iterations.iter().map(|i| i.number.to_string()).collect();
        Error::config(
            "iteration",
            format!(
                "session `{}` has no finished iteration {number}; it has {}",
                session.name,
                if numbers.is_empty() { "none".into() } else { numbers.join(", ") }
            ),
        )
    })
}

/// What a person reads as an iteration's configuration: its flags, or for an ingested run its label.
pub fn config_text(iteration: &Iteration) -> String {
    if iteration.spec.flags.is_empty() && ingest::source_finding(iteration).is_some() {
        format!("(ingested: {})", iteration.spec.name)
    } else {
        export::flags_text(iteration)
    }
}

/// The value of `--objective`; an error names the flag.
pub fn objective_flag(text: &str) -> Result<autodebug_core::Objective> {
    text.parse().map_err(|error| match error {
        Error::Config { message, .. } => Error::config("--objective", message),
        other => other,
    })
}

pub fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")));
}

fn fmt(value: Option<f64>) -> String {
    value.filter(|v| v.is_finite()).map(format_number).unwrap_or_else(|| "-".into())
}

fn pct(value: Option<f64>) -> String {
    value.map(|p| format!("{p:+.1}%")).unwrap_or_else(|| "-".into())
}

// ---- list ----

fn list(args: &StoreArgs, json: bool) -> Result<()> {
    let store = open_store(&args.db)?;
    if args.session.is_some() {
        return list_iterations(&store, args, json);
    }
    let mut rows = Vec::new();
    let mut values = Vec::new();
    for session in store.sessions()? {
        let history = store.history(session.id)?;
        let champion = history.champion(&session.objective);
        let ok = history.iterations.iter().filter(|i| i.is_ok()).count();
        values.push(json!({
            "name": session.name,
            "started_at": TimeWindow::format_iso(session.started_ns),
            "target": session.target,
            "engine": session.engine,
            "objective": session.objective.describe(),
            "iterations": history.iterations.len(),
            "ok": ok,
            "champion": champion.map(|c| json!({"iteration": c.number, "value": session.objective.value(&c.metrics)})),
            "stop_reason": session.stop_reason,
        }));
        rows.push(vec![
            session.name.clone(),
            TimeWindow::format_iso(session.started_ns),
            session.target.clone(),
            session.engine.clone(),
            format!("{}/{}", ok, history.iterations.len()),
            session.objective.describe(),
            champion
                .map(|c| format!("{} ({})", c.number, fmt(session.objective.value(&c.metrics))))
                .unwrap_or_else(|| "-".into()),
            session.stop_reason.clone().unwrap_or_else(|| {
                let ingested = session.target == "ingested";
                if ingested { "-".into() } else { "running or killed".into() }
            }),
        ]);
    }
    if json {
        print_json(&json!({"db": args.db, "sessions": values}));
    } else if rows.is_empty() {
        println!("no sessions in {}", args.db.display());
    } else {
        let header = ["session", "started", "target", "engine", "ok/iters", "objective", "champion", "stopped"]
            .map(String::from);
        print!("{}", export::text_table(&header, &rows));
    }
    Ok(())
}

fn list_iterations(store: &Store, args: &StoreArgs, json: bool) -> Result<()> {
    let session = store.find_session(args.session.as_deref())?;
    let history = store.history(session.id)?;
    let objective = &session.objective;
    let champion = history.champion(objective).map(|c| c.number);
    let metrics = export::headline_metrics(objective);
    if json {
        let iterations: Vec<serde_json::Value> = history
            .iterations
            .iter()
            .map(|it| {
                let headline: serde_json::Map<String, serde_json::Value> =
                    metrics.iter().filter_map(|m| it.metrics.get(m).map(|v| (m.clone(), json!(v)))).collect();
                json!({
                    "number": it.number,
                    "status": it.status.as_str(),
                    "champion": Some(it.number) == champion,
                    "feasible": it.is_ok() && objective.is_feasible(&it.metrics),
                    "objective_value": objective.value(&it.metrics),
                    "flags": it.spec.flags,
                    "config": config_text(it),
                    "metrics": headline,
                    "error": it.error,
                })
            })
            .collect();
        print_json(
            &json!({"session": session.name, "objective": objective.describe(), "champion": champion, "iterations": iterations}),
        );
        return Ok(());
    }
    let mut header = vec!["iter".to_string(), "status".to_string()];
    header.extend(metrics.iter().cloned());
    header.push("config".into());
    let rows: Vec<Vec<String>> = history
        .iterations
        .iter()
        .map(|it| {
            let mut row = vec![
                format!("{}{}", it.number, if Some(it.number) == champion { "*" } else { "" }),
                it.status.as_str().into(),
            ];
            row.extend(metrics.iter().map(|m| export::cell(it, m)));
            row.push(config_text(it));
            row
        })
        .collect();
    println!("session `{}`: {}\n", session.name, objective.describe());
    print!("{}", export::text_table(&header, &rows));
    println!("\n* champion (latencies ms, throughput tokens/s)");
    Ok(())
}

// ---- show ----

fn show(args: &StoreArgs, number: u32, all: bool, json: bool) -> Result<()> {
    let (_store, session, history) = load(args)?;
    let it = find_iteration(&history, &session, number)?;
    let objective = &session.objective;
    let is_champion = history.champion(objective).map(|c| c.number) == Some(number);
    if json {
        print_json(&json!({"session": session.name, "champion": is_champion, "iteration": it}));
        return Ok(());
    }
    let mut out = format!(
        "session `{}`, iteration {}: {}{}\n",
        session.name,
        it.number,
        it.status.as_str(),
        if is_champion { " (champion)" } else { "" }
    );
    let timings: Vec<String> = it.timings.iter().map(|(step, s)| format!("{step} {s:.1} s")).collect();
    out.push_str(&format!(
        "started {}, took {:.1} s{}\n",
        TimeWindow::format_iso(it.started_ns),
        (it.finished_ns - it.started_ns) as f64 / 1e9,
        if timings.is_empty() { String::new() } else { format!(" ({})", timings.join(", ")) }
    ));
    out.push_str(&format!(
        "engine {}, model {}{}\nconfig: {}\n",
        it.spec.engine,
        it.spec.model,
        it.spec.resources.gpu.as_deref().map(|g| format!(", gpu {g}")).unwrap_or_default(),
        config_text(it)
    ));
    out.push_str(&format!(
        "objective: {} = {} ({})\n",
        objective.metric,
        fmt(objective.value(&it.metrics)),
        if objective.is_feasible(&it.metrics) {
            "feasible".to_string()
        } else {
            let broken: Vec<String> = objective.violations(&it.metrics).iter().map(|c| c.to_string()).collect();
            format!("infeasible: {}", if broken.is_empty() { "no value".into() } else { broken.join(", ") })
        }
    ));
    if let Some(error) = &it.error {
        out.push_str(&format!("error: {error}\n"));
    }
    let names: Vec<String> =
        if all { it.metrics.keys().cloned().collect() } else { export::headline_metrics(objective) };
    let rows: Vec<Vec<String>> =
        names.iter().filter(|m| it.metrics.contains_key(*m)).map(|m| vec![m.clone(), export::cell(it, m)]).collect();
    out.push_str(&format!("\nmetrics{}:\n", if all { "" } else { " (--all for every one)" }));
    for line in export::text_table(&["metric".into(), "value".into()], &rows).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    if !it.analysis.findings.is_empty() {
        out.push_str("\nfindings:\n");
        for f in &it.analysis.findings {
            out.push_str(&format!(
                "  - [{}] {} ({}): {}\n",
                severity_word(f.severity),
                f.bottleneck,
                f.rule,
                f.summary
            ));
        }
    }
    if let Some(plan) = &it.plan {
        out.push_str(&format!("\nplanned next ({}):\n", plan.planner));
        if plan.changes.is_empty() {
            out.push_str(if plan.exhausted { "  nothing left to try\n" } else { "  no changes\n" });
        }
        for c in &plan.changes {
            out.push_str(&format!(
                "  - {}: {} -> {} ({}): {}\n",
                c.knob,
                c.from.as_deref().unwrap_or("(unset)"),
                c.to.as_deref().unwrap_or("(unset)"),
                c.rule,
                c.reason
            ));
        }
        for note in &plan.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
    }
    print!("{out}");
    Ok(())
}

fn severity_word(severity: autodebug_core::Severity) -> &'static str {
    match severity {
        autodebug_core::Severity::Info => "info",
        autodebug_core::Severity::Warning => "warning",
        autodebug_core::Severity::Critical => "critical",
    }
}

// ---- diff ----

fn diff_command(args: &StoreArgs, a: u32, b: u32, session_b: Option<&str>, all: bool, json: bool) -> Result<()> {
    let (store, session, history) = load(args)?;
    let it_a = find_iteration(&history, &session, a)?.clone();
    let (session_of_b, it_b) = match session_b {
        Some(name) => {
            let other = store.find_session(Some(name))?;
            let other_history = store.history(other.id)?;
            let it = find_iteration(&other_history, &other, b)?.clone();
            (other, it)
        }
        None => (session.clone(), find_iteration(&history, &session, b)?.clone()),
    };
    let objective = &session.objective;
    let names: Option<Vec<String>> = (!all).then(|| {
        export::headline_metrics(objective)
            .into_iter()
            .filter(|m| it_a.metrics.contains_key(m) || it_b.metrics.contains_key(m))
            .collect()
    });
    let mut result = diff::diff(&it_a, &it_b, objective.noise_pct, names.as_deref());
    let plans_b = store.bench_plans(session_of_b.id, b)?;
    for plan in store.bench_plans(session.id, a)?.into_iter().filter(|p| plans_b.contains(p)) {
        let records_a = store.bench_records(session.id, a, &plan)?;
        let records_b = store.bench_records(session_of_b.id, b, &plan)?;
        result.samples.extend(diff::compare_records(&plan, &records_a, &records_b));
    }
    if json {
        print_json(
            &json!({"session_a": session.name, "session_b": session_of_b.name, "objective": objective.describe(), "diff": result}),
        );
        return Ok(());
    }
    let label = |session_name: &str, n: u32| {
        if session_b.is_some() { format!("{session_name}#{n}") } else { n.to_string() }
    };
    let (label_a, label_b) = (label(&session.name, a), label(&session_of_b.name, b));
    let mut out = format!(
        "session `{}`: iteration {label_a} -> {label_b} (noise margin {}%, the objective's noise_pct)\n\nconfig:\n",
        session.name,
        format_number(objective.noise_pct)
    );
    if result.config.is_empty() {
        out.push_str("  identical\n");
    }
    for c in &result.config {
        out.push_str(&format!(
            "  {}: {} -> {}\n",
            c.knob,
            c.from.as_deref().unwrap_or("(unset)"),
            c.to.as_deref().unwrap_or("(unset)")
        ));
    }
    let rows: Vec<Vec<String>> = result
        .metrics
        .iter()
        .map(|m| {
            let verdict = match (m.better, m.outside_noise) {
                (Some(true), true) => "better",
                (Some(false), true) => "worse",
                (Some(_), false) => "within noise",
                (None, _) if m.a.is_none() || m.b.is_none() => "missing",
                (None, _) => "same",
            };
            vec![m.name.clone(), fmt(m.a), fmt(m.b), pct(m.change_pct), verdict.to_string()]
        })
        .collect();
    out.push_str("\nmetrics:\n");
    let header = ["metric".to_string(), label_a.clone(), label_b.clone(), "change".into(), "verdict".into()];
    for line in export::text_table(&header, &rows).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    if result.samples.is_empty() {
        out.push_str("\nper-request test: no per-request records saved for both iterations\n");
    } else {
        out.push_str("\nper-request (Mann-Whitney U; 95% bootstrap interval of the median's change):\n");
        let rows: Vec<Vec<String>> = result
            .samples
            .iter()
            .map(|s| {
                vec![
                    s.plan.clone(),
                    s.metric.clone(),
                    format!("{}/{}", s.n_a, s.n_b),
                    format_number(s.median_a_ms),
                    format_number(s.median_b_ms),
                    pct(s.median_change_pct),
                    s.bootstrap_ci_pct.map(|(lo, hi)| format!("[{lo:+.1}%, {hi:+.1}%]")).unwrap_or_else(|| "-".into()),
                    if s.mann_whitney_p < 0.001 { "<0.001".into() } else { format!("{:.3}", s.mann_whitney_p) },
                    if s.significant { "real" } else { "noise" }.into(),
                ]
            })
            .collect();
        let header =
            ["plan", "metric", "n", "median A ms", "median B ms", "change", "95% CI", "p", "verdict"].map(String::from);
        for line in export::text_table(&header, &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    print!("{out}");
    Ok(())
}

// ---- best ----

fn best(args: &StoreArgs, objective: Option<&str>, constraints: &[String], json: bool) -> Result<()> {
    let (_store, session, history) = load(args)?;
    let mut objective = match objective {
        Some(text) => objective_flag(text)?.with_noise_pct(session.objective.noise_pct),
        None => session.objective.clone(),
    };
    if !constraints.is_empty() {
        objective.constraints = constraints.iter().map(|c| c.parse()).collect::<Result<Vec<_>>>()?;
    } else if objective.metric != session.objective.metric {
        objective.constraints = session.objective.constraints.clone();
    }
    let champion = history.champion(&objective);
    let baseline = history.baseline();
    let improvement = history.improvement_pct(&objective);
    let ranking = history.ranking(&objective);
    if json {
        let reference = |it: Option<&Iteration>| {
            it.map(|i| json!({"iteration": i.number, "value": objective.value(&i.metrics), "flags": i.spec.flags, "config": config_text(i)}))
        };
        print_json(&json!({
            "session": session.name,
            "objective": objective.describe(),
            "champion": reference(champion),
            "baseline": reference(baseline),
            "improvement_pct": improvement,
            "ranking": ranking.iter().map(|i| json!({"iteration": i.number, "value": objective.value(&i.metrics)})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("session `{}`: {}", session.name, objective.describe());
    match champion {
        Some(c) => {
            println!(
                "champion: iteration {} ({} = {}{})\n  config: {}",
                c.number,
                objective.metric,
                fmt(objective.value(&c.metrics)),
                match (baseline, improvement) {
                    (Some(b), Some(p)) =>
                        format!(" vs baseline iteration {} {}: {p:+.1}%", b.number, fmt(objective.value(&b.metrics))),
                    _ => String::new(),
                },
                config_text(c)
            );
        }
        None => {
            println!("champion: none (no finished iteration meets the objective's constraints)")
        }
    }
    if ranking.len() > 1 {
        println!(
            "\nfeasible iterations, best first (a challenger must win by more than {}% to be champion):",
            format_number(objective.noise_pct)
        );
        let rows: Vec<Vec<String>> = ranking
            .iter()
            .map(|i| vec![i.number.to_string(), fmt(objective.value(&i.metrics)), config_text(i)])
            .collect();
        for line in export::text_table(&["iter".into(), objective.metric.clone(), "config".into()], &rows).lines() {
            println!("  {line}");
        }
    }
    Ok(())
}

// ---- pareto ----

fn pareto_command(
    args: &StoreArgs,
    x: &str,
    y: &str,
    x_dir: Option<&str>,
    y_dir: Option<&str>,
    json: bool,
) -> Result<()> {
    let (_store, session, history) = load(args)?;
    let axis = |metric: &str, dir: Option<&str>| -> Result<pareto::Axis> {
        let axis = pareto::Axis::new(metric);
        Ok(match dir {
            Some(d) => axis.with_direction(d.parse()?),
            None => axis,
        })
    };
    let (x_axis, y_axis) = (axis(x, x_dir)?, axis(y, y_dir)?);
    let result = pareto::front(&history.iterations, &x_axis, &y_axis);
    if json {
        print_json(&json!({"session": session.name, "front": result.front(), "pareto": result}));
        return Ok(());
    }
    let word = |a: &pareto::Axis| match a.direction {
        autodebug_core::Direction::Minimize => "lower is better",
        autodebug_core::Direction::Maximize => "higher is better",
    };
    println!(
        "session `{}`: {} ({}) against {} ({})\n",
        session.name,
        x_axis.metric,
        word(&x_axis),
        y_axis.metric,
        word(&y_axis)
    );
    if result.points.is_empty() {
        println!("no successful iteration has both metrics");
    } else {
        let rows: Vec<Vec<String>> = result
            .points
            .iter()
            .map(|p| {
                let config =
                    history.iterations.iter().find(|i| i.number == p.iteration).map(config_text).unwrap_or_default();
                vec![
                    p.iteration.to_string(),
                    format_number(p.x),
                    format_number(p.y),
                    if p.on_front { "*".into() } else { format!("dominated by {}", p.dominated_by.unwrap_or(0)) },
                    config,
                ]
            })
            .collect();
        print!(
            "{}",
            export::text_table(
                &["iter".into(), x_axis.metric.clone(), y_axis.metric.clone(), "front".into(), "config".into()],
                &rows
            )
        );
        let front: Vec<String> = result.front().iter().map(u32::to_string).collect();
        println!("\nPareto front: iterations {}", front.join(", "));
    }
    if !result.skipped.is_empty() {
        let skipped: Vec<String> = result.skipped.iter().map(u32::to_string).collect();
        println!("left out (failed, or without both metrics): {}", skipped.join(", "));
    }
    Ok(())
}
