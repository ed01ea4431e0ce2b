//! Property tests of every parser in this crate that reads bytes a service (or whatever answers
//! on its port, or writes into its trace directory) controls: the Prometheus exposition, the
//! Prometheus server API's JSON, PyTorch-profiler traces, engine logs and the Graphsignal debug
//! context. Whatever arrives, nothing panics; garbage is an error (or, for the lenient readers,
//! a warning); and sizes no real answer has are refused after a cap instead of being read whole.
//! Case counts are bounded so the file runs in seconds in a debug build.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autodebug_core::{EngineKind, LogLine, SignalValue, TelemetrySnapshot, TimeWindow};
use autodebug_telemetry::graphsignal::GraphsignalSource;
use autodebug_telemetry::logs::capacity::{RequestShape, capacity_plan, guess_engine};
use autodebug_telemetry::prometheus::{GaugeTracker, PromQuery, PrometheusScrape, PrometheusServer, window_signals};
use autodebug_telemetry::trace::{
    TraceError, TraceSource, analysis_signals, analyze_bytes, read_trace_file, read_trace_file_limited,
};
use autodebug_telemetry::{MAX_BODY_BYTES, TelemetryError, parse_debug_context, parse_engine_logs, parse_exposition};
use proptest::prelude::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One edit of a byte string: overwrite, insert or delete a byte, or cut the rest off.
type Edit = (usize, u8, u8);

fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..7), 1..max)
}

/// Applies `edits` to `base`; bytes are drawn mostly from the ones that matter to the formats
/// (quotes, braces, digits, newlines) so that edits hit structure rather than just text.
fn mutate(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    const SIGNIFICANT: &[u8] = b"\"{}[],:=# \n\r\\-+.eE0123456789_xN";
    let mut bytes = base.to_vec();
    for &(at, byte, kind) in edits {
        let at = at % (bytes.len() + 1);
        let significant = SIGNIFICANT[byte as usize % SIGNIFICANT.len()];
        match kind {
            0 if at < bytes.len() => bytes[at] = byte,
            1 if at < bytes.len() => bytes[at] = significant,
            2 => bytes.insert(at, significant),
            3 => bytes.insert(at, byte),
            4 if at < bytes.len() => {
                bytes.remove(at);
            }
            // Duplicate a stretch: repeated keys, lines and brackets.
            5 if at < bytes.len() => {
                let end = (at + 1 + byte as usize).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            6 => bytes.truncate(at),
            _ => {}
        }
    }
    bytes
}

/// The first `cut` bytes of `a` (modulo its length) followed by `b` from `from` on.
fn splice(a: &[u8], cut: usize, b: &[u8], from: usize) -> Vec<u8> {
    let mut out = a[..cut % (a.len() + 1)].to_vec();
    out.extend_from_slice(&b[from % (b.len() + 1)..]);
    out
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Numbers a parser may mishandle: extremes, signs, exponents, NaN spellings.
fn hostile_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        Just("9".repeat(400)),
        Just("-9223372036854775808".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1e309".to_string()),
        Just("-1e309".to_string()),
        Just("NaN".to_string()),
        Just("+Inf".to_string()),
        Just("-0".to_string()),
        Just("0.000000000000000000000000001".to_string()),
        "-?[0-9]{1,4}(\\.[0-9]{0,3})?",
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(("[a-z_ ]{0,10}", inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// `depth` opening brackets and nothing else: the classic stack exhaustion input.
fn nested(open: &str, depth: usize) -> String {
    open.repeat(depth)
}

// ---------------------------------------------------------------------------------------------
// Prometheus text exposition
// ---------------------------------------------------------------------------------------------

const PROM_FIXTURES: [&str; 6] = [
    "generated_sglang_0.5.23_multiproc.prom",
    "generated_vllm_0.33.0_single.prom",
    "llamacpp_smollm2_metrics.prom",
    "sglang_docs_production_metrics_llama31_8b_busy.prom",
    "vllm_cpu/vllm_0.32.0_cpu_metrics.prom",
    "prometheus_query_range_matrix.json",
];

fn prom_fixtures() -> Vec<Vec<u8>> {
    PROM_FIXTURES[..5].iter().map(|name| fixture(name)).collect()
}

/// Parses `text`; when it parses, runs what the scrape source does with the result (series,
/// window rates against itself and against the clean fixture), so a value the parser lets through
/// cannot panic the arithmetic after it either.
fn check_exposition(text: &str, reference: Option<&str>) {
    match parse_exposition(text) {
        Ok(families) => {
            for family in &families {
                let _ = family.series();
            }
            let mut gauges = GaugeTracker::default();
            gauges.observe(&families);
            let _ = window_signals(Some(&families), &gauges, &families, Duration::from_secs(10));
            let _ = window_signals(None, &gauges, &families, Duration::ZERO);
            if let Some(reference) = reference.and_then(|r| parse_exposition(r).ok()) {
                let _ = window_signals(Some(&reference), &gauges, &families, Duration::from_millis(1));
                let _ = window_signals(Some(&families), &gauges, &reference, Duration::from_secs(1));
            }
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            assert!(e.line >= 1 && e.line <= lines, "error on line {} of {lines}: {e}", e.line);
            assert!(!e.message.is_empty());
        }
    }
}

#[test]
fn every_exposition_fixture_parses() {
    for (name, bytes) in PROM_FIXTURES.iter().zip(prom_fixtures()) {
        let families = parse_exposition(&lossy(&bytes)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(families.len() > 5, "{name}");
    }
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn arbitrary_text_is_an_exposition_or_a_line_error(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_exposition(&lossy(&bytes), None);
    }
}

proptest! {
    // Generating regex-shaped lines costs more than parsing them.
    #![proptest_config(config(1_000))]

    #[test]
    fn exposition_shaped_lines_are_an_exposition_or_a_line_error(
        lines in proptest::collection::vec(
            prop_oneof![
                "# (HELP|TYPE|UNIT) [a-z_:]{0,8}_?(total|created|bucket|sum|count|info)? ?[a-z ]{0,10}",
                Just("# EOF".to_string()),
                "[a-z_:]{1,8}(_total|_created|_bucket|_sum|_count)?",
                ("[a-z_:]{1,8}(_bucket|_sum|_count|_total)?", "\\{([a-z]{1,3}=\"[^\"\\\\]{0,4}\",?){0,3}\\}", hostile_number(), proptest::option::of(hostile_number()))
                    .prop_map(|(n, l, v, t)| format!("{n}{l} {v}{}", t.map(|t| format!(" {t}")).unwrap_or_default())),
                (hostile_number(), "[ -~]{0,12}").prop_map(|(v, le)| format!("h_bucket{{le=\"{le}\"}} {v}")),
                (hostile_number()).prop_map(|q| format!("s{{quantile=\"{q}\"}} 1")),
                "\\{\"[^\"]{0,6}\"(, ?[a-z]=\"[a-z]\")?\\} [0-9]",
                "[ -~]{0,30}",
            ],
            0..30,
        ),
    ) {
        check_exposition(&lines.join("\n"), None);
    }
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn mutated_real_expositions_parse_or_name_a_line(which in 0usize..5, edits in edits(12)) {
        let fixtures = prom_fixtures();
        let clean = lossy(&fixtures[which]);
        check_exposition(&lossy(&mutate(&fixtures[which], &edits)), Some(&clean));
    }

    #[test]
    fn spliced_real_expositions_parse_or_name_a_line(
        a in 0usize..5, b in 0usize..5, cut in any::<usize>(), from in any::<usize>(),
    ) {
        let fixtures = prom_fixtures();
        check_exposition(&lossy(&splice(&fixtures[a], cut, &fixtures[b], from)), Some(&lossy(&fixtures[b])));
    }

    #[test]
    fn shuffled_lines_of_real_expositions_parse_or_name_a_line(
        picks in proptest::collection::vec((0usize..5, any::<usize>()), 1..80),
    ) {
        let fixtures: Vec<String> = prom_fixtures().iter().map(|f| lossy(f)).collect();
        let lines: Vec<Vec<&str>> = fixtures.iter().map(|f| f.lines().collect()).collect();
        let text: Vec<&str> = picks.iter().map(|&(f, l)| lines[f][l % lines[f].len()]).collect();
        check_exposition(&text.join("\n"), None);
    }
}

#[test]
fn a_long_exposition_line_parses_in_linear_time() {
    // The scrape caps the body (see the loopback tests below); under the cap, one huge line must
    // not cost quadratic time: 8 MiB of label value, then 8 MiB of metric name.
    let value = "v".repeat(8 << 20);
    let started = std::time::Instant::now();
    let families = parse_exposition(&format!("m{{a=\"{value}\"}} 1\n")).unwrap();
    assert_eq!(families[0].samples[0].labels[0].1.len(), value.len());
    assert!(parse_exposition(&format!("{value} one\n")).is_err());
    assert!(parse_exposition(&format!("m{{a=\"{value}\n")).is_err(), "an unterminated quote is an error");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Bodies over the network: every HTTP reader stops at MAX_BODY_BYTES
// ---------------------------------------------------------------------------------------------

/// Serves one connection on loopback: reads the request head, answers `head` (status line and
/// headers), then `prefix` and an endless line of `fill` bytes with no newline, written lazily,
/// until the client hangs up or `give_up` bytes went out (so a client without a cap ends up with
/// a whole, over-size body and the test fails instead of hanging). Returns the URL and the
/// number of body bytes written.
async fn serve_endless(head: &str, prefix: &[u8], fill: u8, give_up: u64) -> (String, tokio::task::JoinHandle<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let head = head.to_string();
    let prefix = prefix.to_vec();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return 0,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        if socket.write_all(head.as_bytes()).await.is_err() || socket.write_all(&prefix).await.is_err() {
            return 0;
        }
        let block = vec![fill; 256 * 1024];
        let mut written = prefix.len() as u64;
        while written < give_up {
            if socket.write_all(&block).await.is_err() {
                break;
            }
            written += block.len() as u64;
        }
        written
    });
    (url, task)
}

const ENDLESS: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";

fn is_too_large(error: &TelemetryError) -> bool {
    matches!(error, TelemetryError::TooLarge { limit, .. } if *limit == MAX_BODY_BYTES)
        && error.to_string().contains(&MAX_BODY_BYTES.to_string())
}

/// The server must have stopped well before `give_up`: the client hung up at the cap.
async fn assert_cut_at_cap(server: tokio::task::JoinHandle<u64>) {
    let written = tokio::time::timeout(Duration::from_secs(60), server).await.unwrap().unwrap();
    let slack = 16 << 20;
    assert!(written <= (MAX_BODY_BYTES + slack) as u64, "{written} bytes were read before the client stopped");
}

const GIVE_UP: u64 = 2 * MAX_BODY_BYTES as u64;

#[tokio::test]
async fn an_endless_metrics_line_is_refused_at_the_cap() {
    let (url, server) = serve_endless(ENDLESS, b"# TYPE m gauge\nm{a=\"", b'a', GIVE_UP).await;
    let scrape = PrometheusScrape::builder().timeout(Duration::from_secs(60)).build();
    let error = scrape.scrape(&format!("{url}/metrics"), None).await.unwrap_err();
    assert!(is_too_large(&error), "{error}");
    assert_cut_at_cap(server).await;
}

#[tokio::test]
async fn a_declared_length_over_the_cap_is_refused_before_the_body() {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5000000000\r\n\r\n";
    // Only 1 MiB is ever sent: the refusal must come from the header, not from reading.
    let (url, server) = serve_endless(head, b"", b'a', 1 << 20).await;
    let scrape = PrometheusScrape::builder().timeout(Duration::from_secs(60)).build();
    let error = scrape.scrape(&format!("{url}/metrics"), None).await.unwrap_err();
    assert!(is_too_large(&error), "{error}");
    server.abort();
}

#[tokio::test]
async fn an_endless_prometheus_api_answer_is_refused_at_the_cap() {
    let (url, server) = serve_endless(
        ENDLESS,
        br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":""#,
        b'b',
        GIVE_UP,
    )
    .await;
    let prometheus = PrometheusServer::builder(url).timeout(Duration::from_secs(60)).build();
    let window = TimeWindow { start_ns: 1_700_000_000_000_000_000, end_ns: 1_700_000_060_000_000_000 };
    let error = prometheus.query_range("up", window).await.unwrap_err();
    assert!(is_too_large(&error), "{error}");
    assert_cut_at_cap(server).await;
}

#[tokio::test]
async fn an_endless_graphsignal_answer_is_refused_at_the_cap() {
    let (url, server) = serve_endless(ENDLESS, br#"{"context":""#, b'c', GIVE_UP).await;
    let graphsignal = GraphsignalSource::builder().api_base(url).timeout(Duration::from_secs(60)).build();
    let window = TimeWindow { start_ns: 1_700_000_000_000_000_000, end_ns: 1_700_000_060_000_000_000 };
    let error = graphsignal.debug_context(window).await.unwrap_err();
    assert!(is_too_large(&error), "{error}");
    assert_cut_at_cap(server).await;
}

/// Serves each request the body currently in `body`, as JSON, on loopback.
async fn serve_bodies(body: Arc<Mutex<Vec<u8>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let body = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    url
}

#[test]
fn mutated_prometheus_api_answers_are_series_or_errors() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let body = Arc::new(Mutex::new(Vec::new()));
    let url = runtime.block_on(serve_bodies(body.clone()));
    let prometheus =
        PrometheusServer::builder(url).query(PromQuery::new("x", "up")).timeout(Duration::from_secs(10)).build();
    let window = TimeWindow { start_ns: 1_700_000_000_000_000_000, end_ns: 1_700_000_060_000_000_000 };
    let clean = fixture(PROM_FIXTURES[5]);
    // Each case is an HTTP round trip, so fewer of them.
    let mut runner = proptest::test_runner::TestRunner::new(config(300));
    runner
        .run(&(edits(10), proptest::option::of(json_value())), |(edits, replace)| {
            let bytes = match replace {
                Some(value) => serde_json::to_vec(&serde_json::json!({"status": "success", "data": value})).unwrap(),
                None => mutate(&clean, &edits),
            };
            *body.lock().unwrap() = bytes;
            match runtime.block_on(prometheus.query_range("up", window)) {
                Ok((_, series)) => {
                    for s in series {
                        prop_assert!(s.points.iter().all(|(t, _)| t.is_finite()));
                    }
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// PyTorch-profiler (Kineto) traces
// ---------------------------------------------------------------------------------------------

/// The small real traces (a few KB to ~100 KB uncompressed), so each mutated case stays cheap.
const TRACE_FIXTURES: [&str; 6] = [
    "kernels_memcpy_memset.trace.json",
    "traces/cpu_only__rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz",
    "traces/critical_path__cuda_event_sync__event_sync_trace.json.gz",
    "traces/trace_file_list__inference_rank_1.json.gz",
    "traces/triton_example__triton_example.json.gz",
    "traces/amd_trace__mi250_minitoy_train_ROCm6_2_kineto.json.gz",
];

fn trace_fixtures() -> &'static [Vec<u8>] {
    static TRACES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    TRACES
        .get_or_init(|| TRACE_FIXTURES.iter().map(|name| read_trace_file(&fixture_dir().join(name)).unwrap()).collect())
}

/// Analyses `bytes`; an analysis must be self-consistent and turn into signals, an error must
/// name what is wrong.
fn check_trace(bytes: &[u8]) {
    match analyze_bytes(bytes) {
        Ok(analysis) => {
            assert_eq!(
                analysis.gpu_events,
                analysis.kernel_count + analysis.memcpy_count + analysis.memset_count,
                "{analysis:?}"
            );
            assert!(analysis.gpu_events <= analysis.events, "{analysis:?}");
            let _ = analysis_signals(std::slice::from_ref(&analysis), 5);
            let _ = serde_json::to_string(&analysis).unwrap();
        }
        Err(e) => assert!(e.to_string().contains("not a PyTorch-profiler trace"), "{e}"),
    }
}

/// A trace event whose fields take plausible, extreme and wrong-typed values.
fn trace_event() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0i64..4).prop_map(Value::from),
        "(stream )?[0-9]{1,3}".prop_map(Value::from),
        json_value(),
    ];
    let micros = prop_oneof![
        (0.0f64..1e6).prop_map(Value::from),
        (0i64..1_000_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        hostile_number().prop_map(Value::from),
        json_value(),
    ];
    let text = prop_oneof![
        Just("X"),
        Just("s"),
        Just("f"),
        Just("M"),
        Just("i"),
        Just("kernel"),
        Just("Kernel"),
        Just("gpu_memcpy"),
        Just("gpu_memset"),
        Just("cuda_runtime"),
        Just("Runtime"),
        Just("ac2g"),
        Just("cpu_op"),
        Just("ncclKernel_AllReduce"),
        Just("sm90_xmma_gemm"),
        Just("Memcpy DtoH"),
        Just("ProfilerStep#3"),
        Just(""),
    ]
    .prop_map(Value::from);
    let args = proptest::collection::vec(
        (
            prop_oneof![
                Just("correlation"),
                Just("External id"),
                Just("external id"),
                Just("stream"),
                Just("device"),
                Just("x")
            ],
            id.clone(),
        ),
        0..4,
    )
    .prop_map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    let field = prop_oneof![
        text.clone().prop_map(|v| ("ph", v)),
        text.clone().prop_map(|v| ("cat", v)),
        text.prop_map(|v| ("name", v)),
        id.clone().prop_map(|v| ("pid", v)),
        id.clone().prop_map(|v| ("tid", v)),
        id.prop_map(|v| ("id", v)),
        micros.clone().prop_map(|v| ("ts", v)),
        micros.prop_map(|v| ("dur", v)),
        args.prop_map(|v| ("args", v)),
        json_value().prop_map(|v| ("args", v)),
        json_value().prop_map(|v| ("bp", v)),
    ];
    proptest::collection::vec(field, 0..9)
        .prop_map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

#[test]
fn every_small_trace_fixture_analyses() {
    for (name, bytes) in TRACE_FIXTURES.iter().zip(trace_fixtures()) {
        analyze_bytes(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn arbitrary_bytes_are_a_trace_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_trace(&bytes);
    }
}

proptest! {
    // Generating nested JSON costs far more than analysing it.
    #![proptest_config(config(500))]

    #[test]
    fn generated_events_are_a_trace_or_an_error(
        events in proptest::collection::vec(trace_event(), 0..24),
        header in proptest::collection::vec(
            (prop_oneof![Just("schemaVersion"), Just("baseTimeNanoseconds"), Just("traceName"), Just("deviceProperties"), Just("distributedInfo"), Just("roctracer_version"), Just("other")], json_value()),
            0..4,
        ),
        bare_array in any::<bool>(),
    ) {
        let events = Value::Array(events);
        let trace = if bare_array {
            events
        } else {
            let mut top: serde_json::Map<String, Value> = header.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            top.insert("traceEvents".to_string(), events);
            Value::Object(top)
        };
        check_trace(serde_json::to_string(&trace).unwrap().as_bytes());
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn mutated_real_traces_are_a_trace_or_an_error(which in 0usize..TRACE_FIXTURES.len(), edits in edits(10)) {
        check_trace(&mutate(&trace_fixtures()[which], &edits));
    }

    #[test]
    fn spliced_real_traces_are_a_trace_or_an_error(
        a in 0usize..TRACE_FIXTURES.len(), b in 0usize..TRACE_FIXTURES.len(), cut in any::<usize>(), from in any::<usize>(),
    ) {
        let traces = trace_fixtures();
        check_trace(&splice(&traces[a], cut, &traces[b], from));
    }
}

#[test]
fn deeply_nested_traces_are_errors_not_stack_overflows() {
    for text in [
        nested("[", 100_000),
        format!("{{\"traceEvents\":{}", nested("[", 100_000)),
        format!("{{\"traceEvents\":[{{\"args\":{}", nested("{\"a\":", 100_000)),
        format!("{{\"traceEvents\":[{{\"name\":{}", nested("[", 100_000)),
        format!("{{\"distributedInfo\":{}", nested("{\"rank\":", 100_000)),
        format!("{{\"other\":{}", nested("[{\"x\":", 50_000)),
    ] {
        let error = analyze_bytes(text.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("not a PyTorch-profiler trace"), "{error}");
    }
}

/// One gzip member of `size` zero bytes: a few hundred bytes on disk.
fn gzip_of_zeros(size: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; size]).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn a_gzip_bomb_is_refused_at_the_limit_without_inflating_it() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 16u64 << 20;
    // 256 concatenated members of 1 MiB of zeros: ~256 KiB on disk, 256 MiB inflated, and a
    // trailer that says 1 MiB, so the buffer is not sized from it.
    let member = gzip_of_zeros(1 << 20);
    let bomb = dir.path().join("bomb.json.gz");
    std::fs::write(&bomb, member.repeat(256)).unwrap();
    let started = std::time::Instant::now();
    let error = read_trace_file_limited(&bomb, limit).unwrap_err();
    assert!(matches!(error, TraceError::TooLarge { limit: l, .. } if l == limit), "{error}");
    assert!(error.to_string().contains("16777216"), "the message names the limit: {error}");
    // Inflating all 256 MiB would take far longer than stopping at 16.
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());

    // A trailer that lies (claims 4 GiB) must not size the buffer past the limit either.
    let mut liar = gzip_of_zeros(1024);
    let at = liar.len() - 4;
    liar[at..].copy_from_slice(&u32::MAX.to_le_bytes());
    let liar_path = dir.path().join("liar.json.gz");
    std::fs::write(&liar_path, &liar).unwrap();
    match read_trace_file_limited(&liar_path, 1 << 20) {
        // flate2 checks the size in the trailer: a lie is a read error, never a 4 GiB buffer.
        Err(TraceError::Io { .. }) => {}
        other => panic!("{other:?}"),
    }

    // A plain file over the limit is refused from its size, before a byte is read.
    let big = dir.path().join("big.json");
    std::fs::File::create(&big).unwrap().set_len(limit + 1).unwrap();
    assert!(matches!(read_trace_file_limited(&big, limit), Err(TraceError::TooLarge { .. })));
    // The default limit still reads every fixture.
    for name in TRACE_FIXTURES {
        read_trace_file(&fixture_dir().join(name)).unwrap();
    }
}

#[test]
fn the_trace_source_skips_an_over_size_trace_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bomb.pt.trace.json.gz"), gzip_of_zeros(4 << 20)).unwrap();
    let source = TraceSource::new(dir.path()).max_trace_bytes(1 << 20);
    let window = TimeWindow { start_ns: 0, end_ns: i128::from(i64::MAX) };
    let (found, notes) = source.analyses_for(window).unwrap();
    assert!(found.is_empty());
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("larger than 1048576 bytes"), "{notes:?}");
}

// ---------------------------------------------------------------------------------------------
// Engine logs (SGLang, vLLM, llama.cpp)
// ---------------------------------------------------------------------------------------------

const LOG_FIXTURES: [&str; 7] = [
    "sglang_server.log",
    "vllm_server.log",
    "llamacpp_smollm2_server.log",
    "vllm_cpu/vllm_0.32.0_cpu_startup.log",
    "vllm_cpu/vllm_0.32.0_cpu_serving_seqs16.log",
    "vllm_cpu/vllm_0.32.0_error_tp2_numa.log",
    "vllm_cpu/vllm_0.32.0_error_unknown.log",
];

fn log_fixtures() -> &'static [String] {
    static LOGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| LOG_FIXTURES.iter().map(|name| lossy(&fixture(name))).collect())
}

const ENGINES: [EngineKind; 3] = [EngineKind::Sglang, EngineKind::Vllm, EngineKind::LlamaCpp];

/// Reads `lines` as every engine, with and without a window, and plans capacity from what was
/// read: nothing may panic, and every number a log line yields must be finite (an infinite KV
/// pool or a NaN throughput would poison every comparison after it).
fn check_logs(lines: &[LogLine]) {
    let _ = guess_engine(lines);
    for engine in ENGINES {
        for window in [None, Some(TimeWindow { start_ns: 0, end_ns: 2 })] {
            let snapshot = parse_engine_logs(engine, lines, window);
            assert_finite(&snapshot);
            for request in [None, Some(RequestShape { isl: 1000, osl: 200 }), Some(RequestShape { isl: 0, osl: 0 })] {
                let _ = capacity_plan(engine, &snapshot, request);
            }
        }
    }
}

fn assert_finite(snapshot: &TelemetrySnapshot) {
    for signal in &snapshot.signals {
        if let SignalValue::Number(v) = signal.value {
            assert!(v.is_finite(), "{} = {v} ({:?})", signal.name, signal.detail);
        }
    }
}

fn log_lines(texts: &[String]) -> Vec<LogLine> {
    texts.iter().enumerate().map(|(i, text)| LogLine { time_ns: i as i128, text: text.clone() }).collect()
}

/// A line in the shape the parsers look for, with a hostile number where the value goes.
fn log_shaped_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("max_total_num_tokens="),
        Just("available_gpu_mem="),
        Just("avail mem="),
        Just("mem usage="),
        Just("KV Cache is allocated. #tokens: "),
        Just("#running-req: "),
        Just("#queue-req: "),
        Just("#new-token: "),
        Just("token usage: "),
        Just("gen throughput (token/s): "),
        Just("GPU KV cache size: "),
        Just("Maximum concurrency for "),
        Just("Avg prompt throughput: "),
        Just("Running: "),
        Just("GPU KV cache usage: "),
        Just("prompt eval time = "),
        Just("       eval time = "),
        Just("n_ctx_slot = "),
        Just("llama_kv_cache: size = "),
        Just("Model loading took "),
        Just("took "),
        Just("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "),
        Just("non-default args: {'max_num_seqs': "),
        Just("server_args=ServerArgs(mem_fraction_static="),
    ];
    (
        prop_oneof![
            Just(""),
            Just("[2026-03-24 20:39:20 TP0] "),
            Just("INFO 03-24 20:40:00 [loggers.py:123] "),
            Just("slot print_timing: id  0 | task 1 | ")
        ],
        key,
        hostile_number(),
        prop_oneof![
            proptest::sample::select(vec!["", " GB", " tokens", " ms /   12 tokens", ", ", "%", " MiB"])
                .prop_map(str::to_string),
            "[ -~]{0,20}",
        ],
    )
        .prop_map(|(prefix, key, number, suffix)| format!("{prefix}{key}{number}{suffix}"))
}

#[test]
fn every_log_fixture_reads() {
    for (name, text) in LOG_FIXTURES.iter().zip(log_fixtures()) {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        check_logs(&log_lines(&lines));
        assert!(!lines.is_empty(), "{name}");
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn arbitrary_log_lines_never_panic(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6)) {
        let texts: Vec<String> = lines.iter().map(|l| lossy(l)).collect();
        check_logs(&log_lines(&texts));
    }
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn log_shaped_lines_with_hostile_numbers_never_panic(lines in proptest::collection::vec(log_shaped_line(), 1..8)) {
        check_logs(&log_lines(&lines));
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn mutated_real_logs_never_panic(which in 0usize..LOG_FIXTURES.len(), edits in edits(16)) {
        let text = lossy(&mutate(log_fixtures()[which].as_bytes(), &edits));
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        check_logs(&log_lines(&lines));
    }

    #[test]
    fn shuffled_and_joined_real_log_lines_never_panic(
        picks in proptest::collection::vec((0usize..LOG_FIXTURES.len(), any::<usize>(), any::<usize>()), 1..60),
        join in 0usize..4,
    ) {
        let fixtures = log_fixtures();
        let lines: Vec<String> = picks
            .iter()
            .map(|&(f, l, cut)| {
                let all: Vec<&str> = fixtures[f].lines().collect();
                let line = all[l % all.len()];
                // Cut at a character boundary: what a log reader that truncates long lines does.
                let cut = (0..=cut % (line.len() + 1)).rev().find(|&c| line.is_char_boundary(c)).unwrap_or(0);
                if cut == 0 { line.to_string() } else { line[..cut].to_string() }
            })
            .collect();
        // Several physical lines in one record, as some backends hand them over.
        let grouped: Vec<String> = if join == 0 { lines } else { lines.chunks(join + 1).map(|c| c.join("\n")).collect() };
        check_logs(&log_lines(&grouped));
    }
}

#[test]
fn a_long_log_line_reads_in_linear_time() {
    // Log lines reach this parser from the deployers, which cut each line at 16 KiB
    // (autodebug_deploy::MAX_LINE_BYTES); far above that, a line must still cost linear time.
    let started = std::time::Instant::now();
    for filler in ["9", " ", "=", "#running-req: 1, ", "GPU KV cache size: "] {
        let line = format!("max_total_num_tokens={}", filler.repeat((512 << 10) / filler.len()));
        check_logs(&log_lines(&[line]));
    }
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Graphsignal debug context
// ---------------------------------------------------------------------------------------------

/// The markdown (or JSON) text of each Graphsignal fixture's answer field.
fn graphsignal_contexts() -> &'static [String] {
    static CONTEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    CONTEXTS.get_or_init(|| {
        [
            "graphsignal_debug_context_sglang.json",
            "graphsignal_context_signals_vllm.json",
            "graphsignal_context_summary.json",
        ]
        .iter()
        .map(|name| {
            let answer: Value = serde_json::from_slice(&fixture(name)).unwrap();
            match answer.get("context").or_else(|| answer.get("summary")).unwrap() {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            }
        })
        .collect()
    })
}

fn check_context(text: &str) {
    let snapshot = parse_debug_context(text);
    assert_finite(&snapshot);
    assert_eq!(snapshot.raw.as_deref(), Some(text));
}

/// A debug context: prose and fenced blocks, some JSON of the shapes Graphsignal uses, some any.
fn context_text() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        "[ -~]{0,40}",
        Just("```json".to_string()),
        Just("```".to_string()),
        json_value().prop_map(|v| format!("```json\n{v}\n```")),
        (
            prop_oneof![
                Just("profiles"),
                Just("span_counters"),
                Just("attributes"),
                Just("metrics"),
                Just("errors"),
                Just("signals")
            ],
            proptest::collection::vec(
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("function"),
                            Just("calls"),
                            Just("cumtime_ns"),
                            Just("name"),
                            Just("value"),
                            Just("count"),
                            Just("unit"),
                            Just("span"),
                            Just("tags"),
                            Just("x")
                        ],
                        prop_oneof![
                            json_value(),
                            hostile_number().prop_map(Value::from),
                            hostile_number().prop_map(|n| Value::from(n.parse::<f64>().unwrap_or(0.0)))
                        ],
                    ),
                    0..6,
                )
                .prop_map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
                0..5,
            ),
        )
            .prop_map(|(key, items)| format!("```json\n{}\n```", serde_json::json!({ key: items }))),
    ];
    proptest::collection::vec(section, 0..8).prop_map(|s| s.join("\n"))
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn arbitrary_text_is_a_snapshot(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_context(&lossy(&bytes));
    }
}

proptest! {
    #![proptest_config(config(800))]

    #[test]
    fn generated_contexts_are_snapshots(text in context_text()) {
        check_context(&text);
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn mutated_real_contexts_are_snapshots(which in 0usize..3, edits in edits(12)) {
        check_context(&lossy(&mutate(graphsignal_contexts()[which].as_bytes(), &edits)));
    }
}

#[test]
fn deeply_nested_graphsignal_json_is_a_warning_not_a_stack_overflow() {
    for depth in [1_000, 100_000] {
        for text in [
            format!("```json\n{}\n```", nested("[", depth)),
            format!("```json\n{{\"profiles\":{}\n```", nested("[{\"a\":", depth)),
            nested("{\"a\":", depth),
        ] {
            let snapshot = parse_debug_context(&text);
            assert!(snapshot.signals.is_empty());
            assert!(!snapshot.warnings.is_empty(), "the reader says why nothing was read");
        }
    }
}
