//! Running the objective: `optimize` (serially or on threads, with a trial budget, a timeout,
//! callbacks, `stop()` and a [`Catch`] policy), and ask and tell for loops the user drives.
//!
//! A trial starts under the study's lock on its storage: stale trials of dead workers are failed
//! (and retried when asked), an enqueued trial is taken if there is one, else a new one is
//! numbered. While the objective runs, a thread stamps the trial's heartbeat. Whatever the
//! objective does (returns, errs, panics), the trial is finished exactly once.

use std::error::Error;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::distribution::ParamValue;
use super::error::SearchError;
use super::storage::{check_template, TrialReader};
use super::study::{trial_seed, Study};
use super::trial::{FrozenTrial, Trial, TrialState};

/// What an objective returns: one value per study direction.
pub trait IntoValues {
    /// The values.
    fn into_values(self) -> Vec<f64>;
}

impl IntoValues for f64 {
    fn into_values(self) -> Vec<f64> {
        vec![self]
    }
}

impl IntoValues for Vec<f64> {
    fn into_values(self) -> Vec<f64> {
        self
    }
}

impl IntoValues for &[f64] {
    fn into_values(self) -> Vec<f64> {
        self.to_vec()
    }
}

impl<const N: usize> IntoValues for [f64; N] {
    fn into_values(self) -> Vec<f64> {
        self.to_vec()
    }
}

/// Which errors of the objective become failed trials (the study goes on) and which stop
/// `optimize` (the trial is still recorded as failed, and `optimize` returns the error).
/// A [`SearchError::Pruned`] always records a pruned trial; a NaN value always fails the trial
/// and the study goes on.
#[derive(Debug, Clone, Copy, Default)]
pub enum Catch {
    /// Every error becomes a failed trial.
    All,
    /// The objective's own errors become failed trials; a [`SearchError`] (a bad range, a
    /// parameter asked with another distribution than before, a parameter outside the grid:
    /// mistakes that would fail every trial) stops the study. The default.
    #[default]
    UserErrors,
    /// Nothing is caught: the first error stops the study (Optuna's default, `catch=()`).
    Nothing,
    /// The errors for which the function returns `true` become failed trials.
    If(fn(&(dyn Error + Send + Sync + 'static)) -> bool),
}

impl Catch {
    fn catches(&self, e: &(dyn Error + Send + Sync + 'static)) -> bool {
        match self {
            Catch::All => true,
            Catch::UserErrors => e.downcast_ref::<SearchError>().is_none(),
            Catch::Nothing => false,
            Catch::If(f) => f(e),
        }
    }
}

/// A function called after each trial `optimize` finishes, with the study and the trial (it may
/// call [`Study::stop`]).
pub type Callback = Arc<dyn Fn(&Study, &FrozenTrial) + Send + Sync>;

/// How long `optimize` runs and what it does with errors.
///
/// ```
/// use std::time::Duration;
/// use ferrograd_tuning::search::{Catch, OptimizeOptions, SearchError, Study};
/// let study = Study::builder().build();
/// let options = OptimizeOptions::new()
///     .n_trials(100)
///     .timeout(Duration::from_secs(60))
///     .catch(Catch::All)
///     .callback(|study, trial| if trial.value.is_some_and(|v| v < 0.1) { study.stop() });
/// study.optimize_with(options, |t| t.suggest_float("x", 0.0, 1.0, false))?;
/// assert!(study.best_value().unwrap() < 0.1 || study.trials().len() == 100);
/// # Ok::<(), SearchError>(())
/// ```
#[derive(Clone, Default)]
pub struct OptimizeOptions {
    n_trials: Option<usize>,
    timeout: Option<Duration>,
    catch: Catch,
    callbacks: Vec<Callback>,
}

impl OptimizeOptions {
    /// No limit (runs until [`Study::stop`] or the sampler has nothing left), [`Catch::UserErrors`].
    pub fn new() -> Self {
        OptimizeOptions::default()
    }

    /// Stops after this many trials (of this call).
    pub fn n_trials(mut self, n: usize) -> Self {
        self.n_trials = Some(n);
        self
    }

    /// Starts no trial after this much time (running trials finish).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Which errors become failed trials.
    pub fn catch(mut self, catch: Catch) -> Self {
        self.catch = catch;
        self
    }

    /// Calls `f` after each finished trial.
    pub fn callback(mut self, f: impl Fn(&Study, &FrozenTrial) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(f));
        self
    }
}

/// How an objective call ended.
struct Outcome {
    state: TrialState,
    values: Vec<f64>,
    reason: Option<String>,
    /// The error that stops `optimize`.
    stop: Option<SearchError>,
}

fn outcome<V: IntoValues, E: Into<Box<dyn Error + Send + Sync>>>(
    result: Result<V, E>,
    n_objectives: usize,
    catch: &Catch,
    number: u64,
) -> Outcome {
    let failed =
        |reason: String, stop| Outcome { state: TrialState::Failed, values: Vec::new(), reason: Some(reason), stop };
    match result {
        Ok(v) => {
            let values = v.into_values();
            if values.len() != n_objectives {
                failed(SearchError::ValueCount { expected: n_objectives, got: values.len() }.to_string(), None)
            } else if values.iter().any(|v| v.is_nan()) {
                failed("the objective returned NaN".into(), None)
            } else {
                Outcome { state: TrialState::Complete, values, reason: None, stop: None }
            }
        }
        Err(e) => {
            let e: Box<dyn Error + Send + Sync> = e.into();
            if let Some(SearchError::Pruned { .. }) = e.downcast_ref::<SearchError>() {
                return Outcome { state: TrialState::Pruned, values: Vec::new(), reason: None, stop: None };
            }
            let stop = (!catch.catches(&*e)).then(|| match e.downcast_ref::<SearchError>() {
                Some(s) => s.clone(),
                None => SearchError::Objective { number, message: e.to_string() },
            });
            failed(e.to_string(), stop)
        }
    }
}

/// What starting a trial gave.
// One lives on the stack per trial started and is unpacked at once: boxing the trial buys nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Start<'s> {
    Trial(Trial<'s>),
    /// The sampler has nothing left (its error says why).
    Exhausted(SearchError),
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a non-string payload".to_string(),
    }
}

impl Study {
    /// Asks the study to start no new trial: `optimize` returns after the running trials finish.
    /// Callbacks call it; so may another thread.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Starts a trial: fails stale ones, takes an enqueued one or numbers a new one, and lets the
    /// sampler propose its relative point.
    pub(crate) fn start_trial(&self) -> Result<Start<'_>, SearchError> {
        let mut log = self.lock();
        self.refresh(&mut log)?;
        if let Some(grace) = self.heartbeat {
            let open = log.open_ids();
            if !open.is_empty() && !self.storage.fail_stale_trials(self.id, &open, grace, self.retry)?.is_empty() {
                self.refresh(&mut log)?;
            }
        }
        let heartbeat = self.heartbeat.is_some();
        for number in log.waiting() {
            let id = log.ids[number as usize];
            if self.storage.claim_waiting_trial(id, heartbeat)? {
                self.refresh(&mut log)?;
                let mut rng = StdRng::seed_from_u64(trial_seed(self.seed, number));
                let mut fixed = log.trials[number as usize].fixed_params.clone();
                if !self.sampler.needs_study_lock() {
                    let ctx = self.context(&log, number);
                    if let Ok(relative) = self.sampler.sample_relative(&ctx, &mut rng) {
                        for (k, v) in relative {
                            fixed.entry(k).or_insert(v);
                        }
                    }
                }
                return Ok(Start::Trial(Trial { study: self, number, id, rng, fixed, storage_error: None }));
            }
        }
        let mut template = FrozenTrial::new(TrialState::Running);
        let mut exhausted = None;
        let made = if self.sampler.needs_study_lock() {
            let log = &mut *log;
            let mut claim = |t: &mut FrozenTrial, reader: &dyn TrialReader| -> Result<bool, SearchError> {
                log.apply(
                    reader.read_trials(log.after(), &log.open_ids())?,
                    self.directions.len(),
                    &self.storage.location(),
                )?;
                let mut rng = StdRng::seed_from_u64(trial_seed(self.seed, t.number));
                match self.sampler.sample_relative(&self.context(log, t.number), &mut rng) {
                    Ok(fixed) => {
                        t.fixed_params = fixed;
                        Ok(true)
                    }
                    Err(e) => {
                        exhausted = Some(e);
                        Ok(false)
                    }
                }
            };
            self.storage.create_trial(self.id, &mut template, heartbeat, Some(&mut claim))?
        } else {
            self.storage.create_trial(self.id, &mut template, heartbeat, None)?
        };
        let Some((id, number)) = made else {
            return Ok(Start::Exhausted(exhausted.unwrap_or(SearchError::GridExhausted { points: 0 })));
        };
        self.refresh(&mut log)?;
        let mut rng = StdRng::seed_from_u64(trial_seed(self.seed, number));
        let mut fixed = template.fixed_params;
        if !self.sampler.needs_study_lock() {
            match self.sampler.sample_relative(&self.context(&log, number), &mut rng) {
                Ok(relative) => fixed = relative,
                Err(e) => {
                    drop(log);
                    self.storage.finish_trial(id, TrialState::Failed, &[], Some(&e.to_string()))?;
                    return Ok(Start::Exhausted(e));
                }
            }
        }
        Ok(Start::Trial(Trial { study: self, number, id, rng, fixed, storage_error: None }))
    }

    /// Finishes a trial in the storage and in this study's copy; returns the record.
    fn finish(
        &self,
        trial: &Trial<'_>,
        state: TrialState,
        values: &[f64],
        reason: Option<&str>,
    ) -> Result<FrozenTrial, SearchError> {
        let mut log = self.lock();
        self.storage.finish_trial(trial.id, state, values, reason)?;
        // Kept among the open trials, so the next refresh reads the stored times.
        let t = &mut log.trials[trial.number as usize];
        t.state = state;
        t.values = values.to_vec();
        t.fail_reason = reason.map(str::to_string);
        t.datetime_complete = Some(SystemTime::now());
        t.derive();
        Ok(t.clone())
    }

    /// A new trial for a loop the caller drives; finish it with [`tell`](Self::tell),
    /// [`tell_pruned`](Self::tell_pruned) or [`tell_failed`](Self::tell_failed). An enqueued
    /// trial is taken first. Errors with the sampler's reason when it has nothing left (an
    /// exhausted grid). Ask-and-tell trials have no heartbeat: they never count as stale.
    ///
    /// ```
    /// use ferrograd_tuning::search::{SearchError, Study};
    /// let study = Study::builder().build();
    /// for _ in 0..5 {
    ///     let mut trial = study.ask()?;
    ///     let x = trial.suggest_float("x", -1.0, 1.0, false)?;
    ///     study.tell(trial, x * x)?;
    /// }
    /// assert_eq!(study.trials().len(), 5);
    /// # Ok::<(), SearchError>(())
    /// ```
    pub fn ask(&self) -> Result<Trial<'_>, SearchError> {
        match self.start_trial()? {
            Start::Trial(t) => Ok(t),
            Start::Exhausted(e) => Err(e),
        }
    }

    /// Finishes `trial` as complete with its values (one per direction); a NaN value or a wrong
    /// number of values fails it instead, as in `optimize`. Returns the record. A storage error
    /// kept from [`Trial::report`] is returned after the trial is finished.
    pub fn tell(&self, mut trial: Trial<'_>, values: impl IntoValues) -> Result<FrozenTrial, SearchError> {
        let o = outcome(Ok::<_, SearchError>(values), self.directions.len(), &Catch::All, trial.number);
        let record = self.finish(&trial, o.state, &o.values, o.reason.as_deref())?;
        trial.storage_error.take().map_or(Ok(record), Err)
    }

    /// Finishes `trial` as pruned.
    pub fn tell_pruned(&self, trial: Trial<'_>) -> Result<FrozenTrial, SearchError> {
        self.finish(&trial, TrialState::Pruned, &[], None)
    }

    /// Finishes `trial` as failed, with the reason.
    pub fn tell_failed(&self, trial: Trial<'_>, reason: impl std::fmt::Display) -> Result<FrozenTrial, SearchError> {
        self.finish(&trial, TrialState::Failed, &[], Some(&reason.to_string()))
    }

    /// Enqueues a trial with fixed parameter values (names not given are sampled); the next
    /// trial started takes it. Returns its number.
    ///
    /// ```
    /// use ferrograd_tuning::search::{ParamValue, SearchError, Study};
    /// let study = Study::builder().build();
    /// study.enqueue_trial([("lr", ParamValue::from(0.01)), ("act", "relu".into())])?;
    /// study.optimize(1, |t| {
    ///     let lr = t.suggest_float("lr", 1e-4, 1.0, true)?;
    ///     let act: &str = t.suggest_categorical("act", &["relu", "tanh"])?;
    ///     assert_eq!((lr, act), (0.01, "relu"));
    ///     Ok::<_, SearchError>(lr)
    /// })?;
    /// # Ok::<(), SearchError>(())
    /// ```
    pub fn enqueue_trial<K: Into<String>, V: Into<ParamValue>>(
        &self,
        params: impl IntoIterator<Item = (K, V)>,
    ) -> Result<u64, SearchError> {
        let mut t = FrozenTrial::new(TrialState::Waiting);
        t.fixed_params = params.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        self.add_trial(t)
    }

    /// Adds a trial made elsewhere (a result from a paper, a run of another tool), in any state;
    /// it is checked (values per direction, parameters inside their distributions) and gets the
    /// next number, which is returned. See [`FrozenTrial::new`].
    pub fn add_trial(&self, mut trial: FrozenTrial) -> Result<u64, SearchError> {
        check_template(&trial, Some(self.directions.len()))?;
        let mut log = self.lock();
        let (_, number) = self
            .storage
            .create_trial(self.id, &mut trial, false, None)?
            .expect("create_trial without a prepare step always creates");
        self.refresh(&mut log)?;
        Ok(number)
    }

    /// Adds several trials ([`add_trial`](Self::add_trial)) in order; returns their numbers.
    pub fn add_trials(&self, trials: impl IntoIterator<Item = FrozenTrial>) -> Result<Vec<u64>, SearchError> {
        trials.into_iter().map(|t| self.add_trial(t)).collect()
    }

    /// Runs one trial of `objective`: `Ok(None)` when the sampler had nothing left, else the
    /// finished record and the error that stops the study, if any.
    fn run_one<F, V, E>(
        &self,
        objective: &mut F,
        catch: &Catch,
    ) -> Result<Option<(FrozenTrial, Option<SearchError>)>, SearchError>
    where
        F: FnMut(&mut Trial<'_>) -> Result<V, E>,
        V: IntoValues,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let mut trial = match self.start_trial()? {
            Start::Trial(t) => t,
            Start::Exhausted(_) => return Ok(None),
        };
        let number = trial.number;
        let id = trial.id;
        let result = std::thread::scope(|s| {
            let (stop, stopped) = mpsc::channel::<()>();
            if let Some(grace) = self.heartbeat {
                let storage = &self.storage;
                let period = (grace / 4).max(Duration::from_millis(10));
                s.spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                        // A missed beat is retried at the next period.
                        let _ = storage.record_heartbeat(id);
                    }
                });
            }
            let result = catch_unwind(AssertUnwindSafe(|| objective(&mut trial)));
            drop(stop);
            result
        });
        let o = match result {
            Ok(r) => outcome(r, self.directions.len(), catch, number),
            Err(payload) => {
                let reason = format!("the objective panicked: {}", panic_message(&*payload));
                // Recorded before the panic goes on, so the trial does not stay running.
                let _ = self.finish(&trial, TrialState::Failed, &[], Some(&reason));
                resume_unwind(payload);
            }
        };
        let record = match self.finish(&trial, o.state, &o.values, o.reason.as_deref()) {
            Ok(r) => r,
            // Another worker failed the trial while this one was stalled (its heartbeat
            // stopped): the result is dropped, as Optuna does, and the study goes on.
            Err(SearchError::TrialFinished { number, state }) => {
                eprintln!(
                    "ferrograd search: trial {number} was already {state} (a missed heartbeat); its result is dropped"
                );
                self.own_trial(number)
            }
            Err(e) => return Err(e),
        };
        if let Some(e) = trial.storage_error.take() {
            return Err(e);
        }
        Ok(Some((record, o.stop)))
    }

    /// Runs `n_trials` trials of `objective` one after the other. A trial whose objective returns
    /// an error or NaN is recorded as failed; an error that is [`SearchError::Pruned`] records the
    /// trial as pruned; an objective that panics fails its trial before the panic goes on. Which
    /// errors stop the study is [`Catch::UserErrors`]: a [`SearchError`] (a mistake in the search
    /// space) stops it and is returned, other errors fail the trial and the study goes on. Stops
    /// early when a grid is exhausted. See [`optimize_with`](Self::optimize_with) for the other
    /// options.
    pub fn optimize<F, V, E>(&self, n_trials: usize, objective: F) -> Result<(), SearchError>
    where
        F: FnMut(&mut Trial<'_>) -> Result<V, E>,
        V: IntoValues,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        self.optimize_with(OptimizeOptions::new().n_trials(n_trials), objective)
    }

    /// [`optimize`](Self::optimize) with a trial budget, a timeout, callbacks and a catch policy.
    pub fn optimize_with<F, V, E>(&self, options: OptimizeOptions, mut objective: F) -> Result<(), SearchError>
    where
        F: FnMut(&mut Trial<'_>) -> Result<V, E>,
        V: IntoValues,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        self.stopped.store(false, Ordering::SeqCst);
        let start = Instant::now();
        let mut done = 0;
        while options.n_trials.is_none_or(|n| done < n)
            && options.timeout.is_none_or(|t| start.elapsed() < t)
            && !self.stopped.load(Ordering::SeqCst)
        {
            let Some((record, stop)) = self.run_one(&mut objective, &options.catch)? else { break };
            done += 1;
            for cb in &options.callbacks {
                cb(self, &record);
            }
            if let Some(e) = stop {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs `n_trials` trials on `n_jobs` threads sharing this study (numbers stay unique; the
    /// sampler sees running trials, so TPE's constant liar and the grid avoid duplicates).
    /// Errors with the first storage failure or stopping error of any worker (the others stop
    /// too, after their running trial).
    pub fn optimize_parallel<F, V, E>(&self, n_trials: usize, n_jobs: usize, objective: F) -> Result<(), SearchError>
    where
        F: Fn(&mut Trial<'_>) -> Result<V, E> + Sync,
        V: IntoValues,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        self.optimize_parallel_with(OptimizeOptions::new().n_trials(n_trials), n_jobs, objective)
    }

    /// [`optimize_parallel`](Self::optimize_parallel) with the options of
    /// [`optimize_with`](Self::optimize_with) (callbacks run on the worker threads).
    pub fn optimize_parallel_with<F, V, E>(
        &self,
        options: OptimizeOptions,
        n_jobs: usize,
        objective: F,
    ) -> Result<(), SearchError>
    where
        F: Fn(&mut Trial<'_>) -> Result<V, E> + Sync,
        V: IntoValues,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        self.stopped.store(false, Ordering::SeqCst);
        let start = Instant::now();
        let claimed = AtomicUsize::new(0);
        let done = AtomicBool::new(false);
        let first_error = Mutex::new(None);
        let fail = |e: SearchError| {
            done.store(true, Ordering::SeqCst);
            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        };
        std::thread::scope(|s| {
            for _ in 0..n_jobs.max(1) {
                s.spawn(|| {
                    let mut f = |t: &mut Trial<'_>| objective(t);
                    while !done.load(Ordering::SeqCst)
                        && !self.stopped.load(Ordering::SeqCst)
                        && options.timeout.is_none_or(|t| start.elapsed() < t)
                        && options.n_trials.is_none_or(|n| claimed.fetch_add(1, Ordering::SeqCst) < n)
                    {
                        match self.run_one(&mut f, &options.catch) {
                            Ok(Some((record, stop))) => {
                                for cb in &options.callbacks {
                                    cb(self, &record);
                                }
                                if let Some(e) = stop {
                                    fail(e);
                                }
                            }
                            Ok(None) => done.store(true, Ordering::SeqCst),
                            Err(e) => fail(e),
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
}
