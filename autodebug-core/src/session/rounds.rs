//! Parallel rounds: `k` candidates deployed, benchmarked and analyzed side by side, each on its
//! own endpoint and telemetry window, then planned together.
//!
//! Each slot's iteration is written to the store as soon as it finishes (a killed process loses
//! no finished slot); the round's plans are written onto its iterations when the round closes, one
//! candidate of the next round per iteration, and only then go to the trail. An iteration of a
//! round without a plan therefore marks an open round, which [`Session::resume`] completes
//! without redoing its finished slots.

use std::time::Instant;

use futures_util::future::join_all;

use super::{Cursor, Session, SessionEvent, SessionOutcome, StopReason, same_failure_twice};
use crate::{History, Iteration, IterationStatus, Plan, PlanInput, Result, ServiceSpec};

/// The note on a slot's plan when the planner proposed fewer candidates than there were slots.
const NO_CANDIDATE: &str = "no candidate for this slot";

/// Which slot of which round an iteration runs in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) index: usize,
    pub(super) round: u32,
}

impl Slot {
    /// What the deployer gets: a name of its own (clusters refuse two runs of one name) and the
    /// slot's environment (device pinning).
    pub(super) fn spec_for(&self, spec: &ServiceSpec, slot_env: &[Vec<(String, String)>]) -> ServiceSpec {
        let mut deployed = spec.clone();
        deployed.name = format!("{}-s{}", spec.name, self.index + 1);
        if !slot_env.is_empty() {
            for (name, value) in &slot_env[self.index % slot_env.len()] {
                deployed.env.retain(|(n, _)| n != name);
                deployed.env.push((name.clone(), value.clone()));
            }
        }
        deployed
    }
}

/// Where the rounds of a parallel session stand.
#[derive(Debug, Clone, Default)]
pub(super) struct RoundCursor {
    /// The last round started.
    round: u32,
    /// Candidates of the next round.
    batch: Vec<ServiceSpec>,
    /// Whether round `round` is still open (a slot unfinished or the round unplanned).
    reopen: bool,
    /// Slots of the open round that a killed process left running: redone with their own numbers.
    redo: Vec<(u32, ServiceSpec)>,
}

impl RoundCursor {
    pub(super) fn starting(baseline: &ServiceSpec) -> RoundCursor {
        RoundCursor { round: 0, batch: vec![baseline.clone()], reopen: false, redo: Vec::new() }
    }

    /// From a stored session: the open round to complete, or the candidates of the next.
    pub(super) fn resumed(history: &History, redo: Vec<(u32, ServiceSpec)>) -> RoundCursor {
        let last = history.iterations.iter().filter_map(|i| i.round).max().unwrap_or(0);
        let members = || history.iterations.iter().filter(move |i| i.round == Some(last));
        let unplanned = members().any(|i| i.plan.is_none());
        let batch: Vec<ServiceSpec> = members()
            .filter_map(|i| i.plan.as_ref())
            .filter(|p| !p.notes.iter().any(|n| n.starts_with(NO_CANDIDATE)))
            .map(|p| p.next.clone())
            .collect();
        match (unplanned, redo.is_empty()) {
            (true, _) => RoundCursor { round: last, batch, reopen: true, redo },
            (false, false) => RoundCursor { round: last + 1, batch, reopen: true, redo },
            (false, true) => RoundCursor { round: last, batch, reopen: false, redo },
        }
    }
}

impl Session {
    pub(super) async fn drive_rounds(&self, mut cursor: Cursor) -> Result<SessionOutcome> {
        let started = Instant::now();
        let k = self.parallel;
        let objective = cursor.record.objective.clone();
        let last_number = cursor.history.iterations.iter().map(|i| i.number).max().unwrap_or(0);
        let budget_end = last_number.max(cursor.next_number - 1) + self.config.max_iterations;
        let stop_reason = loop {
            if self.stopping() {
                break StopReason::Interrupted;
            }
            if self.config.max_wall.is_some_and(|w| started.elapsed() >= w) {
                break StopReason::WallTime;
            }
            let reopen = std::mem::take(&mut cursor.rounds.reopen);
            let slots: Vec<(u32, ServiceSpec)> = if reopen {
                std::mem::take(&mut cursor.rounds.redo)
            } else {
                if cursor.next_number > budget_end {
                    break StopReason::Iterations;
                }
                if cursor.history.iterations.is_empty() {
                    self.fill_first_round(&mut cursor, k).await;
                }
                cursor.rounds.round += 1;
                let room = (budget_end + 1 - cursor.next_number) as usize;
                let mut batch = std::mem::take(&mut cursor.rounds.batch);
                if batch.is_empty() {
                    batch.push(cursor.next_spec.clone());
                }
                distinct(batch).into_iter().take(k.min(room)).zip(cursor.next_number..).map(|(s, n)| (n, s)).collect()
            };
            let round = cursor.rounds.round;
            let (session_id, history) = (cursor.record.id, &cursor.history);
            let runs = slots.iter().enumerate().map(|(index, (number, spec))| {
                let slot = Slot { index, round };
                async move {
                    let mut iteration =
                        self.run_measured(session_id, *number, spec.clone(), history, Some(slot)).await?;
                    // Written at once, so a killed process keeps this slot; the plan comes with the round.
                    iteration.finished_ns = crate::TimeWindow::now_ns();
                    self.with_store(|s| s.finish_iteration(session_id, &iteration))?;
                    Ok::<Iteration, crate::Error>(iteration)
                }
            });
            let mut finished = Vec::new();
            for result in join_all(runs).await {
                finished.push(result?);
            }
            let before = cursor.history.clone();
            for iteration in &finished {
                cursor.history.iterations.retain(|i| i.number != iteration.number);
                cursor.history.iterations.push(iteration.clone());
            }
            cursor.history.iterations.sort_by_key(|i| i.number);
            let mut members: Vec<Iteration> =
                cursor.history.iterations.iter().filter(|i| i.round == Some(round)).cloned().collect();
            cursor.next_number = cursor.history.iterations.iter().map(|i| i.number).max().unwrap_or(0) + 1;
            let interrupted = members.iter().any(|i| i.status == IterationStatus::Interrupted) || self.stopping();
            let plans = if interrupted { Vec::new() } else { self.plan_round(&members, &cursor.history, k).await };
            for (i, member) in members.iter_mut().enumerate() {
                member.plan = match plans.get(i) {
                    Some(plan) => Some(plan.clone()),
                    None if interrupted => None,
                    None => Some(Plan {
                        planner: self.planner.name().to_string(),
                        changes: Vec::new(),
                        next: member.spec.clone(),
                        exhausted: false,
                        notes: vec![format!("{NO_CANDIDATE}: the planner proposed {} for {k}", plans.len())],
                    }),
                };
                let session_id = cursor.record.id;
                let earlier = History {
                    iterations: before.iterations.iter().filter(|i| i.number < member.number).cloned().collect(),
                };
                self.record(session_id, member, &earlier, &objective)?;
                cursor.history.iterations.retain(|i| i.number != member.number);
                cursor.history.iterations.push(member.clone());
                self.emit(SessionEvent::IterationFinished { iteration: Box::new(member.clone()) });
            }
            cursor.history.iterations.sort_by_key(|i| i.number);
            if interrupted {
                break StopReason::Interrupted;
            }
            cursor.rounds.batch = plans.iter().map(|p| p.next.clone()).collect();
            if let Some(first) = cursor.rounds.batch.first() {
                cursor.next_spec = first.clone();
            }
            // The same failure on two slots is the same failure twice: the cause is not the config.
            if members.len() >= 2 && same_failure_twice(&History { iterations: members.clone() }) {
                break StopReason::SameFailureTwice;
            }
            if !plans.is_empty() && plans.iter().all(|p| p.exhausted) {
                break StopReason::PlannerExhausted;
            }
        };
        self.conclude(cursor, stop_reason).await
    }

    /// Round 1 runs the baseline; the other slots get what the planner proposes with nothing
    /// measured yet (a search planner samples; rules, having no evidence, propose nothing).
    async fn fill_first_round(&self, cursor: &mut Cursor, k: usize) {
        let baseline = cursor.next_spec.clone();
        let space = self.space_for(&baseline);
        let analysis = crate::Analysis::default();
        let input = PlanInput {
            history: &cursor.history,
            analysis: &analysis,
            space: &space,
            current: &baseline,
            objective: &cursor.record.objective,
        };
        let mut batch = vec![baseline.clone()];
        if let Ok(plans) = self.planner.plan_batch(input, k - 1).await {
            for plan in plans {
                let plan = self.checked_plan(Ok(plan), &baseline, &cursor.history, &space, None);
                if !plan.exhausted {
                    batch.push(plan.next);
                }
            }
        }
        cursor.rounds.batch = batch;
    }

    /// The next round's candidates from a finished round: one batch from the planner, each
    /// checked like a serial plan, no two alike.
    async fn plan_round(&self, members: &[Iteration], history: &History, k: usize) -> Vec<Plan> {
        let step = Instant::now();
        let objective = &self.config.objective;
        let champion = history.champion(objective);
        let current =
            champion.or_else(|| history.last_ok()).map(|i| i.spec.clone()).unwrap_or_else(|| members[0].spec.clone());
        let space = self.space_for(&current);
        // The evidence of the best configuration measured, as a serial session plans from its champion.
        let analysis = champion.or_else(|| members.iter().find(|m| m.is_ok())).unwrap_or(&members[0]).analysis.clone();
        let input = PlanInput { history, analysis: &analysis, space: &space, current: &current, objective };
        let previous = history.iterations.iter().rfind(|i| i.number < members[0].number);
        let proposals = match self.planner.plan_batch(input, k).await {
            Ok(plans) => plans.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        let mut plans: Vec<Plan> = Vec::new();
        for proposal in proposals {
            let plan = self.checked_plan(proposal, &current, history, &space, previous);
            if !plans.iter().any(|p| p.next.flags == plan.next.flags) {
                plans.push(plan);
            }
        }
        tracing::debug!(candidates = plans.len(), seconds = step.elapsed().as_secs_f64(), "round planned");
        plans
    }
}

/// `specs` without repeats (same flags), in order.
fn distinct(specs: Vec<ServiceSpec>) -> Vec<ServiceSpec> {
    let mut out: Vec<ServiceSpec> = Vec::new();
    for spec in specs {
        if !out.iter().any(|s| s.flags == spec.flags && s.env == spec.env) {
            out.push(spec);
        }
    }
    out
}
