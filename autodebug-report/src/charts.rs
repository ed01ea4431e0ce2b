//! The charts of a report, each a standalone SVG document.

use std::fmt::Write;

use crate::pareto::{self, Axis, ParetoPoint};
use autodebug_core::{Direction, Iteration, RequestRecord};

use crate::data::ReportData;
use crate::svg::{self, BLUE, Frame, GREEN, GREY, INK, Layout, ORANGE, RED, Scale, escape, short_number};

/// One chart: a file stem for `--svg-dir`/`--png-dir`, a title, and the SVG document.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// File stem, e.g. `objective`, `pareto-concurrent`, `cdf-ttft-chat`.
    pub name: String,
    pub title: String,
    pub svg: String,
    pub width: u32,
    pub height: u32,
}

/// Every chart of the report, in page order.
pub fn all(data: &ReportData) -> Vec<Chart> {
    let mut charts = Vec::new();
    charts.extend(objective(data));
    for (metric, title) in KEY_METRICS {
        charts.extend(iteration_series(data, metric, title, &metric.replace('.', "-")));
    }
    for plan in data.plan_names() {
        charts.extend(pareto_front(data, &plan));
    }
    for plan in &data.plans {
        for (field, label) in [("ttft", "TTFT"), ("e2e", "End-to-end latency")] {
            charts.extend(latency_cdf(data, plan, field, label));
        }
    }
    charts.extend(knob_grid(data));
    charts
}

/// Metrics of the primary bench plan drawn per iteration besides the objective.
const KEY_METRICS: [(&str, &str); 3] = [
    ("ttft.p99", "TTFT p99 per iteration"),
    ("tpot.mean", "TPOT mean per iteration"),
    ("output_throughput", "Output throughput per iteration"),
];

/// The unit a flat metric name is measured in.
pub fn unit_of(metric: &str) -> &'static str {
    let last = metric
        .rsplit('.')
        .find(|part| !matches!(*part, "mean" | "std" | "min" | "max" | "p50" | "p90" | "p95" | "p99" | "p999"));
    match last.unwrap_or(metric) {
        "output_throughput" | "total_token_throughput" => "tok/s",
        "request_throughput" => "req/s",
        "error_rate" | "cached_token_ratio" => "ratio",
        "errors" | "requests" => "count",
        "ttft" | "ttst" | "tpot" | "itl" | "e2e" | "inter_chunk" | "queue_delay" => "ms",
        _ => "",
    }
}

fn axis_label(metric: &str) -> String {
    match unit_of(metric) {
        "" => metric.to_string(),
        unit => format!("{metric} ({unit})"),
    }
}

fn objective(data: &ReportData) -> Option<Chart> {
    let direction = match data.objective.direction {
        Direction::Minimize => "lower is better",
        Direction::Maximize => "higher is better",
    };
    let title = format!("Objective: {} ({direction})", data.objective.metric);
    iteration_series(data, &data.objective.metric, &title, "objective")
}

/// A metric per iteration: a line through the iterations that have it, the champion ringed,
/// infeasible iterations hollow, failed iterations as crosses on the axis.
fn iteration_series(data: &ReportData, metric: &str, title: &str, name: &str) -> Option<Chart> {
    let iterations = &data.history.iterations;
    let points: Vec<(&Iteration, f64)> =
        iterations.iter().filter_map(|i| i.metrics.get(metric).filter(|v| v.is_finite()).map(|v| (i, *v))).collect();
    if points.is_empty() {
        return None;
    }
    let layout = Layout::chart();
    let last = iterations.iter().map(|i| i.number).max().unwrap_or(1) as f64;
    let (px0, px1) = layout.x_pixels();
    let (py0, py1) = layout.y_pixels();
    let x = Scale::exact(0.5, last + 0.5, px0, px1).integer_ticks();
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let y = Scale::nice(lo.min(0.0).max(lo - (hi - lo)), hi, py0, py1);
    let mut frame = Frame::new(&layout, x, y, title, "iteration", &axis_label(metric));
    let champion = data.champion().map(|c| c.number);
    let path: Vec<String> =
        points.iter().map(|(i, v)| format!("{:.1},{:.1}", x.map(i.number as f64), y.map(*v))).collect();
    let _ =
        write!(frame.body, r#"<polyline points="{}" fill="none" stroke="{BLUE}" stroke-width="2"/>"#, path.join(" "));
    for (iteration, value) in &points {
        let (cx, cy) = (x.map(iteration.number as f64), y.map(*value));
        let feasible = data.objective.is_feasible(&iteration.metrics);
        let fill = if feasible { BLUE } else { "#ffffff" };
        let note = if feasible { "" } else { " (violates a constraint)" };
        let _ = write!(
            frame.body,
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="4.5" fill="{fill}" stroke="{BLUE}" stroke-width="2"><title>iteration {}: {} {}{note}</title></circle><text x="{cx:.1}" y="{ty:.1}" font-size="11" text-anchor="middle" fill="{INK}">{}</text>"#,
            iteration.number,
            short_number(*value),
            unit_of(metric),
            short_number(*value),
            ty = cy - 10.0,
        );
        if Some(iteration.number) == champion {
            let _ = write!(
                frame.body,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="10" fill="none" stroke="{ORANGE}" stroke-width="3"/><text x="{cx:.1}" y="{ty:.1}" font-size="11" font-weight="600" text-anchor="middle" fill="{RED}">champion</text>"#,
                ty = cy + 24.0,
            );
        }
    }
    for failed in iterations.iter().filter(|i| !i.metrics.contains_key(metric)) {
        let (cx, cy) = (x.map(failed.number as f64), py0 - 8.0);
        let _ = write!(
            frame.body,
            r#"<path d="M{a:.1},{b:.1}L{c:.1},{d:.1}M{a:.1},{d:.1}L{c:.1},{b:.1}" stroke="{RED}" stroke-width="2.5"><title>iteration {}: {}</title></path>"#,
            failed.number,
            escape(failed.status.as_str()),
            a = cx - 5.0,
            b = cy - 5.0,
            c = cx + 5.0,
            d = cy + 5.0,
        );
    }
    frame.legend(BLUE, "iteration (hollow: infeasible)", false);
    frame.legend(ORANGE, "champion", false);
    Some(Chart { name: name.to_string(), title: title.to_string(), svg: frame.finish(title), width: 640, height: 380 })
}

/// Output throughput against p99 TTFT for one bench plan: every iteration, the front joined.
fn pareto_front(data: &ReportData, plan: &str) -> Option<Chart> {
    let latency_metric = format!("{plan}.ttft.p99");
    let throughput_metric = format!("{plan}.output_throughput");
    let result = pareto::front(
        &data.history.iterations,
        &Axis::new(latency_metric.clone()).with_direction(Direction::Minimize),
        &Axis::new(throughput_metric.clone()).with_direction(Direction::Maximize),
    );
    let points = &result.points;
    if points.is_empty() {
        return None;
    }
    let layout = Layout::chart();
    let (px0, px1) = layout.x_pixels();
    let (py0, py1) = layout.y_pixels();
    let fold = |f: fn(&ParetoPoint) -> f64| {
        let lo = points.iter().map(f).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let (xlo, xhi) = fold(|p| p.x);
    let (ylo, yhi) = fold(|p| p.y);
    let x = Scale::nice(xlo - (xhi - xlo) * 0.08, xhi + (xhi - xlo) * 0.08, px0, px1);
    let y = Scale::nice(ylo - (yhi - ylo) * 0.1, yhi + (yhi - ylo) * 0.1, py0, py1);
    let title = format!("Pareto front, plan `{plan}`: throughput vs p99 TTFT");
    let mut frame = Frame::new(&layout, x, y, &title, &axis_label(&latency_metric), &axis_label(&throughput_metric));
    let steps: Vec<String> =
        points.iter().filter(|p| p.on_front).map(|p| format!("{:.1},{:.1}", x.map(p.x), y.map(p.y))).collect();
    let _ = write!(
        frame.body,
        r#"<polyline points="{}" fill="none" stroke="{GREEN}" stroke-width="2" stroke-dasharray="6 4"/>"#,
        steps.join(" ")
    );
    let champion = data.champion().map(|c| c.number);
    for p in points {
        let (cx, cy) = (x.map(p.x), y.map(p.y));
        let color = if p.on_front { GREEN } else { GREY };
        let standing = match p.dominated_by {
            Some(other) => format!(", dominated by #{other}"),
            None => ", on the front".to_string(),
        };
        let _ = write!(
            frame.body,
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="5" fill="{color}"><title>iteration {}: p99 TTFT {} ms, {} tok/s{standing}</title></circle><text x="{tx:.1}" y="{ty:.1}" font-size="11" fill="{INK}">#{}</text>"#,
            p.iteration,
            short_number(p.x),
            short_number(p.y),
            p.iteration,
            tx = cx + 12.0,
            ty = cy - 8.0,
        );
        if Some(p.iteration) == champion {
            let _ = write!(
                frame.body,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="10" fill="none" stroke="{ORANGE}" stroke-width="3"/>"#
            );
        }
    }
    frame.legend(GREEN, "Pareto front", true);
    frame.legend(GREY, "dominated", false);
    frame.legend(ORANGE, "champion", false);
    let name = format!("pareto-{}", file_stem(plan));
    Some(Chart { name, svg: frame.finish(&title), title, width: 640, height: 380 })
}

/// Successful requests' latencies in ms for one field (`ttft` or `e2e`), sorted.
fn latencies_ms(records: &[RequestRecord], field: &str) -> Vec<f64> {
    let mut values: Vec<f64> = records
        .iter()
        .filter(|r| r.error.is_none())
        .filter_map(|r| match field {
            "ttft" => r.ttft_ns,
            _ => r.e2e_ns,
        })
        .map(|ns| ns as f64 / 1e6)
        .collect();
    values.sort_by(f64::total_cmp);
    values
}

/// The empirical CDF of the baseline's latencies against the champion's for one bench plan.
fn latency_cdf(data: &ReportData, plan: &crate::data::PlanRecords, field: &str, label: &str) -> Option<Chart> {
    let baseline = latencies_ms(&plan.baseline, field);
    let champion = latencies_ms(&plan.champion, field);
    if baseline.is_empty() && champion.is_empty() {
        return None;
    }
    let base_number = data.baseline().map(|i| i.number);
    let champ_number = data.champion().map(|i| i.number);
    let same = base_number == champ_number;
    let mut series: Vec<(String, &str, bool, &[f64])> = Vec::new();
    if !baseline.is_empty() {
        let name = match (base_number, same) {
            (Some(n), true) => format!("baseline = champion (#{n}), n={}", baseline.len()),
            (Some(n), false) => format!("baseline (#{n}), n={}", baseline.len()),
            (None, _) => format!("baseline, n={}", baseline.len()),
        };
        series.push((name, BLUE, false, &baseline));
    }
    if !champion.is_empty() && !same {
        let name = format!("champion (#{}), n={}", champ_number.unwrap_or_default(), champion.len());
        series.push((name, ORANGE, false, &champion));
    }
    let layout = Layout::chart();
    let (px0, px1) = layout.x_pixels();
    let (py0, py1) = layout.y_pixels();
    let lo = series.iter().filter_map(|s| s.3.first()).copied().fold(f64::INFINITY, f64::min);
    let hi = series.iter().filter_map(|s| s.3.last()).copied().fold(f64::NEG_INFINITY, f64::max);
    let x = Scale::nice(lo.min(0.0).max(lo - (hi - lo) * 0.1), hi, px0, px1);
    let y = Scale::exact(0.0, 1.0, py0, py1);
    let title = format!("{label} CDF, plan `{}`", plan.plan);
    let mut frame = Frame::new(&layout, x, y, &title, &format!("{field} (ms)"), "share of requests ≤ x");
    for (name, color, dashed, values) in &series {
        let n = values.len() as f64;
        let mut d = format!("M{:.1},{:.1}", x.map(values[0]), y.map(0.0));
        for (k, v) in values.iter().enumerate() {
            let _ = write!(
                d,
                "L{:.1},{:.1}L{:.1},{:.1}",
                x.map(*v),
                y.map(k as f64 / n),
                x.map(*v),
                y.map((k + 1) as f64 / n)
            );
        }
        let _ = write!(frame.body, r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="2.2"/>"#);
        frame.legend(color, name, *dashed);
    }
    let name = format!("cdf-{field}-{}", file_stem(&plan.plan));
    Some(Chart { name, svg: frame.finish(&title), title, width: 640, height: 380 })
}

/// Knob values per iteration as a grid: rows are knobs, columns iterations; a changed value is
/// highlighted, the champion's column marked.
fn knob_grid(data: &ReportData) -> Option<Chart> {
    let iterations = &data.history.iterations;
    if iterations.is_empty() {
        return None;
    }
    let mut knobs: Vec<String> = Vec::new();
    for iteration in iterations {
        for (name, _) in iteration.spec.flags.iter() {
            if !knobs.iter().any(|k| k == name) {
                knobs.push(name.to_string());
            }
        }
        if iteration.spec.resources.gpu.is_some() && !knobs.iter().any(|k| k == "resources.gpu") {
            knobs.push("resources.gpu".to_string());
        }
    }
    let value_of = |iteration: &Iteration, knob: &str| -> Option<String> {
        if knob == "resources.gpu" {
            return iteration.spec.resources.gpu.clone();
        }
        iteration.spec.flags.get(knob).map(|v| v.unwrap_or("on").to_string())
    };
    let label_width = knobs.iter().map(|k| k.chars().count()).max().unwrap_or(10).max(14) as f64 * 7.4 + 24.0;
    let cell_width = iterations
        .iter()
        .flat_map(|i| knobs.iter().map(move |k| value_of(i, k).map(|v| v.chars().count()).unwrap_or(1)))
        .max()
        .unwrap_or(4)
        .clamp(5, 24) as f64
        * 7.5
        + 18.0;
    let row_height = 24.0;
    let top = 44.0 + row_height * 2.0;
    let width = (label_width + cell_width * iterations.len() as f64 + 24.0).max(420.0);
    let height = top + row_height * (knobs.len().max(1) as f64) + 40.0;
    let champion = data.champion().map(|c| c.number);
    let title = "Knob values per iteration";
    let mut body = format!(
        r##"<rect width="{width}" height="{height}" fill="#ffffff"/><text x="12" y="26" font-size="16" font-weight="600" fill="{INK}">{title}</text>"##
    );
    let header_y = 44.0 + row_height * 0.7;
    let status_y = 44.0 + row_height * 1.7;
    let _ = write!(
        body,
        r#"<text x="12" y="{header_y}" font-size="12" font-weight="600" fill="{INK}">iteration</text><text x="12" y="{status_y}" font-size="12" fill="{INK}">{}</text>"#,
        escape(&data.objective.metric)
    );
    for (col, iteration) in iterations.iter().enumerate() {
        let cx = label_width + cell_width * (col as f64 + 0.5);
        let is_champion = Some(iteration.number) == champion;
        if is_champion {
            let _ = write!(
                body,
                r#"<rect x="{x:.1}" y="44" width="{cell_width:.1}" height="{h:.1}" fill="none" stroke="{ORANGE}" stroke-width="3"/>"#,
                x = label_width + cell_width * col as f64,
                h = height - 44.0 - 34.0,
            );
        }
        let header = if is_champion { format!("#{} ★", iteration.number) } else { format!("#{}", iteration.number) };
        let value = data
            .objective
            .value(&iteration.metrics)
            .map(short_number)
            .unwrap_or_else(|| iteration.status.as_str().to_string());
        let _ = write!(
            body,
            r#"<text x="{cx:.1}" y="{header_y}" font-size="12" font-weight="600" text-anchor="middle" fill="{INK}">{}</text><text x="{cx:.1}" y="{status_y}" font-size="12" text-anchor="middle" fill="{INK}">{}</text>"#,
            escape(&header),
            escape(&value)
        );
    }
    for (row, knob) in knobs.iter().enumerate() {
        let y = top + row_height * row as f64;
        let _ = write!(
            body,
            r#"<text x="12" y="{ty:.1}" font-size="12" font-family="ui-monospace, 'DejaVu Sans Mono', monospace" fill="{INK}">{}</text>"#,
            escape(knob),
            ty = y + row_height * 0.68
        );
        let mut previous: Option<Option<String>> = None;
        for (col, iteration) in iterations.iter().enumerate() {
            let value = value_of(iteration, knob);
            let changed = previous.as_ref().is_some_and(|p| *p != value);
            let fill = match (&value, changed) {
                (_, true) => "#fde2b8",
                (Some(_), false) => "#dcecf7",
                (None, false) => "#f6f6f6",
            };
            let x = label_width + cell_width * col as f64;
            let shown = value.clone().unwrap_or_else(|| "·".to_string());
            let _ = write!(
                body,
                r#"<rect x="{rx:.1}" y="{ry:.1}" width="{rw:.1}" height="{rh:.1}" fill="{fill}"><title>{} at iteration {}: {}{}</title></rect><text x="{tx:.1}" y="{ty:.1}" font-size="12" text-anchor="middle" fill="{INK}">{}</text>"#,
                escape(knob),
                iteration.number,
                escape(value.as_deref().unwrap_or("engine default")),
                if changed { " (changed)" } else { "" },
                escape(&shown),
                rx = x + 1.0,
                ry = y + 1.0,
                rw = cell_width - 2.0,
                rh = row_height - 2.0,
                tx = x + cell_width / 2.0,
                ty = y + row_height * 0.68,
            );
            previous = Some(value);
        }
    }
    let _ = write!(
        body,
        r##"<text x="12" y="{y:.1}" font-size="11" fill="{INK}"><tspan fill="#c77a00">■</tspan> changed from the previous iteration · <tspan fill="#7fb3d9">■</tspan> set · “·” engine default · ★ champion</text>"##,
        y = height - 10.0
    );
    if knobs.is_empty() {
        let _ = write!(
            body,
            r#"<text x="12" y="{}" font-size="12" fill="{GREY}">every iteration ran the engine defaults</text>"#,
            top + 16.0
        );
    }
    let svg = svg::document(width.round(), height.round(), title, &body);
    Some(Chart {
        name: "knobs".into(),
        title: title.into(),
        svg,
        width: width.round() as u32,
        height: height.round() as u32,
    })
}

/// A plan name as a file-name part: letters, digits and dashes only.
fn file_stem(name: &str) -> String {
    let stem: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    if stem.is_empty() { "plan".to_string() } else { stem }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_the_metric_family() {
        assert_eq!(unit_of("chat.ttft.p99"), "ms");
        assert_eq!(unit_of("output_throughput"), "tok/s");
        assert_eq!(unit_of("concurrent.request_throughput"), "req/s");
        assert_eq!(unit_of("chat.error_rate"), "ratio");
    }

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(file_stem("Long Prompt/8k"), "long-prompt-8k");
    }
}
