//! # autodebug-report
//!
//! Reports of autodebug sessions for people: one self-contained HTML page (inline CSS and SVG,
//! no scripts, nothing fetched from the network) with the objective and key metrics per
//! iteration and the champion marked, the Pareto front of output throughput against p99 TTFT,
//! latency CDFs of the baseline against the champion, the knob values tried, and each
//! iteration's debug log with the signals it cites. The same charts come as standalone SVG
//! files, and as PNG through headless Chromium, for slides.
//!
//! The charts are drawn by hand as plain SVG so that they need no fonts or scripts of their own.
//!
//! Under the page, the history read back as pure functions over
//! [`History`](autodebug_core::History) and [`Iteration`](autodebug_core::Iteration) values (as
//! [`Store::history`](autodebug_core::store::Store::history) returns them), so the CLI, this page
//! and a notebook compute the same numbers:
//!
//! - [`diff`]: what changed between two iterations (flags, resources, metrics), with the change
//!   in percent, whether it is outside the objective's noise margin, and, from per-request
//!   records, a Mann-Whitney U test and a bootstrap interval;
//! - [`pareto`]: the Pareto front of two metrics (latency-like minimized, throughput-like maximized);
//! - [`budget`]: pass / fail / missing verdicts of service-level budgets per iteration, for CI gates;
//! - [`export`]: CSV, JSON and markdown (GitHub issue or pull-request body) renderings;
//! - [`ingest`]: other tools' benchmark reports (vLLM, SGLang, GuideLLM, AIPerf) as iterations.
//!
//! ```
//! use autodebug_core::store::Store;
//! use autodebug_core::{Analysis, EngineKind, Iteration, IterationStatus, Objective, ServiceSpec};
//! use autodebug_report::Report;
//!
//! let store = Store::open_in_memory()?;
//! let objective = Objective::minimize("e2e.mean");
//! let session = store.create_session("demo", "local", "sglang", &objective, &serde_json::json!({}), 0)?;
//! let spec = ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat");
//! for (number, e2e) in [(1, 390.0), (2, 240.0)] {
//!     store.begin_iteration(session.id, number, &spec, None, 1_000)?;
//!     let iteration = Iteration {
//!         number, spec: spec.clone(), artifact: None, status: IterationStatus::Ok,
//!         metrics: [("e2e.mean".to_string(), e2e)].into(), bench: Default::default(),
//!         analysis: Analysis::default(), plan: None, error: None,
//!         started_ns: 1_000, finished_ns: 2_000, timings: Default::default(), round: None,
//!     };
//!     store.finish_iteration(session.id, &iteration)?;
//! }
//!
//! let report = Report::from_store(&store, Some("demo"))?;
//! assert_eq!(report.data.champion().map(|c| c.number), Some(2));
//! let html = report.html();
//! assert!(html.contains("<svg") && !html.contains("<script"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod browser;
pub mod budget;
pub mod charts;
mod data;
pub mod diff;
mod error;
pub mod export;
pub mod html;
pub mod ingest;
pub mod pareto;
pub mod svg;

use std::path::{Path, PathBuf};

use autodebug_core::store::Store;

pub use browser::{Chromium, PageLoad};
pub use charts::Chart;
pub use data::{IterationLog, PlanRecords, ReportData};
pub use error::ReportError;

/// A session's report: its data and its charts, ready to write.
#[derive(Debug, Clone)]
pub struct Report {
    pub data: ReportData,
    pub charts: Vec<Chart>,
}

impl Report {
    pub fn new(data: ReportData) -> Report {
        let charts = charts::all(&data);
        Report { data, charts }
    }

    /// The report of a session (by name, or the latest one) in the store.
    pub fn from_store(store: &Store, session: Option<&str>) -> Result<Report, ReportError> {
        Ok(Report::new(ReportData::from_store(store, session)?))
    }

    /// The self-contained HTML page.
    pub fn html(&self) -> String {
        html::page(&self.data, &self.charts)
    }

    pub fn write_html(&self, path: &Path) -> Result<(), ReportError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| ReportError::io(parent, e))?;
        }
        std::fs::write(path, self.html()).map_err(|e| ReportError::io(path, e))
    }

    /// Writes every chart as `<dir>/<name>.svg`; returns the paths in page order.
    pub fn write_svgs(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::io(dir, e))?;
        let mut paths = Vec::new();
        for chart in &self.charts {
            let path = dir.join(format!("{}.svg", chart.name));
            std::fs::write(&path, &chart.svg).map_err(|e| ReportError::io(&path, e))?;
            paths.push(path);
        }
        Ok(paths)
    }

    /// Writes every chart as `<dir>/<name>.png`, rasterized by headless Chromium at twice the
    /// SVG's size (sharp on slides); the SVGs go next to them.
    pub fn write_pngs(&self, dir: &Path, chromium: &Chromium) -> Result<Vec<PathBuf>, ReportError> {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::io(dir, e))?;
        let staging = tempfile::tempdir_in(dir).map_err(|e| ReportError::io(dir, e))?;
        let mut paths = Vec::new();
        for chart in &self.charts {
            // Chromium screenshots the viewport: an HTML wrapper scales the chart to fill it.
            let page = staging.path().join(format!("{}.html", chart.name));
            let wrapper = format!(
                "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>html,body{{margin:0;background:#fff}}svg{{display:block;width:{}px;height:{}px}}</style></head><body>{}</body></html>",
                chart.width * 2,
                chart.height * 2,
                chart.svg
            );
            std::fs::write(&page, wrapper).map_err(|e| ReportError::io(&page, e))?;
            let path = dir.join(format!("{}.png", chart.name));
            chromium.screenshot(&page, &path, chart.width * 2, chart.height * 2)?;
            tracing::debug!(chart = %chart.name, path = %path.display(), "wrote PNG");
            paths.push(path);
        }
        Ok(paths)
    }
}
