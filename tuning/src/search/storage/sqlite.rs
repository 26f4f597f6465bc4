//! SQLite: a study file shared by the processes of one machine, in Optuna's schema (the same
//! `CREATE` statements Optuna's SQLAlchemy models produce, byte for byte).
//!
//! The file runs in WAL mode (readers never block the writer) with a busy timeout; changing the
//! journal mode and creating the schema are retried on `SQLITE_BUSY`, so processes opening a new
//! file together all succeed. Writes take the write lock when they begin (`BEGIN IMMEDIATE`), which
//! is the study's lock: trial numbers are counted under it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode};
use serde_json::Value;

use super::rdb::{Backend, Conn, DbError, DbErrorKind, RdbStorage, Sealed, Sql};
use super::timefmt;
use crate::search::error::SearchError;
use crate::search::{Distribution, ParamValue};

/// Optuna's schema for SQLite (`sqlite_master` of a storage Optuna 5.1 created).
const SCHEMA: &str = include_str!("optuna_sqlite.sql");
/// The alembic revision of that schema (the head of Optuna 3.2 to 5.1).
pub(crate) const ALEMBIC_HEAD: &str = "v3.2.0.a";
/// `version_info`: Optuna's frozen schema number and the release whose schema this is (Optuna
/// only shows it in messages).
pub(crate) const VERSION_INFO: (i64, &str) = (12, "5.1.0");
/// The tables of the schema.
pub(crate) const TABLES: [&str; 13] = [
    "studies",
    "version_info",
    "study_directions",
    "study_user_attributes",
    "study_system_attributes",
    "trials",
    "trial_user_attributes",
    "trial_system_attributes",
    "trial_params",
    "trial_values",
    "trial_intermediate_values",
    "trial_heartbeats",
    "alembic_version",
];

/// The SQLite engine (see [`SqliteStorage`]).
pub struct Sqlite {
    path: PathBuf,
    busy_timeout: Duration,
}

impl Sealed for Sqlite {}

/// A study store in an SQLite file: `SqliteStorage::open(path)`.
///
/// ```
/// use std::sync::Arc;
/// use ferrograd_tuning::search::{SqliteStorage, Study, SearchError};
/// let path = std::env::temp_dir().join(format!("doc_storage_{}.db", std::process::id()));
/// let storage = Arc::new(SqliteStorage::open(&path)?);
/// let study = Study::builder().storage(storage.clone()).create("demo")?;
/// study.optimize(3, |t| t.suggest_float("x", 0.0, 1.0, false))?;
/// // The same file opens in Python: optuna.load_study(study_name="demo", storage=f"sqlite:///{path}")
/// assert_eq!(Study::builder().storage(storage).load("demo")?.trials().len(), 3);
/// # for ext in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{ext}", path.display())); }
/// # Ok::<(), SearchError>(())
/// ```
pub type SqliteStorage = RdbStorage<Sqlite>;

/// A connection to the file.
pub struct SqliteConn {
    conn: Connection,
}

fn db_error(e: rusqlite::Error) -> DbError {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => DbErrorKind::Transient,
            ErrorCode::ConstraintViolation
                if matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                DbErrorKind::Unique
            }
            _ => DbErrorKind::Other,
        },
        _ => DbErrorKind::Other,
    };
    DbError { message: e.to_string(), kind }
}

/// The statement for SQLite: tokens expanded, PostgreSQL's parameter casts dropped.
fn translate(sql: &str) -> String {
    let sql = sql
        .replace("{now}", "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')")
        .replace("{ids}", "(SELECT value FROM json_each(?))")
        .replace("{lock}", "");
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql.as_str();
    while let Some(i) = rest.find("CAST(? AS ") {
        out.push_str(&rest[..i]);
        out.push('?');
        let tail = &rest[i..];
        rest = &tail[tail.find(')').map_or(tail.len(), |j| j + 1)..];
        // `VARCHAR(512)` closes twice.
        if tail.starts_with("CAST(? AS VARCHAR(") {
            rest = &rest[rest.find(')').map_or(rest.len(), |j| j + 1)..];
        }
    }
    out.push_str(rest);
    out
}

impl rusqlite::ToSql for Sql {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Sql::Null => ToSqlOutput::from(rusqlite::types::Null),
            Sql::Int(i) => ToSqlOutput::from(*i),
            Sql::Real(x) => ToSqlOutput::from(*x),
            Sql::Text(s) => ToSqlOutput::from(s.as_str()),
            Sql::Time(t) => ToSqlOutput::from(timefmt::format(*t)),
            Sql::Ids(ids) => ToSqlOutput::from(serde_json::to_string(ids).expect("integers serialise")),
        })
    }
}

fn from_ref(v: ValueRef<'_>) -> Sql {
    match v {
        ValueRef::Null => Sql::Null,
        ValueRef::Integer(i) => Sql::Int(i),
        ValueRef::Real(x) => Sql::Real(x),
        ValueRef::Text(t) | ValueRef::Blob(t) => Sql::Text(String::from_utf8_lossy(t).into_owned()),
    }
}

impl Conn for SqliteConn {
    fn execute(&mut self, sql: &str, params: &[Sql]) -> Result<u64, DbError> {
        let mut stmt = self.conn.prepare_cached(&translate(sql)).map_err(db_error)?;
        stmt.execute(rusqlite::params_from_iter(params)).map(|n| n as u64).map_err(db_error)
    }

    fn query(&mut self, sql: &str, params: &[Sql]) -> Result<Vec<Vec<Sql>>, DbError> {
        let mut stmt = self.conn.prepare_cached(&translate(sql)).map_err(db_error)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(db_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_error)? {
            out.push((0..n).map(|i| row.get_ref(i).map(from_ref)).collect::<Result<_, _>>().map_err(db_error)?);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn.execute_batch(sql).map_err(db_error)
    }

    fn broken(&self) -> bool {
        false
    }
}

impl Backend for Sqlite {
    type Conn = SqliteConn;
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    fn connect(&self) -> Result<SqliteConn, DbError> {
        let conn = Connection::open(&self.path).map_err(db_error)?;
        conn.busy_timeout(self.busy_timeout).map_err(db_error)?;
        // In WAL mode NORMAL stays consistent if a process dies (only a power loss may drop the
        // last commits) and avoids an fsync per statement.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db_error)?;
        Ok(SqliteConn { conn })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn error(&self, message: String) -> SearchError {
        SearchError::Storage { path: self.path.clone(), message }
    }
}

/// What a database holds.
pub(crate) enum Found {
    /// No tables: the schema is to be created.
    Empty,
    /// Optuna's schema at the revision this version reads.
    Optuna,
}

/// Retries `f` on `SQLITE_BUSY` (which the busy timeout does not cover for a journal-mode change)
/// with a bounded backoff.
fn on_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let mut wait = Duration::from_millis(2);
    let start = std::time::Instant::now();
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && start.elapsed() < Duration::from_secs(60) =>
            {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

impl RdbStorage<Sqlite> {
    /// Opens the study store in the SQLite file at `path`, creating the file and Optuna's schema
    /// if needed (busy timeout 30 s).
    ///
    /// Errors ([`SearchError`]): `Storage` for a file that is not an SQLite database (it is left
    /// untouched) or cannot be opened; `ForeignDatabase` for a database of something else;
    /// `SchemaVersion` for another Optuna schema version or ferrograd's schema before Optuna's
    /// (see [`migrate_legacy`](Self::migrate_legacy)).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStorage, SearchError> {
        Self::open_with_busy_timeout(path, Duration::from_secs(30))
    }

    /// [`open`](Self::open) with how long a statement waits for another process's lock before
    /// it fails and is retried (with backoff, a bounded number of times).
    pub fn open_with_busy_timeout(
        path: impl AsRef<Path>,
        busy_timeout: Duration,
    ) -> Result<SqliteStorage, SearchError> {
        let backend = Sqlite { path: path.as_ref().to_path_buf(), busy_timeout };
        let storage_err = |e: rusqlite::Error| backend.error(e.to_string());
        let mut conn = backend.connect().map_err(|e| backend.error(e.message))?;
        match classify(&backend, &conn.conn)? {
            Found::Optuna => {}
            Found::Empty => {
                on_busy(|| conn.conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)))
                    .map_err(storage_err)?;
                on_busy(|| {
                    let tx = conn.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let n: i64 = tx.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))?;
                    if n == 0 {
                        tx.execute_batch(SCHEMA)?;
                        tx.execute(
                            "INSERT INTO version_info (version_info_id, schema_version, library_version) VALUES (1, ?1, ?2)",
                            rusqlite::params![VERSION_INFO.0, VERSION_INFO.1],
                        )?;
                        tx.execute("INSERT INTO alembic_version (version_num) VALUES (?1)", [ALEMBIC_HEAD])?;
                    }
                    tx.commit()
                })
                .map_err(storage_err)?;
                if let Found::Empty = classify(&backend, &conn.conn)? {
                    return Err(backend.error("the schema could not be created".into()));
                }
            }
        }
        let mode: String =
            on_busy(|| conn.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))).map_err(storage_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            on_busy(|| conn.conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)))
                .map_err(storage_err)?;
        }
        let storage = RdbStorage::with_backend(backend);
        storage.put(conn);
        Ok(storage)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.backend.path
    }

    /// Rewrites a file in ferrograd's schema before Optuna's (the `ferrograd_meta`, `studies`,
    /// `trials`, `params` and `intermediate` tables) into Optuna's, in one transaction: every
    /// study, trial, parameter, value, intermediate value and failure reason is kept; trials left
    /// running are marked failed. A file already in Optuna's schema is left as it is.
    pub fn migrate_legacy(path: impl AsRef<Path>) -> Result<(), SearchError> {
        let backend = Sqlite { path: path.as_ref().to_path_buf(), busy_timeout: Duration::from_secs(30) };
        let conn = backend.connect().map_err(|e| backend.error(e.message))?.conn;
        let err = |e: rusqlite::Error| backend.error(e.to_string());
        on_busy(|| conn.execute_batch("BEGIN IMMEDIATE")).map_err(err)?;
        let result = match legacy_tag(&conn).map_err(err) {
            // Nothing to migrate: an Optuna file (or an empty one) is fine, anything else refused.
            Ok(false) => classify(&backend, &conn).map(drop),
            Ok(true) => migrate(&backend, &conn),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => conn.execute_batch("COMMIT").map_err(err),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Whether the file holds ferrograd's legacy schema.
fn legacy_tag(conn: &Connection) -> rusqlite::Result<bool> {
    let has: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'ferrograd_meta'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        return Ok(false);
    }
    let tag: Option<String> =
        conn.query_row("SELECT value FROM ferrograd_meta WHERE key = 'schema'", [], |r| r.get(0)).ok();
    Ok(tag.as_deref() == Some("ferrograd-search-1"))
}

/// What the file holds, or the error for a file that is not ours to use.
fn classify(backend: &Sqlite, conn: &Connection) -> Result<Found, SearchError> {
    let err = |e: rusqlite::Error| backend.error(e.to_string());
    let tables: Vec<String> = on_busy(|| {
        let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
        let names = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>();
        names
    })
    .map_err(err)?;
    let version: Option<String> = if tables.iter().any(|t| t == "alembic_version") {
        on_busy(|| conn.query_row("SELECT version_num FROM alembic_version", [], |r| r.get(0))).ok()
    } else {
        None
    };
    check_schema(&backend.location(), &tables, version.as_deref())
}

/// What a database with `tables` (and alembic revision `version`) holds, or why it is refused.
pub(crate) fn check_schema(location: &str, tables: &[String], version: Option<&str>) -> Result<Found, SearchError> {
    if tables.is_empty() {
        return Ok(Found::Empty);
    }
    if tables.iter().any(|t| t == "ferrograd_meta") {
        return Err(SearchError::SchemaVersion {
            location: location.to_string(),
            message: "a study file in ferrograd's schema before Optuna's; convert it once with \
                      `SqliteStorage::migrate_legacy(path)`"
                .into(),
        });
    }
    let foreign = || SearchError::ForeignDatabase { path: PathBuf::from(location) };
    match version {
        Some(ALEMBIC_HEAD) if TABLES.iter().all(|t| tables.iter().any(|x| x == t)) => Ok(Found::Optuna),
        Some(v) if v != ALEMBIC_HEAD => Err(SearchError::SchemaVersion {
            location: location.to_string(),
            message: format!(
                "Optuna schema revision {v}, this version reads {ALEMBIC_HEAD}; upgrade the database with \
                 `optuna storage upgrade --storage URL` (or use a matching Optuna)"
            ),
        }),
        _ => Err(foreign()),
    }
}

/// A legacy parameter value (`f:0.5`, `i:3`, `c:relu`).
fn legacy_value(s: &str) -> Option<ParamValue> {
    let (kind, rest) = s.split_once(':')?;
    match kind {
        "f" => rest.parse().ok().map(ParamValue::Float),
        "i" => rest.parse().ok().map(ParamValue::Int),
        "c" => Some(ParamValue::Categorical(rest.to_string())),
        _ => None,
    }
}

/// A legacy distribution (`["float", low, high, log, step]`, `["int", low, high, step, log]`,
/// `["categorical", [choices]]`).
fn legacy_dist(s: &str) -> Option<Distribution> {
    let v: Value = serde_json::from_str(s).ok()?;
    let a = v.as_array()?;
    match a.first()?.as_str()? {
        "float" => Some(Distribution::Float {
            low: a.get(1)?.as_f64()?,
            high: a.get(2)?.as_f64()?,
            log: a.get(3)?.as_bool()?,
            step: a.get(4)?.as_f64(),
        }),
        "int" => Some(Distribution::Int {
            low: a.get(1)?.as_i64()?,
            high: a.get(2)?.as_i64()?,
            step: a.get(3)?.as_i64()?,
            log: a.get(4)?.as_bool()?,
        }),
        "categorical" => Some(Distribution::Categorical {
            choices: a.get(1)?.as_array()?.iter().map(|c| c.as_str().map(str::to_string)).collect::<Option<_>>()?,
        }),
        _ => None,
    }
}

fn epoch(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
}

/// Moves the legacy tables' rows into Optuna's schema (inside the caller's transaction).
fn migrate(backend: &Sqlite, tx: &Connection) -> Result<(), SearchError> {
    let err = |e: rusqlite::Error| backend.error(format!("migration: {e}"));
    let corrupt = |what: String| SearchError::Corrupt { location: backend.location(), what };
    tx.execute_batch(
        "ALTER TABLE studies RENAME TO legacy_studies; ALTER TABLE trials RENAME TO legacy_trials;
         ALTER TABLE params RENAME TO legacy_params; ALTER TABLE intermediate RENAME TO legacy_intermediate;",
    )
    .map_err(err)?;
    tx.execute_batch(SCHEMA).map_err(err)?;
    tx.execute(
        "INSERT INTO version_info (version_info_id, schema_version, library_version) VALUES (1, ?1, ?2)",
        rusqlite::params![VERSION_INFO.0, VERSION_INFO.1],
    )
    .map_err(err)?;
    tx.execute("INSERT INTO alembic_version (version_num) VALUES (?1)", [ALEMBIC_HEAD]).map_err(err)?;
    tx.execute_batch(
        "INSERT INTO studies (study_id, study_name) SELECT id, name FROM legacy_studies;
         INSERT INTO study_directions (direction, study_id, objective) SELECT upper(direction), id, 0 FROM legacy_studies;",
    )
    .map_err(err)?;
    let mut trial_ids: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    {
        let mut read = tx
            .prepare(
                "SELECT study_id, number, state, value, fail_reason, duration, heartbeat FROM legacy_trials
                 ORDER BY study_id, number",
            )
            .map_err(err)?;
        type Row = (i64, i64, String, Option<f64>, Option<String>, Option<f64>, f64);
        let rows: Vec<Row> = read
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
            .map_err(err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(err)?;
        for (study, number, state, value, reason, duration, heartbeat) in rows {
            let (state, reason) = match state.as_str() {
                "COMPLETE" | "PRUNED" => (state.clone(), reason),
                "FAILED" => ("FAIL".to_string(), reason),
                "RUNNING" => ("FAIL".to_string(), Some("still running when the study was migrated".into())),
                other => return Err(corrupt(format!("trial {number}: state {other}"))),
            };
            let complete = epoch(heartbeat);
            let start = epoch(heartbeat - duration.unwrap_or(0.0));
            tx.execute(
                "INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![number, study, state, timefmt::format(start), timefmt::format(complete)],
            )
            .map_err(err)?;
            let id = tx.last_insert_rowid();
            trial_ids.insert((study, number), id);
            if let (Some(v), "COMPLETE") = (value, state.as_str()) {
                tx.execute(
                    "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?1, 0, ?2, 'FINITE')",
                    rusqlite::params![id, v],
                )
                .map_err(err)?;
            }
            if let Some(r) = reason {
                tx.execute(
                    "INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES (?1, 'fail_reason', ?2)",
                    rusqlite::params![id, Value::String(r).to_string()],
                )
                .map_err(err)?;
            }
        }
    }
    let mut fixed: BTreeMap<i64, serde_json::Map<String, Value>> = BTreeMap::new();
    {
        let mut read =
            tx.prepare("SELECT study_id, number, name, fixed, value, distribution FROM legacy_params").map_err(err)?;
        type Row = (i64, i64, String, bool, String, Option<String>);
        let rows: Vec<Row> = read
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .map_err(err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(err)?;
        for (study, number, name, is_fixed, value, dist) in rows {
            let id = *trial_ids.get(&(study, number)).ok_or_else(|| corrupt(format!("parameter of trial {number}")))?;
            let value = legacy_value(&value).ok_or_else(|| corrupt(format!("trial {number}: value of `{name}`")))?;
            if is_fixed {
                fixed.entry(id).or_default().insert(name, value.to_json());
                continue;
            }
            let dist = dist
                .as_deref()
                .and_then(legacy_dist)
                .ok_or_else(|| corrupt(format!("trial {number}: distribution of `{name}`")))?;
            let internal =
                dist.to_internal(&value).ok_or_else(|| corrupt(format!("trial {number}: `{name}` outside {dist}")))?;
            tx.execute(
                "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![id, name, internal, dist.to_optuna_json()],
            )
            .map_err(err)?;
        }
    }
    for (id, map) in fixed {
        tx.execute(
            "INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES (?1, 'fixed_params', ?2)",
            rusqlite::params![id, Value::Object(map).to_string()],
        )
        .map_err(err)?;
    }
    {
        let mut read = tx.prepare("SELECT study_id, number, step, value FROM legacy_intermediate").map_err(err)?;
        let rows: Vec<(i64, i64, i64, f64)> = read
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(err)?;
        for (study, number, step, value) in rows {
            let id =
                *trial_ids.get(&(study, number)).ok_or_else(|| corrupt(format!("intermediate of trial {number}")))?;
            let kind = if value.is_nan() { "NAN" } else { "FINITE" };
            tx.execute(
                "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type)
                 VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![id, step, (!value.is_nan()).then_some(value), kind],
            )
            .map_err(err)?;
        }
    }
    tx.execute_batch(
        "DROP TABLE legacy_studies; DROP TABLE legacy_trials; DROP TABLE legacy_params;
         DROP TABLE legacy_intermediate; DROP TABLE ferrograd_meta;",
    )
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_and_tokens_are_translated() {
        assert_eq!(
            translate(
                "SELECT CAST(? AS INTEGER), CAST(? AS VARCHAR(512)), CAST(x AS TEXT) FROM t WHERE a IN {ids}{lock}"
            ),
            "SELECT ?, ?, CAST(x AS TEXT) FROM t WHERE a IN (SELECT value FROM json_each(?))"
        );
    }
}
