//! The engine launch command inside a dstack `commands:` list: finding it, reading its flags,
//! and writing it back with other flags while keeping the user's own words (`$MODEL_ID`,
//! quoting, a trailing `2>&1 | tee log`) exactly as they wrote them.

use autodebug_core::{EngineKind, LaunchFlags, shell_quote};

use crate::template::{FIXED_FLAGS, MODEL_FLAGS, split_shell_words};

/// Shell words that end the engine's argument list (what follows is kept as written).
fn ends_arguments(raw: &str) -> bool {
    matches!(raw, "&&" | "||" | "|" | ";" | "&")
        || raw.starts_with('>')
        || raw.starts_with("2>")
        || raw.starts_with('<')
}

/// One shell word: as written (quotes included) and as the shell would see it.
#[derive(Debug, Clone, PartialEq)]
struct Word {
    raw: String,
    value: String,
}

/// An engine launch command split into what autodebug tunes and what it leaves alone.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchCommand {
    pub engine: EngineKind,
    /// Words up to and including the launcher (`python3 -m sglang.launch_server`,
    /// `vllm serve $MODEL_ID`, `/app/llama-server`), as written.
    prefix: Vec<String>,
    /// `(flag, value)` pairs that stay as written (model, host, port), raw text.
    fixed: Vec<(String, Option<String>)>,
    /// The tunable flags.
    pub flags: LaunchFlags,
    /// Raw text of every tunable value as written, to write it back unchanged.
    raw_values: Vec<(String, String)>,
    /// Everything after the engine's arguments (`2>&1 | tee ...`), as written.
    suffix: String,
    /// The model as the command names it (`$MODEL_ID`, `Qwen/...`), unquoted.
    pub model_arg: Option<String>,
}

/// Which engine a command launches, and how many words its launcher spans.
fn detect(words: &[Word]) -> Option<(EngineKind, usize)> {
    for (i, w) in words.iter().enumerate() {
        let v = w.value.as_str();
        if v == "sglang.launch_server" || v.ends_with("/sglang.launch_server") {
            return Some((EngineKind::Sglang, i + 1));
        }
        if v == "vllm.entrypoints.openai.api_server" {
            return Some((EngineKind::Vllm, i + 1));
        }
        if (v == "vllm" || v.ends_with("/vllm")) && words.get(i + 1).is_some_and(|n| n.value == "serve") {
            // `vllm serve MODEL`: the positional model belongs to the launcher.
            let has_model = words.get(i + 2).is_some_and(|m| !m.value.starts_with('-') && !ends_arguments(&m.raw));
            return Some((EngineKind::Vllm, i + 2 + usize::from(has_model)));
        }
        if v == "llama-server" || v.ends_with("/llama-server") {
            return Some((EngineKind::LlamaCpp, i + 1));
        }
    }
    None
}

/// Splits a command into words, keeping each word's raw text.
fn words(command: &str) -> Result<Vec<Word>, String> {
    let mut out = Vec::new();
    let mut raw = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let flush = |raw: &mut String, out: &mut Vec<Word>| -> Result<(), String> {
        if raw.is_empty() {
            return Ok(());
        }
        let value = split_shell_words(raw)?.join(" ");
        out.push(Word { raw: std::mem::take(raw), value });
        Ok(())
    };
    for c in command.chars() {
        if escaped {
            raw.push(c);
            escaped = false;
            continue;
        }
        match (quote, c) {
            (None, c) if c.is_whitespace() => flush(&mut raw, &mut out)?,
            (None, '\\') | (Some('"'), '\\') => {
                raw.push(c);
                escaped = true;
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                raw.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                raw.push(c);
            }
            (_, c) => raw.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    flush(&mut raw, &mut out)?;
    Ok(out)
}

impl LaunchCommand {
    /// Parses `command` when it launches a known engine; `Ok(None)` when it does not.
    pub fn parse(command: &str) -> Result<Option<Self>, String> {
        let words = words(command)?;
        let Some((engine, launcher_len)) = detect(&words) else {
            return Ok(None);
        };
        let prefix: Vec<String> = words[..launcher_len].iter().map(|w| w.raw.clone()).collect();
        let mut model_arg = match engine {
            EngineKind::Vllm if launcher_len >= 3 && words[launcher_len - 2].value == "serve" => {
                Some(words[launcher_len - 1].value.clone())
            }
            _ => None,
        };
        let mut fixed = Vec::new();
        let mut flags = LaunchFlags::new();
        let mut raw_values = Vec::new();
        let mut i = launcher_len;
        let mut suffix_start = words.len();
        while i < words.len() {
            let word = &words[i];
            if ends_arguments(&word.raw) {
                suffix_start = i;
                break;
            }
            if !word.value.starts_with('-') {
                return Err(format!("unexpected argument `{}` in the {engine} command: expected a flag", word.raw));
            }
            let (name, value, consumed) = match word.value.split_once('=') {
                Some((name, value)) => (name.to_string(), Some((value.to_string(), value.to_string())), 1),
                None => match words.get(i + 1) {
                    Some(next)
                        if !next.value.starts_with("--")
                            && !ends_arguments(&next.raw)
                            && !is_short_flag(&next.value) =>
                    {
                        (word.value.clone(), Some((next.value.clone(), next.raw.clone())), 2)
                    }
                    _ => (word.value.clone(), None, 1),
                },
            };
            if FIXED_FLAGS.contains(&name.as_str()) {
                if MODEL_FLAGS.contains(&name.as_str()) && model_arg.is_none() {
                    model_arg = value.as_ref().map(|(v, _)| v.clone());
                }
                fixed.push((word.raw.clone(), if consumed == 2 { value.map(|(_, raw)| raw) } else { None }));
            } else {
                if let Some((value, raw)) = &value {
                    raw_values.push((value.clone(), raw.clone()));
                }
                flags.set(&name, value.map(|(v, _)| v));
            }
            i += consumed;
        }
        let suffix = words[suffix_start..].iter().map(|w| w.raw.as_str()).collect::<Vec<_>>().join(" ");
        Ok(Some(LaunchCommand { engine, prefix, fixed, flags, raw_values, suffix, model_arg }))
    }

    /// A fresh command for `engine` serving `$MODEL_ID` on `port`.
    pub fn template(engine: EngineKind, port: u16) -> Self {
        let (prefix, fixed): (&[&str], Vec<(&str, &str)>) = match engine {
            EngineKind::Sglang => (&["python3", "-m", "sglang.launch_server"], vec![("--model-path", "$MODEL_ID")]),
            EngineKind::Vllm => (&["vllm", "serve", "$MODEL_ID"], Vec::new()),
            EngineKind::LlamaCpp => (&["/app/llama-server"], vec![("-hf", "$MODEL_ID")]),
        };
        let port = port.to_string();
        let mut fixed: Vec<(String, Option<String>)> =
            fixed.into_iter().map(|(f, v)| (f.to_string(), Some(v.to_string()))).collect();
        fixed.push(("--host".into(), Some("0.0.0.0".into())));
        fixed.push(("--port".into(), Some(port)));
        LaunchCommand {
            engine,
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            fixed,
            flags: LaunchFlags::new(),
            raw_values: Vec::new(),
            suffix: String::new(),
            model_arg: Some("$MODEL_ID".into()),
        }
    }

    /// The command line with `flags` in place of the tunable flags.
    pub fn render(&self, flags: &LaunchFlags) -> String {
        let mut out: Vec<String> = self.prefix.clone();
        for (flag, value) in &self.fixed {
            out.push(flag.clone());
            out.extend(value.clone());
        }
        for (name, value) in flags.iter() {
            // A flag the plan may set is never one the file fixes (model, host, port).
            if FIXED_FLAGS.contains(&name) {
                continue;
            }
            out.push(shell_quote(name));
            if let Some(value) = value {
                let raw = self.raw_values.iter().find(|(v, _)| v == value).map(|(_, raw)| raw.clone());
                out.push(raw.unwrap_or_else(|| shell_quote(value)));
            }
        }
        if !self.suffix.is_empty() {
            out.push(self.suffix.clone());
        }
        out.join(" ")
    }
}

/// `-b`, `-np` style flags (llama.cpp) as opposed to negative numbers such as `-1`.
fn is_short_flag(word: &str) -> bool {
    word.starts_with('-') && word.chars().nth(1).is_some_and(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sglang_command_splits_fixed_and_tunable_flags() {
        let text = "python3 -m sglang.launch_server --model-path $MODEL_ID --host 0.0.0.0 --port 8000 --mem-fraction-static 0.85 --enable-mixed-chunk --schedule-policy lpm";
        let cmd = LaunchCommand::parse(text).unwrap().unwrap();
        assert_eq!(cmd.engine, EngineKind::Sglang);
        assert_eq!(cmd.model_arg.as_deref(), Some("$MODEL_ID"));
        assert_eq!(
            cmd.flags.to_args(),
            ["--mem-fraction-static", "0.85", "--enable-mixed-chunk", "--schedule-policy", "lpm"]
        );
        assert_eq!(cmd.render(&cmd.flags), text, "an unchanged plan must give back the user's own command");
        let mut changed = cmd.flags.clone();
        changed.set("--schedule-policy", Some("fcfs"));
        changed.remove("--enable-mixed-chunk");
        changed.set("--chunked-prefill-size", Some("4096"));
        assert_eq!(
            cmd.render(&changed),
            "python3 -m sglang.launch_server --model-path $MODEL_ID --host 0.0.0.0 --port 8000 --mem-fraction-static 0.85 --schedule-policy fcfs --chunked-prefill-size 4096"
        );
    }

    #[test]
    fn vllm_positional_model_and_shell_suffix_are_kept() {
        let text = "vllm serve \"$MODEL_ID\" --max-num-seqs 64 --port 8000 2>&1 | tee /tmp/vllm.log";
        let cmd = LaunchCommand::parse(text).unwrap().unwrap();
        assert_eq!(cmd.engine, EngineKind::Vllm);
        assert_eq!(cmd.model_arg.as_deref(), Some("$MODEL_ID"));
        assert_eq!(cmd.flags.to_args(), ["--max-num-seqs", "64"]);
        assert_eq!(
            cmd.render(&cmd.flags),
            "vllm serve \"$MODEL_ID\" --port 8000 --max-num-seqs 64 2>&1 | tee /tmp/vllm.log"
        );
    }

    #[test]
    fn llama_server_short_flags() {
        let cmd = LaunchCommand::parse("/app/llama-server -m /models/smol.gguf -np 4 -c 4096 --cont-batching")
            .unwrap()
            .unwrap();
        assert_eq!(cmd.engine, EngineKind::LlamaCpp);
        assert_eq!(cmd.model_arg.as_deref(), Some("/models/smol.gguf"));
        assert_eq!(cmd.flags.to_args(), ["-np", "4", "-c", "4096", "--cont-batching"]);
    }

    #[test]
    fn other_commands_are_not_engines() {
        assert_eq!(LaunchCommand::parse("pip install flashinfer").unwrap(), None);
        assert!(LaunchCommand::parse("python3 -m sglang.launch_server --model 'unterminated").is_err());
    }

    #[test]
    fn template_renders_a_runnable_command() {
        let mut flags = LaunchFlags::new();
        flags.set("--tp-size", Some("2"));
        let line = LaunchCommand::template(EngineKind::Sglang, 8000).render(&flags);
        assert_eq!(
            line,
            "python3 -m sglang.launch_server --model-path $MODEL_ID --host 0.0.0.0 --port 8000 --tp-size 2"
        );
    }
}
