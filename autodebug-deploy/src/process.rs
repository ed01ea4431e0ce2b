//! Engine child processes: started in their own process group with a parent-death signal,
//! output captured line by line, stopped group-wide (SIGTERM, grace period, SIGKILL) and reaped.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};
use std::time::{Duration, Instant};

use autodebug_core::{LogLine, TimeWindow};

use crate::logbuf::{LogBuffer, read_line};

/// How often stop and drop look at whether the process has exited.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// How long to wait for the kernel to deliver a SIGKILL before giving up on reaping.
const KILL_REAP_BOUND: Duration = Duration::from_secs(5);

/// Locks a mutex even if a panicking thread poisoned it: the data (a log buffer, a child
/// handle) stays meaningful, and teardown must still work after a panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
/// Callers spawn from short-lived threads (a test harness thread, a blocking-pool thread), so
/// every child is forked from this one thread that lives as long as the process.
fn spawner() -> Option<&'static mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            let started = std::thread::Builder::new().name("autodebug-spawner".into()).spawn(move || {
                for SpawnRequest { mut command, reply } in rx {
                    let _ = reply.send(command.spawn());
                }
            });
            match started {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start the spawner thread; children are forked from the caller's thread");
                    None
                }
            }
        })
        .as_ref()
}

fn spawn_from_long_lived_thread(command: Command) -> std::io::Result<Child> {
    if let Some(tx) = spawner() {
        let (reply_tx, reply_rx) = mpsc::channel();
        if let Err(mpsc::SendError(request)) = tx.send(SpawnRequest { command, reply: reply_tx }) {
            let mut command = request.command;
            return command.spawn();
        }
        return reply_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawner thread stopped before answering")));
    }
    let mut command = command;
    command.spawn()
}

/// `command` confined (see [`confine`]), its output piped and its input piped when `input`
/// (else none), spawned.
fn spawn_piped(mut command: Command, input: bool) -> std::io::Result<Child> {
    confine(&mut command);
    command
        .stdin(if input { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    spawn_from_long_lived_thread(command)
}

/// `command` confined (see [`confine`]), its output piped, spawned: for a helper that runs
/// alongside until it is stopped (`dstack attach`).
#[cfg(feature = "dstack")]
pub(crate) fn spawn_confined(command: Command) -> std::io::Result<Child> {
    spawn_piped(command, false)
}

/// Makes `command` start in a process group of its own and die with this process.
fn confine(command: &mut Command) {
    command.process_group(0);
    // SAFETY: getpid is async-signal-safe and runs before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, _exit) and
    // allocates nothing, as required between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then no signal would ever come.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

/// A running (or finished) engine process owned by a deployer.
pub(crate) struct ManagedProcess {
    pid: u32,
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
    logs: Arc<Mutex<LogBuffer>>,
    open_streams: Arc<AtomicUsize>,
    /// Set once a stop was asked for, so a later exit is not mistaken for a crash.
    stopping: AtomicBool,
}

impl ManagedProcess {
    /// Starts `command` with piped output; each line goes to the buffer and to `log_file`.
    pub fn spawn(
        command: Command,
        log_capacity: usize,
        log_file: Option<Arc<Mutex<File>>>,
    ) -> std::io::Result<Arc<Self>> {
        let mut child = spawn_piped(command, false)?;
        let pid = child.id();
        let logs = Arc::new(Mutex::new(LogBuffer::new(log_capacity)));
        let open_streams = Arc::new(AtomicUsize::new(0));
        let streams: [(Option<Box<dyn Read + Send>>, &str); 2] = [
            (child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>), "stdout"),
            (child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>), "stderr"),
        ];
        for (stream, label) in streams {
            let Some(stream) = stream else { continue };
            open_streams.fetch_add(1, Ordering::SeqCst);
            let reader =
                LineReader { pid, logs: logs.clone(), file: log_file.clone(), open_streams: open_streams.clone() };
            let started = std::thread::Builder::new()
                .name(format!("autodebug-log-{pid}-{label}"))
                .spawn(move || reader.run(stream));
            if let Err(e) = started {
                open_streams.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(pid, stream = label, error = %e, "could not start a log reader; that output is lost");
            }
        }
        Ok(Arc::new(ManagedProcess {
            pid,
            child: Mutex::new(child),
            status: Mutex::new(None),
            logs,
            open_streams,
            stopping: AtomicBool::new(false),
        }))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The exit status once the process has exited (and been reaped), without blocking.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut status = lock(&self.status);
        if status.is_none() {
            match lock(&self.child).try_wait() {
                Ok(Some(s)) => *status = Some(s),
                Ok(None) => {}
                Err(e) => tracing::debug!(pid = self.pid, error = %e, "try_wait failed"),
            }
        }
        *status
    }

    /// Sends `signal` to the whole process group; a group that is already gone is fine.
    fn signal_group(&self, signal: libc::c_int) {
        let Ok(pgid) = libc::pid_t::try_from(self.pid) else { return };
        // SAFETY: killpg has no memory-safety preconditions.
        let rc = unsafe { libc::killpg(pgid, signal) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pid = self.pid, signal, error = %err, "could not signal the process group");
            }
        }
    }

    /// SIGTERM to the group, up to `grace` for it to exit, then SIGKILL; reaps the leader.
    pub async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        if self.exit_status().is_none() {
            self.signal_group(libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while self.exit_status().is_none() && Instant::now() < deadline {
                tokio::time::sleep(EXIT_POLL).await;
            }
        }
        // Also catches group members that outlived the leader.
        self.signal_group(libc::SIGKILL);
        let deadline = Instant::now() + KILL_REAP_BOUND;
        while self.exit_status().is_none() && Instant::now() < deadline {
            tokio::time::sleep(EXIT_POLL).await;
        }
        if self.exit_status().is_none() {
            tracing::error!(
                pid = self.pid,
                "process survived SIGKILL for {KILL_REAP_BOUND:?} (uninterruptible sleep?)"
            );
        }
    }

    /// Asks the group to stop without waiting; pair with [`ManagedProcess::finish_blocking`].
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if self.exit_status().is_none() {
            self.signal_group(libc::SIGTERM);
        }
    }

    /// Blocking stop for `Drop`: waits until `deadline` for a requested stop, then SIGKILL and reap.
    pub fn finish_blocking(&self, deadline: Instant) {
        while self.exit_status().is_none() && Instant::now() < deadline {
            std::thread::sleep(EXIT_POLL);
        }
        self.signal_group(libc::SIGKILL);
        let reap_deadline = Instant::now() + KILL_REAP_BOUND;
        while self.exit_status().is_none() && Instant::now() < reap_deadline {
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// Waits (bounded) until both output streams reached end of file, so an exit's last
    /// words are in the buffer before they are quoted.
    pub async fn drain_output(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        while self.open_streams.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    pub fn logs_since(&self, since_ns: Option<i128>) -> Vec<LogLine> {
        lock(&self.logs).since(since_ns)
    }

    /// Lines that fell out of the in-memory buffer.
    pub fn dropped_lines(&self) -> u64 {
        lock(&self.logs).dropped()
    }

    pub fn log_tail(&self, n: usize) -> Vec<String> {
        lock(&self.logs).tail_text(n)
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        // Last line of defence: whoever owned us did not stop us.
        if self.exit_status().is_none() {
            self.signal_group(libc::SIGKILL);
            self.finish_blocking(Instant::now());
        }
    }
}

struct LineReader {
    pid: u32,
    logs: Arc<Mutex<LogBuffer>>,
    file: Option<Arc<Mutex<File>>>,
    open_streams: Arc<AtomicUsize>,
}

impl LineReader {
    fn run(self, stream: Box<dyn Read + Send>) {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        let mut file_failed = false;
        loop {
            let text = match read_line(&mut reader, &mut raw) {
                Ok(Some(text)) => text,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(pid = self.pid, error = %e, "engine output stream failed");
                    break;
                }
            };
            if let Some(file) = &self.file
                && !file_failed
                && let Err(e) = writeln!(lock(file), "{text}")
            {
                file_failed = true;
                tracing::warn!(pid = self.pid, error = %e, "could not append to the log file; keeping output in memory only");
            }
            tracing::trace!(target: "autodebug_deploy::engine", pid = self.pid, "{text}");
            let mut logs = lock(&self.logs);
            let time_ns = TimeWindow::now_ns();
            logs.push(LogLine { time_ns, text });
        }
        self.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a command run to its end ([`run_to_end`]) finished.
pub(crate) struct Finished {
    pub pid: u32,
    /// `None` when it was stopped for running past its timeout, or could not be reaped.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    /// Standard output, at most the bound given (the rest was read and dropped).
    pub stdout: Vec<u8>,
    pub stdout_cut: bool,
    /// The last lines of standard error.
    pub stderr_tail: Vec<String>,
}

/// How long [`run_to_end`] waits between SIGTERM and SIGKILL when a timeout stops a command,
/// so a launcher such as `srun` can pass the signal on and cancel what it started.
const TIMEOUT_GRACE: Duration = Duration::from_secs(3);

/// How long [`run_to_end`] waits for the output readers once the process group is gone.
const READER_BOUND: Duration = Duration::from_secs(5);

/// Runs `command` to its end in a process group of its own that dies with this process, with
/// `input` as its standard input (then closed; none when `None`), keeping at most `max_stdout`
/// bytes of its standard output and the last `stderr_lines` lines of its standard error. Past `timeout` the group gets SIGTERM, then SIGKILL after a grace period.
/// Every wait is bounded: the group is killed once the command has exited, so no member left
/// behind can hold the output pipes open.
pub(crate) async fn run_to_end(
    command: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
    max_stdout: usize,
    stderr_lines: usize,
) -> std::io::Result<Finished> {
    let mut child = spawn_piped(command, input.is_some())?;
    let pid = child.id();
    if let (Some(bytes), Some(mut stream)) = (input, child.stdin.take()) {
        // Written from a thread of its own: a command that reads nothing must not block this one.
        let writer = std::thread::Builder::new().name(format!("autodebug-beside-{pid}-stdin")).spawn(move || {
            let _ = stream.write_all(&bytes);
        });
        if let Err(e) = writer {
            tracing::warn!(pid, error = %e, "could not start the stdin writer; the command gets no input");
        }
    }
    let (stdout_tx, stdout_rx) = tokio::sync::oneshot::channel();
    if let Some(mut stream) = child.stdout.take() {
        let reader = std::thread::Builder::new().name(format!("autodebug-beside-{pid}-stdout")).spawn(move || {
            let mut kept = Vec::new();
            let mut cut = false;
            let mut chunk = [0u8; 64 * 1024];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = max_stdout.saturating_sub(kept.len());
                        kept.extend_from_slice(&chunk[..n.min(room)]);
                        cut |= n > room;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = stdout_tx.send((kept, cut));
        });
        if let Err(e) = reader {
            tracing::warn!(pid, error = %e, "could not start the stdout reader; that output is lost");
        }
    }
    let (stderr_tx, stderr_rx) = tokio::sync::oneshot::channel();
    if let Some(stream) = child.stderr.take() {
        let reader = std::thread::Builder::new().name(format!("autodebug-beside-{pid}-stderr")).spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut raw = Vec::new();
            let mut tail = std::collections::VecDeque::new();
            while let Ok(Some(line)) = read_line(&mut reader, &mut raw) {
                if tail.len() == stderr_lines.max(1) {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            let _ = stderr_tx.send(tail.into_iter().collect::<Vec<String>>());
        });
        if let Err(e) = reader {
            tracing::warn!(pid, error = %e, "could not start the stderr reader; that output is lost");
        }
    }
    let group = libc::pid_t::try_from(pid).ok();
    let signal_group = |signal: libc::c_int| {
        if let Some(pgid) = group {
            // SAFETY: killpg has no memory-safety preconditions; a group already gone is fine.
            unsafe { libc::killpg(pgid, signal) };
        }
    };
    let deadline = Instant::now() + timeout;
    let mut status = None;
    let mut timed_out = false;
    // Bounded by `deadline`, then by the grace period and the kill's reap bound.
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            status = Some(s);
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            signal_group(libc::SIGTERM);
            let grace = Instant::now() + TIMEOUT_GRACE;
            while Instant::now() < grace && !matches!(child.try_wait(), Ok(Some(_))) {
                tokio::time::sleep(EXIT_POLL).await;
            }
            signal_group(libc::SIGKILL);
            let reap = Instant::now() + KILL_REAP_BOUND;
            while Instant::now() < reap {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                tokio::time::sleep(EXIT_POLL).await;
            }
            break;
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
    // Members of the group that outlived the leader would keep the pipes open.
    signal_group(libc::SIGKILL);
    let (stdout, stdout_cut) =
        tokio::time::timeout(READER_BOUND, stdout_rx).await.ok().and_then(Result::ok).unwrap_or_default();
    let stderr_tail = tokio::time::timeout(READER_BOUND, stderr_rx).await.ok().and_then(Result::ok).unwrap_or_default();
    Ok(Finished { pid, status: if timed_out { None } else { status }, timed_out, stdout, stdout_cut, stderr_tail })
}
