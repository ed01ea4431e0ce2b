//! The CPU floor: a bare reader of the same streams, socket reads and `\n\n` boundaries only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autodebug_core::ErrorClass;
use tokio::task::JoinSet;

use super::SelfCheckOptions;
use super::measure::{StreamResult, Tally, chat_body, failed, lock};

/// The floor's share of a round: the same workers and streams, each worker on one keep-alive
/// connection of its own, reading with [`bare_stream`].
pub(super) async fn floor_round(
    authority: &str,
    round: &Arc<Vec<u32>>,
    options: &SelfCheckOptions,
    deadline: Instant,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..options.cpu_streams.min(round.len()) {
        let (tally, next, round, authority) = (tally.clone(), next.clone(), round.clone(), authority.to_string());
        let timeout = options.request_timeout;
        workers.spawn(async move {
            let mut connection = None;
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(&tokens) = round.get(index) else { return };
                if Instant::now() >= deadline {
                    return;
                }
                let body = chat_body(16, tokens, index);
                let result = bare_stream(&mut connection, &authority, &body, &mut buffer, timeout).await;
                if result.error.is_some() {
                    connection = None;
                }
                lock(&tally).add(&result, true);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    std::mem::take(&mut *lock(&tally))
}

/// The end of a chunked HTTP/1.1 body: the last chunk's line ending, then the zero-size chunk.
const CHUNKED_END: &[u8] = b"\r\n0\r\n\r\n";

/// The floor: sends `body` on `connection` (connecting when there is none) and reads the response
/// to the end of its chunked body, counting `\n\n` event boundaries: no HTTP parsing beyond the
/// body's end, no JSON, no accounting, nothing kept. Its count is the client's event count on
/// the simulator's streams (one `data:` line per event, and no `\n\n` in heads or chunk framing).
async fn bare_stream(
    connection: &mut Option<tokio::net::TcpStream>,
    authority: &str,
    body: &[u8],
    buffer: &mut [u8],
    timeout: Duration,
) -> StreamResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut result = StreamResult::default();
    let stream = match connection {
        Some(stream) => stream,
        None => match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(authority)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                connection.insert(stream)
            }
            Ok(Err(_)) => return failed(result, ErrorClass::Connect),
            Err(_) => return failed(result, ErrorClass::TimeoutFirstToken),
        },
    };
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    if stream.write_all(&request).await.is_err() {
        return failed(result, ErrorClass::EarlyClose);
    }
    let mut tail = [0u8; CHUNKED_END.len()];
    let mut newline_before = false;
    loop {
        let read = match tokio::time::timeout(timeout, stream.read(buffer)).await {
            Err(_) => return failed(result, ErrorClass::TimeoutIdle),
            Ok(Err(_)) | Ok(Ok(0)) => return failed(result, ErrorClass::EarlyClose),
            Ok(Ok(read)) => &buffer[..read],
        };
        let mut rest = read;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let before = if newline == 0 { newline_before } else { rest[newline - 1] == b'\n' };
            result.events += u64::from(before);
            newline_before = true;
            rest = &rest[newline + 1..];
        }
        if !rest.is_empty() {
            newline_before = false;
        }
        let kept = CHUNKED_END.len();
        if read.len() >= kept {
            tail.copy_from_slice(&read[read.len() - kept..]);
        } else {
            tail.rotate_left(read.len());
            tail[kept - read.len()..].copy_from_slice(read);
        }
        if tail == CHUNKED_END {
            return result;
        }
    }
}
