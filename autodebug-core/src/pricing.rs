//! What a deployment costs, and the deployment-level knobs that change it.
//!
//! A [`PriceTable`] holds $/GPU-hour by GPU name (shipped defaults for H100, H200, A100 and L4, to be
//! replaced by your own contract prices from YAML). [`derive_cost_metrics`] turns a configuration's
//! output throughput into [`COST_PER_MTOK`], dollars per million output tokens, so an objective can
//! minimize cost under latency SLOs. The deployment-level knobs that change the price (GPU type and
//! count, image) are in the knob catalog: [`DeploymentKnobs`](crate::DeploymentKnobs).
//!
//! ```
//! use std::collections::BTreeMap;
//! use autodebug_core::pricing::{self, PriceTable};
//! use autodebug_core::{EngineKind, ServiceSpec};
//!
//! let spec = ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat").with_gpu("H100:2");
//! let mut metrics = BTreeMap::from([("output_throughput".to_string(), 1000.0)]);
//! let table = PriceTable::from_yaml("prices.yaml", "gpu_hour_usd: { H100: 3.6 }").unwrap();
//! pricing::derive_cost_metrics(&spec, &mut metrics, &table);
//! // 2 GPUs x $3.6/h over 3.6M tokens/h = $2 per million output tokens.
//! assert!((metrics["cost_per_mtok"] - 2.0).abs() < 1e-9);
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, ServiceSpec};

/// Dollars per million output tokens at the measured output throughput.
pub const COST_PER_MTOK: &str = "cost_per_mtok";
/// Dollars per hour for all GPUs of the configuration.
pub const GPU_HOUR_USD: &str = "deployment_usd_per_hour";

/// $/GPU-hour by GPU name (matched case-insensitively on the name part of `H100:80GB:2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub gpu_hour_usd: BTreeMap<String, f64>,
}

impl Default for PriceTable {
    /// Indicative on-demand cloud prices (2025, USD); replace them with your own.
    fn default() -> Self {
        let prices = [("H100", 2.99), ("H200", 3.79), ("A100", 1.79), ("L4", 0.80)];
        PriceTable { gpu_hour_usd: prices.iter().map(|(k, v)| (k.to_string(), *v)).collect() }
    }
}

impl PriceTable {
    /// The defaults overridden (and extended) by a YAML file `gpu_hour_usd: { H100: 2.5, ... }`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_yaml(&path.display().to_string(), &text)
    }

    /// As [`load`](Self::load), from text; `origin` names the file in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self> {
        let user: PriceTable = serde_yaml::from_str(text).map_err(|e| {
            Error::config(origin, format!("{e}; expected `gpu_hour_usd:` mapping GPU names to dollars per GPU-hour"))
        })?;
        let mut table = PriceTable::default();
        for (name, price) in user.gpu_hour_usd {
            if !price.is_finite() || price < 0.0 {
                return Err(Error::config(
                    format!("{origin}: gpu_hour_usd.{name}"),
                    format!("{price} is not a price in dollars"),
                ));
            }
            table.gpu_hour_usd.insert(name.to_ascii_uppercase(), price);
        }
        Ok(table)
    }

    /// Price per GPU-hour of a GPU name (`h100` and `H100` alike).
    pub fn price(&self, gpu: &str) -> Option<f64> {
        self.gpu_hour_usd.iter().find(|(k, _)| k.eq_ignore_ascii_case(gpu)).map(|(_, v)| *v)
    }

    /// Dollars per hour for the spec's GPUs; `None` without a GPU spec or a price for it.
    pub fn hourly(&self, spec: &ServiceSpec) -> Option<f64> {
        let (name, count) = spec.resources.gpu_name_and_count()?;
        Some(self.price(&name)? * f64::from(count))
    }
}

/// Adds [`COST_PER_MTOK`] next to every `output_throughput` metric (`chat.output_throughput` gives
/// `chat.cost_per_mtok`) and [`GPU_HOUR_USD`]; returns the unprefixed cost when there is one.
///
/// Nothing is added when the spec has no priced GPU, and no cost where throughput is zero or not
/// finite: a missing metric makes a cost constraint fail, which is right for a config that served
/// nothing.
pub fn derive_cost_metrics(spec: &ServiceSpec, metrics: &mut BTreeMap<String, f64>, table: &PriceTable) -> Option<f64> {
    let hourly = table.hourly(spec)?;
    metrics.insert(GPU_HOUR_USD.to_string(), hourly);
    let throughputs: Vec<(String, f64)> = metrics
        .iter()
        .filter(|(k, _)| *k == "output_throughput" || k.ends_with(".output_throughput"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let mut primary = None;
    for (key, tokens_per_s) in throughputs {
        if !(tokens_per_s.is_finite() && tokens_per_s > 0.0) {
            continue;
        }
        let cost = hourly / (tokens_per_s * 3600.0) * 1e6;
        let name = format!("{}{COST_PER_MTOK}", key.trim_end_matches("output_throughput"));
        if name == COST_PER_MTOK {
            primary = Some(cost);
        }
        metrics.insert(name, cost);
    }
    primary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineKind;

    fn spec(gpu: &str) -> ServiceSpec {
        ServiceSpec::new("s", EngineKind::Sglang, "m").with_gpu(gpu)
    }

    #[test]
    fn cost_follows_gpu_count_price_and_throughput() {
        let table = PriceTable::default();
        let mut one =
            BTreeMap::from([("output_throughput".to_string(), 2000.0), ("chat.output_throughput".to_string(), 500.0)]);
        let cost = derive_cost_metrics(&spec("H100:1"), &mut one, &table).unwrap();
        let mut two = BTreeMap::from([("output_throughput".to_string(), 2000.0)]);
        let cost2 = derive_cost_metrics(&spec("H100:80GB:2"), &mut two, &table).unwrap();
        assert!((cost2 / cost - 2.0).abs() < 1e-9, "{cost} vs {cost2}");
        assert!(
            (one["chat.cost_per_mtok"] / cost - 4.0).abs() < 1e-9,
            "a quarter of the throughput costs four times as much"
        );
        let expected = table.price("H100").unwrap() / (2000.0 * 3600.0) * 1e6;
        assert!((cost - expected).abs() < 1e-12);
    }

    #[test]
    fn no_cost_without_a_priced_gpu_or_any_throughput() {
        let table = PriceTable::default();
        let mut metrics = BTreeMap::from([("output_throughput".to_string(), 0.0)]);
        assert_eq!(derive_cost_metrics(&spec("H100:1"), &mut metrics, &table), None);
        assert!(!metrics.contains_key(COST_PER_MTOK));
        let mut metrics = BTreeMap::from([("output_throughput".to_string(), 10.0)]);
        assert_eq!(derive_cost_metrics(&spec("TPU:1"), &mut metrics, &table), None);
    }

    #[test]
    fn a_user_price_file_overrides_and_errors_name_the_file() {
        let t = PriceTable::from_yaml("prices.yaml", "gpu_hour_usd:\n  h100: 1.25\n  B200: 6\n").unwrap();
        assert_eq!(t.price("H100"), Some(1.25));
        assert_eq!(t.price("b200"), Some(6.0));
        assert!(t.price("L4").is_some(), "defaults stay");
        let err = PriceTable::from_yaml("prices.yaml", "gpus: {}").unwrap_err().to_string();
        assert!(err.contains("prices.yaml"), "{err}");
        let err = PriceTable::from_yaml("prices.yaml", "gpu_hour_usd: { H100: -1 }").unwrap_err().to_string();
        assert!(err.contains("gpu_hour_usd.H100"), "{err}");
    }
}
