//! A strict, allocation-light Server-Sent Events parser for OpenAI-style streams, and the line
//! check that makes `eventsource-stream` as strict.
//!
//! The SSE spec says unknown lines are ignored, so a general-purpose parser turns an HTML error
//! page or a proxy's garbage into "no events", which would surface as a confusing early close. A
//! benchmark must say *malformed SSE* instead. [`SseParser`] accepts the fields OpenAI-compatible
//! servers send (`data`, `event`, `id`, `retry`, `:` comments) and rejects anything else, bounds
//! line length, and hands each event's data to a callback as a borrowed byte slice (no
//! allocation once its buffers grew). It parses the lean HTTP/1.1 path (`wire.rs`), where it
//! measured several times faster than `eventsource-stream` on the same bytes (`bench_sse_parsers`
//! in `benches/`; ratio in `benches/README.md`). The reqwest path (https, proxies) parses with
//! `eventsource-stream` and runs its reads through `SseLineCheck` first, so both paths refuse
//! the same garbage.

use std::ops::ControlFlow;

#[cfg(feature = "https")]
mod line_check;
#[cfg(feature = "https")]
pub(crate) use line_check::SseLineCheck;

/// Longest line accepted; a server that never sends a newline cannot grow memory without bound.
pub(crate) const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Most data one event may carry: `data:` lines joined until a blank line. The line cap alone lets
/// a server that never sends a blank line grow an event without bound, one short line at a time.
pub(crate) const MAX_EVENT_BYTES: usize = MAX_LINE_BYTES;

/// Why a byte stream is not SSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseError {
    /// A line that is neither a known field, a comment nor blank (first 80 bytes, lossy).
    UnknownLine(String),
    /// A line longer than [`MAX_LINE_BYTES`].
    LineTooLong,
    /// An event whose data is longer than [`MAX_EVENT_BYTES`].
    EventTooLarge,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::UnknownLine(line) => write!(f, "not an SSE line: {line:?}"),
            SseError::LineTooLong => write!(f, "SSE line longer than {MAX_LINE_BYTES} bytes"),
            SseError::EventTooLarge => write!(f, "SSE event with more than {MAX_EVENT_BYTES} bytes of data"),
        }
    }
}

/// Incremental parser: feed it network reads in order, it calls back once per complete event.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Data lines of the event being assembled, joined by `\n`.
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    /// Parses `bytes`; `on_event` gets each event's data and may stop parsing with `Break`
    /// (the rest of `bytes` is then dropped: the caller is done with the stream).
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        on_event: &mut impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), SseError> {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            let (head, rest) = (&bytes[..newline], &bytes[newline + 1..]);
            bytes = rest;
            let flow = if self.partial.is_empty() {
                self.line(head, on_event)?
            } else {
                if self.partial.len() + head.len() > MAX_LINE_BYTES {
                    return Err(SseError::LineTooLong);
                }
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                let flow = self.line(&line, on_event);
                line.clear();
                self.partial = line;
                flow?
            };
            if flow.is_break() {
                return Ok(());
            }
        }
        if self.partial.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(SseError::LineTooLong);
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// At the end of the stream: an unterminated last line or event still counts, since some
    /// servers end with `data: [DONE]` and no blank line.
    pub(crate) fn finish(&mut self, on_event: &mut impl FnMut(&[u8]) -> ControlFlow<()>) -> Result<(), SseError> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            if self.line(&line, on_event)?.is_break() {
                return Ok(());
            }
        }
        let _ = self.dispatch(on_event);
        Ok(())
    }

    fn line(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, SseError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(self.dispatch(on_event));
        }
        if line[0] == b':' {
            return Ok(ControlFlow::Continue(()));
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + usize::from(self.has_data) > MAX_EVENT_BYTES {
                    return Err(SseError::EventTooLarge);
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" | b"id" | b"retry" => {}
            _ => {
                let shown = &line[..line.len().min(80)];
                return Err(SseError::UnknownLine(String::from_utf8_lossy(shown).into_owned()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(&[u8]) -> ControlFlow<()>) -> ControlFlow<()> {
        if !self.has_data {
            return ControlFlow::Continue(());
        }
        self.has_data = false;
        let flow = on_event(&self.data);
        self.data.clear();
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_of(pieces: &[&[u8]]) -> Result<Vec<String>, SseError> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        let mut collect = |data: &[u8]| {
            events.push(String::from_utf8_lossy(data).into_owned());
            ControlFlow::Continue(())
        };
        for piece in pieces {
            parser.feed(piece, &mut collect)?;
        }
        parser.finish(&mut collect)?;
        Ok(events)
    }

    #[test]
    fn events_split_across_reads_crlf_comments_and_multiline_data() {
        let events =
            events_of(&[b"data: {\"a\"", b":1}\r\n\r\n: keep-alive\n", b"event: x\ndata: l1\ndata:l2\n\ndata: [DONE]"])
                .unwrap();
        assert_eq!(events, vec!["{\"a\":1}", "l1\nl2", "[DONE]"]);
    }

    #[test]
    fn every_byte_boundary_gives_the_same_events() {
        let stream = b"data: one\n\ndata: two\r\n\r\n:c\ndata: three\n\n";
        let whole = events_of(&[stream]).unwrap();
        for cut in 0..stream.len() {
            assert_eq!(events_of(&[&stream[..cut], &stream[cut..]]).unwrap(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_and_endless_lines_are_rejected() {
        assert!(matches!(events_of(&[b"<html>oops</html>\n\n"]), Err(SseError::UnknownLine(_))));
        assert!(matches!(events_of(&[b"hello: world\n"]), Err(SseError::UnknownLine(_))));
        let long = vec![b'a'; MAX_LINE_BYTES / 2 + 1];
        assert_eq!(events_of(&[&long, &long]), Err(SseError::LineTooLong));
    }

    #[test]
    fn callback_can_stop_parsing() {
        let mut parser = SseParser::default();
        let mut seen = 0;
        parser
            .feed(b"data: 1\n\ndata: 2\n\n", &mut |_| {
                seen += 1;
                ControlFlow::Break(())
            })
            .unwrap();
        assert_eq!(seen, 1);
    }
}
