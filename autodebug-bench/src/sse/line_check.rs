//! The line check that makes `eventsource-stream` as strict as [`SseParser`](super::SseParser),
//! for the reqwest path (the `https` feature).

use super::{MAX_EVENT_BYTES, MAX_LINE_BYTES, SseError};

/// Bytes of a refused line's start shown in its error.
const SHOWN_BYTES: usize = 80;

/// The longest field name [`SseLineCheck`] accepts (`retry`, `event`).
const LONGEST_FIELD: usize = 5;

/// Checks a byte stream, read by read, for lines a strict parser would refuse, for use in front of
/// a parser that skips unknown lines silently: every line must be blank, a `:` comment, or a
/// `data`/`event`/`id`/`retry` field, and none longer than [`MAX_LINE_BYTES`]. Lines end at `\n`,
/// `\r\n` or a lone `\r`, as the SSE spec (and `eventsource-stream`) splits them; a leading
/// byte-order mark is allowed. It looks at each line's first bytes only and never holds more
/// than [`SHOWN_BYTES`] of it.
#[derive(Debug, Default)]
pub(crate) struct SseLineCheck {
    /// The current line's first bytes, while its field name is not yet known to be good.
    head: Vec<u8>,
    /// The current line's field name is known and good; the rest of the line is not inspected.
    accepted: bool,
    /// The accepted field is `data`, whose bytes add up to the event's size.
    data_line: bool,
    /// Data bytes of the event so far (since the last blank line), as [`SseParser`](super::SseParser)
    /// bounds them: the parser behind this check would otherwise grow one event without bound.
    event_bytes: usize,
    line_bytes: usize,
    /// The last read ended in `\r`: a `\n` that starts the next one belongs to that line end.
    after_cr: bool,
    /// Past the stream's optional byte-order mark, of which `bom_bytes` were seen.
    started: bool,
    bom_bytes: usize,
}

impl SseLineCheck {
    pub(crate) fn check(&mut self, mut bytes: &[u8]) -> Result<(), SseError> {
        while !self.started && !bytes.is_empty() {
            // A byte-order mark, possibly split across reads, may open the stream.
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let expected = &BOM[self.bom_bytes..];
            let n = bytes.len().min(expected.len());
            if bytes[..n] == expected[..n] {
                self.bom_bytes += n;
                bytes = &bytes[n..];
                self.started = self.bom_bytes == BOM.len();
            } else if self.bom_bytes > 0 {
                return Err(SseError::UnknownLine(String::from_utf8_lossy(&BOM[..self.bom_bytes]).into_owned()));
            } else {
                self.started = true;
            }
        }
        while !bytes.is_empty() {
            if std::mem::take(&mut self.after_cr) && bytes[0] == b'\n' {
                bytes = &bytes[1..];
                continue;
            }
            let end = bytes.iter().position(|&b| b == b'\n' || b == b'\r');
            let segment = &bytes[..end.unwrap_or(bytes.len())];
            self.line_bytes += segment.len();
            if self.line_bytes > MAX_LINE_BYTES {
                return Err(SseError::LineTooLong);
            }
            if !self.accepted {
                let room = SHOWN_BYTES.saturating_sub(self.head.len());
                self.head.extend_from_slice(&segment[..segment.len().min(room)]);
                if let Some(colon) = self.head.iter().position(|&b| b == b':') {
                    self.field(colon)?;
                } else if self.head.len() > LONGEST_FIELD {
                    return Err(self.unknown());
                }
            }
            let Some(end) = end else {
                return Ok(());
            };
            if !self.accepted && !self.head.is_empty() {
                // A line without a colon is a field name with an empty value.
                self.field(self.head.len())?;
            }
            if self.line_bytes == 0 {
                self.event_bytes = 0;
            } else if self.data_line {
                // The line less its `data:`; the joining newline stands in for the optional space.
                self.event_bytes += self.line_bytes.saturating_sub(b"data:".len());
                if self.event_bytes > MAX_EVENT_BYTES {
                    return Err(SseError::EventTooLarge);
                }
            }
            self.after_cr = bytes[end] == b'\r';
            self.head.clear();
            self.accepted = false;
            self.data_line = false;
            self.line_bytes = 0;
            bytes = &bytes[end + 1..];
        }
        Ok(())
    }

    /// Accepts the current line when `head[..name_end]` is a known field name (empty: a comment).
    fn field(&mut self, name_end: usize) -> Result<(), SseError> {
        let name = &self.head[..name_end];
        match name {
            b"" | b"data" | b"event" | b"id" | b"retry" => {
                self.data_line = name == b"data";
                self.accepted = true;
                Ok(())
            }
            _ => Err(self.unknown()),
        }
    }

    fn unknown(&self) -> SseError {
        SseError::UnknownLine(String::from_utf8_lossy(&self.head).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_all(pieces: &[&[u8]]) -> Result<(), SseError> {
        let mut check = SseLineCheck::default();
        pieces.iter().try_for_each(|piece| check.check(piece))
    }

    #[test]
    fn line_check_accepts_what_the_parser_accepts_at_every_split() {
        let stream: &[u8] =
            b"\xEF\xBB\xBFdata: {\"a\":1}\r\n\r\n: keep-alive\nevent: x\rdata\nid: 7\nretry: 10\n\ndata: [DONE]";
        for cut in 0..stream.len() {
            assert_eq!(check_all(&[&stream[..cut], &stream[cut..]]), Ok(()), "cut at {cut}");
        }
    }

    #[test]
    fn line_check_refuses_unknown_fields_and_endless_lines_at_every_split() {
        for stream in [&b"data: 1\n\n<html>502</html>\n\n"[..], b"data: 1\rhello: world\n", b"dat\n", b"datum: x\n"] {
            assert!(matches!(check_all(&[stream]), Err(SseError::UnknownLine(_))), "{stream:?}");
            for cut in 0..stream.len() {
                let split = check_all(&[&stream[..cut], &stream[cut..]]);
                assert!(matches!(split, Err(SseError::UnknownLine(_))), "{stream:?} cut at {cut}: {split:?}");
            }
        }
        let long = vec![b'a'; MAX_LINE_BYTES / 2 + 1];
        let data = [&b"data: "[..], &long].concat();
        assert_eq!(check_all(&[&data, &long]), Err(SseError::LineTooLong));
    }

    #[test]
    fn line_check_refuses_an_event_that_never_ends() {
        let line = [
            &b"data: "[..],
            &vec![b'a'; 64 * 1024],
            b"
",
        ]
        .concat();
        let mut check = SseLineCheck::default();
        let refused = (0..2 * MAX_EVENT_BYTES / line.len()).find_map(|_| check.check(&line).err());
        assert_eq!(refused, Some(SseError::EventTooLarge));
        // The same lines with blank lines between them are many small events.
        let mut check = SseLineCheck::default();
        let events = [
            &line[..],
            b"
",
            b": keep-alive
",
            b"event: x
",
        ]
        .concat();
        for _ in 0..2 * MAX_EVENT_BYTES / line.len() {
            check.check(&events).unwrap();
        }
    }
}
