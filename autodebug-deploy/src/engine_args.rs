//! Reads the installed engine's own argument list by running its help (`vllm serve --help=all`,
//! `llama-server --help`), so plans are checked against the version that will run them. The
//! answer is cached per binary (path, size, modification time) under the cache directory, since a
//! Python engine's help takes seconds to print.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use autodebug_core::{EngineArgs, EngineKind, Error, Result};

/// The command that prints an engine's full argument list, and the one that prints its version.
///
/// `leading` are the words of the launch command that come before its options (`serve` for
/// `vllm serve`); placeholders and flags end them.
pub fn help_commands(engine: EngineKind, leading: &[String]) -> (Vec<String>, Vec<String>) {
    let words: Vec<String> = leading.iter().take_while(|a| !a.starts_with('-') && !a.contains('{')).cloned().collect();
    let mut help = words.clone();
    help.push(if engine == EngineKind::Vllm { "--help=all" } else { "--help" }.to_string());
    (help, vec!["--version".to_string()])
}

/// Runs the engine's help (or reads the cached answer) and parses it.
///
/// `cache_dir` is where answers are kept (`None`: not cached). A program that cannot run is an
/// error naming it; an unreadable version leaves [`EngineArgs::version`] empty.
pub fn probe(engine: EngineKind, program: &Path, leading: &[String], cache_dir: Option<&Path>) -> Result<EngineArgs> {
    let cache_file = cache_dir.and_then(|dir| cache_key(program, leading).map(|k| dir.join(format!("{k}.json"))));
    if let Some(file) = &cache_file
        && let Ok(text) = std::fs::read_to_string(file)
        && let Ok(args) = serde_json::from_str::<EngineArgs>(&text)
    {
        return Ok(args);
    }
    let (help_args, version_args) = help_commands(engine, leading);
    let run = |args: &[String]| {
        Command::new(program).args(args).env("NO_COLOR", "1").output().map_err(|e| {
            Error::config(
                "deployer.program",
                format!(
                    "cannot run `{}` to read its arguments: {e}; check the path and that it is executable",
                    program.display()
                ),
            )
        })
    };
    let help = run(&help_args)?;
    let text = String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    let args_found = EngineArgs::parse(engine, None, &text);
    if args_found.args.len() < 5 {
        return Err(Error::config(
            "deployer.program",
            format!(
                "`{} {}` printed no argument list ({}); is this the {engine} launcher?",
                program.display(),
                help_args.join(" "),
                help.status
            ),
        ));
    }
    let version = run(&version_args).ok().and_then(|out| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        version_in(&text)
    });
    let args = EngineArgs { version, ..args_found };
    if let Some(file) = &cache_file
        && let Some(dir) = file.parent()
        && std::fs::create_dir_all(dir).is_ok()
        && let Ok(json) = serde_json::to_string(&args)
    {
        // A cache that cannot be written only costs the next run the probe again.
        let _ = std::fs::write(file, json);
    }
    Ok(args)
}

/// The default cache: `$AUTODEBUG_CACHE/engine-args` or `~/.cache/autodebug/engine-args`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("AUTODEBUG_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/autodebug")))?;
    Some(base.join("engine-args"))
}

fn cache_key(program: &Path, leading: &[String]) -> Option<String> {
    let resolved = if program.components().count() > 1 { program.to_path_buf() } else { which(program)? };
    let meta = std::fs::metadata(&resolved).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    resolved.hash(&mut hasher);
    meta.len().hash(&mut hasher);
    meta.modified().ok()?.hash(&mut hasher);
    leading.hash(&mut hasher);
    Some(format!("{:016x}", hasher.finish()))
}

fn which(program: &Path) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The first `N.N[.N]` in a `--version` answer (`0.32.0`; llama.cpp: `version: 7434 (f1e2d3)`).
fn version_in(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        // A local build tag (`0.32.0+cpu`) is not part of the version.
        .map(|w| w.trim_start_matches('v').split(['+', '-']).next().unwrap_or(w))
        .find(|w| {
            w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_engines_own_answers() {
        assert_eq!(version_in("0.32.0\n").as_deref(), Some("0.32.0"));
        assert_eq!(version_in("0.32.0+cpu\n").as_deref(), Some("0.32.0"));
        assert_eq!(version_in("version: 0.6.0-dev (build 0, commit unknown)").as_deref(), Some("0.6.0"));
        assert_eq!(version_in("version: 7434 (f1e2d3a)\nbuilt with cc").as_deref(), Some("7434"));
        assert_eq!(version_in("no digits here"), None);
    }

    #[test]
    fn the_help_command_keeps_the_subcommand_and_stops_at_placeholders() {
        let leading: Vec<String> = ["serve", "{model}", "--port", "{port}"].map(String::from).to_vec();
        let (help, _) = help_commands(EngineKind::Vllm, &leading);
        assert_eq!(help, ["serve", "--help=all"]);
        let (help, _) = help_commands(EngineKind::LlamaCpp, &["-m".into(), "{model}".into()]);
        assert_eq!(help, ["--help"]);
    }

    /// A stand-in engine: a shell script that prints an argparse-style help and a version, run for
    /// real, then read again from the cache without running it.
    #[test]
    fn a_probe_runs_the_program_once_and_then_reads_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let engine = dir.path().join("fake-vllm");
        let counter = dir.path().join("runs");
        let script = format!(
            "#!/bin/sh\necho run >> {}\nif [ \"$1\" = --version ]; then echo 0.32.0; exit 0; fi\n\
             printf 'options:\\n  --max-num-seqs MAX_NUM_SEQS\\n                        seqs (default: None)\\n  --dtype {{auto,float32}}\\n  --a A\\n  --b B\\n  --c C\\n  --d D\\n'\n",
            counter.display()
        );
        std::fs::write(&engine, script).unwrap();
        let mut perms = std::fs::metadata(&engine).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&engine, perms).unwrap();
        let cache = dir.path().join("cache");
        let leading = vec!["serve".to_string()];
        let first = probe(EngineKind::Vllm, &engine, &leading, Some(&cache)).unwrap();
        assert_eq!(first.version.as_deref(), Some("0.32.0"));
        assert_eq!(first.get("--dtype").unwrap().choices, ["auto", "float32"]);
        let runs = std::fs::read_to_string(&counter).unwrap().lines().count();
        let second = probe(EngineKind::Vllm, &engine, &leading, Some(&cache)).unwrap();
        assert_eq!(first, second);
        assert_eq!(std::fs::read_to_string(&counter).unwrap().lines().count(), runs, "the cache answered");
        let missing = probe(EngineKind::Vllm, &dir.path().join("nope"), &leading, None).unwrap_err().to_string();
        assert!(missing.contains("nope"), "{missing}");
    }
}
