//! The searchable view of a [`SearchSpace`]: every tuned knob as a finite ladder of levels.
//!
//! Search planners reason over level indices ([`Config`]); a level is the text value the knob
//! is set to, or `None` to leave the flag unset (the engine's default). Numeric knobs keep their
//! levels in numeric order so a search can treat neighbours as similar; choices and switches are
//! categorical. A knob with `requires = (flag, value)` is active only while that flag has that
//! value; when inactive it sits at its first level (unset), so one configuration has one encoding.

use std::collections::BTreeSet;

use crate::knobs::Verdict;
use crate::{Domain, Error, LaunchFlags, Result, SearchSpace, ServiceSpec};

/// Level indices, one per [`Dimension`] of a [`TuneSpace`].
pub type Config = Vec<usize>;

/// One tuned knob and the values a search may give it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dimension {
    pub flag: String,
    /// `None` leaves the flag unset; switches use `"true"` / `"false"`.
    pub levels: Vec<Option<String>>,
    /// Levels are ordered (numeric knobs): neighbouring levels behave alike.
    pub ordinal: bool,
    /// The knob matters only while this flag has this value.
    pub requires: Option<(String, String)>,
}

impl Dimension {
    /// Levels given as text: `"default"` (or `""`) leaves the flag unset. Each level is checked
    /// against the knob's domain in `space`.
    pub fn new(space: &SearchSpace, flag: &str, levels: &[&str]) -> Result<Self> {
        let knob = space.knob(flag).ok_or_else(|| Error::Knob {
            knob: flag.to_string(),
            message: format!(
                "is not a known {} flag in autodebug's catalog; pick one from `SearchSpace::for_engine`",
                space.engine
            ),
        })?;
        if levels.is_empty() {
            return Err(Error::Knob { knob: flag.to_string(), message: "needs at least one level to search".into() });
        }
        let mut out: Vec<Option<String>> = Vec::new();
        for level in levels {
            let value = match *level {
                "" | "default" => None,
                v => Some(v.to_string()),
            };
            match (&knob.domain, value.as_deref()) {
                (_, None) => {}
                (Domain::Switch, Some("true" | "false")) => {}
                (_, v) => knob.validate(v)?,
            }
            if !out.contains(&value) {
                out.push(value);
            }
        }
        let ordinal = matches!(knob.domain, Domain::Int { .. } | Domain::Float { .. });
        let mut dim = Dimension { flag: flag.to_string(), levels: out, ordinal, requires: knob.requires.clone() };
        dim.normalize();
        Ok(dim)
    }

    /// Unset first, then numeric levels in increasing order; a conditional knob always has an
    /// unset level to sit at while inactive.
    fn normalize(&mut self) {
        if self.requires.is_some() && !self.levels.contains(&None) {
            self.levels.insert(0, None);
        }
        if self.ordinal {
            let key =
                |v: &Option<String>| v.as_deref().and_then(|t| t.parse::<f64>().ok()).unwrap_or(f64::NEG_INFINITY);
            self.levels.sort_by(|a, b| key(a).total_cmp(&key(b)));
        } else if let Some(pos) = self.levels.iter().position(Option::is_none) {
            let unset = self.levels.remove(pos);
            self.levels.insert(0, unset);
        }
    }

    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The level nearest to `value` (exact text, then numeric distance); `None` when a
    /// categorical value is not among the levels.
    pub fn level_of(&self, value: Option<&str>) -> Option<usize> {
        if let Some(i) = self.levels.iter().position(|l| l.as_deref() == value) {
            return Some(i);
        }
        let x: f64 = value?.parse().ok()?;
        if !self.ordinal {
            return None;
        }
        self.levels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_deref().and_then(|t| t.parse::<f64>().ok()).map(|v| (i, (v - x).abs())))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }
}

/// The knobs a search tunes, each with its ladder of levels.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneSpace {
    pub dims: Vec<Dimension>,
}

impl TuneSpace {
    pub fn new(dims: Vec<Dimension>) -> Self {
        TuneSpace { dims }
    }

    /// Derives levels from the catalog: switches on/off, choices' values, numeric knobs' search
    /// candidates (a numeric knob without candidates is left out), plus "unset" where the engine
    /// picks the default. Quality-risk knobs are left out (a search must not trade output quality
    /// unasked), and so are knobs whose required knob is not searched. `--tp-size` /
    /// `--tensor-parallel-size` keep only degrees the spec's GPUs can hold.
    pub fn from_space(space: &SearchSpace, spec: &ServiceSpec) -> Self {
        let gpus = spec.resources.gpu_name_and_count().map(|(_, n)| n as i64);
        let mut dims = Vec::new();
        for knob in space.knobs.iter().filter(|k| !k.quality_risk) {
            let mut levels: Vec<String> = Vec::new();
            if knob.default.is_none() && knob.domain != Domain::Switch {
                levels.push("default".into());
            }
            match &knob.domain {
                Domain::Switch => levels.extend(["false".to_string(), "true".to_string()]),
                Domain::Choice { values } => levels.extend(values.iter().cloned()),
                Domain::Int { .. } | Domain::Float { .. } => {
                    if knob.candidates.is_empty() {
                        continue;
                    }
                    let tp = knob.flag == "--tp-size" || knob.flag == "--tensor-parallel-size";
                    levels.extend(
                        knob.candidates
                            .iter()
                            .filter(|c| !tp || c.parse::<i64>().ok().zip(gpus).is_none_or(|(n, g)| n <= g))
                            .cloned(),
                    );
                    if let Some(d) = &knob.default {
                        levels.push(d.clone());
                    }
                }
            }
            let refs: Vec<&str> = levels.iter().map(String::as_str).collect();
            if let Ok(dim) = Dimension::new(space, &knob.flag, &refs)
                && dim.len() > 1
            {
                dims.push(dim);
            }
        }
        let searched: BTreeSet<String> = dims.iter().map(|d| d.flag.clone()).collect();
        dims.retain(|d| d.requires.as_ref().is_none_or(|(parent, _)| searched.contains(parent)));
        TuneSpace { dims }
    }

    /// Number of distinct configurations (inactive conditional knobs counted once).
    pub fn size(&self) -> u128 {
        let child_of = |d: &Dimension| {
            d.requires.as_ref().and_then(|(p, v)| self.dims.iter().position(|x| &x.flag == p).map(|p| (p, v.clone())))
        };
        let mut total: u128 = 1;
        for (p, parent) in self.dims.iter().enumerate() {
            if child_of(parent).is_some() {
                continue;
            }
            // Each level of a knob multiplies by the levels of the knobs it switches on.
            let factor: u128 = parent
                .levels
                .iter()
                .map(|level| {
                    self.dims
                        .iter()
                        .filter(|c| child_of(c).is_some_and(|(cp, v)| cp == p && level.as_deref() == Some(v.as_str())))
                        .map(|c| c.len() as u128)
                        .product::<u128>()
                })
                .sum();
            total = total.saturating_mul(factor.max(1));
        }
        total
    }

    /// Whether dimension `d` matters under `config` (its required knob has the required value).
    pub fn is_active(&self, config: &[usize], d: usize) -> bool {
        let Some((parent, value)) = &self.dims[d].requires else {
            return true;
        };
        match self.dims.iter().position(|p| &p.flag == parent) {
            Some(p) => self.dims[p].levels.get(config[p]).and_then(|l| l.as_deref()) == Some(value.as_str()),
            None => false,
        }
    }

    /// The one encoding of `config`: inactive conditional knobs at their unset level.
    pub fn canonical(&self, mut config: Config) -> Config {
        for d in 0..self.dims.len() {
            if !self.is_active(&config, d) {
                config[d] = self.dims[d].levels.iter().position(Option::is_none).unwrap_or(0);
            }
        }
        config
    }

    /// Every canonical configuration, in mixed-radix order (the first knob varies slowest).
    pub fn enumerate(&self) -> impl Iterator<Item = Config> + '_ {
        let radix: Vec<usize> = self.dims.iter().map(|d| d.len().max(1)).collect();
        let mut next = if radix.is_empty() { None } else { Some(vec![0usize; radix.len()]) };
        std::iter::from_fn(move || {
            loop {
                let current = next.clone()?;
                let mut carry = current.clone();
                let mut d = radix.len();
                next = loop {
                    if d == 0 {
                        break None;
                    }
                    d -= 1;
                    carry[d] += 1;
                    if carry[d] < radix[d] {
                        break Some(carry);
                    }
                    carry[d] = 0;
                };
                if self.canonical(current.clone()) == current {
                    return Some(current);
                }
            }
        })
    }

    /// The flags of `base` with every tuned knob set to its level in `config`, checked against
    /// the catalog.
    pub fn to_flags(&self, space: &SearchSpace, base: &LaunchFlags, config: &[usize]) -> Result<LaunchFlags> {
        let mut flags = base.clone();
        for (d, dim) in self.dims.iter().enumerate() {
            let level = dim.levels.get(config[d]).ok_or_else(|| Error::Knob {
                knob: dim.flag.clone(),
                message: format!("level {} is outside its {} levels", config[d], dim.len()),
            })?;
            match (space.knob(&dim.flag).map(|k| &k.domain), level.as_deref()) {
                (Some(Domain::Switch), None) => space.apply(&mut flags, &dim.flag, Some("false"))?,
                (_, value) => space.apply(&mut flags, &dim.flag, value)?,
            }
        }
        space.validate_flags(&flags)?;
        Ok(flags)
    }

    /// The spec `base` with `config` applied (name, model, resources and untuned flags kept).
    /// A point that breaks one of the catalog's [constraints](SearchSpace::constraints), or that
    /// one of them cannot be checked for, is an error: every planner skips it, so the search
    /// proposes only points the engine is known to accept.
    pub fn to_spec(&self, space: &SearchSpace, base: &ServiceSpec, config: &[usize]) -> Result<ServiceSpec> {
        let flags = self.to_flags(space, &base.flags, config)?;
        let spec = ServiceSpec { flags, ..base.clone() };
        space.validate(&spec)?;
        // A deploy the engine may refuse costs as much as one it will refuse.
        if let Some((constraint, Verdict::Unknown(why))) =
            space.check_constraints(&spec).into_iter().find(|(_, v)| matches!(v, Verdict::Unknown(_)))
        {
            return Err(Error::Knob {
                knob: constraint.flags().first().map_or_else(String::new, |f| f.to_string()),
                message: format!("the search does not propose {}: {why}", self.describe(config)),
            });
        }
        Ok(spec)
    }

    /// What the catalog's constraints do to this space, for a plan's notes: the rules that
    /// prune it (their flags are searched), and those that cannot be checked for `base` (so
    /// the points where they apply are not proposed). Empty when no rule touches the space.
    pub fn constraint_notes(&self, space: &SearchSpace, base: &ServiceSpec) -> Vec<String> {
        let searched: BTreeSet<&str> = self.dims.iter().map(|d| d.flag.as_str()).collect();
        let relevant: Vec<&crate::knobs::Constraint> =
            space.constraints.iter().filter(|c| c.flags().iter().any(|f| searched.contains(f))).collect();
        if relevant.is_empty() {
            return Vec::new();
        }
        let rules: Vec<String> = relevant.iter().map(|c| format!("`{}` ({})", c.describe(), c.id)).collect();
        let mut notes = vec![format!(
            "the search proposes only points that keep {}'s startup constraints: {}",
            space.engine_text(),
            rules.join("; ")
        )];
        for c in relevant {
            if let Some(why) = c.unknowable(&space.as_launched(base)) {
                notes.push(format!(
                    "`{}` ({}) cannot be checked: {why}; points where it applies are not proposed",
                    c.describe(),
                    c.id
                ));
            }
        }
        notes
    }

    /// The nearest configuration to `flags` (numeric values snap to the closest level); `None`
    /// when a categorical knob holds a value that is not one of its levels.
    pub fn encode(&self, space: &SearchSpace, flags: &LaunchFlags) -> Option<Config> {
        let mut config = Vec::with_capacity(self.dims.len());
        for dim in &self.dims {
            // An unset flag is at its level "unset" if the ladder has one, else at the default's.
            let raw = flags.get(&dim.flag).map(|v| v.map(str::to_string));
            let level = match raw {
                Some(value) if !matches!(space.knob(&dim.flag).map(|k| &k.domain), Some(Domain::Switch)) => {
                    dim.level_of(value.as_deref())?
                }
                _ => {
                    let effective = space.effective(flags, &dim.flag);
                    match raw {
                        None => dim.level_of(None).or_else(|| dim.level_of(effective.as_deref()))?,
                        Some(_) => dim.level_of(effective.as_deref())?,
                    }
                }
            };
            config.push(level);
        }
        Some(self.canonical(config))
    }

    /// Whether `config` is a valid, canonical point of this space.
    pub fn contains(&self, config: &[usize]) -> bool {
        config.len() == self.dims.len()
            && config.iter().zip(&self.dims).all(|(l, d)| *l < d.len())
            && self.canonical(config.to_vec()) == config
    }

    /// A short `flag=value` rendering for notes and reports.
    pub fn describe(&self, config: &[usize]) -> String {
        self.dims
            .iter()
            .zip(config)
            .enumerate()
            .filter(|(d, _)| self.is_active(config, *d))
            .map(|(_, (dim, l))| {
                format!("{}={}", dim.flag.trim_start_matches('-'), dim.levels[*l].as_deref().unwrap_or("default"))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}
