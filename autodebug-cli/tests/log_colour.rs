//! Log lines carry ANSI colour only on a terminal and only without `NO_COLOR`
//! (<https://no-color.org>). The warning comes from a real `autodebug bench` against a loopback
//! port nobody listens on: every request is refused at once and the benchmarker warns.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const ESCAPE: &str = "\x1b[";

/// A loopback port that refuses connections: bound to learn a free number, then released.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind loopback").local_addr().expect("address").port()
}

/// `autodebug bench` that warns "1 of 1 requests failed", with the log level pinned so an
/// outer `RUST_LOG` cannot hide the warning.
fn warning_bench() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_autodebug"));
    command
        .args(["bench", "--url", &format!("http://127.0.0.1:{}", closed_port())])
        .args(["--requests", "1", "--isl", "4", "--osl", "2"])
        .env("RUST_LOG", "warn")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

fn assert_warned(stderr: &str) {
    assert!(stderr.contains("WARN") && stderr.contains("requests failed"), "no warning was logged: {stderr:?}");
}

#[test]
fn warnings_reach_a_pipe_without_escapes() {
    let out = warning_bench().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_warned(&stderr);
    assert!(!stderr.contains(ESCAPE), "ANSI escapes in piped stderr: {stderr:?}");
}

/// The primary side of a new pseudo-terminal and the path of its secondary side.
fn open_pty() -> (File, String) {
    // SAFETY: plain libc calls on a descriptor this function owns; `ptsname_r` writes a
    // NUL-terminated name into the buffer it is given, whose length it is told.
    unsafe {
        let primary = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(primary >= 0, "no pseudo-terminal: {}", std::io::Error::last_os_error());
        let primary = File::from(OwnedFd::from_raw_fd(primary));
        let fd = std::os::fd::AsRawFd::as_raw_fd(&primary);
        assert_eq!(libc::grantpt(fd), 0, "grantpt: {}", std::io::Error::last_os_error());
        assert_eq!(libc::unlockpt(fd), 0, "unlockpt: {}", std::io::Error::last_os_error());
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0, "ptsname_r");
        (primary, CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned())
    }
}

/// Runs `command` with its stderr on a pseudo-terminal, as when a person runs it, and returns
/// what it wrote there.
fn stderr_on_a_terminal(mut command: Command) -> String {
    let (mut primary, secondary) = open_pty();
    command.stderr(OpenOptions::new().read(true).write(true).open(&secondary).unwrap());
    let mut child = command.spawn().unwrap();
    // Our copy of the secondary side must close, or reading the primary never ends.
    drop(command);
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // Ends with EIO once the child, the last holder of the secondary side, has exited.
        let _ = primary.read_to_end(&mut bytes);
        let _ = sender.send(bytes);
    });
    let bytes = receiver.recv_timeout(Duration::from_secs(60));
    if bytes.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    String::from_utf8_lossy(&bytes.expect("the command did not finish within 60 s")).into_owned()
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let coloured = stderr_on_a_terminal(warning_bench());
    assert_warned(&coloured);
    assert!(coloured.contains(ESCAPE), "no colour on a terminal: {coloured:?}");

    let mut opted_out = warning_bench();
    opted_out.env("NO_COLOR", "1");
    let plain = stderr_on_a_terminal(opted_out);
    assert_warned(&plain);
    assert!(!plain.contains(ESCAPE), "NO_COLOR=1 still coloured: {plain:?}");
}
