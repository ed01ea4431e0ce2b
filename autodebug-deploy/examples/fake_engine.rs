//! A tiny stand-in for an inference engine, used by this crate's tests (std::net only).
//!
//! It takes engine-style flags, prints startup lines, listens on `--host`/`--port` and answers
//! `GET /health` with 200. Flags that change its behaviour, for tests:
//!
//! - any flag containing `bogus` → `error: unrecognized arguments: ...` on stderr, exit 2
//!   (before binding, like argparse in SGLang/vLLM);
//! - `--startup-log FILE` → print FILE's lines first (e.g. a real engine's startup log);
//! - `--startup-delay-ms N` → wait before listening;
//! - `--fail-health` → answer 503 forever;
//! - `--ignore-sigterm` → only SIGKILL stops it;
//! - `--fail-first-run MARKER` → when MARKER does not exist, create it and exit 1 (a flaky start).
//!
//! ```text
//! cargo run -p autodebug-deploy --example fake_engine -- --port 30000 --model m
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let has = |name: &str| args.iter().any(|a| a == name);

    let bogus: Vec<&String> = args.iter().filter(|a| a.starts_with('-') && a.contains("bogus")).collect();
    if !bogus.is_empty() {
        let names: Vec<&str> = bogus.iter().map(|s| s.as_str()).collect();
        eprintln!("usage: fake_engine [--host HOST] [--port PORT] [--model MODEL] [flags...]");
        eprintln!("fake_engine: error: unrecognized arguments: {}", names.join(" "));
        std::process::exit(2);
    }
    if let Some(marker) = value("--fail-first-run")
        && !std::path::Path::new(&marker).exists()
    {
        if let Err(e) = std::fs::write(&marker, b"failed once\n") {
            eprintln!("fake_engine: cannot write {marker}: {e}");
        }
        eprintln!("fake_engine: RuntimeError: simulated flaky start (marker {marker} created)");
        std::process::exit(1);
    }
    if has("--ignore-sigterm") {
        // SAFETY: installing SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
        println!("fake_engine: ignoring SIGTERM");
    }

    let host = value("--host").unwrap_or_else(|| "127.0.0.1".into());
    let port = value("--port").unwrap_or_else(|| "30000".into());
    let model = value("--model").unwrap_or_else(|| "fake-model".into());
    println!("fake_engine: starting pid {} serving {model} with args {args:?}", std::process::id());
    if let Some(path) = value("--startup-log") {
        match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().for_each(|l| println!("{l}")),
            Err(e) => eprintln!("fake_engine: cannot read {path}: {e}"),
        }
    }
    if let Some(ms) = value("--startup-delay-ms").and_then(|v| v.parse().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let listener = match TcpListener::bind(format!("{host}:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake_engine: error: cannot listen on {host}:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("fake_engine: listening on http://{host}:{port}");
    let health_status = if has("--fail-health") { "503 Service Unavailable" } else { "200 OK" };
    for stream in listener.incoming().flatten() {
        answer(stream, health_status);
    }
}

fn answer(mut stream: TcpStream, health_status: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request_line = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let status = if path == "/health" { health_status } else { "404 Not Found" };
    println!("fake_engine: GET {path} -> {status}");
    let body = "ok\n";
    let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}
