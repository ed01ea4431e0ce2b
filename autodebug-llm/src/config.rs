//! Where the model answers and what it may cost.

use std::time::Duration;

use crate::LlmBudget;
use autodebug_core::{Error, Result, Secret};

/// The API dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `POST {base}/v1/chat/completions`, bearer token.
    OpenAi,
    /// `POST {base}/v1/messages`, `x-api-key` and `anthropic-version` headers.
    Anthropic,
}

impl Provider {
    /// The hosted API's base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com",
            Provider::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The model asked when none is named.
    pub fn default_model(self) -> &'static str {
        match self {
            Provider::OpenAi => "gpt-4o-mini",
            Provider::Anthropic => "claude-sonnet-4-5",
        }
    }

    /// The environment variable the key is read from by default.
    pub fn default_key_env(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
        }
    }
}

/// Everything the planner needs to reach a model.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub provider: Provider,
    /// Base URL without `/v1`, e.g. `https://api.openai.com` or `http://127.0.0.1:30000`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    pub budget: LlmBudget,
    /// Per request, connect to last byte.
    pub timeout: Duration,
}

impl LlmConfig {
    pub fn new(provider: Provider, base_url: impl Into<String>, model: impl Into<String>) -> Self {
        let base_url = base_url.into().trim_end_matches('/').trim_end_matches("/v1").to_string();
        LlmConfig {
            provider,
            base_url,
            model: model.into(),
            api_key: None,
            budget: LlmBudget::default(),
            timeout: Duration::from_secs(60),
        }
    }

    pub fn with_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key);
        self
    }

    pub fn with_budget(mut self, budget: LlmBudget) -> Self {
        self.budget = budget;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// From the environment: `ANTHROPIC_API_KEY` (Anthropic; `ANTHROPIC_BASE_URL` optional), else
    /// `OPENAI_API_KEY` (`OPENAI_BASE_URL` optional), else `AUTODEBUG_LLM_BASE_URL` alone (an
    /// OpenAI-compatible server that needs no key). `AUTODEBUG_LLM_MODEL` picks the model.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let model = var("AUTODEBUG_LLM_MODEL");
        for (provider, base_var) in [(Provider::Anthropic, "ANTHROPIC_BASE_URL"), (Provider::OpenAi, "OPENAI_BASE_URL")]
        {
            if let Some(key) = Secret::from_env(provider.default_key_env()).filter(|k| !k.is_empty()) {
                let base = var(base_var).unwrap_or_else(|| provider.default_base_url().into());
                let model = model.unwrap_or_else(|| provider.default_model().into());
                return Ok(Self::new(provider, base, model).with_key(key));
            }
        }
        if let Some(base) = var("AUTODEBUG_LLM_BASE_URL") {
            return Ok(Self::new(Provider::OpenAi, base, model.unwrap_or_else(|| "default".into())));
        }
        Err(Error::config(
            "environment",
            "no LLM configured: set ANTHROPIC_API_KEY or OPENAI_API_KEY (optionally OPENAI_BASE_URL), or AUTODEBUG_LLM_BASE_URL for a local OpenAI-compatible server",
        ))
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> String {
        match self.provider {
            Provider::OpenAi => format!("{}/v1/chat/completions", self.base_url),
            Provider::Anthropic => format!("{}/v1/messages", self.base_url),
        }
    }
}
