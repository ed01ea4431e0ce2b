//! One module per sub-command: its clap `Args` and an async `run`.

pub mod session;
pub mod completions;
pub mod config_reference;
pub mod init;
pub mod report;
pub mod bench;
pub mod trace;
pub mod logs;
pub mod telemetry;
pub mod history;
pub mod check;
pub mod export;
pub mod ingest;
pub mod sim_eval;
pub mod tune_suite;
pub mod engines;
// -- modules: add `pub mod <name>;` above this line --
