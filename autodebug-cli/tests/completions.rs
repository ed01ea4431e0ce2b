//! `autodebug completions`: scripts that the shells themselves accept.

use std::process::Command;

fn completions(shell: &str) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_autodebug")).args(["completions", shell]).output().unwrap();
    assert!(run.status.success(), "{shell}: {}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8(run.stdout).unwrap()
}

/// Whether `shell -n` (parse only, run nothing) accepts the script; a shell that is not installed
/// fails the test, naming what to install.
fn parses(shell: &str, script: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autodebug-completion");
    std::fs::write(&path, script).unwrap();
    match Command::new(shell).arg("-n").arg(&path).status() {
        Ok(status) => status.success(),
        Err(e) => panic!(
            "needs {shell}: apt-get install {shell} (bash .ci/setup.sh), then cargo test --workspace -- --include-ignored \
             (cannot run `{shell}`: {e})"
        ),
    }
}

/// The completion script for `shell` names every sub-command and passes the shell's own parser.
fn check_completions(shell: &str) {
    let script = completions(shell);
    for sub in ["demo", "run", "report", "init", "config-reference", "completions"] {
        assert!(script.contains(sub), "{shell} script does not complete `{sub}`");
    }
    assert!(parses(shell, &script), "{shell} -n rejects the script");
}

#[test]
fn bash_gets_a_script_naming_the_subcommands_that_bash_parses() {
    check_completions("bash");
}

#[test]
#[ignore = "needs zsh: apt-get install zsh (bash .ci/setup.sh), then cargo test --workspace -- --include-ignored"]
fn zsh_gets_a_script_naming_the_subcommands_that_zsh_parses() {
    check_completions("zsh");
}

#[test]
#[ignore = "needs fish: apt-get install fish (bash .ci/setup.sh), then cargo test --workspace -- --include-ignored"]
fn fish_gets_a_script_naming_the_subcommands_that_fish_parses() {
    check_completions("fish");
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let run = Command::new(env!("CARGO_BIN_EXE_autodebug")).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("bash"), "the error lists the shells");
}
