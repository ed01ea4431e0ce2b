//! Noise awareness: when to spend an evaluation re-running the best configuration, and whether a
//! result is a DRAFT (one lucky run could explain it) or a VERDICT (repeated, outside the noise).

use crate::{Objective, format_number};

use super::observe::{Observation, Outcome, best, champion, std_dev};

/// When the best configuration is re-run to confirm it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confirmation {
    /// Trials a finalist needs before its result is a verdict (at least 3 is sensible).
    pub trials: usize,
    /// Evaluations without a better configuration before the search stops to confirm its best.
    pub patience: usize,
}

impl Default for Confirmation {
    fn default() -> Self {
        Confirmation { trials: 3, patience: 6 }
    }
}

impl Confirmation {
    /// The observation to re-run now, if any: the best by mean, when it has fewer trials than a
    /// verdict needs and nothing better has turned up for `patience` evaluations.
    pub fn due(&self, observations: &[Observation], evaluations: usize) -> Option<usize> {
        let b = best(observations)?;
        let o = &observations[b];
        let since = evaluations.saturating_sub(o.first + 1);
        (o.trials < self.trials && since >= self.patience).then_some(b)
    }
}

/// The one-line DRAFT / VERDICT statement about the champion against the baseline (the first
/// configuration that ran).
pub fn verdict_note(
    observations: &[Observation],
    objective: &Objective,
    needed_trials: usize,
    describe: impl Fn(&Observation) -> String,
) -> Option<String> {
    let champ = champion(observations, objective).or_else(|| best(observations))?;
    let baseline = observations.iter().position(|o| !o.values.is_empty())?;
    let c = &observations[champ];
    let b = &observations[baseline];
    let (cv, bv) = (objective.value(&c.metrics)?, objective.value(&b.metrics)?);
    let improvement = objective.improvement_pct(bv, cv);
    let spread = |o: &Observation| {
        let sd = std_dev(&o.values);
        if o.values.len() > 1 { format!(" ± {}", format_number(sd)) } else { String::new() }
    };
    let facts = format!(
        "champion [{}] {} = {}{} over {} trial(s) vs baseline {}{} over {} trial(s): {:+.1}% (noise {}%)",
        describe(c),
        objective.metric,
        format_number(cv),
        spread(c),
        c.values.len(),
        format_number(bv),
        spread(b),
        b.values.len(),
        improvement,
        format_number(objective.noise_pct),
    );
    if champ == baseline {
        return Some(format!("DRAFT: nothing has beaten the baseline outside the noise yet; {facts}"));
    }
    let outside_noise = improvement > objective.noise_pct && matches!(c.outcome, Outcome::Feasible { .. });
    if c.values.len() >= needed_trials && outside_noise {
        Some(format!("VERDICT: {facts}"))
    } else {
        let why = if c.values.len() < needed_trials {
            format!("needs {} trials for a verdict", needed_trials)
        } else {
            "the difference is inside the noise".to_string()
        };
        Some(format!("DRAFT ({why}): {facts}"))
    }
}
