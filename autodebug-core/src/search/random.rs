//! Uniform random search: the yardstick every smarter planner must beat.

use async_trait::async_trait;

use crate::rng::SplitMix64;
use crate::{Plan, PlanInput, Planner, Result};

use super::observe::observe;
use super::{TuneSpace, exhausted, plan_to, rule, tune_space};

/// Draws configurations uniformly (per knob) among those not yet measured; reproducible from
/// its seed and the history length.
#[derive(Debug, Clone)]
pub struct RandomPlanner {
    seed: u64,
    space: Option<TuneSpace>,
}

impl RandomPlanner {
    pub fn new(seed: u64) -> Self {
        RandomPlanner { seed, space: None }
    }

    pub fn with_space(mut self, space: TuneSpace) -> Self {
        self.space = Some(space);
        self
    }
}

/// Draws before falling back to the first unmeasured point in order.
const DRAWS: usize = 256;

#[async_trait]
impl Planner for RandomPlanner {
    fn name(&self) -> &str {
        "random"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        let tune = tune_space(self.space.as_ref(), &input);
        let tried: Vec<_> =
            observe(input.history, input.objective, input.space, &tune).into_iter().filter_map(|o| o.config).collect();
        let mut rng = SplitMix64::for_step(self.seed, input.history.iterations.len(), 0x7261_6E64);
        let draws = (0..DRAWS).map(|_| tune.canonical(tune.dims.iter().map(|d| rng.below(d.len())).collect()));
        for config in draws.chain(tune.enumerate()) {
            if tried.contains(&config) {
                continue;
            }
            let Ok(spec) = tune.to_spec(input.space, input.current, &config) else {
                continue;
            };
            if input.history.tried(&spec) {
                continue;
            }
            let reason = format!("random draw: {}", tune.describe(&config));
            return Ok(plan_to(
                self.name(),
                &input,
                spec,
                rule::RANDOM,
                &reason,
                tune.constraint_notes(input.space, input.current),
            ));
        }
        Ok(exhausted(self.name(), &input, "every configuration of the searched space has been measured".into()))
    }
}
