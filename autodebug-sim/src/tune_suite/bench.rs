//! Measuring one scenario's configurations: each noise-free run once (cached) and the noisy
//! measurements drawn around it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use autodebug_core::{SearchSpace, ServiceSpec};

use super::REFERENCE_SEED;
use super::handwritten::Scenario;
use super::noise::{self, NoiseLevels};
use crate::{EngineKind, SimConfig, SimResult, simulate};

/// The noise-free run of one configuration.
pub(crate) struct Measured {
    pub(crate) result: Option<SimResult>,
    pub(crate) failure: Option<String>,
    pub(crate) metrics: BTreeMap<String, f64>,
    pub(crate) config: Option<SimConfig>,
}

/// Measures configurations of one scenario: each noise-free run once (cached), and noisy
/// measurements drawn around it.
pub(crate) struct Bench {
    pub(crate) scenario: Scenario,
    cache: Mutex<HashMap<String, Arc<Measured>>>,
    pub(crate) noise: NoiseLevels,
}

impl Bench {
    /// The noise levels are measured at the starting configuration (see [`noise`]); when that
    /// does not run, at the first configuration of the space that does.
    pub(crate) fn new(scenario: Scenario, noise_scale: f64) -> Self {
        let mut bench = Bench { scenario, cache: Mutex::new(HashMap::new()), noise: NoiseLevels::none() };
        if noise_scale > 0.0 {
            let catalog = SearchSpace::for_engine(EngineKind::Sglang);
            let s = &bench.scenario;
            let candidates = std::iter::once(s.base.clone())
                .chain(s.space.enumerate().filter_map(|c| s.space.to_spec(&catalog, &s.base, &c).ok()));
            for spec in candidates.take(64) {
                let config = SimConfig::from_args(EngineKind::Sglang, &s.gpu, &s.model, &spec.flags.to_args());
                if let Some(levels) = config.ok().and_then(|c| NoiseLevels::measure(&c, &s.workload, noise_scale)) {
                    bench.noise = levels;
                    break;
                }
            }
        }
        bench
    }

    /// The noise-free run of `spec` (the engine's step noise off, the reference seed's prompts).
    pub(crate) fn truth(&self, spec: &ServiceSpec) -> Arc<Measured> {
        let key = spec.flags.to_command_line();
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return hit;
        }
        let s = &self.scenario;
        let measured =
            Arc::new(match SimConfig::from_args(EngineKind::Sglang, &s.gpu, &s.model, &spec.flags.to_args()) {
                Err(e) => {
                    Measured { result: None, failure: Some(e.to_string()), metrics: BTreeMap::new(), config: None }
                }
                Ok(mut config) => {
                    config.noise = 0.0;
                    let result = simulate(&config, &s.workload, REFERENCE_SEED);
                    if result.failed {
                        Measured {
                            failure: result.failure.clone(),
                            result: None,
                            metrics: BTreeMap::new(),
                            config: Some(config),
                        }
                    } else {
                        Measured {
                            metrics: result.metrics(),
                            result: Some(result),
                            failure: None,
                            config: Some(config),
                        }
                    }
                }
            });
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, measured.clone());
        }
        measured
    }

    /// Evaluation `eval` of run `run_seed`: the truth and the metrics as measured.
    pub(crate) fn measure(
        &self,
        spec: &ServiceSpec,
        run_seed: u64,
        eval: u64,
    ) -> (Arc<Measured>, BTreeMap<String, f64>) {
        let truth = self.truth(spec);
        let mut stream = noise::stream(&self.scenario.name, run_seed, eval);
        let seen = self.noise.apply(&truth.metrics, &mut stream);
        (truth, seen)
    }

    /// The true value of a configuration: its noise-free objective value when feasible.
    pub(crate) fn value(&self, spec: &ServiceSpec) -> Option<f64> {
        let m = self.truth(spec);
        let objective = &self.scenario.objective;
        (m.failure.is_none() && objective.is_feasible(&m.metrics)).then(|| objective.value(&m.metrics)).flatten()
    }
}
