//! One module per sub-command: its clap `Args` and an async `run`.

pub mod bench;
pub mod chaos;
pub mod check;
pub mod completions;
pub mod config_reference;
pub mod engines;
pub mod export;
pub mod history;
pub mod ingest;
pub mod init;
pub mod logs;
pub mod report;
pub mod session;
pub mod sim_eval;
pub mod telemetry;
pub mod trace;
pub mod tune_suite;
pub mod twin;
// -- modules: add `pub mod <name>;` above this line --
