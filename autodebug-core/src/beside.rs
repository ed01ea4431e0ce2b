//! Load generation beside the service: a command run by the deployer next to a deployment (a child
//! process on the same machine, a Slurm job step inside the service's job), and the protocol by
//! which `autodebug bench --plan-json PLAN --json` run there hands its report back to the loop.
//!
//! When the client machine would be the bottleneck (many slots, high rates, a slow link to the
//! cluster), the session runs each benchmark plan as `autodebug bench` beside the service through
//! [`Deployer::run_beside`](crate::Deployer::run_beside) and uses the report it prints exactly like
//! a local one: its window is the one telemetry is fetched for. The window comes from the other
//! machine's clock, so it is held against the local wall-clock bracket of the call; a window
//! outside it is a warning (clock skew), not a silent shift.
//!
//! The endpoint's token never goes on an argument list (visible in `ps` and in the cluster's
//! accounting): it travels in the command's environment, as [`TOKEN_ENV`], and the argument list
//! names only the variable (`--token-env`).
//!
//! ```
//! use std::time::Duration;
//! use autodebug_core::beside::{BenchBeside, SERVICE_URL, TOKEN_ENV};
//! use autodebug_core::{BenchPlan, Endpoint, Load, Secret, Workload};
//!
//! let beside = BenchBeside::new("/shared/bin/autodebug");
//! let plan = BenchPlan::new("chat", Workload::new(32, 64), Load::Sequential, 8);
//! let endpoint = Endpoint { token: Some(Secret::new("sk-beside-doc")), ..Endpoint::new("http://gpu-7:30000", "qwen") };
//! let command = beside.command(&plan, &endpoint).unwrap();
//! assert!(command.args.iter().any(|a| a == SERVICE_URL), "the deployer fills in the URL it sees");
//! assert!(!command.args.iter().any(|a| a.contains("sk-beside-doc")), "never on the argument list");
//! assert_eq!(command.env[0].0, TOKEN_ENV);
//! assert!(command.timeout > Duration::from_secs(60));
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    BenchPlan, BenchReport, Bottleneck, Endpoint, Error, Finding, Load, Result, Secret, Severity, Signal, SignalKind,
    TimeWindow,
};

/// The argument a deployer replaces with the service's base URL as seen from beside it (loopback
/// on the service's node, not the address this machine reaches it at).
pub const SERVICE_URL: &str = "{service_url}";

/// The environment variable that carries the endpoint's token to a benchmark beside the service;
/// `autodebug bench` reads it (it is the first of the bench's token variables).
pub const TOKEN_ENV: &str = "AUTODEBUG_BENCH_TOKEN";

/// Time a beside-run gets on top of what its plan may take: starting the process (a job step
/// waits for the scheduler), loading, printing the report.
pub const STARTUP_SLACK: Duration = Duration::from_secs(120);

/// Bytes of standard output a deployer keeps from a command run beside a service: a report with
/// every request's record is a few MB; more is not a report.
pub const MAX_STDOUT_BYTES: usize = 256 << 20;

/// Lines of standard error a deployer keeps (the last ones): enough to say why a run failed.
pub const STDERR_TAIL_LINES: usize = 40;

/// A command for a deployer to run beside one of its deployments.
#[derive(Debug, Clone)]
pub struct BesideCommand {
    /// The executable as the service's machine sees it.
    pub program: PathBuf,
    /// Arguments; one equal to [`SERVICE_URL`] is replaced by the service's URL from beside it.
    pub args: Vec<String>,
    /// Environment of the command, on top of what the backend passes anyway; the values are
    /// secrets (a token) and go nowhere else: not on an argument list, not into a rendered file.
    pub env: Vec<(String, Secret)>,
    /// The command is stopped (and its step cancelled) after this long.
    pub timeout: Duration,
}

impl BesideCommand {
    /// The arguments with [`SERVICE_URL`] replaced by `service_url`.
    pub fn args_for(&self, service_url: &str) -> Vec<String> {
        self.args.iter().map(|a| if a == SERVICE_URL { service_url.to_string() } else { a.clone() }).collect()
    }

    /// The command without its token: for a backend whose endpoint token only opens a proxy that
    /// the command beside the service does not go through, and must not be handed on.
    pub fn without_token(&self) -> BesideCommand {
        let mut args = Vec::with_capacity(self.args.len());
        let mut rest = self.args.iter();
        while let Some(arg) = rest.next() {
            if arg == "--token-env" {
                rest.next();
                continue;
            }
            args.push(arg.clone());
        }
        BesideCommand {
            program: self.program.clone(),
            args,
            env: self.env.iter().filter(|(name, _)| name != TOKEN_ENV).cloned().collect(),
            timeout: self.timeout,
        }
    }
}

/// What a command run beside a service did.
#[derive(Debug, Clone, Default)]
pub struct BesideOutput {
    /// Its standard output (at most [`MAX_STDOUT_BYTES`]).
    pub stdout: String,
    /// The last lines of its standard error (at most [`STDERR_TAIL_LINES`]).
    pub stderr_tail: Vec<String>,
    /// Its exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// It ran past [`BesideCommand::timeout`] and was stopped.
    pub timed_out: bool,
    /// Where and as what it ran, for the trail (`pid 4242 on this machine`, `step 17.3 of Slurm job 17`).
    pub ran_as: String,
}

/// The process that ran a benchmark beside the service, as it reports itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchRunner {
    /// Its process id, on its machine.
    pub pid: u32,
    /// The machine's host name.
    pub host: String,
    /// `<job>.<step>` when it ran as a Slurm job step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_step: Option<String>,
}

impl BenchRunner {
    /// This process: its pid, its host name and, inside a Slurm step, the step's id.
    pub fn this_process() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_string());
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let slurm_step = var("SLURM_JOB_ID").map(|job| format!("{job}.{}", var("SLURM_STEP_ID").unwrap_or_default()));
        BenchRunner { pid: std::process::id(), host, slurm_step }
    }

    fn describe(&self) -> String {
        match &self.slurm_step {
            Some(step) => format!("pid {} on {} (Slurm step {step})", self.pid, self.host),
            None => format!("pid {} on {}", self.pid, self.host),
        }
    }
}

/// What `autodebug bench --plan-json PLAN --json` adds to its JSON report (beside the versioned
/// `schema_version`/`points` fields): every run's whole report, records included, and who ran it.
/// Unknown fields are ignored both ways, so this is read straight out of that report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BesideBenchOutput {
    /// One whole report per plan run (one with `--plan-json`), records included.
    pub reports: Vec<BenchReport>,
    /// The process that ran them.
    pub runner: BenchRunner,
}

/// How a session runs its benchmarks beside the service; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct BenchBeside {
    /// The `autodebug` binary as the service's machine sees it.
    pub program: PathBuf,
    /// Stop a run after this long; `None` bounds it by its plan (see [`plan_bound`]).
    pub timeout: Option<Duration>,
    /// The token sent when the endpoint has none of its own: what the local benchmarker would
    /// send (it reads it from its environment).
    pub fallback_token: Option<Secret>,
}

impl BenchBeside {
    /// Runs `program` (`autodebug`) beside the service, bounded by each plan, with no fallback token.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        BenchBeside { program: program.into(), timeout: None, fallback_token: None }
    }

    /// The command that runs `plan` against `endpoint` beside it: `autodebug bench --json --url
    /// {service_url} --model M --plan-json PLAN [--token-env AUTODEBUG_BENCH_TOKEN]`, the token in
    /// the environment.
    pub fn command(&self, plan: &BenchPlan, endpoint: &Endpoint) -> Result<BesideCommand> {
        let plan_json = serde_json::to_string(plan).map_err(|e| {
            Error::config(format!("bench plan `{}`", plan.name), format!("cannot be written as JSON: {e}"))
        })?;
        let mut args: Vec<String> = ["bench", "--json", "--url", SERVICE_URL, "--model", endpoint.model.as_str()]
            .into_iter()
            .map(str::to_string)
            .collect();
        args.extend(["--plan-json".to_string(), plan_json]);
        let mut env = Vec::new();
        if let Some(token) = endpoint.token.clone().filter(|t| !t.is_empty()).or_else(|| self.fallback_token.clone()) {
            args.extend(["--token-env".to_string(), TOKEN_ENV.to_string()]);
            env.push((TOKEN_ENV.to_string(), token));
        }
        Ok(BesideCommand {
            program: self.program.clone(),
            args,
            env,
            timeout: self.timeout.unwrap_or_else(|| plan_bound(plan) + STARTUP_SLACK),
        })
    }
}

/// The longest `plan` can take when every request runs into its total timeout: what the local
/// benchmarker is bounded by, per trial (warmup, then the measured requests), times the trials;
/// for a capacity search, its most steps, each starting requests for up to three step lengths,
/// a warmup request and a drain of one total timeout each, and a settle after it.
pub fn plan_bound(plan: &BenchPlan) -> Duration {
    let total = plan.timeouts.total;
    if let Some(goal) = &plan.capacity {
        let step = Duration::from_millis(goal.step_ms)
            .saturating_mul(3)
            .saturating_add(total.saturating_mul(2))
            .saturating_add(crate::CapacityGoal::SETTLE_LIMIT);
        return step.saturating_mul(goal.max_steps.max(1));
    }
    let rounds = |requests: usize, width: usize| u32::try_from(requests.div_ceil(width.max(1))).unwrap_or(u32::MAX);
    let width = plan.load.concurrency().max(1);
    let warmup = total.saturating_mul(rounds(plan.warmup_requests, width));
    let measured = match (plan.duration_ms, &plan.load) {
        (Some(ms), _) => Duration::from_millis(ms).saturating_add(total),
        (None, Load::Rate { requests_per_s, .. }) if *requests_per_s > 0.0 && requests_per_s.is_finite() => {
            Duration::try_from_secs_f64(plan.requests as f64 / requests_per_s)
                .unwrap_or(Duration::MAX)
                .saturating_add(total)
        }
        (None, _) => total.saturating_mul(rounds(plan.requests, width)),
    };
    warmup.saturating_add(measured).saturating_mul(plan.trials.max(1))
}

/// One plan's run beside the service, read back: the report to use as a local one, and the
/// signal that says where it ran and whether its window fits the local clock.
#[derive(Debug, Clone)]
pub struct BesideRun {
    /// The report, to use as a local one (a skew warning added to its warnings).
    pub report: BenchReport,
    /// `bench.beside`: where it ran (pid, host, Slurm step) and its window.
    pub signal: Signal,
    /// Set when the reported window lies outside the local bracket of the call (clock skew).
    pub skew_warning: Option<String>,
}

/// Reads what the command that ran `plan` beside the service printed. `bracket` is the local
/// wall-clock time just before and just after the call. An error (timed out, nothing parsable,
/// another plan) carries the command's exit and the tail of its standard error.
pub fn read_run(
    plan: &BenchPlan,
    command: &BesideCommand,
    output: &BesideOutput,
    bracket: TimeWindow,
) -> Result<BesideRun> {
    let program = command.program.display();
    let stderr = || {
        if output.stderr_tail.is_empty() {
            "it wrote nothing to stderr".to_string()
        } else {
            let tail: Vec<String> = output.stderr_tail.iter().map(|l| format!("  | {l}")).collect();
            format!("the end of its stderr:\n{}", crate::secret::redact(&tail.join("\n")))
        }
    };
    let exit = match output.exit_code {
        Some(code) => format!("exit code {code}"),
        None => "ended by a signal".to_string(),
    };
    if output.timed_out {
        return Err(Error::Bench(format!(
            "`{program} bench` beside the service ({}) ran past {:.0}s and was stopped; raise bench_beside.timeout_s if the plan needs longer; {}",
            output.ran_as,
            command.timeout.as_secs_f64(),
            stderr()
        )));
    }
    let parsed: BesideBenchOutput = match serde_json::from_str(output.stdout.trim()) {
        Ok(parsed) => parsed,
        Err(e) => {
            let what = if output.stdout.trim().is_empty() {
                "printed nothing".to_string()
            } else {
                format!("printed no beside report ({e})")
            };
            return Err(Error::Bench(format!(
                "`{program} bench` beside the service ({}) {what}, {exit}: is `{program}` an autodebug binary with `bench --plan-json`, on the service's machine? {}",
                output.ran_as,
                stderr()
            )));
        }
    };
    let runner = parsed.runner;
    let mut reports = parsed.reports.into_iter();
    let (Some(mut report), None) = (reports.next(), reports.next()) else {
        return Err(Error::Bench(format!(
            "`{program} bench` beside the service ({}) printed no report or several for plan `{}`; one was expected",
            output.ran_as, plan.name
        )));
    };
    if report.plan != *plan {
        return Err(Error::Bench(format!(
            "`{program} bench` beside the service ran another plan than the one sent for `{}` (its client: {}): install the same autodebug there as here",
            plan.name, report.context.client
        )));
    }
    let window = report.window;
    let within = bracket.start_ns <= window.start_ns && window.end_ns <= bracket.end_ns;
    let skew_warning = (!within).then(|| {
        let before = (bracket.start_ns - window.start_ns).max(0);
        let after = (window.end_ns - bracket.end_ns).max(0);
        format!(
            "clock skew: the window of `{}` from beside the service ({} to {}) is not within this machine's clock around the call ({} to {}; {:.1} ms early, {:.1} ms late); telemetry is fetched for the reported window",
            plan.name,
            TimeWindow::format_iso(window.start_ns),
            TimeWindow::format_iso(window.end_ns),
            TimeWindow::format_iso(bracket.start_ns),
            TimeWindow::format_iso(bracket.end_ns),
            before as f64 / 1e6,
            after as f64 / 1e6,
        )
    });
    if let Some(warning) = &skew_warning {
        report.warnings.push(warning.clone());
    }
    let mut signal = Signal::text(
        "session",
        SignalKind::LogLine,
        "bench.beside",
        format!("`{}` ran beside the service as {}; {}", plan.name, runner.describe(), output.ran_as),
    )
    .with_label("plan", &plan.name)
    .with_label("pid", &runner.pid.to_string())
    .with_label("host", &runner.host)
    .with_label("window_start_ns", &window.start_ns.to_string())
    .with_label("window_end_ns", &window.end_ns.to_string())
    .with_label("within_local_clock", if within { "true" } else { "false" });
    if let Some(step) = &runner.slurm_step {
        signal = signal.with_label("slurm_step", step);
    }
    Ok(BesideRun { report, signal, skew_warning })
}

/// The finding an iteration whose benchmarks ran beside the service records: where each ran,
/// and a warning when a window did not fit the local clock.
pub fn finding(runs: &[(Signal, Option<String>)]) -> Option<Finding> {
    if runs.is_empty() {
        return None;
    }
    let warnings: Vec<&String> = runs.iter().filter_map(|(_, w)| w.as_ref()).collect();
    let places: Vec<String> = runs.iter().map(|(s, _)| s.value.as_text()).collect();
    let mut summary = format!("benchmarks ran beside the service: {}", places.join("; "));
    if !warnings.is_empty() {
        summary.push_str(&format!("; {}", warnings.iter().map(|w| w.as_str()).collect::<Vec<_>>().join("; ")));
    }
    Some(Finding {
        rule: "session.bench_beside".into(),
        bottleneck: Bottleneck::Client,
        severity: if warnings.is_empty() { Severity::Info } else { Severity::Warning },
        summary,
        evidence: runs.iter().map(|(s, _)| s.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BenchContext, BenchSummary, Workload};

    fn plan() -> BenchPlan {
        BenchPlan::new("chat", Workload::new(16, 16), Load::Concurrent { concurrency: 4 }, 8).with_warmup(4)
    }

    fn output(report: &BenchReport, runner: BenchRunner) -> BesideOutput {
        let stdout = serde_json::json!({
            "schema_version": 1,
            "points": [],
            "reports": [report],
            "runner": runner,
        })
        .to_string();
        BesideOutput { stdout, exit_code: Some(0), ran_as: "pid 9 on this machine".into(), ..Default::default() }
    }

    fn report(window: TimeWindow) -> BenchReport {
        BenchReport {
            plan: plan(),
            context: BenchContext { client: "autodebug-bench/test".into(), ..Default::default() },
            summary: BenchSummary::default(),
            records: Vec::new(),
            window,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_token_goes_in_the_environment_and_only_its_name_on_the_argument_list() {
        let canary = "canary-beside-3f9d1c";
        let endpoint = Endpoint { token: Some(Secret::new(canary)), ..Endpoint::new("http://n1:8000", "m") };
        let command = BenchBeside::new("/opt/autodebug").command(&plan(), &endpoint).unwrap();
        assert!(!command.args.iter().any(|a| a.contains(canary)), "{:?}", command.args);
        assert!(!format!("{command:?}").contains(canary), "Debug prints the token");
        assert_eq!(command.env.len(), 1);
        assert_eq!((command.env[0].0.as_str(), command.env[0].1.expose()), (TOKEN_ENV, canary));
        let args = command.args_for("http://127.0.0.1:8000");
        let at = args.iter().position(|a| a == "--url").unwrap();
        assert_eq!(args[at + 1], "http://127.0.0.1:8000");
        let plan_at = args.iter().position(|a| a == "--plan-json").unwrap();
        assert_eq!(serde_json::from_str::<BenchPlan>(&args[plan_at + 1]).unwrap(), plan());
        assert_eq!(args[args.iter().position(|a| a == "--token-env").unwrap() + 1], TOKEN_ENV);

        // No token anywhere: no variable, no `--token-env` (which would fail on an unset variable).
        let bare = BenchBeside::new("a").command(&plan(), &Endpoint::new("http://n1:8000", "m")).unwrap();
        assert!(bare.env.is_empty() && !bare.args.iter().any(|a| a == "--token-env"));
        let fallback = BenchBeside { fallback_token: Some(Secret::new("canary-fallback-77")), ..BenchBeside::new("a") };
        let with_fallback = fallback.command(&plan(), &Endpoint::new("http://n1:8000", "m")).unwrap();
        assert_eq!(with_fallback.env[0].1.expose(), "canary-fallback-77");

        // Without its token the command is the bare one: the variable and the flag naming it go.
        let stripped = command.without_token();
        assert!(stripped.env.is_empty() && !format!("{stripped:?}").contains(canary));
        let bare_for_endpoint =
            BenchBeside::new("/opt/autodebug").command(&plan(), &Endpoint::new("http://n1:8000", "m")).unwrap();
        assert_eq!(stripped.args, bare_for_endpoint.args);
    }

    #[test]
    fn the_bound_covers_every_request_running_into_its_timeout() {
        let p = plan();
        // 4 warmup and 8 measured requests, 4 at a time: 1 + 2 rounds of the total timeout.
        assert_eq!(plan_bound(&p), p.timeouts.total * 3);
        assert_eq!(plan_bound(&p.clone().with_trials(2)), p.timeouts.total * 6);
        let timed = p.clone().with_duration(Duration::from_secs(30));
        assert_eq!(plan_bound(&timed), p.timeouts.total + Duration::from_secs(30) + p.timeouts.total);
        let rate = BenchPlan::new(
            "r",
            Workload::new(1, 1),
            Load::Rate { requests_per_s: 2.0, arrival: Default::default() },
            10,
        );
        assert_eq!(plan_bound(&rate), Duration::from_secs(5) + rate.timeouts.total);
        // A capacity search: each of its steps may start requests for three step lengths, drain
        // and warm up for a total timeout each, and settle after.
        let mut search = p.clone();
        search.capacity =
            Some(crate::CapacityGoal { step_ms: 10_000, max_steps: 4, ..crate::CapacityGoal::ttft_p99_ms(500.0) });
        let step = Duration::from_secs(30) + p.timeouts.total * 2 + crate::CapacityGoal::SETTLE_LIMIT;
        assert_eq!(plan_bound(&search), step * 4);
    }

    #[test]
    fn a_report_within_the_local_clock_is_used_as_it_came() {
        let window = TimeWindow::new(1_000, 2_000);
        let command = BenchBeside::new("autodebug").command(&plan(), &Endpoint::new("http://x:1", "m")).unwrap();
        let runner = BenchRunner { pid: 4242, host: "gpu-7".into(), slurm_step: Some("17.3".into()) };
        let run = read_run(&plan(), &command, &output(&report(window), runner), TimeWindow::new(900, 2_100)).unwrap();
        assert_eq!(run.report.window, window);
        assert!(run.skew_warning.is_none() && run.report.warnings.is_empty());
        assert_eq!(run.signal.labels.get("slurm_step").map(String::as_str), Some("17.3"));
        assert_eq!(run.signal.labels.get("pid").map(String::as_str), Some("4242"));
        let finding = finding(&[(run.signal, None)]).unwrap();
        assert_eq!(finding.severity, Severity::Info);
        assert!(finding.summary.contains("pid 4242 on gpu-7 (Slurm step 17.3)"), "{}", finding.summary);
    }

    #[test]
    fn a_window_outside_the_local_clock_is_kept_with_a_skew_warning() {
        let window = TimeWindow::new(1_000, 5_000_000);
        let command = BenchBeside::new("autodebug").command(&plan(), &Endpoint::new("http://x:1", "m")).unwrap();
        let run =
            read_run(&plan(), &command, &output(&report(window), BenchRunner::default()), TimeWindow::new(900, 2_000))
                .unwrap();
        assert_eq!(run.report.window, window, "telemetry is fetched for the reported window");
        let warning = run.skew_warning.clone().unwrap();
        assert!(warning.starts_with("clock skew") && warning.contains("5.0 ms late"), "{warning}");
        assert_eq!(run.report.warnings, vec![warning.clone()]);
        assert_eq!(finding(&[(run.signal, Some(warning))]).unwrap().severity, Severity::Warning);
    }

    #[test]
    fn failures_say_what_happened_with_the_end_of_stderr() {
        let command = BenchBeside::new("/nope/autodebug").command(&plan(), &Endpoint::new("http://x:1", "m")).unwrap();
        let bracket = TimeWindow::new(0, 1);
        let failed = BesideOutput {
            stderr_tail: vec!["error: disk full".into()],
            exit_code: Some(2),
            ran_as: "step 5.1 of Slurm job 5".into(),
            ..Default::default()
        };
        let text = read_run(&plan(), &command, &failed, bracket).unwrap_err().to_string();
        assert!(text.contains("printed nothing, exit code 2") && text.contains("| error: disk full"), "{text}");
        assert!(text.contains("/nope/autodebug") && text.contains("step 5.1 of Slurm job 5"), "{text}");
        let late = BesideOutput { timed_out: true, exit_code: None, ..failed.clone() };
        assert!(read_run(&plan(), &command, &late, bracket).unwrap_err().to_string().contains("was stopped"));
        let garbage = BesideOutput { stdout: "{\"not\": 1}".into(), ..failed };
        assert!(read_run(&plan(), &command, &garbage, bracket).unwrap_err().to_string().contains("no beside report"));
        let mut other = report(TimeWindow::new(0, 1));
        other.plan.requests = 9;
        let text =
            read_run(&plan(), &command, &output(&other, BenchRunner::default()), bracket).unwrap_err().to_string();
        assert!(text.contains("another plan"), "{text}");
    }
}
