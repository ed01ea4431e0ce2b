//! Property tests of the client's per-chunk path (SSE byte parser, then chunk JSON and stream
//! accounting) through `self_check::replay_sse`: whatever the server sends, split however the
//! network splits it, the client never panics and always ends in a result or an error class.
//! Case counts are bounded so the suite stays fast.

use autodebug_bench::self_check::{ReplayEnd, ReplayOutcome, replay_sse};
use autodebug_core::ErrorClass;
use proptest::prelude::*;

/// A real llama.cpp stream (see tests/fixtures/SOURCES.md): role chunk, 128 content chunks,
/// finish chunk, usage chunk, `[DONE]`.
const REAL_STREAM: &[u8] = include_bytes!("fixtures/llamacpp_smollm2_chat_stream.sse");

/// Splits `bytes` at the given cut points (taken modulo the length, sorted, deduplicated).
fn split_at_points<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Invariants every outcome must satisfy, whatever the input.
fn assert_consistent(outcome: &ReplayOutcome) {
    assert!(outcome.content_chunks <= outcome.events, "{outcome:?}");
    if outcome.end == ReplayEnd::Done {
        assert!(outcome.events >= 1, "[DONE] is an event: {outcome:?}");
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

#[test]
fn the_real_stream_whole_is_done_with_128_tokens() {
    let outcome = replay_sse([REAL_STREAM]);
    assert_eq!(outcome.end, ReplayEnd::Done);
    assert_eq!(outcome.content_chunks, 128);
    assert_eq!(outcome.output_tokens, 128);
    assert_eq!(outcome.events, 132, "role + 128 content + finish + usage + [DONE]");
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn arbitrary_bytes_at_arbitrary_splits_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let outcome = replay_sse(split_at_points(&bytes, &cuts));
        assert_consistent(&outcome);
        // Bytes without a single SSE event cannot be a complete answer.
        if outcome.events == 0 {
            prop_assert!(matches!(outcome.end, ReplayEnd::Failed(_)), "{outcome:?}");
        }
    }

    #[test]
    fn sse_shaped_noise_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("data: [DONE]".to_string()),
                Just(String::new()),
                Just(": keep-alive".to_string()),
                "data: \\{\"choices\":\\[\\{\"delta\":\\{\"content\":\"[a-z \\\\\"]{0,12}\"\\}\\}\\]\\}",
                "data: \\{\"usage\":\\{\"completion_tokens\":[0-9]{1,20}\\}\\}",
                "data: [ -~]{0,40}",
                "(event|id|retry): [ -~]{0,10}",
                "[ -~]{0,20}",
            ],
            0..24,
        ),
        crlf in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let newline = if crlf { "\r\n" } else { "\n" };
        let text = lines.join(newline);
        let outcome = replay_sse(split_at_points(text.as_bytes(), &cuts));
        assert_consistent(&outcome);
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn the_real_stream_split_anywhere_gives_the_same_outcome(
        cuts in proptest::collection::vec(any::<usize>(), 0..64),
    ) {
        let whole = replay_sse([REAL_STREAM]);
        prop_assert_eq!(replay_sse(split_at_points(REAL_STREAM, &cuts)), whole);
    }

    #[test]
    fn mutated_real_streams_end_in_a_result_or_an_error_class(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut bytes = REAL_STREAM.to_vec();
        for (at, byte, kind) in edits {
            let at = at % bytes.len();
            match kind {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => { bytes.remove(at); }
            }
        }
        let outcome = replay_sse(split_at_points(&bytes, &cuts));
        assert_consistent(&outcome);
        // A handful of edits cannot create content: at most the real 128 chunks plus a few
        // created by splitting one event in two.
        prop_assert!(outcome.content_chunks <= 128 + 6, "{outcome:?}");
    }

    #[test]
    fn arbitrary_json_values_in_chunk_fields_are_results_or_json_errors(
        content in prop_oneof![
            Just("null".to_string()),
            Just("5".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            // JSON strings: plain characters (no raw control bytes, which would end the SSE line),
            // escapes, and \u escapes including lone surrogates.
            r#""([^"\\\x00-\x1f]|\\[nrt"\\/]|\\u[0-9a-f]{4}){0,16}""#,
        ],
        completion in prop_oneof![Just("null".to_string()), "[0-9]{1,25}", Just("-1".to_string()), Just("1.5".to_string())],
        finish in prop_oneof![Just("null"), Just("\"stop\""), Just("1")],
    ) {
        let event = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":{content}}},\"finish_reason\":{finish}}}],\"usage\":{{\"completion_tokens\":{completion}}}}}\n\ndata: [DONE]\n\n"
        );
        let outcome = replay_sse([event.as_bytes()]);
        assert_consistent(&outcome);
        match outcome.end {
            ReplayEnd::Done => prop_assert!(outcome.content_chunks <= 1),
            ReplayEnd::Failed(class) => prop_assert_eq!(class, ErrorClass::MalformedJson, "{}", event),
            ReplayEnd::Finished => prop_assert!(false, "[DONE] was sent: {event}"),
        }
    }
}

/// The parser's bounds (4 MiB a line, 4 MiB of data an event), as the crate documents them.
const CAP_BYTES: usize = 4 * 1024 * 1024;

/// Feeds `first` and then `block` over and over, lazily (the same bytes each read, so nothing is
/// allocated for the stream itself), stopping after `max_reads` reads at the latest; returns the
/// outcome and how many reads the client took before it stopped.
fn replay_endless(first: &[u8], block: &[u8], max_reads: usize) -> (ReplayOutcome, usize) {
    let reads = std::cell::Cell::new(0usize);
    let stream =
        std::iter::once(first).chain(std::iter::repeat(block)).take(max_reads).inspect(|_| reads.set(reads.get() + 1));
    let outcome = replay_sse(stream);
    (outcome, reads.get())
}

#[test]
fn an_endless_line_is_refused_after_the_line_cap() {
    let block = vec![b'a'; 64 * 1024];
    // Enough reads for 1 GiB: a parser without a cap would take them all.
    let max_reads = (1 << 30) / block.len();
    let (outcome, reads) = replay_endless(b"data: ", &block, max_reads);
    assert_eq!(outcome.end, ReplayEnd::Failed(ErrorClass::MalformedSse), "{outcome:?}");
    assert!(reads <= CAP_BYTES / block.len() + 2, "{reads} reads of 64 KiB before the client stopped");
}

#[test]
fn an_event_that_never_ends_is_refused_after_the_event_cap() {
    // Short, valid data lines and never the blank line that ends an event.
    let line = [&b"data: "[..], &[b'b'; 1018], b"\n"].concat();
    let block = line.repeat(64);
    let max_reads = (1 << 30) / block.len();
    let (outcome, reads) = replay_endless(b"", &block, max_reads);
    assert_eq!(outcome.end, ReplayEnd::Failed(ErrorClass::MalformedSse), "{outcome:?}");
    // The first (empty) read, then blocks of 64 x 1018 data bytes up to the cap.
    assert!(reads <= CAP_BYTES / (64 * 1018) + 2, "{reads} reads of 64 KiB before the client stopped");
    assert_eq!(outcome.events, 0);
}

#[test]
fn endless_keep_alives_and_small_events_are_not_refused_for_size() {
    // The caps are per line and per event: a long stream of small events is not too large.
    let block = b": keep-alive\n\ndata: {\"choices\":[{\"delta\":{}}]}\n\n".repeat(512);
    let reads = 2 * CAP_BYTES / block.len();
    let (outcome, taken) = replay_endless(b"", &block, reads);
    assert_eq!(taken, reads);
    assert_eq!(outcome.end, ReplayEnd::Failed(ErrorClass::EarlyClose), "{outcome:?}");
}
