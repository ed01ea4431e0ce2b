//! autodebug-bench (work in progress).
