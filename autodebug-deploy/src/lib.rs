//! autodebug-deploy (work in progress).
