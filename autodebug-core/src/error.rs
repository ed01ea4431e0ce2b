use std::path::PathBuf;

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

    /// A deployment could not be created, never became healthy, or failed while running.
    #[error("deploy failed: {0}")]
    Deploy(String),

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

    /// Builds an [`Error::Telemetry`].
    pub fn telemetry(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Telemetry { source_name: source_name.into(), message: message.into() }
    }
}

/// Result alias used across the autodebug crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;
