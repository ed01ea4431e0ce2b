//! A twin served in real time: the stepping core of the virtual-time scheduler, fed one request
//! at a time by the simulator's HTTP server (`autodebug sim serve --twin twin.yaml`), so a loop,
//! a benchmark or a dashboard can run against the fitted model of a real deployment.

use std::collections::{HashSet, VecDeque};

use autodebug_core::{EngineKind, LaunchFlags};

use super::scheduler::{Batch, Request, Scales, Schedule};
use super::{StepCosts, Twin, TwinError};
use crate::engine::{EngineStats, SimRequest, StepKind, StepOutcome, TokenEvent};

/// Prefix hashes kept before the cache starts afresh: the twin does not model KV eviction, and
/// this bounds its memory (~8 bytes a prompt token) on a server that runs for days.
const MAX_CACHED_PREFIXES: usize = 1 << 20;

/// The fitted twin of one configuration, stepped by the server's engine thread.
#[derive(Debug)]
pub struct TwinEngine {
    engine: EngineKind,
    schedule: Schedule,
    costs: StepCosts,
    scales: Scales,
    prompt_scale: f64,
    batch: Batch,
    /// Requests on their per-request path (HTTP, tokenizing) before the scheduler sees them, with
    /// the virtual time they reach it.
    arriving: VecDeque<(f64, Request)>,
    clock_ns: f64,
    /// A hash of every prompt prefix computed so far, one per prompt token.
    prefixes: HashSet<u64>,
    stats: EngineStats,
    unseen: Vec<String>,
}

impl TwinEngine {
    /// The twin launched with `flags` (the engine's own flags, as after `--`); an error names a
    /// flag the scheduler cannot read or a configuration under which nothing runs.
    pub fn start(twin: &Twin, flags: &[String]) -> Result<TwinEngine, TwinError> {
        let flags = LaunchFlags::parse_args(flags).map_err(TwinError::Infeasible)?;
        let schedule = Schedule::from_flags(twin.engine, &flags, &twin.defaults)?;
        let (scales, unseen) = twin.scales(&flags);
        Ok(TwinEngine {
            engine: twin.engine,
            schedule,
            costs: twin.costs,
            scales,
            prompt_scale: twin.prompt_scale(),
            batch: Batch::default(),
            arriving: VecDeque::new(),
            clock_ns: 0.0,
            prefixes: HashSet::new(),
            stats: EngineStats::default(),
            unseen,
        })
    }

    pub fn engine(&self) -> EngineKind {
        self.engine
    }

    /// `flag=value` pairs the twin never saw measured: served at multiplier 1, a guess.
    pub fn unseen(&self) -> &[String] {
        &self.unseen
    }

    /// Engine tokens per client token: the fitted engine counted its prompts in its own tokenizer.
    pub fn prompt_scale(&self) -> f64 {
        self.prompt_scale
    }

    pub fn submit(&mut self, request: SimRequest) {
        let counted = ((request.prompt.len() as f64 * self.prompt_scale).round() as u32).max(1);
        let mut queued = Request::new(request.id, self.clock_ns, counted, request.max_tokens);
        let matched = self.match_prefix(&request.prompt);
        if let Some(block) = self.schedule.prefix_block {
            // The last prompt token is always computed: its logits give the first output token.
            let reusable = ((matched as f64 * self.prompt_scale) as u32).min(counted - 1);
            queued.computed = reusable / block * block;
            queued.cached = queued.computed;
        }
        self.arriving.push_back((self.clock_ns + self.costs.request_ms * 1e6, queued));
        self.refresh_counts();
    }

    pub fn cancel(&mut self, id: u64) {
        if !self.batch.remove(id)
            && let Some(at) = self.arriving.iter().position(|(_, r)| r.id == id)
        {
            self.arriving.remove(at);
        }
        self.refresh_counts();
    }

    pub fn has_work(&self) -> bool {
        !self.batch.is_empty() || !self.arriving.is_empty()
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// One scheduler step: the tokens it produced and how long it took. With nothing schedulable
    /// yet, an idle step lasting until the next request reaches the scheduler.
    pub fn step(&mut self) -> StepOutcome {
        let mut outcome = StepOutcome::default();
        while self.arriving.front().is_some_and(|(due, _)| *due <= self.clock_ns) {
            let (_, request) = self.arriving.pop_front().expect("checked");
            self.batch.waiting.push_back(request);
        }
        if self.batch.is_empty() {
            if let Some((due, _)) = self.arriving.front() {
                outcome.duration_ns = (due - self.clock_ns).max(1.0) as u64;
                self.clock_ns = *due;
            }
            return outcome;
        }
        let work = match self.batch.plan(&self.schedule, &self.costs, self.scales) {
            Ok(work) => work,
            Err(error) => {
                // A prompt no step can hold: the engine refuses it, as a real one would at admission.
                if let Some(refused) = self.batch.waiting.pop_front() {
                    outcome.events.push(TokenEvent {
                        id: refused.id,
                        new_tokens: 0,
                        first: false,
                        finished: true,
                        prompt_tokens: refused.prompt,
                        cached_tokens: 0,
                        output_tokens_so_far: 0,
                    });
                    outcome.log_lines.push(format!("request {} refused: {error}", refused.id));
                }
                self.refresh_counts();
                return outcome;
            }
        };
        outcome.batch_size = self.batch.running.len();
        self.clock_ns += work.step_ns;
        let (events, mut finished) = (&mut outcome.events, Vec::new());
        let stats = &mut self.stats;
        self.batch.end_step(
            self.clock_ns,
            |request, since| {
                if since.is_none() {
                    stats.prompt_tokens += u64::from(request.prompt);
                    stats.cached_prompt_tokens += u64::from(request.cached);
                }
                stats.generation_tokens += 1;
                events.push(TokenEvent {
                    id: request.id,
                    new_tokens: 1,
                    first: since.is_none(),
                    finished: false,
                    prompt_tokens: request.prompt,
                    cached_tokens: request.cached,
                    output_tokens_so_far: request.emitted,
                });
            },
            |done| finished.push(done.id),
        );
        for event in outcome.events.iter_mut().filter(|e| finished.contains(&e.id)) {
            event.finished = true;
        }
        self.stats.requests_finished += finished.len() as u64;
        self.stats.steps += 1;
        self.stats.forward_passes += work.passes;
        self.stats.forward_ns += work.step_ns as u64;
        outcome.duration_ns = work.step_ns as u64;
        outcome.forward_ns = work.step_ns as u64;
        outcome.forward_passes = u32::try_from(work.passes).unwrap_or(u32::MAX);
        outcome.kind = match (work.prefill_tokens, work.decoding) {
            (0, _) => StepKind::Decode,
            (_, 0) => StepKind::Prefill,
            _ => StepKind::Mixed,
        };
        self.refresh_counts();
        outcome
    }

    fn refresh_counts(&mut self) {
        self.stats.running = self.batch.running.len();
        self.stats.queued = self.batch.waiting.len() + self.arriving.len();
    }

    /// How many leading client tokens of `prompt` an earlier prompt already had; remembers this one.
    fn match_prefix(&mut self, prompt: &[u32]) -> usize {
        if self.prefixes.len() > MAX_CACHED_PREFIXES {
            self.prefixes.clear();
        }
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut matched = 0;
        let mut matching = true;
        for (position, token) in prompt.iter().enumerate() {
            hash = (hash ^ u64::from(*token)).wrapping_mul(0x0100_0000_01b3);
            let new = self.prefixes.insert(hash);
            if matching && !new {
                matched = position + 1;
            } else {
                matching = false;
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use autodebug_core::Platform;

    use super::*;
    use crate::simulate::SimWorkload;
    use crate::twin::PlanShape;

    fn twin() -> Twin {
        let cpu = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
        let mut twin = Twin::new(EngineKind::Vllm, "tiny", Twin::defaults_for(EngineKind::Vllm, &cpu));
        twin.costs = StepCosts {
            step_us: 4000.0,
            prefill_token_us: 20.0,
            decode_seq_us: 300.0,
            context_token_ns: 10.0,
            request_ms: 2.0,
        };
        // The fitted engine counted 400 tokens for the bench's 100.
        let shape =
            PlanShape { prompt_tokens: 400, output_tokens: 32, cached_prompt_tokens: 0, sent_prompt_tokens: Some(100) };
        twin.plans.insert("chat".into(), shape);
        twin
    }

    fn flags(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    /// Sends one request and steps until it is done: every event it got, with the virtual time
    /// since it was sent.
    fn serve_one(engine: &mut TwinEngine, id: u64, prompt: Vec<u32>, max_tokens: u32) -> Vec<(f64, TokenEvent)> {
        engine.submit(SimRequest { id, prompt, max_tokens, ignore_eos: true });
        let (mut clock, mut events) = (0.0, Vec::new());
        for _ in 0..10_000 {
            if !engine.has_work() {
                break;
            }
            let outcome = engine.step();
            clock += outcome.duration_ns as f64 / 1e6;
            events.extend(outcome.events.into_iter().filter(|e| e.id == id).map(|e| (clock, e)));
        }
        events
    }

    #[test]
    fn a_served_stream_takes_what_the_twin_predicts_for_it() {
        let twin = twin();
        let mut engine = TwinEngine::start(&twin, &[]).unwrap();
        assert_eq!(engine.prompt_scale(), 4.0);
        let events = serve_one(&mut engine, 1, (0..100).collect(), 32);
        assert_eq!(events.len(), 32);
        assert!(events[0].1.first && events[0].1.prompt_tokens == 400, "{:?}", events[0]);
        assert!(events[31].1.finished && events.iter().filter(|(_, e)| e.finished).count() == 1);
        let predicted = twin
            .predict(&LaunchFlags::parse_args::<&str>(&[]).unwrap(), &SimWorkload::sequential(1, 400, 32))
            .unwrap()
            .metrics;
        // Whole nanoseconds per step against the virtual-time run's exact sums.
        assert!((events[0].0 - predicted["ttft.p50"]).abs() < 1e-3, "{} vs {predicted:?}", events[0].0);
        assert!((events[31].0 - predicted["e2e.mean"]).abs() < 1e-3, "{} vs {predicted:?}", events[31].0);
        assert_eq!(engine.stats().requests_finished, 1);
        assert_eq!(engine.stats().generation_tokens, 32);
    }

    #[test]
    fn a_repeated_prompt_is_served_from_the_prefix_cache_in_whole_blocks() {
        let twin = twin();
        let mut engine = TwinEngine::start(&twin, &[]).unwrap();
        let first = serve_one(&mut engine, 1, (0..100).collect(), 4);
        let again = serve_one(&mut engine, 2, (0..100).collect(), 4);
        assert_eq!(first[0].1.cached_tokens, 0);
        // 399 reusable tokens (the last one is always computed), in 16-token blocks.
        assert_eq!(again[0].1.cached_tokens, 384);
        assert!(again[0].0 < first[0].0, "a cached prompt comes back sooner: {} vs {}", again[0].0, first[0].0);

        let mut uncached = TwinEngine::start(&twin, &flags("--no-enable-prefix-caching")).unwrap();
        serve_one(&mut uncached, 1, (0..100).collect(), 4);
        assert_eq!(serve_one(&mut uncached, 2, (0..100).collect(), 4)[0].1.cached_tokens, 0);
    }

    #[test]
    fn a_prompt_no_step_can_hold_is_refused_and_later_ones_are_served() {
        let twin = twin();
        let mut engine =
            TwinEngine::start(&twin, &flags("--no-enable-chunked-prefill --max-num-batched-tokens 256")).unwrap();
        let refused = serve_one(&mut engine, 1, (0..100).collect(), 8);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].1.finished && refused[0].1.new_tokens == 0, "{refused:?}");
        let served = serve_one(&mut engine, 2, (0..50).collect(), 8);
        assert!(served.last().is_some_and(|(_, e)| e.finished && e.output_tokens_so_far == 8), "{served:?}");
    }

    #[test]
    fn a_cancelled_request_leaves_the_engine_idle() {
        let mut engine = TwinEngine::start(&twin(), &[]).unwrap();
        engine.submit(SimRequest { id: 7, prompt: (0..100).collect(), max_tokens: 50, ignore_eos: true });
        engine.step();
        engine.step();
        engine.cancel(7);
        assert!(!engine.has_work());
        assert_eq!((engine.stats().running, engine.stats().queued), (0, 0));
    }

    #[test]
    fn a_flag_the_scheduler_cannot_read_is_an_error_naming_it() {
        let error = TwinEngine::start(&twin(), &flags("--max-num-seqs many")).unwrap_err();
        assert!(error.to_string().contains("--max-num-seqs many"), "{error}");
    }
}
