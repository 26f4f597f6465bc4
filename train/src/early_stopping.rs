//! Early stopping with Keras' semantics (`keras.callbacks.EarlyStopping`): watch one metric at
//! the end of each epoch, stop when it has not improved for `patience` epochs, and optionally
//! put back the weights of the best epoch.
//!
//! A hand-written loop calls [`EarlyStopping::on_epoch_end`] with the epoch (from 0), the metric's
//! value and the model; it answers whether to stop. After the loop, [`EarlyStopping::restore`]
//! loads the best weights when `restore_best_weights` is set. In a [`Learner`](crate::Learner) it
//! is a [`Callback`](crate::Callback) reading its monitor from the epoch logs.
//!
//! It says what it saw: a NaN or infinite value counts as no improvement (Keras' rule), and
//! [`EarlyStopping::message`] describes that epoch, as it describes the epoch that stopped the
//! run; the Learner prints these messages. (`ferrograd_tuning::early_stopping` re-exports this
//! module.)

use std::collections::BTreeMap;

use ferrograd_nn::{Module, NnError};
use ferrograd_tensor::{Float, Tensor};
use serde_json::{json, Value};

use crate::logs::{from_number, number};
use crate::{Callback, CallbackState, Context, Control, EpochLogs, History, TrainError};

/// Whether the monitored value should go down or up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Lower is better (losses, errors).
    Min,
    /// Higher is better (accuracy, F1, R²).
    Max,
    /// Decided from the monitor's name: [`Mode::Max`] if, after an optional `val_` prefix, it
    /// contains `acc`, `auc`, `precision`, `recall`, `f1` or `r2`; [`Mode::Min`] otherwise.
    #[default]
    Auto,
}

/// Stops training when a monitored metric has stopped improving.
///
/// An epoch improves on the best so far when its value is better by more than `min_delta`.
/// Each epoch from `start_from_epoch` on adds one to a wait counter; an improvement resets it
/// (if a `baseline` is set, only an improvement that also beats the baseline by `min_delta`
/// resets it). An epoch that does not improve, with the counter at `patience` or more (and
/// epoch > 0), stops training. So patience `p` stops at the `p`-th consecutive epoch without
/// improvement (0 and 1 both stop at the first, as in Keras), and with a baseline the run stops
/// at the first non-improving epoch once `patience` epochs have passed without beating it.
///
/// ```
/// use ferrograd_nn::layers::Linear;
/// use ferrograd_tensor::rand::{rngs::StdRng, SeedableRng};
/// use ferrograd_train::early_stopping::{EarlyStopping, Mode};
///
/// let model = Linear::<f32>::new(2, 1, &mut StdRng::seed_from_u64(0));
/// let mut stopper = EarlyStopping::new("val_loss").patience(1).restore_best_weights(true);
/// assert_eq!(stopper.mode, Mode::Auto);
/// let losses = [0.9, 0.5, 0.6, 0.4];
/// let mut stopped_at = None;
/// for (epoch, &loss) in losses.iter().enumerate() {
///     if stopper.on_epoch_end(epoch, loss, &model) {
///         stopped_at = Some(epoch);
///         break;
///     }
/// }
/// assert_eq!(stopped_at, Some(2)); // one epoch without improvement is all patience 1 allows
/// assert_eq!((stopper.best(), stopper.best_epoch()), (Some(0.5), Some(1)));
/// assert_eq!(
///     stopper.message(),
///     Some("early stopping at epoch 3: val_loss has not improved on 0.5 (epoch 2) for 1 epoch(s) (patience 1)")
/// );
/// assert!(stopper.restore(&model)?);
/// # Ok::<(), ferrograd_nn::NnError>(())
/// ```
#[derive(Clone, Debug)]
pub struct EarlyStopping<F: Float = f32> {
    /// The metric's name (used by [`Mode::Auto`] and in messages).
    pub monitor: String,
    /// Whether lower or higher is better.
    pub mode: Mode,
    /// Epochs without improvement tolerated before stopping.
    pub patience: usize,
    /// The smallest change that counts as an improvement (its absolute value is used).
    pub min_delta: f64,
    /// A value to beat: until the metric beats it, improvements do not reset the wait.
    pub baseline: Option<f64>,
    /// Keep the weights of the best epoch so [`EarlyStopping::restore`] can put them back.
    pub restore_best_weights: bool,
    /// Epochs before this one are ignored (a warm-up).
    pub start_from_epoch: usize,
    wait: usize,
    best: Option<f64>,
    best_epoch: Option<usize>,
    stopped_epoch: Option<usize>,
    best_weights: Option<BTreeMap<String, Tensor<F>>>,
    non_finite: Vec<(usize, f64)>,
    message: Option<String>,
}

impl<F: Float> EarlyStopping<F> {
    /// Watches `monitor` with Keras' defaults: mode auto, patience 0, min_delta 0, no baseline,
    /// no weight restoring, start from epoch 0.
    pub fn new(monitor: impl Into<String>) -> Self {
        EarlyStopping {
            monitor: monitor.into(),
            mode: Mode::Auto,
            patience: 0,
            min_delta: 0.0,
            baseline: None,
            restore_best_weights: false,
            start_from_epoch: 0,
            wait: 0,
            best: None,
            best_epoch: None,
            stopped_epoch: None,
            best_weights: None,
            non_finite: Vec::new(),
            message: None,
        }
    }

    /// Sets [`EarlyStopping::mode`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`EarlyStopping::patience`].
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// Sets [`EarlyStopping::min_delta`].
    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.min_delta = min_delta;
        self
    }

    /// Sets [`EarlyStopping::baseline`].
    pub fn baseline(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// Sets [`EarlyStopping::restore_best_weights`].
    pub fn restore_best_weights(mut self, restore: bool) -> Self {
        self.restore_best_weights = restore;
        self
    }

    /// Sets [`EarlyStopping::start_from_epoch`].
    pub fn start_from_epoch(mut self, epoch: usize) -> Self {
        self.start_from_epoch = epoch;
        self
    }

    /// The direction actually used: `mode`, with [`Mode::Auto`] resolved from the monitor's name.
    pub fn resolved_mode(&self) -> Mode {
        resolve_mode(&self.monitor, self.mode)
    }

    fn is_improvement(&self, value: f64, reference: f64) -> bool {
        improves(self.resolved_mode(), value, reference, self.min_delta)
    }

    /// Records the metric's `value` at the end of `epoch` (counted from 0) and answers whether
    /// training should stop. With `restore_best_weights`, a copy of `module`'s state dict is
    /// kept whenever the value improves (and at the first epoch watched). A NaN or infinite value
    /// never improves (Keras' rule); it is recorded in [`EarlyStopping::non_finite`] and
    /// described by [`EarlyStopping::message`].
    pub fn on_epoch_end(&mut self, epoch: usize, value: f64, module: &dyn Module<F>) -> bool {
        self.message = None;
        if epoch < self.start_from_epoch {
            return false;
        }
        if self.restore_best_weights && self.best_weights.is_none() {
            self.best_weights = Some(snapshot(module));
            self.best_epoch = Some(epoch);
        }
        self.wait += 1;
        // An infinity can "improve" on a finite best in one direction; it is as broken as a NaN.
        let finite = value.is_finite();
        if finite && self.best.is_none_or(|best| self.is_improvement(value, best)) {
            self.best = Some(value);
            self.best_epoch = Some(epoch);
            if self.restore_best_weights {
                self.best_weights = Some(snapshot(module));
            }
            if self.baseline.is_none_or(|b| self.is_improvement(value, b)) {
                self.wait = 0;
            }
            return false;
        }
        let stop = self.wait >= self.patience && epoch > 0;
        if !finite {
            self.non_finite.push((epoch, value));
            self.message = Some(format!(
                "early stopping: {} is {value} at epoch {}; counted as no improvement{}",
                self.monitor,
                epoch + 1,
                if stop {
                    String::new()
                } else {
                    format!(" ({} of {} epochs of patience used)", self.wait, self.patience)
                }
            ));
        }
        if stop {
            self.stopped_epoch = Some(epoch);
            let seen = match (self.best, self.best_epoch) {
                (Some(best), Some(at)) => format!("has not improved on {best} (epoch {})", at + 1),
                _ => "has not improved".to_string(),
            };
            let stopped = format!(
                "early stopping at epoch {}: {} {seen} for {} epoch(s) (patience {}{})",
                epoch + 1,
                self.monitor,
                self.wait,
                self.patience,
                self.baseline.map_or(String::new(), |b| format!(", baseline {b}"))
            );
            self.message = Some(match self.message.take() {
                Some(nan) => format!("{nan}; {stopped}"),
                None => stopped,
            });
            return true;
        }
        false
    }

    /// What the last call to [`EarlyStopping::on_epoch_end`] saw worth saying: a NaN or
    /// infinite value, or the reason it answered "stop" (the monitor, the best value and its
    /// epoch, the epochs waited). `None` for an ordinary epoch. Epochs are counted from 1 here,
    /// as Keras prints them (`on_epoch_end`'s epoch 0 is "epoch 1").
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The epochs whose value was NaN or infinite, with the value.
    pub fn non_finite(&self) -> &[(usize, f64)] {
        &self.non_finite
    }

    /// Loads the kept best weights into `module` if `restore_best_weights` is set and an epoch
    /// was watched; answers whether it did. Like Keras, this restores whether or not training
    /// was stopped early.
    ///
    /// # Errors
    /// The module's parameters do not match the kept state dict (another architecture).
    pub fn restore(&self, module: &dyn Module<F>) -> Result<bool, NnError> {
        match (&self.best_weights, self.restore_best_weights) {
            (Some(state), true) => {
                module.load_state_dict(state)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The best value seen so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// The epoch of the best value (or of the kept weights before any value improved).
    pub fn best_epoch(&self) -> Option<usize> {
        self.best_epoch
    }

    /// The epoch at which [`EarlyStopping::on_epoch_end`] answered "stop".
    pub fn stopped_epoch(&self) -> Option<usize> {
        self.stopped_epoch
    }

    /// The current wait counter.
    pub fn wait(&self) -> usize {
        self.wait
    }

    /// Forgets everything seen, keeping the settings, so the stopper can watch a new run.
    pub fn reset(&mut self) {
        self.wait = 0;
        self.best = None;
        self.best_epoch = None;
        self.stopped_epoch = None;
        self.best_weights = None;
        self.non_finite.clear();
        self.message = None;
    }
}

/// `mode`, with [`Mode::Auto`] resolved from the monitor's name (shared with the checkpoint
/// callback's "best" monitor).
pub(crate) fn resolve_mode(monitor: &str, mode: Mode) -> Mode {
    match mode {
        Mode::Auto => {
            let name = monitor.to_lowercase();
            let name = name.strip_prefix("val_").unwrap_or(&name);
            let higher = ["acc", "auc", "precision", "recall", "f1", "r2"];
            if higher.iter().any(|h| name.contains(h)) {
                Mode::Max
            } else {
                Mode::Min
            }
        }
        m => m,
    }
}

/// Whether `value` beats `reference` by more than `|min_delta|` in direction `mode` (resolved).
pub(crate) fn improves(mode: Mode, value: f64, reference: f64, min_delta: f64) -> bool {
    let delta = min_delta.abs();
    match mode {
        Mode::Max => value - delta > reference,
        _ => value + delta < reference,
    }
}

/// A deep copy of the state dict, so later in-place updates of the parameters cannot reach it.
fn snapshot<F: Float>(module: &dyn Module<F>) -> BTreeMap<String, Tensor<F>> {
    module.state_dict().into_iter().map(|(name, t)| (name, Tensor::from_vec(t.to_vec(), t.shape()))).collect()
}

/// In a [`Learner`](crate::Learner): reads the monitor from each epoch's logs, says what it saw,
/// stops the run, and restores the best weights at the end of training (if
/// `restore_best_weights`, whether or not it stopped the run, as Keras does).
impl<F: Float> Callback<F> for EarlyStopping<F> {
    fn name(&self) -> String {
        format!("EarlyStopping({})", self.monitor)
    }

    fn on_epoch_end(&mut self, ctx: &mut Context<'_, F>, logs: &EpochLogs) -> Result<Control, TrainError> {
        let value = logs.get(&self.monitor).ok_or_else(|| TrainError::MissingLog {
            callback: Callback::<F>::name(self),
            monitor: self.monitor.clone(),
            available: logs.names(),
        })?;
        let stop = EarlyStopping::on_epoch_end(self, ctx.epoch, value, ctx.model);
        if let Some(message) = self.message() {
            ctx.say(message.to_string());
        }
        Ok(if stop { Control::Stop } else { Control::Continue })
    }

    fn on_train_end(&mut self, ctx: &mut Context<'_, F>, _history: &History) -> Result<(), TrainError> {
        if self.restore(ctx.model)? {
            let epoch = self.best_epoch.map_or("?".to_string(), |e| (e + 1).to_string());
            ctx.say(format!("early stopping: restored the weights of epoch {epoch} ({} best)", self.monitor));
        }
        Ok(())
    }

    fn state(&self) -> CallbackState<F> {
        let non_finite: Vec<Value> = self.non_finite.iter().map(|&(e, v)| json!([e, number(v)])).collect();
        CallbackState {
            json: json!({
                "wait": self.wait,
                "best": self.best,
                "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch,
                "non_finite": non_finite,
                "has_weights": self.best_weights.is_some(),
            }),
            tensors: self.best_weights.clone().unwrap_or_default(),
        }
    }

    fn load_state(&mut self, state: CallbackState<F>) -> Result<(), String> {
        let j = &state.json;
        let epoch = |key: &str| -> Result<Option<usize>, String> {
            match j.get(key) {
                Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(|e| Some(e as usize)).ok_or(format!("`{key}` is not an epoch")),
                None => Err(format!("no `{key}`")),
            }
        };
        let wait = j.get("wait").and_then(Value::as_u64).ok_or("no `wait`")? as usize;
        let best = match j.get("best") {
            Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or("`best` is not a number")?),
            None => return Err("no `best`".into()),
        };
        let non_finite = j
            .get("non_finite")
            .and_then(Value::as_array)
            .ok_or("no `non_finite`")?
            .iter()
            .map(|p| Some((p.get(0)?.as_u64()? as usize, from_number(p.get(1)?)?)))
            .collect::<Option<Vec<_>>>()
            .ok_or("`non_finite` is not a list of (epoch, value)")?;
        let has_weights = j.get("has_weights").and_then(Value::as_bool).ok_or("no `has_weights`")?;
        self.wait = wait;
        self.best = best;
        self.best_epoch = epoch("best_epoch")?;
        self.stopped_epoch = epoch("stopped_epoch")?;
        self.non_finite = non_finite;
        self.best_weights = has_weights.then_some(state.tensors);
        self.message = None;
        Ok(())
    }
}
