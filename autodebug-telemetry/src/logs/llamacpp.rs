//! llama.cpp `llama-server`: slot configuration and compute threads at startup and the
//! per-request `print_timing` lines (prompt eval and eval, ms per token and tokens per second).

use autodebug_core::canonical;

use super::collector::{Collector, Reduce};
use super::number_after;

pub(crate) fn read(text: &str, in_window: bool, collector: &mut Collector) {
    if text.contains("n_slots =") {
        if let Some(slots) = number_after(text, "n_slots =") {
            collector.startup("llamacpp.log.n_slots", slots, "slots", None, text);
        }
        if let Some(ctx) = number_after(text, "n_ctx_slot =") {
            collector.startup("llamacpp.log.n_ctx_slot", ctx, "tokens", None, text);
        }
        return;
    }
    // `init: llama threadpool init, n_threads = 2`: the threads it computes with, `--threads`
    // resolved (its default picks the machine's cores).
    if text.contains("threadpool init") {
        if let Some(threads) = number_after(text, "n_threads =") {
            collector.startup("llamacpp.log.n_threads", threads, "threads", Some(canonical::ENGINE_THREADS), text);
        }
        return;
    }
    if !in_window || !text.contains("print_timing") {
        return;
    }
    // `prompt eval time =  130.68 ms /  38 tokens ( 3.44 ms per token, 290.78 tokens per second)`
    // `       eval time = 1175.67 ms / 128 tokens ( 9.26 ms per token, 108.02 tokens per second)`
    let (prefix, tokens_canonical, per_token_canonical) = if text.contains("prompt eval time =") {
        ("llamacpp.log.prompt_eval", canonical::PROMPT_TOKENS, None)
    } else if text.contains("eval time =") {
        ("llamacpp.log.eval", canonical::GENERATION_TOKENS, Some(canonical::ITL_S))
    } else {
        return;
    };
    let Some(ms) = number_after(text, "time =") else { return };
    let Some(tokens) = number_after(text, "ms /") else { return };
    collector.observe(&format!("{prefix}.tokens"), tokens, "tokens", Reduce::Sum, Some(tokens_canonical), text);
    collector.observe(&format!("{prefix}.requests"), 1.0, "requests", Reduce::Count, None, text);
    if tokens > 0.0 {
        // Weighted by tokens: total ms / total tokens across the window's requests.
        collector.observe_weighted(
            &format!("{prefix}.ms_per_token"),
            ms / tokens,
            tokens,
            "ms",
            Reduce::Mean,
            None,
            text,
        );
        if let Some(canonical) = per_token_canonical {
            collector.observe_weighted(
                &format!("{prefix}.s_per_token"),
                ms / tokens / 1e3,
                tokens,
                "s",
                Reduce::Mean,
                Some(canonical),
                text,
            );
        }
    }
    if let Some(rate) = number_after(text, "ms per token,") {
        let canonical = per_token_canonical.map(|_| canonical::GEN_THROUGHPUT);
        collector.observe(&format!("{prefix}.tokens_per_second"), rate, "tok/s", Reduce::Mean, canonical, text);
    }
}
