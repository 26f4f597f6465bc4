//! The [`Learner`]: epochs over a training and a validation [`DataSource`], built from the same
//! public pieces a hand-written loop uses (`Module::forward`, a loss, `backward`, `Grads`,
//! clipping, `Optimizer::step`), so leaving it for a loop of your own costs nothing.
//!
//! One optimizer step is:
//!
//! 1. for each batch of the accumulation group: the step function (the model's forward and the
//!    loss, or [`Learner::train_step`]), the metrics, `backward` of the loss divided by the
//!    group's size, gradients summed over the group;
//! 2. [`Learner::grad_sync`] (a hook to average gradients across processes after backward;
//!    `Learner::distributed` averages them inside the group's last backward instead);
//! 3. the callbacks' [`on_after_backward`](crate::Callback::on_after_backward), the NaN guard
//!    first: it stops (or skips) a step whose loss or gradient is not finite;
//! 4. clipping ([`Learner::clip_grad_norm`] / [`Learner::clip_grad_value`]) and the update;
//! 5. the callbacks' [`on_step_end`](crate::Callback::on_step_end) (per-step schedules, loggers),
//!    and every [`Learner::save_every`] steps the run directory.
//!
//! After each epoch: validation in eval mode under no-grad, the epoch's logs, the callbacks'
//! [`on_epoch_end`](crate::Callback::on_epoch_end), and the run directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ferrograd_autograd::{no_grad, Grads, Param, Var};
use ferrograd_nn::checkpoint::{load_any_tensors, save_any_tensors, CheckpointElement};
use ferrograd_nn::{AnyTensor, Module};
use ferrograd_optim::{clip_grad_norm, clip_grad_value, Optimizer};
use ferrograd_tensor::{Element, Float, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::callback::EpochEndFn;
use crate::logs::{from_number, number};
use crate::metric::Mean;
use crate::{
    Batch, Callback, CallbackState, Context, Control, DataSource, EpochLogs, History, Metric, StepAction, StepLogs,
    TerminateOnNaN, TrainError,
};

/// The file of a run directory that holds everything a resumed run needs.
pub const RUN_STATE_FILE: &str = "run.safetensors";

const RUN_FORMAT: &str = "ferrograd-train run";
const RUN_VERSION: u64 = 1;

/// What a step function returns: the loss to minimise, the output the metrics read, and any
/// values to log (averaged over the epoch, sample-weighted).
pub struct StepOutput<F: Float = f32> {
    /// The scalar loss; the Learner calls `backward` on it (training only).
    pub loss: Var<F>,
    /// The model's output for the metrics (`[batch, classes]` logits for accuracy).
    pub output: Option<Tensor<F>>,
    /// Extra values to log under their names (a distillation step's soft and hard losses).
    pub values: Vec<(String, f64)>,
}

impl<F: Float> StepOutput<F> {
    /// A step that only has a loss.
    pub fn new(loss: Var<F>) -> Self {
        StepOutput { loss, output: None, values: Vec::new() }
    }

    /// Sets the output the metrics read.
    pub fn output(mut self, output: Tensor<F>) -> Self {
        self.output = Some(output);
        self
    }

    /// Adds a value to log.
    pub fn log(mut self, name: impl Into<String>, value: f64) -> Self {
        self.values.push((name.into(), value));
        self
    }
}

/// What a step function sees besides its batch.
pub struct StepContext<'s, F: Float = f32> {
    /// The model.
    pub model: &'s dyn Module<F>,
    /// The epoch, counted from 0.
    pub epoch: usize,
    /// The batch within the epoch, counted from 0.
    pub batch: usize,
    /// Optimizer steps taken so far in the run.
    pub global_step: u64,
    /// Training (`true`) or validation.
    pub training: bool,
    seed: u64,
    rng: Option<StdRng>,
}

impl<F: Float> StepContext<'_, F> {
    /// A random generator for this batch (augmentation, noise), seeded from the Learner's seed,
    /// the epoch and the batch: the same numbers in a resumed run as in an uninterrupted one,
    /// with no generator state to save.
    pub fn rng(&mut self) -> &mut StdRng {
        let (seed, epoch, batch, training) = (self.seed, self.epoch as u64, self.batch as u64, self.training);
        self.rng.get_or_insert_with(|| {
            let mixed = splitmix(splitmix(splitmix(seed) ^ epoch) ^ batch) ^ u64::from(!training);
            StdRng::seed_from_u64(mixed)
        })
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How gradients are clipped before the update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clip {
    /// [`clip_grad_norm`] with this maximum norm and norm type.
    Norm {
        /// The largest joint norm allowed.
        max_norm: f64,
        /// The p of the norm (2 for Euclidean, `f64::INFINITY` for the largest magnitude).
        norm_type: f64,
    },
    /// [`clip_grad_value`]: every element clamped to `[-v, v]`.
    Value(f64),
}

type LossFn<'a, F, Y> = Box<dyn Fn(&Var<F>, &Tensor<Y>) -> Var<F> + 'a>;
type StepFn<'a, F, Y> = Box<dyn FnMut(&mut StepContext<'_, F>, &Batch<F, Y>) -> StepOutput<F> + 'a>;
type GradSync<'a, F> = Box<dyn FnMut(&mut Grads<F>, &[(String, Param<F>)]) + 'a>;
type LogsSync<'a> = Box<dyn FnMut(&mut EpochLogs) + 'a>;
/// Backward of a batch's loss, adding its gradients to the group's (the `bool`: whether the batch
/// ends the accumulation group, when data-parallel training averages them during backward).
type GradBackward<'a, F> = Box<dyn FnMut(&Var<F>, &mut Grads<F>, bool) + 'a>;

/// Trains a model: epochs over a training and a validation [`DataSource`], with metrics,
/// callbacks, accumulation, clipping, a NaN guard and resumable run directories.
///
/// ```
/// use ferrograd_nn::data::{DataLoader, TensorDataset};
/// use ferrograd_nn::layers::{Linear, ReLU, Sequential};
/// use ferrograd_nn::loss::cross_entropy;
/// use ferrograd_nn::Module;
/// use ferrograd_optim::{Adam, CosineAnnealingLR, GroupOptions, Optim};
/// use ferrograd_tensor::Tensor;
/// use ferrograd_train::{Accuracy, EarlyStopping, Learner, LrSchedule};
/// use rand::{rngs::StdRng, SeedableRng};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let x = Tensor::<f32>::rand_normal(&[256, 4], 0.0, 1.0, &mut rng);
/// let y = x.narrow(1, 0, 1).gt_scalar(0.0).reshape(&[256]).cast::<i64>(); // class: the sign of x0
/// let train = DataLoader::new(TensorDataset::new(x.clone(), y.clone()), 32).shuffle(0);
/// let val = DataLoader::new(TensorDataset::new(x, y), 128);
/// let model = Sequential::new().add(Linear::new(4, 16, &mut rng)).add(ReLU).add(Linear::new(16, 2, &mut rng));
/// let opt = Optim::new(Adam::default(), model.parameters(), GroupOptions::lr(1e-2));
/// let mut learner = Learner::new(&model, opt, cross_entropy)
///     .metric(Accuracy::new())
///     .callback(LrSchedule::per_epoch(CosineAnnealingLR::new(1e-2, 20, 0.0)))
///     .callback(EarlyStopping::new("val_loss").patience(3).restore_best_weights(true))
///     .quiet();
/// let history = learner.fit(&train, Some(&val), 20)?;
/// assert!(history.last().unwrap().get("val_accuracy").unwrap() > 0.9);
/// # Ok::<(), ferrograd_train::TrainError>(())
/// ```
pub struct Learner<'a, F: Float = f32, Y: Element = i64> {
    model: &'a dyn Module<F>,
    optimizer: Box<dyn Optimizer<F> + 'a>,
    loss_fn: LossFn<'a, F, Y>,
    train_step: Option<StepFn<'a, F, Y>>,
    eval_step: Option<StepFn<'a, F, Y>>,
    metrics: Vec<Box<dyn Metric<F, Y> + 'a>>,
    val_metrics: Vec<Box<dyn Metric<F, Y> + 'a>>,
    guard: Option<TerminateOnNaN>,
    callbacks: Vec<Box<dyn Callback<F> + 'a>>,
    clip: Option<Clip>,
    accumulate: usize,
    grad_sync: Option<GradSync<'a, F>>,
    grad_backward: Option<GradBackward<'a, F>>,
    logs_sync: Option<LogsSync<'a>>,
    rank: usize,
    world_size: usize,
    run_dir: Option<PathBuf>,
    resume: bool,
    save_every: Option<u64>,
    seed: u64,
    echo: bool,
    history: History,
    resumed: bool,
}

/// Where a run is: the next batch to train and the steps taken.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Position {
    epoch: usize,
    batch: usize,
    global_step: u64,
}

/// The running figures of an unfinished epoch.
#[derive(Clone, Debug, Default)]
struct EpochState {
    loss: Mean,
    values: Vec<(String, Mean)>,
    skipped: u64,
    lr: f64,
    seconds: f64,
}

impl EpochState {
    fn add_value(&mut self, name: &str, value: f64, weight: usize) {
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some((_, m)) => m.add(value, weight),
            None => {
                let mut m = Mean::default();
                m.add(value, weight);
                self.values.push((name.to_string(), m));
            }
        }
    }
}

/// Builds the hooks' [`Context`] from the Learner's fields (a macro, so the borrows stay
/// field by field and the callbacks can be borrowed beside it).
macro_rules! context {
    ($s:ident, $pos:expr, $epochs:expr, $batches:expr, $resumed:expr) => {
        Context {
            model: $s.model,
            optimizer: &mut *$s.optimizer,
            epoch: $pos.epoch,
            epochs: $epochs,
            batch: $pos.batch,
            batches: $batches,
            global_step: $pos.global_step,
            rank: $s.rank,
            world_size: $s.world_size,
            resumed: $resumed,
            history: &$s.history.epochs,
            messages: &mut $s.history.messages,
            echo: $s.echo && $s.rank == 0,
        }
    };
}

/// The NaN guard (if any) then the callbacks, without those a non-main process skips.
fn hooks<'s, 'a, F: Float>(
    guard: &'s mut Option<TerminateOnNaN>,
    callbacks: &'s mut [Box<dyn Callback<F> + 'a>],
    rank: usize,
) -> impl Iterator<Item = &'s mut (dyn Callback<F> + 'a)> {
    guard
        .as_mut()
        .map(|g| g as &mut (dyn Callback<F> + 'a))
        .into_iter()
        .chain(callbacks.iter_mut().map(|c| &mut **c))
        .filter(move |c| rank == 0 || !c.main_process_only())
}

impl<'a, F: Float + CheckpointElement, Y: Element> Learner<'a, F, Y> {
    /// A Learner for `model`, updated by `optimizer`, minimising `loss(output, targets)`, with
    /// the default [`TerminateOnNaN`] guard and nothing else.
    pub fn new(
        model: &'a dyn Module<F>,
        optimizer: impl Optimizer<F> + 'a,
        loss: impl Fn(&Var<F>, &Tensor<Y>) -> Var<F> + 'a,
    ) -> Self {
        Learner {
            model,
            optimizer: Box::new(optimizer),
            loss_fn: Box::new(loss),
            train_step: None,
            eval_step: None,
            metrics: Vec::new(),
            val_metrics: Vec::new(),
            guard: Some(TerminateOnNaN::new()),
            callbacks: Vec::new(),
            clip: None,
            accumulate: 1,
            grad_sync: None,
            grad_backward: None,
            logs_sync: None,
            rank: 0,
            world_size: 1,
            run_dir: None,
            resume: false,
            save_every: None,
            seed: 0,
            echo: true,
            history: History::default(),
            resumed: false,
        }
    }

    /// Adds a metric, computed over training (as `name`) and validation (as `val_name`).
    pub fn metric(mut self, metric: impl Metric<F, Y> + Clone + 'a) -> Self {
        self.val_metrics.push(Box::new(metric.clone()));
        self.metrics.push(Box::new(metric));
        self
    }

    /// Adds a callback; callbacks run in the order they were added, after the NaN guard.
    pub fn callback(mut self, callback: impl Callback<F> + 'a) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Calls `f` with the context and the logs at every epoch's end (printing a line per epoch,
    /// say), after the callbacks added before it.
    pub fn on_epoch_end(self, f: impl FnMut(&mut Context<'_, F>, &EpochLogs) + 'a) -> Self {
        self.callback(EpochEndFn(f))
    }

    /// Replaces the NaN guard (to skip rather than stop, or to change the divergence factor).
    pub fn terminate_on_nan(mut self, guard: TerminateOnNaN) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Removes the NaN guard: non-finite losses and gradients reach the optimizer unchecked.
    pub fn without_nan_guard(mut self) -> Self {
        self.guard = None;
        self
    }

    /// Clips the gradients' joint 2-norm to `max_norm` before each update.
    pub fn clip_grad_norm(mut self, max_norm: f64) -> Self {
        self.clip = Some(Clip::Norm { max_norm, norm_type: 2.0 });
        self
    }

    /// Clips every gradient element to `[-clip, clip]` before each update.
    pub fn clip_grad_value(mut self, clip: f64) -> Self {
        self.clip = Some(Clip::Value(clip));
        self
    }

    /// Sets the clipping (or turns it off with `None`).
    pub fn clip(mut self, clip: Option<Clip>) -> Self {
        self.clip = clip;
        self
    }

    /// Sums the gradients of `batches` consecutive batches (each loss divided by the group's
    /// size, so the step sees the mean) before each update; an epoch's last group may be
    /// shorter. 1 (the default) updates after every batch.
    pub fn accumulate(mut self, batches: usize) -> Self {
        self.accumulate = batches;
        self
    }

    /// Replaces the training step: the function gets the batch and returns the loss (and the
    /// output for the metrics, and values to log). The Learner still does backward,
    /// accumulation, the guard, clipping and the update. Validation keeps the standard step
    /// (the model and the loss) unless [`Learner::eval_step`] replaces it too.
    pub fn train_step(mut self, step: impl FnMut(&mut StepContext<'_, F>, &Batch<F, Y>) -> StepOutput<F> + 'a) -> Self {
        self.train_step = Some(Box::new(step));
        self
    }

    /// Replaces the validation step (run in eval mode, under no-grad).
    pub fn eval_step(mut self, step: impl FnMut(&mut StepContext<'_, F>, &Batch<F, Y>) -> StepOutput<F> + 'a) -> Self {
        self.eval_step = Some(Box::new(step));
        self
    }

    /// Called with every step's gradients (summed over accumulation) before the guard, clipping
    /// and the update: where data-parallel training averages them across processes.
    pub fn grad_sync(mut self, sync: impl FnMut(&mut Grads<F>, &[(String, Param<F>)]) + 'a) -> Self {
        self.grad_sync = Some(Box::new(sync));
        self
    }

    /// Replaces the Learner's `backward` of each batch's loss (and the summing over an
    /// accumulation group) by `backward`, which adds the loss's gradients to the group's and is
    /// told whether the batch ends the group: DDP averages the gradients during backward there.
    #[cfg(feature = "mpi")]
    pub(crate) fn grad_backward(mut self, backward: impl FnMut(&Var<F>, &mut Grads<F>, bool) + 'a) -> Self {
        self.grad_backward = Some(Box::new(backward));
        self
    }

    /// Called with each epoch's logs before any callback sees them: where data-parallel
    /// training averages the figures of every process's shard.
    pub fn logs_sync(mut self, sync: impl FnMut(&mut EpochLogs) + 'a) -> Self {
        self.logs_sync = Some(Box::new(sync));
        self
    }

    /// This process's place in a data-parallel run: callbacks that write files or draw
    /// ([`Callback::main_process_only`]) and the run directory's saves happen on rank 0 only.
    pub fn rank(mut self, rank: usize, world_size: usize) -> Self {
        self.rank = rank;
        self.world_size = world_size;
        self
    }

    /// Keeps the run's state in `dir` ([`RUN_STATE_FILE`]: model, optimizer, callbacks, data
    /// position, history) after every epoch and every [`Learner::save_every`] steps, so
    /// [`Learner::resume`] can continue it after a crash.
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// Continues the run saved in the run directory, if there is one: the restarted run ends
    /// with the same weights, bit for bit, as one that was never interrupted (for models whose
    /// randomness comes from [`StepContext::rng`]; a `Dropout` layer's own generator is not part
    /// of the saved state). Without it, a run directory that already holds a run is an error.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Also saves the run directory every `steps` optimizer steps (not only at epoch ends).
    pub fn save_every(mut self, steps: u64) -> Self {
        self.save_every = (steps > 0).then_some(steps);
        self
    }

    /// The seed of [`StepContext::rng`] (0 by default).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Keeps messages (early stopping, skipped steps) in the history without printing them.
    pub fn quiet(mut self) -> Self {
        self.echo = false;
        self
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer<F> {
        &*self.optimizer
    }

    /// The optimizer, to change it between runs.
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer<F> {
        &mut *self.optimizer
    }

    /// The history of the last [`Learner::fit`].
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Trains up to epoch `epochs` (exclusive; a resumed run starts where it stopped), validating
    /// on `val` after each epoch, and returns the history.
    ///
    /// # Errors
    /// A non-finite or diverging loss or gradient ([`TrainError::NonFinite`],
    /// [`TrainError::Diverged`]), a callback watching a log that does not exist, a run
    /// directory that cannot be written or does not fit this Learner.
    pub fn fit(
        &mut self,
        train: &dyn DataSource<F, Y>,
        val: Option<&dyn DataSource<F, Y>>,
        epochs: usize,
    ) -> Result<History, TrainError> {
        if self.accumulate == 0 {
            return Err(TrainError::Config("Learner::accumulate: the number of batches must be at least 1".into()));
        }
        let params = self.model.named_parameters();
        let plain: Vec<Param<F>> = params.iter().map(|(_, p)| p.clone()).collect();
        self.history = History::default();
        let mut pos = Position::default();
        let mut partial: Option<EpochState> = None;
        let resumed = match self.restore()? {
            Some((p, epoch_state)) => {
                pos = p;
                partial = epoch_state;
                true
            }
            None => false,
        };
        self.resumed = resumed;
        let n0 = train.epoch_len(pos.epoch as u64);
        for cb in hooks(&mut self.guard, &mut self.callbacks, self.rank) {
            cb.on_train_begin(&mut context!(self, pos, epochs, n0, resumed))?;
        }
        while pos.epoch < epochs && self.history.stopped_early.is_none() {
            let n = train.epoch_len(pos.epoch as u64);
            let mut state = match partial.take() {
                Some(s) if pos.batch > 0 => s,
                _ => {
                    pos.batch = 0;
                    self.metrics.iter_mut().for_each(|m| m.reset());
                    EpochState::default()
                }
            };
            for cb in hooks(&mut self.guard, &mut self.callbacks, self.rank) {
                cb.on_epoch_begin(&mut context!(self, pos, epochs, n, resumed))?;
            }
            if pos.batch == 0 {
                state.lr = self.optimizer.lr();
            }
            self.train_epoch(train, &mut pos, &mut state, &params, &plain, epochs, resumed)?;
            let mut logs = EpochLogs { epoch: pos.epoch, values: Vec::new() };
            logs.set("loss", state.loss.value());
            for m in &self.metrics {
                logs.set(m.name(), m.compute());
            }
            for (name, m) in &state.values {
                logs.set(name.clone(), m.value());
            }
            if state.skipped > 0 {
                logs.set("skipped_steps", state.skipped as f64);
            }
            let val_started = Instant::now();
            if let Some(val) = val {
                for (name, v) in self.run_eval(val, pos.epoch)?.values {
                    logs.set(format!("val_{name}"), v);
                }
            }
            logs.set("lr", state.lr);
            logs.set("seconds", state.seconds);
            if val.is_some() {
                logs.set("val_seconds", val_started.elapsed().as_secs_f64());
            }
            if let Some(sync) = &mut self.logs_sync {
                sync(&mut logs);
            }
            self.history.epochs.push(logs.clone());
            let mut stop = false;
            for cb in hooks(&mut self.guard, &mut self.callbacks, self.rank) {
                stop |= cb.on_epoch_end(&mut context!(self, pos, epochs, n, resumed), &logs)? == Control::Stop;
            }
            if stop {
                self.history.stopped_early = Some(pos.epoch);
            }
            pos = Position { epoch: pos.epoch + 1, batch: 0, global_step: pos.global_step };
            self.save(pos, None, epochs)?;
        }
        let history = self.history.clone();
        let n = train.epoch_len(pos.epoch.min(epochs.saturating_sub(1)) as u64);
        for cb in hooks(&mut self.guard, &mut self.callbacks, self.rank) {
            cb.on_train_end(&mut context!(self, pos, epochs, n, resumed), &history)?;
        }
        Ok(self.history.clone())
    }

    /// The batches of one epoch from `pos.batch` on.
    #[allow(clippy::too_many_arguments)]
    fn train_epoch(
        &mut self,
        train: &dyn DataSource<F, Y>,
        pos: &mut Position,
        state: &mut EpochState,
        params: &[(String, Param<F>)],
        plain: &[Param<F>],
        epochs: usize,
        resumed: bool,
    ) -> Result<(), TrainError> {
        let n = train.epoch_len(pos.epoch as u64);
        let k = self.accumulate;
        let started = Instant::now();
        let seconds_before = state.seconds;
        self.model.train(true);
        let mut group: Option<Grads<F>> = None;
        let (mut group_loss, mut group_values) = (0.0f64, Vec::<(String, f64)>::new());
        for batch in train.batches(pos.epoch as u64, pos.batch) {
            let b = pos.batch;
            let group_start = b / k * k;
            let group_len = (group_start + k).min(n) - group_start;
            let mut sctx = StepContext {
                model: self.model,
                epoch: pos.epoch,
                batch: b,
                global_step: pos.global_step,
                training: true,
                seed: self.seed,
                rng: None,
            };
            let out = match &mut self.train_step {
                Some(step) => step(&mut sctx, &batch),
                None => standard_step(self.model, &self.loss_fn, &batch),
            };
            let loss = out.loss.item().to_f64();
            let scaled =
                if group_len == 1 { out.loss } else { out.loss.mul_scalar(F::from_f64(1.0 / group_len as f64)) };
            match &mut self.grad_backward {
                Some(backward) => {
                    let mut acc = group.take().unwrap_or_default();
                    backward(&scaled, &mut acc, b + 1 == group_start + group_len);
                    group = Some(acc);
                }
                None => {
                    let grads = scaled.backward();
                    group = Some(match group.take() {
                        None => grads,
                        Some(acc) => add_grads(acc, grads),
                    });
                }
            }
            state.loss.add(loss, batch.len());
            group_loss += loss / group_len as f64;
            for (name, v) in &out.values {
                state.add_value(name, *v, batch.len());
                match group_values.iter_mut().find(|(n, _)| n == name) {
                    Some((_, g)) => *g += v / group_len as f64,
                    None => group_values.push((name.clone(), v / group_len as f64)),
                }
            }
            feed_metrics(&mut self.metrics, out.output.as_ref(), &batch.targets)?;
            pos.batch = b + 1;
            if pos.batch < group_start + group_len {
                continue;
            }
            let mut grads = group.take().expect("a group has at least one batch");
            if let Some(sync) = &mut self.grad_sync {
                sync(&mut grads, params);
            }
            let mut action = StepAction::Apply;
            for cb in hooks(&mut self.guard, &mut self.callbacks, self.rank) {
                let ctx = &mut context!(self, pos, epochs, n, resumed);
                if cb.on_after_backward(ctx, group_loss, &mut grads, params)? == StepAction::Skip {
                    action = StepAction::Skip;
                    break;
                }
            }
            let lr = self.optimizer.lr();
            match action {
                StepAction::Apply => {
                    match self.clip {
                        Some(Clip::Norm { max_norm, norm_type }) => {
                            clip_grad_norm(&mut grads, plain, max_norm, norm_type);
                        }
                        Some(Clip::Value(v)) => clip_grad_value(&mut grads, plain, v),
                        None => {}
                    }
                    self.optimizer.step(&grads);
                }
                StepAction::Skip => state.skipped += 1,
            }
            drop(grads);
            pos.global_step += 1;
            let step = StepLogs {
                global_step: pos.global_step,
                epoch: pos.epoch,
                batch: pos.batch,
                batches: n,
                loss: group_loss,
                lr,
                running_loss: state.loss.value(),
                values: std::mem::take(&mut group_values),
            };
            group_loss = 0.0;
            for cb in hooks(&mut self.guard, &mut self.callbacks, self.rank) {
                cb.on_step_end(&mut context!(self, pos, epochs, n, resumed), &step)?;
            }
            if pos.batch < n && self.save_every.is_some_and(|s| pos.global_step.is_multiple_of(s)) {
                state.seconds = seconds_before + started.elapsed().as_secs_f64();
                self.save(*pos, Some(state), epochs)?;
            }
        }
        state.seconds = seconds_before + started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Runs the evaluation step over `data` in eval mode under no-grad; returns the loss and
    /// the metrics (named without the `val_` prefix).
    ///
    /// # Errors
    /// A step that returns no output while metrics are set.
    pub fn evaluate(&mut self, data: &dyn DataSource<F, Y>) -> Result<EpochLogs, TrainError> {
        self.run_eval(data, 0)
    }

    fn run_eval(&mut self, data: &dyn DataSource<F, Y>, epoch: usize) -> Result<EpochLogs, TrainError> {
        self.val_metrics.iter_mut().for_each(|m| m.reset());
        let mut loss = Mean::default();
        let mut values = EpochState::default();
        self.model.eval();
        let result = no_grad(|| -> Result<(), TrainError> {
            for (b, batch) in data.batches(epoch as u64, 0).enumerate() {
                let mut sctx = StepContext {
                    model: self.model,
                    epoch,
                    batch: b,
                    global_step: 0,
                    training: false,
                    seed: self.seed,
                    rng: None,
                };
                let out = match &mut self.eval_step {
                    Some(step) => step(&mut sctx, &batch),
                    None => standard_step(self.model, &self.loss_fn, &batch),
                };
                loss.add(out.loss.item().to_f64(), batch.len());
                for (name, v) in &out.values {
                    values.add_value(name, *v, batch.len());
                }
                feed_metrics(&mut self.val_metrics, out.output.as_ref(), &batch.targets)?;
            }
            Ok(())
        });
        self.model.train(true);
        result?;
        let mut logs = EpochLogs { epoch, values: vec![("loss".into(), loss.value())] };
        for m in &self.val_metrics {
            logs.set(m.name(), m.compute());
        }
        for (name, m) in &values.values {
            logs.set(name.clone(), m.value());
        }
        Ok(logs)
    }

    fn state_path(&self) -> Option<PathBuf> {
        self.run_dir.as_ref().map(|d| d.join(RUN_STATE_FILE))
    }

    /// Writes the run directory's state file (rank 0 only): `model.*`, `optimizer.*` and
    /// `callback.{i}.*` tensors, and the rest as JSON in the `learner` tensor of bytes.
    fn save(&mut self, pos: Position, partial: Option<&EpochState>, epochs: usize) -> Result<(), TrainError> {
        let Some(path) = self.state_path() else { return Ok(()) };
        if self.rank != 0 {
            return Ok(());
        }
        let dir = path.parent().expect("a file in the run directory");
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        for cb in hooks(&mut self.guard, &mut self.callbacks, self.rank) {
            cb.on_save(&mut context!(self, pos, epochs, 0, self.resumed))?;
        }
        let mut tensors: BTreeMap<String, AnyTensor> = BTreeMap::new();
        for (k, t) in self.model.state_dict() {
            tensors.insert(format!("model.{k}"), t.into());
        }
        for (k, t) in self.optimizer.state_dict() {
            tensors.insert(format!("optimizer.{k}"), t.into());
        }
        let mut callbacks = Vec::new();
        for (i, cb) in hooks(&mut self.guard, &mut self.callbacks, 0).enumerate() {
            let state = cb.state();
            for (k, t) in state.tensors {
                tensors.insert(format!("callback.{i}.{k}"), t.into());
            }
            callbacks.push(json!({ "name": cb.name(), "state": state.json }));
        }
        let epoch_state = partial.map(|s| {
            json!({
                "loss": s.loss.state().map(number),
                "metrics": self.metrics.iter().map(|m| m.state().into_iter().map(number).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "values": s.values.iter().map(|(n, m)| json!([n, m.state().map(number)])).collect::<Vec<_>>(),
                "skipped": s.skipped,
                "lr": number(s.lr),
                "seconds": s.seconds,
            })
        });
        let learner = json!({
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "epoch": pos.epoch,
            "batch": pos.batch,
            "global_step": pos.global_step,
            "epochs": epochs,
            "seed": self.seed,
            "accumulate": self.accumulate,
            "history": self.history.to_json(),
            "epoch_state": epoch_state,
            "callbacks": callbacks,
        });
        let bytes = learner.to_string().into_bytes();
        let len = bytes.len();
        tensors.insert("learner".into(), AnyTensor::U8(Tensor::from_vec(bytes, &[len])));
        save_any_tensors(&path, &tensors)?;
        Ok(())
    }

    /// Loads the run directory's state if there is one (and `resume` is set).
    fn restore(&mut self) -> Result<Option<(Position, Option<EpochState>)>, TrainError> {
        let Some(path) = self.state_path() else { return Ok(None) };
        if !path.exists() {
            return Ok(None);
        }
        if !self.resume {
            return Err(TrainError::format(
                &path,
                "the run directory already holds a run: resume it (Learner::resume(true)) or choose another directory",
            ));
        }
        let bad = |problem: String| TrainError::format(&path, problem);
        let mut all = load_any_tensors(&path)?;
        let learner = match all.remove("learner") {
            Some(AnyTensor::U8(t)) => t.to_vec(),
            _ => return Err(bad("no `learner` state (not a ferrograd-train run file)".into())),
        };
        let j: Value =
            serde_json::from_slice(&learner).map_err(|e| bad(format!("the learner state is not JSON: {e}")))?;
        if j.get("format").and_then(Value::as_str) != Some(RUN_FORMAT)
            || j.get("version").and_then(Value::as_u64) != Some(RUN_VERSION)
        {
            return Err(bad(format!("not a version {RUN_VERSION} run of ferrograd-train")));
        }
        let int = |key: &str| j.get(key).and_then(Value::as_u64).ok_or_else(|| bad(format!("no `{key}`")));
        let pos =
            Position { epoch: int("epoch")? as usize, batch: int("batch")? as usize, global_step: int("global_step")? };
        let accumulate = int("accumulate")? as usize;
        if accumulate != self.accumulate {
            return Err(bad(format!(
                "the run accumulated {accumulate} batches per step, this Learner {}",
                self.accumulate
            )));
        }
        let history = j.get("history").and_then(History::from_json).ok_or_else(|| bad("bad `history`".into()))?;
        let (mut model, mut optim, mut cb_tensors) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for (name, t) in all {
            let typed = |t: AnyTensor| t.into_typed::<F>().ok_or_else(|| bad(format!("`{name}` has another dtype")));
            if let Some(k) = name.strip_prefix("model.") {
                model.insert(k.to_string(), typed(t)?);
            } else if let Some(k) = name.strip_prefix("optimizer.") {
                optim.insert(k.to_string(), typed(t)?);
            } else if let Some(rest) = name.strip_prefix("callback.") {
                let (i, k) = rest.split_once('.').ok_or_else(|| bad(format!("bad tensor name `{name}`")))?;
                let i: usize = i.parse().map_err(|_| bad(format!("bad tensor name `{name}`")))?;
                cb_tensors.entry(i).or_insert_with(BTreeMap::new).insert(k.to_string(), typed(t)?);
            } else {
                return Err(bad(format!("unexpected tensor `{name}`")));
            }
        }
        let saved = j.get("callbacks").and_then(Value::as_array).ok_or_else(|| bad("no `callbacks`".into()))?;
        let ours: Vec<String> = hooks(&mut self.guard, &mut self.callbacks, 0).map(|c| c.name()).collect();
        let theirs: Vec<&str> = saved.iter().map(|c| c.get("name").and_then(Value::as_str).unwrap_or("?")).collect();
        if ours != theirs {
            return Err(bad(format!("the run had callbacks {theirs:?}, this Learner has {ours:?}")));
        }
        let epoch_state = match j.get("epoch_state") {
            Some(Value::Null) | None => None,
            Some(s) => Some(self.epoch_state_from_json(s).ok_or_else(|| bad("bad `epoch_state`".into()))?),
        };
        self.model.load_state_dict(&model)?;
        self.optimizer.load_state_dict(&optim)?;
        for (i, cb) in hooks(&mut self.guard, &mut self.callbacks, 0).enumerate() {
            let json = saved[i].get("state").cloned().unwrap_or(Value::Null);
            let tensors = cb_tensors.remove(&i).unwrap_or_default();
            let name = cb.name();
            cb.load_state(CallbackState { json, tensors })
                .map_err(|problem| bad(format!("callback {name}: {problem}")))?;
        }
        self.history = history;
        Ok(Some((pos, epoch_state)))
    }

    fn epoch_state_from_json(&mut self, s: &Value) -> Option<EpochState> {
        let pair = |v: &Value| -> Option<[f64; 2]> { Some([from_number(v.get(0)?)?, from_number(v.get(1)?)?]) };
        let metrics = s.get("metrics")?.as_array()?;
        if metrics.len() != self.metrics.len() {
            return None;
        }
        for (m, st) in self.metrics.iter_mut().zip(metrics) {
            let st: Vec<f64> = st.as_array()?.iter().map(from_number).collect::<Option<_>>()?;
            if !m.load_state(&st) {
                return None;
            }
        }
        let values = s
            .get("values")?
            .as_array()?
            .iter()
            .map(|v| Some((v.get(0)?.as_str()?.to_string(), Mean::from_state(pair(v.get(1)?)?))))
            .collect::<Option<Vec<_>>>()?;
        Some(EpochState {
            loss: Mean::from_state(pair(s.get("loss")?)?),
            values,
            skipped: s.get("skipped")?.as_u64()?,
            lr: from_number(s.get("lr")?)?,
            seconds: s.get("seconds")?.as_f64()?,
        })
    }
}

/// The model's forward pass on the inputs and the loss against the targets.
fn standard_step<F: Float, Y: Element>(
    model: &dyn Module<F>,
    loss_fn: &LossFn<'_, F, Y>,
    batch: &Batch<F, Y>,
) -> StepOutput<F> {
    let output = model.forward(&Var::constant(batch.inputs.clone()));
    let loss = loss_fn(&output, &batch.targets);
    StepOutput { loss, output: Some(output.into_data()), values: Vec::new() }
}

fn feed_metrics<F: Float, Y: Element>(
    metrics: &mut [Box<dyn Metric<F, Y> + '_>],
    output: Option<&Tensor<F>>,
    targets: &Tensor<Y>,
) -> Result<(), TrainError> {
    if metrics.is_empty() {
        return Ok(());
    }
    let output = output.ok_or_else(|| {
        let names: Vec<&str> = metrics.iter().map(|m| m.name()).collect();
        TrainError::Config(format!(
            "the step function returned no output, so the metrics {names:?} cannot be computed \
             (return StepOutput::new(loss).output(logits))"
        ))
    })?;
    for m in metrics {
        m.update(output, targets);
    }
    Ok(())
}

/// `a + b`, parameter by parameter (gradient accumulation).
fn add_grads<F: Float>(mut a: Grads<F>, b: Grads<F>) -> Grads<F> {
    let ids: Vec<_> = b.iter().map(|(id, _)| id).collect();
    for id in ids {
        let g = b.get_by_id(id).expect("listed above");
        // Not `add_`: a gradient may be a broadcast view, which cannot be written in place.
        let sum = match a.remove(id) {
            Some(acc) => &acc + g,
            None => g.clone(),
        };
        a.insert(id, sum);
    }
    a
}

/// Whether `dir` holds a run a [`Learner`] can resume.
pub fn has_run_state(dir: impl AsRef<Path>) -> bool {
    dir.as_ref().join(RUN_STATE_FILE).exists()
}
