//! # autodebug-llm
//!
//! An LLM [`Planner`](autodebug_core::Planner) for the autodebug loop. It sends the analysis, the
//! cited signals, the history and the knob catalog to an OpenAI-compatible `/v1/chat/completions`
//! endpoint (OpenAI, a locally served model, the autodebug simulator) or to the Anthropic Messages
//! API, asks for a JSON plan, and accepts it only if
//! [`PlanContext::validate`](crate::PlanContext::validate) does: known knobs, values in
//! their domains, cited signals that exist, an untried configuration. Anything else — an unknown
//! flag, a shell command, an HTTP error, a timeout, a spent budget — is recorded in
//! [`Plan::notes`](autodebug_core::Plan::notes) and the fallback planner (the rule planner unless
//! you choose another) plans instead.
//!
//! ```no_run
//! use autodebug_llm::{LlmConfig, LlmPlanner};
//! use autodebug_llm::LlmBudget;
//!
//! # fn main() -> autodebug_core::Result<()> {
//! // ANTHROPIC_API_KEY or OPENAI_API_KEY (with OPENAI_BASE_URL), or AUTODEBUG_LLM_BASE_URL alone.
//! let config = LlmConfig::from_env()?.with_budget(LlmBudget { max_calls: 5, ..LlmBudget::default() });
//! let planner = LlmPlanner::new(config)?;
//! # let _ = planner; Ok(()) }
//! ```
//!
//! Building a configuration by hand (a model served on this machine, no key):
//!
//! ```
//! use autodebug_llm::{LlmConfig, LlmPlanner, Provider};
//! let config = LlmConfig::new(Provider::OpenAi, "http://127.0.0.1:8000", "qwen");
//! let planner = LlmPlanner::new(config).unwrap();
//! assert_eq!(planner.usage().calls, 0);
//! ```

mod client;
mod config;
mod planner;
pub mod schema;

pub use client::{Completion, LlmError, MAX_RESPONSE_BYTES};
pub use config::{LlmConfig, Provider};
pub use planner::LlmPlanner;
pub use schema::{
    LlmBudget, LlmUsage, MAX_CHANGES, PLAN_SCHEMA, PlanContext, Prompt, Rejection, ValidatedPlan, estimate_tokens,
};
