//! The study: the shared record of trials, the loop that runs the objective (serially or on
//! threads) and the results (best trial, table, CSV, best-so-far history).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::pruner::{NopPruner, Pruner};
use super::sampler::{RandomSampler, SampleContext, Sampler};
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

/// A hyperparameter search: a sampler proposes, a pruner stops, the study records.
///
/// ```
/// use ferrograd_tuning::search::{Direction, SearchError, Study, TpeSampler};
/// let study = Study::builder().direction(Direction::Minimize).sampler(TpeSampler::new()).seed(7).build();
/// study.optimize(30, |t| {
///     let x = t.suggest_float("x", -5.0, 5.0, false)?;
///     Ok::<_, SearchError>((x - 1.0) * (x - 1.0))
/// });
/// assert!(study.best_value().unwrap() < 1.0);
/// ```
pub struct Study {
    direction: Direction,
    seed: u64,
    sampler: Box<dyn Sampler>,
    pruner: Box<dyn Pruner>,
    state: Mutex<State>,
}

/// Options of a [`Study`].
pub struct StudyBuilder {
    direction: Direction,
    seed: u64,
    sampler: Box<dyn Sampler>,
    pruner: Box<dyn Pruner>,
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

    /// The study, empty, in memory.
    pub fn build(self) -> Study {
        Study {
            direction: self.direction,
            seed: self.seed,
            sampler: self.sampler,
            pruner: self.pruner,
            state: Mutex::new(State::default()),
        }
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
    fn start_trial(&self) -> Option<Trial<'_>> {
        let mut st = self.lock();
        let number = st.trials.len() as u64;
        let mut rng = StdRng::seed_from_u64(trial_seed(self.seed, number));
        let ctx = SampleContext { trials: &st.trials, direction: self.direction, number };
        let fixed = self.sampler.sample_relative(&ctx, &mut rng).ok()?;
        st.trials.push(FrozenTrial::new_running(number, fixed.clone()));
        Some(Trial { study: self, number, rng, fixed })
    }

    fn finish_trial(&self, number: u64, state: TrialState, value: Option<f64>, reason: Option<String>, start: Instant) {
        let mut st = self.lock();
        let t = &mut st.trials[number as usize];
        t.state = state;
        t.value = value;
        t.fail_reason = reason;
        t.duration = Some(start.elapsed());
    }

    /// Runs one trial of `objective`; `false` when the sampler had nothing left to propose.
    fn run_one<F, E>(&self, objective: &mut F) -> bool
    where
        F: FnMut(&mut Trial<'_>) -> Result<f64, E>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let Some(mut trial) = self.start_trial() else { return false };
        let start = Instant::now();
        let (state, value, reason) = outcome(objective(&mut trial));
        self.finish_trial(trial.number, state, value, reason, start);
        true
    }

    /// Runs `n_trials` trials of `objective` one after the other. A trial whose objective returns
    /// an error or NaN is recorded as failed and the study goes on; an error that is
    /// [`SearchError::Pruned`] records the trial as pruned. Stops early when a grid is exhausted.
    pub fn optimize<F, E>(&self, n_trials: usize, mut objective: F)
    where
        F: FnMut(&mut Trial<'_>) -> Result<f64, E>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        for _ in 0..n_trials {
            if !self.run_one(&mut objective) {
                break;
            }
        }
    }

    /// Runs `n_trials` trials on `n_jobs` threads sharing this study (numbers stay unique; the
    /// sampler sees running trials, so TPE's constant liar and the grid avoid duplicates).
    pub fn optimize_parallel<F, E>(&self, n_trials: usize, n_jobs: usize, objective: F)
    where
        F: Fn(&mut Trial<'_>) -> Result<f64, E> + Sync,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let claimed = AtomicUsize::new(0);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..n_jobs.max(1) {
                s.spawn(|| {
                    let mut f = |t: &mut Trial<'_>| objective(t);
                    while !done.load(Ordering::Relaxed) && claimed.fetch_add(1, Ordering::Relaxed) < n_trials {
                        if !self.run_one(&mut f) {
                            done.store(true, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
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
        st.kinds.entry(name.to_string()).or_insert_with(|| dist.clone());
        let t = &mut st.trials[idx];
        t.params.insert(name.to_string(), value.clone());
        t.distributions.insert(name.to_string(), dist);
        Ok(value)
    }

    pub(crate) fn report(&self, number: u64, step: u64, value: f64) {
        self.lock().trials[number as usize].intermediate.insert(step, value);
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

    /// A copy of every trial, by number.
    pub fn trials(&self) -> Vec<FrozenTrial> {
        self.lock().trials.clone()
    }

    /// The number of trials recorded (any state).
    pub fn n_trials(&self) -> usize {
        self.lock().trials.len()
    }

    /// The best complete trial (the first one on ties).
    pub fn best_trial(&self) -> Option<FrozenTrial> {
        let st = self.lock();
        let mut best: Option<&FrozenTrial> = None;
        for t in st.trials.iter().filter(|t| t.state == TrialState::Complete) {
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
        let st = self.lock();
        let mut best: Option<f64> = None;
        st.trials
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
        let st = self.lock();
        let names: BTreeSet<&String> = st.trials.iter().flat_map(|t| t.params.keys()).collect();
        let mut out = String::from("number,state,value,duration_s");
        for n in &names {
            out.push_str(",params_");
            out.push_str(&csv_cell(n));
        }
        out.push('\n');
        for t in &st.trials {
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
