//! Graphsignal: the debug context of a time window (profiles such as
//! `sglang.scheduler.Scheduler.run_batch`, span counters such as
//! `sglang.latency.time_to_first_token`, `sglang.startup.*` attributes, engine metrics, errors),
//! read from Graphsignal's API or from a server that serves the same shape (the simulator).

mod context;

use std::path::{Path, PathBuf};
use std::time::Duration;

use autodebug_core::{Secret, Target, TelemetrySnapshot, TelemetrySource, TimeWindow, async_trait};

pub use context::{SOURCE, parse_debug_context};

use crate::error::{Result, TelemetryError};

const DEFAULT_API_BASE: &str = "https://api.graphsignal.com";

/// Reads the Graphsignal debug context for the benchmark window.
///
/// ```
/// use autodebug_core::Secret;
/// use autodebug_telemetry::GraphsignalSource;
/// let source = GraphsignalSource::builder()
///     .api_base("http://127.0.0.1:30000")
///     .api_key(Secret::new("gs-key"))
///     .tag("deployment", "autodebug-sim")
///     .build();
/// let url = source.debug_context_url(autodebug_core::TimeWindow::new(1, 2));
/// assert_eq!(url, "http://127.0.0.1:30000/api/v1/debug_context/?start_time_ns=1&end_time_ns=2&tags=deployment:autodebug-sim");
/// assert!(!format!("{source:?}").contains("gs-key"));
/// ```
#[derive(Debug)]
pub struct GraphsignalSource {
    name: String,
    api_base: String,
    /// Read the context from the service under test itself (the simulator serves one).
    base_from_endpoint: bool,
    api_key: Option<Secret>,
    tags: Vec<(String, String)>,
    client: reqwest::Client,
}

/// Configures a [`GraphsignalSource`].
#[derive(Debug, Clone)]
pub struct GraphsignalSourceBuilder {
    name: String,
    api_base: String,
    base_from_endpoint: bool,
    api_key: Option<Secret>,
    tags: Vec<(String, String)>,
    timeout: Duration,
}

impl Default for GraphsignalSourceBuilder {
    fn default() -> Self {
        GraphsignalSourceBuilder {
            name: SOURCE.to_string(),
            api_base: DEFAULT_API_BASE.to_string(),
            base_from_endpoint: false,
            api_key: None,
            tags: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl GraphsignalSourceBuilder {
    /// Fills in what was not set from the environment: the API base from `GRAPHSIGNAL_API_BASE`,
    /// the key from `GRAPHSIGNAL_API_KEY` or else `api_key` in `~/.graphsignal/config.yml`; an
    /// error names what is missing when no key is found.
    pub fn from_env(mut self) -> Result<Self> {
        if let Ok(base) = std::env::var("GRAPHSIGNAL_API_BASE")
            && !base.trim().is_empty()
            && self.api_base == DEFAULT_API_BASE
            && !self.base_from_endpoint
        {
            self = self.api_base(base.trim());
        }
        if self.api_key.is_some() {
            return Ok(self);
        }
        let key = match Secret::from_env("GRAPHSIGNAL_API_KEY") {
            Some(key) => Some(key),
            None => match default_config_path() {
                Some(path) if path.exists() => api_key_from_config(&path)?,
                _ => None,
            },
        };
        match key {
            Some(key) => Ok(self.api_key(key)),
            None => Err(TelemetryError::Config {
                location: "GRAPHSIGNAL_API_KEY".to_string(),
                message: "not set and no api_key in ~/.graphsignal/config.yml; set GRAPHSIGNAL_API_KEY to your Graphsignal API key".to_string(),
            }),
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The API base (default `https://api.graphsignal.com`).
    pub fn api_base(mut self, base: impl Into<String>) -> Self {
        self.api_base = base.into().trim_end_matches('/').to_string();
        self
    }

    /// Use the base URL of the endpoint under test as the API base, for services that serve their
    /// own debug context (the simulator does).
    pub fn api_base_from_endpoint(mut self) -> Self {
        self.base_from_endpoint = true;
        self
    }

    /// Sent as the `X-API-KEY` header; never printed.
    pub fn api_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key).filter(|k| !k.is_empty());
        self
    }

    /// Restricts the context to spans with this tag (`deployment`, `model`...).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> GraphsignalSource {
        let client = reqwest::Client::builder().timeout(self.timeout).build().unwrap_or_else(|e| {
            tracing::warn!("cannot build an HTTP client with a timeout ({e}); using the default client");
            reqwest::Client::new()
        });
        GraphsignalSource {
            name: self.name,
            api_base: self.api_base,
            base_from_endpoint: self.base_from_endpoint,
            api_key: self.api_key,
            tags: self.tags,
            client,
        }
    }
}

impl GraphsignalSource {
    pub fn builder() -> GraphsignalSourceBuilder {
        GraphsignalSourceBuilder::default()
    }

    /// Reads the debug context served by the endpoint under test (the simulator's own).
    pub fn served_by_endpoint() -> GraphsignalSource {
        GraphsignalSourceBuilder::default().api_base_from_endpoint().build()
    }

    /// `GRAPHSIGNAL_API_BASE` (default `https://api.graphsignal.com`), and the key from
    /// `GRAPHSIGNAL_API_KEY` or else `api_key` in `~/.graphsignal/config.yml`.
    pub fn from_env() -> Result<GraphsignalSource> {
        Ok(GraphsignalSource::builder().from_env()?.build())
    }

    /// The URL `fetch` reads for `window`.
    pub fn debug_context_url(&self, window: TimeWindow) -> String {
        self.url(&self.api_base, "/api/v1/debug_context/", window)
    }

    fn url(&self, base: &str, path: &str, window: TimeWindow) -> String {
        let mut url = format!("{base}{path}?start_time_ns={}&end_time_ns={}", window.start_ns, window.end_ns);
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            url.push_str("&tags=");
            url.push_str(&encode_query_value(&tags.join(";")));
        }
        url
    }

    /// The debug context's text (`GET /api/v1/debug_context/`, field `context`).
    pub async fn debug_context(&self, window: TimeWindow) -> Result<String> {
        self.get_field(&self.api_base, "/api/v1/debug_context/", "context", window).await
    }

    /// The newer signals endpoint's text (`GET /api/v1/context/signals/`, field `context`).
    pub async fn context_signals(&self, window: TimeWindow) -> Result<String> {
        self.get_field(&self.api_base, "/api/v1/context/signals/", "context", window).await
    }

    /// The newer summary endpoint's text (`GET /api/v1/context/summary/`, field `summary`).
    pub async fn context_summary(&self, window: TimeWindow) -> Result<String> {
        self.get_field(&self.api_base, "/api/v1/context/summary/", "summary", window).await
    }

    async fn get_field(&self, base: &str, path: &str, field: &str, window: TimeWindow) -> Result<String> {
        let url = self.url(base, path, window);
        let mut request = self.client.get(&url);
        if let Some(key) = &self.api_key {
            request = request.header("X-API-KEY", key.expose());
        }
        let response = request.send().await.map_err(|source| TelemetryError::Request { url: url.clone(), source })?;
        let status = response.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => {
                    "the API key was refused; set GRAPHSIGNAL_API_KEY (or api_key in ~/.graphsignal/config.yml) to a valid key"
                }
                404 => "no such endpoint; check GRAPHSIGNAL_API_BASE",
                429 => "rate limited; try again later",
                _ => "",
            };
            return Err(TelemetryError::status(&url, status.as_u16(), hint));
        }
        let text = crate::body::read_text(response, &url, crate::body::MAX_BODY_BYTES).await?;
        let body: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TelemetryError::Body { url: url.clone(), message: format!("not JSON: {e}") })?;
        match body.get(field) {
            Some(serde_json::Value::String(text)) => Ok(text.clone()),
            Some(serde_json::Value::Null) | None => {
                Err(TelemetryError::Body { url, message: format!("no `{field}` field in the answer") })
            }
            // Lenient: a structured field is passed on as JSON text.
            Some(other) => Ok(other.to_string()),
        }
    }
}

#[async_trait]
impl TelemetrySource for GraphsignalSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> autodebug_core::Result<TelemetrySnapshot> {
        let base = if self.base_from_endpoint { target.endpoint.base_url.as_str() } else { self.api_base.as_str() };
        let text = self
            .get_field(base, "/api/v1/debug_context/", "context", window)
            .await
            .map_err(|e| e.into_core(&self.name))?;
        let mut snapshot = parse_debug_context(&text);
        snapshot.source = self.name.clone();
        snapshot.window = Some(window);
        for signal in &mut snapshot.signals {
            signal.source = self.name.clone();
        }
        tracing::debug!(signals = snapshot.signals.len(), "read the Graphsignal debug context");
        Ok(snapshot)
    }
}

/// `~/.graphsignal/config.yml`, when a home directory is known.
pub fn default_config_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".graphsignal").join("config.yml"))
}

/// Reads `api_key` from a Graphsignal config file; `None` when the file has no key.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("config.yml");
/// std::fs::write(&path, "api_key: gs-123\n").unwrap();
/// let key = autodebug_telemetry::graphsignal::api_key_from_config(&path).unwrap().unwrap();
/// assert_eq!(key.expose(), "gs-123");
/// ```
pub fn api_key_from_config(path: &Path) -> Result<Option<Secret>> {
    let location = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| TelemetryError::Config { location: location.clone(), message: format!("cannot read: {e}") })?;
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| TelemetryError::Config {
        location: location.clone(),
        message: format!("not valid YAML ({e}); expected a line such as `api_key: <your key>`"),
    })?;
    Ok(yaml.get("api_key").and_then(|v| v.as_str()).map(str::trim).filter(|k| !k.is_empty()).map(Secret::new))
}

/// Percent-encodes a query value, leaving the characters Graphsignal's tag syntax uses readable.
fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' | b';' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
