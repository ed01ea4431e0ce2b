use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// The inference engines autodebug knows how to tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Sglang,
    Vllm,
    #[serde(rename = "llamacpp", alias = "llama.cpp", alias = "llama-cpp")]
    LlamaCpp,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Sglang => "sglang",
            EngineKind::Vllm => "vllm",
            EngineKind::LlamaCpp => "llamacpp",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "sglang" => Some(EngineKind::Sglang),
            "vllm" => Some(EngineKind::Vllm),
            "llamacpp" | "llama.cpp" | "llama-cpp" | "llama-server" => Some(EngineKind::LlamaCpp),
            _ => None,
        }
    }
}

/// `sglang`, `vllm`, `llamacpp` (also `llama.cpp`, `llama-cpp`, `llama-server`), any case.
///
/// ```
/// use autodebug_core::EngineKind;
/// assert_eq!("llama.cpp".parse::<EngineKind>(), Ok(EngineKind::LlamaCpp));
/// assert!("tgi".parse::<EngineKind>().unwrap_err().contains("sglang, vllm or llamacpp"));
/// ```
impl std::str::FromStr for EngineKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        EngineKind::parse(text).ok_or_else(|| format!("unknown engine {text:?}; use sglang, vllm or llamacpp"))
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Engine launch flags in the order they were given, e.g. `--schedule-policy lpm --enable-mixed-chunk`.
///
/// A flag without a value is a switch (`None`). Order is kept so a rendered command line
/// reads like the user's own.
///
/// ```
/// use autodebug_core::LaunchFlags;
/// let mut flags = LaunchFlags::parse_args(&["--tp-size", "2", "--enable-mixed-chunk"]).unwrap();
/// flags.set("--schedule-policy", Some("lpm"));
/// assert_eq!(flags.get("--tp-size"), Some(Some("2")));
/// assert_eq!(flags.to_args(), ["--tp-size", "2", "--enable-mixed-chunk", "--schedule-policy", "lpm"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchFlags(Vec<(String, Option<String>)>);

impl LaunchFlags {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `--flag value` / `--flag=value` / `--switch` arguments.
    pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Self, String> {
        let mut flags = LaunchFlags::new();
        let mut i = 0;
        while i < args.len() {
            let arg = args[i].as_ref();
            if !arg.starts_with('-') {
                return Err(format!("unexpected argument `{arg}`: expected a flag starting with `-`"));
            }
            if let Some((name, value)) = arg.split_once('=') {
                flags.set(name, Some(value));
                i += 1;
                continue;
            }
            let next = args.get(i + 1).map(|s| s.as_ref());
            match next {
                Some(value) if !value.starts_with("--") => {
                    flags.set(arg, Some(value));
                    i += 2;
                }
                _ => {
                    flags.set(arg, None::<&str>);
                    i += 1;
                }
            }
        }
        Ok(flags)
    }

    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_deref())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// Sets a flag, keeping its position when it is already present.
    pub fn set<V: Into<String>>(&mut self, name: &str, value: Option<V>) {
        let value = value.map(Into::into);
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| n != name);
        before != self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The command-line arguments: every flag but the [environment knobs](is_env_knob).
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.0.len() * 2);
        for (name, value) in self.0.iter().filter(|(n, _)| !is_env_knob(n)) {
            out.push(name.clone());
            if let Some(v) = value {
                out.push(v.clone());
            }
        }
        out
    }

    /// The environment knobs (`VLLM_CPU_KVCACHE_SPACE=4`) as `(name, value)`; a knob without a
    /// value is left to the engine's default.
    pub fn env_knobs(&self) -> Vec<(String, String)> {
        self.0.iter().filter(|(n, _)| is_env_knob(n)).filter_map(|(n, v)| Some((n.clone(), v.clone()?))).collect()
    }

    /// The flags as one shell-ready string (values quoted when they need it), environment knobs
    /// first as `NAME=value`, the way a shell line sets them.
    pub fn to_command_line(&self) -> String {
        let env = self.env_knobs().into_iter().map(|(n, v)| format!("{n}={}", shell_quote(&v)));
        env.chain(self.to_args().iter().map(|a| shell_quote(a))).collect::<Vec<_>>().join(" ")
    }
}

/// Whether a knob is an environment variable of the engine (`VLLM_CPU_KVCACHE_SPACE`) rather than
/// a command-line flag: upper-case letters, digits and `_`, no leading dash. Deployers put such
/// knobs into the engine's environment.
///
/// ```
/// use autodebug_core::is_env_knob;
/// assert!(is_env_knob("VLLM_CPU_KVCACHE_SPACE"));
/// assert!(!is_env_knob("--max-num-seqs"));
/// ```
pub fn is_env_knob(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Quotes an argument for a POSIX shell when it holds anything but safe characters.
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    if safe { arg.to_string() } else { format!("'{}'", arg.replace('\'', "'\\''")) }
}

impl Serialize for LaunchFlags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LaunchFlags {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = LaunchFlags;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of flag name to value (null for a switch)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<LaunchFlags, A::Error> {
                let mut flags = LaunchFlags::new();
                while let Some((name, value)) = map.next_entry::<String, Option<serde_yaml::Value>>()? {
                    let value = match value {
                        None | Some(serde_yaml::Value::Null) => None,
                        Some(serde_yaml::Value::String(s)) => Some(s),
                        Some(serde_yaml::Value::Bool(b)) => Some(b.to_string()),
                        Some(serde_yaml::Value::Number(n)) => Some(n.to_string()),
                        Some(other) => {
                            return Err(serde::de::Error::custom(format!(
                                "flag {name}: expected a scalar value, got {other:?}"
                            )));
                        }
                    };
                    let name = if name.starts_with('-') || is_env_knob(&name) { name } else { format!("--{name}") };
                    flags.set(&name, value);
                }
                Ok(flags)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Compute asked for by a deployment: `gpu: "H100:1"` style specs, CPU and memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// `NAME[:MEMORY]:COUNT`, e.g. `H100:1`, `H100:80GB:1`, `A100:80GB:4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

impl Resources {
    /// GPU name and count from the `gpu` spec (`H100:80GB:2` → `("H100", 2)`).
    pub fn gpu_name_and_count(&self) -> Option<(String, u32)> {
        let spec = self.gpu.as_deref()?;
        let parts: Vec<&str> = spec.split(':').collect();
        let name = parts.first()?.to_string();
        let count = parts.last().filter(|_| parts.len() > 1).and_then(|c| c.parse().ok()).unwrap_or(1);
        Some((name, count))
    }
}

/// Everything needed to deploy one configuration of an inference service.
///
/// `base` holds the untouched rest of the user's own file (a dstack YAML, a Kubernetes
/// manifest, ...) so a deployer renders the user's file with only the planned knobs changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Service / run name, e.g. `qwen-sglang`.
    pub name: String,
    pub engine: EngineKind,
    /// Model id as served (`Qwen/Qwen1.5-0.5B-Chat`) or a path to a local file.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub flags: LaunchFlags,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// The untouched rest of the user's base file.
    #[serde(default, skip_serializing_if = "serde_yaml::Value::is_null")]
    pub base: serde_yaml::Value,
}

impl ServiceSpec {
    pub fn new(name: impl Into<String>, engine: EngineKind, model: impl Into<String>) -> Self {
        ServiceSpec {
            name: name.into(),
            engine,
            model: model.into(),
            image: None,
            flags: LaunchFlags::new(),
            resources: Resources::default(),
            env: Vec::new(),
            base: serde_yaml::Value::Null,
        }
    }

    pub fn with_flag(mut self, name: &str, value: Option<&str>) -> Self {
        self.flags.set(name, value);
        self
    }

    pub fn with_gpu(mut self, gpu: impl Into<String>) -> Self {
        self.resources.gpu = Some(gpu.into());
        self
    }

    /// The model name clients must request: what the engine was told to serve the model as
    /// (`--served-model-name`; llama.cpp's `--alias`/`-a`), else the model itself.
    ///
    /// ```
    /// use autodebug_core::{EngineKind, ServiceSpec};
    /// let spec = ServiceSpec::new("s", EngineKind::LlamaCpp, "smol.gguf").with_flag("-a", Some("smol"));
    /// assert_eq!(spec.served_model_name(), "smol");
    /// assert_eq!(ServiceSpec::new("s", EngineKind::Vllm, "org/m").served_model_name(), "org/m");
    /// let vllm = ServiceSpec::new("s", EngineKind::Vllm, "org/m").with_flag("--alias", Some("x"));
    /// assert_eq!(vllm.served_model_name(), "org/m", "only llama.cpp reads --alias");
    /// assert_eq!(vllm.with_flag("--served-model-name", Some("m")).served_model_name(), "m");
    /// ```
    pub fn served_model_name(&self) -> &str {
        let alias = match self.engine {
            EngineKind::LlamaCpp => self.flags.get("--alias").or_else(|| self.flags.get("-a")),
            _ => None,
        };
        self.flags.get("--served-model-name").or(alias).flatten().unwrap_or(&self.model)
    }

    /// The engine's environment: `env` plus the environment knobs among the flags (a knob wins
    /// over a plain variable of the same name).
    pub fn launch_env(&self) -> Vec<(String, String)> {
        let knobs = self.flags.env_knobs();
        let mut env: Vec<(String, String)> =
            self.env.iter().filter(|(n, _)| !knobs.iter().any(|(k, _)| k == n)).cloned().collect();
        env.extend(knobs);
        env
    }
}

/// A handle on something a [`Deployer`](crate::Deployer) started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The deployer's own id: a run name, a Slurm job id, a process id.
    pub id: String,
    /// Which deployer made it (`local`, `dstack`, `slurm`, `kubernetes`).
    pub backend: String,
    pub spec: ServiceSpec,
    /// Wall-clock ns when the deploy was submitted.
    pub started_ns: i128,
    /// Backend-specific facts (port, node, job submission id...), never secrets.
    #[serde(default)]
    pub details: std::collections::BTreeMap<String, String>,
}

/// Where a ready service answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Base URL without the `/v1` suffix, e.g. `http://127.0.0.1:30000`.
    pub base_url: String,
    /// The model name to put in requests.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

impl Endpoint {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Endpoint { base_url: base_url.into().trim_end_matches('/').to_string(), model: model.into(), token: None }
    }

    /// Joins a path such as `/v1/chat/completions` or `/metrics` onto the base URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url.trim_end_matches('/'), path.trim_start_matches('/'))
    }
}

/// The complete deployable file for one configuration: a dstack YAML, Kubernetes manifests,
/// an sbatch script or a local command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// File name prefix in the session trail, e.g. `dstack` → `sessions/dstack-<ISO>.yml`.
    pub target: String,
    /// File extension without the dot (`yml`, `sh`).
    pub extension: String,
    pub content: String,
}

/// One line of service output.
///
/// Its text is the engine's, so it may hold anything, terminal escapes included; build lines with
/// [`LogLine::new`], which makes the text [`printable`]. The session does so for every line a
/// deployer returns, whichever way the deployer built it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Wall-clock ns when the line was read (or the time the backend stamped on it).
    pub time_ns: i128,
    pub text: String,
}

impl LogLine {
    /// A line whose control characters are shown as escapes (see [`printable`]).
    ///
    /// ```
    /// use autodebug_core::LogLine;
    /// let line = LogLine::new(0, "\x1b]0;pwned\x07\x1b[31mERROR\x1b[0m\r");
    /// assert_eq!(line.text, r"\x1b]0;pwned\x07\x1b[31mERROR\x1b[0m\r");
    /// ```
    pub fn new(time_ns: i128, text: impl Into<String>) -> Self {
        let text = text.into();
        let text = match printable(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(shown) => shown,
        };
        LogLine { time_ns, text }
    }
}

/// `text` with every control character but newline and tab (C0, DEL, C1: ESC, BEL, CR, CSI, ...)
/// written as a visible escape (`\x1b`, `\r`, `\u{9b}`), so text from the service under test
/// cannot drive a terminal, rewrite a line of the trail or hide in a prompt. Text without control
/// characters comes back as it is, without a copy.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    // Bytes first (every log line passes here): C0 and DEL are single bytes, and every C1
    // character starts with 0xC2 in UTF-8 (so do a few printable ones, which take the slow path).
    let suspect = |b: u8| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f || b == 0xc2;
    if !text.bytes().any(suspect) {
        return std::borrow::Cow::Borrowed(text);
    }
    let shown = |c: char| c == '\n' || c == '\t' || !c.is_control();
    if text.chars().all(shown) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            _ if shown(c) => out.push(c),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}
