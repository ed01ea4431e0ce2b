//! # autodebug-bench
//!
//! The SSE streaming load generator of autodebug: it sends OpenAI-compatible streaming
//! completions (`/v1/chat/completions` or `/v1/completions`) to an [`Endpoint`], measures every
//! token as it arrives, and returns a [`BenchReport`] with per-request records, summary
//! distributions and the exact wall-clock window telemetry is fetched for. It implements
//! [`autodebug_core::Benchmarker`] as [`SseBenchmarker`].
//!
//! It avoids the usual faults of LLM load clients: latencies count from the *scheduled* send
//! time (no coordinated omission), inter-token latency is per token even when a server packs
//! several tokens into one SSE chunk, there is no hidden connection cap below the requested
//! concurrency, every wait has a timeout, so one stalled stream cannot hang a run, and tokens are
//! timed by when they reached the host, not by when a busy client got round to reading them.
//! Plain `http://` goes through the crate's own lean HTTP/1.1 client (keep-alive, each stream's
//! task reading its own socket, kernel receive stamps) and its own strict SSE parser (several
//! times faster than `eventsource-stream` on the same bytes: `benches/README.md`); `https://`, a
//! proxied host, or [`HttpClient::Reqwest`] through reqwest, its body parsed by
//! `eventsource-stream` behind a line check that refuses the same non-SSE lines (the `https` feature,
//! on by default; without it such endpoints are refused with what to do).
//!
//! ```no_run
//! use autodebug_bench::SseBenchmarker;
//! use autodebug_core::{BenchPlan, Benchmarker, Endpoint, Load, Workload};
//!
//! # async fn demo() -> autodebug_core::Result<()> {
//! let bench = SseBenchmarker::from_env()?; // token from AUTODEBUG_BENCH_TOKEN / OPENAI_API_KEY
//! let endpoint = Endpoint::new("http://127.0.0.1:30000", "Qwen/Qwen1.5-0.5B-Chat");
//! let plan = BenchPlan::new("concurrent", Workload::new(512, 128), Load::Concurrent { concurrency: 16 }, 64)
//!     .with_warmup(4);
//! let report = bench.run(&endpoint, &plan).await?;
//! println!("TTFT p99 {:.1} ms, {:.0} tok/s", report.summary.ttft_ms.p99, report.summary.output_throughput);
//! # Ok(())
//! # }
//! ```
//!
//! ## Load
//!
//! - `Sequential` and `Concurrent { concurrency }` are closed loops: `concurrency` workers each
//!   send their next request as soon as the previous one ended. `queue_delay` is 0.
//! - `Rate { requests_per_s, arrival }` is an open loop: request *i* is due at the sum of *i*
//!   inter-arrival gaps (constant `1/rate`, exponential for `Poisson`, or Gamma with shape
//!   `burstiness` and mean `1/rate`; drawn from `workload.seed`), whatever happened to earlier
//!   requests. At most [`SseBenchmarkerBuilder::max_in_flight`] are in flight; a request due while
//!   all slots are busy waits, and the report warns.
//! - Warmup requests (`plan.warmup_requests`) run first, closed-loop at the load's concurrency
//!   (1 for `Rate`), and are left out of everything. Their prompts use indices after the measured
//!   ones, so a shared prefix gets warm but no measured prompt is cached whole.
//! - A run stops after `plan.requests` measured requests, or, with `plan.duration_ms`, when that
//!   much time has passed since the first measured send (no new request or conversation starts
//!   after it; those in flight finish and count). Fewer than 2 × concurrency measured requests
//!   earn a warning: such figures are mostly ramp-up and drain.
//! - `plan.ramp_up_ms` (closed loop): worker *w* of *C* starts at `ramp_up · w / C`, so
//!   concurrency grows to its target; requests sent during the ramp are measured.
//! - `plan.trials`: the whole plan (warmup included) runs that many times; each trial draws fresh
//!   prompts (seed mixed with the trial number), so no trial hits the cache with another's. The
//!   report holds the records of all trials (re-indexed), distributions over all of them, and
//!   throughput = totals / the sum of the trial windows. [`SseBenchmarker::run_trials`] also
//!   returns every trial; [`trial_stats`] gives mean ± std (n − 1) and a seeded percentile
//!   bootstrap CI of the mean ([`BOOTSTRAP_RESAMPLES`] resamples of the trials) per metric.
//! - [`Sweep`] runs one plan per concurrency or rate; [`AbTest`] runs two endpoints' trials
//!   interleaved (A, B, A, B…, trial *k* of both arms with the same prompts) and returns a
//!   [`Verdict`] for one metric: the difference of per-trial means B − A with a seeded bootstrap
//!   CI (each arm resampled independently); `Better`/`Worse` only when the CI excludes 0 and the
//!   relative difference reaches `min_relative_effect` (default 2%), else `WithinNoise`.
//! - [`CapacitySearch`] finds the highest open-loop rate that holds a latency SLO with a stated
//!   confidence (bracket, then bisect; a rate's verdict is an exact binomial test on the share of
//!   its pooled trials' requests over each bound, trials added until it decides), ending each
//!   step as soon as it can only break. A plan with a [`CapacityGoal`](autodebug_core::CapacityGoal)
//!   ([`BenchPlan::capacity`]) runs it through [`Benchmarker::run`](autodebug_core::Benchmarker::run)
//!   and reports one [`BenchReport`]: the figures of the highest rate that held, the window of the
//!   whole search, and `summary.capacity` (flat metric `capacity`, req/s; 0 with a warning when no
//!   rate held), so the loop can maximize capacity under an SLO.
//!
//! ## Workloads ([`RequestSource`])
//!
//! Synthetic prompts with fixed or random lengths ([`LengthDist`]: fixed, uniform, clamped
//! normal; drawn per request from the seed), sized by a [`Tokenizer`] (the word approximation,
//! or whole-word tokens of a local Hugging Face `tokenizer.json`); a shared prefix (cache state
//! `warm` when warmup ran, else `cold`); [`Preset`]s for prefill-heavy, decode-heavy and mixed
//! traffic; multi-turn conversations whose turn *t* resends the whole history including the
//! server's own answers; JSONL datasets (`{"prompt", "output_tokens"?}` or ShareGPT
//! `{"conversations": [{"from", "value"}]}`: first human turn, first answer's length); and
//! traces `{"timestamp_ms", "prompt"|"prompt_tokens", "output_tokens"}` replayed open-loop on
//! their timestamps. `ignore_eos` (default on) plus `max_tokens` fix output lengths; results
//! always prefer the server's `usage` counts.
//!
//! ## Goodput and output
//!
//! **goodput**: requests that succeeded and meet every bound of an [`Slo`] (TTFT, TPOT, E2E; a
//! request with < 2 tokens has no TPOT to miss), as a share of measured requests and per second of
//! the run's duration. [`ReportFile`] is the versioned JSON report (`schema_version`
//! [`SCHEMA_VERSION`], layout in its module docs) with the full context of every figure;
//! [`write_jsonl`] writes one line per request; [`ReportFile::to_table`] is the console table.
//!
//! ## Prompts
//!
//! One token = one whitespace-separated word ([`synthetic_prompt`]), drawn deterministically
//! from `workload.seed` and the request index. The record's `prompt_tokens` is the server's
//! `usage.prompt_tokens` when it sends one (it includes the chat template), else the word count.
//!
//! ## Metric definitions
//!
//! All per-request times are measured on the monotonic clock from the request's **scheduled**
//! start (for closed loops, where nothing waits: its actual send), and stamped per network read:
//! every SSE event in one read shares that read's arrival time.
//!
//! - **send**: the clock starts right before the request is written; on a pooled connection
//!   nothing but the pool checkout lies between, and a new connection's connect counts in TTFT.
//! - **arrival** of a read: on plain `http://` endpoints on Linux, the kernel's receive stamp
//!   (`SO_TIMESTAMPNS`) of the last packet the read took, so a token is timed when it reached
//!   this host even while the client was busy with other streams (on two cores at 1,000 streams
//!   a read returns up to ~4 ms after its bytes arrived; see `autodebug bench --self-check`).
//!   Otherwise (`https://`, other systems, or before the kernel stamps) the moment the read
//!   returned.
//!
//! - **queue delay**: actual send − scheduled start (client-side queueing; open loop only).
//! - **content chunk**: an SSE event whose `choices[].delta.content` (chat) or `choices[].text`
//!   (completions) is non-empty. Role-only chunks (`content: null`), finish chunks and the
//!   usage-only chunk (`choices: []`) are not content chunks.
//! - **TTFT**: arrival of the first content chunk.
//! - **TTST** (time to second token): the first content chunk's arrival if it carries ≥ 2 tokens,
//!   else the arrival of the next content chunk carrying ≥ 1 token.
//! - **E2E**: arrival of `data: [DONE]`; or, when a stream ends without `[DONE]` after a choice
//!   gave a `finish_reason`, the end of the stream.
//! - **tokens per chunk**: when every content chunk carries `usage.completion_tokens`
//!   (cumulative), the differences; otherwise the whitespace words of the chunk's text (at least 1),
//!   rescaled with running-total rounding so they add up exactly to the final
//!   `usage.completion_tokens` when the server sends one (a chunk may then carry 0 tokens).
//! - **output tokens**: `usage.completion_tokens`, else the sum of tokens per chunk.
//! - **cached tokens**: `usage.prompt_tokens_details.cached_tokens`.
//! - **TPOT**: (E2E − TTFT) / (output tokens − 1), per request with ≥ 2 output tokens.
//! - **inter-chunk latency**: every gap between consecutive content chunks, as received.
//! - **ITL** (per token): a gap followed by a chunk of *k* ≥ 1 tokens contributes *k* samples of
//!   gap / *k*; a chunk with 0 tokens adds its gap to the next chunk's. Tokens of the first
//!   chunk arrive with TTFT and contribute no ITL sample.
//! - **distributions**: count, mean, population std, min and max are exact; p50/p90/p95/p99/p99.9
//!   come from an HDR histogram of whole microseconds with 3 significant digits (nearest rank,
//!   reported as the middle of the histogram bucket, clamped into [min, max]); all in ms.
//!   TTFT, TTST, TPOT, ITL, inter-chunk and E2E use successful requests only; queue delay uses
//!   every measured request.
//! - **window**: from the first measured request's actual send to the last byte received by any
//!   measured request (or its failure), as wall-clock UTC ns.
//! - **throughput**: successful requests, their output tokens, and their prompt + output tokens,
//!   each divided by the window's duration.
//! - **cached_token_ratio**: Σ cached tokens / Σ prompt tokens over successful requests whose
//!   usage had `prompt_tokens_details`; absent when none had.
//!
//! ## Errors (per request, counted in `summary.errors`)
//!
//! `connect` (refused, DNS, TLS, `timeouts.connect`); `http_status` (any non-2xx, with the start
//! of the body); `timeout_first_token` (no content chunk within `timeouts.first_token` of the
//! send); `timeout_idle` (after the first token, no bytes for `timeouts.idle_between_chunks`);
//! `timeout_total` (not done within `timeouts.total` of the send, or the builder's
//! `client_timeout`); `malformed_sse` (a line that is not an SSE field, comment or blank, or a line
//! over 4 MiB); `malformed_json` (an event's data is not a JSON object of the expected shape);
//! `server_error` (`{"error": ...}` in the stream); `early_close` (the stream or connection ended
//! without `[DONE]` or a `finish_reason`).

mod benchmarker;
mod capacity;
mod chunk;
mod error;
mod prompt;
mod report;
mod request;
mod rigor;
pub mod self_check;
mod sse;
mod stats;
mod stream;
mod summary;
mod tokenizer;
mod wire;
mod workloads;

pub use benchmarker::{DEFAULT_MAX_IN_FLIGHT, SseBenchmarker, SseBenchmarkerBuilder, TOKEN_ENV_VARS, TrialRun};
pub use capacity::{
    Capacity, CapacityRate, CapacitySearch, CapacitySlo, CapacityStep, Decided, MIN_STEP_REQUESTS, P99_TAIL, SloCounts,
    binomial_at_least, binomial_at_most, share_interval,
};
pub use error::BenchError;
pub use prompt::{Message, synthetic_prompt};
pub use report::{PointReport, ReportContext, ReportFile, SCHEMA_VERSION, write_jsonl};
pub use request::{CLIENT, HttpClient};
pub use rigor::{AbOutcome, AbTest, Comparison, Sweep, SweepAxis};
pub use stats::{BOOTSTRAP_RESAMPLES, Goodput, MetricStats, Slo, Verdict, bootstrap_ci, goodput, trial_stats, verdict};
pub use summary::summarize;
pub use tokenizer::{Tokenizer, VocabTokenizer};
pub use workloads::{
    Conversation, DatasetEntry, LengthDist, Preset, RequestSource, Shape, Synthetic, TraceEntry, Turn,
};

#[doc(no_inline)]
pub use autodebug_core::{BenchPlan, BenchReport, Direction, Endpoint};
