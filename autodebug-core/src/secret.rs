use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{OnceLock, RwLock};

use serde::{Deserialize, Serialize, Serializer};

use crate::ServiceSpec;

/// A credential (bearer token, API key) that never prints.
///
/// `Debug`, `Display` and `Serialize` all write `***`, so a `Secret` inside an
/// [`Endpoint`](crate::Endpoint) cannot leak into logs, the session trail or the store.
/// Read the value with [`Secret::expose`] only at the point where it goes on the wire.
/// Creating one [registers](register) its value, so [`redact`] masks it in any text.
///
/// ```
/// use autodebug_core::Secret;
/// let token = Secret::new("sk-very-secret");
/// assert_eq!(format!("{token:?} {token}"), "*** ***");
/// assert_eq!(token.expose(), "sk-very-secret");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    /// A value kept behind the same type but known not to be a credential (a plain environment
    /// variable such as `VLLM_CPU_OMP_THREADS_BIND=nobind`): it is not registered, so [`redact`]
    /// leaves it readable wherever else it appears.
    pub fn not_secret(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Reads a secret from an environment variable; `None` when unset or empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var).ok().filter(|v| !v.is_empty()).map(Secret::new)
    }

    /// The raw value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

/// What every redacted value is replaced with.
pub const MASK: &str = "***";

/// Registered values shorter than this are not masked in free text (they would mask ordinary words).
const MIN_REGISTERED_LEN: usize = 6;
/// Bound on the registry, so a long run that keeps creating secrets cannot grow it without limit.
const MAX_REGISTERED: usize = 1024;

fn registry() -> &'static RwLock<BTreeSet<String>> {
    static REGISTRY: OnceLock<RwLock<BTreeSet<String>>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(BTreeSet::new()))
}

/// The one decision on what is secret, and the redaction of everything that leaves the process
/// (store, session trail, rendered configurations, logs, LLM prompts) built on it.
///
/// A *name* (environment variable, flag, config key) is secret when one of its words (split on
/// anything but letters and digits) contains `SECRET`, `PASSWORD`, `PASSWD` or `CREDENTIAL`, is
/// `AUTH`/`AUTHORIZATION`, or when its **last** word is (or ends with) `KEY` or `TOKEN`: `HF_TOKEN`,
/// `--api-key`, `OPENAI_API_KEY`, `--hf-token` are secret; knobs that count tokens or name a file
/// (`--max-num-batched-tokens`, `--long-prefill-token-threshold`, `--api-key-file`) are not.
/// A *value* is secret when it was registered (every [`Secret`] registers itself; tests register
/// canaries): it is masked wherever it appears in text.
///
/// Redaction happens only on output: comparisons (did a change take effect?) run on real values.
///
/// ```
/// use autodebug_core::secret::{is_secret_name, redact_args, register};
/// assert!(is_secret_name("HF_TOKEN") && is_secret_name("--api-key") && is_secret_name("DB_PASSWORD"));
/// assert!(!is_secret_name("--max-num-batched-tokens") && !is_secret_name("CUDA_VISIBLE_DEVICES"));
/// assert!(!is_secret_name("key"), "a manifest's label or toleration key");
/// let args: Vec<String> = ["--api-key", "k-123", "--max-num-batched-tokens", "4096"].map(String::from).into();
/// assert_eq!(redact_args(&args).join(" "), "--api-key *** --max-num-batched-tokens 4096");
/// register("canary-0f3a9c");
/// assert_eq!(autodebug_core::secret::redact("log: key=canary-0f3a9c"), "log: key=***");
/// ```
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let words: Vec<&str> = upper.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let anywhere = words.iter().any(|w| {
        ["SECRET", "PASSWORD", "PASSWD", "CREDENTIAL"].iter().any(|s| w.contains(s))
            || *w == "AUTH"
            || w.starts_with("AUTHORIZ")
    });
    // A bare `key` names a label or a toleration in manifests (`key: nvidia.com/gpu`), not a credential.
    let bare_key = words.len() == 1 && words[0] == "KEY";
    let last = !bare_key && words.last().is_some_and(|w| w.ends_with("KEY") || w.ends_with("TOKEN"));
    // Short flags that carry a credential and whose names say nothing (llama.cpp's `-hft`).
    anywhere || last || matches!(name, "-hft")
}

/// Registers `value` as secret: [`redact`] masks it wherever it appears. Values shorter than six
/// characters are ignored (masking them would blank ordinary text).
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < MIN_REGISTERED_LEN || value == MASK {
        return;
    }
    let mut registry = registry().write().unwrap_or_else(|p| p.into_inner());
    if registry.len() < MAX_REGISTERED {
        registry.insert(value.to_string());
    }
}

/// `text` with every registered secret value replaced by [`MASK`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let registry = registry().read().unwrap_or_else(|p| p.into_inner());
    let mut out = Cow::Borrowed(text);
    // Longest first, so a value containing another is masked whole.
    let mut values: Vec<&String> = registry.iter().filter(|v| text.contains(v.as_str())).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for value in values {
        if out.contains(value.as_str()) {
            out = Cow::Owned(out.replace(value.as_str(), MASK));
        }
    }
    out
}

/// Command-line arguments for display: the value after a secret flag (`--api-key K`, `--api-key=K`)
/// and registered values are masked; everything else (knob values included) stays as it is.
pub fn redact_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for arg in args {
        if hide_next {
            out.push(MASK.to_string());
            hide_next = false;
            continue;
        }
        match arg.split_once('=') {
            Some((name, _)) if name.starts_with('-') && is_secret_name(name) => out.push(format!("{name}={MASK}")),
            _ => {
                hide_next = arg.starts_with('-') && is_secret_name(arg);
                out.push(redact(arg).into_owned());
            }
        }
    }
    out
}

/// A command line (words separated by whitespace, as in a dstack `commands` entry) with the values
/// of secret flags, `NAME=value` assignments of secret names, and registered values masked.
pub fn redact_command_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut hide_next = false;
    let mut rest = text;
    while !rest.is_empty() {
        let space = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..space]);
        rest = &rest[space..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        rest = &rest[end..];
        if word.is_empty() {
            continue;
        }
        if hide_next {
            out.push_str(MASK);
            hide_next = false;
            continue;
        }
        match word.split_once('=') {
            Some((name, _)) if is_secret_name(name.trim_start_matches('-')) && !name.is_empty() => {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => {
                hide_next = word.starts_with('-') && is_secret_name(word);
                out.push_str(&redact(word));
            }
        }
    }
    out
}

/// The value `spec` shows for the secret `name`: its env entry or flag, if it has one.
fn secret_values(spec: &ServiceSpec) -> impl Iterator<Item = &str> {
    let env = spec.env.iter().filter(|(n, _)| is_secret_name(n)).map(|(_, v)| v.as_str());
    let flags = spec.flags.iter().filter(|(n, _)| is_secret_name(n)).filter_map(|(_, v)| v);
    env.chain(flags)
}

/// Registers every secret value `spec` holds (secret env entries and flag values), so that text
/// produced from it later (engine logs, error messages) is masked too.
pub fn register_spec(spec: &ServiceSpec) {
    for value in secret_values(spec) {
        register(value);
    }
}

/// `spec` as it may be written out (store, trail, prompts): secret env values and secret flag
/// values become `reference(name)`, and the rest of the base file is redacted the same way.
/// Registers the values it masks.
pub fn redact_spec_with(spec: &ServiceSpec, reference: impl Fn(&str) -> String) -> ServiceSpec {
    register_spec(spec);
    let mut out = spec.clone();
    for (name, value) in &mut out.env {
        if is_secret_name(name) {
            *value = reference(name);
        } else {
            *value = redact(value).into_owned();
        }
    }
    let masked: Vec<(String, Option<String>)> = out
        .flags
        .iter()
        .filter_map(|(n, v)| {
            let v = v?;
            let shown = if is_secret_name(n) { reference(n) } else { redact(v).into_owned() };
            (shown != v).then(|| (n.to_string(), Some(shown)))
        })
        .collect();
    for (name, value) in masked {
        out.flags.set(&name, value);
    }
    out.model = redact(&out.model).into_owned();
    out.image = out.image.as_deref().map(|i| redact(i).into_owned());
    redact_yaml(&mut out.base);
    out
}

/// [`redact_spec_with`] replacing every secret value with [`MASK`].
pub fn redact_spec(spec: &ServiceSpec) -> ServiceSpec {
    redact_spec_with(spec, |_| MASK.to_string())
}

/// Fills the values [`redact_spec`] masked in `stored` back from `source` (e.g. the user's
/// configuration on `--resume`): env entries and flags of the same name.
pub fn restore_spec(stored: &ServiceSpec, source: &ServiceSpec) -> ServiceSpec {
    let mut out = stored.clone();
    for (name, value) in &mut out.env {
        if value == MASK
            && let Some((_, real)) = source.env.iter().find(|(n, _)| n == name)
        {
            value.clone_from(real);
        }
    }
    let masked: Vec<String> = out.flags.iter().filter(|(_, v)| *v == Some(MASK)).map(|(n, _)| n.to_string()).collect();
    for name in masked {
        if let Some(Some(real)) = source.flags.get(&name) {
            out.flags.set(&name, Some(real));
        }
    }
    if out.base != source.base && yaml_masked(&out.base) {
        out.base = source.base.clone();
    }
    out
}

fn yaml_masked(value: &serde_yaml::Value) -> bool {
    match value {
        serde_yaml::Value::String(s) => s.contains(MASK),
        serde_yaml::Value::Sequence(items) => items.iter().any(yaml_masked),
        serde_yaml::Value::Mapping(map) => map.values().any(yaml_masked),
        serde_yaml::Value::Tagged(tagged) => yaml_masked(&tagged.value),
        _ => false,
    }
}

/// Redacts a YAML document in place: values under secret keys, `NAME=value` items with a secret
/// name, secret flags inside command strings, and registered values anywhere.
pub fn redact_yaml(value: &mut serde_yaml::Value) {
    match value {
        serde_yaml::Value::String(s) => {
            let shown = redact_command_line(s);
            if shown != *s {
                *s = shown;
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(redact_yaml),
        serde_yaml::Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                // Strings only: a number under a key such as `time_per_output_token` is a figure.
                if key.as_str().is_some_and(is_secret_name) && item.is_string() {
                    *item = serde_yaml::Value::String(MASK.to_string());
                } else {
                    redact_yaml(item);
                }
            }
        }
        serde_yaml::Value::Tagged(tagged) => redact_yaml(&mut tagged.value),
        _ => {}
    }
}

/// Redacts a JSON document in place, like [`redact_yaml`] (for store columns and prompts).
/// Specs inside it are not recognised as such: redact them with [`redact_spec`] first.
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            let shown = redact_command_line(s);
            if shown != *s {
                *s = shown;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if is_secret_name(key) && item.is_string() {
                    *item = serde_json::Value::String(MASK.to_string());
                } else {
                    redact_json(item);
                }
            }
        }
        _ => {}
    }
}

/// The environment variable a rendered file reads a secret flag's value from: `--api-key` ->
/// `API_KEY`, `--hf-token` -> `HF_TOKEN`; an environment name is its own.
pub fn env_name_for(name: &str) -> String {
    let upper: String = name
        .trim_start_matches('-')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    if upper.is_empty() || upper.starts_with(|c: char| c.is_ascii_digit()) { format!("_{upper}") } else { upper }
}
