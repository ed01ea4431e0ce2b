//! Deployment-level knobs, in the same catalog as engine flags: what a planner may change around
//! the engine (GPU type and count, image), with the same [`Knob`] domains as a [`SearchSpace`].

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::SearchSpace;
use super::{Domain, Knob};
use crate::pricing::PriceTable;
use crate::{Error, Result, ServiceSpec};

/// Deployment-level knobs: `resources.gpu` (GPU type and count) and `image` (the engine image tag).
///
/// Engine flags stay in the engine's [`SearchSpace`]; these change the
/// deployment around the engine. Parallelism flags (`--tp-size`, `--tensor-parallel-size`,
/// `--dp-size`, `--data-parallel-size`) are checked against the GPU count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentKnobs {
    pub knobs: Vec<Knob>,
}

/// GPU type and count, e.g. `H100:1`, `H200:2`.
pub const GPU_KNOB: &str = "resources.gpu";
/// The engine image, e.g. `lmsysorg/sglang:v0.5.4`.
pub const IMAGE_KNOB: &str = "image";

const TP_FLAGS: &[&str] = &["--tp-size", "--tp", "--tensor-parallel-size"];
const DP_FLAGS: &[&str] = &["--dp-size", "--dp", "--data-parallel-size"];

fn choice_knob(name: &str, values: &[String], description: &str) -> Knob {
    Knob {
        flag: name.to_string(),
        domain: Domain::Choice { values: values.to_vec() },
        default: None,
        candidates: values.to_vec(),
        quality_risk: false,
        requires: None,
        negation: None,
        description: description.to_string(),
    }
}

impl DeploymentKnobs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets planners pick among these GPU specs (`H100:1`, `H200:1`, `A100:80GB:2`...).
    pub fn gpus<S: AsRef<str>>(mut self, specs: &[S]) -> Self {
        let values: Vec<String> = specs.iter().map(|s| s.as_ref().to_string()).collect();
        self.knobs.retain(|k| k.flag != GPU_KNOB);
        self.knobs.push(choice_knob(
            GPU_KNOB,
            &values,
            "GPU type and count of the deployment (price and memory change with it).",
        ));
        self
    }

    /// Lets planners pick among these engine images.
    pub fn images<S: AsRef<str>>(mut self, images: &[S]) -> Self {
        let values: Vec<String> = images.iter().map(|s| s.as_ref().to_string()).collect();
        self.knobs.retain(|k| k.flag != IMAGE_KNOB);
        self.knobs.push(choice_knob(IMAGE_KNOB, &values, "Engine image tag (engine version)."));
        self
    }

    /// Every GPU of `table` in counts 1, 2, 4 and 8.
    pub fn gpus_from_prices(self, table: &PriceTable) -> Self {
        let specs: Vec<String> =
            table.gpu_hour_usd.keys().flat_map(|name| [1, 2, 4, 8].map(|n| format!("{name}:{n}"))).collect();
        self.gpus(&specs)
    }

    pub fn knob(&self, name: &str) -> Option<&Knob> {
        self.knobs.iter().find(|k| k.flag == name)
    }

    pub fn is_empty(&self) -> bool {
        self.knobs.is_empty()
    }

    /// The knob's value in `spec`.
    pub fn effective(&self, spec: &ServiceSpec, name: &str) -> Option<String> {
        match name {
            GPU_KNOB => spec.resources.gpu.clone(),
            IMAGE_KNOB => spec.image.clone(),
            _ => None,
        }
    }

    /// Sets a deployment knob, checking its domain and the parallel sizes against the GPU count.
    pub fn apply(&self, spec: &mut ServiceSpec, name: &str, value: &str) -> Result<()> {
        let knob = self.knob(name).ok_or_else(|| Error::Knob {
            knob: name.to_string(),
            message: format!("is not a deployment knob here; known: {}", self.names().join(", ")),
        })?;
        knob.validate(Some(value))?;
        let mut next = spec.clone();
        match name {
            GPU_KNOB => next.resources.gpu = Some(value.to_string()),
            IMAGE_KNOB => next.image = Some(value.to_string()),
            _ => return Err(Error::Knob { knob: name.to_string(), message: "has no field to set".into() }),
        }
        self.validate(&next)?;
        *spec = next;
        Ok(())
    }

    fn names(&self) -> Vec<String> {
        self.knobs.iter().map(|k| k.flag.clone()).collect()
    }

    /// Checks the spec's deployment values against the knobs' domains, and that tensor x data
    /// parallel size fits the GPU count.
    pub fn validate(&self, spec: &ServiceSpec) -> Result<()> {
        for knob in &self.knobs {
            if let Some(value) = self.effective(spec, &knob.flag) {
                knob.validate(Some(&value))?;
            }
        }
        let size = |flags: &[&str]| -> Result<u32> {
            for flag in flags {
                if let Some(Some(v)) = spec.flags.get(flag) {
                    return v
                        .parse()
                        .map_err(|_| Error::Knob { knob: flag.to_string(), message: format!("`{v}` is not a count") });
                }
            }
            Ok(1)
        };
        let needed = size(TP_FLAGS)? * size(DP_FLAGS)?;
        let gpus = spec.resources.gpu_name_and_count().map(|(_, n)| n).unwrap_or(1);
        if needed > gpus {
            return Err(Error::Knob {
                knob: GPU_KNOB.to_string(),
                message: format!(
                    "tensor x data parallel size is {needed} but the deployment has {gpus} GPU(s); raise the GPU count or lower the parallel size"
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineKind;

    fn spec(gpu: &str) -> ServiceSpec {
        ServiceSpec::new("s", EngineKind::Sglang, "m").with_gpu(gpu)
    }

    #[test]
    fn deployment_knobs_reject_unknown_values_and_parallelism_beyond_the_gpus() {
        let knobs = DeploymentKnobs::new().gpus(&["H100:1", "H100:2", "H200:1"]).images(&["sglang:v1", "sglang:v2"]);
        let mut s = spec("H100:1");
        knobs.apply(&mut s, GPU_KNOB, "H100:2").unwrap();
        assert_eq!(s.resources.gpu.as_deref(), Some("H100:2"));
        assert!(knobs.apply(&mut s, GPU_KNOB, "H100:3").is_err());
        assert!(knobs.apply(&mut s, "resources.cpu", "4").is_err());
        knobs.apply(&mut s, IMAGE_KNOB, "sglang:v2").unwrap();
        assert_eq!(s.image.as_deref(), Some("sglang:v2"));
        let s = s.with_flag("--tp-size", Some("2"));
        knobs.validate(&s).unwrap();
        let mut shrunk = s.clone();
        let err = knobs.apply(&mut shrunk, GPU_KNOB, "H200:1").unwrap_err().to_string();
        assert!(err.contains("parallel size is 2"), "{err}");
        assert_eq!(shrunk, s, "a rejected change leaves the spec alone");
    }
}
