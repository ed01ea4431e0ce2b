//! Exhaustive sweep of the tuned space in a fixed order: for comparison, and for small sweeps an
//! operator names (`TuneSpace` with two or three knobs).

use async_trait::async_trait;

use crate::{Plan, PlanInput, Planner, Result};

use super::observe::observe;
use super::{TuneSpace, exhausted, plan_to, rule, tune_space};

/// Visits every configuration of the space in mixed-radix order (first knob slowest), skipping
/// those already measured.
#[derive(Debug, Clone, Default)]
pub struct GridPlanner {
    space: Option<TuneSpace>,
}

impl GridPlanner {
    pub fn new() -> Self {
        GridPlanner { space: None }
    }

    pub fn with_space(mut self, space: TuneSpace) -> Self {
        self.space = Some(space);
        self
    }
}

#[async_trait]
impl Planner for GridPlanner {
    fn name(&self) -> &str {
        "grid"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        let tune = tune_space(self.space.as_ref(), &input);
        let tried: Vec<_> =
            observe(input.history, input.objective, input.space, &tune).into_iter().filter_map(|o| o.config).collect();
        for (index, config) in tune.enumerate().enumerate() {
            if tried.contains(&config) {
                continue;
            }
            let Ok(spec) = tune.to_spec(input.space, input.current, &config) else {
                continue;
            };
            if input.history.tried(&spec) {
                continue;
            }
            let reason = format!("grid point {} of {}: {}", index + 1, tune.size(), tune.describe(&config));
            return Ok(plan_to(
                self.name(),
                &input,
                spec,
                rule::GRID,
                &reason,
                tune.constraint_notes(input.space, input.current),
            ));
        }
        Ok(exhausted(self.name(), &input, "every grid point has been measured".into()))
    }
}
