//! Where studies live: one [`Storage`] trait and three backends.
//!
//! - [`InMemoryStorage`]: the default, for one process.
//! - [`SqliteStorage`]: a file shared by the processes of one machine (embedded, no server).
//! - `PostgresStorage` (cargo feature `postgres`): one database shared by workers on many machines.
//!
//! The two databases hold Optuna's relational schema (Optuna 5, alembic revision `v3.2.0.a`), so
//! Python's `optuna.load_study` and optuna-dashboard open a study written here and a study written
//! by Optuna continues here. How the trait is used, and what each method promises:
//!
//! - Trial numbers are allocated under a lock on the study (PostgreSQL: the study's row
//!   `FOR UPDATE`, as Optuna does; SQLite: the database's write lock), so they are unique and
//!   without gaps, and a trial's number is the count of the study's trials created before it.
//! - Reads are incremental: [`Storage::read_trials`] returns the trials created after a given
//!   id plus a given set (the ones still running or waiting), so a study keeps its copy current at
//!   a cost that follows what changed, not the study's size. Finished trials never change:
//!   every write to one fails with [`SearchError::TrialFinished`].
//! - Heartbeats and the times of trials are taken from the database server's clock.
//! - Transient failures (locks held too long, serialization failures, dropped connections) are
//!   retried with a bounded, jittered backoff inside the database backends.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::error::SearchError;
use super::study::Direction;
use super::trial::{FrozenTrial, TrialState};
use super::{Distribution, ParamValue};

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod rdb;
mod sqlite;
mod timefmt;

pub use memory::InMemoryStorage;
#[cfg(feature = "postgres")]
pub use postgres::{Postgres, PostgresStorage};
pub use rdb::{Backend, RdbStorage};
pub use sqlite::{Sqlite, SqliteStorage};
pub(crate) use timefmt::format as timefmt_format;

/// A study's id in its storage.
pub type StudyId = i64;
/// A trial's id in its storage (not its number: ids are unique across studies).
pub type TrialId = i64;

/// Which attributes: a user's (`set_user_attr`) or the system's (samplers, retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrKind {
    /// User attributes.
    User,
    /// System attributes.
    System,
}

/// One study of a storage, as listed by [`Storage::studies`].
#[derive(Debug, Clone, PartialEq)]
pub struct StudySummary {
    /// Its id in the storage.
    pub study_id: StudyId,
    /// Its name.
    pub name: String,
    /// Its objectives' directions.
    pub directions: Vec<Direction>,
    /// How many trials it holds (any state).
    pub n_trials: usize,
}

/// A trial as read from a storage: its id and its record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTrial {
    /// The trial's id in the storage.
    pub id: TrialId,
    /// The trial.
    pub trial: FrozenTrial,
}

/// Reads a study's trials (through a lock held by [`Storage::create_trial`], or not).
pub trait TrialReader {
    /// The study's trials whose id is above `after` or in `include`, ordered by id (so by
    /// number), in one consistent snapshot.
    fn read_trials(&self, after: TrialId, include: &[TrialId]) -> Result<Vec<StoredTrial>, SearchError>;
}

/// What [`Storage::create_trial`] calls under the study's lock: the template (its `number` set to
/// the number the trial gets) and a reader of the study as of the lock. It may change the template
/// (a grid sampler claims its point there) or return `Ok(false)` to create nothing.
pub type Prepare<'a> = &'a mut dyn FnMut(&mut FrozenTrial, &dyn TrialReader) -> Result<bool, SearchError>;

/// A store of studies. Implemented by [`InMemoryStorage`], [`SqliteStorage`] and
/// `PostgresStorage`; a study holds it as `Arc<dyn Storage>`, so handles on several threads and
/// several [`Study`](super::Study) values share one storage.
pub trait Storage: Send + Sync {
    /// Where the storage is (a file, a server and database without the password), for messages.
    fn location(&self) -> String;

    /// Whether running trials should send heartbeats (not for a storage that dies with its
    /// process). Default `true`.
    fn supports_heartbeat(&self) -> bool {
        true
    }

    /// Creates a study. [`SearchError::StudyExists`] if the name is taken.
    fn create_study(&self, name: &str, directions: &[Direction]) -> Result<StudyId, SearchError>;

    /// The id of the study named `name`, if there is one.
    fn find_study(&self, name: &str) -> Result<Option<StudyId>, SearchError>;

    /// Every study, by id.
    fn studies(&self) -> Result<Vec<StudySummary>, SearchError>;

    /// Deletes a study and all its trials.
    fn delete_study(&self, study: StudyId) -> Result<(), SearchError>;

    /// A study's directions, one per objective.
    fn study_directions(&self, study: StudyId) -> Result<Vec<Direction>, SearchError>;

    /// Sets (or replaces) a study attribute.
    fn set_study_attr(&self, study: StudyId, kind: AttrKind, key: &str, value: &Value) -> Result<(), SearchError>;

    /// A study's attributes of one kind.
    fn study_attrs(&self, study: StudyId, kind: AttrKind) -> Result<BTreeMap<String, Value>, SearchError>;

    /// Creates a trial from `template` (its state, values, parameters, intermediate values,
    /// attributes and times; a running trial without a start time starts now) under the study's
    /// lock, and returns its id and number, or `None` when `prepare` declined. With `heartbeat`,
    /// a running trial gets its first heartbeat in the same transaction.
    fn create_trial(
        &self,
        study: StudyId,
        template: &mut FrozenTrial,
        heartbeat: bool,
        prepare: Option<Prepare<'_>>,
    ) -> Result<Option<(TrialId, u64)>, SearchError>;

    /// Moves a waiting trial to running (it starts now); `false` when another worker took it
    /// first.
    fn claim_waiting_trial(&self, trial: TrialId, heartbeat: bool) -> Result<bool, SearchError>;

    /// Records a parameter of a running or waiting trial.
    fn set_trial_param(
        &self,
        trial: TrialId,
        name: &str,
        value: &ParamValue,
        dist: &Distribution,
    ) -> Result<(), SearchError>;

    /// Records an intermediate value (replacing one at the same step).
    fn set_trial_intermediate(&self, trial: TrialId, step: u64, value: f64) -> Result<(), SearchError>;

    /// Sets a trial attribute.
    fn set_trial_attr(&self, trial: TrialId, kind: AttrKind, key: &str, value: &Value) -> Result<(), SearchError>;

    /// Finishes a running trial: its state, its values (for a complete trial) and why it failed.
    /// [`SearchError::TrialFinished`] when it is already finished (another worker failed it after
    /// a missed heartbeat).
    fn finish_trial(
        &self,
        trial: TrialId,
        state: TrialState,
        values: &[f64],
        fail_reason: Option<&str>,
    ) -> Result<(), SearchError>;

    /// Stamps a running trial's heartbeat with the storage's clock.
    fn record_heartbeat(&self, trial: TrialId) -> Result<(), SearchError>;

    /// Fails those of `candidates` that are running and whose last heartbeat is older than
    /// `grace`, and, with `retry: Some(max)`, enqueues a waiting copy of each (as Optuna's
    /// `RetryFailedTrialCallback(max_retry=max)`: until a trial was retried `max` times), in one
    /// transaction. Returns the numbers of the trials it failed; trials without a heartbeat
    /// (asked and told by hand) are never stale.
    fn fail_stale_trials(
        &self,
        study: StudyId,
        candidates: &[TrialId],
        grace: Duration,
        retry: Option<u32>,
    ) -> Result<Vec<u64>, SearchError>;

    /// The study's trials whose id is above `after` or in `include`, ordered by id.
    fn read_trials(&self, study: StudyId, after: TrialId, include: &[TrialId])
        -> Result<Vec<StoredTrial>, SearchError>;
}

/// The waiting copy of a stale trial that Optuna's `RetryFailedTrialCallback` would enqueue, or
/// `None` when the trial has been retried `max_retry` times.
pub(crate) fn retry_template(failed: &FrozenTrial, max_retry: Option<u32>) -> Option<FrozenTrial> {
    let mut system_attrs = failed.system_attrs.clone();
    system_attrs.entry("failed_trial".to_string()).or_insert_with(|| Value::from(failed.number));
    let history = system_attrs.entry("retry_history".to_string()).or_insert_with(|| Value::Array(Vec::new()));
    if !history.is_array() {
        *history = Value::Array(Vec::new());
    }
    let list = history.as_array_mut().expect("made an array above");
    list.push(Value::from(failed.number));
    if max_retry.is_some_and(|m| (m as usize) < list.len()) {
        return None;
    }
    Some(FrozenTrial {
        params: failed.params.clone(),
        distributions: failed.distributions.clone(),
        fixed_params: failed.fixed_params.clone(),
        user_attrs: failed.user_attrs.clone(),
        system_attrs,
        ..FrozenTrial::new(TrialState::Waiting)
    })
}

/// What a stale trial's `fail_reason` says.
pub(crate) fn stale_reason(grace: Duration) -> String {
    format!("no heartbeat for {:.1} s (its worker died or stalled)", grace.as_secs_f64())
}

/// Checks a template before it is stored: parameters inside their distributions, and with the
/// study's number of directions, one value per direction for a complete trial.
pub(crate) fn check_template(t: &FrozenTrial, n_directions: Option<usize>) -> Result<(), SearchError> {
    if let Some(n) = n_directions.filter(|n| t.state == TrialState::Complete && t.values.len() != *n) {
        return Err(SearchError::ValueCount { expected: n, got: t.values.len() });
    }
    if t.state == TrialState::Complete && t.values.iter().any(|v| v.is_nan()) {
        return Err(SearchError::InvalidOption("a complete trial cannot have a NaN value".into()));
    }
    for (name, value) in &t.params {
        let dist = t
            .distributions
            .get(name)
            .ok_or_else(|| SearchError::InvalidOption(format!("parameter `{name}` has no distribution")))?;
        dist.validate(name)?;
        if dist.to_internal(value).is_none() {
            return Err(SearchError::InvalidOption(format!("parameter `{name}` = {value} is outside {dist}")));
        }
    }
    Ok(())
}
