//! dstack service configurations: the user's YAML in, a [`ServiceSpec`] out
//! ([`spec_from_yaml`]), and back again with only the planned knobs changed ([`render`]).

use autodebug_core::{Error, Result, ServiceSpec};
use serde_yaml::{Mapping, Value};

use super::command::LaunchCommand;
pub use crate::template::default_image;

/// The container port used when neither the base file nor the command names one.
pub const DEFAULT_PORT: u16 = 8000;

fn key(name: &str) -> Value {
    Value::String(name.to_string())
}

/// Strings that are whole numbers go back as numbers (`cpu: 2`), the rest as strings.
fn scalar(text: &str) -> Value {
    match text.parse::<u64>() {
        Ok(n) => Value::Number(n.into()),
        Err(_) => Value::String(text.to_string()),
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Env entries in either dstack form (`- A=b` / `- A` list, or `A: b` mapping), in order;
/// the value is `None` for a variable the client fills from its own environment.
pub fn env_entries(env: Option<&Value>) -> Vec<(String, Option<String>)> {
    match env {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(scalar_text)
            .map(|item| match item.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (item, None),
            })
            .collect(),
        Some(Value::Mapping(map)) => map
            .iter()
            .filter_map(|(k, v)| Some((scalar_text(k)?, if v.is_null() { None } else { scalar_text(v) })))
            .collect(),
        _ => Vec::new(),
    }
}

/// Index of the engine launch command in `commands`, and that command parsed.
fn find_launch(commands: &[Value], location: &str) -> Result<Option<(usize, LaunchCommand)>> {
    for (i, command) in commands.iter().enumerate() {
        let Some(text) = command.as_str() else {
            continue;
        };
        match LaunchCommand::parse(text) {
            Ok(Some(launch)) => return Ok(Some((i, launch))),
            Ok(None) => {}
            Err(why) => return Err(Error::config(format!("{location}: commands[{i}]"), why)),
        }
    }
    Ok(None)
}

/// Reads a dstack service configuration into a [`ServiceSpec`]: the engine and its flags from
/// the launch command (`sglang.launch_server`, `vllm serve`, `llama-server`), image, resources
/// and env from their fields, and the whole file as `base`. `location` names the file in errors.
pub fn spec_from_yaml(text: &str, location: &str) -> Result<ServiceSpec> {
    let base: Value =
        serde_yaml::from_str(text).map_err(|e| Error::config(location, format!("not valid YAML: {e}")))?;
    let Some(map) = base.as_mapping() else {
        return Err(Error::config(location, "expected a dstack configuration (a YAML mapping with `type: service`)"));
    };
    match map.get("type").and_then(Value::as_str) {
        Some("service") => {}
        other => {
            return Err(Error::config(
                format!("{location}: type"),
                format!(
                    "expected `type: service`, found {}; autodebug tunes dstack services",
                    other.unwrap_or("nothing")
                ),
            ));
        }
    }
    let commands = map.get("commands").and_then(Value::as_sequence).cloned().unwrap_or_default();
    let Some((_, launch)) = find_launch(&commands, location)? else {
        return Err(Error::config(
            format!("{location}: commands"),
            "no engine launch command found: expected one running `python3 -m sglang.launch_server`, `vllm serve` or `llama-server`",
        ));
    };
    let env = env_entries(map.get("env"));
    let served_model = match map.get("model") {
        Some(Value::String(name)) => Some(name.clone()),
        Some(Value::Mapping(m)) => m.get("name").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    // `$MODEL_ID` in the command resolves through the file's own env.
    let command_model = launch.model_arg.as_deref().map(|arg| {
        let var = arg.trim_start_matches('$').trim_start_matches('{').trim_end_matches('}');
        if arg.starts_with('$') {
            env.iter().find(|(n, _)| n == var).and_then(|(_, v)| v.clone()).unwrap_or_else(|| arg.to_string())
        } else {
            arg.to_string()
        }
    });
    let model = served_model.or(command_model).ok_or_else(|| {
        Error::config(
            format!("{location}: model"),
            "no model: set `model:` or pass --model-path/--model in the command",
        )
    })?;
    let name = map.get("name").and_then(Value::as_str).unwrap_or("autodebug-service").to_string();
    let mut spec = ServiceSpec::new(name, launch.engine, model);
    spec.flags = launch.flags.clone();
    spec.image = map.get("image").and_then(Value::as_str).map(str::to_string);
    if let Some(resources) = map.get("resources").and_then(Value::as_mapping) {
        spec.resources.gpu = resources.get("gpu").and_then(scalar_text);
        spec.resources.cpu = resources.get("cpu").and_then(scalar_text);
        spec.resources.memory = resources.get("memory").and_then(scalar_text);
    }
    spec.env = env.into_iter().filter_map(|(n, v)| Some((n, v?))).collect();
    spec.base = base;
    Ok(spec)
}

/// The complete dstack configuration for `spec`: its `base` (or `fallback_base`, or a built-in
/// service template) with the name, image, resources, env and launch flags of `spec`.
/// Every other field of the user's file is kept as it was.
pub fn render(spec: &ServiceSpec, fallback_base: &Value) -> Result<Mapping> {
    let base = if spec.base.is_null() { fallback_base } else { &spec.base };
    let location = format!("service `{}` base configuration", spec.name);
    let mut map = match base {
        Value::Mapping(m) => m.clone(),
        Value::Null => Mapping::new(),
        _ => {
            return Err(Error::config(location, "the base configuration is not a YAML mapping"));
        }
    };
    if !map.contains_key("type") {
        map.insert(key("type"), key("service"));
    }
    map.insert(key("name"), Value::String(spec.name.clone()));

    let image = spec.image.clone().or_else(|| map.get("image").and_then(Value::as_str).map(str::to_string));
    map.insert(key("image"), Value::String(image.unwrap_or_else(|| default_image(spec.engine).to_string())));

    let port = match map.get("port") {
        Some(port) => port.clone(),
        None => Value::Number(DEFAULT_PORT.into()),
    };
    map.insert(key("port"), port.clone());

    // env: the user's entries in their order and form, planned values replacing or appended.
    let mut env = env_entries(map.get("env"));
    for (name, value) in &spec.launch_env() {
        match env.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = Some(value.clone()),
            None => env.push((name.clone(), Some(value.clone()))),
        }
    }
    let mut commands = map.get("commands").and_then(Value::as_sequence).cloned().unwrap_or_default();
    let launch = find_launch(&commands, &location)?;
    if launch.is_none() && !env.iter().any(|(n, _)| n == "MODEL_ID") {
        env.insert(0, ("MODEL_ID".into(), Some(spec.model.clone())));
    }
    let env_as_mapping = matches!(map.get("env"), Some(Value::Mapping(_)));
    if !env.is_empty() {
        let value = if env_as_mapping {
            Value::Mapping(
                env.iter()
                    .map(|(n, v)| (key(n), v.as_ref().map(|v| Value::String(v.clone())).unwrap_or(Value::Null)))
                    .collect(),
            )
        } else {
            Value::Sequence(
                env.iter()
                    .map(|(n, v)| {
                        Value::String(match v {
                            Some(v) => format!("{n}={v}"),
                            None => n.clone(),
                        })
                    })
                    .collect(),
            )
        };
        map.insert(key("env"), value);
    }

    match launch {
        Some((index, command)) => {
            if command.engine != spec.engine {
                return Err(Error::config(
                    format!("{location}: commands[{index}]"),
                    format!("the command launches {} but the spec is for {}", command.engine, spec.engine),
                ));
            }
            commands[index] = Value::String(command.render(&spec.flags));
        }
        None => {
            let port = port.as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(DEFAULT_PORT);
            commands.push(Value::String(LaunchCommand::template(spec.engine, port).render(&spec.flags)));
        }
    }
    map.insert(key("commands"), Value::Sequence(commands));

    if !map.contains_key("model") {
        map.insert(key("model"), Value::String(spec.model.clone()));
    }

    let mut resources = match map.get("resources") {
        Some(Value::Mapping(r)) => r.clone(),
        _ => Mapping::new(),
    };
    for (field, value) in
        [("gpu", &spec.resources.gpu), ("cpu", &spec.resources.cpu), ("memory", &spec.resources.memory)]
    {
        if let Some(value) = value {
            resources.insert(key(field), scalar(value));
        }
    }
    if !resources.is_empty() {
        map.insert(key("resources"), Value::Mapping(resources));
    }
    Ok(map)
}

/// The YAML text of a rendered configuration, headed by a comment saying where it came from.
pub fn to_yaml(spec: &ServiceSpec, configuration: &Mapping) -> Result<String> {
    let body = serde_yaml::to_string(configuration)
        .map_err(|e| Error::config(format!("service `{}`", spec.name), format!("cannot write YAML: {e}")))?;
    Ok(format!(
        "# dstack service configuration rendered by autodebug: {} {} ({})\n# apply with: dstack apply -f <this file>\n{body}",
        spec.engine,
        spec.model,
        if spec.flags.is_empty() { "engine defaults".to_string() } else { spec.flags.to_command_line() }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebug_core::EngineKind;

    const BASE: &str = "type: service\nname: qwen\nimage: lmsysorg/sglang:latest\nenv:\n  - MODEL_ID=Qwen/Qwen1.5-0.5B-Chat\n  - HF_TOKEN\ncommands:\n  - pip list\n  - python3 -m sglang.launch_server --model-path $MODEL_ID --port 8000 --schedule-policy lpm\nport: 8000\nresources:\n  gpu: H100:1\n  disk: 100GB\nprobes:\n  - {type: http, url: /health, ready_after: 2}\nspot_policy: auto\n";

    #[test]
    fn base_file_reads_into_a_spec() {
        let spec = spec_from_yaml(BASE, "base.yml").unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.engine, spec.model.as_str()),
            ("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat")
        );
        assert_eq!(spec.flags.to_args(), ["--schedule-policy", "lpm"]);
        assert_eq!(spec.resources.gpu.as_deref(), Some("H100:1"));
        assert_eq!(spec.env, [("MODEL_ID".to_string(), "Qwen/Qwen1.5-0.5B-Chat".to_string())]);
    }

    #[test]
    fn render_changes_only_the_planned_knobs() {
        let mut spec = spec_from_yaml(BASE, "base.yml").unwrap();
        spec.flags.set("--schedule-policy", Some("fcfs"));
        spec.flags.set("--cuda-graph-max-bs", Some("64"));
        spec.resources.gpu = Some("H100:80GB:2".into());
        let out = render(&spec, &Value::Null).unwrap();
        let base: Mapping = serde_yaml::from_str(BASE).unwrap();
        for field in ["type", "name", "image", "env", "port", "probes", "spot_policy"] {
            assert_eq!(out.get(field), base.get(field), "field `{field}` changed");
        }
        let commands = out.get("commands").and_then(Value::as_sequence).unwrap();
        assert_eq!(commands[0], base["commands"][0]);
        assert_eq!(
            commands[1].as_str().unwrap(),
            "python3 -m sglang.launch_server --model-path $MODEL_ID --port 8000 --schedule-policy fcfs --cuda-graph-max-bs 64"
        );
        assert_eq!(out["resources"]["gpu"].as_str(), Some("H100:80GB:2"));
        assert_eq!(out["resources"]["disk"].as_str(), Some("100GB"));
    }

    #[test]
    fn spec_without_base_gets_a_complete_service() {
        let spec = ServiceSpec::new("sim", EngineKind::Vllm, "Qwen/Qwen1.5-0.5B-Chat")
            .with_flag("--max-num-seqs", Some("32"))
            .with_gpu("H100:1");
        let out = render(&spec, &Value::Null).unwrap();
        assert_eq!(out["type"].as_str(), Some("service"));
        assert_eq!(out["image"].as_str(), Some("vllm/vllm-openai:latest"));
        assert_eq!(out["env"][0].as_str(), Some("MODEL_ID=Qwen/Qwen1.5-0.5B-Chat"));
        assert_eq!(
            out["commands"][0].as_str(),
            Some("vllm serve $MODEL_ID --host 0.0.0.0 --port 8000 --max-num-seqs 32")
        );
        assert_eq!(out["model"].as_str(), Some("Qwen/Qwen1.5-0.5B-Chat"));
        let back = spec_from_yaml(&serde_yaml::to_string(&out).unwrap(), "rendered").unwrap();
        assert_eq!((back.engine, back.flags, back.model), (spec.engine, spec.flags, spec.model));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = spec_from_yaml("type: task\nname: x\n", "x.yml").unwrap_err().to_string();
        assert!(err.contains("x.yml: type") && err.contains("service"), "{err}");
        let err = spec_from_yaml("type: service\ncommands: [echo hi]\n", "y.yml").unwrap_err().to_string();
        assert!(err.contains("y.yml: commands") && err.contains("sglang"), "{err}");
    }
}
