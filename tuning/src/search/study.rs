//! The study: the shared record of trials, the loop that runs the objective (serially or on
//! threads) and the results (best trial, table, CSV, best-so-far history).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::pruner::{NopPruner, Pruner};
use super::sampler::{RandomSampler, SampleContext, Sampler};
use super::sqlite::Db;
use super::trial::{FrozenTrial, Trial, TrialState};

/// Whether the objective is minimised or maximised.
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

/// The trials a study holds and the first distribution seen for each name.
#[derive(Default)]
struct State {
    trials: Vec<FrozenTrial>,
    kinds: HashMap<String, Distribution>,
}

impl State {
    /// Records the distributions of the trials from `from` on (after a refresh from storage).
    fn absorb_kinds(&mut self, from: usize) {
        for t in &self.trials[from.min(self.trials.len())..] {
            for (name, d) in &t.distributions {
                self.kinds.entry(name.clone()).or_insert_with(|| d.clone());
            }
        }
    }

    /// The first trial a refresh from storage may change.
    fn first_unfinished(&self) -> usize {
        self.trials.iter().position(|t| t.state == TrialState::Running).unwrap_or(self.trials.len())
    }

    /// Refreshes the trials from storage.
    fn refresh(&mut self, db: &Db) -> Result<(), SearchError> {
        let from = self.first_unfinished();
        db.refresh(&mut self.trials)?;
        self.absorb_kinds(from);
        Ok(())
    }
}

/// A hyperparameter search: a sampler proposes, a pruner stops, the study records.
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
    direction: Direction,
    seed: u64,
    sampler: Box<dyn Sampler>,
    pruner: Box<dyn Pruner>,
    state: Mutex<State>,
    db: Option<Db>,
}

/// Options of a [`Study`].
pub struct StudyBuilder {
    direction: Direction,
    seed: u64,
    sampler: Box<dyn Sampler>,
    pruner: Box<dyn Pruner>,
    heartbeat_timeout: Duration,
}

impl StudyBuilder {
    /// Minimise (default) or maximise.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
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

    /// How long a RUNNING trial of an SQLite study may go without a heartbeat before another
    /// process marks it failed (default 60 s; a running trial beats every quarter of it).
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// The study, empty, in memory.
    pub fn build(self) -> Study {
        Study {
            direction: self.direction,
            seed: self.seed,
            sampler: self.sampler,
            pruner: self.pruner,
            state: Mutex::new(State::default()),
            db: None,
        }
    }

    /// The study named `name` in the SQLite file at `path` (created if missing), with the trials
    /// it already has: a study resumes where it stopped and several processes may share it.
    /// Errors on a file that is not an SQLite database, a database of something else, or a stored
    /// study with another direction.
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
        let db = Db::open(path.as_ref(), name, self.direction, self.heartbeat_timeout)?;
        let study = Study { db: Some(db), ..self.build() };
        study.lock().refresh(study.db.as_ref().expect("just set"))?;
        Ok(study)
    }
}

/// What a finished objective call turns into.
fn outcome<E: Into<Box<dyn Error + Send + Sync>>>(result: Result<f64, E>) -> (TrialState, Option<f64>, Option<String>) {
    match result {
        Ok(v) if v.is_nan() => (TrialState::Failed, None, Some("the objective returned NaN".into())),
        Ok(v) => (TrialState::Complete, Some(v), None),
        Err(e) => {
            let e: Box<dyn Error + Send + Sync> = e.into();
            match e.downcast_ref::<SearchError>() {
                Some(SearchError::Pruned { .. }) => (TrialState::Pruned, None, None),
                _ => (TrialState::Failed, None, Some(e.to_string())),
            }
        }
    }
}

/// A per-trial seed: SplitMix64 of the study seed mixed with the trial number.
fn trial_seed(seed: u64, number: u64) -> u64 {
    let mut z = seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Study {
    /// A builder with the defaults: minimise, seed 0, random sampler, no pruning.
    pub fn builder() -> StudyBuilder {
        StudyBuilder {
            direction: Direction::Minimize,
            seed: 0,
            sampler: Box::new(RandomSampler::new()),
            pruner: Box::new(NopPruner),
            heartbeat_timeout: Duration::from_secs(60),
        }
    }

    /// The direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a trial: numbers it, lets the sampler propose a relative point. `None` when the
    /// sampler has nothing left (an exhausted grid).
    fn start_trial(&self) -> Result<Option<Trial<'_>>, SearchError> {
        let mut st = self.lock();
        let mut made = None;
        let mut propose = |trials: &[FrozenTrial]| {
            let number = trials.len() as u64;
            let mut rng = StdRng::seed_from_u64(trial_seed(self.seed, number));
            let ctx = SampleContext { trials, direction: self.direction, number };
            let fixed = self.sampler.sample_relative(&ctx, &mut rng).ok()?;
            made = Some((number, rng));
            Some(fixed)
        };
        let fixed = match &self.db {
            None => {
                let Some(fixed) = propose(&st.trials) else { return Ok(None) };
                let number = st.trials.len() as u64;
                st.trials.push(FrozenTrial::new_running(number, fixed.clone()));
                fixed
            }
            Some(db) => {
                let from = st.first_unfinished();
                if !db.start_trial(&mut st.trials, &mut propose)? {
                    return Ok(None);
                }
                st.absorb_kinds(from);
                st.trials.last().expect("the new trial").fixed_params.clone()
            }
        };
        let (number, rng) = made.expect("proposed");
        Ok(Some(Trial { study: self, number, rng, fixed, storage_error: None }))
    }

    fn finish_trial(
        &self,
        number: u64,
        (state, value, reason): (TrialState, Option<f64>, Option<String>),
        start: Instant,
    ) -> Result<(), SearchError> {
        let mut st = self.lock();
        let t = &mut st.trials[number as usize];
        t.state = state;
        t.value = value;
        t.fail_reason = reason;
        t.duration = Some(start.elapsed());
        match &self.db {
            Some(db) => db.finish(t),
            None => Ok(()),
        }
    }

    /// Runs one trial of `objective`; `false` when the sampler had nothing left to propose.
    fn run_one<F, E>(&self, objective: &mut F) -> Result<bool, SearchError>
    where
        F: FnMut(&mut Trial<'_>) -> Result<f64, E>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let Some(mut trial) = self.start_trial()? else { return Ok(false) };
        let start = Instant::now();
        let number = trial.number;
        let result = std::thread::scope(|s| {
            let (stop, stopped) = mpsc::channel::<()>();
            if let Some(db) = &self.db {
                let period = db.heartbeat_period();
                s.spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                        // A missed beat is retried at the next period.
                        let _ = db.heartbeat(number);
                    }
                });
            }
            let result = objective(&mut trial);
            drop(stop);
            result
        });
        let outcome = outcome(result);
        self.finish_trial(number, outcome, start)?;
        match trial.storage_error.take() {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    /// Runs `n_trials` trials of `objective` one after the other. A trial whose objective returns
    /// an error or NaN is recorded as failed and the study goes on; an error that is
    /// [`SearchError::Pruned`] records the trial as pruned. Stops early when a grid is exhausted.
    ///
    /// Errors only when the study's storage fails.
    pub fn optimize<F, E>(&self, n_trials: usize, mut objective: F) -> Result<(), SearchError>
    where
        F: FnMut(&mut Trial<'_>) -> Result<f64, E>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        for _ in 0..n_trials {
            if !self.run_one(&mut objective)? {
                break;
            }
        }
        Ok(())
    }

    /// Runs `n_trials` trials on `n_jobs` threads sharing this study (numbers stay unique; the
    /// sampler sees running trials, so TPE's constant liar and the grid avoid duplicates).
    /// Errors with the first storage failure of any worker (the others stop too).
    pub fn optimize_parallel<F, E>(&self, n_trials: usize, n_jobs: usize, objective: F) -> Result<(), SearchError>
    where
        F: Fn(&mut Trial<'_>) -> Result<f64, E> + Sync,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let claimed = AtomicUsize::new(0);
        let done = AtomicBool::new(false);
        let first_error = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..n_jobs.max(1) {
                s.spawn(|| {
                    let mut f = |t: &mut Trial<'_>| objective(t);
                    while !done.load(Ordering::Relaxed) && claimed.fetch_add(1, Ordering::Relaxed) < n_trials {
                        match self.run_one(&mut f) {
                            Ok(true) => {}
                            Ok(false) => done.store(true, Ordering::Relaxed),
                            Err(e) => {
                                done.store(true, Ordering::Relaxed);
                                first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(crate) fn suggest(
        &self,
        number: u64,
        rng: &mut StdRng,
        fixed: &BTreeMap<String, ParamValue>,
        name: &str,
        dist: Distribution,
    ) -> Result<ParamValue, SearchError> {
        dist.validate(name)?;
        let mut st = self.lock();
        let idx = number as usize;
        if let Some(prev) = st.trials[idx].distributions.get(name) {
            if *prev != dist {
                return Err(mismatch(name, prev, &dist));
            }
            return Ok(st.trials[idx].params[name].clone());
        }
        if let Some(prev) = st.kinds.get(name) {
            let clash = !prev.same_kind(&dist) || matches!(prev, Distribution::Categorical { .. }) && *prev != dist;
            if clash {
                return Err(mismatch(name, prev, &dist));
            }
        }
        let value = match fixed.get(name).and_then(|v| dist.to_internal(v)) {
            Some(x) => dist.to_external(x),
            None if dist.is_single() => dist.to_external(match dist {
                Distribution::Float { low, .. } => low,
                Distribution::Int { low, .. } => low as f64,
                Distribution::Categorical { .. } => 0.0,
            }),
            None => {
                let ctx = SampleContext { trials: &st.trials, direction: self.direction, number };
                dist.to_external(self.sampler.sample_independent(&ctx, name, &dist, rng)?)
            }
        };
        if let Some(db) = &self.db {
            db.set_param(number, name, &value, &dist)?;
        }
        st.kinds.entry(name.to_string()).or_insert_with(|| dist.clone());
        let t = &mut st.trials[idx];
        t.params.insert(name.to_string(), value.clone());
        t.distributions.insert(name.to_string(), dist);
        Ok(value)
    }

    pub(crate) fn report(&self, number: u64, step: u64, value: f64) -> Result<(), SearchError> {
        let mut st = self.lock();
        if let Some(db) = &self.db {
            db.report(number, step, value)?;
        }
        st.trials[number as usize].intermediate.insert(step, value);
        Ok(())
    }

    pub(crate) fn should_prune(&self, number: u64) -> bool {
        let st = self.lock();
        self.pruner.prune(&st.trials, self.direction, &st.trials[number as usize])
    }

    pub(crate) fn last_step(&self, number: u64) -> Option<u64> {
        self.lock().trials[number as usize].last_intermediate().map(|(s, _)| s)
    }

    /// A copy of trial `number`. Panics when there is no such trial.
    pub fn trial(&self, number: u64) -> FrozenTrial {
        self.lock().trials[number as usize].clone()
    }

    /// Every trial, by number: for an SQLite study, read afresh from the file (trials of other
    /// processes included; this process's copy if the file cannot be read).
    pub fn trials(&self) -> Vec<FrozenTrial> {
        let mut st = self.lock();
        if let Some(db) = &self.db {
            // On a read failure the copy in memory is returned.
            let _ = st.refresh(db);
        }
        st.trials.clone()
    }

    /// The number of trials recorded (any state).
    pub fn n_trials(&self) -> usize {
        self.trials().len()
    }

    /// The best complete trial (the first one on ties).
    pub fn best_trial(&self) -> Option<FrozenTrial> {
        let trials = self.trials();
        let mut best: Option<&FrozenTrial> = None;
        for t in trials.iter().filter(|t| t.state == TrialState::Complete) {
            let v = self.direction.loss(t.value.expect("a complete trial has a value"));
            if best.is_none_or(|b| v < self.direction.loss(b.value.expect("complete"))) {
                best = Some(t);
            }
        }
        best.cloned()
    }

    /// The best value, if a trial completed.
    pub fn best_value(&self) -> Option<f64> {
        self.best_trial().and_then(|t| t.value)
    }

    /// The best trial's parameters.
    pub fn best_params(&self) -> Option<BTreeMap<String, ParamValue>> {
        self.best_trial().map(|t| t.params)
    }

    /// For each trial number, the best value among complete trials up to it.
    pub fn best_value_history(&self) -> Vec<Option<f64>> {
        let mut best: Option<f64> = None;
        self.trials()
            .iter()
            .map(|t| {
                if let (TrialState::Complete, Some(v)) = (t.state, t.value) {
                    if best.is_none_or(|b| self.direction.loss(v) < self.direction.loss(b)) {
                        best = Some(v);
                    }
                }
                best
            })
            .collect()
    }

    /// All trials as CSV: `number,state,value,duration_s,params_<name>...` (names sorted; empty
    /// cells for parameters a trial did not ask for).
    pub fn to_csv(&self) -> String {
        let trials = self.trials();
        let names: BTreeSet<&String> = trials.iter().flat_map(|t| t.params.keys()).collect();
        let mut out = String::from("number,state,value,duration_s");
        for n in &names {
            out.push_str(",params_");
            out.push_str(&csv_cell(n));
        }
        out.push('\n');
        for t in &trials {
            let value = t.value.map(|v| v.to_string()).unwrap_or_default();
            let dur = t.duration.map(|d| d.as_secs_f64().to_string()).unwrap_or_default();
            let _ = write!(out, "{},{},{},{}", t.number, t.state, value, dur);
            for n in &names {
                out.push(',');
                if let Some(v) = t.params.get(*n) {
                    out.push_str(&csv_cell(&v.to_string()));
                }
            }
            out.push('\n');
        }
        out
    }

    /// Writes [`Study::to_csv`] to `path`.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_csv())
    }
}

fn mismatch(name: &str, prev: &Distribution, asked: &Distribution) -> SearchError {
    SearchError::DistributionMismatch { name: name.to_string(), previous: prev.to_string(), asked: asked.to_string() }
}

/// Quotes a CSV cell when it holds a comma, a quote or a line break.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
