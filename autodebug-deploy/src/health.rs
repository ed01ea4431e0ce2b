//! A minimal HTTP/1.1 readiness probe: `GET path`, read the status line, nothing else.
//!
//! A full HTTP client would add nothing here: the probe only needs the status code of a
//! plain-HTTP endpoint on this machine.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status line must arrive within this many bytes.
const MAX_STATUS_LINE: usize = 1024;

/// What one probe saw, in words fit for an error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    Status(u16),
    Failed(String),
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Status(code) => write!(f, "answered HTTP {code}"),
            Probe::Failed(why) => f.write_str(why),
        }
    }
}

/// `GET http://host:port{path}` with everything bounded by `timeout`.
pub(crate) async fn probe(host: &str, port: u16, path: &str, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, get_status(host, port, path)).await {
        Ok(Ok(code)) => Probe::Status(code),
        Ok(Err(why)) => Probe::Failed(why),
        Err(_) => Probe::Failed(format!("gave no status line within {timeout:?}")),
    }
}

async fn get_status(host: &str, port: u16, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect((host, port)).await.map_err(|e| format!("could not connect: {e}"))?;
    let host_header = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: autodebug-deploy\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("could not send the request: {e}"))?;
    let mut head = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&head[..end]);
        }
        if head.len() > MAX_STATUS_LINE {
            return Err(format!("sent no HTTP status line in its first {MAX_STATUS_LINE} bytes"));
        }
        let n = stream.read(&mut chunk).await.map_err(|e| format!("connection failed while reading: {e}"))?;
        if n == 0 {
            return Err("closed the connection without an HTTP status line".into());
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next().and_then(|code| code.parse::<u16>().ok())) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("answered something that is not HTTP: `{}`", text.chars().take(80).collect::<String>())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(response: &'static [u8]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn reads_the_status_code() {
        let port = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(probe("127.0.0.1", port, "/health", Duration::from_secs(5)).await, Probe::Status(200));
        let port = serve_once(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").await;
        assert_eq!(probe("127.0.0.1", port, "/health", Duration::from_secs(5)).await, Probe::Status(503));
    }

    #[tokio::test]
    async fn reports_non_http_and_refused() {
        let port = serve_once(b"SSH-2.0-OpenSSH\r\n").await;
        let seen = probe("127.0.0.1", port, "/", Duration::from_secs(5)).await;
        assert!(matches!(&seen, Probe::Failed(w) if w.contains("not HTTP")), "{seen}");
        // A port we just released is almost surely closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let seen = probe("127.0.0.1", port, "/", Duration::from_secs(5)).await;
        assert!(matches!(&seen, Probe::Failed(w) if w.contains("connect")), "{seen}");
    }
}
