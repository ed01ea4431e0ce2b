//! What a report shows, read once from the experiment store.

use autodebug_core::store::Store;
use autodebug_core::trail::render_debug_log_for_session;
use autodebug_core::{History, Iteration, Objective, RequestRecord};

use crate::ReportError;

/// One session, as the report draws it. Built from a store by [`ReportData::from_store`], or by
/// hand (every field is public) for tests and for programs that keep history elsewhere.
#[derive(Debug, Clone)]
pub struct ReportData {
    pub session: String,
    pub objective: Objective,
    /// Deployment backend and engine, for the header.
    pub target: String,
    pub engine: String,
    pub history: History,
    /// Per bench plan, the per-request records of the baseline and of the champion.
    pub plans: Vec<PlanRecords>,
    /// The debug log of each iteration (markdown, with its cited signals), in order.
    pub logs: Vec<IterationLog>,
}

/// Per-request records of one bench plan, for the latency CDFs.
#[derive(Debug, Clone, Default)]
pub struct PlanRecords {
    pub plan: String,
    pub baseline: Vec<RequestRecord>,
    pub champion: Vec<RequestRecord>,
}

#[derive(Debug, Clone)]
pub struct IterationLog {
    pub number: u32,
    pub markdown: String,
}

impl ReportData {
    /// Reads a session (by name, or the latest one) with its iterations, the bench records of
    /// its baseline and champion, and renders each iteration's debug log.
    pub fn from_store(store: &Store, session: Option<&str>) -> Result<ReportData, ReportError> {
        let record = store.find_session(session)?;
        let history = store.history(record.id)?;
        let mut data = ReportData {
            session: record.name.clone(),
            objective: record.objective.clone(),
            target: record.target.clone(),
            engine: record.engine.clone(),
            history,
            plans: Vec::new(),
            logs: Vec::new(),
        };
        let baseline = data.baseline().map(|i| i.number);
        let champion = data.champion().map(|i| i.number);
        let mut plan_names: Vec<String> = Vec::new();
        for number in [baseline, champion].into_iter().flatten() {
            for name in store.bench_plans(record.id, number)? {
                if !plan_names.contains(&name) {
                    plan_names.push(name);
                }
            }
        }
        for plan in plan_names {
            let read = |number: Option<u32>| -> Result<Vec<RequestRecord>, ReportError> {
                match number {
                    Some(n) => Ok(store.bench_records(record.id, n, &plan)?),
                    None => Ok(Vec::new()),
                }
            };
            data.plans.push(PlanRecords { baseline: read(baseline)?, champion: read(champion)?, plan });
        }
        let context = format!("Deployer `{}`, engine `{}`.", record.target, record.engine);
        let mut previous: Option<&Iteration> = None;
        for iteration in &data.history.iterations {
            let markdown =
                render_debug_log_for_session(Some(&record.name), iteration, previous, &record.objective, &context);
            data.logs.push(IterationLog { number: iteration.number, markdown });
            previous = Some(iteration);
        }
        Ok(data)
    }

    /// The first iteration that finished cleanly: what the session started from.
    pub fn baseline(&self) -> Option<&Iteration> {
        self.history.iterations.iter().find(|i| i.is_ok())
    }

    /// The best feasible iteration under the session's objective.
    pub fn champion(&self) -> Option<&Iteration> {
        self.history.champion(&self.objective)
    }

    /// Bench plan names, in the order their metrics appear (records first, then summaries).
    pub fn plan_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.plans.iter().map(|p| p.plan.clone()).collect();
        for iteration in &self.history.iterations {
            for name in iteration.bench.keys() {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    }
}
