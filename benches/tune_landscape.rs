//! The landscape of every tuning-suite scenario: how many configurations, how sparse the
//! within-2% region is, and what each knob level costs (the best value with that level, and the
//! optimum with only that knob changed). It measures every configuration in virtual time.
//!
//! `cargo run --release -p autodebug-benches --bin tune_landscape` (`SCENARIO=<name>` for one).

use autodebug_sim::tune_suite::{landscape, scenarios};

fn main() {
    let only = std::env::var("SCENARIO").ok();
    for s in scenarios() {
        if only.as_deref().is_some_and(|o| o != s.name) {
            continue;
        }
        let map = landscape(&s);
        let Some((best, optimum)) = map.optimum(&s.objective) else {
            println!("{}: nothing feasible", s.name);
            continue;
        };
        let best = best.clone();
        let within = map.within_count(&s.objective, optimum);
        println!(
            "\n{}: {} configs, {} infeasible, {} within 2% ({:.3}%), optimum {:.2} [{}]",
            s.name,
            map.points.len(),
            map.points.iter().filter(|(_, v)| v.is_none()).count(),
            within,
            100.0 * within as f64 / map.points.len() as f64,
            optimum,
            s.space.describe(&best)
        );
        let rel = |v: f64| 100.0 * (v - optimum) / optimum;
        for (d, dim) in s.space.dims.iter().enumerate() {
            let mut line = format!("  {:<32}", dim.flag);
            for (l, level) in dim.levels.iter().enumerate() {
                let at: Vec<f64> = map.points.iter().filter(|(c, _)| c[d] == l).filter_map(|(_, v)| *v).collect();
                let best_here = at.iter().copied().reduce(|a, b| if s.objective.better_value(b, a) { b } else { a });
                // The optimum with only this knob changed.
                let mut one = best.clone();
                one[d] = l;
                let one_off = map.points.iter().find(|(c, _)| *c == one).and_then(|(_, v)| *v);
                line.push_str(&format!(
                    " {}:best{}/1off{}",
                    level.as_deref().unwrap_or("dflt"),
                    best_here.map_or("X".into(), |v| format!("{:+.1}%", rel(v))),
                    one_off.map_or("X".into(), |v| format!("{:+.1}%", rel(v))),
                ));
            }
            println!("{line}");
        }
    }
}
