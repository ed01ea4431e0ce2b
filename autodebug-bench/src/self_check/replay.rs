//! Offline replay of recorded SSE bytes through the parser and accounting, for microbenchmarks and fuzzing.

use std::ops::ControlFlow;

use autodebug_core::ErrorClass;
use serde::Serialize;

use crate::sse::SseParser;
use crate::stream::{Stop, StreamAccount};

/// How a replayed stream ended, as a live request would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ReplayEnd {
    /// `data: [DONE]` arrived.
    Done,
    /// The bytes ended without `[DONE]` after a choice gave a `finish_reason`: complete.
    Finished,
    /// The request would fail with this class.
    Failed(ErrorClass),
}

/// What [`replay_sse`] saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayOutcome {
    /// SSE events handed to the accounting, `[DONE]` included.
    pub events: u64,
    pub content_chunks: u64,
    /// Output tokens the request record would carry (usage, else counted).
    pub output_tokens: u32,
    pub end: ReplayEnd,
}

/// Feeds recorded response bytes, split into network reads as given, through the client's SSE
/// parser and per-stream accounting — the exact per-chunk path of a live request, minus the
/// socket. Never panics, whatever the bytes.
///
/// ```
/// use autodebug_bench::self_check::{ReplayEnd, replay_sse};
/// let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
/// let (a, b) = body.split_at(10);
/// let outcome = replay_sse([a, b]);
/// assert_eq!((outcome.content_chunks, outcome.end), (1, ReplayEnd::Done));
/// ```
pub fn replay_sse<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> ReplayOutcome {
    let mut parser = SseParser::default();
    let mut account = StreamAccount::new();
    let mut events = 0u64;
    let mut stop = None;
    let mut malformed = false;
    for (at, read) in reads.into_iter().enumerate() {
        let at = at as u64 + 1;
        let fed = parser.feed(read, &mut |data| replay_event(&mut account, data, at, &mut events, &mut stop));
        if fed.is_err() {
            malformed = true;
            break;
        }
        if stop.is_some() {
            break;
        }
    }
    if !malformed && stop.is_none() {
        let at = u64::MAX;
        malformed = parser.finish(&mut |data| replay_event(&mut account, data, at, &mut events, &mut stop)).is_err();
    }
    let end = match (malformed, stop) {
        (true, _) => ReplayEnd::Failed(ErrorClass::MalformedSse),
        (false, Some(Stop::Done)) => ReplayEnd::Done,
        (false, Some(Stop::Failed(class, _))) => ReplayEnd::Failed(class),
        (false, None) if account.saw_finish_reason() => ReplayEnd::Finished,
        (false, None) => ReplayEnd::Failed(ErrorClass::EarlyClose),
    };
    ReplayOutcome {
        events,
        content_chunks: account.content_chunks() as u64,
        output_tokens: account.token_split().output_tokens,
        end,
    }
}

/// Parses recorded response bytes, split into reads as given, with the SSE parser of the lean
/// HTTP/1.1 path alone (no JSON, no accounting), handing each event's data to `on_event`;
/// returns the events, or why the bytes are not SSE. For the side-by-side parser benchmark.
///
/// ```
/// let mut bytes = 0;
/// let events = autodebug_bench::self_check::parse_sse([&b"data: a\n\nda"[..], b"ta: bc\n\n"], |d| bytes += d.len());
/// assert_eq!((events, bytes), (Ok(2), 3));
/// ```
pub fn parse_sse<'a>(
    reads: impl IntoIterator<Item = &'a [u8]>,
    mut on_event: impl FnMut(&[u8]),
) -> Result<u64, String> {
    let mut parser = SseParser::default();
    let mut events = 0u64;
    let mut count = |data: &[u8]| {
        events += 1;
        on_event(data);
        ControlFlow::Continue(())
    };
    for read in reads {
        parser.feed(read, &mut count).map_err(|e| e.to_string())?;
    }
    parser.finish(&mut count).map_err(|e| e.to_string())?;
    Ok(events)
}

fn replay_event(
    account: &mut StreamAccount,
    data: &[u8],
    at: u64,
    events: &mut u64,
    stop: &mut Option<Stop>,
) -> ControlFlow<()> {
    *events += 1;
    match account.on_event(data, at) {
        ControlFlow::Break(reason) => {
            *stop = Some(reason);
            ControlFlow::Break(())
        }
        ControlFlow::Continue(()) => ControlFlow::Continue(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_classifies_endings() {
        let chunk = br#"data: {"choices":[{"delta":{"content":"a b"},"finish_reason":null}]}"#;
        let done = [&chunk[..], b"\n\ndata: [DONE]\n\n"].concat();
        assert_eq!(replay_sse([&done[..]]).end, ReplayEnd::Done);
        let open = [&chunk[..], b"\n\n"].concat();
        assert_eq!(replay_sse([&open[..]]).end, ReplayEnd::Failed(ErrorClass::EarlyClose));
        assert_eq!(replay_sse([&b"<html>\n"[..]]).end, ReplayEnd::Failed(ErrorClass::MalformedSse));
        assert_eq!(replay_sse([&b"data: {oops\n\n"[..]]).end, ReplayEnd::Failed(ErrorClass::MalformedJson));
        let finished = br#"data: {"choices":[{"text":"x","finish_reason":"length"}]}"#;
        let outcome = replay_sse([&finished[..]]);
        assert_eq!((outcome.end, outcome.content_chunks, outcome.output_tokens), (ReplayEnd::Finished, 1, 1));
    }
}
