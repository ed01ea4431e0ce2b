//! Property tests of the readers in core that take an engine's own output: the failure
//! classifier (`failure::root_cause`, `classify_line`, `start_failure_kind`), the startup
//! argument dump reader (`startup_args`) and the `--help` reader (`EngineArgs::parse`). An engine
//! (or a model's chat template, or a user's prompt echoed into a log) controls these bytes, so
//! whatever they hold, nothing panics, the answers stay within what the input holds, and a huge
//! line costs linear time. Lines reach these readers already cut by the deployers (16 KiB,
//! `autodebug_deploy::MAX_LINE_BYTES`); the tests go far above that.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use autodebug_core::failure::{FailureClass, classify_line, root_cause, start_failure_kind};
use autodebug_core::startup_args::{from_line, pairs};
use autodebug_core::{EngineArgs, EngineKind, LogLine, SearchSpace, ServiceSpec};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

const FIXTURES: [&str; 6] = [
    "vllm_0.32.0_cpu_startup.log",
    "vllm_0.32.0_error_badchoice.log",
    "vllm_0.32.0_error_badseqs.log",
    "vllm_0.32.0_error_badtype.log",
    "vllm_0.32.0_error_tp2_numa.log",
    "vllm_0.32.0_error_unknown.log",
];

fn read(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vllm_cpu").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

fn fixtures() -> &'static [String] {
    static LOGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| FIXTURES.iter().map(|name| read(name)).collect())
}

fn help_text() -> &'static str {
    static HELP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HELP.get_or_init(|| read("vllm_0.32.0_serve_help_all.txt"))
}

fn lines_of(texts: &[String]) -> Vec<LogLine> {
    texts.iter().map(|text| LogLine { time_ns: 0, text: text.clone() }).collect()
}

/// Edits bytes (overwrite, insert, delete, duplicate a stretch, cut), then reads them back as
/// lossy UTF-8, as the deployers do with an engine's output.
fn mutate(base: &str, edits: &[(usize, u8, u8)]) -> String {
    const SIGNIFICANT: &[u8] = b"-:=,'\"()[]{}<> \n\r\\/.0123456789_eE";
    let mut bytes = base.as_bytes().to_vec();
    for &(at, byte, kind) in edits {
        let at = at % (bytes.len() + 1);
        let significant = SIGNIFICANT[byte as usize % SIGNIFICANT.len()];
        match kind {
            0 if at < bytes.len() => bytes[at] = byte,
            1 if at < bytes.len() => bytes[at] = significant,
            2 => bytes.insert(at, significant),
            3 if at < bytes.len() => {
                bytes.remove(at);
            }
            4 if at < bytes.len() => {
                let end = (at + 1 + byte as usize).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            5 => bytes.truncate(at),
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What every answer must satisfy: the cause quotes a line that is in the input (or the
/// message), the flag it names appears there too, and the detail is bounded.
fn check_logs(lines: &[LogLine], message: &str) {
    let kind = start_failure_kind(lines);
    let cause = root_cause(lines, message);
    let everything: String = lines.iter().map(|l| l.text.as_str()).chain([message]).collect::<Vec<_>>().join("\n");
    if let Some(cause) = &cause {
        assert!(everything.contains(cause.line.trim()), "the cause {:?} is not a line of the input", cause.line);
        if let Some(flag) = &cause.flag {
            // A flag is read from the lines (as written, or as the config field pydantic names),
            // except the few a class implies on its own.
            let implied = matches!(cause.class, FailureClass::Hardware | FailureClass::KvCacheTooSmall);
            let field = flag.trim_start_matches('-').replace('-', "_");
            assert!(
                implied || everything.contains(flag.as_str()) || everything.contains(&field),
                "flag {flag:?} is not in the input"
            );
        }
        assert!(cause.detail.len() <= 6, "{:?}", cause.detail);
        assert!(!cause.hint.is_empty());
    }
    let _ = kind;
    for line in lines {
        for text in line.text.lines() {
            let _ = classify_line(text);
            for (key, value) in from_line(text) {
                assert!(!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{key:?}");
                assert!(text.contains(&key) && text.contains(value.as_str()), "{key:?}={value:?} not in {text:?}");
            }
        }
    }
}

/// A line shaped like the ones the classifier and the argument reader look for.
fn failure_shaped_line() -> impl Strategy<Value = String> {
    let prefix = proptest::sample::select(vec![
        "",
        "(APIServer pid=1) ",
        "ERROR 12-06 12:20:14 [core.py:700] ",
        "[2026-03-24 20:39:20 TP0] ",
        "(EngineCore_DP0 pid=77) ",
        "srv  load_model: ",
    ]);
    let body = proptest::sample::select(vec![
        "vllm serve: error: unrecognized arguments: ",
        "error: argument ",
        "argument --dtype: invalid choice: ",
        "invalid int value: ",
        "torch.OutOfMemoryError: CUDA out of memory. ",
        "ValueError: ",
        "RuntimeError: Engine core initialization failed. See root cause above. ",
        "AssertionError: Not enough allowed NUMA nodes ",
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ",
        "  Value error, ",
        "Traceback (most recent call last):",
        "Segmentation fault (core dumped)",
        "non-default args: {",
        "server_args=ServerArgs(",
        "with config: ",
        "WARNING: error ",
        "To serve at least one request with the models's max seq len (",
        "KV cache",
        "Exception",
        "Error:",
        ":",
        "",
    ]);
    let tail = prop_oneof![
        "(--?[a-z][a-z-]{0,12}[ =:,'\"`()\\[\\]{}]{0,3}[a-z0-9.]{0,6}){0,4}",
        "('[a-z_]{1,8}': ([0-9]{1,4}|'[^']{0,6}'|\\[[0-9, ]{0,6}\\]|\\{[^{}]{0,8}\\}), ){0,4}\\}?",
        "([a-z_]{1,8}=([0-9]{1,4}|'[^']{0,6}'|[A-Za-z]+\\([^()]{0,8}\\)), ){0,4}\\)?",
        "[ -~]{0,40}",
        "[\\u{0}-\\u{7f}\\u{80}-\\u{10ffff}]{0,12}",
    ];
    (prefix, body, tail).prop_map(|(p, b, t)| format!("{p}{b}{t}"))
}

#[test]
fn the_real_error_logs_have_their_causes() {
    let expected = [
        None,
        Some(FailureClass::InvalidValue),
        Some(FailureClass::InvalidValue),
        Some(FailureClass::InvalidValue),
        Some(FailureClass::Hardware),
        Some(FailureClass::UnknownFlag),
    ];
    for ((name, text), class) in FIXTURES.iter().zip(fixtures()).zip(expected) {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        check_logs(&lines_of(&lines), "");
        if let Some(class) = class {
            assert_eq!(root_cause(&lines_of(&lines), "").map(|c| c.class), Some(class), "{name}");
        }
    }
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn arbitrary_lines_never_panic(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..160), 0..6),
        message in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let texts: Vec<String> = lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
        check_logs(&lines_of(&texts), &String::from_utf8_lossy(&message));
        for text in &texts {
            let _ = pairs(text);
        }
    }
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn failure_shaped_lines_never_panic(lines in proptest::collection::vec(failure_shaped_line(), 1..8), message in failure_shaped_line()) {
        check_logs(&lines_of(&lines), &message);
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn mutated_real_logs_never_panic(which in 0usize..FIXTURES.len(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..6), 1..16)) {
        let text = mutate(&fixtures()[which], &edits);
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        check_logs(&lines_of(&lines), "");
        // The whole text as one record, as some backends hand it over.
        check_logs(&lines_of(&[text]), "");
    }

    #[test]
    fn spliced_real_logs_never_panic(
        picks in proptest::collection::vec((0usize..FIXTURES.len(), any::<usize>(), any::<usize>()), 1..40),
    ) {
        let lines: Vec<String> = picks
            .iter()
            .map(|&(f, l, cut)| {
                let all: Vec<&str> = fixtures()[f].lines().collect();
                let line = all[l % all.len()];
                let cut = (0..=cut % (line.len() + 1)).rev().find(|&c| line.is_char_boundary(c)).unwrap_or(0);
                line[..cut].to_string()
            })
            .collect();
        check_logs(&lines_of(&lines), "");
    }
}

/// Reads a help text the way `autodebug engines check` does: parse, then hold the catalog and a
/// few flags against it.
fn check_help(help: &str) {
    for engine in [EngineKind::Vllm, EngineKind::Sglang, EngineKind::LlamaCpp] {
        let args = EngineArgs::parse(engine, Some("0.0.0"), help);
        for (i, (spelling, arg)) in args.args.iter().enumerate() {
            assert!(spelling.starts_with('-'), "{spelling:?}");
            // Searching the text costs more than parsing it in a debug build: a sample will do.
            if i % 16 == 0 {
                assert!(help.contains(spelling.as_str()), "{spelling:?} is not in the help");
                assert!(help.contains(arg.flag.as_str()));
            }
        }
        let _ = args.check_catalog(&SearchSpace::for_engine(engine));
        let spec = ServiceSpec::new("s", engine, "m")
            .with_flag("--dtype", Some("float8"))
            .with_flag("--max-num-seqs", Some("16"))
            .with_flag("--enable-prefix-caching", None);
        let _ = args.check_flags(&spec.flags);
    }
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn arbitrary_help_texts_never_panic(
        lines in proptest::collection::vec(
            prop_oneof![
                "[ ]{0,6}-{1,2}[a-z-]{0,12}(, -{1,2}[a-z-]{0,8})?( [A-Z_]{0,6}| \\{[a-z0-9,]{0,12}\\}?| \\[[a-z|]{0,10}\\]?)?[ -~]{0,20}",
                "[ ]{0,30}[ -~]{0,30}(\\(default: [ -~]{0,10}\\)?)?",
                "[\\u{0}-\\u{10ffff}]{0,20}",
            ],
            0..20,
        ),
    ) {
        check_help(&lines.join("\n"));
    }
}

proptest! {
    // The real help is 60 KB; each case parses it three times.
    #![proptest_config(config(150))]

    #[test]
    fn mutated_real_help_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..6), 1..20)) {
        check_help(&mutate(help_text(), &edits));
    }
}

#[test]
fn huge_lines_cost_linear_time() {
    let started = Instant::now();
    let big = 1 << 20;
    let texts = [
        format!("ValueError: {}", "--a".repeat(big / 3)),
        format!("error: argument {}", "x".repeat(big)),
        format!("non-default args: {{{}", "'k': [".repeat(big / 6)),
        format!("server_args=ServerArgs({}", "a=1, ".repeat(big / 5)),
        format!("with config: {}", "'".repeat(big)),
        "Error".repeat(big / 5),
        ":".repeat(big),
    ];
    for text in &texts {
        check_logs(&lines_of(std::slice::from_ref(text)), text);
        let _ = pairs(text);
    }
    check_help(&format!("  --{}\n{}", "a".repeat(big), format!("  {}\n", "(default: x)").repeat(big / 16)));
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}
