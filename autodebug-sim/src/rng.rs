//! The simulator's draws from the workspace generator ([`autodebug_core::rng`]).
//!
//! They keep the simulator's own seeding and uniforms (a salted seed, `[0, 1)` draws) rather than
//! the benchmarker's, so every scenario, calibration figure and tuning-suite result keeps the
//! numbers it was published with for the same seed.

pub(crate) use autodebug_core::rng::SplitMix64;
use autodebug_core::rng::standard_normal;

/// The simulator's generator for `seed`.
pub(crate) fn seeded(seed: u64) -> SplitMix64 {
    SplitMix64::new(seed ^ 0x5DEE_CE66_D1CE_4E5B)
}

pub(crate) trait SimDraws {
    /// A mean-one lognormal factor with log-sigma `sigma` (0 gives exactly 1).
    fn noise_factor(&mut self, sigma: f64) -> f64;
    /// Exponential with the given mean.
    fn exponential(&mut self, mean: f64) -> f64;
}

impl SimDraws for SplitMix64 {
    fn noise_factor(&mut self, sigma: f64) -> f64 {
        if sigma <= 0.0 {
            return 1.0;
        }
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let normal = standard_normal(u1, self.next_f64());
        (sigma * normal - 0.5 * sigma * sigma).exp()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.next_f64()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Printed by the simulator's own generator before it moved into autodebug-core: a change here
    // changes every simulated run and tuning-suite figure for the same seed.
    #[test]
    fn draws_are_those_of_the_generator_it_replaced() {
        let mut rng = seeded(7);
        assert_eq!(rng.next_u64(), 15570322192663004584);
        assert_eq!(rng.next_f64(), 0.04927318701380157);
        assert_eq!(rng.noise_factor(0.1), 1.0857245641638869);
        assert_eq!(rng.exponential(1000.0), 80.65202571088267);
    }

    #[test]
    fn same_seed_same_stream_and_sane_moments() {
        let (mut a, mut b) = (seeded(7), seeded(7));
        assert_eq!(a.next_u64(), b.next_u64());
        let n = 20_000;
        let mean: f64 = (0..n).map(|_| a.noise_factor(0.1)).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.01, "lognormal mean {mean}");
        let mean: f64 = (0..n).map(|_| b.exponential(3.0)).sum::<f64>() / n as f64;
        assert!((mean - 3.0).abs() < 0.1, "exponential mean {mean}");
        assert_eq!(a.noise_factor(0.0), 1.0);
    }
}
