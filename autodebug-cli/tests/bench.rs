//! `autodebug bench` against an `autodebug sim serve` child on a free loopback port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");
const MODEL: &str = "Qwen/Qwen1.5-0.5B-Chat";

/// The simulator child, killed when dropped.
struct Sim {
    child: Child,
    base: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind loopback").local_addr().expect("address").port()
}

fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn start_sim() -> Sim {
    start_sim_as(&["--engine", "sglang", "--gpu", "H100", "--model", "qwen1.5-0.5b"])
}

fn start_sim_as(profile: &[&str]) -> Sim {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["sim", "serve"])
        .args(profile)
        .arg("--port")
        .arg(port.to_string())
        .arg("--")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn autodebug sim serve");
    let sim = Sim { child, base: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(port) {
        assert!(Instant::now() < deadline, "the simulator did not become healthy within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    sim
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("autodebug-cli-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn bench_writes_a_versioned_report_and_one_jsonl_line_per_request() {
    let sim = start_sim();
    let dir = temp_dir("report");
    let (json, jsonl) = (dir.join("report.json"), dir.join("records.jsonl"));
    let secret = "sk-test-never-printed-42";
    let output = Command::new(BIN)
        .args(["bench", "--url", &sim.base, "--model", MODEL, "--concurrency", "4", "--requests", "12"])
        .args(["--isl", "32", "--osl", "16", "--trials", "2", "--slo-ttft-ms", "5000"])
        .arg("--json")
        .arg(&json)
        .arg("--jsonl")
        .arg(&jsonl)
        .env("AUTODEBUG_BENCH_TOKEN", secret)
        .output()
        .expect("run autodebug bench");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret), "the token must never be printed");
    assert!(stdout.contains("ttft p50") && stdout.contains("bench"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    assert_eq!(report["schema_version"], 1);
    let point = &report["points"][0];
    assert_eq!(point["context"]["concurrency"], 4);
    assert_eq!(point["context"]["trials"], 2);
    assert_eq!(point["context"]["model"], MODEL);
    assert_eq!(point["summary"]["requests"], 24);
    assert_eq!(point["summary"]["output_tokens"], 24 * 16);
    for field in ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"] {
        assert!(
            point["summary"][field]["p50"].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {}",
            point["summary"][field]
        );
    }
    assert_eq!(point["trials"].as_array().map(Vec::len), Some(2));
    assert!(point["trial_stats"]["output_throughput"]["ci_high"].is_number());
    assert_eq!(point["goodput"]["good_requests"], 24, "every request meets a 5 s TTFT");
    assert!(!std::fs::read_to_string(&json).unwrap().contains(secret));

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 24, "one line per request of both trials");
    assert!(lines.iter().all(|l| l["ttft_ns"].as_u64().is_some() && l["output_tokens"] == 16));
    assert_eq!(lines.iter().filter(|l| l["trial"] == 2).count(), 12);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_prints_json_for_a_sweep_and_refuses_bad_lengths() {
    let sim = start_sim();
    let output = Command::new(BIN)
        .args(["bench", "--url", &sim.base, "--model", MODEL, "--sweep-concurrency", "1,4", "--requests", "8"])
        .args(["--isl", "16..48", "--osl", "8", "--json"])
        .output()
        .expect("run autodebug bench");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stdout is the JSON report");
    let names: Vec<&str> = report["points"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bench@c1", "bench@c4"]);
    assert!(report["points"][0]["context"]["workload"].as_str().unwrap().contains("uniform 16..48"));

    let output = Command::new(BIN)
        .args(["bench", "--url", &sim.base, "--model", MODEL, "--isl", "48..16"])
        .output()
        .expect("run autodebug bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--isl") && stderr.contains("minimum"), "{stderr}");
}

/// `--self-check --quick` with the simulators as `autodebug sim serve` children of the client:
/// every phase measures, no request fails, and no child outlives the run.
#[test]
fn quick_self_check_runs_the_simulators_as_children() {
    let dir = std::env::temp_dir().join(format!("autodebug-self-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json_path = dir.join("self-check.json");
    let output = Command::new(BIN)
        .args(["bench", "--self-check", "--quick", "--json"])
        .arg(&json_path)
        .output()
        .expect("run autodebug");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("concurrent streams held"), "the table is printed: {stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("JSON written")).expect("JSON");
    assert!(report["mode"].as_str().is_some_and(|m| m.contains("child process")), "{report}");
    assert_eq!(report["streams_held"], report["streams_requested"], "{report}");
    assert!(report["ttft_samples_c8"].as_u64().is_some_and(|n| n > 0), "{report}");
    assert!(report["ttft_samples_c1000"].as_u64().is_some_and(|n| n > 0), "{report}");
    assert!(report["cpu_us_per_chunk"].as_f64().is_some_and(|us| us > 0.0), "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    // Both legs of the error are measured (the simulator stamps `sim_sent_ns`).
    assert!(report["ttft_legs_c8"]["response_p99_ms"].as_f64().is_some_and(|ms| ms != 0.0), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn find_max_rate_brackets_the_capacity_and_reports_it_as_json() {
    // Qwen2.5-7B on one L4: a capacity of a few requests per second with 1024-token prompts.
    let sim = start_sim_as(&["--engine", "vllm", "--gpu", "L4", "--model", "qwen2.5-7b"]);
    let out = Command::new(BIN)
        .args(["bench", "--url", &sim.base, "--model", "Qwen/Qwen2.5-7B-Instruct", "--isl", "1024", "--osl", "32"])
        .args(["--find-max-rate", "--slo-ttft-p99-ms", "1500", "--duration", "2s", "--tolerance", "0.5", "--json"])
        .output()
        .expect("run autodebug bench --find-max-rate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let (rate, broke) = (json["rate"].as_f64().expect("rate"), json["broke_at"].as_f64().expect("broke_at"));
    assert!(rate > 0.0 && broke > rate && broke / rate <= 1.5 + 1e-9, "{json}");
    assert_eq!(json["slo"]["ttft_p99_ms"], 1500.0);
    let steps = json["steps"].as_array().expect("steps");
    assert!(steps.iter().any(|s| s["holds"] == false) && steps.iter().any(|s| s["holds"] == true), "{json}");

    let refused = Command::new(BIN).args(["bench", "--url", &sim.base, "--find-max-rate"]).output().expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--slo-ttft-p99-ms"));
}
