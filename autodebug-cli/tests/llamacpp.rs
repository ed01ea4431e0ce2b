//! The loop on a REAL inference engine: llama.cpp's `llama-server` with SmolLM2-135M on this
//! machine's CPU. Benchmark, metrics, logs and plan all come from the real engine. Ignored in a
//! plain `cargo test`: `scripts/llama-server.sh` builds the server and fetches the model once (~11
//! minutes, cached under ~/.cache/autodebug; `.ci/setup.sh` runs it). With `--include-ignored` a
//! missing server or model is a failure naming that command.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use autodebug_core::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

/// One real server at a time on two cores: each test's figures would be the other's noise.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Where `scripts/llama-server.sh` caches (llama-server, model); the test fails when either is missing.
fn llama_server() -> (PathBuf, PathBuf) {
    let cache = support::engine_cache();
    let server = cache.join("llama-server");
    let model = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    for path in [&server, &model] {
        assert!(
            path.exists(),
            "needs llama-server: bash scripts/llama-server.sh, then cargo test --workspace -- --include-ignored ({} is missing)",
            path.display()
        );
    }
    (server, model)
}

#[test]
#[ignore = "needs llama-server: bash scripts/llama-server.sh, then cargo test --workspace -- --include-ignored"]
fn the_loop_tunes_a_real_llama_server_and_the_trail_shows_what_changed_and_why() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (server, model) = llama_server();
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/llamacpp-local.yaml")).unwrap();
    let config = example
        .replace("~/.cache/autodebug/llama-server", &server.to_string_lossy())
        .replace("~/.cache/autodebug/models/SmolLM2-135M-Instruct.Q4_1.gguf", &model.to_string_lossy())
        .replace("sessions/llamacpp", &dir.path().join("sessions").to_string_lossy())
        .replace("requests: 12", "requests: 8")
        .replace("confirm_trials: 3", "confirm_trials: 0");
    let path = dir.path().join("llamacpp.yaml");
    std::fs::write(&path, config).unwrap();

    let output = Command::new(BIN).args(["run", "-q", "--iterations", "2", "-c"]).arg(&path).output().unwrap();
    assert!(
        output.status.success(),
        "run failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let store = Store::open(&dir.path().join("sessions").join("autodebug.db")).unwrap();
    let session = store.latest_session().unwrap().unwrap();
    let history = store.history(session.id).unwrap();
    assert_eq!(history.iterations.len(), 2);
    let first = &history.iterations[0];
    // Metrics and logs come from the real engine.
    support::assert_real_llamacpp_evidence(first);
    // The plan changed a llama.cpp knob and says why, citing the engine's signals.
    let plan = first.plan.as_ref().unwrap();
    assert!(!plan.changes.is_empty(), "{:?}", plan.notes);
    for change in &plan.changes {
        assert!(change.knob.starts_with("--") && !change.reason.is_empty());
    }
    let log = std::fs::read_dir(dir.path().join("sessions"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("debug-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap();
    assert!(log.contains("**Planned changes**") && log.contains(&plan.changes[0].knob), "{log}");
    assert_ne!(history.iterations[1].spec.flags, first.spec.flags, "iteration 2 runs the planned change");
}

/// The real server as a child on a free loopback port, killed when dropped.
struct LlamaServer {
    child: std::process::Child,
    base: String,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_llama_server() -> LlamaServer {
    let (server, model) = llama_server();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("address").port();
    let child = Command::new(&server)
        .arg("-m")
        .arg(&model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start llama-server");
    let running = LlamaServer { child, base: format!("http://127.0.0.1:{port}") };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let health = std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut stream| {
            use std::io::{Read, Write};
            stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
            stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).ok()?;
            Some(head.starts_with(b"HTTP/1.1 200"))
        });
        if health == Some(true) {
            return running;
        }
        assert!(std::time::Instant::now() < deadline, "llama-server did not become healthy within 120 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs llama-server: bash scripts/llama-server.sh, then cargo test --workspace -- --include-ignored"]
fn find_max_rate_finishes_on_a_real_llama_server_and_reports_its_bracket() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let server = start_llama_server();
    let out = Command::new(BIN)
        .args(["bench", "--url", &server.base, "--model", "smollm2", "--isl", "64", "--osl", "16"])
        .args(["--find-max-rate", "--slo-ttft-p99-ms", "2000", "--duration", "4s", "--tolerance", "0.3", "--json"])
        .output()
        .expect("run autodebug bench --find-max-rate");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    println!("{json:#}");
    let steps = json["steps"].as_array().expect("steps");
    assert!(!steps.is_empty());
    // A rate that held and one that broke, within the tolerance, unless the search hit a bound.
    let (rate, broke) = (json["rate"].as_f64(), json["broke_at"].as_f64());
    assert!(rate.is_some() || broke.is_some(), "{json}");
    if let (Some(rate), Some(broke)) = (rate, broke) {
        assert!(broke > rate && broke / rate <= 1.3 + 1e-9, "{json}");
        assert!(out.status.success());
    }
    // The held rate's verdict rests on its trials pooled (one of them may have had a request over
    // the bound, as long as the pool stays within the p99's 1%): its pooled figures hold the SLO.
    if rate.is_some() {
        let held = &json["held"];
        let (over, requests) =
            (held["counts"]["over_ttft"].as_f64().unwrap(), held["counts"]["requests"].as_f64().unwrap());
        assert!(over <= 0.01 * requests && held["counts"]["failed"] == 0, "{held}");
        assert!(held["ttft_p99_ms"].as_f64().expect("ttft") <= 2000.0, "{held}");
    }
}
