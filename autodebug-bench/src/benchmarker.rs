//! [`SseBenchmarker`]: the load loops (closed, open) around [`execute`], and the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autodebug_core::rng::SplitMix64;
use autodebug_core::{
    Arrival, BenchContext, BenchPlan, BenchReport, Benchmarker, Endpoint, Load, RequestRecord, Secret, TimeWindow,
    async_trait,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::capacity::{CapacitySearch, SloWatch, WATCH_TICK};
use crate::error::BenchError;
use crate::prompt::Message;
use crate::request::{CLIENT, HttpClient, Outcome, Prepared, RequestContext, Transport, WallClock, execute};
use crate::summary::summarize;
use crate::workloads::{Conversation, RequestSource};

/// Environment variables [`SseBenchmarker::from_env`] reads a bearer token from, first set wins.
pub const TOKEN_ENV_VARS: [&str; 2] = ["AUTODEBUG_BENCH_TOKEN", "OPENAI_API_KEY"];

/// Default cap on requests in flight under open-loop ([`Load::Rate`]) load; see
/// [`SseBenchmarkerBuilder::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1000;

/// The random stream arrival gaps are drawn from (prompts use the request index).
const ARRIVAL_STREAM: u64 = u64::MAX - 1;

/// Streams OpenAI-compatible completions and measures them; implements [`Benchmarker`].
///
/// One HTTP/1.1 client per run with keep-alive, TCP_NODELAY and an idle pool at least as large as
/// the load's concurrency, and no cap on connections below it ([`HttpClient`] says which).
#[derive(Debug, Clone)]
pub struct SseBenchmarker {
    http_client: HttpClient,
    client_timeout: Option<Duration>,
    default_token: Option<Secret>,
    max_in_flight: usize,
}

impl Default for SseBenchmarker {
    fn default() -> Self {
        SseBenchmarker::builder().build()
    }
}

/// Builds an [`SseBenchmarker`].
#[derive(Debug, Clone)]
pub struct SseBenchmarkerBuilder {
    inner: SseBenchmarker,
}

impl SseBenchmarkerBuilder {
    /// A hard limit on each request, end to end, enforced by the HTTP client on top of the plan's
    /// [`Timeouts`](autodebug_core::Timeouts); hitting it counts as `timeout_total`. Unset by default.
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.inner.client_timeout = Some(timeout);
        self
    }

    /// Which HTTP client sends the requests; default [`HttpClient::Auto`].
    pub fn http_client(mut self, client: HttpClient) -> Self {
        self.inner.http_client = client;
        self
    }

    /// The bearer token to send when the [`Endpoint`] has none.
    pub fn token(mut self, token: Secret) -> Self {
        self.inner.default_token = Some(token);
        self
    }

    /// Fills in what was not set from the environment: the default token from
    /// [`TOKEN_ENV_VARS`] (first one set and non-empty), if any. Nothing there is required, so it
    /// does not fail today; it returns a `Result` like every `from_env` of the workspace.
    pub fn from_env(mut self) -> Result<Self, BenchError> {
        if self.inner.default_token.is_none()
            && let Some(token) = TOKEN_ENV_VARS.iter().find_map(|var| Secret::from_env(var))
        {
            self.inner.default_token = Some(token);
        }
        Ok(self)
    }

    /// Under open-loop load, at most this many requests are in flight; a request due while all
    /// are busy waits, and that wait shows as queue delay (and in its latencies, which count from
    /// the scheduled time), and the report warns. Keeps a rate above the server's capacity from
    /// exhausting file descriptors. Default [`DEFAULT_MAX_IN_FLIGHT`]; at least 1.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.inner.max_in_flight = max.max(1);
        self
    }

    pub fn build(self) -> SseBenchmarker {
        self.inner
    }
}

impl SseBenchmarker {
    pub fn builder() -> SseBenchmarkerBuilder {
        SseBenchmarkerBuilder {
            inner: SseBenchmarker {
                http_client: HttpClient::Auto,
                client_timeout: None,
                default_token: None,
                max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            },
        }
    }

    /// Defaults, with the token read from [`TOKEN_ENV_VARS`].
    pub fn from_env() -> Result<Self, BenchError> {
        Ok(SseBenchmarker::builder().from_env()?.build())
    }

    /// Whether a default token is configured (the token itself is never shown).
    pub fn has_default_token(&self) -> bool {
        self.default_token.is_some()
    }

    /// Runs `plan` against `endpoint` with the synthetic prompts its workload describes: per
    /// trial, warmup first (left out), then the measured requests; trials reported together. A
    /// plan with a [`capacity`](BenchPlan::capacity) goal runs its capacity search instead
    /// ([`CapacitySearch::run_report`](crate::CapacitySearch::run_report)).
    pub async fn run_plan(&self, endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport, BenchError> {
        self.run_source(endpoint, plan, &RequestSource::from_workload(&plan.workload)).await
    }

    /// Like [`SseBenchmarker::run_plan`], with the requests from `source` instead of
    /// `plan.workload` (whose lengths are then only the defaults the source was built with).
    pub async fn run_source(
        &self,
        endpoint: &Endpoint,
        plan: &BenchPlan,
        source: &RequestSource,
    ) -> Result<BenchReport, BenchError> {
        match &plan.capacity {
            Some(goal) => CapacitySearch::for_goal(plan.clone(), goal).run_report(self, endpoint, source).await,
            None => Ok(self.run_trials(endpoint, plan, source).await?.report),
        }
    }

    /// Runs `plan.trials` trials (at least one) and returns each trial's report and their
    /// aggregate: records of all trials (re-indexed in order), latency distributions over all
    /// of them, throughput as the trials' totals over the sum of their windows.
    pub async fn run_trials(
        &self,
        endpoint: &Endpoint,
        plan: &BenchPlan,
        source: &RequestSource,
    ) -> Result<TrialRun, BenchError> {
        validate(endpoint, plan)?;
        let mut trials = Vec::new();
        for trial in 0..plan.trials.max(1) {
            trials.push(self.run_once(endpoint, plan, source, trial).await?);
        }
        let report = aggregate(&trials);
        Ok(TrialRun { report, trials })
    }

    /// One trial.
    pub(crate) async fn run_once(
        &self,
        endpoint: &Endpoint,
        plan: &BenchPlan,
        source: &RequestSource,
        trial: u32,
    ) -> Result<BenchReport, BenchError> {
        self.run_watched(endpoint, plan, source, trial, None).await
    }

    /// One trial; an open loop stops sending when `watch` says its SLO can no longer hold.
    pub(crate) async fn run_watched(
        &self,
        endpoint: &Endpoint,
        plan: &BenchPlan,
        source: &RequestSource,
        trial: u32,
        watch: Option<Arc<SloWatch>>,
    ) -> Result<BenchReport, BenchError> {
        validate(endpoint, plan)?;
        let pool = match plan.load {
            Load::Rate { .. } => self.max_in_flight,
            _ if source.is_replay() => self.max_in_flight,
            _ => plan.load.concurrency(),
        }
        .max(1);
        let path = if plan.chat { "/v1/chat/completions" } else { "/v1/completions" };
        let url = endpoint.url(path);
        let transport = Transport::for_url(&url, self.http_client, plan.timeouts.connect, pool, self.client_timeout)?;
        let ctx = Arc::new(RequestContext {
            transport,
            url,
            client_timeout: self.client_timeout,
            token: endpoint.token.clone().filter(|t| !t.is_empty()).or_else(|| self.default_token.clone()),
            model: endpoint.model.clone(),
            ignore_eos: source.ignore_eos(),
            chat: plan.chat,
            timeouts: plan.timeouts,
            watch: watch.clone(),
        });
        let source = Arc::new(source.clone());
        let clock = WallClock::now();
        let requests = source.len_limit().map_or(plan.requests, |limit| plan.requests.min(limit)).max(1);
        tracing::info!(plan = %plan.name, url = %ctx.url, load = %plan.load.describe(), requests,
            warmup = plan.warmup_requests, trial, "benchmark starting");
        let mut warnings = Vec::new();
        let turns = source.turns();
        let conversations = requests.div_ceil(turns);
        let run = |count: usize, conversation_offset: usize| Pass {
            ctx: Arc::clone(&ctx),
            source: Arc::clone(&source),
            clock,
            trial,
            count,
            conversation_offset,
        };

        if plan.warmup_requests > 0 {
            // Warmup prompts use conversation numbers after the measured ones, so they warm a
            // shared prefix without caching any measured prompt whole.
            let concurrency = plan.load.concurrency().max(1).min(plan.warmup_requests);
            let warmup = closed_loop(run(plan.warmup_requests, conversations), plan, concurrency, None, None).await?;
            let failed = warmup.iter().filter(|o| o.record.error.is_some()).count();
            if failed > 0 {
                warnings.push(format!("{failed} of {} warmup requests failed", warmup.len()));
            }
        }

        let duration = plan.duration_ms.map(Duration::from_millis);
        let ramp_up = plan.ramp_up_ms.map(Duration::from_millis).filter(|d| !d.is_zero());
        let (mut outcomes, waited_for_slot) = match &plan.load {
            _ if source.is_replay() => {
                open_loop(run(requests, 0), plan, Schedule::Replay, duration, self.max_in_flight).await?
            }
            Load::Sequential => (closed_loop(run(requests, 0), plan, 1, duration, None).await?, 0),
            Load::Concurrent { concurrency } => {
                (closed_loop(run(requests, 0), plan, *concurrency, duration, ramp_up).await?, 0)
            }
            Load::Rate { requests_per_s, arrival } => {
                let schedule = Schedule::Rate { requests_per_s: *requests_per_s, arrival: *arrival };
                open_loop(run(requests, 0), plan, schedule, duration, self.max_in_flight).await?
            }
        };
        outcomes.sort_by_key(|o| o.record.index);

        let start = outcomes.iter().map(|o| o.sent_at).min();
        let end = outcomes.iter().map(|o| o.last_byte_at).max();
        let window = match (start, end) {
            (Some(start), Some(end)) => TimeWindow::new(clock.wall_ns(start), clock.wall_ns(end.max(start))),
            _ => TimeWindow::new(clock.wall_ns(Instant::now()), clock.wall_ns(Instant::now())),
        };
        let records: Vec<RequestRecord> = outcomes.into_iter().map(|o| o.record).collect();
        let summary = summarize(&records, window);

        let concurrency = plan.load.concurrency();
        if concurrency > 0 && records.len() < 2 * concurrency {
            warnings.push(format!(
                "only {} requests measured at concurrency {concurrency}: fewer than 2x concurrency, so the figures \
                 include ramp-up and drain rather than steady state; raise `requests` (or `duration`) to at least {}",
                records.len(),
                2 * concurrency
            ));
        }
        if turns > 1 && records.len() < requests {
            warnings.push(format!(
                "{} of {requests} conversation turns were not sent: a failed turn ends its conversation",
                requests - records.len()
            ));
        }
        if waited_for_slot > 0 {
            warnings.push(format!(
                "{waited_for_slot} of {} open-loop requests waited for one of the {} in-flight slots: the offered rate \
                 exceeds what the server completes, and queue delay (included in latencies) grows",
                records.len(),
                self.max_in_flight
            ));
        }
        if let Some(reason) = watch.as_ref().and_then(|w| w.stopped()) {
            warnings.push(format!("stopped early: {reason}"));
        }
        if summary.failed > 0 {
            let classes: Vec<String> = summary.errors.iter().map(|(class, n)| format!("{class} {n}")).collect();
            warnings.push(format!(
                "{} of {} requests failed ({})",
                summary.failed,
                summary.requests,
                classes.join(", ")
            ));
        }
        for warning in &warnings {
            tracing::warn!(plan = %plan.name, trial, "{warning}");
        }
        tracing::info!(plan = %plan.name, trial, succeeded = summary.succeeded, failed = summary.failed,
            ttft_p50_ms = summary.ttft_ms.p50, output_tok_s = summary.output_throughput, "benchmark finished");

        let warm = match source.as_ref() {
            RequestSource::Synthetic(s) | RequestSource::MultiTurn { base: s, .. } => {
                (s.repeat_prompt || s.shared_prefix_tokens > 0) && plan.warmup_requests > 0
            }
            _ => false,
        };
        Ok(BenchReport {
            plan: plan.clone(),
            context: BenchContext {
                endpoint: endpoint.base_url.clone(),
                model: endpoint.model.clone(),
                workload: source.describe(),
                load: describe_load(plan, source.as_ref()),
                trials: 1,
                cache_state: if warm { "warm" } else { "cold" }.to_string(),
                client: CLIENT.to_string(),
            },
            summary,
            records,
            window,
            warnings,
        })
    }
}

/// Each trial's report and their aggregate; see [`SseBenchmarker::run_trials`].
#[derive(Debug, Clone)]
pub struct TrialRun {
    pub report: BenchReport,
    pub trials: Vec<BenchReport>,
}

/// The load as the report's context states it, with stop rule and ramp-up.
fn describe_load(plan: &BenchPlan, source: &RequestSource) -> String {
    let mut text = if source.is_replay() { "trace timestamps".to_string() } else { plan.load.describe() };
    if let Some(ms) = plan.ramp_up_ms.filter(|_| matches!(plan.load, Load::Concurrent { .. })) {
        text.push_str(&format!(", ramp-up {ms} ms"));
    }
    match plan.duration_ms {
        Some(ms) => text.push_str(&format!(", for {ms} ms (at most {} requests)", plan.requests)),
        None => text.push_str(&format!(", {} requests", plan.requests)),
    }
    if plan.warmup_requests > 0 {
        text.push_str(&format!(" after {} warmup", plan.warmup_requests));
    }
    text
}

/// Trials reported together: records re-indexed in trial order, distributions over all records,
/// throughput over the summed trial windows (the idle time between trials is not counted).
pub(crate) fn aggregate(trials: &[BenchReport]) -> BenchReport {
    let Some(first) = trials.first() else { unreachable!("run_trials runs at least one trial") };
    if trials.len() == 1 {
        return first.clone();
    }
    let mut records = Vec::new();
    for trial in trials {
        for record in &trial.records {
            let mut record = record.clone();
            record.index = records.len();
            records.push(record);
        }
    }
    let start = trials.iter().map(|t| t.window.start_ns).min().unwrap_or(first.window.start_ns);
    let end = trials.iter().map(|t| t.window.end_ns).max().unwrap_or(first.window.end_ns);
    let window = TimeWindow::new(start, end);
    let mut summary = summarize(&records, window);
    let busy_s: f64 = trials.iter().map(|t| t.summary.duration_s).sum();
    if busy_s > 0.0 {
        summary.duration_s = busy_s;
        summary.request_throughput = summary.succeeded as f64 / busy_s;
        summary.output_throughput = summary.output_tokens as f64 / busy_s;
        summary.total_token_throughput = (summary.prompt_tokens + summary.output_tokens) as f64 / busy_s;
    }
    let warnings = trials
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.warnings.iter().map(move |w| format!("trial {}: {w}", i + 1)))
        .collect();
    let mut context = first.context.clone();
    context.trials = trials.len() as u32;
    BenchReport { plan: first.plan.clone(), context, summary, records, window, warnings }
}

#[async_trait]
impl Benchmarker for SseBenchmarker {
    fn name(&self) -> &str {
        "sse"
    }

    async fn run(&self, endpoint: &Endpoint, plan: &BenchPlan) -> autodebug_core::Result<BenchReport> {
        Ok(self.run_plan(endpoint, plan).await?)
    }
}

fn validate(endpoint: &Endpoint, plan: &BenchPlan) -> Result<(), BenchError> {
    let invalid =
        |field: &'static str, message: String| BenchError::InvalidPlan { plan: plan.name.clone(), field, message };
    if let Err(e) = check_url(&endpoint.base_url) {
        return Err(invalid(
            "endpoint.base_url",
            format!("{:?} is not a URL ({e}); write e.g. http://127.0.0.1:30000", endpoint.base_url),
        ));
    }
    if plan.requests == 0 {
        return Err(invalid("requests", "must be at least 1".into()));
    }
    match plan.load {
        Load::Concurrent { concurrency: 0 } => {
            return Err(invalid("load.concurrency", "must be at least 1".into()));
        }
        Load::Rate { requests_per_s, arrival } => {
            if !(requests_per_s.is_finite() && requests_per_s > 0.0) {
                return Err(invalid("load.requests_per_s", format!("must be a positive number, got {requests_per_s}")));
            }
            if let Arrival::Gamma { burstiness } = arrival
                && !(burstiness.is_finite() && burstiness > 0.0)
            {
                return Err(invalid("load.arrival.burstiness", format!("must be a positive number, got {burstiness}")));
            }
        }
        _ => {}
    }
    let t = &plan.timeouts;
    for (field, value) in [
        ("timeouts.connect", t.connect),
        ("timeouts.first_token", t.first_token),
        ("timeouts.idle_between_chunks", t.idle_between_chunks),
        ("timeouts.total", t.total),
    ] {
        if value.is_zero() {
            return Err(invalid(field, "must be more than 0 ms".into()));
        }
    }
    Ok(())
}

/// Whether `text` is an absolute URL with a host. With reqwest built in, its parser decides: a URL
/// the lean client cannot take plainly (an internationalized host, a `#fragment`) is still sent,
/// through reqwest, so refusing it here would turn away a URL that works.
#[cfg(feature = "https")]
fn check_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
    if url.has_host() { Ok(()) } else { Err("no host".into()) }
}

/// Whether `text` is an absolute URL with a host, as the lean client (the only one built) reads it.
#[cfg(not(feature = "https"))]
fn check_url(text: &str) -> Result<(), String> {
    crate::wire::HttpUrl::check(text)
}

/// What one pass (warmup or measured) sends: `count` records, conversation numbers starting
/// at `conversation_offset` (record indices always start at 0).
struct Pass {
    ctx: Arc<RequestContext>,
    source: Arc<RequestSource>,
    clock: WallClock,
    trial: u32,
    count: usize,
    conversation_offset: usize,
}

impl Pass {
    fn conversations(&self) -> usize {
        self.count.div_ceil(self.source.turns())
    }
}

/// Sends conversation `number`'s turns in order, each turn with the whole conversation so far
/// (the server's answers included); stops at the pass's record count or at a failed turn.
async fn run_conversation(
    ctx: &RequestContext,
    clock: &WallClock,
    conversation: Conversation,
    number: usize,
    count: usize,
    scheduled: Option<Instant>,
) -> Vec<Outcome> {
    let turns = conversation.turns.len();
    let mut messages: Vec<Message> = Vec::with_capacity(turns * 2);
    let mut outcomes = Vec::with_capacity(turns);
    let mut history_tokens = 0u32;
    for (t, turn) in conversation.turns.into_iter().enumerate() {
        let index = number * turns + t;
        if index >= count {
            break;
        }
        let turn_tokens = turn.prompt_tokens;
        messages.push(Message::user(turn.user));
        let request = Prepared {
            messages: &messages,
            max_tokens: turn.max_tokens,
            prompt_tokens: history_tokens.saturating_add(turn_tokens),
            keep_answer: t + 1 < turns,
        };
        let mut outcome = execute(ctx, index, request, if t == 0 { scheduled } else { None }, clock).await;
        let failed = outcome.record.error.is_some();
        let answer = outcome.answer.take().unwrap_or_default();
        history_tokens =
            outcome.record.prompt_tokens.unwrap_or(0).saturating_add(outcome.record.output_tokens.unwrap_or(0));
        outcomes.push(outcome);
        if failed {
            break;
        }
        messages.push(Message::assistant(answer));
    }
    outcomes
}

/// Conversations with `concurrency` in flight at all times (started over `ramp_up` when given);
/// each request's clock starts at its send, right after its worker finished the previous one,
/// so there is no queue to omit. No conversation starts after `duration`.
async fn closed_loop(
    pass: Pass,
    plan: &BenchPlan,
    concurrency: usize,
    duration: Option<Duration>,
    ramp_up: Option<Duration>,
) -> Result<Vec<Outcome>, BenchError> {
    let pass = Arc::new(pass);
    let conversations = pass.conversations();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let workers_count = concurrency.min(conversations).max(1);
    let mut workers = JoinSet::new();
    for worker in 0..workers_count {
        let (pass, next) = (Arc::clone(&pass), Arc::clone(&next));
        let delay = ramp_up.map(|ramp| ramp.mul_f64(worker as f64 / concurrency.max(1) as f64));
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            if let Some(delay) = delay {
                tokio::time::sleep_until((start + delay).into()).await;
            }
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return outcomes;
                }
                let number = next.fetch_add(1, Ordering::Relaxed);
                if number >= conversations {
                    return outcomes;
                }
                let conversation = pass.source.conversation(number + pass.conversation_offset, pass.trial);
                outcomes.extend(run_conversation(&pass.ctx, &pass.clock, conversation, number, pass.count, None).await);
            }
        });
    }
    let mut outcomes = Vec::with_capacity(pass.count.min(1 << 16));
    while let Some(joined) = workers.join_next().await {
        outcomes.extend(joined.map_err(|e| BenchError::Task { plan: plan.name.clone(), message: e.to_string() })?);
    }
    Ok(outcomes)
}

/// When open-loop conversations are due.
#[derive(Debug, Clone, Copy)]
enum Schedule {
    Rate {
        requests_per_s: f64,
        arrival: Arrival,
    },
    /// At each conversation's own `at_ms` (a trace).
    Replay,
}

/// Starts conversation `i` at its scheduled time whatever happened to earlier ones; latencies
/// count from that schedule. None is scheduled after `duration`. Returns the outcomes and how
/// many conversations had to wait for a free slot.
async fn open_loop(
    pass: Pass,
    plan: &BenchPlan,
    schedule: Schedule,
    duration: Option<Duration>,
    max_in_flight: usize,
) -> Result<(Vec<Outcome>, usize), BenchError> {
    let task_error = |message: String| BenchError::Task { plan: plan.name.clone(), message };
    let pass = Arc::new(pass);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut rng = SplitMix64::for_stream(plan.workload.seed, ARRIVAL_STREAM);
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let mut offset_s = 0.0f64;
    let mut waited_for_slot = 0;
    for number in 0..pass.conversations() {
        let conversation = pass.source.conversation(number + pass.conversation_offset, pass.trial);
        if let (Schedule::Replay, Some(at_ms)) = (schedule, conversation.at_ms) {
            offset_s = at_ms as f64 / 1e3;
        }
        if duration.is_some_and(|d| offset_s >= d.as_secs_f64()) {
            break;
        }
        let scheduled = start + Duration::from_secs_f64(offset_s);
        match &pass.ctx.watch {
            Some(watch) => watch.sleep_until(scheduled).await,
            None => tokio::time::sleep_until(scheduled.into()).await,
        }
        if let Some(watch) = &pass.ctx.watch {
            if slots.available_permits() == 0 {
                watch.stop(format!(
                    "all {max_in_flight} in-flight slots were busy when request {number} was due: the server \
                     completes fewer requests than are offered"
                ));
            }
            if watch.check(Instant::now()).is_some() {
                // What is still in flight would only say how long an overloaded queue takes to drain.
                tasks.abort_all();
                break;
            }
        }
        if slots.available_permits() == 0 {
            waited_for_slot += 1;
        }
        let permit = Arc::clone(&slots).acquire_owned().await.map_err(|e| task_error(e.to_string()))?;
        let pass = Arc::clone(&pass);
        tasks.spawn(async move {
            let outcomes =
                run_conversation(&pass.ctx, &pass.clock, conversation, number, pass.count, Some(scheduled)).await;
            drop(permit);
            outcomes
        });
        if let Schedule::Rate { requests_per_s, arrival } = schedule {
            offset_s += match arrival {
                Arrival::Constant => 1.0 / requests_per_s,
                Arrival::Poisson => rng.next_exp() / requests_per_s,
                Arrival::Gamma { burstiness } => rng.next_gamma(burstiness) / (requests_per_s * burstiness),
            };
        }
    }
    let mut outcomes = Vec::with_capacity(pass.count.min(1 << 16));
    loop {
        let joined = match &pass.ctx.watch {
            // The watch's clock runs while the last requests drain: a queue can still break the SLO.
            Some(watch) => match tokio::time::timeout(WATCH_TICK, tasks.join_next()).await {
                Err(_) => {
                    if watch.check(Instant::now()).is_some() {
                        tasks.abort_all();
                    }
                    continue;
                }
                Ok(joined) => joined,
            },
            None => tasks.join_next().await,
        };
        let Some(joined) = joined else { break };
        match joined {
            Ok(finished) => outcomes.extend(finished),
            Err(e) if e.is_cancelled() => {}
            Err(e) => return Err(task_error(e.to_string())),
        }
        if pass.ctx.watch.as_ref().is_some_and(|w| w.check(Instant::now()).is_some()) {
            tasks.abort_all();
        }
    }
    Ok((outcomes, waited_for_slot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebug_core::Workload;

    fn base_url_accepted(url: &str) -> bool {
        validate(&Endpoint::new(url, "m"), &BenchPlan::new("p", Workload::new(8, 8), Load::Sequential, 1)).is_ok()
    }

    #[cfg(feature = "https")]
    #[test]
    fn with_reqwest_built_in_a_url_reqwest_takes_is_accepted() {
        for url in ["http://bücher.example:8000", "https://例え.jp/v1", "http://127.0.0.1:30000/#frag", "http://h:1"]
        {
            assert!(base_url_accepted(url), "{url} refused");
        }
        for url in ["127.0.0.1:30000x", "not a url", "unix:/tmp/sock", "http://h:99999"] {
            assert!(!base_url_accepted(url), "{url} accepted");
        }
    }

    #[cfg(not(feature = "https"))]
    #[test]
    fn without_reqwest_only_what_the_lean_client_takes_is_accepted() {
        assert!(base_url_accepted("http://127.0.0.1:30000/v1?x=1"));
        for url in ["http://bücher.example:8000", "http://127.0.0.1:30000/#frag", "not a url", "http://h:99999"] {
            assert!(!base_url_accepted(url), "{url} accepted");
        }
    }
}
