//! The planner: budget check, one call, validation, fallback.

use std::sync::Mutex;

use crate::{LlmUsage, PlanContext};
use async_trait::async_trait;
use autodebug_core::DeploymentKnobs;
use autodebug_core::rules::RulePlanner;
use autodebug_core::{Error, Plan, PlanInput, Planner, Result};

use crate::client::complete;
use crate::config::LlmConfig;

/// Plans with a language model and falls back to another planner whenever the model's plan
/// cannot be used; see the [crate docs](crate).
pub struct LlmPlanner {
    config: LlmConfig,
    client: reqwest::Client,
    usage: Mutex<LlmUsage>,
    fallback: Box<dyn Planner>,
    deployment: Option<DeploymentKnobs>,
}

impl LlmPlanner {
    /// A planner with the rule planner as fallback.
    pub fn new(config: LlmConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::config("llm", format!("cannot build an HTTP client for {}: {e}", config.url())))?;
        Ok(LlmPlanner {
            config,
            client,
            usage: Mutex::new(LlmUsage::default()),
            fallback: Box::new(RulePlanner::new()),
            deployment: None,
        })
    }

    pub fn with_fallback(mut self, fallback: impl Planner + 'static) -> Self {
        self.fallback = Box::new(fallback);
        self
    }

    /// Lets the model change deployment-level knobs (GPU type and count, image) too.
    pub fn with_deployment_knobs(mut self, knobs: DeploymentKnobs) -> Self {
        self.deployment = Some(knobs);
        self
    }

    /// Calls and spending so far in this planner's life (one session).
    pub fn usage(&self) -> LlmUsage {
        self.usage.lock().map(|u| u.clone()).unwrap_or_default()
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    async fn fall_back(&self, input: PlanInput<'_>, why: String) -> Result<Plan> {
        tracing::warn!(target: "autodebug::llm", "{why}; the {} planner plans instead", self.fallback.name());
        let mut plan = self.fallback.plan(input).await?;
        plan.notes.insert(0, format!("llm: {why}; fell back to the {} planner", self.fallback.name()));
        Ok(plan)
    }

    /// One model call, or the reason there was none; the budget is charged for every answer.
    async fn ask(&self, input: &PlanInput<'_>) -> std::result::Result<Plan, String> {
        let ctx = PlanContext::new(input, self.deployment.as_ref());
        let prompt = ctx.prompt();
        let chars = prompt.system.len() + prompt.user.len();
        {
            let usage = self.usage.lock().map_err(|_| "the usage counter is poisoned".to_string())?;
            if let Some(why) = usage.refuse(&self.config.budget, chars) {
                return Err(why);
            }
        }
        let completion = match complete(&self.client, &self.config, &prompt).await {
            Ok(c) => c,
            Err(e) => {
                // A failed call may still have been billed; count the call, not tokens we never saw.
                if let Ok(mut usage) = self.usage.lock() {
                    usage.record(&self.config.budget, 0, 0);
                }
                return Err(e.to_string());
            }
        };
        if let Ok(mut usage) = self.usage.lock() {
            usage.record(&self.config.budget, completion.input_tokens, completion.output_tokens);
        }
        let validated = ctx.validate(&completion.text).map_err(|e| e.to_string())?;
        let mut notes = Vec::new();
        if let Some(r) = validated.rationale.filter(|r| !r.trim().is_empty()) {
            notes.push(format!("llm rationale: {}", r.chars().take(500).collect::<String>()));
        }
        Ok(Plan { planner: "llm".into(), changes: validated.changes, next: validated.next, exhausted: false, notes })
    }
}

#[async_trait]
impl Planner for LlmPlanner {
    fn name(&self) -> &str {
        "llm"
    }

    async fn plan(&self, input: PlanInput<'_>) -> Result<Plan> {
        match self.ask(&input).await {
            Ok(plan) => Ok(plan),
            Err(why) => self.fall_back(input, why).await,
        }
    }
}
