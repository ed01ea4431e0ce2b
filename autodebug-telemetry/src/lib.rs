//! autodebug-telemetry (work in progress).
