//! The rule knowledge base: symptoms in signals tied to knob changes, as data.
//!
//! A knowledge base is a YAML file with a `rules:` list. Each rule names the engines it applies to,
//! the conditions that make it fire (`when`: all of them, `any`: at least one), the extra signals a
//! finding cites, and the knob changes the planner makes from it (`then`). The shipped rules live
//! in `autodebug-core/rules/builtin.yaml`; users add their own with [`KnowledgeBase::load`] and
//! [`KnowledgeBase::extend`].
//!
//! ```
//! use autodebug_core::rules::KnowledgeBase;
//!
//! let kb = KnowledgeBase::from_yaml("my-rules.yaml", r#"
//! rules:
//!   - id: llamacpp.slots_busy
//!     engines: [llamacpp]
//!     bottleneck: queueing
//!     summary: "{requests_deferred} requests waited for a free slot"
//!     when:
//!       - { signal: requests_deferred, op: ">", value: 0 }
//!     then:
//!       - { knob: --parallel, raise: { factor: 2, max: 16 }, reason: "more slots" }
//! "#).unwrap();
//! assert_eq!(kb.rules[0].id, "llamacpp.slots_busy");
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Bottleneck, EngineKind, Error, Result, SearchSpace, Severity};

/// The shipped rules, compiled into the crate.
pub const BUILTIN_YAML: &str = include_str!("../../rules/builtin.yaml");

/// A set of rules, in evaluation order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeBase {
    pub rules: Vec<Rule>,
}

/// One symptom and what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable id, cited by findings and plan steps (`sglang.queue.admission`).
    pub id: String,
    /// Engines the rule applies to; empty means all.
    #[serde(default)]
    pub engines: Vec<EngineKind>,
    pub bottleneck: Bottleneck,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Raises the severity to critical when all of these hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub critical_when: Vec<Condition>,
    /// The finding's text; `{selector}` is replaced by the value read for that selector and
    /// `{selector|pct}` by it as a percentage.
    pub summary: String,
    /// All must hold.
    #[serde(default)]
    pub when: Vec<Condition>,
    /// At least one must hold (ignored when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<Condition>,
    /// Signals cited besides those the conditions read (`op` is ignored here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cite: Vec<Condition>,
    /// Knob changes the planner makes for a finding of this rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<Action>,
    /// `all`: every action that changes something; `first`: only the first one that does.
    #[serde(default)]
    pub apply: ApplyMode,
    /// Lower runs first when the planner combines several findings.
    #[serde(default = "default_priority")]
    pub priority: i32,
    /// Where the rule comes from (engine docs URL), for readers of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Rule {
    /// Whether a condition reads the objective (`slo`), so the planner, not the analyzer,
    /// decides whether the rule fires.
    pub fn reads_objective(&self) -> bool {
        self.when.iter().chain(&self.any).any(|c| c.slo.is_some())
    }
}

fn default_severity() -> Severity {
    Severity::Warning
}

fn default_priority() -> i32 {
    100
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyMode {
    #[default]
    All,
    First,
}

/// Comparison of a condition; `exists` holds whenever the selector reads a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "exists")]
    Exists,
}

/// Reads one value from the evidence and compares it.
///
/// Exactly one selector is set: `signal` (a canonical name, max over matches), `name` (an exact
/// signal name), `profile` (a profile whose name ends with one of the suffixes), `attribute` (a
/// startup attribute `<engine>.startup.<key>`), `flag` (the launch flag's effective value),
/// `log` (how many log lines contain the text) or `slo` (how many times over its bound the
/// configuration planned from measured a constraint of the objective on a metric starting with
/// the text, e.g. `ttft` for `ttft.p99 <= 2s`: `1.14` is 14% over, below 1 within the bound).
/// Only the planner knows the objective, so a rule that reads `slo` fires when a plan is made,
/// not in the analyzer's findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_yaml::Value>,
    /// The condition holds when the selector reads nothing (instead of failing).
    #[serde(default)]
    pub missing: bool,
}

impl Condition {
    /// The selector as written, used as the key of summary placeholders.
    pub fn selector(&self) -> String {
        if let Some(s) = &self.signal {
            return s.clone();
        }
        if let Some(s) = &self.name {
            return s.clone();
        }
        if !self.profile.is_empty() {
            return self.profile.join("|");
        }
        if let Some(s) = &self.attribute {
            return s.clone();
        }
        if let Some(s) = &self.flag {
            return s.clone();
        }
        if let Some(s) = &self.slo {
            return format!("slo.{s}");
        }
        self.log.clone().unwrap_or_default()
    }

    fn selectors_set(&self) -> usize {
        [
            self.signal.is_some(),
            self.name.is_some(),
            !self.profile.is_empty(),
            self.attribute.is_some(),
            self.flag.is_some(),
            self.log.is_some(),
            self.slo.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// How a numeric knob moves: `next = value * factor` (or `value ± by`), then held at least
/// `at_least` / at most `at_most`, then clamped into `[min, max]` and the knob's domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// One knob change; exactly one of `set`, `unset`, `raise`, `lower`, `multiply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub knob: String,
    /// A fixed value; `true`/`false` for switches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<serde_yaml::Value>,
    /// Remove the flag: the engine's own default (e.g. speculation off). Not for switches, which
    /// `set: false` turns off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unset: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raise: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiply: Option<Step>,
    pub reason: String,
    /// Applies only when these hold on the configuration being planned from and the finding's
    /// evidence.
    #[serde(default, rename = "if", skip_serializing_if = "Vec::is_empty")]
    pub only_if: Vec<Condition>,
    /// The value assumed when the knob is unset and has no catalog default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume: Option<f64>,
    /// Decimals of a float result (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<usize>,
}

/// What an action does to a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Raise,
    Lower,
    Any,
}

impl Action {
    pub(crate) fn step(&self) -> Option<(Direction, &Step)> {
        match (&self.raise, &self.lower, &self.multiply) {
            (Some(s), _, _) => Some((Direction::Raise, s)),
            (_, Some(s), _) => Some((Direction::Lower, s)),
            (_, _, Some(s)) => Some((Direction::Any, s)),
            _ => None,
        }
    }
}

/// A YAML scalar as text (`true`, `0.85`, `lpm`).
pub(crate) fn scalar_text(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl KnowledgeBase {
    /// The rules shipped with autodebug.
    pub fn builtin() -> Self {
        // The shipped file is checked by a unit test; an error here is a build defect.
        Self::from_yaml("autodebug-core/rules/builtin.yaml", BUILTIN_YAML).unwrap_or_default()
    }

    /// Reads and checks a rules file; errors name the file and the rule.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_yaml(&path.display().to_string(), &text)
    }

    /// Parses and checks rules from YAML text; `origin` names the file in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self> {
        let kb: KnowledgeBase = serde_yaml::from_str(text).map_err(|e| {
            Error::config(
                origin,
                format!(
                    "{e}; a rules file is `rules:` followed by a list of rules (see autodebug-core/rules/builtin.yaml)"
                ),
            )
        })?;
        kb.check(origin)?;
        Ok(kb)
    }

    /// Adds `other`'s rules; a rule with an id already present replaces it in place.
    pub fn extend(&mut self, other: KnowledgeBase) {
        for rule in other.rules {
            match self.rules.iter_mut().find(|r| r.id == rule.id) {
                Some(slot) => *slot = rule,
                None => self.rules.push(rule),
            }
        }
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// Checks what serde cannot: ids, one selector per condition, one operation per action,
    /// knobs that exist in the catalogs of the rule's engines.
    pub fn check(&self, origin: &str) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let at = |what: String| Error::config(format!("{origin}: rule `{}` (#{})", rule.id, index + 1), what);
            if rule.id.trim().is_empty() {
                return Err(at("`id` is empty; give every rule a stable id".into()));
            }
            if !seen.insert(rule.id.as_str()) {
                return Err(at("the id is used twice in this file; rename one".into()));
            }
            if rule.when.is_empty() && rule.any.is_empty() {
                return Err(at("has no `when` or `any` conditions, so it would fire always".into()));
            }
            let conditions = rule.when.iter().chain(&rule.any).chain(&rule.critical_when).chain(&rule.cite);
            for cond in conditions.chain(rule.then.iter().flat_map(|a| a.only_if.iter())) {
                if cond.selectors_set() != 1 {
                    return Err(at(format!(
                        "condition {cond:?} must set exactly one of signal, name, profile, attribute, flag, log, slo"
                    )));
                }
                match (cond.op, &cond.value) {
                    (Some(Op::Exists), _) | (None, None) => {}
                    (Some(_), Some(v)) if scalar_text(v).is_some() => {}
                    (Some(_), _) => {
                        return Err(at(format!("condition on `{}` needs a scalar `value`", cond.selector())));
                    }
                    (None, Some(_)) => {
                        return Err(at(format!("condition on `{}` has a `value` but no `op`", cond.selector())));
                    }
                }
            }
            let engines: Vec<EngineKind> = if rule.engines.is_empty() {
                vec![EngineKind::Sglang, EngineKind::Vllm, EngineKind::LlamaCpp]
            } else {
                rule.engines.clone()
            };
            for action in &rule.then {
                let ops = [
                    action.set.is_some(),
                    action.unset,
                    action.raise.is_some(),
                    action.lower.is_some(),
                    action.multiply.is_some(),
                ];
                if ops.iter().filter(|b| **b).count() != 1 {
                    return Err(at(format!(
                        "action on `{}` must set exactly one of set, unset, raise, lower, multiply",
                        action.knob
                    )));
                }
                if let Some(step) = action.step().map(|(_, s)| s)
                    && step.factor.is_none()
                    && step.by.is_none()
                    && step.at_least.is_none()
                    && step.at_most.is_none()
                {
                    return Err(at(format!(
                        "action on `{}` needs `factor`, `by`, `at_least` or `at_most`",
                        action.knob
                    )));
                }
                let known = engines.iter().any(|e| SearchSpace::for_engine(*e).knob(&action.knob).is_some());
                if !known {
                    let names: Vec<&str> = engines.iter().map(|e| e.as_str()).collect();
                    return Err(at(format!(
                        "knob `{}` is not in the catalog of {}; use a flag listed by `SearchSpace::for_engine`",
                        action.knob,
                        names.join(", ")
                    )));
                }
                let switch = engines.iter().any(|e| {
                    SearchSpace::for_engine(*e)
                        .knob(&action.knob)
                        .is_some_and(|k| matches!(k.domain, crate::Domain::Switch))
                });
                if action.unset && switch {
                    return Err(at(format!(
                        "`{}` is a switch: turn it off with `set: false`, not `unset`",
                        action.knob
                    )));
                }
                if let Some(v) = &action.set
                    && scalar_text(v).is_none()
                {
                    return Err(at(format!("`set` of `{}` must be a scalar", action.knob)));
                }
            }
        }
        Ok(())
    }
}
