//! The first analyzer and planner: expert rules that tie a symptom in the signals to a knob change.
//!
//! [`RuleAnalyzer`] names bottlenecks (errors, scheduler overhead, prefill/decode overlap, prefix-cache
//! misses, queueing, KV capacity, decode-bound streams) and cites the signals each rests on.
//! [`RulePlanner`] turns those findings into changes inside the engine's knob catalog, plans from the
//! best configuration so far (so a regression rolls back by itself), never proposes a configuration
//! that was already tried, and, once no rule fires, walks the catalog's candidate values one knob at a
//! time so the loop keeps learning.

use async_trait::async_trait;

use crate::canonical as c;
use crate::{
    Analysis, Analyzer, Bottleneck, Change, Domain, EngineKind, Evidence, Finding, LaunchFlags, Plan, PlanInput,
    Planner, Result, SearchSpace, ServiceSpec, Severity, Signal, SignalKind,
};

/// Scheduler overhead share above which the scheduler is called the bottleneck.
const OVERHEAD_SHARE_WARN: f64 = 0.3;

/// Rule ids, shared by the analyzer (which raises them) and the planner (which acts on them).
pub mod rule {
    pub const BENCH_ERRORS: &str = "errors.bench";
    pub const ENGINE_ERRORS: &str = "errors.engine";
    pub const SCHEDULER_OVERHEAD: &str = "scheduler.overhead";
    pub const MIXED_CHUNK_OFF: &str = "sglang.mixed_chunk_off";
    pub const PREFIX_CACHE_MISSES: &str = "prefix_cache.misses";
    pub const DECODE_BOUND: &str = "decode.bound";
    pub const QUEUEING: &str = "queueing.server";
    pub const CLIENT_BOUND: &str = "queueing.client_bound";
    pub const KV_PRESSURE: &str = "kv.pressure";
    pub const EXPLORE: &str = "explore.one_knob";
    pub const NOT_APPLIED: &str = "config.not_applied";
}

/// Names bottlenecks from bench results and telemetry.
#[derive(Debug, Default, Clone)]
pub struct RuleAnalyzer;

impl RuleAnalyzer {
    pub fn new() -> Self {
        RuleAnalyzer
    }
}

fn bench_signal(name: &str, value: f64, unit: &str) -> Signal {
    Signal::number("bench", SignalKind::Bench, name, value, unit)
}

/// The first signal tagged with this canonical name.
fn canonical<'a>(ev: &'a Evidence<'_>, name: &str) -> Option<&'a Signal> {
    ev.signals().find(|s| s.canonical.as_deref() == Some(name))
}

/// The largest value among signals tagged with this canonical name (e.g. max over gauge stats).
fn canonical_max<'a>(ev: &'a Evidence<'_>, name: &str) -> Option<&'a Signal> {
    ev.signals()
        .filter(|s| s.canonical.as_deref() == Some(name) && s.as_f64().is_some())
        .max_by(|a, b| a.as_f64().unwrap_or(0.0).total_cmp(&b.as_f64().unwrap_or(0.0)))
}

/// A startup attribute (`sglang.startup.<key>`, `vllm.startup.<key>`), from any source.
fn startup_attribute<'a>(ev: &'a Evidence<'_>, key: &str) -> Option<&'a Signal> {
    let suffix = format!(".startup.{key}");
    ev.signals().find(|s| s.kind == SignalKind::SpanAttribute && s.name.ends_with(&suffix))
}

fn profile<'a>(ev: &'a Evidence<'_>, suffixes: &[&str]) -> Option<&'a Signal> {
    ev.signals().find(|s| s.kind == SignalKind::Profile && suffixes.iter().any(|x| s.name.ends_with(x)))
}

/// Whether a flag value (`None` for a switch) and an engine-reported setting say the same thing.
fn same_setting(flag_value: Option<&str>, reported: &str) -> bool {
    let norm = |v: &str| match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => "true".to_string(),
        "false" | "0" | "no" | "off" | "none" => "false".to_string(),
        other => other.trim_matches('"').to_string(),
    };
    let wanted = norm(flag_value.unwrap_or("true"));
    let reported = norm(reported);
    match (wanted.parse::<f64>(), reported.parse::<f64>()) {
        (Ok(a), Ok(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        _ => wanted.eq_ignore_ascii_case(&reported),
    }
}

fn is_false(signal: &Signal) -> bool {
    matches!(signal.value.as_text().to_ascii_lowercase().as_str(), "false" | "0" | "no" | "off")
}

#[async_trait]
impl Analyzer for RuleAnalyzer {
    fn name(&self) -> &str {
        "rules"
    }

    async fn analyze(&self, ev: &Evidence<'_>) -> Result<Analysis> {
        let mut out = Analysis::default();
        let mut find = |rule: &str, bottleneck, severity, summary: String, evidence: Vec<Signal>| {
            out.findings.push(Finding { rule: rule.to_string(), bottleneck, severity, summary, evidence });
        };

        // Errors seen by the client.
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
        // Errors the engine logged.
        let engine_errors: Vec<Signal> = ev.signals().filter(|s| s.canonical.as_deref() == Some(c::ENGINE_ERROR)).cloned().collect();
        if !engine_errors.is_empty() {
            find(
                rule::ENGINE_ERRORS,
                Bottleneck::Errors,
                Severity::Critical,
                format!("the engine logged {} error line(s)", engine_errors.len()),
                engine_errors.into_iter().take(3).collect(),
            );
        }

        // Scheduler overhead: CPU time around each forward pass.
        if let Some(share) = canonical(ev, c::SCHEDULER_OVERHEAD_SHARE).filter(|s| s.as_f64().is_some_and(|v| v >= OVERHEAD_SHARE_WARN)) {
            let v = share.as_f64().unwrap_or(0.0);
            let mut evidence = vec![share.clone()];
            evidence.extend(profile(ev, &["Scheduler.run_batch", "EngineCore.step"]).cloned());
            evidence.extend(profile(ev, &["ModelRunner.forward", "execute_model"]).cloned());
            evidence.extend(startup_attribute(ev, "num_continuous_decode_steps").cloned());
            find(
                rule::SCHEDULER_OVERHEAD,
                Bottleneck::SchedulerOverhead,
                if v >= 0.5 { Severity::Critical } else { Severity::Warning },
                format!("{:.0}% of each scheduler step is spent outside the model forward: CPU scheduling, not the GPU, limits decode", v * 100.0),
                evidence,
            );
        }

        // Did the change take effect? A flag the engine reports otherwise was ignored or overridden.
        for (flag, value) in ev.spec.flags.iter() {
            let key = flag.trim_start_matches('-').replace('-', "_");
            let Some(attr) = startup_attribute(ev, &key) else { continue };
            if !same_setting(value, &attr.value.as_text()) {
                let mut evidence = vec![attr.clone()];
                let needle = flag.trim_start_matches('-').replace('-', " ");
                evidence.extend(
                    ev.logs.iter().rev().find(|l| l.text.to_ascii_lowercase().contains(&needle) || l.text.contains(flag)).map(|l| {
                        Signal::text("logs", SignalKind::LogLine, "engine.log", l.text.clone())
                    }),
                );
                find(
                    rule::NOT_APPLIED,
                    Bottleneck::Config,
                    Severity::Warning,
                    format!("`{flag}` was asked for but the engine runs with {key}={}", attr.value.as_text()),
                    evidence,
                );
            }
        }

        // SGLang: prefill chunks do not ride along with decode batches.
        if ev.spec.engine == EngineKind::Sglang
            && !ev.spec.flags.contains("--enable-mixed-chunk")
            && let Some(attr) = startup_attribute(ev, "enable_mixed_chunk").filter(|a| is_false(a))
        {
            find(
                rule::MIXED_CHUNK_OFF,
                Bottleneck::Prefill,
                Severity::Info,
                "mixed chunking is off: running decodes stall while a new prompt is prefilled".to_string(),
                vec![attr.clone()],
            );
        }

        // Prefix reuse in the workload that the cache does not turn into hits.
        let reuse = ev.bench.iter().any(|r| r.plan.workload.repeat_prompt || r.plan.workload.shared_prefix_tokens > 0);
        if reuse {
            let hit_rate = canonical(ev, c::PREFIX_HIT_RATE);
            let policy = startup_attribute(ev, "schedule_policy");
            // The server's hit rate mixes every plan of the window; the client's cached-token
            // ratio of the plans that reuse prefixes says exactly what reuse was served.
            let cached_ratio = ev
                .bench
                .iter()
                .filter(|r| r.plan.workload.repeat_prompt || r.plan.workload.shared_prefix_tokens > 0)
                .find_map(|r| r.summary.cached_token_ratio.map(|v| (r, v)));
            let low_hits = match cached_ratio {
                Some((_, v)) => v < 0.5,
                None => hit_rate.and_then(|s| s.as_f64()).is_some_and(|v| v < 0.5),
            };
            let not_lpm = ev.spec.engine == EngineKind::Sglang && policy.is_some_and(|p| p.value.as_text() != "lpm");
            if low_hits || not_lpm {
                let mut evidence: Vec<Signal> = hit_rate.into_iter().chain(policy).cloned().collect();
                evidence.extend(canonical(ev, c::CACHED_TOKENS).cloned());
                if let Some((r, v)) = cached_ratio {
                    evidence.push(bench_signal(&format!("{}.cached_token_ratio", r.plan.name), v, "ratio"));
                }
                find(
                    rule::PREFIX_CACHE_MISSES,
                    Bottleneck::CacheMisses,
                    Severity::Warning,
                    "the workload reuses prompt prefixes but the scheduler does not order requests for prefix reuse".to_string(),
                    evidence,
                );
            }
        }

        // Decode-bound streams: most of each request is spent generating.
        if let Some(primary) = ev.bench.first() {
            let s = &primary.summary;
            let decode_ms = s.tpot_ms.mean * (primary.plan.workload.output_tokens.saturating_sub(1)) as f64;
            if s.e2e_ms.count > 0 && s.e2e_ms.mean > 0.0 && decode_ms / s.e2e_ms.mean >= 0.6 {
                let mut evidence = vec![bench_signal(&format!("{}.tpot.mean", primary.plan.name), s.tpot_ms.mean, "ms")
                    .with_detail(format!("{:.3} ms/token, {:.0}% of e2e {:.1} ms", s.tpot_ms.mean, decode_ms / s.e2e_ms.mean * 100.0, s.e2e_ms.mean))];
                evidence.extend(canonical(ev, c::ITL_S).cloned());
                evidence.extend(canonical(ev, c::GEN_THROUGHPUT).cloned());
                evidence.extend(startup_attribute(ev, "speculative_algorithm").cloned());
                find(
                    rule::DECODE_BOUND,
                    Bottleneck::Decode,
                    Severity::Warning,
                    format!("decode is {:.0}% of request time; more tokens per forward pass would shorten it", decode_ms / s.e2e_ms.mean * 100.0),
                    evidence,
                );
            }
        }

        // Requests wait in the server's queue while KV memory is free: admission is too cautious.
        let queue = canonical_max(ev, c::QUEUE_LEN).filter(|s| s.as_f64().is_some_and(|v| v > 0.0));
        let deferred = canonical_max(ev, c::DEFERRED).filter(|s| s.as_f64().is_some_and(|v| v > 0.0));
        let kv = canonical_max(ev, c::KV_USAGE);
        let kv_low = kv.and_then(|s| s.as_f64()).is_none_or(|v| v < 0.9);
        if let Some(q) = queue.or(deferred).filter(|_| kv_low) {
            let evidence: Vec<Signal> = [Some(q), kv].into_iter().flatten().cloned().collect();
            find(
                rule::QUEUEING,
                Bottleneck::Queueing,
                Severity::Warning,
                "requests queue in the server while KV memory is free: admission, not memory, limits concurrency".to_string(),
                evidence,
            );
        }

        // KV pool too small: preemptions / retractions.
        if let Some(p) = canonical_max(ev, c::PREEMPTIONS).filter(|s| s.as_f64().is_some_and(|v| v > 0.0)) {
            let mut evidence = vec![p.clone()];
            evidence.extend(kv.cloned());
            evidence.extend(canonical(ev, c::AVAILABLE_GPU_MEM_GB).cloned());
            find(
                rule::KV_PRESSURE,
                Bottleneck::KvCapacity,
                Severity::Warning,
                "the KV cache ran out and requests were preempted or retracted".to_string(),
                evidence,
            );
        }

        let evidence: Vec<Signal> = out.findings.iter().flat_map(|f| f.evidence.iter().cloned()).collect();
        for signal in evidence {
            out.cite(signal);
        }
        // Context worth citing even when no rule fires.
        for name in [c::GEN_THROUGHPUT, c::PREFIX_HIT_RATE, c::KV_USAGE, c::MAX_TOTAL_TOKENS, c::AVAILABLE_GPU_MEM_GB] {
            if let Some(s) = canonical(ev, name) {
                out.cite(s.clone());
            }
        }
        Ok(out)
    }
}

/// Turns findings into knob changes; see the [module docs](self).
#[derive(Debug, Default, Clone)]
pub struct RulePlanner;

impl RulePlanner {
    pub fn new() -> Self {
        RulePlanner
    }
}

/// A proposal being assembled: the flags so far and the changes that led there.
struct Draft<'a> {
    space: &'a SearchSpace,
    base: &'a ServiceSpec,
    flags: LaunchFlags,
    changes: Vec<Change>,
}

impl Draft<'_> {
    /// Sets `knob` to `to` unless that is already its value; returns whether it changed anything.
    fn set(&mut self, knob: &str, to: Option<&str>, rule: &str, reason: &str, evidence: &[Signal]) -> bool {
        if self.space.knob(knob).is_none() {
            return false;
        }
        let from = self.space.effective(&self.flags, knob);
        let wanted = match (&self.space.knob(knob).map(|k| &k.domain), to) {
            (Some(Domain::Switch), None) => Some("true".to_string()),
            (_, v) => v.map(str::to_string),
        };
        if from == wanted {
            return false;
        }
        let mut flags = self.flags.clone();
        if self.space.apply(&mut flags, knob, wanted.as_deref()).is_err() {
            return false;
        }
        self.flags = flags;
        self.changes.push(Change {
            knob: knob.to_string(),
            from,
            to: wanted,
            rule: rule.to_string(),
            reason: reason.to_string(),
            evidence: evidence.to_vec(),
        });
        true
    }

    fn spec(&self) -> ServiceSpec {
        ServiceSpec { flags: self.flags.clone(), ..self.base.clone() }
    }
}

fn int_value(space: &SearchSpace, flags: &LaunchFlags, knob: &str) -> Option<i64> {
    space.effective(flags, knob).and_then(|v| v.parse().ok())
}

fn float_value(space: &SearchSpace, flags: &LaunchFlags, knob: &str) -> Option<f64> {
    space.effective(flags, knob).and_then(|v| v.parse().ok())
}

impl RulePlanner {
    /// Applies the rule for one finding to the draft.
    fn apply_rule(&self, finding: &Finding, draft: &mut Draft<'_>, engine: EngineKind) {
        let ev = &finding.evidence;
        let space = draft.space;
        match (finding.rule.as_str(), engine) {
            (rule::SCHEDULER_OVERHEAD, EngineKind::Sglang) => {
                let steps = int_value(space, &draft.flags, "--num-continuous-decode-steps").unwrap_or(1);
                let next = if steps < 8 { 8 } else { (steps * 2).min(16) };
                draft.set(
                    "--num-continuous-decode-steps",
                    Some(&next.to_string()),
                    &finding.rule,
                    &format!("run {next} decode steps per scheduler round-trip to amortize the per-step CPU overhead"),
                    ev,
                );
            }
            (rule::MIXED_CHUNK_OFF, EngineKind::Sglang) => {
                draft.set("--enable-mixed-chunk", None, &finding.rule, "overlap chunked prefill with ongoing decode", ev);
            }
            (rule::PREFIX_CACHE_MISSES, EngineKind::Sglang) => {
                if !draft.set("--schedule-policy", Some("lpm"), &finding.rule, "longest-prefix-match scheduling maximizes radix-cache reuse", ev) {
                    draft.set("--disable-radix-cache", Some("false"), &finding.rule, "the radix cache must be on for prefix reuse", ev);
                }
            }
            (rule::PREFIX_CACHE_MISSES, EngineKind::Vllm) => {
                draft.set("--enable-prefix-caching", None, &finding.rule, "cache shared prompt prefixes", ev);
            }
            (rule::DECODE_BOUND, EngineKind::Sglang) => {
                // Speculation pays once scheduler overhead is already amortized by the running
                // configuration; proposing both at once would leave the gain of each unknown.
                let algorithm = space.effective(&draft.flags, "--speculative-algorithm");
                let overhead_bound = int_value(space, &draft.base.flags, "--num-continuous-decode-steps").unwrap_or(1) >= 8;
                if algorithm.is_none() && overhead_bound {
                    let reason = "draft tokens from n-gram matches: several tokens per forward pass without a draft model";
                    if draft.set("--speculative-algorithm", Some("NGRAM"), &finding.rule, reason, ev) {
                        draft.set("--speculative-num-draft-tokens", Some("3"), &finding.rule, "verify 3 draft tokens per step", ev);
                        draft.set("--speculative-num-steps", Some("3"), &finding.rule, "3 speculative steps per verify", ev);
                    }
                }
            }
            (rule::DECODE_BOUND, EngineKind::Vllm) => {
                if space.effective(&draft.flags, "--speculative-config").is_none()
                    && let Some(Domain::Choice { values }) = space.knob("--speculative-config").map(|k| &k.domain)
                    && let Some(first) = values.first()
                {
                    draft.set("--speculative-config", Some(first), &finding.rule, "n-gram speculative decoding: several tokens per forward pass", ev);
                }
            }
            (rule::QUEUEING, EngineKind::Sglang) => {
                let cons = float_value(space, &draft.flags, "--schedule-conservativeness").unwrap_or(1.0);
                if cons > 0.35 {
                    let next = format!("{:.1}", (cons * 0.5).max(0.3));
                    draft.set("--schedule-conservativeness", Some(&next), &finding.rule, "admit more queued requests while KV usage is low", ev);
                }
            }
            (rule::QUEUEING, EngineKind::Vllm) => {
                let seqs = int_value(space, &draft.flags, "--max-num-seqs").unwrap_or(256);
                draft.set("--max-num-seqs", Some(&(seqs * 2).min(1024).to_string()), &finding.rule, "admit more sequences per step", ev);
            }
            (rule::QUEUEING, EngineKind::LlamaCpp) => {
                let slots = int_value(space, &draft.flags, "--parallel").unwrap_or(1);
                draft.set("--parallel", Some(&(slots * 2).min(16).to_string()), &finding.rule, "requests were deferred for lack of a free slot", ev);
            }
            (rule::KV_PRESSURE, EngineKind::Sglang) => {
                let mem = float_value(space, &draft.flags, "--mem-fraction-static");
                let headroom = ev.iter().find(|s| s.canonical.as_deref() == Some(c::AVAILABLE_GPU_MEM_GB)).and_then(|s| s.as_f64());
                if headroom.is_some_and(|gb| gb > 5.0) {
                    let next = format!("{:.2}", (mem.unwrap_or(0.85) + 0.04).min(0.92));
                    draft.set("--mem-fraction-static", Some(&next), &finding.rule, "GPU memory is left free: give it to the KV pool", ev);
                } else {
                    let cap = int_value(space, &draft.flags, "--max-running-requests").unwrap_or(256);
                    draft.set("--max-running-requests", Some(&(cap / 2).max(8).to_string()), &finding.rule, "fewer running requests so the KV pool stops retracting", ev);
                }
            }
            (rule::KV_PRESSURE, EngineKind::Vllm) => {
                let util = float_value(space, &draft.flags, "--gpu-memory-utilization").unwrap_or(0.9);
                if util < 0.95 {
                    draft.set("--gpu-memory-utilization", Some(&format!("{:.2}", util + 0.03)), &finding.rule, "more memory for the KV cache to stop preemptions", ev);
                } else {
                    let seqs = int_value(space, &draft.flags, "--max-num-seqs").unwrap_or(256);
                    draft.set("--max-num-seqs", Some(&(seqs / 2).max(8).to_string()), &finding.rule, "fewer sequences so the KV cache stops preempting", ev);
                }
            }
            _ => {}
        }
    }

    /// One untried candidate value of one knob, for when no rule applies.
    fn explore(&self, input: &PlanInput<'_>, evidence: &[Signal]) -> Option<(ServiceSpec, Change)> {
        let space = input.space;
        for knob in space.knobs.iter().filter(|k| !k.quality_risk && k.requires.is_none()) {
            let current = space.effective(&input.current.flags, &knob.flag);
            let values: Vec<Option<String>> = match &knob.domain {
                Domain::Switch => vec![Some("true".into()), Some("false".into())],
                _ => knob.candidates.iter().cloned().map(Some).collect(),
            };
            for value in values {
                if value == current {
                    continue;
                }
                let mut flags = input.current.flags.clone();
                if space.apply(&mut flags, &knob.flag, value.as_deref()).is_err() {
                    continue;
                }
                let spec = ServiceSpec { flags, ..input.current.clone() };
                if input.history.tried(&spec) {
                    continue;
                }
                let change = Change {
                    knob: knob.flag.clone(),
                    from: current.clone(),
                    to: value.clone(),
                    rule: rule::EXPLORE.to_string(),
                    reason: format!("no rule fires on the current signals; measure `{}` = {} ({})", knob.flag, value.as_deref().unwrap_or("default"), knob.description),
                    evidence: evidence.to_vec(),
                };
                return Some((spec, change));
            }
        }
        None
    }
}

/// Rules in the order their changes are applied (errors first: nothing else matters while failing).
const RULE_ORDER: &[&str] = &[
    rule::KV_PRESSURE,
    rule::SCHEDULER_OVERHEAD,
    rule::MIXED_CHUNK_OFF,
    rule::PREFIX_CACHE_MISSES,
    rule::QUEUEING,
    rule::DECODE_BOUND,
];

#[async_trait]
impl Planner for RulePlanner {
    fn name(&self) -> &str {
        "rules"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        let engine = input.current.engine;
        let mut draft = Draft { space: input.space, base: input.current, flags: input.current.flags.clone(), changes: Vec::new() };
        let mut ordered: Vec<&Finding> = input.analysis.findings.iter().collect();
        let rank = |f: &Finding| RULE_ORDER.iter().position(|r| *r == f.rule).unwrap_or(usize::MAX);
        ordered.sort_by_key(|f| rank(f));
        for finding in ordered {
            self.apply_rule(finding, &mut draft, engine);
        }
        let mut notes = Vec::new();
        let proposed = draft.spec();
        if !draft.changes.is_empty() && !input.history.tried(&proposed) {
            return Ok(Plan { planner: self.name().into(), changes: draft.changes, next: proposed, exhausted: false, notes });
        }
        if !draft.changes.is_empty() {
            notes.push("the rules' proposal was already measured; exploring one knob instead".to_string());
        }
        // Cite what the loop knows best about the current state when exploring.
        let evidence: Vec<Signal> = input
            .analysis
            .findings
            .iter()
            .flat_map(|f| f.evidence.iter())
            .chain(input.analysis.cited.iter())
            .filter(|s| s.source != "bench" && s.source != "session")
            .take(2)
            .cloned()
            .collect();
        match self.explore(&input, &evidence) {
            Some((next, change)) => Ok(Plan { planner: self.name().into(), changes: vec![change], next, exhausted: false, notes }),
            None => {
                notes.push("every rule and every catalog candidate has been measured".to_string());
                Ok(Plan { planner: self.name().into(), changes: Vec::new(), next: input.current.clone(), exhausted: true, notes })
            }
        }
    }
}
