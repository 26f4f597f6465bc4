//! Optuna's relational schema, read and written by the same queries on SQLite and PostgreSQL.
//!
//! A backend gives connections; the queries are written once, PostgreSQL-style (`CAST(? AS
//! trialstate)` where a parameter's type cannot be inferred), with `?` placeholders and a few
//! tokens each backend expands: `{now}` (the server's clock as naive UTC, Optuna's convention),
//! `{ids}` (a list of ids bound as one parameter) and `{lock}` (`FOR UPDATE` where rows can be
//! locked). The SQLite backend drops the casts.
//!
//! Every operation runs as one transaction, retried as a whole on transient errors (a lock held
//! too long, a serialization failure, a dropped connection) with a bounded, jittered backoff. A
//! read is a single statement, so it sees one snapshot: joining a study that others are writing
//! never mixes two states of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde_json::Value;

use super::{
    check_template, retry_template, stale_reason, timefmt, AttrKind, Prepare, Storage, StoredTrial, StudyId,
    StudySummary, TrialId, TrialReader,
};
use crate::search::error::SearchError;
use crate::search::study::Direction;
use crate::search::trial::{FrozenTrial, TrialState};
use crate::search::{Distribution, ParamValue};

mod sealed {
    pub trait Sealed {}
}

/// A value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Sql {
    /// NULL.
    Null,
    /// An integer column.
    Int(i64),
    /// A float column.
    Real(f64),
    /// A text, varchar or enum column.
    Text(String),
    /// A timestamp column (naive UTC).
    Time(SystemTime),
    /// A list of ids for an `{ids}` token.
    Ids(Vec<i64>),
}

impl Sql {
    fn int(&self) -> Option<i64> {
        match self {
            Sql::Int(i) => Some(*i),
            Sql::Real(x) if x.fract() == 0.0 => Some(*x as i64),
            _ => None,
        }
    }

    fn real(&self) -> Option<f64> {
        match self {
            Sql::Real(x) => Some(*x),
            Sql::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Sql::Text(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn into_text(self) -> Option<String> {
        match self {
            Sql::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A timestamp: PostgreSQL returns one, SQLite its text.
    fn time(&self) -> Option<Option<SystemTime>> {
        match self {
            Sql::Null => Some(None),
            Sql::Time(t) => Some(Some(*t)),
            Sql::Text(s) => timefmt::parse(s).map(Some),
            _ => None,
        }
    }
}

/// How a database error should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// Worth retrying on the same connection (a lock timeout, a serialization failure).
    Transient,
    /// The connection is gone: retry on a new one.
    Reconnect,
    /// A unique constraint refused a row.
    Unique,
    /// Anything else: reported.
    Other,
}

/// An error of a backend's connection.
#[derive(Debug, Clone)]
pub struct DbError {
    /// What the database said.
    pub message: String,
    /// How to handle it.
    pub kind: DbErrorKind,
}

/// A connection of a backend.
pub trait Conn: Send + 'static {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Sql]) -> Result<u64, DbError>;
    /// Runs a query; its rows.
    fn query(&mut self, sql: &str, params: &[Sql]) -> Result<Vec<Vec<Sql>>, DbError>;
    /// Runs statements without parameters (transaction control).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
    /// Whether the connection can no longer be used.
    fn broken(&self) -> bool;
}

/// A database engine holding Optuna's schema: [`Sqlite`](super::Sqlite) or
/// `Postgres` (feature `postgres`). Sealed: its methods are the storage's internals.
pub trait Backend: sealed::Sealed + Send + Sync + 'static {
    #[doc(hidden)]
    type Conn: Conn;
    #[doc(hidden)]
    fn connect(&self) -> Result<Self::Conn, DbError>;
    #[doc(hidden)]
    fn location(&self) -> String;
    /// Starts a transaction that writes (SQLite: takes the write lock at once).
    #[doc(hidden)]
    const BEGIN_WRITE: &'static str;
    /// The error a failed operation reports.
    #[doc(hidden)]
    fn error(&self, message: String) -> SearchError;
}

pub(crate) use sealed::Sealed;

/// Attempts of a transaction before a transient error is reported.
const ATTEMPTS: u32 = 12;
/// The first backoff; it doubles up to [`MAX_BACKOFF`], with full jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(1000);

/// The sleep before retry `attempt` (from 0): uniform in `[0, min(cap, first * 2^attempt)]`,
/// so that workers that collided do not collide again.
fn backoff(attempt: u32) -> Duration {
    let ceiling = FIRST_BACKOFF.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
    ceiling.mul_f64(rand::rng().random::<f64>())
}

/// A storage in Optuna's relational schema: [`SqliteStorage`](super::SqliteStorage) or
/// `PostgresStorage`.
pub struct RdbStorage<B: Backend> {
    pub(crate) backend: B,
    pool: Mutex<Vec<B::Conn>>,
    /// Per study, the last trial this storage created and the study's trial count then: under the
    /// study's lock, the next number is that count plus the trials created since (ids grow with
    /// creation, which the lock serialises), so numbering does not scan the study.
    hints: Mutex<HashMap<StudyId, (TrialId, u64)>>,
    /// Parsed distributions by their JSON text.
    parsed: Mutex<HashMap<String, Distribution>>,
    /// Our JSON of a distribution -> the JSON a study already stores for it (Optuna's number
    /// formatting, non-string choices), so parameters written here compare equal in Python.
    canonical: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a transaction's body stopped.
pub(crate) enum TxError {
    Db(DbError),
    Search(SearchError),
}

impl From<DbError> for TxError {
    fn from(e: DbError) -> Self {
        TxError::Db(e)
    }
}

impl From<SearchError> for TxError {
    fn from(e: SearchError) -> Self {
        TxError::Search(e)
    }
}

/// A connection inside a transaction, with the attempt number (a retry after a dropped
/// connection may find its earlier attempt committed).
pub(crate) struct Tx<'a, C: Conn> {
    conn: &'a mut C,
    attempt: u32,
}

impl<C: Conn> Tx<'_, C> {
    pub(crate) fn exec(&mut self, sql: &str, params: &[Sql]) -> Result<u64, TxError> {
        Ok(self.conn.execute(sql, params)?)
    }

    pub(crate) fn query(&mut self, sql: &str, params: &[Sql]) -> Result<Vec<Vec<Sql>>, TxError> {
        Ok(self.conn.query(sql, params)?)
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn batch(&mut self, sql: &str) -> Result<(), TxError> {
        Ok(self.conn.batch(sql)?)
    }
}

/// How a transaction starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One statement in autocommit.
    Auto,
    /// A transaction that writes.
    Write,
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Minimize => "MINIMIZE",
        Direction::Maximize => "MAXIMIZE",
    }
}

fn value_repr(v: f64) -> (Sql, &'static str) {
    if v == f64::INFINITY {
        (Sql::Null, "INF_POS")
    } else if v == f64::NEG_INFINITY {
        (Sql::Null, "INF_NEG")
    } else if v.is_nan() {
        (Sql::Null, "NAN")
    } else {
        (Sql::Real(v), "FINITE")
    }
}

fn json_text(v: &Value) -> Sql {
    Sql::Text(v.to_string())
}

fn attr_table(kind: AttrKind) -> &'static str {
    match kind {
        AttrKind::User => "trial_user_attributes",
        AttrKind::System => "trial_system_attributes",
    }
}

fn study_attr_table(kind: AttrKind) -> &'static str {
    match kind {
        AttrKind::User => "study_user_attributes",
        AttrKind::System => "study_system_attributes",
    }
}

/// A study's trials (id above `after`, or in `include` and not above it) with their parameters,
/// values, intermediate values and attributes, as one statement (one snapshot, one round trip).
const READ_TRIALS: &str = "
WITH t AS MATERIALIZED (
  SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials WHERE study_id = ? AND trial_id > ?
  UNION ALL
  SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials
  WHERE study_id = ? AND trial_id <= ? AND trial_id IN {ids})
SELECT 0, trial_id, CAST(state AS TEXT), NULL, NULL, number, datetime_start, datetime_complete FROM t
UNION ALL SELECT 1, p.trial_id, p.param_name, p.param_value, p.distribution_json, NULL, NULL, NULL
  FROM trial_params p WHERE p.trial_id IN (SELECT trial_id FROM t)
UNION ALL SELECT 2, v.trial_id, CAST(v.value_type AS TEXT), v.value, NULL, v.objective, NULL, NULL
  FROM trial_values v WHERE v.trial_id IN (SELECT trial_id FROM t)
UNION ALL SELECT 3, i.trial_id, CAST(i.intermediate_value_type AS TEXT), i.intermediate_value, NULL, i.step, NULL, NULL
  FROM trial_intermediate_values i WHERE i.trial_id IN (SELECT trial_id FROM t)
UNION ALL SELECT 4, a.trial_id, a.key, NULL, a.value_json, NULL, NULL, NULL
  FROM trial_user_attributes a WHERE a.trial_id IN (SELECT trial_id FROM t)
UNION ALL SELECT 5, s.trial_id, s.key, NULL, s.value_json, NULL, NULL, NULL
  FROM trial_system_attributes s WHERE s.trial_id IN (SELECT trial_id FROM t)";

impl<B: Backend> RdbStorage<B> {
    pub(crate) fn with_backend(backend: B) -> Self {
        RdbStorage {
            backend,
            pool: Mutex::new(Vec::new()),
            hints: Mutex::new(HashMap::new()),
            parsed: Mutex::new(HashMap::new()),
            canonical: Mutex::new(HashMap::new()),
        }
    }

    fn err(&self, e: DbError) -> SearchError {
        self.backend.error(e.message)
    }

    fn corrupt(&self, what: impl Into<String>) -> SearchError {
        SearchError::Corrupt { location: self.backend.location(), what: what.into() }
    }

    /// A pooled connection (a new one when the pool is empty).
    fn take(&self) -> Result<B::Conn, DbError> {
        match lock(&self.pool).pop() {
            Some(c) => Ok(c),
            None => self.backend.connect(),
        }
    }

    /// Returns a connection to the pool (a broken one is dropped).
    pub(crate) fn put(&self, conn: B::Conn) {
        if !conn.broken() {
            lock(&self.pool).push(conn);
        }
    }

    /// Runs `body` in a write transaction, retried on transient failures.
    #[cfg(feature = "postgres")]
    pub(crate) fn transaction<T>(
        &self,
        body: impl FnMut(&mut Tx<'_, B::Conn>) -> Result<T, TxError>,
    ) -> Result<T, SearchError> {
        self.run(Mode::Write, body)
    }

    /// Runs `body` as one transaction, retrying transient failures.
    fn run<T>(
        &self,
        mode: Mode,
        mut body: impl FnMut(&mut Tx<'_, B::Conn>) -> Result<T, TxError>,
    ) -> Result<T, SearchError> {
        let mut attempt = 0;
        loop {
            let failure = match self.take() {
                Err(e) => e,
                Ok(mut conn) => {
                    let result = (|| {
                        if mode == Mode::Write {
                            conn.batch(B::BEGIN_WRITE)?;
                        }
                        let v = body(&mut Tx { conn: &mut conn, attempt })?;
                        if mode == Mode::Write {
                            conn.batch("COMMIT")?;
                        }
                        Ok(v)
                    })();
                    match result {
                        Ok(v) => {
                            self.put(conn);
                            return Ok(v);
                        }
                        Err(e) => {
                            if mode == Mode::Write && !conn.broken() {
                                // A failed rollback leaves the connection unusable: drop it.
                                if conn.batch("ROLLBACK").is_ok() {
                                    self.put(conn);
                                }
                            } else {
                                self.put(conn);
                            }
                            match e {
                                TxError::Search(e) => return Err(e),
                                TxError::Db(e) => e,
                            }
                        }
                    }
                }
            };
            let retry = matches!(failure.kind, DbErrorKind::Transient | DbErrorKind::Reconnect);
            if !retry || attempt + 1 >= ATTEMPTS {
                let tries = if retry { format!(" (after {ATTEMPTS} attempts)") } else { String::new() };
                return Err(self.backend.error(format!("{}{tries}", failure.message)));
            }
            std::thread::sleep(backoff(attempt));
            attempt += 1;
        }
    }

    /// The distribution of a stored JSON text (parsed once per text).
    fn parse_dist(&self, json: &str) -> Result<Distribution, String> {
        if let Some(d) = lock(&self.parsed).get(json) {
            return Ok(d.clone());
        }
        let d = Distribution::from_optuna_json(json)?;
        let ours = d.to_optuna_json();
        if ours != json {
            lock(&self.canonical).entry(ours).or_insert_with(|| json.to_string());
        }
        lock(&self.parsed).insert(json.to_string(), d.clone());
        Ok(d)
    }

    /// The JSON to store for `dist`: the form the database already holds for it, else ours.
    fn dist_json(&self, dist: &Distribution) -> String {
        let ours = dist.to_optuna_json();
        lock(&self.canonical).get(&ours).cloned().unwrap_or(ours)
    }

    /// Why a guarded write to `trial` changed nothing: finished, or gone with its study.
    fn not_updatable(&self, tx: &mut Tx<'_, B::Conn>, trial: TrialId) -> TxError {
        match tx.query("SELECT number, CAST(state AS TEXT) FROM trials WHERE trial_id = ?", &[Sql::Int(trial)]) {
            Err(e) => e,
            Ok(rows) => match rows.first() {
                None => SearchError::NoSuchStudy { name: format!("(deleted, of trial id {trial})") }.into(),
                Some(r) => match (r[0].int(), r[1].text().and_then(TrialState::from_optuna_name)) {
                    (Some(number), Some(state)) => SearchError::TrialFinished { number: number as u64, state }.into(),
                    _ => self.corrupt(format!("trial id {trial}: number or state")).into(),
                },
            },
        }
    }

    /// Reads trials within a transaction (or alone).
    fn read_with(
        &self,
        tx: &mut Tx<'_, B::Conn>,
        study: StudyId,
        after: TrialId,
        include: &[TrialId],
    ) -> Result<Vec<StoredTrial>, TxError> {
        let rows = tx.query(
            READ_TRIALS,
            &[Sql::Int(study), Sql::Int(after), Sql::Int(study), Sql::Int(after), Sql::Ids(include.to_vec())],
        )?;
        Ok(self.assemble(rows)?)
    }

    /// Builds trials from the rows of [`READ_TRIALS`], checking every row.
    fn assemble(&self, rows: Vec<Vec<Sql>>) -> Result<Vec<StoredTrial>, SearchError> {
        let mut trials: BTreeMap<TrialId, FrozenTrial> = BTreeMap::new();
        let mut children = Vec::new();
        let mut values: HashMap<TrialId, BTreeMap<i64, f64>> = HashMap::new();
        for row in rows {
            let kind = row.first().and_then(Sql::int);
            let id = row.get(1).and_then(Sql::int).ok_or_else(|| self.corrupt("row without a trial id"))?;
            if kind != Some(0) {
                children.push((kind, id, row));
                continue;
            }
            let what = |w: &str| self.corrupt(format!("trial id {id}: {w}"));
            let state = row[2].text().and_then(TrialState::from_optuna_name).ok_or_else(|| what("state"))?;
            let number = row[5].int().filter(|n| *n >= 0).ok_or_else(|| what("number (NULL or negative)"))?;
            let mut t = FrozenTrial::new(state);
            t.number = number as u64;
            t.datetime_start = row[6].time().ok_or_else(|| what("datetime_start"))?;
            t.datetime_complete = row[7].time().ok_or_else(|| what("datetime_complete"))?;
            trials.insert(id, t);
        }
        for (kind, id, mut row) in children {
            let Some(t) = trials.get_mut(&id) else { continue };
            let n = t.number;
            let what = |w: String| self.corrupt(format!("trial {n}: {w}"));
            let key = std::mem::replace(&mut row[2], Sql::Null).into_text();
            let text = std::mem::replace(&mut row[4], Sql::Null).into_text();
            match kind {
                Some(1) => {
                    let name = key.ok_or_else(|| what("a parameter without a name".into()))?;
                    let json = text.ok_or_else(|| what(format!("parameter `{name}`: no distribution")))?;
                    let dist =
                        self.parse_dist(&json).map_err(|e| what(format!("parameter `{name}`: distribution {e}")))?;
                    let stored = row[3].real().ok_or_else(|| what(format!("parameter `{name}`: NULL value")))?;
                    let value = dist
                        .value_from_stored(stored)
                        .ok_or_else(|| what(format!("parameter `{name}`: {stored} is not a value of {dist}")))?;
                    t.params.insert(name.clone(), value);
                    t.distributions.insert(name, dist);
                }
                Some(2) | Some(3) => {
                    let index = row[5].int().ok_or_else(|| what("a value without its objective or step".into()))?;
                    let v = match key.as_deref() {
                        Some("FINITE") => row[3].real().ok_or_else(|| what(format!("NULL value at {index}")))?,
                        Some("INF_POS") => f64::INFINITY,
                        Some("INF_NEG") => f64::NEG_INFINITY,
                        Some("NAN") if kind == Some(3) => f64::NAN,
                        other => return Err(what(format!("value type {other:?}"))),
                    };
                    if kind == Some(2) {
                        values.entry(id).or_default().insert(index, v);
                    } else {
                        let step = u64::try_from(index).map_err(|_| what(format!("negative step {index}")))?;
                        t.intermediate.insert(step, v);
                    }
                }
                Some(4) | Some(5) => {
                    let key = key.ok_or_else(|| what("an attribute without a key".into()))?;
                    let json = text.unwrap_or_else(|| "null".to_string());
                    let v: Value =
                        serde_json::from_str(&json).map_err(|e| what(format!("attribute `{key}`: not JSON ({e})")))?;
                    if kind == Some(4) {
                        t.user_attrs.insert(key, v);
                    } else {
                        match key.as_str() {
                            "fixed_params" => {
                                let obj = v.as_object().ok_or_else(|| what("fixed_params is not an object".into()))?;
                                t.fixed_params =
                                    obj.iter().map(|(k, x)| (k.clone(), ParamValue::from_json(x))).collect();
                            }
                            "fail_reason" => {
                                t.fail_reason = Some(v.as_str().map_or_else(|| v.to_string(), str::to_string))
                            }
                            _ => {
                                t.system_attrs.insert(key, v);
                            }
                        }
                    }
                }
                other => return Err(self.corrupt(format!("row kind {other:?}"))),
            }
        }
        for (id, by_objective) in values {
            let t = trials.get_mut(&id).expect("values are only kept for read trials");
            if by_objective.keys().copied().ne(0..by_objective.len() as i64) {
                return Err(self.corrupt(format!("trial {}: objectives {:?}", t.number, by_objective.keys())));
            }
            t.values = by_objective.into_values().collect();
        }
        Ok(trials
            .into_iter()
            .map(|(id, mut trial)| {
                trial.derive();
                StoredTrial { id, trial }
            })
            .collect())
    }

    /// Inserts a trial (under the study's lock); returns its id.
    fn insert_trial(
        &self,
        tx: &mut Tx<'_, B::Conn>,
        study: StudyId,
        t: &FrozenTrial,
        heartbeat: bool,
    ) -> Result<TrialId, TxError> {
        let start = match (t.state, t.datetime_start) {
            (TrialState::Waiting, _) => "NULL",
            (_, Some(_)) => "?",
            (_, None) => "{now}",
        };
        let complete = match (t.state.is_finished(), t.datetime_complete) {
            (false, _) => "NULL",
            (true, Some(_)) => "?",
            (true, None) => "{now}",
        };
        let sql = format!(
            "INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete) VALUES (?, ?, ?, {start}, {complete}) RETURNING trial_id"
        );
        let mut params = vec![Sql::Int(t.number as i64), Sql::Int(study), Sql::Text(t.state.optuna_name().into())];
        params.extend(t.datetime_start.filter(|_| start == "?").map(Sql::Time));
        params.extend(t.datetime_complete.filter(|_| complete == "?").map(Sql::Time));
        let rows = tx.query(&sql, &params)?;
        let id = rows.first().and_then(|r| r[0].int()).ok_or_else(|| self.corrupt("no id for a new trial"))?;
        for (name, value) in &t.params {
            let dist = t
                .distributions
                .get(name)
                .ok_or_else(|| SearchError::InvalidOption(format!("parameter `{name}` has no distribution")))?;
            let internal = dist
                .to_internal(value)
                .ok_or_else(|| SearchError::InvalidOption(format!("parameter `{name}` = {value} is outside {dist}")))?;
            tx.exec(
                "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES (?, ?, ?, ?)",
                &[Sql::Int(id), Sql::Text(name.clone()), Sql::Real(internal), Sql::Text(self.dist_json(dist))],
            )?;
        }
        for (objective, v) in t.values.iter().enumerate() {
            let (value, kind) = value_repr(*v);
            tx.exec(
                "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, ?, ?, ?)",
                &[Sql::Int(id), Sql::Int(objective as i64), value, Sql::Text(kind.into())],
            )?;
        }
        for (step, v) in &t.intermediate {
            let (value, kind) = value_repr(*v);
            tx.exec(
                "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES (?, ?, ?, ?)",
                &[Sql::Int(id), step_sql(*step)?, value, Sql::Text(kind.into())],
            )?;
        }
        let mut system = t.system_attrs.clone();
        if !t.fixed_params.is_empty() {
            let fixed = t.fixed_params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
            system.insert("fixed_params".into(), Value::Object(fixed));
        }
        if let Some(r) = &t.fail_reason {
            system.insert("fail_reason".into(), Value::String(r.clone()));
        }
        for (kind, attrs) in [(AttrKind::User, &t.user_attrs), (AttrKind::System, &system)] {
            for (k, v) in attrs {
                let sql = format!("INSERT INTO {} (trial_id, key, value_json) VALUES (?, ?, ?)", attr_table(kind));
                tx.exec(&sql, &[Sql::Int(id), Sql::Text(k.clone()), json_text(v)])?;
            }
        }
        if heartbeat && t.state == TrialState::Running {
            tx.exec("INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, {now})", &[Sql::Int(id)])?;
        }
        Ok(id)
    }

    /// Locks the study's row (PostgreSQL) and returns the number the next trial gets.
    fn lock_study(&self, tx: &mut Tx<'_, B::Conn>, study: StudyId) -> Result<(TrialId, u64), TxError> {
        let found = tx.query("SELECT study_id FROM studies WHERE study_id = ?{lock}", &[Sql::Int(study)])?;
        if found.is_empty() {
            return Err(SearchError::NoSuchStudy { name: format!("(id {study})") }.into());
        }
        let (after, before) = lock(&self.hints).get(&study).copied().unwrap_or((0, 0));
        let rows = tx.query(
            "SELECT count(*) FROM trials WHERE study_id = ? AND trial_id > ?",
            &[Sql::Int(study), Sql::Int(after)],
        )?;
        let since = rows.first().and_then(|r| r[0].int()).ok_or_else(|| self.corrupt("trial count"))?;
        Ok((after, before + since as u64))
    }

    fn set_hint(&self, study: StudyId, id: TrialId, next: u64) {
        let mut hints = lock(&self.hints);
        let h = hints.entry(study).or_insert((id, next));
        if id >= h.0 {
            *h = (id, next);
        }
    }

    /// A guarded write to a running or waiting trial: `sql` changes nothing when the trial is
    /// finished, then the error says so.
    fn guarded(&self, trial: TrialId, sql: &str, params: &[Sql]) -> Result<(), SearchError> {
        self.run(Mode::Auto, |tx| match tx.conn.execute(sql, params) {
            Ok(0) => Err(self.not_updatable(tx, trial)),
            Ok(_) => Ok(()),
            // A retry after a dropped connection finds its first attempt's row.
            Err(e) if e.kind == DbErrorKind::Unique && tx.attempt > 0 => Ok(()),
            Err(e) => Err(e.into()),
        })
    }
}

/// A step as a bound integer (Optuna's column is a 32-bit INTEGER on PostgreSQL).
fn step_sql(step: u64) -> Result<Sql, SearchError> {
    i64::try_from(step)
        .map(Sql::Int)
        .map_err(|_| SearchError::InvalidOption(format!("step {step} is too large to store")))
}

/// Guard of writes to a trial that may still change.
const OPEN: &str = "EXISTS (SELECT 1 FROM trials WHERE trial_id = ? AND state IN ('RUNNING', 'WAITING'))";

struct TxReader<'t, 'c, B: Backend> {
    storage: &'t RdbStorage<B>,
    tx: std::cell::RefCell<&'t mut Tx<'c, B::Conn>>,
    study: StudyId,
}

impl<B: Backend> TrialReader for TxReader<'_, '_, B> {
    fn read_trials(&self, after: TrialId, include: &[TrialId]) -> Result<Vec<StoredTrial>, SearchError> {
        let mut tx = self.tx.borrow_mut();
        self.storage.read_with(&mut tx, self.study, after, include).map_err(|e| match e {
            TxError::Db(e) => self.storage.err(e),
            TxError::Search(e) => e,
        })
    }
}

impl<B: Backend> Storage for RdbStorage<B> {
    fn location(&self) -> String {
        self.backend.location()
    }

    fn create_study(&self, name: &str, directions: &[Direction]) -> Result<StudyId, SearchError> {
        self.run(Mode::Write, |tx| {
            let rows = match tx
                .conn
                .query("INSERT INTO studies (study_name) VALUES (?) RETURNING study_id", &[Sql::Text(name.into())])
            {
                Err(e) if e.kind == DbErrorKind::Unique => {
                    return Err(SearchError::StudyExists { name: name.into() }.into())
                }
                r => r?,
            };
            let id = rows.first().and_then(|r| r[0].int()).ok_or_else(|| self.corrupt("no id for a new study"))?;
            for (objective, d) in directions.iter().enumerate() {
                tx.exec(
                    "INSERT INTO study_directions (direction, study_id, objective) VALUES (?, ?, ?)",
                    &[Sql::Text(dir_name(*d).into()), Sql::Int(id), Sql::Int(objective as i64)],
                )?;
            }
            Ok(id)
        })
    }

    fn find_study(&self, name: &str) -> Result<Option<StudyId>, SearchError> {
        self.run(Mode::Auto, |tx| {
            let rows = tx.query("SELECT study_id FROM studies WHERE study_name = ?", &[Sql::Text(name.into())])?;
            Ok(rows.first().and_then(|r| r[0].int()))
        })
    }

    fn studies(&self) -> Result<Vec<StudySummary>, SearchError> {
        let rows = self.run(Mode::Auto, |tx| {
            tx.query(
                "SELECT s.study_id, s.study_name, CAST(d.direction AS TEXT),
                        (SELECT count(*) FROM trials t WHERE t.study_id = s.study_id)
                 FROM studies s LEFT JOIN study_directions d ON d.study_id = s.study_id
                 ORDER BY s.study_id, d.objective",
                &[],
            )
        })?;
        let mut out: Vec<StudySummary> = Vec::new();
        for r in rows {
            let id = r[0].int().ok_or_else(|| self.corrupt("a study without an id"))?;
            if out.last().is_none_or(|s| s.study_id != id) {
                let name = r[1].text().ok_or_else(|| self.corrupt(format!("study id {id}: name")))?.to_string();
                let n_trials = r[3].int().unwrap_or(0) as usize;
                out.push(StudySummary { study_id: id, name, directions: Vec::new(), n_trials });
            }
            if let Some(d) = r[2].text() {
                let s = out.last_mut().expect("pushed above");
                s.directions.push(
                    parse_direction(d).ok_or_else(|| self.corrupt(format!("study `{}`: direction {d}", s.name)))?,
                );
            }
        }
        Ok(out)
    }

    fn delete_study(&self, study: StudyId) -> Result<(), SearchError> {
        self.run(Mode::Write, |tx| {
            let of_study = "trial_id IN (SELECT trial_id FROM trials WHERE study_id = ?)";
            for table in [
                "trial_params",
                "trial_values",
                "trial_intermediate_values",
                "trial_user_attributes",
                "trial_system_attributes",
                "trial_heartbeats",
            ] {
                tx.exec(&format!("DELETE FROM {table} WHERE {of_study}"), &[Sql::Int(study)])?;
            }
            for table in ["trials", "study_user_attributes", "study_system_attributes", "study_directions"] {
                tx.exec(&format!("DELETE FROM {table} WHERE study_id = ?"), &[Sql::Int(study)])?;
            }
            if tx.exec("DELETE FROM studies WHERE study_id = ?", &[Sql::Int(study)])? == 0 && tx.attempt == 0 {
                return Err(SearchError::NoSuchStudy { name: format!("(id {study})") }.into());
            }
            Ok(())
        })?;
        lock(&self.hints).remove(&study);
        Ok(())
    }

    fn study_directions(&self, study: StudyId) -> Result<Vec<Direction>, SearchError> {
        let rows = self.run(Mode::Auto, |tx| {
            tx.query(
                "SELECT CAST(direction AS TEXT), objective FROM study_directions WHERE study_id = ? ORDER BY objective",
                &[Sql::Int(study)],
            )
        })?;
        if rows.is_empty() {
            return Err(SearchError::NoSuchStudy { name: format!("(id {study})") });
        }
        rows.iter()
            .enumerate()
            .map(|(i, r)| match (r[0].text().and_then(parse_direction), r[1].int()) {
                (Some(d), Some(o)) if o == i as i64 => Ok(d),
                _ => Err(self.corrupt(format!("study id {study}: direction of objective {i} ({:?})", r[0]))),
            })
            .collect()
    }

    fn set_study_attr(&self, study: StudyId, kind: AttrKind, key: &str, value: &Value) -> Result<(), SearchError> {
        let sql = format!(
            "INSERT INTO {} (study_id, key, value_json) VALUES (?, ?, ?)
             ON CONFLICT (study_id, key) DO UPDATE SET value_json = excluded.value_json",
            study_attr_table(kind)
        );
        self.run(Mode::Auto, |tx| tx.exec(&sql, &[Sql::Int(study), Sql::Text(key.into()), json_text(value)]).map(drop))
    }

    fn study_attrs(&self, study: StudyId, kind: AttrKind) -> Result<BTreeMap<String, Value>, SearchError> {
        let sql = format!("SELECT key, value_json FROM {} WHERE study_id = ?", study_attr_table(kind));
        let rows = self.run(Mode::Auto, |tx| tx.query(&sql, &[Sql::Int(study)]))?;
        rows.into_iter()
            .map(|mut r| {
                let key = std::mem::replace(&mut r[0], Sql::Null)
                    .into_text()
                    .ok_or_else(|| self.corrupt("study attribute key"))?;
                let v = r[1]
                    .text()
                    .map_or(Ok(Value::Null), serde_json::from_str)
                    .map_err(|e| self.corrupt(format!("study attribute `{key}`: not JSON ({e})")))?;
                Ok((key, v))
            })
            .collect()
    }

    fn create_trial(
        &self,
        study: StudyId,
        template: &mut FrozenTrial,
        heartbeat: bool,
        mut prepare: Option<Prepare<'_>>,
    ) -> Result<Option<(TrialId, u64)>, SearchError> {
        let made = self.run(Mode::Write, |tx| {
            let (_, number) = self.lock_study(tx, study)?;
            template.number = number;
            if let Some(prepare) = prepare.as_deref_mut() {
                let reader = TxReader { storage: self, tx: std::cell::RefCell::new(&mut *tx), study };
                if !prepare(template, &reader)? {
                    return Ok(None);
                }
            }
            check_template(template, None)?;
            let id = self.insert_trial(tx, study, template, heartbeat)?;
            Ok(Some((id, number)))
        })?;
        if let Some((id, number)) = made {
            self.set_hint(study, id, number + 1);
        }
        Ok(made)
    }

    fn claim_waiting_trial(&self, trial: TrialId, heartbeat: bool) -> Result<bool, SearchError> {
        self.run(Mode::Write, |tx| {
            let n = tx.exec(
                "UPDATE trials SET state = 'RUNNING', datetime_start = {now} WHERE trial_id = ? AND state = 'WAITING'",
                &[Sql::Int(trial)],
            )?;
            if n == 0 {
                return Ok(false);
            }
            if heartbeat {
                tx.exec(
                    "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, {now})
                     ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat",
                    &[Sql::Int(trial)],
                )?;
            }
            Ok(true)
        })
    }

    fn set_trial_param(
        &self,
        trial: TrialId,
        name: &str,
        value: &ParamValue,
        dist: &Distribution,
    ) -> Result<(), SearchError> {
        let internal = dist
            .to_internal(value)
            .ok_or_else(|| SearchError::InvalidOption(format!("parameter `{name}` = {value} is outside {dist}")))?;
        let sql = format!(
            "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json)
             SELECT CAST(? AS INTEGER), CAST(? AS VARCHAR(512)), CAST(? AS DOUBLE PRECISION), CAST(? AS TEXT) WHERE {OPEN}"
        );
        let params = [
            Sql::Int(trial),
            Sql::Text(name.into()),
            Sql::Real(internal),
            Sql::Text(self.dist_json(dist)),
            Sql::Int(trial),
        ];
        self.guarded(trial, &sql, &params)
    }

    fn set_trial_intermediate(&self, trial: TrialId, step: u64, value: f64) -> Result<(), SearchError> {
        let (v, kind) = value_repr(value);
        let sql = format!(
            "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type)
             SELECT CAST(? AS INTEGER), CAST(? AS INTEGER), CAST(? AS DOUBLE PRECISION), CAST(? AS trialintermediatevaluetype)
             WHERE {OPEN}
             ON CONFLICT (trial_id, step) DO UPDATE SET intermediate_value = excluded.intermediate_value,
                 intermediate_value_type = excluded.intermediate_value_type"
        );
        self.guarded(trial, &sql, &[Sql::Int(trial), step_sql(step)?, v, Sql::Text(kind.into()), Sql::Int(trial)])
    }

    fn set_trial_attr(&self, trial: TrialId, kind: AttrKind, key: &str, value: &Value) -> Result<(), SearchError> {
        let sql = format!(
            "INSERT INTO {} (trial_id, key, value_json) SELECT CAST(? AS INTEGER), CAST(? AS VARCHAR(512)), CAST(? AS TEXT)
             WHERE {OPEN} ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json",
            attr_table(kind)
        );
        self.guarded(trial, &sql, &[Sql::Int(trial), Sql::Text(key.into()), json_text(value), Sql::Int(trial)])
    }

    fn finish_trial(
        &self,
        trial: TrialId,
        state: TrialState,
        values: &[f64],
        fail_reason: Option<&str>,
    ) -> Result<(), SearchError> {
        self.run(Mode::Write, |tx| {
            let n = tx.exec(
                "UPDATE trials SET state = ?, datetime_complete = {now} WHERE trial_id = ? AND state = 'RUNNING'",
                &[Sql::Text(state.optuna_name().into()), Sql::Int(trial)],
            )?;
            if n == 0 {
                let e = self.not_updatable(tx, trial);
                // After a dropped connection, the first attempt may have committed.
                if let TxError::Search(SearchError::TrialFinished { state: now, .. }) = &e {
                    if tx.attempt > 0 && *now == state {
                        return Ok(());
                    }
                }
                return Err(e);
            }
            for (objective, v) in values.iter().enumerate() {
                let (value, kind) = value_repr(*v);
                tx.exec(
                    "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, ?, ?, ?)
                     ON CONFLICT (trial_id, objective) DO UPDATE SET value = excluded.value, value_type = excluded.value_type",
                    &[Sql::Int(trial), Sql::Int(objective as i64), value, Sql::Text(kind.into())],
                )?;
            }
            if let Some(reason) = fail_reason {
                tx.exec(
                    "INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES (?, 'fail_reason', ?)
                     ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json",
                    &[Sql::Int(trial), json_text(&Value::String(reason.into()))],
                )?;
            }
            Ok(())
        })
    }

    fn record_heartbeat(&self, trial: TrialId) -> Result<(), SearchError> {
        self.run(Mode::Auto, |tx| {
            tx.exec(
                "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, {now})
                 ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat",
                &[Sql::Int(trial)],
            )
            .map(drop)
        })
    }

    fn fail_stale_trials(
        &self,
        study: StudyId,
        candidates: &[TrialId],
        grace: Duration,
        retry: Option<u32>,
    ) -> Result<Vec<u64>, SearchError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let stale_sql =
            "SELECT t.trial_id, h.heartbeat, {now} FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id
                         WHERE t.trial_id IN {ids} AND t.state = 'RUNNING'";
        let stale = |rows: Vec<Vec<Sql>>| -> Result<Vec<TrialId>, SearchError> {
            let mut out = Vec::new();
            for r in rows {
                let id = r[0].int().ok_or_else(|| self.corrupt("heartbeat row"))?;
                let (Some(Some(beat)), Some(Some(now))) = (r[1].time(), r[2].time()) else {
                    return Err(self.corrupt(format!("trial id {id}: heartbeat time")));
                };
                if now.duration_since(beat).unwrap_or_default() > grace {
                    out.push(id);
                }
            }
            Ok(out)
        };
        // Most calls find nothing stale: a plain read, no lock.
        let rows = self.run(Mode::Auto, |tx| tx.query(stale_sql, &[Sql::Ids(candidates.to_vec())]))?;
        if stale(rows)?.is_empty() {
            return Ok(Vec::new());
        }
        let reason = stale_reason(grace);
        let mut created = None;
        let failed = self.run(Mode::Write, |tx| {
            let (_, mut number) = self.lock_study(tx, study)?;
            let rows = tx.query(&format!("{stale_sql}{{lock}}"), &[Sql::Ids(candidates.to_vec())])?;
            let ids = stale(rows)?;
            let mut failed = Vec::new();
            for id in &ids {
                let n = tx.exec(
                    "UPDATE trials SET state = 'FAIL', datetime_complete = {now} WHERE trial_id = ? AND state = 'RUNNING'",
                    &[Sql::Int(*id)],
                )?;
                if n == 1 {
                    tx.exec(
                        "INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES (?, 'fail_reason', ?)
                         ON CONFLICT (trial_id, key) DO UPDATE SET value_json = excluded.value_json",
                        &[Sql::Int(*id), json_text(&Value::String(reason.clone()))],
                    )?;
                    failed.push(*id);
                }
            }
            let newest = failed.iter().copied().max().unwrap_or(0);
            let mut trials = self.read_with(tx, study, newest, &failed)?;
            trials.retain(|t| failed.contains(&t.id));
            created = None;
            if let Some(max) = retry {
                for t in &trials {
                    if let Some(mut copy) = retry_template(&t.trial, Some(max)) {
                        copy.number = number;
                        let id = self.insert_trial(tx, study, &copy, false)?;
                        created = Some((id, number + 1));
                        number += 1;
                    }
                }
            }
            Ok(trials.into_iter().map(|t| t.trial.number).collect::<Vec<_>>())
        })?;
        if let Some((id, next)) = created {
            self.set_hint(study, id, next);
        }
        Ok(failed)
    }

    fn read_trials(
        &self,
        study: StudyId,
        after: TrialId,
        include: &[TrialId],
    ) -> Result<Vec<StoredTrial>, SearchError> {
        self.run(Mode::Auto, |tx| self.read_with(tx, study, after, include))
    }
}

fn parse_direction(s: &str) -> Option<Direction> {
    match s {
        "MINIMIZE" => Some(Direction::Minimize),
        "MAXIMIZE" => Some(Direction::Maximize),
        _ => None,
    }
}
