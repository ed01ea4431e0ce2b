//! `autodebug telemetry fetch` against a loopback HTTP server that answers like a Prometheus
//! server, a Graphsignal API and an engine's `/metrics`, from the telemetry crate's fixtures.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../autodebug-telemetry/tests/fixtures").join(name),
    )
    .unwrap()
}

/// A one-request-per-connection HTTP server on 127.0.0.1 with a free port; records each
/// request line and headers. Stops after 30 s or 500 requests.
fn serve() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let (metrics, matrix, context) = (
        fixture("generated_sglang_0.5.23_multiproc.prom"),
        fixture("prometheus_query_range_matrix.json"),
        fixture("graphsignal_debug_context_sglang.json"),
    );
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while Instant::now() < deadline && served < 500 {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            served += 1;
            let (log, metrics, matrix, context) = (log.clone(), metrics.clone(), matrix.clone(), context.clone());
            // One thread per connection: a client may open a connection before it needs it.
            std::thread::spawn(move || answer(stream, &log, &metrics, &matrix, &context));
        }
    });
    (url, seen)
}

fn answer(stream: std::net::TcpStream, log: &Mutex<Vec<String>>, metrics: &str, matrix: &str, context: &str) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    if head.is_empty() {
        return;
    }
    log.lock().unwrap().push(head.clone());
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, kind, body) = if path.starts_with("/metrics") {
        ("200 OK", "text/plain; version=0.0.4", metrics)
    } else if path.starts_with("/api/v1/query_range") {
        ("200 OK", "application/json", matrix)
    } else if path.starts_with("/api/v1/debug_context/") {
        ("200 OK", "application/json", context)
    } else {
        ("404 Not Found", "text/plain", "not here")
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn fetch(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_autodebug"));
    command
        .args(["telemetry", "fetch", "--json"])
        .args(args)
        .env_remove("GRAPHSIGNAL_API_KEY")
        .env_remove("PROMETHEUS_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

const WINDOW: [&str; 4] = ["--start", "2026-03-24T20:40:00Z", "--end", "2026-03-24T20:45:00Z"];

#[test]
fn prometheus_server_with_the_default_engine_queries() {
    let (url, seen) = serve();
    let mut args = vec!["--source", "prometheus", "--url", &url, "--engine", "vllm"];
    args.extend(WINDOW);
    let v = fetch(&args, &[]);
    let signals = v["signals"].as_array().unwrap();
    let ttft: Vec<_> = signals.iter().filter(|s| s["name"] == "ttft_p99").collect();
    assert!(!ttft.is_empty(), "{v}");
    // Two series in the answer: one signal set per series, told apart by their labels.
    assert!(ttft.iter().any(|s| s["labels"]["engine"] == "1"));
    let requests = seen.lock().unwrap().clone();
    assert!(requests.iter().all(|r| r.starts_with("GET /api/v1/query_range?")), "{requests:?}");
    assert!(requests.iter().any(|r| r.contains("vllm%3Atime_to_first_token_seconds_bucket")), "{requests:?}");
    // The window's start, in unix seconds.
    assert!(requests[0].contains("start=1774384800"), "{}", requests[0]);
}

#[test]
fn graphsignal_debug_context_with_a_key_that_stays_secret() {
    let (url, seen) = serve();
    let mut args = vec!["--source", "graphsignal", "--url", &url];
    args.extend(WINDOW);
    let out = Command::new(env!("CARGO_BIN_EXE_autodebug"))
        .args(["telemetry", "fetch"])
        .args(&args)
        .env("GRAPHSIGNAL_API_KEY", "sk-test-do-not-print")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sglang.scheduler.Scheduler.run_batch"), "{text}");
    assert!(!text.contains("sk-test-do-not-print"));
    let requests = seen.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.to_ascii_lowercase().contains("x-api-key: sk-test-do-not-print")),
        "{requests:?}"
    );
    assert!(requests[0].contains("start_time_ns=1774384800000000000"), "{}", requests[0]);
}

#[test]
fn live_scrape_window_and_usage_errors() {
    let (url, seen) = serve();
    let v = fetch(&["--source", "scrape", "--url", &url, "--duration", "600ms"], &[]);
    assert!(!v["signals"].as_array().unwrap().is_empty(), "{v}");
    let window = &v["window"];
    let length_ns = window["end_ns"].as_f64().unwrap() - window["start_ns"].as_f64().unwrap();
    assert!(length_ns >= 0.6e9, "{window}");
    assert!(seen.lock().unwrap().iter().filter(|r| r.starts_with("GET /metrics")).count() >= 2);

    let out = Command::new(env!("CARGO_BIN_EXE_autodebug"))
        .args([
            "telemetry",
            "fetch",
            "--source",
            "prometheus",
            "--url",
            &url,
            "--start",
            "yesterday",
            "--end",
            "2026-03-24T20:45:00Z",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("yesterday"));
}
