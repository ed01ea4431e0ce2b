//! Response bodies read with a size limit: whatever answers on a metrics port (a misrouted proxy,
//! a hostile or broken server) may send an endless body, and reading it whole would grow memory
//! without bound.

use crate::error::{Result, TelemetryError};

/// The largest answer read from a `/metrics` endpoint, a Prometheus server's API or Graphsignal.
/// Real answers are far smaller (a busy vLLM `/metrics` is under 1 MiB; a range query of 60 points
/// over a thousand series a few MiB), so anything above it is refused rather than parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The body as text (invalid UTF-8 replaced, as `reqwest`'s `text()` does), or
/// [`TelemetryError::TooLarge`] as soon as it passes `limit` bytes, declared or received.
pub(crate) async fn read_text(mut response: reqwest::Response, url: &str, limit: usize) -> Result<String> {
    // A declared length over the limit is refused before a byte of the body is read.
    if response.content_length().is_some_and(|declared| declared > limit as u64) {
        return Err(TelemetryError::TooLarge { url: url.to_string(), limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|source| TelemetryError::Request { url: url.to_string(), source })?
    {
        if body.len() + chunk.len() > limit {
            return Err(TelemetryError::TooLarge { url: url.to_string(), limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8(body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}
