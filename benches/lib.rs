//! Benchmarks live in this folder as harness binaries.
