//! Lines that mean the engine failed: out of memory, CUDA faults, rejected arguments.

use autodebug_core::canonical;

use super::collector::Collector;

/// `(class, what the line contains)`, most specific first; the first match names the class.
const PATTERNS: &[(&str, &str)] = &[
    ("cuda_out_of_memory", "CUDA out of memory"),
    ("cuda_out_of_memory", "OutOfMemoryError"),
    ("illegal_memory_access", "illegal memory access"),
    ("cuda_error", "CUDA error"),
    ("unrecognized_arguments", "unrecognized arguments"),
    ("not_enough_memory", "Not enough memory"),
    ("kv_cache_too_small", "larger than the maximum number of tokens that can be stored in KV cache"),
];

/// Reports an error class when `text` is one of the lines that end a run.
pub(crate) fn read(text: &str, collector: &mut Collector) {
    if let Some((class, _)) = PATTERNS.iter().find(|(_, needle)| text.contains(needle)) {
        collector.error(class, text, canonical::ENGINE_ERROR);
        return;
    }
    if is_argparse_error(text) {
        collector.error("invalid_arguments", text, canonical::ENGINE_ERROR);
        return;
    }
    // The last line of a Python traceback: `ValueError: ...`, `RuntimeError: ...`.
    let trimmed = text.trim_start();
    for exception in ["ValueError:", "RuntimeError:", "AssertionError:", "torch.OutOfMemoryError:"] {
        if trimmed.starts_with(exception) {
            collector.error("python_exception", text, canonical::ENGINE_ERROR);
            return;
        }
    }
}

/// argparse and llama.cpp print `prog: error: ...` or `error: ...` before exiting.
fn is_argparse_error(text: &str) -> bool {
    let trimmed = text.trim_start();
    trimmed.starts_with("error: ")
        || text.find(": error: ").is_some_and(|i| !text[..i].contains(' ') || text[..i].ends_with(".py"))
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
                "engine.error.cuda_out_of_memory",
                "engine.error.illegal_memory_access",
                "engine.error.unrecognized_arguments",
                "engine.error.invalid_arguments",
                "engine.error.invalid_arguments"
            ]
        );
    }
}
