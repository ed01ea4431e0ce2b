//! The Bayesian search planner, [`BayesPlanner`].

use async_trait::async_trait;

use crate::rng::SplitMix64;
use crate::{Error, Plan, PlanInput, Planner, Result, ServiceSpec};

use super::confirm::{Confirmation, verdict_note};
use super::observe::{Outcome, observe};
use super::space::{Config, TuneSpace};
use super::{exhausted, plan_to, rule, tune_space};

/// Weight of the uniform prior in every Parzen mixture, in points.
const PRIOR_WEIGHT: f64 = 1.0;
/// Probability mass a categorical kernel leaves to the other values.
const CATEGORICAL_SPREAD: f64 = 0.2;
/// Score handicap of a candidate the failure classifier says will more likely fail than start.
const GATED: f64 = 1e6;
/// Log-score bonus of a one-knob move to a level no measured configuration has (an unknown
/// effect ranks like a move the model favours twice over).
const NOVELTY_BONUS: f64 = std::f64::consts::LN_2;
/// Log-score handicap of a one-knob move that an earlier pair of measurements, differing only in
/// that knob between the same two levels, showed to change nothing at all (a running-request cap
/// above the client's concurrency, a switch that only matters with another knob set): it would
/// most likely measure the incumbent again. Kept finite, since knobs interact.
const INERT_PENALTY: f64 = 2.0 * std::f64::consts::LN_2;
/// Measured configurations at most this many knobs away from the incumbent train the marginals
/// that rank one-knob moves, once there are at least [`LOCAL_MIN_POINTS`] of them.
const LOCAL_RADIUS: usize = 2;
const LOCAL_MIN_POINTS: usize = 3;
/// The most (relative) a configuration must gain to become the one that one-knob moves start from.
const MAX_EXPLOIT_MARGIN: f64 = 0.005;
/// Values this close (relative) count as the same measurement.
const SAME_VALUE: f64 = 1e-9;
/// Spaces up to this size are scanned in full when sampling finds nothing new.
const ENUMERATION_LIMIT: usize = 200_000;

/// One configuration a search wants measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub spec: ServiceSpec,
    /// Its place in the tuned space.
    pub config: Config,
    /// A repeated trial of an already measured configuration (noise control), not a new point.
    pub confirmation: bool,
    pub rule: &'static str,
    pub reason: String,
}

/// A constrained, failure-aware Tree-structured Parzen Estimator written for knob search,
/// deterministic given its seed and the history.
///
/// Configurations that ran are ranked (feasible by loss, then infeasible by how far they break
/// the constraints); the best `gamma` share forms the "good" density l(x), the rest the "bad"
/// density g(x), each a Parzen mixture over level indices (Gaussian kernels on numeric ladders,
/// sticky kernels on categories) plus a uniform prior. Candidates are drawn from l(x) and scored
/// by l(x)/g(x). Two proposals in three instead refine the incumbent: among its one-step
/// neighbours (one knob changed; numeric knobs to an adjacent level), the one whose per-knob
/// l/g marginals are best, with a bonus for levels no measured configuration has tried.
/// Configurations that never ran (startup OOM, crash) are not scored as zero: they
/// train a separate failure classifier — per knob and level, the smoothed share of measured
/// configurations that failed — and each candidate's score is weighted by its odds of starting
/// at all; one more likely to fail than to start is proposed only when nothing else is left.
/// Constraint-breaking runs, by contrast, land in g(x): they ran, so they say where the
/// objective is poor. A batch is proposed with a pessimistic "liar": each pick joins g(x) before
/// the next is chosen, so the batch spreads out.
#[derive(Debug, Clone)]
pub struct BayesPlanner {
    seed: u64,
    space: Option<TuneSpace>,
    startup: usize,
    candidates: usize,
    gamma: f64,
    confirmation: Confirmation,
}

impl BayesPlanner {
    pub fn new(seed: u64) -> Self {
        BayesPlanner {
            seed,
            space: None,
            startup: 4,
            candidates: 64,
            gamma: 0.25,
            confirmation: Confirmation::default(),
        }
    }

    /// Searches exactly this space instead of one derived from the loop's catalog.
    pub fn with_space(mut self, space: TuneSpace) -> Self {
        self.space = Some(space);
        self
    }

    /// Measured configurations (the baseline included) before the model takes over from
    /// space-filling random picks.
    pub fn with_startup(mut self, startup: usize) -> Self {
        self.startup = startup.max(1);
        self
    }

    /// Candidates drawn from the good density per proposal.
    pub fn with_candidates(mut self, candidates: usize) -> Self {
        self.candidates = candidates.max(1);
        self
    }

    pub fn with_confirmation(mut self, confirmation: Confirmation) -> Self {
        self.confirmation = confirmation;
        self
    }

    pub fn confirmation(&self) -> Confirmation {
        self.confirmation
    }

    /// Up to `k` distinct, valid configurations to measure next (fewer when the space runs
    /// out). When the best configuration is due for confirmation, the first one re-runs it.
    pub fn propose_batch(&self, input: &PlanInput<'_>, k: usize) -> Result<Vec<Proposal>> {
        let tune = tune_space(self.space.as_ref(), input);
        if tune.dims.is_empty() {
            return Err(Error::Plan(format!(
                "no knob of the {} catalog can be searched: give numeric knobs `candidates` or pass a TuneSpace",
                input.space.engine
            )));
        }
        let history = input.history;
        let observations = observe(history, input.objective, input.space, &tune);
        let evaluations =
            history.iterations.iter().filter(|i| i.is_ok() || i.status == crate::IterationStatus::DeployFailed).count();
        let mut rng = SplitMix64::for_step(self.seed, history.iterations.len(), 0x7470_6562);
        let mut out = Vec::new();

        if let Some(b) = self.confirmation.due(&observations, evaluations) {
            let o = &observations[b];
            let spec = ServiceSpec { flags: o.flags.clone(), resources: o.resources.clone(), ..input.current.clone() };
            if input.space.validate(&spec).is_ok() {
                out.push(Proposal {
                    config: o.config.clone().unwrap_or_default(),
                    spec,
                    confirmation: true,
                    rule: rule::CONFIRM,
                    reason: format!(
                        "confirmation run {} of {}: the best configuration so far has {} trial(s) and nothing better turned up in {} evaluations",
                        o.trials + 1,
                        self.confirmation.trials,
                        o.trials,
                        self.confirmation.patience
                    ),
                });
            }
        }

        let mut ranked: Vec<(Config, f64, bool)> = observations
            .iter()
            .filter_map(|o| {
                let config = o.config.clone()?;
                match o.outcome {
                    Outcome::Feasible { loss } => Some((config, loss, true)),
                    Outcome::Infeasible { violation } => Some((config, violation, false)),
                    Outcome::Failed => None,
                }
            })
            .collect();
        // Moves already seen to change nothing, before the ranking reorders the observations.
        let inert = InertMoves::new(&ranked);
        let failed_ranked: Vec<(Config, f64, bool)> = observations
            .iter()
            .filter(|o| o.outcome == Outcome::Failed)
            .filter_map(|o| Some((o.config.clone()?, f64::INFINITY, false)))
            .collect();
        // Feasible before infeasible; then by loss or by violation; on an exact tie the later
        // configuration first: it carries the changes made since (a rule's, the model's) that
        // cost nothing here and may pay off together with a next one.
        ranked.reverse();
        ranked.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.total_cmp(&b.1)));
        let failed: Vec<Config> =
            observations.iter().filter(|o| o.outcome == Outcome::Failed).filter_map(|o| o.config.clone()).collect();
        let tried: Vec<Config> = observations.iter().filter_map(|o| o.config.clone()).collect();
        let mut pending: Vec<Config> = Vec::new();

        while out.len() < k {
            let taken = |c: &Config, pending: &[Config]| tried.contains(c) || pending.contains(c);
            let usable = |c: &Config| -> Option<ServiceSpec> {
                let spec = tune.to_spec(input.space, input.current, c).ok()?;
                (!history.tried(&spec)).then_some(spec)
            };
            let measured = ranked.len() + failed.len();
            let pick = if measured < self.startup || ranked.len() < 2 {
                self.space_filling(&tune, &mut rng, &tried, &pending, &usable).map(|(c, s)| (c, s, rule::STARTUP))
            } else {
                let (incumbent, previous, first) =
                    exploit_from(&observations, input.objective).unwrap_or_else(|| (ranked[0].0.clone(), None, 0));
                // The incumbent came from a jump of several knobs that the search drew: undoing
                // each change tells which ones the gain needed (an ablation), and a hitchhiking
                // change that costs a little is the likeliest next gain. A rule's changes come
                // with their reasons and are left alone.
                let searched = first
                    .checked_sub(1)
                    .and_then(|i| history.iterations.get(i))
                    .and_then(|i| i.plan.as_ref())
                    .is_some_and(|p| !p.changes.is_empty() && p.changes.iter().all(|c| c.rule.starts_with("search.")));
                let jumped: Vec<(usize, usize)> = previous
                    .filter(|_| searched)
                    .filter(|p| p.iter().zip(&incumbent).filter(|(a, b)| a != b).count() >= 2)
                    .map(|p| p.iter().enumerate().filter(|(d, l)| incumbent[*d] != **l).map(|(d, l)| (d, *l)).collect())
                    .unwrap_or_default();
                let n_good = ((ranked.len() as f64 * self.gamma).ceil() as usize).clamp(1, ranked.len() - 1);
                let good: Vec<Config> = ranked[..n_good].iter().map(|r| r.0.clone()).collect();
                let mut bad: Vec<Config> = ranked[n_good..].iter().map(|r| r.0.clone()).collect();
                bad.extend(pending.iter().cloned());
                let l = Parzen::new(&tune, good.clone(), true);
                let g = Parzen::new(&tune, bad.clone(), true);
                // Per-knob marginals rank one-knob moves: which level of each knob the good
                // points favour, free of the joint kernel's pull towards the nearest point.
                // Knobs interact, so the marginals learn from the incumbent's surroundings when
                // enough was measured there: a level that hurt far away says little here.
                let near = |c: &Config| c.iter().zip(&incumbent).filter(|(a, b)| a != b).count() <= LOCAL_RADIUS;
                let (local_good, local_bad): (Vec<Config>, Vec<Config>) = (
                    good.iter().filter(|c| near(c)).cloned().collect(),
                    bad.iter().filter(|c| near(c)).cloned().collect(),
                );
                let (good, bad) = if local_good.len() + local_bad.len() >= LOCAL_MIN_POINTS {
                    (local_good, local_bad)
                } else {
                    (good, bad)
                };
                let l_marginal = Parzen::new(&tune, good, false);
                let g_marginal = Parzen::new(&tune, bad, false);
                let fail_model =
                    (!failed.is_empty()).then(|| FailureModel::new(&tune, &failed, ranked.iter().map(|r| &r.0)));
                let fail_penalty = |c: &Config| {
                    let Some(model) = &fail_model else { return 0.0 };
                    let p_fail = model.p_fail(c);
                    // More likely to fail than to start: only as a last resort.
                    (1.0 - p_fail).max(1e-6).ln() - if p_fail > 0.5 { GATED } else { 0.0 }
                };
                let score = |c: &Config| l.density(c).ln() - g.density(c).ln() + fail_penalty(c);
                // A knob level not measured near the incumbent is worth a look: its effect here is
                // unknown (knobs interact: a level that hurt elsewhere may pay off with this
                // incumbent's other settings), whereas a level that hurt close by is known to.
                // Near: the other knobs as the incumbent's, but for at most one.
                let seen = |d: usize, level: usize| {
                    ranked.iter().chain(failed_ranked.iter()).any(|r| {
                        r.0[d] == level
                            && r.0.iter().zip(&incumbent).enumerate().filter(|(k, (a, b))| *k != d && a != b).count()
                                <= 1
                    })
                };
                let local_score = |c: &Config| {
                    let novel = c.iter().enumerate().filter(|(d, l)| !seen(*d, **l)).count();
                    l_marginal.density(c).ln() - g_marginal.density(c).ln()
                        + fail_penalty(c)
                        + NOVELTY_BONUS * novel as f64
                        - INERT_PENALTY * inert.count(&incumbent, c) as f64
                };
                let consider =
                    |c: Config, best: &mut Option<(Config, ServiceSpec, f64)>, score: &dyn Fn(&Config) -> f64| {
                        if taken(&c, &pending) || best.as_ref().is_some_and(|b| b.0 == c) {
                            return;
                        }
                        let s = score(&c);
                        if best.as_ref().is_some_and(|b| b.2 >= s) {
                            return;
                        }
                        if let Some(spec) = usable(&c) {
                            *best = Some((c, spec, s));
                        }
                    };
                // Only points likely to fail: as good as nothing found.
                let hopeless =
                    |best: &Option<(Config, ServiceSpec, f64)>| best.as_ref().is_none_or(|b| b.2 < -GATED / 2.0);
                let mut best: Option<(Config, ServiceSpec, f64)> = None;
                // Two proposals in three refine the incumbent: the most promising one-knob move
                // from the best point. Knob effects are mostly local, so the next better point
                // is usually one knob away; the third proposal searches the whole space.
                let exploit = !(history.iterations.len() + out.len()).is_multiple_of(3);
                let moves = neighbours(&tune, &incumbent);
                // Undoing one change of the jump comes first, whatever the turn.
                for c in moves.iter().filter(|c| jumped.iter().any(|(d, l)| c[*d] == *l)) {
                    consider(c.clone(), &mut best, &local_score);
                }
                if exploit && hopeless(&best) {
                    best = None;
                    for c in moves {
                        consider(c, &mut best, &local_score);
                    }
                }
                if hopeless(&best) {
                    best = None;
                    for _ in 0..self.candidates {
                        let c = tune.canonical(l.sample(&mut rng));
                        consider(c, &mut best, &score);
                    }
                }
                // Sampling found nothing new, or only points likely to fail: scan the space.
                if hopeless(&best) {
                    for c in tune.enumerate().take(ENUMERATION_LIMIT) {
                        consider(c, &mut best, &score);
                    }
                }
                best.map(|(c, s, _)| (c, s, rule::TPE))
            };
            let Some((config, spec, rule)) = pick else {
                break;
            };
            let reason = if rule == rule::TPE {
                format!(
                    "TPE: the most promising unmeasured point of the good-vs-bad density ratio over {} measured configurations ({})",
                    measured,
                    tune.describe(&config)
                )
            } else {
                format!(
                    "space-filling start: an unmeasured configuration far from those measured ({})",
                    tune.describe(&config)
                )
            };
            pending.push(config.clone());
            out.push(Proposal { spec, config, confirmation: false, rule, reason });
        }
        Ok(out)
    }

    /// Among a few random untried points, the one farthest (in changed knobs) from every
    /// measured or pending one.
    fn space_filling(
        &self,
        tune: &TuneSpace,
        rng: &mut SplitMix64,
        tried: &[Config],
        pending: &[Config],
        usable: &dyn Fn(&Config) -> Option<ServiceSpec>,
    ) -> Option<(Config, ServiceSpec)> {
        let prior = Parzen::new(tune, Vec::new(), true);
        let mut best: Option<(Config, ServiceSpec, usize)> = None;
        for _ in 0..32 {
            let c = tune.canonical(prior.sample(rng));
            if tried.contains(&c) || pending.contains(&c) {
                continue;
            }
            let distance = tried
                .iter()
                .chain(pending)
                .map(|t| t.iter().zip(&c).filter(|(a, b)| a != b).count())
                .min()
                .unwrap_or(usize::MAX);
            if best.as_ref().is_some_and(|b| b.2 >= distance) {
                continue;
            }
            if let Some(spec) = usable(&c) {
                best = Some((c, spec, distance));
            }
        }
        if best.is_none() {
            for c in tune.enumerate().take(ENUMERATION_LIMIT) {
                if !tried.contains(&c)
                    && !pending.contains(&c)
                    && let Some(spec) = usable(&c)
                {
                    return Some((c, spec));
                }
            }
        }
        best.map(|(c, s, _)| (c, s))
    }
}

/// The configuration one-knob moves start from: the first feasible one, replaced in order of
/// discovery by one better outside the objective's noise (a gain inside it may be luck, and
/// following it would walk away from what the rules set up), or by one that measured exactly the
/// same (its extra changes cost nothing and may pay off with a next one).
///
/// Returns it with the one it replaced last, if any, and the index of its first trial.
fn exploit_from(
    observations: &[super::Observation],
    objective: &crate::Objective,
) -> Option<(Config, Option<Config>, usize)> {
    let margin = (objective.noise_pct.max(0.0) / 100.0).min(MAX_EXPLOIT_MARGIN);
    let mut incumbent: Option<(Config, f64, usize)> = None;
    let mut previous: Option<Config> = None;
    for o in observations {
        let (Outcome::Feasible { loss }, Some(config)) = (o.outcome, &o.config) else {
            continue;
        };
        let replace = match &incumbent {
            None => true,
            Some((_, best, _)) => {
                let scale = best.abs().max(1e-12);
                loss < best - margin * scale || (loss - best).abs() <= SAME_VALUE * scale
            }
        };
        if replace {
            previous = incumbent.take().map(|(c, _, _)| c);
            incumbent = Some((config.clone(), loss, o.first));
        }
    }
    incumbent.map(|(c, _, first)| (c, previous, first))
}

/// Knob moves (knob, two levels) seen to change nothing: two measured configurations that
/// differ only in that knob and measured exactly the same.
struct InertMoves {
    moves: Vec<(usize, usize, usize)>,
}

impl InertMoves {
    fn new(ranked: &[(Config, f64, bool)]) -> Self {
        let mut moves = Vec::new();
        for (i, a) in ranked.iter().enumerate() {
            for b in &ranked[i + 1..] {
                if a.2 != b.2 || (a.1 - b.1).abs() > SAME_VALUE * a.1.abs().max(b.1.abs()).max(1e-12) {
                    continue;
                }
                let mut differing = a.0.iter().zip(&b.0).enumerate().filter(|(_, (x, y))| x != y);
                if let (Some((d, (x, y))), None) = (differing.next(), differing.next()) {
                    moves.push((d, *x.min(y), *x.max(y)));
                }
            }
        }
        InertMoves { moves }
    }

    /// How many of the knob changes from `from` to `to` are known to change nothing.
    fn count(&self, from: &[usize], to: &[usize]) -> usize {
        from.iter()
            .zip(to)
            .enumerate()
            .filter(|(d, (x, y))| x != y && self.moves.contains(&(*d, *(*x).min(*y), *(*x).max(*y))))
            .count()
    }
}

/// The configurations one step away from `config`: one knob changed, a numeric knob to an
/// adjacent level, a categorical knob to any other value (canonical, so inactive knobs stay put).
fn neighbours(tune: &TuneSpace, config: &[usize]) -> Vec<Config> {
    let mut out = Vec::new();
    for (d, dim) in tune.dims.iter().enumerate() {
        for level in 0..dim.len() {
            if level != config[d] && (!dim.ordinal || level.abs_diff(config[d]) == 1) {
                let mut c = config.to_vec();
                c[d] = level;
                let c = tune.canonical(c);
                if c != config && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// The failure classifier: per knob and level, the smoothed share of measured configurations
/// that failed to start. A startup failure is usually one knob's doing (a memory fraction, a TP
/// degree), so the knob whose value is most tied to failures decides.
struct FailureModel {
    /// `[d][level]` = (failed, ran).
    counts: Vec<Vec<(f64, f64)>>,
    base_rate: f64,
}

impl FailureModel {
    fn new<'a>(tune: &TuneSpace, failed: &[Config], ran: impl Iterator<Item = &'a Config>) -> Self {
        let mut counts: Vec<Vec<(f64, f64)>> = tune.dims.iter().map(|d| vec![(0.0, 0.0); d.len()]).collect();
        for c in failed {
            for (d, l) in c.iter().enumerate() {
                counts[d][*l].0 += 1.0;
            }
        }
        let mut n_ran = 0.0;
        for c in ran {
            n_ran += 1.0;
            for (d, l) in c.iter().enumerate() {
                counts[d][*l].1 += 1.0;
            }
        }
        let n_failed = failed.len() as f64;
        FailureModel { counts, base_rate: n_failed / (n_failed + n_ran).max(1.0) }
    }

    fn p_fail(&self, c: &[usize]) -> f64 {
        c.iter()
            .enumerate()
            .map(|(d, l)| {
                let (f, r) = self.counts[d][*l];
                (f + self.base_rate) / (f + r + 1.0)
            })
            .fold(0.0, f64::max)
    }
}

/// A Parzen mixture over level indices: the uniform prior plus one kernel per point.
struct Parzen {
    points: Vec<Config>,
    /// Joint (one product kernel per point) or independent (a product of per-knob mixtures).
    joint: bool,
    /// `kernel[d][center][level]`: probability of `level` under a kernel centred on `center`.
    kernel: Vec<Vec<Vec<f64>>>,
}

impl Parzen {
    fn new(tune: &TuneSpace, points: Vec<Config>, joint: bool) -> Self {
        let n = points.len().max(1) as f64;
        let kernel = tune
            .dims
            .iter()
            .map(|dim| {
                let levels = dim.len();
                (0..levels)
                    .map(|center| {
                        let raw: Vec<f64> = (0..levels)
                            .map(|l| {
                                if levels == 1 {
                                    1.0
                                } else if dim.ordinal {
                                    // Narrower as evidence accumulates (Scott's rule exponent).
                                    let sd = ((levels - 1) as f64 * 0.3 / n.powf(0.2)).clamp(0.5, levels as f64);
                                    (-0.5 * ((l as f64 - center as f64) / sd).powi(2)).exp()
                                } else if l == center {
                                    1.0 - CATEGORICAL_SPREAD
                                } else {
                                    CATEGORICAL_SPREAD / (levels - 1) as f64
                                }
                            })
                            .collect();
                        let total: f64 = raw.iter().sum();
                        raw.into_iter().map(|w| w / total).collect()
                    })
                    .collect()
            })
            .collect();
        Parzen { points, joint, kernel }
    }

    fn density(&self, x: &[usize]) -> f64 {
        let n = self.points.len() as f64;
        let prior = |d: usize| 1.0 / self.kernel[d].len() as f64;
        if self.joint {
            let prior_mass: f64 = (0..x.len()).map(prior).product();
            let kernels: f64 =
                self.points.iter().map(|p| (0..x.len()).map(|d| self.kernel[d][p[d]][x[d]]).product::<f64>()).sum();
            ((PRIOR_WEIGHT * prior_mass + kernels) / (PRIOR_WEIGHT + n)).max(f64::MIN_POSITIVE)
        } else {
            (0..x.len())
                .map(|d| {
                    (PRIOR_WEIGHT * prior(d) + self.points.iter().map(|p| self.kernel[d][p[d]][x[d]]).sum::<f64>())
                        / (PRIOR_WEIGHT + n)
                })
                .product::<f64>()
                .max(f64::MIN_POSITIVE)
        }
    }

    /// A draw from the joint mixture: the prior, or one point's kernel.
    fn sample(&self, rng: &mut SplitMix64) -> Config {
        let n = self.points.len() as f64;
        let from_prior = rng.next_f64() < PRIOR_WEIGHT / (PRIOR_WEIGHT + n);
        let center = (!from_prior).then(|| rng.below(self.points.len()));
        (0..self.kernel.len())
            .map(|d| match center {
                Some(k) => rng.weighted(&self.kernel[d][self.points[k][d]]),
                None => rng.below(self.kernel[d].len()),
            })
            .collect()
    }
}

#[async_trait]
impl Planner for BayesPlanner {
    fn name(&self) -> &str {
        "bayes"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        let proposals = self.propose_batch(&input, 1)?;
        let tune = tune_space(self.space.as_ref(), &input);
        let observations = observe(input.history, input.objective, input.space, &tune);
        let describe = |o: &super::Observation| {
            o.config.as_ref().map(|c| tune.describe(c)).unwrap_or_else(|| o.flags.to_command_line())
        };
        let mut notes: Vec<String> =
            verdict_note(&observations, input.objective, self.confirmation.trials, describe).into_iter().collect();
        notes.extend(tune.constraint_notes(input.space, input.current));
        Ok(match proposals.into_iter().next() {
            Some(p) => {
                let mut plan = plan_to(self.name(), &input, p.spec, p.rule, &p.reason, notes);
                if p.confirmation {
                    plan.notes.push(p.reason);
                }
                plan
            }
            None => {
                let mut plan = exhausted(
                    self.name(),
                    &input,
                    "every configuration of the searched space has been measured".into(),
                );
                plan.notes.extend(notes);
                plan
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_knob_move_is_inert_only_where_two_runs_differing_in_it_alone_measured_the_same() {
        let ranked: Vec<(Config, f64, bool)> = vec![
            (vec![0, 0, 1], 100.0, true),
            // Knob 0 from level 0 to 2: exactly the same value.
            (vec![2, 0, 1], 100.0, true),
            // Knob 1 changed, and so did the value.
            (vec![0, 1, 1], 99.0, true),
            // Same value as the first, but two knobs differ: says nothing about either.
            (vec![1, 1, 0], 100.0, true),
        ];
        let inert = InertMoves::new(&ranked);
        assert_eq!(inert.count(&[0, 1, 1], &[2, 1, 1]), 1);
        assert_eq!(inert.count(&[2, 5, 5], &[0, 5, 5]), 1, "either direction");
        assert_eq!(inert.count(&[0, 0, 1], &[0, 1, 1]), 0);
        assert_eq!(inert.count(&[0, 0, 1], &[1, 0, 1]), 0, "a level never paired");
        assert_eq!(inert.count(&[0, 0, 0], &[0, 0, 1]), 0);
    }
}
