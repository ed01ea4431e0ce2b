//! Reading the experiment history back: comparisons, trade-offs, budgets and exports.
//!
//! Everything here is a pure function over [`History`](crate::History) and
//! [`Iteration`](crate::Iteration) values (as [`Store::history`](crate::store::Store::history)
//! returns them), so the CLI, an HTML report and a notebook all compute the same numbers:
//!
//! - [`diff`]: what changed between two iterations (flags, resources, metrics), with the change
//!   in percent, whether it is outside the objective's noise margin, and, from per-request
//!   records, a Mann-Whitney U test and a bootstrap interval;
//! - [`pareto`]: the Pareto front of two metrics (latency-like minimized, throughput-like maximized);
//! - [`budget`]: pass / fail / missing verdicts of service-level budgets per iteration, for CI gates;
//! - [`export`]: CSV, JSON and markdown (GitHub issue or pull-request body) renderings.
//!
//! ```
//! use autodebug_core::report::{self, pareto::Axis};
//! use autodebug_core::{Direction, History};
//!
//! assert_eq!(report::direction_for("ttft.p99"), Direction::Minimize);
//! assert_eq!(report::direction_for("chat.output_throughput"), Direction::Maximize);
//! let objective = report::parse_objective("maximize output_throughput").unwrap();
//! assert_eq!(objective.direction, Direction::Maximize);
//!
//! let front = report::pareto::front(&History::default().iterations, &Axis::new("ttft.p99"), &Axis::new("output_throughput"));
//! assert!(front.points.is_empty());
//! ```

pub mod budget;
pub mod diff;
pub mod export;
pub mod pareto;

use crate::{Direction, Error, Objective, Result};

/// Whether smaller or bigger is better for a metric, from its name: throughput, request and
/// token counts and cache ratios are maximized, everything else (latencies, errors) minimized.
pub fn direction_for(metric: &str) -> Direction {
    let leaf = metric
        .rsplit('.')
        .find(|part| !is_statistic(part))
        .unwrap_or(metric);
    let maximized = leaf.contains("throughput")
        || leaf.ends_with("per_second")
        || leaf.ends_with("_per_s")
        || leaf == "goodput"
        || leaf == "cached_token_ratio"
        || leaf == "accept_length"
        || leaf == "requests";
    if maximized {
        Direction::Maximize
    } else {
        Direction::Minimize
    }
}

fn is_statistic(part: &str) -> bool {
    matches!(
        part,
        "mean" | "avg" | "std" | "min" | "max" | "p999" | "median"
    ) || (part.starts_with('p') && part.len() > 1 && part[1..].chars().all(|c| c.is_ascii_digit()))
}

/// Parses `minimize e2e.mean`, `maximize output_throughput`, `min ttft.p99` or a bare metric name
/// (whose direction comes from [`direction_for`]).
pub fn parse_objective(text: &str) -> Result<Objective> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let bad = || {
        Error::config(
            "--objective",
            format!(
                "`{text}`: expected `minimize METRIC` or `maximize METRIC`, e.g. `minimize e2e.mean`"
            ),
        )
    };
    match words.as_slice() {
        [metric] => Ok(match direction_for(metric) {
            Direction::Minimize => Objective::minimize(*metric),
            Direction::Maximize => Objective::maximize(*metric),
        }),
        [verb, metric] => match verb.to_ascii_lowercase().as_str() {
            "minimize" | "minimise" | "min" => Ok(Objective::minimize(*metric)),
            "maximize" | "maximise" | "max" => Ok(Objective::maximize(*metric)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Parses a direction flag value: `min`/`minimize` or `max`/`maximize`.
pub fn parse_direction(text: &str) -> Result<Direction> {
    match text.to_ascii_lowercase().as_str() {
        "min" | "minimize" | "minimise" => Ok(Direction::Minimize),
        "max" | "maximize" | "maximise" => Ok(Direction::Maximize),
        other => Err(Error::config(
            "direction",
            format!("`{other}`: expected `min` or `max`"),
        )),
    }
}

/// Change of `to` relative to `from`, in percent of `from` (`None` when `from` is zero).
pub fn change_pct(from: f64, to: f64) -> Option<f64> {
    (from != 0.0 && from.is_finite() && to.is_finite()).then(|| (to - from) / from.abs() * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_follow_the_metric_kind_not_its_statistic() {
        for metric in [
            "ttft.p99",
            "chat.e2e.mean",
            "error_rate",
            "itl.p95",
            "tpot.max",
            "queue_delay.p50",
        ] {
            assert_eq!(direction_for(metric), Direction::Minimize, "{metric}");
        }
        for metric in [
            "output_throughput",
            "concurrent.request_throughput",
            "cached_token_ratio",
            "total_token_throughput",
        ] {
            assert_eq!(direction_for(metric), Direction::Maximize, "{metric}");
        }
    }

    #[test]
    fn objectives_parse_with_and_without_a_verb() {
        assert_eq!(
            parse_objective("minimize e2e.mean").unwrap(),
            Objective::minimize("e2e.mean")
        );
        assert_eq!(
            parse_objective("MAX output_throughput").unwrap(),
            Objective::maximize("output_throughput")
        );
        assert_eq!(
            parse_objective("ttft.p99").unwrap(),
            Objective::minimize("ttft.p99")
        );
        let err = parse_objective("shrink ttft.p99").unwrap_err().to_string();
        assert!(
            err.contains("--objective") && err.contains("shrink"),
            "{err}"
        );
        assert!(parse_objective("").is_err());
    }

    #[test]
    fn change_is_relative_to_the_first_value() {
        assert_eq!(change_pct(200.0, 150.0), Some(-25.0));
        assert_eq!(change_pct(0.0, 1.0), None);
    }
}
