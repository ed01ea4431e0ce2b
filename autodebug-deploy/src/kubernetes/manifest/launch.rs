//! The engine launch inside a container (`command` + `args`): finding it, reading its flags, writing them back.

use autodebug_core::{EngineKind, Error, LaunchFlags, Result, ServiceSpec};
use serde_yaml::{Mapping, Value};

use super::ENGINE_CONTAINER;
use super::yaml::{key, scalar_text};
use crate::template::{FIXED_FLAGS, MODEL_FLAGS};

/// An engine launch inside a container's `command` + `args`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Launch {
    /// `None` when the image's entrypoint starts the engine and the args are flags only.
    pub(super) engine: Option<EngineKind>,
    /// Words of the launcher (`python3 -m sglang.launch_server`, `vllm serve MODEL`).
    pub(super) launcher_len: usize,
    /// Flags that stay as written (model, host, port), as their original words.
    pub(super) fixed: Vec<String>,
    pub(super) flags: LaunchFlags,
    pub(super) model: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) served_model: Option<String>,
}

fn is_flag(word: &str) -> bool {
    word.starts_with("--") || (word.starts_with('-') && word[1..].starts_with(|c: char| c.is_ascii_alphabetic()))
}

fn detect(argv: &[String]) -> Option<(EngineKind, usize)> {
    for (i, word) in argv.iter().enumerate() {
        let program = word.rsplit('/').next().unwrap_or(word);
        if word == "sglang.launch_server" {
            return Some((EngineKind::Sglang, i + 1));
        }
        if word == "vllm.entrypoints.openai.api_server" {
            return Some((EngineKind::Vllm, i + 1));
        }
        if program == "vllm" && argv.get(i + 1).is_some_and(|w| w == "serve") {
            // `vllm serve MODEL`: the positional model belongs to the launcher.
            let has_model = argv.get(i + 2).is_some_and(|m| !is_flag(m));
            return Some((EngineKind::Vllm, i + 2 + usize::from(has_model)));
        }
        if program == "llama-server" {
            return Some((EngineKind::LlamaCpp, i + 1));
        }
    }
    None
}

impl Launch {
    /// The launch in `argv`; `entrypoint` says the container sets no `command`, so flags-only
    /// args may feed an engine started by the image. `Ok(None)`: no engine here.
    fn parse(argv: &[String], entrypoint: bool) -> std::result::Result<Option<Launch>, String> {
        let (engine, launcher_len) = match detect(argv) {
            Some((engine, len)) => (Some(engine), len),
            None if entrypoint && argv.first().is_none_or(|w| is_flag(w)) => (None, 0),
            None => return Ok(None),
        };
        let mut launch = Launch {
            engine,
            launcher_len,
            fixed: Vec::new(),
            flags: LaunchFlags::new(),
            model: None,
            port: None,
            served_model: None,
        };
        if engine == Some(EngineKind::Vllm) && launcher_len >= 3 && argv[launcher_len - 2] == "serve" {
            launch.model = Some(argv[launcher_len - 1].clone());
        }
        let mut i = launcher_len;
        while i < argv.len() {
            let word = &argv[i];
            if !is_flag(word) {
                return Err(format!("unexpected argument `{word}`: expected a flag"));
            }
            let (name, value, consumed) = match word.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string()), 1),
                None => match argv.get(i + 1) {
                    Some(next) if !is_flag(next) => (word.clone(), Some(next.clone()), 2),
                    _ => (word.clone(), None, 1),
                },
            };
            if FIXED_FLAGS.contains(&name.as_str()) {
                launch.fixed.extend(argv[i..i + consumed].iter().cloned());
                match name.as_str() {
                    model if MODEL_FLAGS.contains(&model) && launch.model.is_none() => launch.model = value,
                    "--port" => launch.port = value.and_then(|v| v.parse().ok()),
                    "--served-model-name" | "--alias" => launch.served_model = value,
                    _ => {}
                }
            } else {
                launch.flags.set(&name, value);
            }
            i += consumed;
        }
        Ok(Some(launch))
    }

    fn argv(&self, original: &[String], flags: &LaunchFlags) -> Vec<String> {
        let mut out = original[..self.launcher_len].to_vec();
        out.extend(self.fixed.iter().cloned());
        out.extend(flags.to_args());
        out
    }
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value.and_then(Value::as_sequence).map(|s| s.iter().filter_map(scalar_text).collect()).unwrap_or_default()
}

fn container_argv(container: &Value) -> (Vec<String>, Vec<String>) {
    (string_list(container.get("command")), string_list(container.get("args")))
}

fn is_shell(command: &[String]) -> bool {
    command.first().is_some_and(|p| matches!(p.rsplit('/').next(), Some("sh" | "bash")))
        && command.iter().any(|w| w == "-c")
}

/// The engine container: the first one launching a known engine, else the one named
/// `engine` or the only one, started by its image's entrypoint.
pub(super) fn find_engine(containers: &[Value], location: &str) -> Result<(usize, Launch)> {
    let mut candidates = Vec::new();
    for (index, container) in containers.iter().enumerate() {
        let (command, args) = container_argv(container);
        let where_ = || format!("{location}: containers[{index}]");
        if is_shell(&command)
            && args
                .iter()
                .chain(&command)
                .any(|w| detect(&w.split_whitespace().map(String::from).collect::<Vec<_>>()).is_some())
        {
            return Err(Error::config(
                where_(),
                "the engine runs through a shell (`sh -c`); autodebug rewrites exec-form commands only: \
                 write `command: [python3, -m, sglang.launch_server]` (or `[vllm, serve, MODEL]`) and the flags as `args`",
            ));
        }
        let argv: Vec<String> = command.iter().chain(&args).cloned().collect();
        match Launch::parse(&argv, command.is_empty()) {
            Ok(Some(launch)) if launch.engine.is_some() => return Ok((index, launch)),
            Ok(Some(launch)) => candidates.push((index, launch)),
            Ok(None) => {}
            Err(why) => {
                if detect(&argv).is_some() {
                    return Err(Error::config(format!("{}.args", where_()), why));
                }
            }
        }
    }
    let by_name = candidates
        .iter()
        .position(|(i, _)| containers[*i].get("name").and_then(Value::as_str) == Some(ENGINE_CONTAINER));
    match (by_name, containers.len(), candidates.len()) {
        (Some(pos), _, _) => Ok(candidates.swap_remove(pos)),
        (None, 1, 1) => Ok(candidates.swap_remove(0)),
        _ => Err(Error::config(
            format!("{location}: containers"),
            "no engine container: expected one running `python3 -m sglang.launch_server`, `vllm serve` or \
             `llama-server`, or a container named `engine` whose image starts the engine",
        )),
    }
}

pub(super) fn engine_from_image(image: &str) -> Option<EngineKind> {
    let image = image.to_ascii_lowercase();
    if image.contains("sglang") {
        Some(EngineKind::Sglang)
    } else if image.contains("vllm") {
        Some(EngineKind::Vllm)
    } else if image.contains("llama.cpp") || image.contains("llama-cpp") || image.contains("llamacpp") {
        Some(EngineKind::LlamaCpp)
    } else {
        None
    }
}

/// Puts `spec`'s flags into a base manifest's engine container: into `args` when the launcher
/// fits in `command`, else the whole launch into `command`.
pub(super) fn rewrite_launch(container: &mut Mapping, launch: &Launch, spec: &ServiceSpec) {
    let (command, args) = container_argv(&Value::Mapping(container.clone()));
    let original: Vec<String> = command.iter().chain(&args).cloned().collect();
    let argv = launch.argv(&original, &spec.flags);
    let strings = |words: &[String]| Value::Sequence(words.iter().cloned().map(Value::String).collect());
    if command.len() <= launch.launcher_len {
        let rest = &argv[command.len()..];
        if !rest.is_empty() || container.contains_key("args") {
            container.insert(key("args"), strings(rest));
        }
    } else {
        container.insert(key("command"), strings(&argv));
        container.remove("args");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn launch_splits_fixed_and_tunable_flags() {
        let argv = words(
            "python3 -m sglang.launch_server --model-path Qwen/Q --port 30000 --tp-size 2 --enable-mixed-chunk --mem-fraction-static=0.8",
        );
        let launch = Launch::parse(&argv, false).unwrap().unwrap();
        assert_eq!(launch.engine, Some(EngineKind::Sglang));
        assert_eq!((launch.model.as_deref(), launch.port), (Some("Qwen/Q"), Some(30000)));
        assert_eq!(launch.flags.to_args(), ["--tp-size", "2", "--enable-mixed-chunk", "--mem-fraction-static", "0.8"]);
        let mut flags = launch.flags.clone();
        flags.set("--tp-size", Some("4"));
        assert_eq!(
            launch.argv(&argv, &flags).join(" "),
            "python3 -m sglang.launch_server --model-path Qwen/Q --port 30000 --tp-size 4 --enable-mixed-chunk --mem-fraction-static 0.8"
        );
    }

    #[test]
    fn vllm_positional_model_and_entrypoint_args() {
        let launch = Launch::parse(&words("vllm serve org/m --max-num-seqs 64"), false).unwrap().unwrap();
        assert_eq!((launch.engine, launch.model.as_deref()), (Some(EngineKind::Vllm), Some("org/m")));
        let entry = Launch::parse(&words("--model org/m --gpu-memory-utilization 0.9"), true).unwrap().unwrap();
        assert_eq!((entry.engine, entry.launcher_len), (None, 0));
        assert_eq!(entry.flags.to_args(), ["--gpu-memory-utilization", "0.9"]);
        assert_eq!(Launch::parse(&words("nginx -g daemon"), false).unwrap(), None);
    }
}
