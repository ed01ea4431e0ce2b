//! `bench_sse_parsers`: the crate's own SSE parser (`sse.rs`, used by the lean HTTP/1.1 path)
//! against `eventsource-stream` (used by the reqwest path), side by side on the same recorded
//! bytes split into the same reads. Parse only: each event's data is handed out and its length
//! summed; no JSON, no accounting (both paths feed the same accounting afterwards).
//!
//! Inputs: the real llama.cpp stream in `fixtures/` (132 events) and the same stream 16 times
//! over (a 2,112-event body), each as one read per event (a server streaming token by token)
//! and as 1,460-byte reads (one TCP segment each, a client that fell behind). `eventsource-stream`
//! is driven over an in-memory stream with a no-op waker: every read is ready, so nothing but
//! parsing is timed. Each run times the two parsers one after the other for `--budget-ms` each;
//! the figures are medians of `--runs` runs of ns per event, and the median of the per-run ratios.
//!
//! ```text
//! cargo run --release -p autodebug-benches --bin bench_sse_parsers -- [--runs N] [--budget-ms MS]
//! ```

use std::convert::Infallible;
use std::process::ExitCode;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use autodebug_bench::self_check::parse_sse;
use autodebug_benches::{median, per_event_reads};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;

const LLAMACPP_STREAM: &[u8] = include_bytes!("fixtures/llamacpp_smollm2_chat_stream.sse");

/// One TCP segment's payload on a 1500-byte MTU.
const SEGMENT_BYTES: usize = 1460;

/// Events and data bytes through the own parser.
fn own(reads: &[&[u8]]) -> Result<(u64, usize), String> {
    let mut bytes = 0usize;
    let events = parse_sse(reads.iter().copied(), |data| bytes += data.len())?;
    Ok((events, bytes))
}

/// Events and data bytes through `eventsource-stream`, polled to the end with a no-op waker.
fn eventsource(reads: &[&[u8]]) -> Result<(u64, usize), String> {
    let mut stream = futures_util::stream::iter(reads.iter().map(|&read| Ok::<_, Infallible>(read))).eventsource();
    let mut cx = Context::from_waker(Waker::noop());
    let (mut events, mut bytes) = (0u64, 0usize);
    loop {
        match stream.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(event))) => {
                events += 1;
                bytes += event.data.len();
            }
            Poll::Ready(Some(Err(error))) => return Err(error.to_string()),
            Poll::Ready(None) => return Ok((events, bytes)),
            Poll::Pending => return Err("an in-memory stream was pending".into()),
        }
    }
}

/// ns per event of `parse` over `reads`, repeated for about `budget`.
/// A parser under test: the reads of one stream in, (events, bytes) out.
type Parser = fn(&[&[u8]]) -> Result<(u64, usize), String>;

fn ns_per_event(parse: Parser, reads: &[&[u8]], budget: Duration) -> f64 {
    let started = Instant::now();
    let mut events = 0u64;
    while started.elapsed() < budget {
        if let Ok((n, bytes)) = parse(std::hint::black_box(reads)) {
            events += n;
            std::hint::black_box(bytes);
        }
    }
    started.elapsed().as_nanos() as f64 / events.max(1) as f64
}

fn parse_args() -> Result<(usize, Duration), String> {
    let (mut runs, mut budget_ms) = (5usize, 500u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{name} needs a positive whole number"))
        };
        match arg.as_str() {
            "--runs" => runs = value("--runs")? as usize,
            "--budget-ms" => budget_ms = value("--budget-ms")?,
            "-h" | "--help" => return Err("usage: bench_sse_parsers [--runs N] [--budget-ms MS]".into()),
            other => return Err(format!("unknown argument `{other}`; see --help")),
        }
    }
    Ok((runs, Duration::from_millis(budget_ms)))
}

fn main() -> ExitCode {
    let (runs, budget) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let long: Vec<u8> = LLAMACPP_STREAM.repeat(16);
    let inputs: Vec<(&str, Vec<&[u8]>)> = vec![
        ("llama.cpp, a read per event", per_event_reads(LLAMACPP_STREAM)),
        ("llama.cpp, 1460-byte reads", LLAMACPP_STREAM.chunks(SEGMENT_BYTES).collect()),
        ("llama.cpp x16, a read per event", per_event_reads(&long)),
        ("llama.cpp x16, 1460-byte reads", long.chunks(SEGMENT_BYTES).collect()),
    ];
    println!("{runs} runs of {} ms per parser and input; ns per event, medians", budget.as_millis());
    println!("{:<34} {:>7} {:>12} {:>18} {:>8}", "input", "events", "own sse.rs", "eventsource-stream", "ratio");
    for (name, reads) in &inputs {
        // Both parsers must see the same events before either is timed.
        match (own(reads), eventsource(reads)) {
            (Ok(a), Ok(b)) if a == b => {}
            (a, b) => {
                eprintln!("{name}: the parsers disagree: own {a:?}, eventsource-stream {b:?}");
                return ExitCode::FAILURE;
            }
        }
        let events = own(reads).map(|(n, _)| n).unwrap_or(0);
        let (mut own_ns, mut es_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let a = ns_per_event(own, reads, budget);
            let b = ns_per_event(eventsource, reads, budget);
            own_ns.push(a);
            es_ns.push(b);
            ratios.push(b / a);
        }
        println!(
            "{name:<34} {events:>7} {:>12.1} {:>18.1} {:>7.2}x",
            median(&mut own_ns).unwrap_or(0.0),
            median(&mut es_ns).unwrap_or(0.0),
            median(&mut ratios).unwrap_or(0.0)
        );
    }
    ExitCode::SUCCESS
}
