//! Example programs live in this folder; run them with `cargo run -p autodebug-examples --example NAME`:
//!
//! - `embed_loop`: the loop composed from the crates (simulator, SSE benchmarker, Prometheus,
//!   Graphsignal-shaped and log telemetry, the rule analyzer and planner);
//! - `custom_planner`: a `Planner` of your own in the same loop;
//! - `custom_telemetry`: a `TelemetrySource` of your own (an engine's JSON status endpoint) whose
//!   signals the rule analyzer cites.
