//! Whether the champion really beats the baseline: both re-run interleaved after the search.

use serde::{Deserialize, Serialize};

use crate::Objective;

/// The champion against the baseline on interleaved re-runs of both, after the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The iterations whose configurations were re-run.
    pub baseline_iteration: u32,
    pub champion_iteration: u32,
    /// The objective's value in each trial, in the order they ran.
    pub baseline_values: Vec<f64>,
    pub champion_values: Vec<f64>,
    /// Champion median over baseline median (for a minimized objective, baseline over champion):
    /// above 1 is better.
    pub ratio: f64,
    /// Chance of a separation at least this clean if both were the same configuration: the exact
    /// one-sided Mann-Whitney probability that every champion trial beats every baseline trial.
    pub p_value: f64,
    /// Every champion trial beat every baseline trial, and the medians differ by more than the
    /// objective's noise margin.
    pub confirmed: bool,
}

impl Confirmation {
    pub(super) fn judge(
        baseline_iteration: u32,
        champion_iteration: u32,
        base: Vec<f64>,
        champ: Vec<f64>,
        objective: &Objective,
    ) -> Self {
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n == 0 {
                f64::NAN
            } else if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        };
        let (mb, mc) = (median(&base), median(&champ));
        let maximize = objective.direction == crate::Direction::Maximize;
        let ratio = if maximize { mc / mb } else { mb / mc };
        let better = |c: f64, b: f64| if maximize { c > b } else { c < b };
        let separated =
            !base.is_empty() && !champ.is_empty() && champ.iter().all(|&c| base.iter().all(|&b| better(c, b)));
        // 1 / C(n+m, n): the only ordering out of all equally likely ones that separates this cleanly.
        let (n, m) = (champ.len() as f64, base.len() as f64);
        let p_value = if separated { 1.0 / binomial(n + m, n) } else { 1.0 };
        let confirmed = separated && objective.improvement_pct(mb, mc) > objective.noise_pct;
        Confirmation {
            baseline_iteration,
            champion_iteration,
            baseline_values: base,
            champion_values: champ,
            ratio,
            p_value,
            confirmed,
        }
    }

    /// One line for people: `CONFIRMED: 1.62x over the baseline in 3 interleaved trials each (p = 0.05)`.
    pub fn describe(&self) -> String {
        format!(
            "{}: champion (iteration {}) {:.2}x the baseline (iteration {}) on medians of {} interleaved trials each, p = {:.3}{}",
            if self.confirmed { "CONFIRMED" } else { "NOT CONFIRMED" },
            self.champion_iteration,
            self.ratio,
            self.baseline_iteration,
            self.champion_values.len().min(self.baseline_values.len()),
            self.p_value,
            if self.confirmed {
                ""
            } else {
                " (some baseline trial matched or beat a champion trial, or the gap is within the noise)"
            }
        )
    }
}

fn binomial(n: f64, k: f64) -> f64 {
    (0..k as u32).fold(1.0, |acc, i| acc * (n - f64::from(i)) / (f64::from(i) + 1.0))
}
