//! [`PrometheusServer`]: asks a Prometheus server (or any `/api/v1/query_range`-compatible
//! store: Thanos, Mimir, VictoriaMetrics) configured PromQL queries over the window.

use std::collections::BTreeMap;
use std::time::Duration;

use autodebug_core::canonical;
use autodebug_core::{
    EngineKind, Secret, Signal, SignalKind, Target, TelemetrySnapshot, TelemetrySource, TimeWindow, async_trait,
    format_number,
};
use serde::Deserialize;

use crate::error::{Result, TelemetryError};

/// One PromQL query and the signal its result becomes.
///
/// `$deployment` and `$model` in the PromQL are replaced with the deployment id and the
/// endpoint's model name, so one configuration serves every iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct PromQuery {
    /// The signal name, e.g. `ttft_p99`.
    pub signal: String,
    pub promql: String,
    pub unit: String,
    pub canonical: Option<String>,
}

impl PromQuery {
    pub fn new(signal: impl Into<String>, promql: impl Into<String>) -> Self {
        PromQuery { signal: signal.into(), promql: promql.into(), unit: String::new(), canonical: None }
    }

    pub fn with_unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = unit.into();
        self
    }

    pub fn with_canonical(mut self, canonical: impl Into<String>) -> Self {
        self.canonical = Some(canonical.into());
        self
    }

    /// PromQL for the figures the analyzers read, under `engine`'s metric names (each named
    /// metric is in [`NAME_MAP`](crate::prometheus::names::NAME_MAP) with the same canonical).
    ///
    /// ```
    /// use autodebug_core::EngineKind;
    /// use autodebug_telemetry::prometheus::PromQuery;
    /// let queries = PromQuery::defaults_for(EngineKind::Vllm);
    /// assert!(queries.iter().any(|q| q.promql.contains("vllm:num_requests_waiting")));
    /// ```
    pub fn defaults_for(engine: EngineKind) -> Vec<PromQuery> {
        let quantile = |name: &str, metric: &str, canonical: &str| {
            PromQuery::new(name, format!("histogram_quantile(0.99, sum by (le) (rate({metric}[1m])))"))
                .with_unit("s")
                .with_canonical(canonical)
        };
        let gauge = |name: &str, promql: &str, unit: &str, canonical: &str| {
            PromQuery::new(name, promql).with_unit(unit).with_canonical(canonical)
        };
        match engine {
            EngineKind::Sglang => vec![
                quantile("ttft_p99", "sglang:time_to_first_token_seconds_bucket", canonical::TTFT_S),
                quantile("itl_p99", "sglang:inter_token_latency_seconds_bucket", canonical::ITL_S),
                quantile("e2e_p99", "sglang:e2e_request_latency_seconds_bucket", canonical::E2E_S),
                gauge("running", "sum(sglang:num_running_reqs)", "requests", canonical::RUNNING),
                gauge("queue", "sum(sglang:num_queue_reqs)", "requests", canonical::QUEUE_LEN),
                gauge("kv_usage", "max(sglang:token_usage)", "ratio", canonical::KV_USAGE),
                gauge("prefix_hit_rate", "avg(sglang:cache_hit_rate)", "ratio", canonical::PREFIX_HIT_RATE),
                gauge("gen_throughput", "sum(sglang:gen_throughput)", "tok/s", canonical::GEN_THROUGHPUT),
            ],
            EngineKind::Vllm => vec![
                quantile("ttft_p99", "vllm:time_to_first_token_seconds_bucket", canonical::TTFT_S),
                quantile("itl_p99", "vllm:inter_token_latency_seconds_bucket", canonical::ITL_S),
                quantile("e2e_p99", "vllm:e2e_request_latency_seconds_bucket", canonical::E2E_S),
                gauge("running", "sum(vllm:num_requests_running)", "requests", canonical::RUNNING),
                gauge("queue", "sum(vllm:num_requests_waiting)", "requests", canonical::QUEUE_LEN),
                gauge("kv_usage", "max(vllm:kv_cache_usage_perc)", "ratio", canonical::KV_USAGE),
                gauge(
                    "preemptions",
                    "sum(increase(vllm:num_preemptions_total[1m]))",
                    "requests",
                    canonical::PREEMPTIONS,
                ),
                gauge(
                    "gen_throughput",
                    "sum(rate(vllm:generation_tokens_total[1m]))",
                    "tok/s",
                    canonical::GEN_THROUGHPUT,
                ),
            ],
            EngineKind::LlamaCpp => vec![
                gauge("running", "sum(llamacpp:requests_processing)", "requests", canonical::RUNNING),
                gauge("deferred", "sum(llamacpp:requests_deferred)", "requests", canonical::DEFERRED),
                gauge("gen_throughput", "avg(llamacpp:predicted_tokens_seconds)", "tok/s", canonical::GEN_THROUGHPUT),
                gauge("kv_usage", "max(llamacpp:kv_cache_usage_ratio)", "ratio", canonical::KV_USAGE),
            ],
        }
    }
}

/// Reads configured PromQL queries from a Prometheus server's HTTP API over the window.
///
/// ```
/// use autodebug_telemetry::prometheus::{PrometheusServer, PromQuery};
/// let source = PrometheusServer::builder("http://prometheus:9090")
///     .query(PromQuery::new("ttft_p99", "histogram_quantile(0.99, rate(vllm:time_to_first_token_seconds_bucket[1m]))")
///         .with_unit("s")
///         .with_canonical("ttft_s"))
///     .build();
/// assert_eq!(source.queries().len(), 1);
/// ```
pub struct PrometheusServer {
    name: String,
    base_url: String,
    token: Option<Secret>,
    queries: Vec<PromQuery>,
    step: Option<Duration>,
    client: reqwest::Client,
}

/// Configures a [`PrometheusServer`].
#[derive(Debug, Clone)]
pub struct PrometheusServerBuilder {
    name: String,
    base_url: String,
    token: Option<Secret>,
    queries: Vec<PromQuery>,
    step: Option<Duration>,
    timeout: Duration,
}

impl PrometheusServerBuilder {
    /// Fills in what was not set from the environment: the server from `PROMETHEUS_URL` when the
    /// builder has none (an error says to set it), the bearer token from `PROMETHEUS_TOKEN`.
    pub fn from_env(mut self) -> Result<Self> {
        if self.base_url.trim().is_empty() {
            let url = std::env::var("PROMETHEUS_URL").ok().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
                TelemetryError::Config {
                    location: "PROMETHEUS_URL".to_string(),
                    message: "not set; set it to the Prometheus server, e.g. http://prometheus:9090".to_string(),
                }
            })?;
            self.base_url = url.trim().to_string();
        }
        if self.token.is_none()
            && let Some(token) = Secret::from_env("PROMETHEUS_TOKEN")
        {
            self = self.bearer_token(token);
        }
        Ok(self)
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sent as `Authorization: Bearer ...`; never logged.
    pub fn bearer_token(mut self, token: Secret) -> Self {
        self.token = Some(token).filter(|t| !t.is_empty());
        self
    }

    pub fn query(mut self, query: PromQuery) -> Self {
        self.queries.push(query);
        self
    }

    /// Resolution of the range query (default: the window split into about 60 points, at least 1 s).
    pub fn step(mut self, step: Duration) -> Self {
        self.step = Some(step);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> PrometheusServer {
        let client = reqwest::Client::builder().timeout(self.timeout).build().unwrap_or_else(|e| {
            tracing::warn!("cannot build an HTTP client with a timeout ({e}); using the default client");
            reqwest::Client::new()
        });
        PrometheusServer {
            name: self.name,
            base_url: self.base_url.trim_end_matches('/').to_string(),
            token: self.token,
            queries: self.queries,
            step: self.step,
            client,
        }
    }
}

impl PrometheusServer {
    pub fn builder(base_url: impl Into<String>) -> PrometheusServerBuilder {
        PrometheusServerBuilder {
            name: "prometheus-server".to_string(),
            base_url: base_url.into(),
            token: None,
            queries: Vec::new(),
            step: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// `PROMETHEUS_URL` (required) and `PROMETHEUS_TOKEN` (optional bearer token), asking the
    /// [default queries](PromQuery::defaults_for) of every engine (those of an engine that is
    /// not there come back empty). For your own queries, start from
    /// [`PrometheusServer::builder`] and call [`PrometheusServerBuilder::from_env`].
    pub fn from_env() -> Result<PrometheusServer> {
        let mut builder = Self::builder("").from_env()?;
        for engine in [EngineKind::Sglang, EngineKind::Vllm, EngineKind::LlamaCpp] {
            for query in PromQuery::defaults_for(engine) {
                builder = builder.query(query);
            }
        }
        Ok(builder.build())
    }

    pub fn queries(&self) -> &[PromQuery] {
        &self.queries
    }

    /// Runs one range query and returns its series as `(labels, [(unix seconds, value)])`.
    pub async fn query_range(&self, promql: &str, window: TimeWindow) -> Result<(String, Vec<RangeSeries>)> {
        let url = format!("{}/api/v1/query_range", self.base_url);
        let start = window.start_ns as f64 / 1e9;
        let end = window.end_ns as f64 / 1e9;
        let step = self.step.map(|s| s.as_secs_f64()).unwrap_or_else(|| ((end - start) / 60.0).max(1.0));
        let mut request = self.client.get(&url).query(&[
            ("query", promql.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{step:.3}")),
        ]);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let response = request.send().await.map_err(|source| TelemetryError::Request { url: url.clone(), source })?;
        let status = response.status();
        let body = crate::body::read_text(response, &url, crate::body::MAX_BODY_BYTES).await?;
        let parsed: std::result::Result<ApiResponse, _> = serde_json::from_str(&body);
        if !status.is_success() {
            let reason = parsed.ok().and_then(|p| p.error).unwrap_or_default();
            let hint = match status.as_u16() {
                401 | 403 => "the server refused the token; set PROMETHEUS_TOKEN".to_string(),
                _ => reason,
            };
            return Err(TelemetryError::status(&url, status.as_u16(), &hint));
        }
        let parsed = parsed.map_err(|e| TelemetryError::Body {
            url: url.clone(),
            message: format!("not a Prometheus API answer: {e}"),
        })?;
        if parsed.status != "success" {
            return Err(TelemetryError::Body {
                url,
                message: format!(
                    "query {promql:?} failed: {} {}",
                    parsed.error_type.unwrap_or_default(),
                    parsed.error.unwrap_or_default()
                ),
            });
        }
        let data = parsed
            .data
            .ok_or_else(|| TelemetryError::Body { url: url.clone(), message: "no `data` field".to_string() })?;
        let mut series = Vec::new();
        for result in data.result {
            let mut points = Vec::new();
            let pairs = result.values.into_iter().chain(result.value);
            for (t, v) in pairs {
                if let (Some(t), Some(v)) = (t.as_f64(), crate::prometheus::parser::parse_float(&v)) {
                    points.push((t, v));
                }
            }
            series.push(RangeSeries { labels: result.metric, points });
        }
        Ok((body, series))
    }
}

/// One series of a range query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: BTreeMap<String, String>,
    /// `(unix seconds, value)`.
    pub points: Vec<(f64, f64)>,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    data: Option<ApiData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(default)]
    result: Vec<ApiResult>,
}

#[derive(Deserialize)]
struct ApiResult {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(serde_json::Number, String)>,
    /// Instant vectors carry one `value` instead of `values`.
    #[serde(default)]
    value: Option<(serde_json::Number, String)>,
}

#[async_trait]
impl TelemetrySource for PrometheusServer {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> autodebug_core::Result<TelemetrySnapshot> {
        let mut snapshot = TelemetrySnapshot::new(&self.name, Some(window));
        let mut raw = Vec::new();
        for query in &self.queries {
            let promql =
                query.promql.replace("$deployment", &target.deployment.id).replace("$model", &target.endpoint.model);
            let (body, series) = self.query_range(&promql, window).await.map_err(|e| e.into_core(&self.name))?;
            raw.push(body);
            if series.iter().all(|s| s.points.is_empty()) {
                snapshot.warnings.push(format!("{}: PromQL {promql:?} returned no data for the window", query.signal));
                continue;
            }
            let varying = varying_labels(&series);
            for s in series.iter().filter(|s| !s.points.is_empty()) {
                let values: Vec<f64> = s.points.iter().map(|p| p.1).filter(|v| !v.is_nan()).collect();
                let Some(&last) = values.last() else { continue };
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                for (stat, value) in [("mean", mean), ("max", max), ("min", min), ("last", last)] {
                    let mut signal = Signal::number(&self.name, SignalKind::Metric, &query.signal, value, &query.unit)
                        .with_label("stat", stat)
                        .with_count(values.len() as f64)
                        .with_detail(format!(
                            "{stat} {} {} over {} points of `{promql}`",
                            format_number(value),
                            query.unit,
                            values.len()
                        ));
                    for (k, v) in s.labels.iter().filter(|(k, _)| varying.contains(k.as_str())) {
                        signal = signal.with_label(k, v);
                    }
                    if let Some(canonical) = query.canonical.as_deref().filter(|_| series.len() == 1) {
                        signal = signal.with_canonical(canonical);
                    }
                    snapshot.signals.push(signal);
                }
            }
        }
        snapshot.raw = Some(raw.join("\n"));
        Ok(snapshot)
    }
}

fn varying_labels(series: &[RangeSeries]) -> std::collections::BTreeSet<&str> {
    let mut names = std::collections::BTreeSet::new();
    for s in series {
        for (k, v) in &s.labels {
            if series.iter().any(|other| other.labels.get(k) != Some(v)) {
                names.insert(k.as_str());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::names::NAME_MAP;

    /// The default PromQL and the scrape's name map must not drift apart: every metric a default
    /// query reads maps onto the query's canonical signal.
    #[test]
    fn default_queries_read_mapped_metrics_under_their_canonical_names() {
        for engine in [EngineKind::Sglang, EngineKind::Vllm, EngineKind::LlamaCpp] {
            let queries = PromQuery::defaults_for(engine);
            assert!(queries.len() >= 4, "{engine}: {queries:?}");
            for query in queries {
                let canonical = query.canonical.clone().expect("every default query is canonical");
                let metric = query
                    .promql
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':' || c == '_'))
                    .find(|word| word.starts_with(&format!("{}:", engine.as_str())))
                    .unwrap_or_else(|| panic!("{engine}: no engine metric in {}", query.promql));
                let metric = metric.strip_suffix("_bucket").unwrap_or(metric);
                assert!(
                    NAME_MAP.iter().any(|m| m.metric == metric && m.canonical == canonical),
                    "{engine}: `{metric}` is not mapped to {canonical} in NAME_MAP"
                );
            }
        }
    }
}
