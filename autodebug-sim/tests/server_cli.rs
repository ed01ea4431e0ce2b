//! The `autodebug-sim` command line: bad configurations fail before binding, a good one prints
//! the engine's startup and ready lines and serves.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use autodebug_sim::server::run_cli;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn an_unknown_engine_flag_fails_before_serving() {
    let code = run_cli(&args(&["--engine", "sglang", "--port", "0", "--", "--no-such-flag"]));
    assert_ne!(code, ExitCode::SUCCESS);
}

#[test]
fn a_startup_oom_fails_before_serving() {
    let code = run_cli(&args(&["--engine", "sglang", "--port", "0", "--quiet", "--", "--mem-fraction-static", "0.98"]));
    assert_ne!(code, ExitCode::SUCCESS);
}

#[test]
fn an_unknown_engine_kind_is_rejected() {
    assert_ne!(run_cli(&args(&["--engine", "tgi", "--port", "0"])), ExitCode::SUCCESS);
}

#[test]
fn the_binary_prints_the_argparse_error_and_exits_non_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_autodebug-sim"))
        .args(["--engine", "sglang", "--port", "0", "--", "--no-such-flag"])
        .output()
        .expect("run autodebug-sim");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--no-such-flag"), "stderr: {stderr}");
}

/// Kills the child on every exit path of the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_honours_engine_port_flags_and_becomes_ready() {
    // `--port 0` among the engine flags (as a real SGLang command line would carry it) wins over
    // the simulator's own default port; the ready banner names the port actually bound.
    let child = Command::new(env!("CARGO_BIN_EXE_autodebug-sim"))
        .args(["--engine", "sglang", "--", "--host", "127.0.0.1", "--port", "0", "--schedule-policy", "lpm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start autodebug-sim");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok).take(200) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut port = None;
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(20)) {
        if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
            port = rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|p| p.parse::<u16>().ok());
        }
        let ready = line.contains("The server is fired up and ready to roll!");
        seen.push(line);
        if ready {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.starts_with('[') && l.contains("] ")), "SGLang-style timestamps: {seen:?}");
    assert!(seen.last().is_some_and(|l| l.contains("ready to roll")), "no ready line in {seen:?}");
    let port = port.filter(|p| *p != 0).expect("the banner names the bound port");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let status = runtime.block_on(async {
        let request = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/health")).send();
        tokio::time::timeout(Duration::from_secs(20), request).await.expect("health answered").expect("health").status()
    });
    assert_eq!(status, 200);
}
