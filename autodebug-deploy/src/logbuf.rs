//! A bounded, timestamped in-memory buffer of a process's output lines.

use std::collections::VecDeque;
use std::io::{self, BufRead};

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

/// Reads the next line of `reader` as log text (see [`line_text`]), holding at most
/// [`MAX_LINE_BYTES`] of it in `raw` and counting the rest as it is skipped: a process that
/// prints without ever ending a line cannot grow memory without bound. `None` at the end of the
/// stream.
pub(crate) fn read_line(reader: &mut impl BufRead, raw: &mut Vec<u8>) -> io::Result<Option<String>> {
    raw.clear();
    let mut skipped = 0usize;
    let mut read_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        read_any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let line = &available[..newline.unwrap_or(available.len())];
        let kept = line.len().min(MAX_LINE_BYTES.saturating_sub(raw.len()));
        raw.extend_from_slice(&line[..kept]);
        skipped += line.len() - kept;
        let consumed = newline.map_or(available.len(), |at| at + 1);
        reader.consume(consumed);
        if newline.is_some() {
            break;
        }
    }
    if !read_any {
        return Ok(None);
    }
    let mut text = line_text(raw);
    if skipped > 0 {
        text.push_str(&format!(" [... {skipped} more bytes cut]"));
    }
    Ok(Some(text))
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

/// Property tests of [`read_line`] against the plain definition (split at `\n`, cut each line at
/// [`MAX_LINE_BYTES`]), with the stream cut into reads anywhere, and on an endless line.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Hands out `bytes` in reads of the given sizes (cycled), as a pipe does.
    struct Chunked<'a> {
        bytes: &'a [u8],
        sizes: Vec<usize>,
        next: usize,
    }

    impl io::Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.next % self.sizes.len()].max(1);
            self.next += 1;
            let n = size.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn read_all(reader: &mut impl BufRead) -> Vec<String> {
        let mut raw = Vec::new();
        std::iter::from_fn(|| read_line(reader, &mut raw).unwrap()).collect()
    }

    fn expected(bytes: &[u8]) -> Vec<String> {
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        // A final newline ends the last line; it does not start another.
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines.into_iter().map(line_text).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn reads_the_lines_the_plain_split_gives_at_any_read_size(
            bytes in proptest::collection::vec(prop_oneof![4 => any::<u8>(), 1 => Just(b'\n'), 1 => Just(b'\r')], 0..600),
            sizes in proptest::collection::vec(1usize..64, 1..8),
            buffer in 1usize..32,
        ) {
            let mut reader = io::BufReader::with_capacity(buffer, Chunked { bytes: &bytes, sizes, next: 0 });
            prop_assert_eq!(read_all(&mut reader), expected(&bytes));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn long_lines_are_cut_like_line_text_cuts_them(
            len in (MAX_LINE_BYTES - 3)..(MAX_LINE_BYTES + 3),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
            sizes in proptest::collection::vec(1usize..20_000, 1..4),
        ) {
            let bytes = [vec![b'x'; len], b"\n".to_vec(), tail].concat();
            let mut reader = io::BufReader::new(Chunked { bytes: &bytes, sizes, next: 0 });
            prop_assert_eq!(read_all(&mut reader), expected(&bytes));
        }
    }

    /// An endless stream of `b'a'` without a newline, generated as it is read, ending after
    /// `limit` bytes with a newline and one more line.
    struct Endless {
        left: u64,
        tail: &'static [u8],
    }

    impl io::Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                let n = self.tail.len().min(buf.len());
                buf[..n].copy_from_slice(&self.tail[..n]);
                self.tail = &self.tail[n..];
                return Ok(n);
            }
            let n = buf.len().min(self.left as usize);
            buf[..n].fill(b'a');
            self.left -= n as u64;
            Ok(n)
        }
    }

    #[test]
    fn an_endless_line_is_held_at_the_cap_and_the_next_line_still_arrives() {
        let size: u64 = 256 << 20;
        let mut reader = io::BufReader::with_capacity(1 << 20, Endless { left: size, tail: b"\nnext\n" });
        let mut raw = Vec::new();
        let text = read_line(&mut reader, &mut raw).unwrap().unwrap();
        assert!(raw.capacity() <= 2 * MAX_LINE_BYTES, "held {} bytes for one line", raw.capacity());
        assert_eq!(
            text.len(),
            MAX_LINE_BYTES + format!(" [... {} more bytes cut]", size - MAX_LINE_BYTES as u64).len()
        );
        assert!(
            text.ends_with(&format!("[... {} more bytes cut]", size - MAX_LINE_BYTES as u64)),
            "{}",
            &text[text.len() - 40..]
        );
        assert_eq!(read_line(&mut reader, &mut raw).unwrap().as_deref(), Some("next"));
        assert_eq!(read_line(&mut reader, &mut raw).unwrap(), None);
    }
}
