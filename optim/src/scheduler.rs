//! Learning-rate schedules with PyTorch's semantics (`torch.optim.lr_scheduler`).
//!
//! A schedule is bound to its optimizer, as in PyTorch: built from it (the base lr of each
//! parameter group is the group's lr at that moment), it writes each group's lr, and the
//! momentum when it cycles one, into the optimizer at every step.
//!
//! ```
//! use ferrograd_autograd::Param;
//! use ferrograd_optim::{GroupOptions, Optim, Optimizer, Sgd, StepLR};
//! use ferrograd_tensor::Tensor;
//! let w = Param::new(Tensor::from_vec(vec![1.0f32], &[1]));
//! let mut opt = Optim::new(Sgd::default(), vec![w.clone()], GroupOptions::lr(0.1));
//! let mut sched = StepLR::on(&mut opt, 2, 0.5); // halve every 2 epochs, from the optimizer's 0.1
//! for _epoch in 0..4 {
//!     opt.step(&w.var().square().sum().backward()); // one epoch of training
//!     sched.step(&mut opt);
//! }
//! assert_eq!(opt.lr(), 0.025);
//! ```
//!
//! [`StepLR::on`] and its siblings bind a new schedule; [`LrScheduler::bind`] binds one built
//! otherwise (a boxed one, or one with fields changed); [`BoundScheduler::step`] advances it.
//! Epoch 0 is the lr before the first step. Values follow PyTorch's closed forms, so a
//! schedule restored by [`BoundScheduler::set_epoch`] after loading a checkpoint resumes
//! where it was. [`ReduceLROnPlateau`] depends on a metric instead: [`ReduceLROnPlateau::on`]
//! and [`ReduceLROnPlateau::step_on`].
//!
//! The unbound form stays: `StepLR::new(base_lr, ..)`, whose [`LrScheduler::step`] returns the
//! lr for the loop to set (`opt.set_lr(sched.step())`, one lr for every group) and
//! [`LrScheduler::apply_to`]. For [`OneCycleLR`], which also cycles the momentum (SGD's
//! `momentum`, Adam's `beta1`), that pattern would drop the momentum: its unbound `step()` is
//! deprecated, so the pattern warns at compile time (an error under `-D warnings`).

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

    /// The learning rate at `epoch` of a parameter group whose base lr is `base_lr`: what a
    /// bound schedule writes into each group (PyTorch scales every group from its own base).
    /// The default ignores the base (every group gets [`LrScheduler::lr_at`]); the built-in
    /// schedules compute their closed form from it.
    fn lr_from(&self, _base_lr: f64, epoch: u64) -> f64 {
        self.lr_at(epoch)
    }

    /// Binds the schedule to `opt`, as PyTorch's constructors do: each parameter group's
    /// current lr becomes its base lr, and the values at the current epoch are written into
    /// `opt`. Then [`BoundScheduler::step`] advances it and writes each group's lr (and the
    /// momentum, if the schedule cycles it) at every step.
    ///
    /// ```
    /// use ferrograd_autograd::Param;
    /// use ferrograd_optim::{GroupOptions, LinearLR, LrScheduler, Optim, Optimizer, Sgd};
    /// use ferrograd_tensor::Tensor;
    /// let (a, b) = (Param::new(Tensor::<f32>::zeros(&[1])), Param::new(Tensor::<f32>::zeros(&[1])));
    /// let mut opt = Optim::new(Sgd::default(), vec![a], GroupOptions::lr(0.1));
    /// opt.add_group(vec![b], GroupOptions::lr(0.01));
    /// // A boxed warmup (what a training driver holds): each group warms up to its own lr.
    /// let warmup: Box<dyn LrScheduler + Send> = Box::new(LinearLR::new(0.1, 0.5, 1.0, 2));
    /// let mut sched = warmup.bind(&mut opt);
    /// assert_eq!(opt.group_lrs(), vec![0.05, 0.005]);
    /// sched.step(&mut opt);
    /// sched.step(&mut opt);
    /// assert_eq!(opt.group_lrs(), vec![0.1, 0.01]);
    /// ```
    ///
    /// # Panics
    /// If the schedule cycles momentum and `opt`'s rule has none (Adagrad), as PyTorch raises;
    /// turn the cycling off (`OneCycleLR::cycle_momentum = false`) for such rules.
    #[track_caller]
    fn bind<F: Float>(self, opt: &mut dyn Optimizer<F>) -> BoundScheduler<Self>
    where
        Self: Sized,
    {
        let bound = BoundScheduler { base_lrs: opt.group_lrs(), schedule: self };
        bound.apply(opt);
        bound
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
    /// `opt` (one lr for all groups): the unbound form of what PyTorch's `scheduler.step()`
    /// leaves in the optimizer. Call it once after building the schedule and after each
    /// [`LrScheduler::step`]; a [bound](LrScheduler::bind) schedule does both, and gives each
    /// group its own lr.
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

/// A schedule bound to an optimizer ([`LrScheduler::bind`], [`StepLR::on`], ...): it knows
/// each parameter group's base lr, and every [`step`](BoundScheduler::step) writes each group's
/// lr, and the momentum when the schedule cycles it, into the optimizer. Works the same on a
/// concrete schedule and on a `Box<dyn LrScheduler + Send>` ([`BoundScheduler::boxed`]), with
/// any `&mut dyn Optimizer<F>`.
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::{Adam, GroupOptions, OneCycleLR, Optim, Optimizer};
/// use ferrograd_tensor::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f32], &[1]));
/// let mut opt = Optim::new(Adam::default(), vec![w.clone()], GroupOptions::lr(1e-3));
/// let mut sched = OneCycleLR::on(&mut opt, 0.01, 100).boxed(); // per batch: 100 steps
/// for _batch in 0..30 {
///     opt.step(&w.var().square().sum().backward());
///     sched.step(&mut opt);
/// }
/// // At the peak, the lr is max_lr and beta1 is at its lowest.
/// assert!((opt.lr() - 0.01).abs() < 1e-4 && (opt.momentum().unwrap() - 0.85).abs() < 1e-3);
/// ```
pub struct BoundScheduler<S> {
    schedule: S,
    base_lrs: Vec<f64>,
}

impl<S: LrScheduler> std::fmt::Debug for BoundScheduler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundScheduler")
            .field("epoch", &self.schedule.epoch())
            .field("base_lrs", &self.base_lrs)
            .field("lrs", &self.group_lrs())
            .finish()
    }
}

impl<S: LrScheduler> BoundScheduler<S> {
    /// Advances one epoch (or one batch, for schedules stepped per batch) and writes each
    /// group's lr, and the momentum if the schedule cycles it, into `opt`. Returns the first
    /// group's lr.
    ///
    /// # Panics
    /// If `opt` has another number of parameter groups than when the schedule was bound, or
    /// the schedule cycles momentum and `opt`'s rule has none.
    #[track_caller]
    pub fn step<F: Float>(&mut self, opt: &mut dyn Optimizer<F>) -> f64 {
        let e = self.schedule.epoch() + 1;
        self.schedule.set_epoch(e);
        self.apply(opt)
    }

    /// Moves to `epoch` and writes its values into `opt`: restores a schedule after loading a
    /// checkpoint (bind it to the rebuilt optimizer, at its base lrs, then set the epoch).
    ///
    /// # Panics
    /// As [`BoundScheduler::step`].
    #[track_caller]
    pub fn set_epoch<F: Float>(&mut self, epoch: u64, opt: &mut dyn Optimizer<F>) {
        self.schedule.set_epoch(epoch);
        self.apply(opt);
    }

    /// The current epoch (0 before the first step).
    pub fn epoch(&self) -> u64 {
        self.schedule.epoch()
    }

    /// The first group's lr at the current epoch.
    pub fn get_lr(&self) -> f64 {
        self.schedule.lr_from(self.base_lrs[0], self.schedule.epoch())
    }

    /// Every group's lr at the current epoch.
    pub fn group_lrs(&self) -> Vec<f64> {
        let e = self.schedule.epoch();
        self.base_lrs.iter().map(|&base| self.schedule.lr_from(base, e)).collect()
    }

    /// The momentum at the current epoch, if the schedule cycles it.
    pub fn get_momentum(&self) -> Option<f64> {
        self.schedule.get_momentum()
    }

    /// Each group's base lr, taken from the optimizer when the schedule was bound.
    pub fn base_lrs(&self) -> &[f64] {
        &self.base_lrs
    }

    /// The schedule.
    pub fn schedule(&self) -> &S {
        &self.schedule
    }

    /// The schedule, unbound.
    pub fn into_inner(self) -> S {
        self.schedule
    }

    /// The same binding over a boxed schedule, for code that holds schedules of any kind.
    pub fn boxed(self) -> BoundScheduler<Box<dyn LrScheduler + Send>>
    where
        S: Send + 'static,
    {
        BoundScheduler { schedule: Box::new(self.schedule), base_lrs: self.base_lrs }
    }

    #[track_caller]
    fn apply<F: Float>(&self, opt: &mut dyn Optimizer<F>) -> f64 {
        let lrs = self.group_lrs();
        let groups = opt.group_lrs().len();
        assert_eq!(
            groups,
            lrs.len(),
            "BoundScheduler: the optimizer has {groups} parameter groups, the schedule was bound to {}",
            lrs.len()
        );
        opt.set_group_lrs(&lrs);
        if let Some(m) = self.schedule.get_momentum() {
            assert!(
                opt.set_momentum(m),
                "BoundScheduler: the schedule cycles momentum but the optimizer's rule has neither momentum nor \
                 betas (turn cycle_momentum off)"
            );
        }
        lrs[0]
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
    fn lr_from(&self, base_lr: f64, epoch: u64) -> f64 {
        (**self).lr_from(base_lr, epoch)
    }
    fn momentum_at(&self, epoch: u64) -> Option<f64> {
        (**self).momentum_at(epoch)
    }
}

/// `LrScheduler` for a schedule with a `closed_form(base_lr, epoch)` lr, its own base lr in
/// field `$base`, and a `last_epoch` counter; the optional block is the body of
/// `momentum_at(&self, epoch)` for schedules that drive momentum.
macro_rules! epoch_counter {
    ($t:ty, $base:ident $(, momentum_at($s:ident, $e:ident) $momentum:block)?) => {
        impl LrScheduler for $t {
            fn lr_at(&self, epoch: u64) -> f64 {
                self.closed_form(self.$base, epoch)
            }
            fn lr_from(&self, base_lr: f64, epoch: u64) -> f64 {
                self.closed_form(base_lr, epoch)
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
    ///
    /// # Panics
    /// If `factor` is not in [0, 1], as PyTorch raises.
    #[track_caller]
    pub fn new(base_lr: f64, factor: f64, total_iters: u64) -> Self {
        assert!((0.0..=1.0).contains(&factor), "ConstantLR: factor must be in [0, 1], got {factor}");
        ConstantLR { base_lr, factor, total_iters, last_epoch: 0 }
    }
    fn closed_form(&self, base_lr: f64, e: u64) -> f64 {
        if e < self.total_iters {
            base_lr * self.factor
        } else {
            base_lr
        }
    }
}
epoch_counter!(ConstantLR, base_lr);

impl ConstantLR {
    /// The schedule bound to `opt` (see [`BoundScheduler`]): each parameter group's lr, from its lr
    /// in `opt` now, times `factor` for the first `total_iters` epochs. The first values are written into
    /// `opt` at once, as PyTorch's constructor does; [`ConstantLR::new`] is the unbound form.
    ///
    /// # Panics
    /// As [`ConstantLR::new`].
    #[track_caller]
    pub fn on<F: Float>(opt: &mut dyn Optimizer<F>, factor: f64, total_iters: u64) -> BoundScheduler<Self> {
        ConstantLR::new(opt.lr(), factor, total_iters).bind(opt)
    }
}

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
    fn closed_form(&self, base_lr: f64, e: u64) -> f64 {
        base_lr * self.gamma.powf((e / self.step_size) as f64)
    }
}
epoch_counter!(StepLR, base_lr);

impl StepLR {
    /// The schedule bound to `opt` (see [`BoundScheduler`]): each parameter group's lr, from its lr
    /// in `opt` now, times `gamma` every `step_size` epochs. The first values are written into
    /// `opt` at once, as PyTorch's constructor does; [`StepLR::new`] is the unbound form.
    ///
    /// # Panics
    /// As [`StepLR::new`].
    #[track_caller]
    pub fn on<F: Float>(opt: &mut dyn Optimizer<F>, step_size: u64, gamma: f64) -> BoundScheduler<Self> {
        StepLR::new(opt.lr(), step_size, gamma).bind(opt)
    }
}

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
    fn closed_form(&self, base_lr: f64, e: u64) -> f64 {
        base_lr * self.gamma.powi(self.milestones.partition_point(|&m| m <= e) as i32)
    }
}
epoch_counter!(MultiStepLR, base_lr);

impl MultiStepLR {
    /// The schedule bound to `opt` (see [`BoundScheduler`]): each parameter group's lr, from its lr
    /// in `opt` now, times `gamma` at each milestone. The first values are written into `opt` at
    /// once, as PyTorch's constructor does; [`MultiStepLR::new`] is the unbound form.
    ///
    /// # Panics
    /// As [`MultiStepLR::new`].
    #[track_caller]
    pub fn on<F: Float>(opt: &mut dyn Optimizer<F>, milestones: Vec<u64>, gamma: f64) -> BoundScheduler<Self> {
        MultiStepLR::new(opt.lr(), milestones, gamma).bind(opt)
    }
}

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
    fn closed_form(&self, base_lr: f64, e: u64) -> f64 {
        // A float power: `powi(e as i32)` wraps negative past 2^31 epochs.
        base_lr * self.gamma.powf(e as f64)
    }
}
epoch_counter!(ExponentialLR, base_lr);

impl ExponentialLR {
    /// The schedule bound to `opt` (see [`BoundScheduler`]): each parameter group's lr, from its lr
    /// in `opt` now, times `gamma` every epoch. The first values are written into `opt` at once, as
    /// PyTorch's constructor does; [`ExponentialLR::new`] is the unbound form.
    ///
    /// # Panics
    /// As [`ExponentialLR::new`].
    #[track_caller]
    pub fn on<F: Float>(opt: &mut dyn Optimizer<F>, gamma: f64) -> BoundScheduler<Self> {
        ExponentialLR::new(opt.lr(), gamma).bind(opt)
    }
}

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
    fn closed_form(&self, base_lr: f64, e: u64) -> f64 {
        cosine(base_lr, self.eta_min, e as f64, self.t_max as f64)
    }
}
epoch_counter!(CosineAnnealingLR, base_lr);

impl CosineAnnealingLR {
    /// The schedule bound to `opt` (see [`BoundScheduler`]): each parameter group's lr, from its lr
    /// in `opt` now, annealed to `eta_min` over `t_max` epochs. The first values are written into
    /// `opt` at once, as PyTorch's constructor does; [`CosineAnnealingLR::new`] is the unbound
    /// form.
    ///
    /// # Panics
    /// As [`CosineAnnealingLR::new`].
    #[track_caller]
    pub fn on<F: Float>(opt: &mut dyn Optimizer<F>, t_max: u64, eta_min: f64) -> BoundScheduler<Self> {
        CosineAnnealingLR::new(opt.lr(), t_max, eta_min).bind(opt)
    }
}

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
    fn closed_form(&self, base_lr: f64, e: u64) -> f64 {
        let (mut t_cur, mut t_i) = (e, self.t_0);
        while t_cur >= t_i {
            t_cur -= t_i;
            t_i *= self.t_mult;
        }
        cosine(base_lr, self.eta_min, t_cur as f64, t_i as f64)
    }
}
epoch_counter!(CosineAnnealingWarmRestarts, base_lr);

impl CosineAnnealingWarmRestarts {
    /// The schedule bound to `opt` (see [`BoundScheduler`]): each parameter group's lr, from its lr
    /// in `opt` now, annealed and restarted. The first values are written into `opt` at once, as
    /// PyTorch's constructor does; [`CosineAnnealingWarmRestarts::new`] is the unbound form.
    ///
    /// # Panics
    /// As [`CosineAnnealingWarmRestarts::new`].
    #[track_caller]
    pub fn on<F: Float>(opt: &mut dyn Optimizer<F>, t_0: u64, t_mult: u64, eta_min: f64) -> BoundScheduler<Self> {
        CosineAnnealingWarmRestarts::new(opt.lr(), t_0, t_mult, eta_min).bind(opt)
    }
}

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
    ///
    /// # Panics
    /// If `total_iters` is 0, `start_factor` is not in (0, 1] or `end_factor` not in [0, 1],
    /// as PyTorch raises.
    #[track_caller]
    pub fn new(base_lr: f64, start_factor: f64, end_factor: f64, total_iters: u64) -> Self {
        assert!(total_iters > 0, "LinearLR: total_iters must be positive");
        assert!(
            start_factor > 0.0 && start_factor <= 1.0,
            "LinearLR: start_factor must be in (0, 1], got {start_factor}"
        );
        assert!((0.0..=1.0).contains(&end_factor), "LinearLR: end_factor must be in [0, 1], got {end_factor}");
        LinearLR { base_lr, start_factor, end_factor, total_iters, last_epoch: 0 }
    }
    fn closed_form(&self, base_lr: f64, e: u64) -> f64 {
        let frac = e.min(self.total_iters) as f64 / self.total_iters as f64;
        base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)
    }
}
epoch_counter!(LinearLR, base_lr);

impl LinearLR {
    /// The schedule bound to `opt` (see [`BoundScheduler`]): each parameter group's lr, from its lr
    /// in `opt` now, scaled linearly from `start_factor` to `end_factor`. The first values are
    /// written into `opt` at once, as PyTorch's constructor does; [`LinearLR::new`] is the unbound
    /// form.
    ///
    /// # Panics
    /// As [`LinearLR::new`].
    #[track_caller]
    pub fn on<F: Float>(
        opt: &mut dyn Optimizer<F>,
        start_factor: f64,
        end_factor: f64,
        total_iters: u64,
    ) -> BoundScheduler<Self> {
        LinearLR::new(opt.lr(), start_factor, end_factor, total_iters).bind(opt)
    }
}

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

    /// The schedule bound to `opt` (see [`BoundScheduler`]), with PyTorch's defaults as
    /// [`OneCycleLR::new`]: every [`BoundScheduler::step`] writes the lr and, unless
    /// `cycle_momentum` is off, the momentum (SGD's `momentum`, Adam's `beta1`) into `opt`.
    /// To change an option, bind a changed schedule:
    /// `OneCycleLR { pct_start: 0.25, ..OneCycleLR::new(max_lr, total_steps) }.bind(&mut opt)`.
    ///
    /// # Panics
    /// As [`OneCycleLR::new`], and if the momentum is cycled and `opt`'s rule has none
    /// (Adagrad).
    #[track_caller]
    pub fn on<F: Float>(opt: &mut dyn Optimizer<F>, max_lr: f64, total_steps: u64) -> BoundScheduler<Self> {
        OneCycleLR::new(max_lr, total_steps).bind(opt)
    }

    /// Advances one step and returns the new lr, as [`LrScheduler::step`] does.
    ///
    /// Deprecated because the pattern `opt.set_lr(sched.step())` drops the momentum this
    /// schedule cycles. Bind the schedule instead ([`OneCycleLR::on`], then
    /// [`BoundScheduler::step`]), or follow the step with [`LrScheduler::apply_to`] and call it
    /// as `LrScheduler::step(&mut sched)`. Under `#![deny(warnings)]` the short pattern does
    /// not compile:
    ///
    /// ```compile_fail
    /// #![deny(deprecated)]
    /// use ferrograd_autograd::Param;
    /// use ferrograd_optim::{GroupOptions, OneCycleLR, Optim, Optimizer, Sgd};
    /// use ferrograd_tensor::Tensor;
    /// let w = Param::new(Tensor::<f32>::zeros(&[1]));
    /// let mut opt = Optim::new(Sgd { momentum: 0.9, ..Sgd::default() }, vec![w], GroupOptions::lr(0.1));
    /// let mut sched = OneCycleLR::new(0.1, 10);
    /// opt.set_lr(sched.step()); // the momentum would stay 0.9
    /// ```
    #[deprecated(note = "`opt.set_lr(sched.step())` drops OneCycleLR's momentum: bind it with \
                `OneCycleLR::on(&mut opt, ..)` and call `sched.step(&mut opt)`, or call \
                `LrScheduler::step(&mut sched)` then `sched.apply_to(&mut opt)`")]
    pub fn step(&mut self) -> f64 {
        LrScheduler::step(self)
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

    /// PyTorch's OneCycleLR with one `max_lr` gives every group the same lr: the base is not
    /// used.
    fn closed_form(&self, _base_lr: f64, e: u64) -> f64 {
        let initial = self.max_lr / self.div_factor;
        let min_lr = initial / self.final_div_factor;
        self.anneal(e, (initial, self.max_lr), (self.max_lr, min_lr))
    }
}

epoch_counter!(OneCycleLR, max_lr, momentum_at(self, epoch) {
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

    /// The sequence bound to `opt` (see [`BoundScheduler`]): each schedule scales every
    /// parameter group from the group's own lr taken from `opt` now. The base lr the built-in
    /// parts were built with is not used; a schedule of your own that does not implement
    /// [`LrScheduler::lr_from`] gives every group its own [`LrScheduler::lr_at`].
    ///
    /// ```
    /// use ferrograd_autograd::Param;
    /// use ferrograd_optim::{CosineAnnealingLR, GroupOptions, LinearLR, Optim, SequentialLR, Sgd};
    /// use ferrograd_tensor::Tensor;
    /// let w = Param::new(Tensor::<f32>::zeros(&[1]));
    /// let mut opt = Optim::new(Sgd::default(), vec![w], GroupOptions::lr(0.1));
    /// let (warmup, cosine) = (LinearLR::new(1.0, 0.1, 1.0, 3), CosineAnnealingLR::new(1.0, 10, 0.0));
    /// let mut sched = SequentialLR::on(&mut opt, vec![Box::new(warmup), Box::new(cosine)], vec![3]);
    /// let lrs: Vec<f64> = (0..3).map(|_| sched.step(&mut opt)).collect();
    /// assert!((lrs[2] - 0.1).abs() < 1e-12); // epoch 3: the cosine's start, at the optimizer's lr
    /// ```
    ///
    /// # Panics
    /// As [`SequentialLR::new`], and if a part cycles momentum that `opt`'s rule lacks.
    #[track_caller]
    pub fn on<F: Float>(
        opt: &mut dyn Optimizer<F>,
        schedulers: Vec<Box<dyn LrScheduler + Send>>,
        milestones: Vec<u64>,
    ) -> BoundScheduler<Self> {
        SequentialLR::new(schedulers, milestones).bind(opt)
    }
}

impl SequentialLR {
    /// The schedule in charge at epoch `e`, and `e` in its own count.
    fn at(&self, e: u64) -> (&(dyn LrScheduler + Send), u64) {
        let idx = self.milestones.partition_point(|&m| m <= e);
        let start = if idx == 0 { 0 } else { self.milestones[idx - 1] };
        (self.schedulers[idx].as_ref(), e - start)
    }
}

impl LrScheduler for SequentialLR {
    fn lr_at(&self, e: u64) -> f64 {
        let (s, e) = self.at(e);
        s.lr_at(e)
    }
    fn lr_from(&self, base_lr: f64, e: u64) -> f64 {
        let (s, e) = self.at(e);
        s.lr_from(base_lr, e)
    }
    fn epoch(&self) -> u64 {
        self.last_epoch
    }
    fn set_epoch(&mut self, epoch: u64) {
        self.last_epoch = epoch;
    }
    fn momentum_at(&self, e: u64) -> Option<f64> {
        let (s, e) = self.at(e);
        s.momentum_at(e)
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

    /// The chain bound to `opt` (see [`BoundScheduler`]): every parameter group's lr is its own
    /// lr, taken from `opt` now, times each schedule's factor. The base lr the built-in parts
    /// were built with is not used; a schedule of your own that does not implement
    /// [`LrScheduler::lr_from`] must be built with `opt`'s lr.
    ///
    /// # Panics
    /// As [`ChainedScheduler::new`] (with `opt`'s first lr as the base), and if a part cycles
    /// momentum that `opt`'s rule lacks.
    #[track_caller]
    pub fn on<F: Float>(
        opt: &mut dyn Optimizer<F>,
        schedulers: Vec<Box<dyn LrScheduler + Send>>,
    ) -> BoundScheduler<Self> {
        ChainedScheduler::new(opt.lr(), schedulers).bind(opt)
    }
}

impl LrScheduler for ChainedScheduler {
    fn lr_at(&self, e: u64) -> f64 {
        self.schedulers.iter().fold(self.base_lr, |lr, s| lr * (s.lr_at(e) / self.base_lr))
    }
    fn lr_from(&self, base_lr: f64, e: u64) -> f64 {
        if base_lr == 0.0 {
            return 0.0;
        }
        self.schedulers.iter().fold(base_lr, |lr, s| lr * (s.lr_from(base_lr, e) / base_lr))
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

/// The counters of a [`ReduceLROnPlateau`] ([`ReduceLROnPlateau::state`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlateauState {
    /// The lr of the unbound form (the first group's, when bound).
    pub lr: f64,
    /// The best metric seen (NaN before the first step).
    pub best: f64,
    /// Epochs since the last improvement.
    pub num_bad_epochs: u64,
    /// Epochs of cooldown left.
    pub cooldown_counter: u64,
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
    /// A scheduler starting at `lr` (the unbound form: [`ReduceLROnPlateau::step`] returns the
    /// lr for the loop to set).
    ///
    /// # Panics
    /// If `options.factor` is not in [0, 1) (PyTorch raises for a factor of 1 or more).
    #[track_caller]
    pub fn new(lr: f64, options: PlateauOptions) -> Self {
        let factor = options.factor;
        assert!((0.0..1.0).contains(&factor), "ReduceLROnPlateau: factor must be in [0, 1), got {factor}");
        ReduceLROnPlateau { options, lr, best: f64::NAN, num_bad_epochs: 0, cooldown_counter: 0 }
    }

    /// A scheduler for `opt`, starting at its lr: [`ReduceLROnPlateau::step_on`] reduces every
    /// parameter group's lr in `opt`, each from its own current value, as PyTorch does.
    ///
    /// ```
    /// use ferrograd_autograd::Param;
    /// use ferrograd_optim::{GroupOptions, Optim, Optimizer, PlateauOptions, ReduceLROnPlateau, Sgd};
    /// use ferrograd_tensor::Tensor;
    /// let (a, b) = (Param::new(Tensor::<f32>::zeros(&[1])), Param::new(Tensor::<f32>::zeros(&[1])));
    /// let mut opt = Optim::new(Sgd::default(), vec![a], GroupOptions::lr(0.1));
    /// opt.add_group(vec![b], GroupOptions::lr(0.02));
    /// let mut sched = ReduceLROnPlateau::on(&mut opt, PlateauOptions { patience: 1, ..PlateauOptions::default() });
    /// for val_loss in [1.0, 0.5, 0.6, 0.7] {
    ///     sched.step_on(val_loss, &mut opt);
    /// }
    /// let lrs = opt.group_lrs();
    /// assert!((lrs[0] - 0.01).abs() < 1e-12 && (lrs[1] - 0.002).abs() < 1e-12);
    /// ```
    ///
    /// # Panics
    /// As [`ReduceLROnPlateau::new`].
    #[track_caller]
    pub fn on<F: Float>(opt: &mut dyn Optimizer<F>, options: PlateauOptions) -> Self {
        ReduceLROnPlateau::new(opt.lr(), options)
    }

    /// Records this epoch's metric and, on a plateau, reduces each parameter group's lr in
    /// `opt` by `factor` (not below `min_lr`; a change smaller than `eps` is skipped). Returns
    /// the first group's lr.
    #[track_caller]
    pub fn step_on<F: Float>(&mut self, metric: f64, opt: &mut dyn Optimizer<F>) -> f64 {
        if self.observe(metric) {
            let o = &self.options;
            let lrs: Vec<f64> = opt
                .group_lrs()
                .into_iter()
                .map(|lr| {
                    let new_lr = (lr * o.factor).max(o.min_lr);
                    if lr - new_lr > o.eps {
                        new_lr
                    } else {
                        lr
                    }
                })
                .collect();
            opt.set_group_lrs(&lrs);
        }
        self.lr = opt.lr();
        self.lr
    }

    /// Records `metric`; true when the lr is to be reduced now.
    fn observe(&mut self, metric: f64) -> bool {
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
            self.cooldown_counter = self.options.cooldown;
            self.num_bad_epochs = 0;
            return true;
        }
        false
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
        if self.observe(metric) {
            let new_lr = (self.lr * self.options.factor).max(self.options.min_lr);
            if self.lr - new_lr > self.options.eps {
                self.lr = new_lr;
            }
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

    /// What the scheduler has counted so far, to save with a checkpoint (PyTorch's
    /// `state_dict()` without the options, which are configuration).
    ///
    /// ```
    /// use ferrograd_optim::{PlateauOptions, ReduceLROnPlateau};
    /// let options = PlateauOptions { patience: 2, ..PlateauOptions::default() };
    /// let mut sched = ReduceLROnPlateau::new(0.1, options.clone());
    /// for loss in [1.0, 1.1, 1.2] {
    ///     sched.step(loss);
    /// }
    /// let saved = sched.state();
    /// let mut resumed = ReduceLROnPlateau::new(0.1, options);
    /// resumed.set_state(saved);
    /// let (lr, lr_resumed) = (sched.step(1.3), resumed.step(1.3)); // the third bad epoch
    /// assert_eq!(lr, lr_resumed);
    /// assert!((lr - 0.01).abs() < 1e-15);
    /// ```
    pub fn state(&self) -> PlateauState {
        PlateauState {
            lr: self.lr,
            best: self.best,
            num_bad_epochs: self.num_bad_epochs,
            cooldown_counter: self.cooldown_counter,
        }
    }

    /// Restores a [`ReduceLROnPlateau::state`] (after loading a checkpoint).
    pub fn set_state(&mut self, state: PlateauState) {
        let PlateauState { lr, best, num_bad_epochs, cooldown_counter } = state;
        (self.lr, self.best, self.num_bad_epochs, self.cooldown_counter) = (lr, best, num_bad_epochs, cooldown_counter);
    }
}
