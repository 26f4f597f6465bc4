//! Learning-rate schedules with PyTorch's semantics (`torch.optim.lr_scheduler`).
//!
//! A schedule maps an epoch counter to a learning rate; the training loop feeds it to the
//! optimizer: `opt.set_lr(sched.step())` once per epoch (or per batch for OneCycle), the way
//! PyTorch's `scheduler.step()` writes the optimizer's lr. Epoch 0 is the lr before the first
//! `step()`. Values follow PyTorch's closed forms, so a schedule can also be restored by
//! [`LrScheduler::set_epoch`] after loading a checkpoint. [`ReduceLROnPlateau`] depends on the
//! metric history instead and has its own `step(metric)`. [`OneCycleLR`] also cycles the
//! momentum (SGD's `momentum`, Adam's `beta1`) by default: [`LrScheduler::apply_to`] writes
//! both into the optimizer.

use std::f64::consts::PI;

use ferrograd_tensor::Float;

use crate::Optimizer;

/// An epoch-driven learning-rate schedule.
///
/// ```
/// use ferrograd_optim::{LrScheduler, StepLR};
/// let mut sched = StepLR::new(0.1, 2, 0.5);
/// assert_eq!(sched.get_lr(), 0.1);
/// let lrs: Vec<f64> = (0..4).map(|_| sched.step()).collect();
/// assert_eq!(lrs, vec![0.1, 0.05, 0.05, 0.025]);
/// ```
pub trait LrScheduler {
    /// The learning rate at `epoch`.
    fn lr_at(&self, epoch: u64) -> f64;
    /// The current epoch (0 before the first [`LrScheduler::step`]).
    fn epoch(&self) -> u64;
    /// Moves to `epoch` (restoring a schedule after a checkpoint).
    fn set_epoch(&mut self, epoch: u64);

    /// Advances one epoch and returns the new learning rate.
    fn step(&mut self) -> f64 {
        let e = self.epoch() + 1;
        self.set_epoch(e);
        self.lr_at(e)
    }

    /// The learning rate at the current epoch.
    fn get_lr(&self) -> f64 {
        self.lr_at(self.epoch())
    }

    /// The momentum (SGD's `momentum`, Adam's `beta1`) at `epoch` for a schedule that drives
    /// it, as [`OneCycleLR`] does by default; `None` (the default) leaves the optimizer's own.
    fn momentum_at(&self, _epoch: u64) -> Option<f64> {
        None
    }

    /// The momentum at the current epoch, if the schedule drives it.
    fn get_momentum(&self) -> Option<f64> {
        self.momentum_at(self.epoch())
    }

    /// Writes the current lr, and the momentum if the schedule drives it, into every group of
    /// `opt`: what PyTorch's `scheduler.step()` leaves in the optimizer. Call it once after
    /// building the schedule (PyTorch's constructor does the same) and after each
    /// [`LrScheduler::step`].
    ///
    /// # Panics
    /// If the schedule drives the momentum and `opt`'s rule has none (Adagrad), as PyTorch
    /// raises; turn the cycling off (`OneCycleLR::cycle_momentum = false`) for such rules.
    ///
    /// ```
    /// use ferrograd_autograd::Param;
    /// use ferrograd_optim::{GroupOptions, LrScheduler, OneCycleLR, Optim, Optimizer, Sgd};
    /// use ferrograd_tensor::Tensor;
    /// let w = Param::new(Tensor::from_vec(vec![1.0f32], &[1]));
    /// let sgd = Sgd { momentum: 0.9, ..Sgd::default() };
    /// let mut opt = Optim::new(sgd, vec![w.clone()], GroupOptions::lr(0.1));
    /// let mut sched = OneCycleLR::new(0.1, 100);
    /// sched.apply_to(&mut opt);
    /// assert!((opt.lr() - 0.004).abs() < 1e-12 && opt.momentum() == Some(0.95));
    /// for _ in 0..30 {
    ///     opt.step(&w.var().square().sum().backward());
    ///     sched.step();
    ///     sched.apply_to(&mut opt);
    /// }
    /// assert!((opt.lr() - 0.1).abs() < 1e-3 && (opt.momentum().unwrap() - 0.85).abs() < 1e-3);
    /// ```
    fn apply_to<F: Float>(&self, opt: &mut dyn Optimizer<F>)
    where
        Self: Sized,
    {
        opt.set_lr(self.get_lr());
        if let Some(m) = self.get_momentum() {
            assert!(
                opt.set_momentum(m),
                "LrScheduler::apply_to: the schedule cycles momentum but the optimizer's rule has neither \
                 momentum nor betas (turn cycle_momentum off)"
            );
        }
    }
}

/// A boxed schedule is a schedule (so `Box<dyn LrScheduler>` has [`LrScheduler::apply_to`]).
impl<S: LrScheduler + ?Sized> LrScheduler for Box<S> {
    fn lr_at(&self, epoch: u64) -> f64 {
        (**self).lr_at(epoch)
    }
    fn epoch(&self) -> u64 {
        (**self).epoch()
    }
    fn set_epoch(&mut self, epoch: u64) {
        (**self).set_epoch(epoch)
    }
    fn momentum_at(&self, epoch: u64) -> Option<f64> {
        (**self).momentum_at(epoch)
    }
}

/// `LrScheduler` for a schedule with a `closed_form(epoch)` lr and a `last_epoch` counter; the
/// optional block is the body of `momentum_at(&self, epoch)` for schedules that drive momentum.
macro_rules! epoch_counter {
    ($t:ty $(, momentum_at($s:ident, $e:ident) $momentum:block)?) => {
        impl LrScheduler for $t {
            fn lr_at(&self, epoch: u64) -> f64 {
                self.closed_form(epoch)
            }
            fn epoch(&self) -> u64 {
                self.last_epoch
            }
            fn set_epoch(&mut self, epoch: u64) {
                self.last_epoch = epoch;
            }
            $(
                fn momentum_at(&$s, $e: u64) -> Option<f64> $momentum
            )?
        }
    };
}

/// `base_lr * factor` for the first `total_iters` epochs, then `base_lr` (PyTorch's defaults:
/// factor 1/3, 5 iterations).
#[derive(Debug, Clone, PartialEq)]
pub struct ConstantLR {
    /// The optimizer's initial lr.
    pub base_lr: f64,
    /// Multiplier until `total_iters`.
    pub factor: f64,
    /// Epochs the factor lasts.
    pub total_iters: u64,
    /// Current epoch.
    pub last_epoch: u64,
}

impl ConstantLR {
    /// A new schedule at epoch 0.
    pub fn new(base_lr: f64, factor: f64, total_iters: u64) -> Self {
        ConstantLR { base_lr, factor, total_iters, last_epoch: 0 }
    }
    fn closed_form(&self, e: u64) -> f64 {
        if e < self.total_iters {
            self.base_lr * self.factor
        } else {
            self.base_lr
        }
    }
}
epoch_counter!(ConstantLR);

/// `base_lr * gamma^(epoch / step_size)`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLR {
    /// The optimizer's initial lr.
    pub base_lr: f64,
    /// Epochs between decays.
    pub step_size: u64,
    /// Decay factor.
    pub gamma: f64,
    /// Current epoch.
    pub last_epoch: u64,
}

impl StepLR {
    /// A new schedule at epoch 0.
    pub fn new(base_lr: f64, step_size: u64, gamma: f64) -> Self {
        assert!(step_size > 0, "StepLR: step_size must be positive");
        StepLR { base_lr, step_size, gamma, last_epoch: 0 }
    }
    fn closed_form(&self, e: u64) -> f64 {
        self.base_lr * self.gamma.powi((e / self.step_size) as i32)
    }
}
epoch_counter!(StepLR);

/// `base_lr * gamma^(number of milestones <= epoch)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepLR {
    /// The optimizer's initial lr.
    pub base_lr: f64,
    /// Epochs at which the lr decays (sorted on construction).
    pub milestones: Vec<u64>,
    /// Decay factor.
    pub gamma: f64,
    /// Current epoch.
    pub last_epoch: u64,
}

impl MultiStepLR {
    /// A new schedule at epoch 0.
    pub fn new(base_lr: f64, mut milestones: Vec<u64>, gamma: f64) -> Self {
        milestones.sort_unstable();
        MultiStepLR { base_lr, milestones, gamma, last_epoch: 0 }
    }
    fn closed_form(&self, e: u64) -> f64 {
        self.base_lr * self.gamma.powi(self.milestones.partition_point(|&m| m <= e) as i32)
    }
}
epoch_counter!(MultiStepLR);

/// `base_lr * gamma^epoch`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialLR {
    /// The optimizer's initial lr.
    pub base_lr: f64,
    /// Decay factor per epoch.
    pub gamma: f64,
    /// Current epoch.
    pub last_epoch: u64,
}

impl ExponentialLR {
    /// A new schedule at epoch 0.
    pub fn new(base_lr: f64, gamma: f64) -> Self {
        ExponentialLR { base_lr, gamma, last_epoch: 0 }
    }
    fn closed_form(&self, e: u64) -> f64 {
        self.base_lr * self.gamma.powi(e as i32)
    }
}
epoch_counter!(ExponentialLR);

fn cosine(base: f64, eta_min: f64, t: f64, period: f64) -> f64 {
    eta_min + (base - eta_min) * (1.0 + (PI * t / period).cos()) / 2.0
}

/// Cosine annealing from `base_lr` to `eta_min` over `t_max` epochs (and back up after, as
/// PyTorch's, which is periodic).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingLR {
    /// The optimizer's initial lr.
    pub base_lr: f64,
    /// Half period in epochs.
    pub t_max: u64,
    /// Lowest lr.
    pub eta_min: f64,
    /// Current epoch.
    pub last_epoch: u64,
}

impl CosineAnnealingLR {
    /// A new schedule at epoch 0.
    pub fn new(base_lr: f64, t_max: u64, eta_min: f64) -> Self {
        assert!(t_max > 0, "CosineAnnealingLR: t_max must be positive");
        CosineAnnealingLR { base_lr, t_max, eta_min, last_epoch: 0 }
    }
    fn closed_form(&self, e: u64) -> f64 {
        cosine(self.base_lr, self.eta_min, e as f64, self.t_max as f64)
    }
}
epoch_counter!(CosineAnnealingLR);

/// SGDR: cosine annealing restarted every `t_0` epochs, the period growing by `t_mult` after
/// each restart.
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingWarmRestarts {
    /// The optimizer's initial lr.
    pub base_lr: f64,
    /// First period in epochs.
    pub t_0: u64,
    /// Period growth factor (≥ 1).
    pub t_mult: u64,
    /// Lowest lr.
    pub eta_min: f64,
    /// Current epoch.
    pub last_epoch: u64,
}

impl CosineAnnealingWarmRestarts {
    /// A new schedule at epoch 0.
    pub fn new(base_lr: f64, t_0: u64, t_mult: u64, eta_min: f64) -> Self {
        assert!(t_0 > 0 && t_mult > 0, "CosineAnnealingWarmRestarts: t_0 and t_mult must be positive");
        CosineAnnealingWarmRestarts { base_lr, t_0, t_mult, eta_min, last_epoch: 0 }
    }
    fn closed_form(&self, e: u64) -> f64 {
        let (mut t_cur, mut t_i) = (e, self.t_0);
        while t_cur >= t_i {
            t_cur -= t_i;
            t_i *= self.t_mult;
        }
        cosine(self.base_lr, self.eta_min, t_cur as f64, t_i as f64)
    }
}
epoch_counter!(CosineAnnealingWarmRestarts);

/// Linear change of the multiplier from `start_factor` to `end_factor` over `total_iters`
/// epochs: the usual warmup (PyTorch's defaults: 1/3 to 1 over 5).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLR {
    /// The optimizer's initial lr.
    pub base_lr: f64,
    /// Multiplier at epoch 0.
    pub start_factor: f64,
    /// Multiplier from `total_iters` on.
    pub end_factor: f64,
    /// Length of the ramp.
    pub total_iters: u64,
    /// Current epoch.
    pub last_epoch: u64,
}

impl LinearLR {
    /// A new schedule at epoch 0.
    pub fn new(base_lr: f64, start_factor: f64, end_factor: f64, total_iters: u64) -> Self {
        assert!(total_iters > 0, "LinearLR: total_iters must be positive");
        LinearLR { base_lr, start_factor, end_factor, total_iters, last_epoch: 0 }
    }
    fn closed_form(&self, e: u64) -> f64 {
        let frac = e.min(self.total_iters) as f64 / self.total_iters as f64;
        self.base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)
    }
}
epoch_counter!(LinearLR);

/// The one-cycle policy (`three_phase=False`, cosine annealing): from `max_lr / div_factor` up
/// to `max_lr` over the first `pct_start` of `total_steps`, then down to
/// `max_lr / div_factor / final_div_factor`. Stepped per batch. With `cycle_momentum` (the
/// default, as PyTorch's) the momentum moves the other way, from `max_momentum` down to
/// `base_momentum` at the peak and back up, on the same cosine; [`LrScheduler::apply_to`]
/// writes it into the optimizer (SGD's and RMSprop's `momentum`, Adam's and Lion's `beta1`).
/// Past `total_steps` (where PyTorch raises) both stay at their final values.
#[derive(Debug, Clone, PartialEq)]
pub struct OneCycleLR {
    /// Peak lr.
    pub max_lr: f64,
    /// Length of the cycle in steps.
    pub total_steps: u64,
    /// Fraction of the cycle spent rising.
    pub pct_start: f64,
    /// `initial_lr = max_lr / div_factor`.
    pub div_factor: f64,
    /// `min_lr = initial_lr / final_div_factor`.
    pub final_div_factor: f64,
    /// Whether the schedule drives the momentum too.
    pub cycle_momentum: bool,
    /// Momentum at the lr's peak.
    pub base_momentum: f64,
    /// Momentum at the start and the end of the cycle.
    pub max_momentum: f64,
    /// Current step.
    pub last_epoch: u64,
}

impl OneCycleLR {
    /// A new schedule with PyTorch's defaults (pct_start 0.3, div_factor 25,
    /// final_div_factor 1e4, momentum cycled between 0.85 and 0.95).
    pub fn new(max_lr: f64, total_steps: u64) -> Self {
        assert!(total_steps > 1, "OneCycleLR: total_steps must be at least 2");
        OneCycleLR {
            max_lr,
            total_steps,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            last_epoch: 0,
        }
    }

    /// The value at step `e` of a quantity that goes `rise.0` to `rise.1` over the first
    /// phase and `fall.0` to `fall.1` over the second, on PyTorch's cosine.
    fn anneal(&self, e: u64, rise: (f64, f64), fall: (f64, f64)) -> f64 {
        let peak = self.pct_start * self.total_steps as f64 - 1.0;
        let end = self.total_steps as f64 - 1.0;
        let s = e as f64;
        let cos = |(start, stop): (f64, f64), pct: f64| stop + (start - stop) / 2.0 * ((PI * pct).cos() + 1.0);
        if s <= peak {
            cos(rise, s / peak)
        } else {
            cos(fall, ((s - peak) / (end - peak)).min(1.0))
        }
    }

    fn closed_form(&self, e: u64) -> f64 {
        let initial = self.max_lr / self.div_factor;
        let min_lr = initial / self.final_div_factor;
        self.anneal(e, (initial, self.max_lr), (self.max_lr, min_lr))
    }
}

epoch_counter!(OneCycleLR, momentum_at(self, epoch) {
    let (base, max) = (self.base_momentum, self.max_momentum);
    self.cycle_momentum.then(|| self.anneal(epoch, (max, base), (base, max)))
});

/// Schedules run one after another: `schedulers[i]` takes over at `milestones[i - 1]`,
/// restarted at its own epoch 0 (PyTorch's `SequentialLR`, e.g. a linear warmup then cosine).
///
/// ```
/// use ferrograd_optim::{CosineAnnealingLR, LinearLR, LrScheduler, SequentialLR};
/// let warmup = LinearLR::new(0.1, 0.1, 1.0, 3);
/// let cosine = CosineAnnealingLR::new(0.1, 10, 0.0);
/// let mut sched = SequentialLR::new(vec![Box::new(warmup), Box::new(cosine)], vec![3]);
/// let lrs: Vec<f64> = (0..4).map(|_| sched.step()).collect();
/// assert!((lrs[2] - 0.1).abs() < 1e-12); // epoch 3: the cosine's start
/// ```
pub struct SequentialLR {
    schedulers: Vec<Box<dyn LrScheduler + Send>>,
    milestones: Vec<u64>,
    last_epoch: u64,
}

impl SequentialLR {
    /// Chains `schedulers`, switching at the (increasing) `milestones`.
    ///
    /// # Panics
    /// If there is not exactly one milestone fewer than schedulers, or they do not increase.
    pub fn new(schedulers: Vec<Box<dyn LrScheduler + Send>>, milestones: Vec<u64>) -> Self {
        assert_eq!(
            milestones.len() + 1,
            schedulers.len(),
            "SequentialLR: {} schedulers need {} milestones, got {}",
            schedulers.len(),
            schedulers.len().saturating_sub(1),
            milestones.len()
        );
        assert!(milestones.windows(2).all(|w| w[0] < w[1]), "SequentialLR: milestones must increase");
        SequentialLR { schedulers, milestones, last_epoch: 0 }
    }
}

impl LrScheduler for SequentialLR {
    fn lr_at(&self, e: u64) -> f64 {
        let idx = self.milestones.partition_point(|&m| m <= e);
        let start = if idx == 0 { 0 } else { self.milestones[idx - 1] };
        self.schedulers[idx].lr_at(e - start)
    }
    fn epoch(&self) -> u64 {
        self.last_epoch
    }
    fn set_epoch(&mut self, epoch: u64) {
        self.last_epoch = epoch;
    }
    fn momentum_at(&self, e: u64) -> Option<f64> {
        let idx = self.milestones.partition_point(|&m| m <= e);
        let start = if idx == 0 { 0 } else { self.milestones[idx - 1] };
        self.schedulers[idx].momentum_at(e - start)
    }
}

/// Schedules applied together, each step (PyTorch's `ChainedScheduler`): the lr is `base_lr`
/// times every schedule's own factor `lr_i(epoch) / base_lr`, e.g. a constant warmup factor on
/// top of an exponential decay. Every schedule must be built with the same `base_lr`.
///
/// PyTorch steps each schedule's recursive (chainable) form in turn; that equals this product
/// for the schedules whose steps are factors (constant, linear, step, multi-step, exponential,
/// and cosine annealing with `eta_min = 0` until `t_max`). A momentum is taken from the last
/// schedule that drives one.
///
/// ```
/// use ferrograd_optim::{ChainedScheduler, ConstantLR, ExponentialLR, LrScheduler};
/// let warm = ConstantLR::new(0.1, 0.5, 2);
/// let decay = ExponentialLR::new(0.1, 0.9);
/// let mut sched = ChainedScheduler::new(0.1, vec![Box::new(warm), Box::new(decay)]);
/// assert!((sched.get_lr() - 0.05).abs() < 1e-12);
/// sched.step();
/// assert!((sched.step() - 0.1 * 0.81).abs() < 1e-12);
/// ```
pub struct ChainedScheduler {
    base_lr: f64,
    schedulers: Vec<Box<dyn LrScheduler + Send>>,
    last_epoch: u64,
}

impl ChainedScheduler {
    /// Applies `schedulers`, all built with `base_lr`, together.
    ///
    /// # Panics
    /// If `schedulers` is empty or `base_lr` is zero (the factors would be undefined).
    pub fn new(base_lr: f64, schedulers: Vec<Box<dyn LrScheduler + Send>>) -> Self {
        assert!(!schedulers.is_empty(), "ChainedScheduler: no schedulers");
        assert!(base_lr != 0.0, "ChainedScheduler: base_lr must not be zero");
        ChainedScheduler { base_lr, schedulers, last_epoch: 0 }
    }
}

impl LrScheduler for ChainedScheduler {
    fn lr_at(&self, e: u64) -> f64 {
        self.schedulers.iter().fold(self.base_lr, |lr, s| lr * (s.lr_at(e) / self.base_lr))
    }
    fn epoch(&self) -> u64 {
        self.last_epoch
    }
    fn set_epoch(&mut self, epoch: u64) {
        self.last_epoch = epoch;
    }
    fn momentum_at(&self, e: u64) -> Option<f64> {
        self.schedulers.iter().rev().find_map(|s| s.momentum_at(e))
    }
}

/// Whether a smaller or a larger metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlateauMode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// How `threshold` measures a significant improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdMode {
    /// Relative: better than `best * (1 ∓ threshold)`.
    Rel,
    /// Absolute: better than `best ∓ threshold`.
    Abs,
}

/// The options of [`ReduceLROnPlateau`]; `Default` is PyTorch's defaults (min mode, factor
/// 0.1, patience 10, threshold 1e-4 relative, no cooldown, min_lr 0, eps 1e-8).
#[derive(Debug, Clone, PartialEq)]
pub struct PlateauOptions {
    /// Min or max mode.
    pub mode: PlateauMode,
    /// Reduction factor.
    pub factor: f64,
    /// Epochs without improvement tolerated.
    pub patience: u64,
    /// Significance of an improvement.
    pub threshold: f64,
    /// Relative or absolute threshold.
    pub threshold_mode: ThresholdMode,
    /// Epochs to wait after a reduction before counting again.
    pub cooldown: u64,
    /// Lower bound of the lr.
    pub min_lr: f64,
    /// Reductions smaller than this are skipped.
    pub eps: f64,
}

impl Default for PlateauOptions {
    fn default() -> Self {
        PlateauOptions {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// Multiplies the lr by `factor` when the metric has not improved for `patience` epochs
/// (PyTorch's `ReduceLROnPlateau`).
///
/// ```
/// use ferrograd_optim::{PlateauOptions, ReduceLROnPlateau};
/// let mut sched = ReduceLROnPlateau::new(0.1, PlateauOptions { patience: 1, ..PlateauOptions::default() });
/// for loss in [1.0, 0.5, 0.6, 0.7] {
///     sched.step(loss);
/// }
/// assert!((sched.get_lr() - 0.01).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceLROnPlateau {
    /// The options.
    pub options: PlateauOptions,
    lr: f64,
    best: f64,
    num_bad_epochs: u64,
    cooldown_counter: u64,
}

impl ReduceLROnPlateau {
    /// A scheduler starting at `lr`.
    pub fn new(lr: f64, options: PlateauOptions) -> Self {
        ReduceLROnPlateau { options, lr, best: f64::NAN, num_bad_epochs: 0, cooldown_counter: 0 }
    }

    fn is_better(&self, a: f64) -> bool {
        if self.best.is_nan() {
            return !a.is_nan();
        }
        let o = &self.options;
        match (o.mode, o.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < self.best * (1.0 - o.threshold),
            (PlateauMode::Min, ThresholdMode::Abs) => a < self.best - o.threshold,
            (PlateauMode::Max, ThresholdMode::Rel) => a > self.best * (1.0 + o.threshold),
            (PlateauMode::Max, ThresholdMode::Abs) => a > self.best + o.threshold,
        }
    }

    /// Records this epoch's metric and returns the (possibly reduced) lr.
    pub fn step(&mut self, metric: f64) -> f64 {
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.options.patience {
            let new_lr = (self.lr * self.options.factor).max(self.options.min_lr);
            if self.lr - new_lr > self.options.eps {
                self.lr = new_lr;
            }
            self.cooldown_counter = self.options.cooldown;
            self.num_bad_epochs = 0;
        }
        self.lr
    }

    /// The current lr.
    pub fn get_lr(&self) -> f64 {
        self.lr
    }

    /// The best metric seen (NaN before the first step).
    pub fn best(&self) -> f64 {
        self.best
    }
}
