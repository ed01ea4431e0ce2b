//! A tiny seeded generator, so every planner is reproducible from its seed without a dependency.

/// SplitMix64: fast, well mixed, and stable across platforms and releases.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A generator for one planning step: the same seed and history length give the same stream.
    pub fn for_step(seed: u64, step: usize, salt: u64) -> Self {
        let mut rng = SplitMix64(
            seed ^ salt.rotate_left(17) ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// An index drawn with probability proportional to `weights` (all zero: uniform).
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
        if total <= 0.0 {
            return self.below(weights.len());
        }
        let mut target = self.next_f64() * total;
        for (i, w) in weights.iter().enumerate() {
            if w.is_finite() && *w > 0.0 {
                if target < *w {
                    return i;
                }
                target -= w;
            }
        }
        weights.len().saturating_sub(1)
    }
}
