//! The experiment store: one SQLite database (`<sessions>/autodebug.db`) holding every session,
//! its iterations and the benchmark records behind them.
//!
//! It is the source of truth for history, resume and champion selection; the markdown and YAML
//! of the [`trail`](crate::trail) are for people. Several sessions share one database.
//!
//! Durability: the database runs in WAL mode with `synchronous=NORMAL`, and every step
//! ([`Store::begin_iteration`], [`Store::finish_iteration`], [`Store::save_bench_records`], ...)
//! is one transaction, so a process killed with SIGKILL loses nothing it had already finished;
//! an iteration it was in the middle of stays `running` and [`Store::unfinished`] reports it.
//!
//! Layout: structured values are JSON columns (`spec_json`, `analysis_json`, ...), and what people
//! query is in plain columns as well: `iterations.status`, `objective_value`, `feasible`, `flags`
//! (the command line), `gpu`, timestamps in ns and ISO form, one row per metric in
//! `iteration_metrics`, per finding in `findings` and per planned change in `changes`:
//!
//! ```sql
//! SELECT number, status, objective_value, flags FROM iterations WHERE session_id = 1 ORDER BY number;
//! SELECT rule, count(*) FROM findings GROUP BY rule;
//! ```
//!
//! JSON cannot hold NaN or infinities, so before writing, non-finite metrics are left out
//! (an objective treats a missing metric like a non-finite one), non-finite signal values are
//! kept as text (`"NaN"`, `"inf"`, which [`Signal::as_f64`] still parses), and non-finite figures
//! in bench summaries are written as 0 with a warning.
//!
//! Secrets: nothing the store writes holds a [`Secret`](crate::Secret) in clear, since a `Secret`
//! serializes as `***`; the run configuration given to [`Store::create_session`] is stored as given.
//!
//! ```
//! use autodebug_core::store::Store;
//! use autodebug_core::{Analysis, EngineKind, Iteration, IterationStatus, Objective, ServiceSpec};
//!
//! let store = Store::open_in_memory()?;
//! let objective = Objective::minimize("e2e.mean");
//! let session = store.create_session("demo", "local", "sglang", &objective, &serde_json::json!({}), 0)?;
//! let spec = ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat");
//! store.begin_iteration(session.id, 1, &spec, None, 1_000)?;
//! assert_eq!(store.unfinished(session.id)?, vec![1]);
//!
//! let iteration = Iteration {
//!     number: 1,
//!     spec,
//!     artifact: None,
//!     status: IterationStatus::Ok,
//!     metrics: [("e2e.mean".to_string(), 390.0)].into(),
//!     bench: Default::default(),
//!     analysis: Analysis::default(),
//!     plan: None,
//!     error: None,
//!     started_ns: 1_000,
//!     finished_ns: 2_000,
//!     timings: Default::default(),
//!     round: None,
//! };
//! store.finish_iteration(session.id, &iteration)?;
//! assert_eq!(store.history(session.id)?.iterations, vec![iteration]);
//! assert!(store.unfinished(session.id)?.is_empty());
//! # Ok::<(), autodebug_core::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::secret;
use crate::{
    Analysis, Artifact, BenchSummary, Distribution, Error, History, Iteration, IterationStatus, Objective, Plan,
    RequestRecord, Result, ServiceSpec, Severity, Signal, SignalValue, TimeWindow,
};

/// The file name of the store inside a sessions directory.
pub const DEFAULT_FILE_NAME: &str = "autodebug.db";

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a write waits for another process holding the database before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema migrations; entry `i` takes the database from version `i` to `i + 1`.
/// Append new entries, never edit old ones: databases in the field were built by them.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE sessions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL UNIQUE,
    started_ns     INTEGER NOT NULL,
    started_at     TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    engine         TEXT    NOT NULL,
    objective      TEXT    NOT NULL,
    objective_json TEXT    NOT NULL,
    config_json    TEXT    NOT NULL,
    finished_ns    INTEGER,
    finished_at    TEXT,
    stop_reason    TEXT
);

CREATE TABLE iterations (
    session_id      INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    number          INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    started_ns      INTEGER NOT NULL,
    started_at      TEXT    NOT NULL,
    finished_ns     INTEGER,
    finished_at     TEXT,
    objective_value REAL,
    feasible        INTEGER,
    engine          TEXT    NOT NULL,
    model           TEXT    NOT NULL,
    image           TEXT,
    gpu             TEXT,
    flags           TEXT    NOT NULL,
    error           TEXT,
    planner         TEXT,
    spec_json       TEXT    NOT NULL,
    artifact_json   TEXT,
    metrics_json    TEXT,
    bench_json      TEXT,
    analysis_json   TEXT,
    plan_json       TEXT,
    timings_json    TEXT,
    PRIMARY KEY (session_id, number)
);
CREATE INDEX iterations_by_status ON iterations (session_id, status);

CREATE TABLE iteration_metrics (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    number     INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    value      REAL    NOT NULL,
    PRIMARY KEY (session_id, number, name)
);
CREATE INDEX iteration_metrics_by_name ON iteration_metrics (name);

CREATE TABLE findings (
    session_id    INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    number        INTEGER NOT NULL,
    ordinal       INTEGER NOT NULL,
    rule          TEXT    NOT NULL,
    bottleneck    TEXT    NOT NULL,
    severity      TEXT    NOT NULL,
    summary       TEXT    NOT NULL,
    evidence_json TEXT    NOT NULL,
    PRIMARY KEY (session_id, number, ordinal)
);
CREATE INDEX findings_by_rule ON findings (rule);

CREATE TABLE changes (
    session_id    INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    number        INTEGER NOT NULL,
    ordinal       INTEGER NOT NULL,
    knob          TEXT    NOT NULL,
    from_value    TEXT,
    to_value      TEXT,
    rule          TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    evidence_json TEXT    NOT NULL,
    PRIMARY KEY (session_id, number, ordinal)
);

CREATE TABLE bench_records (
    session_id    INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    number        INTEGER NOT NULL,
    plan_name     TEXT    NOT NULL,
    request_count INTEGER NOT NULL,
    records_json  TEXT    NOT NULL,
    PRIMARY KEY (session_id, number, plan_name)
);
"#,
    r#"
ALTER TABLE iterations ADD COLUMN round INTEGER;
"#,
];

/// One optimization session as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRecord {
    pub id: i64,
    pub name: String,
    pub started_ns: i128,
    /// Deployment backend (`local`, `dstack`, `slurm`, `kubernetes`).
    pub target: String,
    pub engine: String,
    pub objective: Objective,
    /// The run configuration as given to [`Store::create_session`].
    pub config: serde_json::Value,
    pub finished_ns: Option<i128>,
    pub stop_reason: Option<String>,
}

/// The experiment store.
///
/// It holds one `rusqlite::Connection`, which is `Send` but not `Sync`: the session that owns
/// the store uses it from one thread at a time (move it, or put it behind a `Mutex`). Two
/// processes may open the same file; a write waits up to 10 s for the other one's transaction.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// For error messages; `:memory:` for an in-memory store.
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store at `path`, creating parent directories and the schema.
    ///
    /// Errors name `path` and say what to do: an unwritable directory, a file that is not a
    /// SQLite database, a database written by a newer autodebug.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::Store {
                path: path.to_path_buf(),
                message: format!(
                    "cannot create directory {}: {e}; choose a writable sessions directory",
                    parent.display()
                ),
            })?;
        }
        let conn = Connection::open(path).map_err(|e| Error::Store {
            path: path.to_path_buf(),
            message: format!("cannot open the database: {e}; check that the file and its directory are writable"),
        })?;
        Store::init(conn, path.to_path_buf())
    }

    /// Opens the store at `<dir>/autodebug.db`.
    pub fn open_in_dir(dir: &Path) -> Result<Store> {
        Store::open(&dir.join(DEFAULT_FILE_NAME))
    }

    /// A throwaway store for tests and dry runs.
    pub fn open_in_memory() -> Result<Store> {
        let path = PathBuf::from(":memory:");
        let conn =
            Connection::open_in_memory().map_err(|e| Error::Store { path: path.clone(), message: e.to_string() })?;
        Store::init(conn, path)
    }

    fn init(conn: Connection, path: PathBuf) -> Result<Store> {
        let store = Store { conn, path };
        let setup = || -> rusqlite::Result<()> {
            store.conn.busy_timeout(BUSY_TIMEOUT)?;
            // `journal_mode` answers with the mode it settled on (`memory` for in-memory databases).
            let _mode: String = store.conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
            store.conn.pragma_update(None, "synchronous", "NORMAL")?;
            store.conn.pragma_update(None, "foreign_keys", true)?;
            Ok(())
        };
        setup().map_err(|e| {
            store.error(format!("cannot set up the database: {e}; is it a SQLite file written by autodebug?"))
        })?;
        store.migrate()?;
        Ok(store)
    }

    /// Brings the schema up to [`SCHEMA_VERSION`], one migration per transaction.
    fn migrate(&self) -> Result<()> {
        let version = self.schema_version()?;
        if version > SCHEMA_VERSION {
            return Err(self.error(format!(
                "schema version {version} is newer than this autodebug understands ({SCHEMA_VERSION}); \
                 upgrade autodebug or use another sessions directory"
            )));
        }
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let to = from + 1;
            let tx = self.write_tx()?;
            tx.execute_batch(sql)
                .and_then(|_| tx.pragma_update(None, "user_version", to as i64))
                .map_err(|e| self.error(format!("migrating the schema from version {from} to {to}: {e}")))?;
            self.commit(tx, "migrating the schema")?;
            tracing::debug!(path = %self.path.display(), version = to, "experiment store schema migrated");
        }
        Ok(())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32> {
        self.conn
            .query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
            .map(|v| v.max(0) as u32)
            .map_err(|e| self.error(format!("reading the schema version: {e}")))
    }

    /// The database file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a new session. Its name must be new in this database.
    pub fn create_session(
        &self,
        name: &str,
        target: &str,
        engine: &str,
        objective: &Objective,
        config: &serde_json::Value,
        started_ns: i128,
    ) -> Result<SessionRecord> {
        if self.session_by_name(name)?.is_some() {
            return Err(
                self.error(format!("a session named `{name}` already exists; resume it or pick another session name"))
            );
        }
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO sessions (name, started_ns, started_at, target, engine, objective, objective_json, config_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                name,
                self.ns(started_ns, "session start time")?,
                TimeWindow::format_iso(started_ns),
                target,
                engine,
                objective.describe(),
                self.encode_json(objective, "objective")?,
                self.encode_json(&redacted_config(config), "config")?,
            ],
        )
        .map_err(|e| self.error(format!("creating session `{name}`: {e}")))?;
        let id = tx.last_insert_rowid();
        self.commit(tx, "creating a session")?;
        Ok(SessionRecord {
            id,
            name: name.to_string(),
            started_ns,
            target: target.to_string(),
            engine: engine.to_string(),
            objective: objective.clone(),
            config: config.clone(),
            finished_ns: None,
            stop_reason: None,
        })
    }

    pub fn session(&self, id: i64) -> Result<Option<SessionRecord>> {
        self.query_sessions("WHERE id = ?1", params![id]).map(|mut v| v.pop())
    }

    pub fn session_by_name(&self, name: &str) -> Result<Option<SessionRecord>> {
        self.query_sessions("WHERE name = ?1", params![name]).map(|mut v| v.pop())
    }

    /// The most recently started session (the highest id on a tie).
    pub fn latest_session(&self) -> Result<Option<SessionRecord>> {
        self.query_sessions("ORDER BY started_ns DESC, id DESC LIMIT 1", []).map(|mut v| v.pop())
    }

    /// The session named `name`, or the latest one when `name` is `None`; when there is none, an
    /// error naming this store and the sessions it holds.
    pub fn find_session(&self, name: Option<&str>) -> Result<SessionRecord> {
        let found = match name {
            Some(name) => self.session_by_name(name)?,
            None => self.latest_session()?,
        };
        found.ok_or_else(|| {
            let known: Vec<String> =
                self.sessions().map(|s| s.into_iter().map(|s| s.name).collect()).unwrap_or_default();
            let message = match name {
                Some(name) if known.is_empty() => format!("no session named `{name}`; the store holds none yet"),
                Some(name) => format!("no session named `{name}`; sessions here: {}", known.join(", ")),
                None => "the store holds no session yet; run `autodebug demo` or `autodebug run` first".to_string(),
            };
            Error::Store { path: self.path.clone(), message }
        })
    }

    /// All sessions, oldest first.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.query_sessions("ORDER BY started_ns, id", [])
    }

    /// Records that the session ended and why (`budget`, `converged`, `interrupted`, ...).
    pub fn finish_session(&self, id: i64, finished_ns: i128, stop_reason: &str) -> Result<()> {
        let tx = self.write_tx()?;
        let updated = tx
            .execute(
                "UPDATE sessions SET finished_ns = ?2, finished_at = ?3, stop_reason = ?4 WHERE id = ?1",
                params![
                    id,
                    self.ns(finished_ns, "session finish time")?,
                    TimeWindow::format_iso(finished_ns),
                    stop_reason
                ],
            )
            .map_err(|e| self.error(format!("finishing session {id}: {e}")))?;
        if updated == 0 {
            return Err(self.no_session(id));
        }
        self.commit(tx, "finishing a session")
    }

    /// Records that iteration `number` started (status Running) with its spec and rendered artifact.
    ///
    /// Starting an iteration that was left Running or Interrupted replaces it (and drops bench
    /// records saved for it); starting one that already finished otherwise is an error, so no
    /// result is overwritten by accident.
    pub fn begin_iteration(
        &self,
        session: i64,
        number: u32,
        spec: &ServiceSpec,
        artifact: Option<&Artifact>,
        started_ns: i128,
    ) -> Result<()> {
        // Secrets never reach the file: the stored spec holds `***` where they were.
        let spec = &secret::redact_spec(spec);
        let tx = self.write_tx()?;
        self.require_session(&tx, session)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT status FROM iterations WHERE session_id = ?1 AND number = ?2",
                params![session, number],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(format!("reading iteration {number} of session {session}: {e}")))?;
        let redoable = [IterationStatus::Running.as_str(), IterationStatus::Interrupted.as_str()];
        if let Some(status) = existing.filter(|s| !redoable.contains(&s.as_str())) {
            return Err(self.error(format!(
                "iteration {number} of session {session} already finished ({status}); start iteration {} instead",
                number + 1
            )));
        }
        let artifact_json = artifact.map(|a| self.encode_json(a, "artifact")).transpose()?;
        let write = || -> rusqlite::Result<()> {
            tx.execute("DELETE FROM iterations WHERE session_id = ?1 AND number = ?2", params![session, number])?;
            tx.execute("DELETE FROM bench_records WHERE session_id = ?1 AND number = ?2", params![session, number])?;
            Ok(())
        };
        write().map_err(|e| self.error(format!("clearing iteration {number} of session {session}: {e}")))?;
        tx.execute(
            "INSERT INTO iterations (session_id, number, status, started_ns, started_at, engine, model, image, gpu,
                                     flags, spec_json, artifact_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                session,
                number,
                IterationStatus::Running.as_str(),
                self.ns(started_ns, "iteration start time")?,
                TimeWindow::format_iso(started_ns),
                spec.engine.as_str(),
                spec.model,
                spec.image,
                spec.resources.gpu,
                spec.flags.to_command_line(),
                self.encode_json(spec, "spec")?,
                artifact_json,
            ],
        )
        .map_err(|e| self.error(format!("recording the start of iteration {number} of session {session}: {e}")))?;
        self.commit(tx, "recording the start of an iteration")
    }

    /// Writes the whole finished iteration (status, metrics, bench summaries, analysis with
    /// findings and citations, plan, error, timings) in ONE transaction, replacing the Running row.
    ///
    /// The objective value and feasibility columns are computed with the session's objective.
    /// Bench records saved for the iteration are kept.
    pub fn finish_iteration(&self, session: i64, iteration: &Iteration) -> Result<()> {
        let number = iteration.number;
        let record = redacted(json_safe(iteration));
        let tx = self.write_tx()?;
        let objective = self
            .query_sessions_in(&tx, "WHERE id = ?1", params![session])?
            .pop()
            .ok_or_else(|| self.no_session(session))?
            .objective;
        let context = |what: &str, e: rusqlite::Error| {
            self.error(format!("writing {what} of iteration {number} of session {session}: {e}"))
        };
        for table in ["iterations", "iteration_metrics", "findings", "changes"] {
            tx.execute(&format!("DELETE FROM {table} WHERE session_id = ?1 AND number = ?2"), params![session, number])
                .map_err(|e| context(table, e))?;
        }
        let objective_value = objective.value(&record.metrics);
        let feasible = record.is_ok() && objective.is_feasible(&record.metrics);
        tx.execute(
            "INSERT INTO iterations (session_id, number, status, started_ns, started_at, finished_ns, finished_at,
                                     objective_value, feasible, engine, model, image, gpu, flags, error, planner,
                                     spec_json, artifact_json, metrics_json, bench_json, analysis_json, plan_json,
                                     timings_json, round)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
                     ?22, ?23, ?24)",
            params![
                session,
                number,
                record.status.as_str(),
                self.ns(record.started_ns, "iteration start time")?,
                TimeWindow::format_iso(record.started_ns),
                self.ns(record.finished_ns, "iteration finish time")?,
                TimeWindow::format_iso(record.finished_ns),
                objective_value,
                feasible,
                record.spec.engine.as_str(),
                record.spec.model,
                record.spec.image,
                record.spec.resources.gpu,
                record.spec.flags.to_command_line(),
                record.error,
                record.plan.as_ref().map(|p| p.planner.as_str()),
                self.encode_json(&record.spec, "spec")?,
                record.artifact.as_ref().map(|a| self.encode_json(a, "artifact")).transpose()?,
                self.encode_json(&record.metrics, "metrics")?,
                self.encode_json(&record.bench, "bench summaries")?,
                self.encode_json(&record.analysis, "analysis")?,
                record.plan.as_ref().map(|p| self.encode_json(p, "plan")).transpose()?,
                self.encode_json(&record.timings, "timings")?,
                record.round,
            ],
        )
        .map_err(|e| context("the iteration row", e))?;
        {
            let mut insert = tx
                .prepare("INSERT INTO iteration_metrics (session_id, number, name, value) VALUES (?1, ?2, ?3, ?4)")
                .map_err(|e| context("metrics", e))?;
            for (name, value) in &record.metrics {
                insert.execute(params![session, number, name, value]).map_err(|e| context("metrics", e))?;
            }
            let mut insert = tx
                .prepare(
                    "INSERT INTO findings (session_id, number, ordinal, rule, bottleneck, severity, summary, evidence_json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(|e| context("findings", e))?;
            for (ordinal, finding) in record.analysis.findings.iter().enumerate() {
                insert
                    .execute(params![
                        session,
                        number,
                        ordinal as i64,
                        finding.rule,
                        finding.bottleneck.as_str(),
                        severity_name(finding.severity),
                        secret::redact(&finding.summary),
                        self.encode_json(&finding.evidence, "finding evidence")?,
                    ])
                    .map_err(|e| context("findings", e))?;
            }
            let mut insert = tx
                .prepare(
                    "INSERT INTO changes (session_id, number, ordinal, knob, from_value, to_value, rule, reason, evidence_json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(|e| context("planned changes", e))?;
            for (ordinal, change) in record.plan.iter().flat_map(|p| p.changes.iter()).enumerate() {
                insert
                    .execute(params![
                        session,
                        number,
                        ordinal as i64,
                        change.knob,
                        change.from,
                        change.to,
                        change.rule,
                        change.reason,
                        self.encode_json(&change.evidence, "change evidence")?,
                    ])
                    .map_err(|e| context("planned changes", e))?;
            }
        }
        self.commit(tx, "finishing an iteration")
    }

    /// Stores the per-request records of one bench plan of an iteration (for CDF plots later):
    /// one row per bench report, replacing an earlier one with the same plan name.
    pub fn save_bench_records(
        &self,
        session: i64,
        number: u32,
        plan_name: &str,
        records: &[RequestRecord],
    ) -> Result<()> {
        let tx = self.write_tx()?;
        self.require_session(&tx, session)?;
        tx.execute(
            "INSERT INTO bench_records (session_id, number, plan_name, request_count, records_json)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (session_id, number, plan_name)
             DO UPDATE SET request_count = excluded.request_count, records_json = excluded.records_json",
            params![session, number, plan_name, records.len() as i64, self.encode_json(records, "bench records")?],
        )
        .map_err(|e| {
            self.error(format!(
                "saving bench records of plan `{plan_name}`, iteration {number} of session {session}: {e}"
            ))
        })?;
        self.commit(tx, "saving bench records")
    }

    /// The per-request records saved for a bench plan of an iteration; empty when none were saved.
    pub fn bench_records(&self, session: i64, number: u32, plan_name: &str) -> Result<Vec<RequestRecord>> {
        let what = format!("bench records of plan `{plan_name}`, iteration {number} of session {session}");
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT records_json FROM bench_records WHERE session_id = ?1 AND number = ?2 AND plan_name = ?3",
                params![session, number, plan_name],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(format!("reading {what}: {e}")))?;
        match json {
            None => Ok(Vec::new()),
            Some(json) => self.decode_json(&json, &what),
        }
    }

    /// The plan names that have bench records for an iteration, sorted.
    pub fn bench_plans(&self, session: i64, number: u32) -> Result<Vec<String>> {
        let read = || -> rusqlite::Result<Vec<String>> {
            let mut stmt = self.conn.prepare(
                "SELECT plan_name FROM bench_records WHERE session_id = ?1 AND number = ?2 ORDER BY plan_name",
            )?;
            stmt.query_map(params![session, number], |row| row.get(0))?.collect()
        };
        read().map_err(|e| self.error(format!("listing bench records of iteration {number} of session {session}: {e}")))
    }

    /// Finished iterations in order (Running ones excluded: resume redoes them).
    pub fn history(&self, session: i64) -> Result<History> {
        let iterations =
            self.query_iterations("WHERE session_id = ?1 AND status != 'running' ORDER BY number", params![session])?;
        Ok(History { iterations })
    }

    /// One iteration in any state; a Running one has its spec, artifact and start time only.
    pub fn iteration(&self, session: i64, number: u32) -> Result<Option<Iteration>> {
        self.query_iterations("WHERE session_id = ?1 AND number = ?2", params![session, number]).map(|mut v| v.pop())
    }

    /// Iterations left Running by a killed process, in order.
    pub fn unfinished(&self, session: i64) -> Result<Vec<u32>> {
        let read = || -> rusqlite::Result<Vec<u32>> {
            let mut stmt = self.conn.prepare(
                "SELECT number FROM iterations WHERE session_id = ?1 AND status = 'running' ORDER BY number",
            )?;
            stmt.query_map(params![session], |row| row.get(0))?.collect()
        };
        read().map_err(|e| self.error(format!("listing unfinished iterations of session {session}: {e}")))
    }

    /// The best feasible finished iteration under the session's objective (ties go to the earliest).
    pub fn champion(&self, session: i64) -> Result<Option<Iteration>> {
        let record = self.session(session)?.ok_or_else(|| self.no_session(session))?;
        Ok(self.history(session)?.champion(&record.objective).cloned())
    }

    /// The champion configuration of the most recent finished session on this model and GPU type
    /// (`H100` matches `H100:1` and `H100:80GB:2`), as the known-good start of a new session.
    pub fn known_good(&self, model: &str, gpu: &str) -> Result<Option<ServiceSpec>> {
        let gpu_name = |spec: &ServiceSpec| spec.resources.gpu_name_and_count().map(|(name, _)| name);
        let wanted = gpu.split(':').next().unwrap_or(gpu);
        let finished = self.query_sessions("WHERE finished_ns IS NOT NULL ORDER BY started_ns DESC, id DESC", [])?;
        for session in finished {
            if let Some(champion) = self.history(session.id)?.champion(&session.objective)
                && champion.spec.model == model
                && gpu_name(&champion.spec).is_some_and(|name| name.eq_ignore_ascii_case(wanted))
            {
                return Ok(Some(champion.spec.clone()));
            }
        }
        Ok(None)
    }

    // ---- helpers ----

    fn error(&self, message: impl Into<String>) -> Error {
        Error::Store { path: self.path.clone(), message: message.into() }
    }

    fn no_session(&self, id: i64) -> Error {
        self.error(format!("no session with id {id}; list sessions to find the right one"))
    }

    /// An IMMEDIATE transaction: it takes the write lock up front, so a concurrent writer waits
    /// (busy timeout) instead of failing half-way through.
    fn write_tx(&self) -> Result<Transaction<'_>> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.error(format!("starting a write: {e}; is another process holding the database?")))
    }

    fn commit(&self, tx: Transaction<'_>, what: &str) -> Result<()> {
        tx.commit().map_err(|e| self.error(format!("committing ({what}): {e}")))
    }

    fn require_session(&self, conn: &Connection, session: i64) -> Result<()> {
        let found: Option<i64> = conn
            .query_row("SELECT id FROM sessions WHERE id = ?1", params![session], |row| row.get(0))
            .optional()
            .map_err(|e| self.error(format!("looking up session {session}: {e}")))?;
        found.map(|_| ()).ok_or_else(|| self.no_session(session))
    }

    /// SQLite integers are 64-bit: ns timestamps fit until the year 2262.
    fn ns(&self, value: i128, what: &str) -> Result<i64> {
        i64::try_from(value).map_err(|_| self.error(format!("{what} {value} ns does not fit in a 64-bit column")))
    }

    /// Every JSON column goes through here: registered secret values are masked in its text (specs
    /// were redacted by name before; a round trip through `serde_json::Value` would reorder keys).
    fn encode_json<T: Serialize + ?Sized>(&self, value: &T, what: &str) -> Result<String> {
        let json = serde_json::to_string(value).map_err(|e| self.error(format!("encoding {what} as JSON: {e}")))?;
        Ok(secret::redact(&json).into_owned())
    }

    fn decode_json<T: DeserializeOwned>(&self, json: &str, what: &str) -> Result<T> {
        serde_json::from_str(json).map_err(|e| {
            self.error(format!(
                "decoding {what}: {e}; the row was edited by hand or written by an incompatible autodebug"
            ))
        })
    }

    fn query_sessions<P: rusqlite::Params>(&self, clause: &str, params: P) -> Result<Vec<SessionRecord>> {
        self.query_sessions_in(&self.conn, clause, params)
    }

    fn query_sessions_in<P: rusqlite::Params>(
        &self,
        conn: &Connection,
        clause: &str,
        params: P,
    ) -> Result<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT id, name, started_ns, target, engine, objective_json, config_json, finished_ns, stop_reason
             FROM sessions {clause}"
        );
        let rows = (|| -> rusqlite::Result<Vec<SessionRow>> {
            let mut stmt = conn.prepare(&sql)?;
            stmt.query_map(params, SessionRow::read)?.collect()
        })()
        .map_err(|e| self.error(format!("reading sessions: {e}")))?;
        rows.into_iter()
            .map(|row| {
                let what = |column: &str| format!("column {column} of session {} (`{}`)", row.id, row.name);
                Ok(SessionRecord {
                    objective: self.decode_json(&row.objective_json, &what("objective_json"))?,
                    config: self.decode_json(&row.config_json, &what("config_json"))?,
                    id: row.id,
                    name: row.name,
                    started_ns: row.started_ns.into(),
                    target: row.target,
                    engine: row.engine,
                    finished_ns: row.finished_ns.map(Into::into),
                    stop_reason: row.stop_reason,
                })
            })
            .collect()
    }

    fn query_iterations<P: rusqlite::Params>(&self, clause: &str, params: P) -> Result<Vec<Iteration>> {
        let sql = format!(
            "SELECT session_id, number, status, started_ns, finished_ns, error, spec_json, artifact_json, metrics_json,
                    bench_json, analysis_json, plan_json, timings_json, round
             FROM iterations {clause}"
        );
        let rows = (|| -> rusqlite::Result<Vec<IterationRow>> {
            let mut stmt = self.conn.prepare(&sql)?;
            stmt.query_map(params, IterationRow::read)?.collect()
        })()
        .map_err(|e| self.error(format!("reading iterations: {e}")))?;
        rows.into_iter().map(|row| self.decode_iteration(row)).collect()
    }

    fn decode_iteration(&self, row: IterationRow) -> Result<Iteration> {
        let what = |column: &str| format!("column {column} of iteration {} of session {}", row.number, row.session_id);
        let status = IterationStatus::parse(&row.status)
            .ok_or_else(|| self.error(format!("{}: unknown status `{}`", what("status"), row.status)))?;
        fn optional<T: DeserializeOwned>(store: &Store, json: Option<&str>, what: &str) -> Result<Option<T>> {
            json.map(|j| store.decode_json(j, what)).transpose()
        }
        Ok(Iteration {
            number: row.number,
            spec: self.decode_json(&row.spec_json, &what("spec_json"))?,
            artifact: optional(self, row.artifact_json.as_deref(), &what("artifact_json"))?,
            status,
            metrics: optional(self, row.metrics_json.as_deref(), &what("metrics_json"))?.unwrap_or_default(),
            bench: optional(self, row.bench_json.as_deref(), &what("bench_json"))?.unwrap_or_default(),
            analysis: optional::<Analysis>(self, row.analysis_json.as_deref(), &what("analysis_json"))?
                .unwrap_or_default(),
            plan: optional::<Plan>(self, row.plan_json.as_deref(), &what("plan_json"))?,
            error: row.error,
            started_ns: row.started_ns.into(),
            // A Running row has no finish time yet; its start stands in so durations read as zero.
            finished_ns: row.finished_ns.unwrap_or(row.started_ns).into(),
            timings: optional(self, row.timings_json.as_deref(), &what("timings_json"))?.unwrap_or_default(),
            round: row.round,
        })
    }
}

/// A sessions row as stored, before its JSON columns are decoded.
struct SessionRow {
    id: i64,
    name: String,
    started_ns: i64,
    target: String,
    engine: String,
    objective_json: String,
    config_json: String,
    finished_ns: Option<i64>,
    stop_reason: Option<String>,
}

impl SessionRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(SessionRow {
            id: row.get(0)?,
            name: row.get(1)?,
            started_ns: row.get(2)?,
            target: row.get(3)?,
            engine: row.get(4)?,
            objective_json: row.get(5)?,
            config_json: row.get(6)?,
            finished_ns: row.get(7)?,
            stop_reason: row.get(8)?,
        })
    }
}

/// An iterations row as stored, before its JSON columns are decoded.
struct IterationRow {
    session_id: i64,
    number: u32,
    status: String,
    started_ns: i64,
    finished_ns: Option<i64>,
    error: Option<String>,
    spec_json: String,
    artifact_json: Option<String>,
    metrics_json: Option<String>,
    bench_json: Option<String>,
    analysis_json: Option<String>,
    plan_json: Option<String>,
    timings_json: Option<String>,
    round: Option<u32>,
}

impl IterationRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(IterationRow {
            session_id: row.get(0)?,
            number: row.get(1)?,
            status: row.get(2)?,
            started_ns: row.get(3)?,
            finished_ns: row.get(4)?,
            error: row.get(5)?,
            spec_json: row.get(6)?,
            artifact_json: row.get(7)?,
            metrics_json: row.get(8)?,
            bench_json: row.get(9)?,
            analysis_json: row.get(10)?,
            plan_json: row.get(11)?,
            timings_json: row.get(12)?,
            round: row.get(13)?,
        })
    }
}

/// A copy of `iteration` that JSON can hold: see the module documentation for what happens to
/// NaN and infinities.
/// The session's configuration as it may be stored: strings under secret keys (`api_key`) masked.
fn redacted_config(config: &serde_json::Value) -> serde_json::Value {
    let mut config = config.clone();
    secret::redact_json(&mut config);
    config
}

/// `iteration` as it may be stored: its spec and planned spec with secrets masked
/// ([`secret::redact_spec`]), and registered secret values masked in its free text.
fn redacted(mut iteration: Iteration) -> Iteration {
    iteration.spec = secret::redact_spec(&iteration.spec);
    if let Some(plan) = iteration.plan.as_mut() {
        plan.next = secret::redact_spec(&plan.next);
        for change in &mut plan.changes {
            let secret_knob = secret::is_secret_name(&change.knob);
            for value in [&mut change.from, &mut change.to].into_iter().flatten() {
                *value = if secret_knob { secret::MASK.to_string() } else { secret::redact(value).into_owned() };
            }
            change.reason = secret::redact(&change.reason).into_owned();
        }
    }
    iteration.error = iteration.error.as_deref().map(|e| secret::redact(e).into_owned());
    iteration
}

fn json_safe(iteration: &Iteration) -> Iteration {
    let mut out = iteration.clone();
    finite_map(&mut out.metrics, "metric");
    finite_map(&mut out.timings, "timing");
    finite_map(&mut out.analysis.metrics, "analysis metric");
    for summary in out.bench.values_mut() {
        finite_summary(summary);
    }
    for signal in out.analysis.cited.iter_mut() {
        finite_signal(signal);
    }
    for finding in out.analysis.findings.iter_mut() {
        finding.evidence.iter_mut().for_each(finite_signal);
    }
    if let Some(plan) = out.plan.as_mut() {
        for change in plan.changes.iter_mut() {
            change.evidence.iter_mut().for_each(finite_signal);
        }
    }
    out
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn finite_map(map: &mut BTreeMap<String, f64>, what: &str) {
    map.retain(|name, value| {
        let keep = value.is_finite();
        if !keep {
            tracing::warn!(%name, value = %value, "{what} is not a finite number; not stored");
        }
        keep
    });
}

fn finite_signal(signal: &mut Signal) {
    if let SignalValue::Number(v) = signal.value
        && !v.is_finite()
    {
        signal.value = SignalValue::Text(v.to_string());
    }
    if signal.count.is_some_and(|c| !c.is_finite()) {
        signal.count = None;
    }
}

fn finite_summary(summary: &mut BenchSummary) {
    let fix = |name: &str, value: &mut f64| {
        if !value.is_finite() {
            tracing::warn!(figure = name, value = %value, "bench summary figure is not a finite number; stored as 0");
            *value = 0.0;
        }
    };
    fix("duration_s", &mut summary.duration_s);
    fix("request_throughput", &mut summary.request_throughput);
    fix("output_throughput", &mut summary.output_throughput);
    fix("total_token_throughput", &mut summary.total_token_throughput);
    if let Some(ratio) = summary.cached_token_ratio.as_mut() {
        fix("cached_token_ratio", ratio);
    }
    let distributions: [(&str, &mut Distribution); 7] = [
        ("ttft_ms", &mut summary.ttft_ms),
        ("ttst_ms", &mut summary.ttst_ms),
        ("tpot_ms", &mut summary.tpot_ms),
        ("itl_ms", &mut summary.itl_ms),
        ("inter_chunk_ms", &mut summary.inter_chunk_ms),
        ("e2e_ms", &mut summary.e2e_ms),
        ("queue_delay_ms", &mut summary.queue_delay_ms),
    ];
    for (name, d) in distributions {
        for value in [
            &mut d.mean,
            &mut d.std,
            &mut d.min,
            &mut d.p50,
            &mut d.p90,
            &mut d.p95,
            &mut d.p99,
            &mut d.p999,
            &mut d.max,
        ] {
            fix(name, value);
        }
    }
}
