//! The trial handed to the objective (define-by-run: it asks for values as it goes) and the
//! frozen record the study keeps of every trial.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::study::Study;

/// Where a trial stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrialState {
    /// Being evaluated.
    Running,
    /// Finished with a value.
    Complete,
    /// Stopped early by the pruner.
    Pruned,
    /// The objective returned an error or NaN (or a sampler could not propose a value).
    Failed,
}

impl fmt::Display for TrialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrialState::Running => "RUNNING",
            TrialState::Complete => "COMPLETE",
            TrialState::Pruned => "PRUNED",
            TrialState::Failed => "FAILED",
        })
    }
}

/// The study's record of one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct FrozenTrial {
    /// The trial's number, unique in the study, from 0.
    pub number: u64,
    /// Its state.
    pub state: TrialState,
    /// The objective's value, for complete trials.
    pub value: Option<f64>,
    /// The parameters asked for, by name.
    pub params: BTreeMap<String, ParamValue>,
    /// The distribution each parameter was drawn from.
    pub distributions: BTreeMap<String, Distribution>,
    /// Values proposed at the trial's start by a relative sampler (a grid point, a joint TPE
    /// draw); used when the objective asks for those names.
    pub fixed_params: BTreeMap<String, ParamValue>,
    /// Intermediate values reported with [`Trial::report`], by step.
    pub intermediate: BTreeMap<u64, f64>,
    /// Why a failed trial failed.
    pub fail_reason: Option<String>,
    /// Wall time of a finished trial.
    pub duration: Option<Duration>,
}

impl FrozenTrial {
    pub(crate) fn new_running(number: u64, fixed_params: BTreeMap<String, ParamValue>) -> Self {
        FrozenTrial {
            number,
            state: TrialState::Running,
            value: None,
            params: BTreeMap::new(),
            distributions: BTreeMap::new(),
            fixed_params,
            intermediate: BTreeMap::new(),
            fail_reason: None,
            duration: None,
        }
    }

    /// The internal `f64` of parameter `name` (index for categories), if present.
    pub fn internal(&self, name: &str) -> Option<f64> {
        let v = self.params.get(name)?;
        self.distributions.get(name)?.to_internal(v)
    }

    /// The last reported step and its value.
    pub fn last_intermediate(&self) -> Option<(u64, f64)> {
        self.intermediate.iter().next_back().map(|(s, v)| (*s, *v))
    }
}

/// One evaluation of the objective: ask it for parameters, report intermediate values.
///
/// ```
/// use ferrograd_tuning::search::{Study, SearchError};
/// let study = Study::builder().seed(1).build();
/// study.optimize(5, |t| {
///     let x = t.suggest_float("x", -1.0, 1.0, false)?;
///     let kind: &str = t.suggest_categorical("kind", &["a", "b"])?;
///     Ok::<_, SearchError>(x * x + if kind == "a" { 0.0 } else { 1.0 })
/// })?;
/// assert_eq!(study.trials().len(), 5);
/// # Ok::<(), SearchError>(())
/// ```
pub struct Trial<'s> {
    pub(crate) study: &'s Study,
    pub(crate) number: u64,
    pub(crate) rng: StdRng,
    pub(crate) fixed: BTreeMap<String, ParamValue>,
    /// A storage failure while reporting, raised when the trial ends.
    pub(crate) storage_error: Option<SearchError>,
}

impl Trial<'_> {
    /// The trial's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// A float in `[low, high]`, log-uniform when `log`.
    pub fn suggest_float(&mut self, name: &str, low: f64, high: f64, log: bool) -> Result<f64, SearchError> {
        match self.suggest(name, Distribution::Float { low, high, log, step: None })? {
            ParamValue::Float(x) => Ok(x),
            _ => unreachable!("a float distribution yields floats"),
        }
    }

    /// A float in `{low, low + step, ..., high}`; `step` must divide `high - low`.
    pub fn suggest_float_step(&mut self, name: &str, low: f64, high: f64, step: f64) -> Result<f64, SearchError> {
        match self.suggest(name, Distribution::Float { low, high, log: false, step: Some(step) })? {
            ParamValue::Float(x) => Ok(x),
            _ => unreachable!("a float distribution yields floats"),
        }
    }

    /// An integer in `{low, low + step, ..., high}`, log-uniform when `log` (then `step` must be 1).
    pub fn suggest_int(&mut self, name: &str, low: i64, high: i64, step: i64, log: bool) -> Result<i64, SearchError> {
        match self.suggest(name, Distribution::Int { low, high, step, log })? {
            ParamValue::Int(x) => Ok(x),
            _ => unreachable!("an int distribution yields ints"),
        }
    }

    /// One of `choices`; they are recorded by their text (`Display`), which must be distinct.
    pub fn suggest_categorical<T: Clone + fmt::Display>(
        &mut self,
        name: &str,
        choices: &[T],
    ) -> Result<T, SearchError> {
        let texts: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
        match self.suggest(name, Distribution::Categorical { choices: texts.clone() })? {
            ParamValue::Categorical(s) => {
                let i = texts.iter().position(|t| *t == s).expect("the sampler returns one of the choices");
                Ok(choices[i].clone())
            }
            _ => unreachable!("a categorical distribution yields choices"),
        }
    }

    /// Asks for a value of `name` from `dist` (the general form of the `suggest_*` methods).
    pub fn suggest(&mut self, name: &str, dist: Distribution) -> Result<ParamValue, SearchError> {
        self.study.suggest(self.number, &mut self.rng, &self.fixed, name, dist)
    }

    /// Records the objective's intermediate `value` at `step` (an epoch, a resource count).
    /// For an SQLite study a write failure is kept and returned by `optimize` when the trial ends.
    pub fn report(&mut self, step: u64, value: f64) {
        if let Err(e) = self.study.report(self.number, step, value) {
            self.storage_error.get_or_insert(e);
        }
    }

    /// Whether the pruner advises stopping this trial now; if so, return `Err(trial.pruned())`.
    pub fn should_prune(&self) -> bool {
        self.study.should_prune(self.number)
    }

    /// The error an objective returns to end the trial as pruned.
    pub fn pruned(&self) -> SearchError {
        SearchError::Pruned { step: self.study.last_step(self.number) }
    }

    /// The parameters asked for so far.
    pub fn params(&self) -> BTreeMap<String, ParamValue> {
        self.study.trial(self.number).params
    }
}
