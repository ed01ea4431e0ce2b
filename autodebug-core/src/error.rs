use std::path::PathBuf;

/// An underlying error kept as the [`source`](std::error::Error::source) of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What kind of failure an [`Error`] is, for whoever decides whether trying again can help
/// (retrying decorators, the session's record of a failed iteration).
///
/// ```
/// use autodebug_core::{Error, ErrorKind};
/// assert_eq!(Error::deploy("connection reset").kind(), ErrorKind::Transient);
/// assert_eq!(Error::rejected("unrecognized arguments: --frobnicate").kind(), ErrorKind::RejectedConfig);
/// assert_eq!(Error::config("autodebug.yaml: bench", "missing").kind(), ErrorKind::RejectedConfig);
/// assert_eq!(Error::infrastructure("sbatch: command not found").kind(), ErrorKind::Infrastructure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// May pass if tried again unchanged: a timeout, a refused or reset connection, a 5xx answer,
    /// a crash the engine's log does not explain.
    Transient,
    /// The configuration itself was refused (an unknown flag, a value out of range, more memory or
    /// devices than there are): the same configuration fails again; another one may not.
    RejectedConfig,
    /// What runs the engine is broken or misconfigured (credentials, a missing program, an API that
    /// answers nonsense): no configuration gets through until someone fixes it.
    Infrastructure,
    /// The user or the budget stopped the work.
    Interrupted,
}

impl ErrorKind {
    /// The kind named by [`as_str`](Self::as_str).
    pub fn parse(text: &str) -> Option<Self> {
        [ErrorKind::Transient, ErrorKind::RejectedConfig, ErrorKind::Infrastructure, ErrorKind::Interrupted]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::RejectedConfig => "rejected_config",
            ErrorKind::Infrastructure => "infrastructure",
            ErrorKind::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors raised by the loop's vocabulary crate and by the implementations of its traits.
///
/// Every variant carries enough context (file, field, URL) for a user to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong; `location` names the file and field.
    #[error("invalid configuration at {location}: {message}")]
    Config { location: String, message: String },

    /// A knob value falls outside the engine's catalog or domain.
    #[error("invalid knob {knob}: {message}")]
    Knob { knob: String, message: String },

    /// A deployment could not be created, never became healthy, or failed while running; `kind`
    /// says whether trying the same spec again can help.
    #[error("deploy failed: {message}")]
    Deploy {
        message: String,
        kind: ErrorKind,
        #[source]
        source: Option<BoxError>,
    },

    /// A deployment did not become ready in time.
    #[error("deployment {name} not ready after {waited_s:.1}s: {message}")]
    NotReady { name: String, waited_s: f64, message: String },

    /// The benchmark could not run at all (individual request failures are recorded, not raised).
    #[error("benchmark failed: {0}")]
    Bench(String),

    /// A telemetry source could not be read.
    #[error("telemetry source {source_name} failed: {message}")]
    Telemetry { source_name: String, message: String },

    /// An analyzer or planner could not produce its result.
    #[error("planning failed: {0}")]
    Plan(String),

    /// The experiment store could not be read or written.
    #[error("experiment store {path}: {message}")]
    Store { path: PathBuf, message: String },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The session was interrupted (Ctrl-C) or reached its budget.
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// Builds an [`Error::Config`] naming where the bad value was found.
    pub fn config(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { location: location.into(), message: message.into() }
    }

    /// Builds an [`Error::Io`] that names the path involved.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A deploy failure that may pass on another try ([`ErrorKind::Transient`]).
    pub fn deploy(message: impl Into<String>) -> Self {
        Error::Deploy { message: message.into(), kind: ErrorKind::Transient, source: None }
    }

    /// A deploy failure because the engine refused the configuration ([`ErrorKind::RejectedConfig`]).
    pub fn rejected(message: impl Into<String>) -> Self {
        Error::Deploy { message: message.into(), kind: ErrorKind::RejectedConfig, source: None }
    }

    /// A deploy failure of what runs the engine ([`ErrorKind::Infrastructure`]).
    pub fn infrastructure(message: impl Into<String>) -> Self {
        Error::Deploy { message: message.into(), kind: ErrorKind::Infrastructure, source: None }
    }

    /// Keeps `source` as this error's cause (for [`Error::Deploy`]; other variants are returned
    /// unchanged).
    pub fn caused_by(self, source: impl Into<BoxError>) -> Self {
        match self {
            Error::Deploy { message, kind, .. } => Error::Deploy { message, kind, source: Some(source.into()) },
            other => other,
        }
    }

    /// What kind of failure this is. Configuration and knob errors are rejected configurations;
    /// store and file errors are infrastructure; a deployment that was not ready in time, a
    /// benchmark, telemetry or planning failure may pass on another try.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } | Error::Knob { .. } => ErrorKind::RejectedConfig,
            Error::Deploy { kind, .. } => *kind,
            Error::NotReady { .. } | Error::Bench(_) | Error::Telemetry { .. } | Error::Plan(_) => ErrorKind::Transient,
            Error::Store { .. } | Error::Io { .. } => ErrorKind::Infrastructure,
            Error::Interrupted => ErrorKind::Interrupted,
        }
    }

    /// Builds an [`Error::Telemetry`].
    pub fn telemetry(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Telemetry { source_name: source_name.into(), message: message.into() }
    }
}

/// Result alias used across the autodebug crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;
