//! Engine logs: the facts SGLang, vLLM and llama.cpp print (KV pool size and free memory at
//! startup, batch statistics while serving, preemptions, per-request timings) and the errors
//! that end a run (CUDA out of memory, bad arguments), as citable signals.
//!
//! Startup lines count whenever they were printed; per-request and per-batch lines only inside
//! the window, when one is given. Every signal quotes the line it came from in its `detail`.

pub mod capacity;
mod collector;
mod errors;
mod llamacpp;
mod sglang;
mod vllm;

use autodebug_core::{EngineKind, LogLine, Target, TelemetrySnapshot, TelemetrySource, TimeWindow, async_trait};

use collector::Collector;

/// The telemetry source name log signals carry.
pub const SOURCE: &str = "logs";

/// Parses engine log lines into a snapshot.
///
/// ```
/// use autodebug_core::{EngineKind, LogLine, canonical};
/// use autodebug_telemetry::parse_engine_logs;
/// let lines = [LogLine { time_ns: 0, text: "[2026-03-24 20:40:00] max_total_num_tokens=161721, chunked_prefill_size=8192, max_prefill_tokens=16384, max_running_requests=4097, context_len=40960, available_gpu_mem=13.50 GB".into() }];
/// let snapshot = parse_engine_logs(EngineKind::Sglang, &lines, None);
/// assert_eq!(snapshot.canonical(canonical::MAX_TOTAL_TOKENS).unwrap().as_f64(), Some(161721.0));
/// assert_eq!(snapshot.canonical(canonical::AVAILABLE_GPU_MEM_GB).unwrap().as_f64(), Some(13.5));
/// ```
pub fn parse_engine_logs(engine: EngineKind, lines: &[LogLine], window: Option<TimeWindow>) -> TelemetrySnapshot {
    let mut collector = Collector::default();
    for line in lines {
        // A backend may hand over several physical lines as one record.
        for text in line.text.lines() {
            let text = text.trim_end();
            if text.is_empty() {
                continue;
            }
            let in_window = window.is_none_or(|w| w.contains(line.time_ns));
            errors::read(text, &mut collector);
            match engine {
                EngineKind::Sglang => sglang::read(text, in_window, &mut collector),
                EngineKind::Vllm => vllm::read(text, in_window, &mut collector),
                EngineKind::LlamaCpp => llamacpp::read(text, in_window, &mut collector),
            }
        }
    }
    let mut snapshot = TelemetrySnapshot::new(SOURCE, window);
    snapshot.signals = collector.finish();
    if lines.is_empty() {
        snapshot.warnings.push("no log lines to read".to_string());
    }
    snapshot
}

/// Reads the service's logs that the loop already collected (`Target::logs`); makes no request.
///
/// ```
/// use autodebug_telemetry::EngineLogSource;
/// assert_eq!(autodebug_core::TelemetrySource::name(&EngineLogSource::new()), "logs");
/// ```
#[derive(Debug, Clone, Default)]
pub struct EngineLogSource {
    engine: Option<EngineKind>,
}

impl EngineLogSource {
    /// Reads the engine from each deployment's spec.
    pub fn new() -> Self {
        EngineLogSource::default()
    }

    /// Parses as `engine` whatever the deployment says (for a custom image of another engine).
    pub fn for_engine(engine: EngineKind) -> Self {
        EngineLogSource { engine: Some(engine) }
    }
}

#[async_trait]
impl TelemetrySource for EngineLogSource {
    fn name(&self) -> &str {
        SOURCE
    }

    async fn fetch(&self, target: &Target<'_>, window: TimeWindow) -> autodebug_core::Result<TelemetrySnapshot> {
        let engine = self.engine.unwrap_or(target.deployment.spec.engine);
        Ok(parse_engine_logs(engine, target.logs, Some(window)))
    }
}

/// The number that follows `key` in `text` (`#new-token: 12`, `avail mem=74.33 GB`,
/// `GPU KV cache size: 123,456 tokens`), thousands separators allowed. Digits too many for an
/// f64 (`9` x 400 reads as infinity) are no number.
pub(crate) fn number_after(text: &str, key: &str) -> Option<f64> {
    let start = text.find(key)? + key.len();
    let rest = text[start..].trim_start_matches([' ', '=', ':', '\t']);
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || c == ',' || (i == 0 && (c == '-' || c == '+'))))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    let token = rest[..end].trim_end_matches([',', '.']).replace(',', "");
    token.parse().ok().filter(|v: &f64| v.is_finite())
}

/// The word that follows `key` (`cuda graph: True` → `True`).
pub(crate) fn word_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let rest = text[start..].trim_start_matches([' ', '=', ':']);
    let end = rest.find([' ', ',', ';']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_after_keys() {
        assert_eq!(number_after("GPU KV cache size: 123,456 tokens", "GPU KV cache size:"), Some(123456.0));
        assert_eq!(number_after("avail mem=74.33 GB, mem usage=0.98 GB.", "mem usage="), Some(0.98));
        assert_eq!(number_after("#queue-req: 0", "#queue-req:"), Some(0.0));
        assert_eq!(number_after("took 3.2 seconds.", "took"), Some(3.2));
        assert_eq!(number_after("no number here", "here"), None);
        assert_eq!(word_after("cuda graph: True, gen", "cuda graph:"), Some("True"));
    }
}
