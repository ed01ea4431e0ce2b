//! One module per sub-command: its clap `Args` and an async `run`.

pub mod session;
// -- modules: add `pub mod <name>;` above this line --
