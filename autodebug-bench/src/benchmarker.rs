//! [`SseBenchmarker`]: the load loops (closed, open) around [`execute`], and the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autodebug_core::{
    Arrival, BenchContext, BenchPlan, BenchReport, Benchmarker, Endpoint, Load, RequestRecord, Secret, TimeWindow,
    async_trait,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::BenchError;
use crate::request::{Outcome, RequestContext, WallClock, execute};
use crate::rng::SplitMix64;
use crate::summary::summarize;

/// The `client` string written into every report's context.
pub const CLIENT: &str = concat!("autodebug-bench/", env!("CARGO_PKG_VERSION"));

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
/// the load's concurrency, and no cap on connections below it.
#[derive(Debug, Clone)]
pub struct SseBenchmarker {
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

    /// The bearer token to send when the [`Endpoint`] has none.
    pub fn token(mut self, token: Secret) -> Self {
        self.inner.default_token = Some(token);
        self
    }

    /// Reads the default token from [`TOKEN_ENV_VARS`] (first one set and non-empty), if any.
    pub fn token_from_env(mut self) -> Self {
        if let Some(token) = TOKEN_ENV_VARS.iter().find_map(|var| Secret::from_env(var)) {
            self.inner.default_token = Some(token);
        }
        self
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
            inner: SseBenchmarker { client_timeout: None, default_token: None, max_in_flight: DEFAULT_MAX_IN_FLIGHT },
        }
    }

    /// Defaults, with the token read from [`TOKEN_ENV_VARS`].
    pub fn from_env() -> Self {
        SseBenchmarker::builder().token_from_env().build()
    }

    /// Whether a default token is configured (the token itself is never shown).
    pub fn has_default_token(&self) -> bool {
        self.default_token.is_some()
    }

    /// Runs `plan` against `endpoint`: warmup first (left out), then the measured requests.
    pub async fn run_plan(&self, endpoint: &Endpoint, plan: &BenchPlan) -> Result<BenchReport, BenchError> {
        validate(endpoint, plan)?;
        let pool = match plan.load {
            Load::Rate { .. } => self.max_in_flight,
            _ => plan.load.concurrency(),
        }
        .max(1);
        let mut client = reqwest::Client::builder()
            .connect_timeout(plan.timeouts.connect)
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(CLIENT);
        if let Some(timeout) = self.client_timeout {
            client = client.timeout(timeout);
        }
        let path = if plan.chat { "/v1/chat/completions" } else { "/v1/completions" };
        let ctx = Arc::new(RequestContext {
            client: client.build().map_err(BenchError::Client)?,
            url: endpoint.url(path),
            token: endpoint.token.clone().filter(|t| !t.is_empty()).or_else(|| self.default_token.clone()),
            model: endpoint.model.clone(),
            workload: plan.workload.clone(),
            chat: plan.chat,
            timeouts: plan.timeouts,
        });
        let clock = WallClock::now();
        tracing::info!(plan = %plan.name, url = %ctx.url, load = %plan.load.describe(), requests = plan.requests,
            warmup = plan.warmup_requests, "benchmark starting");
        let mut warnings = Vec::new();

        if plan.warmup_requests > 0 {
            // Warmup prompts use indices after the measured ones, so they warm a shared prefix
            // without caching any measured prompt whole.
            let concurrency = plan.load.concurrency().max(1).min(plan.warmup_requests);
            let warmup = closed_loop(&ctx, &clock, plan, plan.warmup_requests, concurrency, plan.requests).await?;
            let failed = warmup.iter().filter(|o| o.record.error.is_some()).count();
            if failed > 0 {
                warnings.push(format!("{failed} of {} warmup requests failed", warmup.len()));
            }
        }

        let (mut outcomes, waited_for_slot) = match &plan.load {
            Load::Sequential => (closed_loop(&ctx, &clock, plan, plan.requests, 1, 0).await?, 0),
            Load::Concurrent { concurrency } => {
                (closed_loop(&ctx, &clock, plan, plan.requests, *concurrency, 0).await?, 0)
            }
            Load::Rate { requests_per_s, arrival } => {
                open_loop(&ctx, &clock, plan, *requests_per_s, *arrival, self.max_in_flight).await?
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
                 include ramp-up and drain rather than steady state; raise `requests` to at least {}",
                records.len(),
                2 * concurrency
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
            tracing::warn!(plan = %plan.name, "{warning}");
        }
        tracing::info!(plan = %plan.name, succeeded = summary.succeeded, failed = summary.failed,
            ttft_p50_ms = summary.ttft_ms.p50, output_tok_s = summary.output_throughput, "benchmark finished");

        let workload = &plan.workload;
        let warm = (workload.repeat_prompt || workload.shared_prefix_tokens > 0) && plan.warmup_requests > 0;
        Ok(BenchReport {
            plan: plan.clone(),
            context: BenchContext {
                endpoint: endpoint.base_url.clone(),
                model: endpoint.model.clone(),
                workload: workload.describe(),
                load: plan.load.describe(),
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
    if let Err(e) = reqwest::Url::parse(&endpoint.base_url) {
        return Err(invalid(
            "endpoint.base_url",
            format!("{:?} is not a URL ({e}); write e.g. http://127.0.0.1:30000", endpoint.base_url),
        ));
    }
    if plan.requests == 0 {
        return Err(invalid("requests", "must be at least 1".into()));
    }
    match plan.load {
        Load::Concurrent { concurrency: 0 } => return Err(invalid("load.concurrency", "must be at least 1".into())),
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

/// `count` requests with `concurrency` in flight at all times; each request's clock starts at its
/// send, right after its worker finished the previous one, so there is no queue to omit.
async fn closed_loop(
    ctx: &Arc<RequestContext>,
    clock: &WallClock,
    plan: &BenchPlan,
    count: usize,
    concurrency: usize,
    prompt_offset: usize,
) -> Result<Vec<Outcome>, BenchError> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.min(count) {
        let (ctx, clock, next) = (Arc::clone(ctx), *clock, Arc::clone(&next));
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return outcomes;
                }
                outcomes.push(execute(&ctx, index, index + prompt_offset, None, &clock).await);
            }
        });
    }
    let mut outcomes = Vec::with_capacity(count);
    while let Some(joined) = workers.join_next().await {
        outcomes.extend(joined.map_err(|e| BenchError::Task { plan: plan.name.clone(), message: e.to_string() })?);
    }
    Ok(outcomes)
}

/// Sends request `i` at its scheduled time whatever happened to earlier ones; latencies count
/// from that schedule. Returns the outcomes and how many requests had to wait for a free slot.
async fn open_loop(
    ctx: &Arc<RequestContext>,
    clock: &WallClock,
    plan: &BenchPlan,
    requests_per_s: f64,
    arrival: Arrival,
    max_in_flight: usize,
) -> Result<(Vec<Outcome>, usize), BenchError> {
    let task_error = |message: String| BenchError::Task { plan: plan.name.clone(), message };
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut rng = SplitMix64::for_stream(plan.workload.seed, ARRIVAL_STREAM);
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let mut offset_s = 0.0f64;
    let mut waited_for_slot = 0;
    for index in 0..plan.requests {
        let scheduled = start + Duration::from_secs_f64(offset_s);
        tokio::time::sleep_until(scheduled.into()).await;
        if slots.available_permits() == 0 {
            waited_for_slot += 1;
        }
        let permit = Arc::clone(&slots).acquire_owned().await.map_err(|e| task_error(e.to_string()))?;
        let (ctx, clock) = (Arc::clone(ctx), *clock);
        tasks.spawn(async move {
            let outcome = execute(&ctx, index, index, Some(scheduled), &clock).await;
            drop(permit);
            outcome
        });
        offset_s += match arrival {
            Arrival::Constant => 1.0 / requests_per_s,
            Arrival::Poisson => rng.next_exp() / requests_per_s,
            Arrival::Gamma { burstiness } => rng.next_gamma(burstiness) / (requests_per_s * burstiness),
        };
    }
    let mut outcomes = Vec::with_capacity(plan.requests);
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.map_err(|e| task_error(e.to_string()))?);
    }
    Ok((outcomes, waited_for_slot))
}
