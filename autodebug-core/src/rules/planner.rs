//! [`RulePlanner`]: findings to knob changes through the knowledge base's actions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    BlamedSetting, Change, Domain, Finding, History, LaunchFlags, Plan, PlanInput, Planner, Result, SearchSpace,
    ServiceSpec, Signal,
};

use super::analyzer::{evaluate, not_applied_flag};
use super::eval::Facts;
use super::kb::{Action, ApplyMode, Direction, KnowledgeBase, scalar_text};
use super::rule;

/// Turns findings into changes inside the engine's knob catalog.
///
/// It plans from the configuration it is given (the session passes the best so far, so a
/// regression rolls back by itself), never proposes a configuration that was already tried, never
/// touches a flag the engine was seen ignoring ([`rule::NOT_APPLIED`], in this or any earlier
/// iteration), and once no rule fires walks the catalog's candidate values one knob at a time so
/// the loop keeps learning.
#[derive(Debug, Clone)]
pub struct RulePlanner {
    kb: Arc<KnowledgeBase>,
}

impl Default for RulePlanner {
    fn default() -> Self {
        Self::new()
    }
}

impl RulePlanner {
    /// The planner with the shipped rules.
    pub fn new() -> Self {
        Self::from_kb(KnowledgeBase::builtin())
    }

    pub fn from_kb(kb: KnowledgeBase) -> Self {
        RulePlanner { kb: Arc::new(kb) }
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

/// Flags the engine ignored in any recorded iteration or in the current analysis.
pub fn ignored_flags(history: &History, current: &[Finding]) -> BTreeSet<String> {
    history
        .iterations
        .iter()
        .flat_map(|i| i.analysis.findings.iter())
        .chain(current)
        .filter_map(not_applied_flag)
        .map(str::to_string)
        .collect()
}

/// A proposal being assembled: the flags so far and the changes that led there.
struct Draft<'a> {
    space: &'a SearchSpace,
    base: &'a ServiceSpec,
    flags: LaunchFlags,
    changes: Vec<Change>,
    ignored: &'a BTreeSet<String>,
    /// Settings that made a start fail for a reason that holds: a rule moves on to its next action.
    blamed: Vec<BlamedSetting>,
}

impl Draft<'_> {
    /// Sets `knob` to `to` unless that is already its value, the engine ignored it, or an earlier
    /// (higher-priority) rule already moved it; returns whether it changed anything.
    fn set(&mut self, knob: &str, to: Option<&str>, rule: &str, reason: &str, evidence: &[Signal]) -> bool {
        let Some(spec) = self.space.knob(knob) else { return false };
        if self.ignored.contains(knob) || self.changes.iter().any(|c| c.knob == knob) {
            return false;
        }
        let from = self.space.effective(&self.flags, knob);
        let wanted = match (&spec.domain, to) {
            (Domain::Switch, None) => Some("true".to_string()),
            (Domain::Switch, Some(v)) => Some(v.to_ascii_lowercase()),
            (_, v) => v.map(str::to_string),
        };
        if from == wanted {
            return false;
        }
        let value = wanted.as_deref().unwrap_or("true");
        if self.blamed.iter().any(|b| b.flag == knob && b.value == value) {
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

/// The value an action moves a numeric knob to, formatted for its domain; `None` when it cannot.
fn stepped_value(action: &Action, space: &SearchSpace, flags: &LaunchFlags) -> Option<String> {
    let (direction, step) = action.step()?;
    let knob = space.knob(&action.knob)?;
    let current = space.effective(flags, &action.knob).and_then(|v| v.parse::<f64>().ok()).or(action.assume)?;
    let mut next = match (step.factor, step.by) {
        (Some(f), _) => current * f,
        (None, Some(by)) if direction == Direction::Lower => current - by,
        (None, Some(by)) => current + by,
        (None, None) => current,
    };
    if let Some(v) = step.at_least {
        next = next.max(v);
    }
    if let Some(v) = step.at_most {
        next = next.min(v);
    }
    if let Some(v) = step.min {
        next = next.max(v);
    }
    if let Some(v) = step.max {
        next = next.min(v);
    }
    let text = match knob.domain {
        Domain::Int { min, max } => (next.round() as i64).clamp(min, max).to_string(),
        Domain::Float { min, max } => format!("{:.*}", action.decimals.unwrap_or(2), next.clamp(min, max)),
        _ => return None,
    };
    let moved: f64 = text.parse().ok()?;
    let goes_the_right_way = match direction {
        Direction::Raise => moved > current,
        Direction::Lower => moved < current,
        Direction::Any => (moved - current).abs() > f64::EPSILON,
    };
    goes_the_right_way.then_some(text)
}

#[async_trait]
impl Planner for RulePlanner {
    fn name(&self) -> &str {
        "rules"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        let ignored = ignored_flags(input.history, &input.analysis.findings);
        let mut draft = Draft {
            space: input.space,
            base: input.current,
            flags: input.current.flags.clone(),
            changes: Vec::new(),
            ignored: &ignored,
            blamed: input.history.blamed_settings(),
        };
        let measured = measured_metrics(&input);
        let objective_findings = self.objective_findings(&input, measured);
        let mut ordered: Vec<(&Finding, &super::kb::Rule)> = input
            .analysis
            .findings
            .iter()
            .chain(&objective_findings)
            .filter_map(|f| self.kb.rule(&f.rule).map(|r| (f, r)))
            .collect();
        ordered.sort_by_key(|(_, r)| r.priority);
        for (finding, rule) in ordered {
            // Guards read the configuration planned from and what this finding and the analysis cite.
            let facts = planning_facts(&input, measured, finding.evidence.iter());
            for action in &rule.then {
                if !action.only_if.iter().all(|c| facts.check(c).0) {
                    continue;
                }
                let value = match &action.set {
                    _ if action.unset => None,
                    Some(v) => Some(scalar_text(v)),
                    None => Some(stepped_value(action, input.space, &draft.flags)),
                };
                let changed = match value {
                    None => draft.set(&action.knob, None, &rule.id, &action.reason, &finding.evidence),
                    Some(Some(value)) => {
                        draft.set(&action.knob, Some(&value), &rule.id, &action.reason, &finding.evidence)
                    }
                    Some(None) => continue,
                };
                if changed && rule.apply == ApplyMode::First {
                    break;
                }
            }
        }
        let mut notes = Vec::new();
        if !ignored.is_empty() {
            let list: Vec<&str> = ignored.iter().map(String::as_str).collect();
            notes.push(format!("left alone because the engine ignored them before: {}", list.join(", ")));
        }
        let proposed = draft.spec();
        if !draft.changes.is_empty() && !input.history.tried(&proposed) {
            return Ok(Plan {
                planner: self.name().into(),
                changes: draft.changes,
                next: proposed,
                exhausted: false,
                notes,
            });
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
        match explore(&input, &evidence, &ignored) {
            Some((next, change)) => {
                Ok(Plan { planner: self.name().into(), changes: vec![change], next, exhausted: false, notes })
            }
            None => {
                notes.push("every rule and every catalog candidate has been measured".to_string());
                Ok(Plan {
                    planner: self.name().into(),
                    changes: Vec::new(),
                    next: input.current.clone(),
                    exhausted: true,
                    notes,
                })
            }
        }
    }
}

/// What the configuration planned from measured: its latest run in the history, else the
/// analysis' metrics.
fn measured_metrics<'a>(input: &PlanInput<'a>) -> &'a BTreeMap<String, f64> {
    input
        .history
        .iterations
        .iter()
        .rev()
        .find(|i| i.is_ok() && i.spec.flags == input.current.flags && i.spec.resources == input.current.resources)
        .map(|i| &i.metrics)
        .unwrap_or(&input.analysis.metrics)
}

/// What the planner's guards and `slo` conditions read: `evidence` plus what the analysis
/// cites, about the configuration planned from and what it measured.
fn planning_facts<'a>(
    input: &PlanInput<'a>,
    measured: &'a BTreeMap<String, f64>,
    evidence: impl Iterator<Item = &'a Signal>,
) -> Facts<'a> {
    Facts {
        signals: evidence.chain(input.analysis.cited.iter()).collect(),
        logs: &[],
        spec: input.current,
        space: input.space,
        slo: Some((input.objective, measured)),
    }
}

impl RulePlanner {
    /// Findings of the rules that read the objective (`slo` conditions), which only the planner
    /// can evaluate: the analyzer does not know what the user asked for.
    fn objective_findings(&self, input: &PlanInput<'_>, measured: &BTreeMap<String, f64>) -> Vec<Finding> {
        let evidence = input.analysis.findings.iter().flat_map(|f| f.evidence.iter());
        let facts = planning_facts(input, measured, evidence);
        self.kb
            .rules
            .iter()
            .filter(|r| r.reads_objective())
            .filter(|r| !input.analysis.findings.iter().any(|f| f.rule == r.id))
            .filter_map(|r| evaluate(r, &facts))
            .collect()
    }
}

/// One untried candidate value of one knob, for when no rule applies.
fn explore(input: &PlanInput<'_>, evidence: &[Signal], ignored: &BTreeSet<String>) -> Option<(ServiceSpec, Change)> {
    let space = input.space;
    for knob in space.knobs.iter().filter(|k| !k.quality_risk && k.requires.is_none() && !ignored.contains(&k.flag)) {
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
                reason: format!(
                    "no rule fires on the current signals; measure `{}` = {} ({})",
                    knob.flag,
                    value.as_deref().unwrap_or("default"),
                    knob.description
                ),
                evidence: evidence.to_vec(),
            };
            return Some((spec, change));
        }
    }
    None
}
