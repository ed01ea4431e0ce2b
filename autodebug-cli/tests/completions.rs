//! `autodebug completions`: scripts that the shells themselves accept.

use std::process::Command;

fn completions(shell: &str) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_autodebug")).args(["completions", shell]).output().unwrap();
    assert!(run.status.success(), "{shell}: {}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8(run.stdout).unwrap()
}

/// Whether `shell -n` (parse only, run nothing) accepts the script; `None` when the shell is not installed.
fn parses(shell: &str, script: &str) -> Option<bool> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autodebug-completion");
    std::fs::write(&path, script).unwrap();
    let status = Command::new(shell).arg("-n").arg(&path).status().ok()?;
    Some(status.success())
}

#[test]
fn every_shell_gets_a_script_naming_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = completions(shell);
        for sub in ["demo", "run", "report", "init", "config-reference", "completions"] {
            assert!(script.contains(sub), "{shell} script does not complete `{sub}`");
        }
        match parses(shell, &script) {
            Some(ok) => assert!(ok, "{shell} -n rejects the script"),
            None => eprintln!("SKIPPED syntax check: `{shell}` is not installed"),
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let run = Command::new(env!("CARGO_BIN_EXE_autodebug")).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("bash"), "the error lists the shells");
}
