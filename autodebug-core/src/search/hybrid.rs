//! The default planner, [`HybridPlanner`].

use async_trait::async_trait;

use crate::rules::{RulePlanner, rule as rules_rule};
use crate::{Plan, PlanInput, Planner, Result};

use super::confirm::verdict_note;
use super::observe::{best, observe};
use super::tpe::BayesPlanner;
use super::{TuneSpace, exhausted, plan_to, rule, tune_space};

/// Marks the notes of plans made in each phase, so the phase survives a resume from the store.
const RULES_PHASE: &str = "hybrid phase: rules";
const SEARCH_PHASE: &str = "hybrid phase: Bayesian search";

/// The default planner: expert rules while they fire, then Bayesian search, then confirmation.
///
/// Rules are cheap, explainable, and usually right about the first big moves (a scheduler that
/// dominates the step, a cache the scheduler ignores), so they go first. Once they stop firing
/// (only the rule planner's one-knob exploration is left) or have had their turns, the TPE search
/// takes over, warm-started by everything the rules measured. The search itself re-runs its best
/// configuration once it stops finding better ones, and every plan states whether the champion is
/// a DRAFT or a VERDICT (at least the confirmation's trials, and better than the baseline by
/// more than the objective's noise margin).
pub struct HybridPlanner {
    rules: Box<dyn Planner>,
    bayes: BayesPlanner,
    space: Option<TuneSpace>,
    max_rule_steps: usize,
}

impl std::fmt::Debug for HybridPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridPlanner")
            .field("rules", &self.rules.name())
            .field("bayes", &self.bayes)
            .field("max_rule_steps", &self.max_rule_steps)
            .finish()
    }
}

impl HybridPlanner {
    /// The built-in [`RulePlanner`] followed by a [`BayesPlanner`] seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        HybridPlanner {
            rules: Box::new(RulePlanner::new()),
            // The rule phase's measurements are the warm start: the search models them at once
            // instead of first spending evaluations on space-filling random points.
            bayes: BayesPlanner::new(seed).with_startup(2),
            space: None,
            max_rule_steps: 6,
        }
    }

    /// Searches exactly this space; the rules are then kept to its knobs too.
    pub fn with_space(mut self, space: TuneSpace) -> Self {
        self.bayes = self.bayes.with_space(space.clone());
        self.space = Some(space);
        self
    }

    /// Another rule planner (e.g. one backed by a knowledge base) for the first phase.
    pub fn with_rules(mut self, rules: impl Planner + 'static) -> Self {
        self.rules = Box::new(rules);
        self
    }

    /// A configured search for the second phase (its own space is replaced by [`with_space`](Self::with_space)'s when both are given).
    pub fn with_bayes(mut self, bayes: BayesPlanner) -> Self {
        self.bayes = match &self.space {
            Some(space) => bayes.with_space(space.clone()),
            None => bayes,
        };
        self
    }

    /// Rule proposals measured at most before the search takes over.
    pub fn with_max_rule_steps(mut self, steps: usize) -> Self {
        self.max_rule_steps = steps;
        self
    }

    async fn rule_proposal(&self, input: &PlanInput<'_>) -> Option<Plan> {
        let restricted;
        let space = match &self.space {
            Some(tune) => {
                let flags: Vec<&str> = tune.dims.iter().map(|d| d.flag.as_str()).collect();
                restricted = input.space.clone().restrict(&flags);
                &restricted
            }
            None => input.space,
        };
        let mut plan = self.rules.plan(PlanInput { space, ..*input }).await.ok()?;
        let fired =
            !plan.exhausted && !plan.changes.is_empty() && plan.changes.iter().all(|c| c.rule != rules_rule::EXPLORE);
        // A rule names a value from the catalog; the search space has its own ladder. Move the
        // proposal to the ladder's nearest levels (a categorical value not on it drops the
        // proposal), so the rule phase searches the same space as the search phase.
        if fired && let Some(tune) = &self.space {
            let config = tune.encode(input.space, &plan.next.flags)?;
            let snapped = tune.to_spec(input.space, &plan.next, &config).ok()?;
            if snapped.flags != plan.next.flags {
                plan.notes.push(format!("rule move snapped to the searched levels: {}", tune.describe(&config)));
                for change in &mut plan.changes {
                    if let Some(value) = snapped.flags.get(&change.knob) {
                        change.to = value.map(str::to_string);
                    }
                }
                plan.next = snapped;
            }
        }
        (fired && !input.history.tried(&plan.next) && input.space.validate(&plan.next).is_ok()).then_some(plan)
    }
}

#[async_trait]
impl Planner for HybridPlanner {
    fn name(&self) -> &str {
        "hybrid"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        let tune = tune_space(self.space.as_ref(), &input);
        let observations = observe(input.history, input.objective, input.space, &tune);
        let describe = |o: &super::Observation| {
            o.config.as_ref().map(|c| tune.describe(c)).unwrap_or_else(|| o.flags.to_command_line())
        };
        let verdict = verdict_note(&observations, input.objective, self.bayes.confirmation().trials, describe);
        let planned = input.history.iterations.iter().filter_map(|i| i.plan.as_ref());
        let searching = planned.clone().any(|p| p.notes.iter().any(|n| n == SEARCH_PHASE));
        let rule_steps = planned.filter(|p| p.notes.iter().any(|n| n == RULES_PHASE)).count();

        if !searching
            && rule_steps < self.max_rule_steps
            && let Some(mut plan) = self.rule_proposal(&input).await
        {
            plan.planner = self.name().to_string();
            plan.notes.push(RULES_PHASE.to_string());
            plan.notes.extend(verdict);
            return Ok(plan);
        }

        let mut notes = vec![SEARCH_PHASE.to_string()];
        if !searching {
            notes.push(format!("the rules stopped firing after {rule_steps} proposal(s); the Bayesian search takes over, warm-started from {} measured configuration(s)", observations.len()));
        }
        notes.extend(tune.constraint_notes(input.space, input.current));
        let proposal = match self.bayes.propose_batch(&input, 1) {
            Ok(p) => p.into_iter().next(),
            Err(e) => {
                notes.push(format!("Bayesian search unavailable: {e}"));
                None
            }
        };
        let mut plan = match proposal {
            Some(p) => {
                if p.confirmation {
                    notes.push(p.reason.clone());
                }
                plan_to(self.name(), &input, p.spec, p.rule, &p.reason, notes)
            }
            None => {
                // Nothing new to measure: spend what is left confirming the best configuration.
                let needed = self.bayes.confirmation().trials;
                match best(&observations).filter(|b| observations[*b].trials < needed) {
                    Some(b) => {
                        let o = &observations[b];
                        let next = crate::ServiceSpec {
                            flags: o.flags.clone(),
                            resources: o.resources.clone(),
                            ..input.current.clone()
                        };
                        let reason = format!(
                            "final confirmation: trial {} of {} of the best configuration",
                            o.trials + 1,
                            needed
                        );
                        notes.push(reason.clone());
                        plan_to(self.name(), &input, next, rule::CONFIRM, &reason, notes)
                    }
                    None => {
                        let mut plan = exhausted(self.name(), &input, "rules, search and confirmation are done".into());
                        plan.notes.splice(0..0, notes);
                        plan
                    }
                }
            }
        };
        plan.notes.extend(verdict);
        Ok(plan)
    }
}
