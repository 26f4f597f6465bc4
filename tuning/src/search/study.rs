//! The study: a handle on one study of a [`Storage`], with the sampler and pruner that serve it,
//! its copy of the trials, and the results (best trial, history, CSV). Running the objective
//! (`optimize`, ask and tell) is in `optimize.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use serde_json::Value;

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::log::TrialLog;
use super::pruner::{NopPruner, Pruner};
use super::sampler::{RandomSampler, SampleContext, Sampler};
use super::storage::{
    timefmt_format, AttrKind, InMemoryStorage, SqliteStorage, Storage, StudyId, StudySummary, TrialId,
};
use super::trial::{FrozenTrial, TrialState};

/// Whether an objective is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Smaller is better.
    #[default]
    Minimize,
    /// Larger is better.
    Maximize,
}

impl Direction {
    /// The value turned into a loss (smaller is better).
    pub fn loss(self, value: f64) -> f64 {
        match self {
            Direction::Minimize => value,
            Direction::Maximize => -value,
        }
    }
}

/// A hyperparameter search: a sampler proposes, a pruner stops, the storage records.
///
/// ```
/// use ferrograd_tuning::search::{Direction, SearchError, Study, TpeSampler};
/// let study = Study::builder().direction(Direction::Minimize).sampler(TpeSampler::new()).seed(7).build();
/// study.optimize(30, |t| {
///     let x = t.suggest_float("x", -5.0, 5.0, false)?;
///     Ok::<_, SearchError>((x - 1.0) * (x - 1.0))
/// }).unwrap();
/// assert!(study.best_value().unwrap() < 1.0);
/// ```
pub struct Study {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) id: StudyId,
    name: String,
    pub(crate) directions: Vec<Direction>,
    pub(crate) seed: u64,
    pub(crate) sampler: Box<dyn Sampler>,
    pruner: Box<dyn Pruner>,
    /// How long a running trial may go without a heartbeat (`None`: no heartbeats).
    pub(crate) heartbeat: Option<Duration>,
    /// Retries of trials failed for a missed heartbeat (`None`: none).
    pub(crate) retry: Option<u32>,
    log: Mutex<TrialLog>,
    pub(crate) stopped: AtomicBool,
}

/// Options of a [`Study`], then where it lives: [`build`](Self::build) (in memory),
/// [`create`](Self::create), [`load`](Self::load) or [`load_if_exists`](Self::load_if_exists)
/// in a [`storage`](Self::storage), or [`open_sqlite`](Self::open_sqlite).
pub struct StudyBuilder {
    directions: Vec<Direction>,
    directions_set: bool,
    seed: u64,
    sampler: Box<dyn Sampler>,
    pruner: Box<dyn Pruner>,
    heartbeat_timeout: Option<Duration>,
    retry: Option<u32>,
    storage: Option<Arc<dyn Storage>>,
}

impl StudyBuilder {
    /// Minimise (default) or maximise a single objective.
    pub fn direction(self, direction: Direction) -> Self {
        self.directions(&[direction])
    }

    /// The directions of several objectives (the objective returns one value per direction).
    /// Panics when `directions` is empty.
    #[track_caller]
    pub fn directions(mut self, directions: &[Direction]) -> Self {
        assert!(!directions.is_empty(), "a study needs at least one direction");
        self.directions = directions.to_vec();
        self.directions_set = true;
        self
    }

    /// The seed every trial's generator is derived from (with the trial's number).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The sampler (default: [`RandomSampler`]).
    pub fn sampler(mut self, sampler: impl Sampler + 'static) -> Self {
        self.sampler = Box::new(sampler);
        self
    }

    /// The pruner (default: never prune).
    pub fn pruner(mut self, pruner: impl Pruner + 'static) -> Self {
        self.pruner = Box::new(pruner);
        self
    }

    /// How long a running trial of a database study may go without a heartbeat before another
    /// worker marks it failed (default 60 s; a running trial beats every quarter of it, with the
    /// database server's clock). `Duration::ZERO` turns heartbeats off.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Re-enqueues a trial failed for a missed heartbeat (with its parameters), up to
    /// `max_retry` times per original trial, as Optuna's `RetryFailedTrialCallback`; the retry
    /// records the original's number ([`FrozenTrial::retried_trial_number`]).
    pub fn retry_failed_trials(mut self, max_retry: u32) -> Self {
        self.retry = Some(max_retry);
        self
    }

    /// The storage that [`create`](Self::create), [`load`](Self::load) and
    /// [`load_if_exists`](Self::load_if_exists) use (default: a new [`InMemoryStorage`]).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    fn make(self, storage: Arc<dyn Storage>, id: StudyId, name: &str, directions: Vec<Direction>) -> Study {
        let heartbeat = self.heartbeat_timeout.filter(|_| storage.supports_heartbeat());
        Study {
            storage,
            id,
            name: name.to_string(),
            directions,
            seed: self.seed,
            sampler: self.sampler,
            pruner: self.pruner,
            heartbeat,
            retry: self.retry,
            log: Mutex::new(TrialLog::default()),
            stopped: AtomicBool::new(false),
        }
    }

    /// The study, empty, in memory. Panics when a [`storage`](Self::storage) was given (use
    /// `create`, `load` or `load_if_exists` with a name).
    #[track_caller]
    pub fn build(self) -> Study {
        assert!(self.storage.is_none(), "a study in a storage needs a name: use create, load or load_if_exists");
        self.create("study").expect("a new in-memory storage has no studies and cannot fail")
    }

    /// A new study named `name` in the storage. [`SearchError::StudyExists`] if there is one.
    pub fn create(mut self, name: &str) -> Result<Study, SearchError> {
        let storage = self.storage.take().unwrap_or_else(|| Arc::new(InMemoryStorage::new()));
        let id = storage.create_study(name, &self.directions)?;
        let directions = self.directions.clone();
        Ok(self.make(storage, id, name, directions))
    }

    /// The study named `name` in the storage, with its trials. [`SearchError::NoSuchStudy`] if
    /// there is none; [`SearchError::StudyMismatch`] if directions were given and differ.
    pub fn load(mut self, name: &str) -> Result<Study, SearchError> {
        let storage = self.storage.take().unwrap_or_else(|| Arc::new(InMemoryStorage::new()));
        let id = storage.find_study(name)?.ok_or_else(|| SearchError::NoSuchStudy { name: name.to_string() })?;
        let directions = storage.study_directions(id)?;
        if self.directions_set && directions != self.directions {
            return Err(SearchError::StudyMismatch {
                name: name.to_string(),
                message: format!("stored directions are {directions:?}, asked {:?}", self.directions),
            });
        }
        let study = self.make(storage, id, name, directions);
        study.lock().refresh(&*study.storage, id, study.directions.len())?;
        Ok(study)
    }

    /// [`load`](Self::load) the study named `name`, or [`create`](Self::create) it if there is
    /// none (also when another worker creates it at the same moment).
    pub fn load_if_exists(mut self, name: &str) -> Result<Study, SearchError> {
        let storage = self.storage.take().unwrap_or_else(|| Arc::new(InMemoryStorage::new()));
        if storage.find_study(name)?.is_none() {
            match storage.create_study(name, &self.directions) {
                Ok(_) | Err(SearchError::StudyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.storage(storage).load(name)
    }

    /// The study named `name` in the SQLite file at `path` (both created if missing), with the
    /// trials it already has: a study resumes where it stopped and several processes may share it.
    /// Errors on a file that is not an SQLite database, a database of something else, or a stored
    /// study with other directions.
    ///
    /// ```
    /// use ferrograd_tuning::search::{SearchError, Study};
    /// let path = std::env::temp_dir().join(format!("doc_study_{}.db", std::process::id()));
    /// let study = Study::builder().seed(1).open_sqlite(&path, "demo")?;
    /// study.optimize(3, |t| t.suggest_float("x", 0.0, 1.0, false))?;
    /// let again = Study::builder().seed(1).open_sqlite(&path, "demo")?;
    /// again.optimize(2, |t| t.suggest_float("x", 0.0, 1.0, false))?;
    /// assert_eq!(again.trials().len(), 5);
    /// # drop((study, again));
    /// # for ext in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{ext}", path.display())); }
    /// # Ok::<(), SearchError>(())
    /// ```
    pub fn open_sqlite(self, path: impl AsRef<Path>, name: &str) -> Result<Study, SearchError> {
        let storage = Arc::new(SqliteStorage::open(path)?);
        self.storage(storage).load_if_exists(name)
    }

    /// The study named `name` in the PostgreSQL database at `url` (created if missing), shared by
    /// every worker that opens it, Python Optuna's included.
    #[cfg(feature = "postgres")]
    pub fn open_postgres(self, url: &str, name: &str) -> Result<Study, SearchError> {
        let storage = Arc::new(super::storage::PostgresStorage::connect(url)?);
        self.storage(storage).load_if_exists(name)
    }
}

/// A per-trial seed: SplitMix64 of the study seed mixed with the trial number.
pub(crate) fn trial_seed(seed: u64, number: u64) -> u64 {
    let mut z = seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn mismatch(name: &str, prev: &Distribution, asked: &Distribution) -> SearchError {
    SearchError::DistributionMismatch { name: name.to_string(), previous: prev.to_string(), asked: asked.to_string() }
}

impl Study {
    /// A builder with the defaults: minimise, seed 0, random sampler, no pruning, in memory.
    pub fn builder() -> StudyBuilder {
        StudyBuilder {
            directions: vec![Direction::Minimize],
            directions_set: false,
            seed: 0,
            sampler: Box::new(RandomSampler::new()),
            pruner: Box::new(NopPruner),
            heartbeat_timeout: Some(Duration::from_secs(60)),
            retry: None,
            storage: None,
        }
    }

    /// The direction (of the first objective).
    pub fn direction(&self) -> Direction {
        self.directions[0]
    }

    /// The directions, one per objective.
    pub fn directions(&self) -> &[Direction] {
        &self.directions
    }

    /// The study's name in its storage.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The storage the study lives in.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, TrialLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn refresh(&self, log: &mut TrialLog) -> Result<(), SearchError> {
        log.refresh(&*self.storage, self.id, self.directions.len())
    }

    pub(crate) fn context<'a>(&'a self, log: &'a TrialLog, number: u64) -> SampleContext<'a> {
        SampleContext {
            trials: &log.trials,
            direction: self.directions[0],
            directions: &self.directions,
            finished: &log.finished,
            number,
        }
    }

    pub(crate) fn suggest(
        &self,
        number: u64,
        id: TrialId,
        rng: &mut StdRng,
        fixed: &BTreeMap<String, ParamValue>,
        name: &str,
        dist: Distribution,
    ) -> Result<ParamValue, SearchError> {
        dist.validate(name)?;
        let mut log = self.lock();
        let idx = number as usize;
        if let Some(prev) = log.trials[idx].distributions.get(name) {
            // A retried trial carries its parameters: they are asked again with a compatible space.
            let own = *prev == dist || log.trials[idx].retried_trial_number().is_some() && prev.compatible(&dist);
            if !own {
                return Err(mismatch(name, prev, &dist));
            }
            return Ok(log.trials[idx].params[name].clone());
        }
        if let Some(prev) = log.kinds.get(name) {
            if !prev.compatible(&dist) {
                return Err(mismatch(name, prev, &dist));
            }
        }
        let value = match fixed.get(name).and_then(|v| dist.coerce(v)) {
            Some(v) => v,
            None if dist.is_single() => dist.to_external(match dist {
                Distribution::Float { low, .. } => low,
                Distribution::Int { low, .. } => low as f64,
                Distribution::Categorical { .. } => 0.0,
            }),
            None => {
                let ctx = self.context(&log, number);
                dist.to_external(self.sampler.sample_independent(&ctx, name, &dist, rng)?)
            }
        };
        self.storage.set_trial_param(id, name, &value, &dist)?;
        if !log.kinds.contains_key(name) {
            log.kinds.insert(name.to_string(), dist.clone());
        }
        let t = &mut log.trials[idx];
        t.params.insert(name.to_string(), value.clone());
        t.distributions.insert(name.to_string(), dist);
        Ok(value)
    }

    pub(crate) fn report(&self, number: u64, id: TrialId, step: u64, value: f64) -> Result<(), SearchError> {
        let mut log = self.lock();
        self.storage.set_trial_intermediate(id, step, value)?;
        log.trials[number as usize].intermediate.insert(step, value);
        Ok(())
    }

    pub(crate) fn set_trial_attr(
        &self,
        number: u64,
        id: TrialId,
        system: bool,
        key: &str,
        value: Value,
    ) -> Result<(), SearchError> {
        let mut log = self.lock();
        let kind = if system { AttrKind::System } else { AttrKind::User };
        self.storage.set_trial_attr(id, kind, key, &value)?;
        let t = &mut log.trials[number as usize];
        let attrs = if system { &mut t.system_attrs } else { &mut t.user_attrs };
        attrs.insert(key.to_string(), value);
        Ok(())
    }

    pub(crate) fn should_prune(&self, number: u64) -> bool {
        if self.directions.len() > 1 {
            return false;
        }
        let mut log = self.lock();
        // Pruning is advice: on a failed read it is given from the trials already held, and the
        // failure surfaces at the trial's next write.
        let _ = self.refresh(&mut log);
        let trial = &log.trials[number as usize];
        self.pruner.prune(&log.trials, self.directions[0], trial)
    }

    pub(crate) fn last_step(&self, number: u64) -> Option<u64> {
        self.lock().trials[number as usize].last_intermediate().map(|(s, _)| s)
    }

    /// This process's copy of one of its own trials.
    pub(crate) fn own_trial(&self, number: u64) -> FrozenTrial {
        self.lock().trials[number as usize].clone()
    }

    /// Every trial, by number, read afresh from the storage (other workers' included).
    pub fn try_trials(&self) -> Result<Vec<FrozenTrial>, SearchError> {
        let mut log = self.lock();
        self.refresh(&mut log)?;
        Ok(log.trials.clone())
    }

    /// Every trial, by number, read afresh from the storage (other workers' included). Panics
    /// when the storage cannot be read; [`try_trials`](Self::try_trials) returns the error.
    #[track_caller]
    pub fn trials(&self) -> Vec<FrozenTrial> {
        self.try_trials().unwrap_or_else(|e| panic!("study `{}`: {e} (try_trials returns this error)", self.name))
    }

    /// Trial `number`, read afresh. [`SearchError::NoSuchTrial`] if there is none.
    pub fn try_trial(&self, number: u64) -> Result<FrozenTrial, SearchError> {
        let mut log = self.lock();
        self.refresh(&mut log)?;
        log.trials
            .get(number as usize)
            .cloned()
            .ok_or_else(|| SearchError::NoSuchTrial { study: self.name.clone(), number })
    }

    /// Trial `number`. Panics when there is no such trial or the storage cannot be read.
    #[track_caller]
    pub fn trial(&self, number: u64) -> FrozenTrial {
        self.try_trial(number).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The number of trials recorded (any state). Panics when the storage cannot be read.
    #[track_caller]
    pub fn n_trials(&self) -> usize {
        self.trials().len()
    }

    /// The best complete trial (the first one on ties), or `None` before any completes.
    /// [`SearchError::MultiObjective`] for a study with several directions.
    pub fn try_best_trial(&self) -> Result<Option<FrozenTrial>, SearchError> {
        if self.directions.len() > 1 {
            return Err(SearchError::MultiObjective { directions: self.directions.len(), operation: "best_trial" });
        }
        let trials = self.try_trials()?;
        let dir = self.directions[0];
        let mut best: Option<(f64, &FrozenTrial)> = None;
        for t in trials.iter().filter(|t| t.state == TrialState::Complete) {
            let Some(v) = t.value.map(|v| dir.loss(v)) else { continue };
            if best.is_none_or(|(b, _)| v < b) {
                best = Some((v, t));
            }
        }
        Ok(best.map(|(_, t)| t.clone()))
    }

    /// The best complete trial (the first one on ties). Panics on a study with several
    /// directions or when the storage cannot be read ([`try_best_trial`](Self::try_best_trial)
    /// returns those errors).
    #[track_caller]
    pub fn best_trial(&self) -> Option<FrozenTrial> {
        self.try_best_trial().unwrap_or_else(|e| panic!("study `{}`: {e}", self.name))
    }

    /// The complete trials on the Pareto front, by number: no other complete trial is at least as
    /// good in every objective and better in one (Optuna's `best_trials`; with one objective, every
    /// trial tied for the best value). When any trial carries constraints
    /// ([`Trial::set_constraint`](super::Trial::set_constraint)), only feasible trials count.
    pub fn try_best_trials(&self) -> Result<Vec<FrozenTrial>, SearchError> {
        let trials = self.try_trials()?;
        Ok(super::multi::pareto_trials(&trials, &self.directions).into_iter().cloned().collect())
    }

    /// [`try_best_trials`](Self::try_best_trials), panicking when the storage cannot be read.
    ///
    /// ```
    /// use ferrograd_tuning::search::{Direction, SearchError, Study};
    /// let study = Study::builder().directions(&[Direction::Minimize, Direction::Maximize]).build();
    /// study.optimize(20, |t| {
    ///     let x = t.suggest_float("x", 0.0, 1.0, false)?;
    ///     Ok::<_, SearchError>([x * x, x])
    /// })?;
    /// // Every trial trades the first objective for the second: all are Pareto-optimal.
    /// assert_eq!(study.best_trials().len(), 20);
    /// # Ok::<(), SearchError>(())
    /// ```
    #[track_caller]
    pub fn best_trials(&self) -> Vec<FrozenTrial> {
        self.try_best_trials()
            .unwrap_or_else(|e| panic!("study `{}`: {e} (try_best_trials returns this error)", self.name))
    }

    /// The best value, if a trial completed (panics as [`best_trial`](Self::best_trial)).
    #[track_caller]
    pub fn best_value(&self) -> Option<f64> {
        self.best_trial().and_then(|t| t.value)
    }

    /// The best trial's parameters (panics as [`best_trial`](Self::best_trial)).
    #[track_caller]
    pub fn best_params(&self) -> Option<BTreeMap<String, ParamValue>> {
        self.best_trial().map(|t| t.params)
    }

    /// For each trial number, the best value among complete trials up to it (of the first
    /// objective). Panics when the storage cannot be read.
    #[track_caller]
    pub fn best_value_history(&self) -> Vec<Option<f64>> {
        let mut best: Option<f64> = None;
        let dir = self.directions[0];
        self.trials()
            .iter()
            .map(|t| {
                if let (TrialState::Complete, Some(v)) = (t.state, t.value) {
                    if best.is_none_or(|b| dir.loss(v) < dir.loss(b)) {
                        best = Some(v);
                    }
                }
                best
            })
            .collect()
    }

    /// Sets a user attribute of the study (any JSON value).
    pub fn set_user_attr(&self, key: &str, value: impl Into<Value>) -> Result<(), SearchError> {
        self.storage.set_study_attr(self.id, AttrKind::User, key, &value.into())
    }

    /// The study's user attributes.
    pub fn user_attrs(&self) -> Result<BTreeMap<String, Value>, SearchError> {
        self.storage.study_attrs(self.id, AttrKind::User)
    }

    /// Sets a system attribute of the study (where samplers keep study-wide state).
    pub fn set_system_attr(&self, key: &str, value: impl Into<Value>) -> Result<(), SearchError> {
        self.storage.set_study_attr(self.id, AttrKind::System, key, &value.into())
    }

    /// The study's system attributes.
    pub fn system_attrs(&self) -> Result<BTreeMap<String, Value>, SearchError> {
        self.storage.study_attrs(self.id, AttrKind::System)
    }

    /// Every trial as CSV, one row per trial:
    /// `number,state,value,duration_s,params_<name>...,datetime_start,datetime_complete,fail_reason,intermediate_values,user_attrs_<key>...`
    /// (a study with several objectives has `values_1`... after `value`; names sorted; empty
    /// cells for what a trial lacks; times in UTC; intermediate values as `step:value` joined by
    /// `;`; attributes as JSON).
    pub fn try_to_csv(&self) -> Result<String, SearchError> {
        let trials = self.try_trials()?;
        let names: BTreeSet<&String> = trials.iter().flat_map(|t| t.params.keys()).collect();
        let attrs: BTreeSet<&String> = trials.iter().flat_map(|t| t.user_attrs.keys()).collect();
        let mut out = String::from("number,state,value");
        for i in 1..self.directions.len() {
            let _ = write!(out, ",values_{i}");
        }
        out.push_str(",duration_s");
        for n in &names {
            out.push_str(",params_");
            out.push_str(&csv_cell(n));
        }
        out.push_str(",datetime_start,datetime_complete,fail_reason,intermediate_values");
        for a in &attrs {
            out.push_str(",user_attrs_");
            out.push_str(&csv_cell(a));
        }
        out.push('\n');
        let time = |t: Option<std::time::SystemTime>| t.map(timefmt_format).unwrap_or_default();
        for t in &trials {
            let _ = write!(out, "{},{}", t.number, t.state);
            for i in 0..self.directions.len() {
                let v = if i == 0 { t.value } else { t.values.get(i).copied() };
                let _ = write!(out, ",{}", v.map(|v| v.to_string()).unwrap_or_default());
            }
            let _ = write!(out, ",{}", t.duration.map(|d| d.as_secs_f64().to_string()).unwrap_or_default());
            for n in &names {
                out.push(',');
                if let Some(v) = t.params.get(*n) {
                    out.push_str(&csv_cell(&v.to_string()));
                }
            }
            let steps: Vec<String> = t.intermediate.iter().map(|(s, v)| format!("{s}:{v}")).collect();
            let _ = write!(
                out,
                ",{},{},{},{}",
                time(t.datetime_start),
                time(t.datetime_complete),
                csv_cell(t.fail_reason.as_deref().unwrap_or("")),
                csv_cell(&steps.join(";"))
            );
            for a in &attrs {
                out.push(',');
                if let Some(v) = t.user_attrs.get(*a) {
                    out.push_str(&csv_cell(&v.to_string()));
                }
            }
            out.push('\n');
        }
        Ok(out)
    }

    /// [`try_to_csv`](Self::try_to_csv), panicking when the storage cannot be read.
    #[track_caller]
    pub fn to_csv(&self) -> String {
        self.try_to_csv().unwrap_or_else(|e| panic!("study `{}`: {e} (try_to_csv returns this error)", self.name))
    }

    /// Writes [`Study::to_csv`] to `path` (an unreadable storage is an `io::Error` of kind
    /// `Other` naming it).
    pub fn write_csv(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let csv = self.try_to_csv().map_err(std::io::Error::other)?;
        std::fs::write(path, csv)
    }
}

/// Quotes a CSV cell when it holds a comma, a quote or a line break.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Every study of a storage (Optuna's `get_all_study_summaries`).
pub fn study_summaries(storage: &dyn Storage) -> Result<Vec<StudySummary>, SearchError> {
    storage.studies()
}

/// Deletes the study named `name` and its trials (Optuna's `delete_study`).
pub fn delete_study(storage: &dyn Storage, name: &str) -> Result<(), SearchError> {
    let id = storage.find_study(name)?.ok_or_else(|| SearchError::NoSuchStudy { name: name.to_string() })?;
    storage.delete_study(id)
}

/// Copies study `from_name` of `from` into a new study `to_name` of `to`: directions, study
/// attributes and every trial with its number, state, values, parameters, intermediate values,
/// attributes and times (Optuna's `copy_study`).
///
/// ```
/// use ferrograd_tuning::search::{copy_study, InMemoryStorage, SearchError, Study};
/// use std::sync::Arc;
/// let (a, b) = (Arc::new(InMemoryStorage::new()), Arc::new(InMemoryStorage::new()));
/// let study = Study::builder().storage(a.clone()).create("s")?;
/// study.optimize(4, |t| t.suggest_int("n", 0, 9, 1, false).map(|n| n as f64))?;
/// copy_study(&*a, "s", &*b, "copy")?;
/// assert_eq!(Study::builder().storage(b).load("copy")?.trials(), study.trials());
/// # Ok::<(), SearchError>(())
/// ```
pub fn copy_study(from: &dyn Storage, from_name: &str, to: &dyn Storage, to_name: &str) -> Result<(), SearchError> {
    let id = from.find_study(from_name)?.ok_or_else(|| SearchError::NoSuchStudy { name: from_name.to_string() })?;
    let directions = from.study_directions(id)?;
    let trials = from.read_trials(id, 0, &[])?;
    let user = from.study_attrs(id, AttrKind::User)?;
    let system = from.study_attrs(id, AttrKind::System)?;
    let new = to.create_study(to_name, &directions)?;
    for (kind, attrs) in [(AttrKind::User, user), (AttrKind::System, system)] {
        for (k, v) in attrs {
            to.set_study_attr(new, kind, &k, &v)?;
        }
    }
    for mut t in trials {
        to.create_trial(new, &mut t.trial, false, None)?;
    }
    Ok(())
}
