//! Helpers shared by this crate's integration tests: locating (and if needed building) the
//! stand-in engine and the simulator, and checking on processes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use autodebug_core::{EngineKind, ServiceSpec};

/// A nested `cargo build` may wait for the shared build lock; give up after this long.
const BUILD_BOUND: Duration = Duration::from_secs(900);

/// `target/<profile>` of the test executable (`target/<profile>/deps/<test>-<hash>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("the test executable sits in target/<profile>/deps")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate sits in the workspace").to_path_buf()
}

/// Runs `cargo build <args>` once per distinct args, bounded in time; Ok(()) when it succeeded.
type BuildArgs = &'static [&'static str];
type BuildResults = Vec<(BuildArgs, Result<(), String>)>;

fn cargo_build_once(args: BuildArgs) -> Result<(), String> {
    static BUILDS: OnceLock<Mutex<BuildResults>> = OnceLock::new();
    let builds = BUILDS.get_or_init(|| Mutex::new(Vec::new()));
    let mut builds = builds.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, result)) = builds.iter().find(|(a, _)| *a == args) {
        return result.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let result = (|| {
        let mut child = Command::new(&cargo)
            .arg("build")
            .args(args)
            .current_dir(workspace_root())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {cargo}: {e}"))?;
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let mut err = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        use std::io::Read;
                        let _ = stderr.read_to_string(&mut err);
                    }
                    let tail: Vec<&str> = err.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(format!("cargo build {} failed with {status}:\n{}", args.join(" "), tail.join("\n")));
                }
                Ok(None) if started.elapsed() > BUILD_BOUND => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("cargo build {} took longer than {BUILD_BOUND:?}", args.join(" ")));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => return Err(format!("waiting for cargo: {e}")),
            }
        }
    })();
    builds.push((args, result.clone()));
    result
}

/// The stand-in engine (`examples/fake_engine.rs`), built if needed.
pub fn fake_engine() -> PathBuf {
    let path = profile_dir().join("examples").join("fake_engine");
    // Always ask cargo once: a no-op when fresh, and a stale binary would test old code.
    if let Err(e) = cargo_build_once(&["-p", "autodebug-deploy", "--example", "fake_engine"]) {
        assert!(path.exists(), "the fake engine is not built and building it failed: {e}");
    }
    path
}

/// The simulator binary (`target/<profile>/autodebug-sim`), rebuilt so it is current. When the
/// build fails (the simulator crate is mid-edit) an existing binary is used with a note; when there
/// is none the test fails saying why: the simulator is part of this workspace, so nothing is skipped.
pub fn simulator() -> PathBuf {
    let path = profile_dir().join("autodebug-sim");
    match cargo_build_once(&["-p", "autodebug-sim", "--bin", "autodebug-sim"]) {
        Ok(()) if path.exists() => path,
        Ok(()) => panic!("cargo built nothing at {}: the simulator binary is needed by this test", path.display()),
        Err(e) if path.exists() => {
            eprintln!("note: using the existing {} because rebuilding it failed: {e}", path.display());
            path
        }
        Err(e) => panic!("the simulator binary is needed by this test and could not be built: {e}"),
    }
}

/// A spec the stand-in engine accepts.
pub fn good_spec() -> ServiceSpec {
    ServiceSpec::new("fake", EngineKind::Sglang, "qwen1.5-0.5b")
        .with_gpu("H100:1")
        .with_flag("--schedule-policy", Some("lpm"))
        .with_flag("--max-running-requests", Some("16"))
}

/// The same spec plus a flag every engine (and the stand-in) rejects.
pub fn bad_spec() -> ServiceSpec {
    good_spec().with_flag("--bogus-flag", None)
}

/// Whether `pid` is gone (or a zombie waiting for a reaper other than us).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) == Some("Z"),
    }
}

/// Waits (bounded) until `pid` is gone; true when it went.
pub fn wait_gone(pid: u32, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if process_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    process_gone(pid)
}

/// A free loopback port (it may be taken again by the time it is used; tests that use it retry nothing).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `GET path` over plain HTTP on loopback; the status code, or None when nothing answered.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    // Up to the end of the status line: a server may send it in several writes (the fake
    // engine's `write!` does), and one read can return just `HTTP/1.1 `.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 256 {
        if stream.read(&mut byte).ok()? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).split_whitespace().nth(1)?.parse().ok()
}
