//! The trial handed to the objective (define-by-run: it asks for values as it goes) and the
//! frozen record the study keeps of every trial.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use serde_json::Value;

use super::distribution::{Distribution, ParamValue};
use super::error::SearchError;
use super::storage::TrialId;
use super::study::Study;

/// Where a trial stands (Optuna's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrialState {
    /// Being evaluated.
    Running,
    /// Finished with its values.
    Complete,
    /// Stopped early by the pruner.
    Pruned,
    /// The objective returned an error or NaN, panicked, or its worker stopped beating.
    Failed,
    /// Enqueued ([`Study::enqueue_trial`], or a retry of a failed trial): the next worker to ask
    /// for a trial takes it.
    Waiting,
}

impl TrialState {
    /// Whether the trial is finished (complete, pruned or failed): it will never change again.
    pub fn is_finished(self) -> bool {
        matches!(self, TrialState::Complete | TrialState::Pruned | TrialState::Failed)
    }

    /// The name Optuna stores (`RUNNING`, `COMPLETE`, `PRUNED`, `FAIL`, `WAITING`).
    pub fn optuna_name(self) -> &'static str {
        match self {
            TrialState::Running => "RUNNING",
            TrialState::Complete => "COMPLETE",
            TrialState::Pruned => "PRUNED",
            TrialState::Failed => "FAIL",
            TrialState::Waiting => "WAITING",
        }
    }

    /// The state of an Optuna name, if it is one.
    pub fn from_optuna_name(name: &str) -> Option<TrialState> {
        Some(match name {
            "RUNNING" => TrialState::Running,
            "COMPLETE" => TrialState::Complete,
            "PRUNED" => TrialState::Pruned,
            "FAIL" => TrialState::Failed,
            "WAITING" => TrialState::Waiting,
            _ => return None,
        })
    }
}

impl fmt::Display for TrialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrialState::Running => "RUNNING",
            TrialState::Complete => "COMPLETE",
            TrialState::Pruned => "PRUNED",
            TrialState::Failed => "FAILED",
            TrialState::Waiting => "WAITING",
        })
    }
}

/// The study's record of one trial.
///
/// `fixed_params` and `fail_reason` are stored as the system attributes `fixed_params` and
/// `fail_reason` (the names Optuna uses) and are not repeated in `system_attrs`; `value` and
/// `duration` are derived from `values` and the two times.
#[derive(Debug, Clone, PartialEq)]
pub struct FrozenTrial {
    /// The trial's number, unique in the study, from 0, without gaps.
    pub number: u64,
    /// Its state.
    pub state: TrialState,
    /// The first objective's value (of a complete trial, or as an Optuna study recorded it).
    pub value: Option<f64>,
    /// Every objective's value, one per study direction (empty when none is recorded).
    pub values: Vec<f64>,
    /// The parameters asked for, by name.
    pub params: BTreeMap<String, ParamValue>,
    /// The distribution each parameter was drawn from.
    pub distributions: BTreeMap<String, Distribution>,
    /// Values fixed before the objective asks for them (an enqueued trial's, a grid point); used
    /// when the objective asks for those names.
    pub fixed_params: BTreeMap<String, ParamValue>,
    /// Intermediate values reported with [`Trial::report`], by step.
    pub intermediate: BTreeMap<u64, f64>,
    /// User attributes ([`Trial::set_user_attr`]), as JSON.
    pub user_attrs: BTreeMap<String, Value>,
    /// System attributes (samplers' state, retry bookkeeping), as JSON.
    pub system_attrs: BTreeMap<String, Value>,
    /// Why a failed trial failed.
    pub fail_reason: Option<String>,
    /// When the trial started (the storage's clock; `None` for a waiting trial).
    pub datetime_start: Option<SystemTime>,
    /// When the trial finished.
    pub datetime_complete: Option<SystemTime>,
    /// Wall time of a finished trial.
    pub duration: Option<Duration>,
}

impl FrozenTrial {
    /// An empty record in `state`, for [`Study::add_trial`]: add values, parameters and
    /// attributes with the `with_*` methods.
    ///
    /// ```
    /// use ferrograd_tuning::search::{Distribution, FrozenTrial, ParamValue, Study, TrialState};
    /// let study = Study::builder().build();
    /// let x = Distribution::Float { low: 0.0, high: 1.0, log: false, step: None };
    /// let t = FrozenTrial::new(TrialState::Complete).with_values(&[0.25]).with_param("x", 0.5, x);
    /// assert_eq!(study.add_trial(t)?, 0);
    /// assert_eq!(study.best_params().unwrap()["x"], ParamValue::Float(0.5));
    /// # Ok::<(), ferrograd_tuning::search::SearchError>(())
    /// ```
    pub fn new(state: TrialState) -> Self {
        FrozenTrial {
            number: 0,
            state,
            value: None,
            values: Vec::new(),
            params: BTreeMap::new(),
            distributions: BTreeMap::new(),
            fixed_params: BTreeMap::new(),
            intermediate: BTreeMap::new(),
            user_attrs: BTreeMap::new(),
            system_attrs: BTreeMap::new(),
            fail_reason: None,
            datetime_start: None,
            datetime_complete: None,
            duration: None,
        }
    }

    /// The objectives' values.
    pub fn with_values(mut self, values: &[f64]) -> Self {
        self.values = values.to_vec();
        self.value = values.first().copied();
        self
    }

    /// A parameter and its distribution.
    pub fn with_param(mut self, name: &str, value: impl Into<ParamValue>, dist: Distribution) -> Self {
        self.params.insert(name.to_string(), value.into());
        self.distributions.insert(name.to_string(), dist);
        self
    }

    /// An intermediate value.
    pub fn with_intermediate(mut self, step: u64, value: f64) -> Self {
        self.intermediate.insert(step, value);
        self
    }

    /// A user attribute.
    pub fn with_user_attr(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.user_attrs.insert(key.to_string(), value.into());
        self
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

    /// For a retry of a failed trial, the number of the trial first retried (Optuna's
    /// `RetryFailedTrialCallback.retried_trial_number`).
    pub fn retried_trial_number(&self) -> Option<u64> {
        self.system_attrs.get("failed_trial").and_then(Value::as_u64)
    }

    /// The trial's constraint values (see [`Trial::set_constraint`]); empty when it has none.
    pub fn constraints(&self) -> Vec<f64> {
        super::multi::trial_constraints(self)
    }

    /// Whether every constraint of the trial is `<= 0` (true when it has none).
    pub fn is_feasible(&self) -> bool {
        self.constraints().iter().all(|c| *c <= 0.0)
    }

    /// Fills `value` and `duration` from `values` and the times.
    pub(crate) fn derive(&mut self) {
        self.value = self.values.first().copied();
        self.duration = match (self.datetime_start, self.datetime_complete) {
            (Some(a), Some(b)) => Some(b.duration_since(a).unwrap_or_default()),
            _ => None,
        };
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
///     t.set_user_attr("note", format!("x = {x:.2}"))?;
///     Ok::<_, SearchError>(x * x + if kind == "a" { 0.0 } else { 1.0 })
/// })?;
/// assert_eq!(study.trials().len(), 5);
/// # Ok::<(), SearchError>(())
/// ```
pub struct Trial<'s> {
    pub(crate) study: &'s Study,
    pub(crate) number: u64,
    pub(crate) id: TrialId,
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
        self.study.suggest(self.number, self.id, &mut self.rng, &self.fixed, name, dist)
    }

    /// Records the objective's intermediate `value` at `step` (an epoch, a resource count).
    /// A storage failure is kept and returned by `optimize` when the trial ends.
    pub fn report(&mut self, step: u64, value: f64) {
        if let Err(e) = self.study.report(self.number, self.id, step, value) {
            self.storage_error.get_or_insert(e);
        }
    }

    /// Whether the pruner advises stopping this trial now; if so, return `Err(trial.pruned())`.
    /// Always `false` in a study with several objectives (as in Optuna).
    pub fn should_prune(&self) -> bool {
        self.study.should_prune(self.number)
    }

    /// The error an objective returns to end the trial as pruned.
    pub fn pruned(&self) -> SearchError {
        SearchError::Pruned { step: self.study.last_step(self.number) }
    }

    /// The parameters asked for so far.
    pub fn params(&self) -> BTreeMap<String, ParamValue> {
        self.study.own_trial(self.number).params
    }

    /// Sets a user attribute of this trial (any JSON value; shown by optuna-dashboard).
    pub fn set_user_attr(&mut self, key: &str, value: impl Into<Value>) -> Result<(), SearchError> {
        self.study.set_trial_attr(self.number, self.id, false, key, value.into())
    }

    /// Sets a system attribute of this trial (samplers keep their state there).
    pub fn set_system_attr(&mut self, key: &str, value: impl Into<Value>) -> Result<(), SearchError> {
        self.study.set_trial_attr(self.number, self.id, true, key, value.into())
    }

    /// Records constraint `key` of this trial (Optuna's `Trial.set_constraint`, stored as the
    /// system attribute `constraints:<key>`): the trial is feasible when every constraint is
    /// `<= 0`. [`Study::best_trials`] and the NSGA-II sampler prefer feasible trials. A NaN value
    /// is refused.
    ///
    /// ```
    /// use ferrograd_tuning::search::{SearchError, Study};
    /// let study = Study::builder().build();
    /// study.optimize(10, |t| {
    ///     let x = t.suggest_float("x", -1.0, 1.0, false)?;
    ///     t.set_constraint("x_positive", -x)?;
    ///     Ok::<_, SearchError>(x * x)
    /// })?;
    /// assert!(study.best_trials().iter().all(|t| t.params["x"].as_f64().unwrap() >= 0.0));
    /// # Ok::<(), SearchError>(())
    /// ```
    pub fn set_constraint(&mut self, key: &str, value: f64) -> Result<(), SearchError> {
        if value.is_nan() {
            return Err(SearchError::InvalidOption(format!("constraint `{key}` is NaN")));
        }
        self.set_system_attr(&format!("constraints:{key}"), value)
    }

    /// The user attributes set so far.
    pub fn user_attrs(&self) -> BTreeMap<String, Value> {
        self.study.own_trial(self.number).user_attrs
    }

    /// The study this trial belongs to.
    pub fn study(&self) -> &Study {
        self.study
    }
}
