//! Measured iterations turned into what a twin is fitted to: flags, workload, measured metrics.

use std::collections::BTreeMap;

use autodebug_core::{BenchPlan, CapacityGoal, Iteration, LaunchFlags, Load};

use super::{PREDICTED_METRICS, PlanShape};
use crate::simulate::SimWorkload;

/// One bench plan of one successful iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub iteration: u32,
    pub plan: String,
    pub flags: LaunchFlags,
    /// The plan's workload as the server counted it: prompt and output tokens per request from the
    /// usage it reported (a chat template adds tokens; a local tokenizer may count 4x the bench's
    /// estimate), and the prompt tokens it reported cached as a shared prefix.
    pub workload: SimWorkload,
    /// The prompt length the bench asked for, in its own tokens.
    pub sent_prompt_tokens: u32,
    /// The measured [`PREDICTED_METRICS`] (those the bench reported).
    pub measured: BTreeMap<String, f64>,
    /// For a capacity plan: its goal and the capacity measured under it, req/s. The workload is
    /// then the open-loop run at that rate, whose figures the plan reported.
    pub capacity: Option<(CapacityGoal, f64)>,
}

impl Observation {
    /// `--flag value` of the configuration, for tables.
    pub fn describe_flags(&self) -> String {
        let text = self.flags.to_args().join(" ");
        if text.is_empty() { "(defaults)".into() } else { text }
    }
}

/// The workload of a bench plan as the twin's client sends it.
pub fn workload_of(plan: &BenchPlan) -> SimWorkload {
    let workload = &plan.workload;
    let mut sim = SimWorkload::sequential(plan.requests, workload.prompt_tokens, workload.output_tokens)
        .with_shared_prefix(workload.shared_prefix_tokens);
    sim.repeat_prompt = workload.repeat_prompt;
    match &plan.load {
        Load::Sequential => {}
        Load::Concurrent { concurrency } => sim = sim.with_concurrency(*concurrency),
        Load::Rate { requests_per_s, .. } => sim = sim.with_arrival_rate(*requests_per_s),
    }
    sim
}

/// One observation per bench plan of every successful iteration, with the metrics that plan measured
/// without errors (a plan with failed requests measured a different workload and is left out).
pub fn observations(plans: &[BenchPlan], iterations: &[Iteration]) -> Vec<Observation> {
    let mut out = Vec::new();
    for iteration in iterations.iter().filter(|i| i.is_ok()) {
        for plan in plans {
            let Some(summary) = iteration.bench.get(&plan.name) else { continue };
            if summary.failed > 0 || summary.succeeded == 0 {
                continue;
            }
            let all = summary.metrics();
            let measured: BTreeMap<String, f64> = PREDICTED_METRICS
                .iter()
                .filter_map(|name| {
                    all.get(*name).filter(|v| v.is_finite() && **v > 0.0).map(|v| (name.to_string(), *v))
                })
                .collect();
            if measured.is_empty() {
                continue;
            }
            let mut workload = workload_of(plan);
            let capacity = match (&plan.capacity, &summary.capacity) {
                (Some(goal), Some(outcome)) if outcome.rate > 0.0 => {
                    workload = workload.with_arrival_rate(outcome.rate);
                    workload.requests = summary.succeeded as usize;
                    Some((goal.clone(), outcome.rate))
                }
                // No rate held: the figures are of an overloaded step, no workload to fit.
                (Some(_), _) => continue,
                (None, _) => None,
            };
            let sent_prompt_tokens = workload.prompt_tokens;
            let per_request = |total: u64| (total as f64 / summary.succeeded as f64).round() as u32;
            if summary.prompt_tokens > 0 {
                workload.prompt_tokens = per_request(summary.prompt_tokens);
            }
            if summary.output_tokens > 0 {
                workload.output_tokens = per_request(summary.output_tokens);
            }
            if let Some(ratio) = summary.cached_token_ratio.filter(|r| r.is_finite() && *r > 0.0) {
                workload.shared_prefix_tokens = (ratio * f64::from(workload.prompt_tokens)).round() as u32;
            }
            out.push(Observation {
                iteration: iteration.number,
                plan: plan.name.clone(),
                flags: iteration.spec.flags.clone(),
                workload,
                sent_prompt_tokens,
                measured,
                capacity,
            });
        }
    }
    out
}

/// Each plan's shape as the fitting data saw it: the median prompt and output lengths the server
/// counted, and the most prompt tokens it ever reported cached (what the workload allows with the
/// cache on; a configuration with the cache off reuses none).
pub(crate) fn plan_shapes(observations: &[Observation]) -> BTreeMap<String, PlanShape> {
    let mut by_plan: BTreeMap<String, Vec<&Observation>> = BTreeMap::new();
    for observation in observations {
        by_plan.entry(observation.plan.clone()).or_default().push(observation);
    }
    by_plan
        .into_iter()
        .map(|(plan, seen)| {
            let median = |mut values: Vec<u32>| {
                values.sort_unstable();
                values[values.len() / 2]
            };
            let shape = PlanShape {
                prompt_tokens: median(seen.iter().map(|o| o.workload.prompt_tokens).collect()),
                output_tokens: median(seen.iter().map(|o| o.workload.output_tokens).collect()),
                cached_prompt_tokens: seen.iter().map(|o| o.workload.shared_prefix_tokens).max().unwrap_or(0),
                sent_prompt_tokens: Some(median(seen.iter().map(|o| o.sent_prompt_tokens).collect())),
            };
            (plan, shape)
        })
        .collect()
}
