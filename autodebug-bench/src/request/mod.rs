//! One streaming request: send, read the SSE stream under its timeouts, and record what arrived.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use autodebug_core::{ErrorClass, RequestRecord, Secret, TimeWindow, Timeouts};
use tokio::time::timeout_at;

use crate::capacity::SloWatch;
use crate::error::BenchError;
use crate::prompt::{Message, conversation_body};
use crate::sse::SseParser;
use crate::stream::{Stop, StreamAccount};
use crate::wire::{WireClient, WireError, WireResponse};

#[cfg(feature = "https")]
mod https;

/// The `client` string written into every report's context.
pub const CLIENT: &str = concat!("autodebug-bench/", env!("CARGO_PKG_VERSION"));

/// Which HTTP client carries a run's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HttpClient {
    /// The crate's own HTTP/1.1 client for `http://` endpoints (each stream's task reads its
    /// socket; reads are timed by the kernel's receive stamps), unless a proxy variable applies
    /// to a non-loopback host; reqwest for everything else.
    #[default]
    Auto,
    /// reqwest for every endpoint (TLS, proxies; reads timed when they return).
    Reqwest,
}

/// Everything the requests of one run share.
pub(crate) struct RequestContext {
    pub transport: Transport,
    pub url: String,
    /// The builder's cap on every request, on top of `timeouts.total`.
    pub client_timeout: Option<Duration>,
    pub token: Option<Secret>,
    pub model: String,
    pub ignore_eos: bool,
    pub chat: bool,
    pub timeouts: Timeouts,
    /// Told when each request is due, gets its first token and ends (capacity search).
    pub watch: Option<Arc<SloWatch>>,
}

/// Maps the monotonic clock to wall-clock ns, so windows are exact and immune to clock steps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    instant: Instant,
    wall_ns: i128,
}

impl WallClock {
    pub(crate) fn now() -> Self {
        WallClock { instant: Instant::now(), wall_ns: TimeWindow::now_ns() }
    }

    pub(crate) fn wall_ns(&self, at: Instant) -> i128 {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.wall_ns + after.as_nanos() as i128,
            None => self.wall_ns - self.instant.duration_since(at).as_nanos() as i128,
        }
    }
}

/// One finished request.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub record: RequestRecord,
    pub sent_at: Instant,
    /// The last byte received, or the moment the request failed.
    pub last_byte_at: Instant,
    /// The generated text, when asked for (a later turn of a conversation needs it).
    pub answer: Option<String>,
}

/// What one request sends.
pub(crate) struct Prepared<'a> {
    pub messages: &'a [Message],
    pub max_tokens: u32,
    /// Approximate prompt tokens, kept in the record unless the server reports usage.
    pub prompt_tokens: u32,
    pub keep_answer: bool,
}

fn ns_between(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_nanos().min(u128::from(u64::MAX)) as u64
}

type Failure = (ErrorClass, String);

/// Runs request `index` that was due at `scheduled` (`None`: due now, as in a closed loop).
/// Latencies in the record count from `scheduled`; nothing a server does makes this panic or run
/// past `timeouts.total` (plus a drain of at most [`DRAIN_AFTER_DONE`] that no latency includes).
pub(crate) async fn execute(
    ctx: &RequestContext,
    index: usize,
    request: Prepared<'_>,
    scheduled: Option<Instant>,
    clock: &WallClock,
) -> Outcome {
    let body = conversation_body(&ctx.model, request.messages, request.max_tokens, ctx.ignore_eos, ctx.chat);
    let sent_at = Instant::now();
    let scheduled = scheduled.unwrap_or(sent_at).min(sent_at);
    let mut record = RequestRecord {
        index,
        scheduled_ns: clock.wall_ns(scheduled),
        queue_delay_ns: ns_between(scheduled, sent_at),
        prompt_tokens: Some(request.prompt_tokens),
        ..RequestRecord::default()
    };
    let mut account = if request.keep_answer { StreamAccount::keeping_answer() } else { StreamAccount::new() };
    let mut last_byte_at = sent_at;
    if let Some(watch) = &ctx.watch {
        watch.due(index, scheduled);
    }
    let result = stream(ctx, index, body, scheduled, sent_at, &mut account, &mut last_byte_at).await;
    account.fill(&mut record);
    if let Some(watch) = &ctx.watch {
        watch.ended(index, result.is_err());
    }
    match result {
        Ok(end) => record.e2e_ns = Some(ns_between(scheduled, end)),
        Err((class, message)) => {
            tracing::debug!(index, class = class.as_str(), %message, "request failed");
            record.error = Some(class);
            record.error_message = Some(message);
            last_byte_at = last_byte_at.max(Instant::now());
        }
    }
    Outcome { record, sent_at, last_byte_at, answer: account.take_answer() }
}

/// After `[DONE]`, how long to wait for the body's end so the connection can be reused.
/// Not part of any latency: the end was already stamped.
const DRAIN_AFTER_DONE: Duration = Duration::from_millis(50);
/// At most this much of a body is read after `[DONE]` to free its connection.
const DRAIN_BUDGET_BYTES: usize = 64 * 1024;

/// How requests reach the server: the lean HTTP/1.1 client for `http://` (its reads carry the
/// kernel's receive stamps; see [`crate::wire`]; SSE parsed by [`SseParser`]), reqwest for
/// everything else when the `https` feature is on (SSE parsed by `eventsource-stream`).
pub(crate) enum Transport {
    Wire(WireClient),
    #[cfg(feature = "https")]
    Reqwest(reqwest::Client),
}

impl Transport {
    /// The transport for `url`; reqwest (keeping `pool` idle connections, `timeout` on every
    /// request) is built only when it is used.
    pub(crate) fn for_url(
        url: &str,
        choice: HttpClient,
        connect_timeout: Duration,
        pool: usize,
        timeout: Option<Duration>,
    ) -> Result<Transport, BenchError> {
        let wire = match choice {
            HttpClient::Auto => WireClient::for_url(url, connect_timeout, CLIENT),
            HttpClient::Reqwest => None,
        };
        match wire {
            Some(wire) => Ok(Transport::Wire(wire)),
            #[cfg(feature = "https")]
            None => Ok(Transport::Reqwest(https::client(connect_timeout, pool, timeout)?)),
            #[cfg(not(feature = "https"))]
            None => {
                let _ = (pool, timeout);
                Err(BenchError::HttpsNotBuilt { url: url.to_string() })
            }
        }
    }

    async fn send<'a>(&'a self, url: &'a str, body: Vec<u8>, token: Option<&Secret>) -> Result<Response<'a>, Failure> {
        match self {
            Transport::Wire(client) => client
                .post(&body, token)
                .await
                .map(|response| Response::Wire { response, url })
                .map_err(|e| classify_wire_error(e, url)),
            #[cfg(feature = "https")]
            Transport::Reqwest(client) => {
                let response = https::send(client, url, body, token).await?;
                Ok(Response::Reqwest { response, body: Vec::new(), url })
            }
        }
    }
}

/// A response whose head arrived.
enum Response<'a> {
    Wire {
        response: WireResponse<'a>,
        url: &'a str,
    },
    #[cfg(feature = "https")]
    Reqwest {
        response: reqwest::Response,
        body: Vec<u8>,
        url: &'a str,
    },
}

impl Response<'_> {
    fn status(&self) -> http::StatusCode {
        match self {
            Response::Wire { response, .. } => {
                http::StatusCode::from_u16(response.status()).unwrap_or(http::StatusCode::BAD_GATEWAY)
            }
            #[cfg(feature = "https")]
            Response::Reqwest { response, .. } => response.status(),
        }
    }

    /// When the head arrived (the kernel's stamp on the wire transport).
    fn head_arrived(&self) -> Instant {
        match self {
            Response::Wire { response, .. } => response.head_arrived(),
            #[cfg(feature = "https")]
            Response::Reqwest { .. } => Instant::now(),
        }
    }

    /// Waits for body bytes: `Some(arrival)` with the bytes in [`Response::body`]; `None` at
    /// the end of the body.
    async fn read(&mut self) -> Result<Option<Instant>, Failure> {
        match self {
            Response::Wire { response, url } => response.read().await.map_err(|e| classify_wire_error(e, url)),
            #[cfg(feature = "https")]
            Response::Reqwest { response, body, url } => {
                body.clear();
                match response.chunk().await {
                    Ok(Some(bytes)) => {
                        body.extend_from_slice(&bytes);
                        Ok(Some(Instant::now()))
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(https::classify_body_error(&e, url)),
                }
            }
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            Response::Wire { response, .. } => response.body(),
            #[cfg(feature = "https")]
            Response::Reqwest { body, .. } => body,
        }
    }

    /// Reads what is left of a finished stream for a moment, so the connection can be reused.
    async fn drain(self) {
        let deadline = Instant::now() + DRAIN_AFTER_DONE;
        match self {
            Response::Wire { response, .. } => response.finish(deadline, DRAIN_BUDGET_BYTES).await,
            #[cfg(feature = "https")]
            Response::Reqwest { mut response, .. } => {
                let mut budget = DRAIN_BUDGET_BYTES;
                while let Ok(Ok(Some(bytes))) = timeout_at(deadline.into(), response.chunk()).await {
                    budget = budget.saturating_sub(bytes.len());
                    if budget == 0 {
                        break;
                    }
                }
            }
        }
    }

    /// The start of an error response body, for the error message.
    async fn snippet(&mut self, total_deadline: Instant) -> String {
        let deadline = total_deadline.min(Instant::now() + Duration::from_secs(1));
        let mut text = Vec::new();
        while text.len() < 300 {
            match timeout_at(deadline.into(), self.read()).await {
                Ok(Ok(Some(_))) => text.extend_from_slice(self.body()),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&text[..text.len().min(300)]).trim().to_string();
        if text.is_empty() { "(empty body)".to_string() } else { text }
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    ctx: &RequestContext,
    index: usize,
    body: Vec<u8>,
    scheduled: Instant,
    sent_at: Instant,
    account: &mut StreamAccount,
    last_byte_at: &mut Instant,
) -> Result<Instant, Failure> {
    let t = &ctx.timeouts;
    let url = ctx.url.as_str();
    let total_deadline = sent_at + ctx.client_timeout.map_or(t.total, |cap| cap.min(t.total));
    let (first_deadline, first_class) = if sent_at + t.first_token < total_deadline {
        (sent_at + t.first_token, ErrorClass::TimeoutFirstToken)
    } else {
        (total_deadline, ErrorClass::TimeoutTotal)
    };
    let mut response = match timeout_at(first_deadline.into(), ctx.transport.send(url, body, ctx.token.as_ref())).await
    {
        Err(_) => {
            return Err((first_class, format!("no response headers from {url} within {:?}", first_deadline - sent_at)));
        }
        Ok(Err(failure)) => return Err(failure),
        Ok(Ok(response)) => response,
    };
    *last_byte_at = response.head_arrived();
    let status = response.status();
    if !status.is_success() {
        let snippet = response.snippet(total_deadline).await;
        return Err((ErrorClass::HttpStatus, format!("HTTP {status} from {url}: {snippet}")));
    }

    let first_token = FirstToken { watch: ctx.watch.as_deref(), index, told: AtomicBool::new(false) };
    let limits = Limits { first_deadline, first_class, total_deadline, timeouts: t, first_token };
    #[cfg(feature = "https")]
    let response = match response {
        Response::Reqwest { response, .. } => {
            return https::reqwest_events(response, url, scheduled, &limits, account, last_byte_at).await;
        }
        wire => wire,
    };
    let mut response = response;
    let mut parser = SseParser::default();
    loop {
        let (deadline, class) = limits.next_read(account, *last_byte_at);
        let arrived = match timeout_at(deadline.into(), response.read()).await {
            Err(_) => return Err((class, timeout_message(class, url, t))),
            Ok(Err(failure)) => return Err(failure),
            Ok(Ok(arrived)) => arrived,
        };
        let mut stop = None;
        let Some(now) = arrived else {
            let now = Instant::now().max(*last_byte_at);
            let mut on_event = |data: &[u8]| on_event(account, &mut stop, data, ns_between(scheduled, now));
            parser.finish(&mut on_event).map_err(|e| (ErrorClass::MalformedSse, format!("{e} (from {url})")))?;
            return ended(stop, account, url, now);
        };
        *last_byte_at = now;
        let now_ns = ns_between(scheduled, now);
        let mut on_event = |data: &[u8]| on_event(account, &mut stop, data, now_ns);
        parser
            .feed(response.body(), &mut on_event)
            .map_err(|e| (ErrorClass::MalformedSse, format!("{e} (from {url})")))?;
        match stop {
            Some(Stop::Done) => {
                response.drain().await;
                return Ok(now);
            }
            Some(Stop::Failed(class, message)) => return Err((class, message)),
            None => {}
        }
    }
}

/// The deadlines of one stream.
struct Limits<'a> {
    first_deadline: Instant,
    first_class: ErrorClass,
    total_deadline: Instant,
    timeouts: &'a Timeouts,
    first_token: FirstToken<'a>,
}

/// Tells a watch, once, when the stream's first content chunk arrived.
struct FirstToken<'a> {
    watch: Option<&'a SloWatch>,
    index: usize,
    told: AtomicBool,
}

impl Limits<'_> {
    /// Until when the next read may take, and the class of missing it: the first-token deadline
    /// until a content chunk arrived, then the idle timeout after the last byte, capped by the total.
    /// Both stream loops ask before every read, right after handling the last one, which is when a
    /// watch hears of the first token.
    fn next_read(&self, account: &StreamAccount, last_byte_at: Instant) -> (Instant, ErrorClass) {
        if let (Some(watch), Some(ttft_ns)) = (self.first_token.watch, account.first_content_ns())
            && !self.first_token.told.swap(true, Ordering::Relaxed)
        {
            watch.first_token(self.first_token.index, ttft_ns);
        }
        if !account.has_content() {
            (self.first_deadline, self.first_class)
        } else if last_byte_at + self.timeouts.idle_between_chunks < self.total_deadline {
            (last_byte_at + self.timeouts.idle_between_chunks, ErrorClass::TimeoutIdle)
        } else {
            (self.total_deadline, ErrorClass::TimeoutTotal)
        }
    }
}

/// The verdict on a body that ended at `now`, after `stop` (if any) from its events.
fn ended(stop: Option<Stop>, account: &StreamAccount, url: &str, now: Instant) -> Result<Instant, Failure> {
    match stop {
        Some(Stop::Failed(class, message)) => Err((class, message)),
        Some(Stop::Done) => Ok(now),
        None if account.saw_finish_reason() => Ok(now),
        None => Err((
            ErrorClass::EarlyClose,
            format!(
                "{url} closed the stream after {} content chunks without [DONE] or a finish_reason",
                account.content_chunks()
            ),
        )),
    }
}

/// Hands one event to the account; a stop is kept in `stop` and ends the parse.
fn on_event(account: &mut StreamAccount, stop: &mut Option<Stop>, data: &[u8], now_ns: u64) -> ControlFlow<()> {
    match account.on_event(data, now_ns) {
        ControlFlow::Break(reason) => {
            *stop = Some(reason);
            ControlFlow::Break(())
        }
        ControlFlow::Continue(()) => ControlFlow::Continue(()),
    }
}

fn timeout_message(class: ErrorClass, url: &str, t: &Timeouts) -> String {
    match class {
        ErrorClass::TimeoutFirstToken => format!("no token from {url} within first_token timeout {:?}", t.first_token),
        ErrorClass::TimeoutIdle => {
            format!("{url} sent nothing for the idle_between_chunks timeout {:?}", t.idle_between_chunks)
        }
        _ => format!("{url} did not finish within the total timeout {:?}", t.total),
    }
}

fn classify_wire_error(error: WireError, url: &str) -> Failure {
    let message = match &error {
        WireError::Connect(why) => format!("request to {url} failed: {why}"),
        WireError::Closed(why) => format!("stream from {url} broke: {why}"),
        WireError::Malformed(why) => format!("{url} answered with broken HTTP: {why}"),
    };
    (error.class(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_https_endpoint_goes_to_reqwest_or_is_refused_with_what_to_do() {
        let url = "https://example.com/v1/completions";
        let transport = Transport::for_url(url, HttpClient::Auto, Duration::from_secs(1), 1, None);
        #[cfg(feature = "https")]
        assert!(matches!(transport, Ok(Transport::Reqwest(_))));
        #[cfg(not(feature = "https"))]
        {
            let error = transport.err().expect("refused").to_string();
            assert!(error.contains("`https` feature") && error.contains(url), "{error}");
        }
        let plain =
            Transport::for_url("http://127.0.0.1:9/v1/completions", HttpClient::Auto, Duration::from_secs(1), 1, None);
        assert!(matches!(plain, Ok(Transport::Wire(_))));
    }

    #[test]
    fn wall_clock_maps_instants_both_ways() {
        let clock = WallClock::now();
        let later = clock.instant + Duration::from_millis(5);
        assert_eq!(clock.wall_ns(later) - clock.wall_ns(clock.instant), 5_000_000);
        if let Some(earlier) = clock.instant.checked_sub(Duration::from_millis(3)) {
            assert_eq!(clock.wall_ns(clock.instant) - clock.wall_ns(earlier), 3_000_000);
        }
    }
}
