//! Search planners: black-box optimizers over the knob catalog, for when expert rules run out.
//!
//! - [`BayesPlanner`]: a constrained, failure-aware Tree-structured Parzen Estimator (TPE) with
//!   batch proposals and confirmation runs of the best configuration;
//! - [`HybridPlanner`]: the rule planner while its rules fire, then the Bayesian search, then
//!   repeated trials of the champion, with a DRAFT / VERDICT statement in every plan's notes;
//! - [`GridPlanner`], [`OneKnobPlanner`], [`RandomPlanner`]: baselines and operator-named sweeps.
//!
//! All of them see the knobs through a [`TuneSpace`] (each knob as a ladder of levels, derived
//! from the catalog or given explicitly), learn only from the [`History`](crate::History), are
//! deterministic given their seed, and never propose a configuration that fails
//! [`SearchSpace::validate`](crate::SearchSpace::validate) — the engine's cross-flag
//! [constraints](crate::knobs::Constraint) included: [`TuneSpace::to_spec`] refuses a point that
//! breaks one or that one cannot be checked for, every planner skips such points, and its plan's
//! notes name the rules that pruned the space.
//!
//! ```
//! use autodebug_core::search::{BayesPlanner, Dimension, TuneSpace};
//! use autodebug_core::{EngineKind, SearchSpace};
//!
//! let catalog = SearchSpace::for_engine(EngineKind::Sglang);
//! let tune = TuneSpace::new(vec![
//!     Dimension::new(&catalog, "--num-continuous-decode-steps", &["1", "4", "8"]).unwrap(),
//!     Dimension::new(&catalog, "--schedule-policy", &["fcfs", "lpm"]).unwrap(),
//! ]);
//! assert_eq!(tune.size(), 6);
//! let planner = BayesPlanner::new(7).with_space(tune);
//! # let _ = planner;
//! ```

mod confirm;
mod grid;
mod hybrid;
mod oat;
mod observe;
mod random;
mod space;
mod tpe;

pub use crate::rng::SplitMix64;
pub use confirm::{Confirmation, verdict_note};
pub use grid::GridPlanner;
pub use hybrid::HybridPlanner;
pub use oat::OneKnobPlanner;
pub use observe::{Observation, Outcome, best, champion, observe};
pub use random::RandomPlanner;
pub use space::{Config, Dimension, TuneSpace};
pub use tpe::{BayesPlanner, Proposal};

use crate::{Change, Plan, PlanInput, SearchSpace, ServiceSpec};

/// Rule ids of search proposals, as they appear in [`Change::rule`].
pub mod rule {
    pub const TPE: &str = "search.tpe";
    pub const STARTUP: &str = "search.startup";
    pub const GRID: &str = "search.grid";
    pub const RANDOM: &str = "search.random";
    pub const ONE_KNOB: &str = "search.one_knob";
    pub const CONFIRM: &str = "search.confirm";
}

/// The tuned space: the planner's own, or one derived from the catalog the loop passes in.
fn tune_space(own: Option<&TuneSpace>, input: &PlanInput<'_>) -> TuneSpace {
    own.cloned().unwrap_or_else(|| TuneSpace::from_space(input.space, input.current))
}

/// One change per knob whose effective value differs between `from` and `to`.
fn diff(space: &SearchSpace, from: &ServiceSpec, to: &ServiceSpec, rule: &str, reason: &str) -> Vec<Change> {
    let mut flags: Vec<&str> = from.flags.iter().map(|(f, _)| f).chain(to.flags.iter().map(|(f, _)| f)).collect();
    flags.dedup();
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for flag in flags {
        // `--no-enable-x` is the knob `--enable-x` turned off: one change, under the knob's name.
        let flag = space.knob_for(flag).map_or(flag, |k| k.flag.as_str());
        if !seen.insert(flag) || space.fixed.iter().any(|f| f == flag) {
            continue;
        }
        let (a, b) = if space.knob(flag).is_some() {
            (space.effective(&from.flags, flag), space.effective(&to.flags, flag))
        } else {
            (
                from.flags.get(flag).map(|v| v.unwrap_or("true").to_string()),
                to.flags.get(flag).map(|v| v.unwrap_or("true").to_string()),
            )
        };
        if a != b {
            out.push(Change {
                knob: flag.to_string(),
                from: a,
                to: b,
                rule: rule.to_string(),
                reason: reason.to_string(),
                evidence: Vec::new(),
            });
        }
    }
    out
}

/// A plan moving from `input.current` to `next`, one [`Change`] per knob that differs (for planners
/// written outside this module, such as a twin-screened search).
pub fn plan_to(
    planner: &str,
    input: &PlanInput<'_>,
    next: ServiceSpec,
    rule: &str,
    reason: &str,
    notes: Vec<String>,
) -> Plan {
    let changes = diff(input.space, input.current, &next, rule, reason);
    Plan { planner: planner.to_string(), changes, next, exhausted: false, notes }
}

/// The plan of a planner with nothing left to try.
pub fn exhausted(planner: &str, input: &PlanInput<'_>, note: String) -> Plan {
    Plan {
        planner: planner.to_string(),
        changes: Vec::new(),
        next: input.current.clone(),
        exhausted: true,
        notes: vec![note],
    }
}
