//! Where the simulators run: in this process through the caller's serve function, or as child processes.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{SERVED_MODEL, SIMULATOR_ARGS, task_error};
use crate::BenchError;

/// Where the self-check's simulators run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SimulatorHost {
    /// On a runtime in this process, served by the caller's function: needs no executable (tests,
    /// embedding), but client and server then share this process's descriptor limit (two per
    /// stream) and its cores' queues.
    InProcess {
        #[serde(skip)]
        serve: InProcessSimulator,
    },
    /// One child process per simulator, started as `program args… --engine sglang --gpu H100
    /// --model qwen1.5-0.5b --seed 7 --host 127.0.0.1 --port P [--fast] --quiet -- --served-model-name …`:
    /// the client's process then holds only its own sockets, as it does against a real server.
    /// `autodebug bench --self-check` passes its own executable with `sim serve`; the default is
    /// the `autodebug` found on `PATH`.
    Child { program: std::path::PathBuf, args: Vec<String> },
}

type ServeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Serves a simulator like [`SIMULATOR_ARGS`] under [`SERVED_MODEL`] on the listener it is given
/// (bound to 127.0.0.1 with a deep backlog), in fast mode when the flag is set, until the runtime
/// stops.
#[derive(Clone)]
pub struct InProcessSimulator(std::sync::Arc<dyn Fn(tokio::net::TcpListener, bool) -> ServeFuture + Send + Sync>);

impl InProcessSimulator {
    pub fn new<F, Fut>(serve: F) -> Self
    where
        F: Fn(tokio::net::TcpListener, bool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        InProcessSimulator(std::sync::Arc::new(move |listener, fast| Box::pin(serve(listener, fast))))
    }
}

impl std::fmt::Debug for InProcessSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcessSimulator")
    }
}

impl PartialEq for InProcessSimulator {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl SimulatorHost {
    /// A simulator served in this process by `serve` (see [`InProcessSimulator`]).
    pub fn in_process<F, Fut>(serve: F) -> Self
    where
        F: Fn(tokio::net::TcpListener, bool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        SimulatorHost::InProcess { serve: InProcessSimulator::new(serve) }
    }

    /// `autodebug sim serve`, with the `autodebug` found on `PATH`.
    pub fn autodebug_on_path() -> Self {
        SimulatorHost::Child { program: "autodebug".into(), args: vec!["sim".into(), "serve".into()] }
    }

    pub(super) fn descriptors_per_stream(&self) -> u64 {
        match self {
            SimulatorHost::InProcess { .. } => 2,
            SimulatorHost::Child { .. } => 1,
        }
    }

    pub(super) fn describe(&self) -> &'static str {
        match self {
            SimulatorHost::InProcess { .. } => "in-process",
            SimulatorHost::Child { .. } => "in a child process",
        }
    }
}

pub(super) async fn start_simulator(serve: &InProcessSimulator, fast: bool) -> Result<String, BenchError> {
    let socket = tokio::net::TcpSocket::new_v4()
        .map_err(|e| task_error(format!("could not open a loopback socket for the simulator: {e}")))?;
    let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    socket.bind(any_port).map_err(|e| task_error(format!("could not bind 127.0.0.1:0 for the simulator: {e}")))?;
    // Thousands of connects arrive at once in the hold phase; the default backlog would drop SYNs.
    let listener =
        socket.listen(8192).map_err(|e| task_error(format!("could not listen on 127.0.0.1 for the simulator: {e}")))?;
    let address = listener.local_addr().map_err(|e| task_error(format!("simulator listener has no address: {e}")))?;
    let serving = (serve.0)(listener, fast);
    tokio::spawn(async move {
        if let Err(error) = serving.await {
            tracing::error!(%error, "self-check simulator stopped");
        }
    });
    Ok(format!("http://{address}"))
}

/// A simulator in a child process, killed when dropped (and by the kernel should this thread die
/// first: `PR_SET_PDEATHSIG`).
pub(super) struct ChildSimulator {
    child: std::process::Child,
    command: String,
    port: u16,
    pub(super) base_url: String,
}

impl ChildSimulator {
    pub(super) fn start(
        program: &std::path::Path,
        args: &[String],
        fast: bool,
        cores: usize,
    ) -> Result<ChildSimulator, BenchError> {
        // The port is chosen here, not by the child, so no log has to be parsed to learn it.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|e| task_error(format!("could not find a free loopback port for the simulator: {e}")))?
            .port();
        let mut command = std::process::Command::new(program);
        command.args(args).args(SIMULATOR_ARGS);
        command.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--quiet"]);
        if fast {
            command.arg("--fast");
        }
        command.args(["--", "--served-model-name", SERVED_MODEL]);
        command.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        // The server's HTTP layer gets the cores the client's busiest thread leaves, as it does
        // in-process (pinning the two apart measured worse on a shared machine); read by Tokio.
        command.env("TOKIO_WORKER_THREADS", cores.saturating_sub(1).max(1).to_string());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let shown = format!("{} {} (port {port})", program.display(), args.join(" "));
        let child = command.spawn().map_err(|e| task_error(format!("could not start the simulator `{shown}`: {e}")))?;
        Ok(ChildSimulator { child, command: shown, port, base_url: format!("http://127.0.0.1:{port}") })
    }

    pub(super) async fn wait_healthy(&self, within: Duration) -> Result<(), BenchError> {
        let url = format!("{}/health", self.base_url);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if tokio::time::timeout(Duration::from_secs(2), health_ok(self.port)).await.is_ok_and(|ok| ok) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(task_error(format!(
            "the simulator `{}` did not answer {url} within {} s; run it by hand to see why",
            self.command,
            within.as_secs()
        )))
    }
}

/// Whether the simulator on `port` answers `GET /health` with a 2xx status line.
async fn health_ok(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let request = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    // The status line may come in pieces; its first 12 bytes say the code.
    let mut head = Vec::new();
    let mut buf = [0u8; 64];
    while head.len() < 12 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head.starts_with(b"HTTP/1.1 2") || head.starts_with(b"HTTP/1.0 2")
}

impl Drop for ChildSimulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
