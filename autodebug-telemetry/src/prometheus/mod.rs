//! Prometheus: the exposition parser, the `/metrics` scrape source, a Prometheus server API
//! client, and the maps from each engine's metric names onto canonical signals.

mod delta;
pub mod names;
mod parser;
mod quantile;
mod scrape;
mod series;
mod server;

pub use delta::{GaugeTracker, SOURCE, WindowSignals, window_signals};
pub use parser::{MetricFamily, MetricType, ParseError, Sample, parse_exposition};
pub use quantile::histogram_quantile;
pub use scrape::{PrometheusScrape, PrometheusScrapeBuilder};
pub use series::{Series, SeriesLabels, distinguishing_labels};
pub use server::{PromQuery, PrometheusServer, PrometheusServerBuilder, RangeSeries};
