//! `autodebug completions <shell>`: shell completion scripts, generated from the CLI definition.

use std::process::ExitCode;

use clap::CommandFactory;

#[derive(clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub async fn run(args: Args, _global: &crate::Global) -> autodebug_core::Result<ExitCode> {
    let mut command = crate::Cli::command();
    clap_complete::generate(args.shell, &mut command, "autodebug", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
