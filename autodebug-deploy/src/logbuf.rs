//! A bounded, timestamped in-memory buffer of a process's output lines.

use std::collections::VecDeque;

use autodebug_core::LogLine;

/// Lines kept per deployment unless the builder says otherwise.
pub const DEFAULT_LOG_CAPACITY: usize = 50_000;

/// Longer lines are cut (with a marker) so one runaway line cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// The most recent `capacity` lines, oldest first.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    lines: VecDeque<LogLine>,
    capacity: usize,
    dropped: u64,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        LogBuffer { lines: VecDeque::new(), capacity: capacity.max(1), dropped: 0 }
    }

    /// Appends a line; its stamp is raised to the previous one if the wall clock stepped back,
    /// so lookups by time stay correct.
    pub fn push(&mut self, mut line: LogLine) {
        if let Some(last) = self.lines.back() {
            line.time_ns = line.time_ns.max(last.time_ns);
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    /// Lines stamped at or after `since_ns` (all when `None`).
    pub fn since(&self, since_ns: Option<i128>) -> Vec<LogLine> {
        match since_ns {
            None => self.lines.iter().cloned().collect(),
            Some(t) => {
                // Stamps never decrease, so the first match starts the answer.
                let start = self.lines.partition_point(|l| l.time_ns < t);
                self.lines.range(start..).cloned().collect()
            }
        }
    }

    /// The last `n` lines as text, for error messages.
    pub fn tail_text(&self, n: usize) -> Vec<String> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).map(|l| l.text.clone()).collect()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Turns raw bytes into one log line's text: lossy UTF-8, no line ending, bounded length.
pub(crate) fn line_text(raw: &[u8]) -> String {
    let mut raw = raw;
    while let Some((last, rest)) = raw.split_last() {
        if *last == b'\n' || *last == b'\r' {
            raw = rest;
        } else {
            break;
        }
    }
    if raw.len() > MAX_LINE_BYTES {
        let mut text = String::from_utf8_lossy(&raw[..MAX_LINE_BYTES]).into_owned();
        text.push_str(&format!(" [... {} more bytes cut]", raw.len() - MAX_LINE_BYTES));
        text
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: i128, text: &str) -> LogLine {
        LogLine { time_ns: t, text: text.into() }
    }

    #[test]
    fn keeps_the_newest_lines_within_capacity() {
        let mut buf = LogBuffer::new(3);
        for i in 0..5 {
            buf.push(line(i, &format!("l{i}")));
        }
        let texts: Vec<_> = buf.since(None).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["l2", "l3", "l4"]);
        assert_eq!(buf.dropped(), 2);
        assert_eq!(buf.tail_text(2), ["l3", "l4"]);
        assert_eq!(buf.tail_text(10).len(), 3);
    }

    #[test]
    fn stamps_never_go_back() {
        let mut buf = LogBuffer::new(10);
        buf.push(line(50, "a"));
        buf.push(line(40, "b"));
        let stamps: Vec<_> = buf.since(None).into_iter().map(|l| l.time_ns).collect();
        assert_eq!(stamps, [50, 50]);
    }

    #[test]
    fn since_is_inclusive() {
        let mut buf = LogBuffer::new(10);
        for t in [10, 20, 20, 30] {
            buf.push(line(t, "x"));
        }
        assert_eq!(buf.since(Some(20)).len(), 3);
        assert_eq!(buf.since(Some(31)).len(), 0);
        assert_eq!(buf.since(Some(0)).len(), 4);
    }

    #[test]
    fn line_text_strips_endings_and_bounds_length() {
        assert_eq!(line_text(b"hello\r\n"), "hello");
        assert_eq!(line_text(b"caf\xc3\xa9 \xff\n"), "café \u{fffd}");
        let long = vec![b'a'; MAX_LINE_BYTES + 10];
        let text = line_text(&long);
        assert!(text.ends_with("[... 10 more bytes cut]"), "{}", &text[text.len() - 40..]);
    }
}
