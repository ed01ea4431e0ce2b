//! Kubernetes manifests: the user's multi-document YAML in, a [`ServiceSpec`] out
//! ([`spec_from_yaml`]), and back again with only the planned knobs changed ([`render`]).
//!
//! Without a base manifest the built-in one is a `Deployment` (one replica, `Recreate`, so a new
//! configuration never waits for a GPU its predecessor still holds) running the real engine
//! command from [`engine_command`], plus a `Service` in front of it.

use autodebug_core::{EngineKind, Error, LaunchFlags, Result, ServiceSpec};
use serde::Deserialize as _;
use serde_yaml::{Mapping, Value};

use crate::dstack::default_image;
use crate::template::{CommandTemplate, engine_command, is_env_name, looks_secret};

/// The container port when neither the base manifest nor the command names one.
pub const DEFAULT_PORT: u16 = 8000;
/// Field manager of every server-side apply, and value of [`MANAGED_BY_LABEL`].
pub const MANAGER: &str = "autodebug";
/// The standard label saying which tool manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label carrying the run (service) name; teardown deletes by it.
pub const RUN_LABEL: &str = "autodebug/run";
/// The extended resource NVIDIA's device plugin advertises.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Name of the engine container in the built-in manifest.
pub const ENGINE_CONTAINER: &str = "engine";
/// Pod-template annotation holding the GPU model (`H100`), which no standard label carries.
pub const GPU_ANNOTATION: &str = "autodebug/gpu";

/// Flags that say where the engine finds its model and listens: they belong to the manifest,
/// not to the search space, so they stay as written.
const FIXED_FLAGS: &[&str] = &[
    "--model-path",
    "--model",
    "-m",
    "--host",
    "--port",
    "--served-model-name",
    "-hf",
    "--hf-repo",
    "--alias",
];

/// A persistent volume claim for the model cache, kept across runs so weights download once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCache {
    pub claim_name: String,
    /// Requested size as a Kubernetes quantity (`200Gi`).
    pub size: String,
    pub storage_class: Option<String>,
    /// Where the engine container sees it (default: the Hugging Face cache).
    pub mount_path: String,
}

impl ModelCache {
    pub fn new(size: impl Into<String>) -> Self {
        ModelCache {
            claim_name: "autodebug-model-cache".into(),
            size: size.into(),
            storage_class: None,
            mount_path: "/root/.cache/huggingface".into(),
        }
    }
}

/// What a render needs besides the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Secret that env vars with credential-like names (`HF_TOKEN`) are read from.
    pub secret_name: String,
    /// HTTP path of the readiness probe added when the engine container has none.
    pub health_path: String,
    pub model_cache: Option<ModelCache>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            secret_name: "autodebug-secrets".into(),
            health_path: "/health".into(),
            model_cache: None,
        }
    }
}

/// Rendered manifests and the facts a deployer needs about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The objects, in apply order.
    pub documents: Vec<Value>,
    pub deployment: String,
    pub service: String,
    pub container: String,
    pub service_port: u16,
    /// The model name clients put in requests (`--served-model-name`, else the model).
    pub served_model: String,
    /// The Deployment's own `metadata.namespace`, when the manifest sets one.
    pub namespace: Option<String>,
}

fn key(name: &str) -> Value {
    Value::String(name.to_string())
}

fn text(value: &str) -> Value {
    Value::String(value.to_string())
}

fn mapping(pairs: Vec<(&str, Value)>) -> Value {
    Value::Mapping(pairs.into_iter().map(|(k, v)| (key(k), v)).collect())
}

/// The mapping under `name`, created (or replacing a non-mapping) when needed.
fn child<'a>(map: &'a mut Mapping, name: &str) -> &'a mut Mapping {
    let slot = map
        .entry(key(name))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !slot.is_mapping() {
        *slot = Value::Mapping(Mapping::new());
    }
    match slot {
        Value::Mapping(m) => m,
        _ => unreachable!("just made a mapping"),
    }
}

/// The sequence under `name`, created when needed.
fn child_seq<'a>(map: &'a mut Mapping, name: &str) -> &'a mut Vec<Value> {
    let slot = map
        .entry(key(name))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !slot.is_sequence() {
        *slot = Value::Sequence(Vec::new());
    }
    match slot {
        Value::Sequence(s) => s,
        _ => unreachable!("just made a sequence"),
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

fn kind_of(doc: &Value) -> Option<&str> {
    doc.get("kind").and_then(Value::as_str)
}

fn name_of(doc: &Value) -> Option<&str> {
    doc.get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
}

fn is_object(doc: &Value) -> bool {
    doc.get("apiVersion").is_some_and(Value::is_string)
        && doc.get("kind").is_some_and(Value::is_string)
}

/// The documents of a base manifest held in `ServiceSpec.base`: a sequence of objects, a
/// `kind: List`, or one object. Anything else (nothing, or another platform's file such as a
/// dstack configuration) means the built-in manifests.
fn base_documents(base: &Value) -> Option<Vec<Value>> {
    match base {
        Value::Sequence(items) if !items.is_empty() && items.iter().all(is_object) => {
            Some(items.clone())
        }
        doc if is_object(doc) && kind_of(doc) == Some("List") => doc
            .get("items")
            .and_then(Value::as_sequence)
            .filter(|items| items.iter().all(is_object))
            .cloned(),
        doc if is_object(doc) => Some(vec![doc.clone()]),
        _ => None,
    }
}

/// Reads multi-document YAML into Kubernetes objects (`kind: List` items are flattened).
pub fn parse_documents(text: &str, location: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let where_ = || format!("{location}: document {}", index + 1);
        let value = Value::deserialize(document)
            .map_err(|e| Error::config(where_(), format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        if !is_object(&value) {
            return Err(Error::config(
                where_(),
                "not a Kubernetes object: expected `apiVersion` and `kind`",
            ));
        }
        match base_documents(&value) {
            Some(items) => docs.extend(items),
            None => {
                return Err(Error::config(
                    where_(),
                    "a `kind: List` whose items are not all Kubernetes objects",
                ));
            }
        }
    }
    if docs.is_empty() {
        return Err(Error::config(location, "no Kubernetes objects in the file"));
    }
    Ok(docs)
}

/// An engine launch inside a container's `command` + `args`.
#[derive(Debug, Clone, PartialEq)]
struct Launch {
    /// `None` when the image's entrypoint starts the engine and the args are flags only.
    engine: Option<EngineKind>,
    /// Words of the launcher (`python3 -m sglang.launch_server`, `vllm serve MODEL`).
    launcher_len: usize,
    /// Flags that stay as written (model, host, port), as their original words.
    fixed: Vec<String>,
    flags: LaunchFlags,
    model: Option<String>,
    port: Option<u16>,
    served_model: Option<String>,
}

fn is_flag(word: &str) -> bool {
    word.starts_with("--")
        || (word.starts_with('-') && word[1..].starts_with(|c: char| c.is_ascii_alphabetic()))
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
        if engine == Some(EngineKind::Vllm)
            && launcher_len >= 3
            && argv[launcher_len - 2] == "serve"
        {
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
                    "--model-path" | "--model" | "-m" | "-hf" | "--hf-repo"
                        if launch.model.is_none() =>
                    {
                        launch.model = value;
                    }
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
    value
        .and_then(Value::as_sequence)
        .map(|s| s.iter().filter_map(scalar_text).collect())
        .unwrap_or_default()
}

fn container_argv(container: &Value) -> (Vec<String>, Vec<String>) {
    (
        string_list(container.get("command")),
        string_list(container.get("args")),
    )
}

fn is_shell(command: &[String]) -> bool {
    command
        .first()
        .is_some_and(|p| matches!(p.rsplit('/').next(), Some("sh" | "bash")))
        && command.iter().any(|w| w == "-c")
}

/// The engine container: the first one launching a known engine, else the one named
/// `engine` or the only one, started by its image's entrypoint.
fn find_engine(containers: &[Value], location: &str) -> Result<(usize, Launch)> {
    let mut candidates = Vec::new();
    for (index, container) in containers.iter().enumerate() {
        let (command, args) = container_argv(container);
        let where_ = || format!("{location}: containers[{index}]");
        if is_shell(&command)
            && args.iter().chain(&command).any(|w| {
                detect(&w.split_whitespace().map(String::from).collect::<Vec<_>>()).is_some()
            })
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
    let by_name = candidates.iter().position(|(i, _)| {
        containers[*i].get("name").and_then(Value::as_str) == Some(ENGINE_CONTAINER)
    });
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

fn engine_from_image(image: &str) -> Option<EngineKind> {
    let image = image.to_ascii_lowercase();
    if image.contains("sglang") {
        Some(EngineKind::Sglang)
    } else if image.contains("vllm") {
        Some(EngineKind::Vllm)
    } else if image.contains("llama.cpp")
        || image.contains("llama-cpp")
        || image.contains("llamacpp")
    {
        Some(EngineKind::LlamaCpp)
    } else {
        None
    }
}

fn pod_template(deployment: &Value) -> Option<&Value> {
    deployment.get("spec")?.get("template")
}

/// Reads a Kubernetes manifest (multi-document YAML with an `apps/v1` Deployment running the
/// engine) into a [`ServiceSpec`]: the engine and its flags from the engine container, image,
/// GPU count, CPU/memory requests and plain env values from their fields, all documents as `base`.
pub fn spec_from_yaml(text: &str, location: &str) -> Result<ServiceSpec> {
    let docs = parse_documents(text, location)?;
    let deployment = docs
        .iter()
        .find(|d| kind_of(d) == Some("Deployment"))
        .ok_or_else(|| {
            Error::config(
                location,
                "no Deployment: autodebug runs the engine as an apps/v1 Deployment",
            )
        })?;
    let name = name_of(deployment)
        .ok_or_else(|| Error::config(format!("{location}: Deployment metadata.name"), "missing"))?
        .to_string();
    let location = format!("{location}: Deployment `{name}`");
    let template = pod_template(deployment);
    let containers = template
        .and_then(|t| t.get("spec"))
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_sequence)
        .ok_or_else(|| {
            Error::config(
                format!("{location}: spec.template.spec.containers"),
                "missing",
            )
        })?;
    let (index, launch) = find_engine(containers, &location)?;
    let container = &containers[index];
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .map(str::to_string);
    let engine = launch.engine.or_else(|| image.as_deref().and_then(engine_from_image)).ok_or_else(|| {
        Error::config(
            format!("{location}: containers[{index}]"),
            "cannot tell the engine: neither the command nor the image names sglang, vllm or llama.cpp",
        )
    })?;
    let env: Vec<(String, String)> = container
        .get("env")
        .and_then(Value::as_sequence)
        .map(|items| {
            items
                .iter()
                .filter_map(|e| {
                    Some((
                        e.get("name")?.as_str()?.to_string(),
                        scalar_text(e.get("value")?)?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let model = launch
        .model
        .clone()
        .or_else(|| env.iter().find(|(n, _)| n == "MODEL_ID").map(|(_, v)| v.clone()))
        .ok_or_else(|| {
            Error::config(
                format!("{location}: containers[{index}].args"),
                "no model: pass --model-path (SGLang), --model or `vllm serve MODEL` (vLLM), or -m (llama.cpp)",
            )
        })?;
    let mut spec = ServiceSpec::new(name, engine, model);
    spec.flags = launch.flags;
    spec.image = image;
    spec.env = env;
    let resources = container.get("resources");
    let limit = |field: &str| {
        resources
            .and_then(|r| r.get("limits"))
            .and_then(|l| l.get(field))
            .and_then(scalar_text)
    };
    let request = |field: &str| {
        resources
            .and_then(|r| r.get("requests"))
            .and_then(|l| l.get(field))
            .and_then(scalar_text)
    };
    if let Some(count) = limit(GPU_RESOURCE).or_else(|| request(GPU_RESOURCE)) {
        let gpu_name = template
            .and_then(|t| t.get("metadata"))
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(GPU_ANNOTATION))
            .or_else(|| {
                template
                    .and_then(|t| t.get("spec"))
                    .and_then(|s| s.get("nodeSelector"))
                    .and_then(|n| n.get("nvidia.com/gpu.product"))
            })
            .and_then(scalar_text)
            .unwrap_or_else(|| "gpu".into());
        spec.resources.gpu = Some(format!("{gpu_name}:{count}"));
    }
    spec.resources.cpu = request("cpu");
    spec.resources.memory = request("memory");
    spec.base = Value::Sequence(docs);
    Ok(spec)
}

/// Label values: at most 63 characters, alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
fn check_label_value(value: &str, location: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            location,
            format!(
                "`{value}` cannot be a Kubernetes label value: use at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Object names of the built-in manifests (Services need an RFC 1035 label).
fn check_object_name(name: &str, location: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            location,
            format!(
                "`{name}` cannot name a Kubernetes Service: use at most 63 lowercase letters, digits and dashes, starting with a letter"
            ),
        ))
    }
}

/// The built-in Deployment for specs without a base manifest; [`render`] adds the rest.
fn builtin_deployment(spec: &ServiceSpec) -> Value {
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| default_image(spec.engine).to_string());
    let (program, args) = engine_command(spec.engine);
    // The llama.cpp server image keeps its binary in /app, off PATH.
    let program =
        if spec.engine == EngineKind::LlamaCpp && image == default_image(EngineKind::LlamaCpp) {
            "/app/llama-server"
        } else {
            program
        };
    let command = CommandTemplate {
        program: program.into(),
        args: args.into_iter().map(String::from).collect(),
    };
    let args: Vec<Value> = command
        .expand(spec, "0.0.0.0", DEFAULT_PORT)
        .into_iter()
        .map(Value::String)
        .collect();
    let run_labels = || mapping(vec![(RUN_LABEL, text(&spec.name))]);
    let mut pod_metadata = vec![("labels", run_labels())];
    if let Some((gpu, _)) = spec.resources.gpu_name_and_count() {
        pod_metadata.push((
            "annotations",
            mapping(vec![(GPU_ANNOTATION, Value::String(gpu))]),
        ));
    }
    let mut container = vec![
        ("name", text(ENGINE_CONTAINER)),
        ("image", Value::String(image)),
        ("command", Value::Sequence(vec![text(program)])),
        ("args", Value::Sequence(args)),
        (
            "ports",
            Value::Sequence(vec![mapping(vec![
                ("name", text("http")),
                ("containerPort", Value::Number(DEFAULT_PORT.into())),
            ])]),
        ),
    ];
    let mut pod_spec = Vec::new();
    if spec.engine != EngineKind::LlamaCpp {
        // SGLang and vLLM share tensors between processes through /dev/shm, which is 64 MiB by default.
        container.push((
            "volumeMounts",
            Value::Sequence(vec![mapping(vec![
                ("name", text("dshm")),
                ("mountPath", text("/dev/shm")),
            ])]),
        ));
        pod_spec.push((
            "volumes",
            Value::Sequence(vec![mapping(vec![
                ("name", text("dshm")),
                ("emptyDir", mapping(vec![("medium", text("Memory"))])),
            ])]),
        ));
    }
    pod_spec.insert(0, ("containers", Value::Sequence(vec![mapping(container)])));
    mapping(vec![
        ("apiVersion", text("apps/v1")),
        ("kind", text("Deployment")),
        ("metadata", mapping(vec![("name", text(&spec.name))])),
        (
            "spec",
            mapping(vec![
                ("replicas", Value::Number(1.into())),
                ("strategy", mapping(vec![("type", text("Recreate"))])),
                ("selector", mapping(vec![("matchLabels", run_labels())])),
                (
                    "template",
                    mapping(vec![
                        ("metadata", mapping(pod_metadata)),
                        ("spec", mapping(pod_spec)),
                    ]),
                ),
            ]),
        ),
    ])
}

/// `16GB` (dstack style) → `16G`; Kubernetes quantities pass through.
fn quantity(text: &str) -> String {
    let t = text.trim();
    for (from, to) in [
        ("GB", "G"),
        ("MB", "M"),
        ("TB", "T"),
        ("KB", "k"),
        ("GiB", "Gi"),
        ("MiB", "Mi"),
        ("TiB", "Ti"),
    ] {
        if let Some(number) = t.strip_suffix(from) {
            return format!("{}{to}", number.trim());
        }
    }
    t.to_string()
}

/// `2..8` → request 2, limit 8; `2..` → request 2; `2` → request 2.
fn range(text: &str) -> (Option<String>, Option<String>) {
    let nonempty = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(quantity);
    match text.split_once("..") {
        Some((low, high)) => (nonempty(low), nonempty(high)),
        None => (nonempty(text), None),
    }
}

fn set_resources(container: &mut Mapping, spec: &ServiceSpec) {
    let had_resources = container.contains_key("resources");
    let resources = child(container, "resources");
    if let Some((_, count)) = spec.resources.gpu_name_and_count() {
        let count = Value::String(count.to_string());
        child(resources, "limits").insert(key(GPU_RESOURCE), count.clone());
        // Extended resources must request exactly their limit.
        if let Some(Value::Mapping(requests)) = resources.get_mut("requests")
            && requests.contains_key(GPU_RESOURCE)
        {
            requests.insert(key(GPU_RESOURCE), count);
        }
    }
    for (field, value) in [
        ("cpu", &spec.resources.cpu),
        ("memory", &spec.resources.memory),
    ] {
        let Some(value) = value else { continue };
        let (request, limit) = range(value);
        if let Some(request) = request {
            child(resources, "requests").insert(key(field), Value::String(request));
        }
        if let Some(limit) = limit {
            child(resources, "limits").insert(key(field), Value::String(limit));
        }
    }
    if !had_resources && resources.is_empty() {
        container.remove("resources");
    }
}

fn merge_env(
    container: &mut Mapping,
    spec: &ServiceSpec,
    options: &RenderOptions,
    location: &str,
) -> Result<()> {
    let launch_env = spec.launch_env();
    if launch_env.is_empty() {
        return Ok(());
    }
    let env = child_seq(container, "env");
    for (name, value) in &launch_env {
        if !is_env_name(name) {
            return Err(Error::config(
                format!("{location}: env.{name}"),
                "not a valid environment variable name (letters, digits and `_`, not starting with a digit)",
            ));
        }
        let existing = env
            .iter()
            .position(|e| e.get("name").and_then(Value::as_str) == Some(name.as_str()));
        let entry = if looks_secret(name) {
            // Credentials never enter the manifest: the pod reads them from a Secret.
            if let Some(i) = existing
                && env[i].get("valueFrom").is_some()
            {
                continue;
            }
            mapping(vec![
                ("name", text(name)),
                (
                    "valueFrom",
                    mapping(vec![(
                        "secretKeyRef",
                        mapping(vec![
                            ("name", text(&options.secret_name)),
                            ("key", text(name)),
                        ]),
                    )]),
                ),
            ])
        } else {
            mapping(vec![("name", text(name)), ("value", text(value))])
        };
        match existing {
            Some(i) => env[i] = entry,
            None => env.push(entry),
        }
    }
    Ok(())
}

fn add_labels(metadata: &mut Mapping, labels: &[(&str, &str)]) {
    let existing = child(metadata, "labels");
    for (name, value) in labels {
        existing.insert(key(name), text(value));
    }
}

fn container_port(container: &Mapping, launch: &Launch) -> u16 {
    launch
        .port
        .or_else(|| {
            container
                .get("ports")
                .and_then(Value::as_sequence)
                .and_then(|p| p.first())
                .and_then(|p| p.get("containerPort"))
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
        })
        .unwrap_or(DEFAULT_PORT)
}

/// The complete manifests for `spec`: its base manifest (or the built-in one) with the engine
/// container's flags, image, GPU/CPU/memory, env, probe and labels set from `spec`. Every other
/// field and document of the user's manifest is kept as it was.
pub fn render(spec: &ServiceSpec, options: &RenderOptions) -> Result<Rendered> {
    let location = format!("service `{}` manifest", spec.name);
    check_label_value(&spec.name, &format!("service `{}`: name", spec.name))?;
    let (mut docs, from_base) = match base_documents(&spec.base) {
        Some(docs) => (docs, true),
        None => {
            check_object_name(&spec.name, &format!("service `{}`: name", spec.name))?;
            (vec![builtin_deployment(spec)], false)
        }
    };
    let run_labels = [(MANAGED_BY_LABEL, MANAGER), (RUN_LABEL, spec.name.as_str())];
    let index = docs
        .iter()
        .position(|d| kind_of(d) == Some("Deployment"))
        .ok_or_else(|| {
            Error::config(
                &location,
                "no Deployment: autodebug runs the engine as an apps/v1 Deployment",
            )
        })?;
    let deployment_name = name_of(&docs[index])
        .ok_or_else(|| Error::config(format!("{location}: Deployment metadata.name"), "missing"))?
        .to_string();
    let location = format!("{location}: Deployment `{deployment_name}`");
    let namespace = docs[index]
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);

    let Some(deployment) = docs[index].as_mapping_mut() else {
        return Err(Error::config(&location, "not a mapping"));
    };
    add_labels(child(deployment, "metadata"), &run_labels);
    let template = child(child(deployment, "spec"), "template");
    add_labels(child(template, "metadata"), &run_labels);
    let pod_labels = child(template, "metadata")
        .get("labels")
        .cloned()
        .unwrap_or(Value::Null);
    let pod_spec = child(template, "spec");
    let containers = child_seq(pod_spec, "containers");
    let (container_index, launch) = find_engine(containers, &location)?;
    if let Some(engine) = launch.engine
        && engine != spec.engine
    {
        return Err(Error::config(
            format!("{location}: containers[{container_index}]"),
            format!(
                "the container launches {engine} but the spec is for {}",
                spec.engine
            ),
        ));
    }
    let Some(container) = containers[container_index].as_mapping_mut() else {
        return Err(Error::config(
            format!("{location}: containers[{container_index}]"),
            "not a mapping",
        ));
    };
    let container_name = container
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(ENGINE_CONTAINER)
        .to_string();
    if from_base {
        let (command, args) = container_argv(&Value::Mapping(container.clone()));
        let original: Vec<String> = command.iter().chain(&args).cloned().collect();
        let argv = launch.argv(&original, &spec.flags);
        let strings =
            |words: &[String]| Value::Sequence(words.iter().cloned().map(Value::String).collect());
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
    if let Some(image) = &spec.image {
        container.insert(key("image"), text(image));
    } else if !container.contains_key("image") {
        container.insert(key("image"), text(default_image(spec.engine)));
    }
    set_resources(container, spec);
    merge_env(container, spec, options, &location)?;
    let port = container_port(container, &launch);
    if !container.contains_key("ports") {
        container.insert(
            key("ports"),
            Value::Sequence(vec![mapping(vec![
                ("name", text("http")),
                ("containerPort", Value::Number(port.into())),
            ])]),
        );
    }
    if !container.contains_key("readinessProbe") {
        container.insert(
            key("readinessProbe"),
            mapping(vec![
                (
                    "httpGet",
                    mapping(vec![
                        ("path", text(&options.health_path)),
                        ("port", Value::Number(port.into())),
                    ]),
                ),
                ("periodSeconds", Value::Number(5.into())),
                ("failureThreshold", Value::Number(3.into())),
            ]),
        );
    }
    if let Some(cache) = &options.model_cache {
        let mounted = container
            .get("volumeMounts")
            .and_then(Value::as_sequence)
            .is_some_and(|m| {
                m.iter()
                    .any(|v| v.get("name").and_then(Value::as_str) == Some("model-cache"))
            });
        if !mounted {
            child_seq(container, "volumeMounts").push(mapping(vec![
                ("name", text("model-cache")),
                ("mountPath", text(&cache.mount_path)),
            ]));
            child_seq(pod_spec, "volumes").push(mapping(vec![
                ("name", text("model-cache")),
                (
                    "persistentVolumeClaim",
                    mapping(vec![("claimName", text(&cache.claim_name))]),
                ),
            ]));
        }
    }

    // Every other object gets the labels; claims only `managed-by`, so teardown keeps the cache.
    for (i, doc) in docs.iter_mut().enumerate() {
        if i == index {
            continue;
        }
        let is_claim = kind_of(doc) == Some("PersistentVolumeClaim");
        if let Some(map) = doc.as_mapping_mut() {
            add_labels(
                child(map, "metadata"),
                if is_claim {
                    &run_labels[..1]
                } else {
                    &run_labels
                },
            );
        }
    }

    // The Service whose selector picks the engine's pods, or a new one.
    let selects_pods = |doc: &Value| {
        kind_of(doc) == Some("Service")
            && doc
                .get("spec")
                .and_then(|s| s.get("selector"))
                .and_then(Value::as_mapping)
                .is_some_and(|selector| {
                    !selector.is_empty()
                        && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
                })
    };
    let (service, service_port) = match docs.iter().find(|d| selects_pods(d)) {
        Some(doc) => {
            let name = name_of(doc)
                .ok_or_else(|| {
                    Error::config(format!("{location}: Service metadata.name"), "missing")
                })?
                .to_string();
            let service_port = doc
                .get("spec")
                .and_then(|s| s.get("ports"))
                .and_then(Value::as_sequence)
                .and_then(|p| p.first())
                .and_then(|p| p.get("port"))
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(port);
            (name, service_port)
        }
        None => {
            check_object_name(
                &deployment_name,
                &format!("{location}: metadata.name (also names the Service)"),
            )?;
            docs.push(mapping(vec![
                ("apiVersion", text("v1")),
                ("kind", text("Service")),
                (
                    "metadata",
                    mapping(vec![
                        ("name", text(&deployment_name)),
                        (
                            "labels",
                            mapping(run_labels.iter().map(|(k, v)| (*k, text(v))).collect()),
                        ),
                    ]),
                ),
                (
                    "spec",
                    mapping(vec![
                        ("selector", mapping(vec![(RUN_LABEL, text(&spec.name))])),
                        (
                            "ports",
                            Value::Sequence(vec![mapping(vec![
                                ("name", text("http")),
                                ("port", Value::Number(port.into())),
                                ("targetPort", Value::Number(port.into())),
                            ])]),
                        ),
                    ]),
                ),
            ]));
            (deployment_name.clone(), port)
        }
    };

    if let Some(cache) = &options.model_cache
        && !docs.iter().any(|d| {
            kind_of(d) == Some("PersistentVolumeClaim")
                && name_of(d) == Some(cache.claim_name.as_str())
        })
    {
        let mut claim_spec = vec![
            ("accessModes", Value::Sequence(vec![text("ReadWriteOnce")])),
            (
                "resources",
                mapping(vec![(
                    "requests",
                    mapping(vec![("storage", text(&cache.size))]),
                )]),
            ),
        ];
        if let Some(class) = &cache.storage_class {
            claim_spec.push(("storageClassName", text(class)));
        }
        docs.insert(
            0,
            mapping(vec![
                ("apiVersion", text("v1")),
                ("kind", text("PersistentVolumeClaim")),
                (
                    "metadata",
                    mapping(vec![
                        ("name", text(&cache.claim_name)),
                        ("labels", mapping(vec![(MANAGED_BY_LABEL, text(MANAGER))])),
                    ]),
                ),
                ("spec", mapping(claim_spec)),
            ]),
        );
    }

    Ok(Rendered {
        documents: docs,
        deployment: deployment_name,
        service,
        container: container_name,
        service_port,
        served_model: launch.served_model.unwrap_or_else(|| spec.model.clone()),
        namespace,
    })
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The manifests as multi-document YAML, headed by a comment saying where they came from.
pub fn to_yaml(spec: &ServiceSpec, rendered: &Rendered) -> Result<String> {
    let mut out = format!(
        "# Kubernetes manifests rendered by autodebug: {} {} ({})\n\
         # apply with: kubectl apply --server-side --field-manager={MANAGER} -f <this file>\n",
        spec.engine,
        one_line(&spec.model),
        if spec.flags.is_empty() {
            "engine defaults".to_string()
        } else {
            one_line(&spec.flags.to_command_line())
        }
    );
    for doc in &rendered.documents {
        let body = serde_yaml::to_string(doc).map_err(|e| {
            Error::config(
                format!("service `{}` manifest", spec.name),
                format!("cannot write YAML: {e}"),
            )
        })?;
        out.push_str("---\n");
        out.push_str(&body);
    }
    Ok(out)
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
        assert_eq!(
            (launch.model.as_deref(), launch.port),
            (Some("Qwen/Q"), Some(30000))
        );
        assert_eq!(
            launch.flags.to_args(),
            [
                "--tp-size",
                "2",
                "--enable-mixed-chunk",
                "--mem-fraction-static",
                "0.8"
            ]
        );
        let mut flags = launch.flags.clone();
        flags.set("--tp-size", Some("4"));
        assert_eq!(
            launch.argv(&argv, &flags).join(" "),
            "python3 -m sglang.launch_server --model-path Qwen/Q --port 30000 --tp-size 4 --enable-mixed-chunk --mem-fraction-static 0.8"
        );
    }

    #[test]
    fn vllm_positional_model_and_entrypoint_args() {
        let launch = Launch::parse(&words("vllm serve org/m --max-num-seqs 64"), false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (launch.engine, launch.model.as_deref()),
            (Some(EngineKind::Vllm), Some("org/m"))
        );
        let entry = Launch::parse(&words("--model org/m --gpu-memory-utilization 0.9"), true)
            .unwrap()
            .unwrap();
        assert_eq!((entry.engine, entry.launcher_len), (None, 0));
        assert_eq!(entry.flags.to_args(), ["--gpu-memory-utilization", "0.9"]);
        assert_eq!(
            Launch::parse(&words("nginx -g daemon"), false).unwrap(),
            None
        );
    }

    #[test]
    fn quantities_and_ranges() {
        assert_eq!(range("16GB.."), (Some("16G".into()), None));
        assert_eq!(range("2..8"), (Some("2".into()), Some("8".into())));
        assert_eq!(range("64Gi"), (Some("64Gi".into()), None));
    }

    #[test]
    fn bad_names_are_refused_with_the_field() {
        let spec = ServiceSpec::new("Qwen_SGLang", EngineKind::Sglang, "m");
        let err = render(&spec, &RenderOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("Qwen_SGLang") && err.contains("name"), "{err}");
    }

    #[test]
    fn shell_form_is_refused_with_a_fix() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n      - name: s\n        image: i\n        command: [sh, -c]\n        args: [\"python3 -m sglang.launch_server --model-path m\"]\n";
        let err = spec_from_yaml(yaml, "k.yaml").unwrap_err().to_string();
        assert!(err.contains("k.yaml") && err.contains("exec-form"), "{err}");
    }
}
