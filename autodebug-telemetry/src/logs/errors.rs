//! Lines that mean the engine failed: out of memory, rejected arguments, faults. The table that
//! classifies them is the core's ([`autodebug_core::failure::classify_line`]), so an error signal
//! and a failed deploy's root cause name the same class.

use autodebug_core::canonical;
use autodebug_core::failure::{FailureClass, classify_line};

use super::collector::Collector;

/// Reports an error signal `engine.error.<class>` when `text` is one of the lines that end a run.
pub(crate) fn read(text: &str, collector: &mut Collector) {
    if is_shutdown(text) {
        collector.shutting_down = true;
    }
    let Some((class, _flag)) = classify_line(text) else { return };
    // Once the server was asked to stop, a dead engine is the stop's doing, not a failure.
    if collector.shutting_down && class == FailureClass::Crashed {
        return;
    }
    collector.error(class.as_str(), text, canonical::ENGINE_ERROR);
}

/// vLLM's `[shutdown] API server: shutdown triggered`, uvicorn's `Shutting down`.
fn is_shutdown(text: &str) -> bool {
    text.contains("shutdown triggered") || text.contains("INFO:     Shutting down")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(lines: &[&str]) -> Vec<String> {
        let mut collector = Collector::default();
        for line in lines {
            read(line, &mut collector);
        }
        collector.finish().into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn recognizes_fatal_lines_only() {
        let found = classes(&[
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
            "RuntimeError: CUDA error: an illegal memory access was encountered",
            "launch_server.py: error: unrecognized arguments: --foo 1",
            "usage: launch_server.py [-h]\nlaunch_server.py: error: argument --tp-size: invalid int value: 'x'",
            "error: invalid argument: --bogus",
            "[2026-03-24 20:40:00] Decode batch, #running-req: 1, token usage: 0.00",
            "INFO: the error rate is fine",
        ]);
        assert_eq!(
            found,
            [
                "engine.error.out_of_memory",
                "engine.error.crashed",
                "engine.error.unknown_flag",
                "engine.error.invalid_value",
                "engine.error.unknown_flag"
            ]
        );
    }

    #[test]
    fn a_dead_engine_after_a_requested_shutdown_is_not_an_error() {
        let found = classes(&[
            "(APIServer pid=1) INFO 12-06 12:28:23 [launcher.py:254] [shutdown] API server: shutdown triggered",
            "(APIServer pid=1) ERROR 12-06 12:28:23 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.",
        ]);
        assert!(found.is_empty(), "{found:?}");
        let found = classes(&[
            "(APIServer pid=1) ERROR 12-06 12:28:23 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.",
        ]);
        assert_eq!(found, ["engine.error.crashed"]);
    }
}
