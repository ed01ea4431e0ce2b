use serde::{Deserialize, Serialize};

use crate::{ServiceSpec, Signal};

/// One knob change, with the reason and the signals that justify it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The knob (a launch flag such as `--schedule-policy`, or `resources.gpu`).
    pub knob: String,
    /// Value before; `None` when unset (engine default).
    pub from: Option<String>,
    /// Value after; `None` removes the flag. Switches use `"true"` / `"false"`.
    pub to: Option<String>,
    /// The planner rule that proposed it.
    pub rule: String,
    pub reason: String,
    pub evidence: Vec<Signal>,
}

/// What a planner proposes for the next iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub planner: String,
    pub changes: Vec<Change>,
    /// The complete next configuration.
    pub next: ServiceSpec,
    /// Set when the planner has nothing left to try; the session may stop.
    #[serde(default)]
    pub exhausted: bool,
    /// Notes the planner wants in the log (rejected proposals, fallbacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}
