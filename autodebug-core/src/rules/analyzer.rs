//! [`RuleAnalyzer`]: the checks kept in code, then every knowledge-base rule.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::canonical as c;
use crate::{Analysis, Analyzer, Bottleneck, Evidence, Finding, Result, SearchSpace, Severity, Signal, SignalKind};

use super::eval::{Facts, normalize, render, same_setting, startup_attribute};
use super::kb::{KnowledgeBase, Rule};
use super::{derived, rule};

/// Names bottlenecks from bench results and telemetry, citing the signals each rests on.
///
/// Kept in code because they read structure rather than thresholds: client errors
/// ([`rule::BENCH_ERRORS`]), engine error lines ([`rule::ENGINE_ERRORS`]), asked-for flags the engine
/// reports otherwise ([`rule::NOT_APPLIED`]: startup attributes, vLLM's `cache_config_info` labels,
/// the startup `non-default args` / `server_args` lines), and the benchmark-derived signals of
/// [`derived`]. Everything else is a rule of the [`KnowledgeBase`].
#[derive(Debug, Clone)]
pub struct RuleAnalyzer {
    kb: Arc<KnowledgeBase>,
    /// The target's knob catalog, for the engine defaults conditions and derived figures read.
    space: Option<Arc<SearchSpace>>,
}

impl Default for RuleAnalyzer {
    fn default() -> Self {
        Self::new()
    }
}

impl RuleAnalyzer {
    /// The analyzer with the shipped rules.
    pub fn new() -> Self {
        Self::from_kb(KnowledgeBase::builtin())
    }

    pub fn from_kb(kb: KnowledgeBase) -> Self {
        RuleAnalyzer { kb: Arc::new(kb), space: None }
    }

    /// Reads unset flags at the defaults of this catalog (the session's, e.g.
    /// [`SearchSpace::for_platform`]: vLLM on a CPU steps at most 2048 tokens, on a GPU 8192)
    /// rather than at the engine's GPU defaults. Used for its engine only.
    pub fn with_space(mut self, space: SearchSpace) -> Self {
        self.space = Some(Arc::new(space));
        self
    }

    /// The shipped rules plus those of a user file (same ids replace shipped rules).
    pub fn with_rules_file(path: &Path) -> Result<Self> {
        let mut kb = KnowledgeBase::builtin();
        kb.extend(KnowledgeBase::load(path)?);
        Ok(Self::from_kb(kb))
    }

    pub fn knowledge_base(&self) -> &KnowledgeBase {
        &self.kb
    }
}

fn bench_signal(name: &str, value: f64, unit: &str) -> Signal {
    Signal::number("bench", SignalKind::Bench, name, value, unit)
}

/// Fewer draft tokens than this leave the acceptance rate unmeasured.
const MIN_DRAFT_TOKENS: f64 = 100.0;

/// Signals computed from the benchmark so rules can read them like telemetry.
fn derived_signals(ev: &Evidence<'_>, space: &SearchSpace) -> Vec<Signal> {
    let mut out = Vec::new();
    if let Some(primary) = ev.bench.first() {
        let s = &primary.summary;
        let decode_ms = s.tpot_ms.mean * primary.plan.workload.output_tokens.saturating_sub(1) as f64;
        if s.e2e_ms.count > 0 && s.e2e_ms.mean > 0.0 {
            let share = decode_ms / s.e2e_ms.mean;
            // The citation keeps the per-token figure a reader checks; the value is the share rules compare.
            out.push(
                bench_signal(&format!("{}.decode_share", primary.plan.name), share, "share")
                    .with_detail(format!(
                        "tpot {:.3} ms/token, {:.0}% of e2e {:.1} ms",
                        s.tpot_ms.mean,
                        share * 100.0,
                        s.e2e_ms.mean
                    ))
                    .with_canonical(derived::DECODE_SHARE),
            );
        }
    }
    if let Some(primary) = ev.bench.first()
        && let Some(share) = primary.summary.output_ngram_predictability
    {
        out.push(
            bench_signal(&format!("{}.output_ngram_predictability", primary.plan.name), share, "share")
                .with_detail(format!(
                    "{:.0}% of output chunks followed the same three chunks earlier in their answer",
                    share * 100.0
                ))
                .with_canonical(derived::OUTPUT_NGRAM_PREDICTABILITY),
        );
    }
    // One per plan: the configuration serves every workload of the session, and a rule reads the
    // largest (a sequential chat next to a concurrent mix still has prefills meeting decodes).
    for primary in ev.bench {
        let s = &primary.summary;
        // Requests the client kept in flight: the cap of a closed loop, or by Little's law the
        // arrival rate times the mean request time of an open loop.
        let in_flight = match &primary.plan.load {
            crate::Load::Sequential => Some(1.0),
            crate::Load::Concurrent { concurrency } => Some(*concurrency as f64),
            crate::Load::Rate { requests_per_s, .. } => {
                (s.e2e_ms.count > 0).then(|| requests_per_s * s.e2e_ms.mean / 1000.0)
            }
        };
        if let Some(n) = in_flight {
            out.push(
                bench_signal(&format!("{}.in_flight", primary.plan.name), n, "requests")
                    .with_canonical(derived::CLIENT_IN_FLIGHT),
            );
        }
    }
    // Accepted over proposed draft tokens, from the counters vLLM (`vllm:`) and llama.cpp
    // (`llamacpp:`) export while speculation runs; too few drafts say nothing about the rate.
    // One value per series (the largest, should a scrape repeat it), summed over label sets.
    let counter = |suffix: &str| {
        let mut series: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
        for s in ev.signals().filter(|s| s.name.ends_with(suffix)) {
            if let Some(v) = s.as_f64() {
                let slot = series.entry(format!("{}{:?}", s.name, s.labels)).or_insert(v);
                *slot = slot.max(v);
            }
        }
        (!series.is_empty()).then(|| series.values().sum::<f64>())
    };
    if let (Some(accepted), Some(drafted)) =
        (counter("spec_decode_num_accepted_tokens_total"), counter("spec_decode_num_draft_tokens_total"))
        && drafted >= MIN_DRAFT_TOKENS
    {
        out.push(
            Signal::number(
                "telemetry",
                SignalKind::Metric,
                "derived.spec_acceptance_rate",
                accepted / drafted,
                "ratio",
            )
            .with_detail(format!("{accepted:.0} of {drafted:.0} draft tokens accepted"))
            .with_canonical(derived::SPEC_ACCEPTANCE_RATE),
        );
    }
    // The engine's own window statistics: a histogram's mean over the window.
    let window_mean = |canonical: &str| {
        ev.signals().find(|s| {
            s.canonical.as_deref() == Some(canonical) && s.labels.get("stat").map(String::as_str) == Some("mean")
        })
    };
    // How full the engine's steps ran: tokens per step over the step's token budget, as the engine
    // reported it at startup (vLLM: `Chunked prefill is enabled with max_num_batched_tokens=N.`,
    // printed only where it differs from the platform's choice) or else the flag's value or the
    // target's default for it.
    let reported_budget = ev
        .signals()
        .find(|s| s.name.ends_with(".max_num_batched_tokens"))
        .and_then(|s| s.as_f64().map(|v| (v, "reported by the engine")));
    let budget = reported_budget.or_else(|| {
        let value = space.effective(&ev.spec.flags, "--max-num-batched-tokens")?.parse::<f64>().ok()?;
        let basis = if ev.spec.flags.contains("--max-num-batched-tokens") { "as set" } else { "the default" };
        Some((value, basis))
    });
    if let Some(per_step) = window_mean(c::TOKENS_PER_STEP)
        && let Some(tokens) = per_step.as_f64()
        && let Some((budget, basis)) = budget
        && budget > 0.0
    {
        out.push(
            Signal::number("telemetry", SignalKind::Metric, "derived.batch_fill", tokens / budget, "share")
                .with_detail(format!(
                    "{tokens:.1} tokens per engine step of a {budget:.0}-token step budget ({basis}; {} steps)",
                    per_step.count.map_or("?".into(), |n| format!("{n:.0}"))
                ))
                .with_canonical(derived::BATCH_FILL),
        );
    }
    // Compute threads over the target's cores: more threads than cores time-share them, and each
    // step waits for its slowest thread. The engine's own report wins over the flag, which may be
    // `-1` (pick for me).
    let reported_threads = ev
        .signals()
        .find(|s| s.canonical.as_deref() == Some(c::ENGINE_THREADS))
        .and_then(|s| s.as_f64().map(|v| (v, format!("the engine reported {v:.0} ({})", s.name))));
    let threads = reported_threads.or_else(|| {
        let value = ev.spec.flags.get("--threads").flatten()?.parse::<f64>().ok().filter(|v| *v > 0.0)?;
        Some((value, format!("--threads {value:.0}")))
    });
    if let (Some((threads, basis)), Some(cores)) = (threads, space.cpu_cores.filter(|c| *c > 0)) {
        out.push(
            Signal::number(
                "telemetry",
                SignalKind::Metric,
                "derived.threads_per_core",
                threads / f64::from(cores),
                "ratio",
            )
            .with_detail(format!(
                "{threads:.0} compute threads on {cores} core{} ({basis})",
                if cores == 1 { "" } else { "s" }
            ))
            .with_canonical(derived::THREADS_PER_CORE),
        );
    }
    // The share of a request's time in the engine spent waiting to be scheduled, both from the
    // engine's own histograms over the same window.
    if let (Some(queued), Some(e2e)) = (window_mean(c::QUEUE_TIME_S), window_mean(c::E2E_S))
        && let (Some(q), Some(total)) = (queued.as_f64(), e2e.as_f64())
        && total > 0.0
    {
        out.push(
            Signal::number("telemetry", SignalKind::Metric, "derived.queue_share", q / total, "share")
                .with_detail(format!(
                    "requests waited {:.1} ms of their {:.1} ms in the engine ({}, {})",
                    q * 1000.0,
                    total * 1000.0,
                    queued.name,
                    e2e.name
                ))
                .with_canonical(derived::QUEUE_SHARE),
        );
    }
    let reusing: Vec<_> =
        ev.bench.iter().filter(|r| r.plan.workload.repeat_prompt || r.plan.workload.shared_prefix_tokens > 0).collect();
    if let Some(first) = reusing.first() {
        out.push(
            bench_signal(&format!("{}.prefix_reuse", first.plan.name), 1.0, "").with_canonical(derived::PREFIX_REUSE),
        );
        // The server's hit rate mixes every plan of the window; the client's cached-token ratio of
        // the plans that reuse prefixes says exactly what reuse was served.
        let client = reusing.iter().find_map(|r| r.summary.cached_token_ratio.map(|v| (r, v)));
        match client {
            Some((r, v)) => out.push(
                bench_signal(&format!("{}.cached_token_ratio", r.plan.name), v, "ratio")
                    .with_canonical(derived::REUSE_CACHED_RATIO),
            ),
            None => {
                if let Some(hit) = ev.signals().find(|s| s.canonical.as_deref() == Some(c::PREFIX_HIT_RATE))
                    && let Some(v) = hit.as_f64()
                {
                    let mut s = hit.clone();
                    s.canonical = Some(derived::REUSE_CACHED_RATIO.into());
                    s.value = crate::SignalValue::Number(v);
                    out.push(s);
                }
            }
        }
    }
    out
}

/// The key an engine uses for a flag in its own reports (`--kv-cache-dtype` → `kv_cache_dtype`).
fn setting_keys(flag: &str) -> Vec<String> {
    let key = flag.trim_start_matches('-').replace('-', "_");
    let mut keys = vec![key.clone()];
    // vLLM's cache_config_info names some settings after CacheConfig fields.
    match key.as_str() {
        "kv_cache_dtype" => keys.push("cache_dtype".into()),
        "enable_prefix_caching" => keys.push("enable_prefix_caching".into()),
        _ => {}
    }
    keys
}

/// What the engine reports for a setting, and the signal that says so.
fn reported_setting(ev: &Evidence<'_>, signals: &[&Signal], flag: &str) -> Option<(String, Signal)> {
    let keys = setting_keys(flag);
    for key in &keys {
        if let Some(attr) = startup_attribute(signals, key) {
            return Some((attr.value.as_text(), attr.clone()));
        }
    }
    for info in signals.iter().filter(|s| s.name.ends_with("cache_config_info")) {
        for key in &keys {
            if let Some(v) = info.labels.get(key) {
                return Some((v.clone(), (*info).clone()));
            }
        }
    }
    for line in ev.logs.iter().filter(|l| l.text.contains("ServerArgs(") || l.text.contains("non-default args:")) {
        let args = crate::startup_args::from_line(&line.text);
        for key in &keys {
            if let Some((_, v)) = args.iter().find(|(k, _)| k == key) {
                let signal =
                    Signal::text("logs", SignalKind::LogLine, &format!("engine.startup_args.{key}"), v.clone())
                        .with_detail(format!("{key}={v} in the startup line"));
                return Some((v.clone(), signal));
            }
        }
    }
    None
}

/// Whether `signal` counts requests the client dropped while a capacity search cut an overloaded
/// step short: the search aborts them on purpose, so they are the benchmark's doing, not an engine
/// fault (an engine reports them as `<engine>.request.aborted`).
fn aborted_by_capacity_search(signal: &Signal, bench: &[crate::BenchReport]) -> bool {
    let cut_short = |r: &crate::BenchReport| {
        r.summary.capacity.as_ref().is_some_and(|c| c.steps.iter().any(|s| s.stopped_early.is_some()))
    };
    signal.name.ends_with(".request.aborted") && bench.iter().any(cut_short)
}

/// Whether a flag value (`None` for a switch) and an engine-reported setting say the same thing.
fn flag_matches(flag_value: Option<&str>, reported: &str) -> bool {
    same_setting(flag_value.unwrap_or("true"), reported)
}

/// The flag named by a [`rule::NOT_APPLIED`] finding (its summary opens with it in backticks).
pub fn not_applied_flag(finding: &Finding) -> Option<&str> {
    if finding.rule != rule::NOT_APPLIED {
        return None;
    }
    finding.summary.split('`').nth(1)
}

fn code_checks(ev: &Evidence<'_>, signals: &[&Signal], out: &mut Analysis) {
    let mut find = |rule: &str, bottleneck, severity, summary: String, evidence: Vec<Signal>| {
        out.findings.push(Finding { rule: rule.to_string(), bottleneck, severity, summary, evidence });
    };
    for report in ev.bench {
        let s = &report.summary;
        if s.failed > 0 {
            let classes: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let sig = bench_signal(&format!("{}.errors", report.plan.name), s.failed as f64, "requests")
                .with_detail(format!("{} of {} requests failed ({})", s.failed, s.requests, classes.join(", ")));
            find(
                rule::BENCH_ERRORS,
                Bottleneck::Errors,
                Severity::Critical,
                format!("{} of {} `{}` requests failed", s.failed, s.requests, report.plan.name),
                vec![sig],
            );
        }
    }
    let engine_errors: Vec<Signal> = signals
        .iter()
        .filter(|s| s.canonical.as_deref() == Some(c::ENGINE_ERROR) && !aborted_by_capacity_search(s, ev.bench))
        .map(|s| (*s).clone())
        .collect();
    if !engine_errors.is_empty() {
        find(
            rule::ENGINE_ERRORS,
            Bottleneck::Errors,
            Severity::Critical,
            format!("the engine logged {} error line(s)", engine_errors.len()),
            engine_errors.into_iter().take(3).collect(),
        );
    }
    // Did the change take effect? A flag the engine reports otherwise was ignored or overridden.
    for (flag, value) in ev.spec.flags.iter() {
        let Some((reported, signal)) = reported_setting(ev, signals, flag) else { continue };
        // An engine (or a redacted log line) that masks a secret setting says nothing about its
        // value: that is unknown, not a mismatch.
        if reported.contains(crate::secret::MASK) || flag_matches(value, &reported) {
            continue;
        }
        let mut evidence = vec![signal];
        let needle = flag.trim_start_matches('-').replace('-', " ");
        evidence.extend(
            ev.logs
                .iter()
                .rev()
                .find(|l| l.text.to_ascii_lowercase().contains(&needle) || l.text.contains(flag))
                .map(|l| Signal::text("logs", SignalKind::LogLine, "engine.log", l.text.clone())),
        );
        let key = flag.trim_start_matches('-').replace('-', "_");
        find(
            rule::NOT_APPLIED,
            Bottleneck::Config,
            Severity::Warning,
            format!("`{flag}` was asked for but the engine runs with {key}={}", normalize_for_display(&reported)),
            evidence,
        );
    }
}

fn normalize_for_display(v: &str) -> String {
    let n = normalize(v);
    if n == "true" || n == "false" { n } else { v.to_string() }
}

/// Evaluates one rule; `Some(finding)` when it fires.
pub(crate) fn evaluate(rule: &Rule, facts: &Facts<'_>) -> Option<Finding> {
    if !rule.engines.is_empty() && !rule.engines.contains(&facts.spec.engine) {
        return None;
    }
    let mut evidence: Vec<Signal> = Vec::new();
    let mut readings = Vec::new();
    let mut note = |cond: &super::kb::Condition, reading: Option<super::eval::Reading>| {
        if let Some(r) = reading {
            readings.push((cond.selector(), r.value.clone()));
            if let Some(s) = r.signal
                && !evidence.iter().any(|e| e.key() == s.key())
            {
                evidence.push(s);
            }
        }
    };
    for cond in &rule.when {
        let (holds, reading) = facts.check(cond);
        if !holds {
            return None;
        }
        note(cond, reading);
    }
    if !rule.any.is_empty() {
        let mut any = false;
        for cond in &rule.any {
            let (holds, reading) = facts.check(cond);
            if holds {
                any = true;
                note(cond, reading);
            }
        }
        if !any {
            return None;
        }
    }
    for cond in &rule.cite {
        note(cond, facts.read(cond));
    }
    let critical = !rule.critical_when.is_empty() && rule.critical_when.iter().all(|c| facts.check(c).0);
    Some(Finding {
        rule: rule.id.clone(),
        bottleneck: rule.bottleneck,
        severity: if critical { Severity::Critical } else { rule.severity },
        summary: render(&rule.summary, &readings),
        evidence,
    })
}

#[async_trait]
impl Analyzer for RuleAnalyzer {
    fn name(&self) -> &str {
        "rules"
    }

    async fn analyze(&self, ev: &Evidence<'_>) -> Result<Analysis> {
        let mut out = Analysis::default();
        let engine_catalog;
        let space = match self.space.as_deref() {
            Some(space) if space.engine == ev.spec.engine => space,
            _ => {
                engine_catalog = SearchSpace::for_engine(ev.spec.engine);
                &engine_catalog
            }
        };
        let derived = derived_signals(ev, space);
        let signals: Vec<&Signal> = ev.signals().chain(derived.iter()).collect();
        code_checks(ev, &signals, &mut out);

        let facts = Facts { signals: signals.clone(), logs: ev.logs, spec: ev.spec, space, slo: None };
        for rule in &self.kb.rules {
            if let Some(finding) = evaluate(rule, &facts) {
                out.findings.push(finding);
            }
        }

        let evidence: Vec<Signal> = out.findings.iter().flat_map(|f| f.evidence.iter().cloned()).collect();
        for signal in evidence {
            out.cite(signal);
        }
        // Context worth citing even when no rule fires: one value per source, so the server's
        // metrics and its own log lines can be read side by side.
        for name in [c::GEN_THROUGHPUT, c::PREFIX_HIT_RATE, c::KV_USAGE, c::MAX_TOTAL_TOKENS, c::AVAILABLE_GPU_MEM_GB] {
            let mut sources = Vec::new();
            for s in ev.signals().filter(|s| s.canonical.as_deref() == Some(name)) {
                if !sources.contains(&s.source.as_str()) {
                    sources.push(s.source.as_str());
                    out.cite(s.clone());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_argument_dumps_of_both_engines_parse() {
        let sglang = "server_args=ServerArgs(model_path='Qwen/Qwen1.5-0.5B-Chat', schedule_policy='fcfs', enable_mixed_chunk=False, json_model_override_args='{}')";
        let args = crate::startup_args::from_line(sglang);
        assert!(args.contains(&("schedule_policy".into(), "fcfs".into())), "{args:?}");
        assert!(args.contains(&("enable_mixed_chunk".into(), "False".into())), "{args:?}");
        let vllm = "INFO 03-24 non-default args: {'model': 'Qwen/Qwen1.5-0.5B-Chat', 'max_num_seqs': 64, 'gpu_memory_utilization': 0.85}";
        let args = crate::startup_args::from_line(vllm);
        assert!(args.contains(&("max_num_seqs".into(), "64".into())), "{args:?}");
        assert!(args.contains(&("gpu_memory_utilization".into(), "0.85".into())), "{args:?}");
        assert!(crate::startup_args::from_line("Decode batch. #running-req: 1").is_empty());
    }

    #[test]
    fn aborts_are_the_benchmarks_doing_only_when_a_capacity_search_cut_a_step_short() {
        use crate::{BenchPlan, BenchReport, BenchSummary, CapacityOutcome, CapacityProbe, Load, TimeWindow, Workload};
        let aborted = Signal::text("graphsignal", SignalKind::LogLine, "sglang.request.aborted", "client disconnected");
        let oom = Signal::text("graphsignal", SignalKind::LogLine, "sglang.error.oom", "CUDA out of memory");
        let report = |stopped_early: Option<&str>| {
            let probe =
                CapacityProbe { rate: 4.0, stopped_early: stopped_early.map(str::to_string), ..Default::default() };
            BenchReport {
                plan: BenchPlan::new("chat", Workload::new(8, 8), Load::Sequential, 1),
                context: Default::default(),
                summary: BenchSummary {
                    capacity: Some(CapacityOutcome { steps: vec![probe], ..Default::default() }),
                    ..Default::default()
                },
                records: Vec::new(),
                window: TimeWindow::new(0, 1),
                warnings: Vec::new(),
            }
        };
        let cut_short = [report(Some("3 requests over the TTFT bound"))];
        assert!(aborted_by_capacity_search(&aborted, &cut_short));
        assert!(!aborted_by_capacity_search(&oom, &cut_short), "a real fault still counts");
        assert!(!aborted_by_capacity_search(&aborted, &[report(None)]), "no step was cut short");
        let plain = BenchReport { summary: BenchSummary::default(), ..report(None) };
        assert!(!aborted_by_capacity_search(&aborted, &[plain]), "no capacity search");
    }

    #[test]
    fn booleans_compare_the_way_engines_print_them() {
        assert!(flag_matches(None, "True"));
        assert!(flag_matches(Some("0.80"), "0.8"));
        assert!(!flag_matches(Some("lpm"), "fcfs"));
        assert_eq!(normalize("'lpm'"), "lpm");
    }
}
