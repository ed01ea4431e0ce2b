//! One stream through the crate's parser and accounting, and the tally the phases keep of many.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autodebug_core::ErrorClass;
use serde::Deserialize;

use super::SERVED_MODEL;
use crate::sse::SseParser;
use crate::stream::{Stop, StreamAccount};
use crate::wire::WireClient;

/// The server's own stamps on the first content chunk.
#[derive(Deserialize)]
struct SimStamps {
    sim_ts_ns: Option<u64>,
    /// When the chunk left the server's HTTP layer; older simulators lack it.
    sim_sent_ns: Option<u64>,
    sim_arrival_ns: Option<u64>,
}

impl SimStamps {
    fn first_byte_ns(&self) -> Option<u64> {
        self.sim_sent_ns.or(self.sim_ts_ns)
    }

    /// Arrival to the moment the first chunk was sent (else produced): what a client with no
    /// error of its own would read as TTFT.
    fn server_ttft_ns(&self) -> Option<u64> {
        Some(self.first_byte_ns()?.saturating_sub(self.sim_arrival_ns?))
    }
}

/// Now on the Unix clock the simulator stamps with, ns.
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

#[derive(Debug, Default)]
pub(super) struct StreamResult {
    /// SSE events (data) received, `[DONE]` included.
    pub(super) events: u64,
    pub(super) content_chunks: u64,
    /// Client TTFT: request written → first content chunk read.
    pub(super) client_ttft_ns: Option<u64>,
    /// Server TTFT: first content chunk's `sim_sent_ns` − `sim_arrival_ns`.
    pub(super) server_ttft_ns: Option<u64>,
    /// The TTFT error split by the shared Unix clock: request written → arrival stamp (the
    /// request leg), first chunk sent → read (the response leg), ns; may be negative by the
    /// clocks' anchoring error.
    pub(super) legs_ns: Option<(i64, i64)>,
    /// The first content chunk's arrival → its read returning, ns.
    pub(super) read_lag_ns: Option<u64>,
    pub(super) error: Option<ErrorClass>,
}

/// Holds streams after their headers until every stream of the phase is open.
pub(super) struct HoldGate {
    pub(super) opened: AtomicUsize,
    pub(super) resolved: AtomicUsize,
    pub(super) release: tokio::sync::watch::Receiver<bool>,
}

pub(super) async fn one_stream(
    client: &WireClient,
    body: Vec<u8>,
    timeout: Duration,
    gate: Option<&HoldGate>,
    connect_permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> StreamResult {
    let mut result = StreamResult::default();
    let sent_at = Instant::now();
    let sent_unix_ns = unix_now_ns();
    let sent = tokio::time::timeout(timeout, client.post(&body, None)).await;
    // The permit only spaces out connects: the next stream may connect once this one resolved.
    drop(connect_permit);
    if let Some(gate) = gate {
        gate.resolved.fetch_add(1, Ordering::AcqRel);
    }
    let mut response = match sent {
        Err(_) => return failed(result, ErrorClass::TimeoutFirstToken),
        Ok(Err(error)) => return failed(result, error.class()),
        Ok(Ok(response)) if !(200..300).contains(&response.status()) => {
            return failed(result, ErrorClass::HttpStatus);
        }
        Ok(Ok(response)) => response,
    };
    if let Some(gate) = gate {
        gate.opened.fetch_add(1, Ordering::AcqRel);
        let mut release = gate.release.clone();
        if release.wait_for(|released| *released).await.is_err() {
            return failed(result, ErrorClass::EarlyClose);
        }
    }

    let mut parser = SseParser::default();
    let mut account = StreamAccount::new();
    let mut stop = None;
    loop {
        let read = match tokio::time::timeout(timeout, response.read()).await {
            Err(_) => return failed(result, ErrorClass::TimeoutIdle),
            Ok(Err(error)) => return failed(result, error.class()),
            Ok(Ok(read)) => read,
        };
        let read_at = Instant::now();
        let arrived = read.unwrap_or(read_at);
        let now_ns = nanos_since(sent_at, arrived);
        let mut on_event = |data: &[u8]| {
            result.events += 1;
            let had_content = account.has_content();
            let flow = account.on_event(data, now_ns);
            if !had_content && account.has_content() {
                result.client_ttft_ns = Some(now_ns);
                result.read_lag_ns = Some(nanos_since(arrived, read_at));
                // Once per request, after the arrival was stamped: not on the measured path.
                if let Ok(stamps) = serde_json::from_slice::<SimStamps>(data) {
                    result.server_ttft_ns = stamps.server_ttft_ns();
                    if let (Some(arrived), Some(first_byte)) = (stamps.sim_arrival_ns, stamps.first_byte_ns()) {
                        let read_unix_ns = sent_unix_ns + now_ns;
                        result.legs_ns =
                            Some((arrived as i64 - sent_unix_ns as i64, read_unix_ns as i64 - first_byte as i64));
                    }
                }
            }
            match flow {
                ControlFlow::Break(reason) => {
                    stop = Some(reason);
                    ControlFlow::Break(())
                }
                ControlFlow::Continue(()) => ControlFlow::Continue(()),
            }
        };
        let parsed = match read {
            Some(_) => parser.feed(response.body(), &mut on_event),
            None => parser.finish(&mut on_event),
        };
        result.content_chunks = account.content_chunks() as u64;
        if parsed.is_err() {
            return failed(result, ErrorClass::MalformedSse);
        }
        match stop.take() {
            Some(Stop::Done) => {
                // Read the body's end so the connection goes back to the pool: otherwise the next
                // request of this worker would pay (and its TTFT include) a new connect.
                response.finish(Instant::now() + Duration::from_millis(50), 64 * 1024).await;
                return result;
            }
            Some(Stop::Failed(class, _)) => return failed(result, class),
            None if read.is_none() => {
                return if account.saw_finish_reason() { result } else { failed(result, ErrorClass::EarlyClose) };
            }
            None => {}
        }
    }
}

pub(super) fn failed(mut result: StreamResult, class: ErrorClass) -> StreamResult {
    result.error = Some(class);
    result
}

fn nanos_since(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_nanos().min(u128::from(u64::MAX)) as u64
}

pub(super) fn chat_body(prompt_words: usize, max_tokens: u32, index: usize) -> Vec<u8> {
    // Distinct prompts so the prefix cache does not turn the TTFT phases into cache hits.
    let prompt: Vec<String> = (0..prompt_words).map(|i| format!("w{}", (index * 31 + i * 7) % 997)).collect();
    let body = serde_json::json!({
        "model": SERVED_MODEL,
        "messages": [{"role": "user", "content": prompt.join(" ")}],
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    body.to_string().into_bytes()
}

#[derive(Default)]
pub(super) struct Tally {
    pub(super) events: u64,
    pub(super) content_chunks: u64,
    pub(super) errors: BTreeMap<&'static str, u64>,
    /// TTFT errors in ms.
    pub(super) errors_ms: Vec<f64>,
    /// Their request and response legs in ms.
    pub(super) request_legs_ms: Vec<f64>,
    pub(super) response_legs_ms: Vec<f64>,
    pub(super) read_lags_ms: Vec<f64>,
}

impl Tally {
    pub(super) fn add(&mut self, result: &StreamResult, measured: bool) {
        self.events += result.events;
        self.content_chunks += result.content_chunks;
        if let Some(class) = result.error {
            *self.errors.entry(class.as_str()).or_default() += 1;
        } else if measured && let (Some(client), Some(server)) = (result.client_ttft_ns, result.server_ttft_ns) {
            self.errors_ms.push((client as f64 - server as f64) / 1e6);
            if let Some((request, response)) = result.legs_ns {
                self.request_legs_ms.push(request as f64 / 1e6);
                self.response_legs_ms.push(response as f64 / 1e6);
            }
            if let Some(lag) = result.read_lag_ns {
                self.read_lags_ms.push(lag as f64 / 1e6);
            }
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned tally only means a task panicked mid-count; the counts are still usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
