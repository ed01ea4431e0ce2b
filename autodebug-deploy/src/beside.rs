//! What the backends share to run a command beside a service
//! ([`Deployer::run_beside`](autodebug_core::Deployer::run_beside)): a bounded child process run to
//! its end, its output turned into a [`BesideOutput`].

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use autodebug_core::beside::{BesideOutput, MAX_STDOUT_BYTES, STDERR_TAIL_LINES};
use autodebug_core::{Error, ErrorKind, Result};

use crate::process::run_to_end;

/// Runs `command` (whose program is `program`) to its end or `timeout`, with `input` as its
/// standard input; `ran_as` says, from the child's pid, where and as what it ran. An error only
/// when it could not be started.
pub(crate) async fn run(
    command: Command,
    program: &Path,
    input: Option<Vec<u8>>,
    timeout: Duration,
    ran_as: impl FnOnce(u32) -> String,
) -> Result<BesideOutput> {
    let finished = run_to_end(command, input, timeout, MAX_STDOUT_BYTES, STDERR_TAIL_LINES).await.map_err(|e| {
        let (hint, kind) = match e.kind() {
            std::io::ErrorKind::NotFound => {
                (" (no such program: give its full path as the service's machine sees it)", ErrorKind::Infrastructure)
            }
            std::io::ErrorKind::PermissionDenied => {
                (" (not executable: check its permissions)", ErrorKind::Infrastructure)
            }
            _ => ("", ErrorKind::Transient),
        };
        Error::Deploy {
            message: format!("could not start `{}` beside the service: {e}{hint}", program.display()),
            kind,
            source: Some(e.into()),
        }
    })?;
    let mut stderr_tail = finished.stderr_tail;
    if finished.stdout_cut {
        stderr_tail.push(format!("[autodebug: its standard output was cut at {MAX_STDOUT_BYTES} bytes]"));
    }
    Ok(BesideOutput {
        stdout: String::from_utf8_lossy(&finished.stdout).into_owned(),
        stderr_tail,
        exit_code: finished.status.and_then(|s| s.code()),
        timed_out: finished.timed_out,
        ran_as: ran_as(finished.pid),
    })
}
