//! The engine model: a scheduler loop over a KV pool with continuous batching, prefix caching,
//! chunked prefill, speculative decoding and retraction, advanced one round trip at a time.

use std::collections::{HashSet, VecDeque};

use autodebug_core::EngineKind;

use crate::config::{SchedulePolicy, SimConfig, SimError, SpeculativeAlgorithm};
use crate::cost::{CostModel, PassShape};
use crate::memory::MemoryPlan;
use crate::prefix_cache::{PrefixCache, PrefixMatch};
use crate::rng::{SimDraws, SplitMix64, seeded};

/// One generation request as the engine receives it (already tokenized).
#[derive(Debug, Clone, PartialEq)]
pub struct SimRequest {
    pub id: u64,
    pub prompt: Vec<u32>,
    pub max_tokens: u32,
    /// Generate exactly `max_tokens`; otherwise the model may stop earlier (simulated EOS).
    pub ignore_eos: bool,
}

/// Tokens one request received in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEvent {
    pub id: u64,
    pub new_tokens: u32,
    /// These include the request's first token.
    pub first: bool,
    /// The request is done (also sent, with no tokens, for a request the engine refused).
    pub finished: bool,
    pub prompt_tokens: u32,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: u32,
    pub output_tokens_so_far: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepKind {
    /// New prompts only; running decodes wait.
    Prefill,
    Decode,
    /// Prefill chunks and decodes in one forward.
    Mixed,
    #[default]
    Idle,
}

/// What one scheduler round trip did and how long it took (virtual time).
#[derive(Debug, Clone, Default)]
pub struct StepOutcome {
    pub duration_ns: u64,
    /// Scheduler CPU time of the step (part of it hidden under GPU work with overlap scheduling).
    pub cpu_overhead_ns: u64,
    /// GPU time of the step's forward passes.
    pub forward_ns: u64,
    pub kind: StepKind,
    pub batch_size: usize,
    pub forward_passes: u32,
    pub events: Vec<TokenEvent>,
    /// Engine-style log lines this step produced (batch stats, retractions).
    pub log_lines: Vec<String>,
}

impl StepOutcome {
    fn reset(&mut self) {
        self.duration_ns = 0;
        self.cpu_overhead_ns = 0;
        self.forward_ns = 0;
        self.kind = StepKind::Idle;
        self.batch_size = 0;
        self.forward_passes = 0;
        self.events.clear();
        self.log_lines.clear();
    }
}

/// Running totals, as an engine's metrics endpoint would report them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub prompt_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub generation_tokens: u64,
    pub requests_finished: u64,
    pub running: usize,
    pub queued: usize,
    /// KV pool in use by requests, 0..1 (evictable cache excluded, as SGLang reports it).
    pub token_usage: f64,
    pub retractions: u64,
    pub steps: u64,
    pub forward_passes: u64,
    pub scheduler_cpu_ns: u64,
    pub forward_ns: u64,
    pub max_total_tokens: u64,
    pub spec_accept_tokens: u64,
    pub spec_draft_tokens: u64,
}

/// Idle steps stand for the scheduler's poll interval, so a loop that steps while idle does not spin.
const IDLE_STEP_NS: u64 = 1_000_000;
/// SGLang's `decode_log_interval`.
const DECODE_LOG_INTERVAL: u32 = 40;
/// vLLM logs its stats every 10 s.
const VLLM_LOG_INTERVAL_NS: u64 = 10_000_000_000;
/// SGLang stops sorting by prefix match beyond this queue length.
const LPM_QUEUE_LIMIT: usize = 128;
/// SGLang's in-batch prefix caching thresholds.
const IN_BATCH_PREFIX_THRESHOLD: u32 = 32;
/// SGLang clips the output it reserves memory for.
const CLIP_MAX_NEW_TOKENS: u32 = 4096;
/// Mean output length of a request that may stop at EOS.
const MEAN_NATURAL_OUTPUT: f64 = 256.0;
/// Share of n-gram draft tokens accepted (accepted / drafted, as engines report it) on ordinary
/// prose, and when the output repeats a text verbatim: 11.2% and 98.3%, measured on one server and
/// model differing only in how predictable the continuation is (kekzl/imp PR #1460, "acceptance
/// is the lever, not the verify price"). In between, the rate is interpolated linearly in the
/// predictable share of the output: an assumption. For scale only, as its predictable share was
/// not reported: vLLM's `ngram` accepted 3562 of 4960 drafts (72%) on a code-editing set
/// (vllm-project/vllm PR #24344).
const NGRAM_FRESH_ACCEPTANCE: f64 = 0.112;
const NGRAM_COPY_ACCEPTANCE: f64 = 0.983;
/// Draft-model algorithms (EAGLE, standalone) predict fresh text too. An assumption carried over
/// from earlier builds, checked against no measurement.
const DRAFT_MODEL_ACCEPTANCE: f64 = 0.7;
/// SGLang's n-gram drafter keeps a trie of prompt and output tokens across requests, with
/// evictions, up to `--speculative-ngram-capacity` tokens (default 10,000,000, SGLang
/// `server_args.py`; the trie's design in sgl-project/sglang PR #2790).
const SGLANG_NGRAM_CAPACITY_TOKENS: u64 = 10_000_000;

#[derive(Debug)]
struct Request {
    id: u64,
    arrival: u64,
    prompt: Vec<u32>,
    target_output: u32,
    output: u32,
    /// Tokens that must be in the KV pool before decoding (prompt, plus output after a retraction).
    prefill_len: u32,
    computed: u32,
    cached: u32,
    admitted_once: bool,
    node: Option<u32>,
    private: u32,
    chunk: u32,
    accept_p: f64,
    step_tokens: u32,
    first_in_step: bool,
    lookup: PrefixMatch,
    /// Identifies the answer: the simulated model decodes greedily, so one prompt always gets
    /// one output (the server writes the same text for it).
    prompt_hash: u64,
}

impl Request {
    fn prompt_len(&self) -> u32 {
        self.prompt.len() as u32
    }

    fn remaining(&self) -> u32 {
        self.target_output - self.output
    }
}

/// The simulated engine. Drive it with [`Engine::submit`] and [`Engine::step`]; each step is one
/// scheduler round trip whose duration the caller either adds to a virtual clock or sleeps.
#[derive(Debug)]
pub struct Engine {
    config: SimConfig,
    cost: CostModel,
    memory: MemoryPlan,
    rng: SplitMix64,
    stats: EngineStats,
    capacity: u64,
    max_running: usize,
    waiting: VecDeque<Request>,
    running: Vec<Request>,
    prefilling: Vec<Request>,
    chunked: Option<Request>,
    cache: PrefixCache,
    private_tokens: u64,
    new_token_ratio: f64,
    min_token_ratio: f64,
    token_ratio_decay: f64,
    rejected: Vec<(u64, u32)>,
    arrivals: u64,
    now_ns: u64,
    logs_enabled: bool,
    decode_passes_since_log: u32,
    generated_since_log: u64,
    prompt_since_log: u64,
    hits_since_log: u64,
    last_log_ns: u64,
    /// Share of each answer that repeats text earlier in its own prompt or answer (see
    /// [`Engine::set_output_predictability`]).
    output_predictability: f64,
    /// Answers SGLang's n-gram trie has seen, oldest first, with their lengths.
    answered: VecDeque<(u64, u32)>,
    answered_set: HashSet<u64>,
    answered_tokens: u64,
}

impl Engine {
    /// Allocates the simulated GPU memory; fails with [`SimError::StartupOom`] when weights + KV
    /// pool + graphs do not fit (e.g. `--mem-fraction-static 0.98`, or a 70B model on one L4).
    ///
    /// ```
    /// use autodebug_sim::{Engine, EngineKind, SimConfig, SimRequest};
    /// let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &[]).unwrap();
    /// let mut engine = Engine::start(config, 7).unwrap();
    /// engine.submit(SimRequest { id: 1, prompt: vec![5; 31], max_tokens: 4, ignore_eos: true });
    /// let mut tokens = 0;
    /// for _ in 0..100 {
    ///     if !engine.has_work() { break; }
    ///     tokens += engine.step().events.iter().map(|e| e.new_tokens).sum::<u32>();
    /// }
    /// assert_eq!(tokens, 4);
    /// ```
    pub fn start(config: SimConfig, seed: u64) -> Result<Engine, SimError> {
        let memory = MemoryPlan::new(&config)?;
        let cost = CostModel::new(&config);
        let (init_ratio, min_ratio) = match config.engine {
            EngineKind::Vllm => (0.0, 0.0),
            _ => {
                let c = config.schedule_conservativeness;
                ((0.7 * c).min(1.0), (0.14 * c).min(1.0))
            }
        };
        let stats = EngineStats { max_total_tokens: memory.max_total_tokens, ..EngineStats::default() };
        Ok(Engine {
            capacity: memory.max_total_tokens,
            max_running: memory.max_running_requests.max(1),
            cost,
            rng: seeded(seed),
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            prefilling: Vec::new(),
            chunked: None,
            cache: PrefixCache::default(),
            private_tokens: 0,
            new_token_ratio: init_ratio,
            min_token_ratio: min_ratio,
            token_ratio_decay: (init_ratio - min_ratio) / 600.0,
            rejected: Vec::new(),
            arrivals: 0,
            now_ns: 0,
            logs_enabled: true,
            decode_passes_since_log: 0,
            generated_since_log: 0,
            prompt_since_log: 0,
            hits_since_log: 0,
            last_log_ns: 0,
            output_predictability: 0.0,
            answered: VecDeque::new(),
            answered_set: HashSet::new(),
            answered_tokens: 0,
            memory,
            config,
        })
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Engine-style startup lines (weights, KV pool, CUDA graphs, derived limits).
    pub fn startup_log(&self) -> Vec<String> {
        self.memory.startup_log(&self.config)
    }

    /// Turns per-step log lines off (virtual-time runs that nobody reads).
    pub fn set_logging(&mut self, enabled: bool) {
        self.logs_enabled = enabled;
    }

    /// The share (0..1) of each answer that an n-gram lookup over its own prompt and the answer so
    /// far would predict: what a client measures as `output_ngram_predictability`. It sets how
    /// many n-gram drafts are accepted. 0 (the default) is fresh text, which is what the
    /// simulator's server writes; quoting, code editing and templated answers are higher.
    pub fn set_output_predictability(&mut self, share: f64) {
        self.output_predictability = if share.is_finite() { share.clamp(0.0, 1.0) } else { 0.0 };
    }

    /// Tokens the KV pool holds.
    pub fn max_total_tokens(&self) -> u64 {
        self.capacity
    }

    /// Concurrency cap after defaults (SGLang derives it from the pool).
    pub fn max_running_requests(&self) -> usize {
        self.max_running
    }

    /// Checks a request the way the engine's front end does, with the engine's wording.
    pub fn check_request(&self, prompt_tokens: u32, max_tokens: u32) -> Result<(), SimError> {
        let context = self.config.context_length;
        if prompt_tokens == 0 {
            return Err(SimError::InvalidRequest { message: "The prompt is empty; send at least one token.".into() });
        }
        match self.config.engine {
            EngineKind::Vllm if prompt_tokens as u64 + max_tokens as u64 > context as u64 => {
                Err(SimError::InvalidRequest {
                    message: format!(
                        "This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.",
                        prompt_tokens as u64 + max_tokens as u64
                    ),
                })
            }
            _ if prompt_tokens >= context => Err(SimError::InvalidRequest {
                message: format!(
                    "The input ({prompt_tokens} tokens) is longer than the model's context length ({context} tokens)."
                ),
            }),
            _ if prompt_tokens as u64 + 1 > self.capacity => Err(SimError::InvalidRequest {
                message: format!(
                    "The input ({prompt_tokens} tokens) does not fit in the KV cache ({} tokens); raise the memory fraction or shorten the prompt.",
                    self.capacity
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Queues a request; one the engine refuses finishes with no tokens at the next step
    /// (use [`Engine::try_submit`] to get the reason).
    pub fn submit(&mut self, request: SimRequest) {
        let id = request.id;
        let prompt_len = request.prompt.len() as u32;
        if self.try_submit(request).is_err() {
            self.rejected.push((id, prompt_len));
        }
    }

    /// Queues a request, or says why the engine refuses it.
    pub fn try_submit(&mut self, request: SimRequest) -> Result<(), SimError> {
        let prompt_len = request.prompt.len() as u32;
        self.check_request(prompt_len, request.max_tokens)?;
        let room = self.config.context_length.saturating_sub(prompt_len).max(1);
        let mut target = request.max_tokens.clamp(1, room);
        if !request.ignore_eos {
            let natural = 1 + self.rng.exponential(MEAN_NATURAL_OUTPUT) as u32;
            target = target.min(natural);
        }
        self.arrivals += 1;
        self.waiting.push_back(Request {
            id: request.id,
            arrival: self.arrivals,
            target_output: target,
            output: 0,
            prefill_len: prompt_len,
            computed: 0,
            cached: 0,
            admitted_once: false,
            node: None,
            private: 0,
            chunk: 0,
            accept_p: 0.0,
            step_tokens: 0,
            first_in_step: false,
            lookup: PrefixMatch::default(),
            prompt_hash: prompt_hash(&request.prompt),
            prompt: request.prompt,
        });
        self.refresh_counts();
        Ok(())
    }

    /// Drops a request wherever it is and frees its memory; it produces no further events.
    pub fn cancel(&mut self, id: u64) {
        if let Some(pos) = self.waiting.iter().position(|r| r.id == id) {
            if let Some(request) = self.waiting.remove(pos) {
                self.release(request);
            }
        } else if let Some(pos) = self.running.iter().position(|r| r.id == id) {
            let request = self.running.swap_remove(pos);
            self.release(request);
        } else if self.chunked.as_ref().is_some_and(|r| r.id == id)
            && let Some(request) = self.chunked.take()
        {
            self.release(request);
        }
        self.rejected.retain(|(rejected, _)| *rejected != id);
        self.refresh_counts();
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty() || self.chunked.is_some() || !self.rejected.is_empty()
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Runs one scheduler iteration (one round trip: with `--num-continuous-decode-steps K` it
    /// may run K forward passes) and returns its simulated duration and the tokens produced.
    /// Pure computation: never sleeps.
    pub fn step(&mut self) -> StepOutcome {
        let mut outcome = StepOutcome::default();
        self.step_into(&mut outcome);
        outcome
    }

    /// [`Engine::step`] into a reused outcome, so a hot loop allocates nothing per step.
    pub fn step_into(&mut self, out: &mut StepOutcome) {
        out.reset();
        for (id, prompt_tokens) in self.rejected.drain(..) {
            out.events.push(TokenEvent {
                id,
                new_tokens: 0,
                first: false,
                finished: true,
                prompt_tokens,
                cached_tokens: 0,
                output_tokens_so_far: 0,
            });
        }
        if self.waiting.is_empty() && self.running.is_empty() && self.chunked.is_none() {
            out.duration_ns = if out.events.is_empty() { IDLE_STEP_NS } else { 0 };
            self.now_ns += out.duration_ns;
            return;
        }
        let mut cpu = self.cost.round_trip_cpu_ns();
        let mut gpu = 0.0;
        let mixed = self.config.mixed_chunk;
        if mixed && !self.running.is_empty() {
            self.ensure_decode_memory(1, out);
        }
        self.schedule_prefill(if mixed { self.running.len() as u32 } else { 0 });
        if !self.prefilling.is_empty() {
            let decoding = if mixed { self.running.len() } else { 0 };
            let (c, g) = self.run_prefill(decoding, out);
            cpu += c;
            gpu += g;
            out.kind = if decoding > 0 { StepKind::Mixed } else { StepKind::Prefill };
            out.forward_passes = 1;
        } else if !self.running.is_empty() {
            let passes = self.config.continuous_decode_steps.max(1);
            for _ in 0..passes {
                if self.running.is_empty() {
                    break;
                }
                let (c, g) = self.decode_pass(out);
                cpu += c;
                gpu += g;
                out.forward_passes += 1;
            }
            out.kind = StepKind::Decode;
        } else {
            // Nothing fits and nothing runs: refuse the head of the queue rather than stall forever.
            if let Some(request) = self.waiting.pop_front() {
                out.events.push(TokenEvent {
                    id: request.id,
                    new_tokens: 0,
                    first: false,
                    finished: true,
                    prompt_tokens: request.prompt_len(),
                    cached_tokens: 0,
                    output_tokens_so_far: request.output,
                });
                self.release(request);
            }
        }
        self.flush_events(out);
        let noise = self.config.noise;
        let cpu = cpu * self.rng.noise_factor(noise);
        let gpu = gpu * self.rng.noise_factor(noise);
        out.cpu_overhead_ns = cpu as u64;
        out.forward_ns = gpu as u64;
        out.duration_ns = self.cost.wall_ns(cpu, gpu) as u64;
        self.now_ns += out.duration_ns;
        self.stats.steps += 1;
        self.stats.forward_passes += out.forward_passes as u64;
        self.stats.scheduler_cpu_ns += out.cpu_overhead_ns;
        self.stats.forward_ns += out.forward_ns;
        self.refresh_counts();
        if self.logs_enabled {
            self.periodic_log(out);
        }
    }

    fn used_tokens(&self) -> u64 {
        self.private_tokens + if self.config.radix_cache { self.cache.tokens() } else { 0 }
    }

    fn evictable_tokens(&self) -> u64 {
        if self.config.radix_cache { self.cache.evictable_tokens() } else { 0 }
    }

    fn free_tokens(&self) -> u64 {
        self.capacity.saturating_sub(self.used_tokens())
    }

    /// Makes `needed` tokens free, evicting cached prefixes first.
    fn reserve(&mut self, needed: u64) -> bool {
        let free = self.free_tokens();
        if free >= needed {
            return true;
        }
        if self.config.radix_cache {
            self.cache.evict(needed - free);
        }
        self.free_tokens() >= needed
    }

    fn refresh_counts(&mut self) {
        self.stats.running = self.running.len() + self.chunked.is_some() as usize;
        self.stats.queued = self.waiting.len();
        let in_use = self.used_tokens().saturating_sub(self.evictable_tokens());
        self.stats.token_usage = if self.capacity == 0 { 0.0 } else { (in_use as f64 / self.capacity as f64).min(1.0) };
    }

    fn order_waiting(&mut self) {
        let policy = match self.config.schedule_policy {
            SchedulePolicy::Lpm | SchedulePolicy::DfsWeight if self.waiting.len() > LPM_QUEUE_LIMIT => {
                SchedulePolicy::Fcfs
            }
            other => other,
        };
        let queue = self.waiting.make_contiguous();
        match policy {
            SchedulePolicy::Fcfs | SchedulePolicy::Priority => {}
            SchedulePolicy::Lpm | SchedulePolicy::DfsWeight => {
                for request in queue.iter_mut() {
                    request.lookup = self.cache.lookup(&request.prompt);
                }
                queue.sort_unstable_by_key(|r| (std::cmp::Reverse(r.lookup.len), r.arrival));
            }
            SchedulePolicy::Lof => queue.sort_unstable_by_key(|r| (std::cmp::Reverse(r.target_output), r.arrival)),
            SchedulePolicy::Random => {
                for i in (1..queue.len()).rev() {
                    let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
                    queue.swap(i, j);
                }
            }
        }
    }

    /// Picks this step's prefill work into `self.prefilling` (SGLang's PrefillAdder, condensed).
    fn schedule_prefill(&mut self, decode_tokens: u32) {
        let mut budget = match self.config.chunked_prefill_size {
            Some(chunk) => chunk.min(self.config.max_prefill_tokens),
            None => self.config.max_prefill_tokens,
        }
        .saturating_sub(if self.config.engine == EngineKind::Vllm { decode_tokens } else { 0 });
        let chunking = self.config.chunked_prefill_size.is_some();
        let reserved: f64 =
            self.running.iter().map(|r| r.remaining().min(CLIP_MAX_NEW_TOKENS) as f64 * self.new_token_ratio).sum();
        let mut available = (self.free_tokens() + self.evictable_tokens()) as f64 - reserved;

        if let Some(mut request) = self.chunked.take() {
            let chunk = (request.prefill_len - request.computed).min(budget.max(1));
            if self.reserve(chunk as u64) {
                request.chunk = chunk;
                request.private += chunk;
                self.private_tokens += chunk as u64;
                budget = budget.saturating_sub(chunk);
                available -= chunk as f64;
                self.prefilling.push(request);
            } else {
                self.chunked = Some(request);
            }
            if self.chunked.is_some() || request_incomplete(self.prefilling.last()) {
                return;
            }
        }
        if self.waiting.is_empty() || budget == 0 {
            return;
        }
        self.order_waiting();
        let lpm = matches!(self.config.schedule_policy, SchedulePolicy::Lpm | SchedulePolicy::DfsWeight)
            && self.waiting.len() <= LPM_QUEUE_LIMIT;
        let mut index = 0;
        while index < self.waiting.len() {
            let busy = self.running.len() + self.prefilling.len() + self.chunked.is_some() as usize;
            if busy >= self.max_running || budget == 0 {
                break;
            }
            let candidate = &self.waiting[index];
            // Afresh: admissions earlier in this loop may have evicted what ordering saw.
            let found = self.cache.lookup(&candidate.prompt);
            let cached = if self.config.radix_cache { found.len.min(candidate.prompt_len() - 1) } else { 0 };
            let extend = candidate.prefill_len - cached;
            if lpm && cached < IN_BATCH_PREFIX_THRESHOLD && self.shares_prefix_with_batch(&candidate.prompt) {
                index += 1;
                continue;
            }
            let need = extend as f64 + candidate.remaining().min(CLIP_MAX_NEW_TOKENS) as f64 * self.new_token_ratio;
            let nothing_running = self.running.is_empty() && self.prefilling.is_empty();
            if need > available && !(nothing_running && (extend as u64) < self.capacity) {
                break;
            }
            let chunk = if extend <= budget {
                extend
            } else if chunking {
                budget
            } else if self.prefilling.is_empty() {
                extend
            } else {
                break;
            };
            // Pin the matched prefix first, so making room cannot evict it.
            let pinned = found.node.filter(|_| self.config.radix_cache && cached > 0);
            if let Some(node) = pinned {
                self.cache.lock(node);
            }
            if !self.reserve(chunk as u64) {
                if let Some(node) = pinned {
                    self.cache.unlock(node);
                }
                break;
            }
            let Some(mut request) = self.waiting.remove(index) else {
                break;
            };
            if !request.admitted_once {
                request.admitted_once = true;
                request.cached = cached;
                request.accept_p = self.acceptance(request.prompt_hash);
                self.stats.prompt_tokens += request.prompt_len() as u64;
                self.stats.cached_prompt_tokens += cached as u64;
                self.prompt_since_log += request.prompt_len() as u64;
                self.hits_since_log += cached as u64;
            }
            request.node = pinned;
            request.lookup =
                if pinned.is_some() { PrefixMatch { len: cached, node: pinned } } else { PrefixMatch::default() };
            request.computed = cached;
            request.chunk = chunk;
            request.private += chunk;
            self.private_tokens += chunk as u64;
            budget -= chunk;
            available -= need;
            let partial = chunk < extend;
            self.prefilling.push(request);
            if partial {
                break;
            }
        }
    }

    fn shares_prefix_with_batch(&self, prompt: &[u32]) -> bool {
        let threshold = IN_BATCH_PREFIX_THRESHOLD as usize;
        prompt.len() > threshold
            && self
                .prefilling
                .iter()
                .take(16)
                .any(|other| other.prompt.len() > threshold && other.prompt[..threshold] == prompt[..threshold])
    }

    /// Per-draft-token acceptance, from how predictable this request's output is. N-gram drafts
    /// copy what followed the last few tokens elsewhere: vLLM's `ngram` looks in the request's own
    /// prompt and answer so far, SGLang's `NGRAM` also in the answers it has generated before. A
    /// prompt prefix seen before predicts nothing about the answer, so prefix-cache hits play no
    /// part.
    fn acceptance(&self, prompt_hash: u64) -> f64 {
        let Some(spec) = &self.config.speculative else {
            return 0.0;
        };
        if spec.algorithm != SpeculativeAlgorithm::Ngram {
            return DRAFT_MODEL_ACCEPTANCE;
        }
        let repeats_an_answer = self.config.engine != EngineKind::Vllm && self.answered_set.contains(&prompt_hash);
        let predictable = if repeats_an_answer { 1.0 } else { self.output_predictability };
        let rate = NGRAM_FRESH_ACCEPTANCE + (NGRAM_COPY_ACCEPTANCE - NGRAM_FRESH_ACCEPTANCE) * predictable;
        chain_probability(rate, spec.num_steps)
    }

    /// Adds a finished answer to SGLang's n-gram trie, evicting the oldest beyond its capacity.
    /// SGLang inserts tokens as they are generated; here a request that repeats an answer still
    /// being written drafts as if it were fresh, a simplification that can only understate.
    fn remember_answer(&mut self, prompt_hash: u64, output_tokens: u32) {
        let ngram = self.config.speculative.as_ref().is_some_and(|s| s.algorithm == SpeculativeAlgorithm::Ngram);
        if !ngram || self.config.engine == EngineKind::Vllm || !self.answered_set.insert(prompt_hash) {
            return;
        }
        self.answered.push_back((prompt_hash, output_tokens));
        self.answered_tokens += output_tokens as u64;
        while self.answered_tokens > SGLANG_NGRAM_CAPACITY_TOKENS {
            let Some((old, tokens)) = self.answered.pop_front() else { break };
            self.answered_set.remove(&old);
            self.answered_tokens -= tokens as u64;
        }
    }

    /// One forward over this step's prefill chunks (plus every running decode when mixed).
    fn run_prefill(&mut self, decoding: usize, out: &mut StepOutcome) -> (f64, f64) {
        let mut shape = PassShape::default();
        let mut new_tokens = 0u64;
        for request in &self.prefilling {
            shape.tokens += request.chunk as u64;
            shape.context_tokens += request.computed as u64;
            shape.attention_pairs += request.chunk as f64 * (request.computed as f64 + request.chunk as f64 / 2.0);
            new_tokens += request.chunk as u64;
        }
        let prefill_requests = self.prefilling.len();
        if decoding > 0 {
            for request in &self.running {
                shape.tokens += 1;
                shape.context_tokens += request.computed as u64;
            }
        }
        let cost = self.cost.pass(shape);
        let cpu = self.cost.prefill_cpu_ns(prefill_requests, new_tokens)
            + self.cost.pass_cpu_ns(prefill_requests + decoding)
            + cost.launch_cpu_ns;
        out.batch_size = prefill_requests + decoding;
        if self.logs_enabled && self.config.engine != EngineKind::Vllm {
            let cached: u64 = self.prefilling.iter().map(|r| r.computed as u64).sum();
            out.log_lines.push(format!(
                "Prefill batch. #new-seq: {prefill_requests}, #new-token: {new_tokens}, #cached-token: {cached}, token usage: {:.2}, #running-req: {}, #queue-req: {}",
                self.stats.token_usage,
                self.running.len(),
                self.waiting.len()
            ));
        }
        if decoding > 0 {
            for index in (0..self.running.len()).rev() {
                self.advance(index, 1, out);
            }
        }
        let mut batch = std::mem::take(&mut self.prefilling);
        for mut request in batch.drain(..) {
            request.computed += request.chunk;
            request.chunk = 0;
            if request.computed < request.prefill_len {
                self.chunked = Some(request);
                continue;
            }
            self.cache_prompt(&mut request);
            request.first_in_step = request.output == 0;
            self.running.push(request);
            let last = self.running.len() - 1;
            self.advance(last, 1, out);
        }
        self.prefilling = batch;
        (cpu, cost.gpu_ns)
    }

    /// Hands the prompt's KV to the prefix cache once it is computed (SGLang caches unfinished
    /// requests at this point, so followers hit it while this one still decodes).
    fn cache_prompt(&mut self, request: &mut Request) {
        // Without a radix cache nothing is ever reused (SGLang then orders lpm like fcfs, too).
        if !self.config.radix_cache {
            return;
        }
        // Looked up afresh: the admission-time match stops one token short of the prompt.
        let found = self.cache.lookup(&request.prompt);
        let (node, _added) = self.cache.insert(&request.prompt, found);
        self.cache.lock(node);
        if let Some(old) = request.node.replace(node) {
            self.cache.unlock(old);
        }
        let moved = request.prompt_len().saturating_sub(request.lookup.len).min(request.private);
        request.private -= moved;
        self.private_tokens -= moved as u64;
    }

    fn decode_pass(&mut self, out: &mut StepOutcome) -> (f64, f64) {
        let spec = self.config.speculative.clone();
        let per_request = 1 + spec.as_ref().map_or(0, |s| s.draft_tokens);
        self.ensure_decode_memory(per_request, out);
        let batch = self.running.len();
        if batch == 0 {
            return (0.0, 0.0);
        }
        let context: u64 = self.running.iter().map(|r| r.computed as u64).sum();
        let shape = PassShape {
            tokens: (batch as u64) * per_request as u64,
            context_tokens: context,
            attention_pairs: 0.0,
            cuda_graph: self.config.cuda_graph && batch as u32 <= self.config.cuda_graph_max_bs,
        };
        let cost = self.cost.pass(shape);
        let mut cpu = self.cost.pass_cpu_ns(batch) + cost.launch_cpu_ns;
        let mut gpu = cost.gpu_ns;
        if let Some(spec) = &spec {
            cpu += self.cost.speculative_cpu_ns(batch);
            if spec.algorithm != SpeculativeAlgorithm::Ngram {
                // A draft model runs `num_steps` small forwards; call each a tenth of the target's.
                gpu += cost.gpu_ns * 0.1 * spec.num_steps as f64;
            }
        }
        out.batch_size = out.batch_size.max(batch);
        for index in (0..self.running.len()).rev() {
            let mut tokens = 1;
            if let Some(spec) = &spec {
                let p = self.running[index].accept_p;
                let mut accepted = 0;
                while accepted < spec.num_steps && self.rng.next_f64() < p {
                    accepted += 1;
                }
                self.stats.spec_draft_tokens += spec.num_steps as u64;
                self.stats.spec_accept_tokens += accepted as u64;
                tokens += accepted;
            }
            self.advance(index, tokens, out);
        }
        self.new_token_ratio = (self.new_token_ratio - self.token_ratio_decay).max(self.min_token_ratio);
        self.decode_passes_since_log += 1;
        (cpu, gpu)
    }

    /// Gives `running[index]` up to `tokens` new tokens; finishes and removes it when done.
    fn advance(&mut self, index: usize, tokens: u32, out: &mut StepOutcome) {
        let request = &mut self.running[index];
        let tokens = tokens.min(request.remaining());
        request.output += tokens;
        request.computed += tokens;
        request.private += tokens;
        request.step_tokens += tokens;
        self.private_tokens += tokens as u64;
        self.stats.generation_tokens += tokens as u64;
        self.generated_since_log += tokens as u64;
        if request.remaining() == 0 {
            let mut request = self.running.swap_remove(index);
            out.events.push(event(&request, true));
            request.step_tokens = 0;
            self.stats.requests_finished += 1;
            self.remember_answer(request.prompt_hash, request.output);
            self.release(request);
        }
    }

    fn flush_events(&mut self, out: &mut StepOutcome) {
        for request in self.running.iter_mut() {
            if request.step_tokens > 0 {
                out.events.push(event(request, false));
                request.step_tokens = 0;
                request.first_in_step = false;
            }
        }
    }

    fn release(&mut self, request: Request) {
        self.private_tokens -= request.private as u64;
        if let Some(node) = request.node {
            self.cache.unlock(node);
        }
    }

    /// Frees room for one decode pass: evict cached prefixes, then retract requests.
    fn ensure_decode_memory(&mut self, per_request: u32, out: &mut StepOutcome) {
        loop {
            let needed = self.running.len() as u64 * per_request as u64;
            if self.reserve(needed) || self.running.is_empty() {
                return;
            }
            if self.running.len() == 1 {
                // A lone request that cannot grow: it ends here, truncated, as an engine would.
                let mut request = self.running.swap_remove(0);
                request.target_output = request.output;
                out.events.push(event(&request, true));
                self.stats.requests_finished += 1;
                if self.logs_enabled {
                    out.log_lines.push(format!(
                        "KV cache pool is full; request {} stops at {} output tokens.",
                        request.id, request.output
                    ));
                }
                self.release(request);
                return;
            }
            let victim = match self.config.engine {
                EngineKind::Vllm => (0..self.running.len()).max_by_key(|&i| self.running[i].arrival),
                _ => (0..self.running.len())
                    .min_by_key(|&i| (self.running[i].output, std::cmp::Reverse(self.running[i].prompt_len()))),
            };
            let Some(victim) = victim else { return };
            let mut request = self.running.swap_remove(victim);
            if request.step_tokens > 0 {
                out.events.push(event(&request, false));
            }
            self.private_tokens -= request.private as u64;
            if let Some(node) = request.node.take() {
                self.cache.unlock(node);
            }
            request.private = 0;
            request.computed = 0;
            request.step_tokens = 0;
            request.first_in_step = false;
            request.prefill_len = request.prompt_len() + request.output;
            request.lookup = PrefixMatch::default();
            self.waiting.push_front(request);
            self.stats.retractions += 1;
            let old_ratio = self.new_token_ratio;
            if self.config.engine != EngineKind::Vllm {
                let decoded: f64 = self.running.iter().map(|r| r.output as f64).sum();
                let total: f64 = self.running.iter().map(|r| r.target_output.min(CLIP_MAX_NEW_TOKENS) as f64).sum();
                let estimate = (decoded + 20.0 * self.running.len() as f64) / total.max(1.0);
                self.new_token_ratio = estimate.clamp(old_ratio, 1.0);
            }
            if self.logs_enabled {
                out.log_lines.push(match self.config.engine {
                    EngineKind::Vllm => format!(
                        "Sequence group {} is preempted by PreemptionMode.RECOMPUTE mode because there is not enough KV cache space. This can affect the end-to-end performance. Increase gpu_memory_utilization or tensor_parallel_size to provide more KV cache memory.",
                        self.waiting[0].id
                    ),
                    _ => format!(
                        "KV cache pool is full. Retract requests. #retracted_reqs: 1, #new_token_ratio: {old_ratio:.4} -> {:.4}",
                        self.new_token_ratio
                    ),
                });
            }
        }
    }

    fn periodic_log(&mut self, out: &mut StepOutcome) {
        match self.config.engine {
            EngineKind::Vllm => {
                let elapsed = self.now_ns - self.last_log_ns;
                if elapsed < VLLM_LOG_INTERVAL_NS {
                    return;
                }
                let seconds = elapsed as f64 / 1e9;
                out.log_lines.push(format!(
                    "Avg prompt throughput: {:.1} tokens/s, Avg generation throughput: {:.1} tokens/s, Running: {} reqs, Waiting: {} reqs, GPU KV cache usage: {:.1}%, Prefix cache hit rate: {:.1}%",
                    self.prompt_since_log as f64 / seconds,
                    self.generated_since_log as f64 / seconds,
                    self.stats.running,
                    self.stats.queued,
                    self.stats.token_usage * 100.0,
                    self.hits_since_log as f64 / self.prompt_since_log.max(1) as f64 * 100.0
                ));
            }
            _ => {
                if self.decode_passes_since_log < DECODE_LOG_INTERVAL {
                    return;
                }
                let seconds = (self.now_ns - self.last_log_ns) as f64 / 1e9;
                let tokens: u64 = self.running.iter().map(|r| r.computed as u64).sum();
                out.log_lines.push(format!(
                    "Decode batch. #running-req: {}, #token: {tokens}, token usage: {:.2}, cuda graph: {}, gen throughput (token/s): {:.2}, #queue-req: {}",
                    self.stats.running,
                    self.stats.token_usage,
                    if self.config.cuda_graph && self.running.len() as u32 <= self.config.cuda_graph_max_bs { "True" } else { "False" },
                    self.generated_since_log as f64 / seconds.max(1e-9),
                    self.stats.queued
                ));
            }
        }
        self.last_log_ns = self.now_ns;
        self.decode_passes_since_log = 0;
        self.generated_since_log = 0;
        self.prompt_since_log = 0;
        self.hits_since_log = 0;
    }
}

/// The per-position acceptance `p` whose chain of `drafts` (verification stops at the first
/// rejection) accepts `rate` of the drafted tokens on average: (p + p² + … + pᵏ) / k = rate.
fn chain_probability(rate: f64, drafts: u32) -> f64 {
    let k = drafts.max(1);
    let rate_of = |p: f64| (1..=k).map(|i| p.powi(i as i32)).sum::<f64>() / k as f64;
    let (mut low, mut high) = (0.0f64, 1.0f64);
    for _ in 0..40 {
        let mid = (low + high) / 2.0;
        if rate_of(mid) < rate { low = mid } else { high = mid }
    }
    (low + high) / 2.0
}

/// FNV-1a over the prompt's tokens: the key of the (deterministic) answer to that prompt.
pub(crate) fn prompt_hash(prompt: &[u32]) -> u64 {
    prompt.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, t| (h ^ u64::from(*t)).wrapping_mul(0x0100_0000_01b3))
}

fn request_incomplete(request: Option<&Request>) -> bool {
    request.is_some_and(|r| r.computed + r.chunk < r.prefill_len)
}

fn event(request: &Request, finished: bool) -> TokenEvent {
    TokenEvent {
        id: request.id,
        new_tokens: request.step_tokens,
        first: request.first_in_step,
        finished,
        prompt_tokens: request.prompt_len(),
        cached_tokens: request.cached,
        output_tokens_so_far: request.output,
    }
}
