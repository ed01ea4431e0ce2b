//! One knob at a time (coordinate descent): from the champion, try each level of one knob with
//! the others held, move to whatever wins, go on to the next knob.

use async_trait::async_trait;

use crate::{Plan, PlanInput, Planner, Result};

use super::observe::{champion, observe};
use super::{TuneSpace, exhausted, plan_to, rule, tune_space};

/// Coordinate descent over the tuned space, from the noise-aware champion.
#[derive(Debug, Clone, Default)]
pub struct OneKnobPlanner {
    space: Option<TuneSpace>,
}

impl OneKnobPlanner {
    pub fn new() -> Self {
        OneKnobPlanner { space: None }
    }

    pub fn with_space(mut self, space: TuneSpace) -> Self {
        self.space = Some(space);
        self
    }
}

#[async_trait]
impl Planner for OneKnobPlanner {
    fn name(&self) -> &str {
        "oat"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        let tune = tune_space(self.space.as_ref(), &input);
        let observations = observe(input.history, input.objective, input.space, &tune);
        let tried: Vec<_> = observations.iter().filter_map(|o| o.config.clone()).collect();
        let start = champion(&observations, input.objective)
            .and_then(|c| observations[c].config.clone())
            .or_else(|| tune.encode(input.space, &input.current.flags))
            .unwrap_or_else(|| vec![0; tune.dims.len()]);
        // Knobs in order; within the knob, the levels nearest the current one first.
        for (d, dim) in tune.dims.iter().enumerate() {
            let mut levels: Vec<usize> = (0..dim.len()).filter(|l| *l != start[d]).collect();
            levels.sort_by_key(|l| l.abs_diff(start[d]));
            for level in levels {
                let mut config = start.clone();
                config[d] = level;
                let config = tune.canonical(config);
                if tried.contains(&config) {
                    continue;
                }
                let Ok(spec) = tune.to_spec(input.space, input.current, &config) else {
                    continue;
                };
                if input.history.tried(&spec) {
                    continue;
                }
                let reason = format!(
                    "one knob at a time: `{}` = {} with every other knob held at the champion's",
                    dim.flag,
                    dim.levels[level].as_deref().unwrap_or("default")
                );
                return Ok(plan_to(
                    self.name(),
                    &input,
                    spec,
                    rule::ONE_KNOB,
                    &reason,
                    tune.constraint_notes(input.space, input.current),
                ));
            }
        }
        Ok(exhausted(self.name(), &input, "every single-knob move from the champion has been measured".into()))
    }
}
