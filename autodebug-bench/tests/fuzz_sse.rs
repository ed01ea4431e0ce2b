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
