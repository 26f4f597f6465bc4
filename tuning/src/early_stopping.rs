//! Early stopping with Keras' semantics (`keras.callbacks.EarlyStopping`): watch one metric at
//! the end of each epoch, stop when it has not improved for `patience` epochs, and optionally
//! put back the weights of the best epoch.
//!
//! The training loop calls [`EarlyStopping::on_epoch_end`] with the epoch (from 0), the metric's
//! value and the model; it answers whether to stop. After the loop, [`EarlyStopping::restore`]
//! loads the best weights when `restore_best_weights` is set.

use std::collections::BTreeMap;

use ferrograd_nn::Module;
use ferrograd_tensor::{Float, Tensor};

use crate::TuningError;

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
/// use ferrograd_tuning::early_stopping::{EarlyStopping, Mode};
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
/// assert!(stopper.restore(&model)?);
/// # Ok::<(), ferrograd_tuning::TuningError>(())
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
        match self.mode {
            Mode::Auto => {
                let name = self.monitor.to_lowercase();
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

    fn is_improvement(&self, value: f64, reference: f64) -> bool {
        let delta = self.min_delta.abs();
        match self.resolved_mode() {
            Mode::Max => value - delta > reference,
            _ => value + delta < reference,
        }
    }

    /// Records the metric's `value` at the end of `epoch` (counted from 0) and answers whether
    /// training should stop. With `restore_best_weights`, a copy of `module`'s state dict is
    /// kept whenever the value improves (and at the first epoch watched). A NaN value never
    /// improves.
    pub fn on_epoch_end(&mut self, epoch: usize, value: f64, module: &dyn Module<F>) -> bool {
        if epoch < self.start_from_epoch {
            return false;
        }
        if self.restore_best_weights && self.best_weights.is_none() {
            self.best_weights = Some(snapshot(module));
            self.best_epoch = Some(epoch);
        }
        self.wait += 1;
        if self.best.is_none_or(|best| self.is_improvement(value, best)) && !value.is_nan() {
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
        if self.wait >= self.patience && epoch > 0 {
            self.stopped_epoch = Some(epoch);
            return true;
        }
        false
    }

    /// Loads the kept best weights into `module` if `restore_best_weights` is set and an epoch
    /// was watched; answers whether it did. Like Keras, this restores whether or not training
    /// was stopped early.
    ///
    /// # Errors
    /// The module's parameters do not match the kept state dict (another architecture).
    pub fn restore(&self, module: &dyn Module<F>) -> Result<bool, TuningError> {
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
    }
}

/// A deep copy of the state dict, so later in-place updates of the parameters cannot reach it.
fn snapshot<F: Float>(module: &dyn Module<F>) -> BTreeMap<String, Tensor<F>> {
    module.state_dict().into_iter().map(|(name, t)| (name, Tensor::from_vec(t.to_vec(), t.shape()))).collect()
}
