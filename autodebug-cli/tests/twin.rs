//! `autodebug twin fit|validate|predict` on a REAL engine's measurements: the llama.cpp data set
//! kept in `autodebug-sim/tests/fixtures/real/` (measured by `autodebug run` on this project's
//! machine; provenance in the `.yaml` next to it), so no engine is needed here.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

fn real(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../autodebug-sim/tests/fixtures/real").join(name)
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().expect("autodebug runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = run(args);
    assert!(ok, "autodebug {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn fit_writes_a_twin_that_predict_reads_and_validate_reports_held_out_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = real("llamacpp-smollm2.db");
    let db = db.to_str().unwrap();
    let out = dir.path().join("twin.yaml");
    let fitted = json(&["twin", "fit", "--db", db, "--out", out.to_str().unwrap(), "--json"]);
    assert_eq!(fitted["engine"], "llamacpp");
    assert!(fitted["observations"].as_u64().unwrap() >= 20, "{fitted}");
    assert!(fitted["costs"]["step_us"].as_f64().unwrap() > 0.0, "{fitted}");
    assert!(out.exists());

    let config = real("llamacpp-smollm2.yaml");
    let predict = |flags: &str| {
        json(&[
            "twin",
            "predict",
            "--twin",
            out.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "--flags",
            flags,
            "--json",
        ])
    };
    let (wide, narrow) = (predict("--parallel 8"), predict("--parallel 1"));
    let ttft = |v: &Value| v["plans"]["concurrent"]["metrics"]["ttft.p50"].as_f64().unwrap();
    assert!(ttft(&narrow) > 2.0 * ttft(&wide), "one slot queues 8 streams: {narrow} vs {wide}");

    let validation = json(&["twin", "validate", "--db", db, "--holdout", "4", "--json"]);
    assert_eq!(validation["holdout"], "last 4");
    let points = validation["points"].as_array().unwrap();
    assert_eq!(points.len(), 8, "4 iterations x 2 plans: {validation}");
    for metric in ["output_throughput", "tpot.mean", "ttft.p50", "ttft.p99", "itl.p99", "e2e.mean"] {
        assert!(validation["median_ape"][metric].as_f64().is_some(), "{metric} missing: {validation}");
        assert!(validation["p90_ape"][metric].as_f64().is_some(), "{metric} missing: {validation}");
    }
    assert!(points.iter().all(|p| p["fitted_on"] == points[0]["fitted_on"]));

    let (ok, table, _) = run(&["twin", "validate", "--db", db]);
    assert!(ok && table.contains("leave-one-out") && table.contains("median APE"), "{table}");
}

#[test]
fn a_missing_store_and_a_broken_twin_are_errors_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.db");
    let (ok, _, stderr) = run(&["twin", "fit", "--db", missing.to_str().unwrap()]);
    assert!(!ok && stderr.contains("none.db"), "{stderr}");
    let twin = dir.path().join("twin.yaml");
    std::fs::write(&twin, "engine: [").unwrap();
    let config = real("llamacpp-smollm2.yaml");
    let (ok, _, stderr) = run(&["twin", "predict", "--twin", twin.to_str().unwrap(), "-c", config.to_str().unwrap()]);
    assert!(!ok && stderr.contains("twin.yaml") && stderr.contains("autodebug twin fit"), "{stderr}");
}

/// The simulator child serving a twin on a free loopback port, killed when dropped.
struct Served {
    child: std::process::Child,
    port: u16,
}

impl Served {
    /// `autodebug sim serve --twin TWIN -- ENGINE_ARGS`, once its health check answers.
    fn start(twin: &str, engine_args: &[&str]) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(BIN)
            .args(["sim", "serve", "--twin", twin, "--port", &port.to_string(), "--quiet", "--"])
            .args(engine_args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("autodebug sim serve starts");
        let served = Served { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !healthy(port) {
            assert!(std::time::Instant::now() < deadline, "the served twin did not become healthy within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        served
    }

    /// `autodebug bench` against it, closed loop; the summary of its one point, every request served.
    fn bench(&self, model: &str, concurrency: u32, requests: u32, isl: u32, osl: u32) -> Value {
        let url = format!("http://127.0.0.1:{}", self.port);
        let numbers = [concurrency, requests, isl, osl].map(|n| n.to_string());
        let report = json(&[
            "bench",
            "--url",
            &url,
            "--model",
            model,
            "--concurrency",
            &numbers[0],
            "--requests",
            &numbers[1],
            "--isl",
            &numbers[2],
            "--osl",
            &numbers[3],
            "--json",
        ]);
        let summary = report["points"][0]["summary"].clone();
        assert_eq!(summary["failed"], 0, "{summary}");
        summary
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
    if stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// The body of a plain HTTP GET on loopback.
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or(response)
}

/// The twin of the REAL vLLM CPU data set (tiny model) served over loopback HTTP by `autodebug
/// sim serve --twin`, and measured by `autodebug bench` as the real engine was: a request counts
/// the prompt tokens the real engine counted for it, and the throughput the client measures is
/// the twin's own prediction for that workload. The bound is loose (0.6-1.4x, as for the built-in
/// model's real-time test): the server sleeps each step in real time on a shared machine.
#[test]
fn a_fitted_twin_serves_over_http_at_its_predicted_pace() {
    let dir = tempfile::tempdir().unwrap();
    let twin = dir.path().join("twin.yaml");
    let twin_path = twin.to_str().unwrap();
    let db = real("vllm-cpu-tiny.db");
    json(&["twin", "fit", "--db", db.to_str().unwrap(), "--out", twin_path, "--json"]);
    let flags = "--max-num-seqs 16";
    let config = real("vllm-cpu-tiny.yaml");
    let predicted =
        json(&["twin", "predict", "--twin", twin_path, "-c", config.to_str().unwrap(), "--flags", flags, "--json"]);
    let predicted = &predicted["plans"]["concurrent"]["metrics"];

    let mut engine_args: Vec<&str> = flags.split_whitespace().collect();
    engine_args.extend(["--served-model-name", "tiny-twin"]);
    let server = Served::start(twin_path, &engine_args);
    // The data set's concurrent plan: 16 streams, 128 prompt and 64 output tokens.
    let summary = &server.bench("tiny-twin", 16, 48, 128, 64);
    let fitted: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&twin).unwrap()).unwrap();
    let engine_prompt = fitted["plans"]["concurrent"]["prompt_tokens"].as_f64().unwrap();
    let counted = summary["prompt_tokens"].as_f64().unwrap() / summary["succeeded"].as_f64().unwrap();
    assert!(
        (counted / engine_prompt - 1.0).abs() < 0.03,
        "a 128-token prompt counts as the real engine counted it ({engine_prompt}), served {counted}"
    );
    let measured = summary["output_throughput"].as_f64().unwrap();
    let expected = predicted["output_throughput"].as_f64().unwrap();
    let ratio = measured / expected;
    println!("served twin: {measured:.0} tok/s measured, {expected:.0} predicted (ratio {ratio:.2})");
    assert!((0.6..=1.4).contains(&ratio), "measured {measured:.0} tok/s vs the twin's {expected:.0}");
}

/// The twin of the REAL llama.cpp data set served as llama-server would be launched (its `-m` and
/// `--metrics` are serving flags, not tuned ones), measured by `autodebug bench` on the data set's
/// concurrent plan: the client sees the twin's own prediction for the engine's defaults, and the
/// metrics are llama-server's.
#[test]
fn a_llamacpp_twin_serves_llama_server_metrics_at_its_predicted_pace() {
    let dir = tempfile::tempdir().unwrap();
    let twin = dir.path().join("twin.yaml");
    let twin_path = twin.to_str().unwrap();
    let db = real("llamacpp-smollm2.db");
    json(&["twin", "fit", "--db", db.to_str().unwrap(), "--out", twin_path, "--json"]);
    let config = real("llamacpp-smollm2.yaml");
    let predicted =
        json(&["twin", "predict", "--twin", twin_path, "-c", config.to_str().unwrap(), "--flags", "", "--json"]);
    let predicted = &predicted["plans"]["concurrent"]["metrics"];

    let server = Served::start(
        twin_path,
        &["-m", "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "--metrics", "--alias", "smollm2-twin"],
    );
    // The data set's concurrent plan: 8 streams, 64 prompt and 48 output tokens.
    let summary = &server.bench("smollm2-twin", 8, 16, 64, 48);
    let measured = summary["output_throughput"].as_f64().unwrap();
    let expected = predicted["output_throughput"].as_f64().unwrap();
    let ratio = measured / expected;
    println!("served llama.cpp twin: {measured:.1} tok/s measured, {expected:.1} predicted (ratio {ratio:.2})");
    assert!((0.6..=1.4).contains(&ratio), "measured {measured:.1} tok/s vs the twin's {expected:.1}");
    let metrics = get(server.port, "/metrics");
    let predicted_tokens = metrics
        .lines()
        .find_map(|line| line.strip_prefix("llamacpp:tokens_predicted_total "))
        .and_then(|value| value.trim().parse::<f64>().ok());
    // The bench's warmup request is served too.
    assert!(predicted_tokens.is_some_and(|n| n >= 16.0 * 48.0), "llama-server's counters: {metrics}");
    let (ok, _, stderr) = run(&["sim", "serve", "--twin", dir.path().join("none.yaml").to_str().unwrap()]);
    assert!(!ok && stderr.contains("none.yaml"), "{stderr}");
}
