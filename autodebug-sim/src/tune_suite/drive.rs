//! Driving one planner through a scenario as the loop would: the bench report and telemetry each
//! evaluation yields, where a proposal lands in the space, and what the run measured.

use std::collections::BTreeMap;

use autodebug_core::canonical as c;
use autodebug_core::rules::RuleAnalyzer;
use autodebug_core::{
    Analyzer, BenchContext, BenchPlan, BenchReport, BenchSummary, Distribution, Evidence, History, Iteration,
    IterationStatus, Load, LogLine, PlanInput, Planner, Result, SearchSpace, ServiceSpec, Signal, SignalKind,
    TelemetrySnapshot, TimeWindow, Workload,
};

use super::bench::{Bench, Measured};
use super::handwritten::Scenario;
use crate::{EngineKind, SimWorkload};

/// The bench plan a scenario's workload is, as the loop's benchmarker would run it.
pub(super) fn bench_plan(w: &SimWorkload) -> BenchPlan {
    let mut workload = Workload::new(w.prompt_tokens, w.output_tokens);
    workload.shared_prefix_tokens = w.shared_prefix_tokens;
    workload.repeat_prompt = w.repeat_prompt;
    let load = if w.concurrency > 1 { Load::Concurrent { concurrency: w.concurrency } } else { Load::Sequential };
    BenchPlan::new("chat", workload, load, w.requests)
}

/// The bench report the loop's benchmarker would have produced.
fn bench_report(scenario: &Scenario, m: &Measured, metrics: &BTreeMap<String, f64>) -> BenchReport {
    let w = &scenario.workload;
    let dist = |name: &str| {
        let get = |stat: &str| metrics.get(&format!("{name}.{stat}")).copied().unwrap_or(0.0);
        Distribution {
            count: m.result.as_ref().map_or(0, |r| r.e2e_ms.len() as u64),
            mean: get("mean"),
            std: get("std"),
            min: get("min"),
            p50: get("p50"),
            p90: get("p90"),
            p95: get("p95"),
            p99: get("p99"),
            p999: get("p999"),
            max: get("max"),
        }
    };
    let (requests, failed) = match &m.result {
        Some(r) => ((r.e2e_ms.len() + r.errors) as u64, r.errors as u64),
        None => (w.requests as u64, w.requests as u64),
    };
    let summary = BenchSummary {
        requests,
        succeeded: requests - failed,
        failed,
        duration_s: m.result.as_ref().map_or(0.0, |r| r.duration_s),
        ttft_ms: dist("ttft"),
        tpot_ms: dist("tpot"),
        itl_ms: dist("itl"),
        e2e_ms: dist("e2e"),
        request_throughput: metrics.get("request_throughput").copied().unwrap_or(0.0),
        output_throughput: metrics.get("output_throughput").copied().unwrap_or(0.0),
        total_token_throughput: metrics.get("total_token_throughput").copied().unwrap_or(0.0),
        prompt_tokens: m.result.as_ref().map_or(0, |r| r.prompt_tokens),
        output_tokens: m.result.as_ref().map_or(0, |r| r.output_tokens),
        cached_token_ratio: m.result.as_ref().map(|r| r.cached_token_ratio),
        ..BenchSummary::default()
    };
    BenchReport {
        plan: bench_plan(w),
        context: BenchContext {
            workload: w_describe(w),
            trials: 1,
            cache_state: "virtual".into(),
            client: "autodebug-sim virtual clock".into(),
            ..BenchContext::default()
        },
        summary,
        records: Vec::new(),
        window: TimeWindow::new(0, m.result.as_ref().map_or(0, |r| (r.duration_s * 1e9) as i128)),
        warnings: Vec::new(),
    }
}

fn w_describe(w: &SimWorkload) -> String {
    format!(
        "{} requests, {} prompt / {} output tokens, {} shared prefix, concurrency {}",
        w.requests, w.prompt_tokens, w.output_tokens, w.shared_prefix_tokens, w.concurrency
    )
}

/// The signals the telemetry crate would read for this run from a real SGLang, under the same
/// names and canonical tags: Prometheus gauges and counters scraped at the end of the run, and
/// the startup attributes its log prints. Nothing the model knows and an engine does not export
/// (the simulated CPU/GPU split of a step, an analytic queue length) is given to the planners.
fn telemetry(m: &Measured, metrics: &BTreeMap<String, f64>) -> TelemetrySnapshot {
    let mut snap = TelemetrySnapshot::new("sim", None);
    let metric = |name: &str, value: f64, unit: &str, canonical: &str| {
        Signal::number("prometheus", SignalKind::Metric, name, value, unit).with_canonical(canonical)
    };
    if let Some(config) = &m.config {
        for (key, value) in config.startup_attributes() {
            snap.signals.push(Signal::text(
                "graphsignal",
                SignalKind::SpanAttribute,
                &format!("sglang.startup.{key}"),
                value,
            ));
        }
        if let Some(r) = &m.result {
            let s = &r.stats;
            snap.signals.push(metric("sglang:token_usage", s.token_usage, "ratio", c::KV_USAGE));
            snap.signals.push(metric(
                "sglang:num_retracted_requests_total",
                s.retractions as f64,
                "requests",
                c::PREEMPTIONS,
            ));
            // The gauge as measured: it moves with the run like the client's throughput.
            snap.signals.push(metric(
                "sglang:gen_throughput",
                metrics.get("output_throughput").copied().unwrap_or(r.output_throughput),
                "tokens/s",
                c::GEN_THROUGHPUT,
            ));
            snap.signals.push(metric(
                "sglang:cached_tokens_total",
                s.cached_prompt_tokens as f64,
                "tokens",
                c::CACHED_TOKENS,
            ));
            let hit = if s.prompt_tokens > 0 { s.cached_prompt_tokens as f64 / s.prompt_tokens as f64 } else { 0.0 };
            snap.signals.push(metric("sglang:cache_hit_rate", hit, "ratio", c::PREFIX_HIT_RATE));
            snap.signals.push(metric(
                "sglang:max_total_num_tokens",
                s.max_total_tokens as f64,
                "tokens",
                c::MAX_TOTAL_TOKENS,
            ));
        }
    }
    if let Some(failure) = &m.failure {
        snap.signals.push(
            Signal::text("logs", SignalKind::LogLine, "engine.error", failure.clone()).with_canonical(c::ENGINE_ERROR),
        );
    }
    snap
}

/// What one planner run measured, per evaluation: the TRUE value of the configuration
/// evaluated when it is truly feasible.
#[derive(Default)]
pub(crate) struct Trace {
    pub(crate) values: Vec<Option<f64>>,
    /// Evaluations that failed to start or broke a constraint, as measured.
    pub(crate) failed: usize,
    pub(crate) invalid: usize,
    pub(crate) snapped: usize,
    /// The planner said it had nothing left to try before the budget ran out.
    pub(crate) stopped_early: bool,
    /// The rule behind each plan (its first change's), in order.
    pub(crate) rules: Vec<String>,
}

/// Where a proposal lands in the scenario's space.
pub(crate) enum Landing {
    /// On the ladder as proposed.
    Inside(ServiceSpec),
    /// Off the ladder; moved to the nearest levels.
    Snapped(ServiceSpec),
    /// Cannot be placed (a value not among a categorical knob's levels, or rejected by the
    /// catalog); the reason.
    Outside(String),
}

/// Places `proposal` in `scenario`'s space (see [`Landing`]).
pub(crate) fn land(scenario: &Scenario, catalog: &SearchSpace, proposal: &ServiceSpec) -> Landing {
    if let Err(e) = catalog.validate(proposal) {
        return Landing::Outside(e.to_string());
    }
    let Some(config) = scenario.space.encode(catalog, &proposal.flags) else {
        return Landing::Outside(format!(
            "`{}` sets a knob to a value outside the scenario's levels",
            proposal.flags.to_command_line()
        ));
    };
    let spec = match scenario.space.to_spec(catalog, &scenario.base, &config) {
        Err(e) => return Landing::Outside(e.to_string()),
        Ok(spec) => spec,
    };
    let same = |a: &ServiceSpec, b: &ServiceSpec, flag: &str| {
        catalog.effective(&a.flags, flag) == catalog.effective(&b.flags, flag)
    };
    let tuned: Vec<&str> = scenario.space.dims.iter().map(|d| d.flag.as_str()).collect();
    // A change to a knob the scenario does not search leaves the space: nothing to snap to.
    let untuned_changed = proposal
        .flags
        .iter()
        .chain(scenario.base.flags.iter())
        .any(|(f, _)| !tuned.contains(&f) && !same(proposal, &scenario.base, f));
    if untuned_changed {
        return Landing::Outside(format!(
            "`{}` changes a knob the scenario does not search",
            proposal.flags.to_command_line()
        ));
    }
    if tuned.iter().all(|f| same(proposal, &spec, f)) { Landing::Inside(spec) } else { Landing::Snapped(spec) }
}

pub(super) async fn run_planner(planner: &dyn Planner, bench: &Bench, budget: usize, run_seed: u64) -> Result<Trace> {
    let scenario = &bench.scenario;
    let flags: Vec<&str> = scenario.space.dims.iter().map(|d| d.flag.as_str()).collect();
    let catalog = SearchSpace::for_engine(EngineKind::Sglang);
    // The planners see the searched knobs; what else the starting spec sets (a TP degree the
    // scenario holds fixed) is fixed for them, as the user's own base flags are in the loop.
    // Without this every proposal carrying that flag failed the restricted catalog's check and
    // the planners stopped at their first plan.
    let mut space = catalog.clone().restrict(&flags);
    space.fixed.extend(scenario.base.flags.iter().map(|(f, _)| f.to_string()).filter(|f| !flags.contains(&f.as_str())));
    let objective = &scenario.objective;
    let analyzer = RuleAnalyzer::new();
    let mut history = History::default();
    let mut current = scenario.base.clone();
    let mut trace = Trace::default();
    for number in 1..=budget {
        let (m, seen) = bench.measure(&current, run_seed, number as u64);
        let ok = m.failure.is_none();
        let report = bench_report(scenario, &m, &seen);
        let snapshot = telemetry(&m, &seen);
        // A failed start leaves only the engine's log: the analyzer reads it as the loop would
        // read the deployer's logs, so startup rules (out of memory...) can fire.
        let logs: Vec<LogLine> = m
            .failure
            .iter()
            .flat_map(|f| f.lines())
            .map(|text| LogLine { time_ns: 0, text: text.to_string() })
            .collect();
        let evidence = Evidence {
            spec: &current,
            bench: if ok { std::slice::from_ref(&report) } else { &[] },
            logs: &logs,
            telemetry: std::slice::from_ref(&snapshot),
            history: &history,
        };
        let mut analysis = analyzer.analyze(&evidence).await?;
        analysis.metrics = seen.clone();
        if !ok || !objective.is_feasible(&seen) {
            trace.failed += 1;
        }
        trace.values.push(bench.value(&current));
        history.iterations.push(Iteration {
            number: number as u32,
            spec: current.clone(),
            artifact: None,
            status: if ok { IterationStatus::Ok } else { IterationStatus::DeployFailed },
            metrics: seen.clone(),
            bench: BTreeMap::from([("chat".to_string(), report.summary.clone())]),
            analysis,
            plan: None,
            error: m.failure.clone(),
            started_ns: 0,
            finished_ns: 0,
            timings: BTreeMap::new(),
            round: None,
        });
        if number == budget {
            break;
        }
        // As the session does: plan from the champion, with the latest analysis that ran; when
        // nothing has run yet, from the configuration that failed, with what its log said.
        let last = history.iterations.last();
        let champion = history.champion(objective).or_else(|| history.last_ok());
        let from = champion.or(last).map(|i| i.spec.clone()).unwrap_or_else(|| scenario.base.clone());
        let analysis = last
            .filter(|i| i.is_ok() || champion.is_none())
            .or(champion)
            .map(|i| i.analysis.clone())
            .unwrap_or_default();
        let input = PlanInput { history: &history, analysis: &analysis, space: &space, current: &from, objective };
        let plan = planner.plan(input).await?;
        let plan_exhausted = plan.exhausted;
        let next = plan.next.clone();
        trace.rules.push(plan.changes.first().map_or_else(String::new, |c| c.rule.clone()));
        if let Some(it) = history.iterations.last_mut() {
            it.plan = Some(plan);
        }
        if plan_exhausted {
            trace.stopped_early = true;
            break;
        }
        match land(scenario, &catalog, &next) {
            Landing::Inside(spec) => current = spec,
            Landing::Snapped(spec) => {
                trace.snapped += 1;
                current = spec;
            }
            Landing::Outside(reason) => {
                tracing::debug!(scenario = %scenario.name, %reason, "proposal outside the space");
                trace.invalid += 1;
            }
        }
    }
    Ok(trace)
}
