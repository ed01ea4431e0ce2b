//! One streaming request: send, read the SSE stream under its timeouts, and record what arrived.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use autodebug_core::{ErrorClass, RequestRecord, Secret, TimeWindow, Timeouts};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use tokio::time::timeout_at;

use crate::benchmarker::HttpClient;
use crate::prompt::{Message, conversation_body};
use crate::sse::SseParser;
use crate::stream::{Stop, StreamAccount};
use crate::wire::{WireClient, WireError, WireResponse};

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
}

/// Maps the monotonic clock to wall-clock ns, so windows are exact and immune to clock steps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    instant: Instant,
    wall_ns: i128,
}

impl WallClock {
    pub(crate) fn now() -> Self {
        WallClock {
            instant: Instant::now(),
            wall_ns: TimeWindow::now_ns(),
        }
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
    to.saturating_duration_since(from)
        .as_nanos()
        .min(u128::from(u64::MAX)) as u64
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
    let body = conversation_body(
        &ctx.model,
        request.messages,
        request.max_tokens,
        ctx.ignore_eos,
        ctx.chat,
    );
    let sent_at = Instant::now();
    let scheduled = scheduled.unwrap_or(sent_at).min(sent_at);
    let mut record = RequestRecord {
        index,
        scheduled_ns: clock.wall_ns(scheduled),
        queue_delay_ns: ns_between(scheduled, sent_at),
        prompt_tokens: Some(request.prompt_tokens),
        ..RequestRecord::default()
    };
    let mut account = if request.keep_answer {
        StreamAccount::keeping_answer()
    } else {
        StreamAccount::new()
    };
    let mut last_byte_at = sent_at;
    let result = stream(
        ctx,
        body,
        scheduled,
        sent_at,
        &mut account,
        &mut last_byte_at,
    )
    .await;
    account.fill(&mut record);
    match result {
        Ok(end) => record.e2e_ns = Some(ns_between(scheduled, end)),
        Err((class, message)) => {
            tracing::debug!(index, class = class.as_str(), %message, "request failed");
            record.error = Some(class);
            record.error_message = Some(message);
            last_byte_at = last_byte_at.max(Instant::now());
        }
    }
    Outcome {
        record,
        sent_at,
        last_byte_at,
        answer: account.take_answer(),
    }
}

/// After `[DONE]`, how long to wait for the body's end so the connection can be reused.
/// Not part of any latency: the end was already stamped.
const DRAIN_AFTER_DONE: Duration = Duration::from_millis(50);
/// At most this much of a body is read after `[DONE]` to free its connection.
const DRAIN_BUDGET_BYTES: usize = 64 * 1024;

/// How requests reach the server: the lean HTTP/1.1 client for `http://` (its reads carry the
/// kernel's receive stamps; see [`crate::wire`]), reqwest for everything else.
pub(crate) enum Transport {
    Wire(WireClient),
    Reqwest(reqwest::Client),
}

impl Transport {
    /// The transport for `url`; `reqwest` is built only when it is used.
    pub(crate) fn for_url(
        url: &str,
        choice: HttpClient,
        connect_timeout: Duration,
        reqwest: impl FnOnce() -> Result<reqwest::Client, reqwest::Error>,
    ) -> Result<Transport, reqwest::Error> {
        let wire = match choice {
            HttpClient::Auto => WireClient::for_url(url, connect_timeout, crate::CLIENT),
            HttpClient::Reqwest => None,
        };
        match wire {
            Some(wire) => Ok(Transport::Wire(wire)),
            None => Ok(Transport::Reqwest(reqwest()?)),
        }
    }

    async fn send<'a>(&'a self, url: &'a str, body: Vec<u8>, token: Option<&Secret>) -> Result<Response<'a>, Failure> {
        match self {
            Transport::Wire(client) => client
                .post(&body, token)
                .await
                .map(|response| Response::Wire { response, url })
                .map_err(|e| classify_wire_error(e, url)),
            Transport::Reqwest(client) => {
                let mut request = client
                    .post(url)
                    .header(CONTENT_TYPE, "application/json")
                    .header(ACCEPT, "text/event-stream")
                    .body(body);
                if let Some(token) = token {
                    request = request.bearer_auth(token.expose());
                }
                let response = request.send().await.map_err(|e| classify_send_error(&e, url))?;
                Ok(Response::Reqwest { response, body: Vec::new(), url })
            }
        }
    }
}

/// A response whose head arrived.
enum Response<'a> {
    Wire { response: WireResponse<'a>, url: &'a str },
    Reqwest { response: reqwest::Response, body: Vec<u8>, url: &'a str },
}

impl Response<'_> {
    fn status(&self) -> reqwest::StatusCode {
        match self {
            Response::Wire { response, .. } => {
                reqwest::StatusCode::from_u16(response.status()).unwrap_or(reqwest::StatusCode::BAD_GATEWAY)
            }
            Response::Reqwest { response, .. } => response.status(),
        }
    }

    /// When the head arrived (the kernel's stamp on the wire transport).
    fn head_arrived(&self) -> Instant {
        match self {
            Response::Wire { response, .. } => response.head_arrived(),
            Response::Reqwest { .. } => Instant::now(),
        }
    }

    /// Waits for body bytes: `Some(arrival)` with the bytes in [`Response::body`]; `None` at
    /// the end of the body.
    async fn read(&mut self) -> Result<Option<Instant>, Failure> {
        match self {
            Response::Wire { response, url } => response.read().await.map_err(|e| classify_wire_error(e, url)),
            Response::Reqwest { response, body, url } => {
                body.clear();
                match response.chunk().await {
                    Ok(Some(bytes)) => {
                        body.extend_from_slice(&bytes);
                        Ok(Some(Instant::now()))
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(classify_body_error(&e, url)),
                }
            }
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            Response::Wire { response, .. } => response.body(),
            Response::Reqwest { body, .. } => body,
        }
    }

    /// Reads what is left of a finished stream for a moment, so the connection can be reused.
    async fn drain(self) {
        let deadline = Instant::now() + DRAIN_AFTER_DONE;
        match self {
            Response::Wire { response, .. } => response.finish(deadline, DRAIN_BUDGET_BYTES).await,
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

async fn stream(
    ctx: &RequestContext,
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
    let mut response = match timeout_at(first_deadline.into(), ctx.transport.send(url, body, ctx.token.as_ref())).await {
        Err(_) => {
            return Err((
                first_class,
                format!("no response headers from {url} within {:?}", first_deadline - sent_at),
            ));
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

    let mut parser = SseParser::default();
    loop {
        let (deadline, class) = if !account.has_content() {
            (first_deadline, first_class)
        } else if *last_byte_at + t.idle_between_chunks < total_deadline {
            (*last_byte_at + t.idle_between_chunks, ErrorClass::TimeoutIdle)
        } else {
            (total_deadline, ErrorClass::TimeoutTotal)
        };
        let arrived = match timeout_at(deadline.into(), response.read()).await {
            Err(_) => return Err((class, timeout_message(class, url, t))),
            Ok(Err(failure)) => return Err(failure),
            Ok(Ok(arrived)) => arrived,
        };
        let mut stop = None;
        let Some(now) = arrived else {
            let now = Instant::now().max(*last_byte_at);
            let mut on_event = |data: &[u8]| on_event(account, &mut stop, data, ns_between(scheduled, now));
            parser
                .finish(&mut on_event)
                .map_err(|e| (ErrorClass::MalformedSse, format!("{e} (from {url})")))?;
            return match stop {
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
            };
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
        ErrorClass::TimeoutFirstToken => format!(
            "no token from {url} within first_token timeout {:?}",
            t.first_token
        ),
        ErrorClass::TimeoutIdle => {
            format!(
                "{url} sent nothing for the idle_between_chunks timeout {:?}",
                t.idle_between_chunks
            )
        }
        _ => format!(
            "{url} did not finish within the total timeout {:?}",
            t.total
        ),
    }
}

/// `error: cause: cause` — reqwest's own Display omits the underlying reason.
fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn classify_send_error(error: &reqwest::Error, url: &str) -> Failure {
    let class = if error.is_connect() {
        ErrorClass::Connect
    } else if error.is_timeout() {
        ErrorClass::TimeoutTotal
    } else {
        ErrorClass::EarlyClose
    };
    (class, format!("request to {url} failed: {}", chain(error)))
}

fn classify_wire_error(error: WireError, url: &str) -> Failure {
    let message = match &error {
        WireError::Connect(why) => format!("request to {url} failed: {why}"),
        WireError::Closed(why) => format!("stream from {url} broke: {why}"),
        WireError::Malformed(why) => format!("{url} answered with broken HTTP: {why}"),
    };
    (error.class(), message)
}

fn classify_body_error(error: &reqwest::Error, url: &str) -> Failure {
    let class = if error.is_timeout() {
        ErrorClass::TimeoutTotal
    } else {
        ErrorClass::EarlyClose
    };
    (class, format!("stream from {url} broke: {}", chain(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_maps_instants_both_ways() {
        let clock = WallClock::now();
        let later = clock.instant + Duration::from_millis(5);
        assert_eq!(
            clock.wall_ns(later) - clock.wall_ns(clock.instant),
            5_000_000
        );
        if let Some(earlier) = clock.instant.checked_sub(Duration::from_millis(3)) {
            assert_eq!(
                clock.wall_ns(clock.instant) - clock.wall_ns(earlier),
                3_000_000
            );
        }
    }
}
