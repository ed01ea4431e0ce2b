//! Tests of how proposals land in a scenario's space, of planner runs, and of the measured noise.

use autodebug_core::SearchSpace;

use super::drive::{Landing, land};
use super::*;
use crate::EngineKind;

fn named(name: &str) -> Scenario {
    scenarios().into_iter().find(|s| s.name == name).unwrap()
}

#[test]
fn an_off_ladder_number_snaps_to_the_nearest_level_and_an_unknown_choice_is_outside() {
    let catalog = SearchSpace::for_engine(EngineKind::Sglang);
    let s = named("kv-starved");
    let mut proposal = s.base.clone();
    proposal.flags.set("--max-running-requests", Some("22"));
    match land(&s, &catalog, &proposal) {
        Landing::Snapped(spec) => {
            assert_eq!(spec.flags.get("--max-running-requests"), Some(Some("24")));
            assert!(s.space.encode(&catalog, &spec.flags).is_some_and(|c| s.space.contains(&c)));
        }
        _ => panic!("22 should snap to 24"),
    }
    proposal.flags.set("--max-running-requests", Some("24"));
    assert!(matches!(land(&s, &catalog, &proposal), Landing::Inside(_)));

    let rag = named("rag-shared-prefix");
    let mut choice = rag.base.clone();
    choice.flags.set("--schedule-policy", Some("lof"));
    assert!(matches!(land(&rag, &catalog, &choice), Landing::Outside(_)));
    // A knob the scenario does not search leaves the space too.
    let mut untuned = rag.base.clone();
    untuned.flags.set("--cuda-graph-max-bs", Some("64"));
    assert!(matches!(land(&rag, &catalog, &untuned), Landing::Outside(_)));
}

#[test]
fn a_flag_the_scenario_holds_fixed_does_not_stop_the_planners() {
    // A generated scenario on several GPUs keeps its TP degree in the base spec without
    // searching it (gen-1-23 at the time): every planner used to stop at its first plan.
    let mut s = named("qwen-chat-latency");
    s.base.flags.set("--tp-size", Some("2"));
    let bench = Bench::new(s, 0.0);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for choice in [PlannerChoice::Random, PlannerChoice::Oat, PlannerChoice::Bayes, PlannerChoice::Hybrid] {
        let planner = choice.build(&bench.scenario, 1);
        let trace = runtime.block_on(run_planner(planner.as_ref(), &bench, 12, 1)).unwrap();
        assert!(!trace.stopped_early, "{} stopped early", choice.as_str());
        assert_eq!(trace.values.len(), 12, "{}", choice.as_str());
        assert_eq!(trace.invalid, 0, "{}", choice.as_str());
        let distinct: std::collections::BTreeSet<u64> = trace.values.iter().flatten().map(|v| v.to_bits()).collect();
        assert!(distinct.len() > 1, "{} measured only its start", choice.as_str());
    }
}

#[test]
fn the_twin_planner_screens_in_virtual_time_after_its_warmup_and_stays_in_the_space() {
    let bench = Bench::new(named("qwen-chat-latency"), 0.0);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let planner = PlannerChoice::Twin.build(&bench.scenario, 1);
    let trace = runtime.block_on(run_planner(planner.as_ref(), &bench, 10, 1)).unwrap();
    assert_eq!(trace.values.len(), 10);
    assert_eq!(trace.invalid, 0, "{:?}", trace.rules);
    let twin = trace.rules.iter().position(|r| r == crate::twin::TWIN_RULE).expect("the twin proposed something");
    assert!(twin >= 2, "the hybrid plans the first 3 evaluations: {:?}", trace.rules);
}

#[test]
fn noise_levels_are_measured_and_stated() {
    let s = named("qwen-chat-latency");
    let bench = Bench::new(s.clone(), 1.0);
    let sd = bench.noise.sd(&s.objective.metric);
    assert!(sd > 0.0 && sd < 0.5, "measured objective spread {sd}");
    assert!(bench.noise.source.contains("seed-to-seed"));
    assert_eq!(Bench::new(s, 0.0).noise.sd("e2e.mean"), 0.0);
}
