//! autodebug-sim (work in progress).
