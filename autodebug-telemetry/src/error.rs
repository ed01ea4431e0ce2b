//! The crate's error type: every variant names the URL, file or setting involved and, where the
//! fix is known, what to do.

use crate::prometheus::ParseError;

/// What went wrong reading a telemetry source.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The request did not get an answer (connection refused, timeout, TLS).
    #[error("GET {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with an error status; `hint` says what to do about it.
    #[error("GET {url}: HTTP {status}{hint}")]
    Status { url: String, status: u16, hint: String },

    /// The answer arrived but is not what the API promises.
    #[error("GET {url}: {message}")]
    Body { url: String, message: String },

    /// The answer was larger than the limit; reading stopped there.
    #[error(
        "GET {url}: the answer is larger than {limit} bytes and was refused; no real telemetry answer is that big (is the URL the service's?)"
    )]
    TooLarge { url: String, limit: usize },

    /// A Prometheus exposition could not be parsed.
    #[error("{origin}: {source}")]
    Exposition {
        origin: String,
        #[source]
        source: ParseError,
    },

    /// A setting is missing or wrong; `location` names the variable, file or field.
    #[error("{location}: {message}")]
    Config { location: String, message: String },

    /// A timestamp is not ISO-8601.
    #[error("timestamp {text:?} is not ISO-8601; write it like 2026-03-24T20:40:00Z (no zone means UTC)")]
    Timestamp { text: String },
}

impl TelemetryError {
    /// Converts into the loop's error, naming the telemetry source.
    pub fn into_core(self, source_name: &str) -> autodebug_core::Error {
        autodebug_core::Error::telemetry(source_name, self.to_string())
    }

    pub(crate) fn status(url: &str, status: u16, hint: &str) -> Self {
        let hint = if hint.is_empty() { String::new() } else { format!(": {hint}") };
        TelemetryError::Status { url: url.to_string(), status, hint }
    }
}

/// Result alias for this crate.
pub type Result<T, E = TelemetryError> = std::result::Result<T, E>;
