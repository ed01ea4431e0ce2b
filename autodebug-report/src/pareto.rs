//! The Pareto front of two metrics over the iterations of a history: the configurations no other
//! one beats on both axes at once (for instance TTFT p99 against output throughput).

use serde::Serialize;

use autodebug_core::{Direction, Iteration};

/// One axis: a metric and whether smaller or bigger is better.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Axis {
    pub metric: String,
    pub direction: Direction,
}

impl Axis {
    /// An axis whose direction follows the metric's name ([`Direction::for_metric`]).
    pub fn new(metric: impl Into<String>) -> Self {
        let metric = metric.into();
        let direction = Direction::for_metric(&metric);
        Axis { metric, direction }
    }

    pub fn with_direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Whether `a` is at least as good as `b` on this axis.
    fn at_least_as_good(&self, a: f64, b: f64) -> bool {
        match self.direction {
            Direction::Minimize => a <= b,
            Direction::Maximize => a >= b,
        }
    }
}

/// One iteration placed on the two axes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParetoPoint {
    pub iteration: u32,
    pub x: f64,
    pub y: f64,
    /// No other point is at least as good on both axes and strictly better on one.
    pub on_front: bool,
    /// The first point that dominates this one, when it is not on the front.
    pub dominated_by: Option<u32>,
}

/// The points (successful iterations with both metrics, sorted by x, best first) and the front.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParetoFront {
    pub x: Axis,
    pub y: Axis,
    pub points: Vec<ParetoPoint>,
    /// Iterations left out: not successful, or missing one of the two metrics.
    pub skipped: Vec<u32>,
}

impl ParetoFront {
    /// Iteration numbers on the front, in x order.
    pub fn front(&self) -> Vec<u32> {
        self.points.iter().filter(|p| p.on_front).map(|p| p.iteration).collect()
    }
}

/// Computes the Pareto front of `x` against `y` over `iterations`.
///
/// ```
/// use autodebug_report::pareto::{front, Axis};
/// use autodebug_core::{Analysis, EngineKind, Iteration, IterationStatus, ServiceSpec};
///
/// let it = |n: u32, ttft: f64, tput: f64| Iteration {
///     number: n,
///     spec: ServiceSpec::new("s", EngineKind::Vllm, "m"),
///     artifact: None,
///     status: IterationStatus::Ok,
///     metrics: [("ttft.p99".to_string(), ttft), ("output_throughput".to_string(), tput)].into(),
///     bench: Default::default(),
///     analysis: Analysis::default(),
///     plan: None,
///     error: None,
///     started_ns: 0,
///     finished_ns: 0,
///     timings: Default::default(),
///     round: None,
/// };
/// // 2 is fast but slow-throughput, 3 is the opposite, 1 loses to 3 on both axes.
/// let history = [it(1, 90.0, 500.0), it(2, 40.0, 400.0), it(3, 80.0, 900.0)];
/// let result = front(&history, &Axis::new("ttft.p99"), &Axis::new("output_throughput"));
/// assert_eq!(result.front(), vec![2, 3]);
/// assert_eq!(result.points.iter().find(|p| p.iteration == 1).unwrap().dominated_by, Some(3));
/// ```
pub fn front(iterations: &[Iteration], x: &Axis, y: &Axis) -> ParetoFront {
    let mut points = Vec::new();
    let mut skipped = Vec::new();
    for it in iterations {
        let value = |metric: &str| it.metrics.get(metric).copied().filter(|v| v.is_finite());
        match (it.is_ok(), value(&x.metric), value(&y.metric)) {
            (true, Some(vx), Some(vy)) => {
                points.push(ParetoPoint { iteration: it.number, x: vx, y: vy, on_front: true, dominated_by: None })
            }
            _ => skipped.push(it.number),
        }
    }
    let dominates = |p: &ParetoPoint, q: &ParetoPoint| {
        x.at_least_as_good(p.x, q.x) && y.at_least_as_good(p.y, q.y) && (p.x != q.x || p.y != q.y)
    };
    let dominators: Vec<Option<u32>> =
        points.iter().map(|q| points.iter().find(|p| dominates(p, q)).map(|p| p.iteration)).collect();
    for (point, dominator) in points.iter_mut().zip(dominators) {
        point.on_front = dominator.is_none();
        point.dominated_by = dominator;
    }
    points.sort_by(|p, q| {
        let order = p.x.total_cmp(&q.x).then(p.iteration.cmp(&q.iteration));
        if x.direction == Direction::Maximize { order.reverse() } else { order }
    });
    ParetoFront { x: x.clone(), y: y.clone(), points, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebug_core::{Analysis, EngineKind, IterationStatus, ServiceSpec};

    fn iteration(number: u32, status: IterationStatus, metrics: &[(&str, f64)]) -> Iteration {
        Iteration {
            number,
            spec: ServiceSpec::new("s", EngineKind::Sglang, "m"),
            artifact: None,
            status,
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            bench: Default::default(),
            analysis: Analysis::default(),
            plan: None,
            error: None,
            started_ns: 0,
            finished_ns: 0,
            timings: Default::default(),
            round: None,
        }
    }

    #[test]
    fn the_front_respects_each_axis_direction_and_skips_unusable_iterations() {
        let history = [
            iteration(1, IterationStatus::Ok, &[("a", 1.0), ("b", 1.0)]),
            iteration(2, IterationStatus::Ok, &[("a", 2.0), ("b", 2.0)]),
            iteration(3, IterationStatus::Ok, &[("a", 3.0), ("b", 0.5)]),
            iteration(4, IterationStatus::DeployFailed, &[("a", 0.0), ("b", 9.0)]),
            iteration(5, IterationStatus::Ok, &[("a", f64::NAN), ("b", 9.0)]),
            iteration(6, IterationStatus::Ok, &[("a", 1.0), ("b", 1.0)]),
        ];
        let min = |m: &str| Axis::new(m).with_direction(Direction::Minimize);
        let max = |m: &str| Axis::new(m).with_direction(Direction::Maximize);

        // Minimize both: 1 (and its twin 6) dominate 2 and 3.
        let both_min = front(&history, &min("a"), &min("b"));
        assert_eq!(both_min.front(), vec![1, 6, 3]);
        assert_eq!(both_min.skipped, vec![4, 5]);

        // Minimize a, maximize b: 1/6 best on a, 2 best on b, 3 dominated by 2? no: a 3 > 2 and b 0.5 < 2.
        let mixed = front(&history, &min("a"), &max("b"));
        assert_eq!(mixed.front(), vec![1, 6, 2]);
        assert_eq!(mixed.points.iter().find(|p| p.iteration == 3).unwrap().dominated_by, Some(1));

        // Maximize both: 3 has the biggest a, 2 the biggest b; sorted by a descending.
        let both_max = front(&history, &max("a"), &max("b"));
        assert_eq!(both_max.front(), vec![3, 2]);
    }
}
