//! A command beside a dstack service runs inside the service's own job container, reached the way
//! a dstack user reaches a run: `dstack attach <run>` (which fetches the user's SSH key from the
//! server and writes an SSH config naming the run's host and container), then `ssh <run> ...`.
//! There the service answers on the container's loopback at its `port`, so the load goes neither
//! through dstack's proxy nor over this machine's network.
//!
//! - `dstack attach` runs with a HOME of its own (a fresh folder, removed afterwards), so it
//!   neither reads nor changes the user's `~/.dstack/ssh`; the server, project and token reach it
//!   as `DSTACK_SERVER_URL`/`DSTACK_PROJECT`/`DSTACK_TOKEN` in its environment, never on an
//!   argument list. It is detached with SIGINT, its Ctrl-C, on which it closes its SSH master
//!   (a daemon of its own that a kill of the attach process would leave behind); should the
//!   master outlive it, it is asked to exit (`ssh -O exit`).
//! - The command's environment (secrets) goes to the remote shell on standard input, one value a
//!   line, read into variables there: on no argument list, here or in the container.
//! - The remote command runs under `timeout` in the container, so it ends there too when ssh is
//!   cut at the bound here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use autodebug_core::{Error, Result, shell_quote};

use super::connection::{Connection, env_vars};

/// How long `dstack attach` may take to set up the run's SSH access.
pub(super) const ATTACH_WAIT: Duration = Duration::from_secs(90);
/// How many times `dstack attach` is started before its failure is final.
const ATTACH_TRIES: u32 = 3;
/// The pause before starting an attach that ended again.
const ATTACH_RETRY_PAUSE: Duration = Duration::from_secs(3);
/// How long a detached `dstack attach` may take to close its SSH master after SIGINT.
const DETACH_WAIT: Duration = Duration::from_secs(10);
/// What `dstack attach` prints once `ssh <run>` works (`_print_attached_message`, dstack
/// `_internal/cli/commands/attach.py`).
const ATTACHED_MARK: &str = "To connect to the run via SSH";
/// The remote shell's exit code when the command's input ended before all its variables.
pub(super) const INPUT_MISSING_EXIT: i32 = 97;
/// `timeout`'s exit code when it stopped the command.
pub(super) const TIMED_OUT_EXIT: i32 = 124;

/// The remote shell command that reads `env_names` from its standard input (one value a line),
/// then runs `program args` under `timeout` (when the container has it).
pub(super) fn remote_script(program: &Path, args: &[String], env_names: &[&str], timeout: Duration) -> Result<String> {
    let mut script = String::new();
    for name in env_names {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::config(
                "bench_beside",
                format!(
                    "`{name}` is not a shell variable name; the command's environment cannot carry it into the container"
                ),
            ));
        }
        script.push_str(&format!("IFS= read -r {name} || exit {INPUT_MISSING_EXIT}; export {name}; "));
    }
    let command: Vec<String> = std::iter::once(program.to_string_lossy().into_owned())
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect();
    let command = command.join(" ");
    let seconds = timeout.as_secs().max(1);
    script.push_str(&format!(
        "if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {seconds} {command}; else exec {command}; fi"
    ));
    Ok(script)
}

/// The values of the command's environment as the remote script reads them.
pub(super) fn input_lines(values: &[&str]) -> Result<Vec<u8>> {
    let mut input = String::new();
    for value in values {
        if value.contains('\n') || value.contains('\r') {
            return Err(Error::config(
                "bench_beside",
                "a value of the command's environment holds a line break; it cannot be handed to the container on a line",
            ));
        }
        input.push_str(value);
        input.push('\n');
    }
    Ok(input.into_bytes())
}

/// The container port the service listens on: a `port` of `8000`, `"8000"` or `"80:8000"`.
pub(super) fn container_port(configuration: &serde_yaml::Mapping) -> Option<u16> {
    match configuration.get("port")? {
        serde_yaml::Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        serde_yaml::Value::String(s) => s.rsplit(':').next()?.trim().parse().ok(),
        _ => None,
    }
}

/// A run's SSH access, set up by `dstack attach` in a HOME of its own; [`Attached::close`] ends it.
pub(super) struct Attached {
    run_name: String,
    home: PathBuf,
    attach: Option<std::process::Child>,
}

impl Attached {
    /// Starts `cli attach <run>` and waits (at most `wait` in all) until it says `ssh <run>`
    /// works. An attach that ends before that (its SSH connection refused while the container's
    /// sshd comes up, say) is started again, up to [`ATTACH_TRIES`] times.
    pub(super) async fn open(cli: &Path, connection: &Connection, run_name: &str, wait: Duration) -> Result<Attached> {
        let home = attach_home(run_name)?;
        create_private_dir(&home)
            .map_err(|e| Error::infrastructure(format!("cannot create {} for `dstack attach`: {e}", home.display())))?;
        let mut attached = Attached { run_name: run_name.to_string(), home, attach: None };
        let deadline = Instant::now() + wait;
        let mut said = Vec::new();
        for attempt in 1..=ATTACH_TRIES {
            let mut command = Command::new(cli);
            command
                .args(["attach", "--project", &connection.project, run_name])
                .env("HOME", &attached.home)
                .env(env_vars::SERVER_URL, &connection.url)
                .env(env_vars::PROJECT, &connection.project)
                .env(env_vars::TOKEN, connection.token.expose())
                // Plain lines, not a live display: the mark is read from them.
                .env("NO_COLOR", "1")
                .env("COLUMNS", "200");
            let mut child = crate::process::spawn_confined(command).map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::NotFound {
                    " (not found: install the dstack CLI, `pip install dstack`, or give its path as the dstack deployer's `cli`)"
                } else {
                    ""
                };
                Error::infrastructure(format!("could not start `{} attach {run_name}`: {e}{hint}", cli.display()))
            })?;
            let output = read_lines(&mut child);
            attached.attach = Some(child);
            let exited = loop {
                if output.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|l| l.contains(ATTACHED_MARK)) {
                    tracing::debug!(run = %run_name, attempt, home = %attached.home.display(), "dstack attach ready");
                    return Ok(attached);
                }
                let exited = attached.attach.as_mut().and_then(|c| c.try_wait().ok().flatten());
                if exited.is_some() || Instant::now() >= deadline {
                    break exited;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            // The pipes may still hold its last words.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let seen = output.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let tail = seen.iter().rev().take(8).rev().cloned().collect::<Vec<_>>().join(" | ");
            said.push(match exited {
                Some(status) => format!("ended ({status}) saying: {}", if tail.is_empty() { "nothing" } else { &tail }),
                None => format!("did not say `ssh {run_name}` works within {} s", wait.as_secs()),
            });
            attached.finish_attach();
            if exited.is_none() || Instant::now() + ATTACH_RETRY_PAUSE >= deadline {
                break;
            }
            tracing::debug!(run = %run_name, attempt, "dstack attach ended before it was ready; trying again");
            tokio::time::sleep(ATTACH_RETRY_PAUSE).await;
        }
        attached.close().await;
        Err(Error::infrastructure(format!(
            "`dstack attach {run_name}` failed {} time(s): {}",
            said.len(),
            said.join("; then ")
        )))
    }

    /// `ssh <run> <script>` through the SSH config `dstack attach` wrote; no prompt, no host-key
    /// chatter on its standard error.
    pub(super) fn ssh(&self, script: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg("-F")
            .arg(self.ssh_config())
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR"])
            .arg(&self.run_name)
            .arg(script);
        ssh
    }

    fn ssh_config(&self) -> PathBuf {
        self.home.join(".dstack/ssh/config")
    }

    /// Detaches: SIGINT to `dstack attach` (it closes its SSH master), then whatever is left is
    /// stopped and the folder removed.
    pub(super) async fn close(mut self) {
        if let Some(child) = self.attach.as_mut() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill has no memory-safety preconditions; a process already gone is fine.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
            let deadline = Instant::now() + DETACH_WAIT;
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.finish();
    }

    /// The attach process stopped if it still runs, and its SSH master with it.
    fn finish_attach(&mut self) {
        if let Some(mut child) = self.attach.take()
            && !matches!(child.try_wait(), Ok(Some(_)))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The SSH master, a daemon of its own, outlives a killed attach process.
        let socket = self.home.join(format!(".dstack/ssh/{}.control.sock", self.run_name));
        if socket.exists() {
            let closed = Command::new("ssh")
                .arg("-F")
                .arg(self.ssh_config())
                .arg("-S")
                .arg(&socket)
                .args(["-O", "exit", &self.run_name])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            if !closed.is_ok_and(|s| s.success()) {
                tracing::warn!(run = %self.run_name, socket = %socket.display(), "the SSH master of `dstack attach` did not exit; stop it with `ssh -S <socket> -O exit`");
            }
        }
    }

    /// Whatever is still running is stopped, the folder removed; bounded and without awaiting.
    fn finish(&mut self) {
        self.finish_attach();
        if let Err(e) = std::fs::remove_dir_all(&self.home)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(home = %self.home.display(), error = %e, "could not remove the folder of `dstack attach`, which holds the user's SSH key: remove it");
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The longest path a Unix domain socket may have (`sun_path` holds 108 bytes with its NUL).
const UNIX_SOCKET_PATH_MAX: usize = 107;
/// What `ssh` adds to `dstack attach`'s control socket while creating it: `.` and 16 characters.
const SSH_CONTROL_TEMP_SUFFIX: usize = 17;
/// Names of the folders `dstack attach` runs in start with this, in the temporary folder.
pub(super) const ATTACH_HOME_PREFIX: &str = "adbg-";

/// The length of the SSH control socket `dstack attach` opens for `run_name` under `home`, while
/// `ssh` creates it: `<home>/.dstack/ssh/<run>.control.sock.<16 characters>`.
fn control_socket_length(home: &Path, run_name: &str) -> usize {
    home.join(".dstack/ssh").join(format!("{run_name}.control.sock")).as_os_str().len() + SSH_CONTROL_TEMP_SUFFIX
}

/// A fresh HOME for one `dstack attach`, short enough for its SSH control socket: the socket
/// lives under it, and a path one byte over the limit makes every `ssh` of the attach fail with
/// "too long for Unix domain socket" (seen once process ids reached five digits). In the
/// temporary folder when that fits, else in `/tmp`.
fn attach_home(run_name: &str) -> Result<PathBuf> {
    // Unique per process and moment, in 8 characters.
    let mut mix = (autodebug_core::TimeWindow::now_ns() as u64) ^ (u64::from(std::process::id()) << 32);
    mix ^= mix >> 29;
    mix = mix.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let name = format!("{ATTACH_HOME_PREFIX}{:08x}", (mix >> 32) as u32);
    for base in [std::env::temp_dir(), PathBuf::from("/tmp")] {
        let home = base.join(&name);
        if control_socket_length(&home, run_name) <= UNIX_SOCKET_PATH_MAX {
            return Ok(home);
        }
    }
    let home = PathBuf::from("/tmp").join(&name);
    let length = control_socket_length(&home, run_name);
    Err(Error::config(
        "service.name",
        format!(
            "`dstack attach {run_name}` would open an SSH control socket of {length} bytes under {}, over the \
             {UNIX_SOCKET_PATH_MAX} a Unix socket path may have: use a run name at most {} characters long",
            home.display(),
            run_name.len().saturating_sub(length - UNIX_SOCKET_PATH_MAX),
        ),
    ))
}

/// A folder only this user can read: `dstack attach` writes the user's private key into it.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// The child's output lines, stdout and stderr together, as they come (the last 200).
fn read_lines(child: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let streams: Vec<Box<dyn std::io::Read + Send>> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for stream in streams {
        let lines = lines.clone();
        let _ = std::thread::Builder::new().name("autodebug-dstack-attach".into()).spawn(move || {
            for line in std::io::BufReader::new(stream).lines().map_while(std::result::Result::ok) {
                let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                if lines.len() == 200 {
                    lines.remove(0);
                }
                lines.push(line);
            }
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_script_reads_each_variable_from_its_input_and_runs_the_command_under_timeout() {
        let args = vec!["bench".to_string(), "--plan-json".to_string(), r#"{"name":"it's"}"#.to_string()];
        let script = remote_script(
            Path::new("/opt/autodebug/autodebug"),
            &args,
            &["AUTODEBUG_BENCH_TOKEN"],
            Duration::from_secs(90),
        )
        .unwrap();
        assert!(
            script.starts_with("IFS= read -r AUTODEBUG_BENCH_TOKEN || exit 97; export AUTODEBUG_BENCH_TOKEN; "),
            "{script}"
        );
        assert!(
            script.contains(r#"exec timeout -k 5 90 /opt/autodebug/autodebug bench --plan-json '{"name":"it'\''s"}'"#),
            "{script}"
        );
        // The shell splits it back into the very arguments.
        let out = Command::new("sh")
            .arg("-c")
            .arg(
                remote_script(
                    Path::new("printf"),
                    &["%s|".into(), "a b".into(), "it's".into(), "$HOME".into()],
                    &[],
                    Duration::from_secs(5),
                )
                .unwrap(),
            )
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|it's|$HOME|");
    }

    #[test]
    fn values_reach_the_remote_command_through_its_input_and_no_argument() {
        let script = remote_script(
            Path::new("sh"),
            &["-c".into(), "printf %s \"$SECRET_A/$B\"".into()],
            &["SECRET_A", "B"],
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(!script.contains("canary-beside-7f3e"));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&input_lines(&["canary-beside-7f3e", "two"]).unwrap()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "canary-beside-7f3e/two");
    }

    #[test]
    fn input_that_ends_early_fails_the_remote_command_with_its_own_code() {
        let script = remote_script(Path::new("true"), &[], &["A", "B"], Duration::from_secs(5)).unwrap();
        let mut child = Command::new("sh").arg("-c").arg(&script).stdin(std::process::Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"only-one\n").unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(INPUT_MISSING_EXIT));
    }

    #[test]
    fn names_and_values_that_cannot_travel_are_refused() {
        let err = remote_script(Path::new("x"), &[], &["A;rm -rf /"], Duration::from_secs(1)).unwrap_err().to_string();
        assert!(err.contains("not a shell variable name"), "{err}");
        let err = input_lines(&["a\nb"]).unwrap_err().to_string();
        assert!(err.contains("line break"), "{err}");
    }

    #[test]
    fn the_attach_home_leaves_room_for_the_control_socket_of_the_longest_run_name() {
        // The folder the real-fleet test failed with: the socket's path came to 108 bytes.
        let before = Path::new("/tmp/autodebug-dstack-attach-19143-1796698996506743116");
        assert_eq!(control_socket_length(before, "adbg-beside"), UNIX_SOCKET_PATH_MAX + 1);
        // dstack's run names are at most 41 characters (`^[a-z][a-z0-9-]{1,40}$`).
        let longest = format!("a{}", "b".repeat(40));
        let home = attach_home(&longest).unwrap();
        assert!(control_socket_length(&home, &longest) <= UNIX_SOCKET_PATH_MAX, "{}", home.display());
        assert!(home.file_name().unwrap().to_string_lossy().starts_with(ATTACH_HOME_PREFIX));
        let error = attach_home(&"r".repeat(100)).unwrap_err().to_string();
        assert!(error.contains("service.name"), "{error}");
        assert!(error.contains("at most") && error.contains("Unix socket"), "{error}");
    }

    #[test]
    fn the_container_port_is_read_from_each_form_of_port() {
        let port = |yaml: &str| container_port(&serde_yaml::from_str(yaml).unwrap());
        assert_eq!(port("port: 18080"), Some(18080));
        assert_eq!(port("port: '8000'"), Some(8000));
        assert_eq!(port("port: '80:8000'"), Some(8000));
        assert_eq!(port("image: x"), None);
    }
}
