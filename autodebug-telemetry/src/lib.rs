//! # autodebug-telemetry
//!
//! [`TelemetrySource`](autodebug_core::TelemetrySource) implementations for the autodebug loop:
//! what the service itself says about a benchmark window, as citable
//! [`Signal`](autodebug_core::Signal)s tagged with
//! [canonical names](autodebug_core::canonical) so analyzers read any engine.
//!
//! - [`prometheus`]: the exposition parser, [`PrometheusScrape`] (the service's own `/metrics`,
//!   scraped at the window's start and end), [`PrometheusServer`] (PromQL over a Prometheus
//!   server's API), and the vLLM / SGLang / llama.cpp name maps.
//! - [`graphsignal`]: [`GraphsignalSource`], the debug context (profiles, span counters, startup
//!   attributes, metrics, errors) and [`parse_debug_context`].
//! - [`logs`]: [`EngineLogSource`] and [`parse_engine_logs`], facts from SGLang, vLLM and
//!   llama.cpp logs (KV pool size, batch statistics, preemptions, per-request timings, fatal errors).
//! - [`trace`]: PyTorch-profiler (Kineto) traces — kernel classes, GPU busy/idle, overlap — and
//!   [`trace::TraceSource`] over a directory of them.
//!
//! ```
//! use autodebug_telemetry::prometheus::{parse_exposition, window_signals, GaugeTracker};
//! use std::time::Duration;
//!
//! let scrape = |tokens: u32| format!(
//!     "# TYPE sglang:generation_tokens_total counter\nsglang:generation_tokens_total{{model_name=\"m\"}} {tokens}\n");
//! let start = parse_exposition(&scrape(1000)).unwrap();
//! let end = parse_exposition(&scrape(3000)).unwrap();
//! let window = window_signals(Some(&start), &GaugeTracker::default(), &end, Duration::from_secs(10));
//! let rate = window.signals.iter().find(|s| s.labels["stat"] == "rate").unwrap();
//! assert_eq!(rate.as_f64(), Some(200.0));
//! assert_eq!(rate.citation(), "Prometheus metric `sglang:generation_tokens_total{stat=\"rate\"}`: 200 tokens/s (2000 over 10.0 s)");
//! ```

mod body;
mod error;
pub mod graphsignal;
pub mod logs;
pub mod prometheus;
mod timestamps;
pub mod trace;

pub use body::MAX_BODY_BYTES;
pub use error::{Result, TelemetryError};
pub use graphsignal::{GraphsignalSource, parse_debug_context};
pub use logs::{EngineLogSource, parse_engine_logs};
pub use prometheus::{PrometheusScrape, PrometheusServer, parse_exposition};
pub use timestamps::{iso_to_ns, window_from_iso};
