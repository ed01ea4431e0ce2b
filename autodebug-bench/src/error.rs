//! Errors that stop a whole benchmark run. Failures of single requests are not errors:
//! they are recorded with their [`ErrorClass`](autodebug_core::ErrorClass) and counted.

/// Why a benchmark could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A field of the bench plan or endpoint is unusable; `field` names it.
    #[error("bench plan `{plan}`: {field} {message}")]
    InvalidPlan { plan: String, field: &'static str, message: String },

    /// The HTTP client could not be built (TLS backend, system configuration).
    #[cfg(feature = "https")]
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),

    /// The endpoint needs reqwest (`https://`, a proxy, credentials in the URL, or
    /// `HttpClient::Reqwest`), which this build left out.
    #[error(
        "{url} needs the `https` feature of autodebug-bench (TLS, proxies, HttpClient::Reqwest); \
         this build has only the plain http:// client: enable the feature or use an http:// endpoint"
    )]
    HttpsNotBuilt { url: String },

    /// An input file (dataset, trace, tokenizer) could not be read.
    #[error("could not read {path}: {source}; check the path and its permissions")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// An input file was read but its content is unusable; `location` is `path` or `path:line`.
    #[error("{location}: {message}")]
    InvalidInput { location: String, message: String },

    /// An output file could not be written.
    #[error("could not write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A request task ended abnormally (a bug in this crate; please report it).
    #[error("a request task of bench plan `{plan}` failed: {message}")]
    Task { plan: String, message: String },
}

impl From<BenchError> for autodebug_core::Error {
    fn from(error: BenchError) -> Self {
        match error {
            BenchError::InvalidPlan { plan, field, message } => {
                autodebug_core::Error::config(format!("bench plan `{plan}`, field {field}"), message)
            }
            BenchError::InvalidInput { location, message } => autodebug_core::Error::config(location, message),
            e @ BenchError::HttpsNotBuilt { .. } => autodebug_core::Error::config("endpoint.base_url", e.to_string()),
            other => autodebug_core::Error::Bench(other.to_string()),
        }
    }
}
