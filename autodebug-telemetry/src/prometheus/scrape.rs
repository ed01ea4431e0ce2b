//! [`PrometheusScrape`]: reads the service's own `/metrics` at the window's start and end, and
//! samples its gauges in between.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use autodebug_core::{Secret, Target, TelemetrySnapshot, TelemetrySource, TimeWindow, async_trait};
use tokio::task::JoinHandle;

use super::delta::{GaugeTracker, window_signals};
use super::parser::{MetricFamily, parse_exposition};
use crate::error::{Result, TelemetryError};

/// Defaults the builder starts from.
const DEFAULT_PATH: &str = "/metrics";
const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
/// One hour of samples at the default interval; the sampler stops there.
const DEFAULT_MAX_SAMPLES: u64 = 7_200;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// A sampler that cannot reach the service this many times in a row stops.
const MAX_FAILURES_IN_A_ROW: u32 = 20;

/// Scrapes the service's Prometheus endpoint and reports what changed during the window.
///
/// `begin()` takes a first scrape (kept per deployment) and starts sampling gauges every
/// 500 ms in the background; `fetch()` stops the sampler, scrapes again and emits counters as
/// increase and rate, gauges as mean/max/min/last, and histograms as the histogram of just the
/// window's observations (p50/p90/p99 as PromQL's `histogram_quantile` computes them, mean =
/// Δsum/Δcount). Signal names stay the engine's own; a `stat` label says which statistic.
///
/// ```
/// use std::time::Duration;
/// use autodebug_telemetry::prometheus::PrometheusScrape;
/// let source = PrometheusScrape::builder().path("/metrics").sample_interval(Duration::from_millis(250)).build();
/// assert_eq!(autodebug_core::TelemetrySource::name(&source), "prometheus");
/// ```
pub struct PrometheusScrape {
    name: String,
    path: String,
    interval: Duration,
    max_samples: u64,
    client: reqwest::Client,
    windows: Arc<Mutex<HashMap<String, OpenWindow>>>,
}

/// What `begin()` keeps for one deployment until `fetch()`.
struct OpenWindow {
    start: Vec<MetricFamily>,
    started: Instant,
    gauges: Arc<Mutex<GaugeTracker>>,
    sampler_warnings: Arc<Mutex<Vec<String>>>,
    sampler: JoinHandle<()>,
}

/// Configures a [`PrometheusScrape`].
#[derive(Debug, Clone)]
pub struct PrometheusScrapeBuilder {
    name: String,
    path: String,
    interval: Duration,
    max_samples: u64,
    timeout: Duration,
}

impl Default for PrometheusScrapeBuilder {
    fn default() -> Self {
        PrometheusScrapeBuilder {
            name: "prometheus".to_string(),
            path: DEFAULT_PATH.to_string(),
            interval: DEFAULT_INTERVAL,
            max_samples: DEFAULT_MAX_SAMPLES,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl PrometheusScrapeBuilder {
    /// The source name snapshots and signals carry (default `prometheus`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The metrics path on the service (default `/metrics`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// How often gauges are sampled during the window (default 500 ms; at least 10 ms).
    pub fn sample_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The most gauge samples one window takes before the sampler stops (default 7200).
    pub fn max_samples(mut self, max: u64) -> Self {
        self.max_samples = max;
        self
    }

    /// Timeout of each scrape (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> PrometheusScrape {
        let client = reqwest::Client::builder().timeout(self.timeout).build().unwrap_or_else(|e| {
            tracing::warn!("cannot build an HTTP client with a timeout ({e}); using the default client");
            reqwest::Client::new()
        });
        PrometheusScrape {
            name: self.name,
            path: self.path,
            interval: self.interval,
            max_samples: self.max_samples,
            client,
            windows: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl Default for PrometheusScrape {
    fn default() -> Self {
        PrometheusScrapeBuilder::default().build()
    }
}

impl PrometheusScrape {
    pub fn builder() -> PrometheusScrapeBuilder {
        PrometheusScrapeBuilder::default()
    }

    /// Reads `AUTODEBUG_METRICS_PATH` (default `/metrics`) and `AUTODEBUG_METRICS_INTERVAL_MS`
    /// (default 500).
    pub fn from_env() -> Result<Self> {
        let mut builder = PrometheusScrapeBuilder::default();
        if let Ok(path) = std::env::var("AUTODEBUG_METRICS_PATH")
            && !path.trim().is_empty()
        {
            builder = builder.path(path.trim());
        }
        if let Ok(ms) = std::env::var("AUTODEBUG_METRICS_INTERVAL_MS") {
            let ms: u64 = ms.trim().parse().map_err(|_| TelemetryError::Config {
                location: "AUTODEBUG_METRICS_INTERVAL_MS".to_string(),
                message: format!("{ms:?} is not a whole number of milliseconds"),
            })?;
            builder = builder.sample_interval(Duration::from_millis(ms));
        }
        Ok(builder.build())
    }

    /// Scrapes `url` once; returns the raw text and its families.
    pub async fn scrape(&self, url: &str, token: Option<&Secret>) -> Result<(String, Vec<MetricFamily>)> {
        scrape(&self.client, url, token).await
    }

    fn windows(&self) -> MutexGuard<'_, HashMap<String, OpenWindow>> {
        // A panic elsewhere while holding the lock leaves the map itself intact.
        self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for PrometheusScrape {
    fn drop(&mut self) {
        for window in self.windows().values() {
            window.sampler.abort();
        }
    }
}

async fn scrape(client: &reqwest::Client, url: &str, token: Option<&Secret>) -> Result<(String, Vec<MetricFamily>)> {
    let mut request = client.get(url).header("Accept", "text/plain;version=0.0.4;q=0.9,*/*;q=0.1");
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        request = request.bearer_auth(token.expose());
    }
    let response = request.send().await.map_err(|source| TelemetryError::Request { url: url.to_string(), source })?;
    let status = response.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            404 => {
                "no metrics here; start the engine with metrics on (SGLang --enable-metrics, llama.cpp --metrics) or set the path"
            }
            401 | 403 => "the endpoint's token was refused",
            _ => "",
        };
        return Err(TelemetryError::status(url, status.as_u16(), hint));
    }
    let text = crate::body::read_text(response, url, crate::body::MAX_BODY_BYTES).await?;
    let families =
        parse_exposition(&text).map_err(|source| TelemetryError::Exposition { origin: url.to_string(), source })?;
    Ok((text, families))
}

#[async_trait]
impl TelemetrySource for PrometheusScrape {
    fn name(&self) -> &str {
        &self.name
    }

    async fn begin(&self, target: &Target<'_>) -> autodebug_core::Result<()> {
        let url = target.endpoint.url(&self.path);
        let token = target.endpoint.token.clone();
        let (_, start) = scrape(&self.client, &url, token.as_ref()).await.map_err(|e| e.into_core(&self.name))?;
        let gauges = Arc::new(Mutex::new(GaugeTracker::default()));
        lock(&gauges).observe(&start);
        let sampler_warnings = Arc::new(Mutex::new(Vec::new()));
        let sampler = tokio::spawn(sample_gauges(
            self.client.clone(),
            url,
            token,
            self.interval,
            self.max_samples,
            gauges.clone(),
            sampler_warnings.clone(),
        ));
        let window = OpenWindow { start, started: Instant::now(), gauges, sampler_warnings, sampler };
        let mut windows = self.windows();
        // Windows that never reached fetch (their benchmark failed) and whose sampler gave up.
        windows.retain(|_, open| !open.sampler.is_finished());
        if let Some(previous) = windows.insert(target.deployment.id.clone(), window) {
            previous.sampler.abort();
        }
        Ok(())
    }

    async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> autodebug_core::Result<TelemetrySnapshot> {
        let url = target.endpoint.url(&self.path);
        let open = self.windows().remove(&target.deployment.id);
        if let Some(open) = &open {
            open.sampler.abort();
        }
        let (raw, end) =
            scrape(&self.client, &url, target.endpoint.token.as_ref()).await.map_err(|e| e.into_core(&self.name))?;
        let mut snapshot = TelemetrySnapshot::new(&self.name, Some(window));
        let computed = match &open {
            Some(open) => {
                let mut gauges = lock(&open.gauges).clone();
                gauges.observe(&end);
                snapshot.warnings.extend(lock(&open.sampler_warnings).drain(..));
                window_signals(Some(&open.start), &gauges, &end, open.started.elapsed())
            }
            None => {
                let mut gauges = GaugeTracker::default();
                gauges.observe(&end);
                window_signals(None, &gauges, &end, window.duration())
            }
        };
        snapshot.warnings.extend(computed.warnings);
        snapshot.signals = computed
            .signals
            .into_iter()
            .map(|mut s| {
                s.source = self.name.clone();
                s
            })
            .collect();
        snapshot.raw = Some(raw);
        tracing::debug!(url, signals = snapshot.signals.len(), "scraped the window's metrics");
        Ok(snapshot)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Samples gauges until aborted by `fetch()`, at most `max_samples` times.
async fn sample_gauges(
    client: reqwest::Client,
    url: String,
    token: Option<Secret>,
    interval: Duration,
    max_samples: u64,
    gauges: Arc<Mutex<GaugeTracker>>,
    warnings: Arc<Mutex<Vec<String>>>,
) {
    let mut failures = 0u64;
    let mut failures_in_a_row = 0u32;
    for _ in 0..max_samples {
        tokio::time::sleep(interval).await;
        match scrape(&client, &url, token.as_ref()).await {
            Ok((_, families)) => {
                failures_in_a_row = 0;
                lock(&gauges).observe(&families);
            }
            Err(e) => {
                failures += 1;
                failures_in_a_row += 1;
                // One warning is enough for the session log.
                if failures == 1 {
                    lock(&warnings).push(format!("a gauge sample during the window failed: {e}"));
                }
                // The service is gone (a failed benchmark never reaches fetch): stop asking.
                if failures_in_a_row >= MAX_FAILURES_IN_A_ROW {
                    lock(&warnings)
                        .push(format!("gauge sampling stopped after {failures_in_a_row} failed scrapes in a row"));
                    return;
                }
            }
        }
    }
    lock(&warnings).push(format!(
        "gauge sampling stopped after {max_samples} samples; later gauge values are only the end scrape"
    ));
}
