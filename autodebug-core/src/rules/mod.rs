//! The rule analyzer and planner: expert rules, kept as data, that tie a symptom in the signals to
//! a knob change.
//!
//! The rules live in a [`KnowledgeBase`] (YAML; the shipped one is `autodebug-core/rules/builtin.yaml`,
//! users add their own with [`KnowledgeBase::load`] or `RulePlanner::with_rules_file`).
//! [`RuleAnalyzer`] raises a [`Finding`](crate::Finding) for every rule whose conditions hold and
//! cites the signals each rests on; [`RulePlanner`] turns findings into changes inside the engine's
//! knob catalog with the rule's actions.
//!
//! ```
//! use autodebug_core::rules::{KnowledgeBase, RuleAnalyzer, RulePlanner, rule};
//!
//! let kb = KnowledgeBase::builtin();
//! assert!(kb.rule(rule::SCHEDULER_OVERHEAD).is_some());
//! let _analyzer = RuleAnalyzer::from_kb(kb.clone());
//! let _planner = RulePlanner::from_kb(kb);
//! ```

mod analyzer;
mod eval;
pub mod kb;
mod planner;

pub use analyzer::{RuleAnalyzer, not_applied_flag};
pub use kb::{Action, ApplyMode, Condition, KnowledgeBase, Op, Rule, Step};
pub use planner::{RulePlanner, ignored_flags};

/// Rule ids, shared by the analyzer (which raises them) and the planner (which acts on them).
pub mod rule {
    /// Kept in code: the benchmark client saw failed requests.
    pub const BENCH_ERRORS: &str = "errors.bench";
    /// Kept in code: the engine logged error lines.
    pub const ENGINE_ERRORS: &str = "errors.engine";
    pub const SCHEDULER_OVERHEAD: &str = "scheduler.overhead";
    pub const MIXED_CHUNK_OFF: &str = "sglang.mixed_chunk_off";
    pub const PREFIX_CACHE_MISSES: &str = "prefix_cache.misses";
    pub const DECODE_BOUND: &str = "decode.bound";
    pub const QUEUEING: &str = "queueing.server";
    pub const CLIENT_BOUND: &str = "queueing.client_bound";
    pub const KV_PRESSURE: &str = "kv.pressure";
    pub const RETRACT_FREQUENT: &str = "sglang.retract.frequent";
    pub const OOM_PREFILL: &str = "sglang.oom.prefill";
    pub const OOM_DECODE: &str = "sglang.oom.decode";
    pub const MEM_HEADROOM_HIGH: &str = "sglang.mem.headroom_high";
    pub const MEM_HEADROOM_LOW: &str = "sglang.mem.headroom_low";
    /// The planner's own: no rule fired, so one untried catalog value is measured.
    pub const EXPLORE: &str = "explore.one_knob";
    /// Kept in code: an asked-for flag the engine reports otherwise.
    pub const NOT_APPLIED: &str = "config.not_applied";
}

/// Canonical names of the signals the analyzer derives from the benchmark, for rule conditions.
pub mod derived {
    /// Share of the primary plan's mean request time spent decoding (tpot x output tokens / e2e).
    pub const DECODE_SHARE: &str = "decode_share";
    /// 1 when a bench plan reuses prompt prefixes (repeated prompts or a shared prefix).
    pub const PREFIX_REUSE: &str = "prefix_reuse";
    /// Cached-token ratio of the prefix-reusing plans (client side), else the server's hit rate.
    pub const REUSE_CACHED_RATIO: &str = "reuse_cached_ratio";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_knowledge_base_parses_and_names_the_loop_rules() {
        let kb = KnowledgeBase::from_yaml("builtin.yaml", kb::BUILTIN_YAML).expect("shipped rules must load");
        for id in [
            rule::SCHEDULER_OVERHEAD,
            rule::MIXED_CHUNK_OFF,
            rule::PREFIX_CACHE_MISSES,
            rule::DECODE_BOUND,
            rule::QUEUEING,
            rule::CLIENT_BOUND,
            rule::KV_PRESSURE,
            rule::RETRACT_FREQUENT,
            rule::OOM_PREFILL,
            rule::OOM_DECODE,
            rule::MEM_HEADROOM_HIGH,
            rule::MEM_HEADROOM_LOW,
        ] {
            assert!(kb.rule(id).is_some(), "shipped rules lack {id}");
        }
    }
}
