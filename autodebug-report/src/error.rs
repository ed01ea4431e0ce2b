use std::path::PathBuf;

/// What can go wrong while building or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The experiment store could not be read.
    #[error(transparent)]
    Store(#[from] autodebug_core::Error),

    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Chromium, used to turn SVG into PNG and to test pages, is missing or failed.
    #[error("chromium: {0}")]
    Browser(String),
}

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io { path: path.into(), source }
    }
}

impl From<ReportError> for autodebug_core::Error {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Store(inner) => inner,
            ReportError::Io { path, source } => autodebug_core::Error::Io { path, source },
            other => autodebug_core::Error::config("report", other.to_string()),
        }
    }
}
