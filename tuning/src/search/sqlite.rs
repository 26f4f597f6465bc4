//! SQLite storage of a study, so it persists, resumes after the process dies and is shared by
//! several processes: trial numbers are allocated inside an immediate (write-locking)
//! transaction, the file runs in WAL mode with a busy timeout, and a trial whose heartbeat is
//! older than the timeout (its process died) is marked failed when the next trial starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{json, Value};

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::study::Direction;
use super::trial::{FrozenTrial, TrialState};

/// The schema tag kept in `ferrograd_meta`; a database with tables but without it is foreign.
const SCHEMA: &str = "ferrograd-search-1";

const CREATE: &str = "
CREATE TABLE ferrograd_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE studies (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, direction TEXT NOT NULL);
CREATE TABLE trials (study_id INTEGER NOT NULL, number INTEGER NOT NULL, state TEXT NOT NULL, value REAL,
    fail_reason TEXT, duration REAL, heartbeat REAL NOT NULL, PRIMARY KEY (study_id, number));
CREATE TABLE params (study_id INTEGER NOT NULL, number INTEGER NOT NULL, name TEXT NOT NULL, fixed INTEGER NOT NULL,
    value TEXT NOT NULL, distribution TEXT, PRIMARY KEY (study_id, number, name, fixed));
CREATE TABLE intermediate (study_id INTEGER NOT NULL, number INTEGER NOT NULL, step INTEGER NOT NULL,
    value REAL NOT NULL, PRIMARY KEY (study_id, number, step));
";

/// A study's connection to its SQLite file.
pub(crate) struct Db {
    conn: Mutex<Connection>,
    study_id: i64,
    path: PathBuf,
    heartbeat_timeout: Duration,
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn encode_value(v: &ParamValue) -> String {
    match v {
        ParamValue::Float(x) => format!("f:{x}"),
        ParamValue::Int(x) => format!("i:{x}"),
        ParamValue::Categorical(s) => format!("c:{s}"),
    }
}

fn decode_value(s: &str) -> Option<ParamValue> {
    let (kind, rest) = s.split_once(':')?;
    match kind {
        "f" => rest.parse().ok().map(ParamValue::Float),
        "i" => rest.parse().ok().map(ParamValue::Int),
        "c" => Some(ParamValue::Categorical(rest.to_string())),
        _ => None,
    }
}

fn encode_dist(d: &Distribution) -> String {
    match d {
        Distribution::Float { low, high, log, step } => json!(["float", low, high, log, step]),
        Distribution::Int { low, high, step, log } => json!(["int", low, high, step, log]),
        Distribution::Categorical { choices } => json!(["categorical", choices]),
    }
    .to_string()
}

fn decode_dist(s: &str) -> Option<Distribution> {
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

fn parse_state(s: &str) -> Option<TrialState> {
    Some(match s {
        "RUNNING" => TrialState::Running,
        "COMPLETE" => TrialState::Complete,
        "PRUNED" => TrialState::Pruned,
        "FAILED" => TrialState::Failed,
        _ => return None,
    })
}

fn direction_text(d: Direction) -> &'static str {
    match d {
        Direction::Minimize => "minimize",
        Direction::Maximize => "maximize",
    }
}

impl Db {
    /// Opens (creating if needed) study `name` in the file at `path`.
    pub(crate) fn open(
        path: &Path,
        name: &str,
        direction: Direction,
        heartbeat_timeout: Duration,
    ) -> Result<Db, SearchError> {
        let storage = |e: rusqlite::Error| SearchError::Storage { path: path.to_path_buf(), message: e.to_string() };
        let mut conn = Connection::open(path).map_err(storage)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(storage)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(storage)?;
        // In WAL mode NORMAL stays consistent if a process dies (only a power loss may drop the
        // last commits) and avoids an fsync per statement.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(storage)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage)?;
        let n_tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))
            .map_err(storage)?;
        if n_tables == 0 {
            tx.execute_batch(CREATE).map_err(storage)?;
            tx.execute("INSERT INTO ferrograd_meta (key, value) VALUES ('schema', ?1)", [SCHEMA]).map_err(storage)?;
        } else {
            let tag: Option<String> = tx
                .query_row("SELECT value FROM ferrograd_meta WHERE key = 'schema'", [], |r| r.get(0))
                .optional()
                .unwrap_or(None);
            if tag.as_deref() != Some(SCHEMA) {
                return Err(SearchError::ForeignDatabase { path: path.to_path_buf() });
            }
        }
        let existing: Option<(i64, String)> = tx
            .query_row("SELECT id, direction FROM studies WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(storage)?;
        let study_id = match existing {
            Some((id, dir)) if dir == direction_text(direction) => id,
            Some((_, dir)) => {
                return Err(SearchError::StudyMismatch {
                    name: name.to_string(),
                    message: format!("stored direction is {dir}, asked {}", direction_text(direction)),
                })
            }
            None => {
                tx.execute(
                    "INSERT INTO studies (name, direction) VALUES (?1, ?2)",
                    params![name, direction_text(direction)],
                )
                .map_err(storage)?;
                tx.last_insert_rowid()
            }
        };
        tx.commit().map_err(storage)?;
        Ok(Db { conn: Mutex::new(conn), study_id, path: path.to_path_buf(), heartbeat_timeout })
    }

    fn err(&self, e: rusqlite::Error) -> SearchError {
        SearchError::Storage { path: self.path.clone(), message: e.to_string() }
    }

    fn corrupt(&self, what: &str) -> SearchError {
        SearchError::Storage { path: self.path.clone(), message: format!("corrupt {what}") }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings `trials` (a copy of the study, by number) up to date. Finished trials never change,
    /// so only those from the first unfinished one on are read again: the cost follows the
    /// running and new trials, not the history.
    pub(crate) fn refresh(&self, trials: &mut Vec<FrozenTrial>) -> Result<(), SearchError> {
        let conn = self.lock();
        self.refresh_with(&conn, trials)
    }

    fn refresh_with(&self, conn: &Connection, trials: &mut Vec<FrozenTrial>) -> Result<(), SearchError> {
        let from = trials.iter().position(|t| t.state == TrialState::Running).unwrap_or(trials.len());
        let tail = self.load_from(conn, from)?;
        trials.truncate(from);
        trials.extend(tail);
        Ok(())
    }

    /// The trials numbered `from` on.
    fn load_from(&self, conn: &Connection, from: usize) -> Result<Vec<FrozenTrial>, SearchError> {
        let e = |x| self.err(x);
        let from_i = from as i64;
        let mut trials = Vec::new();
        let mut stmt = conn
            .prepare_cached(
                "SELECT number, state, value, fail_reason, duration FROM trials
                 WHERE study_id = ?1 AND number >= ?2 ORDER BY number",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map([self.study_id, from_i], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<f64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<f64>>(4)?,
                ))
            })
            .map_err(e)?;
        for row in rows {
            let (number, state, value, fail_reason, duration) = row.map_err(e)?;
            if number != from_i + trials.len() as i64 {
                return Err(self.corrupt("trial numbering"));
            }
            let mut t = FrozenTrial::new_running(number as u64, BTreeMap::new());
            t.state = parse_state(&state).ok_or_else(|| self.corrupt("trial state"))?;
            t.value = value;
            t.fail_reason = fail_reason;
            t.duration = duration.map(Duration::from_secs_f64);
            trials.push(t);
        }
        let mut stmt = conn
            .prepare_cached(
                "SELECT number, name, fixed, value, distribution FROM params WHERE study_id = ?1 AND number >= ?2",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map([self.study_id, from_i], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(e)?;
        for row in rows {
            let (number, name, fixed, value, dist) = row.map_err(e)?;
            let t = trials.get_mut((number - from_i) as usize).ok_or_else(|| self.corrupt("parameter row"))?;
            let value = decode_value(&value).ok_or_else(|| self.corrupt("parameter value"))?;
            if fixed {
                t.fixed_params.insert(name, value);
            } else {
                let dist = dist.as_deref().and_then(decode_dist).ok_or_else(|| self.corrupt("distribution"))?;
                t.params.insert(name.clone(), value);
                t.distributions.insert(name, dist);
            }
        }
        let mut stmt = conn
            .prepare_cached("SELECT number, step, value FROM intermediate WHERE study_id = ?1 AND number >= ?2")
            .map_err(e)?;
        let rows = stmt
            .query_map([self.study_id, from_i], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, f64>(2)?)))
            .map_err(e)?;
        for row in rows {
            let (number, step, value) = row.map_err(e)?;
            let t = trials.get_mut((number - from_i) as usize).ok_or_else(|| self.corrupt("intermediate row"))?;
            t.intermediate.insert(step as u64, value);
        }
        Ok(trials)
    }

    /// In one write transaction: fails trials whose heartbeat timed out, refreshes `trials`, lets
    /// `propose` pick the new trial's fixed parameters from them, and inserts the trial (pushed
    /// onto `trials` too). `Ok(false)` when `propose` has nothing left.
    pub(crate) fn start_trial(
        &self,
        trials: &mut Vec<FrozenTrial>,
        propose: impl FnOnce(&[FrozenTrial]) -> Option<BTreeMap<String, ParamValue>>,
    ) -> Result<bool, SearchError> {
        let e = |x| self.err(x);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e)?;
        let t = now();
        tx.execute(
            "UPDATE trials SET state = 'FAILED', fail_reason = 'heartbeat timed out (its process died?)'
             WHERE study_id = ?1 AND state = 'RUNNING' AND heartbeat < ?2",
            params![self.study_id, t - self.heartbeat_timeout.as_secs_f64()],
        )
        .map_err(e)?;
        self.refresh_with(&tx, trials)?;
        let Some(fixed) = propose(trials) else { return Ok(false) };
        let number = trials.len() as i64;
        tx.execute(
            "INSERT INTO trials (study_id, number, state, heartbeat) VALUES (?1, ?2, 'RUNNING', ?3)",
            params![self.study_id, number, t],
        )
        .map_err(e)?;
        for (name, value) in &fixed {
            tx.execute(
                "INSERT INTO params (study_id, number, name, fixed, value) VALUES (?1, ?2, ?3, 1, ?4)",
                params![self.study_id, number, name, encode_value(value)],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)?;
        trials.push(FrozenTrial::new_running(number as u64, fixed));
        Ok(true)
    }

    /// Records a parameter of a running trial.
    pub(crate) fn set_param(
        &self,
        number: u64,
        name: &str,
        value: &ParamValue,
        dist: &Distribution,
    ) -> Result<(), SearchError> {
        self.lock()
            .execute(
                "INSERT INTO params (study_id, number, name, fixed, value, distribution) VALUES (?1, ?2, ?3, 0, ?4, ?5)",
                params![self.study_id, number as i64, name, encode_value(value), encode_dist(dist)],
            )
            .map(drop)
            .map_err(|x| self.err(x))
    }

    /// Records an intermediate value (and refreshes the heartbeat).
    pub(crate) fn report(&self, number: u64, step: u64, value: f64) -> Result<(), SearchError> {
        let conn = self.lock();
        conn.execute(
            "INSERT OR REPLACE INTO intermediate (study_id, number, step, value) VALUES (?1, ?2, ?3, ?4)",
            params![self.study_id, number as i64, step as i64, value],
        )
        .map_err(|x| self.err(x))?;
        drop(conn);
        self.heartbeat(number)
    }

    /// Refreshes a running trial's heartbeat.
    pub(crate) fn heartbeat(&self, number: u64) -> Result<(), SearchError> {
        self.lock()
            .execute(
                "UPDATE trials SET heartbeat = ?3 WHERE study_id = ?1 AND number = ?2",
                params![self.study_id, number as i64, now()],
            )
            .map(drop)
            .map_err(|x| self.err(x))
    }

    /// Records a finished trial's state, value, failure and duration.
    pub(crate) fn finish(&self, t: &FrozenTrial) -> Result<(), SearchError> {
        self.lock()
            .execute(
                "UPDATE trials SET state = ?3, value = ?4, fail_reason = ?5, duration = ?6, heartbeat = ?7
                 WHERE study_id = ?1 AND number = ?2",
                params![
                    self.study_id,
                    t.number as i64,
                    t.state.to_string(),
                    t.value,
                    t.fail_reason,
                    t.duration.map(|d| d.as_secs_f64()),
                    now()
                ],
            )
            .map(drop)
            .map_err(|x| self.err(x))
    }

    /// The heartbeat period: a quarter of the timeout.
    pub(crate) fn heartbeat_period(&self) -> Duration {
        self.heartbeat_timeout / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_distributions_round_trip() {
        for v in [ParamValue::Float(0.1 + 0.2), ParamValue::Int(-7), ParamValue::Categorical("a:b".into())] {
            assert_eq!(decode_value(&encode_value(&v)), Some(v));
        }
        for d in [
            Distribution::Float { low: 1e-5, high: 0.3, log: true, step: None },
            Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.25) },
            Distribution::Int { low: 1, high: 9, step: 2, log: false },
            Distribution::Categorical { choices: vec!["x".into(), "\"y\"".into()] },
        ] {
            assert_eq!(decode_dist(&encode_dist(&d)), Some(d));
        }
    }
}
