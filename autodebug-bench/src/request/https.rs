//! The reqwest transport (`https://`, proxies, [`HttpClient::Reqwest`](super::HttpClient::Reqwest)):
//! built only with the `https` feature, so an embedder that benchmarks plain `http://` endpoints
//! does not compile a TLS stack. Its SSE is parsed by `eventsource-stream` behind [`SseLineCheck`],
//! with the same deadlines and verdicts as the lean client's loop.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autodebug_core::{ErrorClass, Secret};
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use tokio::time::timeout_at;

use super::{CLIENT, DRAIN_AFTER_DONE, DRAIN_BUDGET_BYTES, Failure, Limits, ended, ns_between, timeout_message};
use crate::error::BenchError;
use crate::sse::{SseError, SseLineCheck};
use crate::stream::{Stop, StreamAccount};

/// The reqwest client of one run: `pool` idle connections kept per host, `timeout` on every request.
pub(super) fn client(
    connect_timeout: Duration,
    pool: usize,
    timeout: Option<Duration>,
) -> Result<reqwest::Client, BenchError> {
    let mut client = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(CLIENT);
    if let Some(timeout) = timeout {
        client = client.timeout(timeout);
    }
    client.build().map_err(BenchError::Client)
}

/// Sends one streaming request; the response's head has arrived when this returns.
pub(super) async fn send(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    token: Option<&Secret>,
) -> Result<reqwest::Response, Failure> {
    let mut request =
        client.post(url).header(CONTENT_TYPE, "application/json").header(ACCEPT, "text/event-stream").body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token.expose());
    }
    request.send().await.map_err(|e| classify_send_error(&e, url))
}

/// One piece of a reqwest body as `eventsource-stream` reads it: a network read, or the blank
/// lines appended at the body's end, so an unterminated last event still counts, as
/// [`SseParser::finish`] counts it on the other path.
enum BodyPiece<B> {
    Read(B),
    End,
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for BodyPiece<B> {
    fn as_ref(&self) -> &[u8] {
        match self {
            BodyPiece::Read(bytes) => bytes.as_ref(),
            BodyPiece::End => b"\n\n",
        }
    }
}

/// Why a reqwest body stopped before `eventsource-stream` saw its bytes.
#[derive(Debug)]
enum BodyError {
    Http(reqwest::Error),
    Sse(SseError),
}

/// What the body's reads reported to the loop that awaits its events: ns after the response head
/// arrived, since an event is yielded by the read that completed it (`eventsource-stream` hands
/// out the events already buffered before it reads again), so the last read's time is its arrival.
#[derive(Default)]
struct ReadStamps {
    /// Arrival of the last read, ns after the head, +1 (0: none yet).
    last_read: AtomicU64,
    /// When the body's end was seen, ns after the head, +1 (0: not yet).
    end: AtomicU64,
    bytes: AtomicUsize,
}

impl ReadStamps {
    fn at(base: Instant, stamp: &AtomicU64) -> Option<Instant> {
        match stamp.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(base + Duration::from_nanos(ns - 1)),
        }
    }
}

/// The reqwest path: the body's reads go through [`SseLineCheck`] into `eventsource-stream`,
/// its events into `account`, under the same deadlines and with the same verdicts as the lean
/// client's loop in [`stream`]. Events are stamped by the read that completed them.
pub(super) async fn reqwest_events(
    response: reqwest::Response,
    url: &str,
    scheduled: Instant,
    limits: &Limits<'_>,
    account: &mut StreamAccount,
    last_byte_at: &mut Instant,
) -> Result<Instant, Failure> {
    let base = *last_byte_at;
    let stamps = Arc::new(ReadStamps::default());
    let reads = stamps.clone();
    let mut check = SseLineCheck::default();
    let body = response
        .bytes_stream()
        .map(|read| read.map(BodyPiece::Read).map_err(BodyError::Http))
        .chain(futures_util::stream::once(std::future::ready(Ok(BodyPiece::End))))
        .map(move |piece| {
            let piece = piece?;
            let ns = ns_between(base, Instant::now()).saturating_add(1);
            match &piece {
                BodyPiece::Read(bytes) => {
                    reads.last_read.store(ns, Ordering::Relaxed);
                    reads.bytes.fetch_add(bytes.len(), Ordering::Relaxed);
                    check.check(bytes).map_err(BodyError::Sse)?;
                }
                BodyPiece::End => reads.end.store(ns, Ordering::Relaxed),
            }
            Ok(piece)
        });
    let mut events = body.eventsource();
    loop {
        let (deadline, class) = limits.next_read(account, *last_byte_at);
        let next = timeout_at(deadline.into(), events.next()).await;
        let last_read = ReadStamps::at(base, &stamps.last_read).unwrap_or(base);
        let end = ReadStamps::at(base, &stamps.end);
        let read_since = last_read > *last_byte_at;
        *last_byte_at = (*last_byte_at).max(last_read);
        let event = match next {
            // Reads that completed no event (a keep-alive comment, half an event) still count as
            // bytes for the idle timeout, as they do on the other path; `next()` is cancel-safe.
            Err(_) if read_since => continue,
            Err(_) => return Err((class, timeout_message(class, url, limits.timeouts))),
            Ok(None) => {
                let now = end.unwrap_or_else(Instant::now).max(*last_byte_at);
                return ended(None, account, url, now);
            }
            Ok(Some(Err(error))) => return Err(classify_event_error(error, url)),
            Ok(Some(Ok(event))) => event,
        };
        let now = end.map_or(*last_byte_at, |end| end.max(*last_byte_at));
        match account.on_event(event.data.as_bytes(), ns_between(scheduled, now)) {
            ControlFlow::Continue(()) => {}
            ControlFlow::Break(Stop::Failed(class, message)) => return Err((class, message)),
            ControlFlow::Break(Stop::Done) => {
                // Read what is left for a moment, so the connection can be reused.
                let drain_until = Instant::now() + DRAIN_AFTER_DONE;
                let drained_from = stamps.bytes.load(Ordering::Relaxed);
                while stamps.bytes.load(Ordering::Relaxed) - drained_from < DRAIN_BUDGET_BYTES {
                    match timeout_at(drain_until.into(), events.next()).await {
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
                return Ok(now);
            }
        }
    }
}

fn classify_event_error(error: EventStreamError<BodyError>, url: &str) -> Failure {
    match error {
        EventStreamError::Transport(BodyError::Http(error)) => classify_body_error(&error, url),
        EventStreamError::Transport(BodyError::Sse(error)) => {
            (ErrorClass::MalformedSse, format!("{error} (from {url})"))
        }
        EventStreamError::Utf8(error) => {
            (ErrorClass::MalformedSse, format!("SSE that is not UTF-8 ({error}) from {url}"))
        }
        EventStreamError::Parser(error) => (ErrorClass::MalformedSse, format!("not SSE ({error:?}) from {url}")),
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

pub(super) fn classify_body_error(error: &reqwest::Error, url: &str) -> Failure {
    let class = if error.is_timeout() { ErrorClass::TimeoutTotal } else { ErrorClass::EarlyClose };
    (class, format!("stream from {url} broke: {}", chain(error)))
}
