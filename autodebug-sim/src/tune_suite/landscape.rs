//! The landscape of a scenario: every configuration of its space with its reference value.

use autodebug_core::search::Config;
use autodebug_core::{Objective, SearchSpace, ServiceSpec};

use super::bench::Bench;
use super::handwritten::Scenario;
use super::{parallel, within};
use crate::EngineKind;

/// Every configuration of a scenario's space with its reference value (`None`: it failed to
/// start or broke a constraint).
#[derive(Debug, Clone, Default)]
pub struct Landscape {
    pub points: Vec<(Config, Option<f64>)>,
}

impl Landscape {
    /// The best feasible configuration and its value.
    pub fn optimum(&self, objective: &Objective) -> Option<(&Config, f64)> {
        self.points
            .iter()
            .filter_map(|(c, v)| v.map(|v| (c, v)))
            .reduce(|a, b| if objective.better_value(b.1, a.1) { b } else { a })
    }

    pub fn within_count(&self, objective: &Objective, optimum: f64) -> usize {
        self.points.iter().filter(|(_, v)| v.is_some_and(|v| within(objective, optimum, v))).count()
    }
}

/// Measures every configuration of `scenario`'s space in virtual time (on a few threads).
pub fn landscape(scenario: &Scenario) -> Landscape {
    let bench = Bench::new(scenario.clone(), 0.0);
    measure_all(std::slice::from_ref(&bench)).pop().unwrap_or_default()
}

pub(crate) fn measure_all(benches: &[Bench]) -> Vec<Landscape> {
    let catalog = SearchSpace::for_engine(EngineKind::Sglang);
    let points: Vec<(usize, Config, ServiceSpec)> = benches
        .iter()
        .map(|b| &b.scenario)
        .enumerate()
        .flat_map(|(i, s)| {
            s.space
                .enumerate()
                .filter_map(|c| s.space.to_spec(&catalog, &s.base, &c).ok().map(|spec| (c, spec)))
                .map(move |(c, spec)| (i, c, spec))
                .collect::<Vec<_>>()
        })
        .collect();
    let values = parallel(points.iter().map(|(i, _, spec)| (*i, spec)).collect(), |(i, spec)| benches[i].value(spec));
    let mut maps = vec![Landscape::default(); benches.len()];
    for ((i, config, _), value) in points.into_iter().zip(values) {
        maps[i].points.push((config, value));
    }
    maps
}
