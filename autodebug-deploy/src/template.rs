//! The engine command line: a program plus argument templates expanded from a [`ServiceSpec`],
//! and the same command rendered as a runnable shell script.

use std::path::{Path, PathBuf};

use autodebug_core::{Artifact, Error, Result, ServiceSpec, shell_quote};

/// Placeholders understood in argument templates.
pub const PLACEHOLDERS: &[&str] =
    &["{port}", "{host}", "{model}", "{flags}", "{gpu}", "{gpu_count}", "{engine}", "{name}"];

/// The port written into rendered scripts when `PORT` is not set in their environment.
pub const RENDERED_DEFAULT_PORT: u16 = 30000;

/// GPU name used for `{gpu}` when the spec asks for none.
pub const DEFAULT_GPU: &str = "H100";

/// Flags naming the model an engine loads, in SGLang's, vLLM's and llama.cpp's spellings.
#[cfg(any(feature = "dstack", feature = "kubernetes"))]
pub(crate) const MODEL_FLAGS: &[&str] = &["--model-path", "--model", "-m", "-hf", "--hf-repo"];

/// Flags that say where the engine finds its model and listens: they belong to the user's file,
/// not to the search space, so a deployer that edits the user's command keeps them as written.
#[cfg(any(feature = "dstack", feature = "kubernetes"))]
pub(crate) const FIXED_FLAGS: &[&str] =
    &["--model-path", "--model", "-m", "--host", "--port", "--served-model-name", "-hf", "--hf-repo", "--alias"];

/// The engine's published container image, for a cluster deploy whose spec names none.
pub fn default_image(engine: autodebug_core::EngineKind) -> &'static str {
    use autodebug_core::EngineKind;
    match engine {
        EngineKind::Sglang => "lmsysorg/sglang:latest",
        EngineKind::Vllm => "vllm/vllm-openai:latest",
        EngineKind::LlamaCpp => "ghcr.io/ggml-org/llama.cpp:server",
    }
}

/// The command that launches a real engine, as a program and argument templates.
pub fn engine_command(engine: autodebug_core::EngineKind) -> (&'static str, Vec<&'static str>) {
    use autodebug_core::EngineKind;
    match engine {
        EngineKind::Sglang => (
            "python3",
            vec![
                "-m",
                "sglang.launch_server",
                "--model-path",
                "{model}",
                "--host",
                "{host}",
                "--port",
                "{port}",
                "{flags}",
            ],
        ),
        EngineKind::Vllm => ("vllm", vec!["serve", "{model}", "--host", "{host}", "--port", "{port}", "{flags}"]),
        EngineKind::LlamaCpp => {
            ("llama-server", vec!["-m", "{model}", "--host", "{host}", "--port", "{port}", "--metrics", "{flags}"])
        }
    }
}

/// The simulator's command: `autodebug sim serve ...`, or the standalone `autodebug-sim ...`.
pub fn simulator_command(program: &Path) -> Vec<&'static str> {
    let standalone = program.file_stem().and_then(|s| s.to_str()).is_some_and(|stem| stem.starts_with("autodebug-sim"));
    let mut args: Vec<&str> = if standalone { vec![] } else { vec!["sim", "serve"] };
    args.extend([
        "--engine", "{engine}", "--gpu", "{gpu}", "--model", "{model}", "--host", "{host}", "--port", "{port}", "--",
        "{flags}",
    ]);
    args
}

/// A program and its argument templates, e.g. `["--port", "{port}", "{flags}"]`.
///
/// `{flags}` must stand alone as one template argument because it expands to several
/// arguments; the other placeholders may sit inside a larger argument (`--bind={host}:{port}`).
/// Braces that are not a known placeholder (JSON values, say) are passed through untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl CommandTemplate {
    /// Checks the template; `source` names where it came from for the error message.
    pub fn new(program: PathBuf, args: Vec<String>, source: &str) -> Result<Self> {
        if program.as_os_str().is_empty() {
            return Err(Error::config(source, "no program given: set the engine executable to run"));
        }
        if let Some(bad) = args.iter().find(|a| a.contains("{flags}") && a.as_str() != "{flags}") {
            return Err(Error::config(
                source,
                format!("`{bad}`: {{flags}} expands to several arguments and must be an argument of its own"),
            ));
        }
        Ok(CommandTemplate { program, args })
    }

    /// The argument list for `spec` served on `host:port`.
    pub fn expand(&self, spec: &ServiceSpec, host: &str, port: u16) -> Vec<String> {
        let port = port.to_string();
        self.expand_with(spec, host, &port)
    }

    pub(crate) fn expand_with(&self, spec: &ServiceSpec, host: &str, port: &str) -> Vec<String> {
        let (gpu, gpu_count) = spec.resources.gpu_name_and_count().unwrap_or_else(|| (DEFAULT_GPU.to_string(), 1));
        let gpu_count = gpu_count.to_string();
        let mut out = Vec::with_capacity(self.args.len() + spec.flags.len() * 2);
        for arg in &self.args {
            if arg == "{flags}" {
                out.extend(spec.flags.to_args());
                continue;
            }
            out.push(
                arg.replace("{port}", port)
                    .replace("{host}", host)
                    .replace("{model}", &spec.model)
                    .replace("{gpu_count}", &gpu_count)
                    .replace("{gpu}", &gpu)
                    .replace("{engine}", spec.engine.as_str())
                    .replace("{name}", &spec.name),
            );
        }
        out
    }

    /// The command as one display string (for logs and `Deployment.details`).
    pub fn display(program: &Path, args: &[String]) -> String {
        std::iter::once(shell_quote(&program.to_string_lossy()))
            .chain(args.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One environment variable handed to the engine.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct EnvVar {
    pub name: String,
    pub value: autodebug_core::Secret,
    /// Secret values are passed to the process but rendered as `${NAME:?...}`, never written out.
    pub secret: bool,
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secret already redacts itself; plain values are shown.
        if self.secret { write!(f, "{}=***", self.name) } else { write!(f, "{}={}", self.name, self.value.expose()) }
    }
}

/// Whether an environment variable name holds a credential: the one decision in
/// [`autodebug_core::secret::is_secret_name`].
pub(crate) fn looks_secret(name: &str) -> bool {
    autodebug_core::secret::is_secret_name(name)
}

/// Renders `template` for `spec` as a complete bash script.
///
/// The port is left as `${PORT:-30000}` because the real one is only chosen at deploy time.
pub(crate) fn render_script(
    template: &CommandTemplate,
    spec: &ServiceSpec,
    host: &str,
    env: &[EnvVar],
    working_dir: Option<&Path>,
) -> Result<Artifact> {
    // A marker that cannot occur in user text stands in for the port, then becomes "${PORT}".
    const PORT_MARK: &str = "\u{0}AUTODEBUG_PORT\u{0}";
    // A secret flag's value (`--api-key`) is read from the environment when the script runs.
    const SECRET_MARK: &str = "\u{0}AUTODEBUG_SECRET\u{0}";
    let shown = autodebug_core::secret::redact_spec_with(spec, |name| {
        format!("{SECRET_MARK}{}", autodebug_core::secret::env_name_for(name))
    });
    let args = template.expand_with(&shown, host, PORT_MARK);
    let mut script = String::new();
    script.push_str("#!/usr/bin/env bash\n");
    script.push_str(&format!(
        "# Service `{}`: {} serving {} (rendered by autodebug-deploy, local backend).\n",
        one_line(&spec.name),
        spec.engine,
        one_line(&spec.model)
    ));
    script.push_str("set -euo pipefail\n\n");
    script.push_str(&format!("PORT=\"${{PORT:-{RENDERED_DEFAULT_PORT}}}\"\n"));
    let all_env = spec
        .launch_env()
        .into_iter()
        .map(|(name, value)| {
            let secret = looks_secret(&name);
            let value =
                if secret { autodebug_core::Secret::new(value) } else { autodebug_core::Secret::not_secret(value) };
            EnvVar { secret, name, value }
        })
        .chain(env.iter().cloned());
    for var in all_env {
        if !is_env_name(&var.name) {
            return Err(Error::config(
                format!("env.{}", var.name),
                "not a valid environment variable name (letters, digits and `_`, not starting with a digit)",
            ));
        }
        if var.secret {
            script.push_str(&format!(
                "export {name}=\"${{{name}:?set {name} in the environment; its value is a secret and is not written here}}\"\n",
                name = var.name
            ));
        } else {
            script.push_str(&format!("export {}={}\n", var.name, shell_quote(var.value.expose())));
        }
    }
    if let Some(dir) = working_dir {
        script.push_str(&format!("cd {}\n", shell_quote(&dir.to_string_lossy())));
    }
    script.push('\n');
    script.push_str("exec ");
    script.push_str(&shell_quote(&template.program.to_string_lossy()));
    // One flag per line with its value beside it, so the script reads like a launch command.
    for arg in &args {
        script.push_str(if arg.starts_with('-') { " \\\n    " } else { " " });
        match arg.strip_prefix(SECRET_MARK) {
            Some(name) => script.push_str(&format!(
                "\"${{{name}:?set {name} in the environment; its value is a secret and is not written here}}\""
            )),
            None => script.push_str(&autodebug_core::secret::redact(&quote_with_port(arg, PORT_MARK))),
        }
    }
    script.push('\n');
    Ok(Artifact { target: "local".into(), extension: "sh".into(), content: script })
}

fn quote_with_port(arg: &str, mark: &str) -> String {
    if !arg.contains(mark) {
        return shell_quote(arg);
    }
    arg.split(mark)
        .map(|piece| if piece.is_empty() { String::new() } else { shell_quote(piece) })
        .collect::<Vec<_>>()
        .join("\"${PORT}\"")
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits a command line the way a POSIX shell would for words: whitespace separates,
/// single quotes keep everything, double quotes keep everything but `\"` and `\\`,
/// a backslash outside quotes escapes the next character. No expansion happens.
pub fn split_shell_words(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => current.push(c),
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => current.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => current.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

#[cfg(test)]
mod plain_env_tests {
    use autodebug_core::{EngineKind, ServiceSpec};

    /// A plain variable's value (`nobind`, six characters) must not become a registered secret and be
    /// masked in every later text, as it was when every environment value was registered.
    #[test]
    fn a_plain_environment_value_stays_readable_everywhere() {
        let spec = ServiceSpec::new("s", EngineKind::Vllm, "m").with_flag("VLLM_CPU_OMP_THREADS_BIND", Some("nobind"));
        let template =
            super::CommandTemplate::new("vllm".into(), vec!["serve".into(), "{flags}".into()], "test").unwrap();
        let script = super::render_script(&template, &spec, "127.0.0.1", &[], None).unwrap().content;
        assert!(script.contains("VLLM_CPU_OMP_THREADS_BIND=nobind"), "{script}");
        assert_eq!(autodebug_core::secret::redact("bind=nobind"), "bind=nobind");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebug_core::EngineKind;

    fn spec() -> ServiceSpec {
        ServiceSpec::new("svc", EngineKind::Vllm, "org/model name")
            .with_gpu("A100:80GB:4")
            .with_flag("--max-num-seqs", Some("64"))
            .with_flag("--enforce-eager", None)
    }

    #[test]
    #[cfg(any(feature = "dstack", feature = "kubernetes"))]
    fn a_flag_that_names_the_model_is_never_left_to_the_planner() {
        let loose: Vec<&&str> = MODEL_FLAGS.iter().filter(|f| !FIXED_FLAGS.contains(f)).collect();
        assert!(loose.is_empty(), "{loose:?}");
    }

    #[test]
    fn expands_every_placeholder() {
        let t = CommandTemplate::new(
            "engine".into(),
            [
                "--e",
                "{engine}",
                "--gpu={gpu}x{gpu_count}",
                "--bind",
                "{host}:{port}",
                "-m",
                "{model}",
                "--",
                "{flags}",
                "{name}",
                "{\"json\": 1}",
            ]
            .map(String::from)
            .to_vec(),
            "test",
        )
        .unwrap();
        assert_eq!(
            t.expand(&spec(), "127.0.0.1", 4242),
            [
                "--e",
                "vllm",
                "--gpu=A100x4",
                "--bind",
                "127.0.0.1:4242",
                "-m",
                "org/model name",
                "--",
                "--max-num-seqs",
                "64",
                "--enforce-eager",
                "svc",
                "{\"json\": 1}"
            ]
        );
    }

    #[test]
    fn default_gpu_when_spec_has_none() {
        let t = CommandTemplate::new("e".into(), vec!["{gpu}".into()], "test").unwrap();
        let spec = ServiceSpec::new("s", EngineKind::Sglang, "m");
        assert_eq!(t.expand(&spec, "h", 1), [DEFAULT_GPU]);
    }

    #[test]
    fn flags_inside_a_larger_argument_is_refused() {
        let err = CommandTemplate::new("e".into(), vec!["--x={flags}".into()], "AUTODEBUG_LOCAL_ARGS").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("AUTODEBUG_LOCAL_ARGS") && text.contains("--x={flags}"), "{text}");
    }

    #[test]
    fn script_leaves_port_to_the_environment_and_quotes_values() {
        let t = CommandTemplate::new(
            "/opt/my engine/serve".into(),
            vec![
                "--port".into(),
                "{port}".into(),
                "--url=http://{host}:{port}/x".into(),
                "-m".into(),
                "{model}".into(),
            ],
            "test",
        )
        .unwrap();
        let mut s = spec();
        s.env.push(("HF_TOKEN".into(), "hf_verysecret".into()));
        s.env.push(("CUDA_VISIBLE_DEVICES".into(), "0,1".into()));
        let art = render_script(&t, &s, "127.0.0.1", &[], Some(Path::new("/tmp/work dir"))).unwrap();
        let c = &art.content;
        assert!(c.starts_with("#!/usr/bin/env bash\n"), "{c}");
        assert!(c.contains("set -euo pipefail"), "{c}");
        assert!(c.contains("PORT=\"${PORT:-30000}\""), "{c}");
        assert!(c.contains("'/opt/my engine/serve'"), "{c}");
        assert!(c.contains(" \\\n    --port \"${PORT}\" \\\n"), "{c}");
        assert!(c.contains("--url=http://127.0.0.1:\"${PORT}\"/x"), "{c}");
        assert!(c.contains("'org/model name'"), "{c}");
        assert!(c.contains("export CUDA_VISIBLE_DEVICES=0,1"), "{c}");
        assert!(!c.contains("hf_verysecret"), "secret leaked into the script:\n{c}");
        assert!(c.contains("export HF_TOKEN=\"${HF_TOKEN:?"), "{c}");
        assert!(c.contains("cd '/tmp/work dir'"), "{c}");
    }

    #[test]
    fn bad_env_name_is_named_in_the_error() {
        let t = CommandTemplate::new("e".into(), vec![], "test").unwrap();
        let mut s = spec();
        s.env.push(("BAD NAME".into(), "1".into()));
        let err = render_script(&t, &s, "h", &[], None).unwrap_err().to_string();
        assert!(err.contains("env.BAD NAME"), "{err}");
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_shell_words(r#"  serve --x 'a b' "c \"d\"" e\ f {flags} "#).unwrap(),
            ["serve", "--x", "a b", "c \"d\"", "e f", "{flags}"]
        );
        assert_eq!(split_shell_words("''").unwrap(), [""]);
        assert!(split_shell_words("'open").is_err());
        assert!(split_shell_words("\"open").is_err());
    }

    #[test]
    fn secret_names() {
        assert!(looks_secret("HF_TOKEN") && looks_secret("openai_api_key") && looks_secret("DB_PASSWORD"));
        assert!(!looks_secret("CUDA_VISIBLE_DEVICES") && !looks_secret("OMP_NUM_THREADS"));
    }
}
